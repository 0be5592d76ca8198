//! Handoff: `handoff list|get|stream|ack|contact|accept|reject|outcome`, `owner
//! upsert|list|deactivate`, `routing publish|get`, `sla report`, `webhook
//! upsert|list|delete|deliveries`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use leadflow_proto::common::v1::{
    LostOutcome, Money, OpportunityOutcome, SalesOutcome, WonOutcome, sales_outcome,
};
use leadflow_proto::handoff::v1::{
    AcceptHandoffRequest, AcknowledgeHandoffRequest, DeactivateOwnerRequest, DeleteWebhookRequest,
    GetHandoffRequest, GetRoutingRulesRequest, GetSlaReportRequest, Handoff, HandoffFilter,
    HandoffView, ListHandoffsRequest, ListOwnersRequest, ListWebhookDeliveriesRequest,
    ListWebhooksRequest, Owner, PublishRoutingRulesRequest, RecordContactRequest,
    RejectHandoffRequest, ReportOutcomeRequest, RoutingRules, SlaStats, StreamHandoffsRequest,
    Territory, UpsertOwnerRequest, UpsertWebhookRequest, Webhook,
};

use crate::args::{Page, Period, enum_arg, parse_time, pb_time};
use crate::client::{Ctx, retried};
use crate::error::CliError;
use crate::json::{from_file, from_value, read_document, to_json, to_json_text};
use crate::output::{
    Format, Table, dur, emit, emit_document, enums, fields, heading, label, next_page, or_dash,
    pct, points, print_line, ts,
};

/// Hand-offs to SDRs and sales: the CRM connector's side.
#[derive(Debug, Subcommand)]
pub(crate) enum HandoffCommand {
    /// Lists hand-offs, oldest first.
    List(ListArgs),
    /// Shows a hand-off with its status history and warm context.
    Get(IdArgs),
    /// Prints every new or changed hand-off as it happens (Ctrl-C stops), from a cursor.
    Stream(StreamArgs),
    /// The CRM created its record: pending → acknowledged.
    Ack(AckArgs),
    /// The owner made first contact (stops the SLA clock).
    Contact(ContactArgs),
    /// The SDR accepts an SDR-review hand-off (the lead becomes SAL).
    Accept(ActArgs),
    /// The SDR rejects an SDR-review hand-off with a reason.
    Reject(RejectArgs),
    /// Reports what became of a sales hand-off: opportunity, won or lost.
    Outcome(OutcomeArgs),
}

/// SDRs, account executives and managers.
#[derive(Debug, Subcommand)]
pub(crate) enum OwnerCommand {
    /// Creates or replaces owners from a YAML or JSON file (one Owner, or a list of them).
    Upsert(FileArgs),
    /// Lists owners.
    List(OwnerListArgs),
    /// Deactivates an owner: routing skips it from now on.
    Deactivate(DeactivateArgs),
}

/// The versioned routing rules, SLAs and escalation target.
#[derive(Debug, Subcommand)]
pub(crate) enum RoutingCommand {
    /// Publishes routing rules from a YAML or JSON file (a RoutingRules).
    Publish(FileArgs),
    /// Shows the active routing rules, or a version.
    Get(RoutingGetArgs),
}

/// The hand-off SLA.
#[derive(Debug, Subcommand)]
pub(crate) enum SlaCommand {
    /// Time to first contact and breaches per owner, per team and in total.
    Report(SlaArgs),
}

/// Webhook endpoints and their delivery log.
#[derive(Debug, Subcommand)]
pub(crate) enum WebhookCommand {
    /// Creates (no webhook_id in the file) or replaces a webhook from a YAML or JSON file.
    Upsert(WebhookUpsertArgs),
    /// Lists webhook endpoints.
    List(WebhookListArgs),
    /// Deletes a webhook endpoint; pending deliveries to it are dropped.
    Delete(IdArgs),
    /// Lists deliveries, newest first.
    Deliveries(DeliveriesArgs),
}

/// Runs a `handoff` command.
pub(crate) async fn handoff(ctx: &Ctx, command: HandoffCommand) -> Result<(), CliError> {
    match command {
        HandoffCommand::List(args) => list(ctx, args).await,
        HandoffCommand::Get(args) => get(ctx, args).await,
        HandoffCommand::Stream(args) => stream(ctx, args).await,
        HandoffCommand::Ack(args) => ack(ctx, args).await,
        HandoffCommand::Contact(args) => contact(ctx, args).await,
        HandoffCommand::Accept(args) => accept(ctx, args).await,
        HandoffCommand::Reject(args) => reject(ctx, args).await,
        HandoffCommand::Outcome(args) => outcome(ctx, args).await,
    }
}

/// Runs an `owner` command.
pub(crate) async fn owner(ctx: &Ctx, command: OwnerCommand) -> Result<(), CliError> {
    match command {
        OwnerCommand::Upsert(args) => upsert_owners(ctx, args).await,
        OwnerCommand::List(args) => list_owners(ctx, args).await,
        OwnerCommand::Deactivate(args) => deactivate(ctx, args).await,
    }
}

/// Runs a `routing` command.
pub(crate) async fn routing(ctx: &Ctx, command: RoutingCommand) -> Result<(), CliError> {
    match command {
        RoutingCommand::Publish(args) => publish_routing(ctx, args).await,
        RoutingCommand::Get(args) => get_routing(ctx, args).await,
    }
}

/// Runs an `sla` command.
pub(crate) async fn sla(ctx: &Ctx, command: SlaCommand) -> Result<(), CliError> {
    match command {
        SlaCommand::Report(args) => sla_report(ctx, args).await,
    }
}

/// Runs a `webhook` command.
pub(crate) async fn webhook(ctx: &Ctx, command: WebhookCommand) -> Result<(), CliError> {
    match command {
        WebhookCommand::Upsert(args) => upsert_webhook(ctx, args).await,
        WebhookCommand::List(args) => list_webhooks(ctx, args).await,
        WebhookCommand::Delete(args) => delete_webhook(ctx, args).await,
        WebhookCommand::Deliveries(args) => deliveries(ctx, args).await,
    }
}

/// One id.
#[derive(Debug, Args)]
pub(crate) struct IdArgs {
    /// The id.
    id: String,
}

/// A YAML or JSON file.
#[derive(Debug, Args)]
pub(crate) struct FileArgs {
    /// The YAML or JSON file (`-`: stdin).
    file: PathBuf,
}

/// Which hand-offs a list or stream returns.
#[derive(Debug, Args)]
pub(crate) struct FilterArgs {
    /// Only these statuses (repeat for more).
    #[arg(long = "status", value_parser = enum_arg(enums::HANDOFF_STATUS))]
    statuses: Vec<i32>,
    /// Only this owner's.
    #[arg(long)]
    owner: Option<String>,
    /// Only this kind.
    #[arg(long, value_parser = enum_arg(enums::HANDOFF_KIND))]
    kind: Option<i32>,
    /// Only this queue.
    #[arg(long, value_parser = enum_arg(enums::QUEUE))]
    queue: Option<i32>,
    /// Only this lead's.
    #[arg(long)]
    lead: Option<String>,
    /// With status history and warm context (in --json, or with `handoff get`).
    #[arg(long)]
    full: bool,
}

impl FilterArgs {
    fn filter(&self) -> Option<HandoffFilter> {
        Some(HandoffFilter {
            statuses: self.statuses.clone(),
            owner_id: self.owner.clone().unwrap_or_default(),
            kind: self.kind.unwrap_or_default(),
            queue: self.queue.unwrap_or_default(),
            lead_id: self.lead.clone().unwrap_or_default(),
        })
    }

    fn view(&self) -> i32 {
        if self.full {
            HandoffView::Full as i32
        } else {
            HandoffView::Basic as i32
        }
    }
}

fn assignee(h: &Handoff) -> String {
    if h.owner_id.is_empty() {
        format!("queue {}", label(enums::QUEUE, h.queue))
    } else {
        h.owner_id.clone()
    }
}

fn handoff_row(h: &Handoff) -> Vec<String> {
    vec![
        h.handoff_id.clone(),
        h.lead_id.clone(),
        label(enums::HANDOFF_KIND, h.kind),
        label(enums::HANDOFF_STATUS, h.status),
        assignee(h),
        ts(h.create_time.as_ref()),
        ts(h.sla_deadline.as_ref()),
        if h.sla_breached { "breached" } else { "" }.to_owned(),
    ]
}

const HANDOFF_COLUMNS: &[&str] = &[
    "HANDOFF", "LEAD", "KIND", "STATUS", "OWNER", "CREATED", "SLA DUE", "SLA",
];

/// Arguments of `handoff list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    page: Page,
}

async fn list(ctx: &Ctx, args: ListArgs) -> Result<(), CliError> {
    let request = ListHandoffsRequest {
        filter: args.filter.filter(),
        view: args.filter.view(),
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let response = retried!(ctx, ctx.handoff()?, list_handoffs, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.ListHandoffsResponse",
        |r| {
            let mut table = Table::new(HANDOFF_COLUMNS);
            for h in &r.handoffs {
                table.row(handoff_row(h));
            }
            table.print();
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}

fn print_handoff(h: &Handoff) {
    fields(&[
        ("handoff", h.handoff_id.clone()),
        ("lead", h.lead_id.clone()),
        ("kind", label(enums::HANDOFF_KIND, h.kind)),
        ("status", label(enums::HANDOFF_STATUS, h.status)),
        ("owner", assignee(h)),
        (
            "routing rule",
            format!(
                "{} (v{})",
                or_dash(&h.routing_rule_id),
                h.routing_rules_version
            ),
        ),
        ("created", ts(h.create_time.as_ref())),
        (
            "sla due",
            format!(
                "{}{}",
                ts(h.sla_deadline.as_ref()),
                if h.sla_breached { " (breached)" } else { "" }
            ),
        ),
        ("first contact", ts(h.first_contact_time.as_ref())),
        ("crm record", or_dash(&h.crm_record_id)),
    ]);
    if let Some(c) = &h.context {
        heading("warm context");
        let s = c.score_explanation.clone().unwrap_or_default();
        let score = s.score.unwrap_or_default();
        let p = c.profile.clone().unwrap_or_default();
        let need = c.bant.as_ref().map_or(String::new(), |b| b.need.clone());
        fields(&[
            ("why", label(enums::REASON, c.reason)),
            ("hand-raise", c.hand_raise.to_string()),
            (
                "score",
                format!(
                    "{} (grade {})",
                    points(score.score),
                    label(enums::GRADE, score.fit_grade)
                ),
            ),
            ("title", p.title.unwrap_or_else(|| "-".into())),
            ("company", p.company.unwrap_or_else(|| "-".into())),
            ("stated need", or_dash(&need)),
        ]);
        let mut table = Table::new(&["RECENT ACTIVITY", "OCCURRED"]);
        for e in c.recent_activities.iter().take(10) {
            let a = e.activity.clone().unwrap_or_default();
            table.row(vec![a.r#type, ts(a.occurred_at.as_ref())]);
        }
        table.print();
    }
    if !h.status_history.is_empty() {
        heading("history");
        let mut table = Table::new(&["TIME", "FROM", "TO", "OWNER", "ACTOR", "NOTE"]);
        for c in &h.status_history {
            table.row(vec![
                ts(c.change_time.as_ref()),
                label(enums::HANDOFF_STATUS, c.from_status),
                label(enums::HANDOFF_STATUS, c.to_status),
                or_dash(&c.owner_id),
                or_dash(&c.actor_id),
                c.note.clone(),
            ]);
        }
        table.print();
    }
}

async fn get(ctx: &Ctx, args: IdArgs) -> Result<(), CliError> {
    let request = GetHandoffRequest {
        handoff_id: args.id,
    };
    let response = retried!(ctx, ctx.handoff()?, get_handoff, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.GetHandoffResponse",
        |r| {
            if let Some(h) = &r.handoff {
                print_handoff(h);
            }
        },
    )
}

/// Arguments of `handoff stream`.
#[derive(Debug, Args)]
pub(crate) struct StreamArgs {
    /// Resume after this cursor (as printed); from the oldest retained change when absent.
    #[arg(long, default_value = "", hide_default_value = true)]
    cursor: String,
    /// Stop after this many items.
    #[arg(long)]
    max: Option<u64>,
    #[command(flatten)]
    filter: FilterArgs,
}

async fn stream(ctx: &Ctx, args: StreamArgs) -> Result<(), CliError> {
    let request = StreamHandoffsRequest {
        cursor: args.cursor.clone(),
        filter: args.filter.filter(),
        view: args.filter.view(),
    };
    let mut stream = retried!(ctx, ctx.handoff()?, stream_handoffs, request)?.into_inner();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    let (mut last, mut seen) = (args.cursor, 0u64);
    let resume = |last: &str| {
        if !last.is_empty() {
            eprintln!("resume with: leadctl handoff stream --cursor {last}");
        }
    };
    loop {
        let item = tokio::select! {
            item = stream.message() => item,
            _ = &mut ctrl_c => break,
        };
        let item = match item {
            Ok(Some(item)) => item,
            Ok(None) => break,
            Err(status) => {
                resume(&last);
                return Err(status.into());
            }
        };
        if ctx.json {
            let name = "leadflow.handoff.v1.StreamHandoffsResponse";
            print_line(&to_json_text(&item, name, false, false)?)?;
        } else if let Some(h) = &item.handoff {
            let row = handoff_row(h);
            println!(
                "{}  {}  cursor {}",
                ts(h.update_time.as_ref()),
                row[..5].join("  "),
                item.cursor
            );
        }
        last = item.cursor;
        seen += 1;
        if args.max.is_some_and(|max| seen >= max) {
            break;
        }
    }
    if !ctx.json {
        resume(&last);
    }
    Ok(())
}

fn print_changed(h: Option<&Handoff>, duplicate: bool) {
    let Some(h) = h else { return };
    let duplicate = if duplicate {
        " (duplicate: already recorded)"
    } else {
        ""
    };
    println!(
        "handoff {} is {} ({}){duplicate}",
        h.handoff_id,
        label(enums::HANDOFF_STATUS, h.status),
        assignee(h)
    );
}

/// Arguments of `handoff ack`.
#[derive(Debug, Args)]
pub(crate) struct AckArgs {
    /// The hand-off id.
    handoff_id: String,
    /// The CRM's record id.
    #[arg(long)]
    crm_record_id: String,
}

async fn ack(ctx: &Ctx, args: AckArgs) -> Result<(), CliError> {
    let request = AcknowledgeHandoffRequest {
        request_id: ctx.request_id(),
        handoff_id: args.handoff_id,
        crm_record_id: args.crm_record_id,
    };
    let response = retried!(ctx, ctx.handoff()?, acknowledge_handoff, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.AcknowledgeHandoffResponse",
        |r| {
            print_changed(r.handoff.as_ref(), r.duplicate);
        },
    )
}

/// Who acts on a hand-off.
#[derive(Debug, Args)]
pub(crate) struct ActArgs {
    /// The hand-off id.
    handoff_id: String,
    /// Who acted (a CRM user id); the owner when absent.
    #[arg(long)]
    actor: Option<String>,
    /// A note for the history.
    #[arg(long)]
    note: Option<String>,
}

/// Arguments of `handoff contact`.
#[derive(Debug, Args)]
pub(crate) struct ContactArgs {
    #[command(flatten)]
    act: ActArgs,
    /// When contact was made (RFC 3339 or YYYY-MM-DD); now when absent.
    #[arg(long, value_parser = parse_time)]
    at: Option<DateTime<Utc>>,
}

async fn contact(ctx: &Ctx, args: ContactArgs) -> Result<(), CliError> {
    let request = RecordContactRequest {
        request_id: ctx.request_id(),
        handoff_id: args.act.handoff_id,
        contact_time: pb_time(args.at),
        actor_id: args.act.actor.unwrap_or_default(),
        note: args.act.note.unwrap_or_default(),
    };
    let response = retried!(ctx, ctx.handoff()?, record_contact, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.RecordContactResponse",
        |r| {
            print_changed(r.handoff.as_ref(), r.duplicate);
        },
    )
}

async fn accept(ctx: &Ctx, args: ActArgs) -> Result<(), CliError> {
    let request = AcceptHandoffRequest {
        request_id: ctx.request_id(),
        handoff_id: args.handoff_id,
        actor_id: args.actor.unwrap_or_default(),
        note: args.note.unwrap_or_default(),
    };
    let response = retried!(ctx, ctx.handoff()?, accept_handoff, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.AcceptHandoffResponse",
        |r| {
            print_changed(r.handoff.as_ref(), r.duplicate);
        },
    )
}

/// Arguments of `handoff reject`.
#[derive(Debug, Args)]
pub(crate) struct RejectArgs {
    #[command(flatten)]
    act: ActArgs,
    /// Why the lead is rejected.
    #[arg(long, value_parser = enum_arg(enums::REJECTION))]
    reason: i32,
}

async fn reject(ctx: &Ctx, args: RejectArgs) -> Result<(), CliError> {
    let request = RejectHandoffRequest {
        request_id: ctx.request_id(),
        handoff_id: args.act.handoff_id,
        reason: args.reason,
        actor_id: args.act.actor.unwrap_or_default(),
        note: args.act.note.unwrap_or_default(),
    };
    let response = retried!(ctx, ctx.handoff()?, reject_handoff, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.RejectHandoffResponse",
        |r| {
            print_changed(r.handoff.as_ref(), r.duplicate);
        },
    )
}

/// What became of a deal.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum DealResult {
    /// An opportunity was opened.
    Opportunity,
    /// The deal was won.
    Won,
    /// The deal was lost (give --lost-reason).
    Lost,
}

/// Arguments of `handoff outcome`.
#[derive(Debug, Args)]
pub(crate) struct OutcomeArgs {
    #[command(flatten)]
    act: ActArgs,
    /// What became of the deal.
    #[arg(long, value_enum)]
    result: DealResult,
    /// The (expected) amount, e.g. 12000.50, in --currency.
    #[arg(long, value_parser = parse_amount)]
    amount: Option<(i64, i32)>,
    /// ISO 4217 currency code of --amount.
    #[arg(long, default_value = "EUR")]
    currency: String,
    /// Why the deal was lost.
    #[arg(long, value_parser = enum_arg(enums::LOST))]
    lost_reason: Option<i32>,
    /// The CRM's opportunity id.
    #[arg(long)]
    crm_opportunity_id: Option<String>,
    /// When it happened (RFC 3339 or YYYY-MM-DD); now when absent.
    #[arg(long, value_parser = parse_time)]
    at: Option<DateTime<Utc>>,
}

/// A decimal amount as whole units and nanos (sharing the sign).
fn parse_amount(s: &str) -> Result<(i64, i32), String> {
    let bad = || format!("`{s}` is not an amount like 12000.50");
    let (negative, digits) = s.strip_prefix('-').map_or((false, s), |d| (true, d));
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if fraction.len() > 9 || !fraction.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let units: i64 = whole.parse().map_err(|_| bad())?;
    let nanos: i32 = format!("{fraction:0<9}").parse().map_err(|_| bad())?;
    Ok(if negative {
        (-units, -nanos)
    } else {
        (units, nanos)
    })
}

async fn outcome(ctx: &Ctx, args: OutcomeArgs) -> Result<(), CliError> {
    let money = args.amount.map(|(units, nanos)| Money {
        currency_code: args.currency.clone(),
        units,
        nanos,
    });
    let outcome = match args.result {
        DealResult::Opportunity => sales_outcome::Outcome::Opportunity(OpportunityOutcome {
            crm_opportunity_id: args.crm_opportunity_id.unwrap_or_default(),
            expected_amount: money,
        }),
        DealResult::Won => sales_outcome::Outcome::Won(WonOutcome { amount: money }),
        DealResult::Lost => sales_outcome::Outcome::Lost(LostOutcome {
            reason: args.lost_reason.unwrap_or_default(),
            note: args.act.note.clone().unwrap_or_default(),
        }),
    };
    let request = ReportOutcomeRequest {
        request_id: ctx.request_id(),
        handoff_id: args.act.handoff_id,
        outcome: Some(SalesOutcome {
            outcome: Some(outcome),
        }),
        outcome_time: pb_time(args.at),
        actor_id: args.act.actor.unwrap_or_default(),
        note: args.act.note.unwrap_or_default(),
    };
    let response = retried!(ctx, ctx.handoff()?, report_outcome, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.ReportOutcomeResponse",
        |r| {
            print_changed(r.handoff.as_ref(), r.duplicate);
        },
    )
}

fn territory(t: Option<&Territory>) -> String {
    let Some(t) = t else { return "-".to_owned() };
    let sizes: Vec<String> = t
        .company_sizes
        .iter()
        .map(|r| {
            let bound = |b: Option<i32>| b.map_or(String::new(), |b| b.to_string());
            format!("{}..{}", bound(r.min_employees), bound(r.max_employees))
        })
        .collect();
    let parts: Vec<String> = [
        t.countries.join("|"),
        t.industries.join("|"),
        sizes.join("|"),
    ]
    .into_iter()
    .filter(|p| !p.is_empty())
    .collect();
    if parts.is_empty() {
        "any".to_owned()
    } else {
        parts.join(" ")
    }
}

async fn upsert_owners(ctx: &Ctx, args: FileArgs) -> Result<(), CliError> {
    let shown = args.file.display().to_string();
    let owners: Vec<Owner> = match read_document(&args.file)? {
        serde_json::Value::Array(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                from_value(item, "leadflow.handoff.v1.Owner").map_err(|e| match e {
                    CliError::Local(message) => {
                        CliError::Local(format!("item {}: {message}", i + 1))
                    }
                    other => other,
                })
            })
            .collect::<Result<_, _>>(),
        single => from_value(single, "leadflow.handoff.v1.Owner").map(|o| vec![o]),
    }
    .map_err(|e| match e {
        CliError::Local(message) => CliError::Local(format!("{shown}: {message}")),
        other => other,
    })?;
    let client = ctx.handoff()?;
    let (mut answers, mut table) = (
        Vec::new(),
        Table::new(&["OWNER", "ROLE", "ACTIVE", "CHANGE"]),
    );
    let request_id = ctx.request_id();
    for (i, owner) in owners.into_iter().enumerate() {
        let request = UpsertOwnerRequest {
            request_id: format!("{request_id}-{i}"),
            owner: Some(owner),
        };
        let response = retried!(ctx, &client, upsert_owner, request)?.into_inner();
        let o = response.owner.clone().unwrap_or_default();
        let created = if response.created {
            "created"
        } else {
            "updated"
        };
        table.row(vec![
            o.owner_id,
            label(enums::ROLE, o.role),
            o.active.to_string(),
            created.into(),
        ]);
        answers.push(to_json(
            &response,
            "leadflow.handoff.v1.UpsertOwnerResponse",
        )?);
    }
    if ctx.json {
        crate::output::print_value(&serde_json::Value::Array(answers))
    } else {
        table.print();
        Ok(())
    }
}

/// Arguments of `owner list`.
#[derive(Debug, Args)]
pub(crate) struct OwnerListArgs {
    /// Only this role.
    #[arg(long, value_parser = enum_arg(enums::ROLE))]
    role: Option<i32>,
    /// Only this team.
    #[arg(long)]
    team: Option<String>,
    /// Include deactivated owners.
    #[arg(long)]
    all: bool,
    #[command(flatten)]
    page: Page,
}

async fn list_owners(ctx: &Ctx, args: OwnerListArgs) -> Result<(), CliError> {
    let request = ListOwnersRequest {
        role: args.role.unwrap_or_default(),
        team_id: args.team.unwrap_or_default(),
        include_inactive: args.all,
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let response = retried!(ctx, ctx.handoff()?, list_owners, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.ListOwnersResponse",
        |r| {
            let mut table = Table::new(&[
                "OWNER",
                "NAME",
                "ROLE",
                "TEAM",
                "ACTIVE",
                "OPEN",
                "CAPACITY",
                "WEIGHT",
                "TERRITORY",
            ]);
            for o in &r.owners {
                table.row(vec![
                    o.owner_id.clone(),
                    or_dash(&o.display_name),
                    label(enums::ROLE, o.role),
                    or_dash(&o.team_id),
                    o.active.to_string(),
                    o.open_handoff_count.to_string(),
                    if o.capacity == 0 {
                        "-".to_owned()
                    } else {
                        o.capacity.to_string()
                    },
                    o.weight.max(1).to_string(),
                    territory(o.territory.as_ref()),
                ]);
            }
            table.print();
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}

/// Arguments of `owner deactivate`.
#[derive(Debug, Args)]
pub(crate) struct DeactivateArgs {
    /// The owner id.
    owner_id: String,
    /// Re-route the owner's open hand-offs now.
    #[arg(long)]
    reassign: bool,
}

async fn deactivate(ctx: &Ctx, args: DeactivateArgs) -> Result<(), CliError> {
    let request = DeactivateOwnerRequest {
        request_id: ctx.request_id(),
        owner_id: args.owner_id,
        reassign_open_handoffs: args.reassign,
    };
    let response = retried!(ctx, ctx.handoff()?, deactivate_owner, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.DeactivateOwnerResponse",
        |r| {
            let id = r.owner.as_ref().map_or("-", |o| o.owner_id.as_str());
            println!(
                "owner {id} deactivated, {} hand-offs re-routed",
                r.reassigned_count
            );
        },
    )
}

const ROUTING: &str = "leadflow.handoff.v1.RoutingRules";

async fn publish_routing(ctx: &Ctx, args: FileArgs) -> Result<(), CliError> {
    let rules: RoutingRules = from_file(&args.file, ROUTING)?;
    let request = PublishRoutingRulesRequest {
        request_id: ctx.request_id(),
        routing_rules: Some(rules),
    };
    let response = retried!(ctx, ctx.handoff()?, publish_routing_rules, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.PublishRoutingRulesResponse",
        |r| {
            let version = r.routing_rules.as_ref().map_or(0, |d| d.version);
            let duplicate = if r.duplicate {
                " (duplicate: already published)"
            } else {
                ""
            };
            println!("published routing rules version {version}, now active{duplicate}");
        },
    )
}

/// Arguments of `routing get`.
#[derive(Debug, Args)]
pub(crate) struct RoutingGetArgs {
    /// The version; the active one when absent.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    version: i32,
    /// How to print them: a summary, or the rules alone as a file `routing publish` accepts.
    #[arg(long, short, value_enum, default_value_t = Format::Table)]
    output: Format,
}

fn print_routing(rules: &RoutingRules, active: i32) {
    fields(&[
        ("version", format!("{} (active: {active})", rules.version)),
        ("description", or_dash(&rules.description)),
        ("created", ts(rules.create_time.as_ref())),
        ("sales sla", dur(rules.sales_sla.as_ref())),
        ("sdr review sla", dur(rules.sdr_review_sla.as_ref())),
        (
            "escalation",
            label(enums::ESCALATION, rules.escalation_target),
        ),
    ]);
    println!();
    let mut table = Table::new(&["RULE", "KIND", "TERRITORY", "OWNERS", "DESCRIPTION"]);
    for r in &rules.rules {
        let kind = match r.kind {
            0 => "any".to_owned(),
            kind => label(enums::HANDOFF_KIND, kind),
        };
        table.row(vec![
            r.id.clone(),
            kind,
            territory(r.territory.as_ref()),
            or_dash(&r.owner_ids.join(", ")),
            r.description.clone(),
        ]);
    }
    table.print();
}

async fn get_routing(ctx: &Ctx, args: RoutingGetArgs) -> Result<(), CliError> {
    let request = GetRoutingRulesRequest {
        version: args.version,
    };
    let response = retried!(ctx, ctx.handoff()?, get_routing_rules, request)?.into_inner();
    let rules = response.routing_rules.clone().unwrap_or_default();
    emit_document(
        ctx,
        args.output,
        (&response, "leadflow.handoff.v1.GetRoutingRulesResponse"),
        (&rules, ROUTING),
        |r| print_routing(&rules, r.active_version),
    )
}

/// Arguments of `sla report`.
#[derive(Debug, Args)]
pub(crate) struct SlaArgs {
    #[command(flatten)]
    period: Period,
    /// Only this kind of hand-off.
    #[arg(long, value_parser = enum_arg(enums::HANDOFF_KIND))]
    kind: Option<i32>,
}

async fn sla_report(ctx: &Ctx, args: SlaArgs) -> Result<(), CliError> {
    let (start, end) = args.period.bounds();
    let request = GetSlaReportRequest {
        start_time: Some(start),
        end_time: Some(end),
        kind: args.kind.unwrap_or_default(),
    };
    let response = retried!(ctx, ctx.handoff()?, get_sla_report, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.GetSlaReportResponse",
        |r| {
            println!(
                "hand-offs created from {} to {}",
                ts(Some(&start)),
                ts(Some(&end))
            );
            let mut table = Table::new(&[
                "OWNER",
                "TEAM",
                "HANDOFFS",
                "CONTACTED",
                "MEDIAN",
                "P90",
                "WITHIN SLA",
                "BREACHES",
                "OVERDUE",
            ]);
            let mut add = |owner: &str, s: &SlaStats| {
                table.row(vec![
                    owner.to_owned(),
                    or_dash(&s.team_id),
                    s.handoff_count.to_string(),
                    s.contacted_count.to_string(),
                    dur(s.median_time_to_first_contact.as_ref()),
                    dur(s.p90_time_to_first_contact.as_ref()),
                    pct(s.within_sla_share),
                    s.breach_count.to_string(),
                    s.open_overdue_count.to_string(),
                ]);
            };
            r.owners.iter().for_each(|s| add(&s.owner_id, s));
            r.teams.iter().for_each(|s| add("(team)", s));
            if let Some(total) = &r.total {
                add("(total)", total);
            }
            table.print();
        },
    )
}

/// Arguments of `webhook upsert`.
#[derive(Debug, Args)]
pub(crate) struct WebhookUpsertArgs {
    /// A YAML or JSON file holding a Webhook (`-`: stdin).
    file: PathBuf,
    /// The signing secret, at least 32 bytes: required on create, kept when absent on update.
    #[arg(long, env = "LEADFLOW_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

async fn upsert_webhook(ctx: &Ctx, args: WebhookUpsertArgs) -> Result<(), CliError> {
    let webhook: Webhook = from_file(&args.file, "leadflow.handoff.v1.Webhook")?;
    let request = UpsertWebhookRequest {
        request_id: ctx.request_id(),
        webhook: Some(webhook),
        secret: args.secret.unwrap_or_default(),
    };
    let response = retried!(ctx, ctx.handoff()?, upsert_webhook, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.UpsertWebhookResponse",
        |r| {
            let id = r.webhook.as_ref().map_or("-", |w| w.webhook_id.as_str());
            println!(
                "webhook {id} {}",
                if r.created { "created" } else { "updated" }
            );
        },
    )
}

/// Arguments of `webhook list`.
#[derive(Debug, Args)]
pub(crate) struct WebhookListArgs {
    #[command(flatten)]
    page: Page,
}

async fn list_webhooks(ctx: &Ctx, args: WebhookListArgs) -> Result<(), CliError> {
    let request = ListWebhooksRequest {
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let response = retried!(ctx, ctx.handoff()?, list_webhooks, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.ListWebhooksResponse",
        |r| {
            let mut table = Table::new(&[
                "WEBHOOK",
                "URL",
                "ENABLED",
                "STATUSES",
                "KINDS",
                "SECRET SET",
            ]);
            for w in &r.webhooks {
                let filter = w.event_filter.clone().unwrap_or_default();
                let names = |name: &str, values: &[i32]| {
                    let shown: Vec<String> = values.iter().map(|v| label(name, *v)).collect();
                    if shown.is_empty() {
                        "all".to_owned()
                    } else {
                        shown.join(",")
                    }
                };
                table.row(vec![
                    w.webhook_id.clone(),
                    w.url.clone(),
                    w.enabled.to_string(),
                    names(enums::HANDOFF_STATUS, &filter.statuses),
                    names(enums::HANDOFF_KIND, &filter.kinds),
                    ts(w.secret_update_time.as_ref()),
                ]);
            }
            table.print();
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}

async fn delete_webhook(ctx: &Ctx, args: IdArgs) -> Result<(), CliError> {
    let request = DeleteWebhookRequest {
        request_id: ctx.request_id(),
        webhook_id: args.id.clone(),
    };
    let response = retried!(ctx, ctx.handoff()?, delete_webhook, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.DeleteWebhookResponse",
        |_| {
            println!("webhook {} deleted", args.id);
        },
    )
}

/// Arguments of `webhook deliveries`.
#[derive(Debug, Args)]
pub(crate) struct DeliveriesArgs {
    /// Only this endpoint's.
    #[arg(long)]
    webhook: Option<String>,
    /// Only this hand-off's.
    #[arg(long)]
    handoff: Option<String>,
    /// Only deliveries in this state.
    #[arg(long, value_parser = enum_arg(enums::DELIVERY_STATE))]
    state: Option<i32>,
    #[command(flatten)]
    page: Page,
}

async fn deliveries(ctx: &Ctx, args: DeliveriesArgs) -> Result<(), CliError> {
    let request = ListWebhookDeliveriesRequest {
        webhook_id: args.webhook.unwrap_or_default(),
        handoff_id: args.handoff.unwrap_or_default(),
        state: args.state.unwrap_or_default(),
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let response = retried!(ctx, ctx.handoff()?, list_webhook_deliveries, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.handoff.v1.ListWebhookDeliveriesResponse",
        |r| {
            let mut table = Table::new(&[
                "DELIVERY",
                "WEBHOOK",
                "HANDOFF",
                "STATUS",
                "STATE",
                "ATTEMPTS",
                "HTTP",
                "LAST ATTEMPT",
                "ERROR",
            ]);
            for d in &r.deliveries {
                table.row(vec![
                    d.delivery_id.clone(),
                    d.webhook_id.clone(),
                    d.handoff_id.clone(),
                    label(enums::HANDOFF_STATUS, d.handoff_status),
                    label(enums::DELIVERY_STATE, d.state),
                    d.attempt_count.to_string(),
                    if d.last_http_status == 0 {
                        "-".to_owned()
                    } else {
                        d.last_http_status.to_string()
                    },
                    ts(d.last_attempt_time.as_ref()),
                    d.last_error.clone(),
                ]);
            }
            table.print();
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_into_units_and_nanos() {
        assert_eq!(parse_amount("12000.50"), Ok((12_000, 500_000_000)));
        assert_eq!(parse_amount("7"), Ok((7, 0)));
        assert_eq!(parse_amount("-1.5"), Ok((-1, -500_000_000)));
        assert!(parse_amount("1.2.3").is_err());
        assert!(parse_amount("abc").is_err());
    }
}
