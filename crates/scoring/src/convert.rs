//! Conversions between the protobuf contract and scoring's domain, with validation: each failure
//! is a field violation naming the field's path relative to the converted message (e.g.
//! `behavior_rules[2].cap.window` inside a `ScoringModel`).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::scoring::v1 as pb;
use leadflow_runtime::error::FieldViolations;

use crate::domain::engine::{ActivityFact, Explanation, LineKind, ScoreView};
use crate::domain::fit::{Grade, GradeBands};
use crate::domain::model::{BehaviorRule, Cap, FitRule, InactivityRule, Model};
use crate::domain::predicate::{Condition, Predicate};

/// Values beyond this magnitude are clamped before rounding (far outside any real score).
const ROUNDING_CLAMP: f64 = 1e12;

// ---------------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------------

pub use leadflow_runtime::pbtime::{duration, timestamp, to_duration, to_timestamp};

/// An optional protobuf duration where absent or zero means `None`; invalid ones are violations on `field`.
fn optional_duration(
    d: Option<&prost_types::Duration>,
    field: &str,
    v: &mut FieldViolations,
) -> Option<chrono::Duration> {
    let d = d?;
    match duration(d) {
        Some(d) if d.is_zero() => None,
        Some(d) => Some(d),
        None => {
            v.add(field, "not a valid duration");
            None
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------------

/// Converts and validates a published `ScoringModel` (its version is ignored: the store assigns it).
///
/// Grade bands need exactly one band each for A, B and C; a D band is accepted and ignored (D is
/// the floor, whatever its minimum), but at most one. Absent or zero half-life means no decay, an
/// absent or zero cap window the whole history, a cap with both limits zero no cap, an empty
/// `once_per_asset_property` none and an empty inactivity `activity_type` any activity. Every
/// violation names its field relative to the `ScoringModel`; [`Model::validate`]'s violations on
/// a field already reported by the conversion are left out.
pub fn model_from_pb(model: pb::ScoringModel) -> Result<Model, FieldViolations> {
    let mut v = FieldViolations::new();

    let mut fit_rules = Vec::with_capacity(model.fit_rules.len());
    for (i, rule) in model.fit_rules.into_iter().enumerate() {
        let predicates = predicates_from_pb(
            rule.predicates,
            &format!("fit_rules[{i}].predicates"),
            &mut v,
        );
        fit_rules.push(FitRule {
            id: rule.id,
            description: rule.description,
            predicates,
            points: rule.points,
        });
    }

    let grade_bands = grade_bands_from_pb(&model.grade_bands, &mut v);

    let mut behavior_rules = Vec::with_capacity(model.behavior_rules.len());
    for (i, rule) in model.behavior_rules.into_iter().enumerate() {
        let at = format!("behavior_rules[{i}]");
        let predicates = predicates_from_pb(
            rule.property_predicates,
            &format!("{at}.property_predicates"),
            &mut v,
        );
        let cap = rule.cap.and_then(|cap| {
            if cap.max_occurrences < 0 {
                v.add(
                    format!("{at}.cap.max_occurrences"),
                    "must not be negative (zero means no limit)",
                );
            }
            let window =
                optional_duration(cap.window.as_ref(), &format!("{at}.cap.window"), &mut v);
            let max_points = (cap.max_points != 0.0).then_some(cap.max_points);
            let max_occurrences = u32::try_from(cap.max_occurrences).ok().filter(|n| *n != 0);
            (max_points.is_some() || max_occurrences.is_some()).then_some(Cap {
                max_points,
                max_occurrences,
                window,
            })
        });
        behavior_rules.push(BehaviorRule {
            id: rule.id,
            description: rule.description,
            activity_type: rule.activity_type,
            predicates,
            points: rule.points,
            cap,
            once_per_asset: Some(rule.once_per_asset_property).filter(|p| !p.is_empty()),
        });
    }

    let half_life = optional_duration(
        model.engagement_half_life.as_ref(),
        "engagement_half_life",
        &mut v,
    );

    let mut inactivity_rules = Vec::with_capacity(model.inactivity_rules.len());
    for (i, rule) in model.inactivity_rules.into_iter().enumerate() {
        let field = format!("inactivity_rules[{i}].inactive_for");
        let inactive_for = match rule.inactive_for.as_ref().map(duration) {
            Some(Some(d)) => d,
            Some(None) => {
                v.add(field, "not a valid duration");
                chrono::Duration::zero()
            }
            None => {
                v.add(field, "required");
                chrono::Duration::zero()
            }
        };
        inactivity_rules.push(InactivityRule {
            id: rule.id,
            description: rule.description,
            activity_type: Some(rule.activity_type).filter(|t| !t.is_empty()),
            inactive_for,
            points: rule.points,
            repeat: rule.repeat,
        });
    }

    let hand_raise_order = model.hand_raise_activity_types;
    let domain = Model {
        version: 0,
        description: model.description,
        fit_rules,
        grade_bands,
        behavior_rules,
        half_life,
        inactivity_rules,
        hand_raise_types: hand_raise_order.iter().cloned().collect(),
    };

    if let Err(more) = domain.validate() {
        let reported: HashSet<String> = v.violations().iter().map(|x| x.field.clone()).collect();
        for x in more.violations() {
            let field = proto_path(&x.field, &domain.hand_raise_types, &hand_raise_order);
            if !reported.contains(&field) {
                v.add(field, x.description.clone());
            }
        }
    }
    v.into_result(domain)
}

/// Maps a path of [`Model::validate`] onto the `ScoringModel` message: hand-raise types are
/// indexed as in the request (the model keeps them as a sorted set).
fn proto_path(field: &str, set: &BTreeSet<String>, request_order: &[String]) -> String {
    let index = field
        .strip_prefix("hand_raise_activity_types[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|k| k.parse::<usize>().ok());
    if let Some(k) = index
        && let Some(kind) = set.iter().nth(k)
        && let Some(original) = request_order.iter().position(|t| t == kind)
    {
        return format!("hand_raise_activity_types[{original}]");
    }
    field.to_owned()
}

fn predicates_from_pb(
    predicates: Vec<pb::Predicate>,
    at: &str,
    v: &mut FieldViolations,
) -> Vec<Predicate> {
    predicates
        .into_iter()
        .enumerate()
        .map(|(j, p)| {
            let at = format!("{at}[{j}]");
            // A placeholder keeps the indexes of later predicates for validation; the model is
            // rejected anyway.
            let condition = match p.condition {
                Some(condition) => condition_from_pb(condition, &at, v),
                None => {
                    v.add(format!("{at}.condition"), "required");
                    Condition::Present
                }
            };
            Predicate {
                field: p.field,
                negate: p.negate,
                condition,
            }
        })
        .collect()
}

fn condition_from_pb(
    condition: pb::predicate::Condition,
    at: &str,
    v: &mut FieldViolations,
) -> Condition {
    use pb::predicate::Condition as C;
    match condition {
        C::Equals(value) => Condition::Equals(value),
        C::OneOf(set) => Condition::OneOf(set.values),
        C::Contains(set) => Condition::Contains(set.values),
        C::StartsWith(set) => Condition::StartsWith(set.values),
        C::Range(range) => Condition::Range {
            min: range.min,
            max: range.max,
        },
        C::Presence(presence) => match pb::Presence::try_from(presence) {
            Ok(pb::Presence::Present) => Condition::Present,
            Ok(pb::Presence::Absent) => Condition::Absent,
            Ok(pb::Presence::Unspecified) | Err(_) => {
                v.add(
                    format!("{at}.presence"),
                    "PRESENCE_PRESENT or PRESENCE_ABSENT",
                );
                Condition::Present
            }
        },
        C::FreeMailDomain(free_mail) => Condition::FreeMail {
            additional: free_mail.additional_domains,
        },
    }
}

fn grade_bands_from_pb(bands: &[pb::GradeBand], v: &mut FieldViolations) -> GradeBands {
    let (mut a, mut b, mut c, mut d) = (Vec::new(), Vec::new(), Vec::new(), 0usize);
    for (k, band) in bands.iter().enumerate() {
        match common::FitGrade::try_from(band.grade) {
            Ok(common::FitGrade::A) => a.push(band.min_fit_points),
            Ok(common::FitGrade::B) => b.push(band.min_fit_points),
            Ok(common::FitGrade::C) => c.push(band.min_fit_points),
            Ok(common::FitGrade::D) => d += 1,
            Ok(common::FitGrade::Unspecified) | Err(_) => {
                v.add(format!("grade_bands[{k}].grade"), "FIT_GRADE_A, B, C or D")
            }
        }
    }
    if a.len() != 1 || b.len() != 1 || c.len() != 1 || d > 1 {
        v.add(
            "grade_bands",
            "needs exactly one band each for A, B and C (D, the floor, needs none)",
        );
    }
    let first = |points: &[f64]| points.first().copied().unwrap_or(f64::NAN);
    GradeBands {
        a: first(&a),
        b: first(&b),
        c: first(&c),
    }
}

/// The protobuf form of a model, created at `create_time` (grade bands A, B and C only).
pub fn model_to_pb(model: &Model, create_time: DateTime<Utc>) -> pb::ScoringModel {
    let band = |grade: common::FitGrade, min_fit_points: f64| pb::GradeBand {
        grade: grade as i32,
        min_fit_points,
    };
    pb::ScoringModel {
        version: model.version,
        description: model.description.clone(),
        fit_rules: model
            .fit_rules
            .iter()
            .map(|rule| pb::FitRule {
                id: rule.id.clone(),
                description: rule.description.clone(),
                predicates: rule.predicates.iter().map(predicate_to_pb).collect(),
                points: rule.points,
            })
            .collect(),
        grade_bands: vec![
            band(common::FitGrade::A, model.grade_bands.a),
            band(common::FitGrade::B, model.grade_bands.b),
            band(common::FitGrade::C, model.grade_bands.c),
        ],
        behavior_rules: model
            .behavior_rules
            .iter()
            .map(|rule| pb::BehaviorRule {
                id: rule.id.clone(),
                description: rule.description.clone(),
                activity_type: rule.activity_type.clone(),
                property_predicates: rule.predicates.iter().map(predicate_to_pb).collect(),
                points: rule.points,
                cap: rule.cap.as_ref().map(|cap| pb::BehaviorCap {
                    max_points: cap.max_points.unwrap_or(0.0),
                    max_occurrences: cap
                        .max_occurrences
                        .map_or(0, |n| i32::try_from(n).unwrap_or(i32::MAX)),
                    window: cap.window.map(to_duration),
                }),
                once_per_asset_property: rule.once_per_asset.clone().unwrap_or_default(),
            })
            .collect(),
        engagement_half_life: model.half_life.map(to_duration),
        inactivity_rules: model
            .inactivity_rules
            .iter()
            .map(|rule| pb::InactivityRule {
                id: rule.id.clone(),
                description: rule.description.clone(),
                activity_type: rule.activity_type.clone().unwrap_or_default(),
                inactive_for: Some(to_duration(rule.inactive_for)),
                points: rule.points,
                repeat: rule.repeat,
            })
            .collect(),
        hand_raise_activity_types: model.hand_raise_types.iter().cloned().collect(),
        create_time: Some(to_timestamp(create_time)),
    }
}

fn predicate_to_pb(predicate: &Predicate) -> pb::Predicate {
    use pb::predicate::Condition as C;
    let set = |values: &[String]| pb::StringSet {
        values: values.to_vec(),
    };
    let condition = match &predicate.condition {
        Condition::Equals(value) => C::Equals(value.clone()),
        Condition::OneOf(values) => C::OneOf(set(values)),
        Condition::Contains(values) => C::Contains(set(values)),
        Condition::StartsWith(values) => C::StartsWith(set(values)),
        Condition::Range { min, max } => C::Range(pb::NumericRange {
            min: *min,
            max: *max,
        }),
        Condition::Present => C::Presence(pb::Presence::Present as i32),
        Condition::Absent => C::Presence(pb::Presence::Absent as i32),
        Condition::FreeMail { additional } => C::FreeMailDomain(pb::FreeMailDomain {
            additional_domains: additional.clone(),
        }),
    };
    pb::Predicate {
        field: predicate.field.clone(),
        negate: predicate.negate,
        condition: Some(condition),
    }
}

// ---------------------------------------------------------------------------------------------
// Profiles, activities, grades
// ---------------------------------------------------------------------------------------------

/// The attributes fit predicates read from a profile: its present fields, enums by value name, traits as `traits.<key>`.
pub fn profile_attributes(profile: &common::Profile) -> BTreeMap<String, String> {
    let mut attributes = BTreeMap::new();
    let texts = [
        ("email", &profile.email),
        ("first_name", &profile.first_name),
        ("last_name", &profile.last_name),
        ("title", &profile.title),
        ("company", &profile.company),
        ("company_domain", &profile.company_domain),
        ("industry", &profile.industry),
        ("country", &profile.country),
    ];
    for (key, value) in texts {
        if let Some(value) = value {
            attributes.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(size) = profile.company_size {
        attributes.insert("company_size".to_owned(), size.to_string());
    }
    let seniority = common::Seniority::try_from(profile.seniority)
        .ok()
        .filter(|s| *s != common::Seniority::Unspecified)
        .map(|s| s.as_str_name());
    let source_channel = common::SourceChannel::try_from(profile.source_channel)
        .ok()
        .filter(|s| *s != common::SourceChannel::Unspecified)
        .map(|s| s.as_str_name());
    let consent = common::Consent::try_from(profile.consent)
        .ok()
        .filter(|c| *c != common::Consent::Unspecified)
        .map(|c| c.as_str_name());
    for (key, name) in [
        ("seniority", seniority),
        ("source_channel", source_channel),
        ("consent", consent),
    ] {
        if let Some(name) = name {
            attributes.insert(key.to_owned(), name.to_owned());
        }
    }
    for (key, value) in &profile.traits {
        attributes.insert(format!("traits.{key}"), value.clone());
    }
    attributes
}

/// The protobuf fit grade of a domain grade (use `as i32` for message fields).
pub fn grade_to_pb(grade: Grade) -> common::FitGrade {
    match grade {
        Grade::A => common::FitGrade::A,
        Grade::B => common::FitGrade::B,
        Grade::C => common::FitGrade::C,
        Grade::D => common::FitGrade::D,
    }
}

/// The domain grade of a protobuf fit grade value; `None` for unspecified or unknown values.
pub fn grade_from_pb(grade: i32) -> Option<Grade> {
    match common::FitGrade::try_from(grade).ok()? {
        common::FitGrade::A => Some(Grade::A),
        common::FitGrade::B => Some(Grade::B),
        common::FitGrade::C => Some(Grade::C),
        common::FitGrade::D => Some(Grade::D),
        common::FitGrade::Unspecified => None,
    }
}

/// The scoring fact of an activity with id `activity_id`; `occurred_at` and `type` are required.
pub fn fact_from_pb(
    activity_id: &str,
    activity: &common::Activity,
) -> Result<ActivityFact, FieldViolations> {
    let mut v = FieldViolations::new();
    if activity.r#type.is_empty() {
        v.add("type", "required");
    }
    let occurred_at = match activity.occurred_at.as_ref().map(timestamp) {
        Some(Some(t)) => Some(t),
        Some(None) => {
            v.add("occurred_at", "not a valid time");
            None
        }
        None => {
            v.add("occurred_at", "required");
            None
        }
    };
    match occurred_at {
        Some(occurred_at) if v.is_empty() => Ok(ActivityFact {
            id: activity_id.to_owned(),
            activity_type: activity.r#type.clone(),
            occurred_at,
            properties: activity
                .properties
                .iter()
                .map(|(k, val)| (k.clone(), val.clone()))
                .collect(),
        }),
        _ => Err(v),
    }
}

// ---------------------------------------------------------------------------------------------
// Scores and explanations
// ---------------------------------------------------------------------------------------------

/// `score` rounded half away from zero, saturating at the bounds of `i32` (NaN is 0).
fn round_score(score: f64) -> i32 {
    score.round() as i32
}

/// The protobuf score of a lead under model version `model_version`.
pub fn score_to_pb(
    lead_id: &str,
    view: &ScoreView,
    model_version: i32,
    update_time: Option<DateTime<Utc>>,
) -> pb::Score {
    pb::Score {
        lead_id: lead_id.to_owned(),
        score: view.score,
        rounded_score: round_score(view.score),
        fit_points: view.fit_points,
        engagement_points: view.engagement,
        fit_grade: grade_to_pb(view.grade) as i32,
        hand_raises: view
            .hand_raises
            .iter()
            .map(|(id, kind, at)| pb::HandRaise {
                activity_id: id.clone(),
                activity_type: kind.clone(),
                occurred_at: Some(to_timestamp(*at)),
            })
            .collect(),
        model_version,
        as_of_time: Some(to_timestamp(view.as_of)),
        update_time: update_time.map(to_timestamp),
    }
}

/// The protobuf explanation of a score; its `score` is the explanation's sum, not the view's.
///
/// `score.score` is `explanation.score` (the exact sum of the contribution values, which equals
/// the view's score within floating-point rounding) and `score.engagement_points` the sum of the
/// non-fit values, so the contributions add up to the score exactly; the rounded values are
/// largest-remainder rounded so that they add up to `score.rounded_score` exactly.
/// `rule_description` is empty for rules no longer in `model`.
pub fn explanation_to_pb(
    lead_id: &str,
    view: &ScoreView,
    explanation: &Explanation,
    model: &Model,
    model_version: i32,
    update_time: Option<DateTime<Utc>>,
) -> pb::ScoreExplanation {
    let mut score = score_to_pb(lead_id, view, model_version, update_time);
    score.score = explanation.score;
    score.rounded_score = round_score(explanation.score);
    score.engagement_points = explanation
        .contributions
        .iter()
        .filter(|c| c.line.kind != LineKind::Fit)
        .map(|c| c.value)
        .sum();
    let values: Vec<f64> = explanation.contributions.iter().map(|c| c.value).collect();
    let rounded = largest_remainder(&values, i64::from(score.rounded_score));
    let contributions = explanation
        .contributions
        .iter()
        .zip(rounded)
        .map(|(c, rounded_value)| {
            let line = &c.line;
            pb::ScoreContribution {
                ledger_entry_id: line.seq.to_string(),
                kind: kind_to_pb(line.kind) as i32,
                rule_id: line.rule_id.clone(),
                rule_description: rule_description(model, line.kind, &line.rule_id)
                    .unwrap_or_default()
                    .to_owned(),
                activity_id: line.activity_id.clone().unwrap_or_default(),
                activity_type: line.activity_type.clone().unwrap_or_default(),
                effective_time: Some(to_timestamp(line.effective_at)),
                original_points: line.points,
                value: c.value,
                rounded_value: i32::try_from(rounded_value).unwrap_or(if rounded_value < 0 {
                    i32::MIN
                } else {
                    i32::MAX
                }),
                model_version: line.model_version,
            }
        })
        .collect();
    pb::ScoreExplanation {
        score: Some(score),
        contributions,
    }
}

fn kind_to_pb(kind: LineKind) -> pb::ContributionKind {
    match kind {
        LineKind::Fit => pb::ContributionKind::FitRule,
        LineKind::Behavior => pb::ContributionKind::BehaviorRule,
        LineKind::Inactivity => pb::ContributionKind::InactivityRule,
    }
}

fn rule_description<'m>(model: &'m Model, kind: LineKind, rule_id: &str) -> Option<&'m str> {
    match kind {
        LineKind::Fit => model
            .fit_rules
            .iter()
            .find(|r| r.id == rule_id)
            .map(|r| r.description.as_str()),
        LineKind::Behavior => model
            .behavior_rules
            .iter()
            .find(|r| r.id == rule_id)
            .map(|r| r.description.as_str()),
        LineKind::Inactivity => model
            .inactivity_rules
            .iter()
            .find(|r| r.id == rule_id)
            .map(|r| r.description.as_str()),
    }
}

/// Rounds `values` to integers that add up to `target` exactly (largest-remainder): every value
/// is floored, and the units still missing go to the largest remainders first (earlier values
/// first on ties). When `target` is the rounded sum of the values, every result is the value's
/// floor or ceiling.
fn largest_remainder(values: &[f64], target: i64) -> Vec<i64> {
    let n = values.len();
    if n == 0 {
        return Vec::new();
    }
    let clamped: Vec<f64> = values
        .iter()
        .map(|v| {
            if v.is_finite() {
                v.clamp(-ROUNDING_CLAMP, ROUNDING_CLAMP)
            } else {
                0.0
            }
        })
        .collect();
    let mut rounded: Vec<i64> = clamped.iter().map(|v| v.floor() as i64).collect();
    let remainder = |i: usize| clamped[i] - clamped[i].floor();
    let missing = target - rounded.iter().sum::<i64>();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| remainder(y).total_cmp(&remainder(x)));
    let n = n as i64;
    let (base, extra) = (missing.div_euclid(n), missing.rem_euclid(n));
    for (rank, &i) in order.iter().enumerate() {
        rounded[i] += base + i64::from((rank as i64) < extra);
    }
    rounded
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::default_model::default_model;
    use crate::domain::engine::{Contribution, LeadScore, LedgerLine};
    use chrono::{Duration, TimeZone};
    use proptest::prelude::*;

    fn fields(err: &FieldViolations) -> Vec<&str> {
        err.violations().iter().map(|v| v.field.as_str()).collect()
    }

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
            .single()
            .expect("valid time")
    }

    #[test]
    fn the_default_model_round_trips() {
        let model = Model {
            version: 7,
            ..default_model()
        };
        let pb = model_to_pb(&model, t0());
        assert_eq!(pb.version, 7);
        assert_eq!(pb.create_time.as_ref().and_then(timestamp), Some(t0()));
        let back = model_from_pb(pb).expect("valid");
        assert_eq!(back.version, 0, "the store assigns versions");
        assert_eq!(back, default_model());
    }

    #[test]
    fn zero_and_absent_durations_and_empty_caps_mean_none() {
        let mut pb = model_to_pb(&default_model(), t0());
        pb.engagement_half_life = Some(prost_types::Duration::default());
        pb.behavior_rules[3].cap = Some(pb::BehaviorCap {
            max_points: 0.0,
            max_occurrences: 0,
            window: Some(to_duration(Duration::days(7))),
        });
        pb.behavior_rules[4].cap.as_mut().expect("present").window =
            Some(prost_types::Duration::default());
        pb.behavior_rules[5].cap.as_mut().expect("present").window = None;
        pb.behavior_rules[6].once_per_asset_property = String::new();
        pb.inactivity_rules[0].activity_type = String::new();
        let model = model_from_pb(pb).expect("valid");
        assert_eq!(model.half_life, None);
        assert_eq!(model.behavior_rules[3].cap, None);
        assert_eq!(
            model.behavior_rules[4]
                .cap
                .as_ref()
                .expect("present")
                .window,
            None
        );
        assert_eq!(
            model.behavior_rules[5]
                .cap
                .as_ref()
                .expect("present")
                .window,
            None
        );
        assert_eq!(model.behavior_rules[6].once_per_asset, None);
        assert_eq!(model.inactivity_rules[0].activity_type, None);
        let mut no_half_life = model_to_pb(&default_model(), t0());
        no_half_life.engagement_half_life = None;
        assert_eq!(model_from_pb(no_half_life).expect("valid").half_life, None);
    }

    #[test]
    fn every_mistake_is_named_relative_to_the_model() {
        let mut pb = model_to_pb(&default_model(), t0());
        pb.version = 99;
        pb.fit_rules[0].predicates.push(pb::Predicate {
            field: "title".into(),
            negate: false,
            condition: None,
        });
        pb.fit_rules[1].predicates[0].condition = Some(pb::predicate::Condition::Presence(
            pb::Presence::Unspecified as i32,
        ));
        pb.fit_rules[2].points = 0.0;
        pb.behavior_rules[4].property_predicates[0].field = String::new();
        pb.behavior_rules[3].cap.as_mut().expect("present").window = Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        });
        pb.behavior_rules[5]
            .cap
            .as_mut()
            .expect("present")
            .max_occurrences = -1;
        pb.engagement_half_life = Some(prost_types::Duration {
            seconds: 1,
            nanos: -1,
        });
        pb.inactivity_rules[0].inactive_for = None;
        pb.hand_raise_activity_types = vec!["demo_request".into(), "Contact Sales".into()];
        let err = model_from_pb(pb).expect_err("invalid");
        assert_eq!(
            fields(&err),
            [
                "fit_rules[0].predicates[1].condition",
                "fit_rules[1].predicates[0].presence",
                "behavior_rules[5].cap.max_occurrences",
                "engagement_half_life",
                "inactivity_rules[0].inactive_for",
                "fit_rules[2].points",
                "behavior_rules[3].cap.window",
                "behavior_rules[4].property_predicates[0].field",
                "hand_raise_activity_types[1]",
            ]
        );
    }

    #[test]
    fn grade_bands_need_one_each_of_a_b_and_c() {
        let band = |grade: common::FitGrade, min: f64| pb::GradeBand {
            grade: grade as i32,
            min_fit_points: min,
        };
        let with_bands = |bands: Vec<pb::GradeBand>| {
            let mut pb = model_to_pb(&default_model(), t0());
            pb.grade_bands = bands;
            model_from_pb(pb)
        };
        use common::FitGrade::{A, B, C, D, Unspecified};
        let model = with_bands(vec![
            band(C, 5.0),
            band(D, -100.0),
            band(A, 40.0),
            band(B, 20.0),
        ])
        .expect("a D band is ignored");
        assert_eq!(
            model.grade_bands,
            GradeBands {
                a: 40.0,
                b: 20.0,
                c: 5.0
            }
        );
        let missing = with_bands(vec![band(A, 40.0), band(B, 20.0)]).expect_err("no C");
        assert_eq!(fields(&missing), ["grade_bands"]);
        let twice = with_bands(vec![
            band(A, 40.0),
            band(A, 30.0),
            band(B, 20.0),
            band(C, 5.0),
        ])
        .expect_err("two A");
        assert_eq!(fields(&twice), ["grade_bands"]);
        let unspecified = with_bands(vec![
            band(A, 40.0),
            band(B, 20.0),
            band(C, 5.0),
            band(Unspecified, 1.0),
        ])
        .expect_err("unspecified");
        assert_eq!(fields(&unspecified), ["grade_bands[3].grade"]);
        let not_descending = with_bands(vec![band(A, 10.0), band(B, 20.0), band(C, 5.0)])
            .expect_err("not descending");
        assert_eq!(fields(&not_descending), ["grade_bands"]);
    }

    #[test]
    fn profile_attributes_feed_the_default_fit_rules() {
        let profile = common::Profile {
            email: Some("jane@acme.io".into()),
            title: Some("Marketing Manager".into()),
            seniority: common::Seniority::Manager as i32,
            company_size: Some(120),
            industry: Some("Software".into()),
            source_channel: common::SourceChannel::Unspecified as i32,
            consent: common::Consent::Granted as i32,
            traits: [("plan".to_owned(), "pro".to_owned())].into(),
            ..Default::default()
        };
        let attributes = profile_attributes(&profile);
        assert_eq!(attributes["seniority"], "SENIORITY_MANAGER");
        assert_eq!(attributes["company_size"], "120");
        assert_eq!(attributes["consent"], "CONSENT_GRANTED");
        assert_eq!(attributes["traits.plan"], "pro");
        assert!(!attributes.contains_key("source_channel"));
        assert!(!attributes.contains_key("country"));
        let fit = crate::domain::fit::evaluate(&default_model(), &attributes);
        let ids: Vec<&str> = fit.rules.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "seniority-manager",
                "title-go-to-market",
                "company-size-icp",
                "industry-icp"
            ]
        );
        assert_eq!(grade_to_pb(fit.grade), common::FitGrade::A);
        assert_eq!(
            grade_from_pb(grade_to_pb(fit.grade) as i32),
            Some(fit.grade)
        );
        assert_eq!(grade_from_pb(0), None);
    }

    #[test]
    fn facts_need_a_type_and_a_valid_time() {
        let activity = common::Activity {
            r#type: "page_view".into(),
            occurred_at: Some(to_timestamp(t0())),
            properties: [("path".to_owned(), "/pricing".to_owned())].into(),
        };
        let fact = fact_from_pb("a1", &activity).expect("valid");
        assert_eq!(fact.id, "a1");
        assert_eq!(fact.occurred_at, t0());
        assert_eq!(fact.properties["path"], "/pricing");
        let missing = common::Activity::default();
        assert_eq!(
            fields(&fact_from_pb("a2", &missing).expect_err("invalid")),
            ["type", "occurred_at"]
        );
        let bad_time = common::Activity {
            occurred_at: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -1,
            }),
            ..activity
        };
        assert_eq!(
            fields(&fact_from_pb("a3", &bad_time).expect_err("invalid")),
            ["occurred_at"]
        );
    }

    #[test]
    fn time_helpers_round_trip() {
        let t = t0() + Duration::nanoseconds(123_456_789);
        assert_eq!(timestamp(&to_timestamp(t)), Some(t));
        assert_eq!(
            timestamp(&prost_types::Timestamp {
                seconds: 0,
                nanos: 1_000_000_000
            }),
            None
        );
        for d in [
            Duration::days(14),
            Duration::milliseconds(-1500),
            Duration::nanoseconds(-1),
            Duration::zero(),
        ] {
            assert_eq!(duration(&to_duration(d)), Some(d));
        }
        assert_eq!(
            duration(&prost_types::Duration {
                seconds: -1,
                nanos: 5
            }),
            None
        );
    }

    #[test]
    fn scores_and_explanations() {
        let model = Model {
            version: 3,
            ..default_model()
        };
        let start = t0();
        let facts: Vec<ActivityFact> = [
            ("0", "demo_request", 0),
            ("1", "pricing_view", 1),
            ("2", "page_view", 2),
            ("3", "unsubscribe", 3),
        ]
        .into_iter()
        .map(|(id, kind, days)| ActivityFact {
            id: id.into(),
            activity_type: kind.into(),
            occurred_at: start + Duration::days(days),
            properties: BTreeMap::new(),
        })
        .collect();
        let profile = BTreeMap::from([("seniority".to_owned(), "SENIORITY_VP".to_owned())]);
        let now = start + Duration::days(40);
        let lead = LeadScore::replay(&model, &profile, &facts, start, now);
        let view = lead.score(&model, now);
        let score = score_to_pb("lead-1", &view, 3, Some(now));
        assert_eq!(score.rounded_score, view.score.round() as i32);
        assert_eq!(score.fit_grade, common::FitGrade::C as i32);
        assert_eq!(score.hand_raises.len(), 1);
        assert_eq!(score.hand_raises[0].activity_type, "demo_request");
        assert_eq!(score.as_of_time.as_ref().and_then(timestamp), Some(now));

        let mut explanation = lead.explain(&model, now);
        // A rule that is no longer in the model keeps its line, without a description.
        explanation.contributions.push(Contribution {
            line: LedgerLine {
                seq: 99,
                kind: LineKind::Behavior,
                rule_id: "retired".into(),
                activity_id: Some("old".into()),
                activity_type: Some("webinar_attended".into()),
                effective_at: start,
                points: 2.0,
                model_version: 1,
            },
            value: 0.75,
        });
        explanation.score += 0.75;
        let pb = explanation_to_pb("lead-1", &view, &explanation, &model, 3, Some(now));
        let score = pb.score.as_ref().expect("present");
        assert_eq!(score.score, explanation.score);
        let sum: i32 = pb.contributions.iter().map(|c| c.rounded_value).sum();
        assert_eq!(sum, score.rounded_score);
        let first = &pb.contributions[0];
        assert_eq!(first.kind, pb::ContributionKind::FitRule as i32);
        assert_eq!(first.rule_id, "seniority-decision-maker");
        assert_eq!(first.rule_description, "director, VP, C-level or owner");
        let demo = pb
            .contributions
            .iter()
            .find(|c| c.activity_id == "0")
            .expect("present");
        assert_eq!(demo.kind, pb::ContributionKind::BehaviorRule as i32);
        assert_eq!(demo.original_points, 10.0);
        assert_eq!(demo.model_version, 3);
        assert!(demo.value < 10.0, "decayed");
        let retired = pb.contributions.last().expect("present");
        assert_eq!(retired.ledger_entry_id, "99");
        assert_eq!(retired.rule_description, "");
        assert!(
            pb.contributions
                .iter()
                .any(|c| c.kind == pb::ContributionKind::InactivityRule as i32)
        );
    }

    #[test]
    fn largest_remainder_examples() {
        assert_eq!(largest_remainder(&[0.4, 0.4, 0.4], 1), [1, 0, 0]);
        assert_eq!(largest_remainder(&[0.3, 0.6, 0.6], 2), [0, 1, 1]);
        assert_eq!(largest_remainder(&[-0.5, -0.5], -1), [0, -1]);
        assert_eq!(largest_remainder(&[10.0, -2.5], 8), [10, -2]);
        assert!(largest_remainder(&[], 0).is_empty());
    }

    fn explanation_of(values: &[f64]) -> Explanation {
        let contributions: Vec<Contribution> = values
            .iter()
            .enumerate()
            .map(|(i, value)| Contribution {
                line: LedgerLine {
                    seq: i as u64 + 1,
                    kind: if i % 3 == 0 {
                        LineKind::Fit
                    } else {
                        LineKind::Behavior
                    },
                    rule_id: format!("r{i}"),
                    activity_id: None,
                    activity_type: None,
                    effective_at: t0(),
                    points: *value,
                    model_version: 1,
                },
                value: *value,
            })
            .collect();
        let score = contributions.iter().map(|c| c.value).sum();
        Explanation {
            contributions,
            score,
        }
    }

    proptest! {
        /// The rounded contributions always add up to the rounded score, each within one of its
        /// value.
        #[test]
        fn rounded_values_sum_to_the_rounded_score(
            values in prop::collection::vec(-1000.0f64..1000.0, 0..60),
            halves in prop::collection::vec(-20i32..20, 0..10),
        ) {
            let mut values = values;
            values.extend(halves.iter().map(|h| f64::from(*h) + 0.5));
            let explanation = explanation_of(&values);
            let view = ScoreView {
                score: explanation.score,
                fit_points: 0.0,
                engagement: explanation.score,
                grade: Grade::D,
                hand_raises: Vec::new(),
                as_of: t0(),
            };
            let model = default_model();
            let pb = explanation_to_pb("l", &view, &explanation, &model, 1, None);
            let score = pb.score.expect("present");
            let sum: i64 = pb.contributions.iter().map(|c| i64::from(c.rounded_value)).sum();
            prop_assert_eq!(sum, i64::from(score.rounded_score));
            prop_assert_eq!(score.rounded_score, explanation.score.round() as i32);
            for c in &pb.contributions {
                prop_assert!((f64::from(c.rounded_value) - c.value).abs() < 1.0 + 1e-9);
            }
        }
    }
}
