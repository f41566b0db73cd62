//! The change stream behind `WatchTokenChanges`: a sync point, the changes
//! a client missed (from the recent changes kept in memory, else from the
//! store's log), then live changes as this replica applies them.
//!
//! Revisions are the store's, so every replica streams the same revision
//! for the same change and a client can resume on any of them. A client
//! that followed a replica slightly ahead of this one is not told to flush:
//! this replica first catches up with the log.

use std::sync::Arc;

use futures_util::Stream;
use tokio::sync::broadcast;

use super::{Live, Shared, TokenRegistry};
use crate::tokens::store::{Change, StoreError};

/// Changes fetched per page when replaying the log.
const REPLAY_PAGE: u32 = 1000;

/// Where a change stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPoint {
    /// Whether every change after the requested revision follows.
    pub resumed: bool,
    /// The revision the stream continues after.
    pub revision: u64,
    /// The newest revision when the stream started.
    pub head: u64,
}

impl Shared {
    /// The recent changes after `after` (at most `limit`), when memory still
    /// holds the one right after it.
    fn recent_after(&self, after: u64, limit: usize) -> Option<Vec<Change>> {
        let recent = self.recent.lock();
        let oldest = recent.front()?.revision;
        if oldest > after + 1 {
            return None;
        }
        Some(
            recent
                .iter()
                .filter(|c| c.revision > after)
                .take(limit)
                .cloned()
                .collect(),
        )
    }

    /// True when every change after `after` can still be replayed.
    async fn can_replay_after(&self, after: u64) -> Result<bool, StoreError> {
        if self.recent_after(after, 1).is_some() {
            return Ok(true);
        }
        let oldest = self.store.oldest_revision().await?;
        Ok(oldest.is_some_and(|o| o <= after + 1))
    }

    async fn replay_page(&self, after: u64) -> Result<Vec<Change>, StoreError> {
        match self.recent_after(after, REPLAY_PAGE as usize) {
            Some(page) if !page.is_empty() => Ok(page),
            _ => self.store.changes_after(after, REPLAY_PAGE).await,
        }
    }
}

impl TokenRegistry {
    /// A stream of changes after `after` (or from now when `None`), preceded
    /// by the [`SyncPoint`] telling whether it resumes. The stream ends with
    /// an error when the subscriber falls too far behind; it can resume.
    pub async fn subscribe(
        self: &Arc<Self>,
        after: Option<u64>,
    ) -> Result<
        (
            SyncPoint,
            impl Stream<Item = Result<Change, StoreError>> + Send + 'static,
        ),
        StoreError,
    > {
        let shared = Arc::clone(&self.shared);
        // Subscribe before reading the head: a change applied in between is
        // then seen live (and de-duplicated by revision), never lost.
        let mut live = shared.live.subscribe();
        let mut head = self.head_revision();
        if after.is_some_and(|a| a > head) {
            // The client followed a replica a few changes ahead of this one.
            if let Err(e) = shared.catch_up().await {
                tracing::debug!(error = %e, "cannot catch up before resuming a change stream");
            }
            head = self.head_revision();
        }
        let sync = match after {
            Some(a) if a == head => SyncPoint {
                resumed: true,
                revision: a,
                head,
            },
            Some(a) if a < head && shared.can_replay_after(a).await? => SyncPoint {
                resumed: true,
                revision: a,
                head,
            },
            _ => SyncPoint {
                resumed: false,
                revision: head,
                head,
            },
        };
        let mut closing = shared.closing.subscribe();
        let stream = async_stream::try_stream! {
            let mut last = sync.revision;
            while last < head {
                let page = shared.replay_page(last).await?;
                if page.is_empty() {
                    break;
                }
                for change in page {
                    if change.revision <= last {
                        continue;
                    }
                    last = change.revision;
                    yield change;
                }
            }
            loop {
                let received = tokio::select! {
                    r = live.recv() => r,
                    _ = closing.wait_for(|c| *c) => break,
                };
                match received {
                    Ok(Live::Change(change)) if change.revision <= last => continue,
                    Ok(Live::Change(change)) => {
                        last = change.revision;
                        yield change;
                    }
                    Ok(Live::Reset) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        Err(StoreError::Lagged)?;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        };
        Ok((sync, stream))
    }
}
