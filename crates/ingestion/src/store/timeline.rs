//! Timeline pages: a lead's activities, newest first, filtered and paged by a keyset cursor.

use chrono::{DateTime, Utc};
use sea_orm::ExprTrait;
use sea_orm::sea_query::{Condition, Expr};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::activity;
use crate::error::Error;

/// What to read.
#[derive(Debug, Clone)]
pub struct TimelineQuery {
    /// The lead (a merged id reads the surviving lead).
    pub lead_id: String,
    /// Only these types; all when empty.
    pub types: Vec<String>,
    /// Occurred at or after.
    pub start: Option<DateTime<Utc>>,
    /// Occurred before.
    pub end: Option<DateTime<Utc>>,
    /// Page size, already bounded.
    pub page_size: usize,
    /// Continue after this cursor.
    pub after: Option<Cursor>,
}

/// Position after the last entry of a page: its time and id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    occurred_at_us: i64,
    activity_id: uuid::Uuid,
}

impl Cursor {
    /// Parses a page token.
    pub fn parse(token: &str) -> Option<Self> {
        let (micros, id) = token.split_once('_')?;
        Some(Self {
            occurred_at_us: micros.parse().ok()?,
            activity_id: id.parse().ok()?,
        })
    }

    /// The page token.
    pub fn token(&self) -> String {
        format!("{}_{}", self.occurred_at_us, self.activity_id)
    }
}

/// One entry.
pub type TimelineEntry = activity::Model;

/// A page and the token of the next one.
#[derive(Debug, Clone)]
pub struct TimelinePage {
    /// The lead whose timeline this is.
    pub lead_id: String,
    /// Newest first.
    pub entries: Vec<TimelineEntry>,
    /// Empty on the last page.
    pub next_page_token: String,
}

pub(super) async fn page(
    db: &DatabaseConnection,
    tenant: &str,
    lead_id: &str,
    query: &TimelineQuery,
) -> Result<TimelinePage, Error> {
    let mut select = activity::Entity::find()
        .filter(activity::Column::TenantId.eq(tenant))
        .filter(activity::Column::LeadId.eq(lead_id));
    if !query.types.is_empty() {
        select = select.filter(activity::Column::ActivityType.is_in(query.types.clone()));
    }
    if let Some(start) = query.start {
        select = select.filter(activity::Column::OccurredAtUs.gte(start.timestamp_micros()));
    }
    if let Some(end) = query.end {
        select = select.filter(activity::Column::OccurredAtUs.lt(end.timestamp_micros()));
    }
    if let Some(after) = query.after {
        select = select.filter(
            Condition::any()
                .add(activity::Column::OccurredAtUs.lt(after.occurred_at_us))
                .add(
                    Expr::col(activity::Column::OccurredAtUs)
                        .eq(after.occurred_at_us)
                        .and(
                            Expr::col(activity::Column::ActivityId)
                                .lt(after.activity_id.to_string()),
                        ),
                ),
        );
    }
    let mut entries = select
        .order_by_desc(activity::Column::OccurredAtUs)
        .order_by_desc(activity::Column::ActivityId)
        .limit(query.page_size as u64 + 1)
        .all(db)
        .await?;
    let next_page_token = if entries.len() > query.page_size {
        entries.truncate(query.page_size);
        entries
            .last()
            .and_then(|last| {
                Some(Cursor {
                    occurred_at_us: last.occurred_at_us,
                    activity_id: last.activity_id.parse().ok()?,
                })
            })
            .map(|c| c.token())
            .unwrap_or_default()
    } else {
        String::new()
    };
    Ok(TimelinePage {
        lead_id: lead_id.to_owned(),
        entries,
        next_page_token,
    })
}
