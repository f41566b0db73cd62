//! DoGet tickets: which database (and which query) a Flight ticket asks for.
//!
//! InfluxDB 3 accepts three ticket forms (BRIEF §4), tried in this order:
//!
//! 1. a protobuf `google.protobuf.Any` whose `type_url` is
//!    [`READ_INFO_TYPE_URL`], wrapping a `ReadInfo`. As in InfluxDB, a
//!    recognised Any whose value is not a valid `ReadInfo` is invalid; it
//!    does not fall through to the other forms;
//! 2. a raw protobuf `ReadInfo`;
//! 3. JSON `{"database": …, "sql_query": …, "query_type": "sql"|"influxql"}`
//!    (`database` also spelled `namespace_name`, `bucket`, `bucket-name`).
//!
//! Protobuf is decoded strictly here: a field encoded as a group (which no
//! field of these proto3 messages is, and which is how a JSON `{` reads as
//! protobuf) or an empty database make a form not match. Because the
//! upstream decodes protobuf leniently (prost skips unknown fields and
//! groups), the same bytes are also decoded leniently in every other form:
//! when a second form also yields a database, the ticket is refused as
//! ambiguous, so no crafted ticket can be authorized as one database and
//! run by the upstream against another. The only expected overlap — an
//! Any-wrapped ticket also reads as a raw `ReadInfo` whose "database" is the
//! type URL — is the wrapper itself and is not a conflict.
//!
//! A ticket that matches no form is [`TicketError::Opaque`]: Flight SQL
//! servers may issue opaque tickets, and the caller falls back to the
//! request metadata for the database.

use bytes::{Buf as _, Bytes};
use prost::Message as _;

/// `type_url` of an Any-wrapped `ReadInfo`.
pub const READ_INFO_TYPE_URL: &str = "type.googleapis.com/influxdata.iox.querier.v1.ReadInfo";

/// The Flight `Ticket` message (`bytes ticket = 1`): the DoGet request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlightTicket {
    /// The opaque ticket.
    #[prost(bytes = "bytes", tag = "1")]
    pub ticket: Bytes,
}

/// `influxdata.iox.querier.v1.ReadInfo`, the fields the proxy reads.
/// `params = 6` (query parameters) is not needed to authorize and is skipped
/// as an unknown field, like any field added in later revisions.
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

/// Which form a ticket was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// Protobuf Any wrapping a ReadInfo.
    Any,
    /// Raw protobuf ReadInfo.
    ReadInfo,
    /// JSON.
    Json,
}

/// What a ticket asks to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// SQL (or unspecified, which InfluxDB runs as SQL): one database only.
    Sql,
    /// InfluxQL, whose statements may name other databases.
    InfluxQl(String),
    /// A Flight SQL command, run against the ticket's database.
    FlightSql,
}

/// A decoded ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// Decodes a DoGet ticket (the `ticket` bytes of the Flight `Ticket`).
pub fn decode(ticket: &[u8]) -> Result<Ticket, TicketError> {
    let any = lenient_any(ticket);
    let raw = lenient_read_info(ticket);
    let json = json(ticket);

    let chosen = if let Some(value) = &any {
        // A recognised Any: its value must be a valid ReadInfo; no fallback.
        if has_group(ticket) || has_group(value) {
            return Err(invalid("malformed Any-wrapped ReadInfo"));
        }
        let info = ReadInfo::decode(value.as_slice())
            .map_err(|_| invalid("the Any-wrapped value is not a ReadInfo"))?;
        from_read_info(Form::Any, info)?
    } else if let Some(info) = raw.clone().filter(|_| !has_group(ticket)) {
        from_read_info(Form::ReadInfo, info)?
    } else {
        match &json {
            Some(parsed) => parsed.clone()?,
            None => return Err(TicketError::Opaque),
        }
    };

    // Every other reading that yields a database is a conflict.
    let json_database = matches!(&json, Some(Ok(_)));
    let any_database = any
        .as_deref()
        .and_then(|v| ReadInfo::decode(v).ok())
        .is_some_and(|i| !i.database.is_empty());
    let raw_database = raw.is_some();
    let conflict = match chosen.form {
        Form::Any => json_database,
        Form::ReadInfo => json_database,
        Form::Json => any_database || raw_database,
    };
    if conflict {
        return Err(invalid(
            "the ticket reads both as protobuf and as JSON; refusing the ambiguity",
        ));
    }
    Ok(chosen)
}

/// The value of `ticket` read leniently as an Any with the ReadInfo type URL.
fn lenient_any(ticket: &[u8]) -> Option<Vec<u8>> {
    prost_types::Any::decode(ticket)
        .ok()
        .filter(|any| any.type_url == READ_INFO_TYPE_URL)
        .map(|any| any.value)
}

/// `ticket` read leniently as a raw ReadInfo naming a database.
fn lenient_read_info(ticket: &[u8]) -> Option<ReadInfo> {
    ReadInfo::decode(ticket)
        .ok()
        .filter(|info| !info.database.is_empty())
}

fn from_read_info(form: Form, info: ReadInfo) -> Result<Ticket, TicketError> {
    if info.database.is_empty() {
        return Err(invalid("the ReadInfo names no database"));
    }
    let query = match info.query_type {
        query_type::UNSPECIFIED | query_type::SQL => Query::Sql,
        query_type::INFLUX_QL => Query::InfluxQl(info.sql_query),
        query_type::FLIGHT_SQL_MESSAGE => Query::FlightSql,
        // InfluxDB would run an unknown type as SQL; a newer server might
        // not, and the proxy must not guess what it would read.
        other => return Err(invalid(format!("unknown query_type {other}"))),
    };
    Ok(Ticket {
        form,
        database: info.database,
        query,
    })
}

/// True when a top-level field of `message` is a group (or the bytes are not
/// protobuf at all). No field of these proto3 messages is a group, and a
/// JSON `{` reads as the start of group 15.
fn has_group(mut message: &[u8]) -> bool {
    while message.has_remaining() {
        let Ok(key) = prost::encoding::decode_varint(&mut message) else {
            return true;
        };
        let skip = match key & 7 {
            0 => match prost::encoding::decode_varint(&mut message) {
                Ok(_) => 0,
                Err(_) => return true,
            },
            1 => 8,
            2 => match prost::encoding::decode_varint(&mut message)
                .ok()
                .and_then(|l| usize::try_from(l).ok())
            {
                Some(len) => len,
                None => return true,
            },
            5 => 4,
            _ => return true,
        };
        if skip > message.remaining() {
            return true;
        }
        message.advance(skip);
    }
    false
}

/// The JSON form. The keys are those InfluxDB 3 reads; a duplicated key is
/// an error (as in InfluxDB), so no two parsers can pick different values.
#[derive(serde::Deserialize)]
struct JsonTicket {
    database: Option<String>,
    namespace_name: Option<String>,
    bucket: Option<String>,
    #[serde(rename = "bucket-name")]
    bucket_name: Option<String>,
    sql_query: Option<String>,
    query_type: Option<String>,
}

/// `None` when `ticket` is not a JSON object naming a database (an opaque
/// ticket); otherwise the decoded ticket or why it is invalid.
fn json(ticket: &[u8]) -> Option<Result<Ticket, TicketError>> {
    let value: serde_json::Value = serde_json::from_slice(ticket).ok()?;
    let object = value.as_object()?;
    if !["database", "namespace_name", "bucket", "bucket-name"]
        .iter()
        .any(|k| object.contains_key(*k))
    {
        return None;
    }
    Some(json_ticket(ticket))
}

fn json_ticket(ticket: &[u8]) -> Result<Ticket, TicketError> {
    let parsed: JsonTicket =
        serde_json::from_slice(ticket).map_err(|e| invalid(format!("JSON ticket: {e}")))?;
    let names: Vec<String> = [
        parsed.database,
        parsed.namespace_name,
        parsed.bucket,
        parsed.bucket_name,
    ]
    .into_iter()
    .flatten()
    .collect();
    let Some(database) = names.first().cloned() else {
        return Err(invalid("JSON ticket names no database"));
    };
    if names.iter().any(|n| *n != database) {
        return Err(invalid("JSON ticket names more than one database"));
    }
    if database.is_empty() {
        return Err(invalid("JSON ticket names an empty database"));
    }
    let query = match parsed.query_type.as_deref() {
        None | Some("sql") => Query::Sql,
        Some("influxql") => Query::InfluxQl(
            parsed
                .sql_query
                .ok_or_else(|| invalid("JSON ticket has no sql_query"))?,
        ),
        // InfluxDB refuses other types too; refusing here means the proxy
        // never has to guess what "InfluxQL" or "flightsql" would run.
        Some(other) => return Err(invalid(format!("unknown query_type {other:?}"))),
    };
    Ok(Ticket {
        form: Form::Json,
        database,
        query,
    })
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
    fn three_forms() {
        let info = read_info("mydb", "SELECT 1", query_type::SQL);
        let t = decode(&any(&info)).unwrap();
        assert_eq!(
            (t.form, t.database.as_str(), t.query),
            (Form::Any, "mydb", Query::Sql)
        );

        let t = decode(&info.encode_to_vec()).unwrap();
        assert_eq!((t.form, t.database.as_str()), (Form::ReadInfo, "mydb"));

        let t = decode(
            br#"{"database": "mydb", "sql_query": "SHOW MEASUREMENTS", "query_type": "influxql"}"#,
        )
        .unwrap();
        assert_eq!(t.form, Form::Json);
        assert_eq!(t.query, Query::InfluxQl("SHOW MEASUREMENTS".into()));
        for key in ["namespace_name", "bucket", "bucket-name"] {
            let json = format!(r#"{{"{key}": "b", "sql_query": "SELECT 1"}}"#);
            assert_eq!(decode(json.as_bytes()).unwrap().database, "b");
        }
        let t = decode(&read_info("db", "SHOW DATABASES", query_type::INFLUX_QL).encode_to_vec())
            .unwrap();
        assert_eq!(t.query, Query::InfluxQl("SHOW DATABASES".into()));
    }

    #[test]
    fn influxdb3_python_tickets_are_json() {
        // What influxdb3-python sends (json.dumps), with parameters.
        let ticket = br#"{"database": "my-db", "sql_query": "SELECT * FROM cpu WHERE host = $host", "query_type": "sql", "params": {"host": "a"}}"#;
        let t = decode(ticket).unwrap();
        assert_eq!((t.form, t.database.as_str()), (Form::Json, "my-db"));
    }

    #[test]
    fn invalid_and_opaque() {
        assert_eq!(decode(b""), Err(TicketError::Opaque));
        assert_eq!(decode(b"opaque-handle-17"), Err(TicketError::Opaque));
        assert_eq!(decode(b"\xff\xfe\x00garbage"), Err(TicketError::Opaque));
        assert_eq!(decode(br#"{"handle": "x"}"#), Err(TicketError::Opaque));
        for bad in [
            r#"{"database": "a", "bucket": "b", "sql_query": "x"}"#,
            r#"{"database": "a", "database": "b", "sql_query": "x"}"#,
            r#"{"database": "", "sql_query": "x"}"#,
            r#"{"database": 7, "sql_query": "x"}"#,
            r#"{"database": "a", "sql_query": "x", "query_type": "InfluxQL"}"#,
            r#"{"database": "a", "query_type": "influxql"}"#,
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
        // is then the type URL (harmless: no such database is granted).
        let other = prost_types::Any {
            type_url: "type.googleapis.com/x.Y".into(),
            value: vec![],
        }
        .encode_to_vec();
        assert_eq!(decode(&other).unwrap().database, "type.googleapis.com/x.Y");
    }

    #[test]
    fn protobuf_with_a_group_is_not_read_info() {
        // Field 1 = "a", then group 15 (start 0x7b, end 0x7c): prost skips
        // the group; the strict reading refuses it.
        let bytes = [0x0a, 0x01, b'a', 0x7b, 0x7c];
        assert!(ReadInfo::decode(&bytes[..]).is_ok());
        assert_eq!(decode(&bytes), Err(TicketError::Opaque));
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

    fn assert_both_readings(bytes: &[u8]) {
        let json: serde_json::Value = serde_json::from_slice(bytes).unwrap();
        assert_eq!(json["database"], "mine");
        let info = ReadInfo::decode(bytes).unwrap();
        assert!(info.database.starts_with(" {\"database\""));
    }

    #[test]
    fn json_that_is_also_protobuf_is_refused() {
        // Strict protobuf matches (no group): field 4 skips 40 bytes of the
        // string, `}` is field 15 fixed32 over four trailing spaces.
        let mut b = polyglot_prefix();
        b.extend_from_slice(b"\"(");
        b.extend_from_slice(&[b'x'; 39]);
        b.extend_from_slice(b"\"}    ");
        assert_both_readings(&b);
        assert!(!has_group(&b));
        assert!(matches!(decode(&b), Err(TicketError::Invalid(_))));

        // With an (empty) group in the string, strict protobuf does not
        // match, JSON is chosen, and the lenient protobuf reading conflicts.
        let mut b = polyglot_prefix();
        b.extend_from_slice(b"\"!");
        b.extend_from_slice(&[b'x'; 33]);
        b.extend_from_slice(b"{|2 ");
        b.extend_from_slice(&[b'y'; 30]);
        b.extend_from_slice(b"\"}");
        assert_both_readings(&b);
        assert!(has_group(&b));
        assert!(matches!(decode(&b), Err(TicketError::Invalid(_))));
    }
}
