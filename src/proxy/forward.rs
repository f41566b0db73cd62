//! Forwarding to the database: the request rewritten for the upstream
//! (credentials removed, an optional upstream credential added, hop-by-hop
//! headers dropped, `X-Forwarded-*` set, and for a decided request its
//! canonical query string and body put in place) over pooled connections,
//! and the response streamed back untouched but for hop-by-hop headers. An
//! `https://` upstream is reached over TLS (hyper-rustls), HTTP/1.1 or h2
//! as for plain http. An upstream that sends no response head within
//! `--upstream-timeout` is abandoned (504).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version, request};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use bytes::Bytes;

use super::body::ProxyBody;
use super::read::Canonical;
use super::read::params::strip_query;
use super::reject::Rejection;

/// Query parameters that carry v1 credentials; never forwarded.
const CREDENTIAL_PARAMS: &[&str] = &["u", "p"];

/// Headers that describe a body the proxy replaced with its own.
const BODY_HEADERS: &[HeaderName] = &[
    header::CONTENT_LENGTH,
    header::CONTENT_ENCODING,
    header::CONTENT_TYPE,
    header::TRANSFER_ENCODING,
    header::EXPECT,
];

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");

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
    credential: Option<HeaderValue>,
    protocol: Protocol,
    response_timeout: Duration,
    /// `fluxgate_upstream_seconds`, resolved once.
    seconds: metrics::Histogram,
}

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
            base,
            credential,
            protocol,
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            seconds: metrics::histogram!("fluxgate_upstream_seconds"),
        }
    }

    /// The same upstream over a pool of its own: a listener thread keeps
    /// its upstream connections on its own runtime, so a request and the
    /// connection carrying it never wake another thread.
    pub fn with_own_pool(&self) -> Self {
        Self {
            client: self.builder.build(self.connector.clone()),
            ..self.clone()
        }
    }

    /// Gives up on a response head after `timeout`.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// The upstream URI for `path` with query string `query` (empty: none),
    /// under the base URL.
    pub fn target(&self, path: &str, query: &str) -> Result<Uri, Rejection> {
        let unfit = || Rejection::BadRequest("request target cannot be forwarded".to_owned());
        let mut path_and_query =
            String::with_capacity(self.prefix.len() + path.len() + 1 + query.len());
        path_and_query.push_str(&self.prefix);
        path_and_query.push_str(path);
        if !query.is_empty() {
            path_and_query.push('?');
            path_and_query.push_str(query);
        }
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
        client: SocketAddr,
        scheme: &'static str,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let query = strip_query(parts.uri.query().unwrap_or(""), CREDENTIAL_PARAMS);
        parts.uri = self.target(parts.uri.path(), &query)?;
        let body = match body {
            Some(body) => body,
            None => {
                replace_body_headers(&mut parts.headers, &Bytes::new(), None);
                ProxyBody::empty()
            }
        };
        self.send(parts, body, client, scheme).await
    }

    /// Forwards a decided request in its canonical form: the canonical query
    /// string, and the canonical body when there is one; otherwise the
    /// caller's body when given (streamed: a write's line protocol), or none.
    pub async fn forward_canonical(
        &self,
        mut parts: request::Parts,
        canonical: Canonical,
        caller_body: Option<ProxyBody>,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Result<Response<ProxyBody>, Rejection> {
        parts.uri = self.target(parts.uri.path(), &canonical.query)?;
        let body = match (canonical.body, caller_body) {
            (Some((bytes, content_type)), _) => {
                replace_body_headers(&mut parts.headers, &bytes, Some(content_type));
                ProxyBody::full(bytes)
            }
            (None, Some(body)) => body,
            (None, None) => {
                replace_body_headers(&mut parts.headers, &Bytes::new(), None);
                ProxyBody::empty()
            }
        };
        self.send(parts, body, client, scheme).await
    }

    /// Forwards a gRPC call as it is (its query string is meaningless to
    /// gRPC and dropped).
    pub async fn forward_grpc(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Result<Response<ProxyBody>, Rejection> {
        parts.uri = self.target(parts.uri.path(), "")?;
        self.send(parts, body, client, scheme).await
    }

    async fn send(
        &self,
        mut parts: request::Parts,
        body: ProxyBody,
        client: SocketAddr,
        scheme: &'static str,
    ) -> Result<Response<ProxyBody>, Rejection> {
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
        set_forwarded(&mut parts.headers, client, scheme);

        let started = Instant::now();
        let sent = self.client.request(Request::from_parts(parts, body));
        let result = tokio::time::timeout(self.response_timeout, sent).await;
        self.seconds.record(started.elapsed().as_secs_f64());
        let response = match result {
            Ok(Ok(response)) => response,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, upstream = %self.base, "upstream request failed");
                return Err(Rejection::UpstreamUnavailable);
            }
            Err(_) => {
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

/// Describes `body`, the proxy's own, in place of the caller's body headers
/// (no body: no body headers at all).
fn replace_body_headers(headers: &mut HeaderMap, body: &Bytes, content_type: Option<&'static str>) {
    for name in BODY_HEADERS {
        headers.remove(name);
    }
    if let Some(content_type) = content_type {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

fn set_forwarded(headers: &mut HeaderMap, client: SocketAddr, scheme: &'static str) {
    use std::fmt::Write as _;
    let mut forwarded_for = String::new();
    if let Some(existing) = headers
        .get(&X_FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
    {
        forwarded_for.push_str(existing);
        forwarded_for.push_str(", ");
    }
    let _ = write!(forwarded_for, "{}", client.ip());
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(forwarded_for)) {
        headers.insert(X_FORWARDED_FOR.clone(), v);
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(scheme));
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
        let t = up.target("/write", "db=a+b&precision=s").unwrap();
        assert_eq!(
            t.to_string(),
            "http://127.0.0.1:8087/prefix/write?db=a+b&precision=s"
        );
        let t = up.target("/ping", "").unwrap();
        assert_eq!(t.to_string(), "http://127.0.0.1:8087/prefix/ping");
    }

    #[test]
    fn replaced_bodies_are_described_afresh() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("multipart/form-data; boundary=x"),
        );
        h.insert(header::EXPECT, HeaderValue::from_static("100-continue"));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/x-msgpack"),
        );
        replace_body_headers(
            &mut h,
            &Bytes::from_static(b"q=1"),
            Some("application/x-www-form-urlencoded"),
        );
        assert_eq!(h.len(), 3);
        assert_eq!(h[header::CONTENT_LENGTH], "3");
        assert_eq!(h[header::CONTENT_TYPE], "application/x-www-form-urlencoded");
        assert_eq!(h[header::ACCEPT], "application/x-msgpack");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::CONTENT_ENCODING));
    }
}
