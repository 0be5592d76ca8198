//! Webhooks: endpoint validation, event filters, payload signing and the retry schedule.
//!
//! # Signing
//!
//! Every delivery carries the header [`SIGNATURE_HEADER`] (`leadflow-signature`) with the value
//! `t=<unix seconds>,v1=<hex>` (the scheme Stripe popularised), where `<hex>` is the lowercase hex
//! HMAC-SHA256, keyed with the endpoint's secret, of the bytes `"<unix seconds>."` followed by
//! the raw request body. A receiver recomputes it over the body it got, compares in constant
//! time, and rejects timestamps further than a tolerance from its clock, so a captured delivery
//! cannot be replayed later. Several `v1`
//! entries may appear (e.g. while a secret is rotated); one matching is enough. Unknown keys are
//! ignored so new schemes can be added.

use std::fmt;

use chrono::TimeDelta;
use hmac::{Hmac, Mac};
use leadflow_runtime::error::FieldViolations;
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::status::{HandoffKind, HandoffStatus};

type HmacSha256 = Hmac<Sha256>;

/// The HTTP header that carries the signature (lowercase, as HTTP/2 sends it).
pub const SIGNATURE_HEADER: &str = "leadflow-signature";

/// The shortest secret accepted, in bytes (`UpsertWebhookRequest.secret`).
pub const MIN_SECRET_LEN: usize = 32;

/// The default replay tolerance of [`verify`], in seconds (five minutes).
pub const DEFAULT_TOLERANCE_SECS: i64 = 300;

/// Attempts in all before a delivery is given up (the default [`RetryPolicy`]).
pub const MAX_ATTEMPTS: u32 = 8;

/// The delay after the first failed attempt; each later one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: TimeDelta = TimeDelta::seconds(5);

/// The longest retry delay.
pub const MAX_DELAY: TimeDelta = TimeDelta::hours(1);

/// Which hand-off changes a webhook receives (`WebhookEventFilter`); every non-empty list must
/// match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEventFilter {
    /// Changes into these statuses (pending = a new hand-off); all when empty.
    pub statuses: Vec<HandoffStatus>,
    /// Hand-offs of these kinds; all when empty.
    pub kinds: Vec<HandoffKind>,
}

impl WebhookEventFilter {
    /// True when a change of a hand-off of `kind` into `status` is sent.
    pub fn matches(&self, status: HandoffStatus, kind: HandoffKind) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&status))
            && (self.kinds.is_empty() || self.kinds.contains(&kind))
    }
}

/// A webhook endpoint (`Webhook`), without its write-only secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Webhook {
    /// Chosen by the server on create; empty before.
    pub id: String,
    /// An http:// or https:// URL.
    pub url: String,
    /// Which changes it receives.
    pub event_filter: WebhookEventFilter,
    /// Deliveries are made only while enabled.
    pub enabled: bool,
}

impl Webhook {
    /// True when the endpoint gets a change of a hand-off of `kind` into `status`.
    pub fn wants(&self, status: HandoffStatus, kind: HandoffKind) -> bool {
        self.enabled && self.event_filter.matches(status, kind)
    }
}

/// Every mistake in an `UpsertWebhookRequest`, fields named as there (`webhook.url`,
/// `secret`). The secret is required when `creating`; on update an empty one keeps the old.
pub fn validate_webhook(
    webhook: &Webhook,
    secret: &[u8],
    creating: bool,
) -> Result<(), FieldViolations> {
    let mut v = FieldViolations::new();
    if let Err(problem) = check_url(&webhook.url) {
        v.add("webhook.url", problem);
    }
    if secret.is_empty() {
        if creating {
            v.add("secret", "required");
        }
    } else if secret.len() < MIN_SECRET_LEN {
        v.add("secret", format!("must be at least {MIN_SECRET_LEN} bytes"));
    }
    v.into_result(())
}

/// Checks that `url` is an absolute http(s) URL with a host, without credentials.
fn check_url(url: &str) -> Result<(), &'static str> {
    if url.is_empty() {
        return Err("required");
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("must be an http:// or https:// url");
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err("must be an http:// or https:// url");
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err("must not carry credentials");
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        // An IPv6 literal, e.g. [::1]:8080.
        let Some((address, after)) = bracketed.split_once(']') else {
            return Err("must have a valid host");
        };
        if address.is_empty() || !address.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
            return Err("must have a valid host");
        }
        match after.strip_prefix(':') {
            Some(port) => (address, Some(port)),
            None if after.is_empty() => (address, None),
            None => return Err("must have a valid host"),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let labels = host.strip_suffix('.').unwrap_or(host);
    let host_ok = !labels.is_empty()
        && labels.split('.').all(|label| !label.is_empty())
        && host
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'));
    if !host_ok {
        return Err("must have a valid host");
    }
    if let Some(port) = port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err("must have a port between 1 and 65535");
    }
    Ok(())
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length (longer ones are hashed), so this cannot fail.
    let Ok(mut mac) = <HmacSha256 as Mac>::new_from_slice(secret) else {
        unreachable!("hmac accepts keys of any length")
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The lowercase hex HMAC-SHA256 of `"{timestamp}.{body}"` keyed with `secret`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
}

/// The [`SIGNATURE_HEADER`] value for a delivery at `timestamp` (unix seconds):
/// `t=<timestamp>,v1=<sign(secret, timestamp, body)>`.
pub fn signature_header(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// The header lacks `t` or `v1`, or `t` is not a number.
    Malformed,
    /// The timestamp is too far from now: a replay, or a badly wrong clock.
    Stale,
    /// No `v1` signature matches the body, timestamp and secret.
    BadSignature,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VerifyError::Malformed => "malformed signature header",
            VerifyError::Stale => "signature timestamp outside the tolerance",
            VerifyError::BadSignature => "signature does not match",
        })
    }
}

impl std::error::Error for VerifyError {}

/// What a receiver does: checks a [`SIGNATURE_HEADER`] value against `body`. The timestamp must
/// be within `tolerance` of `now` (unix seconds) either way, and some `v1` must be the HMAC of
/// the timestamp and the body under `secret` (compared in constant time).
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: i64,
    tolerance: TimeDelta,
) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => {
                timestamp = Some(value.parse::<i64>().map_err(|_| VerifyError::Malformed)?);
            }
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let Some(timestamp) = timestamp else {
        return Err(VerifyError::Malformed);
    };
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let allowed = u64::try_from(tolerance.num_seconds()).unwrap_or(0);
    if now.abs_diff(timestamp) > allowed {
        return Err(VerifyError::Stale);
    }
    let expected = mac(secret, timestamp, body);
    let matched = signatures
        .iter()
        .any(|s| hex::decode(s).is_ok_and(|bytes| expected.clone().verify_slice(&bytes).is_ok()));
    if matched {
        Ok(())
    } else {
        Err(VerifyError::BadSignature)
    }
}

/// The retry schedule of webhook deliveries: exponential backoff from `base`, doubling after
/// each failed attempt, capped at `cap`, giving up after `max_attempts` attempts in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first failed attempt.
    pub base: TimeDelta,
    /// The longest delay.
    pub cap: TimeDelta,
    /// Attempts in all, the first included; the delivery fails after the last.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    /// 5 s, 10 s, 20 s, … capped at 1 hour; 8 attempts in all.
    fn default() -> Self {
        Self {
            base: FIRST_DELAY,
            cap: MAX_DELAY,
            max_attempts: MAX_ATTEMPTS,
        }
    }
}

impl RetryPolicy {
    /// The wait before the next attempt after `attempts` failed ones (1-based, the delivery's
    /// `attempt_count`): `base · 2^(attempts − 1)` capped; `None` when the delivery gives up.
    pub fn next_attempt_delay(&self, attempts: u32) -> Option<TimeDelta> {
        if attempts >= self.max_attempts {
            return None;
        }
        let doublings = attempts.saturating_sub(1);
        let factor = 1i32.checked_shl(doublings).filter(|f| *f > 0);
        let delay = factor
            .and_then(|f| self.base.checked_mul(f))
            .unwrap_or(self.cap);
        Some(delay.min(self.cap))
    }
}

/// [`RetryPolicy::next_attempt_delay`] under the default policy.
pub fn next_attempt_delay(attempts: u32) -> Option<TimeDelta> {
    RetryPolicy::default().next_attempt_delay(attempts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"whsec_0123456789abcdef0123456789abcdef";

    /// 2025-03-10T09:00:00Z in unix seconds.
    const NOW: i64 = 1_741_597_200;

    fn tolerance() -> TimeDelta {
        TimeDelta::seconds(DEFAULT_TOLERANCE_SECS)
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_timestamp_dot_body() {
        // printf '1.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", 1, b"{}"),
            "1ba6b8171186efc613e8bcc0cbdab2748f24984d7c5a84faa2637afa0e40d224"
        );
        let manual = {
            let mut m = <HmacSha256 as Mac>::new_from_slice(b"Jefe").expect("any key");
            m.update(b"0.what do ya want for nothing?");
            hex::encode(m.finalize().into_bytes())
        };
        assert_eq!(sign(b"Jefe", 0, b"what do ya want for nothing?"), manual);
        let header = signature_header(SECRET, NOW, b"{}");
        assert_eq!(header, format!("t={NOW},v1={}", sign(SECRET, NOW, b"{}")));
    }

    #[test]
    fn sign_and_verify_round_trip() {
        let body = br#"{"handoff_id":"h1","status":"pending"}"#;
        let header = signature_header(SECRET, NOW, body);
        assert_eq!(verify(SECRET, &header, body, NOW, tolerance()), Ok(()));
        // Within the tolerance either way.
        assert_eq!(
            verify(SECRET, &header, body, NOW + 300, tolerance()),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, &header, body, NOW - 300, tolerance()),
            Ok(())
        );
        // Another v1 (a rotated secret) alongside, and spaces, are fine.
        let other = sign(b"old-secret-old-secret-old-secret", NOW, body);
        let current = sign(SECRET, NOW, body);
        let rotated = format!("t={NOW}, v1={other}, v1={current}");
        assert_eq!(verify(SECRET, &rotated, body, NOW, tolerance()), Ok(()));
    }

    #[test]
    fn tampering_and_staleness_are_rejected() {
        let body = br#"{"handoff_id":"h1","status":"pending"}"#;
        let header = signature_header(SECRET, NOW, body);
        let tampered = br#"{"handoff_id":"h2","status":"pending"}"#;
        assert_eq!(
            verify(SECRET, &header, tampered, NOW, tolerance()),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            verify(
                b"another-secret-another-secret-xx",
                &header,
                body,
                NOW,
                tolerance()
            ),
            Err(VerifyError::BadSignature)
        );
        // A new timestamp with the old signature does not verify.
        let moved = header.replacen(&format!("t={NOW}"), &format!("t={}", NOW + 1), 1);
        assert_eq!(
            verify(SECRET, &moved, body, NOW, tolerance()),
            Err(VerifyError::BadSignature)
        );
        // A replay later, or a clock far ahead.
        assert_eq!(
            verify(SECRET, &header, body, NOW + 301, tolerance()),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(SECRET, &header, body, NOW + 3600, tolerance()),
            Err(VerifyError::Stale)
        );
        assert_eq!(
            verify(SECRET, &header, body, NOW - 301, tolerance()),
            Err(VerifyError::Stale)
        );
        for malformed in ["", "v1=abcd", "t=12", "t=soon,v1=abcd", "garbage"] {
            assert_eq!(
                verify(SECRET, malformed, body, NOW, tolerance()),
                Err(VerifyError::Malformed),
                "{malformed:?}"
            );
        }
        let not_hex = format!("t={NOW},v1=zz");
        assert_eq!(
            verify(SECRET, &not_hex, body, NOW, tolerance()),
            Err(VerifyError::BadSignature)
        );
        assert_eq!(
            VerifyError::Stale.to_string(),
            "signature timestamp outside the tolerance"
        );
    }

    #[test]
    fn the_retry_schedule_backs_off_caps_and_gives_up() {
        let delays: Vec<Option<i64>> = (1..=9)
            .map(|n| next_attempt_delay(n).map(|d| d.num_seconds()))
            .collect();
        assert_eq!(
            delays,
            [
                Some(5),
                Some(10),
                Some(20),
                Some(40),
                Some(80),
                Some(160),
                Some(320),
                None,
                None
            ]
        );
        assert_eq!(next_attempt_delay(0), Some(FIRST_DELAY));
        let long = RetryPolicy {
            max_attempts: u32::MAX,
            ..RetryPolicy::default()
        };
        assert_eq!(long.next_attempt_delay(10), Some(TimeDelta::seconds(2560)));
        assert_eq!(long.next_attempt_delay(11), Some(MAX_DELAY), "capped");
        assert_eq!(long.next_attempt_delay(40), Some(MAX_DELAY));
        assert_eq!(long.next_attempt_delay(u32::MAX - 1), Some(MAX_DELAY));
    }

    #[test]
    fn endpoints_are_validated() {
        let hook = |url: &str| Webhook {
            url: url.to_owned(),
            enabled: true,
            ..Webhook::default()
        };
        for url in [
            "https://crm.example.com/hooks/leadflow",
            "http://localhost:8080",
            "HTTPS://example.com?x=1",
            "http://[::1]:9000/hook",
            "http://10.0.0.7/in",
        ] {
            assert_eq!(validate_webhook(&hook(url), SECRET, true), Ok(()), "{url}");
        }
        for (url, problem) in [
            ("", "required"),
            ("ftp://example.com", "must be an http:// or https:// url"),
            ("example.com/hook", "must be an http:// or https:// url"),
            ("https://", "must have a valid host"),
            ("https:///path", "must have a valid host"),
            ("https://a..b/", "must have a valid host"),
            (
                "https://exa mple.com",
                "must not contain spaces or control characters",
            ),
            ("https://user:pw@example.com", "must not carry credentials"),
            (
                "https://example.com:0/",
                "must have a port between 1 and 65535",
            ),
            (
                "https://example.com:99999/",
                "must have a port between 1 and 65535",
            ),
            ("https://[zz]/", "must have a valid host"),
        ] {
            let err = validate_webhook(&hook(url), SECRET, false).expect_err(url);
            assert_eq!(err.violations()[0].field, "webhook.url");
            assert_eq!(err.violations()[0].description, problem, "{url}");
        }
        let ok = hook("https://example.com");
        let err = validate_webhook(&ok, b"", true).expect_err("required on create");
        assert_eq!(err.to_string(), "secret: required");
        assert_eq!(validate_webhook(&ok, b"", false), Ok(()), "kept on update");
        let err = validate_webhook(&ok, b"0123456789abcdef", false).expect_err("too short");
        assert_eq!(err.to_string(), "secret: must be at least 32 bytes");
    }

    #[test]
    fn event_filters_match_status_and_kind() {
        let mut hook = Webhook {
            url: "https://example.com".into(),
            enabled: true,
            ..Webhook::default()
        };
        assert!(hook.wants(HandoffStatus::Pending, HandoffKind::Sales));
        hook.event_filter = WebhookEventFilter {
            statuses: vec![HandoffStatus::Pending, HandoffStatus::Escalated],
            kinds: vec![HandoffKind::Sales],
        };
        assert!(hook.wants(HandoffStatus::Escalated, HandoffKind::Sales));
        assert!(!hook.wants(HandoffStatus::Won, HandoffKind::Sales));
        assert!(!hook.wants(HandoffStatus::Pending, HandoffKind::SdrReview));
        hook.enabled = false;
        assert!(!hook.wants(HandoffStatus::Pending, HandoffKind::Sales));
    }

    proptest! {
        /// Any body signed at any time verifies at that time, and flipping any bit breaks it.
        #[test]
        fn round_trip_and_any_tampering(
            body in prop::collection::vec(any::<u8>(), 1..200),
            ts in 0i64..4_000_000_000,
            flip in any::<prop::sample::Index>(),
        ) {
            let header = signature_header(SECRET, ts, &body);
            prop_assert_eq!(verify(SECRET, &header, &body, ts, tolerance()), Ok(()));
            let mut tampered = body.clone();
            let i = flip.index(tampered.len());
            tampered[i] ^= 0x01;
            prop_assert_eq!(
                verify(SECRET, &header, &tampered, ts, tolerance()),
                Err(VerifyError::BadSignature)
            );
        }
    }
}
