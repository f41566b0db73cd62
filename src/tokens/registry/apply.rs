//! Applying committed changes to memory: in revision order, each token
//! only ever moved forward (the revision that wrote its row decides), then
//! announced to live change streams. Also the token gauges, which count
//! what memory holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::{LIVE_BUFFER, Live, Shared};
use crate::tokens::model::{TokenKind, TokenRecord};
use crate::tokens::store::{Change, ChangeKind, WriteOutcome};

impl Shared {
    /// Applies changes this process just committed. When nothing else
    /// happened in between, they are applied as written; otherwise their
    /// rows are put in memory at once (so this replica never answers from
    /// an older state than the one it just wrote) and the log is read to
    /// fill the gap in order.
    pub(super) async fn apply_committed(&self, outcomes: &[WriteOutcome]) {
        let committed: Vec<(&Change, Option<&TokenRecord>)> = outcomes
            .iter()
            .filter_map(|o| match o {
                WriteOutcome::Done { change, token } => Some((change, token.as_ref())),
                _ => None,
            })
            .collect();
        let (Some(first), Some(last)) = (committed.first(), committed.last()) else {
            return;
        };
        let (first, last) = (first.0.revision, last.0.revision);
        let _applying = self.applier.lock().await;
        let head = self.state.read().head;
        if head >= last {
            return;
        }
        if head + 1 == first {
            let applied = committed.into_iter().map(|(change, token)| {
                (change.clone(), token.cloned().map(|t| (t, change.revision)))
            });
            self.apply_in_order(applied);
            return;
        }
        {
            let mut state = self.state.write();
            for (change, token) in &committed {
                if let Some(token) = token {
                    state.upsert(Arc::new((*token).clone()), change.revision);
                }
            }
        }
        if let Err(e) = self.catch_up_locked().await {
            tracing::warn!(error = %e, "cannot read the token change log; the follower retries");
        }
    }

    /// Applies `changes` (each with the row to put, if any) in revision
    /// order after the head, then tells live subscribers.
    pub(super) fn apply_in_order(
        &self,
        changes: impl IntoIterator<Item = (Change, Option<(TokenRecord, u64)>)>,
    ) {
        let mut applied = Vec::new();
        {
            let mut state = self.state.write();
            for (change, row) in changes {
                if change.revision <= state.head {
                    continue;
                }
                if let Some((record, revision)) = row {
                    let expires = record.expires_at.is_some();
                    if state.upsert(Arc::new(record), revision) && expires {
                        self.expiry_changed.notify_one();
                    }
                }
                if change.kind == ChangeKind::Expired {
                    state.expiry_recorded.insert(change.token_id.clone());
                }
                state.head = change.revision;
                applied.push(change);
            }
        }
        if applied.is_empty() {
            return;
        }
        {
            let mut recent = self.recent.lock();
            for change in &applied {
                if recent.len() == LIVE_BUFFER {
                    recent.pop_front();
                }
                recent.push_back(change.clone());
            }
        }
        for change in applied {
            tracing::info!(token_id = %change.token_id, change = change.kind.as_str(), revision = change.revision, "token changed");
            // No subscriber is not an error.
            let _ = self.live.send(Live::Change(change));
        }
        self.gauges_dirty
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the token gauges when counts may have changed.
    pub(super) fn publish_gauges_if_changed(&self) {
        if self
            .gauges_dirty
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            self.publish_gauges();
        }
    }

    pub(super) fn publish_gauges(&self) {
        let now = SystemTime::now();
        let mut counts: HashMap<(&'static str, &'static str), u64> = HashMap::new();
        for e in self.state.read().by_id.iter() {
            let t = &e.record;
            let state = if t.revoked_at.is_some() {
                "revoked"
            } else if t.is_usable(now) {
                "active"
            } else {
                "expired"
            };
            *counts.entry((t.kind.as_str(), state)).or_default() += 1;
        }
        for kind in TokenKind::ALL {
            for state in ["active", "revoked", "expired"] {
                let n = counts.get(&(kind.as_str(), state)).copied().unwrap_or(0);
                metrics::gauge!("fluxgate_tokens", "kind" => kind.as_str(), "state" => state)
                    .set(n as f64);
            }
        }
        metrics::gauge!("fluxgate_token_store_revision").set(self.state.read().head as f64);
    }
}
