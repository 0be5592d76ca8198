//! The transactional outbox: the one mechanism every asynchronous hop between Leadflow services
//! uses.
//!
//! A service writes its state change and the messages announcing it in one database transaction
//! ([`enqueue`]); a [`Relay`] delivers pending messages to the receiving service in batches,
//! at least once, in order per partition key (a lead), with exponential backoff on failure and
//! across restarts; the receiver applies each message id at most once ([`inbox::claim`]).

mod bundle;
mod deletes;
mod entity;
pub mod inbox;
mod migration;
mod relay;

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1::MessageHeader;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr};
use tokio::sync::Notify;

use crate::script::WriteScript;

pub use bundle::{PARTITIONS, partition_of};
pub use deletes::{ClaimedDeletes, SharedDeletes};
pub use entity::{inbox_message, outbox_message};
pub use migration::{
    CreateOutboxAndInbox, InboxProcessedAtIndex, InboxWithoutRowid, KeyIndexOnlyOnPostgres,
    OutboxBacklogCountsMessages, OutboxBundles, OutboxPayloadLz4,
};
pub use relay::{
    Backlog, DEFAULT_SQLITE_LANES, DeliveryError, OutboxSink, Relay, RelayConfig, RelayError,
    RelayPass, backlog,
};

/// A message to enqueue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Where it goes, e.g. `scoring`.
    pub destination: &'static str,
    /// Unique id the receiver deduplicates by (a bundle gets an id of its own instead).
    pub message_id: String,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// Messages with the same key are delivered in order (a lead id).
    pub partition_key: String,
    /// The encoded protobuf message.
    pub payload: Vec<u8>,
}

/// A message as the relay hands it to an [`OutboxSink`].
#[derive(Debug, Clone)]
pub struct OutboxMessage {
    /// Position in the queue.
    pub id: i64,
    /// Unique id the receiver deduplicates by.
    pub message_id: String,
    /// The tenant it belongs to.
    pub tenant_id: String,
    /// Its ordering key.
    pub partition_key: String,
    /// The encoded protobuf message.
    pub payload: Vec<u8>,
    /// W3C trace context (traceparent, tracestate) of the operation that produced it.
    pub trace_context: HashMap<String, String>,
    /// When it was enqueued.
    pub created_at: DateTime<Utc>,
    /// Failed attempts before this one.
    pub attempts: i32,
    /// How many messages the row bundles; `None` when its payload is one message.
    /// [`decode_batch`] reads either.
    pub bundled: Option<i32>,
}

impl OutboxMessage {
    /// How many messages the row carries.
    pub fn count(&self) -> usize {
        message_count(self.bundled)
    }
}

/// How many messages a row carries, given its `bundled` column.
pub(crate) fn message_count(bundled: Option<i32>) -> usize {
    bundled.map_or(1, |n| usize::try_from(n).unwrap_or(0).max(1))
}

/// How a transaction's messages become outbox rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// A row per message, keyed by the message's own partition key: for receivers that claim
    /// every message id on its own.
    PerMessage,
    /// A row per destination, tenant and key partition ([`partition_of`]), its messages sharing
    /// the row's id: the receiver claims the id once and applies the consecutive messages
    /// carrying it together. Every producer to a destination must bundle, or a lead's bundled
    /// and unbundled messages would be ordered by different keys.
    Bundled,
}

/// Decodes the messages of each row (one, or a bundle's) as `M` and stamps each message's
/// header (`header_of`) with the row's message id, the id the receiver claims, and the trace
/// context the message was produced under, so the receiver continues the producer's trace:
/// what every sink does before its delivery call.
pub fn decode_batch<M: prost::Message + Default>(
    messages: &[OutboxMessage],
    header_of: impl Fn(&mut M) -> Option<&mut MessageHeader>,
) -> Result<Vec<M>, DeliveryError> {
    let mut decoded = Vec::with_capacity(messages.iter().map(OutboxMessage::count).sum());
    for row in messages {
        bundle::for_each_message(row, |payload, trace_context| {
            let mut message = M::decode(payload)
                .map_err(|err| DeliveryError(format!("outbox payload does not decode: {err}")))?;
            if let Some(header) = header_of(&mut message) {
                header.message_id.clone_from(&row.message_id);
                header.trace_context = trace_context;
            }
            decoded.push(message);
            Ok(())
        })?;
    }
    Ok(decoded)
}

/// Writes `messages` inside the caller's transaction `txn`, each with the current trace context,
/// packed as `packing` says, so they exist if and only if the state change they announce is
/// committed.
///
/// Delivery times are wall-clock times (the relay runs on the wall clock), never a service's
/// domain clock: a test or a replay moving domain time must not delay delivery.
pub async fn enqueue<C: ConnectionTrait>(
    txn: &C,
    messages: Vec<NewMessage>,
    packing: Packing,
) -> Result<(), DbErr> {
    let mut script = WriteScript::new(txn.get_database_backend());
    enqueue_into(&mut script, messages, packing)?;
    script.run(txn).await
}

/// The trace context of the current span, as an outbox row stores it: capture it where a
/// write is requested when the messages are enqueued elsewhere (a group-commit writer).
pub fn current_trace_context() -> Result<String, DbErr> {
    serde_json::to_string(&crate::telemetry::current_trace_context())
        .map_err(|err| DbErr::Custom(format!("trace context does not serialise: {err}")))
}

/// [`enqueue`] added to `script`, which the caller runs in its transaction with the rest of its
/// writes.
pub fn enqueue_into(
    script: &mut WriteScript,
    messages: Vec<NewMessage>,
    packing: Packing,
) -> Result<(), DbErr> {
    if !messages.is_empty() {
        enqueue_traced_into(script, vec![(current_trace_context()?, messages)], packing);
    }
    Ok(())
}

/// Adds the inserts of groups of messages to `script`, each group under its own trace context
/// (from [`current_trace_context`]): for a writer that enqueues for several callers at once.
/// Bundles keep each message's own trace context.
pub fn enqueue_traced_into(
    script: &mut WriteScript,
    groups: Vec<(String, Vec<NewMessage>)>,
    packing: Packing,
) {
    let now = Utc::now();
    let rows = match packing {
        Packing::PerMessage => groups
            .into_iter()
            .flat_map(|(trace_context, messages)| {
                messages
                    .into_iter()
                    .map(move |m| bundle::RowToWrite::single(m, trace_context.clone()))
            })
            .collect(),
        Packing::Bundled => bundle::bundle(groups),
    };
    let rows: Vec<outbox_message::ActiveModel> = rows
        .into_iter()
        .map(|row| outbox_message::ActiveModel {
            destination: Set(row.destination.to_owned()),
            message_id: Set(row.message_id),
            tenant_id: Set(row.tenant_id),
            partition_key: Set(row.partition_key),
            payload: Set(row.payload),
            trace_context: Set(row.trace_context),
            created_at: Set(now),
            attempts: Set(0),
            next_attempt_at: Set(now),
            last_error: Set(None),
            bundled: Set(row.bundled),
            ..Default::default()
        })
        .collect();
    script.insert_many(rows, None);
}

/// Wakes a relay as soon as new messages are committed, instead of at its next poll.
#[derive(Debug, Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    /// A new, unconnected wake-up handle; give a clone to the relay.
    pub fn new() -> Self {
        Self::default()
    }

    /// Call after committing a transaction that enqueued messages.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.0.notified().await;
    }
}

/// Relay settings every service shares, from flags or environment.
#[derive(clap::Args, Debug, Clone)]
pub struct OutboxArgs {
    /// How often an idle relay looks for new messages, in milliseconds (a commit wakes it
    /// sooner in the same process).
    #[arg(long, env = "LEADFLOW_OUTBOX_POLL_MS", default_value_t = 1000)]
    pub outbox_poll_ms: u64,
    /// Most messages per delivery call (a delivery also stops at 4 MiB of payloads).
    // 2,000 drained 10% faster at 10,000 leads but not at 100,000, where the suite's peak
    // memory rose from 462 to 546 MiB (BENCHMARKS.md).
    #[arg(long, env = "LEADFLOW_OUTBOX_BATCH_SIZE", default_value_t = 500)]
    pub outbox_batch_size: usize,
    /// Backoff after the first failed delivery, in milliseconds; doubled after each further one.
    #[arg(long, env = "LEADFLOW_OUTBOX_BACKOFF_MS", default_value_t = 200)]
    pub outbox_backoff_ms: u64,
    /// Longest backoff, in milliseconds.
    #[arg(long, env = "LEADFLOW_OUTBOX_BACKOFF_MAX_MS", default_value_t = 60_000)]
    pub outbox_backoff_max_ms: u64,
    /// Deliveries each relay keeps in flight at once, on disjoint leads (at least one): while
    /// the receiver applies one, the next is on its way. Unset: two on SQLite, one on
    /// PostgreSQL.
    #[arg(long, env = "LEADFLOW_OUTBOX_LANES")]
    pub outbox_lanes: Option<usize>,
    /// How long an idle relay, woken by a commit, waits for more commits before it delivers,
    /// in milliseconds (0: at once): under a trickle of writes, deliveries carry several
    /// commits' messages instead of one, for that much latency per hop.
    #[arg(long, env = "LEADFLOW_OUTBOX_LINGER_MS", default_value_t = relay::DEFAULT_LINGER_MS)]
    pub outbox_linger_ms: u64,
    /// How long a receiver remembers the message ids it applied, in hours (at least one): a
    /// sender stopped for longer while holding a delivered message would have it applied twice.
    #[arg(long, env = "LEADFLOW_INBOX_RETENTION_HOURS", default_value_t = 168)]
    pub inbox_retention_hours: u64,
}

impl Default for OutboxArgs {
    fn default() -> Self {
        Self {
            outbox_poll_ms: 1000,
            outbox_batch_size: 500,
            outbox_backoff_ms: 200,
            outbox_backoff_max_ms: 60_000,
            outbox_lanes: None,
            outbox_linger_ms: relay::DEFAULT_LINGER_MS,
            inbox_retention_hours: 168,
        }
    }
}

impl OutboxArgs {
    /// How long receivers remember applied message ids ([`inbox::prune`]).
    pub fn inbox_retention(&self) -> chrono::TimeDelta {
        i64::try_from(self.inbox_retention_hours)
            .ok()
            .and_then(chrono::TimeDelta::try_hours)
            .unwrap_or(chrono::TimeDelta::MAX)
            .max(inbox::MIN_RETENTION)
    }

    /// The relay configuration for `destination`.
    pub fn relay_config(&self, destination: &'static str) -> RelayConfig {
        let batch_size = self.outbox_batch_size.max(1);
        RelayConfig {
            destination,
            batch_size,
            max_batch_bytes: relay::DEFAULT_MAX_BATCH_BYTES,
            window: batch_size * 4,
            poll_interval: std::time::Duration::from_millis(self.outbox_poll_ms.max(1)),
            backoff_base: std::time::Duration::from_millis(self.outbox_backoff_ms.max(1)),
            backoff_max: std::time::Duration::from_millis(self.outbox_backoff_max_ms.max(1)),
            lanes: self.outbox_lanes.map(|lanes| lanes.max(1)),
            linger: std::time::Duration::from_millis(self.outbox_linger_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        outbox: OutboxArgs,
    }

    #[test]
    fn the_inbox_retention_is_a_week_unless_set_and_never_under_an_hour() {
        let retention = |args: &[&str]| {
            Flags::parse_from([&["test"], args].concat())
                .outbox
                .inbox_retention()
        };
        assert_eq!(retention(&[]), chrono::TimeDelta::days(7));
        assert_eq!(
            retention(&["--inbox-retention-hours", "720"]),
            chrono::TimeDelta::days(30)
        );
        assert_eq!(
            retention(&["--inbox-retention-hours", "0"]),
            inbox::MIN_RETENTION
        );
        assert_eq!(
            OutboxArgs::default().inbox_retention(),
            inbox::DEFAULT_RETENTION
        );
    }
}
