//! fluxgate: a token-authorization sidecar for InfluxDB.
//!
//! - [`tokens`]: the token service (store, Authorize, management API).
//! - [`authz`]: the proxy's side of authorization (client, decision cache,
//!   invalidation).
//! - [`proxy`]: the authorizing reverse proxy (HTTP and Flight).
//! - [`cli`]: the management command line.
//! - [`tls`]: TLS for the listeners, the upstream and the token service.
//! - [`config`] and [`telemetry`]: configuration, logs and metrics.
#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod accept;
pub mod admin;
pub mod app;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod hardening;
pub mod proto;
pub mod proxy;
pub mod telemetry;
pub mod tls;
pub mod tokens;

use std::future::Future;
use std::process::ExitCode;

use tokio_util::sync::CancellationToken;

/// Runs a parsed command line to completion and returns the exit code.
pub async fn run(cli: config::Cli) -> ExitCode {
    use config::Command;
    match cli.command {
        Command::Authz(args) => match args.action.clone() {
            Some(config::AuthzAction::Bootstrap(bootstrap)) => run_bootstrap(bootstrap).await,
            None => {
                let common = args.common.clone();
                run_server(&common, |shutdown| app::run_authz(args, shutdown)).await
            }
        },
        Command::Proxy(args) => {
            let common = args.common.clone();
            run_server(&common, |shutdown| app::run_proxy(args, shutdown)).await
        }
        Command::Serve(args) => {
            let common = args.common.clone();
            run_server(&common, |shutdown| app::run_serve(args, shutdown)).await
        }
        Command::Token(command) => cli::run_token(command).await,
        Command::Management(command) => cli::run_management(command).await,
        Command::ProxyToken(command) => cli::run_proxy_token(command).await,
        Command::Database(command) => cli::run_database(command).await,
        Command::Login(args) => cli::run_login(args).await,
        Command::CheckConfig(args) => check_config(&args).await,
    }
}

/// `fluxgate authz bootstrap`: warnings and errors on stderr, the result on
/// stdout.
async fn run_bootstrap(args: config::BootstrapArgs) -> ExitCode {
    // Another subscriber may already be installed (tests): not an error.
    let _ = telemetry::init_logging(config::LogFormat::Text, Some("warn"));
    match app::run_bootstrap(args).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fluxgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `fluxgate check-config`: parses the file as the command would, runs
/// the command's start-up checks, and prints every setting it takes.
async fn check_config(args: &config::CheckConfigArgs) -> ExitCode {
    // Warnings (a secret file others can read) go to stderr.
    let _ = telemetry::init_logging(config::LogFormat::Text, Some("warn"));
    let checked = match config::check(args) {
        Ok(checked) => checked,
        Err(config::ConfigError::Usage(e)) => {
            // clap's message without its usage footer, on one line.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|l| !l.is_empty())
                .map(str::trim)
                .collect();
            eprintln!(
                "fluxgate: {}",
                message.join(" ").trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("fluxgate: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = app::preflight(&checked.command, args.offline).await {
        eprintln!("fluxgate: {e:#}");
        return ExitCode::from(2);
    }
    print!("{}", checked.report);
    println!(
        "configuration OK for `fluxgate {}`",
        args.target.command_name()
    );
    ExitCode::SUCCESS
}

/// Sets up logging and signals for a long-running command and runs it.
async fn run_server<F, Fut>(common: &config::CommonOptions, run: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    if let Err(e) = telemetry::init_logging(common.log_format, common.log_level.as_deref()) {
        eprintln!("fluxgate: {e:#}");
        return ExitCode::from(2);
    }
    // Before any secret is read: no core file, no ptrace by the same user.
    if common.allow_core_dumps {
        tracing::info!("--allow-core-dumps: the process may be core-dumped and traced");
    } else if let Err(e) = hardening::forbid_core_dumps() {
        tracing::warn!(error = %e, "cannot mark the process not dumpable; tokens in memory may reach a core dump");
    }
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        app::shutdown_signal().await;
        trigger.cancel();
    });
    match run(shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("fluxgate: {e:#}");
            ExitCode::FAILURE
        }
    }
}
