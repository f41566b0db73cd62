//! `fluxgate management create|list|revoke`: management tokens.

use std::time::SystemTime;

use super::client::Client;
use super::error::CliError;
use super::input;
use super::listing;
use super::revoke::{self, Kind};
use super::show::{self, ListKind};
use crate::config::commands::ManagementCommand;
use crate::proto::tokens as pb;

/// Runs one `fluxgate management …` command.
pub async fn run(command: ManagementCommand) -> Result<(), CliError> {
    match command {
        ManagementCommand::Create {
            conn,
            description,
            expiry,
            format,
        } => {
            input::description(&description)?;
            let expires_at = input::expiry(&expiry, SystemTime::now())?;
            let client = Client::open(&conn).await?;
            let request = pb::CreateManagementTokenRequest {
                description,
                expires_at,
            };
            let created = client
                .call("cannot create the management token", |mut c| async move {
                    c.create_management_token(request).await
                })
                .await?;
            show::created(created, format)
        }
        ManagementCommand::List(args) => listing::list(ListKind::Management, &args).await,
        ManagementCommand::Revoke(args) => revoke::run(&args, Kind::Management).await,
    }
}
