//! The score changes scoring publishes to qualification, encoded for the outbox.

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1::{self as common, MessageHeader};
use leadflow_proto::scoring::v1::{ScoreChangeReason, ScoreChanged};
use leadflow_runtime::outbox::NewMessage;
use prost::Message;

use super::{LeadState, QUALIFICATION};
use crate::convert;
use crate::domain::Model;
use crate::domain::engine::ScoreView;

/// The score and grade a change is measured from.
#[derive(Debug, Clone, Copy)]
pub(super) struct Previous {
    pub(super) score: f64,
    pub(super) grade: i32,
}

impl From<&ScoreView> for Previous {
    fn from(view: &ScoreView) -> Self {
        Self {
            score: view.score,
            grade: convert::grade_to_pb(view.grade) as i32,
        }
    }
}

/// True when the rounded score or the grade differs: what is worth announcing.
pub(super) fn moved(before: &ScoreView, after: &ScoreView) -> bool {
    before.score.round() != after.score.round() || before.grade != after.grade
}

/// The lead's score now, as a change from `previous`.
pub(super) fn score_changed(
    lead: &LeadState,
    model: &Model,
    previous: Previous,
    reason: ScoreChangeReason,
    trigger: Option<(&String, &common::Activity, bool)>,
    now: DateTime<Utc>,
) -> ScoreChanged {
    let view = lead.score.score(model, now);
    let (triggering_activity_id, triggering_activity, hand_raise) = match trigger {
        Some((id, activity, hand_raise)) => (id.clone(), Some(activity.clone()), hand_raise),
        None => (String::new(), None, false),
    };
    ScoreChanged {
        header: Some(MessageHeader {
            message_id: uuid::Uuid::now_v7().to_string(),
            tenant_id: lead.row.tenant_id.clone(),
            lead_id: lead.row.lead_id.clone(),
            produced_at: Some(convert::to_timestamp(now)),
            trace_context: Default::default(),
        }),
        reason: reason as i32,
        score: Some(convert::score_to_pb(
            &lead.row.lead_id,
            &view,
            model.version,
            Some(now),
        )),
        previous_score: previous.score,
        previous_fit_grade: previous.grade,
        triggering_activity_id,
        triggering_activity,
        hand_raise,
        profile: Some(lead.profile.clone()),
        merged_lead_id: String::new(),
    }
}

/// The outbox message carrying `changed`.
pub(super) fn message(changed: ScoreChanged) -> NewMessage {
    let header = changed.header.clone().unwrap_or_default();
    NewMessage {
        destination: QUALIFICATION,
        message_id: header.message_id,
        tenant_id: header.tenant_id,
        partition_key: header.lead_id,
        payload: changed.encode_to_vec(),
    }
}
