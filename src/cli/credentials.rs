//! Where the management token comes from, in this order:
//!
//! 1. `--token-file PATH` (env `FLUXGATE_TOKEN_FILE`, or the config file's
//!    `token-file` key): the file's content, surrounding whitespace trimmed
//!    (a file mounted from a Kubernetes secret ends with a newline).
//! 2. The `FLUXGATE_TOKEN` environment variable (an empty value counts as unset).
//! 3. The OS keyring (what `fluxgate login` stores): service `fluxgate`,
//!    user = the token service URL as `scheme://host:port`, so each token
//!    service has its own entry.
//!
//! [`ManagementToken`] holds the secret: its `Debug` is redacted, no error
//! built here contains it, and it is zeroed when dropped. A token file that
//! group or others can read is used with a warning on stderr.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::error::CliError;
use super::keyring_store;
use super::url::AuthzUrl;

/// The environment variable holding a management token.
pub const TOKEN_ENV: &str = "FLUXGATE_TOKEN";
/// Largest token file read: a token is under 100 bytes, so anything much
/// bigger is the wrong file.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

/// Where a management token was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `--token-file`.
    File(PathBuf),
    /// `FLUXGATE_TOKEN`.
    Env,
    /// The OS keyring.
    Keyring,
    /// Standard input (`fluxgate login`).
    Stdin,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, "the token file {}", path.display()),
            Source::Env => write!(f, "{TOKEN_ENV}"),
            Source::Keyring => f.write_str("the OS keyring"),
            Source::Stdin => f.write_str("standard input"),
        }
    }
}

/// A management token and where it came from.
#[derive(Clone)]
pub struct ManagementToken {
    secret: Zeroizing<String>,
    source: Source,
}

impl ManagementToken {
    /// Trims and checks a token read from `source`. Tokens are printable
    /// ASCII without spaces; anything else is the wrong file or variable.
    pub fn new(raw: &str, source: Source) -> Result<Self, CliError> {
        let secret = raw.trim();
        if secret.is_empty() {
            return Err(CliError::authentication(format!(
                "the management token from {source} is empty"
            )));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(CliError::authentication(format!(
                "the management token from {source} contains spaces, control or non-ASCII characters; is it the right file or variable?"
            )));
        }
        Ok(Self {
            secret: Zeroizing::new(secret.to_owned()),
            source,
        })
    }

    /// The token string, to send. Never print it.
    pub fn expose(&self) -> &str {
        &self.secret
    }

    /// Where it came from.
    pub fn source(&self) -> &Source {
        &self.source
    }
}

impl fmt::Debug for ManagementToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ManagementToken(<redacted>, from {})", self.source)
    }
}

/// Finds the management token for `url`: token file, then `FLUXGATE_TOKEN`,
/// then the OS keyring. None anywhere is an authentication error that names
/// all three.
pub fn load(token_file: Option<&Path>, url: &AuthzUrl) -> Result<ManagementToken, CliError> {
    if let Some(path) = token_file {
        return read_token_file(path);
    }
    if let Some(value) = std::env::var_os(TOKEN_ENV) {
        let Some(value) = value.to_str() else {
            return Err(CliError::authentication(format!(
                "{TOKEN_ENV} is not valid UTF-8"
            )));
        };
        if !value.trim().is_empty() {
            return ManagementToken::new(value, Source::Env);
        }
    }
    let keyring_note = match read_keyring(url) {
        Ok(Some(secret)) => {
            let secret = Zeroizing::new(secret);
            return ManagementToken::new(&secret, Source::Keyring);
        }
        Ok(None) => String::new(),
        Err(why) => format!(" (the OS keyring could not be read: {why})"),
    };
    Err(CliError::authentication(format!(
        "no management token: pass --token-file PATH, set {TOKEN_ENV}, or store one in the OS keyring with `fluxgate login --authz {url}`{keyring_note}"
    )))
}

/// Reads a token file (at most [`MAX_TOKEN_FILE`] bytes).
pub fn read_token_file(path: &Path) -> Result<ManagementToken, CliError> {
    let cannot = |why: String| {
        CliError::authentication(format!(
            "cannot read the token file {}: {why}",
            path.display()
        ))
    };
    let file = std::fs::File::open(path).map_err(|e| cannot(e.to_string()))?;
    if let Some(warning) = crate::hardening::exposure_warning(path, "--token-file") {
        eprintln!("fluxgate: warning: {warning}");
    }
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_TOKEN_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| cannot(e.to_string()))?;
    if bytes.len() as u64 > MAX_TOKEN_FILE {
        return Err(cannot(format!(
            "it is larger than {MAX_TOKEN_FILE} bytes; is it the right file?"
        )));
    }
    let text =
        std::str::from_utf8(&bytes).map_err(|_| cannot("it is not UTF-8 text".to_owned()))?;
    ManagementToken::new(text, Source::File(path.to_owned()))
}

/// The token stored for `url`; `Ok(None)` when there is none, `Err` (a
/// message) when the keyring itself cannot be used.
fn read_keyring(url: &AuthzUrl) -> Result<Option<String>, String> {
    keyring_store::get(url.as_str()).map_err(|e| keyring_store::describe(&e))
}

/// Stores `token` as the management token for `url`. A keyring that cannot
/// be used here (no keyring service, keyutils blocked in a container) is an
/// "unavailable" error naming the alternatives.
pub fn store_in_keyring(url: &AuthzUrl, token: &ManagementToken) -> Result<(), CliError> {
    keyring_store::set(url.as_str(), token.expose()).map_err(|e| {
        let why = keyring_store::describe(&e);
        match e {
            keyring::Error::TooLong(..) | keyring::Error::Invalid(..) => {
                CliError::other(format!("cannot store the token in the OS keyring: {why}"))
            }
            _ => CliError::unavailable(format!(
                "the OS keyring is unavailable ({why}); give the token with --token-file PATH or the {TOKEN_ENV} environment variable instead"
            )),
        }
    })
}

/// Removes the token stored for `url`; `Ok(false)` when there was none.
pub fn delete_from_keyring(url: &AuthzUrl) -> Result<bool, CliError> {
    keyring_store::delete(url.as_str()).map_err(|e| {
        CliError::unavailable(format!(
            "the OS keyring is unavailable ({})",
            keyring_store::describe(&e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::error::ErrorKind;

    #[test]
    fn tokens_are_trimmed_and_checked() {
        let t = ManagementToken::new("  fgmt_abc\n", Source::Env).expect("valid");
        assert_eq!(t.expose(), "fgmt_abc");
        assert_eq!(
            ManagementToken::new(" \n", Source::Env)
                .expect_err("empty")
                .kind(),
            ErrorKind::Authentication
        );
        let e = ManagementToken::new("fgmt_a b", Source::Env).expect_err("space");
        assert!(!e.to_string().contains("fgmt_a"));
        assert!(!format!("{t:?}").contains("fgmt_abc"));
    }

    #[test]
    fn token_files_are_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("token");
        std::fs::write(&path, "fgmt_xyz\n").expect("write");
        assert_eq!(read_token_file(&path).expect("read").expose(), "fgmt_xyz");
        let missing = read_token_file(&dir.path().join("nope")).expect_err("missing");
        assert_eq!(missing.kind(), ErrorKind::Authentication);
    }
}
