//! Qualification's errors and their one mapping to `tonic::Status`.

use leadflow_runtime::error::{self, FieldViolations};
use tonic::Status;

use crate::domain::Refusal;

/// What can go wrong serving a qualification call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; each violation names its field.
    #[error(transparent)]
    Invalid(#[from] FieldViolations),
    /// The lead or definition version does not exist for this tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// The lead's stage does not allow the transition.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Stored data does not decode (a bug or a manual edit).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] sea_orm::DbErr),
}

impl Error {
    /// An invalid request with one violation.
    pub fn invalid(field: &str, description: &str) -> Self {
        let mut violations = FieldViolations::new();
        violations.add(field, description);
        Self::Invalid(violations)
    }

    /// Stored data that does not decode.
    pub(crate) fn corrupt(what: &str, err: impl std::fmt::Display) -> Self {
        Self::Corrupt(format!("{what}: {err}"))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::Invalid(violations) => violations.into(),
            Error::NotFound(what) => Status::not_found(format!("{what} not found")),
            Error::Refused(refusal) => Status::failed_precondition(refusal.to_string()),
            Error::Corrupt(_) => error::internal(&err),
            Error::Store(db) => error::store(&db),
        }
    }
}
