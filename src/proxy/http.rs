//! The HTTP request path, in order: route → framing → URL parameters →
//! credentials → (bodies to read: is the token known? then read it) → read
//! the request into what it means → plan → decide → forward its canonical
//! form. Every refusal is a [`Rejection`]; [`Gate::finish`] turns it into the
//! response, counts and audits. Nothing reaches the upstream without an
//! allow decision except public routes, and nothing decided reaches it in
//! any form but the one rebuilt from the values decided on.
//!
//! | routes | decided by | forwarded |
//! |---|---|---|
//! | writes | their parameters | rebuilt parameters, the body streamed |
//! | queries | parameters and body | rebuilt parameters and body |
//! | administration (`/api/v3/configure/*`, `POST /api/v2/buckets`) | the arguments, CREATE or DELETE on the database | rebuilt arguments |
//! | listings (`SHOW DATABASES`, `GET` databases and buckets) | a known token | the answer filtered to what the token may read or administer |
//! | `DELETE /api/v2/buckets/{id}` | DELETE on every database (an id names none the proxy can see) | the path alone |
//! | `--allow-admin-path` routes | CREATE on every database (management tokens) | as sent, minus credentials and trailers |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, header};

use super::Peer;
use super::body::{ProxyBody, Streamed, Trailers};
use super::classify::route::{Allowed, Route, route};
use super::classify::{self, Plan, bucket_databases, token_probe};
use super::credentials;
use super::forward::Upstream;
use super::framing::AmbiguousFraming;
use super::gate::{Finished, Gate, Trail};
use super::listing::{self, Shape};
use super::read::body::Decodes;
use super::read::params::Params;
use super::read::{self, Canonical};
use super::reject::{Api, Rejection};
use crate::authz::{Action, Need, NeedDecision};
use crate::credentials::Token;
use crate::proto::ALL_DATABASES;
use crate::telemetry;

/// What an operator configured for the HTTP path.
#[derive(Debug, Clone, Default)]
pub struct AllowedPaths {
    /// Forwarded without a token (`--allow-path`).
    pub public: Vec<String>,
    /// InfluxDB 3 routes that run code on the server, forwarded for
    /// management tokens (`--allow-admin-path`).
    pub admin: Vec<String>,
    /// The InfluxDB 2 organization every v2 request is sent for
    /// (`--upstream-org`); the caller's own `org`/`orgID` never are.
    pub org: Option<String>,
    /// That organization's ID, which bucket creation needs
    /// (`--upstream-org-id`); without it buckets are not created through
    /// the proxy.
    pub org_id: Option<String>,
}

/// The authorizing proxy's HTTP handler.
#[derive(Debug, Clone)]
pub struct HttpService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    gate: Gate,
    upstream: Upstream,
    allowed: AllowedPaths,
}

impl HttpService {
    /// Serves HTTP through `gate` to `upstream`, with `allowed` paths open
    /// beyond the built-in routes.
    pub fn new(gate: Gate, upstream: Upstream, allowed: AllowedPaths) -> Self {
        Self {
            inner: Arc::new(Inner {
                gate,
                upstream,
                allowed,
            }),
        }
    }

    /// The same service over upstream connections of its own (see
    /// [`Upstream::with_own_pool`]).
    pub fn with_own_pool(&self) -> Self {
        Self::new(
            self.inner.gate.clone(),
            self.inner.upstream.with_own_pool(),
            self.inner.allowed.clone(),
        )
    }

    /// Handles one HTTP request.
    pub async fn handle(&self, request: Request<ProxyBody>, peer: &Peer) -> Response<ProxyBody> {
        let started = Instant::now();
        let gate = &self.inner.gate;
        let mut trail = gate.trail();
        let allowed = Allowed {
            public: &self.inner.allowed.public,
            admin: &self.inner.allowed.admin,
        };
        let found = route(request.method(), request.uri().path(), allowed);
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
                let result = self.route(api, route, request, peer, &mut trail).await;
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
        gate.finish(&finished, peer, &trail, result)
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
        // The parameters borrow from a handle on the URI (its bytes are
        // shared, not copied), so the request's parts can move on.
        let uri = request.uri().clone();
        if route == Route::V1Query
            && request.method() == Method::GET
            && let Some(reading) = peer.last_query.recall(uri.query())
        {
            telemetry::query_reading_reused();
            // Kept only from a query string without `p`: the header is the
            // one place the token can come from, as on the first reading.
            let token =
                credentials::extract(request.headers(), &Params::default(), api == Api::V1)?;
            let (parts, body) = request.into_parts();
            drop(body);
            let canonical = Canonical {
                query: reading.canonical(),
                body: None,
            };
            return self
                .decided(parts, &reading.needs, canonical, &token, peer, trail)
                .await;
        }
        let url = Params::parse(uri.query())?;
        let (parts, body) = request.into_parts();
        let upstream = &self.inner.upstream;
        if route == Route::Public {
            // No token: nothing the caller sends beyond the head goes on.
            drop(body);
            return upstream.forward_undecided(parts, None, &peer.origin).await;
        }
        let token = credentials::extract(&parts.headers, &url, api == Api::V1)?;
        match route {
            Route::Public => Err(Rejection::NotFound),
            Route::V1Write | Route::V2Write | Route::V3Write => {
                self.write(route, parts, body, &url, &token, peer, trail)
                    .await
            }
            Route::V1Query | Route::V2Query | Route::V3QuerySql | Route::V3QueryInfluxQl => {
                self.query(route, parts, body, &url, &token, peer, trail)
                    .await
            }
            Route::V3Database | Route::V2Buckets if parts.method == Method::GET => {
                let shape = if route == Route::V2Buckets {
                    Shape::V2Buckets
                } else if url.get("format") == Some("jsonl") {
                    Shape::V3Jsonl
                } else {
                    Shape::V3Json
                };
                let canonical =
                    read::admin::listing(route, &url, self.inner.allowed.org.as_deref())?;
                self.listing(shape, parts, canonical, &token, peer, trail)
                    .await
            }
            Route::V3Database
            | Route::V3RetentionPeriod
            | Route::V3Table
            | Route::V3LastCache
            | Route::V3DistinctCache
            | Route::V2Buckets => {
                self.admin(route, parts, body, &url, &token, peer, trail)
                    .await
            }
            Route::V2Bucket => self.delete_bucket(parts, &token, peer, trail).await,
            Route::V3AllowedAdmin => {
                let gate = &self.inner.gate;
                let every = Need {
                    database: ALL_DATABASES.to_owned(),
                    action: Action::Create,
                };
                gate.authorize(&token, &[every], trail, peer).await?;
                let body = ProxyBody::new(Streamed::new(
                    body,
                    Trailers::Drop,
                    gate.limits().timeout,
                    Default::default(),
                ));
                self.inner
                    .upstream
                    .forward_undecided(parts, Some(body), &peer.origin)
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
        url: &Params<'_>,
        token: &Token,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let gate = &self.inner.gate;
        let write = read::Write::read(route, url, self.inner.allowed.org.as_deref());
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
            .forward_canonical(parts, write.canonical(), Some(body), &peer.origin)
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
        parts: http::request::Parts,
        body: ProxyBody,
        url: &Params<'_>,
        token: &Token,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let gate = &self.inner.gate;
        // GET bodies mean nothing to InfluxDB's readers: never read, never
        // forwarded.
        let (decoded, _reservation) = if parts.method == Method::POST {
            gate.validate(token, token_probe(None), trail, peer).await?;
            // InfluxDB 3 undoes gzip; 1.x and the Flux endpoint read bodies
            // as sent.
            let decodes = match route {
                Route::V3QuerySql | Route::V3QueryInfluxQl => Decodes::Gzip,
                _ => Decodes::Nothing,
            };
            gate.read_body(body, &parts.headers, decodes).await?
        } else {
            drop(body);
            (Bytes::new(), Default::default())
        };
        let method = parts.method.clone();
        let (plan, canonical, database) = match route {
            Route::V1Query => {
                let query = read::influxql(&method, url, &parts.headers, decoded)?;
                let plan = classify::v1_query(&query)?;
                // Only a refusal names the database (its token probe).
                let database = match plan {
                    Plan::Refused(_) => query.get("db").map(str::to_owned),
                    _ => None,
                };
                (plan, query.canonical(), database)
            }
            Route::V2Query => {
                let query = read::flux(&parts.headers, decoded)?;
                (
                    classify::flux(&query)?,
                    read::flux_canonical(self.inner.allowed.org.as_deref(), &query),
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
                if route == Route::V1Query && method == Method::GET {
                    peer.last_query
                        .remember(parts.uri.query(), url, &needs, &canonical.query);
                }
                self.decided(parts, &needs, canonical, token, peer, trail)
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
                self.listing(Shape::InfluxQl, parts, canonical, token, peer, trail)
                    .await
            }
        }
    }

    /// A query read to `needs` and `canonical`: decided, and forwarded in
    /// that form.
    async fn decided(
        &self,
        parts: http::request::Parts,
        needs: &[Need],
        canonical: Canonical,
        token: &Token,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        self.inner.gate.authorize(token, needs, trail, peer).await?;
        self.inner
            .upstream
            .forward_canonical(parts, canonical, None, &peer.origin)
            .await
    }

    /// Database administration: the token checked, the arguments read,
    /// CREATE or DELETE on the database decided, the rebuilt request sent.
    #[allow(clippy::too_many_arguments)]
    async fn admin(
        &self,
        route: Route,
        parts: http::request::Parts,
        body: ProxyBody,
        url: &Params<'_>,
        token: &Token,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let gate = &self.inner.gate;
        gate.validate(token, token_probe(None), trail, peer).await?;
        let decodes = if route == Route::V2Buckets {
            Decodes::Nothing
        } else {
            Decodes::Gzip
        };
        let (decoded, _reservation) = gate.read_body(body, &parts.headers, decodes).await?;
        let org_id = self.inner.allowed.org_id.as_deref();
        let admin = read::admin::read(route, &parts.method, url, decoded, org_id)?;
        let needs: Vec<Need> = if route == Route::V2Buckets {
            bucket_databases(&admin.database)
                .map(|database| Need {
                    database: database.to_owned(),
                    action: admin.action,
                })
                .collect()
        } else {
            vec![Need {
                database: admin.database,
                action: admin.action,
            }]
        };
        gate.authorize(token, &needs, trail, peer).await?;
        self.inner
            .upstream
            .forward_canonical(parts, admin.canonical, None, &peer.origin)
            .await
    }

    /// A listing of databases: forwarded for a known token, and the answer
    /// filtered to what the token may read or administer (READ_SCHEMA).
    async fn listing(
        &self,
        shape: Shape,
        mut parts: http::request::Parts,
        canonical: Canonical,
        token: &Token,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let gate = &self.inner.gate;
        gate.validate(token, token_probe(None), trail, peer).await?;
        listing::prepare(&mut parts.headers);
        let response = self
            .inner
            .upstream
            .forward_canonical(parts, canonical, None, &peer.origin)
            .await?;
        if !listing::is_success(response.status()) {
            return Ok(response);
        }
        let (parts, mut answer) = listing::read(shape, response).await?;
        let names = answer.names();
        // A bucket `db/rp` is listed when both names may be read.
        let mut needs: Vec<Need> = Vec::new();
        let mut spans = Vec::with_capacity(names.len());
        for name in &names {
            let start = needs.len();
            let databases: Vec<&str> = if shape == Shape::V2Buckets {
                bucket_databases(name).collect()
            } else {
                vec![name.as_str()]
            };
            needs.extend(databases.into_iter().map(|database| Need {
                database: database.to_owned(),
                action: Action::ReadSchema,
            }));
            spans.push(start..needs.len());
        }
        let decisions = if needs.is_empty() {
            Vec::new()
        } else {
            gate.decisions(token, &needs, peer).await?
        };
        let visible: Vec<&String> = names
            .iter()
            .zip(spans)
            .filter(|(_, span)| {
                decisions
                    .get(span.clone())
                    .is_some_and(|d| d.iter().all(|d| matches!(d, NeedDecision::Allowed { .. })))
            })
            .map(|(name, _)| name)
            .collect();
        answer.filter(|name| visible.iter().any(|v| v.as_str() == name));
        Ok(answer.respond(parts))
    }

    /// `DELETE /api/v2/buckets/{id}`: an id names no database the proxy
    /// could check without asking the database (which would tell any token
    /// the bucket's name), so it needs DELETE on every database — a
    /// management token's.
    async fn delete_bucket(
        &self,
        parts: http::request::Parts,
        token: &Token,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        let every = Need {
            database: ALL_DATABASES.to_owned(),
            action: Action::Delete,
        };
        self.inner
            .gate
            .authorize(token, &[every], trail, peer)
            .await?;
        self.inner
            .upstream
            .forward_canonical(parts, Canonical::default(), None, &peer.origin)
            .await
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
