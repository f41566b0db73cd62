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

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

use super::args::{ApiKind, DatabaseCommand, Format, HostOptions};
use super::client::AuthzUrl;
use super::credentials::{self, ManagementToken};
use super::error::{CliError, ErrorKind};
use super::output;
use super::revoke;
use crate::tls::PemFile;
use crate::tls::client::{ClientFiles, rustls_config};

/// Longest wait for one answer from the proxy.
const TIMEOUT: Duration = Duration::from_secs(30);

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
                        let query =
                            crate::proxy::read::params::Params::encode([("db", name.as_str())]);
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
                        let query =
                            crate::proxy::read::params::Params::encode([("db", name.as_str())]);
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

/// An InfluxQL identifier, quoted.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A retention period as influxctl takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Keep data forever.
    Infinite,
    /// Keep data this many seconds.
    Seconds(u64),
}

impl Retention {
    /// Parses `0`, `infinite`, or segments of a number and a unit (`m`,
    /// `h`, `d`, `w`, `mo`, `y`).
    pub fn parse(text: &str) -> Result<Self, CliError> {
        let text = text.trim();
        if text == "0" || text.eq_ignore_ascii_case("infinite") || text.eq_ignore_ascii_case("inf")
        {
            return Ok(Retention::Infinite);
        }
        let bad = || {
            CliError::usage(format!(
                "invalid retention period {text:?}: use a number and a unit (m, h, d, w, mo, y), e.g. 30d, or 0 / infinite"
            ))
        };
        if text.is_empty() {
            return Err(bad());
        }
        let mut total: u64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let seconds = match &rest[..unit_len] {
                "m" => 60,
                "h" => 3_600,
                "d" => 86_400,
                "w" => 7 * 86_400,
                "mo" => 30 * 86_400,
                "y" => 365 * 86_400,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = number
                .checked_mul(seconds)
                .and_then(|s| total.checked_add(s))
                .ok_or_else(bad)?;
        }
        if total == 0 {
            return Ok(Retention::Infinite);
        }
        Ok(Retention::Seconds(total))
    }

    /// The InfluxQL duration literal.
    fn influxql(self) -> String {
        match self {
            Retention::Infinite => "INF".to_owned(),
            Retention::Seconds(s) => format!("{s}s"),
        }
    }

    /// How people read it: the largest whole unit.
    fn human(self) -> String {
        match self {
            Retention::Infinite => "infinite".to_owned(),
            Retention::Seconds(s) => {
                for (unit, size) in [
                    ("y", 365 * 86_400),
                    ("w", 7 * 86_400),
                    ("d", 86_400),
                    ("h", 3_600),
                    ("m", 60),
                ] {
                    if s % size == 0 {
                        return format!("{}{unit}", s / size);
                    }
                }
                format!("{s}s")
            }
        }
    }
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

/// The proxy, reached with a management token.
struct Host {
    base: String,
    api: ApiKind,
    token: ManagementToken,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A v1 retention policy.
struct Policy {
    name: String,
    retention: Retention,
}

impl Host {
    async fn open(conn: &HostOptions) -> Result<Self, CliError> {
        let base = conn.host.trim().trim_end_matches('/').to_owned();
        let uri: http::Uri = base.parse().map_err(|_| {
            CliError::usage(format!(
                "invalid --host URL {base:?}: expected http://HOST:PORT or https://HOST:PORT"
            ))
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https"))
            || uri.authority().is_none()
            || base.contains('@')
        {
            return Err(CliError::usage(
                "invalid --host URL: expected http://HOST:PORT or https://HOST:PORT",
            ));
        }
        let files = ClientFiles {
            ca: conn.host_ca.clone().map(|p| PemFile::new("--host-ca", p)),
            cert: None,
            key: None,
        };
        let tls = if uri.scheme_str() == Some("https") {
            rustls_config(&files).map_err(|e| CliError::usage(e.to_string()))?
        } else {
            // Plain http: a TLS configuration is needed to build the
            // connector, never used.
            rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                .with_protocol_versions(crate::tls::PROTOCOL_VERSIONS)
                .unwrap_or_else(|_| rustls::ClientConfig::builder())
                .with_root_certificates(Arc::new(rustls::RootCertStore::empty()))
                .with_no_client_auth()
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let url = AuthzUrl::parse(&conn.authz)?;
        let token = credentials::load(conn.token_file.as_deref(), &url)?;
        let mut host = Self {
            base,
            api: ApiKind::V1,
            token,
            client,
        };
        host.api = match conn.api {
            Some(api) => api,
            None => host.detect().await?,
        };
        Ok(host)
    }

    /// The upstream's API, from `/ping`'s `X-Influxdb-Version`.
    async fn detect(&self) -> Result<ApiKind, CliError> {
        let request = Request::get(format!("{}/ping", self.base))
            .body(Full::new(Bytes::new()))
            .map_err(|e| CliError::usage(e.to_string()))?;
        let response = self.send(request).await?;
        let version = response
            .headers()
            .get("x-influxdb-version")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .trim_start_matches('v')
            .to_owned();
        match version.chars().next() {
            Some('1') => Ok(ApiKind::V1),
            Some('3') => Ok(ApiKind::V3),
            Some('2') => Err(CliError::usage(
                "the database is InfluxDB 2.x: manage its buckets with the v2 API (/api/v2/buckets)",
            )),
            _ => Err(CliError::usage(format!(
                "cannot tell the database's API from {}/ping (X-Influxdb-Version {version:?}); pass --api v1 or --api v3",
                self.base
            ))),
        }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<http::Response<Bytes>, CliError> {
        let unavailable = |why: String| {
            CliError::unavailable(format!("cannot reach fluxgate at {}: {why}", self.base))
        };
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unavailable("no answer in time".to_owned()))?
            .map_err(|e| unavailable(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = tokio::time::timeout(TIMEOUT, body.collect())
            .await
            .map_err(|_| unavailable("no answer in time".to_owned()))?
            .map_err(|e| unavailable(e.to_string()))?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }

    /// Sends with the management token; a refusal becomes the error of its
    /// kind, with the proxy's or database's message.
    async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<(Bytes, &'static str)>,
    ) -> Result<Bytes, CliError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{path_and_query}", self.base))
            .header(
                header::AUTHORIZATION,
                format!("Token {}", self.token.expose()),
            );
        let body = match body {
            Some((bytes, content_type)) => {
                builder = builder.header(header::CONTENT_TYPE, content_type);
                bytes
            }
            None => Bytes::new(),
        };
        let request = builder
            .body(Full::new(body))
            .map_err(|e| CliError::usage(e.to_string()))?;
        let response = self.send(request).await?;
        let status = response.status();
        if status.is_success() {
            return Ok(response.into_body());
        }
        let message = error_message(response.body()).unwrap_or_else(|| status.to_string());
        let message = message.replace(self.token.expose(), "<token>");
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Authentication,
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => ErrorKind::Usage,
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                ErrorKind::Unavailable
            }
            _ => ErrorKind::Other,
        };
        Err(CliError::new(kind, format!("{status}: {message}")))
    }

    /// Runs InfluxQL on `/query`; the statement's own error is an error.
    async fn influxql(&self, statement: &str) -> Result<Value, CliError> {
        let form = crate::proxy::read::params::Params::encode([("q", statement)]);
        let answer = self
            .call(
                Method::POST,
                "/query",
                Some((Bytes::from(form), "application/x-www-form-urlencoded")),
            )
            .await?;
        let value: Value = serde_json::from_slice(&answer)
            .map_err(|e| CliError::other(format!("unexpected answer from the database: {e}")))?;
        let error = value
            .get("error")
            .or_else(|| value.pointer("/results/0/error"))
            .and_then(Value::as_str);
        if let Some(error) = error {
            let kind = if error.contains("not found") {
                ErrorKind::NotFound
            } else {
                ErrorKind::Other
            };
            return Err(CliError::new(
                kind,
                format!("the database refused it: {error}"),
            ));
        }
        Ok(value)
    }

    async fn v3(
        &self,
        method: Method,
        path: &str,
        query: &str,
        body: Option<Value>,
    ) -> Result<Bytes, CliError> {
        let target = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{query}")
        };
        let body = body.map(|b| (Bytes::from(b.to_string()), "application/json"));
        self.call(method, &target, body).await
    }

    /// The default retention policy of v1 database `name`.
    async fn default_policy(&self, name: &str) -> Result<Option<Policy>, CliError> {
        let answer = self
            .influxql(&format!("SHOW RETENTION POLICIES ON {}", ident(name)))
            .await?;
        let series = answer.pointer("/results/0/series/0");
        let columns: Vec<&str> = series
            .and_then(|s| s.get("columns"))
            .and_then(Value::as_array)
            .map(|c| c.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let column = |row: &Value, name: &str| {
            columns
                .iter()
                .position(|c| *c == name)
                .and_then(|i| row.get(i))
                .cloned()
        };
        let rows = series
            .and_then(|s| s.get("values"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        Ok(rows.iter().find_map(|row| {
            if column(row, "default")?.as_bool()? {
                let name = column(row, "name")?.as_str()?.to_owned();
                let duration = column(row, "duration")?.as_str()?.to_owned();
                Some(Policy {
                    name,
                    retention: go_duration(&duration),
                })
            } else {
                None
            }
        }))
    }

    /// Every database the token may see (the proxy filters the answer).
    async fn list(&self) -> Result<Vec<Listed>, CliError> {
        match self.api {
            ApiKind::V1 => {
                let answer = self.influxql("SHOW DATABASES").await?;
                let names: Vec<String> = answer
                    .pointer("/results/0/series/0/values")
                    .and_then(Value::as_array)
                    .map(|rows| {
                        rows.iter()
                            .filter_map(|r| r.get(0).and_then(Value::as_str).map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                let mut listed = Vec::with_capacity(names.len());
                for name in names {
                    let retention = self.default_policy(&name).await?.map(|p| p.retention);
                    listed.push(Listed { name, retention });
                }
                Ok(listed)
            }
            ApiKind::V3 => {
                let answer = self
                    .v3(
                        Method::GET,
                        "/api/v3/configure/database",
                        "format=json",
                        None,
                    )
                    .await?;
                let rows: Vec<Value> = serde_json::from_slice(&answer).map_err(|e| {
                    CliError::other(format!("unexpected answer from the database: {e}"))
                })?;
                Ok(rows
                    .iter()
                    .filter_map(|row| {
                        let name = row.get("iox::database")?.as_str()?.to_owned();
                        let retention = row
                            .get("retention_period")
                            .and_then(Value::as_u64)
                            .map(|ns| Retention::Seconds(ns / 1_000_000_000))
                            .filter(|r| *r != Retention::Seconds(0));
                        Some(Listed { name, retention })
                    })
                    .collect())
            }
        }
    }
}

/// A Go duration as InfluxDB 1.x prints it (`720h0m0s`, `0s` for forever).
fn go_duration(text: &str) -> Retention {
    let mut seconds: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().unwrap_or(0);
        number.clear();
        seconds += match c {
            'h' => n * 3_600,
            'm' => n * 60,
            's' => n,
            _ => 0,
        };
    }
    if seconds == 0 {
        Retention::Infinite
    } else {
        Retention::Seconds(seconds)
    }
}

/// The message of an InfluxDB-shaped error body (`{"error": …}` or
/// `{"message": …}`).
fn error_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    value
        .get("error")
        .or_else(|| value.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

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
