//! Scoring's errors and their one mapping to `tonic::Status`.

use leadflow_runtime::error::{self, FieldViolations};
use tonic::Status;

/// What can go wrong serving a scoring call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; each violation names its field.
    #[error(transparent)]
    Invalid(#[from] FieldViolations),
    /// The lead, model version or job does not exist for this tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// Stored data does not decode (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sea_orm::DbErr),
    /// The score-read task is gone: the service is shutting down.
    #[error("the score reader has stopped")]
    ReaderStopped,
    /// A task doing part of the work stopped without its result (it panicked or was cancelled).
    #[error("{0} did not finish")]
    TaskFailed(&'static str),
}

impl Error {
    /// An invalid request with one violation.
    pub fn invalid(field: &str, description: &str) -> Self {
        let mut violations = FieldViolations::new();
        violations.add(field, description);
        Self::Invalid(violations)
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(violations) => violations.into(),
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::Corrupt(_) | Error::TaskFailed(_) => error::internal(&err),
            Error::Store(db) => error::store(&db),
            Error::ReaderStopped => Status::unavailable("shutting down, retry"),
        }
    }
}
