//! `check-config`'s second half: what a command would refuse at start,
//! checked without side effects, by the same functions the command uses.

use std::sync::Arc;

use crate::audit::{Audit, Destination};
use crate::authz::Authorizer;
use crate::authz::client::ProxyCredential;
use crate::config::{ProxyOptions, TokenServiceOptions};
use crate::tls;

use super::{build_proxy, store_location};

/// An authorizer that never decides: [`build_proxy`] needs one to check a
/// configuration without serving it.
#[derive(Debug)]
struct NoAuthorizer;

#[async_trait::async_trait]
impl Authorizer for NoAuthorizer {
    async fn check(
        &self,
        _token: &crate::credentials::Token,
        _needs: &[crate::authz::Need],
    ) -> Result<crate::authz::Verdict, crate::authz::AuthzError> {
        Err(crate::authz::AuthzError::Unavailable(
            "configuration check".to_owned(),
        ))
    }

    async fn ready(&self) -> Result<(), String> {
        Err("configuration check".to_owned())
    }
}

/// What `check-config` verifies beyond parsing: everything the command
/// would refuse at start that can be checked without side effects (TLS
/// files, URLs, secret files, the audit destination, the data directory).
/// Uses the same functions the command uses at start. `offline`: only
/// what needs no file.
pub async fn preflight(command: &crate::config::Command, offline: bool) -> anyhow::Result<()> {
    use crate::config::Command;
    if offline {
        return match command {
            Command::Serve(a) => {
                check_audit_required(&a.proxy)?;
                check_store(&a.service, true)
            }
            Command::Proxy(a) => check_audit_required(&a.proxy),
            Command::Authz(a) => check_store(&a.service, true),
            _ => Ok(()),
        };
    }
    match command {
        Command::Serve(a) => {
            tls::options::proxy_listener(&a.proxy)?;
            tls::options::serve_token_service_listener(&a.authz_tls)?;
            check_audit_destination(&a.proxy)?;
            build_proxy(&a.proxy, Arc::new(NoAuthorizer), Audit::off())?;
            check_data_dir(&a.service)
        }
        Command::Proxy(a) => {
            tls::options::proxy_listener(&a.proxy)?;
            tls::options::authz_endpoints(&a.authz)?;
            if let Some(path) = &a.authz.authz_token_file {
                ProxyCredential::from_file(path)?;
            }
            check_audit_destination(&a.proxy)?;
            build_proxy(&a.proxy, Arc::new(NoAuthorizer), Audit::off())?;
            Ok(())
        }
        Command::Authz(a) => {
            tls::options::token_service_listener(&a.tls)?;
            check_data_dir(&a.service)
        }
        _ => Ok(()),
    }
}

fn check_audit_required(options: &ProxyOptions) -> anyhow::Result<()> {
    let destination: Destination = options.audit_log.parse().unwrap_or(Destination::Off);
    anyhow::ensure!(
        !(options.audit_required && destination == Destination::Off),
        "--audit-required needs an --audit-log destination (a file or stdout)"
    );
    Ok(())
}

pub(super) fn check_audit_destination(options: &ProxyOptions) -> anyhow::Result<()> {
    check_audit_required(options)?;
    let destination: Destination = options.audit_log.parse().unwrap_or(Destination::Off);
    if let Destination::File(path) = &destination {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        anyhow::ensure!(
            parent.is_dir(),
            "--audit-log {}: the directory {} does not exist",
            path.display(),
            parent.display()
        );
        anyhow::ensure!(
            !path.is_dir(),
            "--audit-log {} is a directory",
            path.display()
        );
    }
    Ok(())
}

fn check_data_dir(options: &TokenServiceOptions) -> anyhow::Result<()> {
    let dir = &options.data_dir;
    anyhow::ensure!(
        !dir.exists() || dir.is_dir(),
        "--data-dir {} exists and is not a directory",
        dir.display()
    );
    check_store(options, false)
}

/// `--store` and its password file as the token service reads them at
/// start (without connecting); `offline`: the URL only.
fn check_store(options: &TokenServiceOptions, offline: bool) -> anyhow::Result<()> {
    let location = store_location(options)?;
    if !offline {
        location.connect_options()?;
    }
    Ok(())
}
