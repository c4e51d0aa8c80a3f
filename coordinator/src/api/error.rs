//! The one mapping from the coordinator's errors to gRPC statuses.

use crate::fleet::auth::Denied;
use crate::model::error::{ActError, StoreError};

impl From<ActError> for tonic::Status {
    fn from(e: ActError) -> tonic::Status {
        match e {
            ActError::NotLeader => tonic::Status::failed_precondition(e.to_string()),
            ActError::Store(s) => s.into(),
            ActError::Invalid(m) => tonic::Status::invalid_argument(m),
            ActError::Encode(_) => tonic::Status::internal(e.to_string()),
        }
    }
}

impl From<StoreError> for tonic::Status {
    fn from(e: StoreError) -> tonic::Status {
        match e {
            StoreError::Fenced { .. } => tonic::Status::failed_precondition(e.to_string()),
            StoreError::Conflict { .. } => {
                tonic::Status::aborted(format!("{e}: another change landed first; try again"))
            }
            StoreError::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
        }
    }
}

impl From<Denied> for tonic::Status {
    fn from(d: Denied) -> tonic::Status {
        match d {
            Denied::NotOperator(m) => tonic::Status::permission_denied(m),
            Denied::NoCredentials(m) | Denied::WrongToken(m) | Denied::Revoked(m) => {
                tonic::Status::unauthenticated(m)
            }
        }
    }
}

impl From<crate::failover::start::StartError> for tonic::Status {
    fn from(e: crate::failover::start::StartError) -> tonic::Status {
        use crate::failover::start::StartError;
        match e {
            StartError::NoSuchService(m) => tonic::Status::not_found(m),
            StartError::Refused(m) => tonic::Status::failed_precondition(m),
            StartError::Act(a) => a.into(),
        }
    }
}
