//! Handoff's tables as sea-orm entities. Every table carries `tenant_id`.

/// `handoff_owners`: the SDRs, account executives and managers hand-offs go to.
pub mod owner {
    use sea_orm::entity::prelude::*;

    /// An owner.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoff_owners")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The caller's id for the owner.
        #[sea_orm(primary_key, auto_increment = false)]
        pub owner_id: String,
        /// `domain::Owner` as JSON.
        pub body: String,
        /// Role name, for listing.
        pub role: String,
        /// Team, for listing.
        pub team_id: String,
        /// False after deactivation.
        pub active: bool,
        /// First upsert.
        pub created_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `handoff_routing_rules`: every published routing-rules version.
pub mod rules {
    use sea_orm::entity::prelude::*;

    /// A published version.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoff_routing_rules")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// 1, 2, 3, …; the highest is active.
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        /// The encoded `RoutingRules`.
        pub body: Vec<u8>,
        /// Publication time.
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `handoff_round_robin`: the weighted round-robin state of each pool.
pub mod round_robin {
    use sea_orm::entity::prelude::*;

    /// One pool's state.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoff_round_robin")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// `domain::RoundRobinState` as JSON.
        pub state: String,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `handoffs`: each hand-off with its warm context.
pub mod handoff {
    use sea_orm::entity::prelude::*;

    /// A hand-off.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoffs")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// Public id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub handoff_id: String,
        /// The lead.
        pub lead_id: String,
        /// Qualification's transition that asked for it (unique per tenant: requests are
        /// applied once).
        pub transition_id: String,
        /// `HandoffKind` number.
        pub kind: i32,
        /// `HandoffStatus` number.
        pub status: i32,
        /// Current owner; empty while in a queue.
        pub owner_id: String,
        /// `HandoffQueue` number (0 when assigned).
        pub queue: i32,
        /// The routing rule that picked the pool.
        pub routing_rule_id: String,
        /// The routing rules version used.
        pub routing_rules_version: i32,
        /// Creation.
        pub created_at: DateTimeUtc,
        /// First contact due.
        pub sla_deadline: DateTimeUtc,
        /// The current owner's first contact due: the SLA deadline, or a fresh SLA from an
        /// escalation that re-routed the hand-off (empty only on rows the migration missed).
        pub contact_due_at: Option<DateTimeUtc>,
        /// The SLA broke.
        pub sla_breached: bool,
        /// First contact.
        pub first_contact_at: Option<DateTimeUtc>,
        /// The CRM's record id.
        pub crm_record_id: String,
        /// `RejectionReason` number once rejected.
        pub rejection_reason: i32,
        /// The latest encoded `SalesOutcome`, if any.
        pub outcome: Vec<u8>,
        /// The encoded `WarmContext`.
        pub context: Vec<u8>,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `handoff_changes`: every status or owner change, append-only; its id is the stream cursor.
pub mod change {
    use sea_orm::entity::prelude::*;

    /// A change.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoff_changes")]
    pub struct Model {
        /// Position in the log: the stream cursor.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Owning tenant.
        pub tenant_id: String,
        /// The hand-off.
        pub handoff_id: String,
        /// The encoded `HandoffStatusChange`.
        pub body: Vec<u8>,
        /// The encoded `Handoff` (basic view) as of the change, what a stream item shows.
        pub snapshot: Vec<u8>,
        /// When.
        pub at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `handoff_requests`: answers of idempotent requests, by request id.
pub mod request {
    use sea_orm::entity::prelude::*;

    /// A remembered answer.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoff_requests")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The caller's request id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        /// The RPC it was for.
        pub method: String,
        /// The encoded response of the first call.
        pub response: Vec<u8>,
        /// When.
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `handoff_webhooks`: the tenants' webhook endpoints.
pub mod webhook {
    use sea_orm::entity::prelude::*;

    /// An endpoint.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoff_webhooks")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// Public id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub webhook_id: String,
        /// The encoded `Webhook` (without secret).
        pub body: Vec<u8>,
        /// The signing secret.
        pub secret: String,
        /// Deliveries are made only while enabled.
        pub enabled: bool,
        /// Last secret change.
        pub secret_updated_at: DateTimeUtc,
        /// Creation.
        pub created_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `handoff_webhook_deliveries`: each change sent (or to send) to an endpoint.
pub mod delivery {
    use sea_orm::entity::prelude::*;

    /// A delivery.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoff_webhook_deliveries")]
    pub struct Model {
        /// Position: deliveries are listed and attempted in this order.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Public id.
        pub delivery_id: String,
        /// Owning tenant.
        pub tenant_id: String,
        /// The endpoint.
        pub webhook_id: String,
        /// The hand-off.
        pub handoff_id: String,
        /// `HandoffStatus` number the hand-off changed into.
        pub handoff_status: i32,
        /// `WebhookDeliveryState` number.
        pub state: i32,
        /// Attempts so far.
        pub attempt_count: i32,
        /// HTTP status of the last attempt (0: no response).
        pub last_http_status: i32,
        /// Why the last attempt failed.
        pub last_error: String,
        /// The JSON body to send.
        pub payload: String,
        /// Creation.
        pub created_at: DateTimeUtc,
        /// Last attempt.
        pub last_attempt_at: Option<DateTimeUtc>,
        /// Next attempt, while pending.
        pub next_attempt_at: DateTimeUtc,
        /// Success.
        pub delivered_at: Option<DateTimeUtc>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
