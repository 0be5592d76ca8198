//! Ingestion's errors and their one mapping to `tonic::Status`.

use leadflow_runtime::error::{self, FieldViolations};
use tonic::Status;

/// What can go wrong serving an ingestion call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; each violation names its field.
    #[error(transparent)]
    Invalid(#[from] FieldViolations),
    /// The lead does not exist for this tenant.
    #[error("lead {0} not found")]
    LeadNotFound(String),
    /// The request is valid but the lead's state does not allow it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A concurrent change (another replica's merge) moved the lead the request resolved to
    /// while it waited for it; a retry resolves again.
    #[error("{0}")]
    Conflict(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sea_orm::DbErr),
    /// The writer task is gone: the service is shutting down.
    #[error("the writer has stopped")]
    WriterStopped,
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(violations) => violations.into(),
            Error::LeadNotFound(id) => Status::not_found(format!("lead {id} not found")),
            Error::FailedPrecondition(message) => Status::failed_precondition(message),
            Error::Conflict(message) => Status::aborted(message),
            Error::Store(db) => error::store(&db),
            Error::WriterStopped => Status::unavailable("shutting down, retry"),
        }
    }
}
