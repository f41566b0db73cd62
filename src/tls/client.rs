//! Client-side TLS: which servers fluxgate trusts (the system's roots, or
//! only a private CA) and the certificate it presents, for the HTTPS
//! upstream (a rustls `ClientConfig` for hyper-rustls) and for the token
//! service (a tonic `Endpoint`, also used by the CLI).
//!
//! Client configurations are read once, at startup: a rotated client
//! certificate is picked up by a restart (the listeners' certificates, by
//! contrast, reload in place; see [`super::reload`]).

use std::sync::{Arc, OnceLock};

use rustls::{ClientConfig, RootCertStore};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{PemFile, TlsError, pem};

/// The client-side files, each optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientFiles {
    /// CA certificates trusted instead of the system's roots.
    pub ca: Option<PemFile>,
    /// Client certificate chain presented to the server (mutual TLS).
    pub cert: Option<PemFile>,
    /// The client certificate's key.
    pub key: Option<PemFile>,
}

impl ClientFiles {
    /// True when no file is set.
    pub fn is_empty(&self) -> bool {
        self.ca.is_none() && self.cert.is_none() && self.key.is_none()
    }

    /// The options that are set, for messages.
    fn options_set(&self) -> Vec<&'static str> {
        [&self.ca, &self.cert, &self.key]
            .into_iter()
            .flatten()
            .map(|f| f.option)
            .collect()
    }

    /// The client certificate and key: both or neither.
    fn identity(&self) -> Result<Option<(&PemFile, &PemFile)>, TlsError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(one), None) | (None, Some(one)) => Err(TlsError::Options(format!(
                "{one} is set without its pair: a client certificate needs both the certificate and its key"
            ))),
        }
    }
}

/// The system's trust anchors (`rustls-native-certs`: the OpenSSL locations,
/// `SSL_CERT_FILE`/`SSL_CERT_DIR`), loaded once per process.
pub fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::debug!(%error, "skipping an unreadable system CA certificate");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system CA certificates loaded");
        Arc::new(roots)
    });
    if roots.is_empty() {
        return Err(TlsError::Options(
            "no system CA certificates found: install the ca-certificates package, or trust a private CA with --upstream-ca or --authz-ca".to_owned(),
        ));
    }
    Ok(Arc::clone(roots))
}

/// A rustls client configuration: trusting only `files.ca` when set, else
/// the system's roots, and presenting `files.cert`/`files.key` when set.
/// ALPN is left empty for the connector to fill in.
pub fn rustls_config(files: &ClientFiles) -> Result<ClientConfig, TlsError> {
    let roots = match &files.ca {
        Some(ca) => pem::root_store(ca)?,
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(super::PROTOCOL_VERSIONS)
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    match files.identity()? {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certified = pem::certified_key(cert, key)?;
            Ok(
                builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(
                    certified,
                ))),
            )
        }
    }
}

/// tonic's TLS settings for `files`, each file checked here first so a bad
/// one fails with a message naming it (tonic would skip a CA certificate it
/// cannot parse, or fail later with a generic error).
pub fn grpc_config(files: &ClientFiles) -> Result<ClientTlsConfig, TlsError> {
    let mut config = ClientTlsConfig::new();
    config = match &files.ca {
        Some(ca) => {
            let bytes = pem::read(ca)?;
            pem::root_store_from(ca, &bytes)?;
            config.ca_certificate(Certificate::from_pem(bytes))
        }
        None => {
            system_roots()?;
            config.with_native_roots()
        }
    };
    if let Some((cert, key)) = files.identity()? {
        let (cert_pem, key_pem) = (pem::read(cert)?, pem::read(key)?);
        pem::certified_key_from(
            cert,
            pem::certificates(cert, &cert_pem)?,
            key,
            pem::private_key(key, &key_pem)?,
        )?;
        config = config.identity(Identity::from_pem(cert_pem, key_pem));
    }
    Ok(config)
}

/// The endpoint of a token service at `uri`, named by `option` in messages:
/// `https://` with TLS per `files`, `http://` (for loopback only: tokens
/// would cross the network in clear) without. TLS files with an `http://`
/// URL are refused rather than silently unused.
pub fn grpc_endpoint(
    option: &str,
    uri: &http::Uri,
    files: &ClientFiles,
) -> Result<Endpoint, TlsError> {
    let endpoint = Endpoint::from(uri.clone());
    match uri.scheme_str() {
        Some("https") => endpoint
            .tls_config(grpc_config(files)?)
            .map_err(|e| TlsError::Config(e.to_string())),
        Some("http") if files.is_empty() => Ok(endpoint),
        Some("http") => Err(TlsError::Options(format!(
            "{} only apply to an https:// {option} URL, and {option} is {uri}",
            files.options_set().join(", ")
        ))),
        _ => Err(TlsError::Options(format!(
            "{option} must be an http:// or https:// URL, got {uri}"
        ))),
    }
}

/// True when `uri` is plain http to a host other than this machine:
/// whatever it carries (tokens) crosses the network in clear.
pub fn is_cleartext_remote(uri: &http::Uri) -> bool {
    uri.scheme_str() == Some("http") && !uri.host().is_some_and(super::is_loopback_host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_refuse_tls_files() {
        let files = ClientFiles {
            ca: Some(PemFile::new("--authz-ca", "/x/ca.pem")),
            ..ClientFiles::default()
        };
        let uri: http::Uri = "http://127.0.0.1:8090".parse().unwrap();
        let e = grpc_endpoint("--authz", &uri, &files).unwrap_err();
        assert!(
            e.to_string()
                .contains("--authz-ca only apply to an https:// --authz URL"),
            "{e}"
        );
        assert!(grpc_endpoint("--authz", &uri, &ClientFiles::default()).is_ok());
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let files = ClientFiles {
            cert: Some(PemFile::new("--authz-client-cert", "/x/c.pem")),
            ..ClientFiles::default()
        };
        let e = files.identity().unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--authz-client-cert /x/c.pem is set without its pair"),
            "{e}"
        );
    }

    #[test]
    fn cleartext_remote_urls() {
        for (url, clear) in [
            ("http://127.0.0.1:8090", false),
            ("http://localhost:8090", false),
            ("http://[::1]:8090", false),
            ("https://authz.example:8090", false),
            ("http://authz.example:8090", true),
            ("http://10.1.2.3:8090", true),
        ] {
            let uri: http::Uri = url.parse().unwrap();
            assert_eq!(is_cleartext_remote(&uri), clear, "{url}");
        }
    }
}
