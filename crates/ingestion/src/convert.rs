//! Conversions between the protobuf contract and the domain, with validation: each failure is a
//! field violation naming the field's path in the request.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::ingestion::v1 as pb;
use leadflow_runtime::error::FieldViolations;

use crate::domain::limits::MAX_MESSAGE_ID_LEN;
use crate::domain::{Activity, Identity, Profile};

/// A validated `Identify`.
#[derive(Debug, Clone)]
pub struct IdentifyCommand {
    /// Idempotency key.
    pub message_id: String,
    /// Who.
    pub identity: Identity,
    /// The attributes to change.
    pub profile: Profile,
}

/// A validated `Track`.
#[derive(Debug, Clone)]
pub struct TrackCommand {
    /// Idempotency key.
    pub message_id: String,
    /// Who.
    pub identity: Identity,
    /// What they did.
    pub activity: Activity,
}

/// A validated write: what `Batch` items become.
#[derive(Debug, Clone)]
pub enum Command {
    /// A profile change.
    Identify(IdentifyCommand),
    /// An activity.
    Track(TrackCommand),
}

impl Command {
    /// The command's idempotency key.
    pub fn message_id(&self) -> &str {
        match self {
            Command::Identify(c) => &c.message_id,
            Command::Track(c) => &c.message_id,
        }
    }
}

/// Validates an `IdentifyRequest` received at `now`.
pub fn identify(
    request: pb::IdentifyRequest,
    now: DateTime<Utc>,
) -> Result<IdentifyCommand, FieldViolations> {
    let mut violations = FieldViolations::new();
    let message_id = message_id(&request.message_id, &mut violations);
    let identity = identity(request.identity.as_ref(), &mut violations);
    if let Some(occurred_at) = &request.occurred_at
        && timestamp(occurred_at).is_none_or(|t| {
            t > now + chrono::Duration::seconds(crate::domain::limits::MAX_FUTURE_SKEW_SECS)
        })
    {
        violations.add("occurred_at", "not a valid time, or in the future");
    }
    let profile = match request.profile {
        Some(profile) => match profile_from_pb(profile) {
            Ok(profile) => Some(profile),
            Err(nested) => {
                violations.extend_prefixed("profile", nested);
                None
            }
        },
        None => {
            violations.add("profile", "required");
            None
        }
    };
    match (identity, profile) {
        (Some(identity), Some(profile)) if violations.is_empty() => Ok(IdentifyCommand {
            message_id,
            identity,
            profile,
        }),
        _ => Err(violations),
    }
}

/// Validates a `TrackRequest` received at `now`.
pub fn track(
    request: pb::TrackRequest,
    now: DateTime<Utc>,
) -> Result<TrackCommand, FieldViolations> {
    let mut violations = FieldViolations::new();
    let message_id = message_id(&request.message_id, &mut violations);
    let identity = identity(request.identity.as_ref(), &mut violations);
    let activity = match request.activity {
        Some(activity) => {
            let occurred_at = match activity.occurred_at.as_ref().map(timestamp) {
                Some(None) => {
                    violations.add("activity.occurred_at", "not a valid time");
                    None
                }
                Some(Some(t)) => Some(t),
                None => None,
            };
            let properties: BTreeMap<String, String> = activity.properties.into_iter().collect();
            match Activity::parse(&activity.r#type, occurred_at, properties, now) {
                Ok(activity) => Some(activity),
                Err(nested) => {
                    violations.extend_prefixed("activity", nested);
                    None
                }
            }
        }
        None => {
            violations.add("activity", "required");
            None
        }
    };
    match (identity, activity) {
        (Some(identity), Some(activity)) if violations.is_empty() => Ok(TrackCommand {
            message_id,
            identity,
            activity,
        }),
        _ => Err(violations),
    }
}

/// Validates one batch item.
pub fn batch_item(item: pb::BatchItem, now: DateTime<Utc>) -> Result<Command, FieldViolations> {
    match item.item {
        Some(pb::batch_item::Item::Identify(request)) => identify(request, now)
            .map(Command::Identify)
            .map_err(|v| prefixed("identify", v)),
        Some(pb::batch_item::Item::Track(request)) => track(request, now)
            .map(Command::Track)
            .map_err(|v| prefixed("track", v)),
        None => {
            let mut violations = FieldViolations::new();
            violations.add("item", "an identify or a track is required");
            Err(violations)
        }
    }
}

fn prefixed(prefix: &str, violations: FieldViolations) -> FieldViolations {
    let mut out = FieldViolations::new();
    out.extend_prefixed(prefix, violations);
    out
}

fn message_id(raw: &str, violations: &mut FieldViolations) -> String {
    let id = raw.trim();
    if id.is_empty() {
        violations.add(
            "message_id",
            "required: a unique id per message makes retries safe",
        );
    } else if id.len() > MAX_MESSAGE_ID_LEN {
        violations.add(
            "message_id",
            format!("longer than {MAX_MESSAGE_ID_LEN} bytes"),
        );
    }
    id.to_owned()
}

fn identity(raw: Option<&pb::LeadIdentity>, violations: &mut FieldViolations) -> Option<Identity> {
    let Some(raw) = raw else {
        violations.add("identity", "required: a user_id or an anonymous_id");
        return None;
    };
    match Identity::parse(&raw.user_id, &raw.anonymous_id) {
        Ok(identity) => Some(identity),
        Err(nested) => {
            violations.extend_prefixed("identity", nested);
            None
        }
    }
}

/// Validates a protobuf profile patch into the domain profile.
pub fn profile_from_pb(profile: common::Profile) -> Result<Profile, FieldViolations> {
    let mut violations = FieldViolations::new();
    let seniority = known_enum(
        profile.seniority,
        "seniority",
        common::Seniority::try_from(profile.seniority).is_ok(),
        &mut violations,
    );
    let source_channel = known_enum(
        profile.source_channel,
        "source_channel",
        common::SourceChannel::try_from(profile.source_channel).is_ok(),
        &mut violations,
    );
    let consent = known_enum(
        profile.consent,
        "consent",
        common::Consent::try_from(profile.consent).is_ok(),
        &mut violations,
    );
    let domain = Profile {
        email: profile.email,
        first_name: profile.first_name,
        last_name: profile.last_name,
        title: profile.title,
        seniority,
        company: profile.company,
        company_domain: profile.company_domain,
        company_size: profile.company_size,
        industry: profile.industry,
        country: profile.country,
        source_channel,
        consent,
        traits: profile.traits.into_iter().collect(),
    };
    match domain.validate() {
        Ok(valid) if violations.is_empty() => Ok(valid),
        Ok(_) => Err(violations),
        Err(more) => {
            for v in more.violations() {
                violations.add(v.field.clone(), v.description.clone());
            }
            Err(violations)
        }
    }
}

fn known_enum(
    value: i32,
    field: &str,
    known: bool,
    violations: &mut FieldViolations,
) -> Option<i32> {
    if value == 0 {
        None
    } else if known {
        Some(value)
    } else {
        violations.add(field, format!("unknown value {value}"));
        None
    }
}

/// The domain profile as its protobuf message.
pub fn profile_to_pb(profile: &Profile) -> common::Profile {
    common::Profile {
        email: profile.email.clone(),
        first_name: profile.first_name.clone(),
        last_name: profile.last_name.clone(),
        title: profile.title.clone(),
        seniority: profile.seniority.unwrap_or_default(),
        company: profile.company.clone(),
        company_domain: profile.company_domain.clone(),
        company_size: profile.company_size,
        industry: profile.industry.clone(),
        country: profile.country.clone(),
        source_channel: profile.source_channel.unwrap_or_default(),
        consent: profile.consent.unwrap_or_default(),
        traits: profile.traits.clone().into_iter().collect(),
    }
}

pub use leadflow_runtime::pbtime::{timestamp, to_timestamp};

/// Microseconds since the epoch as a protobuf timestamp.
pub fn micros_to_timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}
