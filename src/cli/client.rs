//! The management commands' connection to the token service: the `--authz`
//! URL, a channel with connect and call timeouts, and the interceptor that
//! puts the management token into every call's `authorization` metadata.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};

use super::args::ConnectionOptions;
use super::credentials::{self, ManagementToken};
use super::error::{CliError, chain};
use crate::config::AuthzTlsOptions;
use crate::proto::tokens::token_service_client::TokenServiceClient;

/// Longest wait for the TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for one call's answer.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A validated `--authz` URL: `http(s)://host[:port]`, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthzUrl {
    normalized: String,
}

impl AuthzUrl {
    /// Checks a URL as typed by the user; every failure is a usage error.
    pub fn parse(input: &str) -> Result<Self, CliError> {
        let input = input.trim();
        // A URL with userinfo may carry a secret: never echo one.
        let shown = if input.contains('@') {
            "(not shown: it contains '@')".to_owned()
        } else {
            format!("{input:?}")
        };
        let bad = |why: &str| {
            CliError::usage(format!(
                "invalid --authz URL {shown}: {why}; expected http://HOST:PORT or https://HOST:PORT"
            ))
        };
        if input.is_empty() {
            return Err(bad("it is empty"));
        }
        let uri: http::Uri = input
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        let scheme = match uri.scheme_str() {
            None => return Err(bad("it has no scheme")),
            Some(s) => s.to_ascii_lowercase(),
        };
        if scheme != "http" && scheme != "https" {
            return Err(bad(&format!("unsupported scheme {scheme:?}")));
        }
        let Some(authority) = uri.authority() else {
            return Err(bad("it has no host"));
        };
        if authority.as_str().contains('@') {
            return Err(bad(
                "credentials in the URL are not supported (use --token-file or FLUXGATE_TOKEN)",
            ));
        }
        if authority.host().is_empty() {
            return Err(bad("it has no host"));
        }
        // gRPC puts the method in the path, so a base path cannot be honoured.
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad("it must not have a path or query"));
        }
        Ok(Self {
            normalized: format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()),
        })
    }

    /// `scheme://host:port`, lower-cased: shown in messages and used as the
    /// keyring entry's user name, so each token service has its own entry.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }
}

impl fmt::Display for AuthzUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

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
}

impl Client {
    /// Validates the URL, finds the management token and connects: what
    /// every command does once its own flags have been checked.
    pub async fn open(conn: &ConnectionOptions) -> Result<Self, CliError> {
        let url = AuthzUrl::parse(&conn.authz)?;
        let token = credentials::load(conn.token_file.as_deref(), &url)?;
        Self::connect(url, token, &conn.tls).await
    }

    /// Connects to `url` (with TLS per `tls` for https://), failing with
    /// "unavailable" after [`CONNECT_TIMEOUT`].
    pub async fn connect(
        url: AuthzUrl,
        token: ManagementToken,
        tls: &AuthzTlsOptions,
    ) -> Result<Self, CliError> {
        let interceptor = AuthInterceptor::new(&token)?;
        let uri: http::Uri = url
            .as_str()
            .parse()
            .map_err(|e| CliError::usage(format!("invalid --authz URL {url}: {}", chain(&e))))?;
        // A bad TLS file is a usage error: the command line names a file
        // that cannot be used, and the message names it.
        let endpoint = crate::tls::client::grpc_endpoint("--authz", &uri, &tls.client_files())
            .map_err(|e| CliError::usage(e.to_string()))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        if crate::tls::client::is_cleartext_remote(&uri) {
            eprintln!(
                "fluxgate: warning: {url} is plain http to another host: the management token crosses the network in clear; use https://"
            );
        }
        let unreachable = |why: String| {
            CliError::unavailable(format!("cannot reach the token service at {url}: {why}"))
        };
        // The outer timeout also bounds name resolution, which
        // connect_timeout does not cover.
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, endpoint.connect()).await {
            Err(_) => {
                return Err(unreachable(format!(
                    "no connection within {}s",
                    CONNECT_TIMEOUT.as_secs()
                )));
            }
            // tonic's top level says only "transport error": start below it.
            Ok(Err(e)) => {
                let why = std::error::Error::source(&e).map_or_else(|| chain(&e), chain);
                return Err(unreachable(why));
            }
            Ok(Ok(channel)) => channel,
        };
        Ok(Self {
            inner: TokenServiceClient::with_interceptor(channel, interceptor),
            token,
            url,
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
                self.url,
                CALL_TIMEOUT.as_secs()
            ))),
            // No answer at all: the connection failed under the call. Over
            // TLS 1.3 this is how a server that refuses the client
            // certificate answers (the handshake looked complete to the
            // client), so the message says where to look.
            Ok(Err(status)) if transport_failure(&status) => {
                let hint = if self.url.as_str().starts_with("https://") {
                    " (if it requires client certificates: --authz-client-cert and --authz-client-key, signed by a CA it trusts)"
                } else {
                    ""
                };
                let why = std::error::Error::source(&status).map_or_else(String::new, chain);
                Err(CliError::unavailable(format!(
                    "{doing}: cannot reach the token service at {}: {why}{hint}",
                    self.url
                )))
            }
            Ok(Err(status)) => {
                let error = CliError::from_status(&status, doing, self.token.expose());
                // What a server that is not a fluxgate token service answers.
                Err(match status.code() {
                    Code::Unknown | Code::Unimplemented | Code::Internal => {
                        error.with_suffix(&format!(" (is {} a fluxgate token service?)", self.url))
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::error::ErrorKind;

    #[test]
    fn urls_are_checked_and_normalized() {
        let url = AuthzUrl::parse(" HTTP://LocalHost:8090/ ").expect("valid");
        assert_eq!(url.as_str(), "http://localhost:8090");
        assert!(AuthzUrl::parse("https://authz.example:443").is_ok());
        for bad in [
            "",
            "localhost:8090",
            "ftp://x:1",
            "http://",
            "http://h:1/prefix",
            "http://h:1/?a=b",
            "not a url",
        ] {
            let e = AuthzUrl::parse(bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::Usage, "{bad}");
        }
    }

    #[test]
    fn urls_with_credentials_are_refused_without_echo() {
        let e = AuthzUrl::parse("http://user:s3cret@h:1").expect_err("userinfo");
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert!(!e.to_string().contains("s3cret"));
    }
}
