//! The suite's own process: the bench binary run again with `--serve-suite`, serving the four
//! services as `leadflow up` does, each on a port-0 loopback listener and its own database,
//! until its standard input closes. The measured suite then has its own runtime, threads and
//! memory, as it has in production: the load generator neither shares its two tokio workers
//! nor counts in its resident memory.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::{SharedClock, SystemClock};
use leadflow_runtime::outbox::OutboxArgs;
use tokio_util::sync::CancellationToken;

use crate::suite::Databases;

/// The first word of the line the suite process prints once it listens.
pub(crate) const READY: &str = "leadflow-bench-suite-ready";

/// How often the background sweepers would run: once an hour, so none runs during a
/// measurement.
const TICK_MS: u64 = 3_600_000;

/// The addresses the suite process listens on, as its ready line gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Addresses {
    /// Ingestion's address.
    pub(crate) ingestion: SocketAddr,
    /// Scoring's address.
    pub(crate) scoring: SocketAddr,
}

impl Addresses {
    /// The ready line announcing these addresses.
    fn ready_line(&self) -> String {
        format!("{READY} {} {}", self.ingestion, self.scoring)
    }

    /// The addresses a ready line announces, `None` for any other line (a log line).
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let mut words = line.split_whitespace();
        if words.next()? != READY {
            return None;
        }
        let ingestion = words.next()?.parse().ok()?;
        let scoring = words.next()?.parse().ok()?;
        Some(Self { ingestion, scoring })
    }
}

/// Serves the four services on `databases` (system clock, default outbox settings,
/// development-mode auth) until standard input closes or a service fails, announcing the
/// addresses on standard output first.
pub(crate) async fn serve(databases: Databases) -> anyhow::Result<()> {
    let bind = || tokio::net::TcpListener::bind("127.0.0.1:0");
    let (ingestion_l, scoring_l, qualification_l, handoff_l) =
        (bind().await?, bind().await?, bind().await?, bind().await?);
    let ingestion = ingestion_l.local_addr()?;
    let scoring = scoring_l.local_addr()?;
    let qualification = qualification_l.local_addr()?;
    let handoff = handoff_l.local_addr()?;
    let data_dir = std::env::temp_dir();
    let outbox = OutboxArgs::default();
    let auth = AuthArgs::default();
    let max_connections = 10;
    let ingestion_config = leadflow_ingestion::Config {
        listen_addr: ingestion,
        database_url: Some(databases.ingestion.clone()),
        data_dir: data_dir.clone(),
        database_max_connections: max_connections,
        scoring_url: format!("http://{scoring}"),
        auth: auth.clone(),
        outbox: outbox.clone(),
    };
    let scoring_config = leadflow_scoring::Config {
        listen_addr: scoring,
        database_url: Some(databases.scoring.clone()),
        data_dir: data_dir.clone(),
        database_max_connections: max_connections,
        qualification_url: format!("http://{qualification}"),
        sweep_interval_ms: TICK_MS,
        auth: auth.clone(),
        outbox: outbox.clone(),
    };
    let qualification_config = leadflow_qualification::Config {
        listen_addr: qualification,
        database_url: Some(databases.qualification.clone()),
        data_dir: data_dir.clone(),
        database_max_connections: max_connections,
        handoff_url: format!("http://{handoff}"),
        recycle_interval_ms: TICK_MS,
        auth: auth.clone(),
        outbox: outbox.clone(),
    };
    let handoff_config = leadflow_handoff::Config {
        listen_addr: handoff,
        database_url: Some(databases.handoff.clone()),
        data_dir,
        database_max_connections: max_connections,
        ingestion_url: format!("http://{ingestion}"),
        scoring_url: format!("http://{scoring}"),
        qualification_url: format!("http://{qualification}"),
        sla_sweep_interval_ms: TICK_MS,
        webhook_poll_ms: 1_000,
        auth,
        outbox,
    };
    let stop = CancellationToken::new();
    stop_when_stdin_closes(stop.clone());
    println!("{}", Addresses { ingestion, scoring }.ready_line());
    let clock: SharedClock = Arc::new(SystemClock);
    let stop_all = |result: anyhow::Result<()>| {
        if result.is_err() {
            stop.cancel();
        }
        result
    };
    let (i, s, q, h) = tokio::join!(
        async {
            stop_all(
                leadflow_ingestion::serve(
                    ingestion_config,
                    ingestion_l,
                    clock.clone(),
                    stop.clone(),
                )
                .await,
            )
        },
        async {
            stop_all(
                leadflow_scoring::serve(scoring_config, scoring_l, clock.clone(), stop.clone())
                    .await,
            )
        },
        async {
            stop_all(
                leadflow_qualification::serve(
                    qualification_config,
                    qualification_l,
                    clock.clone(),
                    stop.clone(),
                )
                .await,
            )
        },
        async {
            stop_all(
                leadflow_handoff::serve(handoff_config, handoff_l, clock.clone(), stop.clone())
                    .await,
            )
        },
    );
    i.context("ingestion")?;
    s.context("scoring")?;
    q.context("qualification")?;
    h.context("handoff")?;
    Ok(())
}

/// Cancels `stop` once standard input reaches its end: the bench closes it to stop the suite,
/// and it closes by itself if the bench dies, so no suite outlives its run.
fn stop_when_stdin_closes(stop: CancellationToken) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
        stop.cancel();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ready_line_reads_back_and_log_lines_are_not_ready_lines() {
        let addresses = Addresses {
            ingestion: "127.0.0.1:4001".parse().expect("addr"),
            scoring: "127.0.0.1:4002".parse().expect("addr"),
        };
        assert_eq!(Addresses::parse(&addresses.ready_line()), Some(addresses));
        assert_eq!(
            Addresses::parse("2026-12-01T14:00:00Z WARN scoring: slow"),
            None
        );
        assert_eq!(Addresses::parse(READY), None);
    }
}
