//! fluxgate: a token-authorization sidecar for InfluxDB.
//!
//! - [`tokens`]: the token service (store, Authorize, management API).
//! - [`authz`]: the proxy's side of authorization (client, decision cache,
//!   invalidation).
//! - [`proxy`]: the authorizing reverse proxy (HTTP and Flight).
//! - [`cli`]: the management command line.
//! - [`config`] and [`telemetry`]: configuration, logs and metrics.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod proto;
pub mod telemetry;
pub mod tokens;

use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// Runs a parsed command line to completion.
pub async fn run(cli: config::Cli) -> ExitCode {
    use config::Command;
    let (common, result) = match cli.command {
        Command::Authz(args) => {
            let common = args.common.clone();
            if let Err(e) = telemetry::init_logging(common.log_format, common.log_level.as_deref())
            {
                eprintln!("fluxgate: {e:#}");
                return ExitCode::from(2);
            }
            let shutdown = CancellationToken::new();
            let trigger = shutdown.clone();
            tokio::spawn(async move {
                app::shutdown_signal().await;
                trigger.cancel();
            });
            (common, app::run_authz(args, shutdown).await)
        }
        other => {
            eprintln!("fluxgate: {other:?} is not available yet");
            return ExitCode::from(2);
        }
    };
    let _ = common;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("fluxgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
