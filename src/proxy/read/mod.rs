//! What the proxy reads of a request to decide it, and the one canonical
//! form it forwards instead.
//!
//! The rule: after the proxy has read a request to decide it, what goes
//! upstream is rebuilt from the values it decided on, or the request is
//! refused. Never the original bytes of something parsed. So each decided
//! request is read into a typed value ([`Write`], [`InfluxQl`],
//! [`json::FluxRequest`], [`json::V3Query`]) by readers that refuse
//! whatever the database could read differently ([`params`], [`body`],
//! [`multipart`], [`json`], [`flux_extern`]), and forwarded as that value's
//! [`Canonical`] form: a fresh query string, and for queries a fresh body
//! (`application/x-www-form-urlencoded` or JSON, never compressed).
//!
//! Write bodies (line protocol) are the exception that proves the rule:
//! nothing in them decides anything, so they stream through untouched;
//! their parameters, which decide everything, are rebuilt.

pub mod admin;
pub mod body;
pub mod flux_extern;
pub mod json;
pub mod media;
pub mod multipart;
pub mod params;

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, Method, header};

use self::json::{FluxRequest, V3Query};
use self::media::MediaType;
use self::params::Params;
use super::classify::route::Route;
use super::reject::Rejection;

/// `application/x-www-form-urlencoded`.
pub const FORM: &str = "application/x-www-form-urlencoded";
/// `application/json`.
pub const JSON: &str = "application/json";

/// What is forwarded for a decided request: its query string and, for
/// queries, its body.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Canonical {
    /// The whole query string (empty: none).
    pub query: String,
    /// The body and its `Content-Type`; `None`: no body.
    pub body: Option<(Bytes, &'static str)>,
}

/// The parameters of each write endpoint that are forwarded, in order.
/// Everything else in the query string, credentials included, is dropped.
fn write_keys(route: Route) -> &'static [&'static str] {
    match route {
        Route::V1Write => &["db", "rp", "precision", "consistency"],
        Route::V2Write => &["bucket", "precision"],
        Route::V3Write => &["db", "precision", "accept_partial", "no_sync"],
        _ => &[],
    }
}

/// A write: the parameters that name its target, borrowed from the URL's
/// (and the operator's organization). Its body streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write<'a> {
    /// The forwarded parameters (non-empty ones), in canonical order.
    pub params: Vec<(&'static str, &'a str)>,
}

impl<'a> Write<'a> {
    /// Reads a write's parameters; a v2 write goes to organization `org`
    /// (the operator's), never to the one the caller names.
    pub fn read(route: Route, url: &'a Params<'_>, org: Option<&'a str>) -> Self {
        let mut params: Vec<(&'static str, &'a str)> = write_keys(route)
            .iter()
            .filter_map(|k| url.non_empty(k).map(|v| (*k, v)))
            .collect();
        if route == Route::V2Write
            && let Some(org) = org
        {
            params.push(("org", org));
        }
        Self { params }
    }

    /// The value of `key`, if forwarded.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.params.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }

    /// The canonical form: the parameters, no body change.
    pub fn canonical(&self) -> Canonical {
        Canonical {
            query: Params::encode(self.params.iter().copied()),
            body: None,
        }
    }
}

/// The parameters of `/query` that are forwarded, in order: the ones
/// InfluxDB 1.x reads (`services/httpd/handler.go`), except `u` and `p`
/// (credentials); unknown ones mean nothing to it either.
const INFLUXQL_KEYS: &[&str] = &[
    "q",
    "db",
    "rp",
    "epoch",
    "chunked",
    "chunk_size",
    "pretty",
    "params",
    "async",
    "node_id",
    "time_format",
];

/// The forwarded parameters of `/query` besides `q`, which has rules of
/// its own (given in exactly one place).
const INFLUXQL_OPTIONS: &[&str] = INFLUXQL_KEYS.split_at(1).1;

const _: () = assert!(matches!(INFLUXQL_KEYS[0].as_bytes(), b"q"));

/// A v1 `/query` request: borrowed from the URL's parameters when they
/// are all it has (a GET), copied from a body's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfluxQl<'a> {
    /// The method: GET (read-only statements) or POST.
    pub method: Method,
    /// The query, with surrounding white space removed as InfluxDB does.
    pub q: Cow<'a, str>,
    /// The forwarded parameters other than `q` (non-empty ones), in order.
    pub params: Vec<(&'static str, Cow<'a, str>)>,
}

impl InfluxQl<'_> {
    /// The value of `key` (`db`, `rp`, …), if forwarded.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| &**v)
    }

    /// The canonical form: GET carries the parameters in the query string
    /// and has no body; POST carries them in a form body, and only `pretty`
    /// in the query string (InfluxDB 1.x reads `pretty` from the URL alone).
    pub fn canonical(&self) -> Canonical {
        let pairs =
            std::iter::once(("q", &*self.q)).chain(self.params.iter().map(|(k, v)| (*k, &**v)));
        if self.method == Method::GET {
            return Canonical {
                query: Params::encode(pairs),
                body: None,
            };
        }
        let (url, body): (Vec<_>, Vec<_>) = pairs.partition(|(k, _)| *k == "pretty");
        // Encoding makes room for the worst case (three bytes per byte), and
        // a body is held while it is forwarded: up to three times a
        // `--max-body` query, outside `--max-buffered-bytes`, unless trimmed.
        let mut body = Params::encode(body);
        body.shrink_to_fit();
        Canonical {
            query: Params::encode(url),
            body: Some((Bytes::from(body), FORM)),
        }
    }
}

/// The request's single `Content-Type`, parsed; `None` when absent.
fn content_type(headers: &HeaderMap) -> Result<Option<MediaType>, Rejection> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::BadRequest(
            "more than one Content-Type header".to_owned(),
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| Rejection::BadRequest("Content-Type is not ASCII".to_owned()))?;
    media::parse(value, "Content-Type").map(Some)
}

fn utf8(body: Bytes, what: &str) -> Result<String, Rejection> {
    String::from_utf8(body.to_vec())
        .map_err(|_| Rejection::BadRequest(format!("{what} is not valid UTF-8")))
}

fn refuse_credentials(form: &Params<'_>) -> Result<(), Rejection> {
    if form.contains("p") || form.contains("u") {
        return Err(Rejection::BadRequest(
            "credentials in the request body are not supported; use the Authorization header"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Refuses a `pretty` that a POST body gives and the URL does not give
/// alike: InfluxDB 3 reads the body's, 1.x the URL's alone. (Given in
/// both, the two must agree anyway: it is single-valued.)
fn pretty_in_the_url(url: &Params<'_>, body: &Params<'_>) -> Result<(), Rejection> {
    match body.get("pretty") {
        Some(value) if url.get("pretty") != Some(value) => Err(Rejection::BadRequest(
            "\"pretty\" in the body must equal the URL's: InfluxDB 3 reads the body's, 1.x the \
             URL's alone"
                .to_owned(),
        )),
        _ => Ok(()),
    }
}

/// Reads a v1 `/query` request from its URL parameters and, for POST, its
/// decoded body (GET bodies are never read by InfluxDB's form parser and
/// never forwarded).
pub fn influxql<'a>(
    method: &Method,
    url: &'a Params<'a>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<InfluxQl<'a>, Rejection> {
    // Where `q` was given: exactly one place, or Go's precedence rules
    // (which differ between form and multipart bodies, and fall back to a
    // file part when the value is blank) would decide.
    let mut qs: Vec<Cow<'a, str>> = url.get("q").map(Cow::Borrowed).into_iter().collect();
    // The URL's parameters with a form body's merged in (a copy, made only
    // for a form body).
    let mut merged = None;
    if *method == Method::POST && !body.is_empty() {
        let media = content_type(headers)?.ok_or_else(|| {
            Rejection::UnsupportedMediaType("a /query body needs a Content-Type".to_owned())
        })?;
        match media.essence.as_str() {
            FORM => {
                let form = Params::parse_form(&body)?;
                refuse_credentials(&form)?;
                pretty_in_the_url(url, &form)?;
                qs.extend(form.get("q").map(|q| Cow::Owned(q.to_owned())));
                merged = Some(url.clone().merge(form)?);
            }
            "multipart/form-data" => {
                let mut values = Vec::new();
                for part in multipart::parse(&media, &body)? {
                    if part.file && part.name != "q" {
                        return Err(Rejection::BadRequest(format!(
                            "unexpected file part {:?} in the multipart body",
                            part.name
                        )));
                    }
                    if part.name == "q" {
                        qs.push(Cow::Owned(part.content.clone()));
                    }
                    if !part.file {
                        values.push((part.name, part.content));
                    }
                }
                let form = Params::from_pairs(values)?;
                refuse_credentials(&form)?;
                pretty_in_the_url(url, &form)?;
                merged = Some(url.clone().merge(form)?);
            }
            "application/vnd.influxql" | "text/plain" => {
                qs.push(Cow::Owned(utf8(body, "the query body")?));
            }
            "application/json" => {
                return Err(Rejection::UnsupportedMediaType(
                    "/query does not take a JSON body".to_owned(),
                ));
            }
            other => {
                return Err(Rejection::UnsupportedMediaType(format!(
                    "unsupported Content-Type {other:?} for a query"
                )));
            }
        }
    }
    if qs.len() > 1 {
        return Err(Rejection::BadRequest(
            "the query is given more than once (URL, body or file part)".to_owned(),
        ));
    }
    let q = match qs.pop() {
        Some(Cow::Borrowed(q)) => Cow::Borrowed(q.trim()),
        Some(Cow::Owned(q)) => Cow::Owned(q.trim().to_owned()),
        None => Cow::Borrowed(""),
    };
    if q.is_empty() {
        return Err(Rejection::BadRequest(
            "missing required parameter \"q\"".to_owned(),
        ));
    }
    let params = match &merged {
        None => forwarded(url).map(|(k, v)| (k, Cow::Borrowed(v))).collect(),
        // Each key once, the URL's and the body's alike where both give it,
        // a body's `pretty` the URL's: one value each, whoever reads first.
        Some(all) => forwarded(all)
            .map(|(k, v)| (k, Cow::Owned(v.to_owned())))
            .collect(),
    };
    Ok(InfluxQl {
        method: method.clone(),
        q,
        params,
    })
}

/// The parameters of `/query` other than `q` that `params` has and are
/// forwarded (non-empty ones), in order.
fn forwarded<'p>(params: &'p Params<'_>) -> impl Iterator<Item = (&'static str, &'p str)> {
    INFLUXQL_OPTIONS
        .iter()
        .filter_map(move |k| params.non_empty(k).map(|v| (*k, v)))
}

/// Reads a Flux request: JSON, or the program itself as
/// `application/vnd.flux`.
pub fn flux(headers: &HeaderMap, body: Bytes) -> Result<FluxRequest, Rejection> {
    if body.is_empty() {
        return Err(Rejection::BadRequest(
            "missing query in the request body".to_owned(),
        ));
    }
    let media = content_type(headers)?;
    match media.as_ref().map(|m| m.essence.as_str()) {
        None | Some(JSON) => FluxRequest::from_json(&body),
        Some("application/vnd.flux") => FluxRequest::from_text(utf8(body, "the Flux query")?),
        Some(other) => Err(Rejection::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?}: Flux queries must be JSON or application/vnd.flux"
        ))),
    }
}

/// Reads a v3 query: the URL's `db`, `q`, `format` and `params` for GET, a
/// JSON body for POST (whose `db` and `q` the URL may repeat, not contradict).
pub fn v3(
    method: &Method,
    url: &Params<'_>,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<V3Query, Rejection> {
    let query = if *method == Method::POST && !body.is_empty() {
        match content_type(headers)?.as_ref().map(|m| m.essence.as_str()) {
            None | Some(JSON) => {}
            Some(other) => {
                return Err(Rejection::UnsupportedMediaType(format!(
                    "unsupported Content-Type {other:?}: v3 query bodies must be JSON"
                )));
            }
        }
        let query = V3Query::from_json(&body)?;
        for (key, value) in [("db", &query.db), ("q", &query.q)] {
            if url.get(key).is_some_and(|u| u != value) {
                return Err(Rejection::BadRequest(format!(
                    "parameter {key:?} differs between the URL and the body"
                )));
            }
        }
        query
    } else {
        let params = match url.get("params") {
            None | Some("") => None,
            Some(text) => match json::parse_strict(text.as_bytes()) {
                Ok(serde_json::Value::Object(p)) => Some(p),
                _ => {
                    return Err(Rejection::BadRequest(
                        "parameter \"params\" must be a JSON object".to_owned(),
                    ));
                }
            },
        };
        V3Query {
            db: url.get("db").unwrap_or_default().to_owned(),
            q: url.get("q").unwrap_or_default().to_owned(),
            format: url.non_empty("format").map(str::to_owned),
            params,
        }
    };
    if query.db.is_empty() {
        return Err(Rejection::BadRequest("database is required".to_owned()));
    }
    if query.q.is_empty() {
        return Err(Rejection::BadRequest("query is required".to_owned()));
    }
    Ok(query)
}

/// The canonical form of a v3 query: GET keeps it in the query string, POST
/// in a JSON body.
pub fn v3_canonical(method: &Method, query: &V3Query) -> Canonical {
    if *method == Method::GET {
        let params = query
            .params
            .as_ref()
            .map(|p| serde_json::Value::Object(p.clone()).to_string());
        let pairs = [
            ("db", Some(query.db.as_str())),
            ("q", Some(query.q.as_str())),
            ("format", query.format.as_deref()),
            ("params", params.as_deref()),
        ];
        Canonical {
            query: Params::encode(pairs.iter().filter_map(|(k, v)| v.map(|v| (*k, v)))),
            body: None,
        }
    } else {
        Canonical {
            query: String::new(),
            body: Some((Bytes::from(query.to_json()), JSON)),
        }
    }
}

/// The canonical form of a Flux request: a JSON body; the URL names only
/// the operator's organization (`org`), which selects where InfluxDB 2
/// looks the buckets up — never the caller's, whose bucket `x` may be
/// another organization's `x`.
pub fn flux_canonical(org: Option<&str>, request: &FluxRequest) -> Canonical {
    Canonical {
        query: Params::encode(org.map(|org| ("org", org))),
        body: Some((Bytes::from(request.to_json()), JSON)),
    }
}

#[cfg(test)]
mod tests;
