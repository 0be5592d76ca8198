//! Caps of behaviour rules: at most N points or N occurrences within any rolling window.
//!
//! An activity at `t` is judged against the rule's awards within one window *either side* of
//! `t`, so an activity that arrives late (out of order) can never push any window over its
//! cap: every window holding `t` lies inside `[t - window, t + window]`.

use chrono::{DateTime, Utc};

use super::model::Cap;

/// What a rule worth `points` may award for an activity at `at`, given the rule's earlier awards
/// (time, points) for the lead. Zero means the cap is reached.
pub fn capped_award(
    cap: Option<&Cap>,
    points: f64,
    at: DateTime<Utc>,
    awards: &[(DateTime<Utc>, f64)],
) -> f64 {
    let Some(cap) = cap else { return points };
    let near = awards
        .iter()
        .filter(|(t, _)| cap.window.is_none_or(|w| (*t - at).abs() < w));
    let (count, used) = near.fold((0u32, 0.0f64), |(n, sum), (_, p)| (n + 1, sum + p.abs()));
    if cap.max_occurrences.is_some_and(|max| count >= max) {
        return 0.0;
    }
    match cap.max_points {
        Some(max) => points.signum() * points.abs().min((max - used).max(0.0)),
        None => points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use proptest::prelude::*;

    proptest! {
        /// Over any sequence of activities, in any order, no window ever holds more than the cap.
        #[test]
        fn caps_are_never_exceeded(
            times in prop::collection::vec(0i64..200, 1..60),
            points in 1.0f64..20.0,
            max_points in proptest::option::of(1.0f64..60.0),
            max_occurrences in proptest::option::of(1u32..6),
            window in proptest::option::of(1i64..50),
        ) {
            let t0 = Utc::now();
            let cap = Cap { max_points, max_occurrences, window: window.map(Duration::hours) };
            let mut awards: Vec<(DateTime<Utc>, f64)> = Vec::new();
            for h in times {
                let at = t0 + Duration::hours(h);
                let award = capped_award(Some(&cap), points, at, &awards);
                prop_assert!(award >= 0.0 && award <= points);
                if award > 0.0 {
                    awards.push((at, award));
                }
            }
            for (start, _) in &awards {
                let inside: Vec<f64> = awards.iter()
                    .filter(|(t, _)| *t >= *start && cap.window.is_none_or(|w| *t - *start < w))
                    .map(|(_, p)| *p)
                    .collect();
                if let Some(max) = max_occurrences {
                    prop_assert!(inside.len() as u32 <= max);
                }
                if let Some(max) = max_points {
                    prop_assert!(inside.iter().sum::<f64>() <= max + 1e-9);
                }
            }
        }
    }
}
