//! Forwarding to the database: the request rewritten for the upstream
//! (credentials removed, an optional upstream credential added, hop-by-hop
//! headers dropped, `X-Forwarded-*` set, and for a decided request its
//! canonical query string and body put in place) over pooled connections
//! (or the one kept for the caller's connection, [`pinned`]), and the
//! response streamed back untouched but for hop-by-hop headers. An
//! `https://` upstream is reached over TLS (hyper-rustls), HTTP/1.1 or h2
//! as for plain http. An upstream that sends no response head within
//! `--upstream-timeout` is abandoned (504).

mod headers;
mod pinned;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, request};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use self::headers::{replace_body_headers, set_forwarded, strip_hop_by_hop};
pub use self::pinned::Origin;
use self::pinned::{KeptCount, Take};
use super::body::{BoxError, ProxyBody};
use super::read::Canonical;
use super::read::params::strip_query;
use super::reject::Rejection;
use crate::telemetry;

/// Query parameters that carry v1 credentials; never forwarded.
const CREDENTIAL_PARAMS: &[&str] = &["u", "p"];

/// Which protocol the upstream connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 (InfluxDB's HTTP API).
    Http1,
    /// HTTP/2 with prior knowledge (gRPC / Flight).
    Http2,
}

/// A pooled client for one upstream base URL. Clones share the pool;
/// [`Upstream::with_own_pool`] makes one that does not.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    /// What `client` was built from, to build others with their own pool.
    builder: hyper_util::client::legacy::Builder,
    connector: HttpsConnector<HttpConnector>,
    base: Uri,
    /// The base's parts, ready to build every request's URI from.
    scheme: Option<Scheme>,
    authority: Option<Authority>,
    prefix: String,
    /// The `Host` a request on a connection of the proxy's own carries
    /// (the pool's client sets the same from the URI).
    host: Option<HeaderValue>,
    /// Tells this upstream's kept connections from another's.
    id: u64,
    /// The connections kept for callers that are open now (shared by
    /// clones, not by [`Upstream::with_own_pool`]'s).
    kept: KeptCount,
    credential: Option<HeaderValue>,
    protocol: Protocol,
    response_timeout: Duration,
}

/// Most upstream connections kept for callers at once, per upstream pool
/// (each listener thread has its own; as many as a pool keeps idle): past
/// it, callers share the pool, so many idle keep-alive callers cannot hold
/// as many upstream connections.
const MAX_KEPT: usize = 256;

/// Most upstream connections opened to be kept per second, per upstream
/// pool: callers that send a few requests per connection and go, many
/// times a second, share the pool's connections instead of each opening
/// (and the proxy closing) one of its own.
const MAX_KEPT_OPENS_PER_SECOND: u32 = 32;

/// Longest wait for the upstream's response head unless configured.
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

impl Upstream {
    /// A client for `base` (scheme, authority and optional path prefix).
    /// An `https://` base trusts the system's roots.
    pub fn new(base: Uri, credential: Option<HeaderValue>, protocol: Protocol) -> Self {
        Self::with_tls(base, credential, protocol, None)
    }

    /// [`Upstream::new`] with the TLS client configuration for an
    /// `https://` base (trusted roots; ALPN is set here from `protocol`).
    /// `None`: the system's roots, when the base is https.
    pub fn with_tls(
        base: Uri,
        credential: Option<HeaderValue>,
        protocol: Protocol,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Self {
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        // The TLS layer below takes https:// URIs; plain http stays plain.
        http.enforce_http(false);
        let tls = tls.map_or_else(|| default_tls(&base), |c| (*c).clone());
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        // ALPN matches the protocol spoken: h2 for gRPC, none (HTTP/1.1)
        // otherwise, as InfluxDB's HTTP API expects.
        let connector = match protocol {
            Protocol::Http1 => https.enable_http1().wrap_connector(http),
            Protocol::Http2 => https.enable_http2().wrap_connector(http),
        };
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256);
        if protocol == Protocol::Http2 {
            builder.http2_only(true).http2_adaptive_window(true);
        }
        Self {
            client: builder.build(connector.clone()),
            builder,
            connector,
            scheme: base.scheme().cloned(),
            authority: base.authority().cloned(),
            prefix: base.path().trim_end_matches('/').to_owned(),
            host: host_header(&base),
            id: pinned::upstream_id(),
            kept: KeptCount::default(),
            base,
            credential,
            protocol,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
        }
    }

    /// The same upstream over a pool of its own: a listener thread keeps
    /// its upstream connections on its own runtime, so a request and the
    /// connection carrying it never wake another thread.
    pub fn with_own_pool(&self) -> Self {
        Self {
            client: self.builder.build(self.connector.clone()),
            id: pinned::upstream_id(),
            kept: KeptCount::default(),
            ..self.clone()
        }
    }

    /// Gives up on a response head after `timeout`.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The upstream URI for `path` with query string `query` (empty: none),
    /// under the base URL. The path goes in front of the query in the
    /// query's own buffer, which moves once (a canonical query is made with
    /// room for it, see [`crate::proxy::read::params::PATH_ROOM`]).
    pub fn target(&self, path: &str, query: String) -> Result<Uri, Rejection> {
        let unfit = || Rejection::BadRequest("request target cannot be forwarded".to_owned());
        let head = self.prefix.bytes().chain(path.bytes());
        let path_and_query = if query.is_empty() {
            head.collect::<Vec<u8>>()
        } else {
            let mut path_and_query = query.into_bytes();
            path_and_query.splice(0..0, head.chain(std::iter::once(b'?')));
            path_and_query
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme.clone_from(&self.scheme);
        parts.authority.clone_from(&self.authority);
        // Taken as is, not copied.
        parts.path_and_query = Some(PathAndQuery::try_from(path_and_query).map_err(|_| unfit())?);
        Uri::from_parts(parts).map_err(|_| unfit())
    }

    /// Forwards a request the proxy did not decide (public routes, and
    /// routes an operator opened with `--allow-admin-path`): its query string
    /// as sent, minus credential parameters; `body` when given, else none
    /// (an unauthenticated caller never streams anything upstream).
    pub async fn forward_undecided(
        &self,
        mut parts: request::Parts,
        body: Option<ProxyBody>,
        origin: &Origin,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let query = strip_query(parts.uri.query().unwrap_or(""), CREDENTIAL_PARAMS);
        parts.uri = self.target(parts.uri.path(), query)?;
        let body = match body {
            Some(body) => body,
            None => no_body(&mut parts.headers),
        };
        self.send(parts, body, origin, false).await
    }

    /// Forwards a decided request in its canonical form: the canonical query
    /// string, and the canonical body when there is one; otherwise the
    /// caller's body when given (streamed: a write's line protocol), or none.
    pub async fn forward_canonical(
        &self,
        mut parts: request::Parts,
        canonical: Canonical,
        caller_body: Option<ProxyBody>,
        origin: &Origin,
    ) -> Result<Response<ProxyBody>, Rejection> {
        parts.uri = self.target(parts.uri.path(), canonical.query)?;
        let body = match (canonical.body, caller_body) {
            (Some((bytes, content_type)), _) => {
                replace_body_headers(&mut parts.headers, &bytes, Some(content_type));
                ProxyBody::full(bytes)
            }
            (None, Some(body)) => body,
            (None, None) => no_body(&mut parts.headers),
        };
        self.send(parts, body, origin, true).await
    }

    /// Forwards a gRPC call as it is (its query string is meaningless to
    /// gRPC and dropped).
    pub async fn forward_grpc(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        origin: &Origin,
    ) -> Result<Response<ProxyBody>, Rejection> {
        parts.uri = self.target(parts.uri.path(), String::new())?;
        self.send(parts, body, origin, false).await
    }

    /// Sends a request; a `decided` one (authorized, in its canonical form)
    /// may go over the connection kept for the caller's. Undecided ones
    /// (public routes, `--allow-path` methods such as CONNECT, callers
    /// without a token) always use the pool: nobody opens upstream
    /// connections of their own without a token.
    async fn send(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        origin: &Origin,
        decided: bool,
    ) -> Result<Response<ProxyBody>, Rejection> {
        // An HTTP/1.x caller's requests never overlap (see `pinned`).
        let keep = decided && parts.version < Version::HTTP_2 && self.protocol == Protocol::Http1;
        parts.version = match self.protocol {
            Protocol::Http1 => Version::HTTP_11,
            Protocol::Http2 => Version::HTTP_2,
        };
        let grpc_te = self.protocol == Protocol::Http2
            && parts
                .headers
                .get(header::TE)
                .is_some_and(|v| v == "trailers");
        strip_hop_by_hop(&mut parts.headers);
        if grpc_te {
            parts
                .headers
                .insert(header::TE, HeaderValue::from_static("trailers"));
        }
        parts.headers.remove(header::AUTHORIZATION);
        parts.headers.remove(header::HOST);
        if let Some(credential) = &self.credential {
            parts
                .headers
                .insert(header::AUTHORIZATION, credential.clone());
        }
        set_forwarded(&mut parts.headers, origin);

        let started = tokio::time::Instant::now();
        let deadline = started + self.response_timeout;
        let request = Request::from_parts(parts, body);
        let result = if keep {
            self.send_sequential(request, origin, deadline).await
        } else {
            tokio::time::timeout_at(deadline, self.send_pooled(request))
                .await
                .ok()
        };
        telemetry::upstream_seconds(started.elapsed().as_secs_f64());
        let response = match result {
            Some(Ok(response)) => response,
            Some(Err(e)) => {
                tracing::warn!(error = %e, upstream = %self.base, "upstream request failed");
                return Err(Rejection::UpstreamUnavailable);
            }
            None => {
                // Dropping the request future closes the upstream stream
                // (h2) or connection (HTTP/1.1): nothing is left waiting.
                tracing::warn!(upstream = %self.base, timeout = ?self.response_timeout, "upstream did not answer in time");
                return Err(Rejection::UpstreamTimeout);
            }
        };
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        // A credential in an answer is the upstream's (InfluxDB 3's Flight
        // Handshake echoes the one it was called with): never passed on.
        parts.headers.remove(header::AUTHORIZATION);
        let body = match self.protocol {
            Protocol::Http1 => ProxyBody::new(body),
            Protocol::Http2 => ProxyBody::new(ScrubTrailers(body)),
        };
        Ok(Response::from_parts(parts, body))
    }
}

impl Upstream {
    async fn send_pooled(
        &self,
        request: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, BoxError> {
        Ok(self.client.request(request).await?)
    }

    /// Sends an HTTP/1.x caller's request, within `deadline` (`None`: not
    /// answered in time): over the shared pool the first time, then over a
    /// connection kept for the caller's connection, timed by the caller
    /// connection's timer. The connection is kept again once it has
    /// answered; one that failed or was too slow is dropped, which closes
    /// it.
    async fn send_sequential(
        &self,
        request: Request<ProxyBody>,
        origin: &Origin,
        deadline: tokio::time::Instant,
    ) -> Option<Result<Response<Incoming>, BoxError>> {
        let (take, mut timer) = origin.pinned.take(self.id, deadline);
        let (result, sender) = tokio::select! {
            biased;
            sent = self.exchange(request, take) => sent,
            // Polled whatever the task's budget (as `tokio::time::Timeout`
            // polls its timer): an exchange that spent it cannot hold the
            // timeout off.
            () = tokio::task::unconstrained(&mut timer) => {
                origin.pinned.keep(None, timer);
                return None;
            }
        };
        origin
            .pinned
            .keep(sender.map(|sender| (self.id, sender)), timer);
        Some(result)
    }

    /// [`Upstream::send_sequential`]'s exchange: the answer, and the kept
    /// connection that carried it.
    async fn exchange(
        &self,
        request: Request<ProxyBody>,
        take: Take,
    ) -> (
        Result<Response<Incoming>, BoxError>,
        Option<SendRequest<ProxyBody>>,
    ) {
        let opened = match take {
            Take::Pool => Ok(None),
            Take::Open => self.open().await,
            Take::Kept(mut sender) => match sender.ready().await {
                Ok(()) => Ok(Some(sender)),
                // Closed by the upstream while idle.
                Err(_) => self.open().await,
            },
        };
        let kept = match opened {
            Ok(kept) => kept,
            Err(e) => return (Err(e), None),
        };
        let (Some(mut sender), Some(host)) = (kept, &self.host) else {
            return (self.send_pooled(request).await, None);
        };
        // On a connection of its own the request names its target as a
        // path, and the host in `Host` (what the pool's client does).
        let (mut parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().cloned();
        let path = path.unwrap_or_else(|| PathAndQuery::from_static("/"));
        let absolute = std::mem::replace(&mut parts.uri, Uri::from(path));
        parts.headers.insert(header::HOST, host.clone());
        match sender
            .try_send_request(Request::from_parts(parts, body))
            .await
        {
            Ok(response) => (Ok(response), Some(sender)),
            Err(mut e) => match e.take_message() {
                // Not sent: the connection closed first. The pool sends it.
                Some(mut request) => {
                    *request.uri_mut() = absolute;
                    (self.send_pooled(request).await, None)
                }
                None => (Err(e.into_error().into()), None),
            },
        }
    }

    /// Opens an HTTP/1.1 connection of the proxy's own to the upstream,
    /// served on the current runtime (the listener thread's); `None` when
    /// [`MAX_KEPT`] are open already, or [`MAX_KEPT_OPENS_PER_SECOND`] were
    /// opened in the last second.
    async fn open(&self) -> Result<Option<SendRequest<ProxyBody>>, BoxError> {
        let limits = pinned::Limits {
            open: MAX_KEPT,
            opens_per_second: MAX_KEPT_OPENS_PER_SECOND,
        };
        let Some(permit) = self.kept.reserve(limits, std::time::Instant::now()) else {
            return Ok(None);
        };
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| tower_service::Service::<Uri>::poll_ready(&mut connector, cx))
            .await?;
        let io = tower_service::Service::call(&mut connector, self.base.clone()).await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        let upstream = self.base.clone();
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, %upstream, "upstream connection ended with an error");
            }
            drop(permit);
        });
        Ok(Some(sender))
    }
}

/// No body, and no header describing one.
fn no_body(headers: &mut http::HeaderMap) -> ProxyBody {
    replace_body_headers(headers, &Bytes::new(), None);
    ProxyBody::empty()
}

/// The `Host` header for requests to `base`: its host, and its port unless
/// it is the scheme's default (as hyper-util's client writes it).
fn host_header(base: &Uri) -> Option<HeaderValue> {
    let host = base.host()?;
    let default_port = match base.scheme_str() {
        Some("https") => Some(443),
        Some("http") => Some(80),
        _ => None,
    };
    let value = match base.port_u16() {
        Some(port) if Some(port) != default_port => format!("{host}:{port}"),
        _ => host.to_owned(),
    };
    HeaderValue::from_str(&value).ok()
}

/// A response body whose trailers lose any `authorization` (gRPC answers
/// carry metadata in trailers too).
#[derive(Debug)]
struct ScrubTrailers<B>(B);

impl<B> http_body::Body for ScrubTrailers<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::pin::Pin::new(&mut self.0).poll_frame(cx).map(|frame| {
            frame.map(|frame| {
                frame.map(|mut frame| {
                    if let Some(trailers) = frame.trailers_mut() {
                        trailers.remove(header::AUTHORIZATION);
                    }
                    frame
                })
            })
        })
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.0.size_hint()
    }
}

/// The TLS configuration of an upstream built without one: the system's
/// roots for an https base; for plain http an empty one, never used.
fn default_tls(base: &Uri) -> rustls::ClientConfig {
    let roots = if base.scheme_str() == Some("https") {
        crate::tls::client::system_roots().unwrap_or_else(|e| {
            tracing::warn!(error = %e, upstream = %base, "https upstream without trusted roots");
            Arc::new(rustls::RootCertStore::empty())
        })
    } else {
        Arc::new(rustls::RootCertStore::empty())
    };
    rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_protocol_versions(crate::tls::PROTOCOL_VERSIONS)
        // Cannot fail: ring supports both versions. Kept total all the same.
        .unwrap_or_else(|_| rustls::ClientConfig::builder())
        .with_root_certificates(roots)
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_sit_under_the_base() {
        let up = Upstream::new(
            "http://127.0.0.1:8087/prefix/".parse().unwrap(),
            None,
            Protocol::Http1,
        );
        let t = up
            .target("/write", "db=a+b&precision=s".to_owned())
            .unwrap();
        assert_eq!(
            t.to_string(),
            "http://127.0.0.1:8087/prefix/write?db=a+b&precision=s"
        );
        let t = up.target("/ping", String::new()).unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:8087/prefix/ping");
    }

    /// The target made in place is the one made by joining the parts, for
    /// bases with and without prefixes, odd paths and queries, the
    /// caller's query with credentials removed included.
    #[test]
    fn targets_made_in_place_are_the_parts_joined() {
        let joined = |up: &Upstream, path: &str, query: &str| {
            let sep = if query.is_empty() { "" } else { "?" };
            let pq = format!("{}{path}{sep}{query}", up.prefix);
            let mut parts = http::uri::Parts::default();
            parts.scheme.clone_from(&up.scheme);
            parts.authority.clone_from(&up.authority);
            parts.path_and_query = Some(PathAndQuery::try_from(pq).map_err(|_| ())?);
            Uri::from_parts(parts)
                .map(|u| u.to_string())
                .map_err(|_| ())
        };
        let long = format!("k={}", "v".repeat(5000));
        for base in [
            "http://h:1",
            "http://h:1/",
            "http://h:1/p",
            "http://h:1/p//",
            "https://h/a/b/",
        ] {
            let up = Upstream::new(base.parse().unwrap(), None, Protocol::Http1);
            for path in ["", "/", "*", "/write", "/a%20b", "//z", "/é"] {
                for query in [
                    "",
                    "a",
                    "a=b&u=x&p=y",
                    "?",
                    "&",
                    "#x",
                    "a b",
                    "é",
                    long.as_str(),
                ] {
                    let stripped = strip_query(query, CREDENTIAL_PARAMS);
                    for query in [query.to_owned(), stripped] {
                        let made = up.target(path, query.clone());
                        let made = made.map(|u| u.to_string()).map_err(|_| ());
                        assert_eq!(made, joined(&up, path, &query), "{base} {path:?} {query:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn host_headers_are_written_as_the_pools_client_writes_them() {
        let host = |base: &str| {
            host_header(&base.parse().unwrap()).map(|h| h.to_str().unwrap().to_owned())
        };
        for (base, expected) in [
            ("http://127.0.0.1:8086", "127.0.0.1:8086"),
            ("http://db.example", "db.example"),
            ("http://db.example:80/x", "db.example"),
            ("https://db.example:443/", "db.example"),
            ("https://db.example:80", "db.example:80"),
            ("http://db.example:443", "db.example:443"),
            ("http://[::1]:8086", "[::1]:8086"),
        ] {
            assert_eq!(host(base).as_deref(), Some(expected), "{base}");
        }
    }
}
