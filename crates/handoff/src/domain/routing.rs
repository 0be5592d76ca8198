//! Versioned routing rules and the router: the first matching rule picks a pool of owners, and
//! the hand-off goes by smooth weighted round-robin (the nginx algorithm) to an eligible owner of
//! that pool, or to the fallback queue.
//!
//! The round-robin state is a small value per pool (the current weight of each owner, keyed by
//! rule id) passed in and out explicitly, so the store can persist it; given the same rules,
//! owners, open counts, state, lead and time the router always answers the same.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, TimeDelta, Utc};
use leadflow_runtime::error::FieldViolations;
use serde::{Deserialize, Serialize};

use super::owner::{LeadFacts, Owner, Territory};
use super::sla::{EscalationTarget, SlaPolicy};
use super::status::HandoffKind;

/// The longest SLA routing rules accept.
pub const MAX_SLA: TimeDelta = TimeDelta::days(365);

/// Where an unassigned hand-off waits (`HandoffQueue`); a hand-off with an owner is in none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HandoffQueue {
    /// No eligible owner was found.
    Fallback,
    /// Escalated to the managers.
    Manager,
}

/// A routing rule (`RoutingRule`): a territory match picks a pool of owners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    /// Unique within the rules, e.g. "dach-enterprise"; also keys the pool's round-robin state.
    pub id: String,
    /// For people.
    pub description: String,
    /// The kind the rule applies to; both when `None`.
    pub kind: Option<HandoffKind>,
    /// The leads the rule matches.
    pub territory: Territory,
    /// The pool; only owners whose role fits the hand-off's kind are eligible.
    pub owner_ids: Vec<String>,
}

impl RoutingRule {
    /// True when the rule picks the pool for a hand-off of `kind` for `lead`.
    pub fn applies_to(&self, kind: HandoffKind, lead: &LeadFacts) -> bool {
        self.kind.is_none_or(|k| k == kind) && self.territory.matches(lead)
    }
}

/// The versioned routing configuration of a tenant (`RoutingRules`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingRules {
    /// Assigned on publish: 1, 2, 3, …; zero before.
    pub version: i32,
    /// For people.
    pub description: String,
    /// Evaluated in order; the first rule whose kind and territory match picks the pool.
    pub rules: Vec<RoutingRule>,
    /// Time to first contact for SALES hand-offs.
    pub sales_sla: TimeDelta,
    /// Time to first contact for SDR_REVIEW hand-offs.
    pub sdr_review_sla: TimeDelta,
    /// What a breach does.
    pub escalation_target: EscalationTarget,
    /// When the version was published.
    pub create_time: Option<DateTime<Utc>>,
}

impl Default for RoutingRules {
    /// No rules (everything to the fallback queue) and the default SLA policy.
    fn default() -> Self {
        let sla = SlaPolicy::default();
        Self {
            version: 0,
            description: String::new(),
            rules: Vec::new(),
            sales_sla: sla.sales,
            sdr_review_sla: sla.sdr_review,
            escalation_target: sla.escalation_target,
            create_time: None,
        }
    }
}

impl RoutingRules {
    /// The SLA policy these rules set.
    pub fn sla_policy(&self) -> SlaPolicy {
        SlaPolicy {
            sales: self.sales_sla,
            sdr_review: self.sdr_review_sla,
            escalation_target: self.escalation_target,
        }
    }

    /// The first rule that picks the pool for a hand-off of `kind` for `lead`.
    pub fn rule_for(&self, kind: HandoffKind, lead: &LeadFacts) -> Option<&RoutingRule> {
        self.rules.iter().find(|r| r.applies_to(kind, lead))
    }

    /// Every mistake, each field named as in `PublishRoutingRulesRequest` (e.g.
    /// `routing_rules.rules[0].territory.countries[1]`).
    pub fn validate(&self) -> Result<(), FieldViolations> {
        let mut v = FieldViolations::new();
        let mut rule_ids = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let at = format!("routing_rules.rules[{i}]");
            if rule.id.trim().is_empty() {
                v.add(format!("{at}.id"), "required");
            } else if !rule_ids.insert(rule.id.as_str()) {
                v.add(
                    format!("{at}.id"),
                    format!("rule id {:?} is used twice", rule.id),
                );
            }
            rule.territory.check(&format!("{at}.territory"), &mut v);
            if rule.owner_ids.is_empty() {
                v.add(format!("{at}.owner_ids"), "a rule needs at least one owner");
            }
            let mut owner_ids = HashSet::new();
            for (j, owner_id) in rule.owner_ids.iter().enumerate() {
                if owner_id.trim().is_empty() {
                    v.add(format!("{at}.owner_ids[{j}]"), "required");
                } else if !owner_ids.insert(owner_id.as_str()) {
                    v.add(
                        format!("{at}.owner_ids[{j}]"),
                        format!("owner id {owner_id:?} is listed twice"),
                    );
                }
            }
        }
        for (field, sla) in [
            ("routing_rules.sales_sla", self.sales_sla),
            ("routing_rules.sdr_review_sla", self.sdr_review_sla),
        ] {
            if sla <= TimeDelta::zero() {
                v.add(field, "must be positive");
            } else if sla > MAX_SLA {
                v.add(field, "must be at most 365 days");
            }
        }
        v.into_result(())
    }
}

/// The current weights of one pool's owners, keyed by owner id.
pub type PoolWeights = BTreeMap<String, i64>;

/// Open hand-offs per owner id; a missing owner holds none.
pub type OpenCounts = BTreeMap<String, u32>;

/// The smooth weighted round-robin state of every pool, keyed by routing rule id. Persist the
/// pool named by [`Route::rule_id`] after each routing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundRobinState {
    /// Each pool's current weights.
    pub pools: BTreeMap<String, PoolWeights>,
}

/// Why a hand-off went to the fallback queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FallbackReason {
    /// No rule matched the lead and kind.
    NoRuleMatched,
    /// The rule matched but none of its pool was eligible.
    NoEligibleOwner {
        /// The rule that matched.
        rule_id: String,
    },
}

/// Where the router sends a hand-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Route {
    /// To this owner, picked from this rule's pool.
    Owner {
        /// The owner.
        owner_id: String,
        /// The rule that picked the pool (`routing_rule_id`).
        rule_id: String,
    },
    /// To the fallback queue.
    Fallback(FallbackReason),
}

impl Route {
    /// The owner, if one was picked.
    pub fn owner_id(&self) -> Option<&str> {
        match self {
            Route::Owner { owner_id, .. } => Some(owner_id),
            Route::Fallback(_) => None,
        }
    }

    /// The rule that picked the owner (`routing_rule_id`, empty for the fallback).
    pub fn rule_id(&self) -> Option<&str> {
        match self {
            Route::Owner { rule_id, .. } => Some(rule_id),
            Route::Fallback(_) => None,
        }
    }

    /// The queue the hand-off waits in, if no owner was picked.
    pub fn queue(&self) -> Option<HandoffQueue> {
        match self {
            Route::Owner { .. } => None,
            Route::Fallback(_) => Some(HandoffQueue::Fallback),
        }
    }
}

/// True when `owner`, holding `open` hand-offs, may get a hand-off of `kind` for `lead` at
/// `now`: its role takes the kind, it is active, not out of office, has spare capacity, and the
/// lead is in its territory. (Pool membership is the rule's business.)
pub fn is_eligible(
    owner: &Owner,
    kind: HandoffKind,
    lead: &LeadFacts,
    open: u32,
    now: DateTime<Utc>,
) -> bool {
    owner.role.takes(kind)
        && owner.available_at(now)
        && owner.has_capacity(open)
        && owner.territory.matches(lead)
}

/// Routes a hand-off of `kind` for `lead` at `now`: the first matching rule picks the pool, and
/// smooth weighted round-robin picks among its eligible owners, updating `state`. Owners missing
/// from `owners` are skipped; the pool's state forgets owners no longer in the rule.
pub fn route(
    rules: &RoutingRules,
    owners: &[Owner],
    open_counts: &OpenCounts,
    state: &mut RoundRobinState,
    lead: &LeadFacts,
    kind: HandoffKind,
    now: DateTime<Utc>,
) -> Route {
    let request = Request {
        lead,
        kind,
        now,
        exclude: None,
    };
    route_request(rules, owners, open_counts, state, &request)
}

/// One routing question; `exclude` is an owner that must not be picked (an escalation's current
/// owner).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Request<'a> {
    pub(crate) lead: &'a LeadFacts,
    pub(crate) kind: HandoffKind,
    pub(crate) now: DateTime<Utc>,
    pub(crate) exclude: Option<&'a str>,
}

pub(crate) fn route_request(
    rules: &RoutingRules,
    owners: &[Owner],
    open_counts: &OpenCounts,
    state: &mut RoundRobinState,
    request: &Request<'_>,
) -> Route {
    let Some(rule) = rules.rule_for(request.kind, request.lead) else {
        return Route::Fallback(FallbackReason::NoRuleMatched);
    };
    let by_id: BTreeMap<&str, &Owner> = owners.iter().map(|o| (o.id.as_str(), o)).collect();
    let mut members = BTreeSet::new();
    let candidates: Vec<&Owner> = rule
        .owner_ids
        .iter()
        .filter(|id| members.insert(id.as_str()))
        .filter_map(|id| by_id.get(id.as_str()).copied())
        .filter(|o| request.exclude != Some(o.id.as_str()))
        .filter(|o| {
            let open = open_counts.get(&o.id).copied().unwrap_or(0);
            is_eligible(o, request.kind, request.lead, open, request.now)
        })
        .collect();
    let weights = state.pools.entry(rule.id.clone()).or_default();
    weights.retain(|id, _| members.contains(id.as_str()));
    match smooth_weighted_pick(weights, &candidates) {
        Some(owner_id) => Route::Owner {
            owner_id,
            rule_id: rule.id.clone(),
        },
        None => {
            if weights.is_empty() {
                state.pools.remove(&rule.id);
            }
            Route::Fallback(FallbackReason::NoEligibleOwner {
                rule_id: rule.id.clone(),
            })
        }
    }
}

/// The nginx smooth weighted round-robin step: every candidate's current weight grows by its
/// weight, the largest (the earliest in pool order on a tie) is picked and loses the total.
fn smooth_weighted_pick(weights: &mut PoolWeights, candidates: &[&Owner]) -> Option<String> {
    let total: i64 = candidates
        .iter()
        .map(|o| i64::from(o.effective_weight()))
        .sum();
    let mut best: Option<(&str, i64)> = None;
    for owner in candidates {
        let current = weights.entry(owner.id.clone()).or_insert(0);
        *current = current.saturating_add(i64::from(owner.effective_weight()));
        if best.is_none_or(|(_, b)| *current > b) {
            best = Some((owner.id.as_str(), *current));
        }
    }
    let (id, _) = best?;
    if let Some(current) = weights.get_mut(id) {
        *current = current.saturating_sub(total);
    }
    Some(id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::owner::{CompanySizeRange, Role, TimeWindow};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 10, 9, 0, 0)
            .single()
            .expect("valid time")
    }

    fn owner(id: &str, role: Role, weight: u32) -> Owner {
        Owner {
            id: id.to_owned(),
            display_name: id.to_owned(),
            email: String::new(),
            role,
            team_id: "team".to_owned(),
            territory: Territory::default(),
            capacity: 0,
            weight,
            out_of_office: Vec::new(),
            active: true,
        }
    }

    fn rule(id: &str, kind: Option<HandoffKind>, countries: &[&str], pool: &[&str]) -> RoutingRule {
        RoutingRule {
            id: id.to_owned(),
            description: String::new(),
            kind,
            territory: Territory {
                countries: countries.iter().map(|c| (*c).to_owned()).collect(),
                ..Territory::default()
            },
            owner_ids: pool.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    fn rules(rules: Vec<RoutingRule>) -> RoutingRules {
        RoutingRules {
            version: 1,
            rules,
            ..RoutingRules::default()
        }
    }

    fn de() -> LeadFacts {
        LeadFacts {
            country: Some("DE".to_owned()),
            ..LeadFacts::default()
        }
    }

    fn picks(
        rules: &RoutingRules,
        owners: &[Owner],
        state: &mut RoundRobinState,
        n: usize,
    ) -> Vec<String> {
        (0..n)
            .map(|_| {
                let route = route(
                    rules,
                    owners,
                    &OpenCounts::new(),
                    state,
                    &de(),
                    HandoffKind::Sales,
                    now(),
                );
                route.owner_id().expect("an owner").to_owned()
            })
            .collect()
    }

    #[test]
    fn the_nginx_sequence_for_weights_five_one_one() {
        let owners = [
            owner("a", Role::AccountExecutive, 5),
            owner("b", Role::AccountExecutive, 1),
            owner("c", Role::AccountExecutive, 1),
        ];
        let rules = rules(vec![rule("all", None, &[], &["a", "b", "c"])]);
        let mut state = RoundRobinState::default();
        let seq = picks(&rules, &owners, &mut state, 7);
        assert_eq!(seq, ["a", "a", "b", "a", "c", "a", "a"]);
        // After a full cycle every current weight is back to zero.
        assert!(state.pools["all"].values().all(|w| *w == 0));
    }

    #[test]
    fn a_thousand_hand_offs_split_by_weight_and_smoothly() {
        let owners = [
            owner("one", Role::AccountExecutive, 1),
            owner("two", Role::AccountExecutive, 2),
            owner("three", Role::AccountExecutive, 3),
        ];
        let rules = rules(vec![rule("all", None, &[], &["one", "two", "three"])]);
        let mut state = RoundRobinState::default();
        let seq = picks(&rules, &owners, &mut state, 1000);
        let count = |id: &str| seq.iter().filter(|s| *s == id).count();
        // 1000 · w / 6, each within one.
        for (id, weight) in [("one", 1), ("two", 2), ("three", 3)] {
            let exact = 1000.0 * f64::from(weight) / 6.0;
            let got = count(id) as f64;
            assert!((got - exact).abs() <= 1.0, "{id}: {got} vs {exact}");
        }
        // Smooth: every full cycle of six has each owner exactly its weight.
        for cycle in seq.chunks_exact(6) {
            let in_cycle = |id: &str| cycle.iter().filter(|s| *s == id).count();
            assert_eq!(
                (in_cycle("one"), in_cycle("two"), in_cycle("three")),
                (1, 2, 3)
            );
        }
    }

    #[test]
    fn a_light_owner_is_not_starved() {
        let owners = [
            owner("heavy", Role::AccountExecutive, 100),
            owner("light", Role::AccountExecutive, 1),
        ];
        let rules = rules(vec![rule("all", None, &[], &["heavy", "light"])]);
        let mut state = RoundRobinState::default();
        let seq = picks(&rules, &owners, &mut state, 101);
        assert_eq!(seq.iter().filter(|s| *s == "light").count(), 1);
    }

    #[test]
    fn capacity_limits_are_honoured() {
        let mut a = owner("a", Role::AccountExecutive, 1);
        a.capacity = 2;
        let mut b = owner("b", Role::AccountExecutive, 1);
        b.capacity = 3;
        let owners = [a, b];
        let rules = rules(vec![rule("all", None, &[], &["a", "b"])]);
        let mut state = RoundRobinState::default();
        let mut open = OpenCounts::new();
        for _ in 0..5 {
            let route = route(
                &rules,
                &owners,
                &open,
                &mut state,
                &de(),
                HandoffKind::Sales,
                now(),
            );
            *open
                .entry(route.owner_id().expect("an owner").to_owned())
                .or_default() += 1;
        }
        assert_eq!(open["a"], 2);
        assert_eq!(open["b"], 3);
        let full = route(
            &rules,
            &owners,
            &open,
            &mut state,
            &de(),
            HandoffKind::Sales,
            now(),
        );
        assert_eq!(
            full,
            Route::Fallback(FallbackReason::NoEligibleOwner {
                rule_id: "all".into()
            })
        );
        assert_eq!(full.queue(), Some(HandoffQueue::Fallback));
        // One closes: b has room again.
        open.insert("b".into(), 2);
        let again = route(
            &rules,
            &owners,
            &open,
            &mut state,
            &de(),
            HandoffKind::Sales,
            now(),
        );
        assert_eq!(again.owner_id(), Some("b"));
    }

    #[test]
    fn ineligible_owners_are_skipped() {
        let mut inactive = owner("inactive", Role::AccountExecutive, 10);
        inactive.active = false;
        let mut away = owner("away", Role::AccountExecutive, 10);
        away.out_of_office = vec![TimeWindow {
            start_time: now() - TimeDelta::hours(1),
            end_time: now() + TimeDelta::hours(1),
        }];
        let sdr = owner("sdr", Role::Sdr, 10);
        let manager = owner("manager", Role::Manager, 10);
        let mut french = owner("french", Role::AccountExecutive, 10);
        french.territory.countries = vec!["FR".into()];
        let ok = owner("ok", Role::AccountExecutive, 1);
        let owners = [inactive, away, sdr, manager, french, ok];
        let pool = [
            "ghost", "inactive", "away", "sdr", "manager", "french", "ok",
        ];
        let rules = rules(vec![rule("all", None, &[], &pool)]);
        let mut state = RoundRobinState::default();
        let seq = picks(&rules, &owners, &mut state, 20);
        assert!(seq.iter().all(|s| s == "ok"), "{seq:?}");
        // Once back, the owner is picked again.
        let mut owners = owners;
        owners[1].out_of_office.clear();
        let seq = picks(&rules, &owners, &mut state, 22);
        assert_eq!(seq.iter().filter(|s| *s == "away").count(), 20);
    }

    #[test]
    fn the_first_matching_rule_picks_and_roles_follow_the_kind() {
        let owners = [
            owner("ae-dach", Role::AccountExecutive, 1),
            owner("sdr-dach", Role::Sdr, 1),
            owner("ae-world", Role::AccountExecutive, 1),
            owner("sdr-world", Role::Sdr, 1),
        ];
        let rules = rules(vec![
            rule(
                "dach-sales",
                Some(HandoffKind::Sales),
                &["DE", "AT"],
                &["ae-dach"],
            ),
            rule(
                "dach-review",
                Some(HandoffKind::SdrReview),
                &["DE", "AT"],
                &["sdr-dach"],
            ),
            rule("world", None, &[], &["ae-world", "sdr-world"]),
        ]);
        let mut state = RoundRobinState::default();
        let fr = LeadFacts {
            country: Some("fr".into()),
            ..LeadFacts::default()
        };
        let cases = [
            (de(), HandoffKind::Sales, "ae-dach", "dach-sales"),
            (de(), HandoffKind::SdrReview, "sdr-dach", "dach-review"),
            (fr.clone(), HandoffKind::Sales, "ae-world", "world"),
            (fr, HandoffKind::SdrReview, "sdr-world", "world"),
        ];
        for (lead, kind, expected_owner, expected_rule) in cases {
            let route = route(
                &rules,
                &owners,
                &OpenCounts::new(),
                &mut state,
                &lead,
                kind,
                now(),
            );
            assert_eq!(route.owner_id(), Some(expected_owner));
            assert_eq!(route.rule_id(), Some(expected_rule));
        }
    }

    #[test]
    fn fallback_when_no_rule_or_no_owner_fits() {
        let owners = [owner("ae", Role::AccountExecutive, 1)];
        let mut state = RoundRobinState::default();
        let only_fr = rules(vec![rule("fr", None, &["FR"], &["ae"])]);
        let route_de = |rules: &RoutingRules, state: &mut RoundRobinState, kind| {
            route(
                rules,
                &owners,
                &OpenCounts::new(),
                state,
                &de(),
                kind,
                now(),
            )
        };
        let none = route_de(&only_fr, &mut state, HandoffKind::Sales);
        assert_eq!(none, Route::Fallback(FallbackReason::NoRuleMatched));
        assert_eq!(none.rule_id(), None);
        let empty = route_de(&RoutingRules::default(), &mut state, HandoffKind::Sales);
        assert_eq!(empty, Route::Fallback(FallbackReason::NoRuleMatched));
        // The rule matches but its only owner is an AE and this is an SDR review.
        let all = rules(vec![rule("all", None, &[], &["ae"])]);
        let wrong_role = route_de(&all, &mut state, HandoffKind::SdrReview);
        assert_eq!(
            wrong_role,
            Route::Fallback(FallbackReason::NoEligibleOwner {
                rule_id: "all".into()
            })
        );
        assert!(
            state.pools.is_empty(),
            "no state for pools never picked from"
        );
    }

    #[test]
    fn routing_is_deterministic_and_the_state_forgets_removed_owners() {
        let owners = [
            owner("a", Role::AccountExecutive, 3),
            owner("b", Role::AccountExecutive, 2),
            owner("c", Role::AccountExecutive, 4),
        ];
        let all = rules(vec![rule("all", None, &[], &["a", "b", "c"])]);
        let mut first = RoundRobinState::default();
        let mut second = RoundRobinState::default();
        let seq_one = picks(&all, &owners, &mut first, 50);
        let seq_two = picks(&all, &owners, &mut second, 50);
        assert_eq!(seq_one, seq_two);
        assert_eq!(first, second);
        // Resuming from a saved state continues the same sequence.
        let mut saved = RoundRobinState::default();
        let head = picks(&all, &owners, &mut saved, 20);
        let mut resumed = saved.clone();
        let tail = picks(&all, &owners, &mut resumed, 30);
        assert_eq!([head, tail].concat(), seq_one);

        let without_c = rules(vec![rule("all", None, &[], &["a", "b"])]);
        picks(&without_c, &owners, &mut first, 1);
        let keys: Vec<&str> = first.pools["all"].keys().map(String::as_str).collect();
        assert_eq!(keys, ["a", "b"]);
    }

    #[test]
    fn valid_rules_pass_and_every_mistake_is_named() {
        rules(vec![
            rule("dach", Some(HandoffKind::Sales), &["DE"], &["a", "b"]),
            rule("world", None, &[], &["c"]),
        ])
        .validate()
        .expect("valid");
        let mut bad = rules(vec![
            rule("dach", None, &["DE", "Germany"], &["a", "a", " "]),
            rule("dach", None, &[], &[]),
            rule("", None, &[], &["b"]),
        ]);
        bad.rules[2].territory.company_sizes = vec![CompanySizeRange {
            min_employees: Some(10),
            max_employees: Some(1),
        }];
        bad.sales_sla = TimeDelta::zero();
        bad.sdr_review_sla = TimeDelta::days(400);
        let err = bad.validate().expect_err("invalid");
        let fields: Vec<&str> = err.violations().iter().map(|v| v.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "routing_rules.rules[0].territory.countries[1]",
                "routing_rules.rules[0].owner_ids[1]",
                "routing_rules.rules[0].owner_ids[2]",
                "routing_rules.rules[1].id",
                "routing_rules.rules[1].owner_ids",
                "routing_rules.rules[2].id",
                "routing_rules.rules[2].territory.company_sizes[0].max_employees",
                "routing_rules.sales_sla",
                "routing_rules.sdr_review_sla",
            ]
        );
        assert_eq!(
            err.violations()[3].description,
            "rule id \"dach\" is used twice"
        );
    }

    fn any_owner(id: usize) -> impl Strategy<Value = Owner> {
        (
            prop::sample::select(vec![Role::Sdr, Role::AccountExecutive, Role::Manager]),
            any::<bool>(),
            any::<bool>(),
            0u32..4,
            0u32..5,
            prop::sample::subsequence(vec!["DE", "FR", "US"], 0..=2),
        )
            .prop_map(move |(role, active, away, capacity, weight, countries)| {
                let mut o = owner(&format!("o{id}"), role, weight);
                o.active = active;
                o.capacity = capacity;
                o.territory.countries = countries.into_iter().map(str::to_owned).collect();
                if away {
                    o.out_of_office = vec![TimeWindow {
                        start_time: now() - TimeDelta::minutes(5),
                        end_time: now() + TimeDelta::minutes(5),
                    }];
                }
                o
            })
    }

    fn any_rule(id: usize) -> impl Strategy<Value = RoutingRule> {
        (
            prop::option::of(prop::sample::select(HandoffKind::ALL.to_vec())),
            prop::sample::subsequence(vec!["DE", "FR", "US"], 0..=2),
            prop::collection::vec(0usize..8, 0..6),
        )
            .prop_map(move |(kind, countries, pool)| {
                let pool: Vec<String> = pool.into_iter().map(|i| format!("o{i}")).collect();
                let pool: Vec<&str> = pool.iter().map(String::as_str).collect();
                rule(&format!("r{id}"), kind, &countries, &pool)
            })
    }

    proptest! {
        /// Routing never picks an ineligible owner nor one outside the first matching rule's
        /// pool, and falls back only when nobody in that pool fits.
        #[test]
        fn routing_never_picks_an_ineligible_owner(
            owners in (0usize..6).prop_flat_map(|n| (0..n).map(any_owner).collect::<Vec<_>>()),
            rule_list in (0usize..4).prop_flat_map(|n| (0..n).map(any_rule).collect::<Vec<_>>()),
            questions in prop::collection::vec(
                (prop::sample::select(vec!["DE", "FR", "US"]), any::<bool>(), any::<bool>()),
                1..30,
            ),
        ) {
            let rules = rules(rule_list);
            let mut state = RoundRobinState::default();
            let mut open = OpenCounts::new();
            for (country, sales, close_one) in questions {
                let lead = LeadFacts { country: Some(country.to_owned()), ..LeadFacts::default() };
                let kind = if sales { HandoffKind::Sales } else { HandoffKind::SdrReview };
                let routed = route(&rules, &owners, &open, &mut state, &lead, kind, now());
                let first = rules.rules.iter().find(|r| r.applies_to(kind, &lead));
                let eligible = |o: &Owner| {
                    is_eligible(o, kind, &lead, open.get(&o.id).copied().unwrap_or(0), now())
                };
                match &routed {
                    Route::Owner { owner_id, rule_id } => {
                        let rule = first.expect("a rule matched");
                        prop_assert_eq!(&rule.id, rule_id);
                        prop_assert!(rule.owner_ids.contains(owner_id));
                        let owner = owners.iter().find(|o| &o.id == owner_id).expect("known");
                        prop_assert!(eligible(owner));
                    }
                    Route::Fallback(FallbackReason::NoRuleMatched) => prop_assert!(first.is_none()),
                    Route::Fallback(FallbackReason::NoEligibleOwner { rule_id }) => {
                        let rule = first.expect("a rule matched");
                        prop_assert_eq!(&rule.id, rule_id);
                        prop_assert!(!owners.iter().any(|o| rule.owner_ids.contains(&o.id) && eligible(o)));
                    }
                }
                if let Some(id) = routed.owner_id() {
                    *open.entry(id.to_owned()).or_default() += 1;
                }
                if close_one && let Some(count) = open.values_mut().find(|c| **c > 0) {
                    *count -= 1;
                }
            }
        }
    }
}
