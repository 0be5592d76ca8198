//! Leases: a periodic task that must run on one replica at a time (a sweeper, a webhook
//! dispatcher) takes a named lease in its service's own database before each pass. A lease held
//! by a replica that stopped renewing it expires after its time to live, and another replica
//! takes over. Works the same on SQLite and PostgreSQL; times are wall-clock times, like the
//! outbox's, never a service's domain clock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, DatabaseConnection, DbErr, EntityTrait, QueryFilter,
};
use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{string, timestamp_with_time_zone};

/// The `leases` table.
pub mod lease_row {
    use sea_orm::entity::prelude::*;

    /// One named lease.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "leases")]
    pub struct Model {
        /// What the lease guards, e.g. `scoring.sweeper`.
        #[sea_orm(primary_key, auto_increment = false)]
        pub name: String,
        /// The replica holding it.
        pub holder: String,
        /// It is free after this time unless renewed.
        pub expires_at: DateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A named lease, as one replica sees it.
#[derive(Debug, Clone)]
pub struct Lease {
    db: DatabaseConnection,
    name: &'static str,
    holder: String,
    ttl: chrono::Duration,
}

impl Lease {
    /// The lease `name` in `db` for this replica (a fresh holder id per process), held for
    /// `ttl` after each renewal. Renew more often than `ttl`, e.g. every pass of a task that
    /// runs at a third of it.
    pub fn new(db: DatabaseConnection, name: &'static str, ttl: Duration) -> Self {
        Self {
            db,
            name,
            holder: uuid::Uuid::new_v4().to_string(),
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX),
        }
    }

    /// Takes or renews the lease now; `true` when this replica holds it.
    pub async fn acquire(&self) -> Result<bool, DbErr> {
        self.acquire_at(Utc::now()).await
    }

    /// Takes or renews the lease as of `now`; `true` when this replica holds it.
    pub async fn acquire_at(&self, now: DateTime<Utc>) -> Result<bool, DbErr> {
        let expires_at = now.checked_add_signed(self.ttl).unwrap_or(now);
        lease_row::Entity::insert(lease_row::ActiveModel {
            name: Set(self.name.to_owned()),
            holder: Set(String::new()),
            expires_at: Set(now),
        })
        .on_conflict_do_nothing_on([lease_row::Column::Name])
        .exec(&self.db)
        .await?;
        let taken = lease_row::Entity::update_many()
            .col_expr(lease_row::Column::Holder, Expr::value(self.holder.clone()))
            .col_expr(lease_row::Column::ExpiresAt, Expr::value(expires_at))
            .filter(lease_row::Column::Name.eq(self.name))
            .filter(
                Condition::any()
                    .add(lease_row::Column::Holder.eq(self.holder.as_str()))
                    .add(lease_row::Column::ExpiresAt.lte(now)),
            )
            .exec(&self.db)
            .await?;
        Ok(taken.rows_affected == 1)
    }

    /// Runs `work`, just after taking this lease, renewing the lease every third of its time to
    /// live meanwhile, so work longer than that keeps it. `None` when the lease was lost first
    /// (another replica took it, or no renewal succeeded for a whole time to live, after which
    /// another may have): `work` is dropped at its next await point then, as if this replica
    /// had stopped.
    pub async fn hold_while<F: std::future::Future>(&self, work: F) -> Option<F::Output> {
        let ttl = self.ttl.to_std().unwrap_or(Duration::MAX);
        tokio::select! {
            output = work => Some(output),
            () = self.renew_until_lost(ttl) => None,
        }
    }

    /// Renews the lease every third of `ttl`; returns once it is lost.
    async fn renew_until_lost(&self, ttl: Duration) {
        let period = (ttl / 3).max(Duration::from_millis(1));
        let mut held_until = tokio::time::Instant::now() + ttl;
        let mut renewals = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        renewals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            renewals.tick().await;
            match self.acquire().await {
                Ok(true) => held_until = tokio::time::Instant::now() + ttl,
                Ok(false) => {
                    tracing::warn!(lease = self.name, "lease taken by another replica");
                    return;
                }
                Err(err) if tokio::time::Instant::now() >= held_until => {
                    tracing::warn!(lease = self.name, error = %err, "lease not renewed in time");
                    return;
                }
                Err(err) => tracing::warn!(lease = self.name, error = %err, "lease renewal failed"),
            }
        }
    }
}

/// Runs `pass` every `interval` until `shutdown`, on this replica only while it holds `lease`
/// (renewed before each pass and during it, see [`Lease::hold_while`]; a pass whose lease is
/// lost stops). A store error taking the lease skips that pass.
pub async fn every<F, Fut>(
    lease: Lease,
    interval: Duration,
    shutdown: tokio_util::sync::CancellationToken,
    mut pass: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        match lease.acquire().await {
            Ok(true) => {
                if lease.hold_while(pass()).await.is_none() {
                    tracing::warn!(lease = lease.name, "pass stopped: its lease was lost");
                }
            }
            Ok(false) => {}
            Err(err) => tracing::warn!(lease = lease.name, error = %err, "lease unavailable"),
        }
    }
}

/// A lease's time to live for a task running every `interval`: three passes, at least ten
/// seconds, so a replica that stops is replaced quickly and a slow pass keeps its lease.
pub fn ttl_for(interval: Duration) -> Duration {
    (interval * 3).max(Duration::from_secs(10))
}

/// The migration every service with a leased task adds to its migrator.
#[derive(Debug)]
pub struct CreateLeases;

impl MigrationName for CreateLeases {
    fn name(&self) -> &str {
        "m20261123_000003_create_leases"
    }
}

#[derive(DeriveIden)]
enum Leases {
    Table,
    Name,
    Holder,
    ExpiresAt,
}

#[async_trait::async_trait]
#[allow(elided_lifetimes_in_paths)] // the trait signature of sea-orm-migration elides it
impl MigrationTrait for CreateLeases {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Leases::Table)
                    .if_not_exists()
                    .col(string(Leases::Name).primary_key())
                    .col(string(Leases::Holder))
                    .col(timestamp_with_time_zone(Leases::ExpiresAt))
                    .to_owned(),
            )
            .await
    }
}
