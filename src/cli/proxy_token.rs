//! `fluxgate proxy-token create|list|revoke`: the least-privileged tokens
//! proxies present to follow the token change stream.

use std::time::SystemTime;

use super::client::Client;
use super::error::CliError;
use super::input;
use super::listing;
use super::revoke::{self, Kind};
use super::show::{self, ListKind};
use crate::config::commands::ProxyTokenCommand;
use crate::proto::tokens as pb;

/// Runs one `fluxgate proxy-token …` command.
pub async fn run(command: ProxyTokenCommand) -> Result<(), CliError> {
    match command {
        ProxyTokenCommand::Create {
            conn,
            expiry,
            format,
            description,
        } => {
            input::description(&description)?;
            let expires_at = input::expiry(&expiry, SystemTime::now())?;
            let client = Client::open(&conn).await?;
            let request = pb::CreateProxyTokenRequest {
                description,
                expires_at,
            };
            let created = client
                .call("cannot create the proxy token", |mut c| async move {
                    c.create_proxy_token(request).await
                })
                .await?;
            show::created(created, format)
        }
        ProxyTokenCommand::List(args) => listing::list(ListKind::Proxy, &args).await,
        ProxyTokenCommand::Revoke(args) => revoke::run(&args, Kind::Proxy).await,
    }
}
