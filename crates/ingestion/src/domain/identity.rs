//! Who a call is about.

use leadflow_runtime::error::FieldViolations;

use super::limits::MAX_ID_LEN;

/// A user id known to the caller's systems, an anonymous id (cookie, device), or both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The caller's id for a known person.
    pub user_id: Option<String>,
    /// A cookie or device id of a visitor not yet known.
    pub anonymous_id: Option<String>,
}

impl Identity {
    /// Validates the two ids; at least one must be present. Field names are relative to the
    /// identity message.
    pub fn parse(user_id: &str, anonymous_id: &str) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let user_id = parse_id(user_id, "user_id", &mut violations);
        let anonymous_id = parse_id(anonymous_id, "anonymous_id", &mut violations);
        if user_id.is_none() && anonymous_id.is_none() && violations.is_empty() {
            violations.add("user_id", "a user_id or an anonymous_id is required");
        }
        violations.into_result(Self {
            user_id,
            anonymous_id,
        })
    }
}

fn parse_id(raw: &str, field: &str, violations: &mut FieldViolations) -> Option<String> {
    let id = raw.trim();
    if id.is_empty() {
        return None;
    }
    if id.chars().count() > MAX_ID_LEN {
        violations.add(field, format!("longer than {MAX_ID_LEN} characters"));
    } else if id.chars().any(char::is_control) {
        violations.add(field, "contains control characters");
    }
    Some(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_id_is_enough_none_is_not() {
        assert!(Identity::parse("u1", "").is_ok());
        assert!(Identity::parse("", "a1").is_ok());
        let err = Identity::parse(" ", "").expect_err("no id");
        assert_eq!(err.violations()[0].field, "user_id");
        let long = "x".repeat(MAX_ID_LEN + 1);
        let err = Identity::parse("", &long).expect_err("too long");
        assert_eq!(err.violations()[0].field, "anonymous_id");
    }
}
