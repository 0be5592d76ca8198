//! Ingestion's tables as sea-orm entities. Every table carries `tenant_id`.

/// `leads`: one row per lead, its profile as JSON.
pub mod lead {
    use sea_orm::entity::prelude::*;

    /// A lead.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "leads")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The lead's id (a UUIDv7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub lead_id: String,
        /// The profile (`domain::Profile`) as JSON.
        pub profile: String,
        /// Set when the lead was merged into another.
        pub merged_into: Option<String>,
        /// Creation time.
        pub created_at: DateTimeUtc,
        /// Last change to the lead itself: its profile, identities or merges. Activities do
        /// not count: they are rows of their own (the timeline), so recording one writes no
        /// lead row.
        pub updated_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `identities`: a user id or anonymous id pointing at its lead.
pub mod identity {
    use sea_orm::entity::prelude::*;

    /// An identity.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "identities")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// `user` or `anonymous`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub kind: String,
        /// The caller's id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub external_id: String,
        /// The lead it belongs to now.
        pub lead_id: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `activities`: every accepted activity.
pub mod activity {
    use sea_orm::entity::prelude::*;

    /// An activity.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "activities")]
    pub struct Model {
        /// The activity's id (a UUIDv7).
        #[sea_orm(primary_key, auto_increment = false)]
        pub activity_id: String,
        /// Owning tenant.
        pub tenant_id: String,
        /// The lead it belongs to now (changes on merge).
        pub lead_id: String,
        /// The lead it was recorded for.
        pub original_lead_id: String,
        /// Its type.
        pub activity_type: String,
        /// When it occurred, in microseconds since the epoch (sorts the same on every backend).
        pub occurred_at_us: i64,
        /// When ingestion accepted it.
        pub received_at: DateTimeUtc,
        /// Its properties as a JSON object.
        pub properties: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `requests`: the answer given to each accepted message id, for idempotent replays.
pub mod request {
    use sea_orm::entity::prelude::*;

    /// An accepted request.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "requests")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The caller's idempotency key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        /// The lead the answer named.
        pub lead_id: String,
        /// The activity created, for a track.
        pub activity_id: Option<String>,
        /// Leads merged by the call, as a JSON array.
        pub merged_lead_ids: String,
        /// When it was accepted.
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
