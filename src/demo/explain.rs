//! Score explanations as the demo prints them: what the score is made of, and how decay wore
//! it down.

use chrono::{DateTime, Utc};
use leadflow_proto::scoring::v1::{ContributionKind, ScoreContribution, ScoreExplanation};
use leadflow_runtime::pbtime;

use super::labels;
use super::print::Printer;

/// The parts of a score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Parts {
    /// The exact score.
    pub(crate) score: f64,
    /// The fit points (they never decay).
    pub(crate) fit: f64,
    /// The engagement points now: behaviour after decay, and inactivity penalties.
    pub(crate) engagement: f64,
    /// The behaviour points as they were earned, before decay.
    pub(crate) earned: f64,
    /// The behaviour points now, after decay.
    pub(crate) behaviour: f64,
    /// The inactivity penalties now.
    pub(crate) inactivity: f64,
    /// The fit grade.
    pub(crate) grade: i32,
}

/// The parts of `explanation`'s score.
pub(crate) fn parts(explanation: &ScoreExplanation) -> Parts {
    let score = explanation.score.clone().unwrap_or_default();
    let of_kind = |kind: ContributionKind| {
        explanation
            .contributions
            .iter()
            .filter(move |c| c.kind == kind as i32)
    };
    Parts {
        score: score.score,
        fit: score.fit_points,
        engagement: score.engagement_points,
        earned: of_kind(ContributionKind::BehaviorRule)
            .map(|c| c.original_points)
            .sum(),
        behaviour: of_kind(ContributionKind::BehaviorRule)
            .map(|c| c.value)
            .sum(),
        inactivity: of_kind(ContributionKind::InactivityRule)
            .map(|c| c.value)
            .sum(),
        grade: score.fit_grade,
    }
}

/// Prints the score as fit + engagement: the fit rules in one line, then the `top` largest
/// engagement contributions as of `now`.
pub(crate) fn print(out: &Printer, explanation: &ScoreExplanation, now: DateTime<Utc>, top: usize) {
    let p = parts(explanation);
    let model = explanation.score.as_ref().map_or(0, |s| s.model_version);
    out.detail(format!(
        "why {:.1}, under scoring model v{model}: fit {:.1} (grade {}) + engagement {:.1}",
        p.score,
        p.fit,
        labels::grade(p.grade),
        p.engagement,
    ));
    let (fit, mut engagement): (Vec<&ScoreContribution>, Vec<&ScoreContribution>) = explanation
        .contributions
        .iter()
        .partition(|c| c.kind == ContributionKind::FitRule as i32);
    let fit: Vec<String> = fit
        .iter()
        .map(|c| format!("{} {:+.0}", c.rule_description, c.value))
        .collect();
    out.detail(format!("  {:+5.1}  fit: {}", p.fit, fit.join(", ")));
    engagement.sort_by(|a, b| b.value.abs().total_cmp(&a.value.abs()));
    for c in engagement.iter().take(top) {
        out.detail(format!("  {:+5.1}  {}", c.value, contribution(c, now)));
    }
    if engagement.len() > top {
        let rest: f64 = engagement.iter().skip(top).map(|c| c.value).sum();
        out.detail(format!(
            "  {rest:+5.1}  {} more (the contributions add up to the score exactly)",
            engagement.len() - top
        ));
    }
}

/// One engagement contribution in words: `a /pricing page viewed (page_view, 2 days ago,
/// earned +10)`.
fn contribution(c: &ScoreContribution, now: DateTime<Utc>) -> String {
    let ago = c
        .effective_time
        .as_ref()
        .and_then(pbtime::timestamp)
        .map_or_else(String::new, |t| labels::days_ago((now - t).num_days()));
    if c.kind == ContributionKind::InactivityRule as i32 {
        return format!("{} (inactivity, {ago})", c.rule_description);
    }
    format!(
        "{} ({}, {ago}, earned {:+.0})",
        c.rule_description, c.activity_type, c.original_points
    )
}
