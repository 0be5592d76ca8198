//! `leadflow-ingestion`: the ingestion service on its own (one container image per service).

use clap::Parser;
use leadflow_runtime::clock::SystemClock;
use leadflow_runtime::telemetry::{self, TelemetryArgs};
use std::sync::Arc;

/// Leadflow ingestion service.
#[derive(Parser, Debug)]
#[command(name = "leadflow-ingestion", version, about)]
struct Cli {
    #[command(flatten)]
    config: leadflow_ingestion::Config,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init("leadflow-ingestion", &cli.telemetry)?;
    let listener = leadflow_runtime::server::bind(cli.config.listen_addr).await?;
    let shutdown = leadflow_runtime::shutdown::on_signal();
    let result =
        leadflow_ingestion::serve(cli.config, listener, Arc::new(SystemClock), shutdown).await;
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "ingestion failed");
    }
    telemetry.shutdown().await;
    result
}
