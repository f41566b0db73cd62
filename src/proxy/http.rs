//! The HTTP request path, in order: route → framing → URL parameters →
//! credentials → (queries: is the token known? then read the body) → read
//! the request into what it means → plan → decide → forward its canonical
//! form. Every refusal is a [`Rejection`]; [`Gate::finish`] turns it into the
//! response, counts and audits. Nothing reaches the upstream without an
//! allow decision except public routes, and nothing decided reaches it in
//! any form but the one rebuilt from the values decided on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};

use super::Peer;
use super::body::{ProxyBody, Streamed, Trailers};
use super::classify::route::{Route, route};
use super::classify::{self, Plan, token_probe};
use super::credentials;
use super::forward::Upstream;
use super::framing::AmbiguousFraming;
use super::gate::{Finished, Gate, Trail};
use super::read::params::Params;
use super::read::{self, Canonical};
use super::reject::{Api, Rejection};
use super::show_databases;
use crate::authz::NeedDecision;
use crate::credentials::Token;

/// The authorizing proxy's HTTP handler.
#[derive(Debug, Clone)]
pub struct HttpService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gate: Gate,
    upstream: Upstream,
    /// Extra exact paths forwarded without a token.
    allow_paths: Vec<String>,
}

impl HttpService {
    /// Serves HTTP through `gate` to `upstream`; `allow_paths` are extra
    /// exact paths forwarded without a token.
    pub fn new(gate: Gate, upstream: Upstream, allow_paths: Vec<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                gate,
                upstream,
                allow_paths,
            }),
        }
    }

    /// Handles one HTTP request.
    pub async fn handle(&self, request: Request<ProxyBody>, peer: Peer) -> Response<ProxyBody> {
        let started = Instant::now();
        let gate = &self.inner.gate;
        let mut trail = gate.trail();
        let found = route(
            request.method(),
            request.uri().path(),
            &self.inner.allow_paths,
        );
        // Kept only for the audit trail: most requests never need them.
        let (method, path) = if gate.audited() {
            (
                request.method().to_string(),
                request.uri().path().to_owned(),
            )
        } else {
            (String::new(), String::new())
        };
        let (api, route, result) = match found {
            Ok((api, route)) => {
                let result = self.route(api, route, request, &peer, &mut trail).await;
                (api, Some(route), result)
            }
            Err((api, rejection)) => (api, None, Err(rejection)),
        };
        let finished = Finished {
            api,
            route: route.map_or("unknown", Route::as_str),
            method: &method,
            path: &path,
            public: route == Some(Route::Public),
            started,
        };
        gate.finish(&finished, &peer, &trail, result)
    }

    async fn route(
        &self,
        api: Api,
        route: Route,
        request: Request<ProxyBody>,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        check_framing(request.headers(), &peer.framing)?;
        let url = Params::parse(request.uri().query())?;
        let (parts, body) = request.into_parts();
        let upstream = &self.inner.upstream;
        if route == Route::Public {
            return upstream
                .forward_undecided(parts, body, peer.addr, peer.scheme)
                .await;
        }
        let token = credentials::extract(&parts.headers, &url, api == Api::V1)?;
        match route {
            Route::V1Write | Route::V2Write | Route::V3Write => {
                self.write(route, parts, body, &url, &token, peer, trail)
                    .await
            }
            _ => {
                self.query(route, parts, body, &url, &token, peer, trail)
                    .await
            }
        }
    }

    /// A write: decided by its parameters; its body streams upstream.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        route: Route,
        parts: http::request::Parts,
        body: ProxyBody,
        url: &Params,
        token: &Token,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let gate = &self.inner.gate;
        let write = read::Write::read(route, url);
        let Plan::Needs(needs) = classify::write(route, &write)? else {
            return Err(Rejection::BadRequest("not a write".to_owned()));
        };
        gate.authorize(token, &needs, trail, peer).await?;
        let stalled = Arc::new(AtomicBool::new(false));
        let body = ProxyBody::new(Streamed::new(
            body,
            Trailers::Drop,
            gate.limits().timeout,
            Arc::clone(&stalled),
        ));
        let result = self
            .inner
            .upstream
            .forward_canonical(parts, write.canonical(), body, peer.addr, peer.scheme)
            .await;
        match result {
            Err(_) if stalled.load(Ordering::Acquire) => Err(Rejection::BodyTimeout),
            other => other,
        }
    }

    /// A query: the token checked first, then the body read and understood,
    /// then decided and forwarded in its canonical form.
    #[allow(clippy::too_many_arguments)]
    async fn query(
        &self,
        route: Route,
        mut parts: http::request::Parts,
        body: ProxyBody,
        url: &Params,
        token: &Token,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let gate = &self.inner.gate;
        // GET bodies mean nothing to InfluxDB's readers: never read, never
        // forwarded.
        let (decoded, _reservation) = if parts.method == Method::POST {
            gate.validate(token, token_probe(None), trail, peer).await?;
            gate.read_body(body, &parts.headers).await?
        } else {
            drop(body);
            (Bytes::new(), Default::default())
        };
        let method = parts.method.clone();
        let (plan, canonical, database) = match route {
            Route::V1Query => {
                let query = read::influxql(&method, url, &parts.headers, decoded)?;
                let database = query.get("db").map(str::to_owned);
                (classify::v1_query(&query)?, query.canonical(), database)
            }
            Route::V2Query => {
                let query = read::flux(&parts.headers, decoded)?;
                (
                    classify::flux(&query)?,
                    read::flux_canonical(url, &query),
                    None,
                )
            }
            _ => {
                let query = read::v3(&method, url, &parts.headers, decoded)?;
                let plan = classify::v3_query(route, &query)?;
                (plan, read::v3_canonical(&method, &query), Some(query.db))
            }
        };
        match plan {
            Plan::Needs(needs) => {
                gate.authorize(token, &needs, trail, peer).await?;
                self.inner
                    .upstream
                    .forward_canonical(parts, canonical, ProxyBody::empty(), peer.addr, peer.scheme)
                    .await
            }
            Plan::Refused(message) => Err(gate
                .refuse(
                    token,
                    token_probe(database.as_deref()),
                    message,
                    trail,
                    peer,
                )
                .await),
            Plan::ShowDatabases => {
                gate.validate(token, token_probe(database.as_deref()), trail, peer)
                    .await?;
                show_databases::prepare(&mut parts.headers);
                self.show_databases(token, parts, canonical, peer).await
            }
        }
    }

    /// `SHOW DATABASES`: forwarded, and the answer filtered to what the
    /// token may read.
    async fn show_databases(
        &self,
        token: &Token,
        parts: http::request::Parts,
        canonical: Canonical,
        peer: &Peer,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let response = self
            .inner
            .upstream
            .forward_canonical(parts, canonical, ProxyBody::empty(), peer.addr, peer.scheme)
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
            let decisions = self.inner.gate.decisions(token, &needs, peer).await?;
            names
                .into_iter()
                .zip(&decisions)
                .filter(|(_, d)| matches!(d, NeedDecision::Allowed { .. }))
                .map(|(n, _)| n)
                .collect()
        };
        show_databases::filter(&mut answers, |name| readable.iter().any(|r| r == name));
        Ok(show_databases::respond(parts, &answers))
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
