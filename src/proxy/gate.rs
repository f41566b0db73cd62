//! The gate both front ends (HTTP and Flight) pass through: everything about
//! a request that is not about its protocol.
//!
//! - [`Gate::authorize`]: decides needs for a token within
//!   `--authz-timeout`, after the brute-force throttle has had its say, and
//!   feeds invalid tokens back to it;
//! - [`Gate::validate`] and [`Gate::refuse_admin`]: the token probe (is
//!   this token known at all?) used before reading a body and for admin
//!   statements;
//! - [`Gate::read_body`]: bounded, timed, budgeted reading of a body that
//!   must be understood before deciding;
//! - [`Gate::finish`]: the one place a request ends — its outcome named as a
//!   value, the refusal mapped to the response its API expects, the log
//!   line, the metrics and the audit event.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Response};

use super::Peer;
use super::body::{ProxyBody, Trailers};
use super::read::body::{self as read_body, Budget, Decodes, ReadLimits, Reservation};
use super::reject::{Api, Rejection};
use super::throttle::Throttle;
use crate::audit::{Audit, AuditEvent, now_rfc3339};
use crate::authz::{
    Action, Authorizer, AuthzError, CacheUse, Decision, Need, NeedDecision, Verdict,
};
use crate::credentials::Token;
use crate::telemetry::{self, RequestLabels, Status};

/// How the gate decides and reads.
#[derive(Debug, Clone)]
pub struct GateSettings {
    /// Longest wait for a decision.
    pub authz_timeout: Duration,
    /// Largest body read to authorize (also the largest gRPC request
    /// message read).
    pub max_body: u64,
    /// Longest time such a body may take to arrive; also the longest pause
    /// between two pieces of a body streamed upstream.
    pub body_read_timeout: Duration,
    /// Bytes all requests together may hold while being read.
    pub max_buffered_bytes: u64,
    /// Invalid tokens per client address per minute before 429 (0: off).
    pub invalid_token_rate: u32,
}

impl Default for GateSettings {
    fn default() -> Self {
        Self {
            authz_timeout: Duration::from_secs(2),
            max_body: 1 << 20,
            body_read_timeout: Duration::from_secs(30),
            max_buffered_bytes: 256 << 20,
            invalid_token_rate: 20,
        }
    }
}

/// The gate. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    authorizer: Arc<dyn Authorizer>,
    authz_timeout: Duration,
    limits: ReadLimits,
    throttle: Throttle,
    audit: Audit,
}

/// What one request needed, who asked and what was decided: the substance
/// of its metrics and audit event.
#[derive(Debug, Default)]
pub struct Trail {
    /// The needs that were decided (kept only when the audit trail is on).
    needs: Vec<Need>,
    keep_needs: bool,
    /// The actions decided, as one metric label.
    action: &'static str,
    /// The token's id, once known.
    subject: Option<Arc<str>>,
    /// How the decision cache took part (the last decision's).
    cache: CacheUse,
    /// An allow decision was made: whatever fails after it is the
    /// upstream's (or the stream's), not a refusal.
    allowed: bool,
}

impl Trail {
    fn note(&mut self, needs: &[Need], verdict: &Verdict) {
        self.cache = verdict.cache;
        self.action = action_label(needs);
        if self.keep_needs {
            self.needs.clear();
            self.needs.extend_from_slice(needs);
        }
        self.note_subject(verdict);
    }

    fn note_subject(&mut self, verdict: &Verdict) {
        self.cache = verdict.cache;
        if let Some(subject) = verdict.decisions.iter().find_map(|d| match d {
            NeedDecision::Allowed { subject } | NeedDecision::Forbidden { subject } => {
                Some(Arc::clone(subject))
            }
            NeedDecision::InvalidToken => None,
        }) {
            self.subject = Some(subject);
        }
    }
}

/// How a request ended, as a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// A route that needs no decision (`/ping`, Flight `Handshake`).
    Public,
    /// Allowed and forwarded; the upstream answered.
    Forwarded,
    /// Allowed, then the upstream failed (unreachable, too slow) or the
    /// client's stream did (stalled body).
    FailedAfterAllow(&'a Rejection),
    /// Refused: by a decision, or because the request cannot be decided.
    Denied(&'a Rejection),
    /// No decision could be made (token service unavailable, proxy busy).
    NoDecision(&'a Rejection),
}

impl Outcome<'_> {
    /// The `decision` label of metrics and audit.
    pub fn decision(self) -> &'static str {
        match self {
            Outcome::Public => "public",
            Outcome::Forwarded => "allow",
            Outcome::Denied(_) => "deny",
            Outcome::FailedAfterAllow(_) | Outcome::NoDecision(_) => "error",
        }
    }
}

/// Where a finished request came from, for [`Gate::finish`].
#[derive(Debug)]
pub struct Finished<'a> {
    /// The API (response shape).
    pub api: Api,
    /// Route (HTTP) or method (Flight) label.
    pub route: &'static str,
    /// Method and path, kept only when auditing.
    pub method: &'a str,
    /// Request path.
    pub path: &'a str,
    /// The route needed no decision.
    pub public: bool,
    /// When the request started.
    pub started: Instant,
}

impl Gate {
    /// A gate deciding with `authorizer`, reading and throttling per
    /// `settings`, auditing to `audit`.
    pub fn new(authorizer: Arc<dyn Authorizer>, settings: &GateSettings, audit: Audit) -> Self {
        Self {
            inner: Arc::new(Inner {
                authorizer,
                authz_timeout: settings.authz_timeout,
                limits: ReadLimits {
                    max_body: settings.max_body,
                    timeout: settings.body_read_timeout,
                    budget: Budget::new(settings.max_buffered_bytes),
                },
                throttle: Throttle::new(settings.invalid_token_rate),
                audit,
            }),
        }
    }

    /// A fresh trail for one request.
    pub fn trail(&self) -> Trail {
        Trail {
            keep_needs: self.inner.audit.enabled(),
            action: "none",
            ..Trail::default()
        }
    }

    /// True when requests are audited (handlers then keep method and path).
    pub fn audited(&self) -> bool {
        self.inner.audit.enabled()
    }

    /// The body limits.
    pub fn limits(&self) -> &ReadLimits {
        &self.inner.limits
    }

    async fn verdict(
        &self,
        token: &Token,
        needs: &[Need],
        client: &Peer,
    ) -> Result<Verdict, Rejection> {
        if let Err(seconds) = self.inner.throttle.check(client.addr.ip()) {
            return Err(Rejection::Throttled(seconds));
        }
        // --audit-required: nothing is served that cannot be audited.
        if !self.inner.audit.accepting() {
            tracing::debug!("audit events cannot be written (--audit-required); refusing");
            return Err(Rejection::AuditUnavailable);
        }
        let authorizer = &self.inner.authorizer;
        // Read before deciding: a change during the check is a change
        // after what the memo remembers.
        let generation = authorizer.generation();
        let now = Instant::now();
        let recalled = generation.and_then(|g| client.memo.recall(g, token, needs, now));
        let verdict = if let Some(verdict) = recalled {
            authorizer.reused(&verdict);
            verdict
        } else {
            let verdict = match tokio::time::timeout(
                self.inner.authz_timeout,
                authorizer.check(token, needs),
            )
            .await
            {
                Ok(Ok(verdict)) => verdict,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "no authorization decision; refusing");
                    return Err(Rejection::AuthzUnavailable);
                }
                Err(_) => {
                    tracing::warn!(error = %AuthzError::Timeout, "no authorization decision; refusing");
                    return Err(Rejection::AuthzUnavailable);
                }
            };
            if let Some(g) = generation {
                client.memo.remember(g, token, needs, &verdict, now);
            }
            verdict
        };
        if verdict
            .decisions
            .iter()
            .any(|d| matches!(d, NeedDecision::InvalidToken))
        {
            self.inner.throttle.invalid(client.addr.ip());
        }
        Ok(verdict)
    }

    /// Requires every need to be granted to `token`.
    pub async fn authorize(
        &self,
        token: &Token,
        needs: &[Need],
        trail: &mut Trail,
        client: &Peer,
    ) -> Result<Arc<str>, Rejection> {
        let verdict = self.verdict(token, needs, client).await?;
        trail.note(needs, &verdict);
        match Decision::combine(needs, &verdict.decisions) {
            Decision::Allow { subject } => {
                trail.allowed = true;
                Ok(subject)
            }
            Decision::InvalidToken => Err(Rejection::InvalidToken),
            Decision::Forbidden { need, .. } => Err(Rejection::Forbidden(need)),
        }
    }

    /// Requires `token` to be known (valid, whatever it may do): asked
    /// before a body is read, so an unknown token costs no buffering.
    pub async fn validate(
        &self,
        token: &Token,
        probe: Need,
        trail: &mut Trail,
        client: &Peer,
    ) -> Result<(), Rejection> {
        let needs = [probe];
        let verdict = self.verdict(token, &needs, client).await?;
        trail.note_subject(&verdict);
        match Decision::combine(&needs, &verdict.decisions) {
            Decision::InvalidToken => Err(Rejection::InvalidToken),
            Decision::Allow { .. } | Decision::Forbidden { .. } => Ok(()),
        }
    }

    /// The refusal of a statement no token may run: 401 for an unknown
    /// token, the explanation (`message`, 403) for any known one.
    pub async fn refuse(
        &self,
        token: &Token,
        probe: Need,
        message: String,
        trail: &mut Trail,
        client: &Peer,
    ) -> Rejection {
        debug_assert_eq!(probe.action, Action::Create);
        trail.action = "admin";
        match self.validate(token, probe, trail, client).await {
            Ok(()) => Rejection::Admin(message),
            Err(other) => other,
        }
    }

    /// The decisions for `needs` (one per need), for filtering answers
    /// (`SHOW DATABASES`); an invalid token is an error.
    pub async fn decisions(
        &self,
        token: &Token,
        needs: &[Need],
        client: &Peer,
    ) -> Result<Vec<NeedDecision>, Rejection> {
        let verdict = self.verdict(token, needs, client).await?;
        if verdict
            .decisions
            .iter()
            .any(|d| matches!(d, NeedDecision::InvalidToken))
        {
            return Err(Rejection::InvalidToken);
        }
        Ok(verdict.decisions)
    }

    /// Reads a body that must be understood before deciding, and undoes
    /// its `Content-Encoding` where the database would (`decodes`): the
    /// decoded bytes, and the reservation that holds them against
    /// `--max-buffered-bytes` until dropped.
    pub async fn read_body(
        &self,
        body: ProxyBody,
        headers: &HeaderMap,
        decodes: Decodes,
    ) -> Result<(Bytes, Reservation), Rejection> {
        let limits = &self.inner.limits;
        let mut buffered = read_body::read(body, limits, Trailers::Drop).await?;
        if buffered.bytes.is_empty() {
            return Ok((Bytes::new(), buffered.reservation));
        }
        let encoding = read_body::encoding(headers, decodes)?;
        let decoded = read_body::decode(
            &buffered.bytes,
            encoding,
            limits.max_body,
            &limits.budget,
            &mut buffered.reservation,
        )?;
        Ok((decoded, buffered.reservation))
    }

    /// Reads a whole gRPC request (a unary call's one message): bounded as
    /// [`Gate::read_body`], with trailers that carry anything refused.
    pub async fn read_grpc(&self, body: ProxyBody) -> Result<read_body::Buffered, Rejection> {
        read_body::read(body, &self.inner.limits, Trailers::Refuse).await
    }

    /// Ends a request: names its outcome, turns a refusal into `api`'s
    /// response, logs, counts and audits. Returns the response to send.
    pub fn finish(
        &self,
        request: &Finished<'_>,
        client: &Peer,
        trail: &Trail,
        result: Result<Response<ProxyBody>, Rejection>,
    ) -> Response<ProxyBody> {
        let outcome = match &result {
            Ok(_) if request.public => Outcome::Public,
            Ok(_) => Outcome::Forwarded,
            Err(rejection) if trail.allowed => Outcome::FailedAfterAllow(rejection),
            Err(
                rejection @ (Rejection::AuthzUnavailable
                | Rejection::Busy
                | Rejection::AuditUnavailable),
            ) => Outcome::NoDecision(rejection),
            Err(rejection) => Outcome::Denied(rejection),
        };
        let outcome_label = outcome.decision();
        let reason = result.as_ref().err().map(|rejection| {
            tracing::debug!(
                api = request.api.as_str(),
                route = request.route,
                decision = outcome_label,
                reason = %rejection,
                "request refused"
            );
            rejection.to_string()
        });
        let response = result.unwrap_or_else(|rejection| rejection.into_response(request.api));
        let grpc_status = (request.api == Api::Grpc)
            .then(|| grpc_status_of(&response))
            .flatten();
        let api = request.api.as_str();
        telemetry::count_request(
            RequestLabels {
                api,
                route: request.route,
                action: trail.action,
                decision: outcome_label,
                status: grpc_status.map_or(Status::Http(response.status().as_u16()), Status::Grpc),
            },
            request.started.elapsed().as_secs_f64(),
        );
        if request.public || !self.inner.audit.enabled() {
            return response;
        }
        self.inner.audit.record(&AuditEvent {
            time: now_rfc3339(),
            client: client.addr.to_string(),
            method: request.method.to_owned(),
            path: request.path.to_owned(),
            api,
            databases: trail.needs.iter().map(|n| n.database.clone()).collect(),
            actions: trail.needs.iter().map(|n| n.action.as_str()).collect(),
            decision: outcome_label,
            status: response.status().as_u16(),
            grpc_status,
            token_id: trail.subject.as_deref().map(str::to_owned),
            cache: trail.cache.as_str(),
            latency_ms: request.started.elapsed().as_secs_f64() * 1e3,
            reason,
        });
        response
    }
}

/// The `grpc-status` a response carries in its headers (trailers-only).
fn grpc_status_of(response: &Response<ProxyBody>) -> Option<i32> {
    response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The actions a request needed, as one metric label.
pub fn action_label(needs: &[Need]) -> &'static str {
    let read = needs
        .iter()
        .any(|n| matches!(n.action, Action::Read | Action::ReadSchema));
    let write = needs.iter().any(|n| n.action == Action::Write);
    let admin = needs
        .iter()
        .any(|n| matches!(n.action, Action::Create | Action::Delete));
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
        telemetry::in_flight(1);
        Self(())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        telemetry::in_flight(-1);
    }
}
