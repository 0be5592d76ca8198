//! How a lead's scoring state is stored: one version byte, then the [`LeadScore`] in postcard
//! (serde's fields in declaration order, lengths and integers as varints, no field names, times
//! as integers): under half the bytes of the JSON it replaced, and far cheaper to parse. States
//! stored as JSON before it (they start with `{`) still read, and are written back in the
//! binary form the next time their lead changes.

use serde::de::DeserializeOwned;

use crate::domain::LeadScore;
use crate::error::Error;

/// The first byte of a state in the binary encoding.
const BINARY_V1: u8 = 1;

/// The first byte of a state stored as a JSON object.
const JSON_OBJECT: u8 = b'{';

/// `score` as stored.
pub fn encode(score: &LeadScore) -> Result<Vec<u8>, Error> {
    postcard::to_extend(score, vec![BINARY_V1])
        .map_err(|err| Error::Corrupt(format!("lead state does not encode: {err}")))
}

/// A stored state, whole ([`LeadScore`]) or the part a score needs
/// ([`ScoreInputs`](crate::domain::ScoreInputs), the first fields of the binary encoding).
pub fn decode<T: DeserializeOwned>(stored: &[u8]) -> Result<T, Error> {
    let decoded = match stored.split_first() {
        Some((&BINARY_V1, encoded)) => postcard::take_from_bytes(encoded)
            .map(|(value, _rest)| value)
            .map_err(|err| err.to_string()),
        Some((&JSON_OBJECT, _)) => serde_json::from_slice(stored).map_err(|err| err.to_string()),
        Some((other, _)) => Err(format!("unknown format {other}")),
        None => Err("empty".to_owned()),
    };
    decoded.map_err(|err| Error::Corrupt(format!("stored lead state does not decode: {err}")))
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::ScoreInputs;
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
                &crate::domain::ActivityFact {
                    id: uuid::Uuid::now_v7().to_string(),
                    activity_type: kinds[n as usize % kinds.len()].into(),
                    occurred_at: at,
                    properties: [("asset_id".to_owned(), format!("asset-{n}"))].into(),
                },
            );
        }
        lead
    }

    #[test]
    fn a_state_reads_back_whole_and_as_score_inputs() {
        let lead = lead();
        let stored = encode(&lead).expect("encodes");
        assert_eq!(stored[0], BINARY_V1);
        assert_eq!(decode::<LeadScore>(&stored).expect("decodes"), lead);
        let at = Utc::now();
        let model = default_model();
        let inputs: ScoreInputs = decode(&stored).expect("inputs decode");
        assert_eq!(inputs.score(&model, at), lead.score(&model, at));
        let json = serde_json::to_string(&lead).expect("json");
        assert!(
            stored.len() * 2 < json.len(),
            "{} bytes against {} of JSON",
            stored.len(),
            json.len()
        );
    }

    #[test]
    fn a_state_stored_as_json_still_reads() {
        let lead = lead();
        let json = serde_json::to_vec(&lead).expect("json");
        assert_eq!(decode::<LeadScore>(&json).expect("decodes"), lead);
    }

    #[test]
    fn an_unknown_empty_or_cut_state_is_corrupt() {
        let stored = encode(&lead()).expect("encodes");
        for bad in [
            &[][..],
            &[7, 1, 2][..],
            &stored[..stored.len() / 2],
            &b"{\"fit_rules\":"[..],
        ] {
            assert!(
                matches!(decode::<LeadScore>(bad), Err(Error::Corrupt(_))),
                "{bad:?}"
            );
        }
    }
}
