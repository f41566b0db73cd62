//! The token service's TLS options: the client side (`fluxgate proxy` and
//! the management CLI dialling `--authz`) and the listener's, which
//! `fluxgate serve` names `--authz-tls-*` because its `--tls-*` belong to
//! the proxy. Both listener structs lead to one `ServerTls` (`tls::options`).

use std::path::PathBuf;

use clap::Args;

/// TLS towards the token service (client side): `fluxgate proxy` and the
/// management CLI.
#[derive(Debug, Clone, Default, Args)]
pub struct AuthzTlsOptions {
    /// PEM CA certificates trusted for an https:// --authz instead of the system roots.
    #[arg(long, env = "FLUXGATE_AUTHZ_CA", value_name = "PATH")]
    pub authz_ca: Option<PathBuf>,
    /// PEM client certificate presented to the token service (mutual TLS; with --authz-client-key).
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_CLIENT_CERT",
        value_name = "PATH",
        requires = "authz_client_key"
    )]
    pub authz_client_cert: Option<PathBuf>,
    /// PEM private key of --authz-client-cert.
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_CLIENT_KEY",
        value_name = "PATH",
        requires = "authz_client_cert"
    )]
    pub authz_client_key: Option<PathBuf>,
}

/// TLS of `fluxgate authz`'s listener.
#[derive(Debug, Clone, Default, Args)]
pub struct TokenServiceTlsOptions {
    /// PEM certificate chain: serve the token service over TLS (with --tls-key; reloaded when the file changes or on SIGHUP).
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: every client must present a certificate signed by one of them (mutual TLS; needs --tls-cert).
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_CLIENT_CA",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub client_ca: Option<PathBuf>,
}

/// TLS of `fluxgate serve`'s token-service listener (`--authz-listen`); the
/// same settings as `fluxgate authz`'s `--tls-cert`, `--tls-key` and
/// `--client-ca`, renamed because `--tls-*` is the proxy's here.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeTokenServiceTlsOptions {
    /// PEM certificate chain: serve the token service (--authz-listen) over TLS (with --authz-tls-key; reloaded when the file changes or on SIGHUP).
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_TLS_CERT",
        value_name = "PATH",
        requires = "authz_tls_key"
    )]
    pub authz_tls_cert: Option<PathBuf>,
    /// PEM private key of --authz-tls-cert.
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_TLS_KEY",
        value_name = "PATH",
        requires = "authz_tls_cert"
    )]
    pub authz_tls_key: Option<PathBuf>,
    /// PEM CA certificates: every token-service client must present a certificate signed by one of them (mutual TLS; needs --authz-tls-cert).
    #[arg(
        long,
        env = "FLUXGATE_AUTHZ_CLIENT_CA",
        value_name = "PATH",
        requires = "authz_tls_cert"
    )]
    pub authz_client_ca: Option<PathBuf>,
}
