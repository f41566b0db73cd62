//! InfluxDB 3 SQL: what a query needs beyond its database.
//!
//! InfluxDB 3 plans SQL against one database's catalog, so a query reads
//! that database only — except for its `system` schema, where two tables
//! are the whole server's, whatever database the query runs against
//! (`influxdb3_system_tables`, `AllSystemSchemaTablesProvider::new`):
//! `system.queries` (the one query log: every query's text, literals
//! included) and `system.processing_engine_logs` (every plugin's log). The
//! `_internal` database's `system.tokens` lists the database's own tokens.
//!
//! The proxy does not plan SQL; it reads the query's tokens with the SQL
//! tokenizer DataFusion uses (`sqlparser`, the version InfluxDB 3 builds
//! with, its generic dialect, DataFusion's default) and looks for the word
//! `system` (any case, quoted or not, or a string `'system'`, which the
//! parser takes for a name too) followed by a period: a reference to
//! the system schema in any position — a table, a column, a three-part
//! `catalog.system.table` name. The word after the period is the table:
//!
//! - the per-database tables ([`DATABASE_SYSTEM_TABLES`]) need nothing more;
//! - `tokens` is refused to every token: the upstream's credentials are not
//!   the proxy's to show;
//! - anything else (`queries`, `processing_engine_logs`, a name spelled so
//!   that only the database knows what it means) needs read on every
//!   database (`*`).
//!
//! Comments and string literals are the tokenizer's, as they are the
//! database's (an operator who sets another `datafusion.sql_parser.dialect`
//! on InfluxDB 3 should know this reads the generic one). Beyond that the
//! reading errs on the side of more: `system.` in any position counts, a
//! name after it that is not one of the per-database tables needs `*`, and
//! SQL the tokenizer cannot read is refused when it holds the letters
//! `system` (SQL without them is not tokenized at all: [`mentions_system`]).

use sqlparser::dialect::GenericDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::Plan;
use crate::authz::Need;
use crate::proto::ALL_DATABASES;
use crate::proxy::reject::Rejection;

/// System tables that show only the database the query runs against.
pub const DATABASE_SYSTEM_TABLES: [&str; 6] = [
    "last_caches",
    "distinct_caches",
    "parquet_files",
    "processing_engine_triggers",
    "processing_engine_trigger_arguments",
    "influxdb_schema",
];

/// The system table no token may read through the proxy.
const REFUSED_SYSTEM_TABLE: &str = "tokens";

/// What SQL `sql` run against `database` needs.
pub fn sql_plan(database: &str, sql: &str) -> Result<Plan, Rejection> {
    let mut needs = vec![Need::read(database)];
    for table in system_tables(sql)? {
        if DATABASE_SYSTEM_TABLES.contains(&table.as_str()) {
            continue;
        }
        if table == REFUSED_SYSTEM_TABLE {
            return Ok(Plan::Refused(
                "system.tokens lists the database's own credentials and is not readable through the proxy".to_owned(),
            ));
        }
        let all = Need::read(ALL_DATABASES);
        if !needs.contains(&all) {
            needs.push(all);
        }
    }
    Ok(Plan::Needs(needs))
}

/// The (lowercased) names that follow `system.` in `sql`. A name that is
/// not a plain word (a number, a string, nothing) is returned as written
/// after the period, which is never a per-database table's name.
fn system_tables(sql: &str) -> Result<Vec<String>, Rejection> {
    if !mentions_system(sql) {
        return Ok(Vec::new());
    }
    tokenized_system_tables(sql)
}

/// [`system_tables`], read by the tokenizer.
fn tokenized_system_tables(sql: &str) -> Result<Vec<String>, Rejection> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql)
        .tokenize()
        .map_err(|e| Rejection::BadRequest(format!("the SQL query cannot be read: {e}")))?;
    let mut words = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .peekable();
    let mut tables = Vec::new();
    while let Some(token) = words.next() {
        if name(token).is_none_or(|name| name.to_lowercase() != "system") {
            continue;
        }
        match words.peek() {
            Some(Token::Period) => {
                words.next();
                tables.push(match words.peek() {
                    Some(table) => match name(table) {
                        Some(table) => table.to_lowercase(),
                        None => table.to_string(),
                    },
                    None => String::new(),
                });
            }
            // `system.1` and the like: the tokenizer reads a number.
            Some(Token::Number(n, _)) if n.starts_with('.') => tables.push(n.clone()),
            _ => {}
        }
    }
    Ok(tables)
}

/// The name a token stands for where sqlparser reads an identifier
/// (`Parser::parse_identifier`): a word, bare or quoted, and also a string
/// in quotes (`FROM 'system'.'queries'` names that table, and DataFusion
/// keeps a quoted name as written). Escape strings (`E'\x73ystem'`) and
/// Unicode strings (`U&'\0073ystem'`), which the generic dialect unescapes,
/// are not identifiers to sqlparser 0.59; they count as names all the same,
/// so that a parser that one day takes them cannot reach a system table
/// unseen.
fn name(token: &Token) -> Option<&str> {
    match token {
        Token::Word(word) => Some(&word.value),
        Token::SingleQuotedString(name)
        | Token::DoubleQuotedString(name)
        | Token::EscapedStringLiteral(name)
        | Token::UnicodeStringLiteral(name) => Some(name),
        _ => None,
    }
}

/// False when no name of `sql` ([`name`]) can be `system` whatever the
/// tokenizer makes of it, so that ordinary queries are not tokenized at
/// all (the tokenizer's keyword lookups were a tenth of the proxy's CPU on
/// SQL). Exact:
/// - bare words are runs of the text, and quoted names and plain strings
///   the text between quotes with doubled quotes undoubled; no character
///   but the ASCII letters lowercases to any of `s`, `y`, `t`, `e`, `m`,
///   so such a name that lowercases to `system` has those six letters side
///   by side in the text, in some case;
/// - escape and Unicode strings, whose escapes can spell the word without
///   its letters, open with `E'` or `U&'`: SQL with `e'`, `E'` or `&'`
///   anywhere is always tokenized.
///
/// SQL without either is forwarded even when the tokenizer could not read
/// it: it names no system table either way, and the database answers its
/// own syntax errors.
fn mentions_system(sql: &str) -> bool {
    let bytes = sql.as_bytes();
    bytes.windows(6).any(|w| w.eq_ignore_ascii_case(b"system"))
        || bytes
            .windows(2)
            .any(|w| matches!(w, [b'e' | b'E' | b'&', b'\'']))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn needs(sql: &str) -> Vec<Need> {
        match sql_plan("x", sql).unwrap() {
            Plan::Needs(needs) => needs,
            other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn server_wide_system_tables_need_every_database() {
        let all = vec![Need::read("x"), Need::read("*")];
        for sql in [
            "SELECT query_text FROM system.queries",
            "select * from SYSTEM.QUERIES",
            "SELECT * FROM \"system\".\"queries\" WHERE query_text LIKE '%secret%'",
            "SELECT * FROM system.processing_engine_logs",
            "SELECT 1 AS a UNION ALL SELECT count(*) FROM system . queries",
            "SELECT * FROM system/* c */./* d */queries",
            "SELECT * FROM system\n--\n.queries",
            "SELECT * FROM public.system.queries",
            "SELECT * FROM `system`.`queries`",
            "SELECT * FROM system.\"Queries\"",
            "SELECT * FROM system.\"queries \"",
            "SELECT * FROM t WHERE x IN (SELECT 1 FROM system.queries)",
            "WITH q AS (SELECT * FROM system.queries) SELECT * FROM q",
            "SELECT * FROM system.1",
            "SELECT * FROM system.",
            // A string in quotes is a name where an identifier is expected.
            "SELECT * FROM 'system'.queries",
            "SELECT * FROM 'SYSTEM'.'queries'",
            "SELECT * FROM system.'processing_engine_logs'",
            // Escapes spell the word without its letters.
            "SELECT * FROM E'\\x73ystem'.queries",
            "SELECT * FROM U&'\\0073ystem'.queries",
        ] {
            assert_eq!(needs(sql), all, "{sql}");
        }
    }

    #[test]
    fn ordinary_sql_and_per_database_system_tables_need_the_database() {
        for sql in [
            "SELECT 1",
            "SELECT * FROM cpu WHERE host = 'system'",
            "SELECT system FROM cpu",
            "SELECT * FROM system.last_caches",
            "SELECT * FROM SYSTEM.Parquet_Files",
            "SELECT * FROM 'system'.'last_caches'",
            "SELECT * FROM system.influxdb_schema",
            "SELECT * FROM systems.queries",
            // Comments and literals are the same tokens to the database.
            "SELECT 1 -- system.queries",
            "SELECT 'system.queries'",
            "SELECT 1 /* system.queries */",
        ] {
            assert_eq!(needs(sql), vec![Need::read("x")], "{sql}");
        }
    }

    #[test]
    fn the_upstreams_tokens_are_refused() {
        for sql in [
            "SELECT * FROM system.tokens",
            "SELECT * FROM SYSTEM.\"tokens\"",
            "SELECT * FROM system.queries, system.tokens",
            "SELECT * FROM 'system'.tokens",
            "SELECT * FROM system.'tokens'",
            "SELECT * FROM 'System'.'Tokens'",
            "SELECT * FROM E'\\163ystem'.tokens",
        ] {
            assert!(
                matches!(sql_plan("_internal", sql), Ok(Plan::Refused(_))),
                "{sql}"
            );
        }
    }

    #[test]
    fn unreadable_sql_is_refused() {
        for sql in [
            "SELECT 'unterminated FROM system.queries",
            "SELECT \"x FROM system.queries",
            "SELECT * FROM system.queries /* open",
            "SELECT 'unterminated FROM SyStEm.queries",
        ] {
            assert!(
                matches!(sql_plan("x", sql), Err(Rejection::BadRequest(_))),
                "{sql}"
            );
        }
    }

    #[test]
    fn sql_that_cannot_name_a_system_table_is_not_tokenized() {
        // Unreadable, and without the word: the database's error to give.
        for sql in ["SELECT 'unterminated", "SELECT \"x", "SELECT /* open"] {
            assert_eq!(needs(sql), vec![Need::read("x")], "{sql}");
        }
        // Every spelling the tokenizer reads as `system` has the letters
        // side by side; one split by anything is not that word.
        for sql in [
            "SELECT * FROM sys/* */tem.queries",
            "SELECT * FROM \"sys\"\"tem\".queries",
            "SELECT * FROM sys tem.queries",
            "SELECT * FROM \u{17f}ystem.queries",
        ] {
            assert!(!mentions_system(sql), "{sql}");
        }
        assert!(mentions_system("SELECT * FROM \"SYSTEM\".queries"));
        assert!(mentions_system("SELECT * FROM `sYsTeM`.queries"));
    }

    proptest::proptest! {
        /// Whatever the tokenizer reads as a system table reference, the
        /// shortcut sees too.
        #[test]
        fn the_shortcut_misses_nothing_the_tokenizer_reads(
            pieces in proptest::collection::vec(proptest::sample::select(vec![
                "sys", "tem", "SYS", "TEM", "Sys", "tEm", "system", "SYSTEM", "SyStEm",
                ".", ".queries", "\"", "\"\"", "`", "[", "]", "'", "/*", "*/", "--", "\n",
                " ", "s", "m", "\u{17f}", "\u{212a}", "E", "U&", "\\", "$$", "1",
                "\\x73", "\\163", "\\0073", "ystem", "e'", "U&'",
            ]), 1..9)
        ) {
            let sql = pieces.concat();
            if tokenized_system_tables(&sql).is_ok_and(|tables| !tables.is_empty()) {
                proptest::prop_assert!(mentions_system(&sql), "{sql:?}");
            }
        }
    }
}
