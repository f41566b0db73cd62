//! `fluxgate login`: checks a management token against the token service and
//! stores it in the OS keyring, where the other commands find it when no
//! `--token-file` or `FLUXGATE_TOKEN` is given. `--remove` deletes it.
//!
//! The token is read from `--token-file` when given, else from standard
//! input: a prompt without echo on a terminal, the first line otherwise
//! (`fluxgate login < token-file`, or piped from a secret manager).

use std::io::{BufRead as _, IsTerminal as _, Read as _};

use super::client::{AuthzUrl, Client};
use super::credentials::{self, ManagementToken, Source};
use super::error::CliError;
use super::keyring_store::{self, SERVICE as KEYRING_SERVICE};
use super::output;
use crate::config::commands::LoginArgs;
use crate::proto::tokens as pb;

/// Longest line read from standard input.
const MAX_LINE: u64 = 64 * 1024;

/// Runs `fluxgate login`.
pub async fn run(args: LoginArgs) -> Result<(), CliError> {
    let url = AuthzUrl::parse(&args.conn.authz)?;
    if args.remove {
        let removed = credentials::delete_from_keyring(&url)?;
        let message = if removed {
            format!("Removed the management token for {url} from the OS keyring.")
        } else {
            format!("No management token for {url} in the OS keyring.")
        };
        return output::to_stdout(|out| writeln!(out, "{message}"));
    }
    let token = match &args.conn.token_file {
        Some(path) => credentials::read_token_file(path)?,
        None => read_stdin(&url)?,
    };
    let client = Client::connect(url, token, &args.conn.tls).await?;
    // Storing a token the service refuses would only defer the failure.
    client
        .call("cannot verify the management token", |mut c| async move {
            c.list_management_tokens(pb::ListTokensRequest {
                include_revoked: false,
                page_size: 1,
                page_token: String::new(),
            })
            .await
        })
        .await?;
    credentials::store_in_keyring(client.url(), client.token())?;
    let lifetime = if keyring_store::forgets_on_reboot() {
        ", until the next reboot"
    } else {
        ""
    };
    let url = client.url().clone();
    output::to_stdout(|out| {
        writeln!(
            out,
            "Stored the management token for {url} in the OS keyring\n\
             (service \"{KEYRING_SERVICE}\", user \"{url}\"{lifetime})."
        )
    })
}

/// A token from standard input: prompted without echo on a terminal, the
/// first line otherwise.
fn read_stdin(url: &AuthzUrl) -> Result<ManagementToken, CliError> {
    let stdin = std::io::stdin();
    let text = if stdin.is_terminal() {
        rpassword::prompt_password(format!("Management token for {url}: "))
            .map_err(|e| CliError::other(format!("cannot read the token: {e}")))?
    } else {
        let mut line = String::new();
        stdin
            .lock()
            .take(MAX_LINE)
            .read_line(&mut line)
            .map_err(|e| {
                CliError::usage(format!("cannot read the token from standard input: {e}"))
            })?;
        line
    };
    if text.trim().is_empty() {
        return Err(CliError::usage(
            "no management token on standard input (or give --token-file PATH)",
        ));
    }
    ManagementToken::new(&text, Source::Stdin)
}
