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
}
