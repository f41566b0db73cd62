//! The canonical form a forwarded request must have: rebuilt by the proxy
//! from the values it decided on, so there is exactly one way to read it.
//!
//! - `/query`: GET carries the parameters in the query string and no body;
//!   POST has an empty query string and an `application/x-www-form-urlencoded`
//!   body; either way no `Content-Encoding`, keys only from
//!   [`V1_QUERY_KEYS`], each at most once, valid UTF-8, and exactly the bytes
//!   `form_urlencoded::Serializer` makes of the parsed pairs in that key
//!   order (so no `u`/`p`).
//! - `/api/v2/query`: an `application/json` object with only the known
//!   lower-case keys, each once, exactly serde_json's compact serialization
//!   of itself (a `serde_json::Value` round trip: keys sorted), no
//!   `Content-Encoding`.
//! - v3 query JSON: the same with keys `db`, `q`, `format`, `params`.
//! - writes: the body streams untouched; the query string is rebuilt like
//!   `/query`'s from the write parameters (the key sets here are this
//!   file's reading of "rebuilt canonically", see `WRITE_KEYS`).
//! - everywhere: no `Authorization` (the tests configure no upstream
//!   credential), and the caller's token nowhere.

use serde::Deserialize as _;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

use crate::common::oracle::Reading;
use crate::harness::{TOKEN, shown};

/// `/query` parameters, in canonical order: the brief's set, then `async`
/// and `node_id`, which serveQuery also reads (a proxy may carry them or
/// refuse requests holding them; dropping them changes the meaning).
pub const V1_QUERY_KEYS: &[&str] = &[
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
/// A POST `/query` body's keys: `pretty` is read from the URL only by 1.x
/// (response_writer.go NewResponseWriter), so it stays in the query string,
/// which holds nothing else.
pub const V1_POST_BODY_KEYS: &[&str] = &[
    "q",
    "db",
    "rp",
    "epoch",
    "chunked",
    "chunk_size",
    "params",
    "async",
    "node_id",
    "time_format",
];
/// `/api/v2/query` JSON keys.
pub const FLUX_KEYS: &[&str] = &["query", "type", "dialect", "now", "extern"];
/// v3 query keys (JSON body or query string), in canonical order.
pub const V3_QUERY_KEYS: &[&str] = &["db", "q", "format", "params"];

/// Write parameters, per endpoint, in canonical order.
fn write_keys(endpoint: &str) -> &'static [&'static str] {
    match endpoint {
        "v1_write" => &["db", "rp", "precision", "consistency"],
        "v2_write" => &["bucket", "org", "orgID", "precision"],
        _ => &["db", "precision", "accept_partial", "no_sync"],
    }
}

pub fn check(f: &Reading) -> Vec<String> {
    let mut out = Vec::new();
    let body = f.body();
    let token = TOKEN.as_bytes();
    let contains_token = |b: &[u8]| b.windows(token.len()).any(|w| w == token);
    if contains_token(&f.request_uri.0)
        || contains_token(&body)
        || f.headers
            .values()
            .flatten()
            .chain(f.trailers.values().flatten())
            .any(|v| contains_token(&v.0))
    {
        out.push("SECURITY: the caller's token reached the upstream".to_owned());
    }
    if !f.header("Authorization").is_empty() {
        out.push(format!(
            "an Authorization header reached the upstream: {:?}",
            f.header("Authorization")
        ));
    }
    let encoding = f.header("Content-Encoding");
    match f.endpoint.as_str() {
        "v1_query" => {
            if !encoding.is_empty() {
                out.push(format!(
                    "/query forwarded with Content-Encoding {encoding:?}"
                ));
            }
            if f.method == "GET" {
                if !body.is_empty() {
                    out.push(format!(
                        "GET /query forwarded with a body: {}",
                        shown(&body)
                    ));
                }
                out.extend(form(&f.raw_query.0, V1_QUERY_KEYS, "query string"));
            } else {
                out.extend(form(&f.raw_query.0, &["pretty"], "POST query string"));
                out.extend(content_type(f, "application/x-www-form-urlencoded"));
                out.extend(form(&body, V1_POST_BODY_KEYS, "body"));
            }
        }
        "v2_query" => {
            if !encoding.is_empty() {
                out.push(format!(
                    "Flux query forwarded with Content-Encoding {encoding:?}"
                ));
            }
            out.extend(content_type(f, "application/json"));
            out.extend(json(&body, FLUX_KEYS));
        }
        "v3_query" => {
            if f.method == "GET" {
                if !body.is_empty() {
                    out.push(format!(
                        "GET v3 query forwarded with a body: {}",
                        shown(&body)
                    ));
                }
                out.extend(form(&f.raw_query.0, V3_QUERY_KEYS, "query string"));
            } else {
                if !encoding.is_empty() {
                    out.push(format!(
                        "v3 query forwarded with Content-Encoding {encoding:?}"
                    ));
                }
                out.extend(content_type(f, "application/json"));
                out.extend(json(&body, V3_QUERY_KEYS));
            }
        }
        endpoint @ ("v1_write" | "v2_write" | "v3_write") => {
            out.extend(form(&f.raw_query.0, write_keys(endpoint), "query string"));
        }
        _ => {}
    }
    out
}

fn content_type(f: &Reading, want: &str) -> Option<String> {
    let got = f.header("Content-Type");
    (got.len() != 1 || got[0].utf8() != Some(want))
        .then(|| format!("Content-Type {got:?}, not exactly {want:?}"))
}

/// `application/x-www-form-urlencoded` bytes in canonical form over `keys`.
fn form(bytes: &[u8], keys: &[&str], what: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pairs: Vec<(String, String)> = Vec::new();
    if !bytes.is_empty() {
        for pair in bytes.split(|&b| b == b'&') {
            let (k, v) = match pair.iter().position(|&b| b == b'=') {
                Some(i) => (&pair[..i], &pair[i + 1..]),
                None => (pair, &b""[..]),
            };
            match (decode(k), decode(v)) {
                (Ok(k), Ok(v)) => pairs.push((k, v)),
                (Err(e), _) | (_, Err(e)) => out.push(format!(
                    "{what}: pair {} is not canonical: {e}",
                    shown(pair)
                )),
            }
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in &pairs {
        if !seen.insert(k) {
            continue;
        }
        if !keys.contains(&k.as_str()) {
            out.push(format!("{what}: key {k:?} is not one of {keys:?}"));
        }
        if pairs.iter().filter(|(o, _)| o == k).count() > 1 {
            out.push(format!("{what}: key {k:?} appears more than once"));
        }
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for key in keys {
        if let Some((_, v)) = pairs.iter().find(|(k, _)| k == key) {
            serializer.append_pair(key, v);
        }
    }
    let canonical = serializer.finish();
    if out.is_empty() && canonical.as_bytes() != bytes {
        out.push(format!(
            "{what} {} is not the canonical serialization {canonical}",
            shown(bytes)
        ));
    }
    out
}

/// Strict percent-decoding (`+` is a space) to UTF-8.
fn decode(b: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = b.get(i + 1..i + 3).ok_or("truncated % escape")?;
                let hex = std::str::from_utf8(hex).map_err(|_| "bad % escape")?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad % escape")?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| "not valid UTF-8 once decoded".to_owned())
}

/// A JSON object's entries in document order, duplicates kept.
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// A JSON object over `keys`, each once, in serde_json's compact form.
fn json(body: &[u8], keys: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_slice(body);
    let entries = match Entries::deserialize(&mut de).and_then(|e| de.end().map(|()| e)) {
        Ok(e) => e.0,
        Err(e) => {
            return vec![format!(
                "JSON body {} does not parse strictly: {e}",
                shown(body)
            )];
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for (k, _) in &entries {
        if !seen.insert(k) {
            continue;
        }
        if !keys.contains(&k.as_str()) {
            out.push(format!("JSON key {k:?} is not one of {keys:?}"));
        }
        if entries.iter().filter(|(o, _)| o == k).count() > 1 {
            out.push(format!("JSON key {k:?} appears more than once"));
        }
    }
    let reserialized = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok());
    if out.is_empty() && reserialized.as_deref() != Some(body) {
        out.push(format!(
            "JSON body {} is not serde_json's compact serialization of itself",
            shown(body)
        ));
    }
    out
}
