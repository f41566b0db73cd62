//! Flight SQL commands as InfluxDB 3 reads them (`core/flightsql/src/cmd.rs`,
//! `FlightSQLCommand::try_decode`): in a `GetFlightInfo` descriptor and in
//! a DoGet ticket's `flightsql_command`. Two of them run SQL text — a
//! statement query, and a prepared statement whose handle carries the
//! query (IOx keeps no server-side state: the handle *is* the query, so a
//! caller can write one without ever preparing it). Their SQL is what
//! [`crate::proxy::classify::sql`] decides on; the rest only list the
//! database's own catalog.
//!
//! A command is decoded in InfluxDB's order with the same prost (lenient:
//! unknown fields skipped), and forwarded re-encoded from what was decoded
//! ([`Command::canonical`]). A type InfluxDB does not run as a query is
//! refused.

use bytes::Bytes;
use prost::Message as _;

/// The `type_url` prefix of Flight SQL messages.
const FLIGHT_SQL_TYPE_PREFIX: &str = "type.googleapis.com/arrow.flight.protocol.sql.";

/// `type_url` of InfluxDB's prepared statement handle.
pub const HANDLE_TYPE_URL: &str =
    "type.googleapis.com/influxdata.iox.querier.v1.FlightSqlPreparedStatementHandle";

/// Flight SQL commands that only read the database's catalog (schemas,
/// tables, keys, types, server info): no SQL text.
const CATALOG_COMMANDS: [&str; 10] = [
    "CommandGetSqlInfo",
    "CommandGetCatalogs",
    "CommandGetCrossReference",
    "CommandGetDbSchemas",
    "CommandGetExportedKeys",
    "CommandGetImportedKeys",
    "CommandGetPrimaryKeys",
    "CommandGetTables",
    "CommandGetTableTypes",
    "CommandGetXdbcTypeInfo",
];

/// `arrow.flight.protocol.sql.CommandStatementQuery`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommandStatementQuery {
    /// The SQL.
    #[prost(string, tag = "1")]
    pub query: String,
    /// A transaction (InfluxDB has none; kept as sent).
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub transaction_id: Option<Bytes>,
}

/// `arrow.flight.protocol.sql.CommandPreparedStatementQuery`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CommandPreparedStatementQuery {
    /// The handle: for InfluxDB, a [`PreparedStatementHandle`].
    #[prost(bytes = "bytes", tag = "1")]
    pub prepared_statement_handle: Bytes,
}

/// `influxdata.iox.querier.v1.FlightSqlPreparedStatementHandle`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreparedStatementHandle {
    /// The SQL.
    #[prost(string, tag = "1")]
    pub query: String,
    /// Bound parameter values (Arrow IPC): values, never names.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub params: Option<Bytes>,
}

/// A decoded Flight SQL command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A statement query.
    Statement(CommandStatementQuery),
    /// A prepared statement, its handle decoded (InfluxDB also reads a
    /// handle that is not an Any as the raw UTF-8 query; it is forwarded
    /// in the Any form, which InfluxDB reads the same).
    Prepared(PreparedStatementHandle),
    /// A catalog listing: its `type_url`, and its message forwarded as is
    /// (nothing in it names another database or runs a query).
    Catalog { type_url: String, value: Bytes },
}

/// Why a command is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Flight SQL command: {0}")]
pub struct CommandError(String);

fn refuse(message: impl Into<String>) -> CommandError {
    CommandError(message.into())
}

impl Command {
    /// Decodes an encoded Flight SQL command (a protobuf `Any`).
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        let any = prost_types::Any::decode(bytes).map_err(|_| refuse("not a protobuf Any"))?;
        let Some(name) = any.type_url.strip_prefix(FLIGHT_SQL_TYPE_PREFIX) else {
            return Err(refuse(format!("unknown type {:?}", any.type_url)));
        };
        match name {
            "CommandStatementQuery" => CommandStatementQuery::decode(any.value.as_slice())
                .map(Command::Statement)
                .map_err(|_| refuse("invalid CommandStatementQuery")),
            "CommandPreparedStatementQuery" => {
                let command = CommandPreparedStatementQuery::decode(any.value.as_slice())
                    .map_err(|_| refuse("invalid CommandPreparedStatementQuery"))?;
                decode_handle(&command.prepared_statement_handle).map(Command::Prepared)
            }
            catalog if CATALOG_COMMANDS.contains(&catalog) => Ok(Command::Catalog {
                type_url: any.type_url.clone(),
                value: Bytes::from(any.value),
            }),
            other => Err(refuse(format!("{other} is not a query"))),
        }
    }

    /// The SQL the command runs, if any.
    pub fn sql(&self) -> Option<&str> {
        match self {
            Command::Statement(statement) => Some(&statement.query),
            Command::Prepared(handle) => Some(&handle.query),
            Command::Catalog { .. } => None,
        }
    }

    /// The command encoded from what was decoded.
    pub fn canonical(&self) -> Vec<u8> {
        let (type_url, value) = match self {
            Command::Statement(statement) => (
                format!("{FLIGHT_SQL_TYPE_PREFIX}CommandStatementQuery"),
                statement.encode_to_vec(),
            ),
            Command::Prepared(handle) => (
                format!("{FLIGHT_SQL_TYPE_PREFIX}CommandPreparedStatementQuery"),
                CommandPreparedStatementQuery {
                    prepared_statement_handle: Bytes::from(
                        prost_types::Any {
                            type_url: HANDLE_TYPE_URL.to_owned(),
                            value: handle.encode_to_vec(),
                        }
                        .encode_to_vec(),
                    ),
                }
                .encode_to_vec(),
            ),
            Command::Catalog { type_url, value } => (type_url.clone(), value.to_vec()),
        };
        prost_types::Any { type_url, value }.encode_to_vec()
    }
}

/// A prepared statement handle, read as InfluxDB reads it: an Any of
/// [`HANDLE_TYPE_URL`] (any other type is an error), or — only when the
/// bytes are not an Any at all — the query as raw UTF-8.
fn decode_handle(handle: &[u8]) -> Result<PreparedStatementHandle, CommandError> {
    match prost_types::Any::decode(handle) {
        Ok(any) if any.type_url == HANDLE_TYPE_URL => {
            PreparedStatementHandle::decode(any.value.as_slice())
                .map_err(|_| refuse("invalid prepared statement handle"))
        }
        Ok(any) => Err(refuse(format!(
            "unknown prepared statement handle type {:?}",
            any.type_url
        ))),
        Err(_) => String::from_utf8(handle.to_vec())
            .map(|query| PreparedStatementHandle {
                query,
                params: None,
            })
            .map_err(|_| refuse("the prepared statement handle is neither an Any nor UTF-8")),
    }
}

/// `arrow.flight.protocol.FlightDescriptor`, the `GetFlightInfo` request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlightDescriptor {
    /// `UNKNOWN = 0`, `PATH = 1`, `CMD = 2`.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// The command, for `CMD`.
    #[prost(bytes = "bytes", tag = "2")]
    pub cmd: Bytes,
    /// The path, for `PATH`.
    #[prost(string, repeated, tag = "3")]
    pub path: Vec<String>,
}

const DESCRIPTOR_PATH: i32 = 1;
const DESCRIPTOR_CMD: i32 = 2;

/// A decoded `GetFlightInfo` descriptor: a command (all InfluxDB reads),
/// or a path (which InfluxDB refuses; other Flight servers name datasets
/// with one, and it runs no query).
#[derive(Debug, Clone, PartialEq)]
pub enum Descriptor {
    /// `CMD`: a Flight SQL command.
    Command(Command),
    /// `PATH`.
    Path(Vec<String>),
}

impl Descriptor {
    /// Decodes an encoded `FlightDescriptor`.
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        let descriptor = FlightDescriptor::decode(bytes)
            .map_err(|_| refuse("the GetFlightInfo message is not a FlightDescriptor"))?;
        match descriptor.r#type {
            DESCRIPTOR_CMD => Command::decode(&descriptor.cmd).map(Descriptor::Command),
            DESCRIPTOR_PATH => Ok(Descriptor::Path(descriptor.path)),
            other => Err(refuse(format!("unknown descriptor type {other}"))),
        }
    }

    /// The descriptor encoded from what was decoded.
    pub fn canonical(&self) -> Vec<u8> {
        match self {
            Descriptor::Command(command) => FlightDescriptor {
                r#type: DESCRIPTOR_CMD,
                cmd: Bytes::from(command.canonical()),
                path: Vec::new(),
            },
            Descriptor::Path(path) => FlightDescriptor {
                r#type: DESCRIPTOR_PATH,
                cmd: Bytes::new(),
                path: path.clone(),
            },
        }
        .encode_to_vec()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Vec<u8> {
        prost_types::Any {
            type_url: type_url.to_owned(),
            value,
        }
        .encode_to_vec()
    }

    fn statement(sql: &str) -> Vec<u8> {
        any(
            &format!("{FLIGHT_SQL_TYPE_PREFIX}CommandStatementQuery"),
            CommandStatementQuery {
                query: sql.to_owned(),
                transaction_id: None,
            }
            .encode_to_vec(),
        )
    }

    fn prepared(handle: Vec<u8>) -> Vec<u8> {
        any(
            &format!("{FLIGHT_SQL_TYPE_PREFIX}CommandPreparedStatementQuery"),
            CommandPreparedStatementQuery {
                prepared_statement_handle: Bytes::from(handle),
            }
            .encode_to_vec(),
        )
    }

    #[test]
    fn statements_and_prepared_statements_carry_their_sql() {
        let c = Command::decode(&statement("SELECT 1")).unwrap();
        assert_eq!(c.sql(), Some("SELECT 1"));
        assert_eq!(c.canonical(), statement("SELECT 1"));

        let handle = any(
            HANDLE_TYPE_URL,
            PreparedStatementHandle {
                query: "SELECT * FROM system.queries".into(),
                params: None,
            }
            .encode_to_vec(),
        );
        let c = Command::decode(&prepared(handle.clone())).unwrap();
        assert_eq!(c.sql(), Some("SELECT * FROM system.queries"));
        assert_eq!(c.canonical(), prepared(handle.clone()));

        // The legacy raw form, forwarded as the Any form.
        let c = Command::decode(&prepared(b"SELECT * FROM system.queries".to_vec())).unwrap();
        assert_eq!(c.sql(), Some("SELECT * FROM system.queries"));
        assert_eq!(c.canonical(), prepared(handle));
    }

    #[test]
    fn catalog_commands_pass_and_anything_else_is_refused() {
        let tables = any(&format!("{FLIGHT_SQL_TYPE_PREFIX}CommandGetTables"), vec![]);
        let c = Command::decode(&tables).unwrap();
        assert_eq!(c.sql(), None);
        assert_eq!(c.canonical(), tables);
        for refused in [
            b"SELECT 1".to_vec(),
            any("type.googleapis.com/other.Command", vec![]),
            any(
                &format!("{FLIGHT_SQL_TYPE_PREFIX}ActionCreatePreparedStatementRequest"),
                vec![],
            ),
            prepared(any("type.googleapis.com/other.Handle", vec![])),
            prepared(vec![0xff, 0xfe]),
        ] {
            assert!(Command::decode(&refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn descriptors() {
        let cmd = FlightDescriptor {
            r#type: DESCRIPTOR_CMD,
            cmd: Bytes::from(statement("SELECT 1")),
            path: vec!["ignored".into()],
        };
        let d = Descriptor::decode(&cmd.encode_to_vec()).unwrap();
        assert_eq!(
            d,
            Descriptor::Command(Command::decode(&statement("SELECT 1")).unwrap())
        );
        let again = Descriptor::decode(&d.canonical()).unwrap();
        assert_eq!(again, d);
        let path = FlightDescriptor {
            r#type: DESCRIPTOR_PATH,
            cmd: Bytes::from_static(b"ignored"),
            path: vec!["x".into()],
        };
        assert_eq!(
            Descriptor::decode(&path.encode_to_vec()).unwrap(),
            Descriptor::Path(vec!["x".into()])
        );
        for refused in [
            FlightDescriptor {
                r#type: 0,
                cmd: Bytes::from(statement("SELECT 1")),
                path: vec![],
            },
            FlightDescriptor {
                r#type: DESCRIPTOR_CMD,
                cmd: Bytes::from_static(b"SELECT 1"),
                path: vec![],
            },
        ] {
            assert!(Descriptor::decode(&refused.encode_to_vec()).is_err());
        }
    }
}
