//! The management commands' connection to the token service: the `--authz`
//! URL (or several replicas' URLs, comma-separated: the first that answers
//! is used), a channel with connect and call timeouts, and the interceptor
//! that puts the management token into every call's `authorization`
//! metadata.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::credentials::{self, ManagementToken};
use super::error::{CliError, chain};
pub use super::url::AuthzUrl;
use crate::config::AuthzTlsOptions;
use crate::config::commands::ConnectionOptions;
use crate::proto::tokens::token_service_client::TokenServiceClient;

/// Longest wait for the TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one call's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct AuthInterceptor {
    value: MetadataValue<Ascii>,
}

impl AuthInterceptor {
    fn new(token: &ManagementToken) -> Result<Self, CliError> {
        let mut value =
            MetadataValue::try_from(format!("Bearer {}", token.expose())).map_err(|_| {
                CliError::authentication(format!(
                    "the management token from {} cannot be sent in a header",
                    token.source()
                ))
            })?;
        // Keeps the value out of any Debug output of the request.
        value.set_sensitive(true);
        Ok(Self { value })
    }
}

impl fmt::Debug for AuthInterceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthInterceptor(<redacted>)")
    }
}

impl Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.value.clone());
        Ok(request)
    }
}

/// The generated client with the management token attached.
pub type Inner = TokenServiceClient<InterceptedService<Channel, AuthInterceptor>>;

/// A connected, authenticated management client.
#[derive(Debug)]
pub struct Client {
    inner: Inner,
    token: ManagementToken,
    url: AuthzUrl,
    /// The replica in use.
    connected: String,
}

enum ConnectError {
    Usage(CliError),
    Unreachable(String),
}

/// A channel to one token service URL (already validated).
async fn connect_one(url: &str, tls: &AuthzTlsOptions) -> Result<Channel, ConnectError> {
    let uri: http::Uri = url.parse().map_err(|e| {
        ConnectError::Usage(CliError::usage(format!(
            "invalid --authz URL {url}: {}",
            chain(&e)
        )))
    })?;
    // A bad TLS file is a usage error: the command line names a file that
    // cannot be used, and the message names it.
    let endpoint = crate::tls::client::grpc_endpoint("--authz", &uri, &tls.client_files())
        .map_err(|e| ConnectError::Usage(CliError::usage(e.to_string())))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    if crate::tls::client::is_cleartext_remote(&uri) {
        eprintln!(
            "fluxgate: warning: {url} is plain http to another host: the management token crosses the network in clear; use https://"
        );
    }
    // The outer timeout also bounds name resolution, which connect_timeout
    // does not cover.
    match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
        Err(_) => Err(ConnectError::Unreachable(format!(
            "no connection within {}s",
            CONNECT_TIMEOUT.as_secs()
        ))),
        // tonic's top level says only "transport error": start below it.
        Ok(Err(e)) => Err(ConnectError::Unreachable(
            std::error::Error::source(&e).map_or_else(|| chain(&e), chain),
        )),
        Ok(Ok(channel)) => Ok(channel),
    }
}

impl Client {
    /// Validates the URL, finds the management token and connects: what
    /// every command does once its own flags have been checked.
    pub async fn open(conn: &ConnectionOptions) -> Result<Self, CliError> {
        let url = AuthzUrl::parse(&conn.authz)?;
        let token = credentials::load(conn.token_file.as_deref(), &url)?;
        Self::connect(url, token, &conn.tls).await
    }

    /// Connects to the first of `url`'s replicas that answers (with TLS
    /// per `tls` for https://), failing with "unavailable" when none does
    /// within [`CONNECT_TIMEOUT`] each.
    pub async fn connect(
        url: AuthzUrl,
        token: ManagementToken,
        tls: &AuthzTlsOptions,
    ) -> Result<Self, CliError> {
        let interceptor = AuthInterceptor::new(&token)?;
        let mut failures = Vec::new();
        for one in url.urls() {
            match connect_one(one, tls).await {
                Ok(channel) => {
                    return Ok(Self {
                        inner: TokenServiceClient::with_interceptor(channel, interceptor),
                        token,
                        connected: one.clone(),
                        url,
                    });
                }
                Err(ConnectError::Usage(e)) => return Err(e),
                Err(ConnectError::Unreachable(why)) => failures.push((one.clone(), why)),
            }
        }
        Err(match failures.as_slice() {
            [(one, why)] => {
                CliError::unavailable(format!("cannot reach the token service at {one}: {why}"))
            }
            _ => CliError::unavailable(format!(
                "cannot reach any token service replica: {}",
                failures
                    .iter()
                    .map(|(one, why)| format!("{one}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            )),
        })
    }

    /// Runs one call with [`CALL_TIMEOUT`]; `doing` starts the error message
    /// ("cannot list database tokens").
    pub async fn call<T, F, Fut>(&self, doing: &str, call: F) -> Result<T, CliError>
    where
        F: FnOnce(Inner) -> Fut,
        Fut: Future<Output = Result<Response<T>, Status>>,
    {
        match tokio::time::timeout(CALL_TIMEOUT, call(self.inner.clone())).await {
            Err(_) => Err(CliError::unavailable(format!(
                "{doing}: the token service at {} did not answer within {}s",
                self.connected,
                CALL_TIMEOUT.as_secs()
            ))),
            // No answer at all: the connection failed under the call. Over
            // TLS 1.3 this is how a server that refuses the client
            // certificate answers (the handshake looked complete to the
            // client), so the message says where to look.
            Ok(Err(status)) if transport_failure(&status) => {
                let hint = if self.connected.starts_with("https://") {
                    " (if it requires client certificates: --authz-client-cert and --authz-client-key, signed by a CA it trusts)"
                } else {
                    ""
                };
                let why = std::error::Error::source(&status).map_or_else(String::new, chain);
                Err(CliError::unavailable(format!(
                    "{doing}: cannot reach the token service at {}: {why}{hint}",
                    self.connected
                )))
            }
            Ok(Err(status)) => {
                let error = CliError::from_status(&status, doing, self.token.expose());
                // What a server that is not a fluxgate token service answers.
                Err(match status.code() {
                    Code::Unknown | Code::Unimplemented | Code::Internal => error.with_suffix(
                        &format!(" (is {} a fluxgate token service?)", self.connected),
                    ),
                    _ => error,
                })
            }
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// The management token in use.
    pub fn token(&self) -> &ManagementToken {
        &self.token
    }

    /// The token service's URL.
    pub fn url(&self) -> &AuthzUrl {
        &self.url
    }
}

/// True when `status` was made on this side from a connection failure,
/// not received from the server.
fn transport_failure(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        if e.is::<tonic::transport::Error>() || e.is::<hyper::Error>() {
            return true;
        }
        source = e.source();
    }
    false
}
