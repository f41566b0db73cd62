//! The request path, in order: route → credentials → read what must be read
//! → plan → decide → forward. Every refusal is a [`Rejection`], turned into a
//! response in one place ([`Rejection::into_response`]). Nothing reaches
//! [`Upstream::forward`] without an allow decision, except public routes.
//! Each decided request leaves one audit event.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, header};
use http_body::Body;

use super::body::{BoxError, ProxyBody};
use super::classify::body::{QueryBody, decode, parse, read_limited};
use super::classify::params::Params;
use super::classify::route::{Route, route};
use super::classify::{Plan, admin_probe, needs_body, plan};
use super::credentials;
use super::forward::Upstream;
use super::framing::AmbiguousFraming;
use super::reject::{Api, Rejection};
use super::show_databases;
use crate::audit::{Audit, AuditEvent, now_rfc3339};
use crate::authz::{Authorizer, AuthzError, CacheUse, Decision, Need, NeedDecision, Verdict};
use crate::credentials::Token;

/// Settings of the HTTP request path.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Extra exact paths forwarded without a token.
    pub allow_paths: Vec<String>,
    /// Largest body read to authorize.
    pub max_body: u64,
    /// Longest wait for a decision.
    pub authz_timeout: Duration,
}

/// Who is connected, as the listener saw it.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Raised when the connection sent a request with ambiguous framing.
    pub framing: AmbiguousFraming,
}

impl Peer {
    /// A peer at `addr` over plain HTTP.
    pub fn plain(addr: SocketAddr) -> Self {
        Self {
            addr,
            scheme: "http",
            framing: AmbiguousFraming::default(),
        }
    }
}

/// What one request needed and who asked: the substance of its metrics and
/// audit event.
#[derive(Debug, Default)]
pub struct Trail {
    /// The needs that were decided (kept only when the audit trail is on:
    /// they are cloned strings, and the hot path should not pay for them).
    pub needs: Vec<Need>,
    keep_needs: bool,
    /// The actions decided, as one metric label.
    pub action: &'static str,
    /// The token's id, once known.
    pub subject: Option<Arc<str>>,
    /// How the decision cache took part (the last decision's).
    pub cache: CacheUse,
}

impl Trail {
    /// A trail that keeps the needs when `audited`.
    pub fn new(audited: bool) -> Self {
        Self {
            keep_needs: audited,
            action: "none",
            ..Self::default()
        }
    }

    fn note(&mut self, needs: &[Need], verdict: &Verdict) {
        self.cache = verdict.cache;
        self.action = action_label(needs);
        if self.keep_needs {
            self.needs.extend_from_slice(needs);
        }
        self.subject = verdict.decisions.iter().find_map(|d| match d {
            NeedDecision::Allowed { subject } | NeedDecision::Forbidden { subject } => {
                Some(Arc::clone(subject))
            }
            NeedDecision::InvalidToken => None,
        });
    }
}

/// How one request ended: what [`ProxyService::record`] counts and audits.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The API.
    pub api: Api,
    /// Route (HTTP) or method (Flight) label.
    pub route: &'static str,
    /// HTTP method.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// The response's HTTP status.
    pub status: http::StatusCode,
    /// The gRPC status, for Flight.
    pub grpc_status: Option<i32>,
    /// Whether the request bypassed authorization (public route, Handshake).
    pub public: bool,
    /// Why it was refused, if it was.
    pub reason: Option<String>,
}

impl Outcome<'_> {
    /// `public`, `allow`, `error` (no decision could be made) or `deny`.
    fn decision(&self) -> &'static str {
        let unavailable = self.status == http::StatusCode::SERVICE_UNAVAILABLE
            || self.grpc_status == Some(tonic::Code::Unavailable as i32);
        match (&self.reason, self.public) {
            (_, true) => "public",
            (None, false) => "allow",
            (Some(_), false) if unavailable => "error",
            (Some(_), false) => "deny",
        }
    }
}

/// The authorizing proxy's request handler.
#[derive(Debug, Clone)]
pub struct ProxyService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    authorizer: Arc<dyn Authorizer>,
    upstream: Upstream,
    settings: ProxySettings,
    audit: Audit,
}

impl ProxyService {
    /// A proxy to `upstream` asking `authorizer`.
    pub fn new(
        authorizer: Arc<dyn Authorizer>,
        upstream: Upstream,
        settings: ProxySettings,
    ) -> Self {
        Self::with_audit(authorizer, upstream, settings, Audit::off())
    }

    /// [`ProxyService::new`] writing an audit trail.
    pub fn with_audit(
        authorizer: Arc<dyn Authorizer>,
        upstream: Upstream,
        settings: ProxySettings,
        audit: Audit,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                authorizer,
                upstream,
                settings,
                audit,
            }),
        }
    }

    /// The authorizer (shared with the Flight path).
    pub fn authorizer(&self) -> &Arc<dyn Authorizer> {
        &self.inner.authorizer
    }

    /// The audit trail (shared with the Flight path).
    pub fn audit(&self) -> &Audit {
        &self.inner.audit
    }

    /// The settings (shared with the Flight path).
    pub fn settings(&self) -> &ProxySettings {
        &self.inner.settings
    }

    /// Handles one HTTP request.
    pub async fn handle<B>(&self, request: Request<B>, peer: Peer) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let _in_flight = InFlight::enter();
        let mut trail = Trail::new(self.inner.audit.enabled());
        let found = route(
            request.method(),
            request.uri().path(),
            &self.inner.settings.allow_paths,
        );
        // Kept only for the audit trail: most requests never need them.
        let (method, path) = if self.inner.audit.enabled() {
            (
                request.method().to_string(),
                request.uri().path().to_owned(),
            )
        } else {
            (String::new(), String::new())
        };
        let (api, route, result) = match found {
            Ok((api, route)) => {
                let result = self
                    .handle_route(api, route, request.map(ProxyBody::new), &peer, &mut trail)
                    .await;
                (api, Some(route), result)
            }
            Err((api, rejection)) => (api, None, Err(rejection)),
        };
        let reason = result.as_ref().err().map(ToString::to_string);
        let response = result.unwrap_or_else(|rejection| {
            tracing::debug!(api = api.as_str(), status = rejection.status().as_u16(), reason = %rejection, "request refused");
            rejection.into_response(api)
        });
        let outcome = Outcome {
            api,
            route: route.map_or("unknown", Route::as_str),
            method: &method,
            path: &path,
            status: response.status(),
            grpc_status: None,
            public: route == Some(Route::Public),
            reason,
        };
        self.record(&peer, &trail, outcome, started);
        response
    }

    /// Counts a finished request and writes its audit event (not for
    /// public requests: no decision was made).
    pub fn record(&self, peer: &Peer, trail: &Trail, outcome: Outcome<'_>, started: Instant) {
        let decision = outcome.decision();
        let api = outcome.api.as_str();
        let status = outcome
            .grpc_status
            .map_or_else(|| outcome.status.as_str().to_owned(), |c| c.to_string());
        metrics::counter!("fluxgate_requests_total", "api" => api, "route" => outcome.route, "action" => trail.action, "status" => status)
            .increment(1);
        metrics::counter!("fluxgate_decisions_total", "api" => api, "decision" => decision)
            .increment(1);
        metrics::histogram!("fluxgate_request_seconds", "api" => api)
            .record(started.elapsed().as_secs_f64());
        if outcome.public || !self.inner.audit.enabled() {
            return;
        }
        self.inner.audit.record(&AuditEvent {
            time: now_rfc3339(),
            client: peer.addr.to_string(),
            method: outcome.method.to_owned(),
            path: outcome.path.to_owned(),
            api,
            databases: trail.needs.iter().map(|n| n.database.clone()).collect(),
            actions: trail.needs.iter().map(|n| n.action.as_str()).collect(),
            decision,
            status: outcome.status.as_u16(),
            grpc_status: outcome.grpc_status,
            token_id: trail.subject.as_deref().map(str::to_owned),
            cache: trail.cache.as_str(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
            reason: outcome.reason,
        });
    }

    async fn handle_route(
        &self,
        api: Api,
        route: Route,
        request: Request<ProxyBody>,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        check_framing(request.headers(), &peer.framing)?;
        let params = Params::parse(request.uri().query())?;
        let (mut parts, body) = request.into_parts();
        if route == Route::Public {
            return self
                .inner
                .upstream
                .forward(parts, body, peer.addr, peer.scheme)
                .await;
        }
        let token = credentials::extract(&parts.headers, &params, api == Api::V1)?;

        let (query_body, forward_body) = if needs_body(route, &parts.method) {
            let raw = read_limited(body, self.inner.settings.max_body).await?;
            let decoded = decode(&parts.headers, &raw, self.inner.settings.max_body)?;
            (parse(&parts.headers, decoded).await?, ProxyBody::full(raw))
        } else {
            (QueryBody::None, body)
        };

        match plan(route, &params, query_body)? {
            Plan::Needs(needs) => {
                self.authorize(&token, &needs, trail).await?;
                self.inner
                    .upstream
                    .forward(parts, forward_body, peer.addr, peer.scheme)
                    .await
            }
            Plan::Admin(message) => {
                // CREATE is never held: this answers 401 for a bad token and
                // 403 (with the explanation) for any database token.
                match self.authorize(&token, &[admin_probe(&params)], trail).await {
                    Err(Rejection::Forbidden(_)) | Ok(_) => Err(Rejection::Admin(message)),
                    Err(other) => Err(other),
                }
            }
            Plan::ShowDatabases => {
                show_databases::prepare(&mut parts.headers);
                self.show_databases(&token, &params, parts, forward_body, peer, trail)
                    .await
            }
        }
    }

    /// Decides `needs` for `token` within the configured timeout.
    pub async fn verdict(&self, token: &Token, needs: &[Need]) -> Result<Verdict, Rejection> {
        // --audit-required: nothing is served that cannot be audited.
        if !self.inner.audit.accepting() {
            tracing::debug!("audit events cannot be written (--audit-required); refusing");
            return Err(Rejection::AuthzUnavailable);
        }
        match tokio::time::timeout(
            self.inner.settings.authz_timeout,
            self.inner.authorizer.check(token, needs),
        )
        .await
        {
            Ok(Ok(verdict)) => Ok(verdict),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "no authorization decision; refusing");
                Err(Rejection::AuthzUnavailable)
            }
            Err(_) => {
                tracing::warn!(error = %AuthzError::Timeout, "no authorization decision; refusing");
                Err(Rejection::AuthzUnavailable)
            }
        }
    }

    /// Requires every need to be granted.
    pub async fn authorize(
        &self,
        token: &Token,
        needs: &[Need],
        trail: &mut Trail,
    ) -> Result<Arc<str>, Rejection> {
        let verdict = self.verdict(token, needs).await?;
        trail.note(needs, &verdict);
        match Decision::combine(needs, &verdict.decisions) {
            Decision::Allow { subject } => Ok(subject),
            Decision::InvalidToken => Err(Rejection::InvalidToken),
            Decision::Forbidden { need, .. } => Err(Rejection::Forbidden(need)),
        }
    }

    async fn show_databases(
        &self,
        token: &Token,
        params: &Params,
        parts: http::request::Parts,
        body: ProxyBody,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        // Check the token before the database is even asked.
        match self.authorize(token, &[admin_probe(params)], trail).await {
            Err(Rejection::Forbidden(_)) | Ok(_) => {}
            Err(other) => return Err(other),
        }
        let response = self
            .inner
            .upstream
            .forward(parts, body, peer.addr, peer.scheme)
            .await?;
        if !show_databases::is_success(response.status()) {
            return Ok(response);
        }
        let (parts, mut answers) = show_databases::read_answer(response).await?;
        let names = show_databases::names(&answers);
        let needs = show_databases::needs(&names);
        let readable: Vec<String> = if needs.is_empty() {
            Vec::new()
        } else {
            let verdict = self.verdict(token, &needs).await?;
            if show_databases::token_invalid(&verdict.decisions) {
                return Err(Rejection::InvalidToken);
            }
            names
                .into_iter()
                .zip(&verdict.decisions)
                .filter(|(_, d)| matches!(d, NeedDecision::Allowed { .. }))
                .map(|(n, _)| n)
                .collect()
        };
        show_databases::filter(&mut answers, |name| readable.iter().any(|r| r == name));
        Ok(show_databases::respond(parts, &answers))
    }
}

/// The actions a request needed, as one metric label.
pub fn action_label(needs: &[Need]) -> &'static str {
    let read = needs.iter().any(|n| {
        matches!(
            n.action,
            crate::authz::Action::Read | crate::authz::Action::ReadSchema
        )
    });
    let write = needs
        .iter()
        .any(|n| n.action == crate::authz::Action::Write);
    let admin = needs.iter().any(|n| {
        matches!(
            n.action,
            crate::authz::Action::Create | crate::authz::Action::Delete
        )
    });
    match (admin, read, write) {
        (true, _, _) => "admin",
        (false, true, true) => "read_write",
        (false, true, false) => "read",
        (false, false, true) => "write",
        (false, false, false) => "none",
    }
}

/// Counts a request in `fluxgate_requests_in_flight` while alive.
#[derive(Debug)]
pub struct InFlight(());

impl InFlight {
    /// Counts one more request in flight until dropped.
    pub fn enter() -> Self {
        metrics::gauge!("fluxgate_requests_in_flight").increment(1.0);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!("fluxgate_requests_in_flight").decrement(1.0);
    }
}

/// Refuses message framing a proxy and a database could read differently
/// (request smuggling): both `Content-Length` and `Transfer-Encoding`, or
/// several `Content-Length` values.
fn check_framing(headers: &HeaderMap, framing: &AmbiguousFraming) -> Result<(), Rejection> {
    if framing.seen() {
        return Err(Rejection::BadRequest(
            "both Content-Length and Transfer-Encoding".to_owned(),
        ));
    }
    let lengths = headers.get_all(header::CONTENT_LENGTH).iter().count();
    if lengths > 1 {
        return Err(Rejection::BadRequest(
            "more than one Content-Length header".to_owned(),
        ));
    }
    if lengths == 1 && headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(Rejection::BadRequest(
            "both Content-Length and Transfer-Encoding".to_owned(),
        ));
    }
    Ok(())
}
