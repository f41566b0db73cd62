//! Announcing expiries, and pruning the change log.
//!
//! Every replica watches for expiries, and every one may try to record the
//! same one at the same moment: the store records it once (the `Expire`
//! write is a no-op when the token's expiry is already logged), and the
//! other replicas see that one change through the log like any other.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::TokenRegistry;
use crate::tokens::store::Write;
use crate::tokens::time::now_millis;

/// Changes kept in the log; older ones are pruned and a client that asks for
/// them is told to flush.
const KEEP_CHANGES: u64 = 100_000;
/// How often the log is pruned when nothing expires.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Expiries recorded per round (each is a write in a group commit).
const EXPIRE_CHUNK: usize = 1000;

impl TokenRegistry {
    /// Tokens past their expiry whose expiry is not logged yet and not
    /// already tried here, oldest expiry first; and the next expiry to come.
    fn expiry_work(
        &self,
        now: SystemTime,
        tried: &HashSet<String>,
    ) -> (Vec<String>, Option<SystemTime>) {
        let state = self.shared.state.read();
        let mut due = Vec::new();
        let mut next: Option<SystemTime> = None;
        for entry in state.by_id.iter() {
            let t = &entry.record;
            let Some(expires) = t.expires_at else {
                continue;
            };
            if t.revoked_at.is_some()
                || state.expiry_recorded.contains(&t.id)
                || tried.contains(&t.id)
            {
                continue;
            }
            if expires <= now {
                due.push((expires, t.id.clone()));
            } else {
                next = Some(next.map_or(expires, |n| n.min(expires)));
            }
        }
        due.sort();
        (due.into_iter().map(|(_, id)| id).collect(), next)
    }

    /// Announces expiries as they happen and prunes the change log. Runs
    /// until the task is aborted.
    pub async fn run_expiry_announcer(self: Arc<Self>) {
        let mut tried: HashSet<String> = HashSet::new();
        loop {
            let (due, next) = self.expiry_work(SystemTime::now(), &tried);
            if due.is_empty() {
                let wait = next.map_or(PRUNE_EVERY, |t| {
                    t.duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO)
                        .min(PRUNE_EVERY)
                });
                tokio::select! {
                    () = self.shared.expiry_changed.notified() => {}
                    () = tokio::time::sleep(wait) => self.prune().await,
                }
                continue;
            }
            let mut failed = false;
            for chunk in due.chunks(EXPIRE_CHUNK) {
                let writes = chunk.iter().map(|id| {
                    self.submit(Write::Expire {
                        id: id.clone(),
                        at: now_millis(),
                    })
                });
                let results = futures_util::future::join_all(writes).await;
                for (id, result) in chunk.iter().zip(results) {
                    match result {
                        // Recorded here, or already recorded elsewhere: the
                        // log carries it either way.
                        Ok(_) => {
                            tried.insert(id.clone());
                        }
                        Err(e) => {
                            failed = true;
                            tracing::error!(error = %e, token_id = %id, "cannot record token expiry; retrying");
                        }
                    }
                }
            }
            // Forget tokens whose expiry the log now holds.
            {
                let state = self.shared.state.read();
                tried.retain(|id| !state.expiry_recorded.contains(id));
            }
            self.prune().await;
            if failed {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }

    async fn prune(&self) {
        let head = self.head_revision();
        if head > KEEP_CHANGES
            && let Err(e) = self.shared.store.prune_changes(head - KEEP_CHANGES).await
        {
            tracing::warn!(error = %e, "cannot prune the change log");
        }
    }
}
