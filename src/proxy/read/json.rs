//! JSON request bodies, read strictly, and their canonical forms.
//!
//! InfluxDB 1.8/2.x decode JSON with Go's `encoding/json`: keys match struct
//! fields case-insensitively, the last duplicate wins, unknown keys are
//! ignored, invalid UTF-8 becomes U+FFFD. InfluxDB 3 uses serde: keys are
//! case-sensitive and duplicates are errors. A body the two families, or the
//! proxy, could read differently is refused here: every key must be one the
//! endpoint defines, spelled exactly; no key may repeat, at any depth; the
//! text must be one valid JSON value (no byte-order mark, nothing after it).
//! What is forwarded is re-serialized from the values read.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::flux_extern::Extern;
use crate::proxy::reject::Rejection;

/// A JSON value whose objects have no repeated key, at any depth.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let Strict(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// Parses `bytes` as exactly one JSON value with no repeated keys.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let Strict(value) = Strict::deserialize(&mut de).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(value)
}

fn bad(what: &str, why: impl fmt::Display) -> Rejection {
    Rejection::BadRequest(format!("{what} not accepted: {why}"))
}

/// The top-level object of `bytes`, every key one of `known`.
fn object(bytes: &[u8], what: &str, known: &[&str]) -> Result<Map<String, Value>, Rejection> {
    let Value::Object(object) = parse_strict(bytes).map_err(|e| bad(what, e))? else {
        return Err(bad(what, "the body must be a JSON object"));
    };
    if let Some(key) = object.keys().find(|k| !known.contains(&k.as_str())) {
        let hint = known
            .iter()
            .find(|k| k.eq_ignore_ascii_case(key))
            .map(|k| format!(" (keys are case-sensitive: write {k:?})"))
            .unwrap_or_default();
        return Err(bad(what, format_args!("unknown key {key:?}{hint}")));
    }
    Ok(object)
}

/// An optional string member: absent or null is `None`.
fn opt_string(
    object: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<String>, Rejection> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(what, format_args!("{key:?} must be a string"))),
    }
}

/// The JSON body of InfluxDB 3's `POST /api/v3/query_sql` and
/// `/api/v3/query_influxql`.
#[derive(Debug, Clone, PartialEq)]
pub struct V3Query {
    /// The database.
    pub db: String,
    /// The query text.
    pub q: String,
    /// The answer's format.
    pub format: Option<String>,
    /// Statement parameters (values only: SQL and InfluxDB 3's InfluxQL
    /// bind values, never identifiers).
    pub params: Option<Map<String, Value>>,
}

impl V3Query {
    /// Reads a v3 query body.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Rejection> {
        const WHAT: &str = "v3 query body";
        let object = object(bytes, WHAT, &["db", "q", "format", "params"])?;
        let params = match object.get("params") {
            None | Some(Value::Null) => None,
            Some(Value::Object(p)) => Some(p.clone()),
            Some(_) => return Err(bad(WHAT, "\"params\" must be an object")),
        };
        Ok(Self {
            db: opt_string(&object, "db", WHAT)?.unwrap_or_default(),
            q: opt_string(&object, "q", WHAT)?.unwrap_or_default(),
            format: opt_string(&object, "format", WHAT)?,
            params,
        })
    }

    /// The canonical body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut object = Map::new();
        object.insert("db".into(), Value::String(self.db.clone()));
        object.insert("q".into(), Value::String(self.q.clone()));
        if let Some(format) = &self.format {
            object.insert("format".into(), Value::String(format.clone()));
        }
        if let Some(params) = &self.params {
            object.insert("params".into(), Value::Object(params.clone()));
        }
        Value::Object(object).to_string().into_bytes()
    }
}

/// The JSON body of `POST /api/v2/query` (InfluxDB 2.x, and 1.8's Flux
/// endpoint), restricted to what can be authorized: the query text, its
/// type, the answer's dialect and time, and an `extern` of the shape the
/// official client libraries send. An `ast` (a Flux program as a syntax
/// tree, executed instead of the text) is refused.
#[derive(Debug, Clone, PartialEq)]
pub struct FluxRequest {
    /// The Flux program.
    pub query: String,
    /// The CSV dialect of the answer, as sent (checked).
    pub dialect: Option<Value>,
    /// The query's `now`.
    pub now: Option<String>,
    /// Options set before the query runs.
    pub extern_: Option<Extern>,
}

const DIALECT_KEYS: &[&str] = &[
    "header",
    "delimiter",
    "annotations",
    "commentPrefix",
    "dateTimeFormat",
];

impl FluxRequest {
    /// Reads a Flux query body.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Rejection> {
        const WHAT: &str = "Flux query body";
        let object = object(
            bytes,
            WHAT,
            &["query", "type", "dialect", "now", "extern", "ast"],
        )?;
        if object.contains_key("ast") {
            return Err(bad(
                WHAT,
                "\"ast\" is not accepted: send the Flux program as \"query\"",
            ));
        }
        match opt_string(&object, "type", WHAT)?.as_deref() {
            None | Some("flux") => {}
            Some(other) => {
                return Err(bad(
                    WHAT,
                    format_args!("query type {other:?} is not supported; use flux"),
                ));
            }
        }
        let query = opt_string(&object, "query", WHAT)?
            .filter(|q| !q.trim().is_empty())
            .ok_or_else(|| bad(WHAT, "\"query\" is required"))?;
        let dialect = match object.get("dialect") {
            None | Some(Value::Null) => None,
            Some(Value::Object(d)) => {
                if let Some(key) = d.keys().find(|k| !DIALECT_KEYS.contains(&k.as_str())) {
                    return Err(bad(WHAT, format_args!("unknown dialect key {key:?}")));
                }
                Some(Value::Object(d.clone()))
            }
            Some(_) => return Err(bad(WHAT, "\"dialect\" must be an object")),
        };
        let now = opt_string(&object, "now", WHAT)?;
        let extern_ = match object.get("extern") {
            None | Some(Value::Null) => None,
            Some(value) => Some(Extern::from_json(value).map_err(|e| bad(WHAT, e))?),
        };
        Ok(Self {
            query,
            dialect,
            now,
            extern_,
        })
    }

    /// A Flux program sent as `application/vnd.flux`.
    pub fn from_text(query: String) -> Result<Self, Rejection> {
        if query.trim().is_empty() {
            return Err(Rejection::BadRequest(
                "missing query in the request body".to_owned(),
            ));
        }
        Ok(Self {
            query,
            dialect: None,
            now: None,
            extern_: None,
        })
    }

    /// The canonical body.
    pub fn to_json(&self) -> Vec<u8> {
        let mut object = Map::new();
        object.insert("query".into(), Value::String(self.query.clone()));
        object.insert("type".into(), Value::String("flux".into()));
        if let Some(dialect) = &self.dialect {
            object.insert("dialect".into(), dialect.clone());
        }
        if let Some(now) = &self.now {
            object.insert("now".into(), Value::String(now.clone()));
        }
        if let Some(extern_) = &self.extern_ {
            object.insert("extern".into(), extern_.to_json());
        }
        Value::Object(object).to_string().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_values() {
        assert!(parse_strict(br#"{"a": {"b": 1, "b": 2}}"#).is_err());
        assert!(parse_strict(br#"[{"a": 1, "a": 1}]"#).is_err());
        assert!(parse_strict(b"\xef\xbb\xbf{}").is_err(), "BOM");
        assert!(parse_strict(b"{} {}").is_err(), "trailing data");
        assert!(parse_strict(b"{\"a\": \"\xff\"}").is_err(), "invalid UTF-8");
        assert!(
            parse_strict(br#"{"a": "\udc00"}"#).is_err(),
            "lone surrogate"
        );
        assert_eq!(
            parse_strict(br#" {"\u0061": [1, -2, 1.5, true, null, "x"]} "#).unwrap(),
            serde_json::json!({"a": [1, -2, 1.5, true, null, "x"]})
        );
    }

    #[test]
    fn v3_bodies() {
        let q = V3Query::from_json(
            br#"{"db": "x", "q": "SELECT 1", "format": "json", "params": {"a": 1}}"#,
        )
        .unwrap();
        assert_eq!((q.db.as_str(), q.q.as_str()), ("x", "SELECT 1"));
        let canonical = q.to_json();
        assert_eq!(V3Query::from_json(&canonical).unwrap(), q);
        assert_eq!(
            String::from_utf8(canonical.clone()).unwrap(),
            parse_strict(&canonical).unwrap().to_string()
        );
        for bad in [
            r#"{"db": "x", "db": "y", "q": "SELECT 1"}"#,
            r#"{"DB": "y", "db": "x", "q": "SELECT 1"}"#,
            r#"{"db": "x", "q": "SELECT 1", "extra": 1}"#,
            r#"{"db": 1, "q": "SELECT 1"}"#,
            r#"{"db": "x", "q": "SELECT 1", "params": [1]}"#,
            r#"["x"]"#,
        ] {
            assert!(V3Query::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn flux_bodies() {
        let r = FluxRequest::from_json(
            br#"{"query": "from(bucket: \"x\")", "type": "flux", "dialect": {"header": true, "annotations": ["datatype"]}, "now": "2024-01-01T00:00:00Z"}"#,
        )
        .unwrap();
        assert_eq!(FluxRequest::from_json(&r.to_json()).unwrap(), r);
        for bad in [
            r#"{"query": "from(bucket: \"x\")", "Query": "from(bucket: \"s\")"}"#,
            r#"{"QUERY": "from(bucket: \"s\")"}"#,
            r#"{"query": "from(bucket: \"x\")", "query": "from(bucket: \"s\")"}"#,
            r#"{"query": "from(bucket: \"x\")", "ast": {}}"#,
            r#"{"query": "from(bucket: \"x\")", "type": "influxql"}"#,
            r#"{"query": "from(bucket: \"x\")", "dialect": {"Header": true}}"#,
            r#"{"query": ""}"#,
            r#"{"query": "from(bucket: \"x\")", "extern": {"body": [{"type": "VariableAssignment"}]}}"#,
        ] {
            assert!(FluxRequest::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
