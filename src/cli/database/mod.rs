//! `fluxgate database create|list|update|delete`: database administration
//! in the style of `influxctl database …`, through the proxy (`--host`) with
//! a management token — never around it with the database's own credential.
//!
//! The proxy's upstream is InfluxDB 1.x (InfluxQL statements on `/query`)
//! or InfluxDB 3 (`/api/v3/configure/database`); which one is read from
//! `/ping` (`X-Influxdb-Version`) unless `--api` says. influxctl's flags map
//! onto each:
//!
//! | command | InfluxDB 1.x | InfluxDB 3 |
//! |---|---|---|
//! | `create [--retention-period D] NAME` | `CREATE DATABASE "NAME" [WITH DURATION D]` | `POST {"db", "retention_period"}` |
//! | `list` | `SHOW DATABASES`, then each one's default retention policy | `GET ?format=json` |
//! | `update --retention-period D NAME` | `ALTER RETENTION POLICY <default> ON "NAME" DURATION D` | `PUT {"db", "retention_period"}` (infinite: `DELETE …/retention_period`) |
//! | `delete NAME…` | `DROP DATABASE "NAME"` | `DELETE ?db=NAME` |
//!
//! Retention periods are whole numbers of `m`, `h`, `d`, `w`, `mo` (30
//! days) or `y` (365 days), combined (`1w2d`); `0` or `infinite` keeps data
//! forever. `--max-tables` and `--max-columns` are Cloud Dedicated limits
//! neither InfluxDB 1.x nor InfluxDB 3 Core has: they are refused.

mod host;
mod retention;

use std::io::IsTerminal as _;

use http::Method;
use serde_json::{Value, json};

use self::host::{Host, ident};
pub use self::retention::Retention;
use super::error::{CliError, ErrorKind};
use super::output;
use super::revoke;
use crate::config::commands::{ApiKind, DatabaseCommand, Format};

/// Runs one `fluxgate database …` command. Flags are checked before any
/// credential is looked up or anything is sent.
pub async fn run(command: DatabaseCommand) -> Result<(), CliError> {
    match command {
        DatabaseCommand::Create {
            conn,
            retention_period,
            max_tables,
            max_columns,
            format,
            name,
        } => {
            if max_tables.is_some() || max_columns.is_some() {
                return Err(CliError::usage(
                    "--max-tables and --max-columns are InfluxDB Cloud Dedicated limits; InfluxDB 1.x and InfluxDB 3 Core have none",
                ));
            }
            check_name(&name)?;
            let retention = retention_period
                .as_deref()
                .map(Retention::parse)
                .transpose()?;
            let host = Host::open(&conn).await?;
            match host.api {
                ApiKind::V1 => {
                    let with = match retention {
                        Some(r) => format!(" WITH DURATION {}", r.influxql()),
                        None => String::new(),
                    };
                    host.influxql(&format!("CREATE DATABASE {}{with}", ident(&name)))
                        .await?;
                }
                ApiKind::V3 => {
                    let mut body = json!({ "db": name });
                    if let Some(Retention::Seconds(s)) = retention {
                        body["retention_period"] = json!(format!("{s}s"));
                    }
                    host.v3(Method::POST, "/api/v3/configure/database", "", Some(body))
                        .await?;
                }
            }
            report(format, "created", &name, retention)
        }
        DatabaseCommand::List { conn, format } => {
            let host = Host::open(&conn).await?;
            let databases = host.list().await?;
            print_list(&databases, format)
        }
        DatabaseCommand::Update {
            conn,
            retention_period,
            format,
            name,
        } => {
            check_name(&name)?;
            let retention = Retention::parse(&retention_period)?;
            let host = Host::open(&conn).await?;
            match host.api {
                ApiKind::V1 => {
                    let policy = host.default_policy(&name).await?.ok_or_else(|| {
                        CliError::new(
                            ErrorKind::NotFound,
                            format!("database {name:?} has no default retention policy to update"),
                        )
                    })?;
                    host.influxql(&format!(
                        "ALTER RETENTION POLICY {} ON {} DURATION {}",
                        ident(&policy.name),
                        ident(&name),
                        retention.influxql()
                    ))
                    .await?;
                }
                ApiKind::V3 => match retention {
                    Retention::Seconds(s) => {
                        let body = json!({ "db": name, "retention_period": format!("{s}s") });
                        host.v3(Method::PUT, "/api/v3/configure/database", "", Some(body))
                            .await?;
                    }
                    Retention::Infinite => {
                        let query = form_urlencoded::Serializer::new(String::new())
                            .append_pair("db", &name)
                            .finish();
                        host.v3(
                            Method::DELETE,
                            "/api/v3/configure/database/retention_period",
                            &query,
                            None,
                        )
                        .await?;
                    }
                },
            }
            report(format, "updated", &name, Some(retention))
        }
        DatabaseCommand::Delete { conn, force, names } => {
            for name in &names {
                check_name(name)?;
            }
            if !force && !std::io::stdin().is_terminal() {
                return Err(CliError::usage(
                    "refusing to delete without confirmation: standard input is not a terminal; pass --force",
                ));
            }
            let host = Host::open(&conn).await?;
            let question = format!(
                "Delete {} database(s) {} and all their data?",
                names.len(),
                names.join(", ")
            );
            if !force && !revoke::ask(&question)? {
                return Err(CliError::other("cancelled: nothing was deleted"));
            }
            for name in &names {
                match host.api {
                    ApiKind::V1 => {
                        host.influxql(&format!("DROP DATABASE {}", ident(name)))
                            .await?;
                    }
                    ApiKind::V3 => {
                        let query = form_urlencoded::Serializer::new(String::new())
                            .append_pair("db", name)
                            .finish();
                        host.v3(Method::DELETE, "/api/v3/configure/database", &query, None)
                            .await?;
                    }
                }
                eprintln!("deleted database {name}");
            }
            Ok(())
        }
    }
}

fn check_name(name: &str) -> Result<(), CliError> {
    if name.is_empty() || name.chars().any(char::is_control) {
        return Err(CliError::usage(format!(
            "invalid database name {:?}",
            name.escape_debug().to_string()
        )));
    }
    Ok(())
}

/// A database as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name.
    pub name: String,
    /// Its (default policy's) retention, when the database tells.
    pub retention: Option<Retention>,
}

fn report(
    format: Format,
    done: &str,
    name: &str,
    retention: Option<Retention>,
) -> Result<(), CliError> {
    output::to_stdout(|out| match format {
        Format::Json => {
            let value = json!({
                "name": name,
                "retention_period": retention.map(Retention::human),
            });
            serde_json::to_writer_pretty(&mut *out, &value)?;
            writeln!(out)
        }
        Format::Table => match retention {
            Some(r) => writeln!(out, "{done} database {name} (retention {})", r.human()),
            None => writeln!(out, "{done} database {name}"),
        },
    })
}

fn print_list(databases: &[Listed], format: Format) -> Result<(), CliError> {
    output::to_stdout(|out| match format {
        Format::Json => {
            let items: Vec<Value> = databases
                .iter()
                .map(|d| {
                    json!({
                        "name": d.name,
                        "retention_period": d.retention.map(Retention::human),
                        "retention_seconds": d.retention.and_then(|r| match r {
                            Retention::Seconds(s) => Some(s),
                            Retention::Infinite => None,
                        }),
                    })
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &items)?;
            writeln!(out)
        }
        Format::Table => {
            let width = databases
                .iter()
                .map(|d| d.name.chars().count())
                .max()
                .unwrap_or(0)
                .max(4);
            writeln!(out, "{:<width$}  RETENTION", "NAME")?;
            for d in databases {
                let retention = d.retention.map_or_else(|| "-".to_owned(), Retention::human);
                writeln!(
                    out,
                    "{:<width$}  {retention}",
                    d.name.escape_debug().to_string()
                )?;
            }
            Ok(())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::host::ident;
    use super::retention::{Retention, go_duration};

    #[test]
    fn retention_periods() {
        assert_eq!(Retention::parse("0").unwrap(), Retention::Infinite);
        assert_eq!(Retention::parse("infinite").unwrap(), Retention::Infinite);
        assert_eq!(
            Retention::parse("30d").unwrap(),
            Retention::Seconds(30 * 86_400)
        );
        assert_eq!(
            Retention::parse("1w2d").unwrap(),
            Retention::Seconds(9 * 86_400)
        );
        assert_eq!(
            Retention::parse("2mo").unwrap(),
            Retention::Seconds(60 * 86_400)
        );
        assert_eq!(
            Retention::parse("1y").unwrap(),
            Retention::Seconds(365 * 86_400)
        );
        assert_eq!(Retention::parse("90m").unwrap(), Retention::Seconds(5_400));
        for bad in [
            "",
            "30",
            "d",
            "30s",
            "1.5d",
            "-1d",
            "99999999999999999999y",
            "30 d",
        ] {
            assert!(Retention::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Retention::Seconds(30 * 86_400).influxql(), "2592000s");
        assert_eq!(Retention::Infinite.influxql(), "INF");
        assert_eq!(Retention::Seconds(14 * 86_400).human(), "2w");
        assert_eq!(Retention::Seconds(5_400).human(), "90m");
    }

    #[test]
    fn influxdb_durations_and_identifiers() {
        assert_eq!(go_duration("720h0m0s"), Retention::Seconds(720 * 3_600));
        assert_eq!(go_duration("0s"), Retention::Infinite);
        assert_eq!(ident("a\"b\\c"), r#""a\"b\\c""#);
    }
}
