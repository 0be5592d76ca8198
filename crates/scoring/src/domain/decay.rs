//! Half-life decay, computed lazily: a lead keeps its engagement as a value at a reference time,
//! so adding points and reading the score are O(1) whatever the history.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// The factor by which points earned at `from` have decayed at `to` (1 when `to <= from` or
/// without a half-life).
pub fn factor(from: DateTime<Utc>, to: DateTime<Utc>, half_life: Option<Duration>) -> f64 {
    let Some(half_life) = half_life else {
        return 1.0;
    };
    let elapsed = (to - from).num_milliseconds();
    if elapsed <= 0 {
        return 1.0;
    }
    let half = half_life.num_milliseconds().max(1) as f64;
    (-(elapsed as f64) / half).exp2()
}

/// Decaying points: their value as of a reference time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Decaying {
    value: f64,
    #[serde(with = "super::stamp::time")]
    as_of: DateTime<Utc>,
}

impl Decaying {
    /// Nothing yet, as of `at`.
    pub fn zero(at: DateTime<Utc>) -> Self {
        Self {
            value: 0.0,
            as_of: at,
        }
    }

    /// Adds `points` earned at `at` (earlier or later than the reference time).
    pub fn add(&mut self, points: f64, at: DateTime<Utc>, half_life: Option<Duration>) {
        if at > self.as_of {
            self.value *= factor(self.as_of, at, half_life);
            self.as_of = at;
            self.value += points;
        } else {
            self.value += points * factor(at, self.as_of, half_life);
        }
    }

    /// The value at `now` (never earlier than the reference time: points are not un-decayed).
    pub fn value_at(&self, now: DateTime<Utc>, half_life: Option<Duration>) -> f64 {
        self.value * factor(self.as_of, now, half_life)
    }

    /// The earliest time at which the value has decayed to `target` or past it, towards zero:
    /// the reference time when it already has, `None` when it never will (a target of zero or
    /// of the other sign, no half-life, or a time beyond what a timestamp holds).
    pub fn reaches(&self, target: f64, half_life: Option<Duration>) -> Option<DateTime<Utc>> {
        let ratio = self.value / target;
        if !ratio.is_finite() || ratio <= 0.0 {
            return None;
        }
        if ratio <= 1.0 {
            return Some(self.as_of);
        }
        let half_life_ms = half_life?.num_milliseconds().max(1) as f64;
        let elapsed_ms = (ratio.log2() * half_life_ms).ceil();
        if elapsed_ms >= i64::MAX as f64 {
            return None;
        }
        self.as_of
            .checked_add_signed(Duration::try_milliseconds(elapsed_ms as i64)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn halves_every_half_life() {
        let t0 = Utc::now();
        let h = Some(Duration::days(7));
        let mut d = Decaying::zero(t0);
        d.add(40.0, t0, h);
        assert!((d.value_at(t0 + Duration::days(7), h) - 20.0).abs() < 1e-9);
        assert!((d.value_at(t0 + Duration::days(14), h) - 10.0).abs() < 1e-9);
        assert_eq!(d.value_at(t0 + Duration::days(14), None), 40.0);
    }

    proptest! {
        /// Decay never increases a positive value, and the O(1) aggregate equals the sum of
        /// individually decayed points.
        #[test]
        fn monotone_and_equal_to_the_sum(points in prop::collection::vec((1.0f64..50.0, 0i64..1000), 1..30), later in 0i64..2000) {
            let t0 = Utc::now();
            let h = Some(Duration::hours(100));
            let mut d = Decaying::zero(t0);
            for (p, at) in &points {
                d.add(*p, t0 + Duration::hours(*at), h);
            }
            let now = t0 + Duration::hours(1000 + later);
            let sum: f64 = points.iter().map(|(p, at)| p * factor(t0 + Duration::hours(*at), now, h)).sum();
            prop_assert!((d.value_at(now, h) - sum).abs() < 1e-9 * sum.max(1.0));
            prop_assert!(d.value_at(now + Duration::hours(1), h) <= d.value_at(now, h));
        }
    }

    #[test]
    fn reaches_a_value_after_whole_half_lives() {
        let t0 = Utc::now();
        let h = Some(Duration::days(7));
        let mut d = Decaying::zero(t0);
        d.add(40.0, t0, h);
        assert_eq!(d.reaches(10.0, h), Some(t0 + Duration::days(14)));
        assert_eq!(d.reaches(40.0, h), Some(t0), "already there");
        assert_eq!(d.reaches(0.0, h), None, "decay never reaches zero");
        assert_eq!(d.reaches(-1.0, h), None, "nor crosses it");
        assert_eq!(
            d.reaches(10.0, None),
            None,
            "without a half-life nothing decays"
        );
    }

    proptest! {
        /// Just before the time `reaches` gives the value is short of the target, at it the
        /// target is reached.
        #[test]
        fn reaches_is_the_first_time(value in -100.0f64..100.0, fraction in 0.001f64..1.0, h_hours in 1i64..2000) {
            prop_assume!(value.abs() > 1e-6);
            let t0 = Utc::now();
            let h = Some(Duration::hours(h_hours));
            let mut d = Decaying::zero(t0);
            d.add(value, t0, h);
            let target = value * fraction;
            let at = d.reaches(target, h).expect("a target between zero and the value is reached");
            prop_assert!(d.value_at(at, h).abs() <= target.abs() * (1.0 + 1e-9));
            if at > t0 + Duration::seconds(1) {
                prop_assert!(d.value_at(at - Duration::seconds(1), h).abs() > target.abs());
            }
        }
    }
}
