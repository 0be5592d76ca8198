//! The set-based path of [`Store::apply`](super::Store::apply): when every command of a batch
//! names one lead without linking ids across two leads (no merge, no shared device), the whole
//! batch is read in one round of queries (two on PostgreSQL, which locks the leads in key order)
//! and written with five statements, whatever its size, instead of several statements per
//! command. Anything else returns `None` before writing, and the caller takes the
//! command-by-command path, which handles every case.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use leadflow_runtime::batched::{BatchedReads, models};
use leadflow_runtime::db::{MAX_ROWS_PER_STATEMENT, in_list};
use leadflow_runtime::outbox::NewMessage;
use leadflow_runtime::script::WriteScript;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseBackend, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, Statement,
};

use super::links::LinkCache;
use super::{ANONYMOUS, Accepted, USER, activity, events, identity, lead, request};
use crate::convert::Command;
use crate::domain::{Identity, Profile};
use crate::error::Error;

/// A lead touched by the batch, as it will be written back.
struct Draft {
    /// The lead's row. `None` for a lead the batch only tracks on SQLite, where it is not read:
    /// its row does not change, and an identity there always names a live lead (a merge moves
    /// a lead's identities in the transaction that marks it merged, and SQLite's one writer
    /// reads and writes a batch in one snapshot).
    row: Option<lead::Model>,
    /// The parsed profile, once a command needed it. A lead only tracked keeps `None`: its row
    /// did not change (activities are rows of their own), so it is not written back.
    profile: Option<Profile>,
}

/// What a command becomes once its lead is known.
enum Step {
    /// Answered before this batch: the stored answer.
    Answered(Accepted),
    /// The same message id as an earlier command of this batch (its index).
    Repeat(usize),
    /// To apply to this lead.
    Apply(String),
}

/// Applies `commands` in order, reading inside `txn` in one round (two on PostgreSQL; the
/// writes queued in `script` run before the first) and adding the writes to `script` (which
/// the caller runs in `txn`), and appends the events they produce; or returns `None` having
/// added nothing when the batch needs the command-by-command path.
///
/// With `learnt`, the identity links read and written are remembered there, for
/// [`try_apply_predicted`].
pub(super) async fn try_apply(
    txn: &mut impl BatchedReads,
    script: &mut WriteScript,
    tenant: &str,
    commands: &[&Command],
    now: DateTime<Utc>,
    events: &mut Vec<NewMessage>,
    mut learnt: Option<&mut LinkCache>,
) -> Result<Option<Vec<Accepted>>, Error> {
    let known = known(txn, script, tenant, commands).await?;
    if let Some(learnt) = learnt.as_deref_mut() {
        for ((kind, external_id), lead_id) in &known.links {
            learnt.learn(tenant, kind, external_id, lead_id);
        }
    }
    apply_known(txn, script, tenant, commands, now, events, known, learnt).await
}

/// [`try_apply`] without its round of reads, on SQLite, for a batch of `Track` commands only,
/// every id of which `links` knows: it predicts that no message id was answered before and
/// that each id still points at the lead `links` remembers, and adds to `script` a check that
/// aborts the transaction when a link does not hold ([`expect_links`]); a message id answered
/// before aborts it too, as the insert of its answer fails. Once aborted, apply the batch with
/// [`try_apply`]. `None`, having added nothing, when the batch cannot be predicted.
pub(super) async fn try_apply_predicted(
    txn: &mut impl BatchedReads,
    script: &mut WriteScript,
    tenant: &str,
    commands: &[&Command],
    now: DateTime<Utc>,
    events: &mut Vec<NewMessage>,
    links: &LinkCache,
) -> Result<Option<Vec<Accepted>>, Error> {
    if txn.backend() != DatabaseBackend::Sqlite {
        return Ok(None);
    }
    let mut predicted = HashMap::new();
    for command in commands {
        let Command::Track(track) = command else {
            return Ok(None);
        };
        for (kind, id) in identity_ids(&track.identity) {
            let Some(lead_id) = links.lead_of(tenant, kind, id) else {
                return Ok(None);
            };
            predicted.insert(key(kind, id), lead_id);
        }
    }
    // The check goes first; `apply_known` adds nothing (writes or events) when it gives up.
    let mut checked = WriteScript::new(DatabaseBackend::Sqlite);
    expect_links(&mut checked, tenant, &predicted);
    let known = Known {
        answered: HashMap::new(),
        links: predicted,
        leads: Some(HashMap::new()),
    };
    let answers = apply_known(
        txn,
        &mut checked,
        tenant,
        commands,
        now,
        events,
        known,
        None,
    )
    .await?;
    if answers.is_some() {
        script.append(checked);
    }
    Ok(answers)
}

/// The user and anonymous ids of `who`, by kind.
pub(super) fn identity_ids(who: &Identity) -> impl Iterator<Item = (&'static str, &str)> {
    [(USER, &who.user_id), (ANONYMOUS, &who.anonymous_id)]
        .into_iter()
        .filter_map(|(kind, id)| Some((kind, id.as_deref()?)))
}

/// Most links one check of [`expect_links`] holds: three values each, and the statement stays
/// small enough to share a script with others.
const LINKS_PER_CHECK: usize = 100;

/// Adds to `script` a check that aborts the transaction unless every identity in `links`
/// (by kind and id, of `tenant`) points at its lead: an insert into the `expected_links` view,
/// whose trigger raises an error when the count of links found falls short (migration
/// [`ExpectedLinks`](super::migrations)). SQLite only.
pub(super) fn expect_links(
    script: &mut WriteScript,
    tenant: &str,
    links: &HashMap<(String, String), String>,
) {
    let links: Vec<_> = links.iter().collect();
    for chunk in links.chunks(LINKS_PER_CHECK) {
        let rows = vec!["(?, ?, ?)"; chunk.len()].join(", ");
        let sql = format!(
            "INSERT INTO expected_links (holds) SELECT count(*) = ? FROM (VALUES {rows}) AS expected \
             JOIN identities ON identities.tenant_id = ? AND identities.kind = expected.column1 \
             AND identities.external_id = expected.column2 AND identities.lead_id = expected.column3"
        );
        let mut values: Vec<sea_orm::Value> = Vec::with_capacity(chunk.len() * 3 + 2);
        values.push((chunk.len() as i64).into());
        for ((kind, external_id), lead_id) in chunk {
            values.push(kind.as_str().into());
            values.push(external_id.as_str().into());
            values.push(lead_id.as_str().into());
        }
        values.push(tenant.into());
        script.push_statement(Statement::from_sql_and_values(
            DatabaseBackend::Sqlite,
            sql,
            values,
        ));
    }
}

/// The rest of [`try_apply`], once what the store knows of the batch is known.
#[allow(clippy::too_many_arguments)]
async fn apply_known(
    txn: &mut impl BatchedReads,
    script: &mut WriteScript,
    tenant: &str,
    commands: &[&Command],
    now: DateTime<Utc>,
    events: &mut Vec<NewMessage>,
    known: Known,
    mut learnt: Option<&mut LinkCache>,
) -> Result<Option<Vec<Accepted>>, Error> {
    let Known {
        answered,
        mut links,
        leads,
    } = known;

    // Resolve every command to its lead, in order, as the command-by-command path would.
    let mut steps = Vec::with_capacity(commands.len());
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut new_identities = Vec::new();
    let mut new_leads = HashSet::new();
    for (index, command) in commands.iter().enumerate() {
        let message_id = command.message_id();
        if let Some(previous) = answered.get(message_id) {
            steps.push(Step::Answered(previous.clone()));
            continue;
        }
        if let Some(first) = first_of.get(message_id) {
            steps.push(Step::Repeat(*first));
            continue;
        }
        first_of.insert(message_id, index);
        let who = identity_of(command);
        let by_user = who
            .user_id
            .as_ref()
            .and_then(|id| links.get(&key(USER, id)));
        let by_anonymous = who
            .anonymous_id
            .as_ref()
            .and_then(|id| links.get(&key(ANONYMOUS, id)));
        let lead_id = match (by_user, by_anonymous) {
            (None, None) => {
                let id = uuid::Uuid::now_v7().to_string();
                new_leads.insert(id.clone());
                id
            }
            (Some(lead), None) | (None, Some(lead)) => lead.clone(),
            (Some(user_lead), Some(anonymous_lead)) if user_lead == anonymous_lead => {
                user_lead.clone()
            }
            (Some(_), Some(_)) => return Ok(None),
        };
        for (kind, id) in identity_ids(who) {
            if let Entry::Vacant(unlinked) = links.entry(key(kind, id)) {
                unlinked.insert(lead_id.clone());
                if let Some(learnt) = learnt.as_deref_mut() {
                    learnt.learn(tenant, kind, id, &lead_id);
                }
                new_identities.push(identity::ActiveModel {
                    tenant_id: Set(tenant.to_owned()),
                    kind: Set(kind.to_owned()),
                    external_id: Set(id.to_owned()),
                    lead_id: Set(lead_id.clone()),
                });
            }
        }
        steps.push(Step::Apply(lead_id));
    }

    let identified: HashSet<&str> = commands
        .iter()
        .zip(&steps)
        .filter_map(|(command, step)| match (command, step) {
            (Command::Identify(_), Step::Apply(lead_id)) => Some(lead_id.as_str()),
            _ => None,
        })
        .collect();
    let Some(mut drafts) = load_drafts(
        txn,
        script,
        leads,
        tenant,
        &steps,
        &identified,
        &new_leads,
        now,
    )
    .await?
    else {
        return Ok(None);
    };

    // Apply each command to its lead's draft, in order.
    let mut answers: Vec<Accepted> = Vec::with_capacity(commands.len());
    let mut activities = Vec::new();
    let mut requests = Vec::new();
    for (command, step) in commands.iter().zip(steps) {
        let lead_id = match step {
            Step::Answered(previous) => {
                answers.push(previous);
                continue;
            }
            Step::Repeat(first) => {
                let mut previous = answers[first].clone();
                previous.duplicate = true;
                answers.push(previous);
                continue;
            }
            Step::Apply(lead_id) => lead_id,
        };
        let draft = drafts
            .get_mut(&lead_id)
            .ok_or_else(|| Error::LeadNotFound(lead_id.clone()))?;
        let accepted = match command {
            Command::Identify(c) => {
                let (row, profile) = draft.identified(&lead_id)?;
                row.updated_at = now;
                profile.apply(&c.profile);
                events.push(events::profile_changed(tenant, &lead_id, profile, now));
                Accepted {
                    lead_id,
                    activity_id: None,
                    merged_lead_ids: Vec::new(),
                    duplicate: false,
                }
            }
            Command::Track(c) => {
                let activity_id = uuid::Uuid::now_v7().to_string();
                let occurred_us = c.activity.occurred_at.timestamp_micros();
                activities.push(activity::ActiveModel {
                    activity_id: Set(activity_id.clone()),
                    tenant_id: Set(tenant.to_owned()),
                    lead_id: Set(lead_id.clone()),
                    original_lead_id: Set(lead_id.clone()),
                    activity_type: Set(c.activity.kind.as_str().to_owned()),
                    occurred_at_us: Set(occurred_us),
                    received_at: Set(now),
                    properties: Set(serde_json::to_string(&c.activity.properties)
                        .unwrap_or_else(|_| "{}".into())),
                });
                events.push(events::activity_recorded(
                    tenant,
                    &lead_id,
                    &activity_id,
                    &c.activity,
                    now,
                ));
                Accepted {
                    lead_id,
                    activity_id: Some(activity_id),
                    merged_lead_ids: Vec::new(),
                    duplicate: false,
                }
            }
        };
        requests.push(super::request_row(
            tenant,
            command.message_id(),
            &accepted,
            now,
        ));
        answers.push(accepted);
    }

    write(script, drafts, new_identities, activities, requests);
    Ok(Some(answers))
}

impl Draft {
    /// The lead's row and its parsed profile, to change for an `Identify` of lead `lead_id`;
    /// [`load_drafts`] reads the row of every lead an `Identify` changes.
    fn identified(&mut self, lead_id: &str) -> Result<(&mut lead::Model, &mut Profile), Error> {
        let row = self
            .row
            .as_mut()
            .ok_or_else(|| Error::LeadNotFound(lead_id.to_owned()))?;
        let profile = match &mut self.profile {
            Some(profile) => profile,
            empty => empty.insert(super::parse_profile(&row.profile)?),
        };
        Ok((row, profile))
    }
}

fn key(kind: &str, external_id: &str) -> (String, String) {
    (kind.to_owned(), external_id.to_owned())
}

fn identity_of(command: &Command) -> &Identity {
    match command {
        Command::Identify(c) => &c.identity,
        Command::Track(c) => &c.identity,
    }
}

/// What the store knows of a batch before applying it.
struct Known {
    /// The stored answers of its message ids accepted before.
    answered: HashMap<String, Accepted>,
    /// The leads its ids already point at, by (kind, id).
    links: HashMap<(String, String), String>,
    /// On SQLite, the rows of the leads its `Identify` commands' ids point at, by id, read in
    /// the same round: a single writer needs no row locks, so nothing asks for them to be read
    /// in key order.
    leads: Option<HashMap<String, lead::Model>>,
}

/// The ids `commands` name, by kind, sorted and deduplicated, in chunks of at most
/// [`MAX_ROWS_PER_STATEMENT`]: one indexed lookup each.
fn id_lookups<'a>(
    commands: impl Iterator<Item = &'a Command> + Clone,
) -> Vec<(&'static str, Vec<&'a str>)> {
    let mut lookups = Vec::new();
    for (kind, of) in [
        (
            USER,
            (|who: &Identity| who.user_id.as_deref()) as fn(&Identity) -> Option<&str>,
        ),
        (ANONYMOUS, |who: &Identity| who.anonymous_id.as_deref()),
    ] {
        let mut ids: Vec<&str> = commands
            .clone()
            .filter_map(|command| of(identity_of(command)))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        lookups.extend(
            ids.chunks(MAX_ROWS_PER_STATEMENT)
                .map(|chunk| (kind, chunk.to_vec())),
        );
    }
    lookups
}

/// The stored answers of the batch's message ids and the leads its ids point at, in one round
/// of reads: the answers, then one indexed lookup per kind of id (the key is tenant, kind, id,
/// so leaving the kind out would scan the tenant's every identity), and on SQLite the rows of
/// the leads the `Identify` commands' ids find. The ids of commands answered before are looked
/// up too: what they point at is as true as any other link, and reading them beside the
/// answers saves a round.
async fn known(
    txn: &mut impl BatchedReads,
    script: &mut WriteScript,
    tenant: &str,
    commands: &[&Command],
) -> Result<Known, Error> {
    let backend = txn.backend();
    let message_ids: Vec<&str> = commands
        .iter()
        .map(|command| command.message_id())
        .collect();
    let mut reads: Vec<Statement> = message_ids
        .chunks(MAX_ROWS_PER_STATEMENT)
        .map(|chunk| {
            request::Entity::find()
                .filter(request::Column::TenantId.eq(tenant))
                .filter(request::Column::MessageId.is_in(in_list(chunk)))
                .build(backend)
        })
        .collect();
    let answer_reads = reads.len();
    let lookups = id_lookups(commands.iter().copied());
    let identities_of = |kind: &str, ids: &[&str]| {
        identity::Entity::find()
            .filter(identity::Column::TenantId.eq(tenant))
            .filter(identity::Column::Kind.eq(kind))
            .filter(identity::Column::ExternalId.is_in(in_list(ids)))
    };
    reads.extend(
        lookups
            .iter()
            .map(|(kind, ids)| identities_of(kind, ids).build(backend)),
    );
    // On SQLite only the leads an `Identify` changes are read (see [`Draft::row`]).
    let prefetch = backend == DatabaseBackend::Sqlite;
    if prefetch {
        let identified = commands
            .iter()
            .copied()
            .filter(|command| matches!(command, Command::Identify(_)));
        let identified_lookups = id_lookups(identified);
        reads.extend(identified_lookups.iter().map(|(kind, ids)| {
            let linked = identities_of(kind, ids)
                .select_only()
                .column(identity::Column::LeadId)
                .into_query();
            lead::Entity::find()
                .filter(lead::Column::TenantId.eq(tenant))
                .filter(lead::Column::LeadId.in_subquery(linked))
                .build(backend)
        }));
    }
    let results = txn.read(script, reads).await?;
    let (answers, rest) = results.split_at(answer_reads);
    let (identities, linked_leads) = rest.split_at(lookups.len());
    let mut answered = HashMap::new();
    for rows in answers {
        for row in models::<request::Model>(rows)? {
            answered.insert(row.message_id.clone(), super::stored_answer(row));
        }
    }
    let mut links = HashMap::new();
    for rows in identities {
        for row in models::<identity::Model>(rows)? {
            links.insert((row.kind, row.external_id), row.lead_id);
        }
    }
    let leads = if prefetch {
        let mut leads = HashMap::new();
        for rows in linked_leads {
            for row in models::<lead::Model>(rows)? {
                leads.insert(row.lead_id.clone(), row);
            }
        }
        Some(leads)
    } else {
        None
    };
    Ok(Known {
        answered,
        links,
        leads,
    })
}

/// The drafts of every lead the steps apply to: existing ones from `prefetched` or else read
/// (and on PostgreSQL locked, in key order so concurrent batches cannot deadlock), new ones
/// fresh. With `prefetched` (SQLite), a lead only tracked gets no row (see [`Draft::row`]).
/// `None` when an identity points at a lead that is missing or merged away, or when the row of
/// a lead in `identified` was not prefetched (its identity was linked earlier in this batch):
/// the command-by-command path answers that.
#[allow(clippy::too_many_arguments)]
async fn load_drafts(
    txn: &mut impl BatchedReads,
    script: &mut WriteScript,
    prefetched: Option<HashMap<String, lead::Model>>,
    tenant: &str,
    steps: &[Step],
    identified: &HashSet<&str>,
    new_leads: &HashSet<String>,
    now: DateTime<Utc>,
) -> Result<Option<HashMap<String, Draft>>, Error> {
    let mut existing: Vec<&str> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Apply(id) if !new_leads.contains(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    existing.sort_unstable();
    existing.dedup();
    let mut drafts = HashMap::with_capacity(existing.len() + new_leads.len());
    match prefetched {
        Some(mut leads) => {
            for id in existing {
                let row = leads.remove(id);
                if row.is_none() && identified.contains(id) {
                    return Ok(None);
                }
                drafts.insert(id.to_owned(), Draft { row, profile: None });
            }
        }
        None => {
            let rows = read_leads(txn, script, tenant, &existing).await?;
            if rows.len() != existing.len() {
                return Ok(None);
            }
            for row in rows {
                drafts.insert(
                    row.lead_id.clone(),
                    Draft {
                        row: Some(row),
                        profile: None,
                    },
                );
            }
        }
    }
    if drafts.values().any(|draft| {
        draft
            .row
            .as_ref()
            .is_some_and(|row| row.merged_into.is_some())
    }) {
        return Ok(None);
    }
    for id in new_leads {
        let row = lead::Model {
            tenant_id: tenant.to_owned(),
            lead_id: id.clone(),
            profile: "{}".to_owned(),
            merged_into: None,
            created_at: now,
            updated_at: now,
        };
        drafts.insert(
            id.clone(),
            Draft {
                row: Some(row),
                profile: Some(Profile::default()),
            },
        );
    }
    Ok(Some(drafts))
}

/// The rows of the leads `ids` (sorted), locked on PostgreSQL in key order so concurrent
/// batches cannot deadlock.
async fn read_leads(
    txn: &mut impl BatchedReads,
    script: &mut WriteScript,
    tenant: &str,
    ids: &[&str],
) -> Result<Vec<lead::Model>, Error> {
    let backend = txn.backend();
    let reads: Vec<Statement> = ids
        .chunks(MAX_ROWS_PER_STATEMENT)
        .map(|chunk| {
            lead::Entity::find()
                .filter(lead::Column::TenantId.eq(tenant))
                .filter(lead::Column::LeadId.is_in(in_list(chunk)))
                .order_by_asc(lead::Column::LeadId)
                .lock_exclusive()
                .build(backend)
        })
        .collect();
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    let mut rows = Vec::with_capacity(ids.len());
    for read in txn.read(script, reads).await? {
        rows.extend(models::<lead::Model>(&read)?);
    }
    Ok(rows)
}

/// Adds the batch's writes to `script`: every touched lead in one upsert (in key order), then
/// the new identities, activities and answers, each as multi-row inserts.
fn write(
    script: &mut WriteScript,
    drafts: HashMap<String, Draft>,
    identities: Vec<identity::ActiveModel>,
    activities: Vec<activity::ActiveModel>,
    requests: Vec<request::ActiveModel>,
) {
    let mut leads: Vec<lead::ActiveModel> = drafts
        .into_values()
        .filter_map(|draft| {
            let profile = draft.profile.as_ref()?;
            let mut row = draft.row?;
            row.profile = super::serialize_profile(profile);
            Some(row.into_active_model())
        })
        .collect();
    leads.sort_unstable_by(|a, b| a.lead_id.as_ref().cmp(b.lead_id.as_ref()));
    let upsert = OnConflict::columns([lead::Column::TenantId, lead::Column::LeadId])
        .update_columns([lead::Column::Profile, lead::Column::UpdatedAt])
        .to_owned();
    script.insert_many(leads, Some(&upsert));
    script.insert_many(identities, None);
    script.insert_many(activities, None);
    script.insert_many(requests, None);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::migrations::{LINK_DOES_NOT_HOLD, Migrator};
    use leadflow_runtime::batched::BatchedTransaction;
    use sea_orm::{ConnectionTrait, DatabaseConnection};

    async fn identity_count(db: &DatabaseConnection) -> usize {
        identity::Entity::find()
            .all(db)
            .await
            .expect("read identities")
            .len()
    }

    /// Commits the check of `links` with an insert of a new identity behind it.
    async fn commit_checked(
        db: &DatabaseConnection,
        links: &HashMap<(String, String), String>,
    ) -> Result<(), sea_orm::DbErr> {
        let txn = BatchedTransaction::begin(db).await?;
        let mut script = WriteScript::new(DatabaseBackend::Sqlite);
        expect_links(&mut script, "acme", links);
        script.insert_many(
            vec![identity::ActiveModel {
                tenant_id: Set("acme".into()),
                kind: Set(USER.into()),
                external_id: Set(format!("new-{}", uuid::Uuid::now_v7())),
                lead_id: Set("lead-a".into()),
            }],
            None,
        );
        txn.commit(&mut script).await.map(drop)
    }

    #[tokio::test]
    async fn a_transaction_checking_links_commits_only_when_every_link_holds() {
        let file = leadflow_test_support::TestDb::sqlite("links");
        let db = leadflow_runtime::db::open::<Migrator>(&file.url, 1)
            .await
            .expect("open");
        db.execute_unprepared(
            "INSERT INTO identities (tenant_id, kind, external_id, lead_id) VALUES \
             ('acme', 'user', 'ada', 'lead-a'), ('acme', 'anonymous', 'cookie-1', 'lead-a'), \
             ('globex', 'user', 'bob', 'lead-b')",
        )
        .await
        .expect("seed identities");
        let link =
            |kind: &str, id: &str, lead: &str| ((kind.to_owned(), id.to_owned()), lead.to_owned());

        let holding = HashMap::from([
            link(USER, "ada", "lead-a"),
            link(ANONYMOUS, "cookie-1", "lead-a"),
        ]);
        commit_checked(&db, &holding)
            .await
            .expect("links that hold");
        assert_eq!(identity_count(&db).await, 4);

        for stale in [
            link(USER, "ada", "lead-b"),
            link(ANONYMOUS, "cookie-2", "lead-a"),
            link(USER, "bob", "lead-b"),
        ] {
            let mut links = holding.clone();
            links.insert(stale.0.clone(), stale.1.clone());
            let err = commit_checked(&db, &links)
                .await
                .expect_err("a link that does not hold aborts");
            assert!(
                err.to_string().contains(LINK_DOES_NOT_HOLD),
                "{stale:?}: {err}"
            );
            assert_eq!(
                identity_count(&db).await,
                4,
                "{stale:?}: nothing is written"
            );
        }
    }
}
