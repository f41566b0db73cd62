//! The proxy's route table: which exact paths and methods it serves, and
//! which API each belongs to. Paths are compared byte for byte, so every
//! variant (case, trailing or doubled slashes, percent-encoding, dot
//! segments) is refused rather than guessed at.

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
];

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

/// Routes a request. `allow_paths` are extra exact paths forwarded as public.
pub fn route(
    method: &Method,
    path: &str,
    allow_paths: &[String],
) -> Result<(Api, Route), (Api, Rejection)> {
    if let Some((_, api, route, methods)) = TABLE.iter().find(|(p, ..)| *p == path) {
        if methods.contains(method) {
            return Ok((*api, *route));
        }
        return Err((*api, Rejection::MethodNotAllowed));
    }
    if allow_paths.iter().any(|p| p == path) {
        return Ok((api_of(path), Route::Public));
    }
    Err((api_of(path), Rejection::NotFound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_paths_only() {
        assert_eq!(
            route(&Method::POST, "/write", &[]),
            Ok((Api::V1, Route::V1Write))
        );
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
                route(&Method::POST, variant, &[]).unwrap_err().1,
                Rejection::NotFound,
                "{variant}"
            );
        }
        assert_eq!(
            route(&Method::GET, "/write", &[]).unwrap_err().1,
            Rejection::MethodNotAllowed
        );
        assert_eq!(
            route(&Method::GET, "/api/v2/buckets", &[]).unwrap_err().0,
            Api::V2
        );
        assert_eq!(
            route(&Method::GET, "/metrics", &["/metrics".into()]),
            Ok((Api::V1, Route::Public))
        );
    }
}
