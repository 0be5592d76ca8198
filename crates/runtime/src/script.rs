//! Writes sent together. On SQLite every statement is a trip to the connection's worker thread
//! and back, and on a busy machine each trip waits to be scheduled twice: a group commit that
//! wrote four tables in power-of-two chunks made a dozen such trips. A [`WriteScript`] collects
//! a transaction's writes and sends them as one script, so the worker runs them back to back.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ConnectionTrait, DatabaseBackend, DbErr, EntityTrait, QueryTrait, Statement,
    Value, Values,
};

use crate::db::chunked;

/// Most statements one SQLite script holds.
const MAX_STATEMENTS_PER_SCRIPT: usize = 8;

/// Most bound values of a statement that shares a script: larger ones run alone. A script's
/// text is the key under which the connection keeps it prepared, so a large statement inside
/// scripts of ever-changing neighbours would be compiled (a 512-row insert is a program of
/// thousands of opcodes) and kept once per script it appears in: memory the writer's statement
/// cache does not have (merging every statement took the suite from ~265 to ~350 MiB at
/// 100,000 activities). Large statements are few per transaction anyway (chunks are largest
/// first); the trips add up in the tail of small ones.
const MAX_VALUES_TO_SHARE: usize = 320;

/// Write statements to run in order inside one transaction, without results.
///
/// On SQLite the small ones go to the connection as scripts of up to
/// `MAX_STATEMENTS_PER_SCRIPT` statements (SQLite binds a script's `?` parameters in order
/// across its statements), the large ones alone; on PostgreSQL, where a statement with
/// parameters cannot share a round trip with another, one after another.
///
/// Nothing is written until [`WriteScript::run`]: a script dropped before it (an error on the
/// way, say) writes nothing, like the transaction it was meant for when that rolls back. Run it
/// before the transaction commits and before any read that must see its writes. When a write
/// fails, roll the transaction back: on SQLite the failing insert's earlier rows stay until
/// then (see [`or_fail`]).
#[derive(Debug)]
pub struct WriteScript {
    backend: DatabaseBackend,
    statements: Vec<Statement>,
}

impl WriteScript {
    /// An empty script for `backend`.
    pub fn new(backend: DatabaseBackend) -> Self {
        Self {
            backend,
            statements: Vec::new(),
        }
    }

    /// Adds `statement` at the end.
    pub fn push(&mut self, statement: &impl QueryTrait) {
        self.statements.push(statement.build(self.backend));
    }

    /// Adds `statement`, built for this script's backend, at the end.
    pub fn push_statement(&mut self, statement: Statement) {
        debug_assert_eq!(statement.db_backend, self.backend);
        self.statements.push(statement);
    }

    /// Adds every statement of `other` (built for the same backend) at the end.
    pub fn append(&mut self, mut other: WriteScript) {
        debug_assert_eq!(other.backend, self.backend);
        self.statements.append(&mut other.statements);
    }

    /// Adds multi-row inserts of `rows`, in order, in the chunks [`chunked`] makes for the
    /// backend, each with `on_conflict` when given.
    pub fn insert_many<A>(&mut self, rows: Vec<A>, on_conflict: Option<&OnConflict>)
    where
        A: ActiveModelTrait,
    {
        for chunk in chunked(self.backend, rows) {
            let mut insert = <A::Entity as EntityTrait>::insert_many(chunk);
            if let Some(on_conflict) = on_conflict {
                insert = insert.on_conflict(on_conflict.clone());
            }
            let statement = insert.build(self.backend);
            self.statements.push(match self.backend {
                DatabaseBackend::Sqlite => or_fail(statement),
                _ => statement,
            });
        }
    }

    /// Whether nothing was added.
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }

    /// Every statement added so far, in order, leaving the script empty.
    pub(crate) fn take(&mut self) -> Vec<Statement> {
        std::mem::take(&mut self.statements)
    }

    /// Runs every statement added so far on `conn`, in order, and leaves the script empty for
    /// more; stops at the first that fails. Reads that must see these writes come after it.
    pub async fn run<C: ConnectionTrait>(&mut self, conn: &C) -> Result<(), DbErr> {
        let statements = std::mem::take(&mut self.statements);
        if self.backend != DatabaseBackend::Sqlite {
            for statement in statements {
                conn.execute_raw(statement).await?;
            }
            return Ok(());
        }
        for part in scripts(statements) {
            conn.execute_raw(joined(self.backend, part)).await?;
        }
        Ok(())
    }
}

/// `statements` in order, in scripts: each large statement alone, runs of small ones together
/// up to [`MAX_STATEMENTS_PER_SCRIPT`].
/// `insert` (SQLite, as sea-query writes it) with SQLite's `OR FAIL` conflict resolution
/// instead of the default `OR ABORT`. Under ABORT, a statement that writes several rows keeps a
/// statement journal, a copy of every page it changes that the transaction changed before, so
/// that a failing row can undo that statement alone. A script's writes are never undone one
/// statement at a time: a write that fails fails its transaction, which is rolled back whole.
/// So the copy was pure cost (3% of the suite's CPU over an ingest and drain, in `memcpy` and
/// `malloc`). Under FAIL a failing row stops the statement and keeps its earlier rows until the
/// rollback undoes them with the rest. Upserts keep their `ON CONFLICT` clause, which decides
/// the conflicts on its own target.
fn or_fail(mut insert: Statement) -> Statement {
    const INSERT: &str = "INSERT INTO ";
    if let Some(rest) = insert.sql.strip_prefix(INSERT) {
        insert.sql = format!("INSERT OR FAIL INTO {rest}");
    }
    insert
}

pub(crate) fn scripts(statements: Vec<Statement>) -> Vec<Vec<Statement>> {
    let mut scripts: Vec<Vec<Statement>> = Vec::new();
    let mut open = false;
    for statement in statements {
        let shares = bound_values(&statement) <= MAX_VALUES_TO_SHARE;
        match scripts.last_mut() {
            Some(last) if open && shares && last.len() < MAX_STATEMENTS_PER_SCRIPT => {
                last.push(statement);
            }
            _ => scripts.push(vec![statement]),
        }
        open = shares;
    }
    scripts
}

fn bound_values(statement: &Statement) -> usize {
    statement.values.as_ref().map_or(0, |values| values.0.len())
}

/// `statements` as one script: their texts separated by semicolons, their values in order.
pub(crate) fn joined(backend: DatabaseBackend, mut statements: Vec<Statement>) -> Statement {
    if statements.len() == 1 {
        return statements.remove(0);
    }
    let mut sql = String::with_capacity(statements.iter().map(|s| s.sql.len() + 2).sum());
    let mut values: Vec<Value> = Vec::new();
    for statement in statements {
        if !sql.is_empty() {
            sql.push_str(";\n");
        }
        sql.push_str(&statement.sql);
        if let Some(Values(own)) = statement.values {
            values.extend(own);
        }
    }
    Statement::from_sql_and_values(backend, sql, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A statement with `values` bound values, named `n`.
    fn statement(n: usize, values: usize) -> Statement {
        Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            format!("s{n}"),
            (0..values).map(|v| Value::from(v as i64)),
        )
    }

    #[test]
    fn scripts_join_texts_and_values_in_order() {
        let script = joined(
            DatabaseBackend::Sqlite,
            vec![statement(0, 2), statement(1, 0), statement(2, 1)],
        );
        assert_eq!(script.sql, "s0;\ns1;\ns2");
        let values = script.values.expect("values").0;
        assert_eq!(values, vec![Value::from(0i64), 1i64.into(), 0i64.into()]);
    }

    proptest! {
        /// Scripts keep every statement once, in order; only small statements share one, at
        /// most a script's worth; and a run of small statements is cut only where a script is
        /// full.
        #[test]
        fn scripts_keep_order_and_share_only_small_statements(
            sizes in proptest::collection::vec(0usize..2 * MAX_VALUES_TO_SHARE, 0..40)
        ) {
            let statements: Vec<Statement> =
                sizes.iter().enumerate().map(|(n, &v)| statement(n, v)).collect();
            let parts = scripts(statements);
            let order: Vec<String> = parts.iter().flatten().map(|s| s.sql.clone()).collect();
            let expected: Vec<String> = (0..sizes.len()).map(|n| format!("s{n}")).collect();
            prop_assert_eq!(order, expected);
            for part in &parts {
                prop_assert!(!part.is_empty() && part.len() <= MAX_STATEMENTS_PER_SCRIPT);
                if part.len() > 1 {
                    prop_assert!(part.iter().all(|s| bound_values(s) <= MAX_VALUES_TO_SHARE));
                }
            }
            for pair in parts.windows(2) {
                let (first, next) = (&pair[0], &pair[1]);
                let small = |part: &Vec<Statement>| {
                    part.iter().all(|s| bound_values(s) <= MAX_VALUES_TO_SHARE)
                };
                prop_assert!(
                    !(small(first) && small(next)) || first.len() == MAX_STATEMENTS_PER_SCRIPT,
                    "two runs of small statements split before a script is full"
                );
            }
        }
    }
}
