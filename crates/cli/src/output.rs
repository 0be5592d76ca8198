//! Shared output: aligned tables and label/value blocks for people, JSON for scripts, and the
//! formatting of times, durations, points and enum values.

use std::io::Write as _;

use chrono::SecondsFormat;
use clap::ValueEnum;

use crate::client::Ctx;
use crate::error::CliError;
use crate::json;

/// A table with a header row, printed with aligned columns.
#[derive(Debug, Default)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub(crate) fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    /// Adds a row (one cell per column).
    pub(crate) fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text: columns two spaces apart, the last one unpadded; `(none)` when empty.
    pub(crate) fn render(&self) -> String {
        if self.rows.len() <= 1 {
            return "(none)\n".to_owned();
        }
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let cell = |r: &Vec<String>| r.get(c).map_or(0, |s| s.chars().count());
                self.rows.iter().map(cell).max().unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 < row.len() {
                    let pad = widths[c].saturating_sub(cell.chars().count());
                    line.push_str(cell);
                    line.push_str(&" ".repeat(pad + 2));
                } else {
                    line.push_str(cell);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Prints the table on standard output.
    pub(crate) fn print(&self) {
        print!("{}", self.render());
    }
}

/// Prints `label: value` lines with the values aligned.
pub(crate) fn fields(pairs: &[(&str, String)]) {
    let width = pairs.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    for (label, value) in pairs {
        println!(
            "{label:<width$}  {value}",
            label = format!("{label}:"),
            width = width + 1
        );
    }
}

/// Prints a section title for a human block.
pub(crate) fn heading(title: &str) {
    println!("\n{title}");
}

/// Prints `value` as pretty JSON on standard output.
pub(crate) fn print_value(value: &serde_json::Value) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::Local(format!("cannot write JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Prints `line` and flushes it at once (for streams).
pub(crate) fn print_line(line: &str) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::Local(format!("standard output: {e}")))
}

/// Prints `msg` (a `full_name` response) as JSON with `--json`, else with `human`.
pub(crate) fn emit<M: prost::Message>(
    ctx: &Ctx,
    msg: &M,
    full_name: &str,
    human: impl FnOnce(&M),
) -> Result<(), CliError> {
    if ctx.json {
        println!("{}", json::to_json_text(msg, full_name, true, false)?);
        Ok(())
    } else {
        human(msg);
        Ok(())
    }
}

/// How `model get`, `definition get` and `routing get` print the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A summary for people (the whole response as JSON with --json).
    Table,
    /// The document alone as YAML, a file `publish` accepts back.
    Yaml,
    /// The document alone as JSON, a file `publish` accepts back.
    Json,
}

/// Prints `response` as `--json`/`human` would, or with `--output yaml|json` only `document`
/// (a `document_name` message) in the file format `publish` reads back.
pub(crate) fn emit_document<R: prost::Message, D: prost::Message>(
    ctx: &Ctx,
    format: Format,
    (response, response_name): (&R, &str),
    (document, document_name): (&D, &str),
    human: impl FnOnce(&R),
) -> Result<(), CliError> {
    match format {
        Format::Table => emit(ctx, response, response_name, human),
        Format::Yaml => {
            print!("{}", json::to_yaml(document, document_name)?);
            Ok(())
        }
        Format::Json => {
            println!(
                "{}",
                json::to_json_text(document, document_name, true, true)?
            );
            Ok(())
        }
    }
}

/// Tells the user (on standard error) how to fetch the next page, if there is one.
pub(crate) fn next_page(ctx: &Ctx, token: &str) {
    if !ctx.json && !token.is_empty() {
        eprintln!("more results: add --page-token {token}");
    }
}

/// A timestamp in RFC 3339 (UTC, seconds), `-` when unset.
pub(crate) fn ts(t: Option<&prost_types::Timestamp>) -> String {
    // The built-in defaults (version 0) carry the epoch as their creation time.
    t.filter(|t| t.seconds != 0 || t.nanos != 0)
        .and_then(leadflow_runtime::pbtime::timestamp)
        .map_or_else(
            || "-".to_owned(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
        )
}

/// A duration for people (`14d`, `2h 30m`, `45s`), `-` when unset.
pub(crate) fn dur(d: Option<&prost_types::Duration>) -> String {
    let Some(d) = d else {
        return "-".to_owned();
    };
    let total = d.seconds.unsigned_abs();
    let sign = if d.seconds < 0 { "-" } else { "" };
    let parts = [
        (total / 86_400, "d"),
        (total % 86_400 / 3_600, "h"),
        (total % 3_600 / 60, "m"),
        (total % 60, "s"),
    ];
    let shown: Vec<String> = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .take(2)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if shown.is_empty() {
        "0s".to_owned()
    } else {
        format!("{sign}{}", shown.join(" "))
    }
}

/// Points with one decimal.
pub(crate) fn points(p: f64) -> String {
    format!("{p:.1}")
}

/// A share as a percentage with one decimal.
pub(crate) fn pct(share: f64) -> String {
    format!("{:.1}%", share * 100.0)
}

/// The text, or `-` when empty.
pub(crate) fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_owned()
    } else {
        s.to_owned()
    }
}

/// An optional text, or `-`.
pub(crate) fn opt(s: Option<&String>) -> String {
    s.map_or_else(|| "-".to_owned(), |s| or_dash(s))
}

/// The short name of an enum value (`mql`, `sdr-review`), `-` when unspecified.
pub(crate) fn label(enum_name: &str, number: i32) -> String {
    json::enum_label(enum_name, number)
}

/// Full names of the enums the tables show.
pub(crate) mod enums {
    /// `leadflow.common.v1.LeadStage`.
    pub(crate) const STAGE: &str = "leadflow.common.v1.LeadStage";
    /// `leadflow.common.v1.FitGrade`.
    pub(crate) const GRADE: &str = "leadflow.common.v1.FitGrade";
    /// `leadflow.common.v1.Seniority`.
    pub(crate) const SENIORITY: &str = "leadflow.common.v1.Seniority";
    /// `leadflow.common.v1.SourceChannel`.
    pub(crate) const CHANNEL: &str = "leadflow.common.v1.SourceChannel";
    /// `leadflow.common.v1.Consent`.
    pub(crate) const CONSENT: &str = "leadflow.common.v1.Consent";
    /// `leadflow.common.v1.HandoffKind`.
    pub(crate) const HANDOFF_KIND: &str = "leadflow.common.v1.HandoffKind";
    /// `leadflow.common.v1.RejectionReason`.
    pub(crate) const REJECTION: &str = "leadflow.common.v1.RejectionReason";
    /// `leadflow.common.v1.LostReason`.
    pub(crate) const LOST: &str = "leadflow.common.v1.LostReason";
    /// `leadflow.common.v1.BudgetStatus`.
    pub(crate) const BUDGET: &str = "leadflow.common.v1.BudgetStatus";
    /// `leadflow.common.v1.AuthorityLevel`.
    pub(crate) const AUTHORITY: &str = "leadflow.common.v1.AuthorityLevel";
    /// `leadflow.scoring.v1.ContributionKind`.
    pub(crate) const CONTRIBUTION: &str = "leadflow.scoring.v1.ContributionKind";
    /// `leadflow.scoring.v1.RescoreJobState`.
    pub(crate) const RESCORE_STATE: &str = "leadflow.scoring.v1.RescoreJobState";
    /// `leadflow.qualification.v1.TransitionReason`.
    pub(crate) const REASON: &str = "leadflow.qualification.v1.TransitionReason";
    /// `leadflow.qualification.v1.ActorType`.
    pub(crate) const ACTOR: &str = "leadflow.qualification.v1.ActorType";
    /// `leadflow.qualification.v1.FunnelDimension`.
    pub(crate) const DIMENSION: &str = "leadflow.qualification.v1.FunnelDimension";
    /// `leadflow.handoff.v1.HandoffStatus`.
    pub(crate) const HANDOFF_STATUS: &str = "leadflow.handoff.v1.HandoffStatus";
    /// `leadflow.handoff.v1.HandoffQueue`.
    pub(crate) const QUEUE: &str = "leadflow.handoff.v1.HandoffQueue";
    /// `leadflow.handoff.v1.OwnerRole`.
    pub(crate) const ROLE: &str = "leadflow.handoff.v1.OwnerRole";
    /// `leadflow.handoff.v1.EscalationTarget`.
    pub(crate) const ESCALATION: &str = "leadflow.handoff.v1.EscalationTarget";
    /// `leadflow.handoff.v1.WebhookDeliveryState`.
    pub(crate) const DELIVERY_STATE: &str = "leadflow.handoff.v1.WebhookDeliveryState";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_and_durations_read_well() {
        let mut table = Table::new(&["LEAD", "SCORE"]);
        table.row(vec!["a".into(), points(62.04)]);
        table.row(vec!["longer".into(), points(-3.0)]);
        assert_eq!(
            table.render(),
            "LEAD    SCORE\na       62.0\nlonger  -3.0\n"
        );
        let d = |seconds| prost_types::Duration { seconds, nanos: 0 };
        assert_eq!(dur(Some(&d(14 * 86_400))), "14d");
        assert_eq!(dur(Some(&d(9_000))), "2h 30m");
        assert_eq!(dur(Some(&d(0))), "0s");
        assert_eq!(label(enums::HANDOFF_KIND, 1), "sdr-review");
        assert_eq!(label(enums::STAGE, 0), "-");
    }
}
