//! Protobuf well-known time types ↔ chrono, for every service's conversions.

use chrono::{DateTime, TimeZone, Utc};

/// A protobuf timestamp as a UTC time; `None` when it is out of range or its nanos are invalid.
pub fn timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(ts.nanos)
        .ok()
        .filter(|n| *n < 1_000_000_000)?;
    Utc.timestamp_opt(ts.seconds, nanos).single()
}

/// A UTC time as a protobuf timestamp.
pub fn to_timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        // Sub-second nanos are below 2·10⁹, always within i32.
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// A protobuf duration as a chrono duration; `None` when out of range or seconds and nanos
/// disagree in sign.
pub fn duration(d: &prost_types::Duration) -> Option<chrono::Duration> {
    let sign_ok = (d.seconds >= 0 && d.nanos >= 0) || (d.seconds <= 0 && d.nanos <= 0);
    if !sign_ok || d.nanos.unsigned_abs() >= 1_000_000_000 {
        return None;
    }
    chrono::Duration::try_seconds(d.seconds)?
        .checked_add(&chrono::Duration::nanoseconds(i64::from(d.nanos)))
}

/// A chrono duration as a protobuf duration (seconds and nanos share the sign).
pub fn to_duration(d: chrono::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.num_seconds(),
        nanos: d.subsec_nanos(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_invalid_values() {
        let t = Utc
            .timestamp_opt(1_700_000_000, 123_456_789)
            .single()
            .expect("time");
        assert_eq!(timestamp(&to_timestamp(t)), Some(t));
        let bad = prost_types::Timestamp {
            seconds: 0,
            nanos: 1_000_000_000,
        };
        assert_eq!(
            timestamp(&bad),
            None,
            "a leap-second nanos value is refused"
        );
        let d = chrono::Duration::milliseconds(-1500);
        assert_eq!(duration(&to_duration(d)), Some(d));
        let mixed = prost_types::Duration {
            seconds: 1,
            nanos: -1,
        };
        assert_eq!(
            duration(&mixed),
            None,
            "seconds and nanos must share a sign"
        );
    }
}
