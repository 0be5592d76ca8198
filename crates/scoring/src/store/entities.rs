//! Scoring's tables as sea-orm entities. Every table carries `tenant_id`.

/// `scoring_models`: every published model version.
pub mod model {
    use sea_orm::entity::prelude::*;

    /// A published model.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "scoring_models")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// 1, 2, 3, …; the highest is active.
        #[sea_orm(primary_key, auto_increment = false)]
        pub version: i32,
        /// The domain model as JSON.
        pub body: String,
        /// Publication time.
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `lead_scores`: each lead's scoring state.
pub mod lead_score {
    use sea_orm::entity::prelude::*;

    /// A lead's state.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "lead_scores")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The lead.
        #[sea_orm(primary_key, auto_increment = false)]
        pub lead_id: String,
        /// `domain::LeadScore` (ledger included), as `store::state` encodes it.
        pub state: Vec<u8>,
        /// The profile as an encoded `leadflow.common.v1.Profile`.
        pub profile: Vec<u8>,
        /// When the lead was first seen.
        pub first_seen: DateTimeUtc,
        /// The model version the state was computed with.
        pub model_version: i32,
        /// Set when the lead was merged into another.
        pub merged_into: Option<String>,
        /// The score last announced to qualification.
        pub announced_score: f64,
        /// The grade last announced (`FitGrade` number).
        pub announced_grade: i32,
        /// Last change.
        pub updated_at: DateTimeUtc,
        /// When the sweeper next needs to look at the lead, in microseconds since the epoch
        /// (`LeadScore::next_sweep_due`); `None` when no sweep would change it before an event
        /// does, and for merged leads.
        pub sweep_due_us: Option<i64>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `scoring_sweep_passes`: the model version under which the sweeper last visited every lead
/// of a tenant. A newer published version can change any lead's due time, so the sweeper
/// visits all of the tenant's leads once more.
pub mod sweep_pass {
    use sea_orm::entity::prelude::*;

    /// A tenant's last full sweep.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "scoring_sweep_passes")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The model version every live lead of the tenant was last swept under.
        pub model_version: i32,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `activity_facts`: the activities scoring was sent, for rescoring and merges.
pub mod fact {
    use sea_orm::entity::prelude::*;

    /// An activity fact.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "activity_facts")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// Ingestion's activity id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub activity_id: String,
        /// The lead it belongs to now.
        pub lead_id: String,
        /// Its type.
        pub activity_type: String,
        /// When it occurred, microseconds since the epoch.
        pub occurred_at_us: i64,
        /// Properties as JSON.
        pub properties: String,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `scoring_requests`: answers to idempotent public writes.
pub mod request {
    use sea_orm::entity::prelude::*;

    /// An accepted request.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "scoring_requests")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The caller's request id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub request_id: String,
        /// What it created: a model version or a job id.
        pub result: String,
        /// When.
        pub created_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `rescore_jobs`: rescoring runs and their progress.
pub mod rescore_job {
    use sea_orm::entity::prelude::*;

    /// A job.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "rescore_jobs")]
    pub struct Model {
        /// Owning tenant.
        #[sea_orm(primary_key, auto_increment = false)]
        pub tenant_id: String,
        /// The job's id.
        #[sea_orm(primary_key, auto_increment = false)]
        pub job_id: String,
        /// The model version it scores with.
        pub model_version: i32,
        /// `RescoreJobState` number.
        pub state: i32,
        /// Leads to re-score.
        pub total_leads: i64,
        /// Leads done.
        pub processed_leads: i64,
        /// Leads whose score or grade changed.
        pub changed_leads: i64,
        /// Creation time.
        pub created_at: DateTimeUtc,
        /// Start time.
        pub started_at: Option<DateTimeUtc>,
        /// End time.
        pub ended_at: Option<DateTimeUtc>,
        /// Why it failed.
        pub error: Option<String>,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// `handoff_decisions`: sales decisions and outcomes reported back, for the closed loop.
pub mod decision {
    use sea_orm::entity::prelude::*;

    /// A recorded decision.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "handoff_decisions")]
    pub struct Model {
        /// The message id it came with.
        #[sea_orm(primary_key, auto_increment = false)]
        pub message_id: String,
        /// Owning tenant.
        pub tenant_id: String,
        /// The lead.
        pub lead_id: String,
        /// The encoded `HandoffDecision`.
        pub payload: Vec<u8>,
        /// When it arrived.
        pub received_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
