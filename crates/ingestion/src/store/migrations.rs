//! Ingestion's schema, applied at start-up.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, string, string_null, text, timestamp_with_time_zone,
};

/// Ingestion's migrator: its own tables plus the shared outbox and inbox.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(leadflow_runtime::outbox::CreateOutboxAndInbox),
            Box::new(leadflow_runtime::outbox::KeyIndexOnlyOnPostgres),
            Box::new(M20261123CreateIngestionTables),
            Box::new(leadflow_runtime::outbox::InboxWithoutRowid),
            Box::new(RequestsWithoutRowid),
            Box::new(leadflow_runtime::outbox::InboxProcessedAtIndex),
            Box::new(leadflow_runtime::outbox::OutboxBundles {
                destinations: &[super::SCORING],
            }),
            Box::new(ActivitySummaryFromTimeline),
            Box::new(leadflow_runtime::outbox::OutboxBacklogCountsMessages),
            Box::new(ExpectedLinks),
            Box::new(leadflow_runtime::outbox::OutboxPayloadLz4),
        ]
    }
}

/// Creates leads, identities, activities and requests.
#[derive(Debug)]
struct M20261123CreateIngestionTables;

impl MigrationName for M20261123CreateIngestionTables {
    fn name(&self) -> &str {
        "m20261123_000002_create_ingestion_tables"
    }
}

#[derive(DeriveIden)]
enum Leads {
    Table,
    TenantId,
    LeadId,
    Profile,
    MergedInto,
    CreatedAt,
    UpdatedAt,
    LastActivityUs,
    ActivityCount,
}

#[derive(DeriveIden)]
enum Identities {
    Table,
    TenantId,
    Kind,
    ExternalId,
    LeadId,
}

#[derive(DeriveIden)]
enum Activities {
    Table,
    ActivityId,
    TenantId,
    LeadId,
    OriginalLeadId,
    ActivityType,
    OccurredAtUs,
    ReceivedAt,
    Properties,
}

#[derive(DeriveIden)]
enum Requests {
    Table,
    TenantId,
    MessageId,
    LeadId,
    ActivityId,
    MergedLeadIds,
    CreatedAt,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for M20261123CreateIngestionTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Leads::Table)
                    .if_not_exists()
                    .col(string(Leads::TenantId))
                    .col(string(Leads::LeadId))
                    .col(text(Leads::Profile))
                    .col(string_null(Leads::MergedInto))
                    .col(timestamp_with_time_zone(Leads::CreatedAt))
                    .col(timestamp_with_time_zone(Leads::UpdatedAt))
                    .col(big_integer_null(Leads::LastActivityUs))
                    .col(big_integer(Leads::ActivityCount))
                    .primary_key(Index::create().col(Leads::TenantId).col(Leads::LeadId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("leads_merged_into")
                    .table(Leads::Table)
                    .col(Leads::TenantId)
                    .col(Leads::MergedInto)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Identities::Table)
                    .if_not_exists()
                    .col(string(Identities::TenantId))
                    .col(string(Identities::Kind))
                    .col(string(Identities::ExternalId))
                    .col(string(Identities::LeadId))
                    .primary_key(
                        Index::create()
                            .col(Identities::TenantId)
                            .col(Identities::Kind)
                            .col(Identities::ExternalId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("identities_lead")
                    .table(Identities::Table)
                    .col(Identities::TenantId)
                    .col(Identities::LeadId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Activities::Table)
                    .if_not_exists()
                    .col(string(Activities::ActivityId).primary_key())
                    .col(string(Activities::TenantId))
                    .col(string(Activities::LeadId))
                    .col(string(Activities::OriginalLeadId))
                    .col(string(Activities::ActivityType))
                    .col(big_integer(Activities::OccurredAtUs))
                    .col(timestamp_with_time_zone(Activities::ReceivedAt))
                    .col(text(Activities::Properties))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activities_timeline")
                    .table(Activities::Table)
                    .col(Activities::TenantId)
                    .col(Activities::LeadId)
                    .col(Activities::OccurredAtUs)
                    .col(Activities::ActivityId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Requests::Table)
                    .if_not_exists()
                    .col(string(Requests::TenantId))
                    .col(string(Requests::MessageId))
                    .col(string(Requests::LeadId))
                    .col(string_null(Requests::ActivityId))
                    .col(text(Requests::MergedLeadIds))
                    .col(timestamp_with_time_zone(Requests::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Requests::TenantId)
                            .col(Requests::MessageId),
                    )
                    .to_owned(),
            )
            .await
    }
}

/// Rebuilds `requests` on SQLite as a `WITHOUT ROWID` table
/// ([`leadflow_runtime::db::rebuild_without_rowid`]): every accepted message records its
/// answer there, keyed by `(tenant_id, message_id)`, and in a rowid table that was two btree
/// inserts, the row and the key's index.
#[derive(Debug)]
struct RequestsWithoutRowid;

impl MigrationName for RequestsWithoutRowid {
    fn name(&self) -> &str {
        "m20261202_000002_requests_without_rowid"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for RequestsWithoutRowid {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        leadflow_runtime::db::rebuild_without_rowid(manager, "requests").await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Drops `leads.last_activity_us` and `leads.activity_count`: a lead's activity count and
/// latest activity time are read from the timeline's index when the lead is, so recording an
/// activity writes no lead row. It rewrote a page of `leads` per tracked lead: without it the
/// suite writes 13% fewer bytes per activity and `Batch` takes 20–33% more (BENCHMARKS.md).
#[derive(Debug)]
struct ActivitySummaryFromTimeline;

impl MigrationName for ActivitySummaryFromTimeline {
    fn name(&self) -> &str {
        "m20261206_000001_activity_summary_from_timeline"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for ActivitySummaryFromTimeline {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite's ALTER TABLE drops one at a time.
        for column in [Leads::LastActivityUs, Leads::ActivityCount] {
            manager
                .alter_table(
                    Table::alter()
                        .table(Leads::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// On SQLite, the `expected_links` view, into which a transaction inserts whether the identity
/// links it relied on without reading them hold: its trigger aborts the transaction when they do
/// not (`bulk::expect_links`). A view with an `INSTEAD OF` trigger stores nothing. PostgreSQL
/// reads its links, so it gets nothing.
#[derive(Debug)]
pub(super) struct ExpectedLinks;

impl MigrationName for ExpectedLinks {
    fn name(&self) -> &str {
        "m20261207_000001_expected_links"
    }
}

/// The message of the error a link that does not hold raises.
pub(super) const LINK_DOES_NOT_HOLD: &str = "an identity link a write relied on does not hold";

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for ExpectedLinks {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("CREATE VIEW IF NOT EXISTS expected_links (holds) AS SELECT 1")
            .await?;
        db.execute_unprepared(&format!(
            "CREATE TRIGGER IF NOT EXISTS expected_links_hold INSTEAD OF INSERT ON expected_links \
             WHEN NOT NEW.holds BEGIN SELECT RAISE(ABORT, '{LINK_DOES_NOT_HOLD}'); END"
        ))
        .await?;
        Ok(())
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}
