//! Database connection and migrations: SQLite (a file, WAL) for laptops and tests, PostgreSQL in
//! production. Every service connects through [`connect`] and migrates through [`migrate`].

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{
    AccessMode, ConnectOptions, ConnectionTrait, Database, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, DbErr, IsolationLevel, Statement, TransactionTrait,
};
use sea_orm_migration::{MigratorTrait, SchemaManager};

/// Lock key under which PostgreSQL migrations run, so pods starting together take turns.
const MIGRATION_LOCK_KEY: i64 = 0x6c65_6164_666c_6f77; // "leadflow"

/// SQLite's page cache of the writer connection, in KiB when negative (SQLite's own
/// convention): 24 MiB instead of SQLite's 2 MiB default, so a service's working set (its
/// leads' pages, the outbox head and their indexes) stays in memory once a store outgrows a few
/// thousand leads. (32 MiB per writer put the suite over its memory target at a million
/// activities; the pages it no longer caches are in the operating system's file cache.)
const SQLITE_CACHE_SIZE: &str = "-24576";

/// Pages the SQLite WAL may hold before a commit copies them back into the database file
/// (SQLite's default is 1,000). A checkpoint writes each page once however often it changed
/// since the last one, and the hot pages (index interiors, the outbox head, busy leads) change
/// on every commit: a longer interval copies them far fewer times, and the writer that commits
/// stalls on a checkpoint's copy and `fsync` less often. 128 MiB of WAL at 4 KiB pages. From
/// 16 MiB to 64 MiB, alternating runs of 100,000 activities wrote 3.47 GB instead of 4.28 GB
/// for the ingest and drain, with 5% less CPU. A running service copies most of the WAL
/// beforehand from a connection of its own ([`crate::checkpoints`]), so the writer's checkpoint
/// is a backstop that copies what the last step left; from 64 MiB to 128 MiB it ran half as
/// often, with 6% fewer bytes written and `Batch` 7% faster at 200,000 activities (see
/// BENCHMARKS.md).
pub(crate) const SQLITE_WAL_AUTOCHECKPOINT: &str = "32000";

/// Prepared statements each read-only SQLite connection keeps (sqlx's default is 100): reads
/// are a handful of statements, `IN` lists padded to a dozen lengths ([`in_list`]).
const SQLITE_STATEMENT_CACHE: usize = 24;

/// Prepared statements the writer connection keeps. Its batched writes come in ten sizes per
/// table ([`chunked`]) and its `IN` lists in eleven ([`in_list`]), over a few tables each: room
/// for all of them, so none is compiled twice. Only the largest sizes are big programs (a
/// 512-row insert is a few thousand opcodes), and a table has one of each.
const SQLITE_WRITER_STATEMENT_CACHE: usize = 128;

/// Rows an SQLite connection's worker thread may queue for the task reading a result (sqlx's
/// default is 50). The worker blocks when the queue is full until the reader takes a row, so a
/// read of a few hundred rows (a rescore step's facts, a relay's batch) was a sleep and a wake of
/// the worker thread every few rows; with room for a whole batched read the worker runs it
/// through and the reader takes the rows as they come.
const SQLITE_ROW_BUFFER: usize = 4096;

/// Why the store could not be opened or migrated.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is neither `sqlite:` nor `postgres:`.
    #[error("unsupported database url scheme (expected sqlite: or postgres:)")]
    UnsupportedUrl,
    /// The SQLite file's folder could not be created.
    #[error("cannot create the database folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The database refused or failed.
    #[error(transparent)]
    Db(#[from] DbErr),
    /// The task opening the store on another runtime panicked or was stopped.
    #[error("opening the store stopped: {0}")]
    Stopped(#[from] tokio::task::JoinError),
}

/// Opens a connection pool for `url`.
///
/// SQLite (`sqlite://path/to/file.db`, or `sqlite::memory:`): the file and its folder are
/// created if missing; WAL journal, `synchronous=NORMAL` (durable across a process crash; the
/// last commits may be lost on power failure, the usual trade-off with WAL), foreign keys on, a
/// 5 s busy timeout, a 24 MiB page cache, and a single pooled connection so writers never race
/// (SQLite allows one writer at a time anyway). PostgreSQL (`postgres://…`): a pool of up to
/// `max_connections`.
/// SQL text is kept out of spans: it may carry personal data.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, DbError> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .record_stmt_in_spans(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30));
    if url.starts_with("sqlite:") {
        configure_sqlite();
        let sqlite = SqliteConnectOptions::from_str(url)
            .map_err(|err| DbErr::Custom(format!("invalid sqlite url: {err}")))?;
        let path = sqlite.get_filename();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir)?;
        }
        options
            .max_connections(1)
            .min_connections(1)
            .test_before_acquire(false)
            .map_sqlx_sqlite_opts(|opts| {
                opts.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5))
                    .pragma("cache_size", SQLITE_CACHE_SIZE)
                    .pragma("wal_autocheckpoint", SQLITE_WAL_AUTOCHECKPOINT)
                    .statement_cache_capacity(SQLITE_WRITER_STATEMENT_CACHE)
                    .row_buffer_size(SQLITE_ROW_BUFFER)
            });
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        options
            .max_connections(max_connections.max(2))
            .test_before_acquire_if_idle_for(POSTGRES_IDLE_PING);
    } else {
        return Err(DbError::UnsupportedUrl);
    }
    Ok(Database::connect(options).await?)
}

/// A pooled PostgreSQL connection idle this long is pinged before use (the server, a proxy or
/// a firewall may have dropped it); busy ones are not, which would cost a round trip per
/// statement. SQLite connections are never pinged: an open file does not go stale, and a ping
/// is a hop to the driver's worker thread and back.
const POSTGRES_IDLE_PING: Duration = Duration::from_secs(10);

/// Read-only SQLite connections a service keeps beside its single writer.
pub const SQLITE_READERS: u32 = 2;

/// The page cache of each read-only SQLite connection (KiB when negative): 2 MiB, SQLite's
/// default. In WAL mode a connection empties its cache when it begins a read after another
/// connection's commit, so while the service writes a reader's cache holds one read's pages
/// and the OS page cache serves the rest; a larger one only kept memory (four services now
/// read through readers, two connections each).
const SQLITE_READER_CACHE_SIZE: &str = "-2048";

/// Whether [`reader`] opens connections of its own for `url` (an SQLite file), which can read
/// while a transaction holds the writer's one connection; otherwise it is the writer's pool.
fn reads_beside_writer(url: &str) -> bool {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    url.starts_with("sqlite:") && !in_memory
}

/// A pool for the reads that need not see the caller's own open transaction (score lookups,
/// listings), beside `writer` (the pool [`connect`] opened for `url`). On an SQLite file these
/// are read-only connections, which WAL lets read while the writer writes, so reads never
/// queue behind a write transaction; on PostgreSQL, and for an in-memory SQLite database, it is
/// the writer's pool itself.
pub async fn reader(url: &str, writer: &DatabaseConnection) -> Result<DatabaseConnection, DbError> {
    if !reads_beside_writer(url) {
        return Ok(writer.clone());
    }
    configure_sqlite();
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .sqlx_logging(false)
        .record_stmt_in_spans(false)
        .connect_timeout(Duration::from_secs(10))
        .acquire_timeout(Duration::from_secs(30))
        .max_connections(SQLITE_READERS)
        .min_connections(1)
        .test_before_acquire(false)
        .map_sqlx_sqlite_opts(|opts| {
            opts.read_only(true)
                .busy_timeout(Duration::from_secs(5))
                .statement_cache_capacity(SQLITE_STATEMENT_CACHE)
                .pragma("cache_size", SQLITE_READER_CACHE_SIZE)
                .row_buffer_size(SQLITE_ROW_BUFFER)
        });
    Ok(Database::connect(options).await?)
}

/// Puts SQLite's page cache behind [`leadflow_sqlite_pcache`], which skips the whole-cache scan
/// SQLite's commits otherwise make after most B-tree rebalances. It must come before the
/// process's first SQLite connection; if something opened one earlier, SQLite keeps its plain
/// cache (slower commits, same results).
///
/// It also gives each SQLite connection a larger arena for its small allocations
/// ([`leadflow_sqlite_pcache::configure_memory`]), under the same condition.
fn configure_sqlite() {
    if let Err(refused) = leadflow_sqlite_pcache::configure_memory() {
        tracing::debug!(error = %refused, "sqlite keeps its default lookaside arena");
    }
    if let Err(refused) = leadflow_sqlite_pcache::install() {
        tracing::debug!(error = %refused, "sqlite keeps its own page cache");
    }
}

fn create_dir(dir: &Path) -> Result<(), DbError> {
    std::fs::create_dir_all(dir).map_err(|source| DbError::CreateDir {
        path: dir.display().to_string(),
        source,
    })
}

/// Runs the pending migrations of `M`.
///
/// On PostgreSQL they run in one transaction holding an advisory lock, so two replicas starting
/// at once apply them exactly once (the second waits, then finds nothing to do).
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DbError> {
    match db.get_database_backend() {
        DatabaseBackend::Postgres => {
            let txn = db.begin().await?;
            txn.execute_raw(Statement::from_string(
                DatabaseBackend::Postgres,
                format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"),
            ))
            .await?;
            M::up(&txn, None).await?;
            txn.commit().await?;
        }
        _ => M::up(db, None).await?,
    }
    Ok(())
}

/// Connects to `url` and runs the migrations of `M`.
pub async fn open<M: MigratorTrait>(
    url: &str,
    max_connections: u32,
) -> Result<DatabaseConnection, DbError> {
    let db = connect(url, max_connections).await?;
    migrate::<M>(&db).await?;
    Ok(db)
}

/// A service's store: the writer pool and the reader pool beside it ([`reader`]).
#[derive(Debug, Clone)]
pub struct Pools {
    /// Every write, and the reads that must see the caller's own transaction.
    pub writer: DatabaseConnection,
    /// The reads that need not.
    pub reader: DatabaseConnection,
    /// Whether `reader` has connections of its own (an SQLite file), which read while a
    /// transaction holds the writer's one connection; otherwise it is the writer's pool, and a
    /// read on it while the caller holds a transaction of that pool waits for that transaction.
    pub reads_beside_writer: bool,
}

impl Pools {
    /// Closes both pools, waiting for connections in use to come back: the reader first, so
    /// that on an SQLite file the writer's connection is the last one and copies the
    /// write-ahead log back into the database and removes it (a read-only connection cannot).
    pub async fn close(self) -> Result<(), DbErr> {
        if self.reads_beside_writer {
            self.reader.close().await?;
        }
        self.writer.close().await
    }
}

/// [`open`], then the [`reader`] beside it: how every service opens its store.
pub async fn open_with_reader<M: MigratorTrait>(
    url: &str,
    max_connections: u32,
) -> Result<Pools, DbError> {
    let writer = open::<M>(url, max_connections).await?;
    let reader = reader(url, &writer).await?;
    Ok(Pools {
        writer,
        reader,
        reads_beside_writer: reads_beside_writer(url),
    })
}

/// [`open_with_reader`] run on `runtime`: the pools' first connections and their upkeep tasks
/// start there, so on the drain's [`crate::background`] runtime each SQLite connection's
/// worker thread runs at that runtime's lower priority.
pub async fn open_on<M: MigratorTrait>(
    runtime: &tokio::runtime::Handle,
    url: &str,
    max_connections: u32,
) -> Result<Pools, DbError> {
    let url = url.to_owned();
    runtime
        .spawn(async move { open_with_reader::<M>(&url, max_connections).await })
        .await?
}

/// Rebuilds the SQLite table `table` as a `WITHOUT ROWID` table, keeping its rows, columns and
/// indexes; does nothing on PostgreSQL or when it already is one. A rowid table with a text
/// primary key keeps two btrees, the rows by rowid and an index from the key to the rowid, so
/// every insert writes both; without a rowid the rows live in the key's btree alone. For tables
/// of small rows looked up only by their key (message ids applied, requests answered). Run it
/// in a migration that uses a transaction, so a crash halfway leaves the old table whole.
pub async fn rebuild_without_rowid(manager: &SchemaManager<'_>, table: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() != DatabaseBackend::Sqlite {
        return Ok(());
    }
    let db = manager.get_connection();
    let schema =
        |sql: &str| Statement::from_sql_and_values(DatabaseBackend::Sqlite, sql, [table.into()]);
    let create: String = db
        .query_one_raw(schema(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
        ))
        .await?
        .ok_or_else(|| DbErr::Custom(format!("no table {table} to rebuild")))?
        .try_get_by_index(0)?;
    if create
        .trim_end()
        .to_ascii_uppercase()
        .ends_with("WITHOUT ROWID")
    {
        return Ok(());
    }
    let indexes: Vec<String> = db
        .query_all_raw(schema(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL",
        ))
        .await?
        .iter()
        .map(|row| row.try_get_by_index(0))
        .collect::<Result<_, _>>()?;
    let rebuilt = format!("{table}_without_rowid");
    let named = format!("CREATE TABLE \"{table}\"");
    let body = create
        .strip_prefix(&named)
        .ok_or_else(|| DbErr::Custom(format!("unexpected definition of {table}: {create}")))?;
    db.execute_unprepared(&format!(
        "CREATE TABLE \"{rebuilt}\"{body} WITHOUT ROWID;
         INSERT INTO \"{rebuilt}\" SELECT * FROM \"{table}\";
         DROP TABLE \"{table}\";
         ALTER TABLE \"{rebuilt}\" RENAME TO \"{table}\";"
    ))
    .await?;
    for index in indexes {
        db.execute_unprepared(&index).await?;
    }
    Ok(())
}

/// Most rows in one multi-row `INSERT`, or values in one `IN (…)` list, that the services
/// send: well under SQLite's (32,766) and PostgreSQL's (65,535) bound-parameter limits for
/// tables of up to a dozen columns.
pub const MAX_ROWS_PER_STATEMENT: usize = 1000;

/// Most rows one multi-row write of [`chunked`] holds: the largest power of two within
/// [`MAX_ROWS_PER_STATEMENT`].
pub const MAX_ROWS_PER_WRITE: usize = 512;

/// `rows` in order, in groups of one multi-row statement each, for `backend`. On SQLite the
/// groups' sizes are powers of two (largest first, at most [`MAX_ROWS_PER_WRITE`]): a
/// statement's text depends on its number of rows, so writing each batch as one statement of
/// its exact size made nearly every batched write a statement never seen before, parsed and
/// planned anew (6% of the CPU of a busy suite); in these sizes a batch of any length takes at
/// most ten statements of ten shapes per table, which the connection's statement cache keeps
/// prepared. On PostgreSQL every statement is a round trip to the server, which is what bounds
/// its writers, so a batch goes in as few statements as the parameter limit allows
/// ([`MAX_ROWS_PER_STATEMENT`] rows each).
pub fn chunked<T>(backend: DatabaseBackend, rows: Vec<T>) -> Vec<Vec<T>> {
    let mut chunks = Vec::new();
    let mut rows = rows.into_iter();
    loop {
        let left = rows.len();
        if left == 0 {
            return chunks;
        }
        let size = match backend {
            DatabaseBackend::Postgres => left.min(MAX_ROWS_PER_STATEMENT),
            _ => (1usize << left.ilog2()).min(MAX_ROWS_PER_WRITE),
        };
        chunks.push(rows.by_ref().take(size).collect());
    }
}

/// The values of an `IN (…)` list of `values` (at most [`MAX_ROWS_PER_STATEMENT`]), the last
/// one repeated up to the next power of two: lists of any length then share a dozen statement
/// shapes, which the driver's per-connection statement cache keeps prepared, instead of one
/// shape per length (a prepare each time a new length evicts an old one). A repeated value in
/// an `IN` list matches nothing twice.
pub fn in_list<T: Clone>(values: &[T]) -> impl Iterator<Item = T> + '_ {
    let len = values
        .len()
        .next_power_of_two()
        .min(MAX_ROWS_PER_STATEMENT)
        .max(values.len());
    let padding = values.last().map_or(0, |_| len - values.len());
    values
        .iter()
        .cloned()
        .chain(values.last().cloned().into_iter().cycle().take(padding))
}

/// True when `db` is PostgreSQL (row locking and advisory locks are available).
pub fn is_postgres(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == DatabaseBackend::Postgres
}

/// Begins a read-only transaction in which every read sees the same committed state: REPEATABLE
/// READ on PostgreSQL (its default takes a fresh snapshot per statement); on SQLite every
/// transaction already reads one snapshot of the WAL. Dropping it ends it.
pub async fn begin_snapshot(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    if is_postgres(db) {
        db.begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await
    } else {
        db.begin().await
    }
}

/// Whether the store answers a trivial query.
pub async fn ping(db: &impl ConnectionTrait) -> bool {
    db.execute_unprepared("SELECT 1").await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Only an SQLite file gets read-only connections of its own beside the writer.
    #[test]
    fn only_an_sqlite_file_reads_beside_the_writer() {
        assert!(reads_beside_writer("sqlite:///data/scoring.db?mode=rwc"));
        assert!(!reads_beside_writer("sqlite::memory:"));
        assert!(!reads_beside_writer("sqlite://file.db?mode=memory"));
        assert!(!reads_beside_writer("postgres://postgres@127.0.0.1/test"));
    }

    /// The build's SQLite is compiled as `.cargo/config.toml` says: without memory statistics
    /// (with them every SQLite allocation takes one process-wide lock), and with plans that never
    /// depend on bound values (without it a statement with `LIMIT ?` is compiled again on every
    /// run), with statement journals in one 4 MiB buffer and page caches that take their first
    /// 512 pages in one allocation (both instead of a malloc per page or less).
    #[tokio::test]
    async fn sqlite_is_built_with_the_documented_options() {
        let file = leadflow_test_support::TestDb::sqlite("options");
        let db = connect(&file.url, 1).await.expect("connect");
        let options: Vec<String> = db
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Sqlite,
                "PRAGMA compile_options",
            ))
            .await
            .expect("read the compile options")
            .iter()
            .map(|row| row.try_get_by_index::<String>(0).expect("an option"))
            .collect();
        for expected in [
            "DEFAULT_MEMSTATUS=0",
            "ENABLE_QPSG",
            "STMTJRNL_SPILL=4194304",
            "DEFAULT_PCACHE_INITSZ=512",
            "TEMP_STORE=1",
        ] {
            assert!(
                options.iter().any(|o| o == expected),
                "{expected} missing: sqlite compiled with {options:?}"
            );
        }
    }

    /// The writer's commits skip the page cache scan that SQLite's B-tree rebalancing would
    /// otherwise force (the wrapper is in place), and the data stays whole through what moves
    /// pages around: random keys (pages split and renumbered), rolled-back savepoints (pages
    /// past the end of the database dropped), deletes (pages freed and reused).
    #[tokio::test]
    async fn commits_skip_needless_page_cache_scans_and_keep_every_row() {
        let file = leadflow_test_support::TestDb::sqlite("page_cache");
        let db = connect(&file.url, 1).await.expect("connect");
        let before = leadflow_sqlite_pcache::truncations();
        db.execute_unprepared("CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
            .await
            .expect("create the table");
        let insert = |rows: usize| {
            let values = (0..rows)
                .map(|_| format!("('{}', randomblob(300))", uuid::Uuid::new_v4()))
                .collect::<Vec<_>>()
                .join(", ");
            format!("INSERT INTO t (k, v) VALUES {values}")
        };
        let mut kept: u64 = 0;
        for round in 0..30 {
            let txn = db.begin().await.expect("begin");
            txn.execute_unprepared(&insert(60)).await.expect("insert");
            let undone = txn.begin().await.expect("savepoint");
            undone
                .execute_unprepared(&insert(200))
                .await
                .expect("insert");
            undone.rollback().await.expect("roll the savepoint back");
            let deleted = if round % 3 == 2 {
                txn.execute_unprepared("DELETE FROM t WHERE k < '4'")
                    .await
                    .expect("delete")
                    .rows_affected()
            } else {
                0
            };
            txn.commit().await.expect("commit");
            kept = kept + 60 - deleted;
        }
        let after = leadflow_sqlite_pcache::truncations();
        assert!(
            after.skipped > before.skipped,
            "no truncation skipped: {before:?} then {after:?}"
        );
        let one = |sql: &'static str| {
            let db = db.clone();
            async move {
                db.query_one_raw(Statement::from_string(DatabaseBackend::Sqlite, sql))
                    .await
                    .expect("query")
                    .expect("a row")
            }
        };
        let check: String = one("PRAGMA integrity_check")
            .await
            .try_get_by_index(0)
            .expect("text");
        assert_eq!(check, "ok");
        let rows: i64 = one("SELECT count(*) FROM t")
            .await
            .try_get_by_index(0)
            .expect("count");
        assert_eq!(rows as u64, kept);
    }

    /// The writer connection runs with the settings documented above: WAL, `synchronous=NORMAL`,
    /// its page cache, its checkpoint interval and the default temporary store.
    #[tokio::test]
    async fn the_sqlite_writer_runs_with_its_documented_pragmas() {
        let file = leadflow_test_support::TestDb::sqlite("pragmas");
        let db = connect(&file.url, 1).await.expect("connect");
        let pragma = |name: &'static str| {
            let db = &db;
            async move {
                db.query_one_raw(Statement::from_string(
                    DatabaseBackend::Sqlite,
                    format!("PRAGMA {name}"),
                ))
                .await
                .expect("read the pragma")
                .expect("a value")
            }
        };
        let number = |text: &str| text.parse::<i64>().expect("a number");
        let journal_mode: String = pragma("journal_mode")
            .await
            .try_get_by_index(0)
            .expect("text");
        assert_eq!(journal_mode, "wal");
        let mut settings = Vec::new();
        for name in [
            "synchronous",
            "cache_size",
            "wal_autocheckpoint",
            "temp_store",
        ] {
            settings.push(
                pragma(name)
                    .await
                    .try_get_by_index::<i64>(0)
                    .expect("a number"),
            );
        }
        assert_eq!(
            settings,
            [
                1,
                number(SQLITE_CACHE_SIZE),
                number(SQLITE_WAL_AUTOCHECKPOINT),
                // The build's default (files): `memory` would grow statement journals in 1 KiB
                // chunks instead of one buffer (see `.cargo/config.toml`).
                0
            ]
        );
    }

    /// A snapshot sees the store as at its first read, on both backends: a commit after that is
    /// not seen until the next snapshot. Reads of several queries that must agree rely on it.
    async fn a_snapshot_does_not_see_later_commits(db: leadflow_test_support::TestDb) {
        let writer = connect(&db.url, 2).await.expect("connect");
        writer
            .execute_unprepared("CREATE TABLE seen (x integer); INSERT INTO seen VALUES (1)")
            .await
            .expect("a table");
        let readers = reader(&db.url, &writer).await.expect("the readers");
        let snapshot = begin_snapshot(&readers).await.expect("a snapshot");
        assert_eq!(count(&snapshot).await, 1);
        writer
            .execute_unprepared("INSERT INTO seen VALUES (2)")
            .await
            .expect("a later commit");
        assert_eq!(count(&snapshot).await, 1, "the snapshot's view holds");
        snapshot.commit().await.expect("end the snapshot");
        let next = begin_snapshot(&readers).await.expect("a snapshot");
        assert_eq!(count(&next).await, 2, "the next snapshot sees the commit");
    }

    leadflow_test_support::on_both_backends! {
        snapshots => a_snapshot_does_not_see_later_commits;
    }

    async fn count(conn: &DatabaseTransaction) -> i64 {
        let query = Statement::from_string(
            conn.get_database_backend(),
            "SELECT CAST(COUNT(*) AS bigint) AS n FROM seen",
        );
        conn.query_one_raw(query)
            .await
            .expect("count")
            .expect("a row")
            .try_get::<i64>("", "n")
            .expect("a number")
    }

    /// A result larger than the rows a connection's worker may queue comes back whole and in
    /// order, from the writer and from a reader: a full queue makes the worker wait, it never
    /// drops a row.
    #[tokio::test]
    async fn a_result_larger_than_the_row_buffer_comes_back_whole() {
        let file = leadflow_test_support::TestDb::sqlite("rows");
        let writer = connect(&file.url, 1).await.expect("connect");
        let count = SQLITE_ROW_BUFFER * 2 + 7;
        let query = format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {count}) \
             SELECT i FROM n ORDER BY i"
        );
        let readers = reader(&file.url, &writer).await.expect("open the readers");
        for db in [&writer, &readers] {
            let rows: Vec<i64> = db
                .query_all_raw(Statement::from_string(DatabaseBackend::Sqlite, &query))
                .await
                .expect("read")
                .iter()
                .map(|row| row.try_get_by_index::<i64>(0).expect("a number"))
                .collect();
            assert_eq!(rows.len(), count);
            assert!(rows.iter().zip(1..).all(|(row, n)| *row == n));
        }
    }

    #[tokio::test]
    async fn a_table_rebuilt_without_rowid_keeps_its_rows_columns_and_indexes() {
        let file = leadflow_test_support::TestDb::sqlite("rebuild");
        let db = connect(&file.url, 1).await.expect("connect");
        db.execute_unprepared(
            r#"CREATE TABLE "applied" ("id" varchar NOT NULL PRIMARY KEY, "tenant" varchar NOT NULL, "at" integer NULL);
               CREATE INDEX "applied_tenant" ON "applied" ("tenant", "at");
               INSERT INTO "applied" VALUES ('b', 't1', 2), ('a', 't2', NULL), ('c', 't1', 1);"#,
        )
        .await
        .expect("the rowid table");
        let manager = SchemaManager::new(&db);

        rebuild_without_rowid(&manager, "applied")
            .await
            .expect("rebuild");
        rebuild_without_rowid(&manager, "applied")
            .await
            .expect("a second time does nothing");

        assert!(
            leadflow_test_support::sqlite_schema_sql(&db, "applied")
                .await
                .ends_with("WITHOUT ROWID")
        );
        assert!(
            leadflow_test_support::sqlite_schema_sql(&db, "applied_tenant")
                .await
                .contains(r#"("tenant", "at")"#)
        );
        let rows: Vec<(String, String, Option<i64>)> = db
            .query_all_raw(Statement::from_string(
                DatabaseBackend::Sqlite,
                r#"SELECT "id", "tenant", "at" FROM "applied" ORDER BY "id""#,
            ))
            .await
            .expect("read back")
            .iter()
            .map(|row| {
                (
                    row.try_get_by_index(0).expect("id"),
                    row.try_get_by_index(1).expect("tenant"),
                    row.try_get_by_index(2).expect("at"),
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("a".to_owned(), "t2".to_owned(), None),
                ("b".to_owned(), "t1".to_owned(), Some(2)),
                ("c".to_owned(), "t1".to_owned(), Some(1)),
            ]
        );
        let duplicate = db
            .execute_unprepared(r#"INSERT INTO "applied" VALUES ('a', 't3', 3)"#)
            .await;
        assert!(duplicate.is_err(), "the key still rejects duplicates");
    }

    #[tokio::test]
    async fn rebuilding_a_missing_table_is_an_error() {
        let file = leadflow_test_support::TestDb::sqlite("missing");
        let db = connect(&file.url, 1).await.expect("connect");
        let err = rebuild_without_rowid(&SchemaManager::new(&db), "nowhere")
            .await
            .expect_err("nothing to rebuild");
        assert!(err.to_string().contains("no table nowhere"), "{err}");
    }

    proptest! {
        #[test]
        fn sqlite_chunks_keep_every_row_in_order_in_power_of_two_sizes(len in 0usize..3000) {
            let rows: Vec<usize> = (0..len).collect();
            let chunks = chunked(DatabaseBackend::Sqlite, rows.clone());
            prop_assert_eq!(chunks.concat(), rows);
            for chunk in &chunks {
                prop_assert!(chunk.len().is_power_of_two() && chunk.len() <= MAX_ROWS_PER_WRITE);
            }
            prop_assert!(chunks.windows(2).all(|w| w[0].len() >= w[1].len()), "largest first");
            prop_assert!(chunks.len() <= len / MAX_ROWS_PER_WRITE + MAX_ROWS_PER_WRITE.ilog2() as usize);
        }

        #[test]
        fn postgres_chunks_are_as_few_as_the_parameter_limit_allows(len in 0usize..3000) {
            let rows: Vec<usize> = (0..len).collect();
            let chunks = chunked(DatabaseBackend::Postgres, rows.clone());
            prop_assert_eq!(chunks.concat(), rows);
            prop_assert_eq!(chunks.len(), len.div_ceil(MAX_ROWS_PER_STATEMENT));
        }

        #[test]
        fn an_in_list_keeps_every_value_in_order_and_pads_with_the_last(
            values in proptest::collection::vec(0u32..50, 0..=MAX_ROWS_PER_STATEMENT),
        ) {
            let list: Vec<u32> = in_list(&values).collect();
            prop_assert_eq!(&list[..values.len()], &values[..]);
            prop_assert!(list[values.len()..].iter().all(|v| Some(v) == values.last()));
            if values.is_empty() {
                prop_assert!(list.is_empty());
            } else {
                prop_assert!(list.len().is_power_of_two() || list.len() == MAX_ROWS_PER_STATEMENT);
                prop_assert!(list.len() < 2 * values.len());
            }
        }
    }
}
