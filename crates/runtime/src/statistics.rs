//! Planner statistics that keep up with young PostgreSQL tables. A service's tables start
//! empty, and PostgreSQL plans a query on a table it has never analyzed as if `tenant_id = $1`
//! matched a handful of rows: it then reads a tenant's leads by `tenant_id` alone and filters
//! the lead ids, every row of the tenant for every lookup. The driver keeps each statement's
//! plan for the connection's life, and autovacuum analyzes a table only on its next pass (a
//! minute apart), so right after a deployment or a bulk import a lookup of 256 ids took 200 ms
//! instead of a fraction of one. Every few seconds the tables that have changed more than their
//! statistics describe (they doubled, or were never analyzed) are analyzed, which also drops
//! the plans built on the old statistics. Autovacuum keeps doing the rest.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, DbErr, Statement};
use tokio_util::sync::CancellationToken;

/// How often the tables' statistics are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// Changes beyond what a table's statistics describe before it is analyzed again: small
/// tables' plans hardly depend on their size.
pub const MIN_CHANGES: f64 = 1000.0;

/// Whether the statistics of a table are stale: they describe `analyzed_rows` rows (negative
/// when it was never analyzed) and `changed` rows were inserted, updated or deleted since.
pub fn is_stale(analyzed_rows: f64, changed: i64) -> bool {
    changed as f64 >= analyzed_rows.max(0.0) + MIN_CHANGES
}

/// Analyzes each table of the database whose statistics are stale ([`is_stale`]) and returns
/// their names (`schema.table`). A table another session is analyzing or vacuuming is skipped.
/// On SQLite (whose planner needs no statistics for these lookups) it does nothing.
pub async fn analyze_stale_tables(db: &DatabaseConnection) -> Result<Vec<String>, DbErr> {
    if db.get_database_backend() != DatabaseBackend::Postgres {
        return Ok(Vec::new());
    }
    let tables = db
        .query_all_raw(Statement::from_string(
            DatabaseBackend::Postgres,
            "SELECT s.schemaname, s.relname, c.reltuples::float8 AS analyzed_rows, \
             s.n_mod_since_analyze AS changed \
             FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid",
        ))
        .await?;
    let mut analyzed = Vec::new();
    for table in tables {
        let schema: String = table.try_get("", "schemaname")?;
        let name: String = table.try_get("", "relname")?;
        let analyzed_rows: f64 = table.try_get("", "analyzed_rows")?;
        let changed: i64 = table.try_get("", "changed")?;
        if !is_stale(analyzed_rows, changed) {
            continue;
        }
        db.execute_unprepared(&format!(
            "ANALYZE (SKIP_LOCKED) {}.{}",
            quoted(&schema),
            quoted(&name)
        ))
        .await?;
        analyzed.push(format!("{schema}.{name}"));
    }
    Ok(analyzed)
}

/// Checks and analyzes every [`CHECK_INTERVAL`] until `shutdown` (PostgreSQL only: it returns
/// at once on SQLite). A failed check is logged and retried at the next one.
pub async fn keep_fresh(
    service: &'static str,
    db: DatabaseConnection,
    shutdown: CancellationToken,
) {
    if db.get_database_backend() != DatabaseBackend::Postgres {
        return;
    }
    let mut checks = tokio::time::interval(CHECK_INTERVAL);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = checks.tick() => {}
        }
        match analyze_stale_tables(&db).await {
            Ok(tables) if !tables.is_empty() => {
                tracing::debug!(
                    service,
                    ?tables,
                    "analyzed tables whose statistics were stale"
                );
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(service, error = %err, "refreshing table statistics failed"),
        }
    }
}

/// `name` as a PostgreSQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use leadflow_test_support::{Backend, TestDb};
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_table_never_analyzed_is_stale_once_it_holds_more_than_a_few_rows() {
        assert!(!is_stale(-1.0, 10));
        assert!(is_stale(-1.0, 1000));
    }

    #[test]
    fn a_table_is_stale_once_it_changed_more_than_its_statistics_describe() {
        assert!(!is_stale(50_000.0, 40_000));
        assert!(is_stale(50_000.0, 51_000));
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quoted(r#"we"ird"#), r#""we""ird""#);
    }

    proptest! {
        /// More changes never make stale statistics fresh.
        #[test]
        fn staleness_grows_with_changes(rows in -1.0f64..1e7, changed in 0i64..10_000_000, more in 0i64..1000) {
            prop_assert!(!is_stale(rows, changed) || is_stale(rows, changed + more));
        }
    }

    #[tokio::test]
    async fn a_grown_table_is_analyzed_once_on_postgres() {
        let Some(test_db) = TestDb::new(Backend::Postgres).await else {
            return;
        };
        let db = crate::db::connect(&test_db.url, 2).await.expect("connect");
        // The inserting session reports its changes when it goes idle, before it answers.
        db.execute_unprepared(
            "CREATE TABLE grown (id bigint PRIMARY KEY); \
             INSERT INTO grown SELECT generate_series(1, 5000); \
             SELECT pg_stat_force_next_flush();",
        )
        .await
        .expect("fill a table");

        let analyzed = analyze_stale_tables(&db).await.expect("analyze");
        assert_eq!(analyzed, vec!["public.grown".to_owned()]);
        let rows = db
            .query_one_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                "SELECT reltuples::float8 AS rows FROM pg_class WHERE relname = 'grown'",
            ))
            .await
            .expect("read the statistics")
            .expect("the table is in the catalog");
        assert_eq!(
            rows.try_get::<f64>("", "rows").expect("a row count"),
            5000.0
        );

        let again = analyze_stale_tables(&db).await.expect("check again");
        assert!(
            again.is_empty(),
            "fresh statistics analyzed again: {again:?}"
        );
        db.close().await.expect("close");
    }

    #[tokio::test]
    async fn sqlite_needs_no_statistics() {
        let test_db = TestDb::sqlite("statistics");
        let db = crate::db::connect(&test_db.url, 1).await.expect("connect");
        assert!(analyze_stale_tables(&db).await.expect("check").is_empty());
    }
}
