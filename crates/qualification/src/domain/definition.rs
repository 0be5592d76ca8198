//! The one shared, versioned definition of a qualified lead.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

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

/// What an SDR learned: budget, authority, need, timeline.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Bant {
    /// Budget approved or expected.
    pub budget_confirmed: bool,
    /// Decision maker, or access to one.
    pub authority_confirmed: bool,
    /// The stated need; empty when none was stated.
    pub need: String,
    /// When they intend to buy.
    pub timeline: Option<DateTime<Utc>>,
    /// SDR notes.
    pub notes: String,
}

/// The rule that makes a sales-accepted lead sales qualified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SqlRule {
    /// A stated need is required.
    pub need_required: bool,
    /// The timeline must fall within this many days of the decision.
    pub timeline_within: Option<Duration>,
    /// Budget or authority must be confirmed (otherwise both).
    pub budget_or_authority: bool,
}

impl SqlRule {
    /// Whether `bant`, recorded at `now`, satisfies the rule.
    pub fn holds(&self, bant: &Bant, now: DateTime<Utc>) -> bool {
        let need = !self.need_required || !bant.need.trim().is_empty();
        let timeline = match self.timeline_within {
            Some(within) => bant
                .timeline
                .is_some_and(|t| t >= now - Duration::days(1) && t <= now + within),
            None => true,
        };
        let money_or_power = if self.budget_or_authority {
            bant.budget_confirmed || bant.authority_confirmed
        } else {
            bant.budget_confirmed && bant.authority_confirmed
        };
        need && timeline && money_or_power
    }
}

/// What happens to a lost deal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LostHandling {
    /// Back to nurturing.
    Nurture,
    /// Out.
    Disqualify,
}

/// A tenant's definition of a qualified lead, versioned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// 1, 2, 3, … (0: the default).
    pub version: i32,
    /// The MQL score threshold.
    pub mql_threshold: f64,
    /// The minimum fit grade of an MQL.
    pub min_grade: FitGrade,
    /// The rule over BANT that makes a SAL an SQL.
    pub sql_rule: SqlRule,
    /// An MQL not accepted within this long returns to nurture.
    pub recycle_unaccepted_after: Option<Duration>,
    /// An MQL whose score falls below this returns to nurture.
    pub recycle_below_score: Option<f64>,
    /// Where a lost deal goes.
    pub lost: LostHandling,
}

impl Default for Definition {
    /// The seeds' definition: MQL at 60 with at least a B fit; SQL when a need is stated, the
    /// timeline is within 90 days, and budget or authority is confirmed; an MQL not accepted in
    /// 30 days or whose score falls under 40 is recycled; lost deals go back to nurture.
    fn default() -> Self {
        Self {
            version: 0,
            mql_threshold: 60.0,
            min_grade: FitGrade::B,
            sql_rule: SqlRule {
                need_required: true,
                timeline_within: Some(Duration::days(90)),
                budget_or_authority: true,
            },
            recycle_unaccepted_after: Some(Duration::days(30)),
            recycle_below_score: Some(40.0),
            lost: LostHandling::Nurture,
        }
    }
}
