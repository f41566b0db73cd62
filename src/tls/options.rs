//! From command-line options to TLS configurations, each file labelled with
//! the flag that named it. The same token-service listener options are
//! spelled `--tls-cert`/`--tls-key`/`--client-ca` on `fluxgate authz` and
//! `--authz-tls-cert`/`--authz-tls-key`/`--authz-client-ca` on `fluxgate
//! serve` (where `--tls-*` is the proxy's); both read the same
//! `FLUXGATE_AUTHZ_TLS_*` / `FLUXGATE_AUTHZ_CLIENT_CA` variables.

use std::path::PathBuf;
use std::sync::Arc;

use tonic::transport::Endpoint;

use super::client::{self, ClientFiles};
use super::server::{ALPN_GRPC, ALPN_PROXY, ServerFiles};
use super::{PemFile, ServerTls, TlsError};
use crate::config::{
    AuthzClientOptions, AuthzTlsOptions, ProxyOptions, ServeTokenServiceTlsOptions,
    TokenServiceTlsOptions,
};

/// Server files from a certificate/key pair (both or neither) and an
/// optional client CA, named by the three flags.
fn server_files(
    (cert_flag, cert): (&'static str, &Option<PathBuf>),
    (key_flag, key): (&'static str, &Option<PathBuf>),
    client_ca: Option<(&'static str, &Option<PathBuf>)>,
    alpn: &[&[u8]],
) -> Result<Option<ServerFiles>, TlsError> {
    let ca = client_ca.and_then(|(flag, path)| path.as_ref().map(|p| PemFile::new(flag, p)));
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(ServerFiles::new(
            PemFile::new(cert_flag, cert),
            PemFile::new(key_flag, key),
            ca,
            alpn,
        ))),
        (None, None) => match ca {
            None => Ok(None),
            Some(ca) => Err(TlsError::Options(format!(
                "{ca} needs {cert_flag} and {key_flag}: client certificates are checked over TLS"
            ))),
        },
        (Some(_), None) => Err(TlsError::Options(format!("{cert_flag} needs {key_flag}"))),
        (None, Some(_)) => Err(TlsError::Options(format!("{key_flag} needs {cert_flag}"))),
    }
}

/// The proxy listener's TLS (`--tls-cert`, `--tls-key`), loaded: `None`
/// when not configured.
pub fn proxy_listener(options: &ProxyOptions) -> Result<Option<ServerTls>, TlsError> {
    server_files(
        ("--tls-cert", &options.tls_cert),
        ("--tls-key", &options.tls_key),
        None,
        ALPN_PROXY,
    )?
    .map(|files| ServerTls::load("proxy", files))
    .transpose()
}

/// `fluxgate authz`'s listener TLS (`--tls-cert`, `--tls-key`, `--client-ca`).
pub fn token_service_listener(
    options: &TokenServiceTlsOptions,
) -> Result<Option<ServerTls>, TlsError> {
    server_files(
        ("--tls-cert", &options.tls_cert),
        ("--tls-key", &options.tls_key),
        Some(("--client-ca", &options.client_ca)),
        ALPN_GRPC,
    )?
    .map(|files| ServerTls::load("token service", files))
    .transpose()
}

/// `fluxgate serve`'s token-service listener TLS (`--authz-tls-cert`,
/// `--authz-tls-key`, `--authz-client-ca`).
pub fn serve_token_service_listener(
    options: &ServeTokenServiceTlsOptions,
) -> Result<Option<ServerTls>, TlsError> {
    server_files(
        ("--authz-tls-cert", &options.authz_tls_cert),
        ("--authz-tls-key", &options.authz_tls_key),
        Some(("--authz-client-ca", &options.authz_client_ca)),
        ALPN_GRPC,
    )?
    .map(|files| ServerTls::load("token service", files))
    .transpose()
}

/// The client configuration for the upstream database when `--upstream` or
/// `--upstream-grpc` is https:// (trusting `--upstream-ca`, else the system
/// roots); `None` when both are plain http.
pub fn upstream_client(
    options: &ProxyOptions,
) -> Result<Option<Arc<rustls::ClientConfig>>, TlsError> {
    let https = std::iter::once(&options.upstream)
        .chain(options.upstream_grpc.as_ref())
        .any(|uri| uri.scheme_str() == Some("https"));
    let files = ClientFiles {
        ca: options
            .upstream_ca
            .as_ref()
            .map(|p| PemFile::new("--upstream-ca", p)),
        ..ClientFiles::default()
    };
    if !https {
        return match &files.ca {
            None => Ok(None),
            Some(ca) => Err(TlsError::Options(format!(
                "{ca} only applies to an https:// --upstream or --upstream-grpc, and neither is one"
            ))),
        };
    }
    Ok(Some(Arc::new(client::rustls_config(&files)?)))
}

impl AuthzTlsOptions {
    /// The files, labelled with their flags.
    pub fn client_files(&self) -> ClientFiles {
        let file = |flag, path: &Option<PathBuf>| path.as_ref().map(|p| PemFile::new(flag, p));
        ClientFiles {
            ca: file("--authz-ca", &self.authz_ca),
            cert: file("--authz-client-cert", &self.authz_client_cert),
            key: file("--authz-client-key", &self.authz_client_key),
        }
    }
}

/// The token service's endpoints for `fluxgate proxy` (`--authz`, one URL or
/// several, in order of preference, with `--authz-ca`, `--authz-client-cert`,
/// `--authz-client-key` applying to each). Warns when tokens would cross the
/// network in clear.
pub fn authz_endpoints(options: &AuthzClientOptions) -> Result<Vec<Endpoint>, TlsError> {
    if options.authz.is_empty() {
        return Err(TlsError::Options(
            "--authz needs at least one URL".to_owned(),
        ));
    }
    let files = options.tls.client_files();
    let mut endpoints = Vec::with_capacity(options.authz.len());
    for uri in &options.authz {
        if client::is_cleartext_remote(uri) {
            tracing::warn!(
                authz = %uri,
                "the token service is reached over plain http on another host: tokens cross the network in clear; use https://"
            );
        }
        endpoints.push(client::grpc_endpoint("--authz", uri, &files)?);
    }
    Ok(endpoints)
}

/// Starts following `tls`'s files (every [`super::reload::DEFAULT_POLL`],
/// and on SIGHUP) until `shutdown`, when TLS is on.
pub fn watch(tls: Option<&ServerTls>, shutdown: &tokio_util::sync::CancellationToken) {
    if let Some(tls) = tls {
        drop(tls.watch(super::reload::DEFAULT_POLL, shutdown.clone()));
    }
}

/// Warns when a token service listens beyond loopback without TLS.
pub fn warn_if_cleartext_listener(addr: std::net::SocketAddr, tls: Option<&ServerTls>) {
    if tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(
            %addr,
            "the token service listens beyond loopback without TLS: tokens cross the network in clear; set its TLS certificate and key"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Option<PathBuf> {
        Some(PathBuf::from(s))
    }

    #[test]
    fn pairs_and_client_ca_are_checked() {
        let e =
            server_files(("--a-cert", &p("c")), ("--a-key", &None), None, ALPN_GRPC).unwrap_err();
        assert_eq!(e.to_string(), "--a-cert needs --a-key");
        let e = server_files(
            ("--a-cert", &None),
            ("--a-key", &None),
            Some(("--a-ca", &p("ca"))),
            ALPN_GRPC,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--a-ca ca needs --a-cert and --a-key"),
            "{e}"
        );
        assert_eq!(
            server_files(("--a-cert", &None), ("--a-key", &None), None, ALPN_GRPC).unwrap(),
            None
        );
        let files = server_files(
            ("--a-cert", &p("c")),
            ("--a-key", &p("k")),
            Some(("--a-ca", &p("ca"))),
            ALPN_PROXY,
        )
        .unwrap()
        .unwrap();
        assert_eq!(files.alpn, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(files.client_ca, Some(PemFile::new("--a-ca", "ca")));
    }
}
