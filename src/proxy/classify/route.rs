//! The proxy's route table: which exact paths and methods it serves, and
//! which API each belongs to. Paths are compared byte for byte, so every
//! variant (case, trailing or doubled slashes, percent-encoding, dot
//! segments) is refused rather than guessed at.
//!
//! Database administration (InfluxDB 3's `/api/v3/configure/*`, InfluxDB
//! 2's `/api/v2/buckets`) is routed for management tokens; the routes that
//! run code on the server (processing engine, plugins, request triggers)
//! only when an operator lists them (`--allow-admin-path`); the database's
//! own token routes never (InfluxDB 3 Core even serves
//! `/api/v3/configure/token/admin` without authentication).

use http::Method;

use super::super::reject::{Api, Rejection};

/// What a request is, by path and method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `/ping`, `/health` and configured allow-listed paths: no token.
    Public,
    /// `POST /write`.
    V1Write,
    /// `GET|POST /query`.
    V1Query,
    /// `POST /api/v2/write`.
    V2Write,
    /// `POST /api/v2/query` (Flux).
    V2Query,
    /// `POST /api/v3/write_lp`.
    V3Write,
    /// `GET|POST /api/v3/query_sql`.
    V3QuerySql,
    /// `GET|POST /api/v3/query_influxql`.
    V3QueryInfluxQl,
    /// `/api/v3/configure/database`: GET lists, POST creates, PUT updates,
    /// DELETE deletes.
    V3Database,
    /// `/api/v3/configure/database/retention_period`: POST sets, DELETE
    /// clears.
    V3RetentionPeriod,
    /// `/api/v3/configure/table`: POST creates, DELETE deletes.
    V3Table,
    /// `/api/v3/configure/last_cache`: POST creates, DELETE deletes.
    V3LastCache,
    /// `/api/v3/configure/distinct_cache`: POST creates, DELETE deletes.
    V3DistinctCache,
    /// An InfluxDB 3 route the operator allowed with `--allow-admin-path`
    /// (it runs code on the server): for management tokens, forwarded as is.
    V3AllowedAdmin,
    /// `/api/v2/buckets`: GET lists, POST creates.
    V2Buckets,
    /// `DELETE /api/v2/buckets/{id}`.
    V2Bucket,
}

impl Route {
    /// Label for metrics and audit.
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Public => "public",
            Route::V1Write => "v1_write",
            Route::V1Query => "v1_query",
            Route::V2Write => "v2_write",
            Route::V2Query => "v2_query",
            Route::V3Write => "v3_write_lp",
            Route::V3QuerySql => "v3_query_sql",
            Route::V3QueryInfluxQl => "v3_query_influxql",
            Route::V3Database => "v3_configure_database",
            Route::V3RetentionPeriod => "v3_configure_retention_period",
            Route::V3Table => "v3_configure_table",
            Route::V3LastCache => "v3_configure_last_cache",
            Route::V3DistinctCache => "v3_configure_distinct_cache",
            Route::V3AllowedAdmin => "v3_admin",
            Route::V2Buckets => "v2_buckets",
            Route::V2Bucket => "v2_bucket",
        }
    }
}

const TABLE: &[(&str, Api, Route, &[Method])] = &[
    (
        "/ping",
        Api::V1,
        Route::Public,
        &[Method::GET, Method::HEAD],
    ),
    (
        "/health",
        Api::V1,
        Route::Public,
        &[Method::GET, Method::HEAD],
    ),
    ("/write", Api::V1, Route::V1Write, &[Method::POST]),
    (
        "/query",
        Api::V1,
        Route::V1Query,
        &[Method::GET, Method::POST],
    ),
    ("/api/v2/write", Api::V2, Route::V2Write, &[Method::POST]),
    ("/api/v2/query", Api::V2, Route::V2Query, &[Method::POST]),
    ("/api/v3/write_lp", Api::V3, Route::V3Write, &[Method::POST]),
    (
        "/api/v3/query_sql",
        Api::V3,
        Route::V3QuerySql,
        &[Method::GET, Method::POST],
    ),
    (
        "/api/v3/query_influxql",
        Api::V3,
        Route::V3QueryInfluxQl,
        &[Method::GET, Method::POST],
    ),
    (
        "/api/v3/configure/database",
        Api::V3,
        Route::V3Database,
        &[Method::GET, Method::POST, Method::PUT, Method::DELETE],
    ),
    (
        "/api/v3/configure/database/retention_period",
        Api::V3,
        Route::V3RetentionPeriod,
        &[Method::POST, Method::DELETE],
    ),
    (
        "/api/v3/configure/table",
        Api::V3,
        Route::V3Table,
        &[Method::POST, Method::DELETE],
    ),
    (
        "/api/v3/configure/last_cache",
        Api::V3,
        Route::V3LastCache,
        &[Method::POST, Method::DELETE],
    ),
    (
        "/api/v3/configure/distinct_cache",
        Api::V3,
        Route::V3DistinctCache,
        &[Method::POST, Method::DELETE],
    ),
    (
        "/api/v2/buckets",
        Api::V2,
        Route::V2Buckets,
        &[Method::GET, Method::POST],
    ),
];

/// The database's own token management: never through the proxy.
const TOKEN_ROUTES: &[&str] = &[
    "/api/v3/configure/token",
    "/api/v3/enterprise/configure/token",
];

/// What the database's own token routes answer through the proxy.
const TOKEN_ROUTES_REFUSED: &str = "the database's own tokens cannot be managed through fluxgate; fluxgate holds the one upstream credential (use `fluxgate token` for fluxgate's tokens)";

/// `/api/v2/buckets/{id}`: InfluxDB 2.x ids are 16 lower-case hex digits.
fn is_bucket_path(path: &str) -> bool {
    path.strip_prefix("/api/v2/buckets/").is_some_and(|id| {
        id.len() == 16
            && id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The API whose error shape a path's clients expect.
pub fn api_of(path: &str) -> Api {
    if path.starts_with("/api/v2/") {
        Api::V2
    } else if path.starts_with("/api/v3/") {
        Api::V3
    } else {
        Api::V1
    }
}

/// Extra exact paths the operator configured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allowed<'a> {
    /// Forwarded without a token (`--allow-path`).
    pub public: &'a [String],
    /// InfluxDB 3 administration forwarded for management tokens
    /// (`--allow-admin-path`).
    pub admin: &'a [String],
}

/// Routes a request.
pub fn route(
    method: &Method,
    path: &str,
    allowed: Allowed<'_>,
) -> Result<(Api, Route), (Api, Rejection)> {
    if let Some((_, api, route, methods)) = TABLE.iter().find(|(p, ..)| *p == path) {
        if methods.contains(method) {
            return Ok((*api, *route));
        }
        return Err((*api, Rejection::MethodNotAllowed));
    }
    if TOKEN_ROUTES.iter().any(|t| {
        path == *t
            || path
                .strip_prefix(t)
                .is_some_and(|rest| rest.starts_with('/'))
    }) {
        return Err((Api::V3, Rejection::Admin(TOKEN_ROUTES_REFUSED.to_owned())));
    }
    if is_bucket_path(path) {
        if *method == Method::DELETE {
            return Ok((Api::V2, Route::V2Bucket));
        }
        return Err((Api::V2, Rejection::MethodNotAllowed));
    }
    if allowed.public.iter().any(|p| p == path) {
        return Ok((api_of(path), Route::Public));
    }
    if path.starts_with("/api/v3/") && allowed.admin.iter().any(|p| p == path) {
        return Ok((Api::V3, Route::V3AllowedAdmin));
    }
    Err((api_of(path), Rejection::NotFound))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &Method, path: &str) -> Result<(Api, Route), (Api, Rejection)> {
        route(method, path, Allowed::default())
    }

    #[test]
    fn exact_paths_only() {
        assert_eq!(r(&Method::POST, "/write"), Ok((Api::V1, Route::V1Write)));
        for variant in [
            "/write/",
            "//write",
            "/Write",
            "/%77rite",
            "/./write",
            "/api/v2/../../write",
            "/write%2F",
        ] {
            assert_eq!(
                r(&Method::POST, variant).unwrap_err().1,
                Rejection::NotFound,
                "{variant}"
            );
        }
        assert_eq!(
            r(&Method::GET, "/write").unwrap_err().1,
            Rejection::MethodNotAllowed
        );
        assert_eq!(r(&Method::GET, "/api/v2/orgs").unwrap_err().0, Api::V2);
        let public = ["/metrics".to_owned()];
        let allowed = Allowed {
            public: &public,
            admin: &[],
        };
        assert_eq!(
            route(&Method::GET, "/metrics", allowed),
            Ok((Api::V1, Route::Public))
        );
    }

    #[test]
    fn administration_routes() {
        assert_eq!(
            r(&Method::DELETE, "/api/v3/configure/database"),
            Ok((Api::V3, Route::V3Database))
        );
        assert_eq!(
            r(&Method::DELETE, "/api/v2/buckets/0123456789abcdef"),
            Ok((Api::V2, Route::V2Bucket))
        );
        for not_an_id in [
            "/api/v2/buckets/0123456789ABCDEF",
            "/api/v2/buckets/0123456789abcde",
            "/api/v2/buckets/0123456789abcdef/",
            "/api/v2/buckets/",
        ] {
            assert_eq!(
                r(&Method::DELETE, not_an_id).unwrap_err().1,
                Rejection::NotFound
            );
        }
        // The database's own tokens: never, whatever the method or suffix.
        for path in [
            "/api/v3/configure/token",
            "/api/v3/configure/token/admin",
            "/api/v3/configure/token/admin/regenerate",
            "/api/v3/configure/token/named_admin",
            "/api/v3/enterprise/configure/token",
        ] {
            assert!(
                matches!(r(&Method::POST, path), Err((Api::V3, Rejection::Admin(_)))),
                "{path}"
            );
        }
        // Code-running routes only when listed, and only under /api/v3.
        let engine = "/api/v3/configure/processing_engine_trigger";
        assert_eq!(r(&Method::POST, engine).unwrap_err().1, Rejection::NotFound);
        let admin = [engine.to_owned(), "/write2".to_owned()];
        let allowed = Allowed {
            public: &[],
            admin: &admin,
        };
        assert_eq!(
            route(&Method::POST, engine, allowed),
            Ok((Api::V3, Route::V3AllowedAdmin))
        );
        assert_eq!(
            route(&Method::POST, "/write2", allowed).unwrap_err().1,
            Rejection::NotFound
        );
    }
}
