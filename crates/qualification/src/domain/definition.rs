//! The one shared, versioned definition of a qualified lead: the configuration marketing and
//! sales both read, mirroring `leadflow.qualification.v1.QualificationDefinition`.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use leadflow_runtime::error::FieldViolations;
use serde::{Deserialize, Serialize};

use super::lifecycle::Stage;
use super::machine::RejectReason;

/// Fit grade as scoring reports it, A best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FitGrade {
    /// Best fit.
    A,
    /// Good fit.
    B,
    /// Weak fit.
    C,
    /// Poor fit.
    D,
}

impl FitGrade {
    /// Whether this grade is at least `minimum` (A is at least everything).
    pub fn at_least(self, minimum: FitGrade) -> bool {
        self <= minimum
    }
}

/// The B of BANT, in increasing order of confidence.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum Budget {
    /// Not known yet.
    #[default]
    Unknown,
    /// There is none.
    None,
    /// Being approved, or expected.
    Expected,
    /// Approved.
    Approved,
}

/// The A of BANT, in increasing order of power.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub enum Authority {
    /// Not known yet.
    #[default]
    Unknown,
    /// Researching for someone else.
    None,
    /// A key influencer, or has access to the decision maker.
    Influencer,
    /// Decides.
    DecisionMaker,
}

/// What an SDR learned: budget, authority, need, timeline.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bant {
    /// Budget.
    pub budget: Budget,
    /// Authority.
    pub authority: Authority,
    /// The stated need; empty when none was stated.
    pub need: String,
    /// When the lead expects to decide or buy.
    pub expected_decision: Option<DateTime<Utc>>,
    /// SDR notes.
    pub notes: String,
}

/// The rule that makes a sales-accepted lead sales qualified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlRule {
    /// A stated need is required.
    pub require_need: bool,
    /// The expected decision must fall within this long of the evaluation; `None`: no timeline
    /// needed.
    pub max_time_to_decision: Option<Duration>,
    /// The lowest budget that counts as confirmed.
    pub min_budget: Budget,
    /// The lowest authority that counts as confirmed.
    pub min_authority: Authority,
    /// Both must be confirmed; otherwise either is enough.
    pub require_budget_and_authority: bool,
}

impl SqlRule {
    /// Whether `bant`, evaluated at `now`, satisfies the rule.
    pub fn holds(&self, bant: &Bant, now: DateTime<Utc>) -> bool {
        let need = !self.require_need || !bant.need.trim().is_empty();
        let timeline = self.max_time_to_decision.is_none_or(|max| {
            bant.expected_decision
                .is_some_and(|t| t >= now - Duration::days(1) && t <= now + max)
        });
        let budget = bant.budget >= self.min_budget;
        let authority = bant.authority >= self.min_authority;
        let money_and_power = if self.require_budget_and_authority {
            budget && authority
        } else {
            budget || authority
        };
        need && timeline && money_and_power
    }
}

/// Why a deal was lost, as sales reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LostReason {
    /// No budget.
    NoBudget,
    /// A competitor won.
    LostToCompetitor,
    /// They did not decide.
    NoDecision,
    /// Wrong moment.
    BadTiming,
    /// Not a fit after all.
    NotAFit,
    /// Went silent.
    Unresponsive,
    /// Anything else.
    Other,
}

/// A tenant's definition of a qualified lead, versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// 1, 2, 3, … (0: the default).
    pub version: i32,
    /// What changed, for people.
    pub description: String,
    /// The MQL score threshold.
    pub mql_threshold: f64,
    /// The worst fit grade that still fits.
    pub min_grade: FitGrade,
    /// Activity types that are a hand-raise.
    pub hand_raise_types: BTreeSet<String>,
    /// The rule over BANT that makes a SAL an SQL.
    pub sql_rule: SqlRule,
    /// An MQL not accepted within this long returns to nurture.
    pub recycle_unaccepted_after: Option<Duration>,
    /// An un-accepted MQL whose score falls below this returns to nurture.
    pub recycle_below_score: Option<f64>,
    /// Where each rejection reason sends the lead.
    pub rejection_routes: BTreeMap<RejectReason, Stage>,
    /// Where each lost reason sends the lead; others go to `default_lost`.
    pub lost_routes: BTreeMap<LostReason, Stage>,
    /// Where a lost deal goes by default.
    pub default_lost: Stage,
}

impl Default for Definition {
    /// The seeds' definition: MQL at 60 with at least a B fit; demo and contact-sales requests
    /// are hand-raises; SQL when a need is stated, the decision is within 90 days, and budget is
    /// expected or authority is at least an influencer; an MQL not accepted in 30 days or whose
    /// score falls under 40 is recycled; inaccurate data and not-ICP disqualify, premature
    /// nurtures; lost deals go back to nurture unless they were not a fit.
    fn default() -> Self {
        Self {
            version: 0,
            description: "leadflow default definition".into(),
            mql_threshold: 60.0,
            min_grade: FitGrade::B,
            hand_raise_types: BTreeSet::from([
                "contact_sales".to_owned(),
                "demo_request".to_owned(),
            ]),
            sql_rule: SqlRule {
                require_need: true,
                max_time_to_decision: Some(Duration::days(90)),
                min_budget: Budget::Expected,
                min_authority: Authority::Influencer,
                require_budget_and_authority: false,
            },
            recycle_unaccepted_after: Some(Duration::days(30)),
            recycle_below_score: Some(40.0),
            rejection_routes: BTreeMap::from([
                (RejectReason::InaccurateData, Stage::Disqualified),
                (RejectReason::NotIdealCustomer, Stage::Disqualified),
                (RejectReason::Premature, Stage::Nurture),
            ]),
            lost_routes: BTreeMap::from([(LostReason::NotAFit, Stage::Disqualified)]),
            default_lost: Stage::Nurture,
        }
    }
}

impl Definition {
    /// Where `reason` sends a rejected lead (the seeds' route when the definition has none).
    pub fn rejection_route(&self, reason: RejectReason) -> Stage {
        self.rejection_routes
            .get(&reason)
            .copied()
            .unwrap_or(match reason {
                RejectReason::Premature => Stage::Nurture,
                RejectReason::InaccurateData | RejectReason::NotIdealCustomer => {
                    Stage::Disqualified
                }
            })
    }

    /// Where a deal lost for `reason` goes.
    pub fn lost_route(&self, reason: LostReason) -> Stage {
        self.lost_routes
            .get(&reason)
            .copied()
            .unwrap_or(self.default_lost)
    }

    /// Every mistake, each naming its field as in `QualificationDefinition`.
    pub fn validate(&self) -> Result<(), FieldViolations> {
        let mut v = FieldViolations::new();
        if !self.mql_threshold.is_finite() || self.mql_threshold < 0.0 {
            v.add("mql_threshold", "must be a number of zero or more");
        }
        for (i, kind) in self.hand_raise_types.iter().enumerate() {
            let valid = !kind.is_empty()
                && kind.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'
                });
            if !valid {
                v.add(
                    format!("hand_raise_activity_types[{i}]"),
                    "an activity type such as demo_request",
                );
            }
        }
        if self
            .sql_rule
            .max_time_to_decision
            .is_some_and(|d| d <= Duration::zero())
        {
            v.add(
                "sql_rule.max_time_to_decision",
                "must be positive, or unset for no timeline",
            );
        }
        if self
            .recycle_unaccepted_after
            .is_some_and(|d| d <= Duration::zero())
        {
            v.add(
                "recycle_rules.mql_acceptance_timeout",
                "must be positive, or unset for never",
            );
        }
        if let Some(floor) = self.recycle_below_score
            && (!floor.is_finite() || floor >= self.mql_threshold)
        {
            v.add(
                "recycle_rules.mql_score_floor",
                "must be below the MQL threshold",
            );
        }
        let side_state = |stage: &Stage| matches!(stage, Stage::Nurture | Stage::Disqualified);
        for (i, stage) in self.rejection_routes.values().enumerate() {
            if !side_state(stage) {
                v.add(
                    format!("rejection_routes[{i}].target_stage"),
                    "must be nurture or disqualified",
                );
            }
        }
        for (i, stage) in self.lost_routes.values().enumerate() {
            if !side_state(stage) {
                v.add(
                    format!("lost_routes[{i}].target_stage"),
                    "must be nurture or disqualified",
                );
            }
        }
        if !side_state(&self.default_lost) {
            v.add("default_lost_stage", "must be nurture or disqualified");
        }
        v.into_result(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_is_valid_and_every_mistake_is_named() {
        Definition::default().validate().expect("valid");
        let mut bad = Definition {
            mql_threshold: -1.0,
            default_lost: Stage::Sql,
            ..Definition::default()
        };
        bad.recycle_below_score = Some(f64::NAN);
        bad.rejection_routes
            .insert(RejectReason::Premature, Stage::Customer);
        let fields: Vec<String> = bad
            .validate()
            .expect_err("invalid")
            .violations()
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(
            fields,
            [
                "mql_threshold",
                "recycle_rules.mql_score_floor",
                "rejection_routes[2].target_stage",
                "default_lost_stage"
            ]
        );
    }

    #[test]
    fn the_sql_rule() {
        let rule = Definition::default().sql_rule;
        let now = Utc::now();
        let bant = |budget, authority, need: &str, days: Option<i64>| Bant {
            budget,
            authority,
            need: need.into(),
            expected_decision: days.map(|d| now + Duration::days(d)),
            notes: String::new(),
        };
        assert!(
            rule.holds(
                &bant(Budget::Expected, Authority::Unknown, "need", Some(80)),
                now
            ),
            "the seeds' SQL"
        );
        assert!(rule.holds(
            &bant(Budget::Unknown, Authority::Influencer, "need", Some(10)),
            now
        ));
        assert!(
            !rule.holds(&bant(Budget::None, Authority::None, "need", Some(10)), now),
            "neither budget nor authority"
        );
        assert!(
            !rule.holds(
                &bant(Budget::Approved, Authority::DecisionMaker, " ", Some(10)),
                now
            ),
            "no stated need"
        );
        assert!(
            !rule.holds(
                &bant(
                    Budget::Approved,
                    Authority::DecisionMaker,
                    "need",
                    Some(120)
                ),
                now
            ),
            "too far out"
        );
        assert!(
            !rule.holds(
                &bant(Budget::Approved, Authority::DecisionMaker, "need", None),
                now
            ),
            "no timeline"
        );
    }
}
