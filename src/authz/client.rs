//! The gRPC client of `influxdata.iox.authz.v1.IoxAuthorizerService`: one
//! Authorize call per uncached check, with a deadline. Works against
//! fluxgate's token service or any service speaking the IOx contract, one
//! replica or several (see [`super::failover`]): a call that finds its
//! replica gone is retried at once on the next, within the same deadline.
//!
//! With a [`ProxyCredential`] (`--authz-token-file`), every call carries
//! the proxy's own token in its `authorization` metadata (the caller's token
//! stays in the request message): fluxgate's token service then knows the
//! caller is a proxy and does not throttle its invalid-token answers.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Endpoint;

use crate::credentials::Token;
use crate::proto::EXPIRES_AT_METADATA;
use crate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient;
use crate::proto::iox_authz::permission::PermissionOneOf;
use crate::proto::iox_authz::resource_action_permission::{
    Action as PbAction, ResourceType, Target,
};
use crate::proto::iox_authz::{AuthorizeRequest, Permission, ResourceActionPermission};

use super::failover::{AuthzEndpoints, FailoverChannel};
use super::{Action, Authorizer, AuthzError, CacheUse, Need, NeedDecision, Verdict};

/// The proxy's own credential towards the token service: a proxy token,
/// sent as `authorization: Bearer <token>`. Its `Debug` is redacted.
#[derive(Clone)]
pub struct ProxyCredential(MetadataValue<Ascii>);

impl ProxyCredential {
    /// The credential for `token`; `None` when it cannot be sent in a
    /// header (spaces, control or non-ASCII characters).
    pub fn new(token: &str) -> Option<Self> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let mut value = MetadataValue::try_from(format!("Bearer {token}")).ok()?;
        value.set_sensitive(true);
        Some(Self(value))
    }

    /// Reads it from `path` (`--authz-token-file`), warning when group or
    /// others can read the file.
    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let secret = crate::hardening::read_secret_file(path, "--authz-token-file")?;
        Self::new(&secret).ok_or_else(|| {
            anyhow::anyhow!(
                "--authz-token-file {} holds spaces, control or non-ASCII characters; is it the right file?",
                path.display()
            )
        })
    }

    /// Adds the credential to `request`.
    pub fn attach<T>(&self, request: &mut tonic::Request<T>) {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
    }
}

impl std::fmt::Debug for ProxyCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyCredential(<redacted>)")
    }
}

/// Authorize client over lazily connected, multiplexed HTTP/2 channels.
#[derive(Debug, Clone)]
pub struct AuthzClient {
    client: IoxAuthorizerServiceClient<FailoverChannel>,
    channel: FailoverChannel,
    timeout: Duration,
    credential: Option<ProxyCredential>,
}

impl AuthzClient {
    /// A client for `endpoints` (one or several replicas) whose calls give
    /// up after `timeout`. Connects on first use, so the proxy can start
    /// before the token service.
    pub fn new(endpoints: impl Into<AuthzEndpoints>, timeout: Duration) -> Self {
        let channel = endpoints.into().channel(|endpoint| {
            endpoint
                .connect_timeout(timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(20))
                .keep_alive_timeout(Duration::from_secs(10))
                .keep_alive_while_idle(true)
        });
        Self {
            client: IoxAuthorizerServiceClient::new(channel.clone()),
            channel,
            timeout,
            credential: None,
        }
    }

    /// Sends `credential` with every call.
    pub fn with_credential(mut self, credential: Option<ProxyCredential>) -> Self {
        self.credential = credential;
        self
    }

    /// One Authorize call, retried on the next replica when its own was
    /// unreachable, all within the client's timeout.
    async fn call(
        &self,
        request: AuthorizeRequest,
    ) -> Result<tonic::Response<crate::proto::iox_authz::AuthorizeResponse>, AuthzError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut attempts = self.channel.replicas();
        loop {
            let before = self.channel.current();
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(deadline.saturating_duration_since(tokio::time::Instant::now()));
            if let Some(credential) = &self.credential {
                credential.attach(&mut call);
            }
            let mut client = self.client.clone();
            match tokio::time::timeout_at(deadline, client.authorize(call)).await {
                Err(_) => return Err(AuthzError::Timeout),
                Ok(Ok(r)) => return Ok(r),
                Ok(Err(status)) => {
                    attempts -= 1;
                    // The channel moved on: this replica is unreachable.
                    if attempts == 0 || self.channel.current() == before {
                        return Err(status_to_error(&status));
                    }
                }
            }
        }
    }

    /// A plaintext client for `uri`. For `https://` (TLS, mutual TLS) build
    /// the endpoint with [`crate::tls::client::grpc_endpoint`] and use
    /// [`AuthzClient::new`].
    pub fn for_uri(uri: http::Uri, timeout: Duration) -> Self {
        Self::new(Endpoint::from(uri), timeout)
    }
}

fn action_to_wire(action: Action) -> PbAction {
    match action {
        Action::ReadSchema => PbAction::ReadSchema,
        Action::Read => PbAction::Read,
        Action::Write => PbAction::Write,
        Action::Create => PbAction::Create,
        Action::Delete => PbAction::Delete,
    }
}

fn to_wire(need: &Need) -> Permission {
    Permission {
        permission_one_of: Some(PermissionOneOf::ResourceAction(ResourceActionPermission {
            resource_type: ResourceType::Database as i32,
            target: Some(Target::ResourceName(need.database.clone())),
            action: action_to_wire(need.action) as i32,
        })),
    }
}

fn status_to_error(status: &tonic::Status) -> AuthzError {
    match status.code() {
        tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => AuthzError::Timeout,
        code => AuthzError::Unavailable(format!("{code:?}: {}", status.message())),
    }
}

#[async_trait]
impl Authorizer for AuthzClient {
    async fn check(&self, token: &Token, needs: &[Need]) -> Result<Verdict, AuthzError> {
        let permissions: Vec<Permission> = needs.iter().map(to_wire).collect();
        let response = self
            .call(AuthorizeRequest {
                token: token.expose().to_vec(),
                permissions: permissions.clone(),
            })
            .await?;
        let expires_at = response
            .metadata()
            .get(EXPIRES_AT_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        let response = response.into_inner();
        if !response.valid {
            return Ok(Verdict {
                cache: CacheUse::None,
                reusable_until: None,
                decisions: vec![NeedDecision::InvalidToken; needs.len()],
                expires_at: None,
            });
        }
        let subject: Arc<str> = Arc::from(response.subject.map(|s| s.id).unwrap_or_default());
        let decisions = permissions
            .iter()
            .map(|p| NeedDecision::of_valid(response.permissions.contains(p), &subject))
            .collect();
        Ok(Verdict {
            cache: CacheUse::None,
            reusable_until: None,
            decisions,
            expires_at,
        })
    }

    async fn ready(&self) -> Result<(), String> {
        // The IOx liveness probe: empty token, no permissions.
        let probe = AuthorizeRequest {
            token: Vec::new(),
            permissions: Vec::new(),
        };
        match self.call(probe).await {
            Ok(_) => Ok(()),
            Err(AuthzError::Timeout) => Err("token service: no answer in time".to_owned()),
            Err(e) => Err(format!("token service: {e}")),
        }
    }
}
