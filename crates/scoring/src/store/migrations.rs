//! Scoring's schema, applied at start-up.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, blob, double, integer, string, string_null, text, text_null,
    timestamp_with_time_zone, timestamp_with_time_zone_null,
};

/// Scoring's migrator: its own tables plus the shared outbox and inbox.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(leadflow_runtime::outbox::CreateOutboxAndInbox),
            Box::new(leadflow_runtime::outbox::KeyIndexOnlyOnPostgres),
            Box::new(CreateScoringTables),
            Box::new(leadflow_runtime::lease::CreateLeases),
            Box::new(ClusterFactsByLead),
            Box::new(StoreStatesAsBytes),
            Box::new(leadflow_runtime::outbox::InboxWithoutRowid),
            Box::new(leadflow_runtime::outbox::InboxProcessedAtIndex),
            Box::new(leadflow_runtime::outbox::OutboxBundles {
                destinations: &[super::QUALIFICATION],
            }),
            Box::new(leadflow_runtime::outbox::OutboxBacklogCountsMessages),
            Box::new(SweepDueTimes),
            Box::new(leadflow_runtime::outbox::OutboxPayloadLz4),
        ]
    }
}

#[derive(Debug)]
struct CreateScoringTables;

impl MigrationName for CreateScoringTables {
    fn name(&self) -> &str {
        "m20261123_000002_create_scoring_tables"
    }
}

#[derive(DeriveIden)]
enum ScoringModels {
    Table,
    TenantId,
    Version,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum LeadScores {
    Table,
    TenantId,
    LeadId,
    State,
    Profile,
    FirstSeen,
    ModelVersion,
    MergedInto,
    AnnouncedScore,
    AnnouncedGrade,
    UpdatedAt,
}

#[derive(DeriveIden, Clone, Copy)]
enum ActivityFacts {
    Table,
    TenantId,
    ActivityId,
    LeadId,
    ActivityType,
    OccurredAtUs,
    Properties,
}

#[derive(DeriveIden)]
enum ScoringRequests {
    Table,
    TenantId,
    RequestId,
    Result,
    CreatedAt,
}

#[derive(DeriveIden)]
enum RescoreJobs {
    Table,
    TenantId,
    JobId,
    ModelVersion,
    State,
    TotalLeads,
    ProcessedLeads,
    ChangedLeads,
    CreatedAt,
    StartedAt,
    EndedAt,
    Error,
}

#[derive(DeriveIden)]
enum HandoffDecisions {
    Table,
    MessageId,
    TenantId,
    LeadId,
    Payload,
    ReceivedAt,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for CreateScoringTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ScoringModels::Table)
                    .if_not_exists()
                    .col(string(ScoringModels::TenantId))
                    .col(integer(ScoringModels::Version))
                    .col(text(ScoringModels::Body))
                    .col(timestamp_with_time_zone(ScoringModels::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ScoringModels::TenantId)
                            .col(ScoringModels::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LeadScores::Table)
                    .if_not_exists()
                    .col(string(LeadScores::TenantId))
                    .col(string(LeadScores::LeadId))
                    .col(text(LeadScores::State))
                    .col(blob(LeadScores::Profile))
                    .col(timestamp_with_time_zone(LeadScores::FirstSeen))
                    .col(integer(LeadScores::ModelVersion))
                    .col(string_null(LeadScores::MergedInto))
                    .col(double(LeadScores::AnnouncedScore))
                    .col(integer(LeadScores::AnnouncedGrade))
                    .col(timestamp_with_time_zone(LeadScores::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(LeadScores::TenantId)
                            .col(LeadScores::LeadId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ActivityFacts::Table)
                    .if_not_exists()
                    .col(string(ActivityFacts::TenantId))
                    .col(string(ActivityFacts::ActivityId))
                    .col(string(ActivityFacts::LeadId))
                    .col(string(ActivityFacts::ActivityType))
                    .col(big_integer(ActivityFacts::OccurredAtUs))
                    .col(text(ActivityFacts::Properties))
                    .primary_key(
                        Index::create()
                            .col(ActivityFacts::TenantId)
                            .col(ActivityFacts::ActivityId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activity_facts_lead")
                    .table(ActivityFacts::Table)
                    .col(ActivityFacts::TenantId)
                    .col(ActivityFacts::LeadId)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ScoringRequests::Table)
                    .if_not_exists()
                    .col(string(ScoringRequests::TenantId))
                    .col(string(ScoringRequests::RequestId))
                    .col(string(ScoringRequests::Result))
                    .col(timestamp_with_time_zone(ScoringRequests::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(ScoringRequests::TenantId)
                            .col(ScoringRequests::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RescoreJobs::Table)
                    .if_not_exists()
                    .col(string(RescoreJobs::TenantId))
                    .col(string(RescoreJobs::JobId))
                    .col(integer(RescoreJobs::ModelVersion))
                    .col(integer(RescoreJobs::State))
                    .col(big_integer(RescoreJobs::TotalLeads))
                    .col(big_integer(RescoreJobs::ProcessedLeads))
                    .col(big_integer(RescoreJobs::ChangedLeads))
                    .col(timestamp_with_time_zone(RescoreJobs::CreatedAt))
                    .col(timestamp_with_time_zone_null(RescoreJobs::StartedAt))
                    .col(timestamp_with_time_zone_null(RescoreJobs::EndedAt))
                    .col(text_null(RescoreJobs::Error))
                    .primary_key(
                        Index::create()
                            .col(RescoreJobs::TenantId)
                            .col(RescoreJobs::JobId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HandoffDecisions::Table)
                    .if_not_exists()
                    .col(string(HandoffDecisions::MessageId).primary_key())
                    .col(string(HandoffDecisions::TenantId))
                    .col(string(HandoffDecisions::LeadId))
                    .col(blob(HandoffDecisions::Payload))
                    .col(timestamp_with_time_zone(HandoffDecisions::ReceivedAt))
                    .to_owned(),
            )
            .await
    }
}

/// On SQLite, stores the activity facts in a `WITHOUT ROWID` table keyed by
/// `(tenant_id, lead_id, activity_id)`, so a lead's facts sit together in one B-tree range:
/// a rescore or a merge reads a lead's facts from a page or two, where a rowid table behind an
/// index on the lead fetched a table page per fact (facts arrive interleaved across leads).
/// A unique index on `(tenant_id, activity_id)` still refuses a fact twice. The rows are
/// small (an id, a type, a time and a few properties), which is what `WITHOUT ROWID` suits.
/// PostgreSQL keeps its table: its heap has no clustered order to choose.
#[derive(Debug)]
struct ClusterFactsByLead;

impl MigrationName for ClusterFactsByLead {
    fn name(&self) -> &str {
        "m20261201_000002_cluster_activity_facts_by_lead"
    }
}

#[derive(DeriveIden)]
enum ActivityFactsByLead {
    Table,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for ClusterFactsByLead {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Sqlite {
            return Ok(());
        }
        manager
            .create_table(
                Table::create()
                    .table(ActivityFactsByLead::Table)
                    .col(string(ActivityFacts::TenantId))
                    .col(string(ActivityFacts::ActivityId))
                    .col(string(ActivityFacts::LeadId))
                    .col(string(ActivityFacts::ActivityType))
                    .col(big_integer(ActivityFacts::OccurredAtUs))
                    .col(text(ActivityFacts::Properties))
                    .primary_key(
                        Index::create()
                            .col(ActivityFacts::TenantId)
                            .col(ActivityFacts::LeadId)
                            .col(ActivityFacts::ActivityId),
                    )
                    .extra("WITHOUT ROWID")
                    .to_owned(),
            )
            .await?;
        let columns = [
            ActivityFacts::TenantId,
            ActivityFacts::ActivityId,
            ActivityFacts::LeadId,
            ActivityFacts::ActivityType,
            ActivityFacts::OccurredAtUs,
            ActivityFacts::Properties,
        ];
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(ActivityFactsByLead::Table)
                    .columns(columns)
                    .select_from(
                        Query::select()
                            .columns(columns)
                            .from(ActivityFacts::Table)
                            .to_owned(),
                    )
                    .map_err(|err| DbErr::Migration(err.to_string()))?
                    .to_owned(),
            )
            .await?;
        manager
            .drop_table(Table::drop().table(ActivityFacts::Table).to_owned())
            .await?;
        manager
            .rename_table(
                Table::rename()
                    .table(ActivityFactsByLead::Table, ActivityFacts::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("activity_facts_activity")
                    .table(ActivityFacts::Table)
                    .col(ActivityFacts::TenantId)
                    .col(ActivityFacts::ActivityId)
                    .unique()
                    .to_owned(),
            )
            .await
    }
}

/// Lead states are stored as bytes (`store::state`'s binary encoding) instead of JSON text.
/// PostgreSQL's column becomes `bytea`, each stored JSON state kept as its UTF-8 bytes (the
/// table is rewritten once, under an exclusive lock). SQLite's `TEXT` column already stores
/// byte values as they are, so nothing changes there; on both, a JSON state still reads and is
/// rewritten in the binary form the next time its lead changes.
#[derive(Debug)]
struct StoreStatesAsBytes;

impl MigrationName for StoreStatesAsBytes {
    fn name(&self) -> &str {
        "m20261202_000001_store_lead_states_as_bytes"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for StoreStatesAsBytes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() != sea_orm::DatabaseBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                "ALTER TABLE lead_scores ALTER COLUMN state TYPE bytea \
                 USING convert_to(state, 'UTF8')",
            )
            .await
            .map(|_| ())
    }
}

/// Each lead's row says when the sweeper next needs it (`sweep_due_us`, indexed), so a sweep
/// reads the leads that are due instead of every lead. Rows stored before get a due time of
/// zero (the epoch): the first sweep visits each live one once and stores its real time; merged
/// rows get none. `scoring_sweep_passes` records, per tenant, the model version the sweeper
/// last visited every lead under.
#[derive(Debug)]
struct SweepDueTimes;

impl MigrationName for SweepDueTimes {
    fn name(&self) -> &str {
        "m20261207_000001_sweep_due_times"
    }
}

#[derive(DeriveIden)]
enum ScoringSweepPasses {
    Table,
    TenantId,
    ModelVersion,
}

#[derive(DeriveIden)]
enum SweepDue {
    SweepDueUs,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for SweepDueTimes {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(LeadScores::Table)
                    .add_column(big_integer_null(SweepDue::SweepDueUs).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(LeadScores::Table)
                    .value(SweepDue::SweepDueUs, Option::<i64>::None)
                    .and_where(Expr::col(LeadScores::MergedInto).is_not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("lead_scores_sweep_due")
                    .table(LeadScores::Table)
                    .col(SweepDue::SweepDueUs)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ScoringSweepPasses::Table)
                    .col(string(ScoringSweepPasses::TenantId).primary_key())
                    .col(integer(ScoringSweepPasses::ModelVersion))
                    .to_owned(),
            )
            .await
    }
}
