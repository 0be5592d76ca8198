//! The migration every service adds to its migrator to get the `outbox` and `inbox` tables.

use sea_orm_migration::prelude::*;
use std::collections::HashMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use sea_orm_migration::schema::{
    big_pk_auto, blob, integer, integer_null, string, string_uniq, text, text_null,
    timestamp_with_time_zone,
};

use super::outbox_message;

/// The index PostgreSQL's relays find the oldest pending row of a key by.
const KEY_INDEX: &str = "outbox_destination_partition";

/// Creates `outbox` (messages to deliver) and `inbox` (message ids already applied).
#[derive(Debug)]
pub struct CreateOutboxAndInbox;

impl MigrationName for CreateOutboxAndInbox {
    fn name(&self) -> &str {
        "m20261123_000001_create_outbox_and_inbox"
    }
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    Destination,
    MessageId,
    TenantId,
    PartitionKey,
    Payload,
    TraceContext,
    CreatedAt,
    Attempts,
    NextAttemptAt,
    LastError,
    Bundled,
}

#[derive(DeriveIden)]
enum Inbox {
    Table,
    MessageId,
    TenantId,
    ProcessedAt,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for CreateOutboxAndInbox {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .if_not_exists()
                    .col(big_pk_auto(Outbox::Id))
                    .col(string(Outbox::Destination))
                    .col(string_uniq(Outbox::MessageId))
                    .col(string(Outbox::TenantId))
                    .col(string(Outbox::PartitionKey))
                    .col(blob(Outbox::Payload))
                    .col(text(Outbox::TraceContext))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(integer(Outbox::Attempts))
                    .col(timestamp_with_time_zone(Outbox::NextAttemptAt))
                    .col(text_null(Outbox::LastError))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_destination_id")
                    .table(Outbox::Table)
                    .col(Outbox::Destination)
                    .col(Outbox::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name(KEY_INDEX)
                    .table(Outbox::Table)
                    .col(Outbox::Destination)
                    .col(Outbox::PartitionKey)
                    .col(Outbox::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Inbox::Table)
                    .if_not_exists()
                    .col(string(Inbox::MessageId).primary_key())
                    .col(string(Inbox::TenantId))
                    .col(timestamp_with_time_zone(Inbox::ProcessedAt))
                    .to_owned(),
            )
            .await
    }
}

/// Drops the `(destination, partition_key, id)` index on SQLite, where nothing reads it: only
/// PostgreSQL's relays look up the oldest pending row of each key (another replica may hold
/// it), while SQLite's single relay finds every older row of a key in its window. Every
/// enqueue and delivery updated it at a random place (the key is a lead id): in a profile
/// of ingestion under load it was 30% of the pages each commit wrote to the WAL.
#[derive(Debug)]
pub struct KeyIndexOnlyOnPostgres;

impl MigrationName for KeyIndexOnlyOnPostgres {
    fn name(&self) -> &str {
        "m20261201_000001_outbox_key_index_only_on_postgres"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for KeyIndexOnlyOnPostgres {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        manager
            .drop_index(
                Index::drop()
                    .name(KEY_INDEX)
                    .table(Outbox::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Rebuilds `inbox` on SQLite as a `WITHOUT ROWID` table ([`crate::db::rebuild_without_rowid`]):
/// every message a service applies inserts its id, which in a rowid table meant two btree
/// inserts, the row and the text key's index.
#[derive(Debug)]
pub struct InboxWithoutRowid;

impl MigrationName for InboxWithoutRowid {
    fn name(&self) -> &str {
        "m20261202_000001_inbox_without_rowid"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for InboxWithoutRowid {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::db::rebuild_without_rowid(manager, "inbox").await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Indexes `inbox` by the time each id was applied, for [`crate::outbox::inbox::prune`] to find
/// the expired ones without reading the whole table. The applied time only grows, so each new
/// id goes to the index's last page.
#[derive(Debug)]
pub struct InboxProcessedAtIndex;

impl MigrationName for InboxProcessedAtIndex {
    fn name(&self) -> &str {
        "m20261203_000001_inbox_processed_at_index"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for InboxProcessedAtIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("inbox_processed_at")
                    .table(Inbox::Table)
                    .col(Inbox::ProcessedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Indexes `outbox` by `(destination, id, bundled)` in place of `(destination, id)`, so the
/// backlog counts messages, a bundle each of its own as deliveries and failures count them,
/// from the index alone: still no payload read, however large the backlog.
#[derive(Debug)]
pub struct OutboxBacklogCountsMessages;

impl MigrationName for OutboxBacklogCountsMessages {
    fn name(&self) -> &str {
        "m20261207_000002_outbox_backlog_counts_messages"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for OutboxBacklogCountsMessages {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("outbox_destination_id_bundled")
                    .table(Outbox::Table)
                    .col(Outbox::Destination)
                    .col(Outbox::Id)
                    .col(Outbox::Bundled)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("outbox_destination_id")
                    .table(Outbox::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Adds `bundled` to `outbox` ([`crate::outbox::Packing::Bundled`]) and moves the rows pending
/// for `destinations`, the destinations the service now bundles for, from their lead's key to
/// the lead's partition, the key its new bundles get: otherwise a lead's older unbundled row
/// and newer bundle would be ordered by different keys, and could be delivered out of order.
#[derive(Debug)]
pub struct OutboxBundles {
    /// The destinations the service enqueues bundles for.
    pub destinations: &'static [&'static str],
}

impl MigrationName for OutboxBundles {
    fn name(&self) -> &str {
        "m20261204_000001_outbox_bundles"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for OutboxBundles {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Outbox::Table)
                    .add_column(integer_null(Outbox::Bundled))
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        for destination in self.destinations {
            let pending: Vec<(i64, String)> = outbox_message::Entity::find()
                .select_only()
                .column(outbox_message::Column::Id)
                .column(outbox_message::Column::PartitionKey)
                .filter(outbox_message::Column::Destination.eq(*destination))
                .into_tuple()
                .all(db)
                .await?;
            let mut by_partition: HashMap<String, Vec<i64>> = HashMap::new();
            for (id, key) in pending {
                by_partition
                    .entry(super::partition_of(&key))
                    .or_default()
                    .push(id);
            }
            for (partition, ids) in by_partition {
                for chunk in ids.chunks(crate::db::MAX_ROWS_PER_STATEMENT) {
                    outbox_message::Entity::update_many()
                        .col_expr(
                            outbox_message::Column::PartitionKey,
                            sea_orm::sea_query::Expr::value(partition.clone()),
                        )
                        .filter(outbox_message::Column::Id.is_in(crate::db::in_list(chunk)))
                        .exec(db)
                        .await?;
                }
            }
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// On PostgreSQL, compresses large outbox payloads with lz4 instead of the default pglz. A
/// bundle of messages (several KiB) is compressed when it is inserted, to be read once by the
/// relay and deleted; pglz's compression was 1.8% of the PostgreSQL server's CPU over the
/// benchmark's ingestion and drain (BENCHMARKS.md, thirty-second session), and lz4 compresses
/// several times faster. Only values written from then on change. A server built without lz4
/// keeps pglz (a notice, not an error). Nothing on SQLite, which compresses nothing.
#[derive(Debug)]
pub struct OutboxPayloadLz4;

impl MigrationName for OutboxPayloadLz4 {
    fn name(&self) -> &str {
        "m20261208_000001_outbox_payload_lz4"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for OutboxPayloadLz4 {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "DO $$ BEGIN \
                   ALTER TABLE outbox ALTER COLUMN payload SET COMPRESSION lz4; \
                 EXCEPTION WHEN feature_not_supported THEN \
                   RAISE NOTICE 'lz4 is not available: outbox payloads keep pglz'; \
                 END $$",
            )
            .await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
