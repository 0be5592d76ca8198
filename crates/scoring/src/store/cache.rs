//! The leads one delivered batch touches (the runtime's [`LeadCache`]), with the facts the
//! batch adds: read once, changed in memory event after event, written back with one upsert
//! and one multi-row fact insert instead of a read, a fact insert and an update per event.

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_runtime::lead_cache::{self, Found, LeadKey};
use leadflow_runtime::script::WriteScript;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ConnectionTrait, DatabaseTransaction, IntoActiveModel};

use super::sweep_due::DueWrite;
use super::{
    Announced, CacheWrites, LeadState, decode, fact, lead_score, record, rows_by_id, saved_row,
};
use crate::domain::{LeadScore, Model};
use crate::error::Error;

/// A batch's leads, each changed one marked with what its row will announce, and new facts.
#[derive(Default)]
pub(super) struct LeadCache {
    leads: lead_cache::LeadCache<LeadState, Announced>,
    facts: Vec<fact::ActiveModel>,
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
    /// new one first seen at `first_seen`, to be inserted at the flush.
    pub(super) async fn lead(
        &mut self,
        txn: &DatabaseTransaction,
        tenant: &str,
        lead_id: &str,
        model: &Model,
        first_seen: DateTime<Utc>,
    ) -> Result<&mut LeadState, Error> {
        self.leads
            .get_or_load(
                (tenant, lead_id),
                txn.get_database_backend(),
                || super::load_lead(txn, tenant, lead_id),
                || new_lead(tenant, lead_id, model, first_seen),
                |lead| lead.row.lead_id.clone(),
            )
            .await
    }

    /// Marks the lead `key` changed, with what its row announces and the fact that changed it.
    pub(super) fn changed(
        &mut self,
        key: LeadKey,
        announced: Announced,
        fact: Option<fact::ActiveModel>,
    ) {
        self.leads.mark_changed(key, announced);
        self.facts.extend(fact);
    }

    /// Adds the writes of the new facts and every changed lead (two upserts, in key order: the
    /// rows whose sweep due time is written, then the rest) to `script`, and forgets
    /// everything: what comes next reads the store again, once the script has run.
    pub(super) fn flush(
        &mut self,
        script: &mut WriteScript,
        now: DateTime<Utc>,
        written: &mut CacheWrites,
    ) -> Result<(), Error> {
        script.insert_many(
            std::mem::take(&mut self.facts),
            Some(
                &OnConflict::columns([fact::Column::TenantId, fact::Column::ActivityId])
                    .do_nothing()
                    .to_owned(),
            ),
        );
        let (mut due_moved, mut due_kept) = (Vec::new(), Vec::new());
        for (lead, announced) in self.leads.take_changed() {
            let row = saved_row(&lead, &announced, now)?;
            record(written, &row)?;
            // Rows storing no due time (every new row among them) go in the first upsert, so
            // new rows are inserted in key order: on PostgreSQL they are the only ones not
            // locked yet.
            let stored = lead.row.sweep_due_us;
            if stored.is_none() || DueWrite::WhenEarlier.writes(stored, row.sweep_due_us) {
                due_moved.push(row);
            } else {
                due_kept.push(row);
            }
        }
        save_rows(script, due_moved, true);
        save_rows(script, due_kept, false);
        Ok(())
    }
}

/// Adds the upserts of `rows` (new or stored leads' rows) to `script`. A stored row keeps its
/// sweep due time unless `with_due_time`; a new row is inserted with its own.
pub(super) fn save_rows(
    script: &mut WriteScript,
    rows: Vec<lead_score::Model>,
    with_due_time: bool,
) {
    if rows.is_empty() {
        return;
    }
    let mut columns = vec![
        lead_score::Column::State,
        lead_score::Column::Profile,
        lead_score::Column::FirstSeen,
        lead_score::Column::ModelVersion,
        lead_score::Column::AnnouncedScore,
        lead_score::Column::AnnouncedGrade,
        lead_score::Column::UpdatedAt,
    ];
    if with_due_time {
        columns.push(lead_score::Column::SweepDueUs);
    }
    let upsert = OnConflict::columns([lead_score::Column::TenantId, lead_score::Column::LeadId])
        .update_columns(columns)
        .to_owned();
    let rows = rows.into_iter().map(IntoActiveModel::into_active_model);
    script.insert_many(rows.collect(), Some(&upsert));
}

/// The cache key of `lead`.
pub(super) fn key_of(lead: &LeadState) -> LeadKey {
    (lead.row.tenant_id.clone(), lead.row.lead_id.clone())
}

/// The rows of `ids`, locked until the end of `txn` on PostgreSQL, in key order.
async fn rows(
    txn: &DatabaseTransaction,
    tenant: &str,
    ids: &[String],
) -> Result<Vec<(String, Found<LeadState>)>, Error> {
    let mut found = Vec::with_capacity(ids.len());
    for row in rows_by_id(txn, tenant, ids, true).await? {
        let id = row.lead_id.clone();
        found.push(match row.merged_into.clone() {
            Some(survivor) => (id, Found::MergedInto(survivor)),
            None => (id, Found::Live(decode(row, false)?)),
        });
    }
    Ok(found)
}

/// A lead scoring has not seen before (its row is written when it is first saved).
pub(super) fn new_lead(
    tenant: &str,
    lead_id: &str,
    model: &Model,
    first_seen: DateTime<Utc>,
) -> LeadState {
    LeadState {
        row: lead_score::Model {
            tenant_id: tenant.to_owned(),
            lead_id: lead_id.to_owned(),
            state: Vec::new(),
            profile: Vec::new(),
            first_seen,
            model_version: model.version,
            merged_into: None,
            announced_score: 0.0,
            announced_grade: crate::convert::grade_to_pb(crate::domain::Grade::D) as i32,
            updated_at: first_seen,
            sweep_due_us: None,
        },
        score: LeadScore::new(first_seen),
        profile: common::Profile::default(),
        merged: false,
    }
}
