//! Words for the contracts' enums, times and profiles, as the demo prints them.

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1::{
    FitGrade, HandoffKind, LeadStage, Profile, RejectionReason, SourceChannel,
};
use leadflow_proto::handoff::v1::{HandoffStatus, OwnerRole};
use leadflow_proto::qualification::v1::{ActorType, StageTransition, TransitionReason};
use leadflow_runtime::pbtime;

/// `PREFIX_SOME_NAME` as `some name`.
fn words(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_lowercase()
        .replace('_', " ")
}

/// A lead stage: `mql`, `customer`, …
pub(crate) fn stage(value: i32) -> String {
    LeadStage::try_from(value).map_or_else(
        |_| format!("stage {value}"),
        |s| words(s.as_str_name(), "LEAD_STAGE_"),
    )
}

/// A fit grade: `A` … `D`, or `-` before scoring graded the lead.
pub(crate) fn grade(value: i32) -> String {
    match FitGrade::try_from(value) {
        Ok(FitGrade::Unspecified) | Err(_) => "-".to_owned(),
        Ok(g) => g.as_str_name().trim_start_matches("FIT_GRADE_").to_owned(),
    }
}

/// Why a transition happened: `score threshold`, `sdr accepted`, …
pub(crate) fn reason(value: i32) -> String {
    TransitionReason::try_from(value).map_or_else(
        |_| format!("reason {value}"),
        |r| words(r.as_str_name(), "TRANSITION_REASON_"),
    )
}

/// A rejection reason: `not ideal customer profile`, …
pub(crate) fn rejection(value: i32) -> String {
    RejectionReason::try_from(value).map_or_else(
        |_| format!("reason {value}"),
        |r| words(r.as_str_name(), "REJECTION_REASON_"),
    )
}

/// A hand-off kind: `sdr review` or `sales`.
pub(crate) fn kind(value: HandoffKind) -> String {
    words(value.as_str_name(), "HANDOFF_KIND_")
}

/// A hand-off status: `pending`, `won`, …
pub(crate) fn status(value: i32) -> String {
    HandoffStatus::try_from(value).map_or_else(
        |_| format!("status {value}"),
        |s| words(s.as_str_name(), "HANDOFF_STATUS_"),
    )
}

/// Who made a transition: `rule`, `sdr sam`, `sales alex`, …
pub(crate) fn actor(t: &StageTransition) -> String {
    let kind = ActorType::try_from(t.actor_type).map_or_else(
        |_| format!("actor {}", t.actor_type),
        |a| words(a.as_str_name(), "ACTOR_TYPE_"),
    );
    if t.actor_id.is_empty() {
        kind
    } else {
        format!("{kind} {}", t.actor_id)
    }
}

/// A transition in one line: `lead → mql (score threshold, score 70.1, grade A)`.
pub(crate) fn transition(t: &StageTransition) -> String {
    let mut why = reason(t.reason);
    if t.rejection_reason != 0 {
        why = format!("{why}: {}", rejection(t.rejection_reason));
    }
    if !t.actor_id.is_empty() {
        why = format!("{why}, by {}", t.actor_id);
    }
    format!(
        "{} → {} ({why}, score {:.1}, grade {})",
        stage(t.from_stage),
        stage(t.to_stage),
        t.score,
        grade(t.fit_grade)
    )
}

/// Who a lead is: `Dana Weber, Marketing Manager at Brightloop (200 employees, Software, DE),
/// from paid search`.
pub(crate) fn profile(p: &Profile) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let name = format!("{} {}", text(&p.first_name), text(&p.last_name));
    let mut company = Vec::new();
    if let Some(size) = p.company_size {
        company.push(format!("{} employees", thousands(i64::from(size))));
    }
    company.extend(p.industry.clone());
    company.extend(p.country.clone());
    let source = SourceChannel::try_from(p.source_channel).map_or_else(
        |_| "an unknown channel".to_owned(),
        |s| words(s.as_str_name(), "SOURCE_CHANNEL_"),
    );
    format!(
        "{}, {} at {} ({}), {}, from {source}",
        name.trim(),
        text(&p.title),
        text(&p.company),
        company.join(", "),
        text(&p.email),
    )
}

/// A span of time, roughly: `0.4s`, `12m`, `8h`, `80 days`.
pub(crate) fn span(d: chrono::Duration) -> String {
    let secs = d.as_seconds_f64();
    match secs {
        s if s < 60.0 => format!("{s:.1}s"),
        s if s < 3_600.0 => format!("{:.0}m", s / 60.0),
        s if s < 2.0 * 86_400.0 => format!("{:.0}h", s / 3_600.0),
        s => format!("{:.0} days", s / 86_400.0),
    }
}

/// A protobuf duration as [`span`]; `-` when unset.
pub(crate) fn pb_span(d: Option<&prost_types::Duration>) -> String {
    d.and_then(pbtime::duration)
        .map_or_else(|| "-".to_owned(), span)
}

/// How long ago a day was: `today`, `yesterday`, `22 days ago`.
pub(crate) fn days_ago(days: i64) -> String {
    match days {
        0 => "today".to_owned(),
        1 => "yesterday".to_owned(),
        n => format!("{n} days ago"),
    }
}

/// A time to the minute: `2026-11-23 22:41 utc`.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M utc").to_string()
}

/// A protobuf timestamp as [`time`]; `-` when unset.
pub(crate) fn pb_time(t: Option<&prost_types::Timestamp>) -> String {
    t.and_then(pbtime::timestamp)
        .map_or_else(|| "-".to_owned(), time)
}

/// Names with their counts, in order of first appearance: `email_open ×3, page_view ×2`.
pub(crate) fn counted<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for name in names {
        match counts.iter_mut().find(|(seen, _)| *seen == name) {
            Some((_, count)) => *count += 1,
            None => counts.push((name, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(name, count)| match count {
            1 => name.to_owned(),
            n => format!("{name} ×{n}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// An owner's role: `sdr`, `account executive`, `manager`.
pub(crate) fn owner_role(role: OwnerRole) -> String {
    words(role.as_str_name(), "OWNER_ROLE_")
}

/// A whole number with thousands separators: `24,000`.
pub(crate) fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut grouped = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if n < 0 {
        format!("-{grouped}")
    } else {
        grouped
    }
}
