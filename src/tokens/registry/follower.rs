//! Following the store's change log: changes made by any process (another
//! replica, `fluxgate authz bootstrap`) are applied to memory in revision
//! order.
//!
//! A wake-up (PostgreSQL `NOTIFY`) only says "read the log"; the log after
//! the last applied revision is the truth, read again every poll interval in
//! case a wake-up was lost. Each read that succeeds proves the replica is
//! up to date as of then; when none has succeeded for `stale_after`, the
//! registry reports itself stale (not ready), and fresh again by itself
//! once the store answers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Live, Shared};
use crate::tokens::store::{ChangeListener, StoreError, StoredToken, Wake};

/// Changes read per page when catching up.
const PAGE: u32 = 1000;
/// First and longest wait before listening again after a failure.
const LISTEN_BACKOFF_MIN: Duration = Duration::from_millis(200);
const LISTEN_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Whether the registry has read its store recently enough to serve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Freshness {
    /// The log was read within the bound.
    Fresh,
    /// No read succeeded for `since`.
    Stale {
        /// Time since the last successful read.
        since: Duration,
        /// The last error, if any.
        error: Option<String>,
    },
}

impl Freshness {
    /// `Ok` when fresh, else why not (for `/readyz`).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Freshness::Fresh => Ok(()),
            Freshness::Stale { since, error } => Err(format!(
                "the token store has not been read for {}s{}",
                since.as_secs(),
                error
                    .as_ref()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default()
            )),
        }
    }
}

/// Time of the last successful read, the last error, and the serving flag.
#[derive(Debug)]
pub(super) struct FreshnessState {
    last_ok: Mutex<Instant>,
    last_error: Mutex<Option<String>>,
    serving: watch::Sender<bool>,
}

impl FreshnessState {
    pub(super) fn new() -> Self {
        Self {
            last_ok: Mutex::new(Instant::now()),
            last_error: Mutex::new(None),
            serving: watch::Sender::new(true),
        }
    }

    fn ok(&self) {
        *self.last_ok.lock() = Instant::now();
        *self.last_error.lock() = None;
    }

    fn failed(&self, e: &StoreError) {
        *self.last_error.lock() = Some(e.to_string());
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<bool> {
        self.serving.subscribe()
    }
}

impl Shared {
    pub(super) fn freshness(&self) -> Freshness {
        let since = self.freshness.last_ok.lock().elapsed();
        if since <= self.options.stale_after {
            Freshness::Fresh
        } else {
            Freshness::Stale {
                since,
                error: self.freshness.last_error.lock().clone(),
            }
        }
    }

    /// Updates the serving flag, logging each transition.
    fn update_serving(&self) {
        let freshness = self.freshness();
        let fresh = freshness == Freshness::Fresh;
        let changed = self.freshness.serving.send_if_modified(|s| {
            let changed = *s != fresh;
            *s = fresh;
            changed
        });
        metrics::gauge!("fluxgate_token_store_fresh").set(if fresh { 1.0 } else { 0.0 });
        if changed {
            match freshness.check() {
                Ok(()) => tracing::info!("the token store answers again: serving"),
                Err(why) => tracing::error!(
                    "{why}; not ready until it answers (Authorize keeps answering from memory)"
                ),
            }
        }
    }

    /// Reads and applies every change after the head.
    pub(super) async fn catch_up(&self) -> Result<(), StoreError> {
        let _applying = self.applier.lock().await;
        self.catch_up_locked().await
    }

    /// [`Shared::catch_up`] with the applier lock held.
    pub(super) async fn catch_up_locked(&self) -> Result<(), StoreError> {
        let result = self.read_log().await;
        match &result {
            Ok(()) => self.freshness.ok(),
            Err(e) => self.freshness.failed(e),
        }
        result
    }

    async fn read_log(&self) -> Result<(), StoreError> {
        loop {
            let head = self.state.read().head;
            let page = self.store.changes_after(head, PAGE).await?;
            let Some(first) = page.first() else {
                return Ok(());
            };
            if first.revision != head + 1 {
                // The log no longer holds what follows our head (pruned
                // while this replica was away): start over from a snapshot.
                self.reload(head, first.revision).await?;
                continue;
            }
            let mut ids: Vec<String> = page.iter().map(|c| c.token_id.clone()).collect();
            ids.sort_unstable();
            ids.dedup();
            let rows: HashMap<String, StoredToken> = self
                .store
                .tokens(&ids)
                .await?
                .into_iter()
                .map(|t| (t.record.id.clone(), t))
                .collect();
            let full = page.len() == PAGE as usize;
            self.apply_in_order(page.into_iter().map(|change| {
                let row = rows
                    .get(&change.token_id)
                    .map(|t| (t.record.clone(), t.revision));
                (change, row)
            }));
            if !full {
                return Ok(());
            }
        }
    }

    async fn reload(&self, head: u64, found: u64) -> Result<(), StoreError> {
        tracing::warn!(
            applied = head,
            oldest_kept = found,
            "the token change log no longer holds the changes after this replica's revision; reloading every token"
        );
        let snapshot = self.store.load().await?;
        if snapshot.store_id != self.store_id {
            tracing::error!(
                "the token store's identity changed under this replica (restored or replaced?); restart it"
            );
        }
        {
            let mut state = self.state.write();
            for token in snapshot.tokens {
                if token.expiry_recorded {
                    state.expiry_recorded.insert(token.record.id.clone());
                }
                state.upsert(Arc::new(token.record), token.revision);
            }
            state.head = state.head.max(snapshot.head_revision);
        }
        self.recent.lock().clear();
        let _ = self.live.send(Live::Reset);
        self.expiry_changed.notify_one();
        self.publish_gauges();
        Ok(())
    }
}

/// The next wake-up of `listener`; never resolves without one.
async fn wake(listener: &mut Option<Box<dyn ChangeListener>>) -> Result<Wake, StoreError> {
    match listener {
        Some(l) => l.next().await,
        None => std::future::pending().await,
    }
}

/// The follower task: runs until `cancel`.
pub(super) async fn run(shared: Arc<Shared>, cancel: CancellationToken) {
    tokio::spawn(monitor(Arc::clone(&shared), cancel.clone()));
    let mut listener: Option<Box<dyn ChangeListener>> = None;
    let mut can_listen = true;
    let mut backoff = LISTEN_BACKOFF_MIN;
    let mut next_listen = Instant::now();
    let mut tick = tokio::time::interval(shared.options.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Apart from announcements of what this replica already applied,
        // the log decides whatever woke us: a lost connection may have lost
        // announcements, and a tick covers announcements never sent.
        let woke = tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => None,
            r = wake(&mut listener) => Some(r),
        };
        match woke {
            Some(Err(e)) => {
                tracing::debug!(error = %e, "stopped listening for token changes; polling until listening again");
                listener = None;
            }
            // This replica's own writes, already applied, announce
            // themselves too: nothing to read.
            Some(Ok(Wake::Announced(Some(head)))) if head <= shared.state.read().head => continue,
            _ => {}
        }
        let read = tokio::select! {
            () = cancel.cancelled() => return,
            r = shared.catch_up() => r,
        };
        if let Err(e) = read {
            tracing::debug!(error = %e, "cannot read the token change log");
            continue;
        }
        // Listening is (re)tried only while the store answers, so an
        // outage costs one timed-out call per poll, not two.
        if can_listen && listener.is_none() && Instant::now() >= next_listen {
            let listened = tokio::select! {
                () = cancel.cancelled() => return,
                r = shared.store.listen() => r,
            };
            match listened {
                Ok(Some(l)) => {
                    listener = Some(l);
                    backoff = LISTEN_BACKOFF_MIN;
                    // Anything committed before LISTEN took effect was
                    // announced to nobody here.
                    if let Err(e) = shared.catch_up().await {
                        tracing::debug!(error = %e, "cannot read the token change log");
                    }
                }
                Ok(None) => can_listen = false,
                Err(e) => {
                    tracing::debug!(error = %e, retry_in = ?backoff, "cannot listen for token changes");
                    next_listen = Instant::now() + backoff;
                    backoff = (backoff * 2).min(LISTEN_BACKOFF_MAX);
                }
            }
        }
    }
}

/// Keeps the serving flag in step with the time since the last read: a
/// store call can take seconds to fail, the flag must not wait for it.
async fn monitor(shared: Arc<Shared>, cancel: CancellationToken) {
    let every = (shared.options.stale_after / 4)
        .clamp(Duration::from_millis(50), Duration::from_millis(500));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {
                shared.update_serving();
                shared.publish_gauges_if_changed();
            }
        }
    }
}
