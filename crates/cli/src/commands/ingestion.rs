//! Ingestion: `track`, `identify`, `lead get|timeline|merge`.

use chrono::{DateTime, Utc};
use clap::Args;
use leadflow_proto::common::v1::{Activity, Profile};
use leadflow_proto::ingestion::v1::{
    GetLeadRequest, GetTimelineRequest, IdentifyRequest, LeadIdentity, MergeLeadsRequest,
    TrackRequest,
};

use crate::args::{Page, enum_arg, parse_kv, parse_time, pb_time};
use crate::client::{Ctx, retried};
use crate::error::CliError;
use crate::output::{Table, emit, enums, fields, label, next_page, opt, or_dash, ts};

/// Who a call is about.
#[derive(Debug, Args)]
pub(crate) struct Who {
    /// The lead's user id in your systems (e.g. an e-mail address).
    #[arg(long)]
    user_id: Option<String>,
    /// An anonymous visitor id (cookie or device id).
    #[arg(long)]
    anonymous_id: Option<String>,
}

impl Who {
    fn identity(&self) -> Option<LeadIdentity> {
        Some(LeadIdentity {
            user_id: self.user_id.clone().unwrap_or_default(),
            anonymous_id: self.anonymous_id.clone().unwrap_or_default(),
        })
    }
}

/// Records one activity of a lead.
#[derive(Debug, Args)]
pub(crate) struct TrackArgs {
    #[command(flatten)]
    who: Who,
    /// The activity type: page_view, pricing_view, content_download, email_open, email_click,
    /// webinar_registered, webinar_attended, form_submit, demo_request, contact_sales,
    /// unsubscribe, bounce, or custom.<name>.
    #[arg(value_name = "TYPE")]
    kind: String,
    /// A property, key=value (repeat for more), e.g. --prop path=/pricing.
    #[arg(long = "prop", value_name = "KEY=VALUE", value_parser = parse_kv)]
    props: Vec<(String, String)>,
    /// When it happened (RFC 3339 or YYYY-MM-DD); now when absent.
    #[arg(long, value_parser = parse_time)]
    at: Option<DateTime<Utc>>,
}

/// Runs `track`.
pub(crate) async fn track(ctx: &Ctx, args: TrackArgs) -> Result<(), CliError> {
    let request = TrackRequest {
        message_id: ctx.request_id(),
        identity: args.who.identity(),
        activity: Some(Activity {
            r#type: args.kind,
            occurred_at: pb_time(Some(args.at.unwrap_or_else(Utc::now))),
            properties: args.props.into_iter().collect(),
        }),
    };
    let response = retried!(ctx, ctx.ingestion()?, track, request)?.into_inner();
    emit(ctx, &response, "leadflow.ingestion.v1.TrackResponse", |r| {
        let duplicate = if r.duplicate {
            " (duplicate: already recorded)"
        } else {
            ""
        };
        println!("lead {}  activity {}{duplicate}", r.lead_id, r.activity_id);
    })
}

/// Creates or updates a lead's profile; absent attributes are left unchanged.
#[derive(Debug, Args)]
pub(crate) struct IdentifyArgs {
    #[command(flatten)]
    who: Who,
    /// E-mail address.
    #[arg(long)]
    email: Option<String>,
    /// First name.
    #[arg(long)]
    first_name: Option<String>,
    /// Last name.
    #[arg(long)]
    last_name: Option<String>,
    /// Job title, e.g. "Marketing Manager".
    #[arg(long)]
    title: Option<String>,
    /// Seniority of the role.
    #[arg(long, value_parser = enum_arg(enums::SENIORITY))]
    seniority: Option<i32>,
    /// Company name.
    #[arg(long)]
    company: Option<String>,
    /// The company's web domain, e.g. acme.io.
    #[arg(long)]
    company_domain: Option<String>,
    /// Number of employees.
    #[arg(long)]
    company_size: Option<i32>,
    /// Industry, e.g. Software.
    #[arg(long)]
    industry: Option<String>,
    /// ISO 3166-1 alpha-2 country code, e.g. DE.
    #[arg(long)]
    country: Option<String>,
    /// The channel the lead came from.
    #[arg(long, value_parser = enum_arg(enums::CHANNEL))]
    source_channel: Option<i32>,
    /// Marketing consent.
    #[arg(long, value_parser = enum_arg(enums::CONSENT))]
    consent: Option<i32>,
    /// A further attribute, key=value (repeat for more).
    #[arg(long = "trait", value_name = "KEY=VALUE", value_parser = parse_kv)]
    traits: Vec<(String, String)>,
    /// When the change happened (RFC 3339 or YYYY-MM-DD); now when absent.
    #[arg(long, value_parser = parse_time)]
    at: Option<DateTime<Utc>>,
}

/// Runs `identify`.
pub(crate) async fn identify(ctx: &Ctx, args: IdentifyArgs) -> Result<(), CliError> {
    let request = IdentifyRequest {
        message_id: ctx.request_id(),
        identity: args.who.identity(),
        profile: Some(Profile {
            email: args.email,
            first_name: args.first_name,
            last_name: args.last_name,
            title: args.title,
            seniority: args.seniority.unwrap_or_default(),
            company: args.company,
            company_domain: args.company_domain,
            company_size: args.company_size,
            industry: args.industry,
            country: args.country,
            source_channel: args.source_channel.unwrap_or_default(),
            consent: args.consent.unwrap_or_default(),
            traits: args.traits.into_iter().collect(),
        }),
        occurred_at: pb_time(args.at),
    };
    let response = retried!(ctx, ctx.ingestion()?, identify, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.ingestion.v1.IdentifyResponse",
        |r| {
            let duplicate = if r.duplicate {
                " (duplicate: already recorded)"
            } else {
                ""
            };
            println!("lead {}{duplicate}", r.lead_id);
            if !r.merged_lead_ids.is_empty() {
                println!("merged into it: {}", r.merged_lead_ids.join(", "));
            }
        },
    )
}

/// Shows a lead's ids and profile.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    /// The lead id.
    lead_id: String,
}

/// Runs `lead get`.
pub(crate) async fn get(ctx: &Ctx, args: GetArgs) -> Result<(), CliError> {
    let request = GetLeadRequest {
        lead_id: args.lead_id,
    };
    let response = retried!(ctx, ctx.ingestion()?, get_lead, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.ingestion.v1.GetLeadResponse",
        |r| {
            let Some(lead) = &r.lead else { return };
            let p = lead.profile.clone().unwrap_or_default();
            let name = [p.first_name.clone(), p.last_name.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            let mut rows = vec![
                ("lead", lead.lead_id.clone()),
                ("user ids", or_dash(&lead.user_ids.join(", "))),
                ("anonymous ids", or_dash(&lead.anonymous_ids.join(", "))),
                ("email", opt(p.email.as_ref())),
                ("name", or_dash(&name)),
                ("title", opt(p.title.as_ref())),
                ("seniority", label(enums::SENIORITY, p.seniority)),
                ("company", opt(p.company.as_ref())),
                (
                    "company size",
                    p.company_size.map_or("-".into(), |s| s.to_string()),
                ),
                ("industry", opt(p.industry.as_ref())),
                ("country", opt(p.country.as_ref())),
                ("source channel", label(enums::CHANNEL, p.source_channel)),
                ("activities", lead.activity_count.to_string()),
                ("last activity", ts(lead.last_activity_time.as_ref())),
                ("created", ts(lead.create_time.as_ref())),
                ("merged from", or_dash(&lead.merged_lead_ids.join(", "))),
            ];
            if r.merged {
                rows.push(("note", "the requested id was merged into this lead".into()));
            }
            fields(&rows);
        },
    )
}

/// Lists a lead's activities, newest first.
#[derive(Debug, Args)]
pub(crate) struct TimelineArgs {
    /// The lead id.
    lead_id: String,
    /// Only this activity type (repeat for more).
    #[arg(long = "type", value_name = "TYPE")]
    types: Vec<String>,
    /// Only activities at or after this time.
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Only activities before this time.
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    #[command(flatten)]
    page: Page,
}

/// Runs `lead timeline`.
pub(crate) async fn timeline(ctx: &Ctx, args: TimelineArgs) -> Result<(), CliError> {
    let request = GetTimelineRequest {
        lead_id: args.lead_id,
        types: args.types,
        start_time: pb_time(args.since),
        end_time: pb_time(args.until),
        page_size: args.page.page_size,
        page_token: args.page.page_token,
    };
    let response = retried!(ctx, ctx.ingestion()?, get_timeline, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.ingestion.v1.GetTimelineResponse",
        |r| {
            let mut table = Table::new(&["OCCURRED", "TYPE", "PROPERTIES", "ACTIVITY"]);
            for entry in &r.entries {
                let a = entry.activity.clone().unwrap_or_default();
                let mut props: Vec<String> = a
                    .properties
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                props.sort();
                table.row(vec![
                    ts(a.occurred_at.as_ref()),
                    a.r#type,
                    or_dash(&props.join(" ")),
                    entry.activity_id.clone(),
                ]);
            }
            table.print();
        },
    )?;
    next_page(ctx, &response.next_page_token);
    Ok(())
}

/// Merges one known lead into another (history, ids and missing attributes move).
#[derive(Debug, Args)]
pub(crate) struct MergeArgs {
    /// The lead that disappears.
    source_lead_id: String,
    /// The lead that survives.
    #[arg(long = "into", value_name = "LEAD_ID")]
    target_lead_id: String,
}

/// Runs `lead merge`.
pub(crate) async fn merge(ctx: &Ctx, args: MergeArgs) -> Result<(), CliError> {
    let request = MergeLeadsRequest {
        message_id: ctx.request_id(),
        source_lead_id: args.source_lead_id,
        target_lead_id: args.target_lead_id,
    };
    let response = retried!(ctx, ctx.ingestion()?, merge_leads, request)?.into_inner();
    emit(
        ctx,
        &response,
        "leadflow.ingestion.v1.MergeLeadsResponse",
        |r| {
            let id = r.lead.as_ref().map_or("-", |l| l.lead_id.as_str());
            let duplicate = if r.duplicate {
                " (duplicate: already merged)"
            } else {
                ""
            };
            println!("merged into lead {id}{duplicate}");
        },
    )
}
