//! Qualification's schema, applied at start-up.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_pk_auto, blob, integer, string, string_null, text, timestamp_with_time_zone,
};

/// Qualification's migrator: its own tables plus the shared outbox and inbox.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(leadflow_runtime::outbox::CreateOutboxAndInbox),
            Box::new(leadflow_runtime::outbox::KeyIndexOnlyOnPostgres),
            Box::new(CreateQualificationTables),
            Box::new(leadflow_runtime::lease::CreateLeases),
            Box::new(leadflow_runtime::outbox::InboxWithoutRowid),
            Box::new(leadflow_runtime::outbox::InboxProcessedAtIndex),
            Box::new(leadflow_runtime::outbox::OutboxBundles { destinations: &[] }),
            Box::new(ListLeadsByStageEntry),
            Box::new(ListAllLeadsByStageEntry),
            Box::new(leadflow_runtime::outbox::OutboxBacklogCountsMessages),
            Box::new(leadflow_runtime::outbox::OutboxPayloadLz4),
        ]
    }
}

#[derive(Debug)]
struct CreateQualificationTables;

impl MigrationName for CreateQualificationTables {
    fn name(&self) -> &str {
        "m20261123_000002_create_qualification_tables"
    }
}

#[derive(DeriveIden)]
enum QualificationDefinitions {
    Table,
    TenantId,
    Version,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum QualificationLeads {
    Table,
    TenantId,
    LeadId,
    Stage,
    State,
    Profile,
    Score,
    SourceChannel,
    DefinitionVersion,
    MergedInto,
    CreatedAt,
    UpdatedAt,
    StageEnteredAt,
}

#[derive(DeriveIden)]
enum QualificationTransitions {
    Table,
    Id,
    TenantId,
    LeadId,
    TransitionId,
    Body,
    At,
    TraceId,
    Note,
}

#[derive(DeriveIden)]
enum QualificationRequests {
    Table,
    TenantId,
    RequestId,
    Method,
    Response,
    CreatedAt,
}

#[derive(DeriveIden)]
enum IgnoredDecisions {
    Table,
    MessageId,
    TenantId,
    LeadId,
    Reason,
    Payload,
    ReceivedAt,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for CreateQualificationTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QualificationDefinitions::Table)
                    .if_not_exists()
                    .col(string(QualificationDefinitions::TenantId))
                    .col(integer(QualificationDefinitions::Version))
                    .col(text(QualificationDefinitions::Body))
                    .col(timestamp_with_time_zone(
                        QualificationDefinitions::CreatedAt,
                    ))
                    .primary_key(
                        Index::create()
                            .col(QualificationDefinitions::TenantId)
                            .col(QualificationDefinitions::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QualificationLeads::Table)
                    .if_not_exists()
                    .col(string(QualificationLeads::TenantId))
                    .col(string(QualificationLeads::LeadId))
                    .col(string(QualificationLeads::Stage))
                    .col(text(QualificationLeads::State))
                    .col(blob(QualificationLeads::Profile))
                    .col(blob(QualificationLeads::Score))
                    .col(integer(QualificationLeads::SourceChannel))
                    .col(integer(QualificationLeads::DefinitionVersion))
                    .col(string_null(QualificationLeads::MergedInto))
                    .col(timestamp_with_time_zone(QualificationLeads::CreatedAt))
                    .col(timestamp_with_time_zone(QualificationLeads::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(QualificationLeads::TenantId)
                            .col(QualificationLeads::LeadId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("qualification_leads_stage")
                    .table(QualificationLeads::Table)
                    .col(QualificationLeads::TenantId)
                    .col(QualificationLeads::Stage)
                    .col(QualificationLeads::UpdatedAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QualificationTransitions::Table)
                    .if_not_exists()
                    .col(big_pk_auto(QualificationTransitions::Id))
                    .col(string(QualificationTransitions::TenantId))
                    .col(string(QualificationTransitions::LeadId))
                    .col(string(QualificationTransitions::TransitionId))
                    .col(text(QualificationTransitions::Body))
                    .col(timestamp_with_time_zone(QualificationTransitions::At))
                    .col(string(QualificationTransitions::TraceId))
                    .col(text(QualificationTransitions::Note))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            (
                "qualification_transitions_lead",
                [
                    QualificationTransitions::LeadId,
                    QualificationTransitions::Id,
                ],
            ),
            (
                "qualification_transitions_at",
                [QualificationTransitions::At, QualificationTransitions::Id],
            ),
        ] {
            let [first, second] = columns;
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(QualificationTransitions::Table)
                        .col(QualificationTransitions::TenantId)
                        .col(first)
                        .col(second)
                        .if_not_exists()
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(QualificationRequests::Table)
                    .if_not_exists()
                    .col(string(QualificationRequests::TenantId))
                    .col(string(QualificationRequests::RequestId))
                    .col(string(QualificationRequests::Method))
                    .col(blob(QualificationRequests::Response))
                    .col(timestamp_with_time_zone(QualificationRequests::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(QualificationRequests::TenantId)
                            .col(QualificationRequests::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(IgnoredDecisions::Table)
                    .if_not_exists()
                    .col(string(IgnoredDecisions::MessageId).primary_key())
                    .col(string(IgnoredDecisions::TenantId))
                    .col(string(IgnoredDecisions::LeadId))
                    .col(text(IgnoredDecisions::Reason))
                    .col(blob(IgnoredDecisions::Payload))
                    .col(timestamp_with_time_zone(IgnoredDecisions::ReceivedAt))
                    .to_owned(),
            )
            .await
    }
}

/// Lists a stage's leads by when they entered it, newest first, instead of by their last
/// change: a column `stage_entered_at` (copied from each lead's state, filled in here for the
/// leads already stored), and the stage index on `(tenant_id, stage, stage_entered_at)` in
/// place of `(tenant_id, stage, updated_at)`. A lead's last change moves with every score it
/// receives, so that index entry moved with nearly every delivered activity: a random page per
/// lead per commit, 7% of the suite's CPU per activity (BENCHMARKS.md). A lead enters a stage
/// rarely.
#[derive(Debug)]
struct ListLeadsByStageEntry;

impl MigrationName for ListLeadsByStageEntry {
    fn name(&self) -> &str {
        "m20261206_000003_list_leads_by_stage_entry"
    }
}

/// The one field of a stored lead state this migration reads.
#[derive(serde::Deserialize)]
struct StageEntry {
    stage_entered_at: chrono::DateTime<chrono::Utc>,
}

/// Leads whose stage entry one statement of the backfill reads.
const BACKFILL_PAGE: u64 = 500;

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for ListLeadsByStageEntry {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let epoch = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        manager
            .alter_table(
                Table::alter()
                    .table(QualificationLeads::Table)
                    .add_column(
                        timestamp_with_time_zone(QualificationLeads::StageEnteredAt).default(epoch),
                    )
                    .to_owned(),
            )
            .await?;
        backfill_stage_entry(manager).await?;
        manager
            .drop_index(
                Index::drop()
                    .name("qualification_leads_stage")
                    .table(QualificationLeads::Table)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("qualification_leads_stage_entry")
                    .table(QualificationLeads::Table)
                    .col(QualificationLeads::TenantId)
                    .col(QualificationLeads::Stage)
                    .col(QualificationLeads::StageEnteredAt)
                    .to_owned(),
            )
            .await
    }

    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }
}

/// Lists a tenant's leads of every stage in the listing's own order (stage entry newest first,
/// then lead id) from an index, `(tenant_id, stage_entered_at DESC, lead_id)`: without it each
/// page of an unfiltered `ListLeads` read and sorted every lead of the tenant, so paging through
/// them all was quadratic. The entry moves only when a lead changes stage.
#[derive(Debug)]
struct ListAllLeadsByStageEntry;

impl MigrationName for ListAllLeadsByStageEntry {
    fn name(&self) -> &str {
        "m20261207_000001_list_all_leads_by_stage_entry"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for ListAllLeadsByStageEntry {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name(ALL_LEADS_BY_ENTRY_INDEX)
                    .table(QualificationLeads::Table)
                    .col(QualificationLeads::TenantId)
                    .col((QualificationLeads::StageEnteredAt, IndexOrder::Desc))
                    .col(QualificationLeads::LeadId)
                    .to_owned(),
            )
            .await
    }
}

/// The index unfiltered `ListLeads` pages read.
pub const ALL_LEADS_BY_ENTRY_INDEX: &str = "qualification_leads_entry";

/// Sets every stored lead's `stage_entered_at` from its state, a page of leads at a time.
async fn backfill_stage_entry(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let mut after: Option<(String, String)> = None;
    loop {
        let mut page = Query::select();
        page.columns([
            QualificationLeads::TenantId,
            QualificationLeads::LeadId,
            QualificationLeads::State,
        ])
        .from(QualificationLeads::Table)
        .order_by(QualificationLeads::TenantId, Order::Asc)
        .order_by(QualificationLeads::LeadId, Order::Asc)
        .limit(BACKFILL_PAGE);
        if let Some((tenant, lead)) = &after {
            page.and_where(
                Expr::tuple([
                    Expr::col(QualificationLeads::TenantId),
                    Expr::col(QualificationLeads::LeadId),
                ])
                .gt(Expr::tuple([
                    Expr::value(tenant.clone()),
                    Expr::value(lead.clone()),
                ])),
            );
        }
        let rows = db.query_all(&page).await?;
        let Some(last) = rows.last() else {
            return Ok(());
        };
        after = Some((last.try_get("", "tenant_id")?, last.try_get("", "lead_id")?));
        for row in &rows {
            let tenant: String = row.try_get("", "tenant_id")?;
            let lead: String = row.try_get("", "lead_id")?;
            let state: String = row.try_get("", "state")?;
            let entry: StageEntry = serde_json::from_str(&state).map_err(|err| {
                DbErr::Migration(format!("lead {lead}: stored state does not parse: {err}"))
            })?;
            db.execute(
                Query::update()
                    .table(QualificationLeads::Table)
                    .value(QualificationLeads::StageEnteredAt, entry.stage_entered_at)
                    .and_where(Expr::col(QualificationLeads::TenantId).eq(tenant))
                    .and_where(Expr::col(QualificationLeads::LeadId).eq(lead)),
            )
            .await?;
        }
    }
}
