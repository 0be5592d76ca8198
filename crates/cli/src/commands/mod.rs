//! The commands, grouped by the service they call.

pub(crate) mod handoff;
pub(crate) mod import;
pub(crate) mod ingestion;
pub(crate) mod qualification;
pub(crate) mod scoring;

use clap::Subcommand;

use crate::client::Ctx;
use crate::error::CliError;

/// A lead: its ids and timeline (ingestion), its stage, history and the SDR's decisions
/// (qualification).
#[derive(Debug, Subcommand)]
pub(crate) enum LeadCommand {
    /// Shows a lead's ids and profile.
    Get(ingestion::GetArgs),
    /// Lists a lead's activities, newest first.
    Timeline(ingestion::TimelineArgs),
    /// Merges one known lead into another.
    Merge(ingestion::MergeArgs),
    /// Shows a lead's stage, score, profile and BANT.
    Stage(qualification::StageArgs),
    /// Shows every stage transition of a lead, with why and under which definition.
    History(qualification::HistoryArgs),
    /// Lists leads by stage and source channel, newest in their stage first.
    List(qualification::ListArgs),
    /// The SDR accepts an MQL: MQL → SAL.
    Accept(qualification::Decision),
    /// The SDR rejects an MQL with a reason.
    Reject(qualification::RejectArgs),
    /// Records the SDR's BANT; a SAL for which the SQL rule then holds becomes SQL.
    Bant(qualification::BantArgs),
}

/// Runs a `lead` command.
pub(crate) async fn lead(ctx: &Ctx, command: LeadCommand) -> Result<(), CliError> {
    match command {
        LeadCommand::Get(args) => ingestion::get(ctx, args).await,
        LeadCommand::Timeline(args) => ingestion::timeline(ctx, args).await,
        LeadCommand::Merge(args) => ingestion::merge(ctx, args).await,
        LeadCommand::Stage(args) => qualification::stage(ctx, args).await,
        LeadCommand::History(args) => qualification::history(ctx, args).await,
        LeadCommand::List(args) => qualification::list(ctx, args).await,
        LeadCommand::Accept(args) => qualification::accept(ctx, args).await,
        LeadCommand::Reject(args) => qualification::reject(ctx, args).await,
        LeadCommand::Bant(args) => qualification::bant(ctx, args).await,
    }
}
