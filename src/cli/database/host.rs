//! The proxy as `fluxgate database` reaches it: over HTTP(S) with the
//! management token, the database's API read from `/ping`, InfluxQL on
//! `/query` for InfluxDB 1.x and JSON on `/api/v3/configure/database` for
//! InfluxDB 3, each refusal mapped to the CLI's error kinds.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use super::Listed;
use super::retention::{Retention, go_duration};
use crate::cli::client::AuthzUrl;
use crate::cli::credentials::{self, ManagementToken};
use crate::cli::error::{CliError, ErrorKind};
use crate::config::commands::{ApiKind, HostOptions};
use crate::tls::PemFile;
use crate::tls::client::{ClientFiles, rustls_config};

/// Longest wait for one answer from the proxy.
const TIMEOUT: Duration = Duration::from_secs(30);

/// An InfluxQL identifier, quoted.
pub(super) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The proxy, reached with a management token.
pub(super) struct Host {
    base: String,
    pub(super) api: ApiKind,
    token: ManagementToken,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// A v1 retention policy.
pub(super) struct Policy {
    pub(super) name: String,
    pub(super) retention: Retention,
}

impl Host {
    pub(super) async fn open(conn: &HostOptions) -> Result<Self, CliError> {
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
    pub(super) async fn influxql(&self, statement: &str) -> Result<Value, CliError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", statement)
            .finish();
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

    pub(super) async fn v3(
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
    pub(super) async fn default_policy(&self, name: &str) -> Result<Option<Policy>, CliError> {
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
    pub(super) async fn list(&self) -> Result<Vec<Listed>, CliError> {
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
