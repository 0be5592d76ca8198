//! The leads one delivered batch of score changes touches (the runtime's [`LeadCache`]), with
//! the transitions the batch records: read once, moved through the state machine in memory
//! event after event, written back with one upsert and one multi-row transition insert instead
//! of a read, transition inserts and an update per event.

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_runtime::db::MAX_ROWS_PER_STATEMENT;
use leadflow_runtime::lead_cache::{self, Found, LeadKey};
use leadflow_runtime::script::WriteScript;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};

use super::{LeadRecord, SAVED_COLUMNS, STAGE_COLUMNS, decode, lead, refresh_row, transition};
use crate::domain::LeadQualification;
use crate::error::Error;

/// A batch's leads, the changed ones marked, and the transitions recorded.
#[derive(Default)]
pub(super) struct LeadCache {
    leads: lead_cache::LeadCache<LeadRecord, ()>,
    transitions: Vec<transition::ActiveModel>,
}

impl LeadCache {
    /// Reads the leads `keys` name (and the leads they were merged into) in a few queries.
    pub(super) async fn prefetch(
        &mut self,
        txn: &DatabaseTransaction,
        keys: impl IntoIterator<Item = LeadKey>,
    ) -> Result<(), Error> {
        self.leads
            .prefetch(
                keys,
                |tenant, ids| async move { rows(txn, &tenant, &ids).await },
            )
            .await
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
        self.leads
            .get_or_load(
                (tenant, lead_id),
                txn.get_database_backend(),
                || super::load_lead(txn, tenant, lead_id),
                || new_lead(tenant, lead_id, now),
                |lead| lead.row.lead_id.clone(),
            )
            .await
    }

    /// Marks the lead `key` changed, with the transitions that changed it.
    pub(super) fn changed(&mut self, key: LeadKey, transitions: Vec<transition::ActiveModel>) {
        self.leads.mark_changed(key, ());
        self.transitions.extend(transitions);
    }

    /// Adds the writes of every changed lead (one upsert, in key order) and the transitions to
    /// `script`, and forgets everything: what comes next reads the store again, once the
    /// script has run.
    pub(super) fn flush(
        &mut self,
        script: &mut WriteScript,
        now: DateTime<Utc>,
    ) -> Result<(), Error> {
        let (mut moved, mut stayed) = (Vec::new(), Vec::new());
        for (mut lead, ()) in self.leads.take_changed() {
            let stage_moved = lead.row.stage != lead.state.stage.name()
                || lead.row.stage_entered_at != lead.state.stage_entered_at;
            refresh_row(&mut lead, now)?;
            if stage_moved {
                moved.push(lead.row.into_active_model());
            } else {
                stayed.push(lead.row.into_active_model());
            }
        }
        // A lead that stays in its stage (most score changes) leaves the stage columns out of
        // its update: SQLite rewrites an index entry whenever its columns are assigned, equal
        // or not, and the stage index would cost a random page per lead.
        let keys = [lead::Column::TenantId, lead::Column::LeadId];
        let stays = OnConflict::columns(keys)
            .update_columns(SAVED_COLUMNS)
            .to_owned();
        let moves = OnConflict::columns(keys)
            .update_columns(SAVED_COLUMNS.into_iter().chain(STAGE_COLUMNS))
            .to_owned();
        script.insert_many(stayed, Some(&stays));
        script.insert_many(moved, Some(&moves));
        script.insert_many(std::mem::take(&mut self.transitions), None);
        Ok(())
    }
}

/// The cache key of `lead`.
pub(super) fn key_of(lead: &LeadRecord) -> LeadKey {
    (lead.row.tenant_id.clone(), lead.row.lead_id.clone())
}

/// The rows of `ids`, locked until the end of `txn` on PostgreSQL, in key order.
async fn rows(
    txn: &DatabaseTransaction,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<(String, Found<LeadRecord>)>, Error> {
    let mut found = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
        let rows = lead::Entity::find()
            .filter(lead::Column::TenantId.eq(tenant))
            .filter(lead::Column::LeadId.is_in(leadflow_runtime::db::in_list(chunk)))
            .order_by_asc(lead::Column::LeadId)
            .lock_exclusive()
            .all(txn)
            .await?;
        for row in rows {
            let id = row.lead_id.clone();
            found.push(match row.merged_into.clone() {
                Some(survivor) => (id, Found::MergedInto(survivor)),
                None => (id, Found::Live(decode(row, false)?)),
            });
        }
    }
    Ok(found)
}

/// A lead qualification has not seen before (its row is written when it is first saved).
pub(super) fn new_lead(tenant: &str, lead_id: &str, now: DateTime<Utc>) -> LeadRecord {
    let state = LeadQualification::new(now);
    LeadRecord {
        row: lead::Model {
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
            stage_entered_at: state.stage_entered_at,
        },
        state,
        profile: common::Profile::default(),
        score: None,
        merged: false,
    }
}
