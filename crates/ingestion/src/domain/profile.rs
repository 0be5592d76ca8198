//! A lead's profile: validation of each attribute, updates by patch, and merges.

use std::collections::BTreeMap;

use leadflow_runtime::error::FieldViolations;
use serde::{Deserialize, Serialize};

use super::activity::check_properties;
use super::limits::{MAX_ATTRIBUTE_LEN, MAX_COMPANY_SIZE};

/// Profile attributes. In a patch, `None` means "leave unchanged". Enumerations hold their
/// protobuf numbers (already checked to be known values, never 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// Lower-cased e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// `leadflow.common.v1.Seniority` number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seniority: Option<i32>,
    /// Company name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Lower-cased company web domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_domain: Option<String>,
    /// Employees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_size: Option<i32>,
    /// Industry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    /// Upper-cased ISO 3166-1 alpha-2 country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// `leadflow.common.v1.SourceChannel` number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_channel: Option<i32>,
    /// `leadflow.common.v1.Consent` number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consent: Option<i32>,
    /// Caller-defined attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub traits: BTreeMap<String, String>,
}

impl Profile {
    /// Validates and normalises a patch in place (trims text, lower-cases e-mail and domain,
    /// upper-cases the country). Field names are relative to the profile message.
    pub fn validate(mut self) -> Result<Self, FieldViolations> {
        let mut violations = FieldViolations::new();
        for (field, value) in [
            ("first_name", &mut self.first_name),
            ("last_name", &mut self.last_name),
            ("title", &mut self.title),
            ("company", &mut self.company),
            ("industry", &mut self.industry),
        ] {
            check_text(field, value, &mut violations);
        }
        if let Some(email) = self.email.as_mut() {
            *email = email.trim().to_lowercase();
            if !is_valid_email(email) {
                violations.add("email", "not a valid e-mail address");
            }
        }
        if let Some(domain) = self.company_domain.as_mut() {
            *domain = domain.trim().to_lowercase();
            if !is_valid_domain(domain) {
                violations.add("company_domain", "not a valid domain name");
            }
        }
        if let Some(country) = self.country.as_mut() {
            *country = country.trim().to_uppercase();
            if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
                violations.add("country", "must be an ISO 3166-1 alpha-2 code such as DE");
            }
        }
        if let Some(size) = self.company_size
            && !(0..=MAX_COMPANY_SIZE).contains(&size)
        {
            violations.add(
                "company_size",
                format!("must be between 0 and {MAX_COMPANY_SIZE}"),
            );
        }
        check_properties(&self.traits, "traits", &mut violations);
        violations.into_result(self)
    }

    /// Applies a patch: every attribute present in `patch` replaces the stored one.
    pub fn apply(&mut self, patch: &Profile) {
        fn set<T: Clone>(slot: &mut Option<T>, value: &Option<T>) {
            if value.is_some() {
                slot.clone_from(value);
            }
        }
        set(&mut self.email, &patch.email);
        set(&mut self.first_name, &patch.first_name);
        set(&mut self.last_name, &patch.last_name);
        set(&mut self.title, &patch.title);
        set(&mut self.seniority, &patch.seniority);
        set(&mut self.company, &patch.company);
        set(&mut self.company_domain, &patch.company_domain);
        set(&mut self.company_size, &patch.company_size);
        set(&mut self.industry, &patch.industry);
        set(&mut self.country, &patch.country);
        set(&mut self.source_channel, &patch.source_channel);
        set(&mut self.consent, &patch.consent);
        for (key, value) in &patch.traits {
            self.traits.insert(key.clone(), value.clone());
        }
    }

    /// Merges another lead's profile into this surviving one: this profile's attributes win,
    /// the other's fill the gaps.
    pub fn absorb(&mut self, other: &Profile) {
        let mut merged = other.clone();
        merged.apply(self);
        *self = merged;
    }
}

fn check_text(field: &str, value: &mut Option<String>, violations: &mut FieldViolations) {
    if let Some(text) = value.as_mut() {
        *text = text.trim().to_owned();
        if text.chars().count() > MAX_ATTRIBUTE_LEN {
            violations.add(field, format!("longer than {MAX_ATTRIBUTE_LEN} characters"));
        } else if text.chars().any(char::is_control) {
            violations.add(field, "contains control characters");
        }
    }
}

/// A pragmatic e-mail syntax check: one `@`, a local part of 1–64 characters without spaces, and
/// a valid domain with a dot. (Deliverability is the e-mail tool's job, not ours.)
pub fn is_valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    email.len() <= 254
        && !local.is_empty()
        && local.len() <= 64
        && !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            !c.is_whitespace()
                && !c.is_control()
                && !matches!(
                    c,
                    '@' | '<' | '>' | ',' | ';' | '"' | '(' | ')' | '[' | ']' | '\\'
                )
        })
        && is_valid_domain(domain)
}

/// A domain name of dot-separated labels (letters, digits, hyphens), with at least one dot.
pub fn is_valid_domain(domain: &str) -> bool {
    domain.len() <= 253
        && domain.contains('.')
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn emails() {
        for ok in ["ana@acme.io", "a.b+tag@mail.example.co.uk"] {
            assert!(is_valid_email(ok), "{ok}");
        }
        for bad in [
            "",
            "ana",
            "ana@",
            "@acme.io",
            "ana@acme",
            "a na@acme.io",
            "ana@@acme.io",
            "ana@acme..io",
        ] {
            assert!(!is_valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn validation_normalises_and_names_fields() {
        let profile = Profile {
            email: Some(" Ana@Acme.IO ".into()),
            country: Some("de".into()),
            ..Profile::default()
        }
        .validate()
        .expect("valid");
        assert_eq!(profile.email.as_deref(), Some("ana@acme.io"));
        assert_eq!(profile.country.as_deref(), Some("DE"));
        let err = Profile {
            email: Some("nope".into()),
            company_size: Some(-1),
            country: Some("Germany".into()),
            ..Profile::default()
        }
        .validate()
        .expect_err("invalid");
        let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["email", "country", "company_size"]);
    }

    #[test]
    fn absorb_keeps_the_survivors_attributes_and_fills_gaps() {
        let mut survivor = Profile {
            email: Some("ana@acme.io".into()),
            ..Profile::default()
        };
        let absorbed = Profile {
            email: Some("old@acme.io".into()),
            title: Some("Marketing Manager".into()),
            ..Profile::default()
        };
        survivor.absorb(&absorbed);
        assert_eq!(survivor.email.as_deref(), Some("ana@acme.io"));
        assert_eq!(survivor.title.as_deref(), Some("Marketing Manager"));
    }

    proptest! {
        /// Applying the same patch twice equals applying it once.
        #[test]
        fn patches_are_idempotent(title in proptest::option::of("[a-zA-Z ]{0,20}"), size in proptest::option::of(0i32..5000)) {
            let patch = Profile { title, company_size: size, ..Profile::default() };
            let mut once = Profile::default();
            once.apply(&patch);
            let mut twice = once.clone();
            twice.apply(&patch);
            prop_assert_eq!(once, twice);
        }
    }
}
