//! The in-process authorizer of `fluxgate serve`: the proxy's
//! [`Authorizer`] answered straight from the token registry in the same
//! process, with no network hop and nothing to
//! cache (a revocation is seen by the very next request).
//!
//! Its [generation](Authorizer::generation) is the registry's count of rows
//! put in memory (not its head revision, which a row written ahead of a gap
//! in the log does not move), so every change of any token moves it: a
//! connection's memo reuses an answer only while no token changed, and never
//! past the token's expiry.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use super::TokenRegistry;
use crate::authz::{Authorizer, AuthzError, CacheUse, Need, NeedDecision, Verdict};
use crate::credentials::Token;

/// Decides from a [`TokenRegistry`] in this process.
#[derive(Debug, Clone)]
pub struct LocalAuthorizer {
    registry: Arc<TokenRegistry>,
    /// `fluxgate_authorize_requests_total` by result: valid, forbidden,
    /// invalid (resolved once).
    counted: [metrics::Counter; 3],
}

impl LocalAuthorizer {
    /// Decides from `registry`.
    pub fn new(registry: Arc<TokenRegistry>) -> Self {
        Self {
            registry,
            counted: ["valid", "forbidden", "invalid"].map(
                |result| metrics::counter!("fluxgate_authorize_requests_total", "result" => result),
            ),
        }
    }

    /// Counts an answer as the token service counts its Authorize calls.
    fn count(&self, verdict: &Verdict) {
        let result = if verdict.decisions.contains(&NeedDecision::InvalidToken) {
            2
        } else if verdict
            .decisions
            .iter()
            .all(|d| matches!(d, NeedDecision::Allowed { .. }))
        {
            0
        } else {
            1
        };
        self.counted[result].increment(1);
    }
}

#[async_trait]
impl Authorizer for LocalAuthorizer {
    async fn check(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        let Some(record) = self.registry.find_usable(token.expose()) else {
            let verdict = Verdict {
                cache: CacheUse::None,
                decisions: vec![NeedDecision::InvalidToken; needs.len()],
                expires_at: None,
                reusable_until: Some(Instant::now() + LONGEST_REUSE),
            };
            self.count(&verdict);
            return Ok(verdict);
        };
        let subject: Arc<str> = Arc::from(record.id.as_str());
        let decisions: Vec<NeedDecision> = needs
            .iter()
            .map(|n| NeedDecision::of_valid(record.holds(&n.database, n.action), &subject))
            .collect();
        let verdict = Verdict {
            cache: CacheUse::None,
            decisions,
            expires_at: record.expires_at,
            reusable_until: Some(reusable_until(record.expires_at)),
        };
        self.count(&verdict);
        Ok(verdict)
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }

    fn generation(&self) -> Option<u64> {
        Some(self.registry.generation())
    }

    fn reused(&self, verdict: &Verdict) {
        // Counted as the answer it repeats.
        self.count(verdict);
    }
}

/// Longest reuse of an answer while no token changes (a bound, not a
/// cache lifetime: any change ends it sooner).
const LONGEST_REUSE: Duration = Duration::from_secs(60);

/// Until when an answer about a token expiring at `expires_at` holds.
fn reusable_until(expires_at: Option<SystemTime>) -> Instant {
    let now = Instant::now();
    let left = expires_at.map_or(LONGEST_REUSE, |at| {
        at.duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(LONGEST_REUSE)
    });
    now + left
}
