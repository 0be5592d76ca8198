//! Activities: the known types, namespaced custom ones, and what a valid activity is.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, Utc};
use leadflow_runtime::error::FieldViolations;

use super::limits::{
    MAX_FUTURE_SKEW_SECS, MAX_PROPERTIES, MAX_PROPERTIES_BYTES, MAX_PROPERTY_KEY_LEN,
    MAX_PROPERTY_VALUE_LEN,
};

/// The activity types every Leadflow component understands.
pub const KNOWN_TYPES: &[&str] = &[
    "page_view",
    "pricing_view",
    "content_download",
    "email_open",
    "email_click",
    "webinar_registered",
    "webinar_attended",
    "form_submit",
    "demo_request",
    "contact_sales",
    "unsubscribe",
    "bounce",
];

/// Prefix of a caller-defined activity type.
pub const CUSTOM_PREFIX: &str = "custom.";

/// A validated activity type: a known one or `custom.<name>` (`[a-z0-9_]`, at most 64).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ActivityType(String);

impl ActivityType {
    /// Parses `raw`, or says why it is not an activity type.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if KNOWN_TYPES.contains(&raw) {
            return Ok(Self(raw.to_owned()));
        }
        if let Some(name) = raw.strip_prefix(CUSTOM_PREFIX) {
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            return if valid {
                Ok(Self(raw.to_owned()))
            } else {
                Err(
                    "a custom type is custom.<name> with name of 1-64 characters a-z, 0-9, _"
                        .into(),
                )
            };
        }
        if raw.is_empty() {
            Err("required".into())
        } else {
            Err(format!(
                "unknown activity type; use one of {} or custom.<name>",
                KNOWN_TYPES.join(", ")
            ))
        }
    }

    /// The type as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ActivityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    /// What happened.
    pub kind: ActivityType,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Its properties, e.g. `path`, `asset_id`.
    pub properties: BTreeMap<String, String>,
}

impl Activity {
    /// Validates an activity received at `now`; `occurred_at` defaults to `now`. Field names
    /// are relative to the activity message.
    pub fn parse(
        kind: &str,
        occurred_at: Option<DateTime<Utc>>,
        properties: BTreeMap<String, String>,
        now: DateTime<Utc>,
    ) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        let kind = ActivityType::parse(kind)
            .map_err(|description| violations.add("type", description))
            .ok();
        let occurred_at = occurred_at.unwrap_or(now);
        if occurred_at > now + Duration::seconds(MAX_FUTURE_SKEW_SECS) {
            violations.add(
                "occurred_at",
                format!("more than {MAX_FUTURE_SKEW_SECS} seconds in the future"),
            );
        }
        check_properties(&properties, "properties", &mut violations);
        match kind {
            Some(kind) if violations.is_empty() => Ok(Self {
                kind,
                occurred_at,
                properties,
            }),
            _ => Err(violations),
        }
    }
}

/// Checks a free-form string map against the property limits.
pub fn check_properties(
    properties: &BTreeMap<String, String>,
    field: &str,
    violations: &mut FieldViolations,
) {
    if properties.len() > MAX_PROPERTIES {
        violations.add(field, format!("more than {MAX_PROPERTIES} entries"));
        return;
    }
    let mut total = 0;
    for (key, value) in properties {
        total += key.len() + value.len();
        if key.is_empty() || key.chars().count() > MAX_PROPERTY_KEY_LEN {
            violations.add(
                format!("{field}[{key}]"),
                format!("key must have 1 to {MAX_PROPERTY_KEY_LEN} characters"),
            );
        } else if value.chars().count() > MAX_PROPERTY_VALUE_LEN {
            violations.add(
                format!("{field}[{key}]"),
                format!("value longer than {MAX_PROPERTY_VALUE_LEN} characters"),
            );
        }
    }
    if total > MAX_PROPERTIES_BYTES {
        violations.add(field, format!("larger than {MAX_PROPERTIES_BYTES} bytes"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_and_custom_types_parse() {
        assert!(ActivityType::parse("pricing_view").is_ok());
        assert!(ActivityType::parse("custom.trial_started").is_ok());
        for bad in ["", "PageView", "custom.", "custom.Bad-Name", "signup"] {
            assert!(ActivityType::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn far_future_and_oversized_properties_are_refused() {
        let now = Utc::now();
        let err = Activity::parse(
            "page_view",
            Some(now + Duration::days(1)),
            BTreeMap::new(),
            now,
        )
        .expect_err("future");
        assert_eq!(err.violations()[0].field, "occurred_at");
        let big: BTreeMap<String, String> = (0..=MAX_PROPERTIES)
            .map(|i| (format!("k{i}"), "v".into()))
            .collect();
        let err = Activity::parse("page_view", None, big, now).expect_err("too many");
        assert_eq!(err.violations()[0].field, "properties");
    }

    proptest! {
        #[test]
        fn custom_names_of_the_allowed_alphabet_parse(name in "[a-z0-9_]{1,64}") {
            let raw = format!("custom.{name}");
            prop_assert_eq!(ActivityType::parse(&raw).map(|t| t.as_str().to_owned()), Ok(raw));
        }

        #[test]
        fn parsing_never_panics(raw in ".{0,80}") {
            let _ = ActivityType::parse(&raw);
        }
    }
}
