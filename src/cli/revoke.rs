//! `fluxgate token revoke`, `fluxgate management revoke` and `fluxgate
//! proxy-token revoke`: confirmation,
//! then one call per id, reporting each.
//!
//! Confirmation is asked on a terminal unless `--force`; without a terminal
//! (a script, CI) the command refuses unless `--force`, so a pipeline can
//! never revoke by accident. An id that is not found does not stop the
//! others; a failure that would fail every call (credentials, connection)
//! stops at once.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use super::client::{AuthzUrl, Client};
use super::credentials;
use super::error::{CliError, ErrorKind};
use super::output;
use crate::config::commands::RevokeArgs;
use crate::proto::tokens as pb;

/// Which kind of token to revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `fluxgate token revoke`.
    Database,
    /// `fluxgate management revoke`.
    Management,
    /// `fluxgate proxy-token revoke`.
    Proxy,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Database => "database token",
            Kind::Management => "management token",
            Kind::Proxy => "proxy token",
        }
    }
}

/// Revokes `args.ids` (duplicates once), asking first unless `args.force`.
pub async fn run(args: &RevokeArgs, kind: Kind) -> Result<(), CliError> {
    let RevokeArgs { conn, force, ids } = args;
    let force = *force;
    let url = AuthzUrl::parse(&conn.authz)?;
    let mut unique: Vec<String> = Vec::with_capacity(ids.len());
    for id in ids {
        if !unique.contains(id) {
            unique.push(id.clone());
        }
    }
    let ids = unique;
    if !force && !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "refusing to revoke without confirmation: standard input is not a terminal; pass --force",
        ));
    }
    let token = credentials::load(conn.token_file.as_deref(), &url)?;
    if !force && !confirm(&ids, kind)? {
        return Err(CliError::other("cancelled: nothing was revoked"));
    }
    let client = Client::connect(url, token, &conn.tls).await?;

    let total = ids.len();
    let mut revoked = 0usize;
    let mut failures: Vec<CliError> = Vec::new();
    for id in ids {
        let doing = format!("cannot revoke {} {id}", kind.noun());
        let request = pb::RevokeTokenRequest { id: id.clone() };
        let result = match kind {
            Kind::Database => {
                client
                    .call(&doing, |mut c| async move {
                        c.revoke_database_token(request).await
                    })
                    .await
            }
            Kind::Management => {
                client
                    .call(&doing, |mut c| async move {
                        c.revoke_management_token(request).await
                    })
                    .await
            }
            Kind::Proxy => {
                client
                    .call(&doing, |mut c| async move {
                        c.revoke_proxy_token(request).await
                    })
                    .await
            }
        };
        match result {
            Ok(_) => {
                revoked += 1;
                output::to_stdout(|out| writeln!(out, "Revoked {} {id}", kind.noun()))?;
            }
            // Specific to this id: go on with the others.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Usage) => {
                failures.push(e);
            }
            Err(e) => {
                let progress = if revoked > 0 {
                    format!(" ({revoked} of {total} revoked before this error)")
                } else {
                    String::new()
                };
                return Err(e.with_suffix(&progress));
            }
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 if total == 1 => Err(failures.remove(0)),
        n => {
            let kind_of = failures[0].kind();
            let details: Vec<String> = failures.iter().map(ToString::to_string).collect();
            Err(CliError::new(
                kind_of,
                format!(
                    "{n} of {total} {}s not revoked: {}",
                    kind.noun(),
                    details.join("; ")
                ),
            ))
        }
    }
}

/// Asks `Revoke N token(s) ID…? [y/N]` on stderr; true only for y or yes.
fn confirm(ids: &[String], kind: Kind) -> Result<bool, CliError> {
    ask(&format!(
        "Revoke {} {}(s) {}?",
        ids.len(),
        kind.noun(),
        ids.join(", ")
    ))
}

/// Asks `question` on the terminal; true for "y" or "yes".
pub(crate) fn ask(question: &str) -> Result<bool, CliError> {
    let mut stderr = std::io::stderr().lock();
    write!(stderr, "{question} [y/N] ")
        .and_then(|()| stderr.flush())
        .map_err(|e| CliError::other(format!("cannot ask for confirmation: {e}")))?;
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::other(format!("cannot read the confirmation: {e}")))?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}
