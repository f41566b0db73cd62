//! The one mapping from token-service errors to gRPC statuses.

use tonic::Status;

use super::registry::RegistryError;
use super::store::StoreError;

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Invalid(v) => Status::invalid_argument(v.to_string()),
            RegistryError::NotFound(..) => Status::not_found(e.to_string()),
            RegistryError::Revoked(_) => Status::failed_precondition(e.to_string()),
            RegistryError::Store(s) => s.into(),
            RegistryError::Random => Status::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for Status {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => Status::not_found(e.to_string()),
            StoreError::Lagged => Status::aborted(e.to_string()),
            _ => {
                tracing::error!(error = %e, "token store failure");
                Status::unavailable("the token store is unavailable")
            }
        }
    }
}
