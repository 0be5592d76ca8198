//! The store ceiling: raw batched inserts of rows shaped like an ingested activity (activity id,
//! tenant, lead id, type, occurred-at, properties as JSON; the primary key and the timeline index
//! ingestion's `activities` table has), 100 rows per transaction as one multi-row `INSERT`,
//! through the same driver and settings the services use ([`leadflow_runtime::db::connect`]:
//! sea-orm over sqlx; on SQLite one connection, WAL, `synchronous=NORMAL`; on PostgreSQL a pool
//! of 10). Also the fresh PostgreSQL databases the bench creates and drops.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sea_orm::{
    ConnectionTrait, Database, DatabaseBackend, DatabaseConnection, Statement, TransactionTrait,
    Value,
};
use serde::Serialize;

use crate::load::{self, Limit, Phase};
use crate::suite::{self, Workload};

/// Rows per transaction.
pub(crate) const ROWS_PER_TRANSACTION: u64 = 100;

/// Pool size on PostgreSQL: the services' default (`LEADFLOW_DATABASE_MAX_CONNECTIONS`).
const POOL_SIZE: u32 = 10;

/// The insert rate of one backend.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreCeiling {
    /// `sqlite` or `postgresql`.
    pub(crate) backend: &'static str,
    /// Rows per transaction.
    pub(crate) rows_per_transaction: u64,
    /// Transactions (one per 100 rows) as a load phase: `items_per_sec` is rows per second,
    /// latency is per transaction.
    pub(crate) phase: Phase,
}

/// Inserts `rows` activity-shaped rows into a fresh table of `url` through `writers` concurrent
/// writers (they queue for SQLite's single connection), within `timeout`.
pub(crate) async fn insert_ceiling(
    backend: &'static str,
    url: &str,
    workload: &Workload,
    rows: u64,
    writers: usize,
    timeout: Duration,
) -> anyhow::Result<StoreCeiling> {
    eprintln!("store ceiling on {backend}: {rows} rows, {ROWS_PER_TRANSACTION} per transaction");
    let db = leadflow_runtime::db::connect(url, POOL_SIZE)
        .await
        .with_context(|| format!("connect to the {backend} ceiling database"))?;
    let kind = db.get_database_backend();
    db.execute_unprepared(
        "CREATE TABLE bench_activities (
            activity_id VARCHAR NOT NULL PRIMARY KEY,
            tenant_id VARCHAR NOT NULL,
            lead_id VARCHAR NOT NULL,
            activity_type VARCHAR NOT NULL,
            occurred_at_us BIGINT NOT NULL,
            properties TEXT NOT NULL
        )",
    )
    .await?;
    db.execute_unprepared(
        "CREATE INDEX bench_activities_timeline
            ON bench_activities (tenant_id, lead_id, occurred_at_us, activity_id)",
    )
    .await?;
    let sql = Arc::new(insert_sql(kind, ROWS_PER_TRANSACTION));
    let workload = Arc::new(workload.clone());
    // Lead ids as ingestion would have assigned them (UUIDs), one per lead.
    let lead_ids: Arc<Vec<String>> = Arc::new(
        (0..workload.leads)
            .map(|j| uuid::Uuid::from_u64_pair(suite::mix(j), j).to_string())
            .collect(),
    );
    let phase = {
        let db = db.clone();
        load::closed_loop(
            &format!("{backend} INSERT of {ROWS_PER_TRANSACTION} rows"),
            writers,
            Limit::count(rows.div_ceil(ROWS_PER_TRANSACTION), timeout),
            move |chunk| {
                let (db, sql, workload, lead_ids) = (
                    db.clone(),
                    Arc::clone(&sql),
                    Arc::clone(&workload),
                    Arc::clone(&lead_ids),
                );
                async move {
                    insert_chunk(&db, kind, &sql, &workload, &lead_ids, rows, chunk)
                        .await
                        .map_err(|err| format!("{err:#}"))
                }
            },
        )
        .await?
    };
    let _ = db.close().await;
    Ok(StoreCeiling {
        backend,
        rows_per_transaction: ROWS_PER_TRANSACTION,
        phase,
    })
}

/// One transaction: rows `chunk * 100 ..` as one multi-row INSERT.
async fn insert_chunk(
    db: &DatabaseConnection,
    kind: DatabaseBackend,
    sql: &str,
    workload: &Workload,
    lead_ids: &[String],
    rows: u64,
    chunk: u64,
) -> anyhow::Result<u64> {
    let first = chunk * ROWS_PER_TRANSACTION;
    let last = (first + ROWS_PER_TRANSACTION).min(rows);
    let mut values: Vec<Value> = Vec::with_capacity(6 * usize::try_from(last - first)?);
    for i in first..last {
        let activity = workload.activity(i);
        let lead = usize::try_from(workload.lead_of(i))?;
        let occurred_us = activity
            .occurred_at
            .as_ref()
            .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1000));
        values.push(uuid::Uuid::now_v7().to_string().into());
        values.push("default".into());
        values.push(lead_ids.get(lead).cloned().unwrap_or_default().into());
        values.push(activity.r#type.into());
        values.push(occurred_us.into());
        values.push(serde_json::to_string(&activity.properties)?.into());
    }
    let statement = if last - first == ROWS_PER_TRANSACTION {
        Statement::from_sql_and_values(kind, sql, values)
    } else {
        Statement::from_sql_and_values(kind, insert_sql(kind, last - first), values)
    };
    let txn = db.begin().await?;
    txn.execute_raw(statement).await?;
    txn.commit().await?;
    Ok(last - first)
}

/// `INSERT INTO bench_activities … VALUES (…), (…)` for `rows` rows in `kind`'s placeholders.
fn insert_sql(kind: DatabaseBackend, rows: u64) -> String {
    let mut sql = String::from(
        "INSERT INTO bench_activities \
         (activity_id, tenant_id, lead_id, activity_type, occurred_at_us, properties) VALUES ",
    );
    let mut n = 0;
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..6 {
            if column > 0 {
                sql.push_str(", ");
            }
            n += 1;
            if kind == DatabaseBackend::Postgres {
                sql.push_str(&format!("${n}"));
            } else {
                sql.push('?');
            }
        }
        sql.push(')');
    }
    sql
}

/// The PostgreSQL server of `--postgres-url`, on which the bench creates fresh databases and
/// drops them at the end.
#[derive(Debug)]
pub(crate) struct PostgresServer {
    url: String,
    created: Mutex<Vec<String>>,
}

impl PostgresServer {
    /// The server `url` names (its database is only used to create and drop the others).
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            created: Mutex::new(Vec::new()),
        }
    }

    /// Creates a fresh database for `purpose`; its URL.
    pub(crate) async fn create(&self, purpose: &str) -> anyhow::Result<String> {
        let name = format!(
            "leadflow_bench_{purpose}_{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        let admin = Database::connect(&self.url)
            .await
            .context("connect to the PostgreSQL server of --postgres-url")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .with_context(|| format!("create database {name}"))?;
        let _ = admin.close().await;
        self.created
            .lock()
            .map_err(|_| anyhow::anyhow!("database list poisoned"))?
            .push(name.clone());
        let (base, query) = match self.url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (self.url.as_str(), String::new()),
        };
        let base = base.rsplit_once('/').map_or(base, |(base, _)| base);
        Ok(format!("{base}/{name}{query}"))
    }

    /// Drops every database this run created.
    pub(crate) async fn drop_all(&self) -> anyhow::Result<()> {
        let names = std::mem::take(
            &mut *self
                .created
                .lock()
                .map_err(|_| anyhow::anyhow!("database list poisoned"))?,
        );
        if names.is_empty() {
            return Ok(());
        }
        let admin = Database::connect(&self.url).await?;
        for name in names {
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await
                .with_context(|| format!("drop database {name}"))?;
        }
        let _ = admin.close().await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_follow_the_backend() {
        assert!(
            insert_sql(DatabaseBackend::Sqlite, 2)
                .ends_with("(?, ?, ?, ?, ?, ?), (?, ?, ?, ?, ?, ?)")
        );
        assert!(insert_sql(DatabaseBackend::Postgres, 2).ends_with("($7, $8, $9, $10, $11, $12)"));
    }
}
