//! `leadflow`: the whole suite in one process (`leadflow up`), for a laptop, a demo or a test,
//! and `leadflow demo`, which plays the seeds' story on it.
//!
//! Each service runs exactly as its own binary would — its own port, its own SQLite file under
//! the data folder, talking to the others over gRPC on loopback — so what works here works in
//! Kubernetes.

mod demo;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::{SharedClock, SystemClock};
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_runtime::telemetry::{self, TelemetryArgs};
use tokio_util::sync::CancellationToken;

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
    /// Plays the seeds' story (an MQL that becomes a customer, and three leads that do not) on
    /// the suite, started in this process or already running, and prints the journey.
    Demo(demo::DemoArgs),
}

/// The flags of `leadflow up`.
#[derive(clap::Args, Debug)]
struct UpArgs {
    /// Folder of the services' SQLite files (one per service).
    #[arg(long, env = "LEADFLOW_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    #[command(flatten)]
    suite: SuiteArgs,
}

/// Where and how the suite runs: every setting `up` and `demo` share but the data folder.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct SuiteArgs {
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
    /// Leads whose score inputs scoring keeps in memory (some 600 bytes each; 0: none).
    #[arg(
        long,
        env = "LEADFLOW_SCORING_SCORE_CACHE_LEADS",
        default_value_t = leadflow_scoring::DEFAULT_SCORE_CACHE_LEADS
    )]
    score_cache_leads: usize,
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
    pub(crate) auth: AuthArgs,
    #[command(flatten)]
    outbox: OutboxArgs,
}

impl SuiteArgs {
    /// The addresses of ingestion, scoring, qualification and handoff, in port order.
    pub(crate) fn addrs(&self) -> anyhow::Result<SuiteAddrs> {
        let addr = |offset: u16| {
            self.base_port
                .checked_add(offset)
                .map(|port| SocketAddr::new(self.host, port))
                .with_context(|| {
                    format!(
                        "base port {} leaves no room for four services",
                        self.base_port
                    )
                })
        };
        Ok(SuiteAddrs {
            ingestion: addr(0)?,
            scoring: addr(1)?,
            qualification: addr(2)?,
            handoff: addr(3)?,
        })
    }
}

/// Where each service of the suite listens.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SuiteAddrs {
    /// Ingestion's address.
    pub(crate) ingestion: SocketAddr,
    /// Scoring's address.
    pub(crate) scoring: SocketAddr,
    /// Qualification's address.
    pub(crate) qualification: SocketAddr,
    /// Handoff's address.
    pub(crate) handoff: SocketAddr,
}

/// The four services, bound and serving in this process until their shutdown token is
/// cancelled.
#[derive(Debug)]
pub(crate) struct Suite {
    /// Where each service listens.
    pub(crate) addrs: SuiteAddrs,
    /// Each service's name, address and database URL, in port order.
    listing: [(&'static str, SocketAddr, String); 4],
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Suite {
    /// Binds the four services' ports (all or none: a port in use fails before anything
    /// serves) and serves them in the background, each with its SQLite file under `data_dir`,
    /// until `shutdown` is cancelled; a service that fails cancels it for the others.
    pub(crate) async fn start(
        args: &SuiteArgs,
        data_dir: &Path,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let clock: SharedClock = Arc::new(SystemClock);
        let addrs = args.addrs()?;
        let ingestion = leadflow_ingestion::Config {
            listen_addr: addrs.ingestion,
            database_url: None,
            data_dir: data_dir.to_owned(),
            database_max_connections: 10,
            scoring_url: format!("http://{}", addrs.scoring),
            auth: args.auth.clone(),
            outbox: args.outbox.clone(),
        };
        let scoring = leadflow_scoring::Config {
            listen_addr: addrs.scoring,
            database_url: None,
            data_dir: data_dir.to_owned(),
            database_max_connections: 10,
            qualification_url: format!("http://{}", addrs.qualification),
            sweep_interval_ms: args.sweep_interval_ms,
            score_cache_leads: args.score_cache_leads,
            auth: args.auth.clone(),
            outbox: args.outbox.clone(),
        };
        let qualification = leadflow_qualification::Config {
            listen_addr: addrs.qualification,
            database_url: None,
            data_dir: data_dir.to_owned(),
            database_max_connections: 10,
            handoff_url: format!("http://{}", addrs.handoff),
            recycle_interval_ms: args.recycle_interval_ms,
            auth: args.auth.clone(),
            outbox: args.outbox.clone(),
        };
        let handoff = leadflow_handoff::Config {
            listen_addr: addrs.handoff,
            database_url: None,
            data_dir: data_dir.to_owned(),
            database_max_connections: 10,
            ingestion_url: format!("http://{}", addrs.ingestion),
            scoring_url: format!("http://{}", addrs.scoring),
            qualification_url: format!("http://{}", addrs.qualification),
            sla_sweep_interval_ms: args.sla_sweep_interval_ms,
            webhook_poll_ms: 1_000,
            auth: args.auth.clone(),
            outbox: args.outbox.clone(),
        };
        let listing = [
            ("ingestion", addrs.ingestion, ingestion.database_url()),
            ("scoring", addrs.scoring, scoring.database_url()),
            (
                "qualification",
                addrs.qualification,
                qualification.database_url(),
            ),
            ("handoff", addrs.handoff, handoff.database_url()),
        ];
        let listeners = leadflow_suite::Listeners {
            ingestion: bind("ingestion", addrs.ingestion).await?,
            scoring: bind("scoring", addrs.scoring).await?,
            qualification: bind("qualification", addrs.qualification).await?,
            handoff: bind("handoff", addrs.handoff).await?,
        };
        let configs = leadflow_suite::Configs {
            ingestion,
            scoring,
            qualification,
            handoff,
        };
        let task = tokio::spawn(leadflow_suite::run(configs, listeners, clock, shutdown));
        Ok(Self {
            addrs,
            listing,
            task,
        })
    }

    /// Prints where each service listens and keeps its data, one line per service.
    pub(crate) fn print_listing(&self) {
        for (service, addr, database_url) in &self.listing {
            println!("  {service:<15}grpc://{addr}  data {database_url}");
        }
    }

    /// Waits until every service has stopped: the first failure, or `Ok` after a clean
    /// shutdown.
    pub(crate) async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the suite's task")?
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = parse();
    let telemetry = telemetry::init("leadflow", &cli.telemetry)?;
    let result = match cli.command {
        Command::Up(args) => up(args).await,
        Command::Demo(args) => demo::run(args).await,
    };
    if let Err(err) = &result {
        tracing::error!(error = format!("{err:#}"), "leadflow failed");
    }
    telemetry.shutdown().await;
    result
}

/// The command line; the demo's own lines are the point, so under `demo` the services only
/// log errors unless a log filter is asked for.
fn parse() -> Cli {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|err| err.exit());
    if matches!(cli.command, Command::Demo(_))
        && matches.value_source("log_filter") == Some(ValueSource::DefaultValue)
    {
        "error".clone_into(&mut cli.telemetry.log_filter);
    }
    cli
}

/// `leadflow up`: serves the suite until Ctrl-C or SIGTERM.
async fn up(args: UpArgs) -> anyhow::Result<()> {
    let shutdown = leadflow_runtime::shutdown::on_signal();
    let suite = Suite::start(&args.suite, &args.data_dir, shutdown).await?;
    println!("leadflow is up (ctrl-c stops it)");
    suite.print_listing();
    suite.wait().await
}

/// Binds `service`'s listener on `addr`.
async fn bind(service: &str, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    leadflow_runtime::server::bind(addr)
        .await
        .with_context(|| format!("bind {service} on {addr}"))
}
