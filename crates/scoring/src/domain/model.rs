//! The scoring model: data a tenant publishes, validated before it can score anything.

use std::collections::{BTreeSet, HashSet};

use chrono::Duration;
use leadflow_runtime::error::FieldViolations;
use serde::{Deserialize, Serialize};

use super::fit::GradeBands;
use super::predicate::{Condition, Predicate};

/// A versioned scoring model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// 1, 2, 3, … assigned on publish.
    pub version: i32,
    /// What changed, for people.
    pub description: String,
    /// Rules over the profile; all that hold add up to the fit points.
    pub fit_rules: Vec<FitRule>,
    /// Fit points → grade.
    pub grade_bands: GradeBands,
    /// Rules over activities.
    pub behavior_rules: Vec<BehaviorRule>,
    /// Half-life of engagement points; `None` means no decay.
    pub half_life: Option<Duration>,
    /// Penalties for going cold.
    pub inactivity_rules: Vec<InactivityRule>,
    /// Activity types that are a hand-raise.
    pub hand_raise_types: BTreeSet<String>,
}

/// When every predicate holds for the profile, `points` are added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitRule {
    /// Unique within the model.
    pub id: String,
    /// For people.
    pub description: String,
    /// All must hold.
    pub predicates: Vec<Predicate>,
    /// Points, negative to remove.
    pub points: f64,
}

/// An activity of `activity_type` whose properties satisfy the predicates scores `points`,
/// within the caps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviorRule {
    /// Unique within the model.
    pub id: String,
    /// For people.
    pub description: String,
    /// The activity type.
    pub activity_type: String,
    /// All must hold for the activity's properties.
    pub predicates: Vec<Predicate>,
    /// Points per matching activity; negative for negative signals.
    pub points: f64,
    /// Limits on what the rule can score.
    pub cap: Option<Cap>,
    /// The property naming the asset; each asset scores at most once under the rule.
    pub once_per_asset: Option<String>,
}

/// Limits of a behaviour rule within a rolling window (or the whole history).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cap {
    /// At most this many points (in absolute value).
    pub max_points: Option<f64>,
    /// At most this many scoring occurrences.
    pub max_occurrences: Option<u32>,
    /// The window; `None` is the lead's whole history.
    pub window: Option<Duration>,
}

/// No activity of the type for `inactive_for` adds `points` (negative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InactivityRule {
    /// Unique within the model.
    pub id: String,
    /// For people.
    pub description: String,
    /// The activity type watched; `None` is any activity.
    pub activity_type: Option<String>,
    /// How long without it before the rule applies.
    pub inactive_for: Duration,
    /// Negative points.
    pub points: f64,
    /// Applies again after every further `inactive_for`; otherwise once per inactive spell.
    pub repeat: bool,
}

impl Model {
    /// Every mistake in the model, each naming its field as in the protobuf `ScoringModel`.
    pub fn validate(&self) -> Result<(), FieldViolations> {
        let mut v = FieldViolations::new();
        let mut ids = HashSet::new();
        let mut check_id = |v: &mut FieldViolations, field: String, id: &str| {
            if id.trim().is_empty() {
                v.add(field, "required");
            } else if !ids.insert(id.to_owned()) {
                v.add(field, format!("rule id {id:?} is used twice"));
            }
        };
        for (i, rule) in self.fit_rules.iter().enumerate() {
            let at = format!("fit_rules[{i}]");
            check_id(&mut v, format!("{at}.id"), &rule.id);
            check_points(&mut v, &format!("{at}.points"), rule.points);
            if rule.predicates.is_empty() {
                v.add(
                    format!("{at}.predicates"),
                    "a fit rule needs at least one predicate",
                );
            }
            check_predicates(&mut v, &format!("{at}.predicates"), &rule.predicates);
        }
        self.grade_bands.validate(&mut v);
        for (i, rule) in self.behavior_rules.iter().enumerate() {
            let at = format!("behavior_rules[{i}]");
            check_id(&mut v, format!("{at}.id"), &rule.id);
            check_points(&mut v, &format!("{at}.points"), rule.points);
            check_activity_type(&mut v, &format!("{at}.activity_type"), &rule.activity_type);
            check_predicates(
                &mut v,
                &format!("{at}.property_predicates"),
                &rule.predicates,
            );
            if let Some(cap) = &rule.cap {
                if cap.max_points.is_some_and(|m| !m.is_finite() || m <= 0.0) {
                    v.add(format!("{at}.cap.max_points"), "must be a positive number");
                }
                if cap.max_occurrences == Some(0) {
                    v.add(format!("{at}.cap.max_occurrences"), "must be positive");
                }
                if cap.window.is_some_and(|w| w <= Duration::zero()) {
                    v.add(format!("{at}.cap.window"), "must be positive");
                }
            }
            if rule
                .once_per_asset
                .as_ref()
                .is_some_and(|p| p.trim().is_empty())
            {
                v.add(
                    format!("{at}.once_per_asset_property"),
                    "must name a property",
                );
            }
        }
        if self.half_life.is_some_and(|h| h <= Duration::zero()) {
            v.add(
                "engagement_half_life",
                "must be positive, or unset for no decay",
            );
        }
        for (i, rule) in self.inactivity_rules.iter().enumerate() {
            let at = format!("inactivity_rules[{i}]");
            check_id(&mut v, format!("{at}.id"), &rule.id);
            if !(rule.points.is_finite() && rule.points < 0.0) {
                v.add(format!("{at}.points"), "must be negative");
            }
            if rule.inactive_for <= Duration::zero() {
                v.add(format!("{at}.inactive_for"), "must be positive");
            }
            if let Some(kind) = &rule.activity_type {
                check_activity_type(&mut v, &format!("{at}.activity_type"), kind);
            }
        }
        for (i, kind) in self.hand_raise_types.iter().enumerate() {
            check_activity_type(&mut v, &format!("hand_raise_activity_types[{i}]"), kind);
        }
        v.into_result(())
    }
}

fn check_points(v: &mut FieldViolations, field: &str, points: f64) {
    if !points.is_finite() || points == 0.0 {
        v.add(field, "must be a non-zero number");
    } else if points.abs() > 1000.0 {
        v.add(field, "must be between -1000 and 1000");
    }
}

fn check_activity_type(v: &mut FieldViolations, field: &str, kind: &str) {
    let valid = !kind.is_empty()
        && kind.len() <= 71
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.');
    if !valid {
        v.add(
            field,
            "an activity type such as page_view or custom.trial_started",
        );
    }
}

/// Checks `predicates`, the list at path `list` (e.g. `fit_rules[0].predicates`).
fn check_predicates(v: &mut FieldViolations, list: &str, predicates: &[Predicate]) {
    for (j, p) in predicates.iter().enumerate() {
        let at = format!("{list}[{j}]");
        if p.field.trim().is_empty() {
            v.add(format!("{at}.field"), "required");
        }
        match &p.condition {
            Condition::OneOf(values)
            | Condition::Contains(values)
            | Condition::StartsWith(values)
                if values.is_empty() || values.iter().any(|s| s.is_empty()) =>
            {
                v.add(format!("{at}.values"), "needs at least one non-empty value");
            }
            Condition::Equals(value) if value.is_empty() => {
                v.add(format!("{at}.equals"), "required")
            }
            Condition::Range { min, max } => {
                if min.is_none() && max.is_none() {
                    v.add(format!("{at}.range"), "needs a min, a max or both");
                } else if let (Some(lo), Some(hi)) = (min, max)
                    && lo > hi
                {
                    v.add(format!("{at}.range"), "min is above max");
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::default_model::default_model;

    #[test]
    fn the_default_model_is_valid() {
        default_model().validate().expect("valid");
    }

    #[test]
    fn every_mistake_is_named() {
        let mut model = default_model();
        model.fit_rules[1].id = model.fit_rules[0].id.clone();
        model.behavior_rules[0].points = 0.0;
        model.behavior_rules[0].activity_type = "Page View".into();
        model.inactivity_rules[0].points = 5.0;
        model.half_life = Some(Duration::zero());
        let err = model.validate().expect_err("invalid");
        let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "fit_rules[1].id",
                "behavior_rules[0].points",
                "behavior_rules[0].activity_type",
                "engagement_half_life",
                "inactivity_rules[0].points"
            ]
        );
    }
}
