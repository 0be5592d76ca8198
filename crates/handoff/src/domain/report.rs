//! The SLA report: per owner, per team and in total, over the hand-offs created in a period —
//! how many, how fast first contact came (median and p90 by the nearest-rank method), how many
//! within the SLA, how many breached — and how many open hand-offs are overdue now.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::owner::TimeWindow;
use super::status::HandoffStatus;

/// What the report needs of one hand-off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandoffRecord {
    /// The current owner; `None` while in a queue.
    pub owner_id: Option<String>,
    /// The owner's team; `None` when in a queue or the owner has none.
    pub team_id: Option<String>,
    /// The current status.
    pub status: HandoffStatus,
    /// When the hand-off was created.
    pub created_at: DateTime<Utc>,
    /// When first contact was due.
    pub sla_deadline: DateTime<Utc>,
    /// When first contact was made, if it was.
    pub first_contact_at: Option<DateTime<Utc>>,
    /// The stored flag, set when the SLA broke.
    pub sla_breached: bool,
}

impl HandoffRecord {
    /// Creation to first contact (zero if contact was recorded as earlier).
    pub fn time_to_first_contact(&self) -> Option<TimeDelta> {
        self.first_contact_at
            .map(|c| (c - self.created_at).max(TimeDelta::zero()))
    }

    /// True when first contact came by the deadline.
    pub fn contacted_within_sla(&self) -> bool {
        self.first_contact_at
            .is_some_and(|c| c <= self.sla_deadline)
    }

    /// True when the hand-off is open, not contacted and past its deadline at `now`.
    pub fn is_open_overdue(&self, now: DateTime<Utc>) -> bool {
        self.status.is_open() && self.first_contact_at.is_none() && now > self.sla_deadline
    }

    /// True when the SLA broke: the stored flag, a late contact, or open and overdue at `now`
    /// (the SLA sweeper may not have run yet).
    pub fn is_breached(&self, now: DateTime<Utc>) -> bool {
        self.sla_breached
            || self.first_contact_at.is_some_and(|c| c > self.sla_deadline)
            || self.is_open_overdue(now)
    }
}

/// SLA figures of one owner, one team or everyone (`SlaStats`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlaStats {
    /// For per-owner rows.
    pub owner_id: Option<String>,
    /// For per-team rows, and the owner's team in per-owner rows.
    pub team_id: Option<String>,
    /// Hand-offs created in the period.
    pub handoff_count: u64,
    /// Of those, hand-offs with a first contact.
    pub contacted_count: u64,
    /// Median time to first contact (nearest rank); `None` without contacts.
    pub median_time_to_first_contact: Option<TimeDelta>,
    /// 90th percentile of the time to first contact (nearest rank); `None` without contacts.
    pub p90_time_to_first_contact: Option<TimeDelta>,
    /// Hand-offs contacted by their SLA deadline.
    pub within_sla_count: u64,
    /// `within_sla_count / handoff_count`; zero when there are none.
    pub within_sla_share: f64,
    /// Hand-offs whose SLA broke.
    pub breach_count: u64,
    /// Hand-offs open and past their deadline at the report time, whatever their creation time.
    pub open_overdue_count: u64,
}

/// The SLA report (`GetSlaReportResponse`): rows sorted by owner id and team id.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaReport {
    /// One row per owner.
    pub owners: Vec<SlaStats>,
    /// One row per team.
    pub teams: Vec<SlaStats>,
    /// Everyone, queued hand-offs included.
    pub total: SlaStats,
    /// The `now` the report was made at.
    pub report_time: DateTime<Utc>,
}

/// The value at 1-based rank ⌈p/100 · n⌉ of `sorted` (ascending), `percent` in 0..=100; the
/// smallest value for 0, `None` when empty.
pub fn nearest_rank(sorted: &[TimeDelta], percent: u32) -> Option<TimeDelta> {
    let n = sorted.len();
    let p = usize::try_from(percent.min(100)).unwrap_or(100);
    let rank = (p * n).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// An owner's team as of its latest hand-off (creation time, team).
type LatestTeam<'a> = Option<(DateTime<Utc>, Option<&'a str>)>;

/// Builds the report at `now` from `records`: those created in `period` make the counts,
/// timings and breaches; every record open and overdue at `now` counts as open overdue. Pass the
/// period's hand-offs and every open one.
pub fn sla_report(records: &[HandoffRecord], period: &TimeWindow, now: DateTime<Utc>) -> SlaReport {
    let mut owners: BTreeMap<&str, (Acc, LatestTeam<'_>)> = BTreeMap::new();
    let mut teams: BTreeMap<&str, Acc> = BTreeMap::new();
    let mut total = Acc::default();
    for record in records {
        let in_period = period.contains(record.created_at);
        let overdue = record.is_open_overdue(now);
        if !in_period && !overdue {
            continue;
        }
        let add = |acc: &mut Acc| acc.add(record, in_period, overdue, now);
        add(&mut total);
        if let Some(team) = record.team_id.as_deref() {
            add(teams.entry(team).or_default());
        }
        if let Some(owner) = record.owner_id.as_deref() {
            let (acc, team) = owners.entry(owner).or_default();
            add(acc);
            // The owner's team is that of its latest hand-off.
            if team.is_none_or(|(at, _)| record.created_at >= at) {
                *team = Some((record.created_at, record.team_id.as_deref()));
            }
        }
    }
    SlaReport {
        owners: owners
            .into_iter()
            .map(|(owner, (acc, team))| {
                let team = team.and_then(|(_, t)| t).map(str::to_owned);
                acc.stats(Some(owner.to_owned()), team)
            })
            .collect(),
        teams: teams
            .into_iter()
            .map(|(team, acc)| acc.stats(None, Some(team.to_owned())))
            .collect(),
        total: total.stats(None, None),
        report_time: now,
    }
}

#[derive(Debug, Default)]
struct Acc {
    handoffs: u64,
    contact_times: Vec<TimeDelta>,
    within_sla: u64,
    breaches: u64,
    open_overdue: u64,
}

impl Acc {
    fn add(&mut self, record: &HandoffRecord, in_period: bool, overdue: bool, now: DateTime<Utc>) {
        if in_period {
            self.handoffs += 1;
            self.contact_times.extend(record.time_to_first_contact());
            self.within_sla += u64::from(record.contacted_within_sla());
            self.breaches += u64::from(record.is_breached(now));
        }
        self.open_overdue += u64::from(overdue);
    }

    fn stats(mut self, owner_id: Option<String>, team_id: Option<String>) -> SlaStats {
        self.contact_times.sort();
        let share = if self.handoffs == 0 {
            0.0
        } else {
            self.within_sla as f64 / self.handoffs as f64
        };
        SlaStats {
            owner_id,
            team_id,
            handoff_count: self.handoffs,
            contacted_count: self.contact_times.len() as u64,
            median_time_to_first_contact: nearest_rank(&self.contact_times, 50),
            p90_time_to_first_contact: nearest_rank(&self.contact_times, 90),
            within_sla_count: self.within_sla,
            within_sla_share: share,
            breach_count: self.breaches,
            open_overdue_count: self.open_overdue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HandoffStatus::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn t(day: u32, hour: u32) -> DateTime<Utc> {
        let month = if day >= 15 { 2 } else { 3 };
        Utc.with_ymd_and_hms(2025, month, day, hour, 0, 0)
            .single()
            .expect("valid time")
    }

    fn h(hours: i64) -> TimeDelta {
        TimeDelta::hours(hours)
    }

    /// A hand-off with the 24-hour SLA, contacted `contact_after` hours after creation.
    fn record(
        owner: Option<(&str, &str)>,
        created: DateTime<Utc>,
        contact_after: Option<i64>,
        status: HandoffStatus,
        flag: bool,
    ) -> HandoffRecord {
        HandoffRecord {
            owner_id: owner.map(|(o, _)| o.to_owned()),
            team_id: owner.map(|(_, t)| t.to_owned()),
            status,
            created_at: created,
            sla_deadline: created + h(24),
            first_contact_at: contact_after.map(|a| created + h(a)),
            sla_breached: flag,
        }
    }

    #[test]
    fn nearest_rank_takes_the_value_at_rank_ceil_p_n() {
        let ten: Vec<TimeDelta> = (1..=10).map(h).collect();
        assert_eq!(nearest_rank(&ten, 50), Some(h(5)), "no interpolation");
        assert_eq!(nearest_rank(&ten, 90), Some(h(9)));
        assert_eq!(nearest_rank(&ten, 91), Some(h(10)));
        assert_eq!(nearest_rank(&ten, 100), Some(h(10)));
        assert_eq!(nearest_rank(&ten, 0), Some(h(1)));
        let eleven: Vec<TimeDelta> = (1..=11).map(h).collect();
        assert_eq!(nearest_rank(&eleven, 50), Some(h(6)));
        assert_eq!(nearest_rank(&eleven, 90), Some(h(10)));
        assert_eq!(nearest_rank(&[h(7)], 90), Some(h(7)));
        assert_eq!(nearest_rank(&[], 50), None);
    }

    /// Hand-computed: period 1–8 March, report at 8 March 12:00, 24-hour SLA.
    #[test]
    fn the_fixture_report() {
        let ana = Some(("ana", "red"));
        let ben = Some(("ben", "red"));
        let cy = Some(("cy", "blue"));
        let records = [
            record(ana, t(1, 9), Some(2), Accepted, false),
            record(ana, t(2, 9), Some(30), Contacted, true),
            record(ana, t(3, 9), Some(5), Won, false),
            // Due 8 March 9:00, not contacted, the sweeper has not run: breached and overdue.
            record(ana, t(7, 9), None, Pending, false),
            record(ben, t(4, 10), Some(1), Rejected, false),
            record(ben, t(5, 10), Some(10), Contacted, false),
            // Contact exactly at the deadline is within the SLA.
            record(cy, t(6, 8), Some(24), Opportunity, false),
            // Withdrawn before anyone called: neither breached nor overdue.
            record(cy, t(6, 9), None, Withdrawn, false),
            // Created before the period: only its being open and overdue counts.
            record(cy, t(20, 9), None, Escalated, true),
            // In the fallback queue, not yet due (8 March 20:00).
            record(None, t(7, 20), None, Pending, false),
        ];
        let period = TimeWindow {
            start_time: t(1, 0),
            end_time: t(8, 0),
        };
        let now = t(8, 12);
        let report = sla_report(&records, &period, now);
        assert_eq!(report.report_time, now);

        let stats = |owner: Option<&str>,
                     team: Option<&str>,
                     counts: [u64; 5],
                     median: Option<i64>,
                     p90: Option<i64>,
                     share: f64| SlaStats {
            owner_id: owner.map(str::to_owned),
            team_id: team.map(str::to_owned),
            handoff_count: counts[0],
            contacted_count: counts[1],
            median_time_to_first_contact: median.map(h),
            p90_time_to_first_contact: p90.map(h),
            within_sla_count: counts[2],
            within_sla_share: share,
            breach_count: counts[3],
            open_overdue_count: counts[4],
        };
        // [handoffs, contacted, within SLA, breaches, open overdue]
        assert_eq!(
            report.owners,
            [
                // Times 2, 5, 30 h: median rank 2, p90 rank 3.
                stats(
                    Some("ana"),
                    Some("red"),
                    [4, 3, 2, 2, 1],
                    Some(5),
                    Some(30),
                    0.5
                ),
                // Times 1, 10 h: median rank 1, p90 rank 2.
                stats(
                    Some("ben"),
                    Some("red"),
                    [2, 2, 2, 0, 0],
                    Some(1),
                    Some(10),
                    1.0
                ),
                stats(
                    Some("cy"),
                    Some("blue"),
                    [2, 1, 1, 0, 1],
                    Some(24),
                    Some(24),
                    0.5
                ),
            ]
        );
        assert_eq!(
            report.teams,
            [
                stats(None, Some("blue"), [2, 1, 1, 0, 1], Some(24), Some(24), 0.5),
                // Times 1, 2, 5, 10, 30 h: median rank 3, p90 rank 5.
                stats(
                    None,
                    Some("red"),
                    [6, 5, 4, 2, 1],
                    Some(5),
                    Some(30),
                    4.0 / 6.0
                ),
            ]
        );
        // Times 1, 2, 5, 10, 24, 30 h: median rank 3, p90 rank 6.
        assert_eq!(
            report.total,
            stats(None, None, [9, 6, 5, 2, 2], Some(5), Some(30), 5.0 / 9.0)
        );
    }

    #[test]
    fn an_empty_period_reports_zeros() {
        let period = TimeWindow {
            start_time: t(1, 0),
            end_time: t(8, 0),
        };
        let report = sla_report(&[], &period, t(8, 0));
        assert!(report.owners.is_empty() && report.teams.is_empty());
        assert_eq!(report.total, SlaStats::default());
    }

    proptest! {
        /// The median never exceeds the p90, both lie within the observed times, and the
        /// counts are consistent.
        #[test]
        fn figures_are_consistent(
            items in prop::collection::vec((0u32..7, proptest::option::of(0i64..72), any::<bool>()), 0..40),
        ) {
            let records: Vec<HandoffRecord> = items
                .iter()
                .map(|(day, contact, flag)| record(Some(("o", "t")), t(day + 1, 9), *contact, Contacted, *flag))
                .collect();
            let period = TimeWindow { start_time: t(1, 0), end_time: t(8, 0) };
            let total = sla_report(&records, &period, t(12, 0)).total;
            prop_assert_eq!(total.handoff_count, records.len() as u64);
            prop_assert!(total.within_sla_count <= total.contacted_count);
            prop_assert!(total.contacted_count <= total.handoff_count);
            prop_assert!((0.0..=1.0).contains(&total.within_sla_share));
            prop_assert_eq!(total.median_time_to_first_contact.is_some(), total.contacted_count > 0);
            if let (Some(median), Some(p90)) = (total.median_time_to_first_contact, total.p90_time_to_first_contact) {
                prop_assert!(median <= p90);
                prop_assert!(p90 <= h(71));
            }
        }
    }
}
