//! The leads one delivered batch of score changes touches, read once and written once: read
//! with one query per thousand ids (locked, in key order, on PostgreSQL), moved through the
//! state machine in memory event after event, and written back with their transitions as
//! multi-row statements, instead of a read, transition inserts and an update per event.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_runtime::db::{MAX_ROWS_PER_STATEMENT, chunked};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};

use super::{LeadRecord, SAVED_COLUMNS, decode, lead, refresh_row, transition};
use crate::domain::LeadQualification;
use crate::error::Error;

/// `(tenant, lead)`.
type Key = (String, String);

/// A batch's leads, keyed by the surviving lead, with the ids merged into them as aliases.
#[derive(Default)]
pub(super) struct LeadCache {
    leads: HashMap<Key, LeadRecord>,
    /// Requested id → the lead it was merged into.
    aliases: HashMap<Key, Key>,
    /// Leads changed since the last flush.
    dirty: HashSet<Key>,
    transitions: Vec<transition::ActiveModel>,
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

    fn insert(&mut self, lead: LeadRecord) {
        self.leads.insert(key_of(&lead), lead);
    }

    /// The lead `lead_id` names (the survivor, for a merged id), read if not prefetched, or a
    /// new one, to be inserted at the flush.
    pub(super) async fn lead(
        &mut self,
        txn: &DatabaseTransaction,
        tenant: &str,
        lead_id: &str,
        now: DateTime<Utc>,
    ) -> Result<&mut LeadRecord, Error> {
        let requested = (tenant.to_owned(), lead_id.to_owned());
        let mut key = self
            .aliases
            .get(&requested)
            .cloned()
            .unwrap_or(requested.clone());
        if !self.leads.contains_key(&key) {
            match super::load_lead(txn, tenant, lead_id).await? {
                Some(lead) => {
                    key = key_of(&lead);
                    if key != requested {
                        self.aliases.insert(requested, key.clone());
                    }
                    self.leads.entry(key.clone()).or_insert(lead);
                }
                None => {
                    self.leads
                        .insert(key.clone(), new_lead(tenant, lead_id, now));
                }
            }
        }
        self.leads
            .get_mut(&key)
            .ok_or_else(|| Error::Corrupt(format!("lead {lead_id} not cached")))
    }

    /// Marks the lead `key` changed, with the transitions that changed it.
    pub(super) fn changed(&mut self, key: Key, transitions: Vec<transition::ActiveModel>) {
        self.dirty.insert(key);
        self.transitions.extend(transitions);
    }

    /// Writes the transitions and every changed lead (one upsert, in key order), and forgets
    /// everything: what comes next reads the store again.
    pub(super) async fn flush(
        &mut self,
        txn: &DatabaseTransaction,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let mut dirty: Vec<Key> = self.dirty.drain().collect();
        dirty.sort_unstable();
        let mut rows = Vec::with_capacity(dirty.len());
        for key in dirty {
            if let Some(lead) = self.leads.get_mut(&key) {
                refresh_row(lead, now)?;
                rows.push(lead.row.clone().into_active_model());
            }
        }
        let upsert = OnConflict::columns([lead::Column::TenantId, lead::Column::LeadId])
            .update_columns(SAVED_COLUMNS)
            .to_owned();
        for chunk in chunked(rows) {
            lead::Entity::insert_many(chunk)
                .on_conflict(upsert.clone())
                .exec_without_returning(txn)
                .await?;
        }
        for chunk in chunked(std::mem::take(&mut self.transitions)) {
            transition::Entity::insert_many(chunk)
                .exec_without_returning(txn)
                .await?;
        }
        self.leads.clear();
        self.aliases.clear();
        Ok(())
    }
}

/// The cache key of `lead`.
pub(super) fn key_of(lead: &LeadRecord) -> Key {
    (lead.row.tenant_id.clone(), lead.row.lead_id.clone())
}

/// The rows of `ids`, locked until the end of `txn` on PostgreSQL, in key order.
async fn rows(
    txn: &DatabaseTransaction,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<lead::Model>, Error> {
    let mut all = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
        all.extend(
            lead::Entity::find()
                .filter(lead::Column::TenantId.eq(tenant))
                .filter(lead::Column::LeadId.is_in(chunk.iter().cloned()))
                .order_by_asc(lead::Column::LeadId)
                .lock_exclusive()
                .all(txn)
                .await?,
        );
    }
    Ok(all)
}

/// A lead qualification has not seen before.
fn new_lead(tenant: &str, lead_id: &str, now: DateTime<Utc>) -> LeadRecord {
    let state = LeadQualification::new(now);
    let row = lead::Model {
        tenant_id: tenant.to_owned(),
        lead_id: lead_id.to_owned(),
        stage: state.stage.name().to_owned(),
        state: String::new(),
        profile: Vec::new(),
        score: Vec::new(),
        source_channel: 0,
        definition_version: 0,
        merged_into: None,
        created_at: now,
        updated_at: now,
    };
    LeadRecord {
        row,
        state,
        profile: common::Profile::default(),
        score: None,
        merged: false,
    }
}
