//! The events qualification publishes to handoff, encoded for the outbox.

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1::MessageHeader;
use leadflow_proto::qualification::v1::{
    self as pb, QualificationEvent, qualification_event::Event,
};
use leadflow_runtime::outbox::NewMessage;
use leadflow_runtime::pbtime::to_timestamp;
use prost::Message;

use super::{HANDOFF, LeadRecord, Recorded};
use crate::convert;

/// The messages announcing `recorded` transitions of `lead`: a `StageChanged` for each, then a
/// `HandoffRequested` for each that asks for a hand-off.
pub(super) fn for_transitions(
    lead: &LeadRecord,
    recorded: &[Recorded],
    now: DateTime<Utc>,
) -> Vec<NewMessage> {
    let mut messages = Vec::new();
    for r in recorded {
        messages.push(message(
            lead,
            Event::StageChanged(pb::StageChanged {
                transition: Some(r.to_pb()),
            }),
            now,
        ));
        if let Some(kind) = r.transition.handoff() {
            let reason = convert::reason_to_pb(&r.transition.reason);
            messages.push(message(
                lead,
                Event::HandoffRequested(pb::HandoffRequested {
                    kind: handoff_kind_to_pb(kind) as i32,
                    reason: reason.reason as i32,
                    transition_id: r.transition_id.clone(),
                    hand_raise: lead.state.hand_raised,
                    stage: convert::stage_to_pb(r.transition.to) as i32,
                    profile: Some(lead.profile.clone()),
                    score: lead.score.clone(),
                    bant: lead.state.bant.as_ref().map(convert::bant_to_pb),
                    definition_version: r.transition.definition_version,
                }),
                now,
            ));
        }
    }
    messages
}

/// The message telling handoff that `absorbed_id` was merged into `survivor`.
pub(super) fn leads_merged(
    survivor: &LeadRecord,
    absorbed_id: &str,
    now: DateTime<Utc>,
) -> NewMessage {
    message(
        survivor,
        Event::LeadsMerged(pb::LeadsMerged {
            source_lead_id: absorbed_id.to_owned(),
        }),
        now,
    )
}

fn handoff_kind_to_pb(kind: crate::domain::HandoffKind) -> leadflow_proto::common::v1::HandoffKind {
    use leadflow_proto::common::v1::HandoffKind as Pb;
    match kind {
        crate::domain::HandoffKind::SdrReview => Pb::SdrReview,
        crate::domain::HandoffKind::Sales => Pb::Sales,
    }
}

fn message(lead: &LeadRecord, event: Event, now: DateTime<Utc>) -> NewMessage {
    let header = MessageHeader {
        message_id: uuid::Uuid::now_v7().to_string(),
        tenant_id: lead.row.tenant_id.clone(),
        lead_id: lead.row.lead_id.clone(),
        produced_at: Some(to_timestamp(now)),
        trace_context: Default::default(),
    };
    NewMessage {
        destination: HANDOFF,
        message_id: header.message_id.clone(),
        tenant_id: header.tenant_id.clone(),
        partition_key: header.lead_id.clone(),
        payload: QualificationEvent {
            header: Some(header),
            event: Some(event),
        }
        .encode_to_vec(),
    }
}
