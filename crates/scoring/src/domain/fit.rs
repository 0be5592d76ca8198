//! Fit: the rules that hold for a profile, and the grade their points earn.

use std::collections::BTreeMap;

use leadflow_runtime::error::FieldViolations;
use serde::{Deserialize, Serialize};

use super::model::Model;

/// Fit grade, A best.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Grade {
    /// Best fit.
    A,
    /// Good fit.
    B,
    /// Weak fit.
    C,
    /// Poor fit (the floor).
    D,
}

/// The lowest fit points of grades A, B and C; anything below C is D.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradeBands {
    /// Lowest points of an A.
    pub a: f64,
    /// Lowest points of a B.
    pub b: f64,
    /// Lowest points of a C.
    pub c: f64,
}

impl GradeBands {
    /// The grade `points` earn.
    pub fn grade(&self, points: f64) -> Grade {
        if points >= self.a {
            Grade::A
        } else if points >= self.b {
            Grade::B
        } else if points >= self.c {
            Grade::C
        } else {
            Grade::D
        }
    }

    pub(crate) fn validate(&self, v: &mut FieldViolations) {
        let finite = [self.a, self.b, self.c].iter().all(|p| p.is_finite());
        if !(finite && self.a > self.b && self.b > self.c) {
            v.add(
                "grade_bands",
                "the minimum points of A, B and C must be finite and strictly descending",
            );
        }
    }
}

/// The fit of a profile under a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// Sum of the rules that hold.
    pub points: f64,
    /// The grade of the points.
    pub grade: Grade,
    /// The rules that hold, with their points, in model order.
    pub rules: Vec<(String, f64)>,
}

/// Evaluates the fit rules against a profile (attribute name → value).
pub fn evaluate(model: &Model, profile: &BTreeMap<String, String>) -> Fit {
    let rules: Vec<(String, f64)> = model
        .fit_rules
        .iter()
        .filter(|rule| rule.predicates.iter().all(|p| p.holds(profile)))
        .map(|rule| (rule.id.clone(), rule.points))
        .collect();
    let points = rules.iter().map(|(_, p)| p).sum();
    Fit {
        points,
        grade: model.grade_bands.grade(points),
        rules,
    }
}
