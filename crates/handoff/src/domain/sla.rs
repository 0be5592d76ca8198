//! The SLA clock: time to first contact per hand-off kind, when it breaks, and what a breach
//! does (re-route to the next eligible owner of the pool, or move to the manager queue).

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::owner::{LeadFacts, Owner};
use super::routing::{self, HandoffQueue, OpenCounts, RoundRobinState, Route, RoutingRules};
use super::status::{HandoffKind, HandoffStatus};

/// What happens to a hand-off whose SLA breaks (`EscalationTarget`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub enum EscalationTarget {
    /// Re-route to the next eligible owner of the pool (not the current one); the manager queue
    /// when there is none. The default.
    #[default]
    NextOwner,
    /// Move to the manager queue.
    ManagerQueue,
}

/// How long owners have for first contact, per kind, and what a breach does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlaPolicy {
    /// Time to first contact for SALES hand-offs.
    pub sales: TimeDelta,
    /// Time to first contact for SDR_REVIEW hand-offs.
    pub sdr_review: TimeDelta,
    /// What a breach does.
    pub escalation_target: EscalationTarget,
}

impl SlaPolicy {
    /// The seeds' SLA: sales contacts every SQL within 24 hours.
    pub const DEFAULT_SALES: TimeDelta = TimeDelta::hours(24);
    /// SDR review gets the same 24 hours unless configured.
    pub const DEFAULT_SDR_REVIEW: TimeDelta = TimeDelta::hours(24);

    /// The time to first contact for `kind`.
    pub fn sla(&self, kind: HandoffKind) -> TimeDelta {
        match kind {
            HandoffKind::Sales => self.sales,
            HandoffKind::SdrReview => self.sdr_review,
        }
    }

    /// When first contact is due for a hand-off of `kind` created at `created_at`.
    pub fn deadline(&self, kind: HandoffKind, created_at: DateTime<Utc>) -> DateTime<Utc> {
        created_at
            .checked_add_signed(self.sla(kind))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

impl Default for SlaPolicy {
    /// 24 hours for both kinds, breaches re-routed to the next owner.
    fn default() -> Self {
        Self {
            sales: Self::DEFAULT_SALES,
            sdr_review: Self::DEFAULT_SDR_REVIEW,
            escalation_target: EscalationTarget::default(),
        }
    }
}

/// True when the SLA broke: first contact came after the deadline, or has not come and `now` is
/// past it. Contact at the deadline itself is in time.
pub fn is_breached(
    first_contact_at: Option<DateTime<Utc>>,
    deadline: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    match first_contact_at {
        Some(contact) => contact > deadline,
        None => now > deadline,
    }
}

/// True when the SLA sweeper must escalate the hand-off now: nobody made contact, the current
/// owner's contact is overdue (`contact_due` passed), and someone can still take it over —
/// pending or acknowledged, or escalated to a new owner who let the fresh SLA pass too. The
/// manager queue is where escalation ends.
pub fn should_escalate(
    status: HandoffStatus,
    in_manager_queue: bool,
    first_contact_at: Option<DateTime<Utc>>,
    contact_due: DateTime<Utc>,
    now: DateTime<Utc>,
) -> bool {
    !in_manager_queue
        && (status.awaits_contact() || status == HandoffStatus::Escalated)
        && first_contact_at.is_none()
        && is_breached(None, contact_due, now)
}

/// The hand-off being escalated.
#[derive(Debug, Clone, Copy)]
pub struct EscalationCase<'a> {
    /// The lead's routing facts.
    pub lead: &'a LeadFacts,
    /// The hand-off's kind.
    pub kind: HandoffKind,
    /// The current owner, never picked again; `None` while in a queue.
    pub current_owner: Option<&'a str>,
}

/// Where an escalated hand-off goes (its status becomes escalated either way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Escalation {
    /// Re-routed to another owner of the pool.
    Reassign {
        /// The new owner.
        owner_id: String,
        /// The rule that picked the pool.
        rule_id: String,
    },
    /// Moved to the manager queue (no owner).
    ManagerQueue,
}

impl Escalation {
    /// The new owner, if re-routed.
    pub fn owner_id(&self) -> Option<&str> {
        match self {
            Escalation::Reassign { owner_id, .. } => Some(owner_id),
            Escalation::ManagerQueue => None,
        }
    }

    /// When the new owner's first contact is due: a fresh SLA of `policy` from `now` when
    /// re-routed; `None` in the manager queue (nothing escalates from there).
    pub fn contact_due(
        &self,
        policy: &SlaPolicy,
        kind: HandoffKind,
        now: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self {
            Escalation::Reassign { .. } => Some(policy.deadline(kind, now)),
            Escalation::ManagerQueue => None,
        }
    }

    /// The queue the hand-off waits in, if not re-routed.
    pub fn queue(&self) -> Option<HandoffQueue> {
        match self {
            Escalation::Reassign { .. } => None,
            Escalation::ManagerQueue => Some(HandoffQueue::Manager),
        }
    }
}

/// Decides where a breached hand-off goes under `rules.escalation_target`: with
/// [`EscalationTarget::NextOwner`], the router runs again (updating `state`) without the current
/// owner, and the manager queue takes it when nobody else fits; with
/// [`EscalationTarget::ManagerQueue`], straight to the manager queue. The SLA deadline stays;
/// a new owner gets a fresh time to first contact ([`Escalation::contact_due`]).
pub fn escalate(
    rules: &RoutingRules,
    owners: &[Owner],
    open_counts: &OpenCounts,
    state: &mut RoundRobinState,
    case: &EscalationCase<'_>,
    now: DateTime<Utc>,
) -> Escalation {
    match rules.escalation_target {
        EscalationTarget::ManagerQueue => Escalation::ManagerQueue,
        EscalationTarget::NextOwner => {
            let request = routing::Request {
                lead: case.lead,
                kind: case.kind,
                now,
                exclude: case.current_owner,
            };
            match routing::route_request(rules, owners, open_counts, state, &request) {
                Route::Owner { owner_id, rule_id } => Escalation::Reassign { owner_id, rule_id },
                Route::Fallback(_) => Escalation::ManagerQueue,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::owner::{Role, Territory};
    use crate::domain::routing::RoutingRule;
    use chrono::TimeZone;

    fn t(day: u32, hour: u32, minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, day, hour, minute, 0)
            .single()
            .expect("valid time")
    }

    fn ae(id: &str) -> Owner {
        Owner {
            id: id.to_owned(),
            display_name: id.to_owned(),
            email: String::new(),
            role: Role::AccountExecutive,
            team_id: String::new(),
            territory: Territory::default(),
            capacity: 0,
            weight: 1,
            out_of_office: Vec::new(),
            active: true,
        }
    }

    fn rules(pool: &[&str], target: EscalationTarget) -> RoutingRules {
        RoutingRules {
            version: 1,
            rules: vec![RoutingRule {
                id: "all".into(),
                owner_ids: pool.iter().map(|p| (*p).to_owned()).collect(),
                ..RoutingRule::default()
            }],
            escalation_target: target,
            ..RoutingRules::default()
        }
    }

    #[test]
    fn deadlines_follow_the_kind() {
        let created = t(10, 9, 0);
        let policy = SlaPolicy::default();
        assert_eq!(policy.deadline(HandoffKind::Sales, created), t(11, 9, 0));
        assert_eq!(
            policy.deadline(HandoffKind::SdrReview, created),
            t(11, 9, 0)
        );
        let fast_review = SlaPolicy {
            sdr_review: TimeDelta::hours(4),
            ..policy
        };
        assert_eq!(
            fast_review.deadline(HandoffKind::SdrReview, created),
            t(10, 13, 0)
        );
        assert_eq!(
            RoutingRules::default().sla_policy(),
            SlaPolicy::default(),
            "rules carry the policy"
        );
    }

    #[test]
    fn met_breached_and_escalated_with_explicit_times() {
        let deadline = t(11, 9, 0);
        // Met: contacted before or at the deadline, whenever we look.
        assert!(!is_breached(Some(t(10, 15, 30)), deadline, t(20, 0, 0)));
        assert!(!is_breached(Some(deadline), deadline, t(20, 0, 0)));
        // Still running: no contact yet, deadline not passed.
        assert!(!is_breached(None, deadline, t(11, 8, 59)));
        assert!(!is_breached(None, deadline, deadline));
        // Breached: late contact, or none and past the deadline.
        assert!(is_breached(Some(t(11, 9, 1)), deadline, t(11, 9, 1)));
        assert!(is_breached(None, deadline, t(11, 9, 1)));

        let late = t(11, 9, 1);
        use HandoffStatus::*;
        let due =
            |status, manager, contact| should_escalate(status, manager, contact, deadline, late);
        assert!(due(Pending, false, None));
        assert!(due(Acknowledged, false, None));
        assert!(
            due(Escalated, false, None),
            "a re-routed hand-off whose new owner missed the fresh SLA"
        );
        assert!(
            !should_escalate(Pending, false, None, deadline, deadline),
            "at the deadline"
        );
        assert!(
            !due(Escalated, true, None),
            "the manager queue ends escalation"
        );
        assert!(
            !due(Acknowledged, true, None),
            "the manager queue ends escalation"
        );
        assert!(!due(Contacted, false, Some(t(10, 10, 0))));
        assert!(
            !due(Escalated, false, Some(t(10, 10, 0))),
            "contacted before"
        );
        assert!(!due(Withdrawn, false, None));
        assert!(!due(Opportunity, false, None));
    }

    #[test]
    fn a_new_owner_gets_a_fresh_sla_and_the_managers_none() {
        let policy = SlaPolicy::default();
        let now = t(12, 9, 0);
        let reassigned = Escalation::Reassign {
            owner_id: "b".into(),
            rule_id: "all".into(),
        };
        assert_eq!(
            reassigned.contact_due(&policy, HandoffKind::Sales, now),
            Some(t(13, 9, 0))
        );
        assert_eq!(
            Escalation::ManagerQueue.contact_due(&policy, HandoffKind::Sales, now),
            None
        );
    }

    #[test]
    fn escalation_re_routes_to_the_next_owner_or_the_managers() {
        let owners = [ae("a"), ae("b")];
        let lead = LeadFacts::default();
        let now = t(11, 10, 0);
        let case = EscalationCase {
            lead: &lead,
            kind: HandoffKind::Sales,
            current_owner: Some("a"),
        };
        let mut state = RoundRobinState::default();
        let next = rules(&["a", "b"], EscalationTarget::NextOwner);
        // Whatever the round-robin state, never back to the current owner.
        for _ in 0..5 {
            let escalation = escalate(&next, &owners, &OpenCounts::new(), &mut state, &case, now);
            assert_eq!(
                escalation,
                Escalation::Reassign {
                    owner_id: "b".into(),
                    rule_id: "all".into()
                }
            );
            assert_eq!(escalation.queue(), None);
        }
        // Nobody else in the pool: the managers.
        let alone = rules(&["a"], EscalationTarget::NextOwner);
        let escalation = escalate(&alone, &owners, &OpenCounts::new(), &mut state, &case, now);
        assert_eq!(escalation, Escalation::ManagerQueue);
        assert_eq!(escalation.queue(), Some(HandoffQueue::Manager));
        // b is at capacity: the managers.
        let mut full = owners.clone();
        full[1].capacity = 1;
        let open = OpenCounts::from([("b".to_owned(), 1)]);
        let escalation = escalate(&next, &full, &open, &mut state, &case, now);
        assert_eq!(escalation, Escalation::ManagerQueue);
        // A hand-off waiting in the fallback queue may find an owner now.
        let queued = EscalationCase {
            current_owner: None,
            ..case
        };
        let escalation = escalate(
            &alone,
            &owners,
            &OpenCounts::new(),
            &mut state,
            &queued,
            now,
        );
        assert_eq!(escalation.owner_id(), Some("a"));
        // Configured for the manager queue: straight there, the state untouched.
        let managers = rules(&["a", "b"], EscalationTarget::ManagerQueue);
        let before = state.clone();
        let escalation = escalate(
            &managers,
            &owners,
            &OpenCounts::new(),
            &mut state,
            &case,
            now,
        );
        assert_eq!(escalation, Escalation::ManagerQueue);
        assert_eq!(state, before);
    }
}
