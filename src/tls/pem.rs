//! Reading PEM files: certificate chains, private keys and CA bundles, each
//! failure a [`TlsError`] naming the option and the file.
//!
//! A file may hold other blocks too (a combined `cert+key` file works as
//! either), and certificates in a key file or keys in a certificate file are
//! simply skipped.

use std::io::Read as _;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use super::{PemFile, TlsError};

/// Largest file read. Certificate chains and CA bundles are kilobytes (the
/// whole Mozilla bundle is ~200 KiB); this only stops reading a wrong file
/// (a disk image, `/dev/zero`) into memory.
pub const MAX_PEM_FILE: u64 = 4 << 20;

/// The bytes of `file`.
pub fn read(file: &PemFile) -> Result<Vec<u8>, TlsError> {
    let unreadable = |source: std::io::Error| {
        if source.kind() == std::io::ErrorKind::NotFound {
            TlsError::Missing { file: file.clone() }
        } else {
            TlsError::Unreadable {
                file: file.clone(),
                source,
            }
        }
    };
    let handle = std::fs::File::open(&file.path).map_err(unreadable)?;
    let mut bytes = Vec::new();
    // A directory opens on Linux; reading it fails (EISDIR) and lands here.
    handle
        .take(MAX_PEM_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(TlsError::TooLarge {
            file: file.clone(),
            limit: MAX_PEM_FILE,
        });
    }
    Ok(bytes)
}

/// pki-types' messages print byte vectors; these say what happened.
fn malformed(file: &PemFile, error: &pem::Error) -> TlsError {
    let detail = match error {
        pem::Error::MissingSectionEnd { .. } => {
            "a block has no END line (is the file truncated or still being written?)".to_owned()
        }
        pem::Error::IllegalSectionStart { .. } => "a malformed BEGIN line".to_owned(),
        pem::Error::Base64Decode(_) => "a block's base64 content does not decode".to_owned(),
        other => other.to_string(),
    };
    TlsError::Malformed {
        file: file.clone(),
        detail,
    }
}

/// Every certificate in `bytes` (read from `file`), leaf first as written.
pub fn certificates(
    file: &PemFile,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| malformed(file, &e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { file: file.clone() });
    }
    Ok(certs)
}

/// The first private key in `bytes` (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(file: &PemFile, bytes: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    match PrivateKeyDer::from_pem_slice(bytes) {
        Ok(key) => Ok(key),
        Err(pem::Error::NoItemsFound) => {
            let encrypted = bytes
                .windows(b"ENCRYPTED PRIVATE KEY".len())
                .any(|w| w == b"ENCRYPTED PRIVATE KEY")
                || bytes
                    .windows(b"Proc-Type: 4,ENCRYPTED".len())
                    .any(|w| w == b"Proc-Type: 4,ENCRYPTED");
            Err(if encrypted {
                TlsError::EncryptedKey { file: file.clone() }
            } else {
                TlsError::NoKey { file: file.clone() }
            })
        }
        Err(e) => Err(malformed(file, &e)),
    }
}

/// A certificate chain and its private key, checked to belong together.
pub fn certified_key(cert: &PemFile, key: &PemFile) -> Result<CertifiedKey, TlsError> {
    let chain = certificates(cert, &read(cert)?)?;
    let der = private_key(key, &read(key)?)?;
    certified_key_from(cert, chain, key, der)
}

/// [`certified_key`] over already parsed material.
pub fn certified_key_from(
    cert: &PemFile,
    chain: Vec<CertificateDer<'static>>,
    key: &PemFile,
    der: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let provider = super::provider();
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| TlsError::Unusable {
            file: key.clone(),
            detail: e.to_string(),
        })?;
    let certified = CertifiedKey::new(chain, signing);
    match certified.keys_match() {
        // `Unknown`: the key type cannot tell its public key; rustls accepts
        // those too, and the handshake itself would fail on a mismatch.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {
            Ok(certified)
        }
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            cert: cert.clone(),
            key: key.clone(),
        }),
        // The leaf does not parse as X.509.
        Err(e) => Err(TlsError::Unusable {
            file: cert.clone(),
            detail: e.to_string(),
        }),
    }
}

/// A root store holding exactly the CA certificates in `file`.
pub fn root_store(file: &PemFile) -> Result<Arc<RootCertStore>, TlsError> {
    root_store_from(file, &read(file)?)
}

/// [`root_store`] over bytes already read from `file`.
pub fn root_store_from(file: &PemFile, bytes: &[u8]) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(file, bytes)? {
        roots.add(cert).map_err(|e| TlsError::Unusable {
            file: file.clone(),
            detail: format!("a CA certificate is not usable as a trust anchor: {e}"),
        })?;
    }
    Ok(Arc::new(roots))
}

/// SHA-256 of a certificate, as `openssl x509 -fingerprint -sha256` shows
/// it: logged on load and reload so operators can tell which one is live.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(cert.as_ref());
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> PemFile {
        PemFile::new("--tls-key", "/k.pem")
    }

    #[test]
    fn key_errors_say_what_is_wrong() {
        let e = private_key(&file(), b"hello\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--tls-key /k.pem: no private key in it"),
            "{e}"
        );
        let encrypted =
            b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        let e = private_key(&file(), encrypted).unwrap_err();
        assert!(
            e.to_string().contains("the private key is encrypted"),
            "{e}"
        );
        let truncated = b"-----BEGIN PRIVATE KEY-----\nAAAA\n";
        let e = private_key(&file(), truncated).unwrap_err();
        assert!(
            e.to_string()
                .contains("malformed PEM: a block has no END line"),
            "{e}"
        );
    }

    #[test]
    fn certificate_files_need_a_certificate() {
        let f = PemFile::new("--tls-cert", "/c.pem");
        let e = certificates(
            &f,
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--tls-cert /c.pem: no certificate in it (expected a PEM \"BEGIN CERTIFICATE\" block)"
        );
    }

    #[test]
    fn missing_and_directory_files() {
        let e = read(&PemFile::new("--tls-cert", "/nonexistent/c.pem")).unwrap_err();
        assert_eq!(e.to_string(), "--tls-cert /nonexistent/c.pem: no such file");
        let dir = std::env::temp_dir();
        let e = read(&PemFile::new("--tls-cert", &dir)).unwrap_err();
        assert!(e.to_string().contains("cannot read it"), "{e}");
    }
}
