//! The load generator every measured RPC goes through, echo and Leadflow alike.
//!
//! Two shapes:
//! - [`closed_loop`]: N workers, each sending its next request as soon as the previous one is
//!   answered (all over one multiplexed HTTP/2 channel held by the caller's closure); the
//!   throughput ceiling at N in flight, and with N = 1 the latency of one request in flight.
//! - [`fixed_rate`]: an open loop offering a fixed rate. Request `i` is due at
//!   `start + i / rate`; a bounded pool of workers takes due slots in order. When a slot is
//!   taken late because every worker was busy waiting for the server (the server fell behind),
//!   its latency is measured from the **intended** send time, so the queueing the server caused
//!   is counted (no coordinated omission). When a worker was idle and slept until the slot, its
//!   latency is measured from the actual send: tokio's timer wakes with millisecond granularity,
//!   and that lateness is the generator's, not the server's.
//!
//! Both stop at whichever comes first: the request count or the duration.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency recorded, in nanoseconds (longer ones are clamped to it).
const MAX_LATENCY_NS: u64 = 300_000_000_000;

/// How much load one phase may send: whichever bound is hit first ends it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    /// Most requests.
    pub(crate) count: u64,
    /// Longest time.
    pub(crate) duration: Duration,
}

impl Limit {
    /// A phase bounded by time only (and an effectively unreachable count).
    pub(crate) fn time(duration: Duration) -> Self {
        Self {
            count: u64::MAX / 2,
            duration,
        }
    }

    /// A phase of `count` requests, cut short at `duration`.
    pub(crate) fn count(count: u64, duration: Duration) -> Self {
        Self { count, duration }
    }
}

/// Latency percentiles of one phase, in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub(crate) struct Latency {
    /// Median.
    pub(crate) p50_us: f64,
    /// 90th percentile.
    pub(crate) p90_us: f64,
    /// 99th percentile.
    pub(crate) p99_us: f64,
    /// 99.9th percentile.
    pub(crate) p999_us: f64,
    /// Slowest request.
    pub(crate) max_us: f64,
    /// Mean.
    pub(crate) mean_us: f64,
}

/// What one phase of load measured.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Phase {
    /// What was sent, e.g. `echo closed loop`.
    pub(crate) label: String,
    /// Workers (requests in flight at most).
    pub(crate) workers: usize,
    /// The offered rate of a fixed-rate phase, requests per second.
    pub(crate) offered_rate: Option<f64>,
    /// Requests answered successfully.
    pub(crate) ok: u64,
    /// Requests that failed.
    pub(crate) errors: u64,
    /// The first failure, for the operator.
    pub(crate) first_error: Option<String>,
    /// Items the successful requests carried (activities of a batch, ids of a lookup; 1 for a
    /// plain unary call).
    pub(crate) items: u64,
    /// From the first send to the last answer, in seconds.
    pub(crate) seconds: f64,
    /// Successful requests per second.
    pub(crate) rate: f64,
    /// Items per second.
    pub(crate) items_per_sec: f64,
    /// True when a fixed-rate phase achieved less than 95% of its offered rate: the server fell
    /// behind, and its latencies grew for as long as the phase lasted.
    pub(crate) saturated: bool,
    /// Latency of the successful requests.
    pub(crate) latency: Latency,
}

impl Phase {
    /// A one-line summary for the progress log.
    pub(crate) fn summary(&self) -> String {
        let offered = self
            .offered_rate
            .map(|r| format!(" offered {r:.0}/s"))
            .unwrap_or_default();
        let errors = if self.errors > 0 {
            format!(
                " ERRORS {} (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            )
        } else {
            String::new()
        };
        format!(
            "{}: {} ok in {:.2}s = {:.0}/s ({:.0} items/s){offered}, p50 {:.0}µs p99 {:.0}µs p99.9 {:.0}µs{errors}",
            self.label,
            self.ok,
            self.seconds,
            self.rate,
            self.items_per_sec,
            self.latency.p50_us,
            self.latency.p99_us,
            self.latency.p999_us,
        )
    }
}

/// One worker's tally. Latencies are kept as raw samples (8 bytes a request) and put into one
/// histogram at the end: a histogram per worker would cost a few hundred KiB each and show in
/// the process's peak RSS, which is one of the figures.
#[derive(Debug, Default)]
struct Tally {
    samples: Vec<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    items: u64,
}

impl Tally {
    fn record(&mut self, outcome: Result<u64, String>, latency: Duration) {
        match outcome {
            Ok(items) => {
                let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                self.samples.push(ns.clamp(1, MAX_LATENCY_NS));
                self.ok += 1;
                self.items += items;
            }
            Err(err) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(err);
                }
            }
        }
    }

    fn merge(&mut self, mut other: Self) {
        self.samples.append(&mut other.samples);
        self.ok += other.ok;
        self.errors += other.errors;
        self.items += other.items;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Runs `workers` closed-loop workers calling `call(i)` for i = 0, 1, 2, … (each index once)
/// until `limit`; `call` answers how many items the request carried, or why it failed.
pub(crate) async fn closed_loop<F, Fut>(
    label: &str,
    workers: usize,
    limit: Limit,
    call: F,
) -> anyhow::Result<Phase>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    let workers = workers.max(1);
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        let mut tally = Tally::default();
        handles.push(tokio::spawn(async move {
            loop {
                if start.elapsed() >= limit.duration {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit.count {
                    break;
                }
                let sent = Instant::now();
                let outcome = call(i).await;
                tally.record(outcome, sent.elapsed());
            }
            tally
        }));
    }
    finish(label, workers, None, start, handles).await
}

/// Offers `rate` requests per second of `call(i)` through at most `workers` requests in flight
/// until `limit`, latency measured from the intended send time when the server made a request
/// late (see the module documentation).
pub(crate) async fn fixed_rate<F, Fut>(
    label: &str,
    workers: usize,
    rate: f64,
    limit: Limit,
    call: F,
) -> anyhow::Result<Phase>
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<u64, String>> + Send + 'static,
{
    anyhow::ensure!(
        rate.is_finite() && rate > 0.0,
        "{label}: the offered rate must be positive, not {rate}"
    );
    let workers = workers.max(1);
    let call = Arc::new(call);
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + limit.duration;
    let mut handles = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        let mut tally = Tally::default();
        handles.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit.count {
                    break;
                }
                #[allow(clippy::cast_precision_loss)] // exact below 2^53 requests
                let intended = start + Duration::from_secs_f64(i as f64 / rate);
                if intended >= end {
                    break;
                }
                let now = Instant::now();
                let from = if intended > now {
                    tokio::time::sleep_until(intended.into()).await;
                    Instant::now()
                } else {
                    intended
                };
                let outcome = call(i).await;
                tally.record(outcome, from.elapsed());
            }
            tally
        }));
    }
    finish(label, workers, Some(rate), start, handles).await
}

/// Joins the workers and sums up the phase.
async fn finish(
    label: &str,
    workers: usize,
    offered_rate: Option<f64>,
    start: Instant,
    handles: Vec<tokio::task::JoinHandle<Tally>>,
) -> anyhow::Result<Phase> {
    let mut total = Tally::default();
    for handle in handles {
        total.merge(handle.await?);
    }
    let seconds = start.elapsed().as_secs_f64().max(1e-9);
    #[allow(clippy::cast_precision_loss)] // counts far below 2^53
    let (rate, items_per_sec) = (total.ok as f64 / seconds, total.items as f64 / seconds);
    let mut h = Histogram::<u64>::new_with_bounds(1, MAX_LATENCY_NS, 3)?;
    for sample in std::mem::take(&mut total.samples) {
        h.saturating_record(sample);
    }
    let us = |ns: u64| {
        #[allow(clippy::cast_precision_loss)]
        let ns = ns as f64;
        ns / 1000.0
    };
    let latency = if h.is_empty() {
        Latency::default()
    } else {
        Latency {
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    };
    let phase = Phase {
        label: label.to_owned(),
        workers,
        offered_rate,
        ok: total.ok,
        errors: total.errors,
        first_error: total.first_error,
        items: total.items,
        seconds,
        rate,
        items_per_sec,
        saturated: offered_rate.is_some_and(|offered| rate < 0.95 * offered),
        latency,
    };
    eprintln!("  {}", phase.summary());
    Ok(phase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closed_loop_sends_each_index_once_up_to_the_count() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = Arc::clone(&seen);
        let phase = closed_loop(
            "t",
            4,
            Limit::count(50, Duration::from_secs(10)),
            move |i| {
                let recorder = Arc::clone(&recorder);
                async move {
                    recorder.lock().map_err(|e| e.to_string())?.push(i);
                    Ok(2)
                }
            },
        )
        .await
        .expect("phase");
        assert_eq!(phase.ok, 50);
        assert_eq!(phase.items, 100);
        let mut seen = seen.lock().expect("lock").clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn fixed_rate_counts_the_wait_a_slow_server_causes() {
        // One worker, 1000/s offered, each call 5 ms: every slot after the first is late, and
        // its latency includes the time it waited behind the previous calls.
        let phase = fixed_rate(
            "t",
            1,
            1000.0,
            Limit::count(20, Duration::from_secs(10)),
            |_| async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                Ok(1)
            },
        )
        .await
        .expect("phase");
        assert_eq!(phase.ok, 20);
        assert!(phase.latency.max_us > 50_000.0, "{:?}", phase.latency);
        assert!(phase.saturated);
    }
}
