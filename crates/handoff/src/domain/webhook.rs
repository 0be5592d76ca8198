//! Webhook signing and retries. A receiver verifies each delivery with the endpoint's secret:
//! the `leadflow-signature` header is `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! (the scheme Stripe popularised), and a receiver rejects a timestamp outside its tolerance, so
//! a captured delivery cannot be replayed later.

use chrono::TimeDelta;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "leadflow-signature";
/// Attempts before a delivery is given up.
pub const MAX_ATTEMPTS: u32 = 8;
/// The first retry delay; each later one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: TimeDelta = TimeDelta::seconds(5);
/// The longest retry delay.
pub const MAX_DELAY: TimeDelta = TimeDelta::hours(1);

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length: new_from_slice cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| unreachable!());
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The hex HMAC-SHA256 of `"<timestamp>.<body>"` under `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

/// The signature header value of a delivery sent at `timestamp`.
pub fn signature_header(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// Why a receiver refuses a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// The header is not `t=…,v1=…`.
    Malformed,
    /// The timestamp is too far from now: a replay, or a badly wrong clock.
    Stale,
    /// The signature does not match the body and secret.
    BadSignature,
}

/// What a receiver does: checks `header` against `body` and `secret`, with the timestamp at
/// most `tolerance` away from `now` (unix seconds). The comparison is constant-time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: TimeDelta,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signature = None;
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", s)) => signature = hex::decode(s).ok(),
            _ => {}
        }
    }
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(VerifyError::Malformed);
    };
    if (now - timestamp).abs() > tolerance.num_seconds() {
        return Err(VerifyError::Stale);
    }
    mac(secret, timestamp, body)
        .verify_slice(&signature)
        .map_err(|_| VerifyError::BadSignature)
}

/// The delay before attempt `attempt + 1` after `attempt` failed ones (1-based), or `None` when
/// the delivery is given up.
pub fn next_attempt_delay(attempt: u32) -> Option<TimeDelta> {
    if attempt >= MAX_ATTEMPTS {
        return None;
    }
    let factor = 1i32 << attempt.saturating_sub(1).min(20);
    Some((FIRST_DELAY * factor).min(MAX_DELAY))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_delivery_verifies_and_a_tampered_one_does_not() {
        let body = br#"{"handoff":{"handoff_id":"h1"}}"#;
        let header = signature_header(SECRET, 1_700_000_000, body);
        assert!(header.starts_with("t=1700000000,v1="));
        let tolerance = TimeDelta::minutes(5);
        assert_eq!(
            verify(SECRET, &header, body, 1_700_000_010, tolerance),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, &header, b"{}", 1_700_000_010, tolerance),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(
                b"another secret of 32 bytes......",
                &header,
                body,
                1_700_000_010,
                tolerance
            ),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(SECRET, &header, body, 1_700_000_000 + 3600, tolerance),
            Err(VerifyError::Stale),
            "a replay an hour later"
        );
        assert_eq!(
            verify(SECRET, "v1=00", body, 1_700_000_000, tolerance),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn the_known_answer() {
        // printf '1.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", 1, b"{}"),
            "1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
    }

    #[test]
    fn retries_back_off_then_give_up() {
        assert_eq!(next_attempt_delay(1), Some(TimeDelta::seconds(5)));
        assert_eq!(next_attempt_delay(2), Some(TimeDelta::seconds(10)));
        assert_eq!(next_attempt_delay(3), Some(TimeDelta::seconds(20)));
        assert_eq!(
            next_attempt_delay(MAX_ATTEMPTS - 1),
            Some(TimeDelta::seconds(5 * 64))
        );
        assert_eq!(next_attempt_delay(MAX_ATTEMPTS), None);
    }
}
