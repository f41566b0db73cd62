//! The one place where a refused or failed request becomes a response: the
//! status and JSON body each InfluxDB API's clients parse (v1 and v3:
//! `{"error": …}`; v2: `{"code": …, "message": …}`), and for gRPC a
//! trailers-only status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::ProxyBody;
use crate::authz::Need;

/// Which API's error shape a response must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// InfluxDB 1.x `/write`, `/query`, `/ping`.
    V1,
    /// InfluxDB 2.x `/api/v2/...`.
    V2,
    /// InfluxDB 3 `/api/v3/...`.
    V3,
    /// gRPC (Flight).
    Grpc,
}

impl Api {
    /// Label for metrics and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Api::V1 => "v1",
            Api::V2 => "v2",
            Api::V3 => "v3",
            Api::Grpc => "flight",
        }
    }
}

/// Why a request is not forwarded (or failed upstream). Messages never
/// contain a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// No credential at all.
    #[error("authorization token is required")]
    NoToken,
    /// A credential that cannot be parsed.
    #[error("{0}")]
    MalformedCredentials(String),
    /// Unknown, expired or revoked token.
    #[error("authorization failed: unknown, expired or revoked token")]
    InvalidToken,
    /// The token lacks a permission.
    #[error("token does not have {action} permission on database {database:?}{hint}", action = .0.action.as_str(), database = .0.database, hint = forbidden_hint(.0))]
    Forbidden(Need),
    /// A statement no database token may run.
    #[error("{0}")]
    Admin(String),
    /// The request is malformed or ambiguous.
    #[error("{0}")]
    BadRequest(String),
    /// A path the proxy does not serve.
    #[error("path not found or not allowed through the proxy")]
    NotFound,
    /// Wrong method for the path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A body that must be read to authorize is too large.
    #[error("request body too large to authorize (limit {0} bytes)")]
    TooLarge(u64),
    /// A body encoding the proxy cannot read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The token service could not decide.
    #[error("authorization service unavailable")]
    AuthzUnavailable,
    /// The upstream could not be reached.
    #[error("upstream database unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer within `--upstream-timeout`.
    #[error("upstream database did not answer in time")]
    UpstreamTimeout,
    /// The request body did not arrive within `--body-read-timeout`.
    #[error("request body not received in time")]
    BodyTimeout,
    /// The proxy holds as many request bytes as `--max-buffered-bytes`
    /// allows (or cannot audit, with `--audit-required`): retry later.
    #[error("the proxy is busy; retry later")]
    Busy,
    /// Audit events cannot be written and `--audit-required` is on.
    #[error("the audit trail cannot be written; retry later")]
    AuditUnavailable,
    /// This client presented too many invalid tokens; retry after that
    /// many seconds.
    #[error("too many invalid tokens from this address; retry later")]
    Throttled(u64),
}

impl Rejection {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::NoToken | Rejection::InvalidToken => StatusCode::UNAUTHORIZED,
            Rejection::Forbidden(_) | Rejection::Admin(_) => StatusCode::FORBIDDEN,
            Rejection::MalformedCredentials(_) | Rejection::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            Rejection::NotFound => StatusCode::NOT_FOUND,
            Rejection::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Rejection::AuthzUnavailable | Rejection::Busy | Rejection::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Rejection::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            Rejection::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Rejection::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Rejection::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The v2 API's `code` string.
    fn v2_code(&self) -> &'static str {
        match self {
            Rejection::NoToken | Rejection::InvalidToken => "unauthorized",
            Rejection::Forbidden(_) | Rejection::Admin(_) => "forbidden",
            Rejection::MalformedCredentials(_) | Rejection::BadRequest(_) => "invalid",
            Rejection::NotFound => "not found",
            Rejection::MethodNotAllowed => "method not allowed",
            Rejection::TooLarge(_) => "request too large",
            Rejection::UnsupportedMediaType(_) => "unsupported media type",
            Rejection::AuthzUnavailable
            | Rejection::UpstreamUnavailable
            | Rejection::Busy
            | Rejection::AuditUnavailable => "unavailable",
            Rejection::UpstreamTimeout | Rejection::BodyTimeout => "request timeout",
            Rejection::Throttled(_) => "too many requests",
        }
    }

    /// The gRPC status code.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            Rejection::NoToken => tonic::Code::Unauthenticated,
            Rejection::InvalidToken | Rejection::Forbidden(_) | Rejection::Admin(_) => {
                tonic::Code::PermissionDenied
            }
            Rejection::MalformedCredentials(_) => tonic::Code::Unauthenticated,
            Rejection::BadRequest(_) | Rejection::UnsupportedMediaType(_) => {
                tonic::Code::InvalidArgument
            }
            Rejection::NotFound | Rejection::MethodNotAllowed => tonic::Code::Unimplemented,
            Rejection::TooLarge(_) => tonic::Code::ResourceExhausted,
            Rejection::AuthzUnavailable
            | Rejection::UpstreamUnavailable
            | Rejection::Busy
            | Rejection::AuditUnavailable => tonic::Code::Unavailable,
            Rejection::UpstreamTimeout | Rejection::BodyTimeout => tonic::Code::DeadlineExceeded,
            Rejection::Throttled(_) => tonic::Code::ResourceExhausted,
        }
    }

    /// Seconds a client should wait before retrying, for refusals that are
    /// the proxy's own trouble (Telegraf honours `Retry-After`).
    fn retry_after(&self) -> Option<u64> {
        match self {
            Rejection::Throttled(seconds) => Some((*seconds).max(1)),
            Rejection::Busy | Rejection::AuthzUnavailable | Rejection::AuditUnavailable => Some(1),
            _ => None,
        }
    }

    /// The response in `api`'s shape.
    pub fn into_response(self, api: Api) -> Response<ProxyBody> {
        if api == Api::Grpc {
            return grpc_status(self.grpc_code(), &self.to_string());
        }
        let message = self.to_string();
        let body = match api {
            Api::V2 => serde_json::json!({ "code": self.v2_code(), "message": message }),
            _ => serde_json::json!({ "error": message }),
        };
        let mut response = Response::new(ProxyBody::full(Bytes::from(body.to_string())));
        *response.status_mut() = match (&self, api) {
            // Telegraf's v1 output drops a batch on any 4xx and retries 5xx
            // (BRIEF §10): a throttled address must not cost the valid
            // writers behind it their data.
            (Rejection::Throttled(_), Api::V1) => StatusCode::SERVICE_UNAVAILABLE,
            _ => self.status(),
        };
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(seconds) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self == Rejection::BodyTimeout {
            // The rest of a stalled body may still come; this connection
            // cannot carry another request.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if api == Api::V1 {
            // InfluxDB 1.x repeats the error in this header; some clients read it.
            if let Ok(v) = HeaderValue::from_str(&message) {
                headers.insert("x-influxdb-error", v);
            }
        }
        response
    }
}

/// What to add to a refusal of `need`: administration is for management
/// tokens (and Telegraf's v1 output asks to create its database at start).
fn forbidden_hint(need: &Need) -> &'static str {
    match need.action {
        crate::authz::Action::Create => {
            " (only management tokens administer databases; Telegraf: set skip_database_creation = true in [[outputs.influxdb]])"
        }
        crate::authz::Action::Delete => " (only management tokens administer databases)",
        _ => "",
    }
}

/// A trailers-only gRPC response: HTTP 200 with `grpc-status` in the headers.
pub fn grpc_status(code: tonic::Code, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(ProxyBody::empty());
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    let encoded = percent_encoding::utf8_percent_encode(message, GRPC_MESSAGE).to_string();
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", v);
    }
    response
}

/// gRPC's percent-encoding of `grpc-message`: everything outside printable
/// ASCII, and `%` itself.
const GRPC_MESSAGE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%');

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    async fn body_json(r: Response<ProxyBody>) -> serde_json::Value {
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn shapes_per_api() {
        let r = Rejection::InvalidToken.into_response(Api::V1);
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(body_json(r).await["error"].is_string());

        let r = Rejection::Forbidden(Need::write("db")).into_response(Api::V2);
        assert_eq!(r.status(), 403);
        let v = body_json(r).await;
        assert_eq!(v["code"], "forbidden");
        assert!(v["message"].as_str().unwrap().contains("\"db\""));

        let r = Rejection::AuthzUnavailable.into_response(Api::V3);
        assert_eq!(r.status(), 503);
        assert!(body_json(r).await["error"].is_string());
    }

    #[test]
    fn grpc_is_trailers_only() {
        let r = Rejection::NoToken.into_response(Api::Grpc);
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "16");
        let r = Rejection::Forbidden(Need::read("x")).into_response(Api::Grpc);
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(
            Rejection::AuthzUnavailable.grpc_code(),
            tonic::Code::Unavailable
        );
    }
}
