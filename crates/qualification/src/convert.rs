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

/// A definition to publish: the version is ignored (the store assigns it). Unspecified minimum
/// budget or authority mean no requirement (every level meets them); no recycle rules mean no
/// recycling; an unspecified default lost stage is nurture. Every violation is collected, those
/// of [`Definition::validate`] included.
pub fn definition_from_pb(d: pb::QualificationDefinition) -> Result<Definition, FieldViolations> {
    let mut v = FieldViolations::new();
    if d.description.chars().count() > MAX_DESCRIPTION_CHARS {
        v.add(
            "description",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        );
    }
    let min_grade = grade_from_pb(d.min_fit_grade).unwrap_or_else(|| {
        v.add("min_fit_grade", "required: the worst grade that still fits");
        FitGrade::B
    });
    let mut hand_raise_types = BTreeSet::new();
    for (i, kind) in d.hand_raise_activity_types.iter().enumerate() {
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
    // rules (threshold, durations, score floor) names the same fields.
    if let Err(more) = definition.validate() {
        for violation in more.violations() {
            if !v.violations().iter().any(|o| o.field == violation.field) {
                v.add(violation.field.clone(), violation.description.clone());
            }
        }
    }
    v.into_result(definition)
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
    use crate::domain::funnel::Conversion;
    use chrono::Duration;

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
    }

    #[test]
    fn definitions_round_trip() {
        let default = Definition::default();
        assert_eq!(
            definition_from_pb(definition_to_pb(&default, None)).expect("valid"),
            default
        );
        let custom = Definition {
            version: 0,
            mql_threshold: 75.5,
            min_grade: FitGrade::A,
            recycle_unaccepted_after: None,
            recycle_below_score: None,
            sql_rule: SqlRule {
                max_time_to_decision: None,
                require_budget_and_authority: true,
                ..Definition::default().sql_rule
            },
            lost_routes: BTreeMap::from([(LostReason::NoBudget, Stage::Disqualified)]),
            default_lost: Stage::Disqualified,
            ..Definition::default()
        };
        assert_eq!(
            definition_from_pb(definition_to_pb(&custom, None)).expect("valid"),
            custom
        );
    }

    #[test]
    fn a_bad_definition_names_every_field() {
        let mut bad = definition_to_pb(&Definition::default(), None);
        bad.mql_threshold = -1.0;
        bad.min_fit_grade = 0;
        bad.rejection_routes.push(pb::RejectionRoute {
            reason: 0,
            target_stage: common::LeadStage::Nurture as i32,
        });
        if let Some(rule) = bad.sql_rule.as_mut() {
            rule.max_time_to_decision = Some(prost_types::Duration {
                seconds: 1,
                nanos: -1,
            });
        }
        let fields: Vec<String> = definition_from_pb(bad)
            .expect_err("invalid")
            .violations()
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(
            fields,
            [
                "min_fit_grade",
                "sql_rule.max_time_to_decision",
                "rejection_routes[3].reason",
                "mql_threshold",
                "recycle_rules.mql_score_floor"
            ]
        );
    }

    #[test]
    fn bant_checks_its_enums_and_time() {
        let bad = common::Bant {
            budget: 9,
            expected_decision_time: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -5,
            }),
            ..Default::default()
        };
        let fields: Vec<String> = bant_from_pb(&bad)
            .expect_err("invalid")
            .violations()
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(fields, ["budget", "expected_decision_time"]);
        let bant = Bant {
            budget: Budget::Approved,
            authority: Authority::Influencer,
            need: "a pipeline".into(),
            expected_decision: DateTime::from_timestamp(1_700_000_000, 0),
            notes: "n".into(),
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
            (
                lost.reason,
                lost.lost_reason,
                lost.actor_type,
                lost.actor_id.as_str()
            ),
            (
                pb::TransitionReason::Lost as i32,
                common::LostReason::BadTiming as i32,
                pb::ActorType::Sales as i32,
                "ae"
            )
        );
        assert_eq!(
            (lost.definition_version, lost.score, lost.fit_grade),
            (3, 61.5, common::FitGrade::B as i32)
        );
        let rejected = transition_to_pb(
            &move_(
                Reason::Rejected(RejectReason::Premature),
                Actor::Sdr("s".into()),
            ),
            &meta,
        );
        assert_eq!(
            rejected.rejection_reason,
            common::RejectionReason::Premature as i32
        );
        let merged = transition_to_pb(&move_(Reason::Merged("dup".into()), Actor::System), &meta);
        assert_eq!(
            (merged.reason, merged.merged_lead_id.as_str()),
            (pb::TransitionReason::Merge as i32, "dup")
        );
    }

    #[test]
    fn figures_list_every_stage_and_conversion() {
        let figures = Figures {
            entered: BTreeMap::from([(Stage::Mql, 4), (Stage::Sal, 2)]),
            conversions: vec![Conversion {
                from: Stage::Mql,
                to: Stage::Sal,
                cohort: 4,
                converted: 2,
                rate: 0.5,
                median: Some(Duration::hours(5)),
                p90: Some(Duration::hours(9)),
            }],
            recycled: BTreeMap::from([(Reason::NotAcceptedInTime, 1)]),
            disqualified: BTreeMap::new(),
        };
        let group = figures_to_pb(&figures, 2, 0);
        assert_eq!(group.stage_entries.len(), Stage::ALL.len());
        assert_eq!(group.stage_entries[2].entered_count, 4);
        assert_eq!(group.stage_entries[0].entered_count, 0);
        assert_eq!(
            group.conversions[0].median_time.as_ref().map(|d| d.seconds),
            Some(5 * 3600)
        );
        assert_eq!(
            group.recycled[0].reason,
            pb::TransitionReason::RecycleNotAccepted as i32
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
        assert!(funnel_period_from_pb(&request(at(0), at(10))).is_ok());
        let fields = |r: pb::GetFunnelRequest| -> Vec<String> {
            funnel_period_from_pb(&r)
                .expect_err("invalid")
                .violations()
                .iter()
                .map(|v| v.field.clone())
                .collect()
        };
        assert_eq!(fields(request(None, at(1))), ["start_time"]);
        assert_eq!(fields(request(at(5), at(5))), ["end_time"]);
    }
}
