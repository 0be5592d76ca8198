//! How the times of a lead's state serialise: as RFC 3339 text in human-readable formats (the
//! JSON lead states were once stored as, and still read from), as whole seconds and
//! nanoseconds (two varints, 6–10 bytes instead of ~30) in binary ones. Each function set
//! serves one shape of field, for `#[serde(with = "…")]`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One time, serialised by the format's kind.
#[derive(Clone, Copy)]
struct Stamp(DateTime<Utc>);

impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            (self.0.timestamp(), self.0.timestamp_subsec_nanos()).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return DateTime::<Utc>::deserialize(deserializer).map(Stamp);
        }
        let (seconds, nanos) = <(i64, u32)>::deserialize(deserializer)?;
        DateTime::from_timestamp(seconds, nanos)
            .map(Stamp)
            .ok_or_else(|| D::Error::custom(format!("time out of range: {seconds}.{nanos}")))
    }
}

/// A `DateTime<Utc>` field.
pub mod time {
    use super::{DateTime, Deserialize, Deserializer, Serialize, Serializer, Stamp, Utc};

    /// Serialises `at`.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        Stamp(*at).serialize(serializer)
    }

    /// Deserialises a time.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        Stamp::deserialize(deserializer).map(|stamp| stamp.0)
    }
}

/// An `Option<DateTime<Utc>>` field.
pub mod optional {
    use super::{DateTime, Deserialize, Deserializer, Serialize, Serializer, Stamp, Utc};

    /// Serialises `at`.
    pub fn serialize<S: Serializer>(
        at: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        at.map(Stamp).serialize(serializer)
    }

    /// Deserialises a time or none.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        Ok(Option::<Stamp>::deserialize(deserializer)?.map(|stamp| stamp.0))
    }
}

/// A `HashMap<String, DateTime<Utc>>` field.
pub mod by_key {
    use super::{DateTime, Deserialize, Deserializer, HashMap, Serializer, Stamp, Utc};

    /// Serialises `times`.
    pub fn serialize<S: Serializer>(
        times: &HashMap<String, DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(times.iter().map(|(key, at)| (key, Stamp(*at))))
    }

    /// Deserialises a map of times.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<HashMap<String, DateTime<Utc>>, D::Error> {
        let stamps = HashMap::<String, Stamp>::deserialize(deserializer)?;
        Ok(stamps
            .into_iter()
            .map(|(key, stamp)| (key, stamp.0))
            .collect())
    }
}

/// A `HashMap<String, Vec<(DateTime<Utc>, f64)>>` field (timed amounts by key).
pub mod timed_by_key {
    use super::{DateTime, Deserialize, Deserializer, HashMap, Serialize, Serializer, Stamp, Utc};

    type Timed = HashMap<String, Vec<(DateTime<Utc>, f64)>>;

    /// One key's amounts, serialised in place (no copy per key).
    struct Amounts<'a>(&'a [(DateTime<Utc>, f64)]);

    impl Serialize for Amounts<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            serializer.collect_seq(self.0.iter().map(|(at, amount)| (Stamp(*at), *amount)))
        }
    }

    /// Serialises `timed`.
    pub fn serialize<S: Serializer>(timed: &Timed, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(timed.iter().map(|(key, amounts)| (key, Amounts(amounts))))
    }

    /// Deserialises timed amounts by key.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timed, D::Error> {
        let stamped = HashMap::<String, Vec<(Stamp, f64)>>::deserialize(deserializer)?;
        Ok(stamped
            .into_iter()
            .map(|(key, amounts)| {
                let amounts = amounts
                    .into_iter()
                    .map(|(at, amount)| (at.0, amount))
                    .collect();
                (key, amounts)
            })
            .collect())
    }
}

/// A `Vec<(String, String, DateTime<Utc>)>` field (hand-raises: id, type, time).
pub mod labelled {
    use super::{DateTime, Deserialize, Deserializer, Serializer, Stamp, Utc};

    type Labelled = Vec<(String, String, DateTime<Utc>)>;

    /// Serialises `items`.
    pub fn serialize<S: Serializer>(items: &Labelled, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(items.iter().map(|(a, b, at)| (a, b, Stamp(*at))))
    }

    /// Deserialises labelled times.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Labelled, D::Error> {
        let stamped = Vec::<(String, String, Stamp)>::deserialize(deserializer)?;
        Ok(stamped.into_iter().map(|(a, b, at)| (a, b, at.0)).collect())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Times {
        #[serde(with = "time")]
        at: DateTime<Utc>,
        #[serde(with = "optional")]
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn binary_times_are_integers_and_json_times_stay_text() {
        let at = Utc
            .timestamp_opt(1_764_000_000, 123_456_789)
            .single()
            .expect("a time");
        let times = Times {
            at,
            maybe: Some(at),
        };
        let json = serde_json::to_string(&times).expect("json");
        assert_eq!(
            json,
            r#"{"at":"2025-11-24T16:00:00.123456789Z","maybe":"2025-11-24T16:00:00.123456789Z"}"#
        );
        assert_eq!(serde_json::from_str::<Times>(&json).expect("reads"), times);
        let binary = postcard::to_allocvec(&times).expect("encodes");
        assert!(binary.len() <= 2 * 10 + 1, "{} bytes", binary.len());
        assert_eq!(
            postcard::from_bytes::<Times>(&binary).expect("decodes"),
            times
        );
    }

    #[test]
    fn a_binary_time_out_of_range_is_an_error() {
        let bad = postcard::to_allocvec(&(i64::MAX, 0_u32)).expect("encodes");
        assert!(postcard::from_bytes::<Stamp>(&bad).is_err());
    }
}
