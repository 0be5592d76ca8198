//! Ingestion's store: leads, identities, activities, the answers to accepted message ids, and the
//! outbox to scoring. Every write and the events announcing it commit in one transaction.

mod bulk;
mod entities;
mod events;
mod links;
pub mod migrations;
mod timeline;
mod writer;

use chrono::{DateTime, Utc};
use leadflow_runtime::outbox::{self, NewMessage, Packing, SharedDeletes, Wakeup};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    DatabaseTransaction, EntityTrait, ExprTrait, FromQueryResult, QueryFilter, QuerySelect,
    TransactionTrait, sea_query::Expr,
};

use crate::convert::{Command, IdentifyCommand, TrackCommand};
use crate::domain::{Identity, Profile};
use crate::error::Error;
pub use entities::{activity, identity, lead, request};
pub use timeline::{Cursor, TimelineEntry, TimelinePage, TimelineQuery};

/// Outbox destination of lead events.
pub const SCORING: &str = "scoring";

const USER: &str = "user";
const ANONYMOUS: &str = "anonymous";

/// What an accepted write answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The lead the write applied to.
    pub lead_id: String,
    /// The activity created, for a track.
    pub activity_id: Option<String>,
    /// Leads merged into `lead_id` by the write.
    pub merged_lead_ids: Vec<String>,
    /// True when the message id had been accepted before: nothing was done again.
    pub duplicate: bool,
}

/// A lead with its identities and merge history.
#[derive(Debug, Clone)]
pub struct LeadView {
    /// The stored row (of the surviving lead).
    pub lead: lead::Model,
    /// Its profile.
    pub profile: Profile,
    /// Its user ids.
    pub user_ids: Vec<String>,
    /// Its anonymous ids.
    pub anonymous_ids: Vec<String>,
    /// Leads merged into it.
    pub merged_lead_ids: Vec<String>,
    /// True when the id asked for was merged into this lead.
    pub merged: bool,
    /// Its activities (those of the leads merged into it included) and when the latest
    /// occurred, read from the timeline.
    pub activities: ActivitySummary,
}

/// How many activities a lead has and when its latest occurred, in microseconds since the
/// epoch (`None` without any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, FromQueryResult)]
pub struct ActivitySummary {
    /// Activities recorded for the lead.
    pub count: i64,
    /// When its latest activity occurred.
    pub last_occurred_us: Option<i64>,
}

/// Ingestion's data access.
#[derive(Debug, Clone)]
pub struct Store {
    db: DatabaseConnection,
    /// Where lead and timeline reads go: [`leadflow_runtime::db::reader`], or `db` itself.
    reader: DatabaseConnection,
    wakeup: Wakeup,
    writer: writer::Writer,
}

impl Store {
    /// A store over `db`, with its group-commit writer task (call inside a tokio runtime);
    /// `wakeup` is poked after each commit that enqueued events, and each group commit also
    /// carries the relay's deletes offered through `deletes`.
    pub fn new(db: DatabaseConnection, wakeup: Wakeup, deletes: SharedDeletes) -> Self {
        let writer = writer::Writer::start(db.clone(), wakeup.clone(), deletes);
        Self {
            reader: db.clone(),
            db,
            wakeup,
            writer,
        }
    }

    /// The same store, reading leads and timelines through `reader` (read-only connections
    /// beside the writer on SQLite), so reads neither wait for the group commits on the one
    /// writer connection nor hold them up: a hand-off's warm context reads a timeline per
    /// lead while ingestion writes at full speed.
    pub fn with_reader(self, reader: DatabaseConnection) -> Self {
        Self { reader, ..self }
    }

    /// The connection, for the relay and health checks.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Applies `commands` in order, in one transaction (shared with the writes that arrive at
    /// the same time): each is answered once committed, or all fail together (and the caller
    /// may retry: replays are idempotent).
    pub async fn apply(
        &self,
        tenant: &str,
        commands: Vec<Command>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Accepted>, Error> {
        self.writer.apply(tenant, commands, now).await
    }

    /// Merges `source` into `target`: history, identities and profile gaps move to the target,
    /// the source answers as merged from then on.
    pub async fn merge(
        &self,
        tenant: &str,
        message_id: &str,
        source: &str,
        target: &str,
        now: DateTime<Utc>,
    ) -> Result<Accepted, Error> {
        let txn = self.db.begin().await?;
        if let Some(previous) = find_request(&txn, tenant, message_id).await? {
            return Ok(previous);
        }
        let (source_lead, target_lead) = live_pair(&txn, tenant, source, target).await?;
        if source_lead.lead_id == target_lead.lead_id {
            return Err(Error::FailedPrecondition(format!(
                "lead {source} is already lead {target} or merged into it"
            )));
        }
        let mut events = Vec::new();
        merge_leads(&txn, tenant, source_lead, target_lead, now, &mut events).await?;
        let accepted = Accepted {
            lead_id: target.to_owned(),
            activity_id: None,
            merged_lead_ids: vec![source.to_owned()],
            duplicate: false,
        };
        save_request(&txn, tenant, message_id, &accepted, now).await?;
        outbox::enqueue(&txn, events, Packing::Bundled).await?;
        txn.commit().await?;
        self.wakeup.wake();
        Ok(accepted)
    }

    /// The lead `lead_id`, or the lead it was merged into; `None` if unknown to the tenant. Its
    /// rows are read in one snapshot, so a merge committing meanwhile is seen whole or not at all.
    pub async fn lead(&self, tenant: &str, lead_id: &str) -> Result<Option<LeadView>, Error> {
        let snapshot = leadflow_runtime::db::begin_snapshot(&self.reader).await?;
        let Some(requested) = lead::Entity::find_by_id((tenant.to_owned(), lead_id.to_owned()))
            .one(&snapshot)
            .await?
        else {
            return Ok(None);
        };
        let (row, merged) = match &requested.merged_into {
            Some(survivor) => (
                lead::Entity::find_by_id((tenant.to_owned(), survivor.clone()))
                    .one(&snapshot)
                    .await?
                    .ok_or_else(|| Error::LeadNotFound(survivor.clone()))?,
                true,
            ),
            None => (requested, false),
        };
        let identities = identity::Entity::find()
            .filter(identity::Column::TenantId.eq(tenant))
            .filter(identity::Column::LeadId.eq(&row.lead_id))
            .all(&snapshot)
            .await?;
        let merged_lead_ids = lead::Entity::find()
            .filter(lead::Column::TenantId.eq(tenant))
            .filter(lead::Column::MergedInto.eq(&row.lead_id))
            .all(&snapshot)
            .await?
            .into_iter()
            .map(|l| l.lead_id)
            .collect();
        let (mut user_ids, mut anonymous_ids) = (Vec::new(), Vec::new());
        for id in identities {
            if id.kind == USER {
                user_ids.push(id.external_id);
            } else {
                anonymous_ids.push(id.external_id);
            }
        }
        user_ids.sort();
        anonymous_ids.sort();
        let activities = activity_summary(&snapshot, tenant, &row.lead_id).await?;
        snapshot.commit().await?;
        Ok(Some(LeadView {
            profile: parse_profile(&row.profile)?,
            lead: row,
            user_ids,
            anonymous_ids,
            merged_lead_ids,
            merged,
            activities,
        }))
    }

    /// A page of a lead's timeline (the surviving lead's, for a merged id).
    pub async fn timeline(
        &self,
        tenant: &str,
        query: &TimelineQuery,
    ) -> Result<Option<TimelinePage>, Error> {
        let Some(view) = self.lead(tenant, &query.lead_id).await? else {
            return Ok(None);
        };
        timeline::page(&self.reader, tenant, &view.lead.lead_id, query)
            .await
            .map(Some)
    }
}

/// Applies `commands` in order inside `txn`, each with its own reads and writes: the path for
/// batches that link ids across leads (merges, shared devices) or name a lead merged away.
async fn one_by_one(
    txn: &DatabaseTransaction,
    tenant: &str,
    commands: &[Command],
    now: DateTime<Utc>,
    events: &mut Vec<NewMessage>,
) -> Result<Vec<Accepted>, Error> {
    let mut answers = Vec::with_capacity(commands.len());
    for command in commands {
        if let Some(previous) = find_request(txn, tenant, command.message_id()).await? {
            answers.push(previous);
            continue;
        }
        let accepted = match command {
            Command::Identify(c) => identify(txn, tenant, c, now, events).await?,
            Command::Track(c) => track(txn, tenant, c, now, events).await?,
        };
        save_request(txn, tenant, command.message_id(), &accepted, now).await?;
        answers.push(accepted);
    }
    Ok(answers)
}

async fn find_request(
    txn: &DatabaseTransaction,
    tenant: &str,
    message_id: &str,
) -> Result<Option<Accepted>, Error> {
    Ok(
        request::Entity::find_by_id((tenant.to_owned(), message_id.to_owned()))
            .one(txn)
            .await?
            .map(stored_answer),
    )
}

/// What a stored request row answers when its message id comes again.
fn stored_answer(row: request::Model) -> Accepted {
    Accepted {
        lead_id: row.lead_id,
        activity_id: row.activity_id,
        merged_lead_ids: serde_json::from_str(&row.merged_lead_ids).unwrap_or_default(),
        duplicate: true,
    }
}

/// The row remembering what `message_id` was answered.
fn request_row(
    tenant: &str,
    message_id: &str,
    accepted: &Accepted,
    now: DateTime<Utc>,
) -> request::ActiveModel {
    request::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        message_id: Set(message_id.to_owned()),
        lead_id: Set(accepted.lead_id.clone()),
        activity_id: Set(accepted.activity_id.clone()),
        merged_lead_ids: Set(
            serde_json::to_string(&accepted.merged_lead_ids).unwrap_or_else(|_| "[]".into())
        ),
        created_at: Set(now),
    }
}

async fn save_request(
    txn: &DatabaseTransaction,
    tenant: &str,
    message_id: &str,
    accepted: &Accepted,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    request_row(tenant, message_id, accepted, now)
        .insert(txn)
        .await?;
    Ok(())
}

async fn identify(
    txn: &DatabaseTransaction,
    tenant: &str,
    command: &IdentifyCommand,
    now: DateTime<Utc>,
    events: &mut Vec<NewMessage>,
) -> Result<Accepted, Error> {
    let (lead, merged_lead_ids) = resolve(txn, tenant, &command.identity, now, events).await?;
    let mut profile = parse_profile(&lead.profile)?;
    profile.apply(&command.profile);
    let lead_id = lead.lead_id.clone();
    let mut row: lead::ActiveModel = lead.into();
    row.profile = Set(serialize_profile(&profile));
    row.updated_at = Set(now);
    row.update(txn).await?;
    events.push(events::profile_changed(tenant, &lead_id, &profile, now));
    Ok(Accepted {
        lead_id,
        activity_id: None,
        merged_lead_ids,
        duplicate: false,
    })
}

async fn track(
    txn: &DatabaseTransaction,
    tenant: &str,
    command: &TrackCommand,
    now: DateTime<Utc>,
    events: &mut Vec<NewMessage>,
) -> Result<Accepted, Error> {
    let (lead, merged_lead_ids) = resolve(txn, tenant, &command.identity, now, events).await?;
    let activity = &command.activity;
    let activity_id = uuid::Uuid::now_v7().to_string();
    let occurred_us = activity.occurred_at.timestamp_micros();
    activity::ActiveModel {
        activity_id: Set(activity_id.clone()),
        tenant_id: Set(tenant.to_owned()),
        lead_id: Set(lead.lead_id.clone()),
        original_lead_id: Set(lead.lead_id.clone()),
        activity_type: Set(activity.kind.as_str().to_owned()),
        occurred_at_us: Set(occurred_us),
        received_at: Set(now),
        properties: Set(serde_json::to_string(&activity.properties).unwrap_or_else(|_| "{}".into())),
    }
    .insert(txn)
    .await?;
    let lead_id = lead.lead_id;
    events.push(events::activity_recorded(
        tenant,
        &lead_id,
        &activity_id,
        activity,
        now,
    ));
    Ok(Accepted {
        lead_id,
        activity_id: Some(activity_id),
        merged_lead_ids,
        duplicate: false,
    })
}

/// Finds or creates the lead an identity names, linking ids as it goes:
/// - unknown ids create a lead;
/// - a new id next to a known one joins that lead (an anonymous visitor becomes known);
/// - a user id and an anonymous id on two different leads merge the anonymous lead into the
///   user's, unless the anonymous lead is itself a known person (a shared device): then the
///   anonymous id moves to the user's lead for what comes next, and nothing is merged.
async fn resolve(
    txn: &DatabaseTransaction,
    tenant: &str,
    who: &Identity,
    now: DateTime<Utc>,
    events: &mut Vec<NewMessage>,
) -> Result<(lead::Model, Vec<String>), Error> {
    let by_user = match &who.user_id {
        Some(id) => find_identity(txn, tenant, USER, id).await?,
        None => None,
    };
    let by_anonymous = match &who.anonymous_id {
        Some(id) => find_identity(txn, tenant, ANONYMOUS, id).await?,
        None => None,
    };
    let mut merged = Vec::new();
    let lead_id = match (by_user, by_anonymous) {
        (None, None) => {
            let lead = create_lead(txn, tenant, now).await?;
            lead.lead_id
        }
        (Some(user_lead), None) => user_lead,
        (None, Some(anonymous_lead)) => anonymous_lead,
        (Some(user_lead), Some(anonymous_lead)) if user_lead == anonymous_lead => user_lead,
        (Some(user_lead), Some(anonymous_lead)) => {
            if has_user_identity(txn, tenant, &anonymous_lead).await? {
                if let Some(anonymous_id) = &who.anonymous_id {
                    link(txn, tenant, ANONYMOUS, anonymous_id, &user_lead).await?;
                }
            } else {
                let (source, target) = live_pair(txn, tenant, &anonymous_lead, &user_lead)
                    .await
                    .map_err(merged_meanwhile)?;
                merge_leads(txn, tenant, source, target, now, events).await?;
                merged.push(anonymous_lead);
            }
            user_lead
        }
    };
    // Locked before anything is written for it: a merge of this lead on another replica
    // either waits for this transaction or has committed, and then this one stops here.
    let lead = live_lead(txn, tenant, &lead_id)
        .await
        .map_err(merged_meanwhile)?;
    if let Some(id) = &who.user_id {
        link(txn, tenant, USER, id, &lead_id).await?;
    }
    if let Some(id) = &who.anonymous_id {
        link(txn, tenant, ANONYMOUS, id, &lead_id).await?;
    }
    Ok((lead, merged))
}

async fn find_identity(
    txn: &DatabaseTransaction,
    tenant: &str,
    kind: &str,
    external_id: &str,
) -> Result<Option<String>, Error> {
    Ok(
        identity::Entity::find_by_id((tenant.to_owned(), kind.to_owned(), external_id.to_owned()))
            .one(txn)
            .await?
            .map(|row| row.lead_id),
    )
}

async fn has_user_identity(
    txn: &DatabaseTransaction,
    tenant: &str,
    lead_id: &str,
) -> Result<bool, Error> {
    Ok(identity::Entity::find()
        .filter(identity::Column::TenantId.eq(tenant))
        .filter(identity::Column::LeadId.eq(lead_id))
        .filter(identity::Column::Kind.eq(USER))
        .one(txn)
        .await?
        .is_some())
}

/// Points `kind:external_id` at `lead_id`, creating the identity if new.
async fn link(
    txn: &DatabaseTransaction,
    tenant: &str,
    kind: &str,
    external_id: &str,
    lead_id: &str,
) -> Result<(), Error> {
    let key = (tenant.to_owned(), kind.to_owned(), external_id.to_owned());
    match identity::Entity::find_by_id(key).one(txn).await? {
        Some(row) if row.lead_id == lead_id => {}
        Some(row) => {
            let mut row: identity::ActiveModel = row.into();
            row.lead_id = Set(lead_id.to_owned());
            row.update(txn).await?;
        }
        None => {
            identity::ActiveModel {
                tenant_id: Set(tenant.to_owned()),
                kind: Set(kind.to_owned()),
                external_id: Set(external_id.to_owned()),
                lead_id: Set(lead_id.to_owned()),
            }
            .insert(txn)
            .await?;
        }
    }
    Ok(())
}

async fn create_lead(
    txn: &DatabaseTransaction,
    tenant: &str,
    now: DateTime<Utc>,
) -> Result<lead::Model, Error> {
    Ok(lead::ActiveModel {
        tenant_id: Set(tenant.to_owned()),
        lead_id: Set(uuid::Uuid::now_v7().to_string()),
        profile: Set("{}".to_owned()),
        merged_into: Set(None),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(txn)
    .await?)
}

/// The lead `lead_id` if it exists and was not merged away, its row locked until the end of
/// `txn` on PostgreSQL (SQLite has one writer). Whatever reads a lead to write for it goes
/// through here first: a merge locks both leads before it moves their activities, so an
/// activity recorded on another replica meanwhile is either moved with the rest or recorded
/// after the merge, on the lead it was merged into.
async fn live_lead(
    txn: &DatabaseTransaction,
    tenant: &str,
    lead_id: &str,
) -> Result<lead::Model, Error> {
    let lead = lead::Entity::find_by_id((tenant.to_owned(), lead_id.to_owned()))
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or_else(|| Error::LeadNotFound(lead_id.to_owned()))?;
    match &lead.merged_into {
        Some(survivor) => Err(Error::FailedPrecondition(format!(
            "lead {lead_id} was merged into {survivor}"
        ))),
        None => Ok(lead),
    }
}

/// [`live_lead`] for `first` and `second`, locked in key order, so two merges or a merge and a
/// batch (which locks its leads in key order too) cannot deadlock.
async fn live_pair(
    txn: &DatabaseTransaction,
    tenant: &str,
    first: &str,
    second: &str,
) -> Result<(lead::Model, lead::Model), Error> {
    if first <= second {
        let a = live_lead(txn, tenant, first).await?;
        Ok((a, live_lead(txn, tenant, second).await?))
    } else {
        let b = live_lead(txn, tenant, second).await?;
        Ok((live_lead(txn, tenant, first).await?, b))
    }
}

/// A lead an identity named, found merged away once locked: identities move with a merge, so
/// another replica merged it after this request read the identity. Resolving again finds the
/// survivor.
fn merged_meanwhile(err: Error) -> Error {
    match err {
        Error::FailedPrecondition(message) => {
            Error::Conflict(format!("{message} meanwhile, retry"))
        }
        other => other,
    }
}

async fn merge_leads(
    txn: &DatabaseTransaction,
    tenant: &str,
    source: lead::Model,
    target: lead::Model,
    now: DateTime<Utc>,
    events: &mut Vec<NewMessage>,
) -> Result<(), Error> {
    let (from, into) = (source.lead_id.as_str(), target.lead_id.as_str());
    activity::Entity::update_many()
        .col_expr(activity::Column::LeadId, Expr::value(into))
        .filter(activity::Column::TenantId.eq(tenant))
        .filter(activity::Column::LeadId.eq(from))
        .exec(txn)
        .await?;
    identity::Entity::update_many()
        .col_expr(identity::Column::LeadId, Expr::value(into))
        .filter(identity::Column::TenantId.eq(tenant))
        .filter(identity::Column::LeadId.eq(from))
        .exec(txn)
        .await?;
    lead::Entity::update_many()
        .col_expr(lead::Column::MergedInto, Expr::value(into))
        .filter(lead::Column::TenantId.eq(tenant))
        .filter(
            lead::Column::MergedInto
                .eq(from)
                .or(lead::Column::LeadId.eq(from)),
        )
        .exec(txn)
        .await?;
    let mut profile = parse_profile(&target.profile)?;
    profile.absorb(&parse_profile(&source.profile)?);
    let mut row: lead::ActiveModel = target.clone().into();
    row.profile = Set(serialize_profile(&profile));
    row.updated_at = Set(now);
    row.update(txn).await?;
    events.push(events::leads_merged(tenant, into, from, &profile, now));
    tracing::info!(tenant, source = from, target = into, "leads merged");
    Ok(())
}

/// The lead's activity count and latest activity time, from one range of the timeline's index
/// (tenant, lead, occurred at, activity), which holds every column the query needs: SQLite
/// never reads the rows (PostgreSQL may check them for visibility). It grows with the lead's
/// activities, as the timeline does.
async fn activity_summary<C: ConnectionTrait>(
    conn: &C,
    tenant: &str,
    lead_id: &str,
) -> Result<ActivitySummary, Error> {
    let summary = activity::Entity::find()
        .select_only()
        .column_as(activity::Column::ActivityId.count(), "count")
        .column_as(activity::Column::OccurredAtUs.max(), "last_occurred_us")
        .filter(activity::Column::TenantId.eq(tenant))
        .filter(activity::Column::LeadId.eq(lead_id))
        .into_model::<ActivitySummary>()
        .one(conn)
        .await?;
    Ok(summary.unwrap_or_default())
}

fn parse_profile(json: &str) -> Result<Profile, Error> {
    serde_json::from_str(json).map_err(|err| {
        Error::Store(sea_orm::DbErr::Custom(format!(
            "stored profile does not parse: {err}"
        )))
    })
}

fn serialize_profile(profile: &Profile) -> String {
    serde_json::to_string(profile).unwrap_or_else(|_| "{}".to_owned())
}
