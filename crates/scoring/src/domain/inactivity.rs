//! Inactivity: a lead that stopped doing something loses points, without any new event.

use chrono::{DateTime, Utc};

use super::model::InactivityRule;

/// Most penalties one sweep applies for one rule (a lead idle for years is not penalised
/// thousands of times in one go).
pub const MAX_PENALTIES_PER_SWEEP: usize = 52;

/// The times at which `rule` applies up to `now`, for a lead whose last matching activity (or
/// first appearance) was `last_seen`, given when the rule last applied. Each time is
/// `last_seen + k * inactive_for`; without `repeat` only `k = 1`.
pub fn due(
    rule: &InactivityRule,
    last_seen: DateTime<Utc>,
    last_applied: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut times = Vec::new();
    let mut k = 1;
    while let Some(at) = rule
        .inactive_for
        .checked_mul(k)
        .and_then(|d| last_seen.checked_add_signed(d))
        .filter(|at| *at <= now && times.len() < MAX_PENALTIES_PER_SWEEP)
    {
        if last_applied.is_none_or(|applied| at > applied) {
            times.push(at);
        }
        if !rule.repeat {
            break;
        }
        k += 1;
    }
    times
}

/// The first time after `last_applied` at which `rule` applies again, for a lead whose last
/// matching activity (or first appearance) was `last_seen`: the first time [`due`] would
/// return once `now` reaches it. `None` when the rule is spent for this inactive spell (it does
/// not repeat and has applied) or the time is beyond what a timestamp holds.
pub fn next_due(
    rule: &InactivityRule,
    last_seen: DateTime<Utc>,
    last_applied: Option<DateTime<Utc>>,
) -> Option<DateTime<Utc>> {
    let period = rule.inactive_for;
    let first = last_seen.checked_add_signed(period)?;
    let Some(applied) = last_applied.filter(|applied| *applied >= first) else {
        return Some(first);
    };
    if !rule.repeat || period <= chrono::Duration::zero() {
        return None;
    }
    let periods_applied = (applied - last_seen).num_microseconds()? / period.num_microseconds()?;
    let k = i32::try_from(periods_applied.checked_add(1)?).ok()?;
    last_seen.checked_add_signed(period.checked_mul(k)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn rule(repeat: bool) -> InactivityRule {
        InactivityRule {
            id: "cold".into(),
            description: String::new(),
            activity_type: Some("email_open".into()),
            inactive_for: Duration::days(14),
            points: -10.0,
            repeat,
        }
    }

    #[test]
    fn applies_once_per_spell_or_every_period() {
        let t0 = Utc::now();
        assert!(due(&rule(false), t0, None, t0 + Duration::days(13)).is_empty());
        assert_eq!(
            due(&rule(false), t0, None, t0 + Duration::days(40)),
            [t0 + Duration::days(14)]
        );
        assert!(
            due(
                &rule(false),
                t0,
                Some(t0 + Duration::days(14)),
                t0 + Duration::days(40)
            )
            .is_empty()
        );
        assert_eq!(
            due(
                &rule(true),
                t0,
                Some(t0 + Duration::days(14)),
                t0 + Duration::days(40)
            ),
            [t0 + Duration::days(28)]
        );
        // A new activity starts a new spell: the earlier application no longer counts.
        let back = t0 + Duration::days(30);
        assert_eq!(
            due(
                &rule(false),
                back,
                Some(t0 + Duration::days(14)),
                back + Duration::days(15)
            ),
            [back + Duration::days(14)]
        );
    }

    #[test]
    fn the_next_time_is_the_first_one_due_would_return() {
        let t0 = Utc::now();
        let days = Duration::days;
        assert_eq!(next_due(&rule(false), t0, None), Some(t0 + days(14)));
        assert_eq!(next_due(&rule(false), t0, Some(t0 + days(14))), None);
        assert_eq!(
            next_due(&rule(true), t0, Some(t0 + days(14))),
            Some(t0 + days(28))
        );
        // Applied in an earlier spell: the new spell's first time.
        assert_eq!(
            next_due(&rule(false), t0 + days(30), Some(t0 + days(14))),
            Some(t0 + days(44))
        );
    }

    proptest::proptest! {
        /// Before `next_due` nothing is due; at it, it is the first time `due` returns.
        #[test]
        fn next_due_agrees_with_due(
            repeat: bool,
            period_h in 1i64..2000,
            applied_h in proptest::option::of(-500i64..20_000),
            probe_h in 0i64..40_000,
        ) {
            let t0 = Utc::now();
            let rule = InactivityRule { inactive_for: Duration::hours(period_h), repeat, ..rule(repeat) };
            let applied = applied_h.map(|h| t0 + Duration::hours(h));
            let probe = t0 + Duration::hours(probe_h);
            let next = next_due(&rule, t0, applied);
            let due_by_probe = due(&rule, t0, applied, probe);
            match next {
                Some(at) if at <= probe => proptest::prop_assert_eq!(due_by_probe.first(), Some(&at)),
                _ => proptest::prop_assert!(due_by_probe.is_empty()),
            }
        }
    }
}
