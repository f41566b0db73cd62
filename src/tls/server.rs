//! Server-side TLS: a rustls `ServerConfig` from PEM files (TLS 1.2+, ALPN,
//! optional client-certificate verification), and how a failed handshake is
//! reported. Handshakes themselves run in the accept loop
//! ([`crate::accept::tls`]).

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::{StoresServerSessions, WebPkiClientVerifier};

use super::{PemFile, TlsError, pem};

/// ALPN of the proxy's port: HTTP/2 (gRPC, and HTTPS clients that prefer
/// it) and HTTP/1.1 on one port.
pub const ALPN_PROXY: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN of the token service: gRPC only.
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];

/// The files a TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    /// Certificate chain, leaf first.
    pub cert: PemFile,
    /// The leaf's private key.
    pub key: PemFile,
    /// When set, clients must present a certificate signed by one of these.
    pub client_ca: Option<PemFile>,
    /// ALPN protocols offered, in order of preference.
    pub alpn: Vec<Vec<u8>>,
}

impl ServerFiles {
    /// Files for a listener offering `alpn`.
    pub fn new(cert: PemFile, key: PemFile, client_ca: Option<PemFile>, alpn: &[&[u8]]) -> Self {
        Self {
            cert,
            key,
            client_ca,
            alpn: alpn.iter().map(|p| p.to_vec()).collect(),
        }
    }

    /// Every file, for change detection.
    pub fn paths(&self) -> Vec<&PemFile> {
        let mut files = vec![&self.cert, &self.key];
        files.extend(self.client_ca.as_ref());
        files
    }
}

/// A configuration built from `files`, and the SHA-256 fingerprint of its
/// leaf certificate (for the logs).
pub fn build(
    files: &ServerFiles,
    sessions: Arc<dyn StoresServerSessions>,
) -> Result<(Arc<ServerConfig>, String), TlsError> {
    let certified = pem::certified_key(&files.cert, &files.key)?;
    let fingerprint = certified
        .cert
        .first()
        .map(pem::fingerprint)
        .unwrap_or_default();
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            // Mandatory: a client without a certificate, or with one from
            // another CA, fails the handshake.
            let verifier = WebPkiClientVerifier::builder_with_provider(
                pem::root_store(ca)?,
                super::provider(),
            )
            .build()
            .map_err(|e| TlsError::Unusable {
                file: ca.clone(),
                detail: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(certified)));
    config.alpn_protocols.clone_from(&files.alpn);
    // Shared across reloads, so clients resume their sessions after one.
    config.session_storage = sessions;
    Ok((Arc::new(config), fingerprint))
}

/// Logs and counts a failed handshake. On the proxy's port, often public,
/// these are mostly scanners: debug level, the counter shows a trend. On the
/// token service's they are a client misconfigured for (mutual) TLS: info.
pub fn handshake_failed(listener: &'static str, client: std::net::SocketAddr, why: &str) {
    if listener == "proxy" {
        tracing::debug!(listener, %client, error = why, "TLS handshake failed");
    } else {
        tracing::info!(listener, %client, error = why, "TLS handshake failed");
    }
    metrics::counter!("fluxgate_tls_handshake_failures_total", "listener" => listener).increment(1);
}
