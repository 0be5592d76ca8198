//! Score lookups that arrive together share one query. `GetScore` reads one lead per call, and
//! a query through the SQLite driver costs a hop to its worker thread and back whatever it
//! reads, so concurrent callers' lookups are queued: one task takes every lookup waiting (up to
//! [`MAX_COALESCED`]) whenever a read slot is free, reads each tenant's leads with one query,
//! and answers every caller. A batch whose query fails is read again lookup by lookup, so one
//! lead's error (a corrupt state) is never another caller's.

use std::collections::HashMap;
use std::sync::Arc;

use leadflow_runtime::queue::take_waiting;
use sea_orm::DatabaseConnection;
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::score_cache::ScoreCache;
use super::{ScoreRead, score_read_on, score_reads_on};
use crate::error::Error;

/// Most lookups answered by one batch: a batch query stays small and cheap to prepare, and a
/// caller does not wait behind a long one.
const MAX_COALESCED: usize = 128;

/// Lookups waiting for a read slot. Callers wait for room when it is full (back-pressure).
const QUEUE_DEPTH: usize = 4096;

/// The answer to one lookup.
type Answer = Result<Option<Arc<ScoreRead>>, Error>;

/// One caller's lookup.
struct Lookup {
    tenant: String,
    lead_id: String,
    reply: oneshot::Sender<Answer>,
}

/// The queue into the coalescing task.
#[derive(Debug, Clone)]
pub(super) struct ScoreReader {
    lookups: mpsc::Sender<Lookup>,
}

impl ScoreReader {
    /// Starts the coalescing task over `reader`, with at most `in_flight` batch queries at
    /// once (the reader pool's connections); it ends once every handle is dropped.
    pub(super) fn start(
        reader: DatabaseConnection,
        in_flight: usize,
        cache: Option<Arc<ScoreCache>>,
    ) -> Self {
        let (lookups, queue) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(reader, in_flight.max(1), cache, queue));
        Self { lookups }
    }

    /// What the score of `lead_id` is computed from ([`super::Store::score_read`]).
    pub(super) async fn read(&self, tenant: &str, lead_id: &str) -> Answer {
        let (reply, answer) = oneshot::channel();
        let lookup = Lookup {
            tenant: tenant.to_owned(),
            lead_id: lead_id.to_owned(),
            reply,
        };
        self.lookups
            .send(lookup)
            .await
            .map_err(|_| Error::ReaderStopped)?;
        answer.await.map_err(|_| Error::ReaderStopped)?
    }
}

async fn run(
    reader: DatabaseConnection,
    in_flight: usize,
    cache: Option<Arc<ScoreCache>>,
    mut queue: mpsc::Receiver<Lookup>,
) {
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = queue.recv().await {
        // The semaphore is never closed, so acquiring only fails if it were.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let batch = take_waiting(first, &mut queue, |_| 1, MAX_COALESCED);
        let reader = reader.clone();
        let cache = cache.clone();
        tokio::spawn(async move {
            answer(&reader, cache.as_deref(), batch).await;
            drop(slot);
        });
    }
}

/// Answers every lookup of `batch`: one query per tenant, or one per lookup if that fails.
/// What the batch query read is offered to `cache`.
async fn answer(reader: &DatabaseConnection, cache: Option<&ScoreCache>, batch: Vec<Lookup>) {
    let mut by_tenant: HashMap<String, Vec<Lookup>> = HashMap::new();
    for lookup in batch {
        by_tenant
            .entry(lookup.tenant.clone())
            .or_default()
            .push(lookup);
    }
    for (tenant, lookups) in by_tenant {
        let mut ids: Vec<String> = lookups.iter().map(|l| l.lead_id.clone()).collect();
        ids.sort_unstable();
        ids.dedup();
        match read_through(reader, cache, &tenant, &ids).await {
            Ok(found) => {
                for lookup in lookups {
                    let read = found.get(&lookup.lead_id).cloned();
                    let _ = lookup.reply.send(Ok(read));
                }
            }
            Err(err) => {
                tracing::debug!(lookups = lookups.len(), error = %err, "batched score read failed, reading one by one");
                for lookup in lookups {
                    let read = score_read_on(reader, &tenant, &lookup.lead_id).await;
                    let _ = lookup.reply.send(read);
                }
            }
        }
    }
}

/// [`score_reads_on`] of `lead_ids`, what it read offered to `cache` with a ticket taken before
/// the query (so rows read before a concurrent write are refused).
pub(super) async fn read_through(
    reader: &DatabaseConnection,
    cache: Option<&ScoreCache>,
    tenant: &str,
    lead_ids: &[String],
) -> Result<HashMap<String, Arc<ScoreRead>>, Error> {
    let ticket = cache.map(ScoreCache::ticket);
    let found = score_reads_on(reader, tenant, lead_ids).await?;
    if let (Some(cache), Some(ticket)) = (cache, &ticket) {
        cache.offer(ticket, tenant, found.values());
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    #[test]
    fn a_lookup_after_the_reader_stopped_fails_as_unavailable_instead_of_hanging() {
        let serving = runtime();
        let reader = serving.block_on(async {
            let db = leadflow_runtime::db::connect("sqlite::memory:", 1)
                .await
                .expect("in-memory store");
            ScoreReader::start(db, 2, None)
        });
        drop(serving);
        let answer = runtime()
            .block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    reader.read("t", "lead-1"),
                )
                .await
            })
            .expect("answers at once, never hangs");
        assert!(matches!(answer, Err(Error::ReaderStopped)), "{answer:?}");
        let status = tonic::Status::from(Error::ReaderStopped);
        assert_eq!(status.code(), tonic::Code::Unavailable, "clients retry it");
    }
}
