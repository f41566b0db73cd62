//! Where the token store is: `--store URL`, either `sqlite://PATH` or
//! `postgres://USER@HOST:PORT/DB?sslmode=verify-full&sslrootcert=CA.pem`,
//! with the PostgreSQL password from `--store-password-file`; without
//! `--store`, the SQLite file under `--data-dir`, exactly as before.
//!
//! The password never appears in a message: a location is shown as its
//! backend, host, port and database only.

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::postgres::PgStore;
use super::sqlite::{DB_FILE, SqliteStore};
use super::store::{StoreError, TokenStore};

/// A parsed `--store`. Its `Debug` shows [`StoreLocation::describe`] only:
/// the connection options hold the password.
#[derive(Clone)]
pub enum StoreLocation {
    /// An SQLite file.
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The default file under `--data-dir` (the directory is created
        /// private, as it always was).
        data_dir: Option<PathBuf>,
    },
    /// A PostgreSQL database.
    Postgres {
        /// Connection options (with the URL's password, if it had one).
        options: Box<PgConnectOptions>,
        /// The password's file, read when connecting.
        password_file: Option<PathBuf>,
        /// How it is shown (no password).
        shown: String,
    },
}

impl std::fmt::Debug for StoreLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("StoreLocation")
            .field(&self.describe())
            .finish()
    }
}

fn config(message: String) -> StoreError {
    StoreError::Config(message)
}

/// The password part of a URL's user information, if any, without parsing
/// anything else (the driver parses the URL).
fn has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

/// Reads a secret file: its first line, which must not be empty. Warns when
/// the file is readable by others.
fn read_password(flag: &str, path: &Path) -> Result<String, StoreError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| config(format!("cannot read {flag} {}: {e}", path.display())))?;
    #[cfg(unix)]
    if let Ok(meta) = std::fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt as _;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "{flag} is readable by group or others; make it 0600 (or 0400)");
        }
    }
    let password = text.lines().next().unwrap_or_default().to_owned();
    if password.is_empty() {
        return Err(config(format!("{flag} {} is empty", path.display())));
    }
    Ok(password)
}

impl StoreLocation {
    /// From `--store`, `--data-dir` and `--store-password-file`.
    pub fn from_options(
        store: Option<&str>,
        data_dir: &Path,
        password_file: Option<&Path>,
    ) -> Result<Self, StoreError> {
        let Some(url) = store.map(str::trim).filter(|s| !s.is_empty()) else {
            if password_file.is_some() {
                return Err(config(
                    "--store-password-file applies to a postgres:// --store only".to_owned(),
                ));
            }
            return Ok(StoreLocation::Sqlite {
                path: data_dir.join(DB_FILE),
                data_dir: Some(data_dir.to_owned()),
            });
        };
        let scheme = url
            .split_once("://")
            .map(|(s, _)| s.to_ascii_lowercase())
            .unwrap_or_default();
        match scheme.as_str() {
            "sqlite" => {
                if password_file.is_some() {
                    return Err(config(
                        "--store-password-file applies to a postgres:// --store only".to_owned(),
                    ));
                }
                let path = &url["sqlite://".len()..];
                let path = path.split(['?', '#']).next().unwrap_or_default();
                if path.is_empty() {
                    return Err(config(
                        "--store sqlite:// needs a file path: sqlite:///var/lib/fluxgate/fluxgate.db"
                            .to_owned(),
                    ));
                }
                Ok(StoreLocation::Sqlite {
                    path: PathBuf::from(path),
                    data_dir: None,
                })
            }
            "postgres" | "postgresql" => {
                let in_url = has_password(url);
                let options = PgConnectOptions::from_str(url)
                    .map_err(|e| config(format!("--store is not a valid postgres:// URL: {e}")))?;
                match password_file {
                    Some(_) if in_url => {
                        return Err(config(
                            "--store carries a password and --store-password-file is set: keep the password in the file only".to_owned(),
                        ));
                    }
                    None if in_url => tracing::warn!(
                        "the --store URL carries a password, which ends up in process listings and config files; use --store-password-file"
                    ),
                    _ => {}
                }
                let shown = format!(
                    "PostgreSQL {}:{}/{}{}",
                    options.get_host(),
                    options.get_port(),
                    options.get_database().unwrap_or(options.get_username()),
                    match options.get_ssl_mode() {
                        PgSslMode::VerifyFull => " (TLS, verify-full)",
                        PgSslMode::VerifyCa => " (TLS, verify-ca)",
                        PgSslMode::Require => " (TLS, unverified)",
                        _ => "",
                    }
                );
                Ok(StoreLocation::Postgres {
                    options: Box::new(options),
                    password_file: password_file.map(Path::to_owned),
                    shown,
                })
            }
            _ => Err(config(format!(
                "--store must be sqlite://PATH or postgres://USER@HOST:PORT/DATABASE, got a {} URL",
                if scheme.is_empty() {
                    "scheme-less".to_owned()
                } else {
                    format!("{scheme}://")
                }
            ))),
        }
    }

    /// How the location is shown (never with a password).
    pub fn describe(&self) -> String {
        match self {
            StoreLocation::Sqlite { path, .. } => format!("SQLite {}", path.display()),
            StoreLocation::Postgres { shown, .. } => shown.clone(),
        }
    }

    /// True for a store shared by several processes.
    pub fn is_shared(&self) -> bool {
        matches!(self, StoreLocation::Postgres { .. })
    }

    /// PostgreSQL's connection options, with the password read from its
    /// file; `None` for SQLite.
    pub fn connect_options(&self) -> Result<Option<PgConnectOptions>, StoreError> {
        let StoreLocation::Postgres {
            options,
            password_file,
            ..
        } = self
        else {
            return Ok(None);
        };
        let options = (**options).clone();
        Ok(Some(match password_file {
            Some(file) => options.password(&read_password("--store-password-file", file)?),
            None => options,
        }))
    }

    /// Opens the store (migrating its schema).
    pub async fn open(&self) -> Result<Arc<dyn TokenStore>, StoreError> {
        Ok(match self {
            StoreLocation::Sqlite {
                data_dir: Some(dir),
                ..
            } => Arc::new(SqliteStore::open(dir).await?),
            StoreLocation::Sqlite { path, .. } => Arc::new(SqliteStore::open_file(path).await?),
            StoreLocation::Postgres { shown, .. } => {
                let options = self.connect_options()?.unwrap_or_default();
                Arc::new(PgStore::connect(options, shown.clone()).await?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(store: Option<&str>) -> Result<StoreLocation, StoreError> {
        StoreLocation::from_options(store, Path::new("/data"), None)
    }

    #[test]
    fn default_is_the_file_under_the_data_dir() {
        let l = parse(None).unwrap();
        assert_eq!(l.describe(), "SQLite /data/fluxgate.db");
        let l = parse(Some("sqlite:///var/x.db")).unwrap();
        assert_eq!(l.describe(), "SQLite /var/x.db");
        assert!(parse(Some("sqlite://")).is_err());
    }

    #[test]
    fn postgres_urls_are_shown_without_their_password() {
        let l = parse(Some(
            "postgres://fluxgate:s3cret@db.example:6543/tokens?sslmode=verify-full",
        ))
        .unwrap();
        let shown = l.describe();
        assert_eq!(
            shown,
            "PostgreSQL db.example:6543/tokens (TLS, verify-full)"
        );
        assert!(l.is_shared());
        assert!(!format!("{l:?}").contains("s3cret"));
    }

    #[test]
    fn bad_urls_and_flag_mixes_are_refused_without_echo() {
        let e = parse(Some("mysql://u:s3cret@h/db"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mysql://") && !e.contains("s3cret"), "{e}");
        let e = StoreLocation::from_options(None, Path::new("/d"), Some(Path::new("/p")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("postgres://"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw\n").unwrap();
        let e = StoreLocation::from_options(
            Some("postgres://u:inline@h/db"),
            Path::new("/d"),
            Some(&file),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("password") && !e.contains("inline"), "{e}");
        let l =
            StoreLocation::from_options(Some("postgres://u@h/db"), Path::new("/d"), Some(&file))
                .unwrap();
        assert!(l.connect_options().unwrap().is_some());
        std::fs::write(&file, "\n").unwrap();
        let e = l.connect_options().unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
        // Checking a configuration does not need the file.
        std::fs::remove_file(&file).unwrap();
        assert!(
            StoreLocation::from_options(Some("postgres://u@h/db"), Path::new("/d"), Some(&file))
                .is_ok()
        );
    }

    #[test]
    fn passwords_are_detected_in_urls() {
        assert!(has_password("postgres://u:p@h/db"));
        assert!(!has_password("postgres://u@h/db"));
        assert!(!has_password("postgres://h/db?x=a:b@c"));
    }
}
