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
use leadflow_runtime::clock::{SharedClock, SystemClock};
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
    /// How often scoring's sweeper applies inactivity and decay, in milliseconds.
    #[arg(
        long,
        env = "LEADFLOW_SCORING_SWEEP_INTERVAL_MS",
        default_value_t = 60_000
    )]
    sweep_interval_ms: u64,
    /// How often qualification recycles MQLs nobody accepted, in milliseconds.
    #[arg(
        long,
        env = "LEADFLOW_QUALIFICATION_RECYCLE_INTERVAL_MS",
        default_value_t = 60_000
    )]
    recycle_interval_ms: u64,
    /// How often handoff looks for SLA breaches, in milliseconds.
    #[arg(
        long,
        env = "LEADFLOW_HANDOFF_SLA_SWEEP_INTERVAL_MS",
        default_value_t = 60_000
    )]
    sla_sweep_interval_ms: u64,
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
    let clock: SharedClock = Arc::new(SystemClock);
    let addr = |offset: u16| SocketAddr::new(args.host, args.base_port + offset);
    let (ingestion_addr, scoring_addr, qualification_addr, handoff_addr) =
        (addr(0), addr(1), addr(2), addr(3));
    let ingestion = leadflow_ingestion::Config {
        listen_addr: ingestion_addr,
        database_url: None,
        data_dir: args.data_dir.clone(),
        database_max_connections: 10,
        scoring_url: format!("http://{scoring_addr}"),
        auth: args.auth.clone(),
        outbox: args.outbox.clone(),
    };
    let scoring = leadflow_scoring::Config {
        listen_addr: scoring_addr,
        database_url: None,
        data_dir: args.data_dir.clone(),
        database_max_connections: 10,
        qualification_url: format!("http://{qualification_addr}"),
        sweep_interval_ms: args.sweep_interval_ms,
        auth: args.auth.clone(),
        outbox: args.outbox.clone(),
    };
    let qualification = leadflow_qualification::Config {
        listen_addr: qualification_addr,
        database_url: None,
        data_dir: args.data_dir.clone(),
        database_max_connections: 10,
        handoff_url: format!("http://{handoff_addr}"),
        recycle_interval_ms: args.recycle_interval_ms,
        auth: args.auth.clone(),
        outbox: args.outbox.clone(),
    };
    let handoff = leadflow_handoff::Config {
        listen_addr: handoff_addr,
        database_url: None,
        data_dir: args.data_dir.clone(),
        database_max_connections: 10,
        ingestion_url: format!("http://{ingestion_addr}"),
        scoring_url: format!("http://{scoring_addr}"),
        qualification_url: format!("http://{qualification_addr}"),
        sla_sweep_interval_ms: args.sla_sweep_interval_ms,
        webhook_poll_ms: 1_000,
        auth: args.auth.clone(),
        outbox: args.outbox.clone(),
    };
    let ingestion_listener = bind("ingestion", ingestion_addr).await?;
    let scoring_listener = bind("scoring", scoring_addr).await?;
    let qualification_listener = bind("qualification", qualification_addr).await?;
    let handoff_listener = bind("handoff", handoff_addr).await?;
    println!("leadflow is up (ctrl-c stops it)");
    println!(
        "  ingestion      grpc://{ingestion_addr}  data {}",
        ingestion.database_url()
    );
    println!(
        "  scoring        grpc://{scoring_addr}  data {}",
        scoring.database_url()
    );
    println!(
        "  qualification  grpc://{qualification_addr}  data {}",
        qualification.database_url()
    );
    println!(
        "  handoff        grpc://{handoff_addr}  data {}",
        handoff.database_url()
    );
    // A service that fails stops the others: the suite runs whole or not at all.
    let stop_all = |result: anyhow::Result<()>| {
        if result.is_err() {
            shutdown.cancel();
        }
        result
    };
    let (ingestion, scoring, qualification, handoff) = tokio::join!(
        async {
            stop_all(
                leadflow_ingestion::serve(
                    ingestion,
                    ingestion_listener,
                    clock.clone(),
                    shutdown.clone(),
                )
                .await,
            )
        },
        async {
            stop_all(
                leadflow_scoring::serve(scoring, scoring_listener, clock.clone(), shutdown.clone())
                    .await,
            )
        },
        async {
            stop_all(
                leadflow_qualification::serve(
                    qualification,
                    qualification_listener,
                    clock.clone(),
                    shutdown.clone(),
                )
                .await,
            )
        },
        async {
            stop_all(
                leadflow_handoff::serve(handoff, handoff_listener, clock.clone(), shutdown.clone())
                    .await,
            )
        },
    );
    ingestion.context("ingestion")?;
    scoring.context("scoring")?;
    qualification.context("qualification")?;
    handoff.context("handoff")?;
    Ok(())
}

async fn bind(service: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    leadflow_runtime::server::bind(addr)
        .await
        .with_context(|| format!("bind {service} on {addr}"))
}
