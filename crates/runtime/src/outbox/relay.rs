//! The relay: claims pending outbox rows, hands them to an [`OutboxSink`] in batches, deletes
//! them once delivered and backs off when delivery fails.
//!
//! Order per partition key: the relay reads the head of the queue (a window of the oldest
//! pending rows, in id order) and delivers a row only if every older pending row of its key is
//! delivered in the same batch; a key whose oldest row is backing off is held back whole. On
//! PostgreSQL the window is claimed with `FOR UPDATE SKIP LOCKED` inside a transaction that
//! lasts until the outcome is written, so several replicas relay at once without delivering a
//! row twice; a replica delivers a key's rows only up to the first pending row of that key it
//! does not hold (concurrent windows can interleave, row by row). On SQLite (one process) the
//! window is read without a lock and the outcome written afterwards, so the single
//! connection is never held during a delivery, and the delivered rows are deleted while the
//! next delivery is under way: the writer connection is shared with the service's own writes,
//! so a delete waits its turn there, and waiting for it before delivering again left the
//! receiver idle for as long (a pass skips rows whose delete is still pending; rows delivered
//! but not yet deleted when the process dies are delivered again, which receivers dedupe).
//! Given [`SharedDeletes`], the relay offers that delete to the service's own next write
//! transaction first, so it commits with the service's writes instead of queueing between them.
//!
//! Lanes: a relay keeps up to [`RelayConfig::lanes`] deliveries in flight, on disjoint keys (a
//! key one lane is delivering is held back whole from the others), so a receiver that
//! finishes applying one delivery finds the next already waiting instead of idling while the
//! relay records the outcome, reads its next window and sends it. On PostgreSQL each lane is a
//! pass of its own, kept apart like replicas are; on SQLite the lanes share the record of
//! what is being delivered and what is delivered but not yet deleted. By default two lanes run
//! on SQLite and one on PostgreSQL, where a second pass holding its window and a connection
//! slowed ingestion without draining faster (BENCHMARKS.md).
//!
//! Linger: a lane woken from idle by a commit waits [`RelayConfig::linger`] before its pass, so
//! under a trickle of small commits (unary `Track` calls, a group commit every few
//! milliseconds) a delivery carries several commits' messages: each delivery costs the receiver
//! a transaction, an inbox claim and a commit whatever its size. A lane with a backlog passes
//! back to back and never lingers.
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
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, DeleteMany, EntityTrait, ExprTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::deletes::{SharedDeletes, Taken};
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
    /// Deliveries in flight at once, on disjoint keys: while the receiver applies one, the
    /// next is read, sent and waiting, instead of the receiver idling through the relay's turn.
    /// `None`: the backend's default, [`DEFAULT_SQLITE_LANES`] on SQLite and one on PostgreSQL
    /// (where a second lane, a second `FOR UPDATE` pass with a connection of its own, slowed
    /// ingestion by a fifth without draining any faster).
    pub lanes: Option<usize>,
    /// How long a lane woken from idle by a commit waits for more before its pass, so a
    /// trickle of small commits is delivered a few commits at a time.
    pub linger: Duration,
}

impl RelayConfig {
    /// Defaults for `destination`: batches of 100, a 1 s poll, backoff from 200 ms to 1 min,
    /// the backend's lanes, a 50 ms linger.
    pub fn new(destination: &'static str) -> Self {
        Self {
            destination,
            batch_size: 100,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            window: 400,
            poll_interval: Duration::from_secs(1),
            backoff_base: Duration::from_millis(200),
            backoff_max: Duration::from_secs(60),
            lanes: None,
            linger: Duration::from_millis(DEFAULT_LINGER_MS),
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

/// Deliveries a relay has in flight by default on SQLite.
pub const DEFAULT_SQLITE_LANES: usize = 2;

/// How long an idle relay waits for more commits once woken, by default, in milliseconds.
pub(crate) const DEFAULT_LINGER_MS: u64 = 50;

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
    /// Deliveries in flight at once ([`RelayConfig::lanes`], resolved for the backend).
    lanes: usize,
    /// On SQLite, the rows the lanes are delivering or have delivered and not yet deleted.
    in_flight: tokio::sync::Mutex<InFlight>,
    /// On SQLite, where deletes are offered to the service's write transactions first
    /// ([`Relay::with_shared_deletes`]).
    shared_deletes: Option<SharedDeletes>,
}

/// The rows a relay's lanes hold on SQLite, where windows are read without row locks.
#[derive(Debug, Default)]
struct InFlight {
    /// Rows a lane is delivering: left out of the other lanes' windows, their keys held back.
    delivering: HashSet<i64>,
    /// Delivered rows whose delete has not committed: left out of every window.
    undeleted: HashSet<i64>,
    /// Delivered rows no pass is deleting yet: the next pass deletes them while it delivers.
    to_delete: Vec<i64>,
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
        let lanes = resolved_lanes(config.lanes, is_postgres(&db));
        Self {
            lanes,
            reader: db.clone(),
            db,
            sink,
            config,
            wakeup,
            limit,
            metrics,
            backlog_read_at: std::sync::Mutex::new(None),
            in_flight: tokio::sync::Mutex::new(InFlight::default()),
            shared_deletes: None,
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

    /// The same relay, offering its deletes of delivered rows on SQLite to the service's write
    /// transactions first (those that call [`SharedDeletes::claim_into`]), so they commit with
    /// the service's own writes instead of queueing for the writer connection between them.
    pub fn with_shared_deletes(self, deletes: SharedDeletes) -> Self {
        Self {
            shared_deletes: Some(deletes),
            ..self
        }
    }

    /// Relays until `shutdown` fires, with [`RelayConfig::lanes`] deliveries in flight at most;
    /// a delivery under way when it fires is finished first.
    pub async fn run(self, shutdown: CancellationToken) {
        let destination = self.config.destination;
        let lanes = self.lanes;
        tracing::info!(destination, lanes, "outbox relay started");
        futures::future::join_all((0..lanes).map(|_| self.lane(&shutdown))).await;
        let undeleted = std::mem::take(&mut self.in_flight.lock().await.to_delete);
        if let Err(err) = delete_rows(&self.db, &undeleted).await {
            tracing::warn!(destination, error = %err, "delivered outbox rows not deleted, they will be delivered again");
        }
        tracing::info!(destination, "outbox relay stopped");
    }

    /// One lane: passes back to back while they deliver, else waits for a wake-up, the next
    /// due row or the poll interval.
    async fn lane(&self, shutdown: &CancellationToken) {
        let destination = self.config.destination;
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
                () = self.wakeup.woken() => self.linger(shutdown).await,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// After a wake-up from idle: waits [`RelayConfig::linger`] (or until shutdown) for the
    /// commits that follow the one that woke the lane.
    async fn linger(&self, shutdown: &CancellationToken) {
        if self.config.linger.is_zero() {
            return;
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(self.config.linger) => {}
        }
    }

    /// One pass: claim the deliverable head of the queue, deliver it, record the outcome.
    pub async fn run_once(&self) -> Result<RelayPass, RelayError> {
        let pass = if is_postgres(&self.db) {
            self.pass_locked().await?
        } else {
            self.pass_overlapping_deletes().await?
        };
        if self.backlog_due(pass.delivered == 0) {
            self.record_backlog().await?;
        }
        Ok(pass)
    }

    /// A pass on PostgreSQL: the window claimed with `FOR UPDATE SKIP LOCKED` in a transaction
    /// that lasts until the outcome is written (the delivered rows deleted in it), so other
    /// lanes and replicas skip it.
    async fn pass_locked(&self) -> Result<RelayPass, DbErr> {
        let txn = self.db.begin().await?;
        let now = Utc::now();
        let window = self.read_window(&txn, true).await?;
        let (mut ready, next_due) = select_ready(&window, &HashSet::new(), now, self.bounds());
        if !ready.is_empty() {
            let pending = self.pending_per_key(&txn, &ready).await?;
            keep_unbroken_runs(&mut ready, &pending);
        }
        if ready.is_empty() {
            txn.commit().await?;
            return Ok(RelayPass {
                next_due,
                ..RelayPass::default()
            });
        }
        self.wake_another_lane_if_full(&ready);
        let ids: Vec<i64> = ready.iter().map(|row| row.id).collect();
        let messages = read_messages(&txn, &ids).await?;
        let pass = match self.deliver(&messages).await {
            Ok(()) => {
                delete_rows(&txn, &ids).await?;
                self.delivered(count(&messages), next_due)
            }
            Err(err) => {
                self.failed(&txn, &messages, &ids, &err, now, next_due)
                    .await?
            }
        };
        txn.commit().await?;
        Ok(pass)
    }

    /// A pass on SQLite (one process): the window read on the reader without a lock, leaving
    /// out the rows other lanes deliver (and holding their keys back) and the rows delivered
    /// but not yet deleted, which this pass deletes while it delivers. The window is read and
    /// chosen under the in-flight lock, so no two lanes choose the same row, and a row leaves
    /// the in-flight state only once its outcome is committed, so no window read before that
    /// commit (the reader sees the store as of its read) takes it again.
    async fn pass_overlapping_deletes(&self) -> Result<RelayPass, DbErr> {
        let now = Utc::now();
        let mut in_flight = self.in_flight.lock().await;
        let deleting = std::mem::take(&mut in_flight.to_delete);
        let window = match self.read_window(&self.reader, false).await {
            Ok(window) => window,
            Err(err) => {
                in_flight.to_delete.extend(deleting);
                return Err(err);
            }
        };
        let mut held = HashSet::new();
        let mut free = Vec::with_capacity(window.len());
        for row in window {
            if in_flight.delivering.contains(&row.id) {
                held.insert(row.partition_key);
            } else if !in_flight.undeleted.contains(&row.id) {
                free.push(row);
            }
        }
        let (ready, next_due) = select_ready(&free, &held, now, self.bounds());
        let ids: Vec<i64> = ready.iter().map(|row| row.id).collect();
        in_flight.delivering.extend(ids.iter().copied());
        drop(in_flight);

        if ready.is_empty() {
            let deleted = delete_rows(&self.db, &deleting).await;
            self.settle_deletes(deleting, deleted.is_ok()).await;
            deleted?;
            return Ok(RelayPass {
                next_due,
                ..RelayPass::default()
            });
        }
        self.wake_another_lane_if_full(&ready);
        let messages = match read_messages(&self.reader, &ids).await {
            Ok(messages) => messages,
            Err(err) => {
                self.settle_deliveries(&ids, false).await;
                self.settle_deletes(deleting, false).await;
                return Err(err);
            }
        };
        let (outcome, deleted) = self.deliver_while_deleting(&messages, &deleting).await;
        self.settle_deletes(deleting, matches!(deleted, Ok(true)))
            .await;
        // The delivery's outcome is recorded whatever became of the carried delete: a failed
        // delivery backs off (its limit halved) even when the delete failed too, instead of
        // being sent again at full size on the next poll.
        let pass = match outcome {
            Ok(()) => {
                self.settle_deliveries(&ids, true).await;
                Ok(self.delivered(count(&messages), next_due))
            }
            Err(err) => {
                let failed = self
                    .failed(&self.db, &messages, &ids, &err, now, next_due)
                    .await;
                self.settle_deliveries(&ids, false).await;
                failed
            }
        };
        deleted?;
        pass
    }

    /// Delivers `messages` while the delivered rows `deleting` are deleted: by the service's
    /// next write transaction if one claims them during the delivery
    /// ([`Relay::with_shared_deletes`]), else here. `Ok(false)`: a transaction claimed them and
    /// did not commit, so they are still there (not the relay's error; the next pass retries).
    async fn deliver_while_deleting(
        &self,
        messages: &[OutboxMessage],
        deleting: &[i64],
    ) -> (Result<(), DeliveryError>, Result<bool, DbErr>) {
        let Some(shared) = self
            .shared_deletes
            .as_ref()
            .filter(|_| !deleting.is_empty())
        else {
            let (outcome, deleted) =
                tokio::join!(self.deliver(messages), delete_rows(&self.db, deleting));
            return (outcome, deleted.map(|()| true));
        };
        let ticket = shared.offer(deleting.to_vec());
        let outcome = self.deliver(messages).await;
        let deleted = match shared.take_back(ticket) {
            Taken::Back(ids) => delete_rows(&self.db, &ids).await.map(|()| true),
            Taken::Claimed(committed) => Ok(committed.await.is_ok()),
        };
        (outcome, deleted)
    }

    /// Records the outcome of deleting `ids` (on SQLite): once committed they are gone from
    /// every later window; otherwise the next pass deletes them.
    async fn settle_deletes(&self, ids: Vec<i64>, deleted: bool) {
        if ids.is_empty() {
            return;
        }
        let mut in_flight = self.in_flight.lock().await;
        if deleted {
            for id in &ids {
                in_flight.undeleted.remove(id);
            }
        } else {
            in_flight.to_delete.extend(ids);
        }
    }

    /// Records the end of delivering `ids` (on SQLite): delivered rows wait for their delete,
    /// the others are free again (their backoff, if any, already committed).
    async fn settle_deliveries(&self, ids: &[i64], delivered: bool) {
        let mut in_flight = self.in_flight.lock().await;
        for id in ids {
            in_flight.delivering.remove(id);
        }
        if delivered {
            in_flight.undeleted.extend(ids.iter().copied());
            in_flight.to_delete.extend(ids.iter().copied());
        }
    }

    /// The bounds of the next delivery.
    fn bounds(&self) -> Bounds {
        Bounds {
            messages: self.limit.load(Ordering::Relaxed),
            bytes: self.config.max_batch_bytes,
        }
    }

    /// A delivery as full as the limit allows suggests more is waiting: another lane (if any
    /// is idle) looks for it.
    fn wake_another_lane_if_full(&self, ready: &[Pending]) {
        let messages: usize = ready.iter().map(|r| super::message_count(r.bundled)).sum();
        if self.lanes > 1 && messages >= self.limit.load(Ordering::Relaxed) {
            self.wakeup.wake();
        }
    }

    /// The oldest pending rows of the destination, as much as a pass looks at, read on `read`
    /// (claimed when `lock`ing).
    async fn read_window<R: ConnectionTrait>(
        &self,
        read: &R,
        lock: bool,
    ) -> Result<Vec<Pending>, DbErr> {
        let mut query = outbox_message::Entity::find()
            .select_only()
            .columns([
                outbox_message::Column::Id,
                outbox_message::Column::PartitionKey,
                outbox_message::Column::NextAttemptAt,
                outbox_message::Column::Bundled,
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
        query.into_model().all(read).await
    }

    /// Hands `messages` to the sink, in a span that continues the first message's trace.
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let span = tracing::info_span!(
            "outbox.deliver",
            destination = self.config.destination,
            messages = count(messages)
        );
        if let Some(first) = messages.first() {
            crate::telemetry::set_parent_from(&span, &first.trace_context);
        }
        self.sink.deliver(messages).instrument(span).await
    }

    /// Counts a successful delivery of `count` messages and grows the limit back.
    fn delivered(&self, count: usize, next_due: Option<DateTime<Utc>>) -> RelayPass {
        let limit = self.limit.load(Ordering::Relaxed);
        self.limit
            .store(grown(limit, self.config.batch_size), Ordering::Relaxed);
        self.metrics
            .delivered
            .add(count as u64, &self.metrics.attributes);
        RelayPass {
            delivered: count,
            failed: 0,
            next_due,
        }
    }

    /// Records a failed delivery on `conn`: the rows `ids` back off, the limit halves.
    async fn failed<C: ConnectionTrait>(
        &self,
        conn: &C,
        messages: &[OutboxMessage],
        ids: &[i64],
        err: &DeliveryError,
        now: DateTime<Utc>,
        next_due: Option<DateTime<Utc>>,
    ) -> Result<RelayPass, DbErr> {
        let size = count(messages);
        self.limit.store(shrunk(size), Ordering::Relaxed);
        let attempts = messages.iter().map(|m| m.attempts).max().unwrap_or(0) + 1;
        let retry_at = now
            + chrono::Duration::from_std(self.config.backoff(attempts))
                .unwrap_or(chrono::Duration::MAX);
        tracing::warn!(
            destination = self.config.destination,
            messages = size,
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
            .filter(outbox_message::Column::Id.is_in(crate::db::in_list(ids)))
            .exec(conn)
            .await?;
        self.metrics
            .failures
            .add(size as u64, &self.metrics.attributes);
        Ok(RelayPass {
            delivered: 0,
            failed: size,
            next_due: Some(next_due.map_or(retry_at, |due| Ord::min(due, retry_at))),
        })
    }

    /// The pending row ids of each key in `ready`, oldest first, up to the newest ready row,
    /// whoever holds them.
    async fn pending_per_key<C: ConnectionTrait>(
        &self,
        conn: &C,
        ready: &[Pending],
    ) -> Result<HashMap<String, Vec<i64>>, DbErr> {
        let keys: HashSet<&str> = ready.iter().map(|r| r.partition_key.as_str()).collect();
        let newest = ready.iter().map(|r| r.id).max().unwrap_or(i64::MIN);
        let rows: Vec<(String, i64)> = outbox_message::Entity::find()
            .select_only()
            .column(outbox_message::Column::PartitionKey)
            .column(outbox_message::Column::Id)
            .filter(outbox_message::Column::Destination.eq(self.config.destination))
            .filter(outbox_message::Column::PartitionKey.is_in(keys))
            .filter(outbox_message::Column::Id.lte(newest))
            .order_by_asc(outbox_message::Column::Id)
            .into_tuple()
            .all(conn)
            .await?;
        let mut pending: HashMap<String, Vec<i64>> = HashMap::new();
        for (key, id) in rows {
            pending.entry(key).or_default().push(id);
        }
        Ok(pending)
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

/// The lanes a relay runs: `configured` (at least one), or the backend's default.
fn resolved_lanes(configured: Option<usize>, postgres: bool) -> usize {
    let default = if postgres { 1 } else { DEFAULT_SQLITE_LANES };
    configured.unwrap_or(default).max(1)
}

/// How many messages `rows` carry (a bundle counts each of its messages).
fn count(rows: &[OutboxMessage]) -> usize {
    rows.iter().map(OutboxMessage::count).sum()
}

/// Deletes the outbox rows `ids` (none: no statement).
async fn delete_rows<C: ConnectionTrait>(conn: &C, ids: &[i64]) -> Result<(), DbErr> {
    if ids.is_empty() {
        return Ok(());
    }
    delete_statement(ids).exec(conn).await?;
    Ok(())
}

/// The delete of the outbox rows `ids`, wherever it runs (here, or in a service's own
/// transaction through [`SharedDeletes`]).
pub(super) fn delete_statement(ids: &[i64]) -> DeleteMany<outbox_message::Entity> {
    outbox_message::Entity::delete_many()
        .filter(outbox_message::Column::Id.is_in(crate::db::in_list(ids)))
}

/// The full rows `ids`, in id order.
async fn read_messages<R: ConnectionTrait>(
    read: &R,
    ids: &[i64],
) -> Result<Vec<OutboxMessage>, DbErr> {
    Ok(outbox_message::Entity::find()
        .filter(outbox_message::Column::Id.is_in(crate::db::in_list(ids)))
        .order_by_asc(outbox_message::Column::Id)
        .all(read)
        .await?
        .into_iter()
        .map(to_message)
        .collect())
}

/// What waits in the outbox for one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Pending messages (a bundled row counts each of its messages).
    pub count: u64,
    /// When the oldest pending row was enqueued; `None` when nothing waits.
    pub oldest: Option<DateTime<Utc>>,
}

/// The backlog of `destination`. The count reads only the `(destination, id, bundled)` index
/// and the age one row (the oldest id is the oldest message): a `min(created_at)` would visit
/// every pending row, hundreds of megabytes of payloads once a big backlog builds up, and
/// starve the very deliveries that drain it.
pub async fn backlog<C: ConnectionTrait>(conn: &C, destination: &str) -> Result<Backlog, DbErr> {
    let pending = outbox_message::Column::Destination.eq(destination);
    let count: i64 = outbox_message::Entity::find()
        .select_only()
        .column_as(
            Expr::cust("CAST(COALESCE(SUM(COALESCE(bundled, 1)), 0) AS BIGINT)"),
            "count",
        )
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
    /// How many messages the row bundles (`None`: one).
    bundled: Option<i32>,
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
/// key is held back from its first row that is not yet due or does not fit, and the keys in
/// `busy` (another lane delivers their older rows) whole.
fn select_ready(
    window: &[Pending],
    busy: &HashSet<String>,
    now: DateTime<Utc>,
    bounds: Bounds,
) -> (Vec<Pending>, Option<DateTime<Utc>>) {
    let mut held: HashSet<&str> = busy.iter().map(String::as_str).collect();
    let mut ready = Vec::new();
    let mut messages = 0usize;
    let mut bytes = 0usize;
    let mut next_due: Option<DateTime<Utc>> = None;
    for row in window {
        let key = row.partition_key.as_str();
        if held.contains(key) {
            continue;
        }
        let row_bytes = usize::try_from(row.payload_bytes).unwrap_or(0);
        let row_messages = super::message_count(row.bundled);
        let full = !ready.is_empty()
            && (messages.saturating_add(row_messages) > bounds.messages
                || bytes.saturating_add(row_bytes) > bounds.bytes);
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
        messages = messages.saturating_add(row_messages);
        ready.push(row.clone());
    }
    (ready, next_due)
}

/// Keeps, of each key's rows in `ready` (oldest first), those that continue the key's pending
/// rows (`pending`, oldest first) without a row another pass holds in between: a key whose
/// oldest pending row is not ours goes whole, and one whose rows interleave with another
/// pass's window (concurrent `SKIP LOCKED` reads lock rows in turns) stops at the first row it
/// does not hold.
fn keep_unbroken_runs(ready: &mut Vec<Pending>, pending: &HashMap<String, Vec<i64>>) {
    let mut taken: HashMap<String, usize> = HashMap::new();
    let mut broken: HashSet<String> = HashSet::new();
    ready.retain(|row| {
        if broken.contains(&row.partition_key) {
            return false;
        }
        let next = taken.entry(row.partition_key.clone()).or_insert(0);
        let expected = pending
            .get(&row.partition_key)
            .and_then(|ids| ids.get(*next));
        if expected == Some(&row.id) {
            *next += 1;
            true
        } else {
            broken.insert(row.partition_key.clone());
            false
        }
    });
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
        bundled: row.bundled,
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

    #[test]
    fn lanes_default_to_two_on_sqlite_and_one_on_postgres_unless_configured() {
        assert_eq!(resolved_lanes(None, false), 2);
        assert_eq!(resolved_lanes(None, true), 1);
        assert_eq!(resolved_lanes(Some(3), true), 3);
        assert_eq!(resolved_lanes(Some(0), false), 1, "at least one");
    }
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
            bundled: None,
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
        let (ready, _) = select_ready(&window, &HashSet::new(), now, bounds);
        let ids: Vec<i64> = ready.iter().map(|r| r.id).collect();
        assert_eq!(
            ids,
            [1, 2, 4, 5],
            "c does not fit; smaller rows after it still do"
        );
        let large = vec![sized(1, "a", 0, 5000, now), sized(2, "b", 0, 10, now)];
        let (ready, _) = select_ready(&large, &HashSet::new(), now, bounds);
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
        let (ready, next_due) = select_ready(&window, &HashSet::new(), now, at_most(10));
        let ids: Vec<i64> = ready.iter().map(|r| r.id).collect();
        assert_eq!(ids, [2, 4]);
        assert_eq!(next_due, Some(now + chrono::Duration::seconds(10)));
    }

    #[test]
    fn keys_another_lane_delivers_are_held_back_whole() {
        let now = Utc::now();
        let window = vec![
            row(3, "a", 0, now),
            row(4, "b", 0, now),
            row(5, "a", 0, now),
        ];
        let busy = HashSet::from(["a".to_owned()]);
        let (ready, next_due) = select_ready(&window, &busy, now, at_most(10));
        assert_eq!(ready.iter().map(|r| r.id).collect::<Vec<_>>(), [4]);
        assert_eq!(next_due, None, "a busy key is not a row coming due");
    }

    #[test]
    fn the_batch_limit_holds_back_later_rows_of_cut_keys() {
        let now = Utc::now();
        let window = vec![
            row(1, "a", 0, now),
            row(2, "b", 0, now),
            row(3, "a", 0, now),
        ];
        let (ready, _) = select_ready(&window, &HashSet::new(), now, at_most(1));
        let ids: Vec<i64> = ready.iter().map(|r| r.id).collect();
        assert_eq!(ids, [1]);
    }

    #[test]
    fn keys_headed_by_another_replica_are_skipped() {
        let now = Utc::now();
        let mut ready = vec![row(5, "a", 0, now), row(6, "b", 0, now)];
        let pending = HashMap::from([("a".to_owned(), vec![2, 5]), ("b".to_owned(), vec![6])]);
        keep_unbroken_runs(&mut ready, &pending);
        assert_eq!(ready.iter().map(|r| r.id).collect::<Vec<_>>(), [6]);
    }

    #[test]
    fn a_key_stops_at_the_first_row_another_pass_holds() {
        let now = Utc::now();
        // Two passes locked rows in turns: 4 is the other pass's, between our 3 and 7.
        let mut ready = vec![
            row(3, "a", 0, now),
            row(5, "b", 0, now),
            row(7, "a", 0, now),
            row(8, "b", 0, now),
        ];
        let pending = HashMap::from([
            ("a".to_owned(), vec![3, 4, 7]),
            ("b".to_owned(), vec![5, 8]),
        ]);
        keep_unbroken_runs(&mut ready, &pending);
        assert_eq!(ready.iter().map(|r| r.id).collect::<Vec<_>>(), [3, 5, 8]);
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
            let (ready, _) = select_ready(&window, &HashSet::new(), now, bounds);
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
