//! The relay: claims pending outbox rows, hands them to an [`OutboxSink`] in batches, deletes
//! them once delivered and backs off when delivery fails.
//!
//! Order per partition key: the relay reads the head of the queue (a window of the oldest
//! pending rows, in id order) and delivers a row only if every older pending row of its key is
//! delivered in the same batch; a key whose oldest row is backing off is held back whole. On
//! PostgreSQL the window is claimed with `FOR UPDATE SKIP LOCKED` inside a transaction that
//! lasts until the outcome is written, so several replicas relay at once without delivering a
//! row twice; a replica skips a key whose older rows another replica holds. On SQLite (one
//! process) the window is read without a lock and the outcome written afterwards, so the single
//! connection is never held during a delivery, and the delivered rows are deleted while the
//! next delivery is under way: the writer connection is shared with the service's own writes,
//! so a delete waits its turn there, and waiting for it before delivering again left the
//! receiver idle for as long (a pass skips rows whose delete is still pending; rows delivered
//! but not yet deleted when the process dies are delivered again, which receivers dedupe).
//!
//! Size: a delivery holds at most the relay's current limit, [`RelayConfig::batch_size`] at
//! first. A failed delivery halves the limit and each success grows it back by a quarter, so a
//! receiver that cannot apply a large delivery within its deadline (handoff building warm
//! contexts under load, say) still gets smaller ones through instead of timing out on the same
//! large one again and again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge};
use sea_orm::sea_query::{Expr, LockBehavior, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, EntityTrait, ExprTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{OutboxMessage, Wakeup, outbox_message};
use crate::db::is_postgres;

/// Where a relay sends its messages: usually a generated gRPC client calling the receiving
/// service's internal RPC with a deadline.
pub trait OutboxSink: Send + Sync + 'static {
    /// Delivers `messages` (in order). `Ok` means the receiver has durably applied all of them
    /// (or had before); any error means none may be assumed delivered.
    fn deliver(
        &self,
        messages: &[OutboxMessage],
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// Why a delivery failed; the relay retries after a backoff.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DeliveryError(pub String);

/// Why a relay pass failed (the store, not the receiver).
#[derive(Debug, thiserror::Error)]
#[error("outbox store: {0}")]
pub struct RelayError(#[from] DbErr);

/// How a relay behaves.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The destination whose rows this relay delivers, e.g. `scoring`.
    pub destination: &'static str,
    /// At most this many messages per delivery (fewer after failures, see the module
    /// documentation).
    pub batch_size: usize,
    /// At most this many payload bytes per delivery (a larger message goes alone), under the
    /// receiver's message size limit.
    pub max_batch_bytes: usize,
    /// How many of the oldest pending rows one pass looks at.
    pub window: usize,
    /// How long to wait when idle before looking again (a [`Wakeup`] cuts it short).
    pub poll_interval: Duration,
    /// Backoff after the first failure; doubled after each further one.
    pub backoff_base: Duration,
    /// Longest backoff.
    pub backoff_max: Duration,
}

impl RelayConfig {
    /// Defaults for `destination`: batches of 100, a 1 s poll, backoff from 200 ms to 1 min.
    pub fn new(destination: &'static str) -> Self {
        Self {
            destination,
            batch_size: 100,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            window: 400,
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
        }
    }

    /// The wait before attempt number `attempts + 1`, with jitter so failed relays spread out.
    pub fn backoff(&self, attempts: i32) -> Duration {
        let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        let full = self
            .backoff_base
            .saturating_mul(2u32.saturating_pow(exponent))
            .min(self.backoff_max);
        full.mul_f64(rand::random_range(0.5..=1.0))
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayPass {
    /// Messages delivered and removed.
    pub delivered: usize,
    /// Messages whose delivery failed and now back off.
    pub failed: usize,
    /// The earliest time a held-back message becomes due, if any is pending.
    pub next_due: Option<DateTime<Utc>>,
}

/// Payload bytes per delivery by default: half the services' message size limit, the rest left
/// for each message's envelope (ids, key, trace context) and the call's framing.
pub(crate) const DEFAULT_MAX_BATCH_BYTES: usize = crate::server::MAX_MESSAGE_BYTES / 2;

/// Delivers one destination's outbox rows to a sink until shut down.
#[derive(Debug)]
pub struct Relay<S> {
    db: DatabaseConnection,
    /// Where a pass reads its window on SQLite and the backlog is counted
    /// ([`Relay::with_reader`]), or `db` itself.
    reader: DatabaseConnection,
    sink: S,
    config: RelayConfig,
    wakeup: Wakeup,
    metrics: RelayMetrics,
    /// When the backlog gauges were last read (counting the backlog scans it).
    backlog_read_at: std::sync::Mutex<Option<std::time::Instant>>,
    /// The most messages the next delivery may hold.
    limit: AtomicUsize,
    /// On SQLite, the ids delivered by the last pass whose delete the next pass makes.
    delivered: std::sync::Mutex<Vec<i64>>,
}

/// How often a busy relay counts its backlog for the gauges: counting scans every pending row,
/// so doing it after each delivery would make draining a large backlog quadratic.
const BACKLOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct RelayMetrics {
    delivered: Counter<u64>,
    failures: Counter<u64>,
    backlog: Gauge<u64>,
    lag: Gauge<f64>,
    attributes: [KeyValue; 1],
}

impl RelayMetrics {
    fn new(destination: &'static str) -> Self {
        let meter = crate::telemetry::meter();
        Self {
            delivered: meter
                .u64_counter("outbox.delivered")
                .with_description("outbox messages delivered")
                .build(),
            failures: meter
                .u64_counter("outbox.delivery_failures")
                .with_description("outbox messages whose delivery failed")
                .build(),
            backlog: meter
                .u64_gauge("outbox.backlog")
                .with_description("outbox messages waiting for delivery")
                .build(),
            lag: meter
                .f64_gauge("outbox.delivery_lag")
                .with_unit("s")
                .with_description("age of the oldest undelivered outbox message")
                .build(),
            attributes: [KeyValue::new("destination", destination)],
        }
    }
}

impl<S: OutboxSink> Relay<S> {
    /// A relay for `config.destination` reading `db` and delivering to `sink`; `wakeup` lets
    /// writers wake it right after a commit.
    pub fn new(db: DatabaseConnection, sink: S, config: RelayConfig, wakeup: Wakeup) -> Self {
        let metrics = RelayMetrics::new(config.destination);
        let limit = AtomicUsize::new(config.batch_size.max(1));
        Self {
            reader: db.clone(),
            db,
            sink,
            config,
            wakeup,
            limit,
            metrics,
            backlog_read_at: std::sync::Mutex::new(None),
            delivered: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// The same relay, reading its window and backlog on SQLite through `reader` (read-only
    /// connections, [`crate::db::reader`]) and only writing outcomes on `db`: the service's
    /// single writer connection is then not held while the relay reads hundreds of payloads,
    /// so its writes do not queue behind the read. WAL lets the reader see every commit made
    /// before its read begins. On PostgreSQL a pass still claims its window in a transaction
    /// on `db` (only the backlog is read through `reader`).
    pub fn with_reader(self, reader: DatabaseConnection) -> Self {
        Self { reader, ..self }
    }

    /// Relays until `shutdown` fires; a delivery under way when it fires is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let destination = self.config.destination;
        tracing::info!(destination, "outbox relay started");
        while !shutdown.is_cancelled() {
            let wait = match self.run_once().await {
                Ok(pass) if pass.delivered > 0 => continue,
                Ok(pass) => pass
                    .next_due
                    .and_then(|due| (due - Utc::now()).to_std().ok())
                    .unwrap_or(Duration::ZERO)
                    .min(self.config.poll_interval)
                    .max(Duration::from_millis(1))
                    .max(if pass.next_due.is_none() {
                        self.config.poll_interval
                    } else {
                        Duration::ZERO
                    }),
                Err(err) => {
                    tracing::warn!(destination, error = %err, "outbox relay pass failed");
                    self.config.poll_interval
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wakeup.woken() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
        if let Err(err) = delete_rows(&self.db, &self.take_delivered()).await {
            tracing::warn!(destination, error = %err, "delivered outbox rows not deleted, they will be delivered again");
        }
        tracing::info!(destination, "outbox relay stopped");
    }

    /// One pass: claim the deliverable head of the queue, deliver it, record the outcome.
    pub async fn run_once(&self) -> Result<RelayPass, RelayError> {
        let pass = if is_postgres(&self.db) {
            let txn = self.db.begin().await?;
            let pass = self.pass_on(&txn, &txn, true, &[]).await?;
            txn.commit().await?;
            pass
        } else {
            self.pass_overlapping_deletes().await?
        };
        if self.backlog_due(pass.delivered == 0) {
            self.record_backlog().await?;
        }
        Ok(pass)
    }

    /// A pass on SQLite: the window read on the reader, the rows the last pass delivered left
    /// out of it and deleted while this pass delivers.
    async fn pass_overlapping_deletes(&self) -> Result<RelayPass, DbErr> {
        let delivered = self.take_delivered();
        let pass = self
            .pass_on(&self.reader, &self.db, false, &delivered)
            .await;
        if pass.is_err() {
            self.keep_delivered(delivered);
        }
        pass
    }

    /// The ids awaiting their delete, leaving none.
    fn take_delivered(&self) -> Vec<i64> {
        self.delivered
            .lock()
            .map(|mut ids| std::mem::take(&mut *ids))
            .unwrap_or_default()
    }

    /// Adds `ids` to those the next pass deletes.
    fn keep_delivered(&self, ids: Vec<i64>) {
        if let Ok(mut delivered) = self.delivered.lock() {
            delivered.extend(ids);
        }
    }

    /// A pass reading the window on `read` and writing the outcome on `conn` (the same
    /// transaction when `lock`ing). Rows in `delivered` were delivered by the previous pass:
    /// they are left out of the window and deleted during this pass's delivery (or before it
    /// returns, when it has nothing to deliver). The rows this pass delivers are deleted in its
    /// transaction when `lock`ing (PostgreSQL), else left for the next pass to delete
    /// ([`Relay::keep_delivered`]).
    async fn pass_on<R: ConnectionTrait, C: ConnectionTrait>(
        &self,
        read: &R,
        conn: &C,
        lock: bool,
        delivered: &[i64],
    ) -> Result<RelayPass, DbErr> {
        let now = Utc::now();
        let mut query = outbox_message::Entity::find()
            .select_only()
            .columns([
                outbox_message::Column::Id,
                outbox_message::Column::PartitionKey,
                outbox_message::Column::NextAttemptAt,
            ])
            .column_as(
                Expr::cust("CAST(length(payload) AS BIGINT)"),
                "payload_bytes",
            )
            .filter(outbox_message::Column::Destination.eq(self.config.destination))
            .order_by_asc(outbox_message::Column::Id)
            .limit(self.config.window as u64);
        if lock {
            query = query.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        }
        let mut window: Vec<Pending> = query.into_model().all(read).await?;
        if !delivered.is_empty() {
            let done: HashSet<i64> = delivered.iter().copied().collect();
            window.retain(|row| !done.contains(&row.id));
        }
        let limit = self.limit.load(Ordering::Relaxed);
        let bounds = Bounds {
            messages: limit,
            bytes: self.config.max_batch_bytes,
        };
        let (mut ready, next_due) = select_ready(&window, now, bounds);
        if lock && !ready.is_empty() {
            let oldest = self.oldest_pending_per_key(conn, &ready).await?;
            keep_keys_we_head(&mut ready, &oldest);
        }
        if ready.is_empty() {
            delete_rows(conn, delivered).await?;
            return Ok(RelayPass {
                next_due,
                ..RelayPass::default()
            });
        }
        let ids: Vec<i64> = ready.iter().map(|row| row.id).collect();
        let messages: Vec<OutboxMessage> = outbox_message::Entity::find()
            .filter(outbox_message::Column::Id.is_in(crate::db::in_list(&ids)))
            .order_by_asc(outbox_message::Column::Id)
            .all(read)
            .await?
            .into_iter()
            .map(to_message)
            .collect();
        let span = tracing::info_span!(
            "outbox.deliver",
            destination = self.config.destination,
            messages = messages.len()
        );
        if let Some(first) = messages.first() {
            crate::telemetry::set_parent_from(&span, &first.trace_context);
        }
        let (outcome, deleted) = tokio::join!(
            self.sink.deliver(&messages).instrument(span),
            delete_rows(conn, delivered)
        );
        if let Err(err) = deleted {
            if outcome.is_ok() {
                self.keep_delivered(ids);
            }
            return Err(err);
        }
        let attributes = &self.metrics.attributes;
        match outcome {
            Ok(()) => {
                self.limit
                    .store(grown(limit, self.config.batch_size), Ordering::Relaxed);
                if lock {
                    delete_rows(conn, &ids).await?;
                } else {
                    self.keep_delivered(ids);
                }
                self.metrics
                    .delivered
                    .add(messages.len() as u64, attributes);
                Ok(RelayPass {
                    delivered: messages.len(),
                    failed: 0,
                    next_due,
                })
            }
            Err(err) => {
                self.limit.store(shrunk(messages.len()), Ordering::Relaxed);
                let attempts = messages.iter().map(|m| m.attempts).max().unwrap_or(0) + 1;
                let retry_at = now
                    + chrono::Duration::from_std(self.config.backoff(attempts))
                        .unwrap_or(chrono::Duration::MAX);
                tracing::warn!(
                    destination = self.config.destination,
                    messages = messages.len(),
                    attempts,
                    error = %err,
                    "outbox delivery failed"
                );
                outbox_message::Entity::update_many()
                    .col_expr(
                        outbox_message::Column::Attempts,
                        Expr::col(outbox_message::Column::Attempts).add(1),
                    )
                    .col_expr(outbox_message::Column::NextAttemptAt, Expr::value(retry_at))
                    .col_expr(
                        outbox_message::Column::LastError,
                        Expr::value(truncate(&err.0, 1000)),
                    )
                    .filter(outbox_message::Column::Id.is_in(crate::db::in_list(&ids)))
                    .exec(conn)
                    .await?;
                self.metrics.failures.add(messages.len() as u64, attributes);
                Ok(RelayPass {
                    delivered: 0,
                    failed: messages.len(),
                    next_due: Some(next_due.map_or(retry_at, |due| Ord::min(due, retry_at))),
                })
            }
        }
    }

    /// The oldest pending row id of each key in `ready`, whoever holds it.
    async fn oldest_pending_per_key<C: ConnectionTrait>(
        &self,
        conn: &C,
        ready: &[Pending],
    ) -> Result<HashMap<String, i64>, DbErr> {
        let keys: HashSet<&str> = ready.iter().map(|r| r.partition_key.as_str()).collect();
        let rows: Vec<(String, i64)> = outbox_message::Entity::find()
            .select_only()
            .column(outbox_message::Column::PartitionKey)
            .column_as(Expr::col(outbox_message::Column::Id).min(), "oldest")
            .filter(outbox_message::Column::Destination.eq(self.config.destination))
            .filter(outbox_message::Column::PartitionKey.is_in(keys))
            .group_by(outbox_message::Column::PartitionKey)
            .into_tuple()
            .all(conn)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Whether to count the backlog now: always when idle (it is small or waiting), else at most
    /// once per [`BACKLOG_EVERY`].
    fn backlog_due(&self, idle: bool) -> bool {
        let now = std::time::Instant::now();
        let Ok(mut last) = self.backlog_read_at.lock() else {
            return true;
        };
        let due = idle || last.is_none_or(|at| now.duration_since(at) >= BACKLOG_EVERY);
        if due {
            *last = Some(now);
        }
        due
    }

    async fn record_backlog(&self) -> Result<(), DbErr> {
        let Backlog { count, oldest } = backlog(&self.reader, self.config.destination).await?;
        let attributes = &self.metrics.attributes;
        self.metrics.backlog.record(count, attributes);
        let lag = oldest.map_or(0.0, |oldest| {
            Ord::max((Utc::now() - oldest).num_milliseconds(), 0) as f64 / 1000.0
        });
        self.metrics.lag.record(lag, attributes);
        Ok(())
    }
}

/// Deletes the outbox rows `ids` (none: no statement).
async fn delete_rows<C: ConnectionTrait>(conn: &C, ids: &[i64]) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    outbox_message::Entity::delete_many()
        .filter(outbox_message::Column::Id.is_in(crate::db::in_list(ids)))
        .exec(conn)
        .await?;
    Ok(())
}

/// What waits in the outbox for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Pending rows.
    pub count: u64,
    /// When the oldest pending row was enqueued; `None` when nothing waits.
    pub oldest: Option<DateTime<Utc>>,
}

/// The backlog of `destination`. The count reads only the `(destination, id)` index and the
/// age one row (the oldest id is the oldest message): a `min(created_at)` would visit every
/// pending row, hundreds of megabytes of payloads once a big backlog builds up, and starve
/// the very deliveries that drain it.
pub async fn backlog<C: ConnectionTrait>(conn: &C, destination: &str) -> Result<Backlog, DbErr> {
    let pending = outbox_message::Column::Destination.eq(destination);
    let count: i64 = outbox_message::Entity::find()
        .select_only()
        .column_as(Expr::col(outbox_message::Column::Id).count(), "count")
        .filter(pending.clone())
        .into_tuple()
        .one(conn)
        .await?
        .unwrap_or(0);
    let oldest: Option<DateTime<Utc>> = outbox_message::Entity::find()
        .select_only()
        .column(outbox_message::Column::CreatedAt)
        .filter(pending)
        .order_by_asc(outbox_message::Column::Id)
        .into_tuple()
        .one(conn)
        .await?;
    Ok(Backlog {
        count: u64::try_from(count).unwrap_or(0),
        oldest,
    })
}

/// The delivery limit after a delivery of `size` messages failed: half of it, at least one.
fn shrunk(size: usize) -> usize {
    (size / 2).max(1)
}

/// The delivery limit after a delivery succeeded under `limit`: a quarter more, at least one
/// more, at most `max`.
fn grown(limit: usize, max: usize) -> usize {
    limit.saturating_add(limit / 4 + 1).min(max.max(1))
}

/// What a pass needs of a pending row to choose the deliverable ones: not its payload, which is
/// read for the chosen rows only (a window is several deliveries long).
#[derive(Debug, Clone, PartialEq, Eq, FromQueryResult)]
struct Pending {
    id: i64,
    partition_key: String,
    next_attempt_at: DateTime<Utc>,
    /// The payload's length in bytes.
    payload_bytes: i64,
}

/// How much one delivery may carry.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Messages.
    messages: usize,
    /// Payload bytes; a single larger message still goes alone.
    bytes: usize,
}

/// The rows of `window` (oldest first) one delivery within `bounds` may take without
/// overtaking an older row of their key, and when the earliest held-back row becomes due. A
/// key is held back from its first row that is not yet due or does not fit.
fn select_ready(
    window: &[Pending],
    now: DateTime<Utc>,
    bounds: Bounds,
) -> (Vec<Pending>, Option<DateTime<Utc>>) {
    let mut held: HashSet<&str> = HashSet::new();
    let mut ready = Vec::new();
    let mut bytes = 0usize;
    let mut next_due: Option<DateTime<Utc>> = None;
    for row in window {
        let key = row.partition_key.as_str();
        if held.contains(key) {
            continue;
        }
        let row_bytes = usize::try_from(row.payload_bytes).unwrap_or(0);
        let full = ready.len() >= bounds.messages
            || (!ready.is_empty() && bytes.saturating_add(row_bytes) > bounds.bytes);
        if row.next_attempt_at > now || full {
            held.insert(key);
            if row.next_attempt_at > now {
                next_due = Some(
                    next_due.map_or(row.next_attempt_at, |d| Ord::min(d, row.next_attempt_at)),
                );
            }
            continue;
        }
        bytes = bytes.saturating_add(row_bytes);
        ready.push(row.clone());
    }
    (ready, next_due)
}

/// Drops the keys whose oldest pending row is not ours (another replica holds it).
fn keep_keys_we_head(ready: &mut Vec<Pending>, oldest: &HashMap<String, i64>) {
    let mut first_ours: HashMap<String, i64> = HashMap::new();
    for row in ready.iter() {
        first_ours
            .entry(row.partition_key.clone())
            .or_insert(row.id);
    }
    ready.retain(|row| oldest.get(&row.partition_key) == first_ours.get(&row.partition_key));
}

fn to_message(row: outbox_message::Model) -> OutboxMessage {
    OutboxMessage {
        id: row.id,
        message_id: row.message_id,
        tenant_id: row.tenant_id,
        partition_key: row.partition_key,
        payload: row.payload,
        trace_context: serde_json::from_str(&row.trace_context).unwrap_or_default(),
        created_at: row.created_at,
        attempts: row.attempts,
    }
}

fn truncate(text: &str, max: usize) -> String {
    text.char_indices()
        .take_while(|(i, _)| *i < max)
        .map(|(_, c)| c)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn row(id: i64, key: &str, due_in_secs: i64, now: DateTime<Utc>) -> Pending {
        sized(id, key, due_in_secs, 100, now)
    }

    fn sized(id: i64, key: &str, due_in_secs: i64, bytes: i64, now: DateTime<Utc>) -> Pending {
        Pending {
            id,
            partition_key: key.into(),
            next_attempt_at: now + chrono::Duration::seconds(due_in_secs),
            payload_bytes: bytes,
        }
    }

    fn at_most(messages: usize) -> Bounds {
        Bounds {
            messages,
            bytes: usize::MAX,
        }
    }

    #[test]
    fn a_delivery_stops_at_its_byte_bound_but_a_large_message_goes_alone() {
        let now = Utc::now();
        let window = vec![
            sized(1, "a", 0, 600, now),
            sized(2, "b", 0, 300, now),
            sized(3, "c", 0, 200, now),
            sized(4, "a", 0, 10, now),
            sized(5, "d", 0, 50, now),
        ];
        let bounds = Bounds {
            messages: 10,
            bytes: 1000,
        };
        let (ready, _) = select_ready(&window, now, bounds);
        let ids: Vec<i64> = ready.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [1, 2, 4, 5],
            "c does not fit; smaller rows after it still do"
        );
        let large = vec![sized(1, "a", 0, 5000, now), sized(2, "b", 0, 10, now)];
        let (ready, _) = select_ready(&large, now, bounds);
        assert_eq!(ready.iter().map(|r| r.id).collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn a_backing_off_row_holds_back_its_key_only() {
        let now = Utc::now();
        let window = vec![
            row(1, "a", 10, now),
            row(2, "b", 0, now),
            row(3, "a", 0, now),
            row(4, "b", 0, now),
        ];
        let (ready, next_due) = select_ready(&window, now, at_most(10));
        let ids: Vec<i64> = ready.iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 4]);
        assert_eq!(next_due, Some(now + chrono::Duration::seconds(10)));
    }

    #[test]
    fn the_batch_limit_holds_back_later_rows_of_cut_keys() {
        let now = Utc::now();
        let window = vec![
            row(1, "a", 0, now),
            row(2, "b", 0, now),
            row(3, "a", 0, now),
        ];
        let (ready, _) = select_ready(&window, now, at_most(1));
        let ids: Vec<i64> = ready.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1]);
    }

    #[test]
    fn keys_headed_by_another_replica_are_skipped() {
        let now = Utc::now();
        let mut ready = vec![row(5, "a", 0, now), row(6, "b", 0, now)];
        let oldest = HashMap::from([("a".to_owned(), 2), ("b".to_owned(), 6)]);
        keep_keys_we_head(&mut ready, &oldest);
        assert_eq!(ready.iter().map(|r| r.id).collect::<Vec<_>>(), [6]);
    }

    #[test]
    fn the_delivery_limit_halves_on_failure_and_grows_back_to_the_batch_size() {
        assert_eq!(shrunk(500), 250);
        assert_eq!(shrunk(1), 1, "never below one message");
        assert_eq!(grown(250, 500), 313);
        assert_eq!(grown(1, 500), 2);
        assert_eq!(grown(480, 500), 500, "never above the batch size");
        let mut limit = 1;
        let mut successes = 0;
        while limit < 500 {
            limit = grown(limit, 500);
            successes += 1;
        }
        assert!(
            successes <= 25,
            "back to full size in {successes} deliveries"
        );
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let config = RelayConfig::new("d");
        assert!(config.backoff(1) <= Duration::from_millis(200));
        assert!(config.backoff(3) >= Duration::from_millis(400));
        assert!(config.backoff(50) <= Duration::from_secs(60));
    }

    proptest! {
        /// Whatever the due times, the selected rows never overtake an older row of their key.
        #[test]
        fn selection_keeps_per_key_order_and_its_bounds(
            rows in prop::collection::vec((0u8..4, any::<bool>(), 0i64..500), 0..40),
            limit in 1usize..20,
            max_bytes in 1usize..2000,
        ) {
            let now = Utc::now();
            let window: Vec<_> = rows.iter().enumerate()
                .map(|(i, (key, due, bytes))| sized(i as i64, &key.to_string(), if *due { 0 } else { 5 }, *bytes, now))
                .collect();
            let bounds = Bounds { messages: limit, bytes: max_bytes };
            let (ready, _) = select_ready(&window, now, bounds);
            prop_assert!(ready.len() <= limit);
            let bytes: i64 = ready.iter().map(|r| r.payload_bytes).sum();
            prop_assert!(ready.len() <= 1 || bytes <= max_bytes as i64, "{bytes} bytes over {max_bytes}");
            let chosen: HashSet<i64> = ready.iter().map(|r| r.id).collect();
            for r in &ready {
                for older in window.iter().filter(|o| o.partition_key == r.partition_key && o.id < r.id) {
                    prop_assert!(chosen.contains(&older.id), "row {} overtook {}", r.id, older.id);
                }
            }
        }
    }
}
