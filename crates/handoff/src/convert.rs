//! Conversions between the protobuf contract and handoff's domain, with validation: each failure
//! is a field violation naming the field's path in the request (e.g.
//! `routing_rules.rules[0].territory.countries[1]`).

use chrono::{DateTime, TimeDelta, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::handoff::v1 as pb;
use leadflow_runtime::error::FieldViolations;
use leadflow_runtime::pbtime::{duration, timestamp, to_duration, to_timestamp};
use prost::Message;

use crate::domain::owner::{CompanySizeRange, LeadFacts, Owner, Role, Territory, TimeWindow};
use crate::domain::report::SlaStats;
use crate::domain::routing::{HandoffQueue, RoutingRule, RoutingRules};
use crate::domain::sla::EscalationTarget;
use crate::domain::status::{HandoffKind, HandoffStatus};
use crate::store::handoff;

/// A hand-off kind in the contract's terms.
pub fn kind_to_pb(kind: HandoffKind) -> common::HandoffKind {
    match kind {
        HandoffKind::SdrReview => common::HandoffKind::SdrReview,
        HandoffKind::Sales => common::HandoffKind::Sales,
    }
}

/// The kind a contract number stands for; `None` for unspecified or unknown.
pub fn kind_from_pb(kind: i32) -> Option<HandoffKind> {
    match common::HandoffKind::try_from(kind).ok()? {
        common::HandoffKind::Unspecified => None,
        common::HandoffKind::SdrReview => Some(HandoffKind::SdrReview),
        common::HandoffKind::Sales => Some(HandoffKind::Sales),
    }
}

/// A status in the contract's terms.
pub fn status_to_pb(status: HandoffStatus) -> pb::HandoffStatus {
    use pb::HandoffStatus as Pb;
    match status {
        HandoffStatus::Pending => Pb::Pending,
        HandoffStatus::Acknowledged => Pb::Acknowledged,
        HandoffStatus::Contacted => Pb::Contacted,
        HandoffStatus::Accepted => Pb::Accepted,
        HandoffStatus::Rejected => Pb::Rejected,
        HandoffStatus::Opportunity => Pb::Opportunity,
        HandoffStatus::Won => Pb::Won,
        HandoffStatus::Lost => Pb::Lost,
        HandoffStatus::Escalated => Pb::Escalated,
        HandoffStatus::Withdrawn => Pb::Withdrawn,
    }
}

/// The status a contract number stands for; `None` for unspecified or unknown.
pub fn status_from_pb(status: i32) -> Option<HandoffStatus> {
    HandoffStatus::ALL
        .into_iter()
        .find(|s| status_to_pb(*s) as i32 == status)
}

/// A queue in the contract's terms (unspecified: assigned to an owner).
pub fn queue_to_pb(queue: Option<HandoffQueue>) -> pb::HandoffQueue {
    match queue {
        None => pb::HandoffQueue::Unspecified,
        Some(HandoffQueue::Fallback) => pb::HandoffQueue::Fallback,
        Some(HandoffQueue::Manager) => pb::HandoffQueue::Manager,
    }
}

/// A role in the contract's terms.
pub fn role_to_pb(role: Role) -> pb::OwnerRole {
    match role {
        Role::Sdr => pb::OwnerRole::Sdr,
        Role::AccountExecutive => pb::OwnerRole::AccountExecutive,
        Role::Manager => pb::OwnerRole::Manager,
    }
}

/// The role a contract number stands for; `None` for unspecified or unknown.
pub fn role_from_pb(role: i32) -> Option<Role> {
    match pb::OwnerRole::try_from(role).ok()? {
        pb::OwnerRole::Unspecified => None,
        pb::OwnerRole::Sdr => Some(Role::Sdr),
        pb::OwnerRole::AccountExecutive => Some(Role::AccountExecutive),
        pb::OwnerRole::Manager => Some(Role::Manager),
    }
}

/// What routing reads of a lead's profile.
pub fn lead_facts(profile: Option<&common::Profile>) -> LeadFacts {
    let Some(profile) = profile else {
        return LeadFacts::default();
    };
    LeadFacts {
        country: profile.country.clone(),
        industry: profile.industry.clone(),
        company_size: profile.company_size.and_then(|n| u32::try_from(n).ok()),
    }
}

fn territory_from_pb(t: &pb::Territory, at: &str, v: &mut FieldViolations) -> Territory {
    let mut bound = |n: Option<i32>, field: String| {
        n.and_then(|n| {
            u32::try_from(n).ok().or_else(|| {
                v.add(field, "must not be negative");
                None
            })
        })
    };
    let company_sizes = t
        .company_sizes
        .iter()
        .enumerate()
        .map(|(i, r)| CompanySizeRange {
            min_employees: bound(
                r.min_employees,
                format!("{at}.company_sizes[{i}].min_employees"),
            ),
            max_employees: bound(
                r.max_employees,
                format!("{at}.company_sizes[{i}].max_employees"),
            ),
        })
        .collect();
    Territory {
        countries: t
            .countries
            .iter()
            .map(|c| c.trim().to_uppercase())
            .collect(),
        industries: t.industries.clone(),
        company_sizes,
    }
}

fn territory_to_pb(t: &Territory) -> pb::Territory {
    pb::Territory {
        countries: t.countries.clone(),
        industries: t.industries.clone(),
        company_sizes: t
            .company_sizes
            .iter()
            .map(|r| pb::CompanySizeRange {
                min_employees: r.min_employees.and_then(|n| i32::try_from(n).ok()),
                max_employees: r.max_employees.and_then(|n| i32::try_from(n).ok()),
            })
            .collect(),
    }
}

/// An owner to upsert (active), validated; paths are relative to `UpsertOwnerRequest`.
pub fn owner_from_pb(o: pb::Owner) -> Result<Owner, FieldViolations> {
    let mut v = FieldViolations::new();
    let role = role_from_pb(o.role).unwrap_or_else(|| {
        v.add("owner.role", "sdr, account executive or manager");
        Role::Sdr
    });
    if o.capacity < 0 {
        v.add("owner.capacity", "zero (no limit) or more");
    }
    if o.weight < 0 {
        v.add("owner.weight", "zero (1) or more");
    }
    let territory = territory_from_pb(&o.territory.unwrap_or_default(), "owner.territory", &mut v);
    let mut out_of_office = Vec::new();
    for (i, w) in o.out_of_office.iter().enumerate() {
        let start = w.start_time.as_ref().and_then(timestamp);
        let end = w.end_time.as_ref().and_then(timestamp);
        match (start, end) {
            (Some(start_time), Some(end_time)) => out_of_office.push(TimeWindow {
                start_time,
                end_time,
            }),
            _ => v.add(
                format!("owner.out_of_office[{i}]"),
                "start_time and end_time are required",
            ),
        }
    }
    let owner = Owner {
        id: o.owner_id,
        display_name: o.display_name,
        email: o.email,
        role,
        team_id: o.team_id,
        territory,
        capacity: u32::try_from(o.capacity).unwrap_or(0),
        weight: u32::try_from(o.weight).unwrap_or(1),
        out_of_office,
        active: true,
    };
    if let Err(more) = owner.validate() {
        v.extend(more);
    }
    v.into_result(owner)
}

/// An owner in the contract's terms.
pub fn owner_to_pb(
    o: &Owner,
    open: u32,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
) -> pb::Owner {
    pb::Owner {
        owner_id: o.id.clone(),
        display_name: o.display_name.clone(),
        email: o.email.clone(),
        role: role_to_pb(o.role) as i32,
        team_id: o.team_id.clone(),
        territory: Some(territory_to_pb(&o.territory)),
        capacity: i32::try_from(o.capacity).unwrap_or(i32::MAX),
        weight: i32::try_from(o.weight).unwrap_or(i32::MAX),
        out_of_office: o
            .out_of_office
            .iter()
            .map(|w| pb::TimeWindow {
                start_time: Some(to_timestamp(w.start_time)),
                end_time: Some(to_timestamp(w.end_time)),
            })
            .collect(),
        active: o.active,
        open_handoff_count: i32::try_from(open).unwrap_or(i32::MAX),
        create_time: Some(to_timestamp(create_time)),
        update_time: Some(to_timestamp(update_time)),
    }
}

fn sla_from_pb(
    d: Option<&prost_types::Duration>,
    default: TimeDelta,
    field: &str,
    v: &mut FieldViolations,
) -> TimeDelta {
    match d {
        None => default,
        Some(d) => match duration(d) {
            Some(d) if d.is_zero() => default,
            Some(d) => d,
            None => {
                v.add(field, "not a valid duration");
                default
            }
        },
    }
}

/// Routing rules to publish (version ignored), validated; paths are relative to
/// `PublishRoutingRulesRequest`. Unset SLAs take the defaults (24 hours); an unspecified
/// escalation target re-routes to the next owner.
pub fn rules_from_pb(r: pb::RoutingRules) -> Result<RoutingRules, FieldViolations> {
    let mut v = FieldViolations::new();
    let defaults = RoutingRules::default();
    let rules = r
        .rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let kind = match rule.kind {
                0 => None,
                n => kind_from_pb(n).or_else(|| {
                    v.add(
                        format!("routing_rules.rules[{i}].kind"),
                        "not a hand-off kind",
                    );
                    None
                }),
            };
            RoutingRule {
                id: rule.id.clone(),
                description: rule.description.clone(),
                kind,
                territory: territory_from_pb(
                    &rule.territory.clone().unwrap_or_default(),
                    &format!("routing_rules.rules[{i}].territory"),
                    &mut v,
                ),
                owner_ids: rule.owner_ids.clone(),
            }
        })
        .collect();
    let escalation_target = match pb::EscalationTarget::try_from(r.escalation_target) {
        Ok(pb::EscalationTarget::ManagerQueue) => EscalationTarget::ManagerQueue,
        Ok(_) => EscalationTarget::NextOwner,
        Err(_) => {
            v.add(
                "routing_rules.escalation_target",
                "not an escalation target",
            );
            EscalationTarget::NextOwner
        }
    };
    let rules = RoutingRules {
        version: 0,
        description: r.description,
        rules,
        sales_sla: sla_from_pb(
            r.sales_sla.as_ref(),
            defaults.sales_sla,
            "routing_rules.sales_sla",
            &mut v,
        ),
        sdr_review_sla: sla_from_pb(
            r.sdr_review_sla.as_ref(),
            defaults.sdr_review_sla,
            "routing_rules.sdr_review_sla",
            &mut v,
        ),
        escalation_target,
        create_time: None,
    };
    if let Err(more) = rules.validate() {
        v.extend(more);
    }
    v.into_result(rules)
}

/// Routing rules in the contract's terms.
pub fn rules_to_pb(r: &RoutingRules, create_time: Option<DateTime<Utc>>) -> pb::RoutingRules {
    pb::RoutingRules {
        version: r.version,
        description: r.description.clone(),
        rules: r
            .rules
            .iter()
            .map(|rule| pb::RoutingRule {
                id: rule.id.clone(),
                description: rule.description.clone(),
                kind: rule.kind.map_or(0, |k| kind_to_pb(k) as i32),
                territory: Some(territory_to_pb(&rule.territory)),
                owner_ids: rule.owner_ids.clone(),
            })
            .collect(),
        sales_sla: Some(to_duration(r.sales_sla)),
        sdr_review_sla: Some(to_duration(r.sdr_review_sla)),
        escalation_target: match r.escalation_target {
            EscalationTarget::NextOwner => pb::EscalationTarget::NextOwner,
            EscalationTarget::ManagerQueue => pb::EscalationTarget::ManagerQueue,
        } as i32,
        create_time: create_time.map(to_timestamp),
    }
}

/// SLA figures in the contract's terms.
pub fn sla_stats_to_pb(s: &SlaStats) -> pb::SlaStats {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    pb::SlaStats {
        owner_id: s.owner_id.clone().unwrap_or_default(),
        team_id: s.team_id.clone().unwrap_or_default(),
        handoff_count: count(s.handoff_count),
        contacted_count: count(s.contacted_count),
        median_time_to_first_contact: s.median_time_to_first_contact.map(to_duration),
        p90_time_to_first_contact: s.p90_time_to_first_contact.map(to_duration),
        within_sla_count: count(s.within_sla_count),
        within_sla_share: s.within_sla_share,
        breach_count: count(s.breach_count),
        open_overdue_count: count(s.open_overdue_count),
    }
}

/// The warm context stored with hand-off `row` (the full view's; `None` if it does not decode).
pub fn warm_context(row: &handoff::Model) -> Option<pb::WarmContext> {
    pb::WarmContext::decode(row.context.as_slice()).ok()
}

/// A stored hand-off in the contract's terms; `history` and the warm context only in the full
/// view.
pub fn handoff_to_pb(
    row: &handoff::Model,
    full: Option<Vec<pb::HandoffStatusChange>>,
) -> pb::Handoff {
    let (status_history, context) = match full {
        Some(history) => (history, warm_context(row)),
        None => (Vec::new(), None),
    };
    pb::Handoff {
        handoff_id: row.handoff_id.clone(),
        lead_id: row.lead_id.clone(),
        kind: row.kind,
        status: row.status,
        owner_id: row.owner_id.clone(),
        queue: row.queue,
        routing_rule_id: row.routing_rule_id.clone(),
        routing_rules_version: row.routing_rules_version,
        create_time: Some(to_timestamp(row.created_at)),
        sla_deadline: Some(to_timestamp(row.sla_deadline)),
        sla_breached: row.sla_breached,
        first_contact_time: row.first_contact_at.map(to_timestamp),
        crm_record_id: row.crm_record_id.clone(),
        rejection_reason: row.rejection_reason,
        outcome: if row.outcome.is_empty() {
            None
        } else {
            common::SalesOutcome::decode(row.outcome.as_slice()).ok()
        },
        status_history,
        context,
        update_time: Some(to_timestamp(row.updated_at)),
        contact_due_time: Some(to_timestamp(contact_due(row))),
    }
}

fn enum_name(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix).unwrap_or(name).to_lowercase()
}

/// The JSON body a webhook endpoint receives for a change of `row`.
pub fn webhook_payload(
    delivery_id: &str,
    row: &handoff::Model,
    change: &pb::HandoffStatusChange,
) -> String {
    let status = pb::HandoffStatus::try_from(change.to_status)
        .map(|s| enum_name(s.as_str_name(), "HANDOFF_STATUS_"))
        .unwrap_or_default();
    let kind = common::HandoffKind::try_from(row.kind)
        .map(|k| enum_name(k.as_str_name(), "HANDOFF_KIND_"))
        .unwrap_or_default();
    let queue = pb::HandoffQueue::try_from(row.queue)
        .map(|q| enum_name(q.as_str_name(), "HANDOFF_QUEUE_"))
        .unwrap_or_default();
    serde_json::json!({
        "delivery_id": delivery_id,
        "event": if change.from_status == change.to_status && status == "pending" {
            "handoff.created"
        } else {
            "handoff.changed"
        },
        "handoff": {
            "handoff_id": row.handoff_id,
            "lead_id": row.lead_id,
            "kind": kind,
            "status": status,
            "owner_id": row.owner_id,
            "queue": queue,
            "routing_rule_id": row.routing_rule_id,
            "create_time": row.created_at.to_rfc3339(),
            "sla_deadline": row.sla_deadline.to_rfc3339(),
            "sla_breached": row.sla_breached,
            "contact_due_time": contact_due(row).to_rfc3339(),
            "first_contact_time": row.first_contact_at.map(|t| t.to_rfc3339()),
            "crm_record_id": row.crm_record_id,
        },
        "change": {
            "actor_id": change.actor_id,
            "note": change.note,
            "change_time": change.change_time.as_ref().and_then(timestamp).map(|t| t.to_rfc3339()),
        },
    })
    .to_string()
}

/// When the hand-off's current owner must make first contact.
pub fn contact_due(row: &handoff::Model) -> DateTime<Utc> {
    row.contact_due_at.unwrap_or(row.sla_deadline)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip() {
        for status in HandoffStatus::ALL {
            assert_eq!(status_from_pb(status_to_pb(status) as i32), Some(status));
        }
        for kind in HandoffKind::ALL {
            assert_eq!(kind_from_pb(kind_to_pb(kind) as i32), Some(kind));
        }
        for role in [Role::Sdr, Role::AccountExecutive, Role::Manager] {
            assert_eq!(role_from_pb(role_to_pb(role) as i32), Some(role));
        }
        assert_eq!(status_from_pb(0), None);
    }

    #[test]
    fn rules_round_trip_and_name_bad_fields() {
        let rules = pb::RoutingRules {
            description: "dach".into(),
            rules: vec![pb::RoutingRule {
                id: "dach".into(),
                kind: common::HandoffKind::Sales as i32,
                territory: Some(pb::Territory {
                    countries: vec!["de".into(), "AT".into()],
                    ..Default::default()
                }),
                owner_ids: vec!["ae-1".into()],
                ..Default::default()
            }],
            sales_sla: Some(prost_types::Duration {
                seconds: 4 * 3600,
                nanos: 0,
            }),
            ..Default::default()
        };
        let parsed = rules_from_pb(rules).expect("valid");
        assert_eq!(parsed.rules[0].territory.countries, ["DE", "AT"]);
        assert_eq!(parsed.sales_sla, TimeDelta::hours(4));
        assert_eq!(parsed.sdr_review_sla, TimeDelta::hours(24), "the default");
        let again = rules_from_pb(rules_to_pb(&parsed, None)).expect("valid");
        assert_eq!(again, parsed);

        let bad = pb::RoutingRules {
            rules: vec![pb::RoutingRule {
                id: String::new(),
                kind: 7,
                territory: Some(pb::Territory {
                    company_sizes: vec![pb::CompanySizeRange {
                        min_employees: Some(-1),
                        max_employees: None,
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let fields: Vec<String> = rules_from_pb(bad)
            .expect_err("invalid")
            .violations()
            .iter()
            .map(|v| v.field.clone())
            .collect();
        assert_eq!(
            fields,
            [
                "routing_rules.rules[0].kind",
                "routing_rules.rules[0].territory.company_sizes[0].min_employees",
                "routing_rules.rules[0].id",
                "routing_rules.rules[0].owner_ids"
            ]
        );
    }

    #[test]
    fn owners_need_a_role_and_sane_numbers() {
        let fields: Vec<String> = owner_from_pb(pb::Owner {
            owner_id: "sam".into(),
            capacity: -1,
            ..Default::default()
        })
        .expect_err("invalid")
        .violations()
        .iter()
        .map(|v| v.field.clone())
        .collect();
        assert_eq!(fields, ["owner.role", "owner.capacity"]);
    }
}
