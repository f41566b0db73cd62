//! The Flight (gRPC) request path, in the same order as the HTTP one:
//! method → credentials → read what must be read (the DoGet ticket, i.e.
//! the first request message only) → needs → decide → forward over h2c.
//! Every refusal is a [`Rejection`] answered as a trailers-only gRPC status
//! by [`Rejection::into_response`]; nothing is forwarded without an allow
//! decision except `Handshake`, which carries no database. Decisions go
//! through the HTTP path's [`ProxyService`] (same authorizer, timeout,
//! `--max-body` and audit trail), so both paths decide alike.
//!
//! | method | needs |
//! |---|---|
//! | `Handshake` | nothing (the caller's `authorization` is still removed) |
//! | `DoGet` | read on the ticket's database ([`ticket`]); InfluxQL also every database its statements name; an opaque ticket falls back to the metadata database; metadata naming a database adds read on it |
//! | `GetFlightInfo` | read on the metadata database ([`plan::DATABASE_METADATA`]); none → INVALID_ARGUMENT |
//! | allow-listed (`--allow-flight-method`) | read on the metadata database (and write for DoPut/DoExchange) when one is named; otherwise just a token the authorizer knows |
//! | any other Flight method | refused: PERMISSION_DENIED |
//! | any other gRPC path | UNIMPLEMENTED |
//!
//! Status codes: no token → UNAUTHENTICATED; malformed `authorization` →
//! UNAUTHENTICATED; unknown, expired or lacking permission → PERMISSION_DENIED;
//! no decision (token service down or slow) → UNAVAILABLE; bad framing,
//! undecodable or ambiguous ticket, conflicting metadata → INVALID_ARGUMENT;
//! a first message over `--max-body` → RESOURCE_EXHAUSTED (gRPC's own code
//! for an oversized message). Refused Flight methods answer
//! PERMISSION_DENIED (a policy, not a missing feature: the upstream may well
//! implement them); gRPC-Web and gRPC over HTTP/1.1 → INVALID_ARGUMENT.
//!
//! Limits worth knowing:
//! - the opaque-ticket fallback authorizes the metadata database only; it is
//!   as safe as the upstream's binding of its tickets to the database they
//!   were issued for (InfluxDB 3 accepts no opaque ticket, so with it the
//!   fallback never runs a query);
//! - reading the ticket is bounded in size, not in time, as HTTP bodies are;
//!   HTTP/2 keep-alive and the caller's own deadline end a stalled call.

pub mod frame;
pub mod methods;
pub mod plan;
pub mod ticket;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version, header};
use http_body::Body;
use prost::Message as _;

use self::frame::{Encoding, Replay};
use self::methods::{AllowList, FlightMethod};
use self::ticket::{FlightTicket, TicketError};
use super::body::{BoxError, ProxyBody};
use super::classify::params::Params;
use super::credentials;
use super::forward::Upstream;
use super::reject::{Api, Rejection};
use super::service::{InFlight, Outcome, Peer, ProxyService, Trail};
use crate::authz::{Action, Need};
use crate::credentials::Token;

/// Settings of the Flight request path beyond those it shares with HTTP.
#[derive(Debug, Clone, Default)]
pub struct FlightSettings {
    /// Flight methods allowed beyond Handshake, DoGet and GetFlightInfo.
    pub allow: AllowList,
}

/// The authorizing handler for gRPC (Arrow Flight and Flight SQL) calls.
#[derive(Debug, Clone)]
pub struct FlightService {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Decides (authorizer, timeout), bounds reads (`max_body`) and audits.
    http: ProxyService,
    /// The gRPC upstream (HTTP/2).
    upstream: Upstream,
    settings: FlightSettings,
}

impl FlightService {
    /// A Flight handler deciding through `http` and forwarding to
    /// `upstream` (an HTTP/2 [`Upstream`]).
    pub fn new(http: ProxyService, upstream: Upstream, settings: FlightSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                upstream,
                settings,
            }),
        }
    }

    /// Handles one gRPC request.
    pub async fn handle<B>(&self, request: Request<B>, peer: Peer) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let started = Instant::now();
        let _in_flight = InFlight::enter();
        let method = FlightMethod::from_path(request.uri().path());
        let audited = self.inner.http.audit().enabled();
        let path = if audited {
            request.uri().path().to_owned()
        } else {
            String::new()
        };
        let mut trail = Trail::new(audited);
        let result = self
            .handle_call(method, request.map(ProxyBody::new), &peer, &mut trail)
            .await;
        let reason = result.as_ref().err().map(ToString::to_string);
        let route = method.map_or("unknown", FlightMethod::name);
        let response = result.unwrap_or_else(|rejection| {
            tracing::debug!(
                api = Api::Grpc.as_str(),
                method = route,
                grpc_status = rejection.grpc_code() as i32,
                reason = %rejection,
                "flight call refused"
            );
            rejection.into_response(Api::Grpc)
        });
        let outcome = Outcome {
            api: Api::Grpc,
            route,
            method: "POST",
            path: &path,
            status: response.status(),
            grpc_status: grpc_status_of(&response),
            // Like the HTTP path's public routes, the unchecked Handshake
            // leaves no audit event.
            public: method == Some(FlightMethod::Handshake),
            reason,
        };
        self.inner.http.record(&peer, &trail, outcome, started);
        response
    }

    async fn handle_call(
        &self,
        method: Option<FlightMethod>,
        request: Request<ProxyBody>,
        peer: &Peer,
        trail: &mut Trail,
    ) -> Result<Response<ProxyBody>, Rejection> {
        check_transport(&request)?;
        let Some(method) = method else {
            return Err(Rejection::NotFound);
        };
        let (parts, body) = request.into_parts();
        let body = match method {
            // JDBC and others handshake before they know a database; the
            // answer carries no data.
            FlightMethod::Handshake => body,
            FlightMethod::DoGet => {
                let token = token(&parts.headers)?;
                self.authorize_do_get(&token, &parts.headers, body, trail)
                    .await?
            }
            FlightMethod::GetFlightInfo => {
                let token = token(&parts.headers)?;
                let database = plan::metadata_database(&parts.headers)?.ok_or_else(|| {
                    Rejection::BadRequest(
                        "GetFlightInfo needs the database in the request metadata (\"database\", \"bucket\", \"bucket-name\" or \"iox-namespace-name\")".to_owned(),
                    )
                })?;
                self.inner
                    .http
                    .authorize(&token, &[Need::read(database)], trail)
                    .await?;
                body
            }
            other if self.inner.settings.allow.allows(other) => {
                let token = token(&parts.headers)?;
                self.authorize_allow_listed(other, &token, &parts.headers, trail)
                    .await?;
                body
            }
            other => {
                return Err(Rejection::Admin(format!(
                    "Flight method {other} is not allowed through the proxy (an operator can allow it with --allow-flight-method {other})"
                )));
            }
        };
        self.inner
            .upstream
            .forward(parts, body, peer.addr, peer.scheme)
            .await
    }

    /// Reads and authorizes the ticket; returns the body to forward: the
    /// bytes read, unchanged, then the rest of the caller's stream.
    async fn authorize_do_get(
        &self,
        token: &Token,
        headers: &HeaderMap,
        mut body: ProxyBody,
        trail: &mut Trail,
    ) -> Result<ProxyBody, Rejection> {
        let first = frame::read_first(
            &mut body,
            self.inner.http.settings().max_body,
            &Encoding::of(headers),
        )
        .await?;
        if first.excess > 0 {
            return Err(Rejection::BadRequest(
                "DoGet takes exactly one request message".to_owned(),
            ));
        }
        let needs = do_get_needs(headers, &first.message)?;
        self.inner.http.authorize(token, &needs, trail).await?;
        Ok(ProxyBody::new(Replay::new(first.raw, body, true)))
    }

    /// An allow-listed method: the metadata database's permissions when one
    /// is named, otherwise only a token the authorizer knows.
    async fn authorize_allow_listed(
        &self,
        method: FlightMethod,
        token: &Token,
        headers: &HeaderMap,
        trail: &mut Trail,
    ) -> Result<(), Rejection> {
        let http = &self.inner.http;
        if let Some(database) = plan::metadata_database(headers)? {
            let mut needs = vec![Need::read(database.clone())];
            if method.can_write() {
                needs.push(Need::write(database));
            }
            http.authorize(token, &needs, trail).await?;
            return Ok(());
        }
        // CREATE is never held by a database token: the answer tells a
        // known token (forbidden) from an unknown one without granting.
        let probe = [Need {
            database: "*".to_owned(),
            action: Action::Create,
        }];
        match http.authorize(token, &probe, trail).await {
            Ok(_) | Err(Rejection::Forbidden(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }
}

/// The caller's token, from the `authorization` metadata (BRIEF §5 schemes).
fn token(headers: &HeaderMap) -> Result<Token, Rejection> {
    credentials::extract(headers, &Params::default(), false)
}

/// gRPC is POST over HTTP/2; gRPC-Web (HTTP/1.1, trailers in the body) is a
/// different protocol the upstream does not speak.
fn check_transport(request: &Request<ProxyBody>) -> Result<(), Rejection> {
    let grpc_web = request
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc-web"));
    if grpc_web || request.version() != Version::HTTP_2 {
        return Err(Rejection::UnsupportedMediaType(
            "only gRPC over HTTP/2 is supported (no gRPC-Web, no HTTP/1.1)".to_owned(),
        ));
    }
    if request.method() != Method::POST {
        return Err(Rejection::MethodNotAllowed);
    }
    Ok(())
}

/// The permissions a DoGet whose first message is `message` needs.
fn do_get_needs(headers: &HeaderMap, message: &[u8]) -> Result<Vec<Need>, Rejection> {
    let ticket = FlightTicket::decode(message).map_err(|_| {
        Rejection::BadRequest("the DoGet message is not a Flight Ticket".to_owned())
    })?;
    let metadata = plan::metadata_database(headers)?;
    let mut needs = match ticket::decode(&ticket.ticket) {
        Ok(decoded) => plan::ticket_needs(&decoded)?,
        // Flight SQL servers may hand out opaque tickets; the database is
        // then the one the metadata names, as for GetFlightInfo.
        Err(TicketError::Opaque) => match &metadata {
            Some(database) => vec![Need::read(database.clone())],
            None => {
                return Err(Rejection::BadRequest(format!(
                    "{}, and no database metadata was sent",
                    TicketError::Opaque
                )));
            }
        },
        Err(e @ TicketError::Invalid(_)) => return Err(Rejection::BadRequest(e.to_string())),
    };
    // A server that reads the metadata rather than the ticket must not be
    // able to reach a database the token was not checked for.
    if let Some(database) = metadata {
        let need = Need::read(database);
        if !needs.contains(&need) {
            needs.push(need);
        }
    }
    Ok(needs)
}

/// The `grpc-status` a response carries in its headers (trailers-only).
fn grpc_status_of(response: &Response<ProxyBody>) -> Option<i32> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}
