//! `WatchTokenChanges`: who may follow the token change stream, and the
//! stream itself.
//!
//! The stream shows every token id and what happened to it, so it is not
//! open to anyone: the caller presents a client certificate the server
//! verified (mutual TLS), or a proxy token — the least-privileged kind,
//! which can do nothing else. A management token is refused: configuring
//! every sidecar with one would give each of them admin rights. A stream
//! opened with a proxy token ends when that token is revoked or expires.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};
use tonic::{Request, Status};

use crate::credentials;
use crate::proto::tokens as pb;

use super::model::{TokenKind, TokenRecord};
use super::registry::TokenRegistry;
use super::store::{Change, ChangeKind};
use super::wire::{kind_to_wire, timestamp};

/// The change stream as the gRPC service returns it.
pub type WatchStream =
    Pin<Box<dyn Stream<Item = Result<pb::WatchTokenChangesResponse, Status>> + Send>>;

/// Who opened a stream.
#[derive(Debug)]
enum Watcher {
    /// A client whose certificate the TLS layer verified.
    Certificate,
    /// A proxy token's holder.
    Proxy(Arc<TokenRecord>),
}

/// Admits a caller with a verified client certificate or a proxy token.
fn authenticate<T>(registry: &TokenRegistry, request: &Request<T>) -> Result<Watcher, Status> {
    // Present only when the listener verifies client certificates: without
    // --client-ca, rustls never asks for one.
    if request.peer_certs().is_some_and(|certs| !certs.is_empty()) {
        return Ok(Watcher::Certificate);
    }
    let Some(value) = request.metadata().get("authorization") else {
        return Err(Status::unauthenticated(
            "following the token change stream needs a proxy token (authorization: Bearer <token>; create one with `fluxgate proxy-token create`) or a client certificate (mutual TLS)",
        ));
    };
    let token = credentials::from_authorization(value.as_bytes())
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    match registry.find_usable(token.expose()) {
        None => Err(Status::unauthenticated(
            "unknown, expired or revoked proxy token",
        )),
        Some(t) if t.kind != TokenKind::Proxy => Err(Status::permission_denied(format!(
            "a {} token may not follow the token change stream; use a proxy token (`fluxgate proxy-token create`), which can do nothing else",
            t.kind.as_str()
        ))),
        Some(t) => Ok(Watcher::Proxy(t)),
    }
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

/// Opens the change stream for an admitted caller: the sync, then every
/// change, until the caller's proxy token dies or the server closes.
pub async fn open(
    registry: &Arc<TokenRegistry>,
    request: Request<pb::WatchTokenChangesRequest>,
) -> Result<WatchStream, Status> {
    let watcher = authenticate(registry, &request)?;
    let (sync, changes) = registry.subscribe(request.get_ref().after_revision).await?;
    let first = pb::WatchTokenChangesResponse {
        revision: sync.revision,
        event: Some(pb::watch_token_changes_response::Event::Sync(pb::Sync {
            resumed: sync.resumed,
            head_revision: sync.head,
            store_id: registry.store_id().unwrap_or_default().to_owned(),
        })),
    };
    let own_id = match &watcher {
        Watcher::Proxy(t) => {
            tracing::debug!(token_id = %t.id, "proxy token follows the change stream");
            Some(t.id.clone())
        }
        Watcher::Certificate => None,
    };
    let stream = async_stream::stream! {
        yield Ok(first);
        let mut changes = std::pin::pin!(changes);
        while let Some(item) = changes.next().await {
            match item {
                Ok(change) => {
                    let own_end = own_id.as_deref() == Some(change.token_id.as_str())
                        && matches!(change.kind, ChangeKind::Revoked | ChangeKind::Expired);
                    yield Ok(change_to_wire(change));
                    if own_end {
                        yield Err(Status::unauthenticated(
                            "the proxy token this stream was opened with was revoked or expired",
                        ));
                        break;
                    }
                }
                Err(e) => {
                    yield Err(Status::from(e));
                    break;
                }
            }
        }
    };
    Ok(Box::pin(stream))
}
