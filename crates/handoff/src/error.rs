//! Handoff's errors and their one mapping to `tonic::Status`.

use leadflow_runtime::error::{self, FieldViolations};
use tonic::Status;

use crate::domain::status::Refusal;

/// What can go wrong serving a handoff call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is invalid; each violation names its field.
    #[error(transparent)]
    Invalid(#[from] FieldViolations),
    /// The hand-off, owner, rules version or webhook does not exist for this tenant.
    #[error("{0} not found")]
    NotFound(String),
    /// The hand-off's status does not allow the move.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The request contradicts what was recorded (e.g. another CRM record id).
    #[error("{0}")]
    Conflict(String),
    /// Another service needed for the answer is unavailable.
    #[error("{0}")]
    Unavailable(String),
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
            Error::Conflict(why) => Status::failed_precondition(why),
            Error::Unavailable(why) => Status::unavailable(why),
            Error::Corrupt(_) => error::internal(&err),
            Error::Store(db) => error::store(&db),
        }
    }
}
