//! Qualification: `lead stage|history|list|accept|reject|bant`, `definition publish|get|list`,
//! `funnel`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use leadflow_proto::common::v1::Bant;
use leadflow_proto::qualification::v1::{
    AcceptLeadRequest, FunnelGroup, GetDefinitionRequest, GetFunnelRequest, GetHistoryRequest,
    GetLeadStageRequest, LeadQualification, ListDefinitionVersionsRequest, ListLeadsRequest,
    PublishDefinitionRequest, QualificationDefinition, ReasonCount, RecordBantRequest,
    RejectLeadRequest, StageTransition,
};

use crate::args::{Page, Period, enum_arg, parse_time, pb_time};
use crate::client::{Ctx, retried};
use crate::error::CliError;
use crate::json::from_file;
use crate::output::{
    Format, Table, dur, emit, emit_document, enums, fields, heading, label, next_page, opt,
    or_dash, pct, points, ts,
};

const DEFINITION: &str = "leadflow.qualification.v1.QualificationDefinition";

/// Shows a lead's stage, score, profile and BANT.
#[derive(Debug, Args)]
pub(crate) struct StageArgs {
    /// The lead id.
    lead_id: String,
}

fn print_lead(l: &LeadQualification) {
    let s = l.score.clone().unwrap_or_default();
    let p = l.profile.clone().unwrap_or_default();
    let b = l.bant.clone().unwrap_or_default();
    fields(&[
        ("lead", l.lead_id.clone()),
        ("stage", label(enums::STAGE, l.stage)),
        ("since", ts(l.stage_enter_time.as_ref())),
        (
            "score",
            format!(
                "{} (grade {})",
                points(s.score),
                label(enums::GRADE, s.fit_grade)
            ),
        ),
        ("hand-raise", l.hand_raise.to_string()),
        ("email", opt(p.email.as_ref())),
        ("title", opt(p.title.as_ref())),
        ("company", opt(p.company.as_ref())),
        ("source channel", label(enums::CHANNEL, p.source_channel)),
        (
            "bant",
            format!(
                "budget {}, authority {}, need {}, decision {}",
                label(enums::BUDGET, b.budget),
                label(enums::AUTHORITY, b.authority),
                or_dash(&b.need),
                ts(b.expected_decision_time.as_ref())
            ),
        ),
        ("definition", format!("version {}", l.definition_version)),
    ]);
}

/// Runs `lead stage`.
pub(crate) async fn stage(ctx: &Ctx, args: StageArgs) -> Result<(), CliError> {
    let request = GetLeadStageRequest {
        lead_id: args.lead_id,
    };
    let response = retried!(ctx, ctx.qualification()?, get_lead_stage, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.GetLeadStageResponse",
        |r| {
            if let Some(lead) = &r.lead {
                print_lead(lead);
            }
        },
    )
}

/// Shows every transition of a lead, oldest first.
#[derive(Debug, Args)]
pub(crate) struct HistoryArgs {
    /// The lead id.
    lead_id: String,
    #[command(flatten)]
    page: Page,
}

fn transition_table(transitions: &[StageTransition]) {
    let mut table = Table::new(&[
        "TIME", "FROM", "TO", "REASON", "ACTOR", "SCORE", "GRADE", "DEF", "TRACE",
    ]);
    for t in transitions {
        let mut reason = label(enums::REASON, t.reason);
        if t.rejection_reason != 0 {
            reason = format!("{reason} ({})", label(enums::REJECTION, t.rejection_reason));
        }
        if t.lost_reason != 0 {
            reason = format!("{reason} ({})", label(enums::LOST, t.lost_reason));
        }
        let actor = match t.actor_id.as_str() {
            "" => label(enums::ACTOR, t.actor_type),
            id => format!("{} {id}", label(enums::ACTOR, t.actor_type)),
        };
        table.row(vec![
            ts(t.transition_time.as_ref()),
            label(enums::STAGE, t.from_stage),
            label(enums::STAGE, t.to_stage),
            reason,
            actor,
            points(t.score),
            label(enums::GRADE, t.fit_grade),
            t.definition_version.to_string(),
            or_dash(&t.trace_id),
        ]);
    }
    table.print();
}

/// Runs `lead history`.
pub(crate) async fn history(ctx: &Ctx, args: HistoryArgs) -> Result<(), CliError> {
    let request = GetHistoryRequest {
        lead_id: args.lead_id,
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let response = retried!(ctx, ctx.qualification()?, get_history, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.GetHistoryResponse",
        |r| {
            transition_table(&r.transitions);
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}

/// Lists leads, newest in their stage first.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Only leads in this stage.
    #[arg(long, value_parser = enum_arg(enums::STAGE))]
    stage: Option<i32>,
    /// Only leads from this source channel.
    #[arg(long, value_parser = enum_arg(enums::CHANNEL))]
    channel: Option<i32>,
    #[command(flatten)]
    page: Page,
}

/// Runs `lead list`.
pub(crate) async fn list(ctx: &Ctx, args: ListArgs) -> Result<(), CliError> {
    let request = ListLeadsRequest {
        stage: args.stage.unwrap_or_default(),
        source_channel: args.channel.unwrap_or_default(),
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let response = retried!(ctx, ctx.qualification()?, list_leads, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.ListLeadsResponse",
        |r| {
            let mut table = Table::new(&[
                "LEAD", "STAGE", "SINCE", "SCORE", "GRADE", "CHANNEL", "EMAIL",
            ]);
            for l in &r.leads {
                let s = l.score.clone().unwrap_or_default();
                let p = l.profile.clone().unwrap_or_default();
                table.row(vec![
                    l.lead_id.clone(),
                    label(enums::STAGE, l.stage),
                    ts(l.stage_enter_time.as_ref()),
                    points(s.score),
                    label(enums::GRADE, s.fit_grade),
                    label(enums::CHANNEL, p.source_channel),
                    opt(p.email.as_ref()),
                ]);
            }
            table.print();
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}

/// Who decides, and why.
#[derive(Debug, Args)]
pub(crate) struct Decision {
    /// The lead id.
    lead_id: String,
    /// The SDR deciding.
    #[arg(long)]
    actor: String,
    /// A note for the history.
    #[arg(long)]
    note: Option<String>,
}

/// Arguments of `lead reject`.
#[derive(Debug, Args)]
pub(crate) struct RejectArgs {
    #[command(flatten)]
    decision: Decision,
    /// Why the MQL is rejected.
    #[arg(long, value_parser = enum_arg(enums::REJECTION))]
    reason: i32,
}

fn print_decision(lead: Option<&LeadQualification>, duplicate: bool) {
    let stage = lead.map_or("-".to_owned(), |l| label(enums::STAGE, l.stage));
    let id = lead.map_or("-", |l| l.lead_id.as_str());
    let duplicate = if duplicate {
        " (duplicate: already recorded)"
    } else {
        ""
    };
    println!("lead {id} is now {stage}{duplicate}");
}

/// Runs `lead accept`: MQL → SAL.
pub(crate) async fn accept(ctx: &Ctx, args: Decision) -> Result<(), CliError> {
    let request = AcceptLeadRequest {
        request_id: ctx.request_id(),
        lead_id: args.lead_id,
        actor_id: args.actor,
        note: args.note.unwrap_or_default(),
    };
    let response = retried!(ctx, ctx.qualification()?, accept_lead, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.AcceptLeadResponse",
        |r| {
            print_decision(r.lead.as_ref(), r.duplicate);
        },
    )
}

/// Runs `lead reject`.
pub(crate) async fn reject(ctx: &Ctx, args: RejectArgs) -> Result<(), CliError> {
    let request = RejectLeadRequest {
        request_id: ctx.request_id(),
        lead_id: args.decision.lead_id,
        reason: args.reason,
        actor_id: args.decision.actor,
        note: args.decision.note.unwrap_or_default(),
    };
    let response = retried!(ctx, ctx.qualification()?, reject_lead, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.RejectLeadResponse",
        |r| {
            print_decision(r.lead.as_ref(), r.duplicate);
        },
    )
}

/// Records an SDR's BANT (it replaces the recorded one as a whole).
#[derive(Debug, Args)]
pub(crate) struct BantArgs {
    /// The lead id.
    lead_id: String,
    /// Budget status.
    #[arg(long, value_parser = enum_arg(enums::BUDGET))]
    budget: Option<i32>,
    /// Decision authority.
    #[arg(long, value_parser = enum_arg(enums::AUTHORITY))]
    authority: Option<i32>,
    /// The need the lead stated, in its own words.
    #[arg(long)]
    need: Option<String>,
    /// When the lead expects to decide (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_parser = parse_time)]
    decision_by: Option<DateTime<Utc>>,
    /// Free-form notes.
    #[arg(long)]
    notes: Option<String>,
    /// The SDR recording it.
    #[arg(long)]
    actor: String,
}

/// Runs `lead bant`.
pub(crate) async fn bant(ctx: &Ctx, args: BantArgs) -> Result<(), CliError> {
    let request = RecordBantRequest {
        request_id: ctx.request_id(),
        lead_id: args.lead_id,
        bant: Some(Bant {
            budget: args.budget.unwrap_or_default(),
            authority: args.authority.unwrap_or_default(),
            need: args.need.unwrap_or_default(),
            expected_decision_time: pb_time(args.decision_by),
            notes: args.notes.unwrap_or_default(),
        }),
        actor_id: args.actor,
    };
    let response = retried!(ctx, ctx.qualification()?, record_bant, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.RecordBantResponse",
        |r| {
            print_decision(r.lead.as_ref(), r.duplicate);
        },
    )
}

/// The shared qualification definition.
#[derive(Debug, Subcommand)]
pub(crate) enum DefinitionCommand {
    /// Publishes a definition from a YAML or JSON file (a QualificationDefinition).
    Publish(PublishArgs),
    /// Shows the active definition, or a version.
    Get(GetArgs),
    /// Lists the published versions, newest first.
    List(DefinitionListArgs),
}

/// Runs a `definition` command.
pub(crate) async fn definition(ctx: &Ctx, command: DefinitionCommand) -> Result<(), CliError> {
    match command {
        DefinitionCommand::Publish(args) => publish(ctx, args).await,
        DefinitionCommand::Get(args) => get(ctx, args).await,
        DefinitionCommand::List(args) => list_definitions(ctx, args).await,
    }
}

/// Arguments of `definition publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// A YAML or JSON file holding a QualificationDefinition, e.g. from `definition get
    /// --output yaml` (`-`: stdin).
    file: PathBuf,
    /// Replaces the file's description (what changed in this version).
    #[arg(long)]
    description: Option<String>,
}

async fn publish(ctx: &Ctx, args: PublishArgs) -> Result<(), CliError> {
    let mut definition: QualificationDefinition = from_file(&args.file, DEFINITION)?;
    if let Some(description) = args.description {
        definition.description = description;
    }
    let request = PublishDefinitionRequest {
        request_id: ctx.request_id(),
        definition: Some(definition),
    };
    let response = retried!(ctx, ctx.qualification()?, publish_definition, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.PublishDefinitionResponse",
        |r| {
            let version = r.definition.as_ref().map_or(0, |d| d.version);
            let duplicate = if r.duplicate {
                " (duplicate: already published)"
            } else {
                ""
            };
            println!("published definition version {version}, now active{duplicate}");
        },
    )
}

/// Arguments of `definition get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The version; the active one when absent.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    version: i32,
    /// How to print it: a summary, or the definition alone as a file `definition publish`
    /// accepts.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

fn print_definition(d: &QualificationDefinition, active: i32) {
    let sql = d.sql_rule.unwrap_or_default();
    let recycle = d.recycle_rules.unwrap_or_default();
    let routes = |pairs: Vec<(String, i32)>| {
        let shown: Vec<String> = pairs
            .into_iter()
            .map(|(reason, stage)| format!("{reason} → {}", label(enums::STAGE, stage)))
            .collect();
        or_dash(&shown.join(", "))
    };
    let both = if sql.require_budget_and_authority {
        "and"
    } else {
        "or"
    };
    fields(&[
        ("version", format!("{} (active: {active})", d.version)),
        ("description", or_dash(&d.description)),
        ("created", ts(d.create_time.as_ref())),
        ("mql threshold", points(d.mql_threshold)),
        ("min fit grade", label(enums::GRADE, d.min_fit_grade)),
        (
            "hand-raises",
            or_dash(&d.hand_raise_activity_types.join(", ")),
        ),
        (
            "sql rule",
            format!(
                "need {}, decision within {}, budget ≥ {} {both} authority ≥ {}",
                if sql.require_need {
                    "required"
                } else {
                    "optional"
                },
                dur(sql.max_time_to_decision.as_ref()),
                label(enums::BUDGET, sql.min_budget),
                label(enums::AUTHORITY, sql.min_authority),
            ),
        ),
        (
            "recycle",
            format!(
                "not accepted within {}, score under {}",
                dur(recycle.mql_acceptance_timeout.as_ref()),
                recycle.mql_score_floor.map_or("-".to_owned(), points)
            ),
        ),
        (
            "rejections",
            routes(
                d.rejection_routes
                    .iter()
                    .map(|r| (label(enums::REJECTION, r.reason), r.target_stage))
                    .collect(),
            ),
        ),
        (
            "lost deals",
            routes(
                d.lost_routes
                    .iter()
                    .map(|r| (label(enums::LOST, r.reason), r.target_stage))
                    .chain([("otherwise".to_owned(), d.default_lost_stage)])
                    .collect(),
            ),
        ),
    ]);
}

async fn get(ctx: &Ctx, args: GetArgs) -> Result<(), CliError> {
    let request = GetDefinitionRequest {
        version: args.version,
    };
    let response = retried!(ctx, ctx.qualification()?, get_definition, request)?.into_inner();
    let definition = response.definition.clone().unwrap_or_default();
    emit_document(
        ctx,
        args.output,
        (&response, "leadflow.qualification.v1.GetDefinitionResponse"),
        (&definition, DEFINITION),
        |r| print_definition(&definition, r.active_version),
    )
}

/// Arguments of `definition list`.
#[derive(Debug, Args)]
pub(crate) struct DefinitionListArgs {
    #[command(flatten)]
    page: Page,
}

async fn list_definitions(ctx: &Ctx, args: DefinitionListArgs) -> Result<(), CliError> {
    let request = ListDefinitionVersionsRequest {
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let client = ctx.qualification()?;
    let response = retried!(ctx, &client, list_definition_versions, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.ListDefinitionVersionsResponse",
        |r| {
            let mut table = Table::new(&[
                "VERSION",
                "ACTIVE",
                "CREATED",
                "MQL AT",
                "MIN GRADE",
                "DESCRIPTION",
            ]);
            for d in &r.definitions {
                table.row(vec![
                    d.version.to_string(),
                    if d.version == r.active_version {
                        "*"
                    } else {
                        ""
                    }
                    .to_owned(),
                    ts(d.create_time.as_ref()),
                    points(d.mql_threshold),
                    label(enums::GRADE, d.min_fit_grade),
                    d.description.clone(),
                ]);
            }
            table.print();
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}

/// Funnel figures for a period: stage entries, conversions with their times, and why leads
/// were recycled or disqualified.
#[derive(Debug, Args)]
pub(crate) struct FunnelArgs {
    #[command(flatten)]
    period: Period,
    /// Also group by this dimension (repeat for both).
    #[arg(long = "by", value_parser = enum_arg(enums::DIMENSION))]
    group_by: Vec<i32>,
    /// Only leads from this source channel (repeat for more).
    #[arg(long = "channel", value_parser = enum_arg(enums::CHANNEL))]
    channels: Vec<i32>,
}

fn reasons(counts: &[ReasonCount]) -> String {
    let shown: Vec<String> = counts
        .iter()
        .map(|c| {
            let why = match (c.rejection_reason, c.lost_reason) {
                (0, 0) => label(enums::REASON, c.reason),
                (0, lost) => format!("lost: {}", label(enums::LOST, lost)),
                (rejected, _) => format!("rejected: {}", label(enums::REJECTION, rejected)),
            };
            format!("{why} {}", c.count)
        })
        .collect();
    or_dash(&shown.join(", "))
}

fn print_group(title: &str, g: &FunnelGroup) {
    heading(title);
    let mut table = Table::new(&["STAGE", "ENTERED"]);
    for s in &g.stage_entries {
        table.row(vec![
            label(enums::STAGE, s.stage),
            s.entered_count.to_string(),
        ]);
    }
    table.print();
    println!();
    let mut table = Table::new(&["CONVERSION", "COHORT", "CONVERTED", "RATE", "MEDIAN", "P90"]);
    for c in &g.conversions {
        let from_to = format!(
            "{} → {}",
            label(enums::STAGE, c.from_stage),
            label(enums::STAGE, c.to_stage)
        );
        table.row(vec![
            from_to,
            c.cohort_count.to_string(),
            c.converted_count.to_string(),
            pct(c.rate),
            dur(c.median_time.as_ref()),
            dur(c.p90_time.as_ref()),
        ]);
    }
    table.print();
    println!("recycled: {}", reasons(&g.recycled));
    println!("disqualified: {}", reasons(&g.disqualified));
}

/// Runs `funnel`.
pub(crate) async fn funnel(ctx: &Ctx, args: FunnelArgs) -> Result<(), CliError> {
    let (start, end) = args.period.bounds();
    let request = GetFunnelRequest {
        start_time: Some(start),
        end_time: Some(end),
        group_by: args.group_by,
        source_channels: args.channels,
    };
    let response = retried!(ctx, ctx.qualification()?, get_funnel, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.qualification.v1.GetFunnelResponse",
        |r| {
            println!(
                "funnel from {} to {} (computed {})",
                ts(Some(&start)),
                ts(Some(&end)),
                ts(r.report_time.as_ref())
            );
            for g in &r.groups {
                let mut title = Vec::new();
                if g.source_channel != 0 {
                    title.push(format!(
                        "channel {}",
                        label(enums::CHANNEL, g.source_channel)
                    ));
                }
                if g.definition_version != 0 {
                    title.push(format!("definition version {}", g.definition_version));
                }
                print_group(&title.join(", "), g);
            }
            if let Some(total) = &r.total {
                print_group("total", total);
            }
        },
    )
}
