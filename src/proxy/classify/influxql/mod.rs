//! InfluxQL statement classifier: decides which databases every statement of
//! an InfluxQL query reads or writes, or that it is an admin statement.
//!
//! This is a recursive-descent recogniser that follows the grammar of
//! `influxdata/influxql` closely, because the token-level questions (is this
//! `/` a regex or a division, where does a string end) can only be answered
//! the way InfluxDB answers them by knowing the syntactic position. The
//! guiding rule: for every query InfluxDB accepts, the reported databases must
//! include every database it touches. Where we accept more than InfluxDB
//! (whitespace or comments it would reject), InfluxDB rejects the whole
//! request before running anything, so that leniency is harmless. Anything we
//! cannot follow is an error and the proxy refuses the request. InfluxDB 3's
//! parser (`influxdb_influxql_parser`) draws the same boundaries for strings,
//! identifiers, regexes and comments; where it is laxer (`\r` in literals),
//! this module refuses.

mod keywords;
mod lexer;
mod parser;

use crate::authz::Action;

use lexer::Tok;
use parser::{Parser, unexpected};

/// A database a statement names. `Default` = the request's `db` parameter (no database written in the statement).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DbRef {
    Default,
    Named(String),
}

impl DbRef {
    /// InfluxDB fills an empty database name with the request's default
    /// database, so `""..m` means the same as `m`.
    fn from_name(name: Option<&str>) -> Self {
        match name {
            Some(db) if !db.is_empty() => DbRef::Named(db.to_owned()),
            _ => DbRef::Default,
        }
    }
}

/// A database a statement names, with the retention policy it names with it
/// (if any), and whether it writes there. InfluxDB 3 reads a database and a
/// retention policy other than `autogen` or `default` as the database
/// `db/rp` (`iox_query_influxql_rewrite` `resolve_dbrp`), so such a pair
/// needs that database too.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scoped {
    pub database: String,
    pub policy: Option<String>,
    pub write: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// SELECT / EXPLAIN [ANALYZE] SELECT / SHOW <per-database thing>: read on every db in `reads`, write on every db in `writes` (SELECT ... INTO targets).
    Data {
        reads: Vec<DbRef>,
        writes: Vec<DbRef>,
        /// Every database named explicitly, with its retention policy.
        scoped: Vec<Scoped>,
    },
    /// `SHOW DATABASES` (the proxy filters the answer).
    ShowDatabases,
    /// An administrative statement (`what`: "CREATE DATABASE", "DROP
    /// MEASUREMENT", …) and every (database, action) it needs: CREATE or
    /// DELETE for changes, READ_SCHEMA for listings, plus what a continuous
    /// query's SELECT reads and writes. `*` stands for every database.
    Admin {
        what: String,
        needs: Vec<(DbRef, Action)>,
    },
    /// A statement no token may run through the proxy (users, privileges,
    /// query management, subscriptions, server statistics), and why.
    Refused { what: String, why: &'static str },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("empty query")]
    Empty,
    #[error("unterminated string literal")]
    UnterminatedString,
    #[error("unterminated quoted identifier")]
    UnterminatedIdent,
    #[error("unterminated regex literal")]
    UnterminatedRegex,
    #[error("unterminated block comment")]
    UnterminatedComment,
    #[error("invalid escape sequence: backslash followed by {0:?}")]
    BadEscape(char),
    #[error("unexpected character {0:?}")]
    IllegalChar(char),
    #[error("identifier immediately followed by a double quote")]
    QuoteAfterWord,
    #[error("unexpected {found}, expected {expected}")]
    Unexpected {
        found: String,
        expected: &'static str,
    },
    #[error("unsupported statement: {0}")]
    Unsupported(String),
    #[error("SELECT requires a FROM clause")]
    MissingFrom,
    #[error("too many segments in dotted name")]
    TooManySegments,
    #[error("ON * (every database) is not allowed")]
    WildcardDatabase,
    #[error("query nests too deeply")]
    TooDeep,
}

/// Splits on `;` (outside quotes/comments/regexes) and classifies every non-empty statement.
pub fn parse_statements(query: &str) -> Result<Vec<Statement>, ScanError> {
    // InfluxDB's reader treats NUL as end of input, even inside a comment, so
    // text after it would be judged differently; refuse it outright.
    if query.contains('\0') {
        return Err(ScanError::IllegalChar('\0'));
    }
    let mut p = Parser::new(query);
    let mut out = Vec::new();
    loop {
        match p.peek()? {
            Tok::Eof => break,
            Tok::Semi => {
                p.bump()?;
                continue;
            }
            _ => {}
        }
        out.push(p.statement()?);
        match p.peek()? {
            Tok::Eof | Tok::Semi => {}
            other => return Err(unexpected(other, "';' or end of query")),
        }
    }
    if out.is_empty() {
        return Err(ScanError::Empty);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
