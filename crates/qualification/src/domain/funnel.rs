//! The funnel: the numbers that end the "junk leads" argument, computed from the recorded
//! transitions alone, so every figure can be reproduced.
//!
//! Counts are of leads. A conversion's cohort is the leads that entered its first stage in the
//! period (first entry counts); converted are those that later entered its second stage, at any
//! time up to the report; times run from the one entry to the other. Percentiles use the
//! nearest-rank method, so a fixture has exactly one right answer.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};

use super::lifecycle::Stage;
use super::machine::{Reason, Transition};

/// The conversions every funnel reports, in order: MQL→SAL, SAL→SQL, MQL→SQL, SQL→won.
pub const CONVERSIONS: [(Stage, Stage); 4] = [
    (Stage::Mql, Stage::Sal),
    (Stage::Sal, Stage::Sql),
    (Stage::Mql, Stage::Sql),
    (Stage::Sql, Stage::Customer),
];

/// The half-open period `[start, end)` a funnel covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// First instant in the period.
    pub start: DateTime<Utc>,
    /// First instant after it.
    pub end: DateTime<Utc>,
}

impl Period {
    /// Whether `at` falls in the period.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// One conversion's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    /// From this stage…
    pub from: Stage,
    /// …to this one.
    pub to: Stage,
    /// Leads that entered `from` in the period.
    pub cohort: u64,
    /// Of them, leads that later entered `to`.
    pub converted: u64,
    /// `converted / cohort`, zero for an empty cohort.
    pub rate: f64,
    /// Median time between the two entries (nearest rank), over the converted.
    pub median: Option<Duration>,
    /// 90th percentile of that time (nearest rank).
    pub p90: Option<Duration>,
}

/// The funnel of a group of leads.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Figures {
    /// Leads entering each stage in the period.
    pub entered: BTreeMap<Stage, u64>,
    /// The four conversions, in [`CONVERSIONS`] order.
    pub conversions: Vec<Conversion>,
    /// Transitions to nurture in the period, by reason.
    pub recycled: BTreeMap<Reason, u64>,
    /// Transitions to disqualified in the period, by reason.
    pub disqualified: BTreeMap<Reason, u64>,
}

/// The funnel of `leads` (each lead's transitions, oldest first) over `period`.
pub fn figures<'a>(leads: impl IntoIterator<Item = &'a [Transition]>, period: Period) -> Figures {
    let leads: Vec<&[Transition]> = leads.into_iter().collect();
    let mut figures = Figures::default();
    for history in &leads {
        let entered: BTreeSet<Stage> = history
            .iter()
            .filter(|t| period.contains(t.at))
            .map(|t| t.to)
            .collect();
        for stage in entered {
            *figures.entered.entry(stage).or_default() += 1;
        }
        for t in history.iter().filter(|t| period.contains(t.at)) {
            match t.to {
                Stage::Nurture => *figures.recycled.entry(t.reason.clone()).or_default() += 1,
                Stage::Disqualified => {
                    *figures.disqualified.entry(t.reason.clone()).or_default() += 1
                }
                _ => {}
            }
        }
    }
    figures.conversions = CONVERSIONS
        .iter()
        .map(|&(from, to)| conversion(&leads, from, to, period))
        .collect();
    figures
}

/// The funnel of each group of leads, keyed by whatever the caller groups by (a source channel,
/// a definition version).
pub fn grouped<'a, K: Ord + Clone>(
    leads: impl IntoIterator<Item = (K, &'a [Transition])>,
    period: Period,
) -> BTreeMap<K, Figures> {
    let mut groups: BTreeMap<K, Vec<&[Transition]>> = BTreeMap::new();
    for (key, history) in leads {
        groups.entry(key).or_default().push(history);
    }
    groups
        .into_iter()
        .map(|(key, histories)| (key, figures(histories, period)))
        .collect()
}

fn conversion(leads: &[&[Transition]], from: Stage, to: Stage, period: Period) -> Conversion {
    let mut cohort = 0u64;
    let mut times: Vec<Duration> = Vec::new();
    for history in leads {
        let Some(entry) = history
            .iter()
            .find(|t| t.to == from && period.contains(t.at))
        else {
            continue;
        };
        cohort += 1;
        if let Some(reached) = history.iter().find(|t| t.to == to && t.at >= entry.at) {
            times.push(reached.at - entry.at);
        }
    }
    times.sort();
    let converted = times.len() as u64;
    Conversion {
        from,
        to,
        cohort,
        converted,
        rate: if cohort == 0 {
            0.0
        } else {
            converted as f64 / cohort as f64
        },
        median: nearest_rank(&times, 0.5),
        p90: nearest_rank(&times, 0.9),
    }
}

/// The `p`-th percentile of sorted `values` by the nearest-rank method: the value at 1-based
/// rank ⌈p·n⌉.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::machine::{Actor, RejectReason};

    fn at(day: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).expect("time") + Duration::days(day)
    }

    fn lead(path: &[(Stage, i64, Reason)]) -> Vec<Transition> {
        let mut from = Stage::Lead;
        path.iter()
            .map(|(to, day, reason)| {
                let t = Transition {
                    from,
                    to: *to,
                    reason: reason.clone(),
                    actor: Actor::Rule,
                    definition_version: 1,
                    score: 0.0,
                    grade: None,
                    at: at(*day),
                };
                from = *to;
                t
            })
            .collect()
    }

    #[test]
    fn nearest_rank_percentiles() {
        let ten: Vec<i32> = (1..=10).collect();
        assert_eq!(
            (nearest_rank(&ten, 0.5), nearest_rank(&ten, 0.9)),
            (Some(5), Some(9))
        );
        assert_eq!(
            (nearest_rank(&[1, 2, 3], 0.5), nearest_rank(&[1, 2, 3], 0.9)),
            (Some(2), Some(3))
        );
        assert_eq!(nearest_rank::<i32>(&[], 0.5), None);
    }

    /// Five leads over a 30-day period, figures computed by hand.
    #[test]
    fn a_fixture_computed_by_hand() {
        use Reason::*;
        let a = lead(&[
            (Stage::Mql, 1, ScoreOverThreshold),
            (Stage::Sal, 3, Accepted),
            (Stage::Sql, 10, BantSatisfied),
            (Stage::Customer, 40, Won),
        ]);
        let b = lead(&[
            (Stage::Mql, 2, HandRaise),
            (Stage::Sal, 4, Accepted),
            (Stage::Nurture, 6, Rejected(RejectReason::Premature)),
        ]);
        let c = lead(&[
            (Stage::Mql, 5, ScoreOverThreshold),
            (
                Stage::Disqualified,
                6,
                Rejected(RejectReason::NotIdealCustomer),
            ),
        ]);
        let d = lead(&[
            (Stage::Mql, 7, ScoreOverThreshold),
            (Stage::Nurture, 37, NotAcceptedInTime),
        ]);
        let e = lead(&[
            (Stage::Mql, -5, ScoreOverThreshold),
            (Stage::Sal, 2, Accepted),
        ]);
        let period = Period {
            start: at(0),
            end: at(30),
        };
        let total = figures([a.as_slice(), &b, &c, &d, &e], period);

        assert_eq!(
            total.entered.get(&Stage::Mql),
            Some(&4),
            "E became an MQL before the period"
        );
        assert_eq!(total.entered.get(&Stage::Sal), Some(&3));
        assert_eq!(total.entered.get(&Stage::Sql), Some(&1));
        assert_eq!(
            total.entered.get(&Stage::Customer),
            None,
            "A was won after the period"
        );

        let [mql_sal, sal_sql, mql_sql, sql_won] = &total.conversions[..] else {
            panic!("four conversions")
        };
        assert_eq!(
            (mql_sal.cohort, mql_sal.converted, mql_sal.rate),
            (4, 2, 0.5)
        );
        assert_eq!(
            (mql_sal.median, mql_sal.p90),
            (Some(Duration::days(2)), Some(Duration::days(2)))
        );
        assert_eq!((sal_sql.cohort, sal_sql.converted), (3, 1));
        assert!((sal_sql.rate - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(sal_sql.median, Some(Duration::days(7)));
        assert_eq!(
            (
                mql_sql.cohort,
                mql_sql.converted,
                mql_sql.rate,
                mql_sql.median
            ),
            (4, 1, 0.25, Some(Duration::days(9)))
        );
        assert_eq!(
            (sql_won.cohort, sql_won.converted, sql_won.median),
            (1, 1, Some(Duration::days(30))),
            "won after the period still converts"
        );

        assert_eq!(
            total.recycled,
            BTreeMap::from([(Rejected(RejectReason::Premature), 1)]),
            "D was recycled after the period"
        );
        assert_eq!(
            total.disqualified,
            BTreeMap::from([(Rejected(RejectReason::NotIdealCustomer), 1)])
        );

        let by_channel = grouped(
            [
                ("email", a.as_slice()),
                ("email", &b),
                ("paid", &c),
                ("paid", &d),
                ("email", &e),
            ],
            period,
        );
        let email = &by_channel["email"];
        assert_eq!(
            (email.conversions[0].cohort, email.conversions[0].rate),
            (2, 1.0)
        );
        assert_eq!(email.entered.get(&Stage::Sal), Some(&3));
        let paid = &by_channel["paid"];
        assert_eq!(
            (
                paid.conversions[0].cohort,
                paid.conversions[0].converted,
                paid.conversions[0].rate
            ),
            (2, 0, 0.0)
        );
        assert_eq!(paid.conversions[0].median, None);
        assert_eq!(paid.disqualified.values().sum::<u64>(), 1);
    }
}
