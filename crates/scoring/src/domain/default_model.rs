//! The model every tenant starts with, built from the seeds: an e-book or guide download is
//! worth about 5, a "talk to sales" form 10, pricing pages and webinars signal intent, fit comes
//! from seniority, role, company size and industry, and free-mail and student profiles count
//! against. Its MQL threshold (qualification's) is 60.

use std::collections::BTreeSet;

use chrono::Duration;

use super::fit::GradeBands;
use super::model::{BehaviorRule, Cap, FitRule, InactivityRule, Model};
use super::predicate::{Condition, Predicate};

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| (*v).to_owned()).collect()
}

fn fit(id: &str, description: &str, predicate: Predicate, points: f64) -> FitRule {
    FitRule {
        id: id.into(),
        description: description.into(),
        predicates: vec![predicate],
        points,
    }
}

fn behavior(id: &str, description: &str, activity_type: &str, points: f64) -> BehaviorRule {
    BehaviorRule {
        id: id.into(),
        description: description.into(),
        activity_type: activity_type.into(),
        predicates: Vec::new(),
        points,
        cap: None,
        once_per_asset: None,
    }
}

fn cap(max_points: Option<f64>, max_occurrences: Option<u32>, days: i64) -> Option<Cap> {
    Some(Cap {
        max_points,
        max_occurrences,
        window: Some(Duration::days(days)),
    })
}

/// The default scoring model (version 0 until a tenant publishes its own).
pub fn default_model() -> Model {
    let once_per_asset = Some("asset_id".to_owned());
    Model {
        version: 0,
        description: "leadflow default model".into(),
        fit_rules: vec![
            fit(
                "seniority-decision-maker",
                "director, VP, C-level or owner",
                Predicate::new(
                    "seniority",
                    Condition::OneOf(strings(&[
                        "SENIORITY_DIRECTOR",
                        "SENIORITY_VP",
                        "SENIORITY_C_LEVEL",
                        "SENIORITY_OWNER",
                    ])),
                ),
                15.0,
            ),
            fit(
                "seniority-manager",
                "manager",
                Predicate::new("seniority", Condition::Equals("SENIORITY_MANAGER".into())),
                10.0,
            ),
            fit(
                "title-go-to-market",
                "marketing, sales, growth or revenue role",
                Predicate::new(
                    "title",
                    Condition::Contains(strings(&[
                        "marketing",
                        "sales",
                        "growth",
                        "revenue",
                        "demand",
                    ])),
                ),
                5.0,
            ),
            fit(
                "company-size-icp",
                "50 to 5000 employees",
                Predicate::new(
                    "company_size",
                    Condition::Range {
                        min: Some(50.0),
                        max: Some(5000.0),
                    },
                ),
                10.0,
            ),
            fit(
                "industry-icp",
                "software and technology companies",
                Predicate::new(
                    "industry",
                    Condition::Contains(strings(&[
                        "software",
                        "saas",
                        "tech",
                        "internet",
                        "information technology",
                    ])),
                ),
                10.0,
            ),
            fit(
                "free-mail",
                "e-mail at a free-mail provider",
                Predicate::new(
                    "email",
                    Condition::FreeMail {
                        additional: Vec::new(),
                    },
                ),
                -10.0,
            ),
            fit(
                "student",
                "a student",
                Predicate::new("seniority", Condition::Equals("SENIORITY_STUDENT".into())),
                -20.0,
            ),
            fit(
                "title-student",
                "student or intern in the title",
                Predicate::new(
                    "title",
                    Condition::Contains(strings(&["student", "intern"])),
                ),
                -10.0,
            ),
        ],
        grade_bands: GradeBands {
            a: 30.0,
            b: 20.0,
            c: 10.0,
        },
        behavior_rules: vec![
            BehaviorRule {
                once_per_asset: once_per_asset.clone(),
                ..behavior(
                    "content-download",
                    "e-book or guide downloaded",
                    "content_download",
                    5.0,
                )
            },
            behavior("contact-sales", "talk-to-sales form", "contact_sales", 10.0),
            behavior("demo-request", "demo requested", "demo_request", 10.0),
            BehaviorRule {
                cap: cap(None, Some(3), 7),
                ..behavior("pricing-view", "pricing page viewed", "pricing_view", 10.0)
            },
            BehaviorRule {
                predicates: vec![Predicate::new(
                    "path",
                    Condition::StartsWith(strings(&["/pricing"])),
                )],
                cap: cap(None, Some(3), 7),
                ..behavior(
                    "pricing-page-view",
                    "a /pricing page viewed",
                    "page_view",
                    10.0,
                )
            },
            BehaviorRule {
                cap: cap(Some(10.0), None, 7),
                ..behavior("page-view", "any page viewed", "page_view", 1.0)
            },
            BehaviorRule {
                once_per_asset: once_per_asset.clone(),
                cap: cap(Some(20.0), None, 14),
                ..behavior("email-open", "e-mail opened", "email_open", 4.0)
            },
            BehaviorRule {
                once_per_asset: once_per_asset.clone(),
                ..behavior("email-click", "e-mail link clicked", "email_click", 5.0)
            },
            BehaviorRule {
                once_per_asset: once_per_asset.clone(),
                ..behavior(
                    "webinar-registered",
                    "webinar registration",
                    "webinar_registered",
                    5.0,
                )
            },
            BehaviorRule {
                once_per_asset,
                ..behavior(
                    "webinar-attended",
                    "webinar attended",
                    "webinar_attended",
                    10.0,
                )
            },
            behavior("form-submit", "form submitted", "form_submit", 5.0),
            behavior("unsubscribe", "unsubscribed", "unsubscribe", -15.0),
            behavior("bounce", "e-mail bounced", "bounce", -10.0),
        ],
        half_life: Some(Duration::days(60)),
        inactivity_rules: vec![InactivityRule {
            id: "no-email-open-14d".into(),
            description: "no e-mail opened for 14 days".into(),
            activity_type: Some("email_open".into()),
            inactive_for: Duration::days(14),
            points: -10.0,
            repeat: false,
        }],
        hand_raise_types: BTreeSet::from(["contact_sales".to_owned(), "demo_request".to_owned()]),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::{DateTime, Utc};

    use super::*;
    use crate::domain::engine::{ActivityFact, LeadScore};
    use crate::domain::fit::Grade;

    /// The MQL threshold of qualification's default definition.
    const MQL_THRESHOLD: f64 = 60.0;

    fn fact(id: &str, kind: &str, at: DateTime<Utc>, props: &[(&str, &str)]) -> ActivityFact {
        ActivityFact {
            id: id.into(),
            activity_type: kind.into(),
            occurred_at: at,
            properties: props
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn profile(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The seeds' MQL: a marketing manager at a tech company downloaded the guide, opened three
    /// e-mails in two weeks and visited the pricing page twice.
    #[test]
    fn the_seed_marketing_manager_passes_the_mql_threshold() {
        let model = default_model();
        let t0 = Utc::now();
        let day = |d: i64| t0 + Duration::days(d);
        let facts = vec![
            fact(
                "guide",
                "content_download",
                day(0),
                &[("asset_id", "7-strategies-b2b-conversions")],
            ),
            fact("open-1", "email_open", day(2), &[("asset_id", "nurture-1")]),
            fact("open-2", "email_open", day(7), &[("asset_id", "nurture-2")]),
            fact(
                "open-3",
                "email_open",
                day(12),
                &[("asset_id", "nurture-3")],
            ),
            fact("pricing-1", "page_view", day(13), &[("path", "/pricing")]),
            fact("pricing-2", "page_view", day(14), &[("path", "/pricing")]),
        ];
        let manager = profile(&[
            ("title", "Marketing Manager"),
            ("seniority", "SENIORITY_MANAGER"),
            ("company_size", "200"),
            ("industry", "Software"),
            ("email", "dana@acme-tech.io"),
        ]);
        let lead = LeadScore::replay(&model, &manager, &facts, t0, day(14));
        let score = lead.score(&model, day(14));
        assert!(score.score > MQL_THRESHOLD, "scored {}", score.score);
        assert_eq!(score.grade, Grade::A);
        assert!(
            score.hand_raises.is_empty(),
            "an MQL has not raised its hand yet"
        );
    }

    /// A student with a free-mail address who read one blog post is not an MQL.
    #[test]
    fn the_student_with_free_mail_does_not() {
        let model = default_model();
        let t0 = Utc::now();
        let student = profile(&[
            ("seniority", "SENIORITY_STUDENT"),
            ("title", "Student"),
            ("email", "kim@gmail.com"),
        ]);
        let facts = vec![fact(
            "blog",
            "page_view",
            t0,
            &[("path", "/blog/what-is-an-mql")],
        )];
        let lead = LeadScore::replay(&model, &student, &facts, t0, t0);
        let score = lead.score(&model, t0);
        assert!(score.score < MQL_THRESHOLD, "scored {}", score.score);
        assert_eq!(score.grade, Grade::D);
    }
}
