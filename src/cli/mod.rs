//! The management command line (`fluxgate token …`, `fluxgate management …`,
//! `fluxgate proxy-token …`, `fluxgate login`, `fluxgate database …`), a
//! client of the token service's management API (and, for databases, of
//! the proxy) in the style of `influxctl`.
//!
//! - [`crate::config::commands`]: the flags (scripts depend on them).
//! - [`client`]: the `--authz` URL, connection and token metadata.
//! - [`credentials`] and [`keyring_store`]: where the management token comes from.
//! - [`input`]: checks of permissions and expiry flags.
//! - [`output`], [`table`] and [`show`]: tables and JSON; [`listing`]: lists
//!   fetched and printed page by page.
//! - [`token`], [`management`], [`proxy_token`], [`revoke`], [`login`]: the commands.
//! - [`database`]: database administration through the proxy.
//! - [`error`]: messages and the exit codes (documented there and in `--help`).

pub mod client;
pub mod credentials;
pub mod database;
pub mod error;
pub mod input;
pub mod keyring_store;
pub mod listing;
pub mod login;
pub mod management;
pub mod output;
pub mod proxy_token;
pub mod revoke;
pub mod show;
pub mod table;
pub mod terminal;
pub mod token;
pub mod url;

use std::process::ExitCode;

use error::CliError;

/// Runs `fluxgate token …`.
pub async fn run_token(command: crate::config::commands::TokenCommand) -> ExitCode {
    finish(token::run(command).await)
}

/// Runs `fluxgate management …`.
pub async fn run_management(command: crate::config::commands::ManagementCommand) -> ExitCode {
    finish(management::run(command).await)
}

/// Runs `fluxgate proxy-token …`.
pub async fn run_proxy_token(command: crate::config::commands::ProxyTokenCommand) -> ExitCode {
    finish(proxy_token::run(command).await)
}

/// Runs `fluxgate database …`.
pub async fn run_database(command: crate::config::commands::DatabaseCommand) -> ExitCode {
    finish(database::run(command).await)
}

/// Runs `fluxgate login`.
pub async fn run_login(args: crate::config::commands::LoginArgs) -> ExitCode {
    finish(login::run(args).await)
}

/// Success, or the error's one stderr line and exit code.
fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
