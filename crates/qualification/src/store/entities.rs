//! Qualification's tables as sea-orm entities. Every table carries `tenant_id`.

/// `qualification_definitions`: every published definition version.
pub mod definition {
    use sea_orm::entity::prelude::*;

    /// A published definition.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "qualification_definitions")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// 1, 2, 3, …; the highest is active.
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        /// `domain::Definition` as JSON.
        pub body: String,
        /// Publication time.
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `qualification_leads`: each lead's stage and what it was decided on.
pub mod lead {
    use sea_orm::entity::prelude::*;

    /// A lead.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "qualification_leads")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The lead.
        #[sea_orm(primary_key, auto_increment = false)]
        pub lead_id: String,
        /// The stage's name (`domain::Stage::name`), for listing by stage.
        pub stage: String,
        /// `domain::LeadQualification` as JSON.
        pub state: String,
        /// The latest profile, an encoded `leadflow.common.v1.Profile`.
        pub profile: Vec<u8>,
        /// The latest score, an encoded `leadflow.scoring.v1.Score`.
        pub score: Vec<u8>,
        /// The profile's `SourceChannel` number, for listing and the funnel.
        pub source_channel: i32,
        /// The definition version of the last transition (0 before any).
        pub definition_version: i32,
        /// Set when the lead was merged into another.
        pub merged_into: Option<String>,
        /// First seen.
        pub created_at: DateTimeUtc,
        /// Last change.
        pub updated_at: DateTimeUtc,
        /// When the lead entered its stage (the state's, copied for listing a stage newest
        /// first).
        pub stage_entered_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `qualification_transitions`: every stage transition, append-only.
pub mod transition {
    use sea_orm::entity::prelude::*;

    /// A recorded transition.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "qualification_transitions")]
    pub struct Model {
        /// Position in the log.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Owning tenant.
        pub tenant_id: String,
        /// The lead.
        pub lead_id: String,
        /// Public id.
        pub transition_id: String,
        /// `domain::Transition` as JSON.
        pub body: String,
        /// When (also inside `body`), for the funnel's period.
        pub at: DateTimeUtc,
        /// W3C trace id of the operation that caused it; empty when there was none.
        pub trace_id: String,
        /// The actor's note.
        pub note: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `qualification_requests`: answers of idempotent requests, by request id.
pub mod request {
    use sea_orm::entity::prelude::*;

    /// A remembered answer.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "qualification_requests")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The caller's request id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        /// The RPC it was for, so a request id reused for another call is refused.
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

/// `ignored_decisions`: hand-off decisions that were no longer legal for the lead's stage.
pub mod ignored_decision {
    use sea_orm::entity::prelude::*;

    /// An ignored decision.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "ignored_decisions")]
    pub struct Model {
        /// The outbox message id it came in.
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        /// Owning tenant.
        pub tenant_id: String,
        /// The lead.
        pub lead_id: String,
        /// Why it was ignored.
        pub reason: String,
        /// The encoded `leadflow.handoff.events.v1.HandoffDecision`.
        pub payload: Vec<u8>,
        /// When it arrived.
        pub received_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
