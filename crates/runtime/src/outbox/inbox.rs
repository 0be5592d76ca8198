//! Receiver-side deduplication: a message id is applied at most once.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, TryInsertResult};

use super::inbox_message;

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
