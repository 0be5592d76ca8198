//! `leadflow demo`: plays the seeds' story on the suite and prints the journey as it happens.
//!
//! Dana, a marketing manager at a software company, downloads a guide, opens three e-mails and
//! visits pricing twice: an MQL. An SDR accepts her; she asks to talk, states a need, a
//! timeline and a budget: an SQL, handed to an account executive with its warm context, who
//! contacts her within the SLA and wins the deal. Beside her a student and a lead gone cold
//! stay leads, and an SDR rejects an MQL that is not the ideal customer. The demo ends with
//! Dana's recorded history and the funnel.

mod clients;
mod explain;
mod handoffs;
mod journey;
mod labels;
mod lead;
mod print;
mod report;
mod setup;
mod story;
mod wait;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::{Suite, SuiteArgs};
use clients::Clients;
use print::Printer;

/// How long the suite may take to stop at the end.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// The flags of `leadflow demo`: those of `up`, and where the suite and its data come from.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// Folder of the services' SQLite files; by default a fresh temporary folder, so every run
    /// starts clean (unlike `up`, LEADFLOW_DATA_DIR is not read). A given folder is kept.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the temporary data folder at the end instead of removing it.
    #[arg(long)]
    keep_data: bool,
    /// Play on a suite already running at the base port (e.g. `leadflow up`) instead of
    /// starting one in this process.
    #[arg(long)]
    attach: bool,
    /// The tenant API key to call with when the suite has keys (by default the first of
    /// --api-keys).
    #[arg(long)]
    api_key: Option<String>,
    #[command(flatten)]
    suite: SuiteArgs,
}

/// Runs the demo: on a running suite with `--attach`, otherwise on one started here.
pub(crate) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let out = Printer::new();
    let key = args
        .api_key
        .clone()
        .or_else(|| first_key(&args.suite.auth.api_keys));
    if args.attach {
        let addrs = args.suite.addrs()?;
        out.line(format!(
            "leadflow demo: playing the seeds' story on the suite at {} (ingestion) to {} (handoff)",
            addrs.ingestion, addrs.handoff
        ));
        let clients = Clients::connect(addrs, key.as_deref())?;
        return journey::play(clients, &out)
            .await
            .context("the demo (is the suite running? `leadflow up` starts it)");
    }
    let (data_dir, temporary) = match &args.data_dir {
        Some(dir) => (dir.clone(), false),
        None => (fresh_folder()?, true),
    };
    let played = on_own_suite(&args, &data_dir, key.as_deref(), &out).await;
    if temporary && !args.keep_data {
        if let Err(err) = std::fs::remove_dir_all(&data_dir) {
            out.line(format!("could not remove {}: {err}", data_dir.display()));
        }
    } else {
        out.line(format!("\nthe data is kept in {}", data_dir.display()));
    }
    played
}

/// Starts the suite in this process on `data_dir`, plays the story on it, and stops it; Ctrl-C
/// stops both.
async fn on_own_suite(
    args: &DemoArgs,
    data_dir: &Path,
    key: Option<&str>,
    out: &Printer,
) -> anyhow::Result<()> {
    let shutdown = leadflow_runtime::shutdown::on_signal();
    let suite = Suite::start(&args.suite, data_dir, shutdown.clone())
        .await
        .context("start the suite (if `leadflow up` is running, add --attach)")?;
    out.line("leadflow demo: the seeds' story, on the suite started in this process");
    suite.print_listing();
    let clients = Clients::connect(suite.addrs, key)?;
    let played = tokio::select! {
        played = journey::play(clients, out) => played,
        () = shutdown.cancelled() => Err(anyhow::anyhow!("the suite stopped before the story ended")),
    };
    shutdown.cancel();
    let stopped = tokio::time::timeout(STOP_LIMIT, suite.wait())
        .await
        .with_context(|| format!("the suite did not stop within {}s", STOP_LIMIT.as_secs()))
        .and_then(|stopped| stopped);
    // A service's own failure explains a story cut short better than the story's error.
    stopped.and(played)
}

/// The key of the first `tenant=key` entry, if any.
fn first_key(api_keys: &[String]) -> Option<String> {
    api_keys
        .first()
        .and_then(|entry| entry.split_once('='))
        .map(|(_, key)| key.trim().to_owned())
}

/// A new, empty folder under the system's temporary folder.
fn fresh_folder() -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "leadflow-demo-{}-{:x}",
        std::process::id(),
        nanos % (1 << 40)
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    Ok(dir)
}
