//! Conditions on one profile attribute or activity property. String comparisons ignore case.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Free-mail providers every model knows; a model may add more per predicate.
pub const FREE_MAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "yahoo.co.uk",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "msn.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mail.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "yandex.ru",
    "yandex.com",
    "mail.ru",
    "protonmail.com",
    "proton.me",
    "zoho.com",
    "qq.com",
    "163.com",
    "wp.pl",
    "o2.pl",
    "interia.pl",
];

/// What the value must satisfy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Condition {
    /// Equal to the text.
    Equals(String),
    /// Equal to one of the texts.
    OneOf(Vec<String>),
    /// Contains one of the texts.
    Contains(Vec<String>),
    /// Starts with one of the texts.
    StartsWith(Vec<String>),
    /// A number within the inclusive range; an absent bound is open.
    Range {
        /// Lowest accepted value.
        min: Option<f64>,
        /// Highest accepted value.
        max: Option<f64>,
    },
    /// Present and non-empty.
    Present,
    /// Absent or empty.
    Absent,
    /// An e-mail address (or domain) at a free-mail provider.
    FreeMail {
        /// Domains to treat as free-mail beyond [`FREE_MAIL_DOMAINS`].
        additional: Vec<String>,
    },
}

/// A condition on the field `field`, possibly negated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Predicate {
    /// The attribute or property name.
    pub field: String,
    /// Inverts the condition.
    pub negate: bool,
    /// The condition.
    pub condition: Condition,
}

impl Predicate {
    /// A plain (not negated) predicate.
    pub fn new(field: &str, condition: Condition) -> Self {
        Self {
            field: field.to_owned(),
            negate: false,
            condition,
        }
    }

    /// Whether the predicate holds for `values` (attribute or property name → value).
    pub fn holds(&self, values: &BTreeMap<String, String>) -> bool {
        let value = values
            .get(&self.field)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty());
        self.condition.holds(value) != self.negate
    }
}

impl Condition {
    /// Whether the condition holds for `value` (`None` when absent or empty).
    pub fn holds(&self, value: Option<&str>) -> bool {
        let lower = value.map(str::to_lowercase);
        let lower = lower.as_deref();
        match self {
            Condition::Present => value.is_some(),
            Condition::Absent => value.is_none(),
            Condition::Equals(expected) => lower == Some(expected.to_lowercase().as_str()),
            Condition::OneOf(options) => {
                lower.is_some_and(|v| options.iter().any(|o| o.to_lowercase() == v))
            }
            Condition::Contains(needles) => {
                lower.is_some_and(|v| needles.iter().any(|n| v.contains(&n.to_lowercase())))
            }
            Condition::StartsWith(prefixes) => {
                lower.is_some_and(|v| prefixes.iter().any(|p| v.starts_with(&p.to_lowercase())))
            }
            Condition::Range { min, max } => value
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|n| n.is_finite())
                .is_some_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)),
            Condition::FreeMail { additional } => lower.is_some_and(|v| {
                let domain = v.rsplit_once('@').map_or(v, |(_, d)| d);
                FREE_MAIL_DOMAINS.contains(&domain)
                    || additional.iter().any(|a| a.to_lowercase() == domain)
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn conditions() {
        let v = values(&[
            ("title", "VP Marketing"),
            ("company_size", "120"),
            ("email", "a@Gmail.com"),
            ("path", "/pricing/teams"),
        ]);
        let holds = |field: &str, c: Condition| Predicate::new(field, c).holds(&v);
        assert!(holds("title", Condition::Contains(vec!["vp".into()])));
        assert!(holds("title", Condition::Equals("vp marketing".into())));
        assert!(!holds("title", Condition::OneOf(vec!["CEO".into()])));
        assert!(holds(
            "company_size",
            Condition::Range {
                min: Some(50.0),
                max: Some(1000.0)
            }
        ));
        assert!(!holds(
            "company_size",
            Condition::Range {
                min: Some(200.0),
                max: None
            }
        ));
        assert!(holds("email", Condition::FreeMail { additional: vec![] }));
        assert!(holds(
            "path",
            Condition::StartsWith(vec!["/pricing".into()])
        ));
        assert!(holds("industry", Condition::Absent));
        assert!(!holds("industry", Condition::Present));
        let negated = Predicate {
            negate: true,
            ..Predicate::new("industry", Condition::Present)
        };
        assert!(negated.holds(&v));
    }
}
