//! Why TLS material could not be loaded. Every message starts with the
//! option and the file it names (`--tls-key /etc/fluxgate/key.pem: …`), so a
//! startup failure or a failed reload says exactly what to fix.

use super::PemFile;

/// A TLS file or setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file does not exist.
    #[error("{file}: no such file")]
    Missing {
        /// The file.
        file: PemFile,
    },
    /// The file exists but cannot be read (permissions, a directory, …).
    #[error("{file}: cannot read it: {source}")]
    Unreadable {
        /// The file.
        file: PemFile,
        /// Why.
        source: std::io::Error,
    },
    /// Far larger than any certificate chain: most likely the wrong file.
    #[error("{file}: larger than {limit} bytes; is it the right file?")]
    TooLarge {
        /// The file.
        file: PemFile,
        /// The limit.
        limit: u64,
    },
    /// A PEM block that cannot be decoded (often a truncated file).
    #[error("{file}: malformed PEM: {detail}")]
    Malformed {
        /// The file.
        file: PemFile,
        /// What is wrong.
        detail: String,
    },
    /// No `CERTIFICATE` block.
    #[error("{file}: no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)")]
    NoCertificate {
        /// The file.
        file: PemFile,
    },
    /// No private key block.
    #[error(
        "{file}: no private key in it (expected an unencrypted PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" or \"BEGIN EC PRIVATE KEY\" block)"
    )]
    NoKey {
        /// The file.
        file: PemFile,
    },
    /// Only an encrypted key: there is no one to type a passphrase.
    #[error(
        "{file}: the private key is encrypted; fluxgate needs it unencrypted (protect the file instead)"
    )]
    EncryptedKey {
        /// The file.
        file: PemFile,
    },
    /// Parsed, but rustls cannot use it (unsupported key type, a CA
    /// certificate it rejects, …).
    #[error("{file}: cannot be used: {detail}")]
    Unusable {
        /// The file.
        file: PemFile,
        /// Why.
        detail: String,
    },
    /// The key is not the certificate's.
    #[error("{key}: the private key does not match the certificate in {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PemFile,
        /// The key file.
        key: PemFile,
    },
    /// Options that do not fit together.
    #[error("{0}")]
    Options(String),
    /// rustls refused the assembled configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}
