//! The proxy's side of authorization: what a request needs ([`Need`]), the
//! per-permission answers ([`NeedDecision`]), the combined [`Decision`], and
//! the [`Authorizer`] trait the client and the decision cache implement
//! (and the token service's in-process authorizer,
//! [`crate::tokens::local::LocalAuthorizer`]).

pub mod cache;
pub mod client;
mod coalesce;
mod config;
mod entry;
mod epoch;
pub mod failover;
pub mod invalidation;
pub mod key;
pub mod memo;
mod stats;
mod store;
mod subject;
mod table;
mod watch;

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use async_trait::async_trait;

use crate::credentials::Token;

/// An action on a database, as in the IOx contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Read table and column names only.
    ReadSchema,
    /// Query data.
    Read,
    /// Write data.
    Write,
    /// Create the database: never held by a database token.
    Create,
    /// Delete the database: never held by a database token.
    Delete,
}

impl Action {
    /// Lower-case name for logs and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::ReadSchema => "read_schema",
            Action::Read => "read",
            Action::Write => "write",
            Action::Create => "create",
            Action::Delete => "delete",
        }
    }
}

/// One permission a request needs: `action` on `database`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Need {
    /// The database (bucket) name.
    pub database: String,
    /// What the request does to it.
    pub action: Action,
}

impl Need {
    /// Read on `database`.
    pub fn read(database: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            action: Action::Read,
        }
    }

    /// Write on `database`.
    pub fn write(database: impl Into<String>) -> Self {
        Self {
            database: database.into(),
            action: Action::Write,
        }
    }
}

/// The authorizer's answer for one [`Need`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeedDecision {
    /// The token holds the permission.
    Allowed {
        /// The token's id.
        subject: Arc<str>,
    },
    /// The token is valid but lacks the permission.
    Forbidden {
        /// The token's id.
        subject: Arc<str>,
    },
    /// The token is unknown, expired or revoked.
    InvalidToken,
}

impl NeedDecision {
    /// A valid token's answer: `Allowed` when it `holds` the permission.
    pub fn of_valid(holds: bool, subject: &Arc<str>) -> Self {
        let subject = Arc::clone(subject);
        if holds {
            Self::Allowed { subject }
        } else {
            Self::Forbidden { subject }
        }
    }
}

/// The answers for a list of needs, in the same order, and what the
/// authorizer said about the token's lifetime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// One answer per need.
    pub decisions: Vec<NeedDecision>,
    /// When the token expires, if the authorizer told.
    pub expires_at: Option<SystemTime>,
    /// Whether a decision cache answered (for the audit trail).
    pub cache: CacheUse,
    /// Until when these decisions hold while the authorizer's
    /// [generation](Authorizer::generation) is unchanged, so that a
    /// connection may reuse them ([`memo`]); `None`: ask again every time.
    pub reusable_until: Option<Instant>,
}

/// How a decision cache took part in a [`Verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CacheUse {
    /// No cache involved (the client, or the in-process authorizer).
    #[default]
    None,
    /// Every need was answered from the cache.
    Hit,
    /// At least one need was asked of the token service.
    Miss,
    /// At least one need was a stale allow served within `--stale-grace`.
    Stale,
}

impl CacheUse {
    /// Name in the audit trail.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::None => "none",
            CacheUse::Hit => "hit",
            CacheUse::Miss => "miss",
            CacheUse::Stale => "stale",
        }
    }
}

/// The decision for a whole request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every need is granted.
    Allow {
        /// The token's id (safe to log).
        subject: Arc<str>,
    },
    /// The token is unknown, expired or revoked (401).
    InvalidToken,
    /// The token is valid but lacks `need` (403).
    Forbidden {
        /// The token's id.
        subject: Arc<str>,
        /// The first need not granted.
        need: Need,
    },
}

impl Decision {
    /// Combines per-need answers: any invalid → invalid, else any forbidden
    /// → forbidden, else allow. An empty list is never an allow.
    pub fn combine(needs: &[Need], decisions: &[NeedDecision]) -> Decision {
        if decisions.is_empty() || decisions.len() != needs.len() {
            return Decision::InvalidToken;
        }
        if decisions
            .iter()
            .any(|d| matches!(d, NeedDecision::InvalidToken))
        {
            return Decision::InvalidToken;
        }
        for (need, decision) in needs.iter().zip(decisions) {
            if let NeedDecision::Forbidden { subject } = decision {
                return Decision::Forbidden {
                    subject: Arc::clone(subject),
                    need: need.clone(),
                };
            }
        }
        match &decisions[0] {
            NeedDecision::Allowed { subject } => Decision::Allow {
                subject: Arc::clone(subject),
            },
            _ => Decision::InvalidToken,
        }
    }
}

/// Why no decision could be made. Never cached; the request is not forwarded.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthzError {
    /// The token service could not be reached or failed.
    #[error("the authorization service is unavailable: {0}")]
    Unavailable(String),
    /// It did not answer in time.
    #[error("the authorization service did not answer in time")]
    Timeout,
}

/// Anything that can decide needs for a token: the gRPC client, the cache.
#[async_trait]
pub trait Authorizer: Send + Sync + std::fmt::Debug + 'static {
    /// Decides every need (one answer per need, same order).
    async fn check(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError>;

    /// Whether the authorizer can currently answer (for `/readyz`).
    async fn ready(&self) -> Result<(), String>;

    /// A number that changes whenever a decision given before may have
    /// stopped holding (a token changed, the cache was flushed, the change
    /// stream went down): while it is unchanged, a verdict is good until
    /// its `reusable_until`. `None` (the default): never reuse a verdict.
    fn generation(&self) -> Option<u64> {
        None
    }

    /// Counts `verdict` answered again from a connection's [`memo`] (a
    /// cache counts its decisions as hits).
    fn reused(&self, verdict: &Verdict) {
        let _ = verdict;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combine_prefers_invalid_then_forbidden() {
        let s: Arc<str> = Arc::from("id");
        let needs = vec![Need::read("a"), Need::write("b")];
        let allowed = NeedDecision::Allowed {
            subject: Arc::clone(&s),
        };
        let forbidden = NeedDecision::Forbidden {
            subject: Arc::clone(&s),
        };
        assert_eq!(
            Decision::combine(&needs, &[allowed.clone(), allowed.clone()]),
            Decision::Allow {
                subject: Arc::clone(&s)
            }
        );
        assert_eq!(
            Decision::combine(&needs, &[allowed.clone(), forbidden.clone()]),
            Decision::Forbidden {
                subject: Arc::clone(&s),
                need: Need::write("b")
            }
        );
        assert_eq!(
            Decision::combine(&needs, &[forbidden, NeedDecision::InvalidToken]),
            Decision::InvalidToken
        );
        assert_eq!(Decision::combine(&[], &[]), Decision::InvalidToken);
        assert_eq!(
            Decision::combine(&needs, &[allowed]),
            Decision::InvalidToken
        );
    }
}
