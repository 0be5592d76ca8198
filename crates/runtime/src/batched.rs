//! A transaction that sends its statements in as few trips to the database as the backend
//! allows. On SQLite each statement is a trip to the connection's worker thread and back, and
//! each trip waits to be scheduled twice (~100 µs with the other core busy downstream):
//! ingestion's group commit (`BEGIN`, four reads, its writes, `COMMIT`) made seven, most of a
//! lone `Track`'s latency.
//! A [`BatchedTransaction`] on SQLite holds its connection for its whole life and sends `BEGIN`
//! with the first reads, the writes queued before a round of reads with those reads, and
//! `COMMIT` with the last writes: one trip per round of reads, plus one. On PostgreSQL it is a
//! plain transaction, one statement after another.

use std::future::Future;
use std::sync::Arc;

use futures::TryStreamExt;
use sea_orm::sqlx::pool::PoolConnection;
use sea_orm::sqlx::{self, AssertSqlSafe, Either, Executor, Sqlite};
use sea_orm::{
    ConnectionTrait, DatabaseBackend, DatabaseConnection, DatabaseTransaction, DbErr,
    FromQueryResult, QueryResult, RuntimeErr, Statement, TransactionTrait, Values,
};
use sea_query_sqlx::SqlxValues;

use crate::script::{self, WriteScript};

/// A transaction that runs rounds of reads, each after the writes queued before it.
pub trait BatchedReads {
    /// The backend statements must be built for.
    fn backend(&self) -> DatabaseBackend;

    /// Runs the writes queued in `script` (leaving it empty), then `reads`, and returns each
    /// read's rows, in the order of `reads`.
    fn read(
        &mut self,
        script: &mut WriteScript,
        reads: Vec<Statement>,
    ) -> impl Future<Output = Result<Vec<Vec<QueryResult>>, DbErr>> + Send;
}

impl BatchedReads for DatabaseTransaction {
    fn backend(&self) -> DatabaseBackend {
        self.get_database_backend()
    }

    async fn read(
        &mut self,
        script: &mut WriteScript,
        reads: Vec<Statement>,
    ) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        script.run(&*self).await?;
        let mut results = Vec::with_capacity(reads.len());
        for read in reads {
            results.push(self.query_all_raw(read).await?);
        }
        Ok(results)
    }
}

/// Rows of one read as `M`.
pub fn models<M: FromQueryResult>(rows: &[QueryResult]) -> Result<Vec<M>, DbErr> {
    rows.iter()
        .map(|row| M::from_query_result(row, ""))
        .collect()
}

/// A transaction on a connection taken from a pool for its whole life; see the module's doc.
/// Dropped without [`commit`](Self::commit) or [`rollback`](Self::rollback), it is undone.
#[derive(Debug)]
pub struct BatchedTransaction {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Sqlite(HeldSqlite),
    Other(DatabaseTransaction),
}

impl BatchedTransaction {
    /// Takes a connection from `db`'s pool for a new transaction. On SQLite nothing is sent
    /// yet: `BEGIN` goes with the first trip.
    pub async fn begin(db: &DatabaseConnection) -> Result<Self, DbErr> {
        let inner = if db.get_database_backend() == DatabaseBackend::Sqlite {
            let conn = db
                .get_sqlite_connection_pool()
                .acquire()
                .await
                .map_err(|err| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err))))?;
            Inner::Sqlite(HeldSqlite {
                conn,
                state: State::NotBegun,
            })
        } else {
            Inner::Other(db.begin().await?)
        };
        Ok(Self { inner })
    }

    /// Runs the writes queued in `script`, then commits. The connection goes back to the pool
    /// when the returned [`Committed`] is dropped, or carries the next transaction.
    pub async fn commit(self, script: &mut WriteScript) -> Result<Committed, DbErr> {
        match self.inner {
            Inner::Sqlite(mut held) => {
                held.commit(script.take()).await?;
                Ok(Committed { held: Some(held) })
            }
            Inner::Other(txn) => {
                script.run(&txn).await?;
                txn.commit().await?;
                Ok(Committed { held: None })
            }
        }
    }

    /// Undoes everything sent so far.
    pub async fn rollback(self) -> Result<(), DbErr> {
        match self.inner {
            Inner::Sqlite(mut held) => held.rollback().await,
            Inner::Other(txn) => txn.rollback().await,
        }
    }
}

/// A committed [`BatchedTransaction`]'s connection (on SQLite), which can carry the next
/// transaction without going back through the pool. Handing a connection back costs a trip to
/// SQLite's thread (sqlx pings every connection it takes back) and the next transaction waits
/// for it: a writer with the next group already waiting saves both by keeping the connection.
/// Dropped, it goes back to the pool.
#[derive(Debug)]
pub struct Committed {
    /// The connection, its transaction ended; `None` on PostgreSQL.
    held: Option<HeldSqlite>,
}

impl Committed {
    /// A new transaction on the same connection, as [`BatchedTransaction::begin`] would start
    /// it. Without a connection to keep (PostgreSQL), one from `db`'s pool.
    pub async fn begin_next(self, db: &DatabaseConnection) -> Result<BatchedTransaction, DbErr> {
        match self.held {
            Some(mut held) => {
                held.state = State::NotBegun;
                Ok(BatchedTransaction {
                    inner: Inner::Sqlite(held),
                })
            }
            None => BatchedTransaction::begin(db).await,
        }
    }
}

impl BatchedReads for BatchedTransaction {
    fn backend(&self) -> DatabaseBackend {
        match &self.inner {
            Inner::Sqlite(_) => DatabaseBackend::Sqlite,
            Inner::Other(txn) => txn.get_database_backend(),
        }
    }

    async fn read(
        &mut self,
        script: &mut WriteScript,
        reads: Vec<Statement>,
    ) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        match &mut self.inner {
            Inner::Sqlite(held) => {
                let count = reads.len();
                let mut statements = script.take();
                statements.extend(reads);
                let mut results = held.run(statements, false).await?;
                Ok(results.split_off(results.len() - count))
            }
            Inner::Other(txn) => txn.read(script, reads).await,
        }
    }
}

/// An SQLite connection held for one transaction that sqlx does not know about: sqlx's own
/// `BEGIN` and `COMMIT` are trips of their own.
#[derive(Debug)]
struct HeldSqlite {
    conn: PoolConnection<Sqlite>,
    state: State,
}

/// Where a [`HeldSqlite`] transaction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing sent: `BEGIN` goes with the next trip.
    NotBegun,
    /// Possibly open: from the trip that carries `BEGIN` until `COMMIT` or `ROLLBACK` succeeds.
    Open,
    /// Committed or rolled back.
    Ended,
}

impl HeldSqlite {
    /// Runs `statements` in as few trips as [`script::scripts`] allows, `BEGIN` riding at the
    /// head of the first one the first time and `COMMIT` (when `commit`) at the tail of the last,
    /// whatever their size; returns each statement's rows. On an error, rolls back.
    async fn run(
        &mut self,
        statements: Vec<Statement>,
        commit: bool,
    ) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        let mut trips = script::scripts(statements);
        let begin = self.state == State::NotBegun;
        if begin {
            match trips.first_mut() {
                Some(first) => first.insert(0, bare("BEGIN")),
                None => trips.push(vec![bare("BEGIN")]),
            }
            self.state = State::Open;
        }
        if commit {
            match trips.last_mut() {
                Some(last) => last.push(bare("COMMIT")),
                None => trips.push(vec![bare("COMMIT")]),
            }
        }
        match self.send(trips).await {
            Ok(mut results) => {
                if commit {
                    results.pop();
                    self.state = State::Ended;
                }
                if begin {
                    results.remove(0);
                }
                Ok(results)
            }
            Err(err) => {
                self.undo().await;
                Err(err)
            }
        }
    }

    /// Sends each of `trips` as one script; returns each statement's rows, in order.
    async fn send(&mut self, trips: Vec<Vec<Statement>>) -> Result<Vec<Vec<QueryResult>>, DbErr> {
        let expected: usize = trips.iter().map(Vec::len).sum();
        let mut results = Vec::with_capacity(expected);
        for trip in trips {
            let joined = script::joined(DatabaseBackend::Sqlite, trip);
            let values = joined.values.unwrap_or(Values(Vec::new()));
            let query = sqlx::query_with(AssertSqlSafe(joined.sql), SqlxValues(values));
            let mut stream = (&mut *self.conn).fetch_many(query);
            let mut rows = Vec::new();
            while let Some(item) = stream.try_next().await.map_err(query_error)? {
                match item {
                    Either::Left(_) => results.push(std::mem::take(&mut rows)),
                    Either::Right(row) => rows.push(QueryResult::from(row)),
                }
            }
        }
        if results.len() != expected {
            return Err(DbErr::Custom(format!(
                "a script of {expected} statements ran {}",
                results.len()
            )));
        }
        Ok(results)
    }

    async fn commit(&mut self, statements: Vec<Statement>) -> Result<(), DbErr> {
        if self.state == State::NotBegun && statements.is_empty() {
            return Ok(());
        }
        self.run(statements, true).await.map(drop)
    }

    async fn rollback(&mut self) -> Result<(), DbErr> {
        if self.state != State::Open {
            return Ok(());
        }
        let rolled_back = (&mut *self.conn).execute("ROLLBACK").await;
        self.state = State::Ended;
        if let Err(err) = rolled_back {
            self.conn.close_on_drop();
            return Err(query_error(err));
        }
        Ok(())
    }

    /// Rolls back after a failed trip. When that fails too (no transaction left to roll back,
    /// or a connection in trouble), the connection is closed rather than given back to the
    /// pool in a state nobody knows.
    async fn undo(&mut self) {
        if let Err(err) = self.rollback().await {
            tracing::debug!(error = %err, "rollback after a failed trip failed, closing the connection");
        }
    }
}

impl Drop for HeldSqlite {
    /// A transaction dropped open (its task cancelled, or an error before it could roll back)
    /// must not reach the pool's next user: the connection is closed instead, and the pool
    /// opens a new one. SQLite rolls back what a closed connection left uncommitted.
    fn drop(&mut self) {
        if self.state == State::Open {
            self.conn.close_on_drop();
        }
    }
}

fn bare(sql: &str) -> Statement {
    Statement::from_string(DatabaseBackend::Sqlite, sql.to_owned())
}

fn query_error(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use leadflow_test_support::{TestDb, on_both_backends};
    use sea_orm::{
        ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QueryTrait,
    };

    mod note {
        use sea_orm::entity::prelude::*;

        #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
        #[sea_orm(table_name = "notes")]
        pub(super) struct Model {
            #[sea_orm(primary_key, auto_increment = false)]
            pub id: i64,
            pub text: String,
        }

        #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
        pub(super) enum Relation {}

        impl ActiveModelBehavior for ActiveModel {}
    }

    /// A database of `db` with an empty `notes` table, on the services' pool settings.
    async fn notes(db: &TestDb) -> DatabaseConnection {
        let conn = crate::db::connect(&db.url, 4).await.expect("connect");
        conn.execute_unprepared("CREATE TABLE notes (id BIGINT PRIMARY KEY, text TEXT NOT NULL)")
            .await
            .expect("create notes");
        conn
    }

    fn add(script: &mut WriteScript, ids: impl IntoIterator<Item = i64>) {
        let rows: Vec<note::ActiveModel> = ids
            .into_iter()
            .map(|id| note::ActiveModel {
                id: Set(id),
                text: Set(format!("note {id}")),
            })
            .collect();
        script.insert_many(rows, None);
    }

    /// Reads of the notes with ids in `from..to`, in id order.
    fn between(backend: DatabaseBackend, from: i64, to: i64) -> Statement {
        note::Entity::find()
            .filter(note::Column::Id.gte(from))
            .filter(note::Column::Id.lt(to))
            .order_by_asc(note::Column::Id)
            .build(backend)
    }

    fn ids(rows: &[QueryResult]) -> Vec<i64> {
        models::<note::Model>(rows)
            .expect("notes")
            .into_iter()
            .map(|n| n.id)
            .collect()
    }

    async fn stored(conn: &DatabaseConnection) -> Vec<i64> {
        note::Entity::find()
            .order_by_asc(note::Column::Id)
            .all(conn)
            .await
            .expect("read notes")
            .into_iter()
            .map(|n| n.id)
            .collect()
    }

    /// Each read gets its own rows (none, one or many), after the writes queued before it;
    /// the commit keeps the writes queued after the last read too.
    async fn reads_see_earlier_writes_and_commit_keeps_all(db: TestDb) {
        let conn = notes(&db).await;
        let mut txn = BatchedTransaction::begin(&conn).await.expect("begin");
        let backend = txn.backend();
        let mut script = WriteScript::new(backend);
        add(&mut script, 1..=5);
        let reads = vec![
            between(backend, 1, 4),
            between(backend, 10, 20),
            between(backend, 5, 6),
        ];
        let results = txn.read(&mut script, reads).await.expect("first round");
        assert!(script.is_empty(), "the queued writes were run");
        let got: Vec<Vec<i64>> = results.iter().map(|rows| ids(rows)).collect();
        assert_eq!(got, vec![vec![1, 2, 3], vec![], vec![5]]);

        add(&mut script, [10, 11]);
        let results = txn
            .read(&mut script, vec![between(backend, 0, 100)])
            .await
            .expect("second round");
        assert_eq!(ids(&results[0]), vec![1, 2, 3, 4, 5, 10, 11]);

        add(&mut script, [20]);
        txn.commit(&mut script).await.expect("commit");
        assert_eq!(stored(&conn).await, vec![1, 2, 3, 4, 5, 10, 11, 20]);
    }

    /// A rolled-back or dropped transaction leaves nothing behind, a committed one that only
    /// read ends too, and the next one on the same pool (one connection on SQLite) works.
    async fn rollback_and_drop_undo_everything(db: TestDb) {
        let conn = notes(&db).await;
        let mut txn = BatchedTransaction::begin(&conn).await.expect("begin");
        let mut script = WriteScript::new(txn.backend());
        add(&mut script, [1, 2]);
        let seen = txn
            .read(&mut script, vec![between(txn.backend(), 0, 10)])
            .await
            .expect("read");
        assert_eq!(ids(&seen[0]), vec![1, 2]);
        txn.rollback().await.expect("rollback");
        assert_eq!(stored(&conn).await, Vec::<i64>::new());

        let mut txn = BatchedTransaction::begin(&conn).await.expect("begin");
        add(&mut script, [3]);
        txn.read(&mut script, vec![between(txn.backend(), 0, 10)])
            .await
            .expect("read");
        drop(txn);

        let txn = BatchedTransaction::begin(&conn)
            .await
            .expect("begin after a drop");
        add(&mut script, [4]);
        txn.commit(&mut script).await.expect("commit after a drop");
        assert_eq!(stored(&conn).await, vec![4]);

        let mut txn = BatchedTransaction::begin(&conn).await.expect("begin");
        txn.read(&mut script, vec![between(txn.backend(), 0, 10)])
            .await
            .expect("read");
        txn.commit(&mut script).await.expect("commit of reads only");
        let txn = BatchedTransaction::begin(&conn)
            .await
            .expect("begin after reads only");
        add(&mut script, [6]);
        txn.commit(&mut script)
            .await
            .expect("commit after reads only");
        assert_eq!(stored(&conn).await, vec![4, 6]);
    }

    /// A statement that fails undoes the whole transaction, the writes sent before it
    /// included, and the connection serves the next transaction.
    async fn a_failing_statement_undoes_the_transaction(db: TestDb) {
        let conn = notes(&db).await;
        let txn = BatchedTransaction::begin(&conn).await.expect("begin");
        let mut script = WriteScript::new(txn.backend());
        add(&mut script, [1]);
        txn.commit(&mut script).await.expect("commit");

        let mut txn = BatchedTransaction::begin(&conn).await.expect("begin");
        add(&mut script, [2]);
        txn.read(&mut script, vec![between(txn.backend(), 0, 10)])
            .await
            .expect("read");
        add(&mut script, [3]);
        add(&mut script, [1]);
        let failed = txn.commit(&mut script).await;
        assert!(failed.is_err(), "a duplicate key fails the commit");
        assert_eq!(stored(&conn).await, vec![1]);

        // One multi-row insert failing at its third row: on SQLite (`OR FAIL`) its first two
        // rows stay in the transaction until the rollback that the failure brings undoes them.
        let txn = BatchedTransaction::begin(&conn).await.expect("begin");
        add(&mut script, [7, 8, 1, 9]);
        let failed = txn.commit(&mut script).await;
        assert!(
            failed.is_err(),
            "a duplicate key inside a multi-row insert fails"
        );
        assert_eq!(stored(&conn).await, vec![1]);

        let txn = BatchedTransaction::begin(&conn)
            .await
            .expect("begin after a failure");
        add(&mut script, [5]);
        txn.commit(&mut script)
            .await
            .expect("commit after a failure");
        assert_eq!(stored(&conn).await, vec![1, 5]);
    }

    /// A committed transaction's connection carries the next one, which sees what the first
    /// wrote; on SQLite it does not go back to the pool in between (the writer's pool has one
    /// connection, and nobody else can take it), and it does once the last one ends.
    async fn a_committed_connection_carries_the_next_transaction(db: TestDb) {
        let conn = notes(&db).await;
        let backend = conn.get_database_backend();
        let txn = BatchedTransaction::begin(&conn).await.expect("begin");
        let mut script = WriteScript::new(backend);
        add(&mut script, [1]);
        let committed = txn.commit(&mut script).await.expect("commit");
        if backend == DatabaseBackend::Sqlite {
            let pool = conn.get_sqlite_connection_pool();
            assert!(
                pool.try_acquire().is_none(),
                "the connection stays with the writer"
            );
        }

        let mut next = committed.begin_next(&conn).await.expect("begin next");
        add(&mut script, [2]);
        let seen = next
            .read(&mut script, vec![between(backend, 0, 10)])
            .await
            .expect("read");
        assert_eq!(ids(&seen[0]), vec![1, 2]);
        let committed = next.commit(&mut script).await.expect("commit next");

        let mut undone = committed.begin_next(&conn).await.expect("begin third");
        add(&mut script, [3]);
        undone
            .read(&mut script, vec![between(backend, 0, 10)])
            .await
            .expect("read third");
        undone.rollback().await.expect("rollback");
        assert_eq!(stored(&conn).await, vec![1, 2]);
    }

    /// Multi-row inserts on SQLite say `OR FAIL`, which spares them a statement journal;
    /// PostgreSQL has no such clause.
    async fn inserts_on_sqlite_keep_no_statement_journal(db: TestDb) {
        let conn = notes(&db).await;
        let backend = conn.get_database_backend();
        let mut script = WriteScript::new(backend);
        add(&mut script, [1, 2]);
        let sql = script.take().remove(0).sql;
        let expected = match backend {
            DatabaseBackend::Sqlite => "INSERT OR FAIL INTO \"notes\" ",
            _ => "INSERT INTO \"notes\" ",
        };
        assert!(sql.starts_with(expected), "{sql}");
    }

    on_both_backends! {
        or_fail => inserts_on_sqlite_keep_no_statement_journal;
        carried => a_committed_connection_carries_the_next_transaction;
        rounds => reads_see_earlier_writes_and_commit_keeps_all;
        undone => rollback_and_drop_undo_everything;
        failure => a_failing_statement_undoes_the_transaction;
    }
}
