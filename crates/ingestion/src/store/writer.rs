//! Group commit: writes that arrive together share one transaction. Each `Track`, `Identify`
//! or `Batch` becomes a job on a queue; one task opens a transaction, takes every job waiting
//! by then (up to [`MAX_GROUP_COMMANDS`] commands), applies them in arrival order with the
//! set-based path, and answers each job only after that commit. A group the set-based path
//! cannot take (a merge, a lead merged away) or that fails is applied job by job instead, each in
//! its own transaction, so one job's error is never another's. On SQLite a group of `Track`s
//! on visitors the writer has seen is written without its round of reads, the links it relied
//! on checked inside the transaction ([`commit_group`]).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use leadflow_runtime::batched::{BatchedReads, BatchedTransaction, Committed};
use leadflow_runtime::outbox::{self, Packing, SharedDeletes, Wakeup};
use leadflow_runtime::queue::take_waiting;
use leadflow_runtime::script::WriteScript;
use sea_orm::{ConnectionTrait, DatabaseBackend, DatabaseConnection, TransactionTrait};
use tokio::sync::{mpsc, oneshot};

use super::links::LinkCache;
use super::{Accepted, bulk, one_by_one};
use crate::convert::Command;
use crate::error::Error;

/// Most commands committed together: big enough to amortise a commit over many callers, small
/// enough that the first caller of a group does not wait long for the last.
const MAX_GROUP_COMMANDS: usize = 2000;

/// Jobs waiting for the writer. Callers wait for room when it is full (back-pressure).
const QUEUE_DEPTH: usize = 1024;

/// One caller's write.
pub(super) struct Job {
    tenant: String,
    commands: Vec<Command>,
    now: DateTime<Utc>,
    /// The caller's trace context: its events carry the caller's trace.
    trace_context: String,
    reply: oneshot::Sender<Result<Vec<Accepted>, Error>>,
}

/// The queue into the writer task.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer task over `db`; it ends once every handle is dropped. Each group
    /// also carries the relay's deletes offered through `deletes`.
    pub(super) fn start(db: DatabaseConnection, wakeup: Wakeup, deletes: SharedDeletes) -> Self {
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(db, wakeup, deletes, queue));
        Self { jobs }
    }

    /// Applies `commands` for `tenant`, answering once they are committed.
    pub(super) async fn apply(
        &self,
        tenant: &str,
        commands: Vec<Command>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Accepted>, Error> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            tenant: tenant.to_owned(),
            commands,
            now,
            trace_context: outbox::current_trace_context()?,
            reply,
        };
        self.jobs
            .send(job)
            .await
            .map_err(|_| Error::WriterStopped)?;
        answer.await.map_err(|_| Error::WriterStopped)?
    }
}

/// How long the writer keeps its connection across groups that follow each other without a
/// pause, instead of handing it back to the pool between them (which costs a trip to SQLite's
/// thread, and the next group waits for it). The relay's own writes share the connection: they
/// wait at most this long plus one group.
const KEEP_CONNECTION_FOR: Duration = Duration::from_millis(10);

/// Whether the writer keeps the connection it has held for `held_for` to begin the next
/// group: only when that group is already waiting, and not past [`KEEP_CONNECTION_FOR`].
fn keep_connection(next_waiting: bool, held_for: Duration) -> bool {
    next_waiting && held_for < KEEP_CONNECTION_FOR
}

/// A committed group's connection, kept for the next group, and since when it is held.
struct Kept {
    committed: Committed,
    since: Instant,
}

async fn run(
    db: DatabaseConnection,
    wakeup: Wakeup,
    deletes: SharedDeletes,
    mut queue: mpsc::Receiver<Job>,
) {
    let mut kept: Option<Kept> = None;
    let mut links = LinkCache::default();
    while let Some(first) = queue.recv().await {
        // The transaction is opened before the group is taken: while it waits for the
        // connection (the relay shares it), the jobs that arrive join this group instead of
        // each waiting a whole commit for the next one.
        let (txn, since) = match kept.take() {
            Some(Kept { committed, since }) => (committed.begin_next(&db).await, since),
            None => (BatchedTransaction::begin(&db).await, Instant::now()),
        };
        let group = take_waiting(
            first,
            &mut queue,
            |job| job.commands.len(),
            MAX_GROUP_COMMANDS,
        );
        let committed = match txn {
            Ok(txn) => commit_group(&db, txn, &deletes, &group, &mut links).await,
            Err(err) => Err(err.into()),
        };
        match committed {
            Ok(Some((answers, committed))) => {
                wakeup.wake();
                for (job, answers) in group.into_iter().zip(answers) {
                    let _ = job.reply.send(Ok(answers));
                }
                if keep_connection(!queue.is_empty(), since.elapsed()) {
                    kept = Some(Kept { committed, since });
                }
            }
            Ok(None) => apply_each(&db, &wakeup, group).await,
            Err(err) => {
                tracing::debug!(jobs = group.len(), error = %err, "group commit failed, applying job by job");
                apply_each(&db, &wakeup, group).await;
            }
        }
    }
}

/// The whole group in `txn` on the set-based path (each run of jobs of one tenant as one
/// batch, received at the time of its first job), with the relay's deletes waiting in
/// `deletes`, each job's answers in order; or `None`, having written nothing, when a job needs
/// the command-by-command path. Committed, the connection comes back with the answers.
///
/// On SQLite a group `links` can predict is first sent without reading, in one trip with its
/// commit ([`bulk::try_apply_predicted`]); when a prediction does not hold, its links are
/// forgotten and the group is applied again, reading.
async fn commit_group(
    db: &DatabaseConnection,
    mut txn: BatchedTransaction,
    deletes: &SharedDeletes,
    group: &[Job],
    links: &mut LinkCache,
) -> Result<Option<(Vec<Vec<Accepted>>, Committed)>, Error> {
    let sqlite = txn.backend() == DatabaseBackend::Sqlite;
    if sqlite {
        let mut script = WriteScript::new(DatabaseBackend::Sqlite);
        if let Some(answers) =
            apply_group(&mut txn, &mut script, group, Lookup::Predict(links)).await?
        {
            let carried = deletes.claim_into(&mut script);
            match txn.commit(&mut script).await {
                Ok(committed) => {
                    carried.committed();
                    return Ok(Some((answers, committed)));
                }
                Err(err) => {
                    tracing::debug!(jobs = group.len(), error = %err, "a predicted group did not hold, reading it");
                    forget_links(links, group);
                    txn = BatchedTransaction::begin(db).await?;
                }
            }
        }
    }
    let mut script = WriteScript::new(txn.backend());
    let carried = deletes.claim_into(&mut script);
    let learnt = sqlite.then_some(links);
    match apply_group(&mut txn, &mut script, group, Lookup::Read(learnt)).await {
        Ok(Some(answers)) => {
            let committed = txn.commit(&mut script).await?;
            carried.committed();
            Ok(Some((answers, committed)))
        }
        Ok(None) => {
            txn.rollback().await?;
            Ok(None)
        }
        Err(err) => {
            txn.rollback().await?;
            Err(err)
        }
    }
}

/// How [`apply_group`] finds what the store knows of each batch.
enum Lookup<'a> {
    /// Reads it, remembering the links read and written when given a cache.
    Read(Option<&'a mut LinkCache>),
    /// Predicts it from the links remembered ([`bulk::try_apply_predicted`]).
    Predict(&'a LinkCache),
}

/// Forgets every link the group's `Track` commands named.
fn forget_links(links: &mut LinkCache, group: &[Job]) {
    for job in group {
        for command in &job.commands {
            if let Command::Track(track) = command {
                for (kind, id) in bulk::identity_ids(&track.identity) {
                    links.forget(&job.tenant, kind, id);
                }
            }
        }
    }
}

/// Applies each run of jobs of one tenant, reading in `txn` (or predicting, per `lookup`) and
/// adding the writes to `script`.
async fn apply_group(
    txn: &mut BatchedTransaction,
    script: &mut WriteScript,
    group: &[Job],
    mut lookup: Lookup<'_>,
) -> Result<Option<Vec<Vec<Accepted>>>, Error> {
    let mut answers = Vec::with_capacity(group.len());
    let mut traced = Vec::with_capacity(group.len());
    for run in group.chunk_by(|a, b| a.tenant == b.tenant) {
        // A later run of the same tenant reads what the earlier ones wrote: its reads run the
        // writes queued before them first.
        let commands: Vec<&Command> = run.iter().flat_map(|job| &job.commands).collect();
        let mut events = Vec::new();
        let tenant = &run[0].tenant;
        let now = run[0].now;
        let applied = match &mut lookup {
            Lookup::Read(learnt) => {
                bulk::try_apply(
                    txn,
                    script,
                    tenant,
                    &commands,
                    now,
                    &mut events,
                    learnt.as_deref_mut(),
                )
                .await?
            }
            Lookup::Predict(links) => {
                bulk::try_apply_predicted(txn, script, tenant, &commands, now, &mut events, links)
                    .await?
            }
        };
        let Some(answered) = applied else {
            return Ok(None);
        };
        // The set-based path produces one event per command it applied (not answered before).
        let (mut answered, mut events) = (answered.into_iter(), events.into_iter());
        for job in run {
            let mine: Vec<Accepted> = answered.by_ref().take(job.commands.len()).collect();
            let applied = mine.iter().filter(|a| !a.duplicate).count();
            traced.push((
                job.trace_context.clone(),
                events.by_ref().take(applied).collect(),
            ));
            answers.push(mine);
        }
    }
    outbox::enqueue_traced_into(script, traced, Packing::Bundled);
    Ok(Some(answers))
}

/// Each job in its own transaction, answered with its own result.
async fn apply_each(db: &DatabaseConnection, wakeup: &Wakeup, group: Vec<Job>) {
    for job in group {
        let result = apply_alone(db, &job).await;
        if result.is_ok() {
            wakeup.wake();
        }
        let _ = job.reply.send(result);
    }
}

async fn apply_alone(db: &DatabaseConnection, job: &Job) -> Result<Vec<Accepted>, Error> {
    let mut txn = db.begin().await?;
    let mut script = WriteScript::new(txn.get_database_backend());
    let mut events = Vec::new();
    let commands: Vec<&Command> = job.commands.iter().collect();
    let bulk = bulk::try_apply(
        &mut txn,
        &mut script,
        &job.tenant,
        &commands,
        job.now,
        &mut events,
        None,
    )
    .await?;
    let answers = match bulk {
        Some(answers) => answers,
        None => one_by_one(&txn, &job.tenant, &job.commands, job.now, &mut events).await?,
    };
    outbox::enqueue_traced_into(
        &mut script,
        vec![(job.trace_context.clone(), events)],
        Packing::Bundled,
    );
    script.run(&txn).await?;
    txn.commit().await?;
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_connection_only_for_a_group_already_waiting() {
        assert!(keep_connection(true, Duration::ZERO));
        assert!(!keep_connection(false, Duration::ZERO));
    }

    #[test]
    fn hands_the_connection_back_once_held_long_enough() {
        assert!(keep_connection(
            true,
            KEEP_CONNECTION_FOR - Duration::from_micros(1)
        ));
        assert!(!keep_connection(true, KEEP_CONNECTION_FOR));
    }
}
