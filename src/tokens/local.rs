//! The in-process authorizer of `fluxgate serve`: the proxy's
//! [`Authorizer`] answered straight from the token registry in the same
//! process, with no network hop and nothing to
//! cache (a revocation is seen by the very next request).

use std::sync::Arc;

use async_trait::async_trait;

use super::TokenRegistry;
use crate::authz::{Authorizer, AuthzError, CacheUse, Need, NeedDecision, Verdict};
use crate::credentials::Token;

/// Decides from a [`TokenRegistry`] in this process.
#[derive(Debug, Clone)]
pub struct LocalAuthorizer {
    registry: Arc<TokenRegistry>,
}

impl LocalAuthorizer {
    /// Decides from `registry`.
    pub fn new(registry: Arc<TokenRegistry>) -> Self {
        Self { registry }
    }
}

#[async_trait]
impl Authorizer for LocalAuthorizer {
    async fn check(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        let Some(record) = self.registry.find_usable(token.expose()) else {
            metrics::counter!("fluxgate_authorize_requests_total", "result" => "invalid")
                .increment(1);
            return Ok(Verdict {
                cache: CacheUse::None,
                decisions: vec![NeedDecision::InvalidToken; needs.len()],
                expires_at: None,
            });
        };
        let subject: Arc<str> = Arc::from(record.id.as_str());
        let decisions: Vec<NeedDecision> = needs
            .iter()
            .map(|n| {
                if record.holds(&n.database, n.action) {
                    NeedDecision::Allowed {
                        subject: Arc::clone(&subject),
                    }
                } else {
                    NeedDecision::Forbidden {
                        subject: Arc::clone(&subject),
                    }
                }
            })
            .collect();
        let result = if decisions
            .iter()
            .all(|d| matches!(d, NeedDecision::Allowed { .. }))
        {
            "valid"
        } else {
            "forbidden"
        };
        metrics::counter!("fluxgate_authorize_requests_total", "result" => result).increment(1);
        Ok(Verdict {
            cache: CacheUse::None,
            decisions,
            expires_at: record.expires_at,
        })
    }

    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}
