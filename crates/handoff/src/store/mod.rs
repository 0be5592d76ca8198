//! Handoff's store: owners, versioned routing rules and the round-robin state, hand-offs with
//! their warm context and the log of their changes (which is also the stream's cursor), answers
//! of idempotent requests, webhook endpoints and their delivery log, and the outbox of decisions
//! to qualification and scoring. A change, its log entry, its webhook deliveries and its outbox
//! messages commit together.

mod entities;
pub mod migrations;

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::handoff::events::v1::{self as events, handoff_decision::Decision};
use leadflow_proto::handoff::v1 as pb;
use leadflow_proto::qualification::v1::{QualificationEvent, qualification_event::Event};
use leadflow_runtime::db::{MAX_ROWS_PER_STATEMENT, in_list};
use leadflow_runtime::outbox::{self, NewMessage, Packing, Wakeup, inbox};
use leadflow_runtime::pbtime::to_timestamp;
use prost::Message;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, DbBackend, EntityTrait, IntoActiveModel, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
};
use tokio::sync::watch;

use crate::convert;
use crate::domain::owner::{LeadFacts, Owner};
use crate::domain::routing::{
    HandoffQueue, OpenCounts, RoundRobinState, Route, RoutingRules, route,
};
use crate::domain::sla::{Escalation, EscalationCase, escalate, should_escalate};
use crate::domain::status::{self, Action, HandoffKind, HandoffStatus};
use crate::error::Error;
pub use entities::{change, delivery, handoff, owner, request, round_robin, rules, webhook};

/// The PostgreSQL advisory lock key that orders commits to the change log (b"handoff" as an
/// integer; any constant no other lock in this database uses).
const CHANGE_LOG_LOCK: i64 = 0x68_61_6e_64_6f_66_66;

/// Outbox destination of decisions for qualification.
pub const QUALIFICATION: &str = "qualification";
/// Outbox destination of decisions for scoring.
pub const SCORING: &str = "scoring";

/// What applying a batch of messages did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Messages applied now.
    pub applied: i32,
    /// Messages applied before.
    pub duplicates: i32,
}

/// A hand-off request with the warm context built for it before the transaction.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The event as qualification sent it.
    pub event: QualificationEvent,
    /// The warm context, for hand-off requests.
    pub context: Option<pb::WarmContext>,
}

/// A decision or progress report on a hand-off, by the CRM.
#[derive(Debug, Clone)]
pub struct Act {
    /// What happens.
    pub action: Action,
    /// Who (a CRM user id); the owner when empty.
    pub actor_id: String,
    /// Free-form note.
    pub note: String,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The CRM's record id, for acknowledgements.
    pub crm_record_id: String,
    /// The reason, for rejections.
    pub rejection_reason: i32,
    /// The outcome, for sales outcomes.
    pub outcome: Option<common::SalesOutcome>,
}

/// Reads of hand-offs from one snapshot of the store ([`Store::read`]).
#[derive(Debug)]
pub struct Reader {
    txn: DatabaseTransaction,
}

impl Reader {
    /// One hand-off.
    pub async fn handoff(
        &self,
        tenant: &str,
        handoff_id: &str,
    ) -> Result<Option<handoff::Model>, Error> {
        Ok(
            handoff::Entity::find_by_id((tenant.to_owned(), handoff_id.to_owned()))
                .one(&self.txn)
                .await?,
        )
    }

    /// A hand-off's changes, oldest first.
    pub async fn history(
        &self,
        tenant: &str,
        handoff_id: &str,
    ) -> Result<Vec<pb::HandoffStatusChange>, Error> {
        self.history_through(tenant, handoff_id, i64::MAX).await
    }

    /// A hand-off's changes up to the change `last_change` (its id in the change log), oldest
    /// first: its history as of that change.
    pub async fn history_through(
        &self,
        tenant: &str,
        handoff_id: &str,
        last_change: i64,
    ) -> Result<Vec<pb::HandoffStatusChange>, Error> {
        change::Entity::find()
            .filter(change::Column::TenantId.eq(tenant))
            .filter(change::Column::HandoffId.eq(handoff_id))
            .filter(change::Column::Id.lte(last_change))
            .order_by_asc(change::Column::Id)
            .all(&self.txn)
            .await?
            .into_iter()
            .map(|row| decode_change(&row.body))
            .collect()
    }

    /// The changes of each of `handoff_ids`, oldest first: a page's histories in one query per
    /// [`MAX_ROWS_PER_STATEMENT`] ids. A hand-off without changes is absent from the map.
    pub async fn histories(
        &self,
        tenant: &str,
        handoff_ids: &[String],
    ) -> Result<HashMap<String, Vec<pb::HandoffStatusChange>>, Error> {
        let mut histories: HashMap<String, Vec<pb::HandoffStatusChange>> = HashMap::new();
        for ids in handoff_ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let rows = change::Entity::find()
                .filter(change::Column::TenantId.eq(tenant))
                .filter(change::Column::HandoffId.is_in(in_list(ids)))
                .order_by_asc(change::Column::Id)
                .all(&self.txn)
                .await?;
            for row in rows {
                let change = decode_change(&row.body)?;
                histories.entry(row.handoff_id).or_default().push(change);
            }
        }
        Ok(histories)
    }

    /// Hand-offs matching `filter`, oldest first (ids are time-ordered), after the hand-off id
    /// `after` when given.
    pub async fn list(
        &self,
        tenant: &str,
        filter: &pb::HandoffFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<handoff::Model>, Error> {
        let mut query = handoff::Entity::find().filter(handoff::Column::TenantId.eq(tenant));
        if !filter.statuses.is_empty() {
            query = query.filter(handoff::Column::Status.is_in(filter.statuses.iter().copied()));
        }
        if !filter.owner_id.is_empty() {
            query = query.filter(handoff::Column::OwnerId.eq(filter.owner_id.as_str()));
        }
        if filter.kind != 0 {
            query = query.filter(handoff::Column::Kind.eq(filter.kind));
        }
        if filter.queue != 0 {
            query = query.filter(handoff::Column::Queue.eq(filter.queue));
        }
        if !filter.lead_id.is_empty() {
            query = query.filter(handoff::Column::LeadId.eq(filter.lead_id.as_str()));
        }
        if let Some(after) = after {
            query = query.filter(handoff::Column::HandoffId.gt(after));
        }
        Ok(query
            .order_by_asc(handoff::Column::HandoffId)
            .limit(limit)
            .all(&self.txn)
            .await?)
    }
}

/// Handoff's data access.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Where the read RPCs' reads go: [`leadflow_runtime::db::reader`], or `db` itself.
    reader: DatabaseConnection,
    wakeups: Vec<Wakeup>,
    changes: watch::Sender<u64>,
    /// How long applied message ids are remembered.
    inbox_retention: TimeDelta,
}

impl Store {
    /// A store over `db`; each of `wakeups` (one per relay) is poked after commits that
    /// enqueued decisions.
    pub fn new(db: DatabaseConnection, wakeups: Vec<Wakeup>) -> Self {
        Self {
            reader: db.clone(),
            db,
            wakeups,
            changes: watch::Sender::new(0),
            inbox_retention: inbox::DEFAULT_RETENTION,
        }
    }

    /// The same store, serving the read RPCs (hand-offs and their histories, the change
    /// stream, owners, rules, webhooks, the SLA report) and the warm-context check through
    /// `reader` (read-only connections beside the writer on SQLite), so they neither wait for
    /// the writes on the one writer connection nor hold them up.
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

    /// Fires after every commit that logged hand-off changes, for streams to catch up.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Begins a transaction that may log hand-off changes. On PostgreSQL it first takes the
    /// change log's advisory lock, held until commit: change ids then commit in the order they
    /// are drawn, so a stream reading `id > cursor` can never pass over a lower id that commits
    /// later. Taken before any row lock, so it cannot deadlock with them. SQLite has one writer
    /// and needs nothing.
    async fn begin_logged(&self) -> Result<DatabaseTransaction, Error> {
        let txn = self.db.begin().await?;
        if txn.get_database_backend() == DbBackend::Postgres {
            txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({CHANGE_LOG_LOCK})"))
                .await?;
        }
        Ok(txn)
    }

    fn committed(&self, changed: bool, announced: bool) {
        if changed {
            self.changes.send_modify(|n| *n += 1);
        }
        if announced {
            self.wakeups.iter().for_each(Wakeup::wake);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Owners
    // -----------------------------------------------------------------------------------------

    /// Creates or replaces an owner (active again); `true` when it is new.
    pub async fn upsert_owner(
        &self,
        tenant: &str,
        owner: &Owner,
        now: DateTime<Utc>,
    ) -> Result<(owner::Model, bool), Error> {
        let txn = self.db.begin().await?;
        let existing = owner::Entity::find_by_id((tenant.to_owned(), owner.id.clone()))
            .one(&txn)
            .await?;
        let row = owner::Model {
            tenant_id: tenant.to_owned(),
            owner_id: owner.id.clone(),
            body: to_json(owner)?,
            role: owner.role.name().to_owned(),
            team_id: owner.team_id.clone(),
            active: true,
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
        };
        let created = existing.is_none();
        let active = row.clone().into_active_model();
        if created {
            owner::Entity::insert(reset_all(active)).exec(&txn).await?;
        } else {
            reset_all(active).update(&txn).await?;
        }
        txn.commit().await?;
        Ok((row, created))
    }

    /// One owner.
    pub async fn owner(&self, tenant: &str, owner_id: &str) -> Result<Option<owner::Model>, Error> {
        Ok(
            owner::Entity::find_by_id((tenant.to_owned(), owner_id.to_owned()))
                .one(&self.reader)
                .await?,
        )
    }

    /// Owners by id after `after`, optionally of one role and team, active only unless asked.
    pub async fn owners(
        &self,
        tenant: &str,
        role: Option<&str>,
        team_id: Option<&str>,
        include_inactive: bool,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<owner::Model>, Error> {
        let mut query = owner::Entity::find().filter(owner::Column::TenantId.eq(tenant));
        if let Some(role) = role {
            query = query.filter(owner::Column::Role.eq(role));
        }
        if let Some(team) = team_id {
            query = query.filter(owner::Column::TeamId.eq(team));
        }
        if !include_inactive {
            query = query.filter(owner::Column::Active.eq(true));
        }
        if let Some(after) = after {
            query = query.filter(owner::Column::OwnerId.gt(after));
        }
        Ok(query
            .order_by_asc(owner::Column::OwnerId)
            .limit(limit)
            .all(&self.reader)
            .await?)
    }

    /// Open hand-offs per owner of the tenant.
    pub async fn open_counts(&self, tenant: &str) -> Result<OpenCounts, Error> {
        open_counts(&self.reader, tenant).await
    }

    /// Deactivates an owner; with `reassign`, re-routes its open hand-offs now. Returns the
    /// owner and how many hand-offs moved.
    pub async fn deactivate_owner(
        &self,
        tenant: &str,
        owner_id: &str,
        reassign: bool,
        now: DateTime<Utc>,
    ) -> Result<(owner::Model, i32), Error> {
        let txn = self.begin_logged().await?;
        let row = owner::Entity::find_by_id((tenant.to_owned(), owner_id.to_owned()))
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("owner {owner_id}")))?;
        let mut domain: Owner = from_json(&row.body)?;
        domain.active = false;
        let mut active = row.into_active_model();
        active.active = Set(false);
        active.body = Set(to_json(&domain)?);
        active.updated_at = Set(now);
        let row = active.update(&txn).await?;
        let mut moved = 0;
        if reassign {
            let open = handoff::Entity::find()
                .filter(handoff::Column::TenantId.eq(tenant))
                .filter(handoff::Column::OwnerId.eq(owner_id))
                .filter(handoff::Column::Status.is_in(open_statuses()))
                .all(&txn)
                .await?;
            let mut routing = Routing::load(&txn, tenant).await?;
            for h in open {
                let kind = kind_of(&h)?;
                let facts = facts_of(&h)?;
                let decision = routing.route(&facts, kind, now);
                let mut active = h.clone().into_active_model();
                active.owner_id = Set(decision.owner_id().unwrap_or_default().to_owned());
                active.queue = Set(convert::queue_to_pb(decision.queue()) as i32);
                active.routing_rule_id = Set(decision.rule_id().unwrap_or_default().to_owned());
                active.updated_at = Set(now);
                let updated = active.update(&txn).await?;
                let status = status_of(&updated)?;
                log_change(
                    &txn,
                    &updated,
                    status,
                    status,
                    "",
                    "owner deactivated: re-routed",
                    now,
                )
                .await?;
                moved += 1;
            }
            routing.save(&txn, now).await?;
        }
        txn.commit().await?;
        self.committed(moved > 0, false);
        Ok((row, moved))
    }

    // -----------------------------------------------------------------------------------------
    // Routing rules
    // -----------------------------------------------------------------------------------------

    /// The tenant's active rules: the latest published, or the default (version 0: no rules,
    /// everything to the fallback queue, the seeds' 24-hour sales SLA).
    pub async fn active_rules(&self, tenant: &str) -> Result<(RoutingRules, DateTime<Utc>), Error> {
        active_rules(&self.reader, tenant).await
    }

    /// Rules `version` of the tenant (0: the default).
    pub async fn rules(
        &self,
        tenant: &str,
        version: i32,
    ) -> Result<Option<(RoutingRules, DateTime<Utc>)>, Error> {
        if version == 0 {
            return Ok(Some((RoutingRules::default(), epoch())));
        }
        rules::Entity::find_by_id((tenant.to_owned(), version))
            .one(&self.reader)
            .await?
            .map(|row| Ok((decode_rules(&row.body)?, row.created_at)))
            .transpose()
    }

    /// Publishes `new` as the next version, active for new hand-offs; a repeated request id
    /// answers the version it published.
    pub async fn publish_rules(
        &self,
        tenant: &str,
        request_id: &str,
        mut new: RoutingRules,
        now: DateTime<Utc>,
    ) -> Result<(RoutingRules, DateTime<Utc>, bool), Error> {
        const METHOD: &str = "PublishRoutingRules";
        let txn = self.db.begin().await?;
        if let Some(answer) = find_request(&txn, tenant, request_id, METHOD).await? {
            let version = pb::RoutingRules::decode(answer.as_slice())
                .map_err(|err| Error::corrupt("stored answer does not decode", err))?
                .version;
            txn.commit().await?;
            let (rules, created) = self
                .rules(tenant, version)
                .await?
                .ok_or_else(|| Error::Corrupt(format!("routing rules {version} missing")))?;
            return Ok((rules, created, true));
        }
        let (active, _) = active_rules(&txn, tenant).await?;
        new.version = active.version + 1;
        rules::ActiveModel {
            tenant_id: Set(tenant.to_owned()),
            version: Set(new.version),
            body: Set(convert::rules_to_pb(&new, None).encode_to_vec()),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let answer = convert::rules_to_pb(&new, Some(now)).encode_to_vec();
        save_request(&txn, tenant, request_id, METHOD, answer, now).await?;
        txn.commit().await?;
        tracing::info!(tenant, version = new.version, "routing rules published");
        Ok((new, now, false))
    }

    // -----------------------------------------------------------------------------------------
    // Hand-offs
    // -----------------------------------------------------------------------------------------

    /// A consistent read: a hand-off and its history read through it agree, however the
    /// sweeper or the CRM change them meanwhile.
    pub async fn read(&self) -> Result<Reader, Error> {
        Ok(Reader {
            txn: leadflow_runtime::db::begin_snapshot(&self.reader).await?,
        })
    }

    /// Logged changes of the tenant after position `after`, oldest first: each with the
    /// hand-off as of the change, and the hand-off's row as it is now (for the full view).
    pub async fn changes_after(
        &self,
        tenant: &str,
        after: i64,
        limit: u64,
    ) -> Result<Vec<(i64, pb::Handoff, handoff::Model)>, Error> {
        let rows = change::Entity::find()
            .filter(change::Column::TenantId.eq(tenant))
            .filter(change::Column::Id.gt(after))
            .order_by_asc(change::Column::Id)
            .limit(limit)
            .all(&self.reader)
            .await?;
        let ids: Vec<String> = rows.iter().map(|r| r.handoff_id.clone()).collect();
        let handoffs: HashMap<String, handoff::Model> = handoff::Entity::find()
            .filter(handoff::Column::TenantId.eq(tenant))
            .filter(handoff::Column::HandoffId.is_in(ids))
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|h| (h.handoff_id.clone(), h))
            .collect();
        rows.into_iter()
            .map(|row| {
                let h = handoffs.get(&row.handoff_id).cloned().ok_or_else(|| {
                    Error::Corrupt(format!("hand-off {} missing", row.handoff_id))
                })?;
                let snapshot = pb::Handoff::decode(row.snapshot.as_slice())
                    .map_err(|err| Error::corrupt("stored snapshot does not decode", err))?;
                Ok((row.id, snapshot, h))
            })
            .collect()
    }

    /// Hand-offs created in `[start, end)` (of `kind` when given), and those still open, with
    /// their owners' teams: what the SLA report is computed from.
    pub async fn sla_rows(
        &self,
        tenant: &str,
        kind: Option<i32>,
    ) -> Result<(Vec<handoff::Model>, HashMap<String, String>), Error> {
        let mut query = handoff::Entity::find().filter(handoff::Column::TenantId.eq(tenant));
        if let Some(kind) = kind {
            query = query.filter(handoff::Column::Kind.eq(kind));
        }
        let rows = query.all(&self.reader).await?;
        let teams = owner::Entity::find()
            .filter(owner::Column::TenantId.eq(tenant))
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|o| (o.owner_id, o.team_id))
            .collect();
        Ok((rows, teams))
    }

    /// Applies qualification's events in order, each message id once, in one transaction:
    /// hand-off requests create, route and store a hand-off with its warm context; stage changes
    /// withdraw open hand-offs the lead has left; merges move the absorbed lead's hand-offs.
    pub async fn apply_qualification_events(
        &self,
        events: Vec<Prepared>,
        now: DateTime<Utc>,
    ) -> Result<Applied, Error> {
        let txn = self.begin_logged().await?;
        inbox::prune(&txn, now, self.inbox_retention).await?;
        let mut applied = Applied::default();
        let mut changed = false;
        let mut routings: BTreeMap<String, Routing> = BTreeMap::new();
        for Prepared { event, context } in events {
            let header = event.header.clone().unwrap_or_default();
            if !inbox::claim(&txn, &header.message_id, &header.tenant_id, now).await? {
                applied.duplicates += 1;
                continue;
            }
            applied.applied += 1;
            let tenant = header.tenant_id.as_str();
            match event.event {
                Some(Event::HandoffRequested(request)) => {
                    if !routings.contains_key(tenant) {
                        routings.insert(tenant.to_owned(), Routing::load(&txn, tenant).await?);
                    }
                    let routing = routings
                        .get_mut(tenant)
                        .ok_or_else(|| Error::Corrupt("routing state not loaded".into()))?;
                    changed |= create_handoff(
                        &txn,
                        routing,
                        tenant,
                        &header.lead_id,
                        request,
                        context.unwrap_or_default(),
                        now,
                    )
                    .await?;
                }
                Some(Event::StageChanged(stage_changed)) => {
                    let to = stage_changed.transition.map_or(0, |t| t.to_stage);
                    changed |= withdraw_left(&txn, tenant, &header.lead_id, to, now).await?;
                }
                Some(Event::LeadsMerged(merged)) => {
                    handoff::Entity::update_many()
                        .col_expr(handoff::Column::LeadId, Expr::value(header.lead_id.clone()))
                        .col_expr(handoff::Column::UpdatedAt, Expr::value(now))
                        .filter(handoff::Column::TenantId.eq(tenant))
                        .filter(handoff::Column::LeadId.eq(merged.source_lead_id.as_str()))
                        .filter(handoff::Column::Status.is_in(open_statuses()))
                        .exec(&txn)
                        .await?;
                }
                None => {}
            }
        }
        for routing in routings.values() {
            routing.save(&txn, now).await?;
        }
        txn.commit().await?;
        self.committed(changed, false);
        Ok(applied)
    }

    /// Which of the tenant's `transition_ids` (qualification's transitions) have a hand-off
    /// already (their contexts need not be built again), in one query per
    /// [`MAX_ROWS_PER_STATEMENT`] ids.
    pub async fn handed_off(
        &self,
        tenant: &str,
        transition_ids: &[String],
    ) -> Result<HashSet<String>, Error> {
        let mut found = HashSet::new();
        for chunk in transition_ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let ids: Vec<String> = handoff::Entity::find()
                .select_only()
                .column(handoff::Column::TransitionId)
                .filter(handoff::Column::TenantId.eq(tenant))
                .filter(handoff::Column::TransitionId.is_in(leadflow_runtime::db::in_list(chunk)))
                .into_tuple()
                .all(&self.reader)
                .await?;
            found.extend(ids);
        }
        Ok(found)
    }

    /// Moves a hand-off as the CRM reports, once per request id (the answer `respond` builds is
    /// stored); decisions and outcomes are sent to qualification and scoring through the outbox.
    pub async fn act<M, F>(
        &self,
        tenant: &str,
        request_id: &str,
        method: &'static str,
        handoff_id: &str,
        act: Act,
        respond: F,
    ) -> Result<(M, bool), Error>
    where
        M: Message + Default,
        F: FnOnce(&handoff::Model) -> M,
    {
        let txn = self.begin_logged().await?;
        if let Some(answer) = find_request(&txn, tenant, request_id, method).await? {
            let answer = M::decode(answer.as_slice())
                .map_err(|err| Error::corrupt("stored answer does not decode", err))?;
            return Ok((answer, true));
        }
        // Locked (PostgreSQL) so the SLA sweeper and another call wait for this change.
        let row = handoff::Entity::find_by_id((tenant.to_owned(), handoff_id.to_owned()))
            .lock_exclusive()
            .one(&txn)
            .await?
            .ok_or_else(|| Error::NotFound(format!("hand-off {handoff_id}")))?;
        let kind = kind_of(&row)?;
        let from = status_of(&row)?;
        if act.action == Action::Acknowledge && !row.crm_record_id.is_empty() {
            // Acknowledging again with the same record is a repeat, with another a conflict.
            if row.crm_record_id == act.crm_record_id {
                let answer = respond(&row);
                return Ok((answer, true));
            }
            return Err(Error::Conflict(format!(
                "hand-off {handoff_id} is acknowledged with crm record {}",
                row.crm_record_id
            )));
        }
        let to = status::apply(kind, from, act.action)?;
        let actor = if act.actor_id.is_empty() {
            row.owner_id.clone()
        } else {
            act.actor_id.clone()
        };
        let mut active = row.clone().into_active_model();
        active.status = Set(convert::status_to_pb(to) as i32);
        active.updated_at = Set(act.at.max(row.updated_at));
        match act.action {
            Action::Acknowledge => active.crm_record_id = Set(act.crm_record_id.clone()),
            Action::Contact if row.first_contact_at.is_none() => {
                active.first_contact_at = Set(Some(act.at));
            }
            Action::Reject => active.rejection_reason = Set(act.rejection_reason),
            Action::Opportunity | Action::Win | Action::Lose => {
                active.outcome = Set(act
                    .outcome
                    .as_ref()
                    .map(Message::encode_to_vec)
                    .unwrap_or_default());
            }
            _ => {}
        }
        let updated = active.update(&txn).await?;
        log_change_with(
            &txn,
            &updated,
            ChangeDetail {
                from,
                to,
                actor_id: &actor,
                note: &act.note,
                rejection_reason: act.rejection_reason,
                outcome: act.outcome.clone(),
            },
            act.at,
        )
        .await?;
        let decision = decision_of(&act);
        let announced = decision.is_some();
        if let Some(decision) = decision {
            let message = events::HandoffDecision {
                header: None,
                handoff_id: updated.handoff_id.clone(),
                kind: updated.kind,
                owner_id: updated.owner_id.clone(),
                actor_id: actor.clone(),
                decision_time: Some(to_timestamp(act.at)),
                note: act.note.clone(),
                decision: Some(decision),
            };
            outbox::enqueue(
                &txn,
                decision_messages(&updated, message, act.at),
                Packing::PerMessage,
            )
            .await?;
        }
        let answer = respond(&updated);
        save_request(
            &txn,
            tenant,
            request_id,
            method,
            answer.encode_to_vec(),
            act.at,
        )
        .await?;
        txn.commit().await?;
        self.committed(true, announced);
        Ok((answer, false))
    }

    /// Marks every hand-off whose owner let first contact fall due as breached and escalates it
    /// (re-routed with a fresh SLA for the new owner, or to the manager queue, as the tenant's
    /// rules say); a new owner who misses too is escalated again. Returns how many were
    /// escalated.
    pub async fn sweep_sla(&self, now: DateTime<Utc>) -> Result<usize, Error> {
        // The same condition as `should_escalate`, so rows it skips cannot crowd the page.
        let due = handoff::Entity::find()
            .filter(handoff::Column::Status.is_in([
                convert::status_to_pb(HandoffStatus::Pending) as i32,
                convert::status_to_pb(HandoffStatus::Acknowledged) as i32,
                convert::status_to_pb(HandoffStatus::Escalated) as i32,
            ]))
            .filter(handoff::Column::FirstContactAt.is_null())
            .filter(handoff::Column::Queue.ne(manager_queue()))
            .filter(handoff::Column::ContactDueAt.lt(now))
            .order_by_asc(handoff::Column::ContactDueAt)
            .limit(500)
            .all(&self.db)
            .await?;
        if due.is_empty() {
            return Ok(0);
        }
        let txn = self.begin_logged().await?;
        let mut routings: BTreeMap<String, Routing> = BTreeMap::new();
        let mut escalated = 0;
        for row in due {
            let Some(row) =
                handoff::Entity::find_by_id((row.tenant_id.clone(), row.handoff_id.clone()))
                    .lock_exclusive()
                    .one(&txn)
                    .await?
            else {
                continue;
            };
            let status = status_of(&row)?;
            if !should_escalate(
                status,
                row.queue == manager_queue(),
                row.first_contact_at,
                convert::contact_due(&row),
                now,
            ) {
                continue;
            }
            if !routings.contains_key(&row.tenant_id) {
                let routing = Routing::load(&txn, &row.tenant_id).await?;
                routings.insert(row.tenant_id.clone(), routing);
            }
            let routing = routings
                .get_mut(&row.tenant_id)
                .ok_or_else(|| Error::Corrupt("routing state not loaded".into()))?;
            let kind = kind_of(&row)?;
            let facts = facts_of(&row)?;
            let current = (!row.owner_id.is_empty()).then_some(row.owner_id.as_str());
            let escalation = escalate(
                &routing.rules,
                &routing.owners,
                &routing.open,
                &mut routing.state,
                &EscalationCase {
                    lead: &facts,
                    kind,
                    current_owner: current,
                },
                now,
            );
            if let Some(previous) = current
                && let Some(n) = routing.open.get_mut(previous)
            {
                *n = n.saturating_sub(1);
            }
            if let Some(next) = escalation.owner_id() {
                *routing.open.entry(next.to_owned()).or_default() += 1;
            }
            let mut active = row.clone().into_active_model();
            active.status = Set(convert::status_to_pb(HandoffStatus::Escalated) as i32);
            active.sla_breached = Set(true);
            if let Some(due) = escalation.contact_due(&routing.rules.sla_policy(), kind, now) {
                active.contact_due_at = Set(Some(due));
            }
            active.owner_id = Set(escalation.owner_id().unwrap_or_default().to_owned());
            active.queue = Set(convert::queue_to_pb(escalation.queue()) as i32);
            if let Some(rule) = escalation_rule(&escalation) {
                active.routing_rule_id = Set(rule);
            }
            active.updated_at = Set(now);
            let updated = active.update(&txn).await?;
            log_change(
                &txn,
                &updated,
                status,
                HandoffStatus::Escalated,
                "",
                "sla breached",
                now,
            )
            .await?;
            escalated += 1;
        }
        for routing in routings.values() {
            routing.save(&txn, now).await?;
        }
        txn.commit().await?;
        self.committed(escalated > 0, false);
        Ok(escalated)
    }

    // -----------------------------------------------------------------------------------------
    // Webhooks
    // -----------------------------------------------------------------------------------------

    /// Creates (empty id) or replaces a webhook, once per request id. `secret` empty keeps the
    /// current one on update.
    pub async fn upsert_webhook(
        &self,
        tenant: &str,
        request_id: &str,
        mut hook: pb::Webhook,
        secret: &str,
        now: DateTime<Utc>,
    ) -> Result<(pb::Webhook, bool), Error> {
        const METHOD: &str = "UpsertWebhook";
        let txn = self.db.begin().await?;
        if let Some(answer) = find_request(&txn, tenant, request_id, METHOD).await? {
            let answer = pb::UpsertWebhookResponse::decode(answer.as_slice())
                .map_err(|err| Error::corrupt("stored answer does not decode", err))?;
            return Ok((answer.webhook.unwrap_or_default(), answer.created));
        }
        let existing = if hook.webhook_id.is_empty() {
            None
        } else {
            Some(
                webhook::Entity::find_by_id((tenant.to_owned(), hook.webhook_id.clone()))
                    .one(&txn)
                    .await?
                    .ok_or_else(|| Error::NotFound(format!("webhook {}", hook.webhook_id)))?,
            )
        };
        let created = existing.is_none();
        if created {
            hook.webhook_id = uuid::Uuid::now_v7().to_string();
        }
        let secret_updated_at = match (&existing, secret.is_empty()) {
            (Some(e), true) => e.secret_updated_at,
            _ => now,
        };
        let secret = match (&existing, secret.is_empty()) {
            (Some(e), true) => e.secret.clone(),
            _ => secret.to_owned(),
        };
        let created_at = existing.as_ref().map_or(now, |e| e.created_at);
        hook.secret_update_time = Some(to_timestamp(secret_updated_at));
        hook.create_time = Some(to_timestamp(created_at));
        hook.update_time = Some(to_timestamp(now));
        let row = webhook::Model {
            tenant_id: tenant.to_owned(),
            webhook_id: hook.webhook_id.clone(),
            body: hook.encode_to_vec(),
            secret,
            enabled: hook.enabled,
            secret_updated_at,
            created_at,
            updated_at: now,
        };
        if created {
            row.into_active_model().insert(&txn).await?;
        } else {
            reset_all(row.into_active_model()).update(&txn).await?;
        }
        let answer = pb::UpsertWebhookResponse {
            webhook: Some(hook.clone()),
            created,
        };
        save_request(
            &txn,
            tenant,
            request_id,
            METHOD,
            answer.encode_to_vec(),
            now,
        )
        .await?;
        txn.commit().await?;
        Ok((hook, created))
    }

    /// Webhooks by id after `after`.
    pub async fn webhooks(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Vec<pb::Webhook>, Error> {
        let mut query = webhook::Entity::find().filter(webhook::Column::TenantId.eq(tenant));
        if let Some(after) = after {
            query = query.filter(webhook::Column::WebhookId.gt(after));
        }
        query
            .order_by_asc(webhook::Column::WebhookId)
            .limit(limit)
            .all(&self.reader)
            .await?
            .into_iter()
            .map(|row| {
                pb::Webhook::decode(row.body.as_slice())
                    .map_err(|err| Error::corrupt("stored webhook does not decode", err))
            })
            .collect()
    }

    /// Deletes a webhook (and stops its pending deliveries); a repeated request id answers
    /// like the first call.
    pub async fn delete_webhook(
        &self,
        tenant: &str,
        request_id: &str,
        webhook_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        const METHOD: &str = "DeleteWebhook";
        let txn = self.db.begin().await?;
        if find_request(&txn, tenant, request_id, METHOD)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let deleted = webhook::Entity::delete_by_id((tenant.to_owned(), webhook_id.to_owned()))
            .exec(&txn)
            .await?;
        if deleted.rows_affected == 0 {
            return Err(Error::NotFound(format!("webhook {webhook_id}")));
        }
        delivery::Entity::update_many()
            .col_expr(
                delivery::Column::State,
                Expr::value(pb::WebhookDeliveryState::Failed as i32),
            )
            .col_expr(delivery::Column::LastError, Expr::value("webhook deleted"))
            .filter(delivery::Column::TenantId.eq(tenant))
            .filter(delivery::Column::WebhookId.eq(webhook_id))
            .filter(delivery::Column::State.eq(pb::WebhookDeliveryState::Pending as i32))
            .exec(&txn)
            .await?;
        save_request(&txn, tenant, request_id, METHOD, Vec::new(), now).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Deliveries matching the filters, newest first, below position `before`.
    pub async fn deliveries(
        &self,
        tenant: &str,
        r: &pb::ListWebhookDeliveriesRequest,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<delivery::Model>, Error> {
        let mut query = delivery::Entity::find().filter(delivery::Column::TenantId.eq(tenant));
        if !r.webhook_id.is_empty() {
            query = query.filter(delivery::Column::WebhookId.eq(r.webhook_id.as_str()));
        }
        if !r.handoff_id.is_empty() {
            query = query.filter(delivery::Column::HandoffId.eq(r.handoff_id.as_str()));
        }
        if r.state != 0 {
            query = query.filter(delivery::Column::State.eq(r.state));
        }
        if let Some(before) = before {
            query = query.filter(delivery::Column::Id.lt(before));
        }
        Ok(query
            .order_by_desc(delivery::Column::Id)
            .limit(limit)
            .all(&self.reader)
            .await?)
    }

    /// Pending deliveries due at `now`, oldest first, with their endpoint's URL and secret.
    pub async fn due_deliveries(
        &self,
        now: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<(delivery::Model, String, String)>, Error> {
        let due = delivery::Entity::find()
            .filter(delivery::Column::State.eq(pb::WebhookDeliveryState::Pending as i32))
            .filter(delivery::Column::NextAttemptAt.lte(now))
            .order_by_asc(delivery::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(due.len());
        for d in due {
            let hook = webhook::Entity::find_by_id((d.tenant_id.clone(), d.webhook_id.clone()))
                .one(&self.db)
                .await?;
            if let Some(hook) = hook {
                let url = pb::Webhook::decode(hook.body.as_slice())
                    .map_err(|err| Error::corrupt("stored webhook does not decode", err))?
                    .url;
                out.push((d, url, hook.secret));
            }
        }
        Ok(out)
    }

    /// Records an attempt of delivery `id`: delivered, retried at `next` or failed for good.
    pub async fn record_attempt(
        &self,
        id: i64,
        http_status: i32,
        error: Option<String>,
        next: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let Some(row) = delivery::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(());
        };
        let mut active = row.clone().into_active_model();
        active.attempt_count = Set(row.attempt_count + 1);
        active.last_http_status = Set(http_status);
        active.last_attempt_at = Set(Some(now));
        match (error, next) {
            (None, _) => {
                active.state = Set(pb::WebhookDeliveryState::Delivered as i32);
                active.delivered_at = Set(Some(now));
                active.last_error = Set(String::new());
            }
            (Some(error), Some(next)) => {
                active.last_error = Set(error);
                active.next_attempt_at = Set(next);
            }
            (Some(error), None) => {
                active.last_error = Set(error);
                active.state = Set(pb::WebhookDeliveryState::Failed as i32);
            }
        }
        active.update(&self.db).await?;
        Ok(())
    }
}

/// The routing inputs of one tenant inside a transaction: its rules, owners, open counts and
/// round-robin state (saved back at the end).
struct Routing {
    tenant: String,
    rules: RoutingRules,
    owners: Vec<Owner>,
    open: OpenCounts,
    state: RoundRobinState,
}

impl Routing {
    async fn load(txn: &DatabaseTransaction, tenant: &str) -> Result<Self, Error> {
        let (rules, _) = active_rules(txn, tenant).await?;
        let owners = owner::Entity::find()
            .filter(owner::Column::TenantId.eq(tenant))
            .filter(owner::Column::Active.eq(true))
            .all(txn)
            .await?
            .iter()
            .map(|row| from_json(&row.body))
            .collect::<Result<Vec<Owner>, Error>>()?;
        let state = match round_robin::Entity::find_by_id(tenant.to_owned())
            .lock_exclusive()
            .one(txn)
            .await?
        {
            Some(row) => from_json(&row.state)?,
            None => RoundRobinState::default(),
        };
        Ok(Self {
            tenant: tenant.to_owned(),
            rules,
            owners,
            open: open_counts(txn, tenant).await?,
            state,
        })
    }

    /// Routes one hand-off and counts it against its owner's capacity.
    fn route(&mut self, facts: &LeadFacts, kind: HandoffKind, now: DateTime<Utc>) -> Route {
        let decision = route(
            &self.rules,
            &self.owners,
            &self.open,
            &mut self.state,
            facts,
            kind,
            now,
        );
        if let Some(owner) = decision.owner_id() {
            *self.open.entry(owner.to_owned()).or_default() += 1;
        }
        decision
    }

    async fn save(&self, txn: &DatabaseTransaction, now: DateTime<Utc>) -> Result<(), Error> {
        let row = round_robin::ActiveModel {
            tenant_id: Set(self.tenant.clone()),
            state: Set(to_json(&self.state)?),
            updated_at: Set(now),
        };
        round_robin::Entity::insert(row)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(round_robin::Column::TenantId)
                    .update_columns([round_robin::Column::State, round_robin::Column::UpdatedAt])
                    .to_owned(),
            )
            .exec(txn)
            .await?;
        Ok(())
    }
}

async fn create_handoff(
    txn: &DatabaseTransaction,
    routing: &mut Routing,
    tenant: &str,
    lead_id: &str,
    request: leadflow_proto::qualification::v1::HandoffRequested,
    mut context: pb::WarmContext,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    let exists = handoff::Entity::find()
        .filter(handoff::Column::TenantId.eq(tenant))
        .filter(handoff::Column::TransitionId.eq(request.transition_id.as_str()))
        .count(txn)
        .await?
        > 0;
    let Some(kind) = convert::kind_from_pb(request.kind) else {
        tracing::warn!(tenant, lead_id, "hand-off request without a kind ignored");
        return Ok(false);
    };
    if exists {
        return Ok(false);
    }
    context.reason = request.reason;
    context.hand_raise = request.hand_raise;
    context.profile = request.profile.clone();
    context.bant = request.bant.clone();
    if context.build_time.is_none() {
        context.build_time = Some(to_timestamp(now));
    }
    let facts = convert::lead_facts(request.profile.as_ref());
    let decision = routing.route(&facts, kind, now);
    let deadline = routing.rules.sla_policy().deadline(kind, now);
    let row = handoff::Model {
        tenant_id: tenant.to_owned(),
        handoff_id: uuid::Uuid::now_v7().to_string(),
        lead_id: lead_id.to_owned(),
        transition_id: request.transition_id,
        kind: convert::kind_to_pb(kind) as i32,
        status: convert::status_to_pb(HandoffStatus::Pending) as i32,
        owner_id: decision.owner_id().unwrap_or_default().to_owned(),
        queue: convert::queue_to_pb(decision.queue()) as i32,
        routing_rule_id: decision.rule_id().unwrap_or_default().to_owned(),
        routing_rules_version: routing.rules.version,
        created_at: now,
        sla_deadline: deadline,
        contact_due_at: Some(deadline),
        sla_breached: false,
        first_contact_at: None,
        crm_record_id: String::new(),
        rejection_reason: 0,
        outcome: Vec::new(),
        context: context.encode_to_vec(),
        updated_at: now,
    };
    row.clone().into_active_model().insert(txn).await?;
    log_change(
        txn,
        &row,
        HandoffStatus::Pending,
        HandoffStatus::Pending,
        "",
        "created",
        now,
    )
    .await?;
    tracing::info!(
        tenant,
        lead_id,
        handoff_id = %row.handoff_id,
        owner_id = %row.owner_id,
        kind = kind.name(),
        "hand-off created"
    );
    Ok(true)
}

/// Withdraws the lead's open hand-offs that no longer fit stage `to` (an SDR review outside
/// MQL, a sales hand-off outside SQL and opportunity).
async fn withdraw_left(
    txn: &DatabaseTransaction,
    tenant: &str,
    lead_id: &str,
    to: i32,
    now: DateTime<Utc>,
) -> Result<bool, Error> {
    use common::LeadStage;
    let open = handoff::Entity::find()
        .filter(handoff::Column::TenantId.eq(tenant))
        .filter(handoff::Column::LeadId.eq(lead_id))
        .filter(handoff::Column::Status.is_in(open_statuses()))
        .all(txn)
        .await?;
    let mut changed = false;
    for row in open {
        let kind = kind_of(&row)?;
        let still_fits = match kind {
            HandoffKind::SdrReview => to == LeadStage::Mql as i32,
            HandoffKind::Sales => {
                to == LeadStage::Sql as i32 || to == LeadStage::Opportunity as i32
            }
        };
        if still_fits {
            continue;
        }
        let from = status_of(&row)?;
        let mut active = row.into_active_model();
        active.status = Set(convert::status_to_pb(HandoffStatus::Withdrawn) as i32);
        active.updated_at = Set(now);
        let updated = active.update(txn).await?;
        log_change(
            txn,
            &updated,
            from,
            HandoffStatus::Withdrawn,
            "",
            "the lead left the stage",
            now,
        )
        .await?;
        changed = true;
    }
    Ok(changed)
}

/// What a logged change says besides the statuses.
struct ChangeDetail<'a> {
    from: HandoffStatus,
    to: HandoffStatus,
    actor_id: &'a str,
    note: &'a str,
    rejection_reason: i32,
    outcome: Option<common::SalesOutcome>,
}

async fn log_change(
    txn: &DatabaseTransaction,
    row: &handoff::Model,
    from: HandoffStatus,
    to: HandoffStatus,
    actor_id: &str,
    note: &str,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    log_change_with(
        txn,
        row,
        ChangeDetail {
            from,
            to,
            actor_id,
            note,
            rejection_reason: 0,
            outcome: None,
        },
        at,
    )
    .await
}

/// Appends a change to the log and queues a webhook delivery for every enabled endpoint whose
/// filter matches.
async fn log_change_with(
    txn: &DatabaseTransaction,
    row: &handoff::Model,
    detail: ChangeDetail<'_>,
    at: DateTime<Utc>,
) -> Result<(), Error> {
    let body = pb::HandoffStatusChange {
        from_status: convert::status_to_pb(detail.from) as i32,
        to_status: convert::status_to_pb(detail.to) as i32,
        change_time: Some(to_timestamp(at)),
        owner_id: row.owner_id.clone(),
        queue: row.queue,
        actor_id: detail.actor_id.to_owned(),
        note: detail.note.to_owned(),
        rejection_reason: detail.rejection_reason,
        outcome: detail.outcome,
    };
    change::ActiveModel {
        tenant_id: Set(row.tenant_id.clone()),
        handoff_id: Set(row.handoff_id.clone()),
        body: Set(body.encode_to_vec()),
        snapshot: Set(convert::handoff_to_pb(row, None).encode_to_vec()),
        at: Set(at),
        ..Default::default()
    }
    .insert(txn)
    .await?;
    let hooks = webhook::Entity::find()
        .filter(webhook::Column::TenantId.eq(row.tenant_id.as_str()))
        .filter(webhook::Column::Enabled.eq(true))
        .all(txn)
        .await?;
    for hook in hooks {
        let endpoint = pb::Webhook::decode(hook.body.as_slice())
            .map_err(|err| Error::corrupt("stored webhook does not decode", err))?;
        let filter = endpoint.event_filter.unwrap_or_default();
        let status = body.to_status;
        if (!filter.statuses.is_empty() && !filter.statuses.contains(&status))
            || (!filter.kinds.is_empty() && !filter.kinds.contains(&row.kind))
        {
            continue;
        }
        let delivery_id = uuid::Uuid::now_v7().to_string();
        delivery::ActiveModel {
            delivery_id: Set(delivery_id.clone()),
            tenant_id: Set(row.tenant_id.clone()),
            webhook_id: Set(hook.webhook_id.clone()),
            handoff_id: Set(row.handoff_id.clone()),
            handoff_status: Set(status),
            state: Set(pb::WebhookDeliveryState::Pending as i32),
            attempt_count: Set(0),
            last_http_status: Set(0),
            last_error: Set(String::new()),
            payload: Set(convert::webhook_payload(&delivery_id, row, &body)),
            created_at: Set(at),
            last_attempt_at: Set(None),
            next_attempt_at: Set(at),
            delivered_at: Set(None),
            ..Default::default()
        }
        .insert(txn)
        .await?;
    }
    Ok(())
}

/// The decision qualification and scoring hear about, for actions that are decisions.
fn decision_of(act: &Act) -> Option<Decision> {
    match act.action {
        Action::Accept => Some(Decision::Accepted(events::HandoffAccepted {})),
        Action::Reject => Some(Decision::Rejected(events::HandoffRejected {
            reason: act.rejection_reason,
        })),
        Action::Opportunity | Action::Win | Action::Lose => {
            act.outcome.clone().map(Decision::Outcome)
        }
        _ => None,
    }
}

/// The decision, once for qualification and once for scoring (each with its own message id).
fn decision_messages(
    row: &handoff::Model,
    decision: events::HandoffDecision,
    at: DateTime<Utc>,
) -> Vec<NewMessage> {
    [QUALIFICATION, SCORING]
        .into_iter()
        .map(|destination| {
            let header = common::MessageHeader {
                message_id: uuid::Uuid::now_v7().to_string(),
                tenant_id: row.tenant_id.clone(),
                lead_id: row.lead_id.clone(),
                produced_at: Some(to_timestamp(at)),
                trace_context: Default::default(),
            };
            let message = events::HandoffDecision {
                header: Some(header.clone()),
                ..decision.clone()
            };
            NewMessage {
                destination,
                message_id: header.message_id,
                tenant_id: header.tenant_id,
                partition_key: header.lead_id,
                payload: message.encode_to_vec(),
            }
        })
        .collect()
}

fn escalation_rule(escalation: &Escalation) -> Option<String> {
    match escalation {
        Escalation::Reassign { rule_id, .. } => Some(rule_id.clone()),
        Escalation::ManagerQueue => None,
    }
}

/// The stored number of the manager queue.
fn manager_queue() -> i32 {
    convert::queue_to_pb(Some(HandoffQueue::Manager)) as i32
}

fn open_statuses() -> Vec<i32> {
    HandoffStatus::ALL
        .into_iter()
        .filter(|s| s.is_open())
        .map(|s| convert::status_to_pb(s) as i32)
        .collect()
}

async fn open_counts<C: ConnectionTrait>(conn: &C, tenant: &str) -> Result<OpenCounts, Error> {
    let rows: Vec<(String, i64)> = handoff::Entity::find()
        .select_only()
        .column(handoff::Column::OwnerId)
        .column_as(handoff::Column::HandoffId.count(), "open")
        .filter(handoff::Column::TenantId.eq(tenant))
        .filter(handoff::Column::OwnerId.ne(""))
        .filter(handoff::Column::Status.is_in(open_statuses()))
        .group_by(handoff::Column::OwnerId)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(owner, n)| (owner, u32::try_from(n).unwrap_or(u32::MAX)))
        .collect())
}

async fn active_rules<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
) -> Result<(RoutingRules, DateTime<Utc>), Error> {
    match rules::Entity::find()
        .filter(rules::Column::TenantId.eq(tenant))
        .order_by_desc(rules::Column::Version)
        .one(conn)
        .await?
    {
        Some(row) => Ok((decode_rules(&row.body)?, row.created_at)),
        None => Ok((RoutingRules::default(), epoch())),
    }
}

/// The kind of a stored hand-off.
pub fn kind_of(row: &handoff::Model) -> Result<HandoffKind, Error> {
    convert::kind_from_pb(row.kind)
        .ok_or_else(|| Error::Corrupt(format!("hand-off {} has kind {}", row.handoff_id, row.kind)))
}

/// The status of a stored hand-off.
pub fn status_of(row: &handoff::Model) -> Result<HandoffStatus, Error> {
    convert::status_from_pb(row.status).ok_or_else(|| {
        Error::Corrupt(format!(
            "hand-off {} has status {}",
            row.handoff_id, row.status
        ))
    })
}

/// The routing facts of a stored hand-off's lead (from its warm context's profile).
fn facts_of(row: &handoff::Model) -> Result<LeadFacts, Error> {
    let context = pb::WarmContext::decode(row.context.as_slice())
        .map_err(|err| Error::corrupt("stored context does not decode", err))?;
    Ok(convert::lead_facts(context.profile.as_ref()))
}

/// A stored change.
pub fn decode_change(body: &[u8]) -> Result<pb::HandoffStatusChange, Error> {
    pb::HandoffStatusChange::decode(body)
        .map_err(|err| Error::corrupt("stored change does not decode", err))
}

/// Stored rules (valid when published).
fn decode_rules(body: &[u8]) -> Result<RoutingRules, Error> {
    let stored = pb::RoutingRules::decode(body)
        .map_err(|err| Error::corrupt("stored routing rules do not decode", err))?;
    let version = stored.version;
    let mut rules = convert::rules_from_pb(stored)
        .map_err(|err| Error::Corrupt(format!("stored routing rules are invalid: {err}")))?;
    rules.version = version;
    Ok(rules)
}

fn epoch() -> DateTime<Utc> {
    Utc.timestamp_opt(0, 0).single().unwrap_or_default()
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|err| Error::corrupt("does not serialise", err))
}

fn from_json<T: serde::de::DeserializeOwned>(body: &str) -> Result<T, Error> {
    serde_json::from_str(body).map_err(|err| Error::corrupt("stored value does not parse", err))
}

/// Marks every column of `model` as set, so an update writes them all.
fn reset_all<A: ActiveModelTrait>(mut model: A) -> A {
    use sea_orm::Iterable;
    for column in <A::Entity as EntityTrait>::Column::iter() {
        model.reset(column);
    }
    model
}

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
