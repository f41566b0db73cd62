//! `fluxgate.tokens.v1.TokenService`: token management over the registry,
//! guarded by management tokens (a token never outlives the management
//! token that created it), and the change stream proxies follow (see
//! [`watch`](super::watch)).

use std::sync::Arc;

use prost::Message as _;
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::credentials;
use crate::proto::tokens as pb;
use crate::proto::tokens::token_service_server::TokenService;

use super::model::{DatabasePermission, TokenKind, TokenRecord};
use super::paging;
use super::registry::{ListPosition, TokenRegistry};
use super::watch;
use super::wire::{permissions_from_wire, rfc3339, system_time, token_info};

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

    /// Admits the call only with a usable management token; returns its
    /// record (whose expiry bounds what it may create).
    async fn require_management<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Arc<TokenRecord>, Status> {
        let value = request.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("missing management token in authorization metadata")
        })?;
        let token = credentials::from_authorization(value.as_bytes())
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        let found = self.registry.find_usable_now(token.expose()).await;
        let found = found.map_err(|e| {
            tracing::warn!(error = %e, "cannot read the token store's newest changes");
            Status::unavailable("the token store cannot be read; try again")
        })?;
        match found {
            None => Err(Status::unauthenticated(
                "unknown, expired or revoked management token",
            )),
            Some(t) if t.kind != TokenKind::Management => Err(Status::permission_denied(format!(
                "a {} token cannot manage tokens; use a management token",
                t.kind.as_str()
            ))),
            Some(t) => Ok(t),
        }
    }

    /// Creates a token of `kind` for `caller`: one that outlives the
    /// management token creating it would let a short-lived credential
    /// mint a permanent one.
    async fn create(
        &self,
        caller: &TokenRecord,
        kind: TokenKind,
        description: String,
        permissions: Vec<DatabasePermission>,
        expires_at: Option<Timestamp>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let expires_at = expires_at.map(system_time).transpose()?;
        if let Some(limit) = caller.expires_at {
            let within = expires_at.is_some_and(|e| e <= limit);
            if !within {
                let limit = rfc3339(limit);
                return Err(Status::invalid_argument(format!(
                    "this management token expires at {limit}: it cannot create a {} token that outlives it; give an expiry no later than {limit}",
                    kind.as_str()
                )));
            }
        }
        let (record, token) = self
            .registry
            .create(kind, description, permissions, expires_at)
            .await?;
        Ok(Response::new(pb::CreatedToken {
            info: Some(token_info(&record)),
            token: token.into_string(),
        }))
    }

    /// One page of tokens of `kind`: at most the page size asked for (see
    /// [`paging`]) and at most [`paging::MAX_PAGE_BYTES`] of them, so no
    /// response nears a client's message limit.
    fn list(
        &self,
        kind: TokenKind,
        request: &pb::ListTokensRequest,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let after = paging::decode(kind, &request.page_token)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let limit = paging::page_size(request.page_size);
        let page = self
            .registry
            .list_page(kind, request.include_revoked, after.as_ref(), limit);
        let mut tokens = Vec::with_capacity(page.tokens.len());
        let mut bytes = 0;
        let mut more = page.more;
        for record in &page.tokens {
            let info = token_info(record);
            // The field's tag and length prefix: at most 1 + 4 bytes here.
            let size = info.encoded_len() + 5;
            if !tokens.is_empty() && bytes + size > paging::MAX_PAGE_BYTES {
                more = true;
                break;
            }
            bytes += size;
            tokens.push(info);
        }
        let last = tokens.len().checked_sub(1).and_then(|i| page.tokens.get(i));
        let next_page_token = match last {
            Some(last) if more => paging::encode(kind, &ListPosition::of(last)),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListTokensResponse {
            tokens,
            next_page_token,
        }))
    }

    async fn revoke(&self, id: &str, kind: TokenKind) -> Result<Response<pb::TokenInfo>, Status> {
        let token = self.registry.revoke(id, kind).await?;
        Ok(Response::new(token_info(&token)))
    }
}

#[tonic::async_trait]
impl TokenService for ManagementService {
    async fn create_database_token(
        &self,
        request: Request<pb::CreateDatabaseTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let caller = self.require_management(&request).await?;
        let r = request.into_inner();
        self.create(
            &caller,
            TokenKind::Database,
            r.description,
            permissions_from_wire(r.permissions),
            r.expires_at,
        )
        .await
    }

    async fn list_database_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.require_management(&request).await?;
        self.list(TokenKind::Database, request.get_ref())
    }

    async fn get_database_token(
        &self,
        request: Request<pb::GetTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require_management(&request).await?;
        let token = self
            .registry
            .get(&request.get_ref().id, TokenKind::Database)?;
        Ok(Response::new(token_info(&token)))
    }

    async fn update_database_token(
        &self,
        request: Request<pb::UpdateDatabaseTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require_management(&request).await?;
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
        self.require_management(&request).await?;
        self.revoke(&request.get_ref().id, TokenKind::Database)
            .await
    }

    async fn create_management_token(
        &self,
        request: Request<pb::CreateManagementTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let caller = self.require_management(&request).await?;
        let r = request.into_inner();
        self.create(
            &caller,
            TokenKind::Management,
            r.description,
            Vec::new(),
            r.expires_at,
        )
        .await
    }

    async fn list_management_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.require_management(&request).await?;
        self.list(TokenKind::Management, request.get_ref())
    }

    async fn revoke_management_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require_management(&request).await?;
        self.revoke(&request.get_ref().id, TokenKind::Management)
            .await
    }

    async fn create_proxy_token(
        &self,
        request: Request<pb::CreateProxyTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let caller = self.require_management(&request).await?;
        let r = request.into_inner();
        self.create(
            &caller,
            TokenKind::Proxy,
            r.description,
            Vec::new(),
            r.expires_at,
        )
        .await
    }

    async fn list_proxy_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.require_management(&request).await?;
        self.list(TokenKind::Proxy, request.get_ref())
    }

    async fn revoke_proxy_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        self.require_management(&request).await?;
        self.revoke(&request.get_ref().id, TokenKind::Proxy).await
    }

    type WatchTokenChangesStream = watch::WatchStream;

    /// Needs a proxy token or a verified client certificate: the stream
    /// shows every token id and change, and must not need admin rights.
    async fn watch_token_changes(
        &self,
        request: Request<pb::WatchTokenChangesRequest>,
    ) -> Result<Response<Self::WatchTokenChangesStream>, Status> {
        watch::open(&self.registry, request)
            .await
            .map(Response::new)
    }
}
