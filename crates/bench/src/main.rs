//! `leadflow-bench`: Leadflow's throughput and latency in one run, each figure next to the
//! ceiling of what it is built on, measured in the same run on the same machine with the same
//! load generator: a bare tonic echo (the RPC ceiling) and raw batched inserts (the store
//! ceiling), then the four services on fresh databases. The echo servers and the suite each run
//! in a process of their own (this binary run again, see `served`), as servers do in production,
//! so the load generator shares neither their runtime nor their memory. Loopback only; every
//! phase is bounded in requests and time, so the run stops by itself.
//!
//! See `BENCHMARKS.md` at the repository root for what each figure measures and the numbers.

mod echo;
mod load;
mod report;
mod served;
mod store;
mod suite;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use leadflow_runtime::telemetry::{self, TelemetryArgs};

use crate::echo::{EchoClient, EchoMessage};
use crate::load::{Limit, Phase};
use crate::report::{Ceilings, Leadflow, Machine, Report, Settings};
use crate::served::Served;
use crate::store::PostgresServer;
use crate::suite::{Databases, Plan, Workload};

/// Measures Leadflow against the ceilings of its transport (a bare tonic echo) and its store
/// (raw batched inserts), on loopback, and prints the table with the targets.
#[derive(Parser, Debug)]
#[command(name = "leadflow-bench", version, about)]
struct Cli {
    /// Tiny sizes and short phases: the whole run takes well under a minute, even in a debug
    /// build (a smoke test, not a measurement).
    #[arg(long)]
    quick: bool,
    /// Activities ingested by the batch phase (and rows of the store ceiling) [default:
    /// 1000000; 2000 with --quick].
    #[arg(long)]
    activities: Option<u64>,
    /// Leads the activities are spread over [default: 100000; 200 with --quick].
    #[arg(long)]
    leads: Option<u64>,
    /// Length of each rate phase, e.g. `10s`, `500ms`, `1m` [default: 10s; 500ms with
    /// --quick].
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Bound on each count-bound phase: ingestion, draining, rescore [default: 30m; 60s with
    /// --quick].
    #[arg(long, value_parser = parse_duration)]
    phase_timeout: Option<Duration>,
    /// Requests in flight in the closed-loop unary phases (echo, Track, GetScore,
    /// BatchGetScores), over one HTTP/2 channel.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// `Batch` calls in flight (and writers of the store ceiling).
    #[arg(long, default_value_t = 8)]
    batch_concurrency: usize,
    /// `Batch` calls in flight in the PostgreSQL run's batch phase, when it should differ from
    /// --batch-concurrency (then a probe at --batch-concurrency measures the contention
    /// separately). Batches lock the leads they update in key order, so concurrent batches
    /// queue on shared leads instead of deadlocking.
    #[arg(long, default_value_t = 8)]
    postgres_batch_concurrency: usize,
    /// Lead ids per `BatchGetScores` call.
    #[arg(long, default_value_t = 100)]
    batch_ids: u64,
    /// A PostgreSQL server on which to also measure (fresh databases are created and dropped),
    /// e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
    #[arg(long, env = "LEADFLOW_BENCH_POSTGRES_URL")]
    postgres_url: Option<String>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench-report.json")]
    report: PathBuf,
    /// Log filter of the services (`LEADFLOW_LOG` syntax).
    #[arg(
        long,
        env = "LEADFLOW_BENCH_LOG",
        default_value = "warn,leadflow_runtime::auth=error"
    )]
    log: String,
    /// Keep the SQLite files at the end (their folder is printed).
    #[arg(long)]
    keep_data: bool,
    /// Internal: serve the suite on these ingestion, scoring, qualification and handoff
    /// database URLs until standard input closes (the bench runs itself so to measure a suite
    /// in a process of its own).
    #[arg(long, hide = true, num_args = 4, value_names = ["INGESTION", "SCORING", "QUALIFICATION", "HANDOFF"])]
    serve_suite: Option<Vec<String>>,
    /// Internal: serve an echo ceiling, `bare` or `stack`, until standard input closes.
    #[arg(long, hide = true, value_name = "KIND")]
    serve_echo: Option<EchoKind>,
}

/// Which echo ceiling a `--serve-echo` process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EchoKind {
    /// Bare tonic with the services' settings.
    Bare,
    /// Through Leadflow's server stack.
    Stack,
}

/// Parses `10s`, `500ms`, `2m` or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: {text} (e.g. 10s, 500ms, 2m)"))?;
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("not a positive duration: {text}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// The run's sizes once `--quick` and the defaults are applied.
#[derive(Debug, Clone)]
struct Sizes {
    activities: u64,
    leads: u64,
    duration: Duration,
    phase_timeout: Duration,
    poll: Duration,
}

impl Sizes {
    fn of(cli: &Cli) -> Self {
        let (activities, leads, duration, phase_timeout, poll) = if cli.quick {
            (
                2_000,
                200,
                Duration::from_millis(500),
                Duration::from_secs(60),
                Duration::from_millis(20),
            )
        } else {
            (
                1_000_000,
                100_000,
                Duration::from_secs(10),
                Duration::from_secs(1800),
                Duration::from_millis(100),
            )
        };
        Self {
            activities: cli.activities.unwrap_or(activities).max(1),
            leads: cli.leads.unwrap_or(leads).max(1),
            duration: cli.duration.unwrap_or(duration),
            phase_timeout: cli.phase_timeout.unwrap_or(phase_timeout),
            poll,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(
        "leadflow-bench",
        &TelemetryArgs {
            log_filter: cli.log.clone(),
            ..TelemetryArgs::default()
        },
    )?;
    let serving = match (&cli.serve_suite, cli.serve_echo) {
        (Some(urls), _) => Some(served::serve(Databases::of_urls(urls)?).await),
        (None, Some(kind)) => Some(served::serve_echo(kind == EchoKind::Stack).await),
        (None, None) => None,
    };
    if let Some(result) = serving {
        telemetry.shutdown().await;
        return result;
    }
    let dir = fresh_folder()?;
    let postgres = cli.postgres_url.clone().map(PostgresServer::new);
    let result = run(&cli, &dir, postgres.as_ref()).await;
    if let Some(server) = &postgres
        && let Err(err) = server.drop_all().await
    {
        eprintln!("could not drop the bench's PostgreSQL databases: {err:#}");
    }
    if cli.keep_data {
        eprintln!("the SQLite files are kept in {}", dir.display());
    } else if let Err(err) = std::fs::remove_dir_all(&dir) {
        eprintln!("could not remove {}: {err}", dir.display());
    }
    telemetry.shutdown().await;
    result
}

/// The whole run: ceilings, Leadflow on SQLite, Leadflow on PostgreSQL, the report.
async fn run(cli: &Cli, dir: &Path, postgres: Option<&PostgresServer>) -> anyhow::Result<()> {
    let sizes = Sizes::of(cli);
    let workload = Workload::new(sizes.leads, sizes.activities);
    let mode = if cli.quick { "quick" } else { "full" };
    eprintln!(
        "leadflow-bench ({mode}, {} build): {} activities over {} leads, {:?} per rate phase, {} in flight",
        Machine::detect().build,
        sizes.activities,
        sizes.leads,
        sizes.duration,
        cli.concurrency
    );

    // 1. The RPC ceiling.
    let (echo, echo_fixed, echo_one) = echo_phases(cli, &sizes, false).await?;
    let (echo_stack, _, echo_stack_one) = echo_phases(cli, &sizes, true).await?;
    let fixed_rate = echo_fixed.offered_rate.unwrap_or(1.0);

    // 2. The store ceilings.
    let sqlite_url = format!("sqlite://{}", dir.join("ceiling.db").display());
    let sqlite_insert = store::insert_ceiling(
        "sqlite",
        &sqlite_url,
        &workload,
        sizes.activities,
        cli.batch_concurrency,
        sizes.phase_timeout,
    )
    .await?;
    let (postgresql_insert, postgresql_insert_serial) = match postgres {
        Some(server) => {
            let url = server.create("ceiling").await?;
            let best = store::insert_ceiling(
                "postgresql",
                &url,
                &workload,
                sizes.activities,
                cli.batch_concurrency,
                sizes.phase_timeout,
            )
            .await?;
            let serial = if cli.postgres_batch_concurrency == cli.batch_concurrency {
                None
            } else {
                let url = server.create("ceiling_serial").await?;
                Some(
                    store::insert_ceiling(
                        "postgresql",
                        &url,
                        &workload,
                        sizes.activities,
                        cli.postgres_batch_concurrency,
                        sizes.phase_timeout,
                    )
                    .await?,
                )
            };
            (Some(best), serial)
        }
        None => (None, None),
    };

    // 3. Leadflow, on SQLite (every figure), then on PostgreSQL (ingestion and end to end).
    let plan = Plan {
        workload: workload.clone(),
        concurrency: cli.concurrency,
        batch_concurrency: cli.batch_concurrency,
        batch_ids: cli.batch_ids.clamp(1, 1000),
        duration: sizes.duration,
        phase_timeout: sizes.phase_timeout,
        poll: sizes.poll,
        fixed_rate,
        full: true,
        contention_probe: None,
        log: cli.log.clone(),
    };
    let sqlite_dir = dir.join("leadflow");
    std::fs::create_dir_all(&sqlite_dir)?;
    let sqlite = suite::run("sqlite", Databases::sqlite(&sqlite_dir), &plan).await?;
    let postgresql = match postgres {
        Some(server) => {
            let databases = Databases {
                ingestion: server.create("ingestion").await?,
                scoring: server.create("scoring").await?,
                qualification: server.create("qualification").await?,
                handoff: server.create("handoff").await?,
            };
            let plan = Plan {
                workload: Workload::new(sizes.leads, sizes.activities),
                full: false,
                batch_concurrency: cli.postgres_batch_concurrency,
                contention_probe: (cli.postgres_batch_concurrency != cli.batch_concurrency)
                    .then_some(cli.batch_concurrency),
                ..plan.clone()
            };
            Some(suite::run("postgresql", databases, &plan).await?)
        }
        None => None,
    };

    // 4. The report.
    let ceilings = Ceilings {
        echo,
        echo_fixed,
        echo_one,
        echo_stack,
        echo_stack_one,
        sqlite_insert,
        postgresql_insert,
        postgresql_insert_serial,
    };
    let mut missing = Vec::new();
    let figures = report::figures(&ceilings, &sqlite, postgresql.as_ref(), &mut missing);
    let failed = report::failed_phases(&ceilings, &sqlite, postgresql.as_ref());
    let report = Report {
        generated_at: chrono::Utc::now().to_rfc3339(),
        mode,
        machine: Machine::detect(),
        settings: Settings {
            activities: sizes.activities,
            leads: sizes.leads,
            concurrency: cli.concurrency,
            batch_concurrency: cli.batch_concurrency,
            postgres_batch_concurrency: cli.postgres_batch_concurrency,
            fixed_rate_workers: suite::fixed_rate_workers(cli.concurrency),
            batch_ids: plan.batch_ids,
            duration_secs: sizes.duration.as_secs_f64(),
            phase_timeout_secs: sizes.phase_timeout.as_secs_f64(),
            fixed_rate,
        },
        ceilings,
        leadflow: Leadflow { sqlite, postgresql },
        figures,
        missing,
        failed,
    };
    println!("{}", report::table(&report));
    report::write(&report, &cli.report)?;
    eprintln!("report written to {}", cli.report.display());
    Ok(())
}

/// The echo's phases on a fresh server (bare, or through Leadflow's stack): closed loop at
/// `--concurrency`, at a fixed rate of half that maximum (bare only; the stack's phase is a
/// copy of the closed loop's then), and one in flight.
async fn echo_phases(
    cli: &Cli,
    sizes: &Sizes,
    stack: bool,
) -> anyhow::Result<(Phase, Phase, Phase)> {
    let (kind, label) = if stack {
        ("stack", "echo via Leadflow's stack")
    } else {
        ("bare", "echo")
    };
    let server = Served::start(&["--serve-echo", kind, "--log", &cli.log]).await?;
    let addr = *server
        .addrs
        .first()
        .context("the echo announced no address")?;
    eprintln!("{label} on {addr}, in a process of its own");
    let client = EchoClient::new(addr)?;
    client
        .clone()
        .echo(EchoMessage::default())
        .await
        .map_err(anyhow::Error::msg)
        .context("the echo does not answer")?;
    let call = move |i: u64| {
        let mut client = client.clone();
        let message = EchoMessage {
            lead_id: uuid::Uuid::from_u64_pair(suite::mix(i), i).to_string(),
        };
        async move { client.echo(message).await.map(|_| 1) }
    };
    let limit = Limit::time(sizes.duration);
    let max = load::closed_loop(label, cli.concurrency, limit, call.clone()).await?;
    let fixed = if stack {
        max.clone()
    } else {
        load::fixed_rate(
            &format!("{label} at half its max"),
            suite::fixed_rate_workers(cli.concurrency),
            (max.rate / 2.0).max(1.0),
            limit,
            call.clone(),
        )
        .await?
    };
    let one = load::closed_loop(&format!("{label}, one in flight"), 1, limit, call).await?;
    server.stop().await?;
    for phase in [&max, &fixed, &one] {
        anyhow::ensure!(
            phase.errors == 0,
            "{}: {} errors, first: {}",
            phase.label,
            phase.errors,
            phase.first_error.as_deref().unwrap_or("?")
        );
    }
    Ok((max, fixed, one))
}

/// A new, empty folder under the system's temporary folder.
fn fresh_folder() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "leadflow-bench-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
