//! The `outbox` and `inbox` tables as sea-orm entities.

/// A message waiting to be delivered.
pub mod outbox_message {
    use sea_orm::entity::prelude::*;

    /// One row of `outbox`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "outbox")]
    pub struct Model {
        /// Position in the queue: messages are delivered in id order per partition key.
        #[sea_orm(primary_key)]
        pub id: i64,
        /// Where the message goes, e.g. `scoring`.
        pub destination: String,
        /// Unique id the receiver deduplicates by.
        #[sea_orm(unique)]
        pub message_id: String,
        /// The tenant the message belongs to.
        pub tenant_id: String,
        /// Messages with the same key (a lead id, or a lead partition for bundles) are
        /// delivered in order.
        pub partition_key: String,
        /// The encoded protobuf message.
        pub payload: Vec<u8>,
        /// W3C trace context of the operation that produced the message, as JSON.
        pub trace_context: String,
        /// When the message was enqueued.
        pub created_at: DateTimeUtc,
        /// Failed delivery attempts so far.
        pub attempts: i32,
        /// Not delivered before this time (backoff after a failure).
        pub next_attempt_at: DateTimeUtc,
        /// The last delivery error, for operators.
        pub last_error: Option<String>,
        /// How many messages the row bundles ([`crate::outbox::Packing::Bundled`]); `None`
        /// for a row whose payload is one message.
        pub bundled: Option<i32>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A message id a receiver has applied.
pub mod inbox_message {
    use sea_orm::entity::prelude::*;

    /// One row of `inbox`.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "inbox")]
    pub struct Model {
        /// The applied message's id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        /// Its tenant.
        pub tenant_id: String,
        /// When it was applied.
        pub processed_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
