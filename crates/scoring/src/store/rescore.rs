//! Rescore jobs: every live lead of a tenant replayed from its stored facts under a model, the
//! leads whose score or grade moved announced, progress recorded as the job goes.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use leadflow_proto::scoring::v1::ScoreChangeReason;
use leadflow_runtime::db::{self, MAX_ROWS_PER_STATEMENT};
use leadflow_runtime::outbox::{self, NewMessage, Packing};
use leadflow_runtime::script::WriteScript;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction,
    EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    Announced, CacheWrites, LeadState, Store, activity_fact, cache, decode_profile, events, fact,
    find_request, lead_score, record, rescore_job, rows_by_id, save_request, saved_row, state,
};
use crate::convert;
use crate::domain::{ActivityFact, LeadScore, Model};
use crate::error::Error;

/// Leads a rescore job re-scores per transaction.
const CHUNK: usize = 500;

/// Leads of a transaction read, replayed and written together: small enough that a step's
/// replay overlaps the store's work on its neighbours, large enough to batch the statements.
const STEP: usize = 100;

/// Steps whose facts are read ahead of the one being written (SQLite).
const FACTS_AHEAD: usize = 2;

impl Store {
    /// Creates a rescore job under the active model; a repeated request id answers its job.
    pub async fn create_job(
        &self,
        tenant: &str,
        request_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(rescore_job::Model, bool), Error> {
        let txn = self.db.begin().await?;
        if let Some(job_id) = find_request(&txn, tenant, request_id).await? {
            let job = rescore_job::Entity::find_by_id((tenant.to_owned(), job_id))
                .one(&txn)
                .await?
                .ok_or_else(|| Error::Corrupt("job missing".into()))?;
            return Ok((job, true));
        }
        let (model, _) = self.active_model(&txn, tenant).await?;
        let job = rescore_job::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            job_id: Set(uuid::Uuid::now_v7().to_string()),
            model_version: Set(model.version),
            state: Set(leadflow_proto::scoring::v1::RescoreJobState::Queued as i32),
            total_leads: Set(0),
            processed_leads: Set(0),
            changed_leads: Set(0),
            created_at: Set(now),
            started_at: Set(None),
            ended_at: Set(None),
            error: Set(None),
        }
        .insert(&txn)
        .await?;
        save_request(&txn, tenant, request_id, &job.job_id, now).await?;
        txn.commit().await?;
        Ok((job, false))
    }

    /// A job of the tenant.
    pub async fn job(
        &self,
        tenant: &str,
        job_id: &str,
    ) -> Result<Option<rescore_job::Model>, Error> {
        Ok(
            rescore_job::Entity::find_by_id((tenant.to_owned(), job_id.to_owned()))
                .one(&self.db)
                .await?,
        )
    }

    /// Jobs not finished (queued or running), to resume after a restart.
    pub async fn unfinished_jobs(&self) -> Result<Vec<rescore_job::Model>, Error> {
        use leadflow_proto::scoring::v1::RescoreJobState;
        Ok(rescore_job::Entity::find()
            .filter(rescore_job::Column::State.is_in([
                RescoreJobState::Queued as i32,
                RescoreJobState::Running as i32,
            ]))
            .all(&self.db)
            .await?)
    }

    /// Runs a job: re-scores every lead of the tenant from its facts under the job's model,
    /// announcing the leads whose score or grade changed, recording progress as it goes.
    ///
    /// Each transaction re-scores [`CHUNK`] leads in steps of [`STEP`]: a step's replay runs on
    /// a blocking thread while the store reads the next step and writes the previous one, so
    /// the replay's CPU and the store's work overlap instead of taking turns. On SQLite the
    /// steps' facts are read on the read-only connections meanwhile ([`StepFacts`]).
    pub async fn run_job(
        &self,
        job: rescore_job::Model,
        now: impl Fn() -> DateTime<Utc>,
    ) -> Result<(), Error> {
        use leadflow_proto::scoring::v1::RescoreJobState;
        let tenant = job.tenant_id.clone();
        let model = Arc::new(
            self.model(&tenant, job.model_version)
                .await?
                .ok_or_else(|| Error::Corrupt("job model missing".into()))?
                .0,
        );
        let ids: Vec<String> = lead_score::Entity::find()
            .select_only()
            .column(lead_score::Column::LeadId)
            .filter(lead_score::Column::TenantId.eq(&tenant))
            .filter(lead_score::Column::MergedInto.is_null())
            .order_by_asc(lead_score::Column::LeadId)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut progress: rescore_job::ActiveModel = job.into();
        progress.state = Set(RescoreJobState::Running as i32);
        progress.started_at = Set(Some(now()));
        progress.total_leads = Set(ids.len() as i64);
        progress.processed_leads = Set(0);
        progress.changed_leads = Set(0);
        let mut progress: rescore_job::ActiveModel = progress.update(&self.db).await?.into();
        let mut done = Replayed::default();
        for chunk in ids.chunks(CHUNK) {
            let at = now();
            let mut written = CacheWrites::begin(self.scores.as_ref()).await;
            let txn = self.db.begin().await?;
            let mut facts = self.step_facts(&tenant, chunk);
            let mut replaying: Option<JoinHandle<Result<Replayed, Error>>> = None;
            let mut enqueued = false;
            for step in chunk.chunks(STEP) {
                let read = StepRead {
                    rows: rows_by_id(&txn, &tenant, step, true).await?,
                    facts: facts.of(&txn, &tenant, step).await?,
                };
                let model = Arc::clone(&model);
                let next = tokio::task::spawn_blocking(move || replay(read, &model, at));
                if let Some(previous) = replaying.replace(next) {
                    let replayed = joined(previous).await?;
                    enqueued |= write_step(&txn, replayed, &mut done, &mut written).await?;
                }
            }
            if let Some(last) = replaying {
                let replayed = joined(last).await?;
                enqueued |= write_step(&txn, replayed, &mut done, &mut written).await?;
            }
            let mut script = WriteScript::new(txn.get_database_backend());
            let carried = self.shared_deletes.claim_into(&mut script);
            script.run(&txn).await?;
            progress.processed_leads = Set(done.processed);
            progress.changed_leads = Set(done.changed);
            progress = progress.update(&txn).await?.into();
            txn.commit().await?;
            written.committed();
            carried.committed();
            if enqueued {
                self.wakeup.wake();
            }
        }
        progress.state = Set(RescoreJobState::Succeeded as i32);
        progress.ended_at = Set(Some(now()));
        progress.update(&self.db).await?;
        let (processed, changed) = (done.processed, done.changed);
        tracing::info!(tenant, processed, changed, "rescore job finished");
        Ok(())
    }

    /// Marks a job failed.
    pub async fn fail_job(
        &self,
        tenant: &str,
        job_id: &str,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        use leadflow_proto::scoring::v1::RescoreJobState;
        rescore_job::Entity::update_many()
            .col_expr(
                rescore_job::Column::State,
                Expr::value(RescoreJobState::Failed as i32),
            )
            .col_expr(rescore_job::Column::Error, Expr::value(error))
            .col_expr(rescore_job::Column::EndedAt, Expr::value(now))
            .filter(rescore_job::Column::TenantId.eq(tenant))
            .filter(rescore_job::Column::JobId.eq(job_id))
            .exec(&self.db)
            .await?;
        Ok(())
    }
}

/// A step's leads as stored: their rows (locked until the end of the transaction on
/// PostgreSQL) and their facts.
#[derive(Debug)]
struct StepRead {
    rows: Vec<lead_score::Model>,
    facts: FactsByLead,
}

/// What replaying a step gives: the rows to write back, the score changes to announce, and
/// the counts for the job's progress.
#[derive(Debug, Default)]
struct Replayed {
    rows: Vec<lead_score::Model>,
    messages: Vec<NewMessage>,
    processed: i64,
    changed: i64,
}

/// Each lead's facts, by lead id.
type FactsByLead = HashMap<String, Vec<ActivityFact>>;

/// Where a rescore transaction reads its steps' facts.
///
/// On an SQLite file they are read ahead on the read-only connections while the writer reads
/// and writes lead rows: reading and decoding facts was some 40% of a rescore's time at a million
/// facts, the writer idle meanwhile. It sees what the transaction would: the read-ahead starts
/// once the transaction holds the store's only writer connection, so nothing commits between
/// the transaction's start and the reads, and the transaction itself writes no facts.
/// On PostgreSQL other replicas write meanwhile, so the facts are read in the transaction,
/// after the rows it has locked; so they are on an in-memory SQLite store, whose reads share
/// the writer's one connection.
enum StepFacts {
    InTransaction,
    ReadAhead(mpsc::Receiver<Result<FactsByLead, Error>>),
}

impl Store {
    /// How the transaction just begun reads the facts of `chunk`, step by step.
    fn step_facts(&self, tenant: &str, chunk: &[String]) -> StepFacts {
        if !self.reads_beside_writer {
            return StepFacts::InTransaction;
        }
        let (sender, receiver) = mpsc::channel(FACTS_AHEAD);
        let (reader, tenant) = (self.reader.clone(), tenant.to_owned());
        let steps: Vec<Vec<String>> = chunk.chunks(STEP).map(<[String]>::to_vec).collect();
        tokio::spawn(async move {
            for step in steps {
                let facts = facts_of_leads(&reader, &tenant, &step).await;
                let failed = facts.is_err();
                if sender.send(facts).await.is_err() || failed {
                    break;
                }
            }
        });
        StepFacts::ReadAhead(receiver)
    }
}

impl StepFacts {
    /// The facts of `step`, the next step of the chunk.
    async fn of(
        &mut self,
        txn: &DatabaseTransaction,
        tenant: &str,
        step: &[String],
    ) -> Result<FactsByLead, Error> {
        match self {
            Self::InTransaction => facts_of_leads(txn, tenant, step).await,
            Self::ReadAhead(receiver) => receiver
                .recv()
                .await
                .unwrap_or(Err(Error::TaskFailed("a rescore's fact reads"))),
        }
    }
}

/// Re-scores the live leads of `read` from their facts under `model` at `at`. A lead merged
/// since the job listed it is skipped: it is re-scored as part of its survivor. The score
/// before is read from the stored state's score inputs only; the rest of the old state is
/// replaced, so it is never decoded.
fn replay(read: StepRead, model: &Model, at: DateTime<Utc>) -> Result<Replayed, Error> {
    let StepRead { rows, mut facts } = read;
    let mut replayed = Replayed::default();
    for row in rows.into_iter().filter(|row| row.merged_into.is_none()) {
        let before = state::decode_inputs(&row.state)?.score(model, at);
        let profile = decode_profile(&row.profile)?;
        let lead_facts = facts.remove(row.lead_id.as_str()).unwrap_or_default();
        let score = LeadScore::replay(
            model,
            &convert::profile_attributes(&profile),
            &lead_facts,
            row.first_seen,
            at,
        );
        let lead = LeadState {
            row,
            score,
            profile,
            merged: false,
        };
        let after = lead.score.score(model, at);
        if events::moved(&before, &after) {
            replayed.changed += 1;
            replayed
                .messages
                .push(events::message(events::score_changed(
                    &lead,
                    model,
                    events::Previous::from(&before),
                    ScoreChangeReason::Rescore,
                    None,
                    at,
                )));
        }
        replayed
            .rows
            .push(saved_row(&lead, &Announced::of(&lead, model, at), at)?);
        replayed.processed += 1;
    }
    Ok(replayed)
}

/// The result of a replay on the blocking pool.
async fn joined(replay: JoinHandle<Result<Replayed, Error>>) -> Result<Replayed, Error> {
    replay
        .await
        .map_err(|_| Error::TaskFailed("a rescore replay"))?
}

/// Writes a replayed step and adds its counts to `done`; true when it announced anything.
async fn write_step(
    txn: &DatabaseTransaction,
    replayed: Replayed,
    done: &mut Replayed,
    written: &mut CacheWrites,
) -> Result<bool, Error> {
    let announced = !replayed.messages.is_empty();
    for row in &replayed.rows {
        record(written, row)?;
    }
    let mut script = WriteScript::new(txn.get_database_backend());
    // A rescore may change the model, which moves due times either way.
    cache::save_rows(&mut script, replayed.rows, true);
    outbox::enqueue_into(&mut script, replayed.messages, Packing::Bundled)?;
    script.run(txn).await?;
    done.processed += replayed.processed;
    done.changed += replayed.changed;
    Ok(announced)
}

/// The stored facts of each of `lead_ids`, read in a few queries.
async fn facts_of_leads<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_ids: &[String],
) -> Result<FactsByLead, Error> {
    let mut by_lead = FactsByLead::with_capacity(lead_ids.len());
    for chunk in lead_ids.chunks(MAX_ROWS_PER_STATEMENT) {
        let rows = fact::Entity::find()
            .filter(fact::Column::TenantId.eq(tenant))
            .filter(fact::Column::LeadId.is_in(db::in_list(chunk)))
            .all(conn)
            .await?;
        for row in rows {
            by_lead
                .entry(row.lead_id.clone())
                .or_default()
                .push(activity_fact(row)?);
        }
    }
    Ok(by_lead)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::default_model::default_model;

    fn row(lead_id: &str, merged_into: Option<&str>, at: DateTime<Utc>) -> lead_score::Model {
        let mut lead = cache::new_lead("t", lead_id, &default_model(), at);
        lead.row.state = state::encode(&lead.score).expect("state encodes");
        lead.row.merged_into = merged_into.map(str::to_owned);
        lead.row
    }

    fn download(id: &str, at: DateTime<Utc>) -> ActivityFact {
        ActivityFact {
            id: id.into(),
            activity_type: "content_download".into(),
            occurred_at: at,
            properties: [("asset_id".to_owned(), "guide".to_owned())].into(),
        }
    }

    #[test]
    fn a_stored_fact_that_does_not_decode_is_corrupt_not_empty() {
        let mut stored = fact::Model {
            tenant_id: "t".into(),
            activity_id: "a1".into(),
            lead_id: "l".into(),
            activity_type: "content_download".into(),
            occurred_at_us: 1_700_000_000_000_000,
            properties: "not json".into(),
        };
        assert!(matches!(
            activity_fact(stored.clone()),
            Err(Error::Corrupt(_))
        ));
        stored.properties = r#"{"asset_id":"guide"}"#.into();
        stored.occurred_at_us = i64::MAX;
        assert!(matches!(
            activity_fact(stored.clone()),
            Err(Error::Corrupt(_))
        ));
        stored.occurred_at_us = 1_700_000_000_000_000;
        let decoded = activity_fact(stored).expect("a sound row decodes");
        assert_eq!(
            decoded.properties.get("asset_id").map(String::as_str),
            Some("guide")
        );
    }

    #[test]
    fn replay_rescores_live_leads_from_their_facts_and_skips_merged_ones() {
        let model = default_model();
        let at = Utc::now();
        let seen = at - chrono::Duration::days(1);
        let read = StepRead {
            rows: vec![
                row("engaged", None, seen),
                row("quiet", None, seen),
                row("absorbed", Some("engaged"), seen),
            ],
            facts: [("engaged".to_owned(), vec![download("a1", seen)])].into(),
        };
        let replayed = replay(read, &model, at).expect("replays");
        assert_eq!((replayed.processed, replayed.changed), (2, 1));
        let saved: Vec<&str> = replayed.rows.iter().map(|r| r.lead_id.as_str()).collect();
        assert_eq!(
            saved,
            ["engaged", "quiet"],
            "the merged lead is not written"
        );
        let engaged = &replayed.rows[0];
        assert!(engaged.announced_score > 0.0, "its fact scored");
        assert_eq!(
            replayed.messages.len(),
            1,
            "only the lead whose score moved is announced"
        );
        assert_eq!(replayed.messages[0].partition_key, "engaged");
    }
}
