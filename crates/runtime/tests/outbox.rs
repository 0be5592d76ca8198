//! The transactional outbox against real databases: at-least-once delivery with backoff,
//! per-key order, receiver dedupe, and two relays on PostgreSQL never delivering a row twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use leadflow_proto::common::v1::MessageHeader;
use leadflow_proto::ingestion::v1::{ActivityRecorded, LeadEvent, lead_event};
use leadflow_runtime::lease::{CreateLeases, Lease, lease_row};
use leadflow_runtime::outbox::{
    self, CreateOutboxAndInbox, DeliveryError, InboxProcessedAtIndex, InboxWithoutRowid,
    KeyIndexOnlyOnPostgres, NewMessage, OutboxBacklogCountsMessages, OutboxBundles, OutboxMessage,
    OutboxPayloadLz4, OutboxSink, Packing, Relay, RelayConfig, SharedDeletes, Wakeup, inbox,
    inbox_message, outbox_message,
};
use leadflow_runtime::script::WriteScript;
use leadflow_test_support::{Backend, TestDb, on_both_backends};
use prost::Message;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, Statement, TransactionTrait,
};
use sea_orm_migration::{MigrationTrait, MigratorTrait};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateOutboxAndInbox),
            Box::new(KeyIndexOnlyOnPostgres),
            Box::new(CreateLeases),
            Box::new(InboxWithoutRowid),
            Box::new(InboxProcessedAtIndex),
            Box::new(OutboxBundles {
                destinations: &["receiver"],
            }),
            Box::new(OutboxBacklogCountsMessages),
            Box::new(OutboxPayloadLz4),
        ]
    }
}

/// A receiver that fails its first `failures` calls, then records every delivery and dedupes
/// by message id, as a real receiver's inbox would.
#[derive(Clone)]
struct RecordingSink {
    state: Arc<Mutex<SinkState>>,
    applied: watch::Sender<usize>,
}

#[derive(Default)]
struct SinkState {
    failures_left: usize,
    /// Deliveries of more messages fail, as a receiver's deadline would.
    max_accepted: Option<usize>,
    raw_deliveries: Vec<String>,
    /// The size of each delivery accepted.
    batches: Vec<usize>,
    seen: HashSet<String>,
    applied_in_order: Vec<(String, String)>,
}

impl RecordingSink {
    fn failing_first(failures: usize) -> (Self, watch::Receiver<usize>) {
        let (applied, watcher) = watch::channel(0);
        let state = SinkState {
            failures_left: failures,
            ..SinkState::default()
        };
        (
            Self {
                state: Arc::new(Mutex::new(state)),
                applied,
            },
            watcher,
        )
    }
}

impl RecordingSink {
    /// Asserts every message of `expected` (message ids per key, in order) reached the sink
    /// once, in that order per key, and nothing else did.
    fn assert_once_in_order(&self, expected: &HashMap<String, Vec<String>>) {
        let state = self.state.lock().expect("sink lock");
        assert_eq!(
            per_key(&state.applied_in_order),
            *expected,
            "per-key order kept"
        );
        let total: usize = expected.values().map(Vec::len).sum();
        assert_eq!(state.raw_deliveries.len(), total, "nothing delivered twice");
    }
}

impl OutboxSink for RecordingSink {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let mut state = self.state.lock().expect("sink lock");
        if state.failures_left > 0 {
            state.failures_left -= 1;
            return Err(DeliveryError("receiver unavailable".into()));
        }
        if state.max_accepted.is_some_and(|max| messages.len() > max) {
            return Err(DeliveryError("deadline exceeded".into()));
        }
        state.batches.push(messages.len());
        for m in messages {
            state.raw_deliveries.push(m.message_id.clone());
            if state.seen.insert(m.message_id.clone()) {
                state
                    .applied_in_order
                    .push((m.partition_key.clone(), m.message_id.clone()));
            }
        }
        self.applied.send_replace(state.seen.len());
        Ok(())
    }
}

fn fast_config() -> RelayConfig {
    RelayConfig {
        batch_size: 7,
        window: 28,
        poll_interval: Duration::from_millis(20),
        backoff_base: Duration::from_millis(2),
        backoff_max: Duration::from_millis(10),
        ..RelayConfig::new("receiver")
    }
}

async fn connect(db: &TestDb) -> DatabaseConnection {
    let conn = leadflow_runtime::db::connect(&db.url, 5)
        .await
        .expect("connect");
    leadflow_runtime::db::migrate::<Migrator>(&conn)
        .await
        .expect("migrate");
    conn
}

/// Enqueues `count` messages over `keys` keys, a few per transaction; returns the expected
/// per-key order of message ids.
async fn enqueue_messages(
    conn: &DatabaseConnection,
    count: usize,
    keys: usize,
) -> HashMap<String, Vec<String>> {
    enqueue_numbered(conn, 0..count, keys).await
}

/// [`enqueue_messages`] numbering the messages from `numbers`.
async fn enqueue_numbered(
    conn: &DatabaseConnection,
    numbers: std::ops::Range<usize>,
    keys: usize,
) -> HashMap<String, Vec<String>> {
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    let (mut produced, count) = (numbers.start, numbers.end);
    while produced < count {
        let txn = conn.begin().await.expect("begin");
        let mut messages = Vec::new();
        for _ in 0..3.min(count - produced) {
            let key = format!("lead-{}", produced % keys);
            let message_id = format!("m-{produced:04}");
            expected
                .entry(key.clone())
                .or_default()
                .push(message_id.clone());
            messages.push(NewMessage {
                destination: "receiver",
                message_id,
                tenant_id: "t".into(),
                partition_key: key,
                payload: vec![1, 2, 3],
            });
            produced += 1;
        }
        outbox::enqueue(&txn, messages, Packing::PerMessage)
            .await
            .expect("enqueue");
        txn.commit().await.expect("commit");
    }
    expected
}

async fn wait_for(watcher: &mut watch::Receiver<usize>, count: usize) {
    tokio::time::timeout(Duration::from_secs(30), watcher.wait_for(|n| *n >= count))
        .await
        .expect("every message delivered in time")
        .expect("sink alive");
}

/// Claims `headers` inside `txn` as a receiver does: the ids read now, the claims written by
/// the script it runs with the rest of its writes.
async fn claim_many(
    txn: &impl ConnectionTrait,
    headers: &[MessageHeader],
    now: chrono::DateTime<Utc>,
) -> Result<HashSet<String>, sea_orm::DbErr> {
    let mut script = WriteScript::new(txn.get_database_backend());
    let claimed = inbox::claim_many_into(txn, &mut script, headers, now).await?;
    script.run(txn).await?;
    Ok(headers
        .iter()
        .filter(|h| claimed.contains(&h.message_id))
        .map(|h| h.message_id.clone())
        .collect())
}

fn per_key(applied: &[(String, String)]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for (key, id) in applied {
        out.entry(key.clone()).or_default().push(id.clone());
    }
    out
}

async fn failing_receiver_gets_everything_once_in_order(db: TestDb) {
    let conn = connect(&db).await;
    let expected = enqueue_messages(&conn, 60, 5).await;
    let (sink, mut watcher) = RecordingSink::failing_first(3);
    let shutdown = CancellationToken::new();
    let relay = Relay::new(conn.clone(), sink.clone(), fast_config(), Wakeup::new());
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_for(&mut watcher, 60).await;
    shutdown.cancel();
    task.await.expect("relay stops");
    let state = sink.state.lock().expect("lock");
    assert_eq!(state.seen.len(), 60);
    assert_eq!(
        per_key(&state.applied_in_order),
        expected,
        "per-key order kept"
    );
}

/// A receiver that times out on any delivery larger than it can apply in time still gets
/// everything, once and in order: the relay's deliveries shrink until they pass.
async fn a_receiver_that_times_out_on_large_deliveries_gets_smaller_ones(db: TestDb) {
    let conn = connect(&db).await;
    let expected = enqueue_messages(&conn, 40, 5).await;
    let (sink, mut watcher) = RecordingSink::failing_first(0);
    sink.state.lock().expect("lock").max_accepted = Some(3);
    let shutdown = CancellationToken::new();
    let relay = Relay::new(conn.clone(), sink.clone(), fast_config(), Wakeup::new());
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_for(&mut watcher, 40).await;
    shutdown.cancel();
    task.await.expect("relay stops");
    sink.assert_once_in_order(&expected);
}

/// A relay reading its window through read-only connections (SQLite; the writer's pool on
/// PostgreSQL) delivers what is committed before and while it runs, once each and in order,
/// and leaves nothing pending: it never re-reads a row its own delete removed.
async fn a_relay_reading_through_readers_delivers_each_row_once(db: TestDb) {
    let conn = connect(&db).await;
    let reader = leadflow_runtime::db::reader(&db.url, &conn)
        .await
        .expect("reader");
    let mut expected = enqueue_messages(&conn, 30, 4).await;
    let (sink, mut watcher) = RecordingSink::failing_first(2);
    let shutdown = CancellationToken::new();
    let wakeup = Wakeup::new();
    let relay =
        Relay::new(conn.clone(), sink.clone(), fast_config(), wakeup.clone()).with_reader(reader);
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_for(&mut watcher, 10).await;
    for (key, ids) in enqueue_numbered(&conn, 30..60, 4).await {
        expected.entry(key).or_default().extend(ids);
    }
    wakeup.wake();
    wait_for(&mut watcher, 60).await;
    shutdown.cancel();
    task.await.expect("relay stops");
    sink.assert_once_in_order(&expected);
    let left = outbox::backlog(&conn, "receiver").await.expect("backlog");
    assert_eq!(left.count, 0, "every delivered row is deleted");
}

/// A pass that finds nothing new to deliver deletes what the pass before it delivered (on
/// SQLite that delete overlaps the next delivery), without delivering it again.
async fn an_idle_pass_deletes_what_the_last_pass_delivered(db: TestDb) {
    let conn = connect(&db).await;
    enqueue_messages(&conn, 5, 2).await;
    let (sink, _watcher) = RecordingSink::failing_first(0);
    let relay = Relay::new(conn.clone(), sink.clone(), fast_config(), Wakeup::new());
    assert_eq!(relay.run_once().await.expect("pass").delivered, 5);
    assert_eq!(relay.run_once().await.expect("pass").delivered, 0);
    let left = outbox::backlog(&conn, "receiver").await.expect("backlog");
    assert_eq!(left.count, 0, "every delivered row is deleted");
    assert_eq!(
        sink.state.lock().expect("lock").raw_deliveries.len(),
        5,
        "nothing delivered twice"
    );
}

/// A delivery carries at most the configured payload bytes: three-byte payloads under a
/// seven-byte bound go two at a time, all of them once and in order.
async fn deliveries_stay_under_their_byte_bound(db: TestDb) {
    let conn = connect(&db).await;
    let expected = enqueue_messages(&conn, 10, 3).await;
    let (sink, mut watcher) = RecordingSink::failing_first(0);
    // One lane, so every delivery is as full as the bound allows (a second lane takes what
    // the first leaves, in smaller deliveries).
    let config = RelayConfig {
        max_batch_bytes: 7,
        lanes: Some(1),
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let task =
        tokio::spawn(Relay::new(conn, sink.clone(), config, Wakeup::new()).run(shutdown.clone()));
    wait_for(&mut watcher, 10).await;
    shutdown.cancel();
    task.await.expect("relay stops");
    let state = sink.state.lock().expect("lock");
    assert_eq!(state.batches, [2, 2, 2, 2, 2]);
    assert_eq!(per_key(&state.applied_in_order), expected);
}

async fn undelivered_rows_survive_a_restart(db: TestDb) {
    let conn = connect(&db).await;
    let expected = enqueue_messages(&conn, 10, 2).await;
    conn.close().await.expect("close");
    // A new process: a new connection and a new relay find the rows left behind.
    let conn = connect(&db).await;
    let (sink, mut watcher) = RecordingSink::failing_first(0);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        Relay::new(conn, sink.clone(), fast_config(), Wakeup::new()).run(shutdown.clone()),
    );
    wait_for(&mut watcher, 10).await;
    shutdown.cancel();
    task.await.expect("relay stops");
    sink.assert_once_in_order(&expected);
}

async fn the_backlog_counts_one_destination_and_dates_its_oldest_row(db: TestDb) {
    let conn = connect(&db).await;
    assert_eq!(
        outbox::backlog(&conn, "receiver").await.expect("backlog"),
        outbox::Backlog {
            count: 0,
            oldest: None
        }
    );
    let before = Utc::now();
    enqueue_messages(&conn, 5, 2).await;
    let between = Utc::now();
    let txn = conn.begin().await.expect("begin");
    outbox::enqueue(
        &txn,
        vec![NewMessage {
            destination: "elsewhere",
            message_id: "other-1".into(),
            tenant_id: "t".into(),
            partition_key: "lead-9".into(),
            payload: vec![],
        }],
        Packing::PerMessage,
    )
    .await
    .expect("enqueue");
    txn.commit().await.expect("commit");
    let backlog = outbox::backlog(&conn, "receiver").await.expect("backlog");
    assert_eq!(backlog.count, 5, "only the destination's rows");
    let oldest = backlog.oldest.expect("an oldest row");
    assert!(
        before <= oldest && oldest <= between,
        "the first enqueued: {before} <= {oldest} <= {between}"
    );
    assert_eq!(
        outbox::backlog(&conn, "elsewhere")
            .await
            .expect("backlog")
            .count,
        1
    );

    // A bundle counts each of its messages, as deliveries do, though it is one row.
    let txn = conn.begin().await.expect("begin");
    let messages = (0..4)
        .map(|n| NewMessage {
            destination: "bundled",
            message_id: format!("b-{n}"),
            tenant_id: "t".into(),
            partition_key: "lead-1".into(),
            payload: vec![],
        })
        .collect();
    outbox::enqueue(&txn, messages, Packing::Bundled)
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    let rows = outbox_message::Entity::find()
        .filter(outbox_message::Column::Destination.eq("bundled"))
        .count(&conn)
        .await
        .expect("rows");
    assert_eq!(rows, 1, "one bundle");
    assert_eq!(
        outbox::backlog(&conn, "bundled")
            .await
            .expect("backlog")
            .count,
        4
    );
}

async fn inbox_claims_a_message_id_once(db: TestDb) {
    let conn = connect(&db).await;
    let txn = conn.begin().await.expect("begin");
    assert!(
        inbox::claim(&txn, "m-1", "t", Utc::now())
            .await
            .expect("claim")
    );
    assert!(
        !inbox::claim(&txn, "m-1", "t", Utc::now())
            .await
            .expect("claim again")
    );
    txn.commit().await.expect("commit");
    let txn = conn.begin().await.expect("begin");
    assert!(
        !inbox::claim(&txn, "m-1", "t", Utc::now())
            .await
            .expect("claim after commit")
    );
    assert!(
        inbox::claim(&txn, "m-2", "t", Utc::now())
            .await
            .expect("claim other")
    );
}

/// Message ids applied before the inbox's rebuild without a rowid (SQLite) are still refused
/// after it, and new ones still claimed.
async fn applied_message_ids_survive_the_inbox_rebuild(db: TestDb) {
    let conn = leadflow_runtime::db::connect(&db.url, 5)
        .await
        .expect("connect");
    Migrator::up(&conn, Some(3))
        .await
        .expect("the migrations before it");
    let txn = conn.begin().await.expect("begin");
    for id in ["m-1", "m-2"] {
        assert!(
            inbox::claim(&txn, id, "t", Utc::now())
                .await
                .expect("claim")
        );
    }
    txn.commit().await.expect("commit");

    Migrator::up(&conn, None).await.expect("the rebuild");

    let txn = conn.begin().await.expect("begin");
    for id in ["m-1", "m-2"] {
        assert!(
            !inbox::claim(&txn, id, "t", Utc::now())
                .await
                .expect("claim"),
            "{id} was applied before the rebuild"
        );
    }
    assert!(
        inbox::claim(&txn, "m-3", "t", Utc::now())
            .await
            .expect("claim")
    );
    txn.commit().await.expect("commit");
    if conn.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
        let sql = leadflow_test_support::sqlite_schema_sql(&conn, "inbox").await;
        assert!(sql.ends_with("WITHOUT ROWID"), "{sql}");
    }
}

async fn inbox_claims_a_batch_of_message_ids_once(db: TestDb) {
    let header = |id: &str, tenant: &str| MessageHeader {
        message_id: id.to_owned(),
        tenant_id: tenant.to_owned(),
        lead_id: "l".to_owned(),
        ..Default::default()
    };
    let conn = connect(&db).await;
    let txn = conn.begin().await.expect("begin");
    assert!(
        inbox::claim(&txn, "m-1", "t", Utc::now())
            .await
            .expect("claim")
    );
    let batch = [
        header("m-1", "t"),
        header("m-2", "t"),
        header("m-3", "u"),
        header("m-2", "t"),
    ];
    let claimed = claim_many(&txn, &batch, Utc::now())
        .await
        .expect("claim many");
    let mut claimed: Vec<String> = claimed.into_iter().collect();
    claimed.sort();
    assert_eq!(
        claimed,
        ["m-2", "m-3"],
        "m-1 was applied before, m-2 repeats"
    );
    txn.commit().await.expect("commit");
    let txn = conn.begin().await.expect("begin");
    let many: Vec<MessageHeader> = (0..2500).map(|i| header(&format!("n-{i}"), "t")).collect();
    let claimed = claim_many(&txn, &many, Utc::now())
        .await
        .expect("claim many in chunks");
    assert_eq!(claimed.len(), 2500);
    let again = claim_many(
        &txn,
        &[header("n-2499", "t"), header("m-3", "u")],
        Utc::now(),
    )
    .await
    .expect("claim again");
    assert!(again.is_empty(), "{again:?}");
    assert!(
        !inbox::claim(&txn, "m-2", "t", Utc::now())
            .await
            .expect("one by one")
    );
}

/// Two replicas share a lease: one holds it while it renews, the other takes over only once it
/// has expired.
async fn a_lease_has_one_holder_until_it_expires(db: TestDb) {
    let conn = connect(&db).await;
    let ttl = Duration::from_secs(30);
    let first = Lease::new(conn.clone(), "test.sweeper", ttl);
    let second = Lease::new(conn, "test.sweeper", ttl);
    let t0 = Utc::now();
    let at = |s: i64| t0 + chrono::Duration::seconds(s);
    assert!(first.acquire_at(at(0)).await.expect("acquire"));
    assert!(
        !second.acquire_at(at(1)).await.expect("acquire"),
        "held by the first"
    );
    assert!(
        first.acquire_at(at(20)).await.expect("renew"),
        "the holder renews"
    );
    assert!(
        !second.acquire_at(at(45)).await.expect("acquire"),
        "renewed until 50"
    );
    assert!(
        second.acquire_at(at(51)).await.expect("acquire"),
        "expired: taken over"
    );
    assert!(
        !first.acquire_at(at(52)).await.expect("acquire"),
        "the first lost it"
    );
}

/// A pass longer than its lease's time to live keeps the lease (renewed meanwhile), and a pass
/// whose lease another replica took stops.
async fn a_long_pass_keeps_its_lease_and_a_lost_lease_stops_it(db: TestDb) {
    let conn = connect(&db).await;
    let ttl = Duration::from_millis(300);
    let first = Lease::new(conn.clone(), "test.long", ttl);
    let second = Lease::new(conn.clone(), "test.long", ttl);
    assert!(first.acquire().await.expect("acquire"));
    let taken = Utc::now();
    let expiry = || async {
        lease_row::Entity::find_by_id("test.long")
            .one(&conn)
            .await
            .expect("lease row")
            .expect("a lease row")
            .expires_at
    };
    let past_first_expiry = taken + chrono::Duration::milliseconds(400);
    let long_pass = async {
        tokio::time::timeout(Duration::from_secs(10), async {
            while expiry().await < past_first_expiry {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("renewed during the pass");
        second
            .acquire_at(past_first_expiry - chrono::Duration::milliseconds(1))
            .await
            .expect("acquire")
    };
    assert_eq!(
        first.hold_while(long_pass).await,
        Some(false),
        "the pass ends, the lease still the first's past its first expiry"
    );

    let stopped = first.hold_while(async {
        let later = Utc::now() + chrono::Duration::seconds(10);
        assert!(second.acquire_at(later).await.expect("take over"));
        std::future::pending::<()>().await
    });
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), stopped)
            .await
            .expect("the pass stops"),
        None
    );
}

/// The `(destination, partition_key, id)` index exists only on PostgreSQL, whose relays read it;
/// on SQLite the migrations create it and then drop it, as they do for a store made before.
async fn the_key_index_is_kept_only_where_relays_read_it(db: TestDb) {
    let conn = connect(&db).await;
    let sql = match db.backend {
        Backend::Sqlite => {
            "SELECT count(*) AS n FROM sqlite_master \
             WHERE type = 'index' AND name = 'outbox_destination_partition'"
        }
        Backend::Postgres => {
            "SELECT count(*) AS n FROM pg_indexes WHERE indexname = 'outbox_destination_partition'"
        }
    };
    let row = conn
        .query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
        .await
        .expect("query")
        .expect("a row");
    let indexes: i64 = row.try_get("", "n").expect("count");
    assert_eq!(indexes, i64::from(db.backend == Backend::Postgres));
}

/// Ids applied more than the retention ago are forgotten, oldest first and at most a batch at a
/// time; younger ones are still deduped.
async fn inbox_forgets_ids_applied_longer_ago_than_its_retention(db: TestDb) {
    let header = |id: String| MessageHeader {
        message_id: id,
        tenant_id: "t".to_owned(),
        lead_id: "l".to_owned(),
        ..Default::default()
    };
    let conn = connect(&db).await;
    let start = Utc::now();
    let old: Vec<MessageHeader> = (0..1005).map(|i| header(format!("old-{i:04}"))).collect();
    let txn = conn.begin().await.expect("begin");
    claim_many(&txn, &old, start).await.expect("claim");
    let recent = start + inbox::DEFAULT_RETENTION - chrono::TimeDelta::hours(1);
    assert!(
        inbox::claim(&txn, "recent", "t", recent)
            .await
            .expect("claim")
    );
    txn.commit().await.expect("commit");

    let prune = |now, retention| {
        let conn = &conn;
        async move { inbox::prune(conn, now, retention).await.expect("prune") }
    };
    let just_before = start + inbox::DEFAULT_RETENTION;
    assert_eq!(
        prune(just_before, inbox::DEFAULT_RETENTION).await,
        0,
        "nothing is past its retention yet"
    );
    let later = start + inbox::DEFAULT_RETENTION + chrono::TimeDelta::hours(2);
    assert_eq!(
        prune(later, chrono::TimeDelta::MAX).await,
        0,
        "a retention longer than time can hold forgets nothing"
    );
    assert_eq!(
        prune(later, inbox::DEFAULT_RETENTION).await,
        inbox::PRUNE_BATCH
    );
    assert_eq!(prune(later, inbox::DEFAULT_RETENTION).await, 5);
    assert_eq!(prune(later, inbox::DEFAULT_RETENTION).await, 0);

    let txn = conn.begin().await.expect("begin");
    let claimed = claim_many(
        &txn,
        &[header("old-0000".into()), header("recent".into())],
        later,
    )
    .await
    .expect("claim again");
    assert_eq!(
        claimed,
        HashSet::from(["old-0000".to_owned()]),
        "a forgotten id is new again; a remembered one is still a duplicate"
    );
}

/// A receiver that holds its first delivery until a second one arrives (or a few seconds
/// pass), and records which keys are being delivered at once.
#[derive(Clone, Default)]
struct OverlapSink {
    state: Arc<Mutex<OverlapState>>,
    started: Arc<watch::Sender<usize>>,
}

#[derive(Default)]
struct OverlapState {
    /// Keys of the deliveries under way.
    in_flight: HashSet<String>,
    most_at_once: usize,
    under_way: usize,
    /// Keys that were in two deliveries at once.
    shared_keys: Vec<String>,
    raw_deliveries: usize,
    applied_in_order: Vec<(String, String)>,
}

impl OutboxSink for OverlapSink {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let first = {
            let mut state = self.state.lock().expect("sink lock");
            for m in messages {
                if state.in_flight.contains(&m.partition_key) {
                    state.shared_keys.push(m.partition_key.clone());
                }
            }
            state
                .in_flight
                .extend(messages.iter().map(|m| m.partition_key.clone()));
            state.under_way += 1;
            state.most_at_once = state.most_at_once.max(state.under_way);
            let mut first = false;
            self.started.send_modify(|n| {
                first = *n == 0;
                *n += 1;
            });
            first
        };
        if first {
            let mut started = self.started.subscribe();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), started.wait_for(|n| *n >= 2)).await;
        }
        let mut state = self.state.lock().expect("sink lock");
        for m in messages {
            state.in_flight.remove(&m.partition_key);
            state.raw_deliveries += 1;
            state
                .applied_in_order
                .push((m.partition_key.clone(), m.message_id.clone()));
        }
        state.under_way -= 1;
        Ok(())
    }
}

/// With two lanes a relay has a second delivery in flight while the receiver holds the
/// first, never with a key the first carries; everything arrives once, in order per key.
async fn two_lanes_deliver_disjoint_keys_at_once(db: TestDb) {
    let conn = connect(&db).await;
    let expected = enqueue_messages(&conn, 80, 40).await;
    let sink = OverlapSink::default();
    let config = RelayConfig {
        batch_size: 10,
        window: 20,
        lanes: Some(2),
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let relay = Relay::new(conn.clone(), sink.clone(), config, Wakeup::new());
    let task = tokio::spawn(relay.run(shutdown.clone()));
    let delivered = async {
        loop {
            if sink.state.lock().expect("lock").applied_in_order.len() >= 80 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), delivered)
        .await
        .expect("every message delivered in time");
    shutdown.cancel();
    task.await.expect("relay stops");
    let state = sink.state.lock().expect("lock");
    assert_eq!(state.most_at_once, 2, "two deliveries in flight at once");
    assert!(
        state.shared_keys.is_empty(),
        "keys in two deliveries at once: {:?}",
        state.shared_keys
    );
    assert_eq!(state.raw_deliveries, 80, "each message delivered once");
    assert_eq!(
        per_key(&state.applied_in_order),
        expected,
        "per-key order kept"
    );
}

/// An inbox row for a write script.
fn inbox_row(message_id: String, tenant_id: &str) -> inbox_message::ActiveModel {
    inbox_message::ActiveModel {
        message_id: Set(message_id),
        tenant_id: Set(tenant_id.to_owned()),
        processed_at: Set(Utc::now()),
    }
}

/// A write script runs its statements in order, each with its own values, however many
/// statements it holds and whatever their tables: on SQLite they go as scripts of several
/// statements whose `?` parameters bind in order across them.
async fn a_write_script_runs_every_statement_with_its_own_values(db: TestDb) {
    let conn = connect(&db).await;
    let txn = conn.begin().await.expect("begin");
    let mut script = WriteScript::new(txn.get_database_backend());
    let mut expected_inbox = HashMap::new();
    let mut groups = Vec::new();
    // Alternating tables of different widths, in chunks of every power of two up to 32 rows:
    // more statements than one SQLite script holds.
    for round in 0..6 {
        let rows: Vec<_> = (0..(1 << round) + 3)
            .map(|i| {
                let id = format!("in-{round}-{i:02}");
                let tenant = format!("tenant-{round}-{i}");
                expected_inbox.insert(id.clone(), tenant.clone());
                inbox_row(id, &tenant)
            })
            .collect();
        script.insert_many(rows, None);
        let messages: Vec<NewMessage> = (0..round + 1)
            .map(|i| NewMessage {
                destination: "receiver",
                message_id: format!("out-{round}-{i}"),
                tenant_id: format!("t{round}"),
                partition_key: format!("lead-{i}"),
                payload: vec![round as u8, i as u8],
            })
            .collect();
        groups.push((format!("trace-{round}"), messages));
    }
    outbox::enqueue_traced_into(&mut script, groups, Packing::PerMessage);
    script.run(&txn).await.expect("the script runs");
    txn.commit().await.expect("commit");

    let stored: HashMap<String, String> = inbox_message::Entity::find()
        .all(&conn)
        .await
        .expect("read the inbox")
        .into_iter()
        .map(|row| (row.message_id, row.tenant_id))
        .collect();
    assert_eq!(
        stored, expected_inbox,
        "every inbox row with its own values"
    );
    let outbox_rows = outbox_message::Entity::find()
        .order_by_asc(outbox_message::Column::Id)
        .all(&conn)
        .await
        .expect("read the outbox");
    let read: Vec<(String, String, String, Vec<u8>)> = outbox_rows
        .into_iter()
        .map(|row| {
            (
                row.message_id,
                row.tenant_id,
                row.trace_context,
                row.payload,
            )
        })
        .collect();
    let expected: Vec<(String, String, String, Vec<u8>)> = (0..6u8)
        .flat_map(|round| {
            (0..=round).map(move |i| {
                (
                    format!("out-{round}-{i}"),
                    format!("t{round}"),
                    format!("trace-{round}"),
                    vec![round, i],
                )
            })
        })
        .collect();
    assert_eq!(
        read, expected,
        "outbox rows in order, each with its own values"
    );
}

/// A failing statement stops the script with its error: nothing after it runs, and the
/// caller's rollback leaves nothing of it.
async fn a_failing_write_script_stops_at_its_error(db: TestDb) {
    let conn = connect(&db).await;
    let txn = conn.begin().await.expect("begin");
    let mut script = WriteScript::new(txn.get_database_backend());
    script.insert_many(vec![inbox_row("first".into(), "t")], None);
    script.insert_many(vec![inbox_row("second".into(), "t")], None);
    script.insert_many(vec![inbox_row("first".into(), "t")], None);
    script.insert_many(vec![inbox_row("after".into(), "t")], None);
    let err = script
        .run(&txn)
        .await
        .expect_err("a repeated primary key fails");
    assert!(
        err.to_string().to_lowercase().contains("unique")
            || err.to_string().to_lowercase().contains("duplicate"),
        "the database's own error: {err}"
    );
    if db.backend == Backend::Sqlite {
        let after = inbox_message::Entity::find_by_id("after".to_owned())
            .one(&txn)
            .await
            .expect("read inside the transaction");
        assert!(after.is_none(), "nothing after the failing statement ran");
    }
    txn.rollback().await.expect("rollback");
    let left = inbox_message::Entity::find()
        .all(&conn)
        .await
        .expect("read the inbox");
    assert!(
        left.is_empty(),
        "the rollback took every row back: {left:?}"
    );
}

/// A sink that holds each delivery until the service's writer (below) has begun a transaction
/// after the delivery began, so the relay's delete offered beside it is claimed by the writer,
/// as under load; it records like [`RecordingSink`].
#[derive(Clone)]
struct WaitForWriterSink {
    inner: RecordingSink,
    writer_transactions: watch::Receiver<usize>,
}

impl OutboxSink for WaitForWriterSink {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let mut transactions = self.writer_transactions.clone();
        let seen = *transactions.borrow_and_update();
        let _ = transactions.wait_for(|n| *n >= seen + 2).await;
        self.inner.deliver(messages).await
    }
}

/// The service's own writes carrying the relay's deletes: a transaction after another, each
/// writing a row of its own; the first that takes deletes on rolls back, and its claimed
/// deletes with it.
async fn writer_carrying_deletes(
    conn: DatabaseConnection,
    deletes: SharedDeletes,
    transactions: watch::Sender<usize>,
    carried: Arc<Mutex<(usize, usize)>>,
    stop: CancellationToken,
) {
    let mut number = 0;
    let mut rolled_back_once = false;
    while !stop.is_cancelled() {
        let txn = conn.begin().await.expect("begin");
        let mut script = WriteScript::new(txn.get_database_backend());
        let claimed = deletes.claim_into(&mut script);
        let claimed_any = !claimed.is_empty();
        outbox::enqueue_into(
            &mut script,
            vec![NewMessage {
                destination: "elsewhere",
                message_id: format!("w-{number}"),
                tenant_id: "t".into(),
                partition_key: "w".into(),
                payload: vec![0],
            }],
            Packing::PerMessage,
        )
        .expect("enqueue");
        script.run(&txn).await.expect("script");
        let rolls_back = claimed_any && !rolled_back_once;
        rolled_back_once |= rolls_back;
        if rolls_back {
            txn.rollback().await.expect("rollback");
            drop(claimed);
        } else {
            txn.commit().await.expect("commit");
            claimed.committed();
        }
        if claimed_any {
            let mut counts = carried.lock().expect("lock");
            if rolls_back {
                counts.1 += 1;
            } else {
                counts.0 += 1;
            }
        }
        number += 1;
        transactions.send_replace(number);
        tokio::task::yield_now().await;
    }
}

/// A relay whose deletes ride on the service's own transactions (SQLite) delivers every row
/// once and in order and leaves none behind, also when a transaction that took a delete on
/// rolls back (its rows are deleted by a later one); on PostgreSQL, where a pass deletes in
/// its own locked transaction, the writer carries nothing.
async fn deletes_ride_on_the_services_own_transactions(db: TestDb) {
    let conn = connect(&db).await;
    let reader = leadflow_runtime::db::reader(&db.url, &conn)
        .await
        .expect("reader");
    let expected = enqueue_messages(&conn, 40, 4).await;
    let (recording, mut watcher) = RecordingSink::failing_first(0);
    let (transactions, writer_transactions) = watch::channel(0);
    let sink = WaitForWriterSink {
        inner: recording.clone(),
        writer_transactions,
    };
    let deletes = SharedDeletes::new();
    let carried = Arc::new(Mutex::new((0, 0)));
    let (shutdown, stop_writer) = (CancellationToken::new(), CancellationToken::new());
    let writer = tokio::spawn(writer_carrying_deletes(
        conn.clone(),
        deletes.clone(),
        transactions,
        Arc::clone(&carried),
        stop_writer.clone(),
    ));
    let relay = Relay::new(conn.clone(), sink, fast_config(), Wakeup::new())
        .with_reader(reader)
        .with_shared_deletes(deletes);
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_for(&mut watcher, 40).await;
    shutdown.cancel();
    task.await.expect("relay stops");
    stop_writer.cancel();
    writer.await.expect("writer stops");
    recording.assert_once_in_order(&expected);
    let left = outbox::backlog(&conn, "receiver").await.expect("backlog");
    assert_eq!(left.count, 0, "every delivered row is deleted");
    let (committed, rolled_back) = *carried.lock().expect("lock");
    if db.backend == Backend::Sqlite {
        assert!(committed > 0, "the writer's commits carried deletes");
        assert!(rolled_back > 0, "some carried deletes were rolled back");
    } else {
        assert_eq!(
            (committed, rolled_back),
            (0, 0),
            "PostgreSQL passes delete their own rows"
        );
    }
}

/// One event a [`BundleReceiver`] applied.
#[derive(Clone)]
struct AppliedEvent {
    lead: String,
    activity: String,
    message_id: String,
    traceparent: String,
}

/// A receiver of bundles, as scoring and qualification are: each delivery decoded with
/// [`outbox::decode_batch`] and applied in one transaction that claims its message ids in the
/// real inbox, applying the consecutive events of a claimed id together.
#[derive(Clone)]
struct BundleReceiver {
    conn: DatabaseConnection,
    failures_left: Arc<Mutex<usize>>,
    /// Each event applied, in order.
    applied: Arc<Mutex<Vec<AppliedEvent>>>,
    count: watch::Sender<usize>,
}

impl OutboxSink for BundleReceiver {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let events = outbox::decode_batch(messages, |e: &mut LeadEvent| e.header.as_mut())?;
        {
            let mut failures = self.failures_left.lock().expect("lock");
            if *failures > 0 {
                *failures -= 1;
                return Err(DeliveryError("receiver unavailable".into()));
            }
        }
        let fail = |err: sea_orm::DbErr| DeliveryError(err.to_string());
        let headers: Vec<MessageHeader> = events
            .iter()
            .map(|e| e.header.clone().unwrap_or_default())
            .collect();
        let txn = self.conn.begin().await.map_err(fail)?;
        let mut script = WriteScript::new(txn.get_database_backend());
        let mut claimed = inbox::claim_many_into(&txn, &mut script, &headers, Utc::now())
            .await
            .map_err(fail)?;
        let mut applied = Vec::new();
        for (event, header) in events.iter().zip(&headers) {
            if !claimed.admits(&header.message_id) {
                continue;
            }
            let Some(lead_event::Event::ActivityRecorded(recorded)) = &event.event else {
                return Err(DeliveryError("not an activity".into()));
            };
            let traceparent = header.trace_context.get("traceparent").cloned();
            applied.push(AppliedEvent {
                lead: header.lead_id.clone(),
                activity: recorded.activity_id.clone(),
                message_id: header.message_id.clone(),
                traceparent: traceparent.unwrap_or_default(),
            });
        }
        script.run(&txn).await.map_err(fail)?;
        txn.commit().await.map_err(fail)?;
        let mut all = self.applied.lock().expect("lock");
        all.extend(applied);
        self.count.send_replace(all.len());
        Ok(())
    }
}

/// Enqueues `per_txn` activities in each of `txns` transactions, bundled, over `leads` leads,
/// each transaction's messages split over two callers' trace contexts; returns the expected
/// activity ids per lead, in order.
async fn enqueue_bundled(
    conn: &DatabaseConnection,
    txns: usize,
    per_txn: usize,
    leads: usize,
) -> HashMap<String, Vec<String>> {
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for t in 0..txns {
        let mut groups: Vec<(String, Vec<NewMessage>)> = Vec::new();
        for n in t * per_txn..(t + 1) * per_txn {
            let lead = format!("lead-{}", n % leads);
            let activity_id = format!("a-{n:04}");
            expected
                .entry(lead.clone())
                .or_default()
                .push(activity_id.clone());
            let event = LeadEvent {
                header: Some(MessageHeader {
                    message_id: format!("own-{n}"),
                    tenant_id: "t".into(),
                    lead_id: lead.clone(),
                    ..MessageHeader::default()
                }),
                event: Some(lead_event::Event::ActivityRecorded(ActivityRecorded {
                    activity_id,
                    activity: None,
                })),
            };
            let trace = format!("{{\"traceparent\":\"caller-{}\"}}", n % 2);
            if groups.last().is_none_or(|(t, _)| *t != trace) {
                groups.push((trace, Vec::new()));
            }
            if let Some((_, messages)) = groups.last_mut() {
                messages.push(NewMessage {
                    destination: "receiver",
                    message_id: format!("own-{n}"),
                    tenant_id: "t".into(),
                    partition_key: lead,
                    payload: event.encode_to_vec(),
                });
            }
        }
        let txn = conn.begin().await.expect("begin");
        let mut script = WriteScript::new(txn.get_database_backend());
        outbox::enqueue_traced_into(&mut script, groups, Packing::Bundled);
        script.run(&txn).await.expect("enqueue");
        txn.commit().await.expect("commit");
    }
    expected
}

/// Bundled messages reach a receiver that fails at first once each, in order per lead, each
/// with the trace context of the caller that produced it, in fewer rows than messages; every
/// event of a row carries the row's id, which the receiver claims once.
async fn bundles_reach_a_failing_receiver_once_in_order_per_lead(db: TestDb) {
    let conn = connect(&db).await;
    let expected = enqueue_bundled(&conn, 6, 40, 9).await;
    let rows = outbox_message::Entity::find()
        .all(&conn)
        .await
        .expect("rows");
    let partitions: HashSet<String> = (0..9)
        .map(|i| outbox::partition_of(&format!("lead-{i}")))
        .collect();
    assert_eq!(
        rows.len(),
        6 * partitions.len(),
        "a row per transaction and partition"
    );
    assert!(rows.iter().all(|r| partitions.contains(&r.partition_key)));
    assert_eq!(
        rows.iter().map(|r| r.bundled.unwrap_or(0)).sum::<i32>(),
        240
    );
    let (count, mut watcher) = watch::channel(0);
    let receiver = BundleReceiver {
        conn: conn.clone(),
        failures_left: Arc::new(Mutex::new(2)),
        applied: Arc::default(),
        count,
    };
    let shutdown = CancellationToken::new();
    let relay = Relay::new(conn.clone(), receiver.clone(), fast_config(), Wakeup::new());
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_for(&mut watcher, 240).await;
    shutdown.cancel();
    task.await.expect("relay stops");
    let applied = receiver.applied.lock().expect("lock").clone();
    let mut per_lead: HashMap<String, Vec<String>> = HashMap::new();
    for event in &applied {
        per_lead
            .entry(event.lead.clone())
            .or_default()
            .push(event.activity.clone());
    }
    assert_eq!(per_lead, expected, "each once, in order per lead");
    let row_ids: HashSet<&str> = rows.iter().map(|r| r.message_id.as_str()).collect();
    assert!(
        applied
            .iter()
            .all(|e| row_ids.contains(e.message_id.as_str()))
    );
    for event in &applied {
        let n: usize = event.activity[2..].parse().expect("number");
        let expected_trace = format!("caller-{}", n % 2);
        assert_eq!(
            event.traceparent, expected_trace,
            "{}'s own trace",
            event.activity
        );
    }
    let claims = inbox_message::Entity::find()
        .all(&conn)
        .await
        .expect("inbox");
    assert_eq!(claims.len(), rows.len(), "one inbox claim per row");
}

/// The bundling migration moves the rows pending for a bundled destination to their lead's
/// partition, so older unbundled rows and newer bundles of a lead share a key; other
/// destinations keep their keys.
async fn pending_rows_move_to_their_partition_when_bundling_starts(db: TestDb) {
    struct Before;
    impl MigratorTrait for Before {
        fn migrations() -> Vec<Box<dyn MigrationTrait>> {
            Migrator::migrations()
                .into_iter()
                .take_while(|m| !m.name().contains("outbox_bundles"))
                .collect()
        }
    }
    let conn = leadflow_runtime::db::connect(&db.url, 5)
        .await
        .expect("connect");
    leadflow_runtime::db::migrate::<Before>(&conn)
        .await
        .expect("migrate before bundles");
    for (n, (destination, key)) in [
        ("receiver", "lead-1"),
        ("receiver", "lead-2"),
        ("elsewhere", "lead-1"),
    ]
    .into_iter()
    .enumerate()
    {
        let sql = format!(
            "INSERT INTO outbox (destination, message_id, tenant_id, partition_key, payload, \
             trace_context, created_at, attempts, next_attempt_at) \
             VALUES ('{destination}', 'm-{n}', 't', '{key}', {payload}, '{{}}', \
             CURRENT_TIMESTAMP, 0, CURRENT_TIMESTAMP)",
            payload = match db.backend {
                Backend::Sqlite => "x'00'",
                Backend::Postgres => "'\\x00'::bytea",
            }
        );
        conn.execute_unprepared(&sql).await.expect("legacy row");
    }
    leadflow_runtime::db::migrate::<Migrator>(&conn)
        .await
        .expect("migrate");
    let keys: Vec<(String, String, Option<i32>)> = outbox_message::Entity::find()
        .order_by_asc(outbox_message::Column::Id)
        .all(&conn)
        .await
        .expect("rows")
        .into_iter()
        .map(|r| (r.destination, r.partition_key, r.bundled))
        .collect();
    assert_eq!(
        keys,
        [
            ("receiver".into(), outbox::partition_of("lead-1"), None),
            ("receiver".into(), outbox::partition_of("lead-2"), None),
            ("elsewhere".into(), "lead-1".into(), None),
        ]
    );
}

on_both_backends! {
    inbox_retention => inbox_forgets_ids_applied_longer_ago_than_its_retention;
    lease => a_lease_has_one_holder_until_it_expires;
    long_lease => a_long_pass_keeps_its_lease_and_a_lost_lease_stops_it;
    failing_receiver => failing_receiver_gets_everything_once_in_order;
    shrinking_deliveries => a_receiver_that_times_out_on_large_deliveries_gets_smaller_ones;
    relay_reader => a_relay_reading_through_readers_delivers_each_row_once;
    idle_pass_deletes => an_idle_pass_deletes_what_the_last_pass_delivered;
    byte_bound => deliveries_stay_under_their_byte_bound;
    restart => undelivered_rows_survive_a_restart;
    backlog => the_backlog_counts_one_destination_and_dates_its_oldest_row;
    inbox_dedupe => inbox_claims_a_message_id_once;
    inbox_batch_dedupe => inbox_claims_a_batch_of_message_ids_once;
    inbox_rebuild => applied_message_ids_survive_the_inbox_rebuild;
    key_index => the_key_index_is_kept_only_where_relays_read_it;
    two_lanes => two_lanes_deliver_disjoint_keys_at_once;
    write_script => a_write_script_runs_every_statement_with_its_own_values;
    failing_write_script => a_failing_write_script_stops_at_its_error;
    shared_deletes => deletes_ride_on_the_services_own_transactions;
    bundles => bundles_reach_a_failing_receiver_once_in_order_per_lead;
    bundling_migration => pending_rows_move_to_their_partition_when_bundling_starts;
}

/// On SQLite a pass deletes what the pass before delivered while it delivers: when both its
/// delivery and that delete fail, the failed rows still back off (attempts and error recorded),
/// and once the store accepts deletes again everything is delivered once and deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_backs_off_even_when_its_carried_delete_fails() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let conn = connect(&db).await;
    let expected = enqueue_messages(&conn, 2, 2).await;
    let (sink, _watcher) = RecordingSink::failing_first(0);
    let config = RelayConfig {
        batch_size: 1,
        backoff_base: Duration::ZERO,
        ..fast_config()
    };
    let relay = Relay::new(conn.clone(), sink.clone(), config, Wakeup::new());
    assert_eq!(relay.run_once().await.expect("first pass").delivered, 1);

    sink.state.lock().expect("lock").failures_left = 1;
    conn.execute_unprepared(
        "CREATE TRIGGER refuse_deletes BEFORE DELETE ON outbox \
         BEGIN SELECT RAISE(ABORT, 'deletes refused'); END",
    )
    .await
    .expect("trigger");
    let failed = relay.run_once().await;
    assert!(
        failed.is_err(),
        "the delete's error is the pass's: {failed:?}"
    );
    let rows = outbox_message::Entity::find()
        .order_by_asc(outbox_message::Column::Id)
        .all(&conn)
        .await
        .expect("rows");
    let attempts: Vec<(i32, Option<&str>)> = rows
        .iter()
        .map(|row| (row.attempts, row.last_error.as_deref()))
        .collect();
    assert_eq!(
        attempts,
        [(0, None), (1, Some("receiver unavailable"))],
        "the delivered row awaits its delete, the failed one has backed off"
    );

    conn.execute_unprepared("DROP TRIGGER refuse_deletes")
        .await
        .expect("drop trigger");
    assert_eq!(relay.run_once().await.expect("retry").delivered, 1);
    assert_eq!(relay.run_once().await.expect("idle pass").delivered, 0);
    let left = outbox::backlog(&conn, "receiver").await.expect("backlog");
    assert_eq!(left.count, 0, "every delivered row is deleted");
    sink.assert_once_in_order(&expected);
}

/// A relay woken from idle lingers before its pass, so the commits that follow the one that
/// woke it go in the same delivery: three commits of three messages, each waking the relay,
/// arrive as one delivery of nine. (SQLite: its idle pass deletes what the pass before
/// delivered, which tells the test the relay is idle; lingering is the same on both backends.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_relay_lingers_to_deliver_the_commits_that_follow_together() {
    let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
    let conn = connect(&db).await;
    enqueue_numbered(&conn, 0..3, 3).await;
    let (sink, mut watcher) = RecordingSink::failing_first(0);
    let wakeup = Wakeup::new();
    let config = RelayConfig {
        lanes: Some(1),
        batch_size: 20,
        poll_interval: Duration::from_secs(60),
        linger: Duration::from_secs(1),
        ..fast_config()
    };
    let shutdown = CancellationToken::new();
    let relay = Relay::new(conn.clone(), sink.clone(), config, wakeup.clone());
    let task = tokio::spawn(relay.run(shutdown.clone()));
    wait_for(&mut watcher, 3).await;
    tokio::time::timeout(Duration::from_secs(30), async {
        while outbox::backlog(&conn, "receiver")
            .await
            .expect("backlog")
            .count
            > 0
        {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the idle pass deletes the first delivery");

    for first in [3, 6, 9] {
        enqueue_numbered(&conn, first..first + 3, 3).await;
        wakeup.wake();
    }
    wait_for(&mut watcher, 12).await;
    shutdown.cancel();
    task.await.expect("relay stops");
    assert_eq!(
        sink.state.lock().expect("lock").batches,
        [3, 9],
        "the three commits after the wake-up went together"
    );
}

/// Two relays (two replicas) on one PostgreSQL database: every message is delivered exactly
/// once in all, and per-key order holds across both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_on_postgres_never_deliver_twice() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let conn = connect(&db).await;
    let expected = enqueue_messages(&conn, 300, 20).await;
    let (sink, mut watcher) = RecordingSink::failing_first(2);
    let shutdown = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let replica = leadflow_runtime::db::connect(&db.url, 5)
            .await
            .expect("connect");
        let relay = Relay::new(replica, sink.clone(), fast_config(), Wakeup::new());
        tasks.push(tokio::spawn(relay.run(shutdown.clone())));
    }
    wait_for(&mut watcher, 300).await;
    shutdown.cancel();
    for task in tasks {
        task.await.expect("relay stops");
    }
    let state = sink.state.lock().expect("lock");
    assert_eq!(
        state.raw_deliveries.len(),
        300,
        "no message delivered by both relays"
    );
    assert_eq!(
        per_key(&state.applied_in_order),
        expected,
        "per-key order kept across relays"
    );
}

/// Two pods starting at once on a fresh PostgreSQL database both migrate it without error, and
/// each migration is applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_migrating_at_once_apply_each_migration_once() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let pods: Vec<_> = (0..2)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { leadflow_runtime::db::open::<Migrator>(&url, 2).await })
        })
        .collect();
    let mut conns = Vec::new();
    for pod in pods {
        conns.push(pod.await.expect("join").expect("both pods migrate"));
    }
    let applied = conns[0]
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            "SELECT COUNT(*) AS n FROM seaql_migrations",
        ))
        .await
        .expect("query")
        .expect("a row");
    let n: i64 = applied.try_get("", "n").expect("count");
    assert_eq!(
        n,
        i64::try_from(Migrator::migrations().len()).expect("fits")
    );
}

/// On PostgreSQL a bundle large enough to be compressed is compressed with lz4, not pglz.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_bundle_on_postgres_is_compressed_with_lz4() {
    let Some(db) = TestDb::new(Backend::Postgres).await else {
        return;
    };
    let conn = connect(&db).await;
    let txn = conn.begin().await.expect("begin");
    let messages = (0..64)
        .map(|n| NewMessage {
            destination: "large",
            message_id: format!("large-{n}"),
            tenant_id: "t".into(),
            partition_key: "lead-1".into(),
            payload: format!("the same activity of lead-1, again and again: {n:04}")
                .repeat(8)
                .into_bytes(),
        })
        .collect();
    outbox::enqueue(&txn, messages, Packing::Bundled)
        .await
        .expect("enqueue");
    txn.commit().await.expect("commit");
    let row = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT pg_column_compression(payload) AS method, octet_length(payload) AS size \
             FROM outbox WHERE destination = 'large'",
        ))
        .await
        .expect("query")
        .expect("the bundle's row");
    let size: i32 = row.try_get("", "size").expect("size");
    assert!(size > 8192, "large enough to be compressed: {size} bytes");
    let method: Option<String> = row.try_get("", "method").expect("method");
    assert_eq!(method.as_deref(), Some("lz4"));
    let delivered = outbox_message::Entity::find()
        .filter(outbox_message::Column::Destination.eq("large"))
        .one(&conn)
        .await
        .expect("read")
        .expect("the row");
    assert_eq!(delivered.payload.len() as i32, size, "read back whole");
}
