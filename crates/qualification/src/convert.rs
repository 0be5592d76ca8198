//! Conversions between the protobuf contract and qualification's domain, with validation: each
//! failure is a field violation naming the field's path relative to the converted message (e.g.
//! `rejection_routes[1].reason` inside a `QualificationDefinition`).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::qualification::v1 as pb;
use leadflow_runtime::error::FieldViolations;
use leadflow_runtime::pbtime::{duration, timestamp, to_duration, to_timestamp};

use crate::domain::funnel::{Figures, Period};
use crate::domain::{
    Actor, Authority, Bant, Budget, Definition, FitGrade, LostReason, Reason, RejectReason,
    SqlRule, Stage, Transition,
};

/// Longest stated need.
pub const MAX_NEED_CHARS: usize = 2_000;
/// Longest SDR notes.
pub const MAX_NOTES_CHARS: usize = 10_000;
/// Longest definition description.
pub const MAX_DESCRIPTION_CHARS: usize = 1_000;

/// A stage in the contract's terms.
pub fn stage_to_pb(stage: Stage) -> common::LeadStage {
    use common::LeadStage as Pb;
    match stage {
        Stage::Subscriber => Pb::Subscriber,
        Stage::Lead => Pb::Lead,
        Stage::Mql => Pb::Mql,
        Stage::Sal => Pb::Sal,
        Stage::Sql => Pb::Sql,
        Stage::Opportunity => Pb::Opportunity,
        Stage::Customer => Pb::Customer,
        Stage::Nurture => Pb::Nurture,
        Stage::Disqualified => Pb::Disqualified,
    }
}

/// The stage a contract number stands for; `None` for unspecified or unknown numbers.
pub fn stage_from_pb(stage: i32) -> Option<Stage> {
    use common::LeadStage as Pb;
    Some(match Pb::try_from(stage).ok()? {
        Pb::Unspecified => return None,
        Pb::Subscriber => Stage::Subscriber,
        Pb::Lead => Stage::Lead,
        Pb::Mql => Stage::Mql,
        Pb::Sal => Stage::Sal,
        Pb::Sql => Stage::Sql,
        Pb::Opportunity => Stage::Opportunity,
        Pb::Customer => Stage::Customer,
        Pb::Nurture => Stage::Nurture,
        Pb::Disqualified => Stage::Disqualified,
    })
}

/// A fit grade in the contract's terms (unspecified when not graded yet).
pub fn grade_to_pb(grade: Option<FitGrade>) -> common::FitGrade {
    match grade {
        None => common::FitGrade::Unspecified,
        Some(FitGrade::A) => common::FitGrade::A,
        Some(FitGrade::B) => common::FitGrade::B,
        Some(FitGrade::C) => common::FitGrade::C,
        Some(FitGrade::D) => common::FitGrade::D,
    }
}

/// The grade a contract number stands for; `None` for unspecified or unknown numbers.
pub fn grade_from_pb(grade: i32) -> Option<FitGrade> {
    match common::FitGrade::try_from(grade).ok()? {
        common::FitGrade::Unspecified => None,
        common::FitGrade::A => Some(FitGrade::A),
        common::FitGrade::B => Some(FitGrade::B),
        common::FitGrade::C => Some(FitGrade::C),
        common::FitGrade::D => Some(FitGrade::D),
    }
}

/// A rejection reason in the contract's terms.
pub fn reject_reason_to_pb(reason: RejectReason) -> common::RejectionReason {
    match reason {
        RejectReason::InaccurateData => common::RejectionReason::InaccurateData,
        RejectReason::NotIdealCustomer => common::RejectionReason::NotIdealCustomerProfile,
        RejectReason::Premature => common::RejectionReason::Premature,
    }
}

/// The rejection reason a contract number stands for; `None` for unspecified or unknown.
pub fn reject_reason_from_pb(reason: i32) -> Option<RejectReason> {
    match common::RejectionReason::try_from(reason).ok()? {
        common::RejectionReason::Unspecified => None,
        common::RejectionReason::InaccurateData => Some(RejectReason::InaccurateData),
        common::RejectionReason::NotIdealCustomerProfile => Some(RejectReason::NotIdealCustomer),
        common::RejectionReason::Premature => Some(RejectReason::Premature),
    }
}

/// A lost reason in the contract's terms.
pub fn lost_reason_to_pb(reason: LostReason) -> common::LostReason {
    match reason {
        LostReason::NoBudget => common::LostReason::NoBudget,
        LostReason::LostToCompetitor => common::LostReason::LostToCompetitor,
        LostReason::NoDecision => common::LostReason::NoDecision,
        LostReason::BadTiming => common::LostReason::BadTiming,
        LostReason::NotAFit => common::LostReason::NotAFit,
        LostReason::Unresponsive => common::LostReason::Unresponsive,
        LostReason::Other => common::LostReason::Other,
    }
}

/// The lost reason a contract number stands for; `None` for unspecified or unknown.
pub fn lost_reason_from_pb(reason: i32) -> Option<LostReason> {
    use common::LostReason as Pb;
    Some(match Pb::try_from(reason).ok()? {
        Pb::Unspecified => return None,
        Pb::NoBudget => LostReason::NoBudget,
        Pb::LostToCompetitor => LostReason::LostToCompetitor,
        Pb::NoDecision => LostReason::NoDecision,
        Pb::BadTiming => LostReason::BadTiming,
        Pb::NotAFit => LostReason::NotAFit,
        Pb::Unresponsive => LostReason::Unresponsive,
        Pb::Other => LostReason::Other,
    })
}

fn budget_from_pb(budget: i32) -> Option<Budget> {
    use common::BudgetStatus as Pb;
    Some(match Pb::try_from(budget).ok()? {
        Pb::Unspecified => Budget::Unknown,
        Pb::None => Budget::None,
        Pb::Expected => Budget::Expected,
        Pb::Approved => Budget::Approved,
    })
}

fn budget_to_pb(budget: Budget) -> common::BudgetStatus {
    use common::BudgetStatus as Pb;
    match budget {
        Budget::Unknown => Pb::Unspecified,
        Budget::None => Pb::None,
        Budget::Expected => Pb::Expected,
        Budget::Approved => Pb::Approved,
    }
}

fn authority_from_pb(authority: i32) -> Option<Authority> {
    use common::AuthorityLevel as Pb;
    Some(match Pb::try_from(authority).ok()? {
        Pb::Unspecified => Authority::Unknown,
        Pb::None => Authority::None,
        Pb::Influencer => Authority::Influencer,
        Pb::DecisionMaker => Authority::DecisionMaker,
    })
}

fn authority_to_pb(authority: Authority) -> common::AuthorityLevel {
    use common::AuthorityLevel as Pb;
    match authority {
        Authority::Unknown => Pb::Unspecified,
        Authority::None => Pb::None,
        Authority::Influencer => Pb::Influencer,
        Authority::DecisionMaker => Pb::DecisionMaker,
    }
}

/// An SDR's BANT; unspecified budget or authority means not known yet.
pub fn bant_from_pb(bant: &common::Bant) -> Result<Bant, FieldViolations> {
    let mut v = FieldViolations::new();
    let budget = budget_from_pb(bant.budget).unwrap_or_else(|| {
        v.add("budget", "not a budget status");
        Budget::Unknown
    });
    let authority = authority_from_pb(bant.authority).unwrap_or_else(|| {
        v.add("authority", "not an authority level");
        Authority::Unknown
    });
    if bant.need.chars().count() > MAX_NEED_CHARS {
        v.add("need", format!("at most {MAX_NEED_CHARS} characters"));
    }
    let expected_decision = match &bant.expected_decision_time {
        None => None,
        Some(ts) => timestamp(ts).or_else(|| {
            v.add("expected_decision_time", "not a valid timestamp");
            None
        }),
    };
    if bant.notes.chars().count() > MAX_NOTES_CHARS {
        v.add("notes", format!("at most {MAX_NOTES_CHARS} characters"));
    }
    v.into_result(Bant {
        budget,
        authority,
        need: bant.need.clone(),
        expected_decision,
        notes: bant.notes.clone(),
    })
}

/// A BANT in the contract's terms.
pub fn bant_to_pb(bant: &Bant) -> common::Bant {
    common::Bant {
        budget: budget_to_pb(bant.budget) as i32,
        authority: authority_to_pb(bant.authority) as i32,
        need: bant.need.clone(),
        expected_decision_time: bant.expected_decision.map(to_timestamp),
        notes: bant.notes.clone(),
    }
}

/// An optional positive duration: absent or zero is `None`; invalid is a violation on `field`.
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

/// A side-state target of a route (nurture or disqualified); other values are violations.
fn route_target(stage: i32, field: String, v: &mut FieldViolations) -> Stage {
    match stage_from_pb(stage) {
        Some(stage @ (Stage::Nurture | Stage::Disqualified)) => stage,
        _ => {
            v.add(field, "nurture or disqualified");
            Stage::Nurture
        }
    }
}

/// A definition to publish: the version (and create time) is ignored, the store assigns it.
///
/// An unspecified `min_fit_grade` or absent `sql_rule` is a violation. Within the SQL rule an
/// absent or zero `max_time_to_decision` means no timeline is needed, and an unspecified
/// `min_budget` or `min_authority` maps to `Unknown`, which means no requirement: every budget
/// and authority level is at least `Unknown`. Absent recycle rules mean no recycling, an absent
/// or zero acceptance timeout never recycles on time, and an unset score floor never on score.
/// Route reasons must be specified and listed once, route targets must be nurture or
/// disqualified, and an unspecified `default_lost_stage` is nurture. Every violation is
/// collected, those of [`Definition::validate`] included, each naming its field relative to the
/// `QualificationDefinition`.
pub fn definition_from_pb(d: pb::QualificationDefinition) -> Result<Definition, FieldViolations> {
    let mut v = FieldViolations::new();
    if d.description.chars().count() > MAX_DESCRIPTION_CHARS {
        v.add(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        );
    }
    let min_grade = grade_from_pb(d.min_fit_grade).unwrap_or_else(|| {
        let problem = if d.min_fit_grade == 0 {
            "required"
        } else {
            "not a fit grade"
        };
        v.add("min_fit_grade", problem);
        FitGrade::B
    });
    let hand_raise_order = d.hand_raise_activity_types;
    let mut hand_raise_types = BTreeSet::new();
    for (i, kind) in hand_raise_order.iter().enumerate() {
        if !hand_raise_types.insert(kind.clone()) {
            v.add(format!("hand_raise_activity_types[{i}]"), "listed twice");
        }
    }
    let sql_rule = match &d.sql_rule {
        None => {
            v.add("sql_rule", "required");
            Definition::default().sql_rule
        }
        Some(rule) => SqlRule {
            require_need: rule.require_need,
            max_time_to_decision: optional_duration(
                rule.max_time_to_decision.as_ref(),
                "sql_rule.max_time_to_decision",
                &mut v,
            ),
            min_budget: budget_from_pb(rule.min_budget).unwrap_or_else(|| {
                v.add("sql_rule.min_budget", "not a budget status");
                Budget::Unknown
            }),
            min_authority: authority_from_pb(rule.min_authority).unwrap_or_else(|| {
                v.add("sql_rule.min_authority", "not an authority level");
                Authority::Unknown
            }),
            require_budget_and_authority: rule.require_budget_and_authority,
        },
    };
    let recycle = d.recycle_rules.unwrap_or_default();
    let recycle_unaccepted_after = optional_duration(
        recycle.mql_acceptance_timeout.as_ref(),
        "recycle_rules.mql_acceptance_timeout",
        &mut v,
    );
    let mut rejection_routes = BTreeMap::new();
    for (i, route) in d.rejection_routes.iter().enumerate() {
        let target = route_target(
            route.target_stage,
            format!("rejection_routes[{i}].target_stage"),
            &mut v,
        );
        match reject_reason_from_pb(route.reason) {
            None => v.add(
                format!("rejection_routes[{i}].reason"),
                "inaccurate data, not the ideal customer profile, or premature",
            ),
            Some(reason) => {
                if rejection_routes.insert(reason, target).is_some() {
                    v.add(format!("rejection_routes[{i}].reason"), "routed twice");
                }
            }
        }
    }
    let mut lost_routes = BTreeMap::new();
    for (i, route) in d.lost_routes.iter().enumerate() {
        let target = route_target(
            route.target_stage,
            format!("lost_routes[{i}].target_stage"),
            &mut v,
        );
        match lost_reason_from_pb(route.reason) {
            None => v.add(format!("lost_routes[{i}].reason"), "a lost reason"),
            Some(reason) => {
                if lost_routes.insert(reason, target).is_some() {
                    v.add(format!("lost_routes[{i}].reason"), "routed twice");
                }
            }
        }
    }
    let default_lost = match d.default_lost_stage {
        0 => Stage::Nurture,
        n => route_target(n, "default_lost_stage".into(), &mut v),
    };
    let definition = Definition {
        version: 0,
        description: d.description,
        mql_threshold: d.mql_threshold,
        min_grade,
        hand_raise_types,
        sql_rule,
        recycle_unaccepted_after,
        recycle_below_score: recycle.mql_score_floor,
        rejection_routes,
        lost_routes,
        default_lost,
    };
    // Routes were checked above by their position in the request; what is left to the domain's
    // rules (threshold, durations, score floor, activity types) names the same fields, hand-raise
    // types re-indexed from the sorted set to the request. A field already reported is not
    // reported twice.
    if let Err(more) = definition.validate() {
        for violation in more.violations() {
            let field = request_path(
                &violation.field,
                &definition.hand_raise_types,
                &hand_raise_order,
            );
            if !v.violations().iter().any(|o| o.field == field) {
                v.add(field, violation.description.clone());
            }
        }
    }
    v.into_result(definition)
}

/// Maps a path of [`Definition::validate`] onto the request: it indexes hand-raise types in the
/// definition's sorted set, the request in its own order (the first occurrence of a type).
fn request_path(field: &str, set: &BTreeSet<String>, request_order: &[String]) -> String {
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

/// A definition in the contract's terms.
pub fn definition_to_pb(
    d: &Definition,
    create_time: Option<DateTime<Utc>>,
) -> pb::QualificationDefinition {
    pb::QualificationDefinition {
        version: d.version,
        description: d.description.clone(),
        mql_threshold: d.mql_threshold,
        min_fit_grade: grade_to_pb(Some(d.min_grade)) as i32,
        hand_raise_activity_types: d.hand_raise_types.iter().cloned().collect(),
        sql_rule: Some(pb::SqlRule {
            require_need: d.sql_rule.require_need,
            max_time_to_decision: d.sql_rule.max_time_to_decision.map(to_duration),
            min_budget: budget_to_pb(d.sql_rule.min_budget) as i32,
            min_authority: authority_to_pb(d.sql_rule.min_authority) as i32,
            require_budget_and_authority: d.sql_rule.require_budget_and_authority,
        }),
        recycle_rules: Some(pb::RecycleRules {
            mql_acceptance_timeout: d.recycle_unaccepted_after.map(to_duration),
            mql_score_floor: d.recycle_below_score,
        }),
        rejection_routes: d
            .rejection_routes
            .iter()
            .map(|(reason, stage)| pb::RejectionRoute {
                reason: reject_reason_to_pb(*reason) as i32,
                target_stage: stage_to_pb(*stage) as i32,
            })
            .collect(),
        lost_routes: d
            .lost_routes
            .iter()
            .map(|(reason, stage)| pb::LostRoute {
                reason: lost_reason_to_pb(*reason) as i32,
                target_stage: stage_to_pb(*stage) as i32,
            })
            .collect(),
        default_lost_stage: stage_to_pb(d.default_lost) as i32,
        create_time: create_time.map(to_timestamp),
    }
}

/// A transition reason in the contract's terms, with the detail fields it sets.
#[derive(Debug, Clone, PartialEq)]
pub struct ReasonPb {
    /// The reason.
    pub reason: pb::TransitionReason,
    /// Set for SDR_REJECTED.
    pub rejection_reason: common::RejectionReason,
    /// Set for LOST.
    pub lost_reason: common::LostReason,
    /// Set for MERGE.
    pub merged_lead_id: String,
}

/// A domain reason in the contract's terms.
pub fn reason_to_pb(reason: &Reason) -> ReasonPb {
    use pb::TransitionReason as Pb;
    let mut out = ReasonPb {
        reason: Pb::Unspecified,
        rejection_reason: common::RejectionReason::Unspecified,
        lost_reason: common::LostReason::Unspecified,
        merged_lead_id: String::new(),
    };
    out.reason = match reason {
        Reason::ScoreOverThreshold => Pb::ScoreThreshold,
        Reason::HandRaise => Pb::HandRaise,
        Reason::Accepted => Pb::SdrAccepted,
        Reason::Rejected(r) => {
            out.rejection_reason = reject_reason_to_pb(*r);
            Pb::SdrRejected
        }
        Reason::BantSatisfied => Pb::BantQualified,
        Reason::Opportunity => Pb::Opportunity,
        Reason::Won => Pb::Won,
        Reason::Lost(r) => {
            out.lost_reason = lost_reason_to_pb(*r);
            Pb::Lost
        }
        Reason::NotAcceptedInTime => Pb::RecycleNotAccepted,
        Reason::ScoreDecayed => Pb::RecycleScoreDecayed,
        Reason::Merged(id) => {
            out.merged_lead_id = id.clone();
            Pb::Merge
        }
    };
    out
}

/// An actor in the contract's terms: its type and id (empty for rules and the system).
pub fn actor_to_pb(actor: &Actor) -> (pb::ActorType, String) {
    match actor {
        Actor::Rule => (pb::ActorType::Rule, String::new()),
        Actor::Sdr(id) => (pb::ActorType::Sdr, id.clone()),
        Actor::Sales(id) => (pb::ActorType::Sales, id.clone()),
        Actor::System => (pb::ActorType::System, String::new()),
    }
}

/// What a stored transition carries besides the domain's move.
#[derive(Debug, Clone, Copy)]
pub struct TransitionMeta<'a> {
    /// Its public id.
    pub transition_id: &'a str,
    /// The lead it moved.
    pub lead_id: &'a str,
    /// Trace id of the operation that caused it.
    pub trace_id: &'a str,
    /// The actor's note.
    pub note: &'a str,
}

/// A recorded transition in the contract's terms.
pub fn transition_to_pb(t: &Transition, meta: &TransitionMeta<'_>) -> pb::StageTransition {
    let reason = reason_to_pb(&t.reason);
    let (actor_type, actor_id) = actor_to_pb(&t.actor);
    pb::StageTransition {
        transition_id: meta.transition_id.to_owned(),
        lead_id: meta.lead_id.to_owned(),
        from_stage: stage_to_pb(t.from) as i32,
        to_stage: stage_to_pb(t.to) as i32,
        reason: reason.reason as i32,
        rejection_reason: reason.rejection_reason as i32,
        lost_reason: reason.lost_reason as i32,
        merged_lead_id: reason.merged_lead_id,
        actor_type: actor_type as i32,
        actor_id,
        definition_version: t.definition_version,
        score: t.score,
        fit_grade: grade_to_pb(t.grade) as i32,
        transition_time: Some(to_timestamp(t.at)),
        trace_id: meta.trace_id.to_owned(),
        note: meta.note.to_owned(),
    }
}

/// A count of transitions by reason in the contract's terms.
pub fn reason_count_to_pb(reason: &Reason, count: u64) -> pb::ReasonCount {
    let reason = reason_to_pb(reason);
    pb::ReasonCount {
        reason: reason.reason as i32,
        rejection_reason: reason.rejection_reason as i32,
        lost_reason: reason.lost_reason as i32,
        count: i64::try_from(count).unwrap_or(i64::MAX),
    }
}

/// A group's funnel in the contract's terms: every stage's entries (zeros included, in funnel
/// order), the four conversions, and recycled and disqualified counts by reason.
pub fn figures_to_pb(
    figures: &Figures,
    source_channel: i32,
    definition_version: i32,
) -> pb::FunnelGroup {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    pb::FunnelGroup {
        source_channel,
        definition_version,
        stage_entries: Stage::ALL
            .iter()
            .map(|stage| pb::StageCount {
                stage: stage_to_pb(*stage) as i32,
                entered_count: count(figures.entered.get(stage).copied().unwrap_or(0)),
            })
            .collect(),
        conversions: figures
            .conversions
            .iter()
            .map(|c| pb::StageConversion {
                from_stage: stage_to_pb(c.from) as i32,
                to_stage: stage_to_pb(c.to) as i32,
                cohort_count: count(c.cohort),
                converted_count: count(c.converted),
                rate: c.rate,
                median_time: c.median.map(to_duration),
                p90_time: c.p90.map(to_duration),
            })
            .collect(),
        recycled: figures
            .recycled
            .iter()
            .map(|(reason, n)| reason_count_to_pb(reason, *n))
            .collect(),
        disqualified: figures
            .disqualified
            .iter()
            .map(|(reason, n)| reason_count_to_pb(reason, *n))
            .collect(),
    }
}

/// The period of a funnel request: both ends required and valid, start before end.
pub fn funnel_period_from_pb(r: &pb::GetFunnelRequest) -> Result<Period, FieldViolations> {
    let mut v = FieldViolations::new();
    let mut end_of = |ts: Option<&prost_types::Timestamp>, field: &str| match ts {
        None => {
            v.add(field, "required");
            None
        }
        Some(ts) => timestamp(ts).or_else(|| {
            v.add(field, "not a valid timestamp");
            None
        }),
    };
    let start = end_of(r.start_time.as_ref(), "start_time");
    let end = end_of(r.end_time.as_ref(), "end_time");
    if let (Some(start), Some(end)) = (start, end)
        && start >= end
    {
        v.add("end_time", "must be after start_time");
    }
    match (start, end) {
        (Some(start), Some(end)) if v.is_empty() => Ok(Period { start, end }),
        _ => Err(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::funnel::{CONVERSIONS, Conversion};
    use chrono::Duration;

    fn fields(violations: &FieldViolations) -> Vec<&str> {
        violations
            .violations()
            .iter()
            .map(|v| v.field.as_str())
            .collect()
    }

    #[test]
    fn enums_round_trip() {
        for stage in Stage::ALL {
            assert_eq!(stage_from_pb(stage_to_pb(stage) as i32), Some(stage));
        }
        assert_eq!(stage_from_pb(0), None);
        assert_eq!(stage_from_pb(99), None);
        for grade in [FitGrade::A, FitGrade::B, FitGrade::C, FitGrade::D] {
            assert_eq!(grade_from_pb(grade_to_pb(Some(grade)) as i32), Some(grade));
        }
        assert_eq!(grade_to_pb(None), common::FitGrade::Unspecified);
        assert_eq!(grade_from_pb(0), None);
        assert_eq!(grade_from_pb(-1), None);
        for reason in [
            RejectReason::InaccurateData,
            RejectReason::NotIdealCustomer,
            RejectReason::Premature,
        ] {
            assert_eq!(
                reject_reason_from_pb(reject_reason_to_pb(reason) as i32),
                Some(reason)
            );
        }
        assert_eq!(reject_reason_from_pb(0), None);
        assert_eq!(reject_reason_from_pb(17), None);
        for reason in [
            LostReason::NoBudget,
            LostReason::LostToCompetitor,
            LostReason::NoDecision,
            LostReason::BadTiming,
            LostReason::NotAFit,
            LostReason::Unresponsive,
            LostReason::Other,
        ] {
            assert_eq!(
                lost_reason_from_pb(lost_reason_to_pb(reason) as i32),
                Some(reason)
            );
        }
        assert_eq!(lost_reason_from_pb(0), None);
        assert_eq!(lost_reason_from_pb(17), None);
    }

    #[test]
    fn definitions_round_trip() {
        let default = Definition::default();
        assert_eq!(
            definition_from_pb(definition_to_pb(&default, None)).expect("valid"),
            default
        );
        let created = DateTime::from_timestamp(1_700_000_000, 0);
        let custom = Definition {
            version: 7,
            description: "stricter after the Q3 review".into(),
            mql_threshold: 75.5,
            min_grade: FitGrade::A,
            hand_raise_types: BTreeSet::from(["custom.trial_signup".to_owned()]),
            recycle_unaccepted_after: None,
            recycle_below_score: Some(20.0),
            sql_rule: SqlRule {
                require_need: false,
                max_time_to_decision: None,
                min_budget: Budget::Unknown,
                min_authority: Authority::DecisionMaker,
                require_budget_and_authority: true,
            },
            rejection_routes: BTreeMap::from([(RejectReason::Premature, Stage::Disqualified)]),
            lost_routes: BTreeMap::from([
                (LostReason::NoBudget, Stage::Disqualified),
                (LostReason::BadTiming, Stage::Nurture),
            ]),
            default_lost: Stage::Disqualified,
        };
        let pb = definition_to_pb(&custom, created);
        assert_eq!(pb.version, 7);
        assert_eq!(
            pb.create_time.as_ref().map(|t| t.seconds),
            Some(1_700_000_000)
        );
        assert_eq!(
            definition_from_pb(pb).expect("valid"),
            Definition {
                version: 0,
                ..custom
            },
            "the version is the store's to assign"
        );
    }

    #[test]
    fn unspecified_parts_take_their_documented_meaning() {
        let minimal = pb::QualificationDefinition {
            mql_threshold: 50.0,
            min_fit_grade: common::FitGrade::C as i32,
            sql_rule: Some(pb::SqlRule {
                max_time_to_decision: Some(prost_types::Duration::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let d = definition_from_pb(minimal).expect("valid");
        assert_eq!(d.sql_rule.max_time_to_decision, None);
        assert_eq!(
            (d.sql_rule.min_budget, d.sql_rule.min_authority),
            (Budget::Unknown, Authority::Unknown)
        );
        assert_eq!(
            (d.recycle_unaccepted_after, d.recycle_below_score),
            (None, None)
        );
        assert_eq!(d.default_lost, Stage::Nurture);
        assert!(d.rejection_routes.is_empty() && d.lost_routes.is_empty());
    }

    #[test]
    fn a_bad_definition_names_every_field() {
        let mut bad = definition_to_pb(&Definition::default(), None);
        bad.mql_threshold = -1.0;
        bad.min_fit_grade = 0;
        bad.recycle_rules = None;
        bad.rejection_routes = vec![
            pb::RejectionRoute {
                reason: common::RejectionReason::Premature as i32,
                target_stage: common::LeadStage::Nurture as i32,
            },
            pb::RejectionRoute {
                reason: 0,
                target_stage: common::LeadStage::Disqualified as i32,
            },
        ];
        if let Some(rule) = bad.sql_rule.as_mut() {
            rule.max_time_to_decision = Some(prost_types::Duration {
                seconds: 1,
                nanos: -1,
            });
        }
        let violations = definition_from_pb(bad).expect_err("invalid");
        assert_eq!(
            fields(&violations),
            [
                "min_fit_grade",
                "sql_rule.max_time_to_decision",
                "rejection_routes[1].reason",
                "mql_threshold",
            ]
        );
        assert_eq!(violations.violations()[0].description, "required");
    }

    #[test]
    fn duplicates_targets_and_activity_types_are_named_as_in_the_request() {
        let bad = pb::QualificationDefinition {
            description: "x".repeat(MAX_DESCRIPTION_CHARS + 1),
            mql_threshold: 60.0,
            min_fit_grade: common::FitGrade::B as i32,
            hand_raise_activity_types: vec![
                "demo_request".into(),
                "Bad Type".into(),
                "demo_request".into(),
            ],
            sql_rule: None,
            recycle_rules: Some(pb::RecycleRules {
                mql_acceptance_timeout: Some(prost_types::Duration {
                    seconds: -60,
                    nanos: 0,
                }),
                mql_score_floor: None,
            }),
            rejection_routes: vec![
                pb::RejectionRoute {
                    reason: common::RejectionReason::Premature as i32,
                    target_stage: common::LeadStage::Nurture as i32,
                },
                pb::RejectionRoute {
                    reason: common::RejectionReason::Premature as i32,
                    target_stage: common::LeadStage::Disqualified as i32,
                },
                pb::RejectionRoute {
                    reason: common::RejectionReason::InaccurateData as i32,
                    target_stage: common::LeadStage::Sql as i32,
                },
            ],
            lost_routes: vec![pb::LostRoute {
                reason: 99,
                target_stage: 0,
            }],
            default_lost_stage: common::LeadStage::Customer as i32,
            ..Default::default()
        };
        let violations = definition_from_pb(bad).expect_err("invalid");
        assert_eq!(
            fields(&violations),
            [
                "description",
                "hand_raise_activity_types[2]",
                "sql_rule",
                "rejection_routes[1].reason",
                "rejection_routes[2].target_stage",
                "lost_routes[0].target_stage",
                "lost_routes[0].reason",
                "default_lost_stage",
                "hand_raise_activity_types[1]",
                "recycle_rules.mql_acceptance_timeout",
            ]
        );
    }

    #[test]
    fn bant_checks_its_enums_lengths_and_time() {
        let bad = common::Bant {
            budget: 9,
            authority: 42,
            need: "n".repeat(MAX_NEED_CHARS + 1),
            expected_decision_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -5,
            }),
            notes: "n".repeat(MAX_NOTES_CHARS + 1),
        };
        assert_eq!(
            fields(&bant_from_pb(&bad).expect_err("invalid")),
            [
                "budget",
                "authority",
                "need",
                "expected_decision_time",
                "notes"
            ]
        );
        assert_eq!(
            bant_from_pb(&common::Bant::default()).expect("valid"),
            Bant::default(),
            "unspecified budget and authority are not known yet"
        );
        let bant = Bant {
            budget: Budget::Approved,
            authority: Authority::Influencer,
            need: " a pipeline ".into(),
            expected_decision: DateTime::from_timestamp(1_700_000_000, 5),
            notes: "n".repeat(MAX_NOTES_CHARS),
        };
        assert_eq!(bant_from_pb(&bant_to_pb(&bant)).expect("valid"), bant);
    }

    #[test]
    fn transitions_carry_their_reason_details() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        let meta = TransitionMeta {
            transition_id: "t",
            lead_id: "l",
            trace_id: "0af7651916cd43dd8448eb211c80319c",
            note: "note",
        };
        let move_ = |reason: Reason, actor: Actor| Transition {
            from: Stage::Sql,
            to: Stage::Nurture,
            reason,
            actor,
            definition_version: 3,
            score: 61.5,
            grade: Some(FitGrade::B),
            at,
        };
        let lost = transition_to_pb(
            &move_(
                Reason::Lost(LostReason::BadTiming),
                Actor::Sales("ae".into()),
            ),
            &meta,
        );
        assert_eq!(
            lost,
            pb::StageTransition {
                transition_id: "t".into(),
                lead_id: "l".into(),
                from_stage: common::LeadStage::Sql as i32,
                to_stage: common::LeadStage::Nurture as i32,
                reason: pb::TransitionReason::Lost as i32,
                rejection_reason: 0,
                lost_reason: common::LostReason::BadTiming as i32,
                merged_lead_id: String::new(),
                actor_type: pb::ActorType::Sales as i32,
                actor_id: "ae".into(),
                definition_version: 3,
                score: 61.5,
                fit_grade: common::FitGrade::B as i32,
                transition_time: Some(to_timestamp(at)),
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                note: "note".into(),
            }
        );
        let rejected = transition_to_pb(
            &move_(
                Reason::Rejected(RejectReason::Premature),
                Actor::Sdr("s".into()),
            ),
            &meta,
        );
        assert_eq!(
            (
                rejected.reason,
                rejected.rejection_reason,
                rejected.lost_reason,
                rejected.actor_type
            ),
            (
                pb::TransitionReason::SdrRejected as i32,
                common::RejectionReason::Premature as i32,
                0,
                pb::ActorType::Sdr as i32
            )
        );
        let merged = transition_to_pb(&move_(Reason::Merged("dup".into()), Actor::System), &meta);
        assert_eq!(
            (
                merged.reason,
                merged.merged_lead_id.as_str(),
                merged.actor_type,
                merged.actor_id.as_str()
            ),
            (
                pb::TransitionReason::Merge as i32,
                "dup",
                pb::ActorType::System as i32,
                ""
            )
        );
        assert_eq!(
            actor_to_pb(&Actor::Rule),
            (pb::ActorType::Rule, String::new())
        );
    }

    #[test]
    fn figures_list_every_stage_and_conversion() {
        let conversion = |(from, to): (Stage, Stage)| Conversion {
            from,
            to,
            cohort: 0,
            converted: 0,
            rate: 0.0,
            median: None,
            p90: None,
        };
        let mut conversions: Vec<Conversion> = CONVERSIONS.into_iter().map(conversion).collect();
        conversions[0] = Conversion {
            cohort: 4,
            converted: 2,
            rate: 0.5,
            median: Some(Duration::hours(5)),
            p90: Some(Duration::hours(9)),
            ..conversions[0].clone()
        };
        let figures = Figures {
            entered: BTreeMap::from([(Stage::Mql, 4), (Stage::Sal, u64::MAX)]),
            conversions,
            recycled: BTreeMap::from([(Reason::NotAcceptedInTime, 1)]),
            disqualified: BTreeMap::from([(Reason::Rejected(RejectReason::NotIdealCustomer), 3)]),
        };
        let group = figures_to_pb(&figures, common::SourceChannel::Email as i32, 2);
        assert_eq!(
            (group.source_channel, group.definition_version),
            (common::SourceChannel::Email as i32, 2)
        );
        let entries: Vec<(i32, i64)> = group
            .stage_entries
            .iter()
            .map(|e| (e.stage, e.entered_count))
            .collect();
        let expected: Vec<(i32, i64)> = Stage::ALL
            .iter()
            .map(|s| {
                let n = match s {
                    Stage::Mql => 4,
                    Stage::Sal => i64::MAX,
                    _ => 0,
                };
                (stage_to_pb(*s) as i32, n)
            })
            .collect();
        assert_eq!(entries, expected, "every stage, zeros included, saturated");
        let pairs: Vec<(i32, i32)> = group
            .conversions
            .iter()
            .map(|c| (c.from_stage, c.to_stage))
            .collect();
        let expected: Vec<(i32, i32)> = CONVERSIONS
            .iter()
            .map(|(f, t)| (stage_to_pb(*f) as i32, stage_to_pb(*t) as i32))
            .collect();
        assert_eq!(pairs, expected);
        let first = &group.conversions[0];
        assert_eq!(
            (first.cohort_count, first.converted_count, first.rate),
            (4, 2, 0.5)
        );
        assert_eq!(
            (
                first.median_time.as_ref().map(|d| d.seconds),
                first.p90_time.as_ref().map(|d| d.seconds)
            ),
            (Some(5 * 3600), Some(9 * 3600))
        );
        assert_eq!(group.conversions[1].median_time, None);
        assert_eq!(
            group.recycled,
            [pb::ReasonCount {
                reason: pb::TransitionReason::RecycleNotAccepted as i32,
                rejection_reason: 0,
                lost_reason: 0,
                count: 1,
            }]
        );
        assert_eq!(
            group.disqualified,
            [pb::ReasonCount {
                reason: pb::TransitionReason::SdrRejected as i32,
                rejection_reason: common::RejectionReason::NotIdealCustomerProfile as i32,
                lost_reason: 0,
                count: 3,
            }]
        );
    }

    #[test]
    fn a_funnel_period_needs_both_ends_in_order() {
        let at = |s: i64| {
            Some(prost_types::Timestamp {
                seconds: s,
                nanos: 0,
            })
        };
        let request = |start, end| pb::GetFunnelRequest {
            start_time: start,
            end_time: end,
            ..Default::default()
        };
        assert_eq!(
            funnel_period_from_pb(&request(at(0), at(10))).expect("valid"),
            Period {
                start: DateTime::from_timestamp(0, 0).expect("time"),
                end: DateTime::from_timestamp(10, 0).expect("time"),
            }
        );
        let bad = |r: pb::GetFunnelRequest| {
            funnel_period_from_pb(&r)
                .expect_err("invalid")
                .violations()
                .iter()
                .map(|v| v.field.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(bad(request(None, None)), ["start_time", "end_time"]);
        assert_eq!(bad(request(None, at(1))), ["start_time"]);
        let invalid = Some(prost_types::Timestamp {
            seconds: 0,
            nanos: 2_000_000_000,
        });
        assert_eq!(bad(request(at(0), invalid)), ["end_time"]);
        assert_eq!(bad(request(at(5), at(5))), ["end_time"]);
        assert_eq!(bad(request(at(6), at(5))), ["end_time"]);
    }
}
