//! Qualification's store: published definitions, each lead's stage and state, the append-only
//! log of transitions, remembered answers of idempotent requests, ignored hand-off decisions,
//! and the outbox to handoff. Every stage change, its record and the events announcing it commit
//! together.

mod cache;
mod entities;
mod events;
pub mod migrations;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::handoff::events::v1::{HandoffDecision, handoff_decision};
use leadflow_proto::qualification::v1 as pb;
use leadflow_proto::scoring::v1::{self as scoring_pb, ScoreChangeReason, ScoreChanged};
use leadflow_runtime::outbox::{self, NewMessage, Packing, SharedDeletes, Wakeup, inbox};
use leadflow_runtime::script::WriteScript;
use leadflow_runtime::telemetry::current_trace_id;
use prost::Message;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait,
    DatabaseConnection, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect, TransactionTrait,
};

use crate::convert::{self, TransitionMeta};
use crate::domain::{Definition, FitGrade, Input, LeadQualification, Stage, Transition};
use crate::error::Error;
use cache::LeadCache;
pub use entities::{definition, ignored_decision, lead, request, transition};

/// Outbox destination of qualification's events.
pub const HANDOFF: &str = "handoff";

/// Most leads recycled in one transaction of the ticker.
const RECYCLE_BATCH: u64 = 200;

/// A lead as stored, decoded.
#[derive(Debug, Clone)]
pub struct LeadRecord {
    /// The row.
    pub row: lead::Model,
    /// The qualification state.
    pub state: LeadQualification,
    /// The latest profile from scoring.
    pub profile: common::Profile,
    /// The latest score from scoring, once one arrived.
    pub score: Option<scoring_pb::Score>,
    /// True when the requested id was merged into `row.lead_id`.
    pub merged: bool,
}

/// A transition as recorded.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The lead it moved.
    pub lead_id: String,
    /// Its public id.
    pub transition_id: String,
    /// The move.
    pub transition: Transition,
    /// Trace id of the operation that caused it.
    pub trace_id: String,
    /// The actor's note.
    pub note: String,
}

impl Recorded {
    /// The contract's view of it.
    pub fn to_pb(&self) -> pb::StageTransition {
        convert::transition_to_pb(
            &self.transition,
            &TransitionMeta {
                transition_id: &self.transition_id,
                lead_id: &self.lead_id,
                trace_id: &self.trace_id,
                note: &self.note,
            },
        )
    }

    fn from_row(row: transition::Model) -> Result<Self, Error> {
        let transition = serde_json::from_str(&row.body)
            .map_err(|err| Error::corrupt("stored transition does not parse", err))?;
        Ok(Self {
            lead_id: row.lead_id,
            transition_id: row.transition_id,
            transition,
            trace_id: row.trace_id,
            note: row.note,
        })
    }
}

/// What applying a batch of messages did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Messages applied now (ignored ones included).
    pub applied: i32,
    /// Messages applied before.
    pub duplicates: i32,
    /// Messages recorded but ignored: no longer legal for the lead's stage.
    pub ignored: i32,
}

/// One lead as the funnel sees it.
#[derive(Debug, Clone)]
pub struct FunnelLead {
    /// The lead's `SourceChannel` number.
    pub source_channel: i32,
    /// The definition version of its latest transition.
    pub definition_version: i32,
    /// First seen.
    pub created_at: DateTime<Utc>,
    /// Its transitions, oldest first.
    pub transitions: Vec<Transition>,
}

/// Qualification's data access.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Where the read RPCs' reads go: [`leadflow_runtime::db::reader`], or `db` itself.
    reader: DatabaseConnection,
    wakeup: Wakeup,
    /// How long applied message ids are remembered.
    inbox_retention: TimeDelta,
    /// The relay's deletes, carried by each delivery applied.
    shared_deletes: SharedDeletes,
}

impl Store {
    /// A store over `db`; `wakeup` is poked after commits that enqueued events.
    pub fn new(db: DatabaseConnection, wakeup: Wakeup) -> Self {
        Self {
            reader: db.clone(),
            db,
            wakeup,
            inbox_retention: inbox::DEFAULT_RETENTION,
            shared_deletes: SharedDeletes::new(),
        }
    }

    /// The same store, each delivery it applies also carrying the relay's deletes offered
    /// through `deletes` ([`leadflow_runtime::outbox::Relay::with_shared_deletes`]).
    pub fn with_shared_deletes(self, deletes: SharedDeletes) -> Self {
        Self {
            shared_deletes: deletes,
            ..self
        }
    }

    /// The same store, serving the read RPCs (leads, histories, definitions, the funnel)
    /// through `reader` (read-only connections beside the writer on SQLite), so they neither
    /// wait for the deliveries applied on the one writer connection nor hold them up.
    pub fn with_reader(self, reader: DatabaseConnection) -> Self {
        Self { reader, ..self }
    }

    /// The same store, remembering applied message ids for `retention`
    /// ([`inbox::DEFAULT_RETENTION`] otherwise).
    pub fn with_inbox_retention(self, retention: TimeDelta) -> Self {
        Self {
            inbox_retention: retention,
            ..self
        }
    }

    /// The connection.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    // -----------------------------------------------------------------------------------------
    // Definitions
    // -----------------------------------------------------------------------------------------

    /// Definition `version` of the tenant (0: the default definition), with its publication
    /// time.
    pub async fn definition(
        &self,
        tenant: &str,
        version: i32,
    ) -> Result<Option<(Definition, DateTime<Utc>)>, Error> {
        definition_on(&self.reader, tenant, version).await
    }

    /// The tenant's active definition: the latest published, or the default (version 0).
    pub async fn active_definition(
        &self,
        tenant: &str,
    ) -> Result<(Definition, DateTime<Utc>), Error> {
        active_definition_on(&self.reader, tenant).await
    }

    /// Published versions, newest first, below `before` (exclusive) when given.
    pub async fn definitions(
        &self,
        tenant: &str,
        before: Option<i32>,
        limit: u64,
    ) -> Result<Vec<(Definition, DateTime<Utc>)>, Error> {
        let mut query = definition::Entity::find().filter(definition::Column::TenantId.eq(tenant));
        if let Some(before) = before {
            query = query.filter(definition::Column::Version.lt(before));
        }
        query
            .order_by_desc(definition::Column::Version)
            .limit(limit)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|row| Ok((parse_definition(&row.body)?, row.created_at)))
            .collect()
    }

    /// Publishes `new` as the tenant's next version, now active. A repeated request id answers
    /// the version it published; the flag tells.
    pub async fn publish(
        &self,
        tenant: &str,
        request_id: &str,
        mut new: Definition,
        now: DateTime<Utc>,
    ) -> Result<(Definition, DateTime<Utc>, bool), Error> {
        const METHOD: &str = "PublishDefinition";
        let txn = self.db.begin().await?;
        if let Some(previous) = find_request(&txn, tenant, request_id, METHOD).await? {
            let version = pb::QualificationDefinition::decode(previous.as_slice())
                .map_err(|err| Error::corrupt("stored answer does not decode", err))?
                .version;
            let (definition, created) = definition_on(&txn, tenant, version)
                .await?
                .ok_or_else(|| Error::Corrupt(format!("definition {version} missing")))?;
            return Ok((definition, created, true));
        }
        let (active, _) = active_definition_on(&txn, tenant).await?;
        new.version = active.version + 1;
        definition::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            version: Set(new.version),
            body: Set(serde_json::to_string(&new)
                .map_err(|err| Error::corrupt("definition does not serialise", err))?),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let answer = convert::definition_to_pb(&new, Some(now)).encode_to_vec();
        save_request(&txn, tenant, request_id, METHOD, answer, now).await?;
        txn.commit().await?;
        tracing::info!(
            tenant,
            version = new.version,
            "qualification definition published"
        );
        Ok((new, now, false))
    }

    // -----------------------------------------------------------------------------------------
    // Leads and history
    // -----------------------------------------------------------------------------------------

    /// The lead `lead_id` (or the lead it was merged into).
    pub async fn lead(&self, tenant: &str, lead_id: &str) -> Result<Option<LeadRecord>, Error> {
        find_lead(&self.reader, tenant, lead_id, false).await
    }

    /// The ids of the leads merged into each of `lead_ids`.
    pub async fn merged_ids(
        &self,
        tenant: &str,
        lead_ids: &[String],
    ) -> Result<HashMap<String, Vec<String>>, Error> {
        let rows = lead::Entity::find()
            .filter(lead::Column::TenantId.eq(tenant))
            .filter(lead::Column::MergedInto.is_in(lead_ids.iter().cloned()))
            .order_by_asc(lead::Column::LeadId)
            .all(&self.reader)
            .await?;
        let mut merged: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            if let Some(survivor) = row.merged_into {
                merged.entry(survivor).or_default().push(row.lead_id);
            }
        }
        Ok(merged)
    }

    /// Leads not merged away, those that entered their stage most recently first, optionally
    /// in one stage and from one source channel, after the `(stage_entered_at, lead_id)` cursor
    /// when given.
    pub async fn list_leads(
        &self,
        tenant: &str,
        stage: Option<Stage>,
        source_channel: Option<i32>,
        after: Option<(DateTime<Utc>, String)>,
        limit: u64,
    ) -> Result<Vec<LeadRecord>, Error> {
        list_leads_query(tenant, stage, source_channel, after, limit)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|row| decode(row, false))
            .collect()
    }

    /// A lead's transitions after row `after` (exclusive), oldest first, with their row ids.
    pub async fn history(
        &self,
        tenant: &str,
        lead_id: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(i64, Recorded)>, Error> {
        transition::Entity::find()
            .filter(transition::Column::TenantId.eq(tenant))
            .filter(transition::Column::LeadId.eq(lead_id))
            .filter(transition::Column::Id.gt(after))
            .order_by_asc(transition::Column::Id)
            .limit(limit)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|row| Ok((row.id, Recorded::from_row(row)?)))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Decisions of SDRs (RPCs)
    // -----------------------------------------------------------------------------------------

    /// Applies an SDR's `input` to `lead_id` under the tenant's active definition, once per
    /// `request_id` (empty: no deduplication). The answer `respond` builds is stored with the
    /// change; a repeated request id gets the stored answer back and `true`.
    #[allow(clippy::too_many_arguments)] // one decision: who, what, on which lead, and its answer
    pub async fn decide<M, F>(
        &self,
        tenant: &str,
        request_id: &str,
        method: &'static str,
        lead_id: &str,
        input: Input,
        note: &str,
        now: DateTime<Utc>,
        respond: F,
    ) -> Result<(M, bool), Error>
    where
        M: Message + Default,
        F: FnOnce(&LeadRecord, &[Recorded]) -> M,
    {
        let txn = self.db.begin().await?;
        if let Some(previous) = find_request(&txn, tenant, request_id, method).await? {
            let answer = M::decode(previous.as_slice())
                .map_err(|err| Error::corrupt("stored answer does not decode", err))?;
            return Ok((answer, true));
        }
        let mut lead = load_lead(&txn, tenant, lead_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("lead {lead_id}")))?;
        let (definition, _) = active_definition_on(&txn, tenant).await?;
        let (recorded, messages) = apply(&txn, &mut lead, &definition, input, note, now, false)
            .await?
            .map_err(Error::Refused)?;
        let answer = respond(&lead, &recorded);
        save_request(
            &txn,
            tenant,
            request_id,
            method,
            answer.encode_to_vec(),
            now,
        )
        .await?;
        let announced = !messages.is_empty();
        outbox::enqueue(&txn, messages, Packing::PerMessage).await?;
        txn.commit().await?;
        if announced {
            self.wakeup.wake();
        }
        Ok((answer, false))
    }

    // -----------------------------------------------------------------------------------------
    // Messages from scoring and handoff
    // -----------------------------------------------------------------------------------------

    /// Applies score changes from scoring in order, each message id once, in one transaction:
    /// creates unknown leads, merges duplicates, keeps the latest profile and score, and runs
    /// the definition's rules. The batch's message ids are claimed and its leads read up front,
    /// each lead moves in memory event after event and is written back once at the end (a merge
    /// writes back what came before it, then re-reads).
    pub async fn apply_score_changes(
        &self,
        events: Vec<ScoreChanged>,
        now: DateTime<Utc>,
    ) -> Result<Applied, Error> {
        let headers: Vec<_> = events
            .iter()
            .map(|e| e.header.clone().unwrap_or_default())
            .collect();
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
        let mut definitions = ActiveDefinitions::default();
        for (event, header) in events.into_iter().zip(headers) {
            if !claimed.admits(&header.message_id) {
                applied.duplicates += 1;
                continue;
            }
            applied.applied += 1;
            let tenant = header.tenant_id.as_str();
            let definition = definitions.get(&txn, tenant).await?;
            if event.reason == ScoreChangeReason::Merge as i32 && !event.merged_lead_id.is_empty() {
                leads.flush(&mut script, now)?;
                script.run(&txn).await?;
                let mut lead = load_or_create(&txn, tenant, &header.lead_id, now).await?;
                merge(
                    &txn,
                    &mut lead,
                    &event.merged_lead_id,
                    definition,
                    now,
                    &mut out,
                )
                .await?;
                let staged = apply_score_change(&mut lead, event, definition, now)?;
                transition::Entity::insert_many(staged.rows)
                    .exec_without_returning(&txn)
                    .await?;
                save_lead(&txn, &mut lead, now).await?;
                out.extend(staged.messages);
                continue;
            }
            let lead = leads.lead(&txn, tenant, &header.lead_id, now).await?;
            let staged = apply_score_change(lead, event, definition, now)?;
            out.extend(staged.messages);
            let key = cache::key_of(lead);
            leads.changed(key, staged.rows);
        }
        leads.flush(&mut script, now)?;
        let announced = !out.is_empty();
        outbox::enqueue_into(&mut script, out, Packing::PerMessage)?;
        script.run(&txn).await?;
        txn.commit().await?;
        carried.committed();
        if announced {
            self.wakeup.wake();
        }
        Ok(applied)
    }

    /// Applies SDR decisions and sales outcomes from handoff in order, each message id once, in
    /// one transaction. A decision no longer legal for the lead's stage (or for a lead this
    /// service does not know) is recorded as ignored, not refused, so it cannot block the lead's
    /// stream.
    pub async fn apply_handoff_decisions(
        &self,
        events: Vec<HandoffDecision>,
        now: DateTime<Utc>,
    ) -> Result<Applied, Error> {
        let txn = self.db.begin().await?;
        let mut applied = Applied::default();
        let mut out = Vec::new();
        let mut definitions = ActiveDefinitions::default();
        for event in events {
            let header = event.header.clone().unwrap_or_default();
            if !inbox::claim(&txn, &header.message_id, &header.tenant_id, now).await? {
                applied.duplicates += 1;
                continue;
            }
            applied.applied += 1;
            let tenant = header.tenant_id.as_str();
            let ignored = match (
                load_lead(&txn, tenant, &header.lead_id).await?,
                decision_input(&event),
            ) {
                (None, _) => Some(format!("lead {} not found", header.lead_id)),
                (_, Err(why)) => Some(why),
                (Some(mut lead), Ok(input)) => {
                    let definition = definitions.get(&txn, tenant).await?;
                    match apply(&txn, &mut lead, definition, input, &event.note, now, false).await?
                    {
                        Ok((_, messages)) => {
                            out.extend(messages);
                            None
                        }
                        Err(refusal) => Some(refusal.to_string()),
                    }
                }
            };
            if let Some(reason) = ignored {
                tracing::info!(
                    tenant,
                    lead_id = %header.lead_id,
                    message_id = %header.message_id,
                    reason,
                    "hand-off decision ignored"
                );
                applied.ignored += 1;
                ignored_decision::ActiveModel {
                    message_id: Set(header.message_id.clone()),
                    tenant_id: Set(header.tenant_id.clone()),
                    lead_id: Set(header.lead_id.clone()),
                    reason: Set(reason),
                    payload: Set(event.encode_to_vec()),
                    received_at: Set(now),
                }
                .insert(&txn)
                .await?;
            }
        }
        let announced = !out.is_empty();
        outbox::enqueue(&txn, out, Packing::PerMessage).await?;
        txn.commit().await?;
        if announced {
            self.wakeup.wake();
        }
        Ok(applied)
    }

    // -----------------------------------------------------------------------------------------
    // Time
    // -----------------------------------------------------------------------------------------

    /// Runs the recycle rules on every un-accepted MQL of every tenant at `now`: returns how
    /// many leads were moved back to nurture.
    pub async fn recycle(&self, now: DateTime<Utc>) -> Result<usize, Error> {
        let mut moved = 0;
        let mut after: Option<(String, String)> = None;
        loop {
            let mut query = lead::Entity::find()
                .filter(lead::Column::Stage.eq(Stage::Mql.name()))
                .filter(lead::Column::MergedInto.is_null());
            if let Some((tenant, lead_id)) = &after {
                query = query.filter(
                    Condition::any()
                        .add(lead::Column::TenantId.gt(tenant.as_str()))
                        .add(
                            Condition::all()
                                .add(lead::Column::TenantId.eq(tenant.as_str()))
                                .add(lead::Column::LeadId.gt(lead_id.as_str())),
                        ),
                );
            }
            let batch: Vec<(String, String)> = query
                .order_by_asc(lead::Column::TenantId)
                .order_by_asc(lead::Column::LeadId)
                .limit(RECYCLE_BATCH)
                .all(&self.db)
                .await?
                .into_iter()
                .map(|row| (row.tenant_id, row.lead_id))
                .collect();
            let Some(last) = batch.last().cloned() else {
                return Ok(moved);
            };
            let txn = self.db.begin().await?;
            let mut out = Vec::new();
            let mut definitions = ActiveDefinitions::default();
            for (tenant, lead_id) in &batch {
                let Some(mut lead) = load_lead(&txn, tenant, lead_id).await? else {
                    continue;
                };
                let definition = definitions.get(&txn, tenant).await?;
                if let Ok((recorded, messages)) =
                    apply(&txn, &mut lead, definition, Input::Tick, "", now, false).await?
                {
                    moved += recorded.len();
                    out.extend(messages);
                }
            }
            let announced = !out.is_empty();
            outbox::enqueue(&txn, out, Packing::PerMessage).await?;
            txn.commit().await?;
            if announced {
                self.wakeup.wake();
            }
            after = Some(last);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Funnel
    // -----------------------------------------------------------------------------------------

    /// Every lead of the tenant that was created or moved in `[start, end)`, with its whole
    /// history (later moves count for conversions), optionally only from some source channels.
    pub async fn funnel_leads(
        &self,
        tenant: &str,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        source_channels: &[i32],
    ) -> Result<Vec<FunnelLead>, Error> {
        let mut ids: Vec<String> = transition::Entity::find()
            .select_only()
            .column(transition::Column::LeadId)
            .distinct()
            .filter(transition::Column::TenantId.eq(tenant))
            .filter(transition::Column::At.gte(start))
            .filter(transition::Column::At.lt(end))
            .into_tuple()
            .all(&self.reader)
            .await?;
        let created: Vec<String> = lead::Entity::find()
            .select_only()
            .column(lead::Column::LeadId)
            .filter(lead::Column::TenantId.eq(tenant))
            .filter(lead::Column::CreatedAt.gte(start))
            .filter(lead::Column::CreatedAt.lt(end))
            .into_tuple()
            .all(&self.reader)
            .await?;
        ids.extend(created);
        ids.sort();
        ids.dedup();
        let mut leads = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let mut query = lead::Entity::find()
                .filter(lead::Column::TenantId.eq(tenant))
                .filter(lead::Column::LeadId.is_in(chunk.iter().cloned()));
            if !source_channels.is_empty() {
                query = query
                    .filter(lead::Column::SourceChannel.is_in(source_channels.iter().copied()));
            }
            let rows = query.all(&self.reader).await?;
            let mut histories: BTreeMap<String, Vec<Transition>> = BTreeMap::new();
            for row in transition::Entity::find()
                .filter(transition::Column::TenantId.eq(tenant))
                .filter(transition::Column::LeadId.is_in(rows.iter().map(|r| r.lead_id.clone())))
                .order_by_asc(transition::Column::Id)
                .all(&self.reader)
                .await?
            {
                let recorded = Recorded::from_row(row)?;
                histories
                    .entry(recorded.lead_id)
                    .or_default()
                    .push(recorded.transition);
            }
            for row in rows {
                leads.push(FunnelLead {
                    source_channel: row.source_channel,
                    definition_version: row.definition_version,
                    created_at: row.created_at,
                    transitions: histories.remove(&row.lead_id).unwrap_or_default(),
                });
            }
        }
        Ok(leads)
    }
}

/// What one input did to a lead, not yet written: the transitions to record (their rows) and
/// the events announcing them.
#[derive(Default)]
struct Staged {
    recorded: Vec<Recorded>,
    rows: Vec<transition::ActiveModel>,
    messages: Vec<NewMessage>,
}

/// Applies `input` to `lead` under `definition` in memory: the transitions (with the current
/// trace id) and their events, `None` when nothing changed and `always_save` is off; or the
/// refusal, having changed nothing.
fn stage(
    lead: &mut LeadRecord,
    definition: &Definition,
    input: Input,
    note: &str,
    now: DateTime<Utc>,
    always_save: bool,
) -> Result<Result<Option<Staged>, crate::domain::Refusal>, Error> {
    let before = lead.state.clone();
    let transitions = match lead.state.apply(definition, input, now) {
        Ok(transitions) => transitions,
        Err(refusal) => return Ok(Err(refusal)),
    };
    if transitions.is_empty() && lead.state == before && !always_save {
        return Ok(Ok(None));
    }
    let trace_id = current_trace_id().unwrap_or_default();
    let mut recorded = Vec::with_capacity(transitions.len());
    let mut rows = Vec::with_capacity(transitions.len());
    for transition in transitions {
        let r = Recorded {
            lead_id: lead.row.lead_id.clone(),
            transition_id: uuid::Uuid::now_v7().to_string(),
            transition,
            trace_id: trace_id.clone(),
            note: note.to_owned(),
        };
        rows.push(transition::ActiveModel {
            tenant_id: Set(lead.row.tenant_id.clone()),
            lead_id: Set(r.lead_id.clone()),
            transition_id: Set(r.transition_id.clone()),
            body: Set(serde_json::to_string(&r.transition)
                .map_err(|err| Error::corrupt("transition does not serialise", err))?),
            at: Set(r.transition.at),
            trace_id: Set(r.trace_id.clone()),
            note: Set(r.note.clone()),
            ..Default::default()
        });
        lead.row.definition_version = r.transition.definition_version;
        recorded.push(r);
    }
    let messages = events::for_transitions(lead, &recorded, now);
    Ok(Ok(Some(Staged {
        recorded,
        rows,
        messages,
    })))
}

/// Takes scoring's latest profile and score of `lead` and runs the definition's rules on the
/// score, in memory: what the caller writes (the lead is always saved).
fn apply_score_change(
    lead: &mut LeadRecord,
    event: ScoreChanged,
    definition: &Definition,
    now: DateTime<Utc>,
) -> Result<Staged, Error> {
    if let Some(profile) = event.profile {
        lead.row.source_channel = profile.source_channel;
        lead.profile = profile;
    }
    let Some(score) = event.score else {
        return Ok(Staged::default());
    };
    let input = Input::Score {
        score: score.score,
        // Scoring grades every lead it scores; an ungraded one does not fit.
        grade: convert::grade_from_pb(score.fit_grade).unwrap_or(FitGrade::D),
        activity_type: event.triggering_activity.map(|activity| activity.r#type),
    };
    lead.score = Some(score);
    match stage(lead, definition, input, "", now, true)? {
        Ok(staged) => Ok(staged.unwrap_or_default()),
        Err(refusal) => Err(Error::Corrupt(format!("a score was refused: {refusal}"))),
    }
}

/// Applies `input` to `lead` under `definition` inside `txn`: records each transition (with the
/// current trace id), saves the lead (unless nothing changed and `always_save` is off), and
/// returns the records and the events announcing them; or the refusal, having changed nothing.
#[allow(clippy::too_many_arguments)] // one input applied to one lead, with what to record
async fn apply(
    txn: &DatabaseTransaction,
    lead: &mut LeadRecord,
    definition: &Definition,
    input: Input,
    note: &str,
    now: DateTime<Utc>,
    always_save: bool,
) -> Result<Result<(Vec<Recorded>, Vec<NewMessage>), crate::domain::Refusal>, Error> {
    let staged = match stage(lead, definition, input, note, now, always_save)? {
        Ok(Some(staged)) => staged,
        Ok(None) => return Ok(Ok((Vec::new(), Vec::new()))),
        Err(refusal) => return Ok(Err(refusal)),
    };
    transition::Entity::insert_many(staged.rows)
        .exec_without_returning(txn)
        .await?;
    save_lead(txn, lead, now).await?;
    Ok(Ok((staged.recorded, staged.messages)))
}

/// Merges `absorbed_id` into `survivor`: the absorbed lead points at the survivor from now on,
/// the survivor keeps the more advanced stage, and handoff is told.
async fn merge(
    txn: &DatabaseTransaction,
    survivor: &mut LeadRecord,
    absorbed_id: &str,
    definition: &Definition,
    now: DateTime<Utc>,
    out: &mut Vec<NewMessage>,
) -> Result<(), Error> {
    if absorbed_id == survivor.row.lead_id {
        return Ok(());
    }
    let row = lead::Entity::find_by_id((survivor.row.tenant_id.clone(), absorbed_id.to_owned()))
        .lock_exclusive()
        .one(txn)
        .await?;
    let Some(row) = row.filter(|row| row.merged_into.is_none()) else {
        return Ok(());
    };
    let absorbed = decode(row, false)?;
    let mut active = absorbed.row.clone().into_active_model();
    active.merged_into = Set(Some(survivor.row.lead_id.clone()));
    active.updated_at = Set(now);
    active.update(txn).await?;
    let input = Input::Merge {
        absorbed_id: absorbed_id.to_owned(),
        absorbed: Box::new(absorbed.state),
    };
    if let Ok((_, messages)) = apply(txn, survivor, definition, input, "", now, true).await? {
        out.extend(messages);
    }
    out.push(events::leads_merged(survivor, absorbed_id, now));
    Ok(())
}

/// The state-machine input a hand-off decision stands for, or why it stands for none.
fn decision_input(event: &HandoffDecision) -> Result<Input, String> {
    let actor = if event.actor_id.is_empty() {
        event.owner_id.clone()
    } else {
        event.actor_id.clone()
    };
    use common::sales_outcome::Outcome;
    use handoff_decision::Decision;
    match &event.decision {
        Some(Decision::Accepted(_)) => Ok(Input::Accept { sdr: actor }),
        Some(Decision::Rejected(rejected)) => convert::reject_reason_from_pb(rejected.reason)
            .map(|reason| Input::Reject { sdr: actor, reason })
            .ok_or_else(|| "rejection without a known reason".to_owned()),
        Some(Decision::Outcome(outcome)) => match &outcome.outcome {
            Some(Outcome::Opportunity(_)) => Ok(Input::Opportunity { by: actor }),
            Some(Outcome::Won(_)) => Ok(Input::Won { by: actor }),
            Some(Outcome::Lost(lost)) => Ok(Input::Lost {
                by: actor,
                reason: convert::lost_reason_from_pb(lost.reason)
                    .unwrap_or(crate::domain::LostReason::Other),
            }),
            None => Err("outcome without a value".to_owned()),
        },
        None => Err("decision without a value".to_owned()),
    }
}

/// Definition `version` of the tenant on `conn` (0: the default definition).
async fn definition_on<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    version: i32,
) -> Result<Option<(Definition, DateTime<Utc>)>, Error> {
    if version == 0 {
        return Ok(Some((Definition::default(), epoch())));
    }
    definition::Entity::find_by_id((tenant.to_owned(), version))
        .one(conn)
        .await?
        .map(|row| Ok((parse_definition(&row.body)?, row.created_at)))
        .transpose()
}

async fn active_definition_on<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
) -> Result<(Definition, DateTime<Utc>), Error> {
    let row = definition::Entity::find()
        .filter(definition::Column::TenantId.eq(tenant))
        .order_by_desc(definition::Column::Version)
        .one(conn)
        .await?;
    match row {
        Some(row) => Ok((parse_definition(&row.body)?, row.created_at)),
        None => Ok((Definition::default(), epoch())),
    }
}

fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(0, 0).single().unwrap_or_default()
}

/// Each tenant's active definition, read once per batch rather than once per message.
#[derive(Default)]
struct ActiveDefinitions(HashMap<String, Definition>);

impl ActiveDefinitions {
    async fn get(&mut self, txn: &DatabaseTransaction, tenant: &str) -> Result<&Definition, Error> {
        if !self.0.contains_key(tenant) {
            let (definition, _) = active_definition_on(txn, tenant).await?;
            self.0.insert(tenant.to_owned(), definition);
        }
        self.0
            .get(tenant)
            .ok_or_else(|| Error::Corrupt(format!("active definition of {tenant} not cached")))
    }
}

fn parse_definition(body: &str) -> Result<Definition, Error> {
    serde_json::from_str(body)
        .map_err(|err| Error::corrupt("stored definition does not parse", err))
}

/// The query of [`Store::list_leads`]: in the order of the listing's indexes, the cursor a range
/// of them, so a page starts where the last one ended instead of walking every lead before it.
fn list_leads_query(
    tenant: &str,
    stage: Option<Stage>,
    source_channel: Option<i32>,
    after: Option<(DateTime<Utc>, String)>,
    limit: u64,
) -> sea_orm::Select<lead::Entity> {
    let mut query = lead::Entity::find()
        .filter(lead::Column::TenantId.eq(tenant))
        .filter(lead::Column::MergedInto.is_null());
    if let Some(stage) = stage {
        query = query.filter(lead::Column::Stage.eq(stage.name()));
    }
    if let Some(channel) = source_channel {
        query = query.filter(lead::Column::SourceChannel.eq(channel));
    }
    if let Some((entered_at, lead_id)) = after {
        query = query
            .filter(lead::Column::StageEnteredAt.lte(entered_at))
            .filter(
                Condition::any()
                    .add(lead::Column::StageEnteredAt.lt(entered_at))
                    .add(lead::Column::LeadId.gt(lead_id)),
            );
    }
    query
        .order_by_desc(lead::Column::StageEnteredAt)
        .order_by_asc(lead::Column::LeadId)
        .limit(limit)
}

fn decode(row: lead::Model, merged: bool) -> Result<LeadRecord, Error> {
    let state = serde_json::from_str(&row.state)
        .map_err(|err| Error::corrupt("stored lead state does not parse", err))?;
    let profile = common::Profile::decode(row.profile.as_slice())
        .map_err(|err| Error::corrupt("stored profile does not decode", err))?;
    let score = if row.score.is_empty() {
        None
    } else {
        Some(
            scoring_pb::Score::decode(row.score.as_slice())
                .map_err(|err| Error::corrupt("stored score does not decode", err))?,
        )
    };
    Ok(LeadRecord {
        row,
        state,
        profile,
        score,
        merged,
    })
}

/// The lead `lead_id` (or the lead it was merged into), its row locked until the end of the
/// transaction `conn` (PostgreSQL; SQLite has a single writer): a concurrent change to the same
/// lead waits instead of being overwritten.
async fn load_lead<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_id: &str,
) -> Result<Option<LeadRecord>, Error> {
    find_lead(conn, tenant, lead_id, true).await
}

async fn find_lead<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_id: &str,
    lock: bool,
) -> Result<Option<LeadRecord>, Error> {
    let by_id = |id: String| {
        let query = lead::Entity::find_by_id((tenant.to_owned(), id));
        if lock { query.lock_exclusive() } else { query }
    };
    let Some(row) = by_id(lead_id.to_owned()).one(conn).await? else {
        return Ok(None);
    };
    match row.merged_into.clone() {
        Some(survivor) => by_id(survivor)
            .one(conn)
            .await?
            .map(|row| decode(row, true))
            .transpose(),
        None => decode(row, false).map(Some),
    }
}

async fn load_or_create(
    txn: &DatabaseTransaction,
    tenant: &str,
    lead_id: &str,
    now: DateTime<Utc>,
) -> Result<LeadRecord, Error> {
    if let Some(lead) = load_lead(txn, tenant, lead_id).await? {
        return Ok(lead);
    }
    let mut lead = cache::new_lead(tenant, lead_id, now);
    refresh_row(&mut lead, now)?;
    lead.row.clone().into_active_model().insert(txn).await?;
    Ok(lead)
}

/// Writes `lead` back: its stage, state, profile and score.
async fn save_lead(
    txn: &DatabaseTransaction,
    lead: &mut LeadRecord,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    refresh_row(lead, now)?;
    let mut active = lead.row.clone().into_active_model();
    for column in SAVED_COLUMNS.into_iter().chain(STAGE_COLUMNS) {
        active.reset(column);
    }
    active.update(txn).await?;
    Ok(())
}

/// The columns every save writes.
const SAVED_COLUMNS: [lead::Column; 6] = [
    lead::Column::State,
    lead::Column::Profile,
    lead::Column::Score,
    lead::Column::SourceChannel,
    lead::Column::DefinitionVersion,
    lead::Column::UpdatedAt,
];

/// The columns of the stage index, which a save writes when the lead's stage changed.
const STAGE_COLUMNS: [lead::Column; 2] = [lead::Column::Stage, lead::Column::StageEnteredAt];

/// Brings `lead`'s row up to date with its state, profile and score, as saved at `now`.
fn refresh_row(lead: &mut LeadRecord, now: DateTime<Utc>) -> Result<(), Error> {
    lead.row.stage = lead.state.stage.name().to_owned();
    lead.row.stage_entered_at = lead.state.stage_entered_at;
    lead.row.state = serde_json::to_string(&lead.state)
        .map_err(|err| Error::corrupt("lead state does not serialise", err))?;
    lead.row.profile = lead.profile.encode_to_vec();
    lead.row.score = lead
        .score
        .as_ref()
        .map(Message::encode_to_vec)
        .unwrap_or_default();
    lead.row.updated_at = now;
    Ok(())
}

/// The stored answer of `request_id` for `method`; an id used before for another method is
/// refused. An empty id is never remembered.
async fn find_request(
    txn: &DatabaseTransaction,
    tenant: &str,
    request_id: &str,
    method: &str,
) -> Result<Option<Vec<u8>>, Error> {
    if request_id.is_empty() {
        return Ok(None);
    }
    match request::Entity::find_by_id((tenant.to_owned(), request_id.to_owned()))
        .one(txn)
        .await?
    {
        Some(row) if row.method == method => Ok(Some(row.response)),
        Some(row) => Err(Error::invalid(
            "request_id",
            &format!("already used for {}", row.method),
        )),
        None => Ok(None),
    }
}

async fn save_request(
    txn: &DatabaseTransaction,
    tenant: &str,
    request_id: &str,
    method: &str,
    response: Vec<u8>,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    if request_id.is_empty() {
        return Ok(());
    }
    request::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        request_id: Set(request_id.to_owned()),
        method: Set(method.to_owned()),
        response: Set(response),
        created_at: Set(now),
    }
    .insert(txn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use leadflow_test_support::{Backend, TestDb};
    use sea_orm::{DbBackend, QueryTrait, Statement};
    use sea_orm_migration::MigratorTrait;

    use super::*;
    use crate::store::migrations::{ALL_LEADS_BY_ENTRY_INDEX, Migrator};

    /// SQLite's plan of `query`, one line per step.
    async fn plan(conn: &DatabaseConnection, query: sea_orm::Select<lead::Entity>) -> String {
        let statement = query.build(DbBackend::Sqlite);
        let explain = Statement::from_sql_and_values(
            DbBackend::Sqlite,
            format!("EXPLAIN QUERY PLAN {}", statement.sql),
            statement.values.map(|values| values.0).unwrap_or_default(),
        );
        let rows = conn.query_all_raw(explain).await.expect("explain");
        rows.iter()
            .map(|row| row.try_get::<String>("", "detail").expect("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An unfiltered page of `ListLeads` walks the listing's index from its cursor: no sort of
    /// the tenant's leads, no walk over the pages before it.
    #[tokio::test]
    async fn unfiltered_pages_read_from_their_cursor_in_index_order() {
        let db = TestDb::new(Backend::Sqlite).await.expect("sqlite");
        let conn = leadflow_runtime::db::connect(&db.url, 1)
            .await
            .expect("connect");
        Migrator::up(&conn, None).await.expect("migrations");
        let cursor = (Utc::now(), "lead-1".to_owned());

        let first = plan(&conn, list_leads_query("t", None, None, None, 101)).await;
        assert!(first.contains(ALL_LEADS_BY_ENTRY_INDEX), "{first}");
        assert!(!first.contains("TEMP B-TREE"), "no sort: {first}");

        let next = plan(
            &conn,
            list_leads_query("t", None, Some(1), Some(cursor), 101),
        )
        .await;
        assert!(
            next.contains(&format!(
                "{ALL_LEADS_BY_ENTRY_INDEX} (tenant_id=? AND stage_entered_at<?)"
            )),
            "the cursor is a range of the index: {next}"
        );
        assert!(!next.contains("TEMP B-TREE"), "no sort: {next}");
    }
}
