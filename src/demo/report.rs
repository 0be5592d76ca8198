//! The closing reports: a lead's recorded history, and the funnel of the demo's period.

use anyhow::Context;
use chrono::{DateTime, Utc};
use leadflow_proto::qualification::v1::{FunnelGroup, GetFunnelRequest, StageTransition};
use leadflow_runtime::pbtime;

use super::clients::Clients;
use super::labels;
use super::print::Printer;

/// Prints `name`'s transitions as qualification recorded them.
pub(crate) fn history(out: &Printer, name: &str, transitions: &[StageTransition]) {
    out.part(format!(
        "{name}'s history at qualification, oldest first (replaying it gives the stage):"
    ));
    out.line(format!(
        "  {:<16} {:<16} {:<12} {:<10} {:>6} {:<5} {}",
        "transition", "reason", "actor", "definition", "score", "grade", "time"
    ));
    for t in transitions {
        out.line(format!(
            "  {:<16} {:<16} {:<12} {:<10} {:>6.1} {:<5} {}",
            format!(
                "{} → {}",
                labels::stage(t.from_stage),
                labels::stage(t.to_stage)
            ),
            labels::reason(t.reason),
            labels::actor(t),
            format!("v{}", t.definition_version),
            t.score,
            labels::grade(t.fit_grade),
            t.transition_time
                .as_ref()
                .and_then(pbtime::timestamp)
                .map_or_else(
                    || "-".to_owned(),
                    |at| at.format("%H:%M:%S%.3f").to_string()
                ),
        ));
    }
}

/// Fetches and prints the funnel of every lead for `start` to `end`.
pub(crate) async fn funnel(
    clients: &mut Clients,
    out: &Printer,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<()> {
    let total = clients
        .qualification
        .get_funnel(GetFunnelRequest {
            start_time: Some(pbtime::to_timestamp(start)),
            end_time: Some(pbtime::to_timestamp(end)),
            ..Default::default()
        })
        .await
        .context("get the funnel at qualification")?
        .into_inner()
        .total
        .unwrap_or_default();
    out.part(format!(
        "funnel at qualification, {} to {}:",
        labels::time(start),
        labels::time(end)
    ));
    print_funnel(out, &total);
    Ok(())
}

/// Prints one funnel group: stage entries, the four conversions, and the side exits.
fn print_funnel(out: &Printer, group: &FunnelGroup) {
    out.line(format!("  {:<16} {:>7}", "stage", "entered"));
    for entry in group.stage_entries.iter().filter(|e| e.entered_count > 0) {
        out.line(format!(
            "  {:<16} {:>7}",
            labels::stage(entry.stage),
            entry.entered_count
        ));
    }
    out.line(format!(
        "  {:<16} {:>7}  {:<8} {:>8} {:>8}",
        "conversion", "rate", "leads", "median", "p90"
    ));
    for c in &group.conversions {
        out.line(format!(
            "  {:<16} {:>6.0}%  {:<8} {:>8} {:>8}",
            format!(
                "{} → {}",
                labels::stage(c.from_stage),
                labels::stage(c.to_stage)
            ),
            c.rate * 100.0,
            format!("{} of {}", c.converted_count, c.cohort_count),
            labels::pb_span(c.median_time.as_ref()),
            labels::pb_span(c.p90_time.as_ref()),
        ));
    }
    for (side, counts) in [
        ("recycled", &group.recycled),
        ("disqualified", &group.disqualified),
    ] {
        for count in counts {
            let why = if count.rejection_reason != 0 {
                labels::rejection(count.rejection_reason)
            } else {
                labels::reason(count.reason)
            };
            out.line(format!("  {side}: {} ({why})", count.count));
        }
    }
}
