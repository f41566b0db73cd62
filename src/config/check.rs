//! `fluxgate check-config`: validates a configuration file for one command,
//! exactly as that command would read it, and describes the result.

use super::file::{ConfigError, parse_args};
use super::options::{CheckConfigArgs, Command, TokenServiceOptions};

/// The store as `--store` and friends describe it (never a password).
fn store(options: &TokenServiceOptions) -> Result<String, ConfigError> {
    crate::tokens::StoreLocation::from_options(
        options.store.as_deref(),
        &options.data_dir,
        options.store_password_file.as_deref(),
    )
    .map(|l| l.describe())
    .map_err(|e| {
        ConfigError::Usage(clap::Error::raw(
            clap::error::ErrorKind::ValueValidation,
            format!("{e}\n"),
        ))
    })
}

/// Validates `args.config` for `args.target`; returns a short description of
/// the effective settings.
pub fn check(args: &CheckConfigArgs) -> Result<String, ConfigError> {
    let mut argv = vec!["fluxgate".to_owned(), args.target.command_name().to_owned()];
    if let Some(path) = &args.config {
        argv.push(format!("--config={}", path.display()));
    }
    let cli = parse_args(argv)?;
    let summary = match cli.command {
        Command::Serve(a) => format!(
            "serve: proxy on {} → {}, token service on {}, data in {}, store {}, admin on {}",
            a.proxy.listen,
            a.proxy.upstream,
            a.authz_listen,
            a.service.data_dir.display(),
            store(&a.service)?,
            a.common.admin_listen
        ),
        Command::Proxy(a) => format!(
            "proxy: on {} → {}, token service {}, admin on {}",
            a.proxy.listen,
            a.proxy.upstream,
            a.authz
                .authz
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            a.common.admin_listen
        ),
        Command::Authz(a) => format!(
            "authz: on {}, data in {}, store {}, admin on {}",
            a.listen,
            a.service.data_dir.display(),
            store(&a.service)?,
            a.common.admin_listen
        ),
        _ => "ok".to_owned(),
    };
    Ok(summary)
}
