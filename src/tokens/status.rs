//! The one mapping from token-service errors to gRPC statuses.
//!
//! Trouble with the store is UNAVAILABLE (the client may retry), never a
//! 4xx-like code: the request itself was fine. The store's location stays
//! in the log; the client is told what happened and that nothing changed.

use tonic::Status;

use super::registry::RegistryError;
use super::store::StoreError;

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(v) => Status::invalid_argument(v.to_string()),
            RegistryError::NotFound(..) => Status::not_found(e.to_string()),
            RegistryError::Revoked(_) | RegistryError::LastManagementToken(_) => {
                Status::failed_precondition(e.to_string())
            }
            RegistryError::Store(s) => store_status(&s),
            RegistryError::Random => Status::internal(e.to_string()),
            RegistryError::Closed => Status::unavailable(e.to_string()),
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        store_status(&e)
    }
}

fn store_status(e: &StoreError) -> Status {
    match e {
        StoreError::Lagged => Status::aborted(e.to_string()),
        StoreError::Unreachable { reason, .. } => {
            tracing::warn!(error = %e, "token store unreachable");
            Status::unavailable(format!(
                "the token store is unreachable ({reason}); nothing was changed: retry once it is back"
            ))
        }
        StoreError::CommitUnknown { reason, .. } => {
            tracing::warn!(error = %e, "token store connection lost while committing");
            Status::unavailable(format!(
                "the connection to the token store broke while committing ({reason}): the change may or may not have been made; check before retrying"
            ))
        }
        _ => {
            tracing::error!(error = %e, "token store failure");
            Status::unavailable("the token store failed; nothing was changed")
        }
    }
}
