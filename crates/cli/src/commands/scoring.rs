//! Scoring: `score get|explain|what-if|rescore|job`, `model publish|get|list`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;
use leadflow_proto::scoring::v1::{
    BatchGetScoresRequest, ExplainScoreRequest, GetModelRequest, GetRescoreJobRequest,
    GetScoreRequest, ListModelVersionsRequest, Predicate, PublishModelRequest, RescoreJob,
    RescoreJobState, RescoreRequest, Score, ScoreExplanation, ScoringModel, WhatIfRequest,
    predicate::Condition,
};

use crate::args::{Page, parse_time, pb_time};
use crate::client::{Ctx, retried};
use crate::error::CliError;
use crate::json::from_file;
use crate::output::{
    Format, Table, dur, emit, emit_document, enums, fields, heading, label, next_page, or_dash,
    points, ts,
};

/// Lead scores.
#[derive(Debug, Subcommand)]
pub(crate) enum ScoreCommand {
    /// Shows leads' scores (several ids are fetched in one call).
    Get(ScoreGetArgs),
    /// Shows the contributions that make up a lead's score.
    Explain(ExplainArgs),
    /// Scores a hypothetical profile and activities from a file; stores nothing.
    WhatIf(WhatIfArgs),
    /// Re-scores every lead of the tenant under the active model.
    Rescore(RescoreArgs),
    /// Shows a rescore job's progress.
    Job(JobArgs),
}

/// Versioned scoring models.
#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// Publishes a model from a YAML or JSON file (a ScoringModel); it becomes active.
    Publish(PublishArgs),
    /// Shows the active model, or a version.
    Get(GetArgs),
    /// Lists the published versions, newest first.
    List(ListArgs),
}

/// Runs a `score` command.
pub(crate) async fn score(ctx: &Ctx, command: ScoreCommand) -> Result<(), CliError> {
    match command {
        ScoreCommand::Get(args) => get(ctx, args).await,
        ScoreCommand::Explain(args) => explain(ctx, args).await,
        ScoreCommand::WhatIf(args) => what_if(ctx, args).await,
        ScoreCommand::Rescore(args) => rescore(ctx, args).await,
        ScoreCommand::Job(args) => job(ctx, args).await,
    }
}

/// Runs a `model` command.
pub(crate) async fn model(ctx: &Ctx, command: ModelCommand) -> Result<(), CliError> {
    match command {
        ModelCommand::Publish(args) => publish(ctx, args).await,
        ModelCommand::Get(args) => get_model(ctx, args).await,
        ModelCommand::List(args) => list(ctx, args).await,
    }
}

/// Arguments of `score get`.
#[derive(Debug, Args)]
pub(crate) struct ScoreGetArgs {
    /// One or more lead ids.
    #[arg(required = true)]
    lead_ids: Vec<String>,
}

fn score_table(scores: &[(&str, &Score)]) {
    let mut table = Table::new(&[
        "LEAD",
        "SCORE",
        "FIT",
        "ENGAGEMENT",
        "GRADE",
        "HAND-RAISES",
        "MODEL",
        "UPDATED",
    ]);
    for (requested, s) in scores {
        let lead = if *requested == s.lead_id {
            s.lead_id.clone()
        } else {
            format!("{requested} → {}", s.lead_id)
        };
        table.row(vec![
            lead,
            points(s.score),
            points(s.fit_points),
            points(s.engagement_points),
            label(enums::GRADE, s.fit_grade),
            s.hand_raises.len().to_string(),
            s.model_version.to_string(),
            ts(s.update_time.as_ref()),
        ]);
    }
    table.print();
}

async fn get(ctx: &Ctx, args: ScoreGetArgs) -> Result<(), CliError> {
    let client = ctx.scoring()?;
    if let [lead_id] = args.lead_ids.as_slice() {
        let request = GetScoreRequest {
            lead_id: lead_id.clone(),
        };
        let response = retried!(ctx, &client, get_score, request)?.into_inner();
        return emit(
            ctx,
            &response,
            "leadflow.scoring.v1.GetScoreResponse",
            |r| {
                if let Some(score) = &r.score {
                    score_table(&[(lead_id.as_str(), score)]);
                }
            },
        );
    }
    let request = BatchGetScoresRequest {
        lead_ids: args.lead_ids,
    };
    let response = retried!(ctx, &client, batch_get_scores, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.scoring.v1.BatchGetScoresResponse",
        |r| {
            let found: Vec<(&str, &Score)> = r
                .results
                .iter()
                .filter_map(|x| x.score.as_ref().map(|s| (x.requested_lead_id.as_str(), s)))
                .collect();
            score_table(&found);
            if !r.not_found_lead_ids.is_empty() {
                eprintln!("not found: {}", r.not_found_lead_ids.join(", "));
            }
        },
    )
}

/// Arguments of `score explain`.
#[derive(Debug, Args)]
pub(crate) struct ExplainArgs {
    /// The lead id.
    lead_id: String,
}

fn print_explanation(e: &ScoreExplanation) {
    if let Some(s) = &e.score {
        let raises: Vec<String> = s
            .hand_raises
            .iter()
            .map(|h| h.activity_type.clone())
            .collect();
        fields(&[
            ("lead", or_dash(&s.lead_id)),
            (
                "score",
                format!(
                    "{} (fit {} + engagement {}), grade {}",
                    points(s.score),
                    points(s.fit_points),
                    points(s.engagement_points),
                    label(enums::GRADE, s.fit_grade)
                ),
            ),
            ("hand-raises", or_dash(&raises.join(", "))),
            ("model", format!("version {}", s.model_version)),
            ("as of", ts(s.as_of_time.as_ref())),
        ]);
    }
    println!();
    let mut table = Table::new(&["KIND", "RULE", "ACTIVITY", "WHEN", "POINTS", "NOW"]);
    for c in &e.contributions {
        table.row(vec![
            label(enums::CONTRIBUTION, c.kind),
            c.rule_id.clone(),
            or_dash(&c.activity_type),
            ts(c.effective_time.as_ref()),
            points(c.original_points),
            points(c.value),
        ]);
    }
    table.print();
}

async fn explain(ctx: &Ctx, args: ExplainArgs) -> Result<(), CliError> {
    let request = ExplainScoreRequest {
        lead_id: args.lead_id,
    };
    let response = retried!(ctx, ctx.scoring()?, explain_score, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.scoring.v1.ExplainScoreResponse",
        |r| {
            if let Some(e) = &r.explanation {
                print_explanation(e);
            }
        },
    )
}

/// Arguments of `score what-if`.
#[derive(Debug, Args)]
pub(crate) struct WhatIfArgs {
    /// A YAML or JSON file holding a WhatIfRequest: `profile:` and `activities:` (`-`: stdin).
    file: PathBuf,
    /// Score with this model version instead of the active one.
    #[arg(long)]
    model_version: Option<i32>,
    /// Score as of this time (decay, inactivity) instead of now.
    #[arg(long, value_parser = parse_time)]
    as_of: Option<DateTime<Utc>>,
}

async fn what_if(ctx: &Ctx, args: WhatIfArgs) -> Result<(), CliError> {
    let mut request: WhatIfRequest = from_file(&args.file, "leadflow.scoring.v1.WhatIfRequest")?;
    if let Some(version) = args.model_version {
        request.model_version = version;
    }
    if args.as_of.is_some() {
        request.as_of_time = pb_time(args.as_of);
    }
    let response = retried!(ctx, ctx.scoring()?, what_if, request)?.into_inner();
    emit(ctx, &response, "leadflow.scoring.v1.WhatIfResponse", |r| {
        if let Some(e) = &r.explanation {
            print_explanation(e);
        }
    })
}

/// Arguments of `score rescore`.
#[derive(Debug, Args)]
pub(crate) struct RescoreArgs {
    /// Wait for the job to finish, showing its progress.
    #[arg(long)]
    wait: bool,
}

fn print_job(job: &RescoreJob) {
    fields(&[
        ("job", job.job_id.clone()),
        ("state", label(enums::RESCORE_STATE, job.state)),
        ("model", format!("version {}", job.model_version)),
        (
            "leads",
            format!(
                "{} of {} re-scored, {} changed",
                job.processed_leads, job.total_leads, job.changed_leads
            ),
        ),
        ("started", ts(job.start_time.as_ref())),
        ("ended", ts(job.end_time.as_ref())),
        ("error", or_dash(&job.error_message)),
    ]);
}

async fn rescore(ctx: &Ctx, args: RescoreArgs) -> Result<(), CliError> {
    let client = ctx.scoring()?;
    let request = RescoreRequest {
        request_id: ctx.request_id(),
    };
    let mut response = retried!(ctx, &client, rescore, request)?.into_inner();
    if args.wait {
        let bar = if ctx.json || !std::io::stderr().is_terminal() {
            ProgressBar::hidden()
        } else {
            ProgressBar::new(0)
        };
        while let Some(job) = response.job.as_ref() {
            bar.set_length(job.total_leads.unsigned_abs());
            bar.set_position(job.processed_leads.unsigned_abs());
            let state = job.state;
            if state == RescoreJobState::Succeeded as i32 || state == RescoreJobState::Failed as i32
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let request = GetRescoreJobRequest {
                job_id: job.job_id.clone(),
            };
            response.job = retried!(ctx, &client, get_rescore_job, request)?
                .into_inner()
                .job;
        }
        bar.finish_and_clear();
    }
    emit(ctx, &response, "leadflow.scoring.v1.RescoreResponse", |r| {
        if let Some(job) = &r.job {
            print_job(job);
        }
    })?;
    match response.job {
        Some(job) if job.state == RescoreJobState::Failed as i32 => Err(CliError::Rpc(
            tonic::Status::aborted(format!("the rescore job failed: {}", job.error_message)),
        )),
        _ => Ok(()),
    }
}

/// Arguments of `score job`.
#[derive(Debug, Args)]
pub(crate) struct JobArgs {
    /// The job id printed by `score rescore`.
    job_id: String,
}

async fn job(ctx: &Ctx, args: JobArgs) -> Result<(), CliError> {
    let request = GetRescoreJobRequest {
        job_id: args.job_id,
    };
    let response = retried!(ctx, ctx.scoring()?, get_rescore_job, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.scoring.v1.GetRescoreJobResponse",
        |r| {
            if let Some(job) = &r.job {
                print_job(job);
            }
        },
    )
}

/// Arguments of `model publish`.
#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// A YAML or JSON file holding a ScoringModel, e.g. from `model get --output yaml` (`-`:
    /// stdin).
    file: PathBuf,
    /// Replaces the file's description (what changed in this version).
    #[arg(long)]
    description: Option<String>,
}

async fn publish(ctx: &Ctx, args: PublishArgs) -> Result<(), CliError> {
    let mut model: ScoringModel = from_file(&args.file, MODEL)?;
    if let Some(description) = args.description {
        model.description = description;
    }
    let request = PublishModelRequest {
        request_id: ctx.request_id(),
        model: Some(model),
    };
    let response = retried!(ctx, ctx.scoring()?, publish_model, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.scoring.v1.PublishModelResponse",
        |r| {
            let version = r.model.as_ref().map_or(0, |m| m.version);
            let duplicate = if r.duplicate {
                " (duplicate: already published)"
            } else {
                ""
            };
            println!("published model version {version}, now active{duplicate}");
        },
    )
}

const MODEL: &str = "leadflow.scoring.v1.ScoringModel";

/// Arguments of `model get`.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The version; the active one when absent.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    version: i32,
    /// How to print it: a summary, or the model alone as a file `model publish` accepts.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

/// A predicate for people: `not title contains marketing|sales`.
fn predicate(p: &Predicate) -> String {
    let not = if p.negate { "not " } else { "" };
    let condition = match &p.condition {
        Some(Condition::Equals(v)) => format!("= {v}"),
        Some(Condition::OneOf(s)) => format!("in {}", s.values.join("|")),
        Some(Condition::Contains(s)) => format!("contains {}", s.values.join("|")),
        Some(Condition::StartsWith(s)) => format!("starts with {}", s.values.join("|")),
        Some(Condition::Range(r)) => {
            let bound = |b: Option<f64>| b.map_or(String::new(), |b| b.to_string());
            format!("in {}..{}", bound(r.min), bound(r.max))
        }
        Some(Condition::Presence(p)) => format!("is {}", label("leadflow.scoring.v1.Presence", *p)),
        Some(Condition::FreeMailDomain(_)) => "is free-mail".to_owned(),
        None => "?".to_owned(),
    };
    format!("{not}{} {condition}", p.field)
}

fn print_model(m: &ScoringModel, active: i32) {
    let bands: Vec<String> = m
        .grade_bands
        .iter()
        .map(|b| {
            format!(
                "{} ≥ {}",
                label(enums::GRADE, b.grade),
                points(b.min_fit_points)
            )
        })
        .collect();
    fields(&[
        ("version", format!("{} (active: {active})", m.version)),
        ("description", or_dash(&m.description)),
        ("created", ts(m.create_time.as_ref())),
        ("half-life", dur(m.engagement_half_life.as_ref())),
        (
            "hand-raises",
            or_dash(&m.hand_raise_activity_types.join(", ")),
        ),
        ("grades", or_dash(&bands.join(", "))),
    ]);
    heading("fit rules");
    let mut table = Table::new(&["ID", "POINTS", "WHEN", "DESCRIPTION"]);
    for r in &m.fit_rules {
        let when: Vec<String> = r.predicates.iter().map(predicate).collect();
        table.row(vec![
            r.id.clone(),
            points(r.points),
            when.join(" and "),
            r.description.clone(),
        ]);
    }
    table.print();
    heading("behaviour rules");
    let mut table = Table::new(&["ID", "TYPE", "POINTS", "WHEN", "CAP", "ONCE PER"]);
    for r in &m.behavior_rules {
        let when: Vec<String> = r.property_predicates.iter().map(predicate).collect();
        let cap = r.cap.as_ref().map_or("-".to_owned(), |c| {
            let limit = match (c.max_points, c.max_occurrences) {
                (p, _) if p > 0.0 => format!("{} points", points(p)),
                (_, n) if n > 0 => format!("{n} times"),
                _ => "-".to_owned(),
            };
            format!("{limit} / {}", dur(c.window.as_ref()))
        });
        table.row(vec![
            r.id.clone(),
            r.activity_type.clone(),
            points(r.points),
            or_dash(&when.join(" and ")),
            cap,
            or_dash(&r.once_per_asset_property),
        ]);
    }
    table.print();
    heading("inactivity rules");
    let mut table = Table::new(&["ID", "TYPE", "AFTER", "POINTS", "REPEAT"]);
    for r in &m.inactivity_rules {
        table.row(vec![
            r.id.clone(),
            or_dash(&r.activity_type),
            dur(r.inactive_for.as_ref()),
            points(r.points),
            r.repeat.to_string(),
        ]);
    }
    table.print();
}

async fn get_model(ctx: &Ctx, args: GetArgs) -> Result<(), CliError> {
    let request = GetModelRequest {
        version: args.version,
    };
    let response = retried!(ctx, ctx.scoring()?, get_model, request)?.into_inner();
    let model = response.model.clone().unwrap_or_default();
    emit_document(
        ctx,
        args.output,
        (&response, "leadflow.scoring.v1.GetModelResponse"),
        (&model, MODEL),
        |r| print_model(&model, r.active_version),
    )
}

/// Arguments of `model list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    page: Page,
}

async fn list(ctx: &Ctx, args: ListArgs) -> Result<(), CliError> {
    let request = ListModelVersionsRequest {
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let response = retried!(ctx, ctx.scoring()?, list_model_versions, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.scoring.v1.ListModelVersionsResponse",
        |r| {
            let mut table = Table::new(&["VERSION", "ACTIVE", "CREATED", "RULES", "DESCRIPTION"]);
            for m in &r.models {
                let rules = m.fit_rules.len() + m.behavior_rules.len() + m.inactivity_rules.len();
                table.row(vec![
                    m.version.to_string(),
                    if m.version == r.active_version {
                        "*"
                    } else {
                        ""
                    }
                    .to_owned(),
                    ts(m.create_time.as_ref()),
                    rules.to_string(),
                    m.description.clone(),
                ]);
            }
            table.print();
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}
