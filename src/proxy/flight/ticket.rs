//! DoGet tickets: which database (and which query) a Flight ticket asks for,
//! and the canonical ticket forwarded in its place.
//!
//! InfluxDB 3 (`service_grpc_flight/src/request.rs`, `IoxGetRequest::
//! try_decode`) tries three forms in order, and so does [`decode`]:
//!
//! 1. a protobuf `google.protobuf.Any` whose `type_url` is
//!    [`READ_INFO_TYPE_URL`], wrapping a `ReadInfo`: a recognised Any whose
//!    value is not a `ReadInfo` is invalid, it does not fall through;
//! 2. a raw protobuf `ReadInfo` — prost reads leniently (unknown fields and
//!    groups skipped, the last of a repeated field wins), and so does this,
//!    with the same prost, so both read the same database;
//! 3. JSON `{"database": …, "sql_query": …, "query_type": "sql"|"influxql",
//!    "params": {…}, "is_debug": …}` (`database` also spelled
//!    `namespace_name`, `bucket`, `bucket-name`), only when neither protobuf
//!    reading succeeds. Here the JSON must be strict: exact keys, no
//!    repeats, nothing after the object, no byte-order mark.
//!
//! Bytes that read as protobuf *and* as JSON are refused (a server trying
//! JSON first would see another ticket). Bytes that look like JSON (their
//! first non-blank byte is `{`) but are not strictly valid are refused, not
//! taken as opaque. Anything else is [`TicketError::Opaque`]: Flight SQL
//! servers issue opaque tickets, and the caller authorizes the metadata's
//! database and forwards the ticket as it came.
//!
//! A decoded ticket is never forwarded as sent: [`Ticket::canonical`]
//! re-encodes it from the values decoded (protobuf for protobuf forms, JSON
//! for JSON), and checks that the result decodes back to the same ticket.

use bytes::Bytes;
use prost::Message as _;
use serde_json::{Map, Value};

use super::sql::Command;
use crate::proxy::read::json::parse_strict;

/// `type_url` of an Any-wrapped `ReadInfo`.
pub const READ_INFO_TYPE_URL: &str = "type.googleapis.com/influxdata.iox.querier.v1.ReadInfo";

/// The Flight `Ticket` message (`bytes ticket = 1`): the DoGet request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlightTicket {
    /// The opaque ticket.
    #[prost(bytes = "bytes", tag = "1")]
    pub ticket: Bytes,
}

/// `influxdata.iox.querier.v1.ReadInfo`. `params` (repeated `QueryParam`:
/// a name and a value, never an identifier) is kept as the encoded
/// messages, re-encoded as they are.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadInfo {
    /// The database (formerly `namespace_name`).
    #[prost(string, tag = "1")]
    pub database: String,
    /// The query text, SQL or InfluxQL per `query_type`.
    #[prost(string, tag = "2")]
    pub sql_query: String,
    /// `QUERY_TYPE_UNSPECIFIED = 0`, `SQL = 1`, `INFLUX_QL = 2`,
    /// `FLIGHT_SQL_MESSAGE = 3`.
    #[prost(int32, tag = "3")]
    pub query_type: i32,
    /// An encoded Flight SQL command (with `FLIGHT_SQL_MESSAGE`).
    #[prost(bytes = "vec", tag = "4")]
    pub flightsql_command: Vec<u8>,
    /// Debug flag.
    #[prost(bool, tag = "5")]
    pub is_debug: bool,
    /// Query parameters (encoded `QueryParam` messages).
    #[prost(bytes = "bytes", repeated, tag = "6")]
    pub params: Vec<Bytes>,
}

/// `ReadInfo.query_type` values.
pub mod query_type {
    /// Unspecified: InfluxDB runs it as SQL.
    pub const UNSPECIFIED: i32 = 0;
    /// SQL.
    pub const SQL: i32 = 1;
    /// InfluxQL.
    pub const INFLUX_QL: i32 = 2;
    /// A Flight SQL command in `flightsql_command`.
    pub const FLIGHT_SQL_MESSAGE: i32 = 3;
}

/// Which form a ticket was decoded from, with what re-encoding it needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Form {
    /// Protobuf Any wrapping a ReadInfo.
    Any(ReadInfo),
    /// Raw protobuf ReadInfo.
    ReadInfo(ReadInfo),
    /// JSON, as its (strictly parsed) object.
    Json(Map<String, Value>),
}

/// What a ticket asks to run.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// SQL (or unspecified, which InfluxDB runs as SQL).
    Sql(String),
    /// InfluxQL, whose statements may name other databases.
    InfluxQl(String),
    /// A Flight SQL command, run against the ticket's database.
    FlightSql(Command),
}

/// A decoded ticket.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticket {
    /// The form it was written in.
    pub form: Form,
    /// The database it queries.
    pub database: String,
    /// The query.
    pub query: Query,
}

/// Why a ticket names no database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// The ticket is in none of the three forms.
    #[error("the ticket is not an InfluxDB ReadInfo (protobuf or JSON)")]
    Opaque,
    /// The ticket is in one of the forms but cannot be authorized.
    #[error("invalid ticket: {0}")]
    Invalid(String),
}

fn invalid(message: impl Into<String>) -> TicketError {
    TicketError::Invalid(message.into())
}

/// Keys of the JSON form, exactly as InfluxDB 3 reads them.
const JSON_KEYS: &[&str] = &[
    "database",
    "namespace_name",
    "bucket",
    "bucket-name",
    "sql_query",
    "query_type",
    "params",
    "is_debug",
];
const JSON_DATABASE_KEYS: &[&str] = &["database", "namespace_name", "bucket", "bucket-name"];

/// Decodes a DoGet ticket (the `ticket` bytes of the Flight `Ticket`).
pub fn decode(ticket: &[u8]) -> Result<Ticket, TicketError> {
    let json = looks_like_json(ticket).then(|| json(ticket));
    let chosen = if let Some(any) = prost_types::Any::decode(ticket)
        .ok()
        .filter(|any| any.type_url == READ_INFO_TYPE_URL)
    {
        let info = ReadInfo::decode(any.value.as_slice())
            .map_err(|_| invalid("the Any-wrapped value is not a ReadInfo"))?;
        from_read_info(info, true)?
    } else if let Ok(info) = ReadInfo::decode(ticket) {
        from_read_info(info, false)?
    } else {
        return match json {
            Some(result) => result,
            None => Err(TicketError::Opaque),
        };
    };
    if json.is_some_and(|j| j.is_ok()) {
        return Err(invalid(
            "the ticket reads both as protobuf and as JSON; refusing the ambiguity",
        ));
    }
    Ok(chosen)
}

/// True when the first byte that is not JSON white space (after an
/// optional byte-order mark) opens an object.
fn looks_like_json(ticket: &[u8]) -> bool {
    let t = ticket.strip_prefix(b"\xef\xbb\xbf").unwrap_or(ticket);
    t.iter()
        .find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|b| *b == b'{')
}

fn from_read_info(mut info: ReadInfo, wrapped: bool) -> Result<Ticket, TicketError> {
    if info.database.is_empty() {
        return Err(invalid("the ReadInfo names no database"));
    }
    // InfluxDB refuses a ReadInfo carrying both a query text and a command
    // (and then tries the bytes as JSON): so does the proxy.
    let query = match info.query_type {
        query_type::UNSPECIFIED | query_type::SQL | query_type::INFLUX_QL
            if !info.flightsql_command.is_empty() =>
        {
            return Err(invalid(
                "a SQL or InfluxQL ReadInfo carries a Flight SQL command",
            ));
        }
        query_type::UNSPECIFIED | query_type::SQL => Query::Sql(info.sql_query.clone()),
        query_type::INFLUX_QL => Query::InfluxQl(info.sql_query.clone()),
        query_type::FLIGHT_SQL_MESSAGE if !info.sql_query.is_empty() => {
            return Err(invalid("a Flight SQL ReadInfo carries a query text"));
        }
        query_type::FLIGHT_SQL_MESSAGE => {
            let command =
                Command::decode(&info.flightsql_command).map_err(|e| invalid(e.to_string()))?;
            // Forwarded re-encoded, as the rest of the ticket.
            info.flightsql_command = command.canonical();
            Query::FlightSql(command)
        }
        // InfluxDB reads an unknown type as unspecified (SQL); a newer
        // server might not, and the proxy must not guess what it would read.
        other => return Err(invalid(format!("unknown query_type {other}"))),
    };
    let database = info.database.clone();
    let form = if wrapped {
        Form::Any(info)
    } else {
        Form::ReadInfo(info)
    };
    Ok(Ticket {
        form,
        database,
        query,
    })
}

/// The strict JSON form.
fn json(ticket: &[u8]) -> Result<Ticket, TicketError> {
    let value = parse_strict(ticket).map_err(|e| invalid(format!("JSON ticket: {e}")))?;
    let Value::Object(object) = value else {
        return Err(invalid("a JSON ticket must be an object"));
    };
    if let Some(key) = object.keys().find(|k| !JSON_KEYS.contains(&k.as_str())) {
        return Err(invalid(format!("JSON ticket: unknown key {key:?}")));
    }
    let string = |key: &str| -> Result<Option<&str>, TicketError> {
        match object.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(invalid(format!("JSON ticket: {key:?} must be a string"))),
        }
    };
    let mut names = Vec::new();
    for key in JSON_DATABASE_KEYS {
        names.extend(string(key)?);
    }
    let database = match names.as_slice() {
        [one] if !one.is_empty() => (*one).to_owned(),
        [] => return Err(invalid("JSON ticket names no database")),
        [_] => return Err(invalid("JSON ticket names an empty database")),
        _ => return Err(invalid("JSON ticket names the database more than once")),
    };
    let sql_query = string("sql_query")?.ok_or_else(|| invalid("JSON ticket has no sql_query"))?;
    let query = match string("query_type")? {
        None | Some("sql") => Query::Sql(sql_query.to_owned()),
        Some("influxql") => Query::InfluxQl(sql_query.to_owned()),
        // InfluxDB refuses other types too; refusing here means the proxy
        // never has to guess what "InfluxQL" or "flightsql" would run.
        Some(other) => return Err(invalid(format!("unknown query_type {other:?}"))),
    };
    match object.get("params") {
        None | Some(Value::Object(_)) => {}
        Some(_) => return Err(invalid("JSON ticket: \"params\" must be an object")),
    }
    match object.get("is_debug") {
        None | Some(Value::Bool(_)) => {}
        Some(_) => return Err(invalid("JSON ticket: \"is_debug\" must be a boolean")),
    }
    Ok(Ticket {
        form: Form::Json(object),
        database,
        query,
    })
}

impl Ticket {
    /// The ticket re-encoded from what was decoded: what the upstream gets.
    /// Refused if the re-encoding would not decode to this same ticket.
    pub fn canonical(&self) -> Result<Bytes, TicketError> {
        let bytes = match &self.form {
            Form::Any(info) => prost_types::Any {
                type_url: READ_INFO_TYPE_URL.to_owned(),
                value: info.encode_to_vec(),
            }
            .encode_to_vec(),
            Form::ReadInfo(info) => info.encode_to_vec(),
            Form::Json(object) => {
                let mut canonical = Map::new();
                canonical.insert("database".into(), Value::String(self.database.clone()));
                for key in ["sql_query", "query_type", "params", "is_debug"] {
                    if let Some(value) = object.get(key) {
                        canonical.insert(key.into(), value.clone());
                    }
                }
                Value::Object(canonical).to_string().into_bytes()
            }
        };
        let again = decode(&bytes)?;
        let same = again.database == self.database
            && again.query == self.query
            && std::mem::discriminant(&again.form) == std::mem::discriminant(&self.form);
        if !same {
            return Err(invalid("the ticket cannot be re-encoded unambiguously"));
        }
        Ok(Bytes::from(bytes))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn read_info(db: &str, q: &str, kind: i32) -> ReadInfo {
        ReadInfo {
            database: db.into(),
            sql_query: q.into(),
            query_type: kind,
            ..Default::default()
        }
    }

    fn any(info: &ReadInfo) -> Vec<u8> {
        prost_types::Any {
            type_url: READ_INFO_TYPE_URL.into(),
            value: info.encode_to_vec(),
        }
        .encode_to_vec()
    }

    #[test]
    fn three_forms_and_their_canonical_encodings() {
        let info = read_info("mydb", "SELECT 1", query_type::SQL);
        let t = decode(&any(&info)).unwrap();
        assert!(matches!(t.form, Form::Any(_)));
        assert_eq!(
            (t.database.as_str(), &t.query),
            ("mydb", &Query::Sql("SELECT 1".into()))
        );
        assert_eq!(t.canonical().unwrap(), any(&info));

        let t = decode(&info.encode_to_vec()).unwrap();
        assert!(matches!(t.form, Form::ReadInfo(_)));
        assert_eq!(t.canonical().unwrap(), info.encode_to_vec());

        let t = decode(
            br#"{"namespace_name": "mydb", "sql_query": "SHOW MEASUREMENTS", "query_type": "influxql", "params": {"a": 1}}"#,
        )
        .unwrap();
        assert_eq!(t.query, Query::InfluxQl("SHOW MEASUREMENTS".into()));
        assert_eq!(
            t.canonical().unwrap(),
            &br#"{"database":"mydb","params":{"a":1},"query_type":"influxql","sql_query":"SHOW MEASUREMENTS"}"#[..]
        );
        for key in ["bucket", "bucket-name"] {
            let json = format!(r#"{{"{key}": "b", "sql_query": "SELECT 1"}}"#);
            assert_eq!(decode(json.as_bytes()).unwrap().database, "b");
        }
    }

    #[test]
    fn influxdb3_python_tickets_are_json() {
        // What influxdb3-python sends (json.dumps), with parameters.
        let ticket = br#"{"database": "my-db", "sql_query": "SELECT * FROM cpu WHERE host = $host", "query_type": "sql", "params": {"host": "a"}}"#;
        let t = decode(ticket).unwrap();
        assert!(matches!(t.form, Form::Json(_)));
        assert_eq!(t.database, "my-db");
    }

    #[test]
    fn unknown_fields_and_groups_read_as_prost_reads_them() {
        // Field 1 = "a", then group 15: prost (and so InfluxDB) skips the
        // group and reads database "a"; so does the proxy, and the
        // canonical ticket drops the group.
        let bytes = [0x0a, 0x01, b'a', 0x7b, 0x7c];
        let t = decode(&bytes).unwrap();
        assert_eq!(t.database, "a");
        assert_eq!(t.canonical().unwrap(), &[0x0a, 0x01, b'a'][..]);
        // A repeated field: the last one wins, in prost and here.
        let bytes = [0x0a, 0x01, b'x', 0x0a, 0x01, b's'];
        assert_eq!(decode(&bytes).unwrap().database, "s");
    }

    #[test]
    fn invalid_and_opaque() {
        assert!(
            matches!(decode(b""), Err(TicketError::Invalid(_))),
            "empty ReadInfo: no database"
        );
        assert_eq!(decode(b"opaque-handle-17"), Err(TicketError::Opaque));
        assert_eq!(decode(b"\xff\xfe\x00garbage"), Err(TicketError::Opaque));
        for bad in [
            r#"{"database": "a", "bucket": "b", "sql_query": "x"}"#,
            r#"{"database": "a", "database": "b", "sql_query": "x"}"#,
            r#"{"database": "", "sql_query": "x"}"#,
            r#"{"database": 7, "sql_query": "x"}"#,
            r#"{"database": "a", "sql_query": "x", "query_type": "InfluxQL"}"#,
            r#"{"database": "a", "query_type": "influxql"}"#,
            r#"{"Database": "a", "sql_query": "x"}"#,
            r#"{"handle": "x"}"#,
            r#"{"database": "a", "sql_query": "x"} trailing"#,
            "\u{feff}{\"database\": \"a\", \"sql_query\": \"x\"}",
            r#"  {"database": "a", "sql_query": "x", "params": [1]}"#,
        ] {
            assert!(
                matches!(decode(bad.as_bytes()), Err(TicketError::Invalid(_))),
                "{bad}"
            );
        }
        // A recognised Any with a broken value does not fall through.
        let broken = prost_types::Any {
            type_url: READ_INFO_TYPE_URL.into(),
            value: vec![0x0a, 0x7f],
        }
        .encode_to_vec();
        assert!(matches!(decode(&broken), Err(TicketError::Invalid(_))));
        // Unknown query types are not guessed.
        assert!(matches!(
            decode(&read_info("a", "x", 42).encode_to_vec()),
            Err(TicketError::Invalid(_))
        ));
        // An Any for another type is read as a raw ReadInfo, whose field 1
        // is then the type URL (as InfluxDB reads it).
        let other = prost_types::Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![],
        }
        .encode_to_vec();
        assert_eq!(decode(&other).unwrap().database, "type.googleapis.com/x.Y");
    }

    /// A polyglot: JSON whitespace `\n` and ` ` read as protobuf field 1
    /// (database) of 32 bytes, then the rest of the JSON text as more fields.
    fn polyglot_prefix() -> Vec<u8> {
        let mut b = b"\n ".to_vec();
        let x = br#" {"database":"mine","sql_query":"#;
        assert_eq!(x.len(), 32);
        b.extend_from_slice(x);
        b
    }

    #[test]
    fn json_that_is_also_protobuf_is_refused() {
        let mut b = polyglot_prefix();
        b.extend_from_slice(b"\"(");
        b.extend_from_slice(&[b'x'; 39]);
        b.extend_from_slice(b"\"}    ");
        let json: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(json["database"], "mine");
        assert!(ReadInfo::decode(&b[..]).is_ok());
        assert!(matches!(decode(&b), Err(TicketError::Invalid(_))));
    }
}
