//! Handoff's schema, applied at start-up.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_pk_auto, blob, boolean, integer, string, text, timestamp_with_time_zone,
    timestamp_with_time_zone_null,
};

/// Handoff's migrator: its own tables plus the shared outbox and inbox.
#[derive(Debug)]
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(leadflow_runtime::outbox::CreateOutboxAndInbox),
            Box::new(leadflow_runtime::outbox::KeyIndexOnlyOnPostgres),
            Box::new(CreateHandoffTables),
            Box::new(leadflow_runtime::lease::CreateLeases),
            Box::new(AddContactDue),
            Box::new(leadflow_runtime::outbox::InboxWithoutRowid),
            Box::new(leadflow_runtime::outbox::InboxProcessedAtIndex),
            Box::new(leadflow_runtime::outbox::OutboxBundles { destinations: &[] }),
            Box::new(DropStatusDeadlineIndex),
            Box::new(leadflow_runtime::outbox::OutboxBacklogCountsMessages),
            Box::new(leadflow_runtime::outbox::OutboxPayloadLz4),
        ]
    }
}

/// Drops the `(status, sla_deadline)` index on hand-offs: no query filters or orders by the
/// deadline since the SLA sweep looks for overdue hand-offs by `contact_due_at`
/// (`handoffs_status_contact_due`), so the index only cost every hand-off written a second
/// entry to keep.
#[derive(Debug)]
struct DropStatusDeadlineIndex;

impl MigrationName for DropStatusDeadlineIndex {
    fn name(&self) -> &str {
        "m20261206_000001_drop_handoffs_status_deadline"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for DropStatusDeadlineIndex {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("handoffs_status_deadline")
                    .table(Handoffs::Table)
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

#[derive(Debug)]
struct CreateHandoffTables;

impl MigrationName for CreateHandoffTables {
    fn name(&self) -> &str {
        "m20261123_000002_create_handoff_tables"
    }
}

#[derive(DeriveIden)]
enum HandoffOwners {
    Table,
    TenantId,
    OwnerId,
    Body,
    Role,
    TeamId,
    Active,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum HandoffRoutingRules {
    Table,
    TenantId,
    Version,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum HandoffRoundRobin {
    Table,
    TenantId,
    State,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Handoffs {
    Table,
    TenantId,
    HandoffId,
    LeadId,
    TransitionId,
    Kind,
    Status,
    OwnerId,
    Queue,
    RoutingRuleId,
    RoutingRulesVersion,
    CreatedAt,
    SlaDeadline,
    SlaBreached,
    FirstContactAt,
    CrmRecordId,
    RejectionReason,
    Outcome,
    Context,
    UpdatedAt,
    ContactDueAt,
}

#[derive(DeriveIden)]
enum HandoffChanges {
    Table,
    Id,
    TenantId,
    HandoffId,
    Body,
    Snapshot,
    At,
}

#[derive(DeriveIden)]
enum HandoffRequests {
    Table,
    TenantId,
    RequestId,
    Method,
    Response,
    CreatedAt,
}

#[derive(DeriveIden)]
enum HandoffWebhooks {
    Table,
    TenantId,
    WebhookId,
    Body,
    Secret,
    Enabled,
    SecretUpdatedAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum HandoffWebhookDeliveries {
    Table,
    Id,
    DeliveryId,
    TenantId,
    WebhookId,
    HandoffId,
    HandoffStatus,
    State,
    AttemptCount,
    LastHttpStatus,
    LastError,
    Payload,
    CreatedAt,
    LastAttemptAt,
    NextAttemptAt,
    DeliveredAt,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for CreateHandoffTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(HandoffOwners::Table)
                    .if_not_exists()
                    .col(string(HandoffOwners::TenantId))
                    .col(string(HandoffOwners::OwnerId))
                    .col(text(HandoffOwners::Body))
                    .col(string(HandoffOwners::Role))
                    .col(string(HandoffOwners::TeamId))
                    .col(boolean(HandoffOwners::Active))
                    .col(timestamp_with_time_zone(HandoffOwners::CreatedAt))
                    .col(timestamp_with_time_zone(HandoffOwners::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(HandoffOwners::TenantId)
                            .col(HandoffOwners::OwnerId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HandoffRoutingRules::Table)
                    .if_not_exists()
                    .col(string(HandoffRoutingRules::TenantId))
                    .col(integer(HandoffRoutingRules::Version))
                    .col(blob(HandoffRoutingRules::Body))
                    .col(timestamp_with_time_zone(HandoffRoutingRules::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(HandoffRoutingRules::TenantId)
                            .col(HandoffRoutingRules::Version),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HandoffRoundRobin::Table)
                    .if_not_exists()
                    .col(string(HandoffRoundRobin::TenantId).primary_key())
                    .col(text(HandoffRoundRobin::State))
                    .col(timestamp_with_time_zone(HandoffRoundRobin::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Handoffs::Table)
                    .if_not_exists()
                    .col(string(Handoffs::TenantId))
                    .col(string(Handoffs::HandoffId))
                    .col(string(Handoffs::LeadId))
                    .col(string(Handoffs::TransitionId))
                    .col(integer(Handoffs::Kind))
                    .col(integer(Handoffs::Status))
                    .col(string(Handoffs::OwnerId))
                    .col(integer(Handoffs::Queue))
                    .col(string(Handoffs::RoutingRuleId))
                    .col(integer(Handoffs::RoutingRulesVersion))
                    .col(timestamp_with_time_zone(Handoffs::CreatedAt))
                    .col(timestamp_with_time_zone(Handoffs::SlaDeadline))
                    .col(boolean(Handoffs::SlaBreached))
                    .col(timestamp_with_time_zone_null(Handoffs::FirstContactAt))
                    .col(string(Handoffs::CrmRecordId))
                    .col(integer(Handoffs::RejectionReason))
                    .col(blob(Handoffs::Outcome))
                    .col(blob(Handoffs::Context))
                    .col(timestamp_with_time_zone(Handoffs::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(Handoffs::TenantId)
                            .col(Handoffs::HandoffId),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, unique, columns) in [
            (
                "handoffs_transition",
                true,
                vec![Handoffs::TenantId, Handoffs::TransitionId],
            ),
            (
                "handoffs_lead",
                false,
                vec![Handoffs::TenantId, Handoffs::LeadId],
            ),
            (
                "handoffs_owner_status",
                false,
                vec![Handoffs::TenantId, Handoffs::OwnerId, Handoffs::Status],
            ),
            (
                "handoffs_status_deadline",
                false,
                vec![Handoffs::Status, Handoffs::SlaDeadline],
            ),
        ] {
            let mut index = Index::create();
            index.name(name).table(Handoffs::Table).if_not_exists();
            if unique {
                index.unique();
            }
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table(HandoffChanges::Table)
                    .if_not_exists()
                    .col(big_pk_auto(HandoffChanges::Id))
                    .col(string(HandoffChanges::TenantId))
                    .col(string(HandoffChanges::HandoffId))
                    .col(blob(HandoffChanges::Body))
                    .col(blob(HandoffChanges::Snapshot))
                    .col(timestamp_with_time_zone(HandoffChanges::At))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("handoff_changes_handoff")
                    .table(HandoffChanges::Table)
                    .col(HandoffChanges::TenantId)
                    .col(HandoffChanges::HandoffId)
                    .col(HandoffChanges::Id)
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HandoffRequests::Table)
                    .if_not_exists()
                    .col(string(HandoffRequests::TenantId))
                    .col(string(HandoffRequests::RequestId))
                    .col(string(HandoffRequests::Method))
                    .col(blob(HandoffRequests::Response))
                    .col(timestamp_with_time_zone(HandoffRequests::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(HandoffRequests::TenantId)
                            .col(HandoffRequests::RequestId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HandoffWebhooks::Table)
                    .if_not_exists()
                    .col(string(HandoffWebhooks::TenantId))
                    .col(string(HandoffWebhooks::WebhookId))
                    .col(blob(HandoffWebhooks::Body))
                    .col(text(HandoffWebhooks::Secret))
                    .col(boolean(HandoffWebhooks::Enabled))
                    .col(timestamp_with_time_zone(HandoffWebhooks::SecretUpdatedAt))
                    .col(timestamp_with_time_zone(HandoffWebhooks::CreatedAt))
                    .col(timestamp_with_time_zone(HandoffWebhooks::UpdatedAt))
                    .primary_key(
                        Index::create()
                            .col(HandoffWebhooks::TenantId)
                            .col(HandoffWebhooks::WebhookId),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(HandoffWebhookDeliveries::Table)
                    .if_not_exists()
                    .col(big_pk_auto(HandoffWebhookDeliveries::Id))
                    .col(string(HandoffWebhookDeliveries::DeliveryId))
                    .col(string(HandoffWebhookDeliveries::TenantId))
                    .col(string(HandoffWebhookDeliveries::WebhookId))
                    .col(string(HandoffWebhookDeliveries::HandoffId))
                    .col(integer(HandoffWebhookDeliveries::HandoffStatus))
                    .col(integer(HandoffWebhookDeliveries::State))
                    .col(integer(HandoffWebhookDeliveries::AttemptCount))
                    .col(integer(HandoffWebhookDeliveries::LastHttpStatus))
                    .col(text(HandoffWebhookDeliveries::LastError))
                    .col(text(HandoffWebhookDeliveries::Payload))
                    .col(timestamp_with_time_zone(
                        HandoffWebhookDeliveries::CreatedAt,
                    ))
                    .col(timestamp_with_time_zone_null(
                        HandoffWebhookDeliveries::LastAttemptAt,
                    ))
                    .col(timestamp_with_time_zone(
                        HandoffWebhookDeliveries::NextAttemptAt,
                    ))
                    .col(timestamp_with_time_zone_null(
                        HandoffWebhookDeliveries::DeliveredAt,
                    ))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("handoff_webhook_deliveries_due")
                    .table(HandoffWebhookDeliveries::Table)
                    .col(HandoffWebhookDeliveries::State)
                    .col(HandoffWebhookDeliveries::NextAttemptAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}

/// When the current owner's first contact is due: the SLA deadline until an escalation re-routes
/// the hand-off and gives the new owner a fresh SLA. Existing rows start from their deadline.
#[derive(Debug)]
struct AddContactDue;

impl MigrationName for AddContactDue {
    fn name(&self) -> &str {
        "m20261201_000001_add_handoff_contact_due"
    }
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for AddContactDue {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Handoffs::Table)
                    .add_column(timestamp_with_time_zone_null(Handoffs::ContactDueAt))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(Handoffs::Table)
                    .value(Handoffs::ContactDueAt, Expr::col(Handoffs::SlaDeadline))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("handoffs_status_contact_due")
                    .table(Handoffs::Table)
                    .col(Handoffs::Status)
                    .col(Handoffs::ContactDueAt)
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }
}
