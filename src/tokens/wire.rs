//! The token service's wire forms: records, kinds, permissions and times as
//! the management API and the change stream send them, and back.

use std::time::SystemTime;

use prost_types::Timestamp;
use tonic::Status;

use super::model::{DatabasePermission, TokenKind, TokenRecord, ValidationError, max_expiry};
use crate::proto::tokens as pb;

/// A time as RFC 3339, to the second.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A time as a wire timestamp.
pub fn timestamp(t: SystemTime) -> Timestamp {
    Timestamp::from(t)
}

/// A wire timestamp as a time; anything past year 9999 (which no date
/// format can print) is refused here already.
pub fn system_time(t: Timestamp) -> Result<SystemTime, Status> {
    let time = SystemTime::try_from(t).map_err(|_| {
        Status::invalid_argument("timestamp out of range (expected 1970-01-01 to 9999-12-31)")
    })?;
    if time > max_expiry() {
        return Err(Status::invalid_argument(
            ValidationError::ExpiryTooLate.to_string(),
        ));
    }
    Ok(time)
}

/// A kind as the wire enum.
pub fn kind_to_wire(kind: TokenKind) -> pb::TokenKind {
    match kind {
        TokenKind::Database => pb::TokenKind::Database,
        TokenKind::Management => pb::TokenKind::Management,
        TokenKind::Proxy => pb::TokenKind::Proxy,
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

/// Wire permissions as the registry's.
pub fn permissions_from_wire(permissions: Vec<pb::DatabasePermission>) -> Vec<DatabasePermission> {
    permissions
        .into_iter()
        .map(|p| DatabasePermission {
            database: p.database,
            read: p.read,
            write: p.write,
        })
        .collect()
}
