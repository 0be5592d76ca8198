//! `leadflow-qualification`: the qualification service on its own (one container image per service).

use clap::Parser;
use leadflow_runtime::clock::SystemClock;
use leadflow_runtime::telemetry::{self, TelemetryArgs};
use std::sync::Arc;

/// Leadflow qualification service.
#[derive(Parser, Debug)]
#[command(name = "leadflow-qualification", version, about)]
struct Cli {
    #[command(flatten)]
    config: leadflow_qualification::Config,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init("leadflow-qualification", &cli.telemetry)?;
    let listener = leadflow_runtime::server::bind(cli.config.listen_addr).await?;
    let shutdown = leadflow_runtime::shutdown::on_signal();
    let result =
        leadflow_qualification::serve(cli.config, listener, Arc::new(SystemClock), shutdown).await;
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "qualification failed");
    }
    telemetry.shutdown().await;
    result
}
