//! `fluxgate token create|list|get|update|revoke`: database tokens.

use std::time::SystemTime;

use super::client::Client;
use super::error::CliError;
use super::input;
use super::listing;
use super::revoke::{self, Kind};
use super::show::{self, ListKind};
use crate::config::commands::TokenCommand;
use crate::proto::tokens as pb;

/// Runs one `fluxgate token …` command. Flags are checked before any
/// credential is looked up, so a usage error never needs a token.
pub async fn run(command: TokenCommand) -> Result<(), CliError> {
    match command {
        TokenCommand::Create {
            conn,
            read,
            write,
            expiry,
            format,
            description,
        } => {
            let permissions = input::permissions(&read, &write)?;
            input::description(&description)?;
            let expires_at = input::expiry(&expiry, SystemTime::now())?;
            let client = Client::open(&conn).await?;
            let request = pb::CreateDatabaseTokenRequest {
                description,
                permissions,
                expires_at,
            };
            let created = client
                .call("cannot create the database token", |mut c| async move {
                    c.create_database_token(request).await
                })
                .await?;
            show::created(created, format)
        }
        TokenCommand::List(args) => listing::list(ListKind::Database, &args).await,
        TokenCommand::Get { conn, format, id } => {
            let client = Client::open(&conn).await?;
            let request = pb::GetTokenRequest { id };
            let info = client
                .call("cannot get the database token", |mut c| async move {
                    c.get_database_token(request).await
                })
                .await?;
            show::one(info, format)
        }
        TokenCommand::Update {
            conn,
            read,
            write,
            description,
            format,
            id,
        } => {
            // Update replaces every permission, as influxctl does: without
            // any, the token would be left with none.
            let permissions = input::permissions(&read, &write)?;
            if let Some(d) = &description {
                input::description(d)?;
            }
            let client = Client::open(&conn).await?;
            let request = pb::UpdateDatabaseTokenRequest {
                id,
                permissions,
                description,
            };
            let info = client
                .call("cannot update the database token", |mut c| async move {
                    c.update_database_token(request).await
                })
                .await?;
            show::one(info, format)
        }
        TokenCommand::Revoke(args) => revoke::run(&args, Kind::Database).await,
    }
}
