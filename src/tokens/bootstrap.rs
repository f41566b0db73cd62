//! The first management token, and the way back when every management token
//! is lost.
//!
//! - On a store with no token at all, the service creates one management
//!   token and writes it once to `DATA_DIR/bootstrap-management-token`
//!   (mode 0600). With several replicas starting together on an empty
//!   store, the store lets exactly one of them create it; the others remove
//!   the file they had prepared.
//! - `fluxgate authz bootstrap` mints a new management token straight into
//!   the store and writes it to a new 0600 file, refusing to overwrite one.
//!   It needs what only the store's host (or its database credentials)
//!   gives: the SQLite file or the PostgreSQL password. Nothing reachable
//!   over the network can do this. Running replicas pick the token up
//!   through the change log.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::model::{TokenKind, TokenRecord};
use super::registry::{RegistryError, TokenRegistry};
use super::secret::NewToken;
use super::store::{StoreError, TokenStore, Write, WriteOutcome};

/// File, inside the data directory, holding the first management token.
pub const BOOTSTRAP_TOKEN_FILE: &str = "bootstrap-management-token";

/// Errors of the bootstrap and of the recovery.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Creating the token failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Writing the file failed (an existing file is never overwritten).
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Creates `path` for a secret: it must not exist, mode 0600.
fn create_secret_file(path: &Path) -> Result<File, BootstrapError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(|source| BootstrapError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Writes `token` to `file` and syncs it; on failure the file is removed.
fn fill_secret_file(mut file: File, path: &Path, token: NewToken) -> Result<(), BootstrapError> {
    // Zeroed when dropped: the string is the secret.
    let mut secret = zeroize::Zeroizing::new(token.into_string());
    secret.push('\n');
    let written = file
        .write_all(secret.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        let _ = std::fs::remove_file(path);
        return Err(BootstrapError::Write {
            path: path.to_owned(),
            source,
        });
    }
    Ok(())
}

/// On first start (no token at all), creates a management token and writes
/// it once to `data_dir/bootstrap-management-token`, mode 0600. Returns the
/// file's path when it did. Only the path is ever logged.
pub async fn bootstrap(
    registry: &TokenRegistry,
    data_dir: &Path,
) -> Result<Option<PathBuf>, BootstrapError> {
    if !registry.is_empty() {
        return Ok(None);
    }
    let path = data_dir.join(BOOTSTRAP_TOKEN_FILE);
    // The file exists before the token, so a failure leaves no management
    // token that nobody can ever read.
    let file = create_secret_file(&path)?;
    let created = registry
        .create_first_management_token("bootstrap management token".into())
        .await;
    let (record, token) = match created {
        Ok(Some(created)) => created,
        // Another replica created the first token.
        Ok(None) => {
            let _ = std::fs::remove_file(&path);
            return Ok(None);
        }
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            return Err(e.into());
        }
    };
    fill_secret_file(file, &path, token)?;
    tracing::warn!(token_id = %record.id, path = %path.display(), "created the first management token; move it to a secret store and delete the file");
    Ok(Some(path))
}

/// Mints a new management token directly in `store` and writes it to the
/// new file `out` (mode 0600; an existing file is never overwritten).
/// Returns the new token's record.
pub async fn mint_recovery_token(
    store: &dyn TokenStore,
    out: &Path,
) -> Result<Arc<TokenRecord>, BootstrapError> {
    let file = create_secret_file(out)?;
    let minted = TokenRegistry::new_token(
        TokenKind::Management,
        "recovery management token (fluxgate authz bootstrap)".into(),
        Vec::new(),
        None,
    );
    let (record, token) = match minted {
        Ok(minted) => minted,
        Err(e) => {
            let _ = std::fs::remove_file(out);
            return Err(e.into());
        }
    };
    let written = store.write(&[Write::Create(record)]).await;
    let record = match written.map(|mut o| o.pop()) {
        Ok(Some(WriteOutcome::Done {
            token: Some(record),
            ..
        })) => record,
        Ok(other) => {
            let _ = std::fs::remove_file(out);
            return Err(
                StoreError::Corrupt(format!("the store answered a create with {other:?}")).into(),
            );
        }
        Err(e) => {
            let _ = std::fs::remove_file(out);
            return Err(e.into());
        }
    };
    fill_secret_file(file, out, token)?;
    tracing::warn!(token_id = %record.id, path = %out.display(), "minted a recovery management token");
    Ok(Arc::new(record))
}
