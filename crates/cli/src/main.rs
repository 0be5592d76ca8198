//! `leadctl`: the operator's command line for Leadflow, over every public RPC of the four
//! services.
//!
//! # Usage
//!
//! ```sh
//! cargo install --path crates/cli            # installs `leadctl`
//! export LEADFLOW_API_KEY=…                  # none in development mode
//! leadctl identify --user-id ana@acme.io --title "Marketing Manager" --company-size 200
//! leadctl track --user-id ana@acme.io pricing_view --prop path=/pricing
//! leadctl import activities.csv              # `leadctl import --help` documents the columns
//! leadctl import --profiles people.csv
//! leadctl score explain <lead>               # why is this lead at 64?
//! leadctl model get --output yaml > model.yaml && leadctl model publish model.yaml
//! leadctl definition publish definition.yaml
//! leadctl lead stage <lead>; leadctl lead history <lead>; leadctl funnel --days 90
//! leadctl owner upsert team.yaml; leadctl routing publish routing.yaml
//! leadctl handoff list --status pending; leadctl handoff stream --cursor <cursor>
//! leadctl sla report --kind sales
//! ```
//!
//! Commands are `noun verb`, grouped by service in [`commands`]. Each service's endpoint is a
//! flag with an environment variable (`--ingestion-url`/`LEADFLOW_INGESTION_URL`, …); the API key
//! is `--api-key`/`LEADFLOW_API_KEY`. Output is a table for people, or the protobuf JSON
//! mapping with `--json` (JSON lines for `handoff stream`). Files (models, definitions, routing
//! rules, owners, webhooks, what-if scenarios) are YAML or JSON in the protobuf JSON mapping,
//! and `get --output yaml` prints a file `publish` takes back. Errors name the gRPC code and
//! each field violation; the exit code tells scripts what kind of failure it was (see
//! `leadctl --help`).

mod args;
mod client;
mod commands;
mod error;
mod json;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{ConnectArgs, Ctx};
use crate::commands::{handoff, import, ingestion, qualification, scoring};
use crate::error::{CliError, exit};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  usage or local error: bad flags, an unreadable or invalid file, a malformed CSV
  2  partial failure: an import with rejected rows (each is listed with its row)
  3  the server refused the request: INVALID_ARGUMENT (field violations are listed),
     FAILED_PRECONDITION, NOT_FOUND, ALREADY_EXISTS, OUT_OF_RANGE
  4  the server is unavailable, too slow or failed: UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, …
     (UNAVAILABLE, ABORTED and a closed connection's CANCELLED after --retries resends)
  5  UNAUTHENTICATED or PERMISSION_DENIED: check --api-key / LEADFLOW_API_KEY";

/// The operator's command line for Leadflow: leads, scores, the qualification definition,
/// the funnel, hand-offs, owners, routing and the SLA.
#[derive(Debug, Parser)]
#[command(name = "leadctl", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    command: Command,
}

/// Every command.
#[derive(Debug, Subcommand)]
enum Command {
    /// Records one activity of a lead (ingestion Track).
    Track(ingestion::TrackArgs),
    /// Creates or updates a lead's profile (ingestion Identify).
    Identify(ingestion::IdentifyArgs),
    /// Imports a CSV of activities or profiles with a progress bar (ingestion Batch).
    Import(import::ImportArgs),
    /// A lead: get, timeline, merge, stage, history, list, accept, reject, bant.
    #[command(subcommand)]
    Lead(commands::LeadCommand),
    /// Scores: get, explain, what-if, rescore, job.
    #[command(subcommand)]
    Score(scoring::ScoreCommand),
    /// Scoring models: publish, get, list.
    #[command(subcommand)]
    Model(scoring::ModelCommand),
    /// Qualification definitions (MQL threshold, SQL rule, recycling): publish, get, list.
    #[command(subcommand)]
    Definition(qualification::DefinitionCommand),
    /// The funnel for a period: stage entries, conversion rates and times, recycling.
    Funnel(qualification::FunnelArgs),
    /// Hand-offs: list, get, stream, ack, contact, accept, reject, outcome.
    #[command(subcommand)]
    Handoff(handoff::HandoffCommand),
    /// Owners (SDRs, account executives, managers): upsert, list, deactivate.
    #[command(subcommand)]
    Owner(handoff::OwnerCommand),
    /// Routing rules and SLAs: publish, get.
    #[command(subcommand)]
    Routing(handoff::RoutingCommand),
    /// The hand-off SLA: report.
    #[command(subcommand)]
    Sla(handoff::SlaCommand),
    /// Webhook endpoints: upsert, list, delete, deliveries.
    #[command(subcommand)]
    Webhook(handoff::WebhookCommand),
}

async fn run(ctx: &Ctx, command: Command) -> Result<(), CliError> {
    match command {
        Command::Track(args) => ingestion::track(ctx, args).await,
        Command::Identify(args) => ingestion::identify(ctx, args).await,
        Command::Import(args) => import::run(ctx, args).await,
        Command::Lead(command) => commands::lead(ctx, command).await,
        Command::Score(command) => scoring::score(ctx, command).await,
        Command::Model(command) => scoring::model(ctx, command).await,
        Command::Definition(command) => qualification::definition(ctx, command).await,
        Command::Funnel(args) => qualification::funnel(ctx, args).await,
        Command::Handoff(command) => handoff::handoff(ctx, command).await,
        Command::Owner(command) => handoff::owner(ctx, command).await,
        Command::Routing(command) => handoff::routing(ctx, command).await,
        Command::Sla(command) => handoff::sla(ctx, command).await,
        Command::Webhook(command) => handoff::webhook(ctx, command).await,
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // Help and version are not errors; a usage error is a local one (exit 1).
            return if e.use_stderr() {
                ExitCode::from(exit::LOCAL)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(exit::LOCAL);
        }
    };
    let ctx = Ctx::new(cli.connect);
    match runtime.block_on(run(&ctx, cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", e.render());
            ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
