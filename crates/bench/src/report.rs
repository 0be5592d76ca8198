//! The results: every Leadflow figure next to its ceiling, the ratio to it and the issue's
//! target, printed as a table and written as JSON.

use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use crate::load::Phase;
use crate::served::Usage;
use crate::store::StoreCeiling;
use crate::suite::LeadflowRun;

/// The whole report, as written to `--report`.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    /// When the run ended (RFC 3339).
    pub(crate) generated_at: String,
    /// `quick` or `full`.
    pub(crate) mode: &'static str,
    /// Where it ran.
    pub(crate) machine: Machine,
    /// How it was sized.
    pub(crate) settings: Settings,
    /// The ceilings measured in the same run.
    pub(crate) ceilings: Ceilings,
    /// Leadflow on SQLite, and on PostgreSQL when a server was given.
    pub(crate) leadflow: Leadflow,
    /// The figures of the table, with ceiling, ratio and target.
    pub(crate) figures: Vec<Figure>,
    /// Figures that could not be measured (e.g. a phase that did not finish in time).
    pub(crate) missing: Vec<String>,
    /// Phases in which some requests failed: `label: count (first error)`.
    pub(crate) failed: Vec<String>,
}

/// The machine the run was on.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    /// Logical CPUs available to the process.
    pub(crate) cpus: usize,
    /// The CPU model (`/proc/cpuinfo`).
    pub(crate) cpu_model: Option<String>,
    /// Total memory (`/proc/meminfo`), in bytes.
    pub(crate) memory_bytes: Option<u64>,
    /// `release` or `debug`.
    pub(crate) build: &'static str,
}

impl Machine {
    /// This machine.
    pub(crate) fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_bytes = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| {
                l.trim_start_matches("MemTotal:")
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(|kib| kib * 1024);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            cpu_model,
            memory_bytes,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
        }
    }
}

/// The run's sizes and pacing.
#[derive(Debug, Serialize)]
pub(crate) struct Settings {
    /// Activities ingested by the batch phase.
    pub(crate) activities: u64,
    /// Leads.
    pub(crate) leads: u64,
    /// Requests in flight in the closed-loop unary phases.
    pub(crate) concurrency: usize,
    /// `Batch` calls (and ceiling writers) in flight.
    pub(crate) batch_concurrency: usize,
    /// `Batch` calls in flight in the PostgreSQL run's batch phase.
    pub(crate) postgres_batch_concurrency: usize,
    /// Requests in flight at most in the fixed-rate phases.
    pub(crate) fixed_rate_workers: usize,
    /// Ids per `BatchGetScores` call.
    pub(crate) batch_ids: u64,
    /// Length of each rate phase, in seconds.
    pub(crate) duration_secs: f64,
    /// Bound on each count-bound phase, in seconds.
    pub(crate) phase_timeout_secs: f64,
    /// The fixed offered rate (half the echo's maximum), requests per second.
    pub(crate) fixed_rate: f64,
}

/// The ceilings.
#[derive(Debug, Serialize)]
pub(crate) struct Ceilings {
    /// Bare echo, closed loop at `concurrency` in flight.
    pub(crate) echo: Phase,
    /// Bare echo at the fixed rate (half its maximum).
    pub(crate) echo_fixed: Phase,
    /// Bare echo, one request in flight.
    pub(crate) echo_one: Phase,
    /// Echo through Leadflow's server stack, closed loop.
    pub(crate) echo_stack: Phase,
    /// Echo through Leadflow's server stack, one request in flight.
    pub(crate) echo_stack_one: Phase,
    /// Raw SQLite inserts.
    pub(crate) sqlite_insert: StoreCeiling,
    /// Raw PostgreSQL inserts, `batch_concurrency` writers.
    pub(crate) postgresql_insert: Option<StoreCeiling>,
    /// Raw PostgreSQL inserts with as many writers as the PostgreSQL batch phase has calls in
    /// flight (when that differs).
    pub(crate) postgresql_insert_serial: Option<StoreCeiling>,
}

/// Leadflow's runs.
#[derive(Debug, Serialize)]
pub(crate) struct Leadflow {
    /// On SQLite (every figure).
    pub(crate) sqlite: LeadflowRun,
    /// On PostgreSQL (ingestion and end to end).
    pub(crate) postgresql: Option<LeadflowRun>,
}

/// What a figure is compared with.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Reference {
    /// What the ceiling is.
    pub(crate) name: String,
    /// Its value, in the figure's unit.
    pub(crate) value: f64,
}

/// One row of the table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figure {
    /// Stable key, e.g. `scoring.get_score_rps`.
    pub(crate) id: &'static str,
    /// What it is.
    pub(crate) name: String,
    /// The measured value.
    pub(crate) value: f64,
    /// Its unit.
    pub(crate) unit: &'static str,
    /// The ceiling it is compared with.
    pub(crate) ceiling: Option<Reference>,
    /// value / ceiling.
    pub(crate) ratio: Option<f64>,
    /// The target, in words.
    pub(crate) target: Option<String>,
    /// Whether the target is met.
    pub(crate) met: Option<bool>,
}

/// The targets.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// At least this share of the ceiling.
    RatioAtLeast(f64),
    /// At most this multiple of the ceiling.
    RatioAtMost(f64),
    /// At least this value.
    AtLeast(f64),
    /// At most this value.
    AtMost(f64),
    /// At most the ceiling plus this much.
    WithinAbove(f64),
}

impl Figure {
    /// A figure compared with `ceiling` against `target`.
    fn new(
        id: &'static str,
        name: String,
        value: f64,
        unit: &'static str,
        ceiling: Option<(String, f64)>,
        target: Option<Target>,
    ) -> Self {
        let ratio = ceiling
            .as_ref()
            .and_then(|(_, c)| (*c > 0.0).then(|| value / c));
        let ceiling_value = ceiling.as_ref().map(|(_, c)| *c);
        let (target_text, met) = match target {
            None => (None, None),
            Some(Target::RatioAtLeast(r)) => (
                Some(format!("≥ {:.0}% of ceiling", r * 100.0)),
                ratio.map(|x| x >= r),
            ),
            Some(Target::RatioAtMost(r)) => {
                (Some(format!("≤ {r}× ceiling")), ratio.map(|x| x <= r))
            }
            Some(Target::AtLeast(v)) => {
                (Some(format!("≥ {} {unit}", thousands(v))), Some(value >= v))
            }
            Some(Target::AtMost(v)) => {
                (Some(format!("< {} {unit}", thousands(v))), Some(value < v))
            }
            Some(Target::WithinAbove(d)) => (
                Some(format!("≤ ceiling + {d:.0} {unit}")),
                ceiling_value.map(|c| value <= c + d),
            ),
        };
        Self {
            id,
            name,
            value,
            unit,
            ceiling: ceiling.map(|(name, value)| Reference { name, value }),
            ratio,
            target: target_text,
            met,
        }
    }
}

/// What the end-to-end phase cost the suite process per activity: CPU time, and bytes written
/// to storage where the kernel accounts them. The bytes are exact from run to run (three runs
/// of one binary: 25,754–25,831 B), so a change in the writes shows even when the rates hide it
/// in the machine's noise; the CPU moved by ±10% over the same runs.
fn cost_per_activity(activities: u64, usage: Usage) -> Vec<Figure> {
    #[allow(clippy::cast_precision_loss)]
    let activities = activities.max(1) as f64;
    let mut out = vec![Figure::new(
        "pipeline.cpu_us_per_activity",
        format!(
            "End to end: the suite's CPU per activity ({:.1} s of CPU, user and system, all four services)",
            usage.cpu_seconds
        ),
        usage.cpu_seconds * 1e6 / activities,
        "µs",
        None,
        None,
    )];
    if let Some(bytes) = usage.bytes_written {
        #[allow(clippy::cast_precision_loss)]
        let bytes = bytes as f64;
        out.push(Figure::new(
            "pipeline.bytes_written_per_activity",
            format!(
                "End to end: bytes the suite wrote to storage per activity ({:.2} GB, WAL and checkpoints)",
                bytes / 1e9
            ),
            bytes / activities,
            "B",
            None,
            None,
        ));
    }
    out
}

/// What the closed-loop `Track` phase cost the suite process per call, until its activities were
/// drained: ingestion's share and the downstream work each activity sets off. No target; like
/// [`cost_per_activity`] it shows a saving on this path that `Track`'s noisy rate hides.
fn cost_per_track(calls: u64, usage: Usage) -> Figure {
    #[allow(clippy::cast_precision_loss)]
    let calls = calls.max(1) as f64;
    Figure::new(
        "ingestion.track_cpu_us_per_call",
        format!(
            "Track: the suite's CPU per call, drained ({:.1} s of CPU, all four services)",
            usage.cpu_seconds
        ),
        usage.cpu_seconds * 1e6 / calls,
        "µs",
        None,
        None,
    )
}

/// The figures of the table, from the ceilings and the runs; names of those not measured go to
/// `missing`.
pub(crate) fn figures(
    ceilings: &Ceilings,
    sqlite: &LeadflowRun,
    postgresql: Option<&LeadflowRun>,
    missing: &mut Vec<String>,
) -> Vec<Figure> {
    let mut out = Vec::new();
    let echo = &ceilings.echo;
    let echo_rps = ("echo req/s".to_owned(), echo.rate);
    let sqlite_insert = (
        "SQLite INSERT rows/s".to_owned(),
        ceilings.sqlite_insert.phase.items_per_sec,
    );
    out.push(Figure::new(
        "ingestion.batch_activities_per_sec",
        format!(
            "Batch (100 activities/call, {} in flight), activities/s",
            sqlite.batch.workers
        ),
        sqlite.batch.items_per_sec,
        "/s",
        Some(sqlite_insert.clone()),
        Some(Target::RatioAtLeast(0.5)),
    ));
    match &sqlite.track {
        Some(track) => {
            out.push(Figure::new(
                "ingestion.track_rps",
                format!("Track ({} in flight), req/s", track.workers),
                track.rate,
                "/s",
                Some(echo_rps.clone()),
                Some(Target::RatioAtLeast(0.6)),
            ));
            // No target, but the price of the throughput: a write waits for its commit, and
            // the commit that crosses the WAL's checkpoint threshold carries the checkpoint.
            out.push(Figure::new(
                "ingestion.track_p99_us",
                format!("Track p99 ({} in flight)", track.workers),
                track.latency.p99_us,
                "µs",
                Some(("echo p99, same concurrency".to_owned(), echo.latency.p99_us)),
                None,
            ));
            if let Some(usage) = sqlite.track_usage {
                out.push(cost_per_track(track.items, usage));
            }
        }
        None => missing.push("Track".into()),
    }
    if let Some(one) = &sqlite.track_one {
        // No target: the latency a caller sees when its write is the only one, its commit
        // shared with nobody.
        out.push(Figure::new(
            "ingestion.track_p50_one_in_flight_us",
            "Track p50, one in flight".to_owned(),
            one.latency.p50_us,
            "µs",
            Some((
                "echo p50, one in flight".to_owned(),
                ceilings.echo_one.latency.p50_us,
            )),
            None,
        ));
    }
    match &sqlite.end_to_end {
        Some(e2e) => out.push(Figure::new(
            "pipeline.end_to_end_activities_per_sec",
            format!(
                "End to end until drained ({} activities), activities/s",
                e2e.activities
            ),
            e2e.activities_per_sec,
            "/s",
            Some(sqlite_insert.clone()),
            Some(Target::AtLeast(20_000.0)),
        )),
        None => missing.push("end to end (not drained in time)".into()),
    }
    match sqlite
        .end_to_end
        .as_ref()
        .and_then(|e2e| Some((e2e, e2e.usage?)))
    {
        Some((e2e, usage)) => out.extend(cost_per_activity(e2e.activities, usage)),
        None => missing.push("the suite's CPU and writes end to end".into()),
    }
    if let Some(get) = &sqlite.get_score_max {
        out.push(Figure::new(
            "scoring.get_score_rps",
            format!("GetScore ({} in flight), req/s", get.workers),
            get.rate,
            "/s",
            Some(echo_rps.clone()),
            Some(Target::RatioAtLeast(0.7)),
        ));
    }
    if let Some(fixed) = &sqlite.get_score_fixed {
        let rate = fixed.offered_rate.unwrap_or_default();
        let saturated = if fixed.saturated { ", SATURATED" } else { "" };
        out.push(Figure::new(
            "scoring.get_score_p50_fixed_rate_us",
            format!("GetScore p50 at {}/s offered{saturated}", thousands(rate)),
            fixed.latency.p50_us,
            "µs",
            Some((
                "echo p50 at that rate".to_owned(),
                ceilings.echo_fixed.latency.p50_us,
            )),
            None,
        ));
        out.push(Figure::new(
            "scoring.get_score_p99_fixed_rate_us",
            format!("GetScore p99 at {}/s offered{saturated}", thousands(rate)),
            fixed.latency.p99_us,
            "µs",
            Some((
                "echo p99 at that rate".to_owned(),
                ceilings.echo_fixed.latency.p99_us,
            )),
            Some(Target::RatioAtMost(1.5)),
        ));
    }
    if let Some(one) = &sqlite.get_score_one {
        out.push(Figure::new(
            "scoring.get_score_p50_one_in_flight_us",
            "GetScore p50, one in flight".to_owned(),
            one.latency.p50_us,
            "µs",
            Some((
                "echo p50, one in flight".to_owned(),
                ceilings.echo_one.latency.p50_us,
            )),
            Some(Target::WithinAbove(150.0)),
        ));
    }
    if sqlite.get_score_max.is_none() {
        missing.push("GetScore".into());
    }
    match &sqlite.batch_get_scores_max {
        Some(batch) => {
            out.push(Figure::new(
                "scoring.batch_get_scores_rps",
                format!(
                    "BatchGetScores ({} ids/call, {} in flight), req/s",
                    sqlite.batch_get_scores_ids, batch.workers
                ),
                batch.rate,
                "/s",
                Some(echo_rps.clone()),
                None,
            ));
            out.push(Figure::new(
                "scoring.batch_get_scores_ids_per_sec",
                "BatchGetScores, lead ids/s".to_owned(),
                batch.items_per_sec,
                "/s",
                sqlite
                    .get_score_max
                    .as_ref()
                    .map(|g| ("GetScore req/s".to_owned(), g.rate)),
                None,
            ));
        }
        None => missing.push("BatchGetScores".into()),
    }
    if let Some(fixed) = &sqlite.batch_get_scores_fixed {
        let rate = thousands(fixed.offered_rate.unwrap_or_default());
        out.push(Figure::new(
            "scoring.batch_get_scores_p50_fixed_rate_us",
            format!("BatchGetScores p50 at {rate}/s offered (half its max)"),
            fixed.latency.p50_us,
            "µs",
            None,
            None,
        ));
        out.push(Figure::new(
            "scoring.batch_get_scores_p99_fixed_rate_us",
            format!("BatchGetScores p99 at {rate}/s offered (half its max)"),
            fixed.latency.p99_us,
            "µs",
            None,
            None,
        ));
    }
    match &sqlite.rescore {
        Some(rescore) => out.push(Figure::new(
            "scoring.rescore_facts_per_sec",
            format!(
                "Rescore: {} facts ({} leads) in {:.2} s; 1M facts ≈ {:.1} s, facts/s",
                thousands_u(rescore.facts),
                thousands_u(u64::try_from(rescore.leads).unwrap_or(0)),
                rescore.seconds,
                1_000_000.0 / rescore.facts_per_sec.max(1e-9)
            ),
            rescore.facts_per_sec,
            "/s",
            None,
            Some(Target::AtLeast(100_000.0)),
        )),
        None => missing.push("Rescore (not finished in time)".into()),
    }
    if let Some((rescore, usage)) = sqlite.rescore.as_ref().and_then(|r| Some((r, r.usage?))) {
        #[allow(clippy::cast_precision_loss)]
        let per_fact = usage.cpu_seconds * 1e9 / rescore.facts.max(1) as f64;
        out.push(Figure::new(
            "scoring.rescore_cpu_ns_per_fact",
            format!(
                "Rescore: the suite's CPU per fact ({:.2} s of CPU)",
                usage.cpu_seconds
            ),
            per_fact,
            "ns",
            None,
            None,
        ));
    }
    match sqlite.peak_rss_bytes {
        Some(bytes) => {
            #[allow(clippy::cast_precision_loss)]
            let mib = bytes as f64 / (1024.0 * 1024.0);
            out.push(Figure::new(
                "suite.peak_rss_mib",
                format!(
                    "Peak RSS of the suite process after the load (VmHWM; {} MiB once it listened)",
                    sqlite
                        .rss_at_start_bytes
                        .map_or("?".to_owned(), |b| (b / (1024 * 1024)).to_string())
                ),
                mib,
                "MiB",
                None,
                Some(Target::AtMost(512.0)),
            ));
        }
        None => missing.push("peak RSS".into()),
    }
    if let Some(pg) = postgresql {
        if let Some(insert) = &ceilings.postgresql_insert {
            out.push(Figure::new(
                "postgresql.batch_activities_per_sec",
                format!(
                    "PostgreSQL: Batch (100 activities/call, {} in flight), activities/s",
                    pg.batch.workers
                ),
                pg.batch.items_per_sec,
                "/s",
                Some((
                    "PostgreSQL INSERT rows/s".to_owned(),
                    insert.phase.items_per_sec,
                )),
                Some(Target::RatioAtLeast(0.5)),
            ));
        }
        if let (Some(probe), Some(insert)) = (&pg.contention, &ceilings.postgresql_insert) {
            out.push(Figure::new(
                "postgresql.batch_contended_activities_per_sec",
                format!(
                    "PostgreSQL: Batch, {} in flight for {:.0} s: {} calls retried after a server error, {} failed; activities/s",
                    probe.phase.workers,
                    probe.phase.seconds,
                    probe.retries,
                    probe.phase.errors
                ),
                probe.phase.items_per_sec,
                "/s",
                Some((
                    "PostgreSQL INSERT rows/s".to_owned(),
                    insert.phase.items_per_sec,
                )),
                Some(Target::RatioAtLeast(0.5)),
            ));
        }
        match (&pg.end_to_end, &sqlite.end_to_end) {
            (Some(e2e), sqlite_e2e) => out.push(Figure::new(
                "postgresql.end_to_end_activities_per_sec",
                format!(
                    "PostgreSQL: end to end until drained ({} activities), activities/s",
                    e2e.activities
                ),
                e2e.activities_per_sec,
                "/s",
                sqlite_e2e
                    .as_ref()
                    .map(|s| ("SQLite end to end".to_owned(), s.activities_per_sec)),
                Some(Target::RatioAtLeast(0.5)),
            )),
            (None, _) => missing.push("PostgreSQL end to end (not drained in time)".into()),
        }
    }
    out
}

/// The phases in which some requests failed, as `label: count (first error)`.
pub(crate) fn failed_phases(
    ceilings: &Ceilings,
    sqlite: &LeadflowRun,
    postgresql: Option<&LeadflowRun>,
) -> Vec<String> {
    let mut phases: Vec<&Phase> = vec![
        &ceilings.echo,
        &ceilings.echo_fixed,
        &ceilings.echo_one,
        &ceilings.echo_stack,
        &ceilings.echo_stack_one,
        &ceilings.sqlite_insert.phase,
    ];
    phases.extend(ceilings.postgresql_insert.as_ref().map(|c| &c.phase));
    phases.extend(ceilings.postgresql_insert_serial.as_ref().map(|c| &c.phase));
    for run in std::iter::once(sqlite).chain(postgresql) {
        phases.extend([&run.identify, &run.batch]);
        phases.extend(run.contention.as_ref().map(|c| &c.phase));
        phases.extend(
            [
                &run.track,
                &run.track_one,
                &run.get_score_max,
                &run.get_score_fixed,
                &run.get_score_one,
                &run.batch_get_scores_max,
                &run.batch_get_scores_fixed,
            ]
            .into_iter()
            .flatten(),
        );
    }
    phases
        .into_iter()
        .filter(|p| p.errors > 0)
        .map(|p| {
            format!(
                "{}: {} failed ({})",
                p.label,
                p.errors,
                p.first_error.as_deref().unwrap_or("?")
            )
        })
        .collect()
}

/// `12345.6` as `12,346`.
pub(crate) fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let rounded = value.abs().round() as u64;
    let sign = if value < 0.0 { "-" } else { "" };
    format!("{sign}{}", thousands_u(rounded))
}

/// `12345` as `12,345`.
fn thousands_u(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value in its unit for the table.
fn show(value: f64, unit: &str) -> String {
    match unit {
        "/s" => format!("{}/s", thousands(value)),
        "µs" => format!("{} µs", thousands(value)),
        "ns" => format!("{} ns", thousands(value)),
        "B" => format!("{} B", thousands(value)),
        "MiB" => format!("{value:.0} MiB"),
        _ => format!("{value:.2} {unit}"),
    }
}

/// The table as text (Markdown, so it can be pasted as is).
pub(crate) fn table(report: &Report) -> String {
    let mut out = String::new();
    let c = &report.ceilings;
    out.push_str("\nCeilings (same run, same load generator, loopback)\n\n");
    out.push_str("| ceiling | value |\n|---|---|\n");
    let mut line = |name: String, value: String| {
        out.push_str(&format!("| {name} | {value} |\n"));
    };
    line(
        format!("echo, {} in flight (bare tonic)", c.echo.workers),
        format!(
            "{} req/s, p50 {} µs, p99 {} µs",
            thousands(c.echo.rate),
            thousands(c.echo.latency.p50_us),
            thousands(c.echo.latency.p99_us)
        ),
    );
    line(
        format!(
            "echo at {}/s offered (half its max)",
            thousands(c.echo_fixed.offered_rate.unwrap_or_default())
        ),
        format!(
            "p50 {} µs, p99 {} µs, p99.9 {} µs",
            thousands(c.echo_fixed.latency.p50_us),
            thousands(c.echo_fixed.latency.p99_us),
            thousands(c.echo_fixed.latency.p999_us)
        ),
    );
    line(
        "echo, one in flight".to_owned(),
        format!(
            "p50 {} µs, p99 {} µs",
            thousands(c.echo_one.latency.p50_us),
            thousands(c.echo_one.latency.p99_us)
        ),
    );
    line(
        format!(
            "echo through Leadflow's server stack, {} in flight",
            c.echo_stack.workers
        ),
        format!(
            "{} req/s, p50 {} µs; one in flight p50 {} µs",
            thousands(c.echo_stack.rate),
            thousands(c.echo_stack.latency.p50_us),
            thousands(c.echo_stack_one.latency.p50_us)
        ),
    );
    for insert in std::iter::once(&c.sqlite_insert)
        .chain(c.postgresql_insert.as_ref())
        .chain(c.postgresql_insert_serial.as_ref())
    {
        line(
            format!(
                "{} INSERT, {} rows/transaction, {} writer{}",
                insert.backend,
                insert.rows_per_transaction,
                insert.phase.workers,
                if insert.phase.workers == 1 { "" } else { "s" }
            ),
            format!(
                "{} rows/s ({} rows in {:.1} s)",
                thousands(insert.phase.items_per_sec),
                thousands_u(insert.phase.items),
                insert.phase.seconds
            ),
        );
    }
    out.push_str("\nLeadflow against its ceilings and the issue's targets\n\n");
    out.push_str("| figure | Leadflow | ceiling | ratio | target | met |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for f in &report.figures {
        let ceiling = f.ceiling.as_ref().map_or("—".to_owned(), |c| {
            format!("{} ({})", show(c.value, f.unit), c.name)
        });
        let ratio = f.ratio.map_or("—".to_owned(), |r| format!("{r:.2}×"));
        let met = match f.met {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "—",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            f.name,
            show(f.value, f.unit),
            ceiling,
            ratio,
            f.target.as_deref().unwrap_or("—"),
            met
        ));
    }
    for run in std::iter::once(&report.leadflow.sqlite).chain(report.leadflow.postgresql.as_ref()) {
        if run.batch_retries > 0 {
            out.push_str(&format!(
                "\n{}: {} Batch calls failed and were retried (first failure: {})\n",
                run.backend,
                run.batch_retries,
                run.batch_retry_reason.as_deref().unwrap_or("?")
            ));
        }
    }
    for failed in &report.failed {
        out.push_str(&format!("\nFAILED REQUESTS in {failed}\n"));
    }
    if !report.missing.is_empty() {
        out.push_str(&format!("\nNot measured: {}\n", report.missing.join(", ")));
    }
    out
}

/// Writes the report as pretty JSON to `path`, creating its folder.
pub(crate) fn write(report: &Report, path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(path, json).with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_separators() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1000.0), "-1,000");
    }

    #[test]
    fn targets_are_judged() {
        let f = Figure::new(
            "x",
            "x".into(),
            40.0,
            "/s",
            Some(("c".into(), 100.0)),
            Some(Target::RatioAtLeast(0.5)),
        );
        assert_eq!(f.met, Some(false));
        let f = Figure::new(
            "x",
            "x".into(),
            240.0,
            "µs",
            Some(("c".into(), 100.0)),
            Some(Target::WithinAbove(150.0)),
        );
        assert_eq!(f.met, Some(true));
    }

    #[test]
    fn a_phase_cost_is_shared_out_per_activity() {
        let usage = Usage {
            cpu_seconds: 0.5,
            bytes_written: Some(2_000_000),
        };
        let figures = cost_per_activity(1_000, usage);
        let per: Vec<(&str, f64)> = figures.iter().map(|f| (f.id, f.value)).collect();
        assert_eq!(
            per,
            [
                ("pipeline.cpu_us_per_activity", 500.0),
                ("pipeline.bytes_written_per_activity", 2_000.0)
            ]
        );
        assert_eq!(show(figures[1].value, figures[1].unit), "2,000 B");
        let unaccounted = Usage {
            bytes_written: None,
            ..usage
        };
        let figures = cost_per_activity(1_000, unaccounted);
        assert_eq!(figures.len(), 1, "no bytes figure without I/O accounting");
    }

    #[test]
    fn a_track_phase_cost_is_shared_out_per_call() {
        let usage = Usage {
            cpu_seconds: 1.5,
            bytes_written: None,
        };
        let figure = cost_per_track(5_000, usage);
        assert_eq!(
            (figure.id, figure.value),
            ("ingestion.track_cpu_us_per_call", 300.0)
        );
        assert_eq!(show(figure.value, figure.unit), "300 µs");
    }
}
