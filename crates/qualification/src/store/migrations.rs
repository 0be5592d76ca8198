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
