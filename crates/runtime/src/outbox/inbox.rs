//! Receiver-side deduplication: a message id is applied at most once.

use std::collections::HashSet;

use chrono::{DateTime, TimeDelta, Utc};
use sea_orm::sea_query::{LockBehavior, LockType, Order, Query};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, DeleteMany, EntityTrait, QueryFilter,
    TryInsertResult,
};

use leadflow_proto::common::v1::MessageHeader;

use super::inbox_message;
use crate::error::FieldViolations;
use crate::script::WriteScript;

/// Records `message_id` as applied inside the receiver's transaction `txn`. Returns `false` when
/// it was applied before: the caller then skips the message (and the whole transaction keeps
/// the record and the effect together).
pub async fn claim<C: ConnectionTrait>(
    txn: &C,
    message_id: &str,
    tenant_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, DbErr> {
    let row = inbox_message::ActiveModel {
        message_id: Set(message_id.to_owned()),
        tenant_id: Set(tenant_id.to_owned()),
        processed_at: Set(now),
    };
    let result = inbox_message::Entity::insert(row)
        .on_conflict_do_nothing_on([inbox_message::Column::MessageId])
        .exec(txn)
        .await?;
    Ok(matches!(result, TryInsertResult::Inserted(_)))
}

/// Records the message id of every header of a delivered batch as applied: the ids are read
/// inside `txn` now, with one query per thousand ids instead of a statement per message, and
/// the claims added to `script`, which the caller runs in `txn` with the rest of its writes.
/// Returns the ids claimed now, which the caller applies ([`Claimed::admits`]); the others
/// (applied before) it skips. A concurrent receiver claiming the same id makes the script
/// fail, and the whole transaction with it, so nothing is applied twice.
pub async fn claim_many_into<C: ConnectionTrait>(
    txn: &C,
    script: &mut WriteScript,
    headers: &[MessageHeader],
    now: DateTime<Utc>,
) -> Result<Claimed, DbErr> {
    let mut seen = HashSet::with_capacity(headers.len());
    for chunk in headers.chunks(crate::db::MAX_ROWS_PER_STATEMENT) {
        let ids: Vec<&str> = chunk.iter().map(|h| h.message_id.as_str()).collect();
        let applied = inbox_message::Entity::find()
            .filter(inbox_message::Column::MessageId.is_in(crate::db::in_list(&ids)))
            .all(txn)
            .await?;
        seen.extend(applied.into_iter().map(|row| row.message_id));
    }
    let mut claimed = HashSet::with_capacity(headers.len());
    let mut rows = Vec::with_capacity(headers.len());
    for header in headers {
        if seen.contains(&header.message_id) || !claimed.insert(header.message_id.clone()) {
            continue;
        }
        rows.push(inbox_message::ActiveModel {
            message_id: Set(header.message_id.clone()),
            tenant_id: Set(header.tenant_id.clone()),
            processed_at: Set(now),
        });
    }
    script.insert_many(rows, None);
    Ok(Claimed {
        ids: claimed,
        open: None,
    })
}

/// The message ids a delivered batch claimed ([`claim_many_into`]). A bundle's messages
/// ([`super::Packing::Bundled`]) arrive one after another under one id: all of them are the
/// message that id names.
#[derive(Debug)]
pub struct Claimed {
    ids: HashSet<String>,
    /// The id of the run of messages being admitted.
    open: Option<String>,
}

impl Claimed {
    /// Whether `message_id` was claimed by this batch (it is applied now, not before). Ask
    /// before walking the batch with [`Claimed::admits`], which uses up the ids it passes.
    pub fn contains(&self, message_id: &str) -> bool {
        self.ids.contains(message_id) || self.open.as_deref() == Some(message_id)
    }

    /// Whether to apply the batch's next message, `message_id`, walking the batch in order: yes
    /// for every message of the first run of consecutive messages with a claimed id, no for
    /// ids applied before and for an id repeated after its run ended.
    pub fn admits(&mut self, message_id: &str) -> bool {
        if self.open.as_deref() == Some(message_id) {
            return true;
        }
        if self.ids.remove(message_id) {
            self.open = Some(message_id.to_owned());
            return true;
        }
        self.open = None;
        false
    }
}

/// How long a receiver remembers a message id it applied, unless configured otherwise
/// (`--inbox-retention-hours`). A sender delivers a message again only while it still holds
/// it: delivered, then stopped before deleting it, it delivers it again when its relay next
/// runs. Remembering every id forever grew the inbox by a row per message for good; after the
/// retention an id is forgotten, so a sender that stays down longer than that holding such a
/// message would have it applied twice.
pub const DEFAULT_RETENTION: TimeDelta = TimeDelta::days(7);

/// The shortest retention a service accepts: redeliveries after a failed delete or a timed-out
/// call come within minutes (the relay's longest backoff is one), never later.
pub const MIN_RETENTION: TimeDelta = TimeDelta::hours(1);

/// Most forgotten ids one [`prune`] deletes: an inbox with a backlog of expired ids (a service
/// upgraded from before pruning) is emptied over several deliveries, each paying a bounded
/// delete.
pub const PRUNE_BATCH: u64 = 1000;

/// Forgets, inside the receiver's transaction `txn`, up to [`PRUNE_BATCH`] message ids applied
/// before `now - retention`, oldest first (an index on the applied time finds them); returns
/// how many. On PostgreSQL rows another replica is deleting are skipped, not waited for. A
/// retention reaching back before the earliest time a date can hold forgets nothing.
pub async fn prune<C: ConnectionTrait>(
    txn: &C,
    now: DateTime<Utc>,
    retention: TimeDelta,
) -> Result<u64, DbErr> {
    let Some(delete) = prune_statement(now, retention) else {
        return Ok(0);
    };
    Ok(delete.exec(txn).await?.rows_affected)
}

/// [`prune`] added to `script`, which the caller runs in its transaction with the rest of its
/// writes. Receivers call it once per delivered batch.
pub fn prune_into(script: &mut WriteScript, now: DateTime<Utc>, retention: TimeDelta) {
    if let Some(delete) = prune_statement(now, retention) {
        script.push(&delete);
    }
}

/// The delete of [`prune`], or `None` when the retention reaches back too far to forget
/// anything.
fn prune_statement(
    now: DateTime<Utc>,
    retention: TimeDelta,
) -> Option<DeleteMany<inbox_message::Entity>> {
    let cutoff = now.checked_sub_signed(retention)?;
    let expired = Query::select()
        .column(inbox_message::Column::MessageId)
        .from(inbox_message::Entity)
        .and_where(inbox_message::Column::ProcessedAt.lt(cutoff))
        .order_by(inbox_message::Column::ProcessedAt, Order::Asc)
        .limit(PRUNE_BATCH)
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
        .to_owned();
    Some(
        inbox_message::Entity::delete_many()
            .filter(inbox_message::Column::MessageId.in_subquery(expired)),
    )
}

/// Checks the header of every delivered message: a receiver needs its message id (to dedupe),
/// tenant and lead. Each missing part is a violation at `events[i].header`.
pub fn check_headers<'a>(
    headers: impl IntoIterator<Item = Option<&'a MessageHeader>>,
) -> Result<(), FieldViolations> {
    let mut violations = FieldViolations::new();
    for (i, header) in headers.into_iter().enumerate() {
        let complete = header.is_some_and(|h| {
            !h.message_id.is_empty() && !h.tenant_id.is_empty() && !h.lead_id.is_empty()
        });
        if !complete {
            violations.add(
                format!("events[{i}].header"),
                "message_id, tenant_id and lead_id are required",
            );
        }
    }
    violations.into_result(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_headers_are_named_by_position() {
        let full = MessageHeader {
            message_id: "m".into(),
            tenant_id: "t".into(),
            lead_id: "l".into(),
            ..Default::default()
        };
        let no_lead = MessageHeader {
            lead_id: String::new(),
            ..full.clone()
        };
        assert!(check_headers([Some(&full)]).is_ok());
        let err = check_headers([Some(&full), None, Some(&no_lead)]).expect_err("incomplete");
        let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["events[1].header", "events[2].header"]);
    }

    #[test]
    fn a_claimed_run_is_admitted_whole_and_a_repeat_after_it_is_not() {
        let mut claimed = Claimed {
            ids: ["b".to_owned(), "c".to_owned()].into(),
            open: None,
        };
        let batch = ["a", "b", "b", "b", "c", "b", "c", "c"];
        let admitted: Vec<bool> = batch.iter().map(|id| claimed.admits(id)).collect();
        assert_eq!(
            admitted,
            [false, true, true, true, true, false, false, false],
            "a applied before, b's run, c's run, b repeated, c repeated after b"
        );
    }
}
