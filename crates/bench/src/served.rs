//! Measured servers in processes of their own: the bench binary run again with `--serve-suite`
//! (the four services as `leadflow up` runs them, each on a port-0 loopback listener and its
//! own database) or `--serve-echo` (an echo ceiling), serving until its standard input closes.
//! A measured server then has its own runtime, threads and memory, as it has in production,
//! and the echo ceilings and Leadflow are measured across the same process boundary: the load
//! generator neither shares a server's tokio workers nor counts in its resident memory.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::{SharedClock, SystemClock};
use leadflow_runtime::outbox::OutboxArgs;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::echo;
use crate::suite::Databases;

/// The first word of the line a server process prints once it listens, before its addresses.
const READY: &str = "leadflow-bench-ready";

/// How often the background sweepers would run: once an hour, so none runs during a
/// measurement.
const TICK_MS: u64 = 3_600_000;

/// The line announcing that a server process listens on `addrs`.
fn ready_line(addrs: &[SocketAddr]) -> String {
    let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
    format!("{READY} {}", addrs.join(" "))
}

/// The addresses a ready line announces, `None` for any other line (a log line).
fn parse_ready(line: &str) -> Option<Vec<SocketAddr>> {
    let mut words = line.split_whitespace();
    if words.next()? != READY {
        return None;
    }
    let addrs: Vec<SocketAddr> = words.map(str::parse).collect::<Result<_, _>>().ok()?;
    (!addrs.is_empty()).then_some(addrs)
}

/// A server process the bench started, serving until stopped.
#[derive(Debug)]
pub(crate) struct Served {
    /// The addresses it announced, in the order it gives them.
    pub(crate) addrs: Vec<SocketAddr>,
    process: Mutex<Child>,
    pid: Option<u32>,
}

impl Served {
    /// Runs this binary with `args` and waits until it announces where it listens; its log
    /// lines are passed on to standard output.
    pub(crate) async fn start(args: &[&str]) -> anyhow::Result<Self> {
        let mut process = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start a server process")?;
        let stdout = process
            .stdout
            .take()
            .context("the server process has no standard output")?;
        let mut lines = BufReader::new(stdout).lines();
        let addrs = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                match parse_ready(&line) {
                    Some(addrs) => return Ok(addrs),
                    None => println!("{line}"),
                }
            }
            anyhow::bail!("the server process ended before it listened (see its log above)")
        })
        .await
        .context("the server process did not listen within 120 s")??;
        // Its later log lines, passed on; the pipe must be read or the server would block.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                println!("{line}");
            }
        });
        Ok(Self {
            addrs,
            pid: process.id(),
            process: Mutex::new(process),
        })
    }

    /// Stops the server (in-flight work finishes) and waits for its process to exit.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        let mut process = self
            .process
            .into_inner()
            .map_err(|_| anyhow::anyhow!("the server process handle was poisoned"))?;
        drop(process.stdin.take());
        let status = tokio::time::timeout(Duration::from_secs(120), process.wait())
            .await
            .context("the server did not stop within 120 s")??;
        anyhow::ensure!(status.success(), "the server process ended with {status}");
        Ok(())
    }

    /// Fails if the server process has ended (a start-up or store failure).
    pub(crate) fn check_running(&self) -> anyhow::Result<()> {
        let mut process = self
            .process
            .lock()
            .map_err(|_| anyhow::anyhow!("the server process handle was poisoned"))?;
        match process.try_wait()? {
            None => Ok(()),
            Some(status) => anyhow::bail!("the server process ended with {status} (see its log)"),
        }
    }

    /// A `kB` field of the server process's `/proc/<pid>/status` (e.g. `VmHWM:`), in bytes.
    pub(crate) fn memory(&self, field: &str) -> Option<u64> {
        proc_status_bytes(self.pid?, field)
    }

    /// What the server process has used since it started; `None` where `/proc` does not say.
    pub(crate) fn usage(&self) -> Option<Usage> {
        let pid = self.pid?;
        Some(Usage {
            cpu_seconds: proc_cpu_seconds(pid)?,
            bytes_written: proc_io_field(pid, "write_bytes:"),
        })
    }
}

/// A process's resource use so far; two readings bracket a phase. The bytes a phase writes do
/// not depend on the machine at all, so they show a change in the writes exactly; its CPU time
/// moves with the machine nearly as much as its rate does (contended caches and cores).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct Usage {
    /// CPU time, user and system, of all its threads.
    pub(crate) cpu_seconds: f64,
    /// Bytes it caused to be written to storage (`write_bytes` of `/proc/<pid>/io`; a kernel
    /// without per-task I/O accounting does not say).
    pub(crate) bytes_written: Option<u64>,
}

impl Usage {
    /// What was used between `self` and the later reading `later`.
    pub(crate) fn until(self, later: Self) -> Self {
        Self {
            cpu_seconds: (later.cpu_seconds - self.cpu_seconds).max(0.0),
            bytes_written: later
                .bytes_written
                .zip(self.bytes_written)
                .map(|(after, before)| after.saturating_sub(before)),
        }
    }
}

/// The clock ticks `/proc/<pid>/stat` counts CPU time in: Linux's `USER_HZ`, 100 on every
/// architecture Leadflow builds for (it is part of the kernel's ABI, not its tick rate).
const USER_HZ: f64 = 100.0;

/// User plus system CPU time of process `pid`, in seconds (`/proc/<pid>/stat`).
fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_seconds(&stat)
}

/// User plus system time from the text of a `/proc/<pid>/stat`. The command name, second
/// field, is in parentheses and may hold spaces and parentheses itself, so fields are counted
/// from the last `)`: state is the first after it, `utime` and `stime` the 12th and 13th.
fn parse_cpu_seconds(stat: &str) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    #[allow(clippy::cast_precision_loss)] // ticks stay far below 2^52
    Some((user + system) as f64 / USER_HZ)
}

/// A field of `/proc/<pid>/io` (e.g. `write_bytes:`).
fn proc_io_field(pid: u32, field: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    field_value(&io, field)?.parse().ok()
}

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmRSS:`), in bytes.
fn proc_status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = field_value(&status, field)?
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The value of the `field` line (e.g. `VmRSS:`) of a `/proc` file of `name: value` lines.
fn field_value<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    let line = text.lines().find(|l| l.starts_with(field))?;
    Some(line[field.len()..].trim())
}

/// Serves the bare echo (`stack` false) or the echo through Leadflow's server stack until
/// standard input closes, announcing its address first.
pub(crate) async fn serve_echo(stack: bool) -> anyhow::Result<()> {
    let server = if stack {
        echo::serve_stack().await?
    } else {
        echo::serve_bare().await?
    };
    let stop = CancellationToken::new();
    stop_when_stdin_closes(stop.clone());
    println!("{}", ready_line(&[server.addr]));
    stop.cancelled().await;
    server.stop().await
}

/// Serves the four services on `databases` (system clock, default outbox settings,
/// development-mode auth) until standard input closes or a service fails, announcing
/// ingestion's and scoring's addresses on standard output first.
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
        score_cache_leads: leadflow_scoring::DEFAULT_SCORE_CACHE_LEADS,
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
    println!("{}", ready_line(&[ingestion, scoring]));
    let clock: SharedClock = Arc::new(SystemClock);
    let configs = leadflow_suite::Configs {
        ingestion: ingestion_config,
        scoring: scoring_config,
        qualification: qualification_config,
        handoff: handoff_config,
    };
    let listeners = leadflow_suite::Listeners {
        ingestion: ingestion_l,
        scoring: scoring_l,
        qualification: qualification_l,
        handoff: handoff_l,
    };
    leadflow_suite::run(configs, listeners, clock, stop).await
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
        let addrs: Vec<SocketAddr> = ["127.0.0.1:4001", "127.0.0.1:4002"]
            .iter()
            .map(|a| a.parse().expect("addr"))
            .collect();
        assert_eq!(parse_ready(&ready_line(&addrs)), Some(addrs));
        assert_eq!(parse_ready("2026-12-01T14:00:00Z WARN scoring: slow"), None);
        assert_eq!(parse_ready(READY), None);
        assert_eq!(parse_ready(&format!("{READY} not-an-address")), None);
    }

    #[test]
    fn a_process_memory_is_read() {
        let own = std::process::id();
        assert!(proc_status_bytes(own, "VmHWM:").is_some_and(|b| b > 0));
        assert!(proc_status_bytes(own, "VmRSS:").is_some_and(|b| b > 0));
        assert_eq!(proc_status_bytes(own, "NoSuchField:"), None);
    }

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (tokio (rt) w) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 75 0 0 20 0 9 0";
        assert_eq!(parse_cpu_seconds(stat), Some(3.25));
        assert_eq!(parse_cpu_seconds("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_cpu_seconds("no parenthesis"), None);
    }

    #[test]
    fn own_usage_grows_with_work_and_a_phase_is_the_difference() {
        let own = std::process::id();
        let before = Usage {
            cpu_seconds: proc_cpu_seconds(own).expect("own stat"),
            bytes_written: proc_io_field(own, "write_bytes:"),
        };
        // Spin until the reading moves (it counts in 10 ms ticks, and a busy machine may give
        // this thread a fraction of a core), bounded so a reading that never moves fails.
        let spin = std::time::Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_secs(10)
            && proc_cpu_seconds(own).is_some_and(|now| now - before.cpu_seconds < 0.05)
        {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let after = Usage {
            cpu_seconds: proc_cpu_seconds(own).expect("own stat"),
            bytes_written: proc_io_field(own, "write_bytes:"),
        };
        let phase = before.until(after);
        assert!(phase.cpu_seconds >= 0.05, "{phase:?}");
        assert_eq!(
            phase.bytes_written.is_some(),
            before.bytes_written.is_some()
        );
    }
}
