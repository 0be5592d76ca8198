//! One lead's score under a model: applying profiles, activities and inactivity sweeps writes
//! ledger lines; the score and its explanation are read from them at any `now`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::caps::capped_award;
use super::compact_id;
use super::decay::{Decaying, factor};
use super::fit::{self, Grade};
use super::inactivity;
use super::model::{InactivityRule, Model};
use super::stamp;

mod v1;

pub use v1::LeadScoreV1;

/// An activity as scoring keeps it (the facts rescoring replays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityFact {
    /// Ingestion's activity id.
    pub id: String,
    /// Its type.
    pub activity_type: String,
    /// When it occurred.
    pub occurred_at: DateTime<Utc>,
    /// Its properties.
    pub properties: BTreeMap<String, String>,
}

/// Where a ledger line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LineKind {
    /// A fit rule started (positive line) or stopped (negative line) holding; never decays.
    Fit,
    /// A behaviour rule matched an activity; decays.
    Behavior,
    /// An inactivity rule applied; decays.
    Inactivity,
}

/// One award or removal of points.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerLine {
    /// Position in the lead's ledger.
    pub seq: u64,
    /// Its origin.
    pub kind: LineKind,
    /// The rule.
    pub rule_id: String,
    /// The activity that earned it (behaviour lines).
    #[serde(with = "compact_id::optional")]
    pub activity_id: Option<String>,
    /// That activity's type.
    pub activity_type: Option<String>,
    /// When the points count from (activity time, or when inactivity applied).
    #[serde(with = "stamp::time")]
    pub effective_at: DateTime<Utc>,
    /// Points as awarded.
    pub points: f64,
    /// The model version it was written under.
    pub model_version: i32,
}

/// A score at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreView {
    /// Fit + engagement.
    pub score: f64,
    /// Fit points.
    pub fit_points: f64,
    /// Engagement decayed to `as_of`.
    pub engagement: f64,
    /// The fit grade.
    pub grade: Grade,
    /// Hand-raise activities (id, type, time), newest first.
    pub hand_raises: Vec<(String, String, DateTime<Utc>)>,
    /// The time it is computed for.
    pub as_of: DateTime<Utc>,
}

/// The part of a stored [`LeadScore`] its score needs, read from the same serialized state
/// (the binary encoding's first three fields; the JSON's other fields are skipped): a score
/// lookup then neither builds the ledger, the awards and the seen activity ids nor parses
/// their times.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ScoreInputs {
    fit_rules: Vec<(String, f64)>,
    engagement: Decaying,
    #[serde(with = "stamp::labelled")]
    hand_raises: Vec<(String, String, DateTime<Utc>)>,
}

impl ScoreInputs {
    /// The score at `now` under `model`: exactly what [`LeadScore::score`] gives.
    pub fn score(&self, model: &Model, now: DateTime<Utc>) -> ScoreView {
        score_view(
            &self.fit_rules,
            &self.engagement,
            &self.hand_raises,
            model,
            now,
        )
    }
}

fn score_view(
    fit_rules: &[(String, f64)],
    engagement: &Decaying,
    hand_raises: &[(String, String, DateTime<Utc>)],
    model: &Model,
    now: DateTime<Utc>,
) -> ScoreView {
    let fit_points: f64 = fit_rules.iter().map(|(_, p)| p).sum();
    let engagement = engagement.value_at(now, model.half_life);
    ScoreView {
        score: fit_points + engagement,
        fit_points,
        engagement,
        grade: model.grade_bands.grade(fit_points),
        hand_raises: hand_raises.iter().take(10).cloned().collect(),
        as_of: now,
    }
}

/// A contribution to the score as of a time.
#[derive(Debug, Clone, PartialEq)]
pub struct Contribution {
    /// The line (for fit, the rule's lines summed into one, with the latest line's details).
    pub line: LedgerLine,
    /// Its value at the explanation's time.
    pub value: f64,
}

/// Why a lead has its score: contributions whose values add up to `score` exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// Fit contributions first (model order), then engagement lines newest first.
    pub contributions: Vec<Contribution>,
    /// The sum of the contribution values.
    pub score: f64,
}

/// A lead's scoring state.
///
/// Its first three fields are [`ScoreInputs`]' fields, in the same order: in a stored state's
/// binary encoding (fields in declaration order) a score lookup reads them as a prefix and
/// stops there. Keep them first. Stored states are read by position, so any change to the
/// fields or their encoding is a new version of the stored layout (`store::state`), with the
/// old layout kept to read (as [`LeadScoreV1`] is).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadScore {
    fit_rules: Vec<(String, f64)>,
    engagement: Decaying,
    #[serde(with = "stamp::labelled")]
    hand_raises: Vec<(String, String, DateTime<Utc>)>,
    ledger: Vec<LedgerLine>,
    #[serde(with = "stamp::timed_by_key")]
    awards: HashMap<String, Vec<(DateTime<Utc>, f64)>>,
    assets: HashSet<(String, String)>,
    #[serde(with = "compact_id::set")]
    seen_activities: HashSet<String>,
    #[serde(with = "stamp::time")]
    first_seen: DateTime<Utc>,
    #[serde(with = "stamp::by_key")]
    last_seen: HashMap<String, DateTime<Utc>>,
    #[serde(with = "stamp::optional")]
    last_any: Option<DateTime<Utc>>,
    #[serde(with = "stamp::by_key")]
    inactivity_applied: HashMap<String, DateTime<Utc>>,
}

impl LeadScore {
    /// A lead first seen at `first_seen`, with no profile and no activity.
    pub fn new(first_seen: DateTime<Utc>) -> Self {
        Self {
            fit_rules: Vec::new(),
            engagement: Decaying::zero(first_seen),
            ledger: Vec::new(),
            awards: HashMap::new(),
            assets: HashSet::new(),
            seen_activities: HashSet::new(),
            first_seen,
            last_seen: HashMap::new(),
            last_any: None,
            inactivity_applied: HashMap::new(),
            hand_raises: Vec::new(),
        }
    }

    /// Scores a whole history from scratch under `model` (rescoring, merges, what-if): the
    /// profile, then the activities in time order with sweeps between them, then a sweep at
    /// `now`.
    pub fn replay(
        model: &Model,
        profile: &BTreeMap<String, String>,
        facts: &[ActivityFact],
        first_seen: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut lead = Self::new(first_seen);
        lead.set_profile(model, profile, first_seen);
        let mut ordered: Vec<&ActivityFact> = facts.iter().collect();
        ordered.sort_by(|a, b| (a.occurred_at, &a.id).cmp(&(b.occurred_at, &b.id)));
        for fact in ordered {
            lead.sweep(model, fact.occurred_at);
            lead.apply_activity(model, fact);
        }
        lead.sweep(model, now);
        lead
    }

    /// The ledger, oldest first.
    pub fn ledger(&self) -> &[LedgerLine] {
        &self.ledger
    }

    fn push(&mut self, line: LedgerLine) -> LedgerLine {
        self.ledger.push(line.clone());
        line
    }

    fn line(
        &self,
        kind: LineKind,
        rule_id: &str,
        at: DateTime<Utc>,
        points: f64,
        model: &Model,
    ) -> LedgerLine {
        LedgerLine {
            seq: self.ledger.len() as u64 + 1,
            kind,
            rule_id: rule_id.to_owned(),
            activity_id: None,
            activity_type: None,
            effective_at: at,
            points,
            model_version: model.version,
        }
    }

    /// Scores a new profile; writes a line for each fit rule that starts or stops holding.
    pub fn set_profile(
        &mut self,
        model: &Model,
        profile: &BTreeMap<String, String>,
        at: DateTime<Utc>,
    ) -> Vec<LedgerLine> {
        let fit = fit::evaluate(model, profile);
        let before: HashMap<&str, f64> = self
            .fit_rules
            .iter()
            .map(|(id, p)| (id.as_str(), *p))
            .collect();
        let after: HashMap<&str, f64> = fit.rules.iter().map(|(id, p)| (id.as_str(), *p)).collect();
        let mut changes: Vec<(String, f64)> = Vec::new();
        for (id, points) in &fit.rules {
            if before.get(id.as_str()) != Some(points) {
                changes.push((
                    id.clone(),
                    points - before.get(id.as_str()).copied().unwrap_or(0.0),
                ));
            }
        }
        for (id, points) in &self.fit_rules {
            if !after.contains_key(id.as_str()) {
                changes.push((id.clone(), -points));
            }
        }
        self.fit_rules = fit.rules;
        changes
            .into_iter()
            .map(|(id, points)| {
                let line = self.line(LineKind::Fit, &id, at, points, model);
                self.push(line)
            })
            .collect()
    }

    /// Applies one activity (at most once per activity id): every matching behaviour rule
    /// scores within its caps and once-per-asset rule.
    pub fn apply_activity(&mut self, model: &Model, fact: &ActivityFact) -> Vec<LedgerLine> {
        if !self.seen_activities.insert(fact.id.clone()) {
            return Vec::new();
        }
        let at = fact.occurred_at;
        let previous = self.last_seen.get(&fact.activity_type).copied();
        if previous.is_none_or(|p| at > p) {
            self.last_seen.insert(fact.activity_type.clone(), at);
        }
        if self.last_any.is_none_or(|p| at > p) {
            self.last_any = Some(at);
        }
        if model.hand_raise_types.contains(&fact.activity_type) {
            self.hand_raises
                .push((fact.id.clone(), fact.activity_type.clone(), at));
            self.hand_raises.sort_by_key(|h| std::cmp::Reverse(h.2));
        }
        let mut lines = Vec::new();
        for rule in model
            .behavior_rules
            .iter()
            .filter(|r| r.activity_type == fact.activity_type)
        {
            if !rule.predicates.iter().all(|p| p.holds(&fact.properties)) {
                continue;
            }
            let asset = rule
                .once_per_asset
                .as_ref()
                .and_then(|prop| fact.properties.get(prop))
                .map(|asset| (rule.id.clone(), asset.to_lowercase()));
            if asset.as_ref().is_some_and(|a| self.assets.contains(a)) {
                continue;
            }
            let awards = self
                .awards
                .get(&rule.id)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let points = capped_award(rule.cap.as_ref(), rule.points, at, awards);
            if points == 0.0 {
                continue;
            }
            if let Some(asset) = asset {
                self.assets.insert(asset);
            }
            self.awards
                .entry(rule.id.clone())
                .or_default()
                .push((at, points));
            self.engagement.add(points, at, model.half_life);
            let mut line = self.line(LineKind::Behavior, &rule.id, at, points, model);
            line.activity_id = Some(fact.id.clone());
            line.activity_type = Some(fact.activity_type.clone());
            lines.push(self.push(line));
        }
        lines
    }

    /// Applies the inactivity rules due by `now`.
    pub fn sweep(&mut self, model: &Model, now: DateTime<Utc>) -> Vec<LedgerLine> {
        let mut lines = Vec::new();
        for rule in &model.inactivity_rules {
            let last_seen = self.inactive_since(rule);
            let applied = self.inactivity_applied.get(&rule.id).copied();
            for at in inactivity::due(rule, last_seen, applied, now) {
                self.inactivity_applied.insert(rule.id.clone(), at);
                self.engagement.add(rule.points, at, model.half_life);
                let line = self.line(LineKind::Inactivity, &rule.id, at, rule.points, model);
                lines.push(self.push(line));
            }
        }
        lines
    }

    /// The earliest time at which a sweep could change what the lead's score at `now` announces:
    /// an inactivity rule comes due, or decay takes the score across a rounding edge (the grade
    /// follows fit alone, which only events move). `None` when no sweep will change anything
    /// before the next event does. A sweep that visits each lead only once this time has come
    /// announces exactly what visiting every lead would.
    pub fn next_sweep_due(&self, model: &Model, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let inactivity = model.inactivity_rules.iter().filter_map(|rule| {
            let applied = self.inactivity_applied.get(&rule.id).copied();
            inactivity::next_due(rule, self.inactive_since(rule), applied)
        });
        // The score's two parts as `score` adds them, without building a whole view.
        let fit_points: f64 = self.fit_rules.iter().map(|(_, points)| points).sum();
        let engagement = self.engagement.value_at(now, model.half_life);
        let rounded = (fit_points + engagement).round();
        let edge = if engagement > 0.0 {
            rounded - 0.5
        } else {
            rounded + 0.5
        };
        let decay = self.engagement.reaches(edge - fit_points, model.half_life);
        inactivity.chain(decay).min()
    }

    /// Since when the lead has been inactive as `rule` counts it: its last activity of the
    /// rule's type (or of any type), else its first appearance.
    fn inactive_since(&self, rule: &InactivityRule) -> DateTime<Utc> {
        match &rule.activity_type {
            Some(kind) => self.last_seen.get(kind).copied(),
            None => self.last_any,
        }
        .unwrap_or(self.first_seen)
    }

    /// The score at `now`, in O(1) of the history.
    pub fn score(&self, model: &Model, now: DateTime<Utc>) -> ScoreView {
        score_view(
            &self.fit_rules,
            &self.engagement,
            &self.hand_raises,
            model,
            now,
        )
    }

    /// Every contribution at `now`; the values add up to the explanation's score exactly, and
    /// to [`LeadScore::score`] within floating-point rounding.
    pub fn explain(&self, model: &Model, now: DateTime<Utc>) -> Explanation {
        let mut fit: Vec<Contribution> = Vec::new();
        for (rule_id, points) in &self.fit_rules {
            if let Some(latest) = self
                .ledger
                .iter()
                .rev()
                .find(|l| l.kind == LineKind::Fit && &l.rule_id == rule_id)
            {
                fit.push(Contribution {
                    line: LedgerLine {
                        points: *points,
                        ..latest.clone()
                    },
                    value: *points,
                });
            }
        }
        let mut engagement: Vec<Contribution> = self
            .ledger
            .iter()
            .filter(|l| l.kind != LineKind::Fit)
            .map(|l| Contribution {
                value: l.points
                    * factor(
                        l.effective_at,
                        now.max(self.latest_effective()),
                        model.half_life,
                    ),
                line: l.clone(),
            })
            .collect();
        engagement.sort_by(|a, b| {
            (b.line.effective_at, b.line.seq).cmp(&(a.line.effective_at, a.line.seq))
        });
        fit.extend(engagement);
        let score = fit.iter().map(|c| c.value).sum();
        Explanation {
            contributions: fit,
            score,
        }
    }

    fn latest_effective(&self) -> DateTime<Utc> {
        self.ledger
            .iter()
            .filter(|l| l.kind != LineKind::Fit)
            .map(|l| l.effective_at)
            .fold(self.first_seen, Ord::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::default_model::default_model;
    use chrono::Duration;
    use proptest::prelude::*;

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

    /// A lead first seen at `t0` with a manager's profile at a company of `size`, then the
    /// generated `events` (activity kind, hours after `t0`, asset), each after a sweep to its
    /// time, as the store applies them.
    fn lead_with_history(
        model: &Model,
        t0: DateTime<Utc>,
        size: i32,
        events: &[(usize, i64, u8)],
    ) -> LeadScore {
        let kinds = [
            "page_view",
            "pricing_view",
            "content_download",
            "email_open",
            "webinar_attended",
            "unsubscribe",
            "demo_request",
            "bounce",
        ];
        let mut lead = LeadScore::new(t0);
        let profile = BTreeMap::from([
            ("company_size".into(), size.to_string()),
            ("seniority".into(), "SENIORITY_MANAGER".into()),
        ]);
        lead.set_profile(model, &profile, t0);
        for (i, (kind, hours, asset)) in events.iter().enumerate() {
            let at = t0 + Duration::hours(*hours);
            lead.sweep(model, at);
            let properties = [("asset_id", asset.to_string()), ("path", "/pricing".into())];
            let properties: Vec<(&str, &str)> =
                properties.iter().map(|(k, v)| (*k, v.as_str())).collect();
            lead.apply_activity(model, &fact(&i.to_string(), kinds[*kind], at, &properties));
        }
        lead
    }

    #[test]
    fn the_same_asset_scores_once() {
        let model = default_model();
        let t0 = Utc::now();
        let mut lead = LeadScore::new(t0);
        for i in 0..5 {
            lead.apply_activity(
                &model,
                &fact(
                    &format!("a{i}"),
                    "email_open",
                    t0,
                    &[("asset_id", "newsletter-42")],
                ),
            );
        }
        assert_eq!(
            lead.ledger().len(),
            1,
            "five opens of one e-mail score once"
        );
    }

    #[test]
    fn applying_an_activity_twice_equals_once() {
        let model = default_model();
        let t0 = Utc::now();
        let mut once = LeadScore::new(t0);
        let f = fact("x", "pricing_view", t0, &[]);
        once.apply_activity(&model, &f);
        let mut twice = once.clone();
        assert!(twice.apply_activity(&model, &f).is_empty());
        assert_eq!(once, twice);
    }

    #[test]
    fn a_lead_going_cold_loses_points_without_new_events() {
        let model = default_model();
        let t0 = Utc::now();
        let mut lead = LeadScore::new(t0);
        lead.apply_activity(&model, &fact("e", "email_open", t0, &[("asset_id", "m1")]));
        let before = lead.score(&model, t0 + Duration::days(13)).score;
        let lines = lead.sweep(&model, t0 + Duration::days(15));
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].kind, LineKind::Inactivity);
        assert!(lead.score(&model, t0 + Duration::days(15)).score < before - 5.0);
    }

    #[test]
    fn fit_changes_are_ledger_lines() {
        let model = default_model();
        let t0 = Utc::now();
        let mut lead = LeadScore::new(t0);
        let profile = |size: &str| BTreeMap::from([("company_size".to_owned(), size.to_owned())]);
        let added = lead.set_profile(&model, &profile("200"), t0);
        assert_eq!(added.len(), 1);
        assert!(added[0].points > 0.0);
        let removed = lead.set_profile(&model, &profile("3"), t0);
        assert_eq!(
            removed[0].points, -added[0].points,
            "the rule stopping to hold removes its points"
        );
        assert_eq!(lead.score(&model, t0).fit_points, 0.0);
    }

    proptest! {
        /// Whatever happens to a lead, the explanation adds up to the score.
        #[test]
        fn the_explanation_sums_to_the_score(
            events in prop::collection::vec((0usize..8, 0i64..2000, 0u8..4), 0..40),
            size in 0i32..3000,
            later in 0i64..2000,
        ) {
            let model = default_model();
            let t0 = Utc::now();
            let mut lead = lead_with_history(&model, t0, size, &events);
            let now = t0 + Duration::hours(2000 + later);
            lead.sweep(&model, now);
            let explanation = lead.explain(&model, now);
            let sum: f64 = explanation.contributions.iter().map(|c| c.value).sum();
            prop_assert_eq!(sum, explanation.score);
            let score = lead.score(&model, now).score;
            prop_assert!((score - explanation.score).abs() < 1e-9 * score.abs().max(1.0), "{} vs {}", score, explanation.score);
            // What a score lookup reads from the stored state scores exactly like the whole
            // state read back from the same bytes: the binary encoding's prefix, or the
            // fields of the JSON that states were stored as before it.
            let stored = postcard::to_allocvec(&lead).expect("encodes");
            let (inputs, _rest): (ScoreInputs, _) = postcard::take_from_bytes(&stored).expect("inputs decode");
            let whole: LeadScore = postcard::from_bytes(&stored).expect("state decodes");
            prop_assert_eq!(inputs.score(&model, now), whole.score(&model, now));
            // Saving and loading a lead changes nothing, down to the last bit of every float.
            prop_assert_eq!(&whole, &lead);
            let json = serde_json::to_string(&lead).expect("serializes");
            let inputs: ScoreInputs = serde_json::from_str(&json).expect("inputs deserialize");
            let whole: LeadScore = serde_json::from_str(&json).expect("state deserializes");
            prop_assert_eq!(inputs.score(&model, now), whole.score(&model, now));
            prop_assert_eq!(&whole, &lead);
        }
    }

    proptest! {
        /// Until the lead's next sweep is due a sweep changes nothing it announces; a little
        /// after it, something has changed (or the due time was only an inactivity rule's
        /// earliest chance, and a rule applied).
        #[test]
        fn no_sweep_before_the_due_time_changes_anything(
            events in prop::collection::vec((0usize..8, 0i64..2000, 0u8..4), 0..20),
            size in 0i32..3000,
            after_last in 0i64..3000,
            probes in prop::collection::vec(0.0f64..1.0, 1..6),
        ) {
            let model = default_model();
            let t0 = Utc::now();
            let mut lead = lead_with_history(&model, t0, size, &events);
            let now = t0 + Duration::hours(2000 + after_last);
            lead.sweep(&model, now);
            let announced = lead.score(&model, now);
            let due = lead.next_sweep_due(&model, now);
            let horizon = due.unwrap_or(now + Duration::days(3650));
            prop_assert!(due.is_none_or(|due| due > now), "nothing is due at the sweep that just ran");
            for probe in probes {
                let at = now + Duration::milliseconds(((horizon - now).num_milliseconds() as f64 * probe) as i64);
                if at + Duration::seconds(1) > horizon && due.is_some() {
                    continue;
                }
                let mut swept = lead.clone();
                prop_assert!(swept.sweep(&model, at).is_empty(), "no rule applies before {:?}", due);
                prop_assert_eq!(swept.score(&model, at).score.round(), announced.score.round());
            }
            if let Some(due) = due {
                let at = due + Duration::minutes(1);
                let mut swept = lead.clone();
                let lines = swept.sweep(&model, at);
                prop_assert!(!lines.is_empty() || swept.score(&model, at).score.round() != announced.score.round());
            }
        }
    }
}
