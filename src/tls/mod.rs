//! TLS everywhere, with rustls: the proxy's listener (HTTPS and gRPC over
//! TLS on one port), the token service's listener (optionally requiring
//! client certificates), and the client side towards the upstream database
//! and the token service.
//!
//! - [`pem`]: reading PEM files with errors that name the option and file.
//! - [`server`]: server configurations and the TLS accept stream of the
//!   token service.
//! - [`reload`]: [`ServerTls`], a server configuration rebuilt when its
//!   files change or on SIGHUP; established connections keep theirs.
//! - [`client`]: client configurations (system roots or a private CA, an
//!   optional client certificate).
//! - [`options`]: from command-line options to the above.
//!
//! Only TLS 1.2 and 1.3 with rustls' default (safe) cipher suites, on the
//! `ring` provider, chosen explicitly so that no other crate's choice of
//! process-wide provider can change it.

pub mod client;
pub mod error;
pub mod options;
pub mod pem;
pub mod reload;
pub mod server;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use error::TlsError;
pub use reload::ServerTls;

/// The TLS versions fluxgate speaks: 1.3 first, 1.2 for older clients.
pub static PROTOCOL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The crypto provider every configuration is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A PEM file as the user named it: the option (shown in every message, so
/// the user knows which setting to fix) and the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemFile {
    /// The option that named the file, e.g. `--tls-cert`.
    pub option: &'static str,
    /// The file.
    pub path: PathBuf,
}

impl PemFile {
    /// The file at `path`, named by `option`.
    pub fn new(option: &'static str, path: impl Into<PathBuf>) -> Self {
        Self {
            option,
            path: path.into(),
        }
    }
}

impl fmt::Display for PemFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.option, self.path.display())
    }
}

/// True for hosts whose traffic never leaves the machine: `localhost` and
/// loopback addresses. Plain http is only acceptable to those.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "::1",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1",
            "0.0.0.0",
            "[::]",
            "localhost.evil",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn files_display_option_and_path() {
        let f = PemFile::new("--tls-cert", "/etc/fluxgate/cert.pem");
        assert_eq!(f.to_string(), "--tls-cert /etc/fluxgate/cert.pem");
    }
}
