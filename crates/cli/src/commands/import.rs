//! `import`: a CSV of activities or profiles, sent through ingestion's `Batch` in chunks of up
//! to 500 rows, with a progress bar and a per-row account of what was rejected.

use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use leadflow_proto::common::v1::{Activity, ItemError, Profile};
use leadflow_proto::ingestion::v1::{
    BatchItem, BatchRequest, IdentifyRequest, LeadIdentity, TrackRequest, batch_item,
    batch_item_result,
};
use serde_json::json;

use crate::args::{parse_time, pb_time};
use crate::client::{Ctx, retried};
use crate::error::{CliError, code_name};
use crate::json::enum_number;
use crate::output::{enums, print_value};

const IMPORT_HELP: &str = "\
Activities (the default), one per row:
  message_id     idempotency key; when absent, derived from the row's content, so importing
                 the same file again changes nothing (the rows count as duplicates) and
                 identical rows count once
  user_id        the lead's user id       } at least one of the two per row
  anonymous_id   an anonymous visitor id  }
  type           page_view, pricing_view, content_download, email_open, email_click,
                 webinar_registered, webinar_attended, form_submit, demo_request,
                 contact_sales, unsubscribe, bounce, or custom.<name>
  occurred_at    RFC 3339 or YYYY-MM-DD; the time of receipt when empty
  prop_<key>     a property, e.g. prop_path, prop_asset_id (empty cells are left out)

Profiles (--profiles), one per row; an empty cell leaves the attribute unchanged:
  message_id, user_id, anonymous_id, email, first_name, last_name, title, seniority
  (manager, director, vp, c-level, …), company, company_domain, company_size, industry,
  country, source_channel (organic-search, email, referral, …), consent, occurred_at,
  trait_<key>

Rows are numbered from 1 after the header. A rejected row does not stop the import: the
summary lists each with its row, line and field violations, and leadctl exits with 2.
Example:
  user_id,type,occurred_at,prop_asset_id,prop_path
  ana@acme.io,content_download,2026-05-01T09:00:00Z,guide-7,
  ana@acme.io,pricing_view,2026-05-03T10:30:00Z,,/pricing";

/// Imports a CSV of activities (or, with --profiles, of profiles) through ingestion's Batch.
#[derive(Debug, Args)]
#[command(after_help = IMPORT_HELP)]
pub(crate) struct ImportArgs {
    /// The CSV file with a header row (`-` for standard input).
    file: PathBuf,
    /// The rows are profiles (identify) rather than activities (track).
    #[arg(long)]
    profiles: bool,
    /// Rows per Batch call.
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u16).range(1..=500))]
    batch_size: u16,
}

/// A row that was not accepted.
#[derive(Debug)]
struct RowError {
    row: usize,
    line: u64,
    code: String,
    message: String,
    violations: Vec<(String, String)>,
}

impl RowError {
    fn local(row: usize, line: u64, field: &str, description: String) -> Self {
        Self {
            row,
            line,
            code: "INVALID_ARGUMENT".into(),
            message: format!("{field}: {description}"),
            violations: vec![(field.to_owned(), description)],
        }
    }

    fn from_item(row: usize, line: u64, e: ItemError) -> Self {
        let strip = |s: &str| match s.split_once("]") {
            Some((head, rest)) if head.starts_with("items[") => {
                rest.trim_start_matches([':', '.', ' ']).to_owned()
            }
            _ => s.to_owned(),
        };
        Self {
            row,
            line,
            code: code_name(tonic::Code::from(e.code)),
            message: strip(&e.message),
            violations: e
                .field_violations
                .into_iter()
                .map(|v| (strip(&v.field), v.description))
                .collect(),
        }
    }

    fn to_json(&self) -> serde_json::Value {
        let violations: Vec<_> = self
            .violations
            .iter()
            .map(|(field, description)| json!({"field": field, "description": description}))
            .collect();
        json!({"row": self.row, "line": self.line, "code": self.code,
               "message": self.message, "fieldViolations": violations})
    }
}

/// One parsed row, ready to send.
#[derive(Debug)]
struct Row {
    row: usize,
    line: u64,
    item: BatchItem,
}

/// Runs `import`.
pub(crate) async fn run(ctx: &Ctx, args: ImportArgs) -> Result<(), CliError> {
    let shown = args.file.display().to_string();
    let (rows, mut errors) = read_rows(&args)?;
    let total = rows.len() + errors.len();
    let bar = progress_bar(ctx, total);
    bar.inc(errors.len() as u64);
    let (mut accepted, mut duplicate) = (0usize, 0usize);
    let mut leads = Vec::new();
    let client = ctx.ingestion()?;
    for chunk in rows.chunks(usize::from(args.batch_size)) {
        let request = BatchRequest {
            items: chunk.iter().map(|r| r.item.clone()).collect(),
        };
        let response = match retried!(ctx, &client, batch, request) {
            Ok(response) => response.into_inner(),
            Err(status) => {
                bar.abandon();
                eprintln!(
                    "stopped after {} of {total} rows; importing the file again is safe \
                     (message ids make rows idempotent)",
                    bar.position()
                );
                return Err(status.into());
            }
        };
        for (row, result) in chunk.iter().zip(response.results) {
            let (lead_id, dup) = match result.result {
                Some(batch_item_result::Result::Identify(r)) => (r.lead_id, r.duplicate),
                Some(batch_item_result::Result::Track(r)) => (r.lead_id, r.duplicate),
                Some(batch_item_result::Result::Error(e)) => {
                    errors.push(RowError::from_item(row.row, row.line, e));
                    continue;
                }
                None => {
                    let message = "no answer for the row".to_owned();
                    errors.push(RowError::local(row.row, row.line, "row", message));
                    continue;
                }
            };
            if dup {
                duplicate += 1;
            } else {
                accepted += 1;
            }
            leads.push(json!({"row": row.row, "leadId": lead_id, "duplicate": dup}));
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    errors.sort_by_key(|e| e.row);
    report(ctx, &shown, total, (accepted, duplicate), &errors, leads)?;
    if errors.is_empty() {
        Ok(())
    } else {
        Err(CliError::Partial(format!(
            "{} of {total} rows rejected",
            errors.len()
        )))
    }
}

fn report(
    ctx: &Ctx,
    file: &str,
    total: usize,
    (accepted, duplicate): (usize, usize),
    errors: &[RowError],
    leads: Vec<serde_json::Value>,
) -> Result<(), CliError> {
    if ctx.json {
        let errors: Vec<_> = errors.iter().map(RowError::to_json).collect();
        return print_value(&json!({
            "file": file, "rows": total, "accepted": accepted, "duplicate": duplicate,
            "rejected": errors.len(), "errors": errors, "leads": leads,
        }));
    }
    println!(
        "imported {total} rows from {file}: {accepted} accepted, {duplicate} duplicate, {} \
         rejected",
        errors.len()
    );
    for e in errors {
        eprintln!("row {} (line {}): {}: {}", e.row, e.line, e.code, e.message);
        for (field, description) in &e.violations {
            eprintln!("  {field}: {description}");
        }
    }
    Ok(())
}

fn progress_bar(ctx: &Ctx, total: usize) -> ProgressBar {
    if ctx.json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(total as u64).with_style(style)
}

/// The columns of the file, by kind.
#[derive(Debug, Clone)]
enum Column {
    Named(&'static str),
    Prop(String),
}

const ACTIVITY_COLUMNS: &[&str] = &[
    "message_id",
    "user_id",
    "anonymous_id",
    "type",
    "occurred_at",
];
const PROFILE_COLUMNS: &[&str] = &[
    "message_id",
    "user_id",
    "anonymous_id",
    "email",
    "first_name",
    "last_name",
    "title",
    "seniority",
    "company",
    "company_domain",
    "company_size",
    "industry",
    "country",
    "source_channel",
    "consent",
    "occurred_at",
];

fn columns(headers: &csv::StringRecord, profiles: bool) -> Result<Vec<Column>, CliError> {
    let (known, prefix) = if profiles {
        (PROFILE_COLUMNS, "trait_")
    } else {
        (ACTIVITY_COLUMNS, "prop_")
    };
    let columns = headers
        .iter()
        .map(|h| {
            let h = h.trim();
            if let Some(name) = known.iter().find(|k| **k == h) {
                Ok(Column::Named(name))
            } else if let Some(key) = h.strip_prefix(prefix).filter(|k| !k.is_empty()) {
                Ok(Column::Prop(key.to_owned()))
            } else {
                let hint = if profiles {
                    ""
                } else {
                    " (a profiles file? add --profiles)"
                };
                Err(CliError::Local(format!(
                    "unknown column `{h}`{hint}; see leadctl import --help"
                )))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    let has = |name: &str| {
        columns
            .iter()
            .any(|c| matches!(c, Column::Named(n) if *n == name))
    };
    if !has("user_id") && !has("anonymous_id") {
        return Err(CliError::Local(
            "the file needs a user_id or an anonymous_id column".into(),
        ));
    }
    if !profiles && !has("type") {
        return Err(CliError::Local(
            "an activities file needs a type column (a profiles file? add --profiles)".into(),
        ));
    }
    Ok(columns)
}

/// Reads every row: the ones ready to send, and the ones already found invalid here. A file
/// that is not CSV (or has rows of the wrong width) is refused as a whole, before any is sent.
fn read_rows(args: &ImportArgs) -> Result<(Vec<Row>, Vec<RowError>), CliError> {
    let shown = args.file.display();
    let source: Box<dyn std::io::Read> = if args.file.as_os_str() == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(&args.file)
                .map_err(|e| CliError::Local(format!("{shown}: {e}")))?,
        )
    };
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(source);
    let headers = reader
        .headers()
        .map_err(|e| CliError::Local(format!("{shown}: {e}")))?
        .clone();
    let columns = columns(&headers, args.profiles)?;
    let (mut rows, mut errors) = (Vec::new(), Vec::new());
    for (index, record) in reader.records().enumerate() {
        let record = record.map_err(|e| CliError::Local(format!("{shown}: {e}")))?;
        let (row, line) = (index + 1, record.position().map_or(0, csv::Position::line));
        match parse_row(&columns, &record, args.profiles) {
            Ok(item) => rows.push(Row { row, line, item }),
            Err((field, description)) => {
                errors.push(RowError::local(row, line, &field, description));
            }
        }
    }
    Ok((rows, errors))
}

fn parse_row(
    columns: &[Column],
    record: &csv::StringRecord,
    profiles: bool,
) -> Result<BatchItem, (String, String)> {
    let mut named: HashMap<&str, String> = HashMap::new();
    let mut extra = HashMap::new();
    for (column, cell) in columns.iter().zip(record.iter()) {
        match column {
            _ if cell.is_empty() => {}
            Column::Named(name) => {
                named.insert(name, cell.to_owned());
            }
            Column::Prop(key) => {
                extra.insert(key.clone(), cell.to_owned());
            }
        }
    }
    let message_id = named.remove("message_id").unwrap_or_else(|| {
        let kind = if profiles { "profile" } else { "activity" };
        let content = format!(
            "{kind}\u{1f}{}",
            record.iter().collect::<Vec<_>>().join("\u{1f}")
        );
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, content.as_bytes()).to_string()
    });
    let identity = Some(LeadIdentity {
        user_id: named.remove("user_id").unwrap_or_default(),
        anonymous_id: named.remove("anonymous_id").unwrap_or_default(),
    });
    let occurred_at = named
        .remove("occurred_at")
        .map(|t| parse_time(&t).map_err(|e| ("occurred_at".to_owned(), e)))
        .transpose()?;
    let item = if profiles {
        batch_item::Item::Identify(IdentifyRequest {
            message_id,
            identity,
            profile: Some(profile(named, extra)?),
            occurred_at: pb_time(occurred_at),
        })
    } else {
        batch_item::Item::Track(TrackRequest {
            message_id,
            identity,
            activity: Some(Activity {
                r#type: named.remove("type").unwrap_or_default(),
                occurred_at: pb_time(occurred_at),
                properties: extra,
            }),
        })
    };
    Ok(BatchItem { item: Some(item) })
}

fn profile(
    mut named: HashMap<&str, String>,
    traits: HashMap<String, String>,
) -> Result<Profile, (String, String)> {
    let enumerated = |named: &mut HashMap<&str, String>, column: &str, enum_name: &str| {
        named
            .remove(column)
            .map(|v| {
                enum_number(enum_name, &v)
                    .ok_or_else(|| (column.to_owned(), format!("unknown value `{v}`")))
            })
            .transpose()
            .map(Option::unwrap_or_default)
    };
    let seniority = enumerated(&mut named, "seniority", enums::SENIORITY)?;
    let source_channel = enumerated(&mut named, "source_channel", enums::CHANNEL)?;
    let consent = enumerated(&mut named, "consent", enums::CONSENT)?;
    let company_size = named
        .remove("company_size")
        .map(|v| {
            v.parse::<i32>().map_err(|_| {
                (
                    "company_size".to_owned(),
                    format!("`{v}` is not a whole number"),
                )
            })
        })
        .transpose()?;
    Ok(Profile {
        email: named.remove("email"),
        first_name: named.remove("first_name"),
        last_name: named.remove("last_name"),
        title: named.remove("title"),
        seniority,
        company: named.remove("company"),
        company_domain: named.remove("company_domain"),
        company_size,
        industry: named.remove("industry"),
        country: named.remove("country"),
        source_channel,
        consent,
        traits,
    })
}
