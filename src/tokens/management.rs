//! `fluxgate.tokens.v1.TokenService`: token management over the registry,
//! guarded by management tokens, and the change stream proxies follow.

use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::{Stream, StreamExt as _};
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::credentials;
use crate::proto::tokens as pb;
use crate::proto::tokens::token_service_server::TokenService;

use super::model::{DatabasePermission, TokenKind, TokenRecord};
use super::registry::TokenRegistry;
use super::store::{Change, ChangeKind};

/// The management service.
#[derive(Debug, Clone)]
pub struct ManagementService {
    registry: Arc<TokenRegistry>,
}

impl ManagementService {
    /// Manages tokens in `registry`.
    pub fn new(registry: Arc<TokenRegistry>) -> Self {
        Self { registry }
    }

    /// Admits the call only with a usable management token.
    fn require_management<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let value = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing management token in authorization metadata")
        })?;
        let token = credentials::from_authorization(value.as_bytes())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        match self.registry.find_usable(token.expose()) {
            None => Err(Status::unauthenticated(
                "unknown, expired or revoked management token",
            )),
            Some(t) if t.kind != TokenKind::Management => Err(Status::permission_denied(
                "a database token cannot manage tokens; use a management token",
            )),
            Some(_) => Ok(()),
        }
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from(t)
}

fn system_time(t: Timestamp) -> Result<SystemTime, Status> {
    SystemTime::try_from(t).map_err(|_| Status::invalid_argument("timestamp out of range"))
}

fn kind_to_wire(kind: TokenKind) -> pb::TokenKind {
    match kind {
        TokenKind::Database => pb::TokenKind::Database,
        TokenKind::Management => pb::TokenKind::Management,
    }
}

/// The wire form of a token record (never the token string).
pub fn token_info(t: &TokenRecord) -> pb::TokenInfo {
    pb::TokenInfo {
        id: t.id.clone(),
        kind: kind_to_wire(t.kind) as i32,
        description: t.description.clone(),
        permissions: t
            .permissions
            .iter()
            .map(|p| pb::DatabasePermission {
                database: p.database.clone(),
                read: p.read,
                write: p.write,
            })
            .collect(),
        created_at: Some(timestamp(t.created_at)),
        expires_at: t.expires_at.map(timestamp),
        revoked_at: t.revoked_at.map(timestamp),
        updated_at: t.updated_at.map(timestamp),
    }
}

fn permissions_from_wire(permissions: Vec<pb::DatabasePermission>) -> Vec<DatabasePermission> {
    permissions
        .into_iter()
        .map(|p| DatabasePermission {
            database: p.database,
            read: p.read,
            write: p.write,
        })
        .collect()
}

fn change_to_wire(change: Change) -> pb::WatchTokenChangesResponse {
    let kind = match change.kind {
        ChangeKind::Created => pb::ChangeKind::Created,
        ChangeKind::Revoked => pb::ChangeKind::Revoked,
        ChangeKind::PermissionsChanged => pb::ChangeKind::PermissionsChanged,
        ChangeKind::Expired => pb::ChangeKind::Expired,
    };
    pb::WatchTokenChangesResponse {
        revision: change.revision,
        event: Some(pb::watch_token_changes_response::Event::Change(
            pb::TokenChange {
                token_id: change.token_id,
                kind: kind as i32,
                token_kind: kind_to_wire(change.token_kind) as i32,
                at: Some(timestamp(change.at)),
            },
        )),
    }
}

type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchTokenChangesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl TokenService for ManagementService {
    async fn create_database_token(
        &self,
        request: Request<pb::CreateDatabaseTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        self.require_management(&request)?;
        let r = request.into_inner();
        let expires_at = r.expires_at.map(system_time).transpose()?;
        let (record, token) = self
            .registry
            .create(
                TokenKind::Database,
                r.description,
                permissions_from_wire(r.permissions),
                expires_at,
            )
            .await?;
        Ok(Response::new(pb::CreatedToken {
            info: Some(token_info(&record)),
            token: token.into_string(),
        }))
    }

    async fn list_database_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.require_management(&request)?;
        let tokens = self
            .registry
            .list(TokenKind::Database, request.get_ref().include_revoked);
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(|t| token_info(t)).collect(),
        }))
    }

    async fn get_database_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require_management(&request)?;
        let token = self
            .registry
            .get(&request.get_ref().id, TokenKind::Database)?;
        Ok(Response::new(token_info(&token)))
    }

    async fn update_database_token(
        &self,
        request: Request<pb::UpdateDatabaseTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require_management(&request)?;
        let r = request.into_inner();
        let token = self
            .registry
            .update(&r.id, permissions_from_wire(r.permissions), r.description)
            .await?;
        Ok(Response::new(token_info(&token)))
    }

    async fn revoke_database_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require_management(&request)?;
        let token = self
            .registry
            .revoke(&request.get_ref().id, TokenKind::Database)
            .await?;
        Ok(Response::new(token_info(&token)))
    }

    async fn create_management_token(
        &self,
        request: Request<pb::CreateManagementTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        self.require_management(&request)?;
        let r = request.into_inner();
        let expires_at = r.expires_at.map(system_time).transpose()?;
        let (record, token) = self
            .registry
            .create(TokenKind::Management, r.description, Vec::new(), expires_at)
            .await?;
        Ok(Response::new(pb::CreatedToken {
            info: Some(token_info(&record)),
            token: token.into_string(),
        }))
    }

    async fn list_management_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.require_management(&request)?;
        let tokens = self
            .registry
            .list(TokenKind::Management, request.get_ref().include_revoked);
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(|t| token_info(t)).collect(),
        }))
    }

    async fn revoke_management_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require_management(&request)?;
        let token = self
            .registry
            .revoke(&request.get_ref().id, TokenKind::Management)
            .await?;
        Ok(Response::new(token_info(&token)))
    }

    type WatchTokenChangesStream = WatchStream;

    /// Open to any caller: it carries token ids and change kinds only, and
    /// proxies must not need admin rights to follow it. Protect it with mTLS.
    async fn watch_token_changes(
        &self,
        request: Request<pb::WatchTokenChangesRequest>,
    ) -> Result<Response<Self::WatchTokenChangesStream>, Status> {
        let (sync, changes) = self
            .registry
            .subscribe(request.get_ref().after_revision)
            .await?;
        let first = pb::WatchTokenChangesResponse {
            revision: sync.revision,
            event: Some(pb::watch_token_changes_response::Event::Sync(pb::Sync {
                resumed: sync.resumed,
                head_revision: sync.head,
                store_id: self.registry.store_id().to_owned(),
            })),
        };
        let rest = changes.map(|c| c.map(change_to_wire).map_err(Status::from));
        let stream = futures_util::stream::once(async move { Ok(first) }).chain(rest);
        Ok(Response::new(Box::pin(stream)))
    }
}
