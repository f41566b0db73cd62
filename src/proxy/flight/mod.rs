//! The Flight (gRPC) request path, in the same order as the HTTP one:
//! method → credentials → read what must be read (a unary call's one
//! message, with its trailers) → needs → decide → forward its canonical
//! form over h2c. Every refusal is a [`Rejection`]; the [`Gate`] (shared
//! with HTTP: same authorizer, timeout, limits, throttle, metrics and audit
//! trail) answers it as a trailers-only gRPC status. Nothing is forwarded
//! without an allow decision; `Handshake` is answered by the proxy itself.
//!
//! Request trailers never reach the upstream: tonic servers (InfluxDB 3's
//! Flight service among them) merge them into the request metadata,
//! replacing header values the proxy authorized. A unary call whose
//! trailers carry anything is refused before anything is forwarded; a
//! streaming call's upstream stream is reset if they come.
//!
//! | method | needs |
//! |---|---|
//! | `Handshake` | a known token; answered by the proxy, never forwarded ([`handshake`]) |
//! | `DoGet` | read on the ticket's database ([`ticket`]); InfluxQL also every database its statements name; SQL and Flight SQL commands ([`sql`]) also `*` for the server-wide system tables ([`crate::proxy::classify::sql`]); an opaque ticket falls back to the metadata database; metadata naming a database adds read on it |
//! | `GetFlightInfo` | read on the metadata database ([`plan::DATABASE_METADATA`]; none → INVALID_ARGUMENT), and what the descriptor's Flight SQL command needs beyond it, as for DoGet; forwarded re-encoded |
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
//! - reading a unary request is bounded in size (`--max-body`), in time
//!   (`--body-read-timeout`) and in memory across requests
//!   (`--max-buffered-bytes`), as HTTP bodies are.

pub mod frame;
pub mod handshake;
pub mod methods;
pub mod plan;
pub mod sql;
pub mod ticket;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Version, header};
use prost::Message as _;

use self::frame::Encoding;
use self::methods::{AllowList, FlightMethod};
use self::sql::Descriptor;
use self::ticket::{FlightTicket, TicketError};
use super::Peer;
use super::body::{ProxyBody, Streamed, Trailers};
use super::classify::token_probe;
use super::credentials;
use super::forward::Upstream;
use super::gate::{Finished, Gate, Trail};
use super::read::params::Params;
use super::reject::{Api, Rejection};
use crate::authz::Need;
use crate::credentials::Token;

/// Settings of the Flight request path beyond the gate's.
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
    gate: Gate,
    /// The gRPC upstream (HTTP/2).
    upstream: Upstream,
    settings: FlightSettings,
}

impl FlightService {
    /// A Flight handler deciding through `gate` and forwarding to `upstream`
    /// (an HTTP/2 [`Upstream`]).
    pub fn new(gate: Gate, upstream: Upstream, settings: FlightSettings) -> Self {
        Self {
            inner: Arc::new(Inner {
                gate,
                upstream,
                settings,
            }),
        }
    }

    /// The same service over upstream connections of its own (see
    /// [`Upstream::with_own_pool`]).
    pub fn with_own_pool(&self) -> Self {
        Self::new(
            self.inner.gate.clone(),
            self.inner.upstream.with_own_pool(),
            self.inner.settings.clone(),
        )
    }

    /// Handles one gRPC request.
    pub async fn handle(&self, request: Request<ProxyBody>, peer: &Peer) -> Response<ProxyBody> {
        let started = Instant::now();
        let gate = &self.inner.gate;
        let method = FlightMethod::from_path(request.uri().path());
        let path = if gate.audited() {
            request.uri().path().to_owned()
        } else {
            String::new()
        };
        let mut trail = gate.trail();
        let result = self.call(method, request, peer, &mut trail).await;
        let finished = Finished {
            api: Api::Grpc,
            route: method.map_or("unknown", FlightMethod::name),
            method: "POST",
            path: &path,
            public: false,
            started,
        };
        gate.finish(&finished, peer, &trail, result)
    }

    async fn call(
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
        let gate = &self.inner.gate;
        let (mut parts, body) = request.into_parts();
        // The one message forwarded in place of a unary call's, or the
        // caller's stream forwarded as it comes.
        let forwarded = match method {
            // JDBC and others handshake before they know a database: the
            // proxy answers it (see `handshake`), for a known token.
            FlightMethod::Handshake => {
                let token = token(&parts.headers)?;
                gate.validate(&token, token_probe(None), trail, peer)
                    .await?;
                let mut body = body;
                let message =
                    frame::read_first(&mut body, gate.limits(), &Encoding::of(&parts.headers))
                        .await?;
                return handshake::answer(&message, token.expose());
            }
            FlightMethod::DoGet => {
                let token = token(&parts.headers)?;
                let message = self
                    .unary_message(&token, &parts.headers, body, trail, peer)
                    .await?;
                let ticket = do_get_ticket(&parts.headers, &message)?;
                gate.authorize(&token, &ticket.needs, trail, peer).await?;
                Forward::Rebuilt(ticket.forwarded)
            }
            FlightMethod::GetFlightInfo => {
                let token = token(&parts.headers)?;
                let message = self
                    .unary_message(&token, &parts.headers, body, trail, peer)
                    .await?;
                let info = get_flight_info(&parts.headers, &message)?;
                gate.authorize(&token, &info.needs, trail, peer).await?;
                Forward::Rebuilt(info.forwarded)
            }
            other if self.inner.settings.allow.allows(other) => {
                let token = token(&parts.headers)?;
                self.authorize_allow_listed(other, &token, &parts.headers, trail, peer)
                    .await?;
                Forward::Stream(body)
            }
            other => {
                return Err(Rejection::Admin(format!(
                    "Flight method {other} is not allowed through the proxy (an operator can allow it with --allow-flight-method {other})"
                )));
            }
        };
        let stalled = Arc::new(AtomicBool::new(false));
        let body = match forwarded {
            Forward::Rebuilt(message) => {
                // Sent uncompressed: the caller's message encoding no
                // longer applies.
                parts.headers.remove("grpc-encoding");
                parts.headers.remove(header::CONTENT_LENGTH);
                ProxyBody::full(frame::encode(&message)?)
            }
            Forward::Stream(body) => ProxyBody::new(Streamed::new(
                body,
                Trailers::Refuse,
                gate.limits().timeout,
                Arc::clone(&stalled),
            )),
        };
        let result = self
            .inner
            .upstream
            .forward_grpc(parts, body, &peer.origin)
            .await;
        match result {
            Err(_) if stalled.load(Ordering::Acquire) => Err(Rejection::BodyTimeout),
            other => other,
        }
    }

    /// The one request message of a unary call, read whole (its trailers
    /// refused) after checking the token is known.
    async fn unary_message(
        &self,
        token: &Token,
        headers: &HeaderMap,
        body: ProxyBody,
        trail: &mut Trail,
        peer: &Peer,
    ) -> Result<Bytes, Rejection> {
        let gate = &self.inner.gate;
        gate.validate(token, token_probe(None), trail, peer).await?;
        let buffered = gate.read_grpc(body).await?;
        frame::single(
            &buffered.bytes,
            &Encoding::of(headers),
            gate.limits().max_body,
        )
    }

    /// An allow-listed method: the metadata database's permissions when one
    /// is named, otherwise only a token the authorizer knows.
    async fn authorize_allow_listed(
        &self,
        method: FlightMethod,
        token: &Token,
        headers: &HeaderMap,
        trail: &mut Trail,
        peer: &Peer,
    ) -> Result<(), Rejection> {
        let gate = &self.inner.gate;
        if let Some(database) = plan::metadata_database(headers)? {
            let mut needs = vec![Need::read(database.clone())];
            if method.can_write() {
                needs.push(Need::write(database));
            }
            gate.authorize(token, &needs, trail, peer).await?;
            return Ok(());
        }
        gate.validate(token, token_probe(None), trail, peer).await
    }
}

/// What goes upstream after the decision.
enum Forward {
    /// A unary call's one message, rebuilt from what was decided.
    Rebuilt(Bytes),
    /// A streaming call's request stream, as it comes (trailers refused).
    Stream(ProxyBody),
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

/// What a unary call needs, and the message forwarded in its place.
#[derive(Debug)]
struct Decided {
    needs: Vec<Need>,
    forwarded: Bytes,
}

/// The permissions a GetFlightInfo whose one message is `message` needs
/// (the metadata database, and what the descriptor's SQL needs beyond it),
/// and the descriptor re-encoded.
fn get_flight_info(headers: &HeaderMap, message: &[u8]) -> Result<Decided, Rejection> {
    let database = plan::metadata_database(headers)?.ok_or_else(|| {
        Rejection::BadRequest(
            "GetFlightInfo needs the database in the request metadata (\"database\", \"bucket\", \"bucket-name\" or \"iox-namespace-name\")".to_owned(),
        )
    })?;
    let descriptor =
        Descriptor::decode(message).map_err(|e| Rejection::BadRequest(e.to_string()))?;
    Ok(Decided {
        needs: plan::descriptor_needs(headers, &database, &descriptor)?,
        forwarded: Bytes::from(descriptor.canonical()),
    })
}

/// The permissions a DoGet whose one message is `message` needs, and the
/// canonical message (an opaque ticket goes as it came: it was not read).
fn do_get_ticket(headers: &HeaderMap, message: &[u8]) -> Result<Decided, Rejection> {
    let ticket = FlightTicket::decode(message).map_err(|_| {
        Rejection::BadRequest("the DoGet message is not a Flight Ticket".to_owned())
    })?;
    let metadata = plan::metadata_database(headers)?;
    let (mut needs, forwarded) = match ticket::decode(&ticket.ticket) {
        Ok(decoded) => {
            let canonical = decoded
                .canonical()
                .map_err(|e| Rejection::BadRequest(e.to_string()))?;
            (plan::ticket_needs(&decoded)?, canonical)
        }
        // Flight SQL servers may hand out opaque tickets; the database is
        // then the one the metadata names, as for GetFlightInfo.
        Err(TicketError::Opaque) => match &metadata {
            Some(database) => (vec![Need::read(database.clone())], ticket.ticket.clone()),
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
    let forwarded = FlightTicket { ticket: forwarded }.encode_to_vec();
    Ok(Decided {
        needs,
        forwarded: Bytes::from(forwarded),
    })
}
