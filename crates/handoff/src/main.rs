//! `leadflow-handoff`: the handoff service on its own (one container image per service).

use clap::Parser;
use leadflow_runtime::clock::SystemClock;
use leadflow_runtime::telemetry::{self, TelemetryArgs};
use std::sync::Arc;

/// Leadflow handoff service.
#[derive(Parser, Debug)]
#[command(name = "leadflow-handoff", version, about)]
struct Cli {
    #[command(flatten)]
    config: leadflow_handoff::Config,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init("leadflow-handoff", &cli.telemetry)?;
    let listener = leadflow_runtime::server::bind(cli.config.listen_addr).await?;
    let shutdown = leadflow_runtime::shutdown::on_signal();
    let result =
        leadflow_handoff::serve(cli.config, listener, Arc::new(SystemClock), shutdown).await;
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "handoff failed");
    }
    telemetry.shutdown().await;
    result
}
