//! A connection's last `GET /query`, read once.
//!
//! Dashboards send the same query again and again on one keep-alive
//! connection: Grafana writes a relative time range as `now() - 1h`, the
//! same text at every refresh. Reading a v1 query (its query string
//! decoded, the InfluxQL parsed, the permissions it needs found, the
//! canonical query string rebuilt) is the largest part of what fluxgate
//! adds to one, about 1.5 µs. [`LastQuery`] keeps, on the connection, the
//! last reading with the exact query string it was read from. A request
//! whose query string is the same, byte for byte, is not read again.
//!
//! That is exact, not a guess: for a `GET /query` the reading depends on
//! the query string alone (the body is dropped unread, no header takes
//! part), so the reading kept is the one a fresh read would give. Every
//! request is still authorized: only the reading is kept, never a
//! decision.
//!
//! A reading is kept when its query string is the one read before it on
//! the connection: a connection whose every query differs (a time range
//! written as numbers) then pays only a copy of each query string into a
//! buffer it reuses, not the reading's copies and allocations.
//!
//! What is kept is bounded and holds no secret:
//! - only readings of a query string without a `p` parameter. A token
//!   never stays here, and on a recalled request the token can come from
//!   the `Authorization` header alone, as it would have;
//! - only readings whose plan is a list of needs (not a refusal or
//!   `SHOW DATABASES`, which are rare and answered differently);
//! - only query strings up to [`MAX_QUERY`] bytes, and one reading per
//!   connection.

use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;

use super::read::params::{PATH_ROOM, Params};
use crate::authz::Need;

/// Longest query string kept, in bytes.
pub const MAX_QUERY: usize = 1024;

/// A reading kept: the query string it was read from, the needs and the
/// canonical query string. Its `Debug` shows neither query string (they
/// may name a user, `u`).
pub struct Reading {
    query: Box<str>,
    /// The permissions the query needs.
    pub needs: Vec<Need>,
    canonical: Box<str>,
}

impl Reading {
    /// The canonical query string to forward, with room for the path
    /// forwarding puts in front of it.
    pub fn canonical(&self) -> String {
        let mut query = String::with_capacity(self.canonical.len() + PATH_ROOM);
        query.push_str(&self.canonical);
        query
    }
}

impl fmt::Debug for Reading {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reading")
            .field("needs", &self.needs)
            .finish_non_exhaustive()
    }
}

/// One connection's last reading. Cheap when unused. Its `Debug` shows no
/// query string.
#[derive(Default)]
pub struct LastQuery {
    slot: Mutex<Slot>,
}

impl fmt::Debug for LastQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never waits: formatting must not deadlock on a held slot.
        let kept = self.slot.try_lock().map(|slot| slot.kept.clone());
        f.debug_struct("LastQuery")
            .field("kept", &kept)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Slot {
    /// The query string read last that could be kept (the buffer is
    /// reused).
    seen: String,
    /// The reading kept.
    kept: Option<Arc<Reading>>,
}

impl LastQuery {
    /// The reading of `query` (a `GET /query`'s raw query string), if it is
    /// the one kept.
    pub fn recall(&self, query: Option<&str>) -> Option<Arc<Reading>> {
        let query = query?;
        let slot = self.slot.lock();
        slot.kept
            .as_ref()
            .filter(|kept| *kept.query == *query)
            .map(Arc::clone)
    }

    /// Notes the reading of `query` (`params` decoded from it, `needs`, and
    /// `canonical` the query string forwarded): kept when `query` is the one
    /// read before it, unless it may not be kept at all (see the module).
    pub fn remember(
        &self,
        query: Option<&str>,
        params: &Params<'_>,
        needs: &[Need],
        canonical: &str,
    ) {
        let Some(query) = query.filter(|q| q.len() <= MAX_QUERY) else {
            return;
        };
        // A token, decoded: `%70` is `p` as well. Where the token came from
        // is what makes a recalled request's header the only place left.
        if params.contains("p") {
            return;
        }
        let mut slot = self.slot.lock();
        if slot.seen != query {
            slot.seen.clear();
            slot.seen.push_str(query);
            return;
        }
        slot.kept = Some(Arc::new(Reading {
            query: query.into(),
            needs: needs.to_vec(),
            canonical: canonical.into(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Notes `query`'s reading (needing read on `a`, forwarded as
    /// `canonical`).
    fn note(last: &LastQuery, query: Option<&str>, canonical: &str) {
        let params = Params::parse(query).expect("a valid query string");
        last.remember(query, &params, &[Need::read("a")], canonical);
    }

    #[test]
    fn only_the_same_query_string_byte_for_byte_is_recalled() {
        let last = LastQuery::default();
        let q = "db=a&q=SELECT+1";
        assert!(last.recall(Some(q)).is_none());
        note(&last, Some(q), "q=SELECT+1&db=a");
        assert!(last.recall(Some(q)).is_none(), "kept once read twice");
        note(&last, Some(q), "q=SELECT+1&db=a");
        let reading = last.recall(Some(q)).expect("kept");
        assert_eq!(reading.needs, [Need::read("a")]);
        assert_eq!(reading.canonical(), "q=SELECT+1&db=a");
        assert!(reading.canonical().capacity() >= "q=SELECT+1&db=a".len() + PATH_ROOM);
        for other in [
            "db=b&q=SELECT+1",
            "db=a&q=SELECT%201",
            "db=A&q=SELECT+1",
            "db=a&q=SELECT+1&",
            "db=a&q=SELECT+",
            "",
        ] {
            assert!(last.recall(Some(other)).is_none(), "{other}");
        }
        assert!(last.recall(None).is_none());
        // Another query string read once leaves the reading kept.
        note(&last, Some("db=b"), "db=b");
        assert!(last.recall(Some(q)).is_some());
        assert!(last.recall(Some("db=b")).is_none());
        note(&last, Some("db=b"), "db=b");
        assert!(last.recall(Some("db=b")).is_some());
        assert!(last.recall(Some(q)).is_none(), "one reading per connection");
    }

    #[test]
    fn queries_that_alternate_are_never_kept() {
        let last = LastQuery::default();
        for _ in 0..3 {
            for q in ["db=a", "db=b"] {
                note(&last, Some(q), q);
                assert!(last.recall(Some(q)).is_none(), "{q}");
            }
        }
    }

    #[test]
    fn tokens_long_queries_and_no_query_are_never_kept() {
        let last = LastQuery::default();
        let twice = |q: Option<&str>| {
            for _ in 0..2 {
                note(&last, q, "db=a");
            }
        };
        for with_token in ["db=a&p=secret", "db=a&%70=secret", "db=a&p="] {
            twice(Some(with_token));
            assert!(last.recall(Some(with_token)).is_none(), "{with_token}");
            assert!(!last.slot.lock().seen.contains("db=a&"), "never copied");
        }
        let long = format!("db=a&q={}", "x".repeat(MAX_QUERY));
        twice(Some(&long));
        assert!(last.recall(Some(&long)).is_none());
        let longest = &long[..MAX_QUERY];
        twice(Some(longest));
        assert!(last.recall(Some(longest)).is_some());
        twice(None);
        assert!(last.recall(Some(longest)).is_some(), "nothing replaced it");
        assert!(
            !format!("{last:?}").contains("xxx"),
            "no query string shown"
        );
    }
}
