//! The lead events ingestion publishes to scoring, encoded for the outbox.

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1::MessageHeader;
use leadflow_proto::ingestion::v1::{self as pb, lead_event::Event};
use leadflow_runtime::outbox::NewMessage;
use prost::Message;

use super::SCORING;
use crate::convert::{profile_to_pb, to_timestamp};
use crate::domain::{Activity, Profile};

fn message(tenant: &str, lead_id: &str, event: Event, now: DateTime<Utc>) -> NewMessage {
    let message_id = uuid::Uuid::now_v7().to_string();
    let payload = pb::LeadEvent {
        header: Some(MessageHeader {
            message_id: message_id.clone(),
            tenant_id: tenant.to_owned(),
            lead_id: lead_id.to_owned(),
            produced_at: Some(to_timestamp(now)),
            trace_context: Default::default(),
        }),
        event: Some(event),
    }
    .encode_to_vec();
    NewMessage {
        destination: SCORING,
        message_id,
        tenant_id: tenant.to_owned(),
        partition_key: lead_id.to_owned(),
        payload,
    }
}

/// The lead's whole profile after a change.
pub(super) fn profile_changed(
    tenant: &str,
    lead_id: &str,
    profile: &Profile,
    now: DateTime<Utc>,
) -> NewMessage {
    let event = Event::ProfileChanged(pb::ProfileChanged {
        profile: Some(profile_to_pb(profile)),
    });
    message(tenant, lead_id, event, now)
}

/// A new activity.
pub(super) fn activity_recorded(
    tenant: &str,
    lead_id: &str,
    activity_id: &str,
    activity: &Activity,
    now: DateTime<Utc>,
) -> NewMessage {
    let event = Event::ActivityRecorded(pb::ActivityRecorded {
        activity_id: activity_id.to_owned(),
        activity: Some(leadflow_proto::common::v1::Activity {
            r#type: activity.kind.as_str().to_owned(),
            occurred_at: Some(to_timestamp(activity.occurred_at)),
            properties: activity.properties.clone().into_iter().collect(),
        }),
    });
    message(tenant, lead_id, event, now)
}

/// `source` was merged into `target`.
pub(super) fn leads_merged(
    tenant: &str,
    target: &str,
    source: &str,
    profile: &Profile,
    now: DateTime<Utc>,
) -> NewMessage {
    let event = Event::LeadsMerged(pb::LeadsMerged {
        source_lead_id: source.to_owned(),
        profile: Some(profile_to_pb(profile)),
    });
    message(tenant, target, event, now)
}
