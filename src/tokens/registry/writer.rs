//! Group commit: one task owns writing. Callers queue a [`Write`] and wait;
//! the task takes everything queued (up to [`MAX_BATCH`]) and commits it in
//! one transaction, so 16 concurrent creates cost one fsync (SQLite) or one
//! commit round trip (PostgreSQL) instead of 16 serialized ones. Each call
//! still returns only after its write is durable and visible in memory.
//!
//! The task, not the caller, runs the transaction: a caller that goes away
//! (a cancelled RPC) cannot abort a batch that carries other callers' writes.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::{RegistryError, Shared};
use crate::tokens::store::{StoreError, Write, WriteOutcome};

/// Most writes committed in one transaction.
pub(super) const MAX_BATCH: usize = 256;
/// Writes that may wait for the writer before callers wait to queue.
pub(super) const QUEUE: usize = 4096;

type Reply = Result<WriteOutcome, Arc<StoreError>>;

/// One queued write and where its outcome goes.
#[derive(Debug)]
pub(super) struct Request {
    write: Write,
    reply: oneshot::Sender<Reply>,
}

/// Queues `write` and waits for its outcome.
pub(super) async fn submit(
    queue: &mpsc::Sender<Request>,
    write: Write,
) -> Result<WriteOutcome, RegistryError> {
    let (reply, outcome) = oneshot::channel();
    queue
        .send(Request { write, reply })
        .await
        .map_err(|_| RegistryError::Closed)?;
    match outcome.await {
        Ok(Ok(outcome)) => Ok(outcome),
        Ok(Err(e)) => Err(RegistryError::Store(e)),
        Err(_) => Err(RegistryError::Closed),
    }
}

/// The writer task: runs until every sender (the registry) is gone.
pub(super) async fn run(shared: Arc<Shared>, mut queue: mpsc::Receiver<Request>) {
    let mut batch: Vec<Request> = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let requests = std::mem::take(&mut batch);
        commit(&shared, requests).await;
    }
}

async fn commit(shared: &Shared, requests: Vec<Request>) {
    let writes: Vec<Write> = requests.iter().map(|r| r.write.clone()).collect();
    metrics::histogram!("fluxgate_token_store_batch_writes").record(writes.len() as f64);
    match shared.store.write(&writes).await {
        Ok(outcomes) => {
            shared.apply_committed(&outcomes).await;
            for (request, outcome) in requests.into_iter().zip(outcomes) {
                // The caller may have gone away; its write stands.
                let _ = request.reply.send(Ok(outcome));
            }
        }
        // The store refused a statement (not a lost connection): one write
        // may be at fault, so the others are not failed with it.
        Err(e) if requests.len() > 1 && !e.is_unreachable() => {
            tracing::warn!(error = %e, writes = requests.len(), "a batched write failed; committing its writes one by one");
            for request in requests {
                let result = shared
                    .store
                    .write(std::slice::from_ref(&request.write))
                    .await;
                let reply = match result {
                    Ok(mut outcomes) => {
                        shared.apply_committed(&outcomes).await;
                        match outcomes.pop() {
                            Some(outcome) => Ok(outcome),
                            None => Err(Arc::new(StoreError::Corrupt(
                                "the store answered a write with no outcome".to_owned(),
                            ))),
                        }
                    }
                    Err(e) => Err(Arc::new(e)),
                };
                let _ = request.reply.send(reply);
            }
        }
        Err(e) => {
            let e = Arc::new(e);
            for request in requests {
                let _ = request.reply.send(Err(Arc::clone(&e)));
            }
        }
    }
}
