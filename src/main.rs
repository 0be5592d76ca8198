//! `leadflow`: the whole suite in one process (`leadflow up`), for a laptop, a demo or a test.
//!
//! Each service runs exactly as its own binary would — its own port, its own SQLite file under
//! the data folder, talking to the others over gRPC on loopback — so what works here works in
//! Kubernetes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::SystemClock;
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_runtime::telemetry::{self, TelemetryArgs};

/// Leadflow: explicit, shared lead-qualification definitions, applied to every lead.
#[derive(Parser, Debug)]
#[command(name = "leadflow", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs every service in this process, each on its own port and SQLite file.
    Up(UpArgs),
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    /// Folder of the services' SQLite files (one per service).
    #[arg(long, env = "LEADFLOW_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address the services listen on.
    #[arg(long, env = "LEADFLOW_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    host: IpAddr,
    /// Ingestion's port (scoring, qualification and handoff take the next three).
    #[arg(long, env = "LEADFLOW_BASE_PORT", default_value_t = 50051)]
    base_port: u16,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    outbox: OutboxArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init("leadflow", &cli.telemetry)?;
    let result = match cli.command {
        Command::Up(args) => up(args).await,
    };
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "leadflow failed");
    }
    telemetry.shutdown().await;
    result
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = leadflow_runtime::shutdown::on_signal();
    let addr = |offset: u16| SocketAddr::new(args.host, args.base_port + offset);
    let ingestion_addr = addr(0);
    let scoring_addr = addr(1);
    let ingestion = leadflow_ingestion::Config {
        listen_addr: ingestion_addr,
        database_url: None,
        data_dir: args.data_dir.clone(),
        database_max_connections: 10,
        scoring_url: format!("http://{scoring_addr}"),
        auth: args.auth.clone(),
        outbox: args.outbox.clone(),
    };
    let listener = leadflow_runtime::server::bind(ingestion_addr)
        .await
        .with_context(|| format!("bind ingestion on {ingestion_addr}"))?;
    println!("leadflow is up (ctrl-c stops it)");
    println!(
        "  ingestion  grpc://{ingestion_addr}  data {}",
        ingestion.database_url()
    );
    leadflow_ingestion::serve(ingestion, listener, Arc::new(SystemClock), shutdown).await
}
