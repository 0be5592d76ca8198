//! Owners (SDRs, account executives, managers), their territories and availability.

use chrono::{DateTime, Utc};
use leadflow_runtime::error::FieldViolations;
use serde::{Deserialize, Serialize};

use super::status::HandoffKind;

/// An owner's role (`OwnerRole`): SDR_REVIEW hand-offs go to SDRs, SALES hand-offs to account
/// executives; managers receive escalations in the manager queue and are never routed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// A sales development rep: reviews MQLs.
    Sdr,
    /// An account executive: takes SQLs.
    AccountExecutive,
    /// A manager: works the manager queue.
    Manager,
}

impl Role {
    /// True when hand-offs of `kind` may be routed to an owner of this role.
    pub fn takes(self, kind: HandoffKind) -> bool {
        matches!(
            (self, kind),
            (Role::Sdr, HandoffKind::SdrReview) | (Role::AccountExecutive, HandoffKind::Sales)
        )
    }

    /// The role's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            Role::Sdr => "sdr",
            Role::AccountExecutive => "account executive",
            Role::Manager => "manager",
        }
    }
}

/// An inclusive range of employee counts (`CompanySizeRange`); an unset bound is open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompanySizeRange {
    /// The smallest size in the range, if bounded.
    pub min_employees: Option<u32>,
    /// The largest size in the range, if bounded.
    pub max_employees: Option<u32>,
}

impl CompanySizeRange {
    /// True when `size` is within the range.
    pub fn contains(&self, size: u32) -> bool {
        self.min_employees.is_none_or(|min| size >= min)
            && self.max_employees.is_none_or(|max| size <= max)
    }
}

/// A period of time (`TimeWindow`): at or after `start_time`, before `end_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeWindow {
    /// The first instant in the window.
    pub start_time: DateTime<Utc>,
    /// The first instant after the window.
    pub end_time: DateTime<Utc>,
}

impl TimeWindow {
    /// True when `at` is in the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start_time <= at && at < self.end_time
    }
}

/// What routing knows about a lead: the dimensions territories match on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeadFacts {
    /// ISO 3166-1 alpha-2 country code of the lead, if known.
    pub country: Option<String>,
    /// The profile's industry, if known.
    pub industry: Option<String>,
    /// The company's employee count, if known.
    pub company_size: Option<u32>,
}

/// The leads an owner or a routing rule covers (`Territory`). Every listed dimension must match;
/// an empty dimension matches everything, a lead missing a listed dimension matches nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Territory {
    /// ISO 3166-1 alpha-2 country codes, e.g. "DE", compared case-insensitively.
    pub countries: Vec<String>,
    /// Industries, compared case-insensitively.
    pub industries: Vec<String>,
    /// Company-size ranges; the lead's size must be in one of them.
    pub company_sizes: Vec<CompanySizeRange>,
}

impl Territory {
    /// True when the lead falls in the territory.
    pub fn matches(&self, lead: &LeadFacts) -> bool {
        let countries = self.countries.is_empty()
            || lead
                .country
                .as_deref()
                .is_some_and(|c| self.countries.iter().any(|t| same_text(t, c)));
        let industries = self.industries.is_empty()
            || lead
                .industry
                .as_deref()
                .is_some_and(|i| self.industries.iter().any(|t| same_text(t, i)));
        let sizes = self.company_sizes.is_empty()
            || lead
                .company_size
                .is_some_and(|s| self.company_sizes.iter().any(|r| r.contains(s)));
        countries && industries && sizes
    }

    /// Adds every mistake to `v`, each field under `at` (e.g. `owner.territory`).
    pub fn check(&self, at: &str, v: &mut FieldViolations) {
        for (i, country) in self.countries.iter().enumerate() {
            if !is_country_code(country) {
                v.add(
                    format!("{at}.countries[{i}]"),
                    "an iso 3166-1 alpha-2 country code such as DE",
                );
            }
        }
        for (i, industry) in self.industries.iter().enumerate() {
            if industry.trim().is_empty() {
                v.add(format!("{at}.industries[{i}]"), "must not be blank");
            }
        }
        for (i, range) in self.company_sizes.iter().enumerate() {
            if let (Some(min), Some(max)) = (range.min_employees, range.max_employees)
                && min > max
            {
                v.add(
                    format!("{at}.company_sizes[{i}].max_employees"),
                    "must be at least min_employees",
                );
            }
        }
    }
}

/// Someone hand-offs are routed to (`Owner`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// Chosen by the caller, e.g. the CRM's user id (`owner_id`).
    pub id: String,
    /// For people.
    pub display_name: String,
    /// The owner's e-mail address; may be empty.
    pub email: String,
    /// SDR, account executive or manager.
    pub role: Role,
    /// The team the owner belongs to, for the SLA report; may be empty.
    pub team_id: String,
    /// The leads the owner covers; in a rule's pool an owner gets only leads of its territory.
    pub territory: Territory,
    /// Open hand-offs the owner may hold at most; zero means no limit.
    pub capacity: u32,
    /// Weight in the round-robin; zero counts as one.
    pub weight: u32,
    /// Windows in which the owner gets no new hand-offs.
    pub out_of_office: Vec<TimeWindow>,
    /// False after deactivation: routing skips the owner.
    pub active: bool,
}

impl Owner {
    /// The weight the round-robin uses (at least one).
    pub fn effective_weight(&self) -> u32 {
        self.weight.max(1)
    }

    /// True when one of the owner's out-of-office windows holds `now`.
    pub fn is_out_of_office(&self, now: DateTime<Utc>) -> bool {
        self.out_of_office.iter().any(|w| w.contains(now))
    }

    /// True when the owner is active and not out of office at `now`.
    pub fn available_at(&self, now: DateTime<Utc>) -> bool {
        self.active && !self.is_out_of_office(now)
    }

    /// True when the owner may take one more hand-off while holding `open` ones.
    pub fn has_capacity(&self, open: u32) -> bool {
        self.capacity == 0 || open < self.capacity
    }

    /// Every mistake, each field named as in `UpsertOwnerRequest` (e.g.
    /// `owner.territory.countries[0]`).
    pub fn validate(&self) -> Result<(), FieldViolations> {
        let mut v = FieldViolations::new();
        if self.id.trim().is_empty() {
            v.add("owner.owner_id", "required");
        } else if self.id.trim() != self.id || self.id.chars().any(char::is_control) {
            v.add(
                "owner.owner_id",
                "must not have surrounding spaces or control characters",
            );
        }
        if !self.email.is_empty() && !is_email(&self.email) {
            v.add("owner.email", "not an e-mail address");
        }
        self.territory.check("owner.territory", &mut v);
        for (i, window) in self.out_of_office.iter().enumerate() {
            if window.end_time <= window.start_time {
                v.add(
                    format!("owner.out_of_office[{i}].end_time"),
                    "must be after start_time",
                );
            }
        }
        v.into_result(())
    }
}

fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
}

/// True for the shape of an ISO 3166-1 alpha-2 code: two ASCII letters.
fn is_country_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic())
}

fn is_email(email: &str) -> bool {
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 10, hour, 0, 0)
            .single()
            .expect("valid time")
    }

    fn lead(country: Option<&str>, industry: Option<&str>, size: Option<u32>) -> LeadFacts {
        LeadFacts {
            country: country.map(str::to_owned),
            industry: industry.map(str::to_owned),
            company_size: size,
        }
    }

    fn range(min: Option<u32>, max: Option<u32>) -> CompanySizeRange {
        CompanySizeRange {
            min_employees: min,
            max_employees: max,
        }
    }

    fn owner(id: &str, role: Role) -> Owner {
        Owner {
            id: id.to_owned(),
            display_name: id.to_uppercase(),
            email: format!("{id}@example.com"),
            role,
            team_id: "team".to_owned(),
            territory: Territory::default(),
            capacity: 0,
            weight: 1,
            out_of_office: Vec::new(),
            active: true,
        }
    }

    #[test]
    fn territory_matching_table() {
        let dach_tech_mid = Territory {
            countries: vec!["DE".into(), "AT".into(), "ch".into()],
            industries: vec!["Software".into(), "Fintech".into()],
            company_sizes: vec![range(Some(50), Some(499)), range(Some(5000), None)],
        };
        let cases: [(&Territory, LeadFacts, bool); 14] = [
            // An empty territory matches everything, even a lead we know nothing about.
            (&Territory::default(), lead(None, None, None), true),
            (
                &Territory::default(),
                lead(Some("US"), Some("x"), Some(1)),
                true,
            ),
            (
                &dach_tech_mid,
                lead(Some("DE"), Some("Software"), Some(50)),
                true,
            ),
            // Case-insensitive country and industry, surrounding spaces ignored.
            (
                &dach_tech_mid,
                lead(Some("de"), Some("SOFTWARE"), Some(499)),
                true,
            ),
            (
                &dach_tech_mid,
                lead(Some("CH"), Some(" fintech "), Some(200)),
                true,
            ),
            // Open upper bound.
            (
                &dach_tech_mid,
                lead(Some("AT"), Some("software"), Some(100_000)),
                true,
            ),
            // Each dimension can fail on its own.
            (
                &dach_tech_mid,
                lead(Some("FR"), Some("Software"), Some(100)),
                false,
            ),
            (
                &dach_tech_mid,
                lead(Some("DE"), Some("Retail"), Some(100)),
                false,
            ),
            (
                &dach_tech_mid,
                lead(Some("DE"), Some("Software"), Some(49)),
                false,
            ),
            (
                &dach_tech_mid,
                lead(Some("DE"), Some("Software"), Some(500)),
                false,
            ),
            (
                &dach_tech_mid,
                lead(Some("DE"), Some("Software"), Some(4999)),
                false,
            ),
            // A listed dimension the lead lacks does not match.
            (
                &dach_tech_mid,
                lead(None, Some("Software"), Some(100)),
                false,
            ),
            (&dach_tech_mid, lead(Some("DE"), None, Some(100)), false),
            (
                &dach_tech_mid,
                lead(Some("DE"), Some("Software"), None),
                false,
            ),
        ];
        for (i, (territory, facts, expected)) in cases.iter().enumerate() {
            assert_eq!(territory.matches(facts), *expected, "case {i}: {facts:?}");
        }
        let unicode = Territory {
            industries: vec!["Śląsk Górnictwo".into()],
            ..Territory::default()
        };
        assert!(unicode.matches(&lead(None, Some("śląsk górnictwo"), None)));
    }

    #[test]
    fn availability_capacity_and_weight() {
        let mut o = owner("ada", Role::Sdr);
        o.out_of_office = vec![TimeWindow {
            start_time: at(9),
            end_time: at(12),
        }];
        assert!(o.available_at(at(8)));
        assert!(!o.available_at(at(9)), "the start is in the window");
        assert!(!o.available_at(at(11)));
        assert!(o.available_at(at(12)), "the end is not");
        o.active = false;
        assert!(!o.available_at(at(8)));

        assert!(o.has_capacity(1_000), "zero is no limit");
        o.capacity = 2;
        assert!(o.has_capacity(1));
        assert!(!o.has_capacity(2));
        assert_eq!(o.effective_weight(), 1);
        o.weight = 0;
        assert_eq!(o.effective_weight(), 1, "zero counts as one");
        o.weight = 3;
        assert_eq!(o.effective_weight(), 3);
    }

    #[test]
    fn roles_take_their_kind_only() {
        assert!(Role::Sdr.takes(HandoffKind::SdrReview));
        assert!(!Role::Sdr.takes(HandoffKind::Sales));
        assert!(Role::AccountExecutive.takes(HandoffKind::Sales));
        assert!(!Role::AccountExecutive.takes(HandoffKind::SdrReview));
        assert!(!Role::Manager.takes(HandoffKind::Sales));
        assert!(!Role::Manager.takes(HandoffKind::SdrReview));
    }

    #[test]
    fn a_valid_owner_passes_and_every_mistake_is_named() {
        owner("ada", Role::AccountExecutive)
            .validate()
            .expect("valid");
        let mut bad = owner(" ", Role::Sdr);
        bad.email = "not-an-email".into();
        bad.territory = Territory {
            countries: vec!["DE".into(), "DEU".into(), "d1".into()],
            industries: vec!["Software".into(), "  ".into()],
            company_sizes: vec![range(Some(10), Some(10)), range(Some(500), Some(50))],
        };
        bad.out_of_office = vec![
            TimeWindow {
                start_time: at(9),
                end_time: at(10),
            },
            TimeWindow {
                start_time: at(10),
                end_time: at(10),
            },
        ];
        let err = bad.validate().expect_err("invalid");
        let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "owner.owner_id",
                "owner.email",
                "owner.territory.countries[1]",
                "owner.territory.countries[2]",
                "owner.territory.industries[1]",
                "owner.territory.company_sizes[1].max_employees",
                "owner.out_of_office[1].end_time",
            ]
        );
        assert_eq!(err.violations()[0].description, "required");
    }

    proptest! {
        /// A range matches exactly the sizes between its bounds.
        #[test]
        fn size_ranges_are_inclusive(min in proptest::option::of(0u32..1000), max in proptest::option::of(0u32..1000), size in 0u32..1000) {
            let expected = min.is_none_or(|m| size >= m) && max.is_none_or(|m| size <= m);
            prop_assert_eq!(range(min, max).contains(size), expected);
        }

        /// Adding a country to a territory never loses a lead it matched.
        #[test]
        fn more_countries_match_no_fewer(extra in "[A-Z]{2}", country in "[A-Z]{2}") {
            let narrow = Territory { countries: vec!["DE".into()], ..Territory::default() };
            let wide = Territory { countries: vec!["DE".into(), extra], ..Territory::default() };
            let facts = lead(Some(&country), None, None);
            prop_assert!(!narrow.matches(&facts) || wide.matches(&facts));
        }
    }
}
