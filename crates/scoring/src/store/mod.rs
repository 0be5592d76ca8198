//! Scoring's store: published models, each lead's scoring state (ledger included), the activity
//! facts rescoring replays, rescore jobs, decisions reported back, and the outbox to
//! qualification. Every state change and the score change announcing it commit together.

mod cache;
mod entities;
mod events;
pub mod migrations;
mod reads;
mod rescore;
mod score_cache;
pub mod state;
mod sweep_due;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::ingestion::v1::{LeadEvent, lead_event::Event};
use leadflow_proto::scoring::v1::ScoreChangeReason;
use leadflow_runtime::db::{self, MAX_ROWS_PER_STATEMENT};
use leadflow_runtime::outbox::{self, NewMessage, Packing, SharedDeletes, Wakeup, inbox};
use leadflow_runtime::script::WriteScript;
use prost::Message;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
    TransactionTrait,
};

use crate::convert;
use crate::domain::default_model::default_model;
use crate::domain::{ActivityFact, LeadScore, Model, ScoreInputs};
use crate::error::Error;
use cache::LeadCache;
pub use entities::{decision, fact, lead_score, model, request, rescore_job, sweep_pass};
use reads::ScoreReader;
use score_cache::{CacheWrites, ScoreCache};
use sweep_due::{DueWrite, sweep_due_us};

/// Leads whose score inputs an SQLite store keeps in memory unless told otherwise.
pub const DEFAULT_SCORE_CACHE_LEADS: usize = score_cache::DEFAULT_CAPACITY;

/// Outbox destination of score changes.
pub const QUALIFICATION: &str = "qualification";

/// A lead's stored state, decoded.
#[derive(Debug, Clone)]
pub struct LeadState {
    /// The row.
    pub row: lead_score::Model,
    /// The scoring state.
    pub score: LeadScore,
    /// The profile.
    pub profile: common::Profile,
    /// True when the requested id was merged into `row.lead_id`.
    pub merged: bool,
}

/// What a lead's score is computed from, read without decoding its whole state.
#[derive(Debug, Clone)]
pub struct ScoreRead {
    /// The lead (the survivor, for a merged id).
    pub lead_id: String,
    /// The model version its state is under.
    pub model_version: i32,
    /// When its state last changed.
    pub updated_at: DateTime<Utc>,
    /// The inputs of its score.
    pub inputs: ScoreInputs,
    /// True when the requested id was merged into `lead_id`.
    pub merged: bool,
}

impl ScoreRead {
    fn decode(row: &lead_score::Model, merged: bool) -> Result<Self, Error> {
        let inputs = state::decode_inputs(&row.state)?;
        Ok(Self {
            lead_id: row.lead_id.clone(),
            model_version: row.model_version,
            updated_at: row.updated_at,
            inputs,
            merged,
        })
    }
}

/// What applying a batch of messages did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Messages applied now.
    pub applied: i32,
    /// Messages applied before.
    pub duplicates: i32,
}

/// Scoring's data access.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Where score reads go: [`leadflow_runtime::db::reader`], or `db` itself.
    reader: DatabaseConnection,
    /// Whether `reader` reads beside the writer's one connection (an SQLite file), so a
    /// transaction of `db` may wait for reads on it ([`leadflow_runtime::db::Pools`]).
    reads_beside_writer: bool,
    /// Single-lead score reads, coalesced into batched queries on `reader`.
    score_reader: ScoreReader,
    /// Live leads' score inputs in memory, on a store only this process writes (SQLite).
    scores: Option<Arc<ScoreCache>>,
    wakeup: Wakeup,
    models: ModelCache,
    /// How long applied message ids are remembered.
    inbox_retention: TimeDelta,
    /// The relay's deletes, carried by each delivery applied and each rescore transaction.
    shared_deletes: SharedDeletes,
}

/// Parsed published models by tenant, then version (so a lookup borrows the tenant, allocating
/// nothing). A published version never changes, so a read needs no invalidation; the cache is
/// emptied if it ever holds [`MAX_CACHED_MODELS`].
type ModelCache = Arc<RwLock<HashMap<String, HashMap<i32, Arc<Model>>>>>;

/// Batched score reads in flight at once: one per read-only SQLite connection
/// ([`leadflow_runtime::db::SQLITE_READERS`]).
const READS_IN_FLIGHT: usize = leadflow_runtime::db::SQLITE_READERS as usize;

/// Most model versions kept parsed.
const MAX_CACHED_MODELS: usize = 1024;

impl Store {
    /// A store over `db`; `wakeup` is poked after commits that enqueued score changes. Starts
    /// the score-read task, so it must be called inside a tokio runtime.
    pub fn new(db: DatabaseConnection, wakeup: Wakeup) -> Self {
        let scores = score_cache_for(&db, DEFAULT_SCORE_CACHE_LEADS);
        Self {
            score_reader: ScoreReader::start(db.clone(), READS_IN_FLIGHT, scores.clone()),
            scores,
            reader: db.clone(),
            reads_beside_writer: false,
            db,
            wakeup,
            models: ModelCache::default(),
            inbox_retention: inbox::DEFAULT_RETENTION,
            shared_deletes: SharedDeletes::new(),
        }
    }

    /// The same store, each delivery it applies and each rescore transaction also carrying the
    /// relay's deletes offered through `deletes`
    /// ([`leadflow_runtime::outbox::Relay::with_shared_deletes`]).
    pub fn with_shared_deletes(self, deletes: SharedDeletes) -> Self {
        Self {
            shared_deletes: deletes,
            ..self
        }
    }

    /// The same store, remembering applied message ids for `retention`
    /// ([`inbox::DEFAULT_RETENTION`] otherwise).
    pub fn with_inbox_retention(self, retention: TimeDelta) -> Self {
        Self {
            inbox_retention: retention,
            ..self
        }
    }

    /// The same store, keeping the score inputs of at most `leads` leads in memory on SQLite
    /// ([`DEFAULT_SCORE_CACHE_LEADS`] otherwise; 0: none).
    pub fn with_score_cache_leads(self, leads: usize) -> Self {
        let scores = score_cache_for(&self.db, leads);
        Self {
            score_reader: ScoreReader::start(self.reader.clone(), READS_IN_FLIGHT, scores.clone()),
            scores,
            ..self
        }
    }

    /// The same store, reading scores and models through `reader` (read-only connections
    /// beside the writer on an SQLite file: `beside_writer`).
    pub fn with_reader(self, reader: DatabaseConnection, beside_writer: bool) -> Self {
        Self {
            score_reader: ScoreReader::start(reader.clone(), READS_IN_FLIGHT, self.scores.clone()),
            reader,
            reads_beside_writer: beside_writer,
            ..self
        }
    }

    /// Model `version` of the tenant (0: the default model), parsed once and then served from
    /// memory: what every score read needs.
    pub async fn scoring_model(
        &self,
        tenant: &str,
        version: i32,
    ) -> Result<Option<Arc<Model>>, Error> {
        let cached = self.models.read().ok().and_then(|models| {
            models
                .get(tenant)
                .and_then(|versions| versions.get(&version))
                .cloned()
        });
        if let Some(model) = cached {
            return Ok(Some(model));
        }
        let Some((model, _)) = model_on(&self.reader, tenant, version).await? else {
            return Ok(None);
        };
        let model = Arc::new(model);
        if let Ok(mut models) = self.models.write() {
            if models.values().map(HashMap::len).sum::<usize>() >= MAX_CACHED_MODELS {
                models.clear();
            }
            models
                .entry(tenant.to_owned())
                .or_default()
                .insert(version, model.clone());
        }
        Ok(Some(model))
    }

    /// The connection.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The tenant's active model: the latest published, or the default model (version 0).
    pub async fn active_model<C: ConnectionTrait>(
        &self,
        conn: &C,
        tenant: &str,
    ) -> Result<(Model, DateTime<Utc>), Error> {
        let row = model::Entity::find()
            .filter(model::Column::TenantId.eq(tenant))
            .order_by_desc(model::Column::Version)
            .one(conn)
            .await?;
        match row {
            Some(row) => Ok((parse_model(&row.body)?, row.created_at)),
            None => Ok((
                default_model(),
                Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
            )),
        }
    }

    /// Model `version` of the tenant (0: the default model).
    pub async fn model(
        &self,
        tenant: &str,
        version: i32,
    ) -> Result<Option<(Model, DateTime<Utc>)>, Error> {
        model_on(&self.db, tenant, version).await
    }

    /// Published versions, newest first, below `before` (exclusive) when given.
    pub async fn models(
        &self,
        tenant: &str,
        before: Option<i32>,
        limit: u64,
    ) -> Result<Vec<(Model, DateTime<Utc>)>, Error> {
        let mut query = model::Entity::find().filter(model::Column::TenantId.eq(tenant));
        if let Some(before) = before {
            query = query.filter(model::Column::Version.lt(before));
        }
        let rows = query
            .order_by_desc(model::Column::Version)
            .limit(limit)
            .all(&self.db)
            .await?;
        rows.into_iter()
            .map(|row| Ok((parse_model(&row.body)?, row.created_at)))
            .collect()
    }

    /// Publishes `model` as the tenant's next version, now active. A repeated request id
    /// answers the version it published.
    pub async fn publish(
        &self,
        tenant: &str,
        request_id: &str,
        mut new: Model,
        now: DateTime<Utc>,
    ) -> Result<(Model, DateTime<Utc>, bool), Error> {
        let txn = self.db.begin().await?;
        if let Some(previous) = find_request(&txn, tenant, request_id).await? {
            let version: i32 = previous
                .parse()
                .map_err(|_| Error::Corrupt("request result".into()))?;
            let (model, created) = model_on(&txn, tenant, version)
                .await?
                .ok_or_else(|| Error::Corrupt("published model missing".into()))?;
            return Ok((model, created, true));
        }
        let (active, _) = self.active_model(&txn, tenant).await?;
        new.version = active.version + 1;
        model::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            version: Set(new.version),
            body: Set(serde_json::to_string(&new).map_err(|e| Error::Corrupt(e.to_string()))?),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        save_request(&txn, tenant, request_id, &new.version.to_string(), now).await?;
        txn.commit().await?;
        tracing::info!(tenant, version = new.version, "scoring model published");
        Ok((new, now, false))
    }

    /// The state of `lead_id` (or of the lead it was merged into).
    pub async fn lead(&self, tenant: &str, lead_id: &str) -> Result<Option<LeadState>, Error> {
        find_lead(&self.reader, tenant, lead_id, false).await
    }

    /// What the score of `lead_id` (or of the lead it was merged into) is computed from, without
    /// decoding the rest of its state: the read behind `GetScore`. Served from memory when the
    /// lead is cached ([`score_cache`]); otherwise concurrent calls share one query (see
    /// [`reads`]).
    pub async fn score_read(
        &self,
        tenant: &str,
        lead_id: &str,
    ) -> Result<Option<Arc<ScoreRead>>, Error> {
        if let Some(cached) = self.scores.as_ref().and_then(|c| c.get(tenant, lead_id)) {
            return Ok(Some(cached));
        }
        self.score_reader.read(tenant, lead_id).await
    }

    /// [`Store::score_read`] for each of `lead_ids`, in one query per
    /// [`MAX_ROWS_PER_STATEMENT`] ids and one for the survivors of merged ids. Ids not stored
    /// are absent from the map.
    pub async fn score_reads(
        &self,
        tenant: &str,
        lead_ids: &[String],
    ) -> Result<HashMap<String, Arc<ScoreRead>>, Error> {
        let Some(cache) = self.scores.as_deref() else {
            return score_reads_on(&self.reader, tenant, lead_ids).await;
        };
        let mut found = HashMap::with_capacity(lead_ids.len());
        let mut missed = Vec::new();
        for lead_id in lead_ids {
            match cache.get(tenant, lead_id) {
                Some(read) => {
                    found.insert(lead_id.clone(), read);
                }
                None => missed.push(lead_id.clone()),
            }
        }
        if !missed.is_empty() {
            found.extend(reads::read_through(&self.reader, Some(cache), tenant, &missed).await?);
        }
        Ok(found)
    }

    /// Applies lead events from ingestion in order, each message id once, in one transaction:
    /// the batch's message ids are claimed and its leads read up front, each lead is changed in
    /// memory event after event, and written back once at the end (a merge writes back what
    /// came before it, then re-reads).
    pub async fn apply_lead_events(
        &self,
        events: Vec<LeadEvent>,
        now: DateTime<Utc>,
    ) -> Result<Applied, Error> {
        let mut headers = Vec::with_capacity(events.len());
        for event in &events {
            let header = event
                .header
                .clone()
                .ok_or_else(|| Error::invalid("events[].header", "required"))?;
            headers.push(header);
        }
        let mut written = CacheWrites::begin(self.scores.as_ref()).await;
        let txn = self.db.begin().await?;
        let mut script = WriteScript::new(txn.get_database_backend());
        let carried = self.shared_deletes.claim_into(&mut script);
        let mut claimed = inbox::claim_many_into(&txn, &mut script, &headers, now).await?;
        inbox::prune_into(&mut script, now, self.inbox_retention);
        let mut leads = LeadCache::default();
        leads
            .prefetch(
                &txn,
                headers
                    .iter()
                    .filter(|h| claimed.contains(&h.message_id))
                    .map(|h| (h.tenant_id.clone(), h.lead_id.clone())),
            )
            .await?;
        let mut applied = Applied::default();
        let mut out = Vec::new();
        let mut models = ActiveModels::default();
        for (event, header) in events.into_iter().zip(headers) {
            if !claimed.admits(&header.message_id) {
                applied.duplicates += 1;
                continue;
            }
            let tenant = header.tenant_id.as_str();
            let model = models.get(self, &txn, tenant).await?;
            let produced = header
                .produced_at
                .as_ref()
                .and_then(convert::timestamp)
                .unwrap_or(now);
            match event.event {
                Some(Event::ProfileChanged(changed)) => {
                    let profile = changed.profile.unwrap_or_default();
                    let lead = leads
                        .lead(&txn, tenant, &header.lead_id, model, produced)
                        .await?;
                    let before = lead.score.score(model, now);
                    lead.score
                        .set_profile(model, &convert::profile_attributes(&profile), produced);
                    lead.profile = profile;
                    out.push(events::message(events::score_changed(
                        lead,
                        model,
                        events::Previous::from(&before),
                        ScoreChangeReason::Profile,
                        None,
                        now,
                    )));
                    let (key, announced) = (cache::key_of(lead), Announced::of(lead, model, now));
                    leads.changed(key, announced, None);
                }
                Some(Event::ActivityRecorded(recorded)) => {
                    let activity = recorded.activity.unwrap_or_default();
                    let fact = convert::fact_from_pb(&recorded.activity_id, &activity)
                        .map_err(Error::Invalid)?;
                    let lead = leads
                        .lead(&txn, tenant, &header.lead_id, model, produced)
                        .await?;
                    let before = lead.score.score(model, now);
                    lead.score.sweep(model, fact.occurred_at);
                    lead.score.apply_activity(model, &fact);
                    let hand_raise = model.hand_raise_types.contains(&fact.activity_type);
                    let after = lead.score.score(model, now);
                    if hand_raise || events::moved(&before, &after) {
                        out.push(events::message(events::score_changed(
                            lead,
                            model,
                            events::Previous::from(&before),
                            ScoreChangeReason::Activity,
                            Some((&fact.id, &activity, hand_raise)),
                            now,
                        )));
                    }
                    let row = fact_row(tenant, &lead.row.lead_id, &fact);
                    let (key, announced) = (cache::key_of(lead), Announced::of(lead, model, now));
                    leads.changed(key, announced, Some(row));
                }
                Some(Event::LeadsMerged(merged)) => {
                    leads.flush(&mut script, now, &mut written)?;
                    script.run(&txn).await?;
                    if let Some(message) = self
                        .merge(
                            &txn,
                            &mut written,
                            tenant,
                            &merged.source_lead_id,
                            &header.lead_id,
                            merged.profile.unwrap_or_default(),
                            model,
                            now,
                        )
                        .await?
                    {
                        out.push(message);
                    }
                }
                None => return Err(Error::invalid("events[].event", "required")),
            }
            applied.applied += 1;
        }
        leads.flush(&mut script, now, &mut written)?;
        let enqueued = !out.is_empty();
        outbox::enqueue_into(&mut script, out, Packing::Bundled)?;
        script.run(&txn).await?;
        txn.commit().await?;
        written.committed();
        carried.committed();
        if enqueued {
            self.wakeup.wake();
        }
        Ok(applied)
    }

    /// Re-keys `source`'s facts to `target` and re-derives `target`'s score from the merged
    /// history: no point lost, none counted twice.
    #[allow(clippy::too_many_arguments)]
    async fn merge(
        &self,
        txn: &DatabaseTransaction,
        written: &mut CacheWrites,
        tenant: &str,
        source: &str,
        target: &str,
        profile: common::Profile,
        model: &Model,
        now: DateTime<Utc>,
    ) -> Result<Option<NewMessage>, Error> {
        fact::Entity::update_many()
            .col_expr(fact::Column::LeadId, Expr::value(target))
            .filter(fact::Column::TenantId.eq(tenant))
            .filter(fact::Column::LeadId.eq(source))
            .exec(txn)
            .await?;
        let source_first_seen =
            lead_score::Entity::find_by_id((tenant.to_owned(), source.to_owned()))
                .one(txn)
                .await?
                .map(|r| r.first_seen);
        lead_score::Entity::update_many()
            .col_expr(lead_score::Column::MergedInto, Expr::value(target))
            .col_expr(
                lead_score::Column::SweepDueUs,
                Expr::value(Option::<i64>::None),
            )
            .filter(lead_score::Column::TenantId.eq(tenant))
            .filter(
                lead_score::Column::LeadId
                    .eq(source)
                    .or(lead_score::Column::MergedInto.eq(source)),
            )
            .exec(txn)
            .await?;
        let mut lead =
            load_or_create(txn, tenant, target, model, source_first_seen.unwrap_or(now)).await?;
        let first_seen =
            source_first_seen.map_or(lead.row.first_seen, |s| Ord::min(s, lead.row.first_seen));
        let facts = lead_facts(txn, tenant, target).await?;
        let before = lead.score.score(model, now);
        lead.score = LeadScore::replay(
            model,
            &convert::profile_attributes(&profile),
            &facts,
            first_seen,
            now,
        );
        lead.row.first_seen = first_seen;
        lead.profile = profile;
        let mut changed = events::score_changed(
            &lead,
            model,
            events::Previous::from(&before),
            ScoreChangeReason::Merge,
            None,
            now,
        );
        changed.merged_lead_id = source.to_owned();
        save_lead(txn, &mut lead, model, now, DueWrite::WhenEarlier).await?;
        written.wrote(tenant, source, None);
        record(written, &lead.row)?;
        Ok(Some(events::message(changed)))
    }

    /// Records sales decisions and outcomes for the closed loop, each message id once.
    pub async fn record_decisions(
        &self,
        events: Vec<(String, String, String, Vec<u8>)>,
        now: DateTime<Utc>,
    ) -> Result<Applied, Error> {
        let txn = self.db.begin().await?;
        let mut applied = Applied::default();
        for (message_id, tenant, lead_id, payload) in events {
            if !inbox::claim(&txn, &message_id, &tenant, now).await? {
                applied.duplicates += 1;
                continue;
            }
            decision::ActiveModel {
                message_id: Set(message_id),
                tenant_id: Set(tenant),
                lead_id: Set(lead_id),
                payload: Set(payload),
                received_at: Set(now),
            }
            .insert(&txn)
            .await?;
            applied.applied += 1;
        }
        txn.commit().await?;
        Ok(applied)
    }

    /// Applies inactivity and announces decay for the leads that are due by `now` (each row
    /// stores when it next is), a page at a time: a lead whose rounded score or grade moved
    /// since it was last announced gets a score change. First, a tenant whose active model is
    /// newer than the one its leads were last all swept under has every live lead visited once.
    pub async fn sweep(&self, now: DateTime<Utc>) -> Result<Swept, Error> {
        let mut sweep = Sweep {
            store: self,
            models: ActiveModels::default(),
            now,
            swept: Swept::default(),
        };
        for tenant in self.tenants_with_unswept_models().await? {
            sweep.every_lead_of(&tenant).await?;
        }
        loop {
            let due = lead_score::Entity::find()
                .filter(lead_score::Column::SweepDueUs.lte(now.timestamp_micros()))
                .filter(lead_score::Column::MergedInto.is_null())
                .order_by_asc(lead_score::Column::SweepDueUs)
                .limit(SWEEP_PAGE);
            if sweep.page(due).await?.is_none() {
                break;
            }
        }
        Ok(sweep.swept)
    }

    /// Tenants whose newest published model is newer than the one their leads were last all
    /// swept under.
    async fn tenants_with_unswept_models(&self) -> Result<Vec<String>, Error> {
        let newest: Vec<(String, i32)> = model::Entity::find()
            .select_only()
            .column(model::Column::TenantId)
            .column_as(model::Column::Version.max(), "version")
            .group_by(model::Column::TenantId)
            .into_tuple()
            .all(&self.db)
            .await?;
        let swept: HashMap<String, i32> = sweep_pass::Entity::find()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|pass| (pass.tenant_id, pass.model_version))
            .collect();
        Ok(newest
            .into_iter()
            .filter(|(tenant, version)| swept.get(tenant).is_none_or(|swept| swept < version))
            .map(|(tenant, _)| tenant)
            .collect())
    }
}

/// Leads one sweep reads in one transaction.
const SWEEP_PAGE: u64 = 200;

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Leads it read and swept.
    pub visited: usize,
    /// Leads whose score change it announced.
    pub announced: usize,
}

/// One sweep in progress.
struct Sweep<'a> {
    store: &'a Store,
    models: ActiveModels,
    now: DateTime<Utc>,
    swept: Swept,
}

impl Sweep<'_> {
    /// Visits every live lead of `tenant`, then records the model version they were swept
    /// under.
    async fn every_lead_of(&mut self, tenant: &str) -> Result<(), Error> {
        let mut after: Option<String> = None;
        loop {
            let mut page = lead_score::Entity::find()
                .filter(lead_score::Column::TenantId.eq(tenant))
                .filter(lead_score::Column::MergedInto.is_null())
                .order_by_asc(lead_score::Column::LeadId)
                .limit(SWEEP_PAGE);
            if let Some(after) = &after {
                page = page.filter(lead_score::Column::LeadId.gt(after.clone()));
            }
            match self.page(page).await? {
                Some(last) => after = Some(last),
                None => break,
            }
        }
        let version = self
            .models
            .get(self.store, &self.store.db, tenant)
            .await?
            .version;
        let pass = sweep_pass::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            model_version: Set(version),
        };
        sweep_pass::Entity::insert(pass)
            .on_conflict(
                OnConflict::column(sweep_pass::Column::TenantId)
                    .update_column(sweep_pass::Column::ModelVersion)
                    .to_owned(),
            )
            .exec(&self.store.db)
            .await?;
        Ok(())
    }

    /// Sweeps the leads `query` selects, in one transaction, and returns the last one's id
    /// (`None`: the query selected none). Each lead visited is written back with its next due
    /// time, which is after this sweep's time.
    async fn page(
        &mut self,
        query: sea_orm::Select<lead_score::Entity>,
    ) -> Result<Option<String>, Error> {
        // The page is read in the transaction that writes it back, its rows locked on
        // PostgreSQL: an event applied between a read outside it and the write would be
        // overwritten by the swept copy.
        let now = self.now;
        let mut written = CacheWrites::begin(self.store.scores.as_ref()).await;
        let txn = self.store.db.begin().await?;
        let page = query.lock_exclusive().all(&txn).await?;
        let Some(last) = page.last().map(|row| row.lead_id.clone()) else {
            return Ok(None);
        };
        let mut out = Vec::new();
        let mut due_times = WriteScript::new(txn.get_database_backend());
        for row in page {
            self.swept.visited += 1;
            let model = self.models.get(self.store, &txn, &row.tenant_id).await?;
            let mut lead = decode(row, false)?;
            let lines = lead.score.sweep(model, now);
            let view = lead.score.score(model, now);
            let grade = convert::grade_to_pb(view.grade) as i32;
            let moved = view.score.round() != lead.row.announced_score.round()
                || grade != lead.row.announced_grade;
            if lines.is_empty() && !moved {
                let due = sweep_due_us(&lead.score, model, now);
                if DueWrite::Always.writes(lead.row.sweep_due_us, due) {
                    due_times.push(
                        &lead_score::Entity::update_many()
                            .col_expr(lead_score::Column::SweepDueUs, Expr::value(due))
                            .filter(lead_score::Column::TenantId.eq(&lead.row.tenant_id))
                            .filter(lead_score::Column::LeadId.eq(&lead.row.lead_id)),
                    );
                }
                continue;
            }
            if moved {
                let reason = if lines.is_empty() {
                    ScoreChangeReason::Decay
                } else {
                    ScoreChangeReason::Inactivity
                };
                let previous = events::Previous {
                    score: lead.row.announced_score,
                    grade: lead.row.announced_grade,
                };
                out.push(events::message(events::score_changed(
                    &lead, model, previous, reason, None, now,
                )));
                self.swept.announced += 1;
            }
            save_lead(&txn, &mut lead, model, now, DueWrite::Always).await?;
            record(&mut written, &lead.row)?;
        }
        due_times.run(&txn).await?;
        let enqueued = !out.is_empty();
        outbox::enqueue(&txn, out, Packing::Bundled).await?;
        txn.commit().await?;
        written.committed();
        if enqueued {
            self.store.wakeup.wake();
        }
        Ok(Some(last))
    }
}

/// What the score of `lead_id` (or of the lead it was merged into) is computed from, read on
/// `reader` without decoding the rest of its state.
async fn score_read_on(
    reader: &DatabaseConnection,
    tenant: &str,
    lead_id: &str,
) -> Result<Option<Arc<ScoreRead>>, Error> {
    find_row(reader, tenant, lead_id, false)
        .await?
        .map(|(row, merged)| ScoreRead::decode(&row, merged).map(Arc::new))
        .transpose()
}

/// [`score_read_on`] for each of `lead_ids`: one query per [`MAX_ROWS_PER_STATEMENT`] ids and
/// one for the survivors of merged ids. Ids not stored are absent from the map.
async fn score_reads_on(
    reader: &DatabaseConnection,
    tenant: &str,
    lead_ids: &[String],
) -> Result<HashMap<String, Arc<ScoreRead>>, Error> {
    let rows = rows_by_id(reader, tenant, lead_ids, false).await?;
    let mut merged: HashMap<String, String> = HashMap::new();
    let mut found: HashMap<String, Arc<ScoreRead>> = HashMap::with_capacity(rows.len());
    for row in rows {
        match row.merged_into.clone() {
            Some(survivor) => {
                merged.insert(row.lead_id, survivor);
            }
            None => {
                found.insert(
                    row.lead_id.clone(),
                    Arc::new(ScoreRead::decode(&row, false)?),
                );
            }
        }
    }
    let missing: Vec<String> = merged
        .values()
        .filter(|survivor| !found.contains_key(survivor.as_str()))
        .cloned()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let survivors: HashMap<String, ScoreRead> = rows_by_id(reader, tenant, &missing, false)
        .await?
        .into_iter()
        .map(|row| Ok((row.lead_id.clone(), ScoreRead::decode(&row, true)?)))
        .collect::<Result<_, Error>>()?;
    for (absorbed, survivor) in merged {
        let read = found.get(&survivor).map(|read| &**read);
        if let Some(read) = read.or_else(|| survivors.get(&survivor)) {
            let read = ScoreRead {
                merged: true,
                ..read.clone()
            };
            found.insert(absorbed, Arc::new(read));
        }
    }
    Ok(found)
}

/// Model `version` of the tenant on `conn` (0: the default model).
async fn model_on<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    version: i32,
) -> Result<Option<(Model, DateTime<Utc>)>, Error> {
    if version == 0 {
        return Ok(Some((
            default_model(),
            Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
        )));
    }
    let row = model::Entity::find_by_id((tenant.to_owned(), version))
        .one(conn)
        .await?;
    row.map(|row| Ok((parse_model(&row.body)?, row.created_at)))
        .transpose()
}

/// Each tenant's active model, read once per batch or sweep rather than once per lead.
#[derive(Default)]
struct ActiveModels(std::collections::HashMap<String, Model>);

impl ActiveModels {
    async fn get<C: ConnectionTrait>(
        &mut self,
        store: &Store,
        conn: &C,
        tenant: &str,
    ) -> Result<&Model, Error> {
        if !self.0.contains_key(tenant) {
            let (model, _) = store.active_model(conn, tenant).await?;
            self.0.insert(tenant.to_owned(), model);
        }
        self.0
            .get(tenant)
            .ok_or_else(|| Error::Corrupt(format!("active model of {tenant} not cached")))
    }
}

fn parse_model(body: &str) -> Result<Model, Error> {
    serde_json::from_str(body)
        .map_err(|err| Error::Corrupt(format!("stored model does not parse: {err}")))
}

/// A stored profile.
fn decode_profile(bytes: &[u8]) -> Result<common::Profile, Error> {
    common::Profile::decode(bytes)
        .map_err(|err| Error::Corrupt(format!("stored profile does not decode: {err}")))
}

fn decode(row: lead_score::Model, merged: bool) -> Result<LeadState, Error> {
    let score = state::decode(&row.state)?;
    let profile = decode_profile(&row.profile)?;
    Ok(LeadState {
        row,
        score,
        profile,
        merged,
    })
}

/// The state of `lead_id` (or of the lead it was merged into), its row locked until the end of
/// the transaction `conn` (PostgreSQL; SQLite has a single writer): a concurrent update of the
/// same lead (an event and the sweeper) waits instead of being overwritten.
async fn load_lead<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_id: &str,
) -> Result<Option<LeadState>, Error> {
    find_lead(conn, tenant, lead_id, true).await
}

async fn find_lead<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_id: &str,
    lock: bool,
) -> Result<Option<LeadState>, Error> {
    find_row(conn, tenant, lead_id, lock)
        .await?
        .map(|(row, merged)| decode(row, merged))
        .transpose()
}

/// The row of `lead_id`, or of the lead it was merged into (then `true`).
async fn find_row<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_id: &str,
    lock: bool,
) -> Result<Option<(lead_score::Model, bool)>, Error> {
    let by_id = |id: String| {
        let query = lead_score::Entity::find_by_id((tenant.to_owned(), id));
        if lock { query.lock_exclusive() } else { query }
    };
    let Some(row) = by_id(lead_id.to_owned()).one(conn).await? else {
        return Ok(None);
    };
    match row.merged_into.clone() {
        Some(survivor) => Ok(by_id(survivor).one(conn).await?.map(|row| (row, true))),
        None => Ok(Some((row, false))),
    }
}

/// The rows of `lead_ids` that exist, in one query per [`MAX_ROWS_PER_STATEMENT`] ids, each
/// query's rows in key order. With `lock`, the rows stay locked until the end of the
/// transaction `conn` (PostgreSQL), taken in key order so concurrent writers cannot deadlock.
async fn rows_by_id<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_ids: &[String],
    lock: bool,
) -> Result<Vec<lead_score::Model>, Error> {
    let mut rows = Vec::with_capacity(lead_ids.len());
    for chunk in lead_ids.chunks(MAX_ROWS_PER_STATEMENT) {
        let query = lead_score::Entity::find()
            .filter(lead_score::Column::TenantId.eq(tenant))
            .filter(lead_score::Column::LeadId.is_in(db::in_list(chunk)))
            .order_by_asc(lead_score::Column::LeadId);
        let query = if lock { query.lock_exclusive() } else { query };
        rows.extend(query.all(conn).await?);
    }
    Ok(rows)
}

async fn load_or_create(
    txn: &DatabaseTransaction,
    tenant: &str,
    lead_id: &str,
    model: &Model,
    first_seen: DateTime<Utc>,
) -> Result<LeadState, Error> {
    if let Some(lead) = load_lead(txn, tenant, lead_id).await? {
        return Ok(lead);
    }
    let lead = cache::new_lead(tenant, lead_id, model, first_seen);
    let mut row: lead_score::ActiveModel = lead.row.clone().into();
    row.state = Set(state::encode(&lead.score)?);
    row.insert(txn).await?;
    Ok(lead)
}

/// A score cache of `leads` for a store on `db`: only on SQLite, whose file this process alone
/// writes ([`score_cache`]).
fn score_cache_for(db: &DatabaseConnection, leads: usize) -> Option<Arc<ScoreCache>> {
    let leads = std::num::NonZeroUsize::new(leads)?;
    (db.get_database_backend() == sea_orm::DatabaseBackend::Sqlite)
        .then(|| Arc::new(ScoreCache::new(leads)))
}

/// Records for the score cache that `row` (a live lead's, just written) is now stored.
fn record(written: &mut CacheWrites, row: &lead_score::Model) -> Result<(), Error> {
    if written.is_recording() {
        let read = ScoreRead::decode(row, false)?;
        written.wrote(&row.tenant_id, &row.lead_id, Some(read));
    }
    Ok(())
}

/// What a lead's row records of its score once saved under a model at a time.
#[derive(Debug, Clone, Copy)]
struct Announced {
    model_version: i32,
    score: f64,
    grade: i32,
    sweep_due_us: Option<i64>,
}

impl Announced {
    fn of(lead: &LeadState, model: &Model, now: DateTime<Utc>) -> Self {
        let view = lead.score.score(model, now);
        Self {
            model_version: model.version,
            score: view.score,
            grade: convert::grade_to_pb(view.grade) as i32,
            sweep_due_us: sweep_due_us(&lead.score, model, now),
        }
    }
}

/// `lead`'s row as saved at `now`: its state, profile and what it announces.
fn saved_row(
    lead: &LeadState,
    announced: &Announced,
    now: DateTime<Utc>,
) -> Result<lead_score::Model, Error> {
    Ok(lead_score::Model {
        state: state::encode(&lead.score)?,
        profile: lead.profile.encode_to_vec(),
        model_version: announced.model_version,
        announced_score: announced.score,
        announced_grade: announced.grade,
        updated_at: now,
        sweep_due_us: announced.sweep_due_us,
        ..lead.row.clone()
    })
}

/// Writes `lead` as saved at `now` under `model`, its due time as `due_write` says.
async fn save_lead(
    txn: &DatabaseTransaction,
    lead: &mut LeadState,
    model: &Model,
    now: DateTime<Utc>,
    due_write: DueWrite,
) -> Result<(), Error> {
    let saved = saved_row(lead, &Announced::of(lead, model, now), now)?;
    let writes_due = due_write.writes(lead.row.sweep_due_us, saved.sweep_due_us);
    let mut row: lead_score::ActiveModel = lead.row.clone().into();
    row.state = Set(saved.state);
    row.profile = Set(saved.profile);
    row.first_seen = Set(saved.first_seen);
    row.model_version = Set(saved.model_version);
    row.announced_score = Set(saved.announced_score);
    row.announced_grade = Set(saved.announced_grade);
    row.updated_at = Set(saved.updated_at);
    if writes_due {
        row.sweep_due_us = Set(saved.sweep_due_us);
    }
    lead.row = row.update(txn).await?;
    Ok(())
}

/// The stored row of `fact`, now belonging to `lead_id`.
fn fact_row(tenant: &str, lead_id: &str, fact: &ActivityFact) -> fact::ActiveModel {
    fact::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        activity_id: Set(fact.id.clone()),
        lead_id: Set(lead_id.to_owned()),
        activity_type: Set(fact.activity_type.clone()),
        occurred_at_us: Set(fact.occurred_at.timestamp_micros()),
        properties: Set(serde_json::to_string(&fact.properties).unwrap_or_else(|_| "{}".into())),
    }
}

/// A stored fact as the scoring rules see it. A row that does not decode is corrupt data:
/// replaying it as a fact without properties, or at the epoch, would change scores silently.
fn activity_fact(row: fact::Model) -> Result<ActivityFact, Error> {
    let occurred_at = Utc
        .timestamp_micros(row.occurred_at_us)
        .single()
        .ok_or_else(|| {
            Error::Corrupt(format!(
                "stored activity {} has an impossible time",
                row.activity_id
            ))
        })?;
    let properties =
        serde_json::from_str::<BTreeMap<String, String>>(&row.properties).map_err(|err| {
            Error::Corrupt(format!(
                "stored properties of activity {} do not parse: {err}",
                row.activity_id
            ))
        })?;
    Ok(ActivityFact {
        occurred_at,
        properties,
        id: row.activity_id,
        activity_type: row.activity_type,
    })
}

async fn lead_facts<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_id: &str,
) -> Result<Vec<ActivityFact>, Error> {
    let rows = fact::Entity::find()
        .filter(fact::Column::TenantId.eq(tenant))
        .filter(fact::Column::LeadId.eq(lead_id))
        .all(conn)
        .await?;
    rows.into_iter().map(activity_fact).collect()
}

async fn find_request(
    txn: &DatabaseTransaction,
    tenant: &str,
    request_id: &str,
) -> Result<Option<String>, Error> {
    Ok(
        request::Entity::find_by_id((tenant.to_owned(), request_id.to_owned()))
            .one(txn)
            .await?
            .map(|r| r.result),
    )
}

async fn save_request(
    txn: &DatabaseTransaction,
    tenant: &str,
    request_id: &str,
    result: &str,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    request::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        request_id: Set(request_id.to_owned()),
        result: Set(result.to_owned()),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok(())
}
