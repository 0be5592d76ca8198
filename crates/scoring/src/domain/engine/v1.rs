//! A lead's state as version 1 of the binary state format laid it out: the profile's
//! attributes after the hand-raises (nothing read them; version 2 dropped them) and activity
//! ids as text. Kept so states stored in it still read; nothing writes it any more.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{LeadScore, LedgerLine, LineKind};
use crate::domain::decay::Decaying;
use crate::domain::stamp;

/// [`LeadScore`] as version 1 stored it; read it with postcard, then convert.
#[derive(Debug, Deserialize)]
pub struct LeadScoreV1 {
    fit_rules: Vec<(String, f64)>,
    engagement: Decaying,
    #[serde(with = "stamp::labelled")]
    hand_raises: Vec<(String, String, DateTime<Utc>)>,
    _profile: BTreeMap<String, String>,
    ledger: Vec<LedgerLineV1>,
    #[serde(with = "stamp::timed_by_key")]
    awards: HashMap<String, Vec<(DateTime<Utc>, f64)>>,
    assets: HashSet<(String, String)>,
    seen_activities: HashSet<String>,
    #[serde(with = "stamp::time")]
    first_seen: DateTime<Utc>,
    #[serde(with = "stamp::by_key")]
    last_seen: HashMap<String, DateTime<Utc>>,
    #[serde(with = "stamp::optional")]
    last_any: Option<DateTime<Utc>>,
    #[serde(with = "stamp::by_key")]
    inactivity_applied: HashMap<String, DateTime<Utc>>,
}

/// [`LedgerLine`] as version 1 stored it (the activity id as text).
#[derive(Debug, Deserialize)]
struct LedgerLineV1 {
    seq: u64,
    kind: LineKind,
    rule_id: String,
    activity_id: Option<String>,
    activity_type: Option<String>,
    #[serde(with = "stamp::time")]
    effective_at: DateTime<Utc>,
    points: f64,
    model_version: i32,
}

impl From<LedgerLineV1> for LedgerLine {
    fn from(line: LedgerLineV1) -> Self {
        Self {
            seq: line.seq,
            kind: line.kind,
            rule_id: line.rule_id,
            activity_id: line.activity_id,
            activity_type: line.activity_type,
            effective_at: line.effective_at,
            points: line.points,
            model_version: line.model_version,
        }
    }
}

impl From<LeadScoreV1> for LeadScore {
    fn from(stored: LeadScoreV1) -> Self {
        Self {
            fit_rules: stored.fit_rules,
            engagement: stored.engagement,
            hand_raises: stored.hand_raises,
            ledger: stored.ledger.into_iter().map(LedgerLine::from).collect(),
            awards: stored.awards,
            assets: stored.assets,
            seen_activities: stored.seen_activities,
            first_seen: stored.first_seen,
            last_seen: stored.last_seen,
            last_any: stored.last_any,
            inactivity_applied: stored.inactivity_applied,
        }
    }
}
