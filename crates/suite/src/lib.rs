//! The four services in one process, as `leadflow up` runs them and the benchmark measures
//! them: every service's public API on the caller's runtime; what drains ingestion's outbox
//! (its relay, then scoring's, qualification's and handoff's internal RPCs, relays, sweepers
//! and stores) on a runtime of lower priority ([`leadflow_runtime::background`]), so that in
//! one process the callers' writes are acknowledged and their reads answered first, and the
//! drain catches up behind the outbox. Each service runs the code its own binary runs: its
//! `serve` is the same function on one runtime.

use anyhow::Context;
use leadflow_runtime::background::Background;
use leadflow_runtime::clock::SharedClock;
use leadflow_runtime::shutdown::cancel_on_error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Name of the drain runtime's threads.
const DRAIN_THREAD_NAME: &str = "leadflow-drain";

/// Each service's configuration.
#[derive(Debug, Clone)]
pub struct Configs {
    /// Ingestion's.
    pub ingestion: leadflow_ingestion::Config,
    /// Scoring's.
    pub scoring: leadflow_scoring::Config,
    /// Qualification's.
    pub qualification: leadflow_qualification::Config,
    /// Handoff's.
    pub handoff: leadflow_handoff::Config,
}

/// Each service's bound listener.
#[derive(Debug)]
pub struct Listeners {
    /// Ingestion's.
    pub ingestion: TcpListener,
    /// Scoring's.
    pub scoring: TcpListener,
    /// Qualification's.
    pub qualification: TcpListener,
    /// Handoff's.
    pub handoff: TcpListener,
}

/// Runs the four services until `shutdown` fires, then waits for each to stop. A service that
/// fails (or panics) cancels `shutdown`, so the others stop too, and its error is returned,
/// named after it.
pub async fn run(
    configs: Configs,
    listeners: Listeners,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let drain = Background::start(DRAIN_THREAD_NAME, cpus())
        .context("start the drain runtime")
        .inspect_err(|_| shutdown.cancel())?;
    let ingestion = tokio::spawn(cancel_on_error(
        leadflow_ingestion::serve_with_relay_on(
            configs.ingestion,
            listeners.ingestion,
            clock.clone(),
            shutdown.clone(),
            drain.handle().clone(),
        ),
        shutdown.clone(),
    ));
    let scoring = tokio::spawn(cancel_on_error(
        leadflow_scoring::serve_with_drain_on(
            configs.scoring,
            listeners.scoring,
            clock.clone(),
            shutdown.clone(),
            drain.handle().clone(),
        ),
        shutdown.clone(),
    ));
    let qualification = tokio::spawn(cancel_on_error(
        leadflow_qualification::serve_with_drain_on(
            configs.qualification,
            listeners.qualification,
            clock.clone(),
            shutdown.clone(),
            drain.handle().clone(),
        ),
        shutdown.clone(),
    ));
    let handoff = tokio::spawn(cancel_on_error(
        leadflow_handoff::serve_with_drain_on(
            configs.handoff,
            listeners.handoff,
            clock,
            shutdown.clone(),
            drain.handle().clone(),
        ),
        shutdown,
    ));
    let (ingestion, scoring, qualification, handoff) =
        tokio::join!(ingestion, scoring, qualification, handoff);
    drop(drain);
    ingestion
        .context("ingestion's task")?
        .context("ingestion")?;
    scoring.context("scoring's task")?.context("scoring")?;
    qualification
        .context("qualification's task")?
        .context("qualification")?;
    handoff.context("handoff's task")?.context("handoff")?;
    Ok(())
}

/// The CPUs this process may use: the drain runtime's worker threads.
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}
