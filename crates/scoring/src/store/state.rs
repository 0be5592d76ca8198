//! How a lead's scoring state is stored: one version byte, then the [`LeadScore`] in postcard
//! (serde's fields in declaration order, lengths and integers as varints, no field names, times
//! as integers, activity ids that are UUIDs as their 16 bytes). Older forms still read, and are
//! written back in the current one the next time their lead changes:
//! - version 1, which also held the profile's attributes (unread) and ids as text: ~30% larger;
//! - JSON objects (they start with `{`), from before the binary form.
//!
//! Every version starts with the same three fields, the [`ScoreInputs`] a score lookup reads.

use serde::de::DeserializeOwned;

use crate::domain::{LeadScore, LeadScoreV1, ScoreInputs};
use crate::error::Error;

/// The first byte of a state in the first binary layout (see [`LeadScoreV1`]).
const BINARY_V1: u8 = 1;

/// The first byte of a state in the current binary layout.
const BINARY_V2: u8 = 2;

/// The first byte of a state stored as a JSON object.
const JSON_OBJECT: u8 = b'{';

/// `score` as stored.
pub fn encode(score: &LeadScore) -> Result<Vec<u8>, Error> {
    postcard::to_extend(score, vec![BINARY_V2])
        .map_err(|err| Error::Corrupt(format!("lead state does not encode: {err}")))
}

/// A stored state, whole.
pub fn decode(stored: &[u8]) -> Result<LeadScore, Error> {
    match stored.first() {
        Some(&BINARY_V1) => binary::<LeadScoreV1>(stored).map(LeadScore::from),
        _ => decode_as(stored),
    }
}

/// The part of a stored state a score needs: the first fields of every version.
pub fn decode_inputs(stored: &[u8]) -> Result<ScoreInputs, Error> {
    decode_as(stored)
}

/// `stored` read as `T`: binary versions as postcard (`T` may be a prefix of the fields), JSON
/// as JSON.
fn decode_as<T: DeserializeOwned>(stored: &[u8]) -> Result<T, Error> {
    match stored.first() {
        Some(&(BINARY_V1 | BINARY_V2)) => binary(stored),
        Some(&JSON_OBJECT) => serde_json::from_slice(stored).map_err(corrupt),
        Some(other) => Err(corrupt(format!("unknown format {other}"))),
        None => Err(corrupt("empty")),
    }
}

/// The postcard after the version byte of `stored`, read as `T`.
fn binary<T: DeserializeOwned>(stored: &[u8]) -> Result<T, Error> {
    postcard::take_from_bytes(&stored[1..])
        .map(|(value, _rest)| value)
        .map_err(corrupt)
}

fn corrupt(err: impl std::fmt::Display) -> Error {
    Error::Corrupt(format!("stored lead state does not decode: {err}"))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::ActivityFact;
    use crate::domain::default_model::default_model;

    /// A lead with ten activities of several kinds, a day apart, ids as ingestion makes them.
    fn lead() -> LeadScore {
        let first = Utc
            .timestamp_opt(1_764_000_000, 81_180_916)
            .single()
            .expect("a time");
        let model = default_model();
        let mut lead = LeadScore::new(first);
        let kinds = [
            "page_view",
            "email_open",
            "pricing_view",
            "content_download",
        ];
        for n in 0..10 {
            let at = first + chrono::Duration::days(n);
            lead.sweep(&model, at);
            lead.apply_activity(
                &model,
                &ActivityFact {
                    id: uuid::Uuid::now_v7().to_string(),
                    activity_type: kinds[n as usize % kinds.len()].into(),
                    occurred_at: at,
                    properties: [("asset_id".to_owned(), format!("asset-{n}"))].into(),
                },
            );
        }
        lead
    }

    /// `stored` reads back as `expected`, whole and as the inputs of its score.
    fn assert_reads_as(stored: &[u8], expected: &LeadScore) {
        assert_eq!(&decode(stored).expect("decodes"), expected);
        let (at, model) = (Utc::now(), default_model());
        assert_eq!(
            decode_inputs(stored)
                .expect("inputs decode")
                .score(&model, at),
            expected.score(&model, at)
        );
    }

    #[test]
    fn a_state_reads_back_whole_and_as_score_inputs() {
        let lead = lead();
        let stored = encode(&lead).expect("encodes");
        assert_eq!(stored[0], BINARY_V2);
        assert_reads_as(&stored, &lead);
        let json = serde_json::to_string(&lead).expect("json");
        assert!(
            stored.len() * 2 < json.len(),
            "{} bytes against {} of JSON",
            stored.len(),
            json.len()
        );
    }

    /// A state version 1 wrote (profile attributes included, ids as text): two activities with
    /// UUID ids, one with an id from a CRM import, and an inactivity line. The service tests
    /// store it too.
    const STORED_V1: &[u8] = include_bytes!("../../tests/fixtures/lead_state_v1.bin");

    /// The lead [`STORED_V1`] holds, scored afresh.
    fn stored_v1_lead() -> LeadScore {
        let t0 = Utc
            .timestamp_opt(1_764_000_000, 0)
            .single()
            .expect("a time");
        let fact = |id: &str, kind: &str, days: i64, property: (&str, &str)| ActivityFact {
            id: id.into(),
            activity_type: kind.into(),
            occurred_at: t0 + chrono::Duration::days(days),
            properties: [(property.0.to_owned(), property.1.to_owned())].into(),
        };
        let facts = [
            fact(
                "0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c3d5e",
                "content_download",
                1,
                ("asset_id", "guide-3"),
            ),
            fact(
                "0190f3a2-7c1e-7b3a-9d4e-2f6a8b1c3d5f",
                "pricing_view",
                2,
                ("path", "/pricing"),
            ),
            fact("crm-import-17", "demo_request", 20, ("form", "demo")),
        ];
        let profile = [("company_size", "250"), ("seniority", "SENIORITY_VP")]
            .map(|(key, value)| (key.to_owned(), value.to_owned()))
            .into();
        LeadScore::replay(
            &default_model(),
            &profile,
            &facts,
            t0,
            t0 + chrono::Duration::days(40),
        )
    }

    #[test]
    fn a_state_stored_in_version_1_still_reads_and_is_rewritten_smaller() {
        let stored = STORED_V1;
        assert_eq!(stored[0], BINARY_V1);
        let expected = stored_v1_lead();
        assert_reads_as(stored, &expected);
        let read = decode(stored).expect("version 1 decodes");
        assert!(
            read.ledger()
                .iter()
                .any(|line| line.activity_id.as_deref() == Some("crm-import-17"))
        );
        let rewritten = encode(&read).expect("encodes");
        assert!(
            rewritten.len() * 10 < stored.len() * 9,
            "{} bytes against {} in version 1",
            rewritten.len(),
            stored.len()
        );
        assert_reads_as(&rewritten, &expected);
    }

    #[test]
    fn a_state_stored_as_json_still_reads() {
        let lead = lead();
        let mut json = serde_json::to_value(&lead).expect("json");
        json["profile"] = serde_json::json!({ "company_size": "250" });
        let stored = serde_json::to_vec(&json).expect("json");
        assert_reads_as(&stored, &lead);
    }

    #[test]
    fn an_unknown_empty_or_cut_state_is_corrupt() {
        let stored = encode(&lead()).expect("encodes");
        let v1 = STORED_V1;
        for bad in [
            &[][..],
            &[7, 1, 2][..],
            &stored[..stored.len() / 2],
            &v1[..v1.len() / 2],
            &b"{\"fit_rules\":"[..],
        ] {
            assert!(matches!(decode(bad), Err(Error::Corrupt(_))), "{bad:?}");
        }
        for bad in [&[][..], &[7, 1, 2][..], &stored[..2]] {
            assert!(
                matches!(decode_inputs(bad), Err(Error::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}
