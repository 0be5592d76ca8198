//! The leads one delivered batch touches, read once and written once: a batch's leads are read
//! with one query per thousand ids (and locked, in key order, on PostgreSQL), changed in memory
//! event after event, and written back with their new facts as multi-row statements, instead
//! of a read, a fact insert and an update per event.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_runtime::db::{MAX_ROWS_PER_STATEMENT, chunked};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{Announced, LeadState, decode, fact, lead_score, saved_row};
use crate::domain::{LeadScore, Model};
use crate::error::Error;

/// `(tenant, lead)`.
type Key = (String, String);

/// A batch's leads, keyed by the surviving lead, with the ids merged into them as aliases.
#[derive(Default)]
pub(super) struct LeadCache {
    leads: HashMap<Key, LeadState>,
    /// Requested id → the lead it was merged into.
    aliases: HashMap<Key, Key>,
    /// Leads changed since the last flush, and what their rows announce.
    dirty: HashMap<Key, Announced>,
    facts: Vec<fact::ActiveModel>,
}

impl LeadCache {
    /// Reads the leads `keys` name (and the leads they were merged into) in a few queries.
    pub(super) async fn prefetch(
        &mut self,
        txn: &DatabaseTransaction,
        keys: impl IntoIterator<Item = Key>,
    ) -> Result<(), Error> {
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for (tenant, lead) in keys {
            by_tenant.entry(tenant).or_default().push(lead);
        }
        for (tenant, mut ids) in by_tenant {
            ids.sort_unstable();
            ids.dedup();
            let mut survivors = Vec::new();
            for row in rows(txn, &tenant, &ids).await? {
                match row.merged_into.clone() {
                    Some(survivor) => {
                        self.aliases.insert(
                            (tenant.clone(), row.lead_id.clone()),
                            (tenant.clone(), survivor.clone()),
                        );
                        survivors.push(survivor);
                    }
                    None => self.insert(decode(row, false)?),
                }
            }
            survivors.sort_unstable();
            survivors.dedup();
            survivors.retain(|id| !self.leads.contains_key(&(tenant.clone(), id.clone())));
            for row in rows(txn, &tenant, &survivors).await? {
                self.insert(decode(row, false)?);
            }
        }
        Ok(())
    }

    fn insert(&mut self, lead: LeadState) {
        self.leads.insert(key_of(&lead), lead);
    }

    /// The lead `lead_id` names (the survivor, for a merged id), read if not prefetched, or a
    /// new one first seen at `first_seen`, to be inserted at the flush.
    pub(super) async fn lead(
        &mut self,
        txn: &DatabaseTransaction,
        tenant: &str,
        lead_id: &str,
        model: &Model,
        first_seen: DateTime<Utc>,
    ) -> Result<&mut LeadState, Error> {
        let requested = (tenant.to_owned(), lead_id.to_owned());
        let mut key = self
            .aliases
            .get(&requested)
            .cloned()
            .unwrap_or(requested.clone());
        if !self.leads.contains_key(&key) {
            match super::load_lead(txn, tenant, lead_id).await? {
                Some(lead) => {
                    key = (tenant.to_owned(), lead.row.lead_id.clone());
                    if key != requested {
                        self.aliases.insert(requested, key.clone());
                    }
                    self.leads.entry(key.clone()).or_insert(lead);
                }
                None => {
                    self.leads
                        .insert(key.clone(), new_lead(tenant, lead_id, model, first_seen));
                }
            }
        }
        self.leads
            .get_mut(&key)
            .ok_or_else(|| Error::Corrupt(format!("lead {lead_id} not cached")))
    }

    /// Marks the lead `key` changed, with what its row announces and the fact that changed it.
    pub(super) fn changed(
        &mut self,
        key: Key,
        announced: Announced,
        fact: Option<fact::ActiveModel>,
    ) {
        self.dirty.insert(key, announced);
        self.facts.extend(fact);
    }

    /// Writes the new facts and every changed lead (one upsert, in key order), and forgets
    /// everything: what comes next reads the store again.
    pub(super) async fn flush(
        &mut self,
        txn: &DatabaseTransaction,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let facts = std::mem::take(&mut self.facts);
        for chunk in chunked(facts) {
            fact::Entity::insert_many(chunk)
                .on_conflict(
                    OnConflict::columns([fact::Column::TenantId, fact::Column::ActivityId])
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
        let mut dirty: Vec<(Key, Announced)> = self.dirty.drain().collect();
        dirty.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut rows = Vec::with_capacity(dirty.len());
        for (key, announced) in dirty {
            if let Some(lead) = self.leads.get(&key) {
                rows.push(saved_row(lead, &announced, now)?.into_active_model());
            }
        }
        let upsert =
            OnConflict::columns([lead_score::Column::TenantId, lead_score::Column::LeadId])
                .update_columns([
                    lead_score::Column::State,
                    lead_score::Column::Profile,
                    lead_score::Column::FirstSeen,
                    lead_score::Column::ModelVersion,
                    lead_score::Column::AnnouncedScore,
                    lead_score::Column::AnnouncedGrade,
                    lead_score::Column::UpdatedAt,
                ])
                .to_owned();
        for chunk in chunked(rows) {
            lead_score::Entity::insert_many(chunk)
                .on_conflict(upsert.clone())
                .exec_without_returning(txn)
                .await?;
        }
        self.leads.clear();
        self.aliases.clear();
        Ok(())
    }
}

/// The cache key of `lead`.
pub(super) fn key_of(lead: &LeadState) -> Key {
    (lead.row.tenant_id.clone(), lead.row.lead_id.clone())
}

/// The rows of `ids`, locked until the end of `txn` on PostgreSQL, in key order.
async fn rows(
    txn: &DatabaseTransaction,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<lead_score::Model>, Error> {
    let mut all = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
        all.extend(
            lead_score::Entity::find()
                .filter(lead_score::Column::TenantId.eq(tenant))
                .filter(lead_score::Column::LeadId.is_in(chunk.iter().cloned()))
                .order_by_asc(lead_score::Column::LeadId)
                .lock_exclusive()
                .all(txn)
                .await?,
        );
    }
    Ok(all)
}

/// A lead scoring has not seen before.
fn new_lead(tenant: &str, lead_id: &str, model: &Model, first_seen: DateTime<Utc>) -> LeadState {
    LeadState {
        row: lead_score::Model {
            tenant_id: tenant.to_owned(),
            lead_id: lead_id.to_owned(),
            state: String::new(),
            profile: Vec::new(),
            first_seen,
            model_version: model.version,
            merged_into: None,
            announced_score: 0.0,
            announced_grade: crate::convert::grade_to_pb(crate::domain::Grade::D) as i32,
            updated_at: first_seen,
        },
        score: LeadScore::new(first_seen),
        profile: common::Profile::default(),
        merged: false,
    }
}
