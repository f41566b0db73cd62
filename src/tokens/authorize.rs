//! `influxdata.iox.authz.v1.IoxAuthorizerService/Authorize` over the registry:
//! the InfluxDB 3 wire contract, answered from memory, with invalid-token
//! answers throttled per caller (see [`throttle`](super::throttle)).

use std::sync::Arc;
use std::time::{Instant, UNIX_EPOCH};

use crate::credentials;

use tonic::{Request, Response, Status};

use crate::proto::EXPIRES_AT_METADATA;
use crate::proto::iox_authz::iox_authorizer_service_server::IoxAuthorizerService;
use crate::proto::iox_authz::permission::PermissionOneOf;
use crate::proto::iox_authz::resource_action_permission::{
    Action as PbAction, ResourceType, Target,
};
use crate::proto::iox_authz::{AuthorizeRequest, AuthorizeResponse, Permission, Subject};

use super::model::{Action, TokenKind, TokenRecord};
use super::registry::TokenRegistry;
use super::throttle::{Caller, InvalidTokenThrottle, Throttled};

/// The Authorize service.
#[derive(Debug, Clone)]
pub struct AuthorizeService {
    registry: Arc<TokenRegistry>,
    throttle: Arc<InvalidTokenThrottle>,
}

impl AuthorizeService {
    /// Serves Authorize from `registry`, with the default throttle.
    pub fn new(registry: Arc<TokenRegistry>) -> Self {
        Self::with_throttle(registry, Arc::new(InvalidTokenThrottle::default()))
    }

    /// Serves Authorize from `registry`, throttling invalid answers with
    /// `throttle`.
    pub fn with_throttle(
        registry: Arc<TokenRegistry>,
        throttle: Arc<InvalidTokenThrottle>,
    ) -> Self {
        Self { registry, throttle }
    }

    /// The throttled identity of the caller, or `None` when it is exempt:
    /// a client certificate the TLS layer verified, or a usable proxy
    /// token in its `authorization` metadata.
    fn throttled_caller<T>(&self, request: &Request<T>) -> Option<Caller> {
        if request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
            return None;
        }
        let proxy = request
            .metadata()
            .get("authorization")
            .and_then(|v| credentials::from_authorization(v.as_bytes()).ok())
            .and_then(|t| self.registry.find_usable(t.expose()))
            .is_some_and(|t| t.kind == TokenKind::Proxy);
        (!proxy).then(|| Caller::of(request.remote_addr()))
    }
}

fn exhausted(wait: std::time::Duration) -> Status {
    metrics::counter!("fluxgate_authorize_requests_total", "result" => "throttled").increment(1);
    Status::resource_exhausted(format!(
        "too many invalid tokens from this address; retry in {}s (callers with a proxy token or a client certificate are not throttled)",
        wait.as_secs().max(1)
    ))
}

/// Maps a wire action to the model's; `None` for unspecified or unknown values.
pub fn action_from_wire(action: i32) -> Option<Action> {
    Some(match PbAction::try_from(action).ok()? {
        PbAction::ReadSchema => Action::ReadSchema,
        PbAction::Read => Action::Read,
        PbAction::Write => Action::Write,
        PbAction::Create => Action::Create,
        PbAction::Delete => Action::Delete,
        PbAction::Unspecified => return None,
    })
}

/// True when `token` holds the wire permission `p`. Only database resources
/// named by name exist; anything else is not held.
fn holds(token: &TokenRecord, p: &Permission) -> bool {
    let Some(PermissionOneOf::ResourceAction(ra)) = &p.permission_one_of else {
        return false;
    };
    if ra.resource_type != ResourceType::Database as i32 {
        return false;
    }
    let Some(Target::ResourceName(name)) = &ra.target else {
        return false;
    };
    action_from_wire(ra.action).is_some_and(|action| token.holds(name, action))
}

#[tonic::async_trait]
impl IoxAuthorizerService for AuthorizeService {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let started = Instant::now();
        let caller = self.throttled_caller(&request);
        // Before looking at the token: a caller out of budget must not
        // learn whether its next guess is right.
        if let Some(caller) = caller
            && let Throttled::For(wait) = self.throttle.check(caller)
        {
            return Err(exhausted(wait));
        }
        let request = request.into_inner();
        let token = self.registry.find_usable(&request.token);
        // The liveness probe (empty token) reveals nothing and is not counted.
        if token.is_none()
            && !request.token.is_empty()
            && let Some(caller) = caller
            && let Throttled::For(wait) = self.throttle.invalid(caller)
        {
            tracing::info!(caller = ?caller, "Authorize: too many invalid tokens from one caller; throttling it");
            return Err(exhausted(wait));
        }
        let (result, response) = match &token {
            None => (
                "invalid",
                AuthorizeResponse {
                    valid: false,
                    subject: None,
                    permissions: Vec::new(),
                },
            ),
            Some(t) => {
                let held: Vec<Permission> = request
                    .permissions
                    .into_iter()
                    .filter(|p| holds(t, p))
                    .collect();
                let result = if held.is_empty() {
                    "forbidden"
                } else {
                    "valid"
                };
                (
                    result,
                    AuthorizeResponse {
                        valid: true,
                        subject: Some(Subject { id: t.id.clone() }),
                        permissions: held,
                    },
                )
            }
        };
        let mut response = Response::new(response);
        if let Some(expires) = token.as_ref().and_then(|t| t.expires_at) {
            let ms = expires
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            if let Ok(value) = ms.to_string().parse() {
                response.metadata_mut().insert(EXPIRES_AT_METADATA, value);
            }
        }
        metrics::counter!("fluxgate_authorize_requests_total", "result" => result).increment(1);
        metrics::histogram!("fluxgate_authorize_seconds").record(started.elapsed().as_secs_f64());
        Ok(response)
    }
}
