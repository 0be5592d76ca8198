//! Checkpoints of an SQLite store's write-ahead log, copied into the database file from a
//! connection of their own, so the service's one writer does not copy them itself.
//!
//! Every commit appends the pages it changed to the WAL; a checkpoint copies them back into the
//! database file. Left to SQLite, the commit that takes the WAL past `wal_autocheckpoint` pages
//! copies all of them, on the writer's connection, while every write behind it waits: about a
//! sixth of a busy writer's time in the benchmark's profiles, and ingestion's writer bounds both
//! `Batch` and `Track`. Here a task copies them in steps of [`STEP_FRAMES`], with `PASSIVE`
//! checkpoints, which neither wait for nor block the writer or the readers. The writer keeps its
//! own checkpoint as the backstop: SQLite starts the WAL over from its beginning only when a
//! write transaction begins with every frame copied, which only the writer can see, so the
//! commit that crosses the threshold copies what the last step left (a fraction of the WAL) and
//! lets the next transaction start the WAL over.

use std::time::Duration;

use sea_orm::sqlx::{self, Connection, Row, SqliteConnection};
use sea_orm::{DatabaseBackend, DatabaseConnection};
use tokio_util::sync::CancellationToken;

/// WAL frames (pages) left uncopied before a step copies them: an eighth of the writer's
/// threshold (`wal_autocheckpoint`). A page that changes on every commit is copied once per step,
/// so smaller steps write more; larger ones leave more for the writer's own checkpoint.
pub const STEP_FRAMES: i64 = 4000;

/// How soon the WAL is looked at again after it grew, and after it did not.
pub const POLL_WHILE_WRITTEN: Duration = Duration::from_millis(20);
/// See [`POLL_WHILE_WRITTEN`]: an idle store is looked at a few times a second.
pub const POLL_WHILE_IDLE: Duration = Duration::from_millis(250);

/// The WAL as `PRAGMA wal_checkpoint` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalFrames {
    /// Frames in the WAL since it last started over.
    pub written: i64,
    /// How many of them are in the database file.
    pub copied: i64,
}

impl WalFrames {
    /// Whether enough frames wait to be copied for a step.
    pub fn step_is_due(self) -> bool {
        self.written - self.copied >= STEP_FRAMES
    }

    /// When to look at the WAL again, given how it looked the time before.
    pub fn next_poll(self, before: Option<WalFrames>) -> Duration {
        if before.is_some_and(|before| before.written == self.written) {
            POLL_WHILE_IDLE
        } else {
            POLL_WHILE_WRITTEN
        }
    }
}

/// Copies the WAL of `db` (the writer's pool of an SQLite file) in steps until `shutdown`; it
/// returns at once for PostgreSQL and for an SQLite store without a WAL (in memory). A failed
/// step is logged and tried again; if the connection cannot be opened, the writer's own
/// checkpoints do the work, as they would without this task.
pub async fn keep_copying(
    service: &'static str,
    db: DatabaseConnection,
    shutdown: CancellationToken,
) {
    if db.get_database_backend() != DatabaseBackend::Sqlite {
        return;
    }
    let mut conn = match open_beside(&db).await {
        Ok(conn) => conn,
        Err(err) => {
            tracing::warn!(service, error = %err, "cannot open a connection for wal checkpoints");
            return;
        }
    };
    let mut before = None;
    loop {
        let wait = match copy_if_due(&mut conn).await {
            Ok(None) => break,
            Ok(Some(wal)) => {
                let wait = wal.next_poll(before);
                before = Some(wal);
                wait
            }
            Err(err) => {
                tracing::warn!(service, error = %err, "wal checkpoint failed");
                POLL_WHILE_IDLE
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
    }
    if let Err(err) = conn.close().await {
        tracing::debug!(service, error = %err, "closing the checkpoint connection failed");
    }
}

/// The page cache of the checkpoint connection, in KiB when negative: a checkpoint copies
/// frames through a buffer of its own, and the connection reads only the schema's pages. With
/// the writer's 24 MiB the suite's peak RSS at a million activities was ~50 MiB higher
/// (BENCHMARKS.md, twenty-eighth session).
const CACHE_SIZE: &str = "-64";

/// A connection to the same SQLite file as the writer's pool `db`, with its settings but a
/// page cache of a few pages ([`CACHE_SIZE`]).
pub async fn open_beside(db: &DatabaseConnection) -> Result<SqliteConnection, sqlx::Error> {
    let options = (*db.get_sqlite_connection_pool().connect_options())
        .clone()
        .pragma("cache_size", CACHE_SIZE);
    SqliteConnection::connect_with(&options).await
}

/// Looks at the WAL and, if a step is due, copies it. Returns the WAL as it was before the step
/// (so growth is seen from one look to the next), or `None` when the store has no WAL.
pub async fn copy_if_due(conn: &mut SqliteConnection) -> Result<Option<WalFrames>, sqlx::Error> {
    let Some(wal) = checkpoint(conn, Mode::Look).await? else {
        return Ok(None);
    };
    if wal.step_is_due() {
        let copied = checkpoint(conn, Mode::Copy).await?;
        tracing::trace!(?wal, ?copied, "copied wal frames");
    }
    Ok(Some(wal))
}

/// What `PRAGMA wal_checkpoint` is asked to do.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Report the WAL, copy nothing (`NOOP`, SQLite 3.51).
    Look,
    /// Copy what no reader still needs from the WAL, without waiting (`PASSIVE`).
    Copy,
}

/// Runs `PRAGMA wal_checkpoint` and reads its report, `None` when the store has no WAL.
async fn checkpoint(
    conn: &mut SqliteConnection,
    mode: Mode,
) -> Result<Option<WalFrames>, sqlx::Error> {
    let sql = match mode {
        Mode::Look => "PRAGMA wal_checkpoint(NOOP)",
        Mode::Copy => "PRAGMA wal_checkpoint(PASSIVE)",
    };
    let row = sqlx::query(sql).fetch_one(&mut *conn).await?;
    let written: i64 = row.try_get(1)?;
    let copied: i64 = row.try_get(2)?;
    Ok((written >= 0).then_some(WalFrames { written, copied }))
}

#[cfg(test)]
mod tests {
    use leadflow_test_support::{Backend, TestDb};
    use proptest::prelude::*;
    use sea_orm::ConnectionTrait;

    use super::*;
    use crate::db::connect;

    #[test]
    fn a_step_is_due_once_enough_frames_wait() {
        let wal = |written, copied| WalFrames { written, copied };
        assert!(!wal(STEP_FRAMES - 1, 0).step_is_due());
        assert!(wal(STEP_FRAMES, 0).step_is_due());
        assert!(!wal(STEP_FRAMES + 10, 11).step_is_due());
        assert!(wal(3 * STEP_FRAMES, STEP_FRAMES).step_is_due());
    }

    proptest! {
        #[test]
        fn the_wal_is_looked_at_often_only_while_it_is_written(
            written in 0i64..100_000,
            later in 0i64..100_000,
        ) {
            let now = WalFrames { written, copied: 0 };
            let same = WalFrames { written, copied: written };
            prop_assert_eq!(now.next_poll(None), POLL_WHILE_WRITTEN);
            prop_assert_eq!(now.next_poll(Some(same)), POLL_WHILE_IDLE);
            let other = WalFrames { written: later, copied: 0 };
            let expected = if later == written { POLL_WHILE_IDLE } else { POLL_WHILE_WRITTEN };
            prop_assert_eq!(now.next_poll(Some(other)), expected);
        }
    }

    /// Writes `pages` pages of fresh rows in one commit.
    async fn write_pages(db: &DatabaseConnection, pages: usize) {
        db.execute_unprepared(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {pages}) \
             INSERT INTO filler (body) SELECT randomblob(3500) FROM n"
        ))
        .await
        .expect("write the pages");
    }

    async fn look(conn: &mut SqliteConnection) -> WalFrames {
        checkpoint(conn, Mode::Look)
            .await
            .expect("look at the wal")
            .expect("a wal")
    }

    /// The task's steps copy the WAL once enough of it waits, and the writer's next commit past
    /// its own threshold starts the WAL over: the WAL stays bounded with most of its copying
    /// done beside the writer.
    #[tokio::test]
    async fn steps_copy_the_wal_and_the_writer_still_starts_it_over() {
        let file = TestDb::sqlite("checkpoints");
        let db = connect(&file.url, 1).await.expect("connect");
        db.execute_unprepared("CREATE TABLE filler (id integer PRIMARY KEY, body blob)")
            .await
            .expect("a table");
        let mut conn = open_beside(&db)
            .await
            .expect("a connection beside the writer");
        let cache: i64 = sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(&mut conn)
            .await
            .expect("the cache size");
        assert_eq!(
            cache.to_string(),
            CACHE_SIZE,
            "a small cache beside the writer"
        );

        write_pages(&db, 100).await;
        let small = copy_if_due(&mut conn).await.expect("look").expect("a wal");
        assert!(small.written > 100, "{small:?}");
        assert_eq!(look(&mut conn).await.copied, 0, "a small wal waits");

        write_pages(&db, STEP_FRAMES as usize).await;
        let due = copy_if_due(&mut conn).await.expect("step").expect("a wal");
        assert!(due.step_is_due(), "{due:?}");
        let after = look(&mut conn).await;
        assert_eq!(
            after,
            WalFrames {
                written: due.written,
                copied: due.written
            }
        );

        let threshold: i64 = crate::db::SQLITE_WAL_AUTOCHECKPOINT
            .parse()
            .expect("a number");
        let mut most = after.written;
        for _ in 0..threshold / STEP_FRAMES + 1 {
            write_pages(&db, STEP_FRAMES as usize).await;
            copy_if_due(&mut conn).await.expect("step");
            most = most.max(look(&mut conn).await.written);
        }
        let end = look(&mut conn).await;
        assert!(
            end.written < most && most < threshold + 2 * STEP_FRAMES,
            "the wal started over: {end:?}, at most {most} frames"
        );
    }

    /// Nothing to copy beside a PostgreSQL store or an in-memory SQLite one: the task ends.
    #[tokio::test]
    async fn without_a_wal_the_task_ends_at_once() {
        let memory = connect("sqlite::memory:", 1).await.expect("connect");
        keep_copying("test", memory, CancellationToken::new()).await;
        if let Some(pg) = TestDb::new(Backend::Postgres).await {
            let db = connect(&pg.url, 2).await.expect("connect");
            keep_copying("test", db, CancellationToken::new()).await;
        }
    }

    /// The task stops when asked.
    #[tokio::test]
    async fn the_task_stops_on_shutdown() {
        let file = TestDb::sqlite("checkpoint-stop");
        let db = connect(&file.url, 1).await.expect("connect");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(keep_copying("test", db, shutdown.clone()));
        shutdown.cancel();
        task.await.expect("the task ends");
    }
}
