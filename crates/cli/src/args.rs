//! Argument parsers and argument groups several commands share.

use chrono::{DateTime, NaiveDate, Utc};
use clap::Args;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use leadflow_runtime::pbtime::to_timestamp;

use crate::json;

/// A parser for a protobuf enum's values by short name (`mql`, `sdr-review`); `--help` lists
/// them.
pub(crate) fn enum_arg(full_name: &'static str) -> impl TypedValueParser<Value = i32> {
    PossibleValuesParser::new(json::enum_labels(full_name))
        .map(move |label| json::enum_number(full_name, &label).unwrap_or_default())
}

/// A time: RFC 3339 (`2026-05-01T09:00:00Z`) or a date (`2026-05-01`, midnight UTC).
pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| format!("`{s}` is not an RFC 3339 time or a YYYY-MM-DD date"))
}

/// A `key=value` pair.
pub(crate) fn parse_kv(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

/// A time as a protobuf timestamp.
pub(crate) fn pb_time(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(to_timestamp)
}

/// A report's period.
#[derive(Debug, Clone, Args)]
pub(crate) struct Period {
    /// Start of the period (RFC 3339 or YYYY-MM-DD); `--days` before `--to` when absent.
    #[arg(long, value_parser = parse_time)]
    pub(crate) from: Option<DateTime<Utc>>,
    /// End of the period, exclusive; now when absent.
    #[arg(long, value_parser = parse_time)]
    pub(crate) to: Option<DateTime<Utc>>,
    /// Length of the period in days when --from is absent.
    #[arg(long, default_value_t = 30)]
    pub(crate) days: i64,
}

impl Period {
    /// Start and end as protobuf timestamps.
    pub(crate) fn bounds(&self) -> (prost_types::Timestamp, prost_types::Timestamp) {
        let to = self.to.unwrap_or_else(Utc::now);
        let from = self
            .from
            .unwrap_or_else(|| to - chrono::Duration::days(self.days.max(0)));
        (to_timestamp(from), to_timestamp(to))
    }
}

/// Paging of a list.
#[derive(Debug, Clone, Args)]
pub(crate) struct Page {
    /// Items per page (the server's default when absent).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub(crate) page_size: i32,
    /// The page to fetch, as printed after the previous one.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub(crate) page_token: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_pairs_parse() {
        assert!(parse_time("2026-05-01").is_ok());
        assert!(parse_time("2026-05-01T09:00:00+02:00").is_ok());
        assert!(parse_time("yesterday").is_err());
        assert_eq!(parse_kv("path=/a=b"), Ok(("path".into(), "/a=b".into())));
        assert!(parse_kv("=x").is_err());
    }
}
