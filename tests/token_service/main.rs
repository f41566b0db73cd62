//! Integration tests of the token service: the real tonic server on
//! 127.0.0.1:0, called through the generated gRPC clients (Authorize, the
//! management API, the change stream, health and reflection), over both
//! store backends: the embedded SQLite file and a real PostgreSQL (a
//! throwaway cluster this test binary starts, see `common/postgres.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
mod common;

/// Runs each listed `async fn NAME(backend: Backend)` of the calling module
/// as two tests, `sqlite::NAME` and `postgres::NAME`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

mod access;
mod authorize;
mod junk;
mod limits;
mod listing;
mod management;
mod migration;
mod paging;
mod persistence;
mod process;
mod service;
mod store_rules;
mod validation;
mod watch;

use std::time::{Duration, SystemTime};

use fluxgate::proto::iox_authz::iox_authorizer_service_client::IoxAuthorizerServiceClient;
use fluxgate::proto::iox_authz::permission::PermissionOneOf;
use fluxgate::proto::iox_authz::resource_action_permission::{Action, ResourceType, Target};
use fluxgate::proto::iox_authz::{
    AuthorizeRequest, AuthorizeResponse, Permission, ResourceActionPermission,
};
use fluxgate::proto::tokens as pb;
use fluxgate::proto::tokens::token_service_client::TokenServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

use common::TokenServer;

/// Bound on every wait for an event (a stream message, an expiry).
pub(crate) const EVENT_DEADLINE: Duration = Duration::from_secs(15);

/// The metadata Authorize adds for tokens with an expiry.
pub(crate) const EXPIRES_AT_MS: &str = "fluxgate-token-expires-at-ms";

/// A channel to `server`.
pub(crate) async fn channel(server: &TokenServer) -> Channel {
    Channel::from_shared(server.url())
        .expect("valid url")
        .connect()
        .await
        .expect("connect to token service")
}

/// An Authorize client for `server`.
pub(crate) async fn authz_client(server: &TokenServer) -> IoxAuthorizerServiceClient<Channel> {
    IoxAuthorizerServiceClient::new(channel(server).await)
}

/// A management client for `server`.
pub(crate) async fn tokens_client(server: &TokenServer) -> TokenServiceClient<Channel> {
    TokenServiceClient::new(channel(server).await)
}

/// `message` with `authorization: <value>` metadata.
pub(crate) fn with_auth<T>(message: T, value: &str) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", value.parse().expect("ascii metadata"));
    request
}

/// `message` with `authorization: Bearer <token>` metadata.
pub(crate) fn bearer<T>(message: T, token: &str) -> Request<T> {
    with_auth(message, &format!("Bearer {token}"))
}

/// A database permission as the management API takes it.
pub(crate) fn db_perm(database: &str, read: bool, write: bool) -> pb::DatabasePermission {
    pb::DatabasePermission {
        database: database.to_owned(),
        read,
        write,
    }
}

/// An IOx permission: `action` on the database named `database`.
pub(crate) fn perm(database: &str, action: Action) -> Permission {
    Permission {
        permission_one_of: Some(PermissionOneOf::ResourceAction(ResourceActionPermission {
            resource_type: ResourceType::Database as i32,
            target: Some(Target::ResourceName(database.to_owned())),
            action: action as i32,
        })),
    }
}

/// Calls Authorize with `token` and `permissions`, expecting an OK status.
pub(crate) async fn authorize(
    client: &mut IoxAuthorizerServiceClient<Channel>,
    token: &[u8],
    permissions: Vec<Permission>,
) -> AuthorizeResponse {
    authorize_full(client, token, permissions)
        .await
        .into_inner()
}

/// Like [`authorize`], keeping the response metadata.
pub(crate) async fn authorize_full(
    client: &mut IoxAuthorizerServiceClient<Channel>,
    token: &[u8],
    permissions: Vec<Permission>,
) -> tonic::Response<AuthorizeResponse> {
    client
        .authorize(AuthorizeRequest {
            token: token.to_vec(),
            permissions,
        })
        .await
        .expect("Authorize answers OK")
}

/// Creates a database token through the management API.
pub(crate) async fn create_db_token(
    client: &mut TokenServiceClient<Channel>,
    management_token: &str,
    description: &str,
    permissions: Vec<pb::DatabasePermission>,
    expires_at: Option<SystemTime>,
) -> pb::CreatedToken {
    client
        .create_database_token(bearer(
            pb::CreateDatabaseTokenRequest {
                description: description.to_owned(),
                permissions,
                expires_at: expires_at.map(prost_types::Timestamp::from),
            },
            management_token,
        ))
        .await
        .expect("create database token")
        .into_inner()
}

/// The id of a created token.
pub(crate) fn id_of(created: &pb::CreatedToken) -> String {
    created
        .info
        .as_ref()
        .expect("created token has info")
        .id
        .clone()
}

/// Asserts `result` failed with `code` and returns the status.
#[track_caller]
pub(crate) fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(v) => panic!("expected {code:?}, got OK: {v:?}"),
        Err(s) => {
            assert_eq!(s.code(), code, "unexpected status: {s:?}");
            s
        }
    }
}

/// True when `needle` occurs in `haystack`.
pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
