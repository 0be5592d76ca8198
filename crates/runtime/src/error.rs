//! The one way Leadflow turns validation, domain and store errors into `tonic::Status`:
//! `INVALID_ARGUMENT` with `google.rpc.BadRequest` field violations, and internal errors logged
//! in full but answered without their text.

use std::fmt;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// One field that failed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// Path of the field in the request, e.g. `items[2].track.activity.type`.
    pub field: String,
    /// What is wrong with it, lowercase.
    pub description: String,
}

/// The violations found while validating one request (or one batch item).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldViolations(Vec<FieldViolation>);

impl FieldViolations {
    /// No violations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `field` is wrong because of `description`.
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// Adds every violation of `other` as it is.
    pub fn extend(&mut self, other: FieldViolations) {
        self.0.extend(other.0);
    }

    /// Adds every violation of `other`, its fields prefixed with `prefix.`.
    pub fn extend_prefixed(&mut self, prefix: &str, other: FieldViolations) {
        self.0.extend(other.0.into_iter().map(|v| FieldViolation {
            field: format!("{prefix}.{}", v.field),
            description: v.description,
        }));
    }

    /// True when the request is valid.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The violations, in the order found.
    pub fn violations(&self) -> &[FieldViolation] {
        &self.0
    }

    /// `Ok(value)` when nothing was violated, the violations otherwise.
    pub fn into_result<T>(self, value: T) -> Result<T, FieldViolations> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for FieldViolations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for v in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", v.field, v.description)?;
            first = false;
        }
        Ok(())
    }
}

impl std::error::Error for FieldViolations {}

impl From<FieldViolations> for Status {
    fn from(violations: FieldViolations) -> Self {
        let mut details = ErrorDetails::new();
        for v in &violations.0 {
            details.add_bad_request_violation(v.field.clone(), v.description.clone());
        }
        Status::with_error_details(
            Code::InvalidArgument,
            format!("invalid request: {violations}"),
            details,
        )
    }
}

/// A `Status` for one invalid field.
pub fn invalid_field(field: impl Into<String>, description: impl Into<String>) -> Status {
    let mut violations = FieldViolations::new();
    violations.add(field, description);
    violations.into()
}

/// Logs `error` in full and answers `INTERNAL` without its text (it may hold internals).
pub fn internal(error: &(dyn std::error::Error + 'static)) -> Status {
    tracing::error!(error = %error, source = ?error.source(), "internal error");
    Status::internal("internal error")
}

/// Maps a store error: a lost or exhausted connection is `UNAVAILABLE` (the caller may retry),
/// anything else is internal.
pub fn store(error: &sea_orm::DbErr) -> Status {
    match error {
        sea_orm::DbErr::ConnectionAcquire(_) | sea_orm::DbErr::Conn(_) => {
            tracing::warn!(error = %error, "store unavailable");
            Status::unavailable("store unavailable, retry later")
        }
        other => internal(other),
    }
}

/// The field violations a status carries, for clients and tests.
pub fn field_violations(status: &Status) -> Vec<FieldViolation> {
    status
        .get_details_bad_request()
        .map(|bad_request| {
            bad_request
                .field_violations
                .into_iter()
                .map(|v| FieldViolation {
                    field: v.field,
                    description: v.description,
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_travel_as_bad_request_details() {
        let mut violations = FieldViolations::new();
        violations.add("email", "not an e-mail address");
        let mut nested = FieldViolations::new();
        nested.add("type", "unknown activity type");
        violations.extend_prefixed("activity", nested);
        let status = Status::from(violations);
        assert_eq!(status.code(), Code::InvalidArgument);
        let fields: Vec<String> = field_violations(&status)
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["email", "activity.type"]);
    }
}
