//! When the sweeper next needs a lead, as its row stores it, and when a save rewrites that.
//!
//! The stored due time may be earlier than the lead's real one, never later: an early time only
//! makes the sweeper visit the lead early, and that visit stores the real time. So an applied
//! event writes the indexed column only when it moves the time earlier, and spares rewriting
//! the index entry on the events that move it later.

use chrono::{DateTime, Utc};

use crate::domain::{LeadScore, Model};

/// When the sweeper next needs `score`, as stored: never before the next sweep after `now`
/// (one that is due at once is visited by the next sweep, and a sweep at `now` that just
/// visited the lead does not visit it again).
pub(super) fn sweep_due_us(score: &LeadScore, model: &Model, now: DateTime<Utc>) -> Option<i64> {
    let due = score.next_sweep_due(model, now)?;
    Some(Ord::max(due.timestamp_micros(), now.timestamp_micros() + 1))
}

/// How a save treats the stored due time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DueWrite {
    /// Stores the new time: the sweeper has just visited the lead, so the stored time may be
    /// early and is now known.
    Always,
    /// Stores the new time only when the stored one is later ([`must_store`]).
    WhenEarlier,
}

impl DueWrite {
    /// Whether a save with this policy writes `due` over `stored`.
    pub(super) fn writes(self, stored: Option<i64>, due: Option<i64>) -> bool {
        match self {
            DueWrite::Always => stored != due,
            DueWrite::WhenEarlier => must_store(stored, due),
        }
    }
}

/// Whether a row storing `stored` must be given `due` so that no sweep the lead needs is
/// missed: `due` is earlier, or the row stores no time at all. A stored time with `due` none
/// (no sweep will change the lead) stays; it costs one early visit.
fn must_store(stored: Option<i64>, due: Option<i64>) -> bool {
    match (stored, due) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(stored), Some(due)) => due < stored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn an_earlier_or_first_time_is_stored_a_later_one_is_not() {
        assert!(must_store(None, Some(5)));
        assert!(must_store(Some(9), Some(5)));
        assert!(!must_store(Some(5), Some(9)));
        assert!(!must_store(Some(5), Some(5)));
        assert!(!must_store(Some(5), None));
        assert!(!must_store(None, None));
        assert!(DueWrite::Always.writes(Some(5), Some(9)));
        assert!(DueWrite::Always.writes(Some(5), None));
        assert!(!DueWrite::Always.writes(Some(5), Some(5)));
    }

    proptest! {
        /// Whatever a row stored and whatever its new due time, the time it stores after a save
        /// that writes only earlier times is never later than the new one, and is absent only
        /// when no sweep is needed.
        #[test]
        fn the_stored_time_is_never_later_than_the_due_one(
            stored in prop::option::of(any::<i64>()),
            due in prop::option::of(any::<i64>()),
        ) {
            let kept = if DueWrite::WhenEarlier.writes(stored, due) { due } else { stored };
            if let Some(due) = due {
                prop_assert!(kept.is_some_and(|kept| kept <= due));
            }
        }
    }
}
