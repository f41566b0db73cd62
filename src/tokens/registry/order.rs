//! Tokens in listing order (creation time, then id), per kind, kept up to
//! date where records are put in memory: a page of a listing then costs
//! O(log n + page) instead of a sort of every token.
//!
//! Each kind has two ordered sets, every token and the unrevoked ones, so
//! listing without revoked tokens never walks past them. A set entry is the
//! record's `Arc` (8 bytes, plus the tree's own overhead): the order key is
//! read from the record, not copied.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::collections::BTreeSet;
use std::ops::Bound;
use std::sync::Arc;
use std::time::SystemTime;

use crate::tokens::model::{TokenKind, TokenRecord};

/// A position in a listing: the creation time and id of the last token a
/// page returned. The next page starts after it, whether or not that token
/// still exists or ever existed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPosition {
    /// Creation time of the last token returned.
    pub created_at: SystemTime,
    /// Its id.
    pub id: String,
}

impl ListPosition {
    /// The position of `record`.
    pub fn of(record: &TokenRecord) -> Self {
        Self {
            created_at: record.created_at,
            id: record.id.clone(),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct Page {
    /// Oldest first.
    pub tokens: Vec<Arc<TokenRecord>>,
    /// More tokens follow the last one.
    pub more: bool,
}

/// What the sets are ordered by.
trait Key {
    fn key(&self) -> (SystemTime, &str);
}

impl Key for ListPosition {
    fn key(&self) -> (SystemTime, &str) {
        (self.created_at, &self.id)
    }
}

/// A record in a set, ordered by its key.
#[derive(Debug, Clone)]
struct Listed(Arc<TokenRecord>);

impl Key for Listed {
    fn key(&self) -> (SystemTime, &str) {
        (self.0.created_at, &self.0.id)
    }
}

impl PartialEq for dyn Key + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for dyn Key + '_ {}
impl PartialOrd for dyn Key + '_ {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for dyn Key + '_ {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl PartialEq for Listed {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}
impl Eq for Listed {}
impl PartialOrd for Listed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Listed {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

/// Lets the sets be searched by a [`ListPosition`] without building a record.
impl<'a> Borrow<dyn Key + 'a> for Listed {
    fn borrow(&self) -> &(dyn Key + 'a) {
        self
    }
}

#[derive(Debug, Default)]
struct KindOrder {
    all: BTreeSet<Listed>,
    unrevoked: BTreeSet<Listed>,
}

/// Every kind's listing order.
#[derive(Debug, Default)]
pub(super) struct ListingOrder {
    kinds: [KindOrder; 3],
}

fn slot(kind: TokenKind) -> usize {
    match kind {
        TokenKind::Database => 0,
        TokenKind::Management => 1,
        TokenKind::Proxy => 2,
    }
}

impl ListingOrder {
    /// Puts `record` in place of `previous` (the same token's older row,
    /// if memory held one).
    pub(super) fn put(&mut self, previous: Option<&Arc<TokenRecord>>, record: &Arc<TokenRecord>) {
        // A row's creation time and kind never change; should a store say
        // otherwise, the old entry must not stay behind.
        if let Some(old) = previous
            && (old.created_at != record.created_at || old.kind != record.kind)
        {
            let order = &mut self.kinds[slot(old.kind)];
            let key = Listed(Arc::clone(old));
            order.all.remove(&key);
            order.unrevoked.remove(&key);
        }
        let order = &mut self.kinds[slot(record.kind)];
        order.all.replace(Listed(Arc::clone(record)));
        if record.revoked_at.is_some() {
            order.unrevoked.remove(&Listed(Arc::clone(record)));
        } else {
            order.unrevoked.replace(Listed(Arc::clone(record)));
        }
    }

    /// Up to `limit` tokens of `kind` after `after` (from the first when
    /// `None`), oldest first.
    pub(super) fn page(
        &self,
        kind: TokenKind,
        include_revoked: bool,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> Page {
        let order = &self.kinds[slot(kind)];
        let set = if include_revoked {
            &order.all
        } else {
            &order.unrevoked
        };
        let start: Bound<&dyn Key> = match after {
            Some(position) => Bound::Excluded(position),
            None => Bound::Unbounded,
        };
        let mut tokens: Vec<Arc<TokenRecord>> = set
            .range::<dyn Key, _>((start, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .map(|l| Arc::clone(&l.0))
            .collect();
        let more = tokens.len() > limit;
        tokens.truncate(limit);
        Page { tokens, more }
    }

    /// How many tokens of `kind` are listed.
    #[cfg(test)]
    fn len(&self, kind: TokenKind, include_revoked: bool) -> usize {
        let order = &self.kinds[slot(kind)];
        if include_revoked {
            order.all.len()
        } else {
            order.unrevoked.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tokens::secret::TokenHash;

    fn record(id: &str, kind: TokenKind, secs: u64, revoked: bool) -> Arc<TokenRecord> {
        Arc::new(TokenRecord {
            id: id.to_owned(),
            kind,
            description: String::new(),
            permissions: Vec::new(),
            hash: TokenHash::of(id.as_bytes()),
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(secs),
            expires_at: None,
            revoked_at: revoked.then_some(SystemTime::UNIX_EPOCH),
            updated_at: None,
        })
    }

    fn ids(page: &Page) -> Vec<&str> {
        page.tokens.iter().map(|t| t.id.as_str()).collect()
    }

    #[test]
    fn pages_follow_creation_then_id_and_resume_after_a_position() {
        let mut order = ListingOrder::default();
        for (id, secs) in [("c", 1), ("a", 2), ("b", 2), ("d", 0)] {
            order.put(None, &record(id, TokenKind::Database, secs, false));
        }
        order.put(None, &record("m", TokenKind::Management, 1, false));
        let first = order.page(TokenKind::Database, false, None, 2);
        assert_eq!(ids(&first), ["d", "c"]);
        assert!(first.more);
        let after = ListPosition::of(first.tokens.last().unwrap());
        let second = order.page(TokenKind::Database, false, Some(&after), 2);
        assert_eq!(ids(&second), ["a", "b"]);
        assert!(!second.more);
        // A position no token has: the next one after it.
        let between = ListPosition {
            created_at: SystemTime::UNIX_EPOCH + Duration::from_secs(2),
            id: "aa".into(),
        };
        assert_eq!(
            ids(&order.page(TokenKind::Database, false, Some(&between), 10)),
            ["b"]
        );
        assert_eq!(
            ids(&order.page(TokenKind::Management, true, None, 10)),
            ["m"]
        );
    }

    #[test]
    fn revoking_moves_a_token_out_of_the_unrevoked_order_only() {
        let mut order = ListingOrder::default();
        let a = record("a", TokenKind::Proxy, 1, false);
        order.put(None, &a);
        order.put(None, &record("b", TokenKind::Proxy, 2, false));
        let revoked = record("a", TokenKind::Proxy, 1, true);
        order.put(Some(&a), &revoked);
        assert_eq!(order.len(TokenKind::Proxy, false), 1);
        assert_eq!(order.len(TokenKind::Proxy, true), 2);
        let all = order.page(TokenKind::Proxy, true, None, 10);
        assert_eq!(ids(&all), ["a", "b"]);
        assert!(
            all.tokens[0].revoked_at.is_some(),
            "the newest row is listed"
        );
    }

    #[test]
    fn a_changed_creation_time_leaves_no_stale_entry() {
        let mut order = ListingOrder::default();
        let a = record("a", TokenKind::Database, 5, false);
        order.put(None, &a);
        order.put(Some(&a), &record("a", TokenKind::Database, 1, false));
        assert_eq!(order.len(TokenKind::Database, true), 1);
        assert_eq!(order.len(TokenKind::Database, false), 1);
    }
}
