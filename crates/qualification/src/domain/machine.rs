//! The lifecycle state machine: applies scores, SDR decisions, sales outcomes and the passing of
//! time to one lead under a definition, and records every transition with its reason.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::definition::{Bant, Definition, FitGrade, LostReason};
use super::lifecycle::Stage;

/// Who moved the lead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// A rule of the definition, on a score change.
    Rule,
    /// An SDR, by id.
    Sdr(String),
    /// Sales, by id (through the CRM).
    Sales(String),
    /// The system, on the passing of time.
    System,
}

/// Why an SDR rejected an MQL (the seeds' three reasons).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RejectReason {
    /// The data is wrong: disqualified.
    InaccurateData,
    /// Not the ideal customer profile: disqualified.
    NotIdealCustomer,
    /// Too early: back to nurture.
    Premature,
}

/// Why a transition happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Reason {
    /// The score reached the threshold with a fitting profile.
    ScoreOverThreshold,
    /// A fitting lead raised its hand (demo, contact sales): straight to SDR review.
    HandRaise,
    /// An SDR accepted it.
    Accepted,
    /// An SDR rejected it.
    Rejected(RejectReason),
    /// BANT satisfied the SQL rule.
    BantSatisfied,
    /// Sales opened an opportunity.
    Opportunity,
    /// The deal was won.
    Won,
    /// The deal was lost, with the reason sales gave.
    Lost(LostReason),
    /// Not accepted within the definition's time.
    NotAcceptedInTime,
    /// The score fell below the recycle line.
    ScoreDecayed,
    /// Another lead (by id) was merged into this one and was further along.
    Merged(String),
}

/// Something that happens to a lead.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Scoring's latest word.
    Score {
        /// The exact score.
        score: f64,
        /// The fit grade.
        grade: FitGrade,
        /// The activity that triggered the change, if any (a hand-raise when its type is one of
        /// the definition's).
        activity_type: Option<String>,
    },
    /// An SDR accepts the MQL.
    Accept {
        /// The SDR.
        sdr: String,
    },
    /// An SDR rejects it.
    Reject {
        /// The SDR.
        sdr: String,
        /// Why.
        reason: RejectReason,
    },
    /// An SDR records BANT.
    RecordBant {
        /// The SDR.
        sdr: String,
        /// What they learned.
        bant: Bant,
    },
    /// Sales opened an opportunity.
    Opportunity {
        /// Who.
        by: String,
    },
    /// Sales won the deal.
    Won {
        /// Who.
        by: String,
    },
    /// Sales lost the deal.
    Lost {
        /// Who.
        by: String,
        /// Why.
        reason: LostReason,
    },
    /// Time passed (the recycle rules run).
    Tick,
    /// Another lead, a duplicate of this one, is merged into it: the survivor keeps the more
    /// advanced stage, every hand-raise, and the latest BANT.
    Merge {
        /// The absorbed lead's id.
        absorbed_id: String,
        /// The absorbed lead's state.
        absorbed: Box<LeadQualification>,
    },
}

impl Input {
    fn action(&self) -> &'static str {
        match self {
            Input::Score { .. } => "score",
            Input::Accept { .. } => "accept",
            Input::Reject { .. } => "reject",
            Input::RecordBant { .. } => "record bant for",
            Input::Opportunity { .. } => "open an opportunity for",
            Input::Won { .. } => "win",
            Input::Lost { .. } => "lose",
            Input::Tick => "recycle",
            Input::Merge { .. } => "merge",
        }
    }
}

/// Who must act next, announced to handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HandoffKind {
    /// An SDR reviews the MQL.
    SdrReview,
    /// An account executive takes the SQL.
    Sales,
}

/// One recorded move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// From.
    pub from: Stage,
    /// To.
    pub to: Stage,
    /// Why.
    pub reason: Reason,
    /// Who.
    pub actor: Actor,
    /// Under which definition version.
    pub definition_version: i32,
    /// The score at the time.
    pub score: f64,
    /// The fit grade at the time, once scoring has graded the lead.
    pub grade: Option<FitGrade>,
    /// When.
    pub at: DateTime<Utc>,
}

impl Transition {
    /// The hand-off entering `to` asks for, if any. A merge asks for none: handoff moves the
    /// absorbed lead's open hand-off to the survivor.
    pub fn handoff(&self) -> Option<HandoffKind> {
        if matches!(self.reason, Reason::Merged(_)) {
            return None;
        }
        match self.to {
            Stage::Mql => Some(HandoffKind::SdrReview),
            Stage::Sql => Some(HandoffKind::Sales),
            _ => None,
        }
    }
}

/// An input the lead's stage does not allow (answered `FAILED_PRECONDITION`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stage the lead is in.
    pub stage: Stage,
    /// What was attempted.
    pub action: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot {} a lead in stage {}",
            self.action,
            self.stage.name()
        )
    }
}

impl std::error::Error for Refusal {}

/// One lead's qualification state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadQualification {
    /// The current stage.
    pub stage: Stage,
    /// When it entered it.
    pub stage_entered_at: DateTime<Utc>,
    /// The latest score.
    pub score: f64,
    /// The latest fit grade.
    pub grade: Option<FitGrade>,
    /// It has raised its hand at some point.
    pub hand_raised: bool,
    /// The latest BANT an SDR recorded.
    pub bant: Option<Bant>,
}

impl LeadQualification {
    /// A new lead, entering at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self {
            stage: Stage::Lead,
            stage_entered_at: at,
            score: 0.0,
            grade: None,
            hand_raised: false,
            bant: None,
        }
    }

    /// Applies `input` at `now` under `definition`: the transitions it causes (none is fine), or
    /// a refusal naming the current stage. A refused input changes nothing.
    pub fn apply(
        &mut self,
        definition: &Definition,
        input: Input,
        now: DateTime<Utc>,
    ) -> Result<Vec<Transition>, Refusal> {
        let refuse = Refusal {
            stage: self.stage,
            action: input.action(),
        };
        let fits =
            |grade: Option<FitGrade>| grade.is_some_and(|g| g.at_least(definition.min_grade));
        let next: Option<(Stage, Reason, Actor)> = match input {
            Input::Score {
                score,
                grade,
                activity_type,
            } => {
                let hand_raise =
                    activity_type.is_some_and(|kind| definition.hand_raise_types.contains(&kind));
                self.score = score;
                self.grade = Some(grade);
                self.hand_raised |= hand_raise;
                match self.stage {
                    Stage::Subscriber | Stage::Lead | Stage::Nurture
                        if fits(self.grade) && self.hand_raised =>
                    {
                        Some((Stage::Mql, Reason::HandRaise, Actor::Rule))
                    }
                    Stage::Subscriber | Stage::Lead | Stage::Nurture
                        if fits(self.grade) && score >= definition.mql_threshold =>
                    {
                        Some((Stage::Mql, Reason::ScoreOverThreshold, Actor::Rule))
                    }
                    Stage::Mql
                        if definition
                            .recycle_below_score
                            .is_some_and(|line| score < line) =>
                    {
                        Some((Stage::Nurture, Reason::ScoreDecayed, Actor::System))
                    }
                    _ => None,
                }
            }
            Input::Tick => match (self.stage, definition.recycle_unaccepted_after) {
                (Stage::Mql, Some(after)) if now - self.stage_entered_at >= after => {
                    Some((Stage::Nurture, Reason::NotAcceptedInTime, Actor::System))
                }
                _ => None,
            },
            Input::Accept { sdr } => match self.stage {
                Stage::Mql => Some((Stage::Sal, Reason::Accepted, Actor::Sdr(sdr))),
                _ => return Err(refuse),
            },
            Input::Reject { sdr, reason } => match self.stage {
                Stage::Mql | Stage::Sal => Some((
                    definition.rejection_route(reason),
                    Reason::Rejected(reason),
                    Actor::Sdr(sdr),
                )),
                _ => return Err(refuse),
            },
            Input::RecordBant { sdr, bant } => match self.stage {
                Stage::Sal => {
                    let qualifies = definition.sql_rule.holds(&bant, now);
                    self.bant = Some(bant);
                    qualifies.then_some((Stage::Sql, Reason::BantSatisfied, Actor::Sdr(sdr)))
                }
                Stage::Sql | Stage::Opportunity => {
                    self.bant = Some(bant);
                    None
                }
                _ => return Err(refuse),
            },
            Input::Opportunity { by } => match self.stage {
                Stage::Sql => Some((Stage::Opportunity, Reason::Opportunity, Actor::Sales(by))),
                _ => return Err(refuse),
            },
            Input::Won { by } => match self.stage {
                Stage::Sql | Stage::Opportunity => {
                    Some((Stage::Customer, Reason::Won, Actor::Sales(by)))
                }
                _ => return Err(refuse),
            },
            Input::Lost { by, reason } => match self.stage {
                Stage::Sql | Stage::Opportunity => Some((
                    definition.lost_route(reason),
                    Reason::Lost(reason),
                    Actor::Sales(by),
                )),
                _ => return Err(refuse),
            },
            Input::Merge {
                absorbed_id,
                absorbed,
            } => {
                self.hand_raised |= absorbed.hand_raised;
                if self.bant.is_none() {
                    self.bant = absorbed.bant.clone();
                }
                (absorbed.stage.advancement() > self.stage.advancement()).then_some((
                    absorbed.stage,
                    Reason::Merged(absorbed_id),
                    Actor::System,
                ))
            }
        };
        Ok(next
            .map(|(to, reason, actor)| self.move_to(to, reason, actor, definition.version, now))
            .into_iter()
            .collect())
    }

    fn move_to(
        &mut self,
        to: Stage,
        reason: Reason,
        actor: Actor,
        definition_version: i32,
        at: DateTime<Utc>,
    ) -> Transition {
        debug_assert!(
            self.stage.can_move_to(to) || matches!(reason, Reason::Merged(_)),
            "{:?} -> {:?} is not in the table",
            self.stage,
            to
        );
        let transition = Transition {
            from: self.stage,
            to,
            reason,
            actor,
            definition_version,
            score: self.score,
            grade: self.grade,
            at,
        };
        self.stage = to;
        self.stage_entered_at = at;
        transition
    }
}

/// Whether `t` is a legal move: in the table, or a merge onto a more advanced stage.
pub fn is_legal(t: &Transition) -> bool {
    match t.reason {
        Reason::Merged(_) => t.to.advancement() > t.from.advancement(),
        _ => t.from.can_move_to(t.to),
    }
}

/// The stage a recorded history leads to (a new lead's, when empty); `None` when the history is
/// not a chain of legal transitions.
pub fn replay(history: &[Transition]) -> Option<Stage> {
    history.iter().try_fold(Stage::Lead, |stage, t| {
        (t.from == stage && is_legal(t)).then_some(t.to)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::definition::{Authority, Budget};
    use chrono::Duration;
    use proptest::prelude::*;

    fn bant(need: &str, days: i64, budget: bool, authority: bool, now: DateTime<Utc>) -> Bant {
        Bant {
            budget: if budget {
                Budget::Expected
            } else {
                Budget::None
            },
            authority: if authority {
                Authority::DecisionMaker
            } else {
                Authority::None
            },
            need: need.into(),
            expected_decision: Some(now + Duration::days(days)),
            notes: String::new(),
        }
    }

    fn score(score: f64, grade: FitGrade, hand_raise: bool) -> Input {
        Input::Score {
            score,
            grade,
            activity_type: hand_raise.then(|| "demo_request".to_owned()),
        }
    }

    /// The seeds' journey: MQL by score, SDR review, accepted, BANT → SQL, won.
    #[test]
    fn the_seed_journey() {
        let def = Definition::default();
        let now = Utc::now();
        let mut lead = LeadQualification::new(now);
        let mql = lead
            .apply(&def, score(64.0, FitGrade::A, false), now)
            .expect("score");
        assert_eq!(
            (mql[0].to, mql[0].handoff()),
            (Stage::Mql, Some(HandoffKind::SdrReview)),
            "an MQL goes to SDR review"
        );
        let sal = lead
            .apply(&def, Input::Accept { sdr: "sam".into() }, now)
            .expect("accept");
        assert_eq!(sal[0].to, Stage::Sal);
        // "let's talk", a need within three months, quotes from three competitors, budget.
        let sql = lead
            .apply(
                &def,
                Input::RecordBant {
                    sdr: "sam".into(),
                    bant: bant("replace spreadsheets", 80, true, false, now),
                },
                now,
            )
            .expect("bant");
        assert_eq!(
            (sql[0].to, sql[0].reason.clone(), sql[0].handoff()),
            (Stage::Sql, Reason::BantSatisfied, Some(HandoffKind::Sales))
        );
        let won = lead
            .apply(&def, Input::Won { by: "ae".into() }, now)
            .expect("won");
        assert_eq!(won[0].to, Stage::Customer);
    }

    #[test]
    fn a_fitting_hand_raise_skips_the_threshold_but_not_sdr_review() {
        let def = Definition::default();
        let now = Utc::now();
        let mut lead = LeadQualification::new(now);
        let moved = lead
            .apply(&def, score(25.0, FitGrade::A, true), now)
            .expect("score");
        assert_eq!(
            (moved[0].to, moved[0].reason.clone()),
            (Stage::Mql, Reason::HandRaise)
        );
        let refused = lead
            .apply(
                &def,
                Input::RecordBant {
                    sdr: "s".into(),
                    bant: bant("need", 30, true, true, now),
                },
                now,
            )
            .expect_err("BANT needs an accepted lead");
        assert_eq!(
            refused.to_string(),
            "cannot record bant for a lead in stage mql"
        );
        lead.apply(&def, Input::Accept { sdr: "s".into() }, now)
            .expect("accept");
        let sql = lead
            .apply(
                &def,
                Input::RecordBant {
                    sdr: "s".into(),
                    bant: bant("need", 30, true, true, now),
                },
                now,
            )
            .expect("bant");
        assert_eq!(sql[0].to, Stage::Sql);
    }

    #[test]
    fn a_hand_raise_that_does_not_fit_goes_nowhere() {
        let def = Definition::default();
        let mut lead = LeadQualification::new(Utc::now());
        assert!(
            lead.apply(&def, score(95.0, FitGrade::D, true), Utc::now())
                .expect("score")
                .is_empty()
        );
        assert_eq!(lead.stage, Stage::Lead);
    }

    #[test]
    fn rejections_land_where_the_seeds_say() {
        let def = Definition::default();
        let now = Utc::now();
        for (reason, stage) in [
            (RejectReason::InaccurateData, Stage::Disqualified),
            (RejectReason::NotIdealCustomer, Stage::Disqualified),
            (RejectReason::Premature, Stage::Nurture),
        ] {
            let mut lead = LeadQualification::new(now);
            lead.apply(&def, score(70.0, FitGrade::B, false), now)
                .expect("mql");
            let moved = lead
                .apply(
                    &def,
                    Input::Reject {
                        sdr: "s".into(),
                        reason,
                    },
                    now,
                )
                .expect("reject");
            assert_eq!(moved[0].to, stage, "{reason:?}");
        }
    }

    #[test]
    fn bant_short_of_the_rule_keeps_the_lead_accepted() {
        let def = Definition::default();
        let now = Utc::now();
        let mut lead = LeadQualification::new(now);
        lead.apply(&def, score(70.0, FitGrade::A, false), now)
            .expect("mql");
        lead.apply(&def, Input::Accept { sdr: "s".into() }, now)
            .expect("sal");
        for weak in [
            bant("", 30, true, true, now),
            bant("need", 200, true, true, now),
            bant("need", 30, false, false, now),
        ] {
            assert!(
                lead.apply(
                    &def,
                    Input::RecordBant {
                        sdr: "s".into(),
                        bant: weak
                    },
                    now
                )
                .expect("bant")
                .is_empty()
            );
            assert_eq!(lead.stage, Stage::Sal);
        }
    }

    #[test]
    fn unaccepted_or_decayed_mqls_are_recycled_and_can_requalify() {
        let def = Definition::default();
        let t0 = Utc::now();
        let mut lead = LeadQualification::new(t0);
        lead.apply(&def, score(70.0, FitGrade::A, false), t0)
            .expect("mql");
        assert!(
            lead.apply(&def, Input::Tick, t0 + Duration::days(29))
                .expect("tick")
                .is_empty()
        );
        let recycled = lead
            .apply(&def, Input::Tick, t0 + Duration::days(30))
            .expect("tick");
        assert_eq!(
            (recycled[0].to, recycled[0].reason.clone()),
            (Stage::Nurture, Reason::NotAcceptedInTime)
        );
        let again = lead
            .apply(
                &def,
                score(75.0, FitGrade::A, false),
                t0 + Duration::days(40),
            )
            .expect("score");
        assert_eq!(
            again[0].to,
            Stage::Mql,
            "a nurtured lead that heats up qualifies again"
        );
        let decayed = lead
            .apply(
                &def,
                score(35.0, FitGrade::A, false),
                t0 + Duration::days(50),
            )
            .expect("score");
        assert_eq!(
            (decayed[0].to, decayed[0].reason.clone()),
            (Stage::Nurture, Reason::ScoreDecayed)
        );
    }

    #[test]
    fn illegal_inputs_are_refused_naming_the_stage() {
        let def = Definition::default();
        let now = Utc::now();
        let mut lead = LeadQualification::new(now);
        for input in [
            Input::Accept { sdr: "s".into() },
            Input::Reject {
                sdr: "s".into(),
                reason: RejectReason::Premature,
            },
            Input::Opportunity { by: "ae".into() },
            Input::Won { by: "ae".into() },
            Input::Lost {
                by: "ae".into(),
                reason: LostReason::NoBudget,
            },
        ] {
            let refusal = lead.apply(&def, input, now).expect_err("refused");
            assert_eq!(refusal.stage, Stage::Lead);
        }
        assert_eq!(
            lead,
            LeadQualification::new(now),
            "a refusal changes nothing"
        );
    }

    /// Every decision from every stage: allowed exactly where the lifecycle says, otherwise
    /// refused naming the stage and changing nothing.
    #[test]
    fn every_illegal_decision_is_refused() {
        let def = Definition::default();
        let now = Utc::now();
        let decisions: [(Input, &[Stage]); 6] = [
            (Input::Accept { sdr: "s".into() }, &[Stage::Mql]),
            (
                Input::Reject {
                    sdr: "s".into(),
                    reason: RejectReason::Premature,
                },
                &[Stage::Mql, Stage::Sal],
            ),
            (
                Input::RecordBant {
                    sdr: "s".into(),
                    bant: bant("need", 30, true, true, now),
                },
                &[Stage::Sal, Stage::Sql, Stage::Opportunity],
            ),
            (Input::Opportunity { by: "ae".into() }, &[Stage::Sql]),
            (
                Input::Won { by: "ae".into() },
                &[Stage::Sql, Stage::Opportunity],
            ),
            (
                Input::Lost {
                    by: "ae".into(),
                    reason: LostReason::NoBudget,
                },
                &[Stage::Sql, Stage::Opportunity],
            ),
        ];
        for stage in Stage::ALL {
            for (input, allowed) in &decisions {
                let mut lead = LeadQualification::new(now);
                lead.stage = stage;
                let before = lead.clone();
                match lead.apply(&def, input.clone(), now) {
                    Ok(moves) => {
                        assert!(allowed.contains(&stage), "{input:?} from {stage:?}");
                        assert!(moves.iter().all(is_legal), "{input:?} from {stage:?}");
                    }
                    Err(refusal) => {
                        assert!(!allowed.contains(&stage), "{input:?} from {stage:?}");
                        assert!(refusal.to_string().ends_with(stage.name()));
                        assert_eq!(lead, before);
                    }
                }
            }
        }
    }

    #[test]
    fn lost_deals_route_by_reason_and_only_listed_types_raise_a_hand() {
        let def = Definition::default();
        let now = Utc::now();
        let at_sql = || {
            let mut lead = LeadQualification::new(now);
            lead.apply(&def, score(70.0, FitGrade::A, false), now)
                .expect("mql");
            lead.apply(&def, Input::Accept { sdr: "s".into() }, now)
                .expect("sal");
            lead.apply(
                &def,
                Input::RecordBant {
                    sdr: "s".into(),
                    bant: bant("need", 30, true, false, now),
                },
                now,
            )
            .expect("sql");
            lead
        };
        for (reason, stage) in [
            (LostReason::NotAFit, Stage::Disqualified),
            (LostReason::LostToCompetitor, Stage::Nurture),
        ] {
            let mut lead = at_sql();
            let moved = lead
                .apply(
                    &def,
                    Input::Lost {
                        by: "ae".into(),
                        reason,
                    },
                    now,
                )
                .expect("lost");
            assert_eq!(
                (moved[0].to, moved[0].reason.clone()),
                (stage, Reason::Lost(reason))
            );
        }
        let mut lead = LeadQualification::new(now);
        let page_view = Input::Score {
            score: 10.0,
            grade: FitGrade::A,
            activity_type: Some("page_view".into()),
        };
        assert!(
            lead.apply(&def, page_view, now).expect("score").is_empty(),
            "a page view is no hand-raise"
        );
        assert!(!lead.hand_raised);
    }

    #[test]
    fn a_merge_keeps_the_more_advanced_stage_and_asks_for_no_second_handoff() {
        let def = Definition::default();
        let now = Utc::now();
        let mut survivor = LeadQualification::new(now);
        let mut duplicate = LeadQualification::new(now);
        duplicate
            .apply(&def, score(70.0, FitGrade::A, true), now)
            .expect("mql");
        duplicate
            .apply(&def, Input::Accept { sdr: "s".into() }, now)
            .expect("sal");
        let merge = |absorbed: &LeadQualification| Input::Merge {
            absorbed_id: "dup".into(),
            absorbed: Box::new(absorbed.clone()),
        };
        let moved = survivor.apply(&def, merge(&duplicate), now).expect("merge");
        assert_eq!(
            (moved[0].from, moved[0].to, moved[0].reason.clone()),
            (Stage::Lead, Stage::Sal, Reason::Merged("dup".into()))
        );
        assert_eq!(moved[0].handoff(), None);
        assert!(survivor.hand_raised, "the duplicate's hand-raise is kept");
        assert_eq!(replay(&moved), Some(Stage::Sal));
        let behind = LeadQualification::new(now);
        assert!(
            survivor
                .apply(&def, merge(&behind), now)
                .expect("merge")
                .is_empty(),
            "a survivor further along stays where it is"
        );
        assert_eq!(survivor.stage, Stage::Sal);
    }

    fn any_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            (0.0f64..100.0, 0usize..4, any::<bool>()).prop_map(|(s, g, h)| Input::Score {
                score: s,
                grade: [FitGrade::A, FitGrade::B, FitGrade::C, FitGrade::D][g],
                activity_type: h.then(|| "contact_sales".to_owned())
            }),
            Just(Input::Accept { sdr: "s".into() }),
            (0usize..3).prop_map(|r| Input::Reject {
                sdr: "s".into(),
                reason: [
                    RejectReason::InaccurateData,
                    RejectReason::NotIdealCustomer,
                    RejectReason::Premature
                ][r]
            }),
            (any::<bool>(), any::<bool>(), 0i64..200).prop_map(|(b, a, d)| Input::RecordBant {
                sdr: "s".into(),
                bant: Bant {
                    budget: if b { Budget::Approved } else { Budget::None },
                    authority: if a {
                        Authority::Influencer
                    } else {
                        Authority::None
                    },
                    need: "need".into(),
                    expected_decision: Some(Utc::now() + Duration::days(d)),
                    notes: String::new()
                }
            }),
            Just(Input::Opportunity { by: "ae".into() }),
            Just(Input::Won { by: "ae".into() }),
            (0usize..2).prop_map(|r| Input::Lost {
                by: "ae".into(),
                reason: [LostReason::LostToCompetitor, LostReason::NotAFit][r]
            }),
            Just(Input::Tick),
            (0usize..9, any::<bool>()).prop_map(|(stage, hand_raised)| {
                let mut absorbed = LeadQualification::new(Utc::now());
                absorbed.stage = Stage::ALL[stage];
                absorbed.hand_raised = hand_raised;
                Input::Merge {
                    absorbed_id: "dup".into(),
                    absorbed: Box::new(absorbed),
                }
            }),
        ]
    }

    proptest! {
        /// Any sequence of inputs leaves a legal stage, every transition is in the table (SQL
        /// only ever from SAL, unless a duplicate that got there through SAL is merged in), and
        /// the history replays to the current stage.
        #[test]
        fn any_sequence_is_legal_and_replays(inputs in prop::collection::vec((any_input(), 0i64..40), 0..60)) {
            let def = Definition::default();
            let mut now = Utc::now();
            let mut lead = LeadQualification::new(now);
            let mut history: Vec<Transition> = Vec::new();
            for (input, days) in inputs {
                now += Duration::days(days);
                let before = lead.clone();
                match lead.apply(&def, input, now) {
                    Ok(transitions) => history.extend(transitions),
                    Err(refusal) => {
                        prop_assert_eq!(refusal.stage, before.stage);
                        prop_assert_eq!(&lead, &before);
                    }
                }
            }
            for t in &history {
                prop_assert!(is_legal(t));
                if t.to == Stage::Sql && !matches!(t.reason, Reason::Merged(_)) {
                    prop_assert_eq!(t.from, Stage::Sal);
                }
            }
            prop_assert_eq!(replay(&history), Some(lead.stage));
        }
    }
}
