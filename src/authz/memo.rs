//! A connection's memory of its last decisions.
//!
//! A keep-alive connection almost always carries one token and asks the
//! same few things (write to a database, read it). The [`Memo`] keeps, on
//! the connection, the token, the needs decided for it and their
//! decisions, with the authorizer's [generation](super::Authorizer::generation)
//! at the time and how long the decisions hold (`reusable_until`). A check
//! for the same token and needs while the generation is unchanged and the
//! time not past is answered from it: no hashing, no shared table, no lock
//! anyone else takes.
//!
//! Revocation is as fast as without it: an invalidation (or flush, or the
//! change stream going down) changes the generation, so the next check on
//! every connection goes back to the authorizer; an entry's TTL and the
//! token's expiry bound `reusable_until`. Only verdicts the authorizer marks
//! reusable are remembered (a cache's hits, the in-process registry's
//! answers; never an answer served stale or a bare client's).
//!
//! The token is held as the request held it ([`Token`]: zeroed when
//! dropped) and compared in constant time.
//!
//! The decisions remembered carry the token's id in a copy of the
//! connection's own: each answer from the memo clones and drops it a few
//! times, and an id shared with every other connection of the token would
//! move its count's cache line between the cores serving them each time.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::{Need, NeedDecision, Verdict};
use crate::credentials::Token;

/// Most (need, decision) pairs remembered per connection.
const MAX_PAIRS: usize = 8;

/// What one connection remembers. Cheap when unused.
#[derive(Debug, Default)]
pub struct Memo {
    slot: Mutex<Option<Remembered>>,
}

#[derive(Debug)]
struct Remembered {
    token: Token,
    generation: u64,
    until: Instant,
    verdict: Verdict,
    needs: Vec<Need>,
}

impl Remembered {
    fn holds(&self, token: &Token, generation: u64, now: Instant) -> bool {
        // Token equality is constant time.
        self.generation == generation && now < self.until && self.token == *token
    }

    fn decision(&self, need: &Need) -> Option<&NeedDecision> {
        self.needs
            .iter()
            .position(|n| n == need)
            .map(|i| &self.verdict.decisions[i])
    }
}

impl Memo {
    /// A connection's empty memo.
    pub fn new() -> Self {
        Self::default()
    }

    /// The verdict for `needs` of `token`, if remembered under `generation`
    /// and still holding at `now`.
    pub fn recall(
        &self,
        generation: u64,
        token: &Token,
        needs: &[Need],
        now: Instant,
    ) -> Option<Verdict> {
        let slot = self.slot.lock();
        let remembered = slot.as_ref()?;
        if needs.is_empty() || !remembered.holds(token, generation, now) {
            return None;
        }
        let decisions = needs
            .iter()
            .map(|need| remembered.decision(need).cloned())
            .collect::<Option<Vec<_>>>()?;
        Some(Verdict {
            decisions,
            expires_at: remembered.verdict.expires_at,
            cache: remembered.verdict.cache,
            reusable_until: Some(remembered.until),
        })
    }

    /// Remembers `verdict` (for `needs` of `token`, given under
    /// `generation`) if it is reusable after `now`; adds to what is
    /// remembered of the same token and generation.
    pub fn remember(
        &self,
        generation: u64,
        token: &Token,
        needs: &[Need],
        verdict: &Verdict,
        now: Instant,
    ) {
        let Some(until) = verdict.reusable_until.filter(|u| *u > now) else {
            return;
        };
        if needs.len() != verdict.decisions.len() || needs.len() > MAX_PAIRS {
            return;
        }
        let mut slot = self.slot.lock();
        if let Some(remembered) = slot.as_mut()
            && remembered.holds(token, generation, now)
            && remembered.verdict.cache == verdict.cache
        {
            for (need, decision) in needs.iter().zip(&verdict.decisions) {
                if remembered.decision(need).is_some() {
                    continue;
                }
                if remembered.needs.len() >= MAX_PAIRS {
                    // Full: start again from this verdict.
                    break;
                }
                remembered.needs.push(need.clone());
                remembered.verdict.decisions.push(own(decision));
            }
            if needs.iter().all(|n| remembered.decision(n).is_some()) {
                remembered.until = remembered.until.min(until);
                remembered.verdict.reusable_until = Some(remembered.until);
                return;
            }
        }
        *slot = Some(Remembered {
            token: token.clone(),
            generation,
            until,
            verdict: Verdict {
                decisions: verdict.decisions.iter().map(own).collect(),
                expires_at: verdict.expires_at,
                cache: verdict.cache,
                reusable_until: verdict.reusable_until,
            },
            needs: needs.to_vec(),
        });
    }

    /// Forgets everything (the connection's token is no longer needed).
    pub fn forget(&self) {
        *self.slot.lock() = None;
    }
}

/// `decision` with a copy of the token's id that only this connection
/// counts references to.
fn own(decision: &NeedDecision) -> NeedDecision {
    match decision {
        NeedDecision::Allowed { subject } => NeedDecision::Allowed {
            subject: Arc::from(&**subject),
        },
        NeedDecision::Forbidden { subject } => NeedDecision::Forbidden {
            subject: Arc::from(&**subject),
        },
        NeedDecision::InvalidToken => NeedDecision::InvalidToken,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::authz::CacheUse;

    fn token(s: &str) -> Token {
        Token::new(s.as_bytes().to_vec()).expect("non-empty")
    }

    fn allow(n: usize, until: Instant) -> Verdict {
        let subject: Arc<str> = Arc::from("id");
        Verdict {
            decisions: vec![NeedDecision::Allowed { subject }; n],
            expires_at: None,
            cache: CacheUse::Hit,
            reusable_until: Some(until),
        }
    }

    #[test]
    fn recalls_only_the_same_token_generation_and_needs_in_time() {
        let memo = Memo::new();
        let now = Instant::now();
        let later = now + Duration::from_secs(10);
        let t = token("secret");
        let write = [Need::write("db")];
        assert!(memo.recall(1, &t, &write, now).is_none());
        memo.remember(1, &t, &write, &allow(1, later), now);
        let v = memo.recall(1, &t, &write, now).expect("remembered");
        assert_eq!(v.decisions.len(), 1);
        assert_eq!(v.cache, CacheUse::Hit);
        assert!(memo.recall(2, &t, &write, now).is_none(), "generation");
        assert!(memo.recall(1, &token("secreT"), &write, now).is_none());
        assert!(memo.recall(1, &token("secret!"), &write, now).is_none());
        assert!(memo.recall(1, &t, &[Need::read("db")], now).is_none());
        assert!(memo.recall(1, &t, &[], now).is_none());
        assert!(memo.recall(1, &t, &write, later).is_none(), "until");
        memo.forget();
        assert!(memo.recall(1, &t, &write, now).is_none());
    }

    #[test]
    fn adds_needs_of_the_same_token_and_replaces_for_another() {
        let memo = Memo::new();
        let now = Instant::now();
        let t = token("a");
        let soon = now + Duration::from_secs(5);
        memo.remember(
            1,
            &t,
            &[Need::write("db")],
            &allow(1, now + Duration::from_secs(9)),
            now,
        );
        memo.remember(1, &t, &[Need::read("db")], &allow(1, soon), now);
        let both = [Need::read("db"), Need::write("db")];
        let v = memo.recall(1, &t, &both, now).expect("both remembered");
        assert_eq!(v.reusable_until, Some(soon), "the earliest bound");
        memo.remember(1, &token("b"), &[Need::read("db")], &allow(1, soon), now);
        assert!(memo.recall(1, &t, &[Need::read("db")], now).is_none());
        assert!(
            memo.recall(1, &token("b"), &[Need::read("db")], now)
                .is_some()
        );
    }

    #[test]
    fn recalled_ids_are_the_connections_own_copies() {
        let memo = Memo::new();
        let now = Instant::now();
        let t = token("a");
        let given = allow(1, now + Duration::from_secs(5));
        memo.remember(1, &t, &[Need::read("db")], &given, now);
        let recalled = memo
            .recall(1, &t, &[Need::read("db")], now)
            .expect("remembered");
        let (NeedDecision::Allowed { subject: given }, NeedDecision::Allowed { subject: recalled }) =
            (&given.decisions[0], &recalled.decisions[0])
        else {
            panic!("both allowed");
        };
        assert_eq!(recalled, given);
        assert!(!Arc::ptr_eq(recalled, given), "not the shared id");
        assert_eq!(Arc::strong_count(given), 1);
    }

    #[test]
    fn every_kind_of_decision_is_recalled_as_it_was_given() {
        let memo = Memo::new();
        let now = Instant::now();
        let t = token("a");
        let (alice, bob): (Arc<str>, Arc<str>) = (Arc::from("alice"), Arc::from("bob"));
        let given = vec![
            NeedDecision::Allowed {
                subject: Arc::clone(&alice),
            },
            NeedDecision::Forbidden {
                subject: Arc::clone(&bob),
            },
            NeedDecision::InvalidToken,
        ];
        let needs = [Need::read("a"), Need::write("a"), Need::read("b")];
        let verdict = Verdict {
            decisions: given.clone(),
            ..allow(0, now + Duration::from_secs(5))
        };
        memo.remember(1, &t, &needs, &verdict, now);
        let recalled = memo.recall(1, &t, &needs, now).expect("remembered");
        assert_eq!(recalled.decisions, given);
        // One at a time too, each with its own decision.
        for (need, decision) in needs.iter().zip(&given) {
            let one = memo.recall(1, &t, std::slice::from_ref(need), now);
            assert_eq!(
                one.expect("remembered").decisions,
                std::slice::from_ref(decision)
            );
        }
    }

    #[test]
    fn verdicts_that_are_not_reusable_are_not_remembered() {
        let memo = Memo::new();
        let now = Instant::now();
        let t = token("a");
        let mut v = allow(1, now);
        memo.remember(1, &t, &[Need::read("db")], &v, now);
        assert!(memo.recall(1, &t, &[Need::read("db")], now).is_none());
        v.reusable_until = None;
        memo.remember(1, &t, &[Need::read("db")], &v, now);
        assert!(memo.recall(1, &t, &[Need::read("db")], now).is_none());
    }
}
