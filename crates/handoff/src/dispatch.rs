//! Webhook delivery: posts each pending delivery's JSON to its endpoint, signed with the
//! endpoint's secret, and records the outcome — delivered on a 2xx, retried with backoff
//! otherwise, failed once the retries are spent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use leadflow_runtime::clock::SharedClock;

use crate::domain::webhook::{SIGNATURE_HEADER, next_attempt_delay, signature_header};
use crate::error::Error;
use crate::store::Store;

/// Deliveries attempted per pass.
const BATCH: u64 = 50;
/// Deadline of one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Posts pending webhook deliveries.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Store,
    client: reqwest::Client,
    clock: SharedClock,
}

impl Dispatcher {
    /// A dispatcher over `store`, timing attempts with `clock`.
    pub fn new(store: Store, clock: SharedClock) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("leadflow-handoff/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            store,
            client,
            clock,
        })
    }

    /// Attempts every delivery due now; returns how many were attempted.
    pub async fn run_once(&self) -> Result<usize, Error> {
        let now = self.clock.now();
        let due = self.store.due_deliveries(now, BATCH).await?;
        let attempted = due.len();
        for (delivery, url, secret) in due {
            let (status, error) = self.post(&url, &secret, &delivery.payload, now).await;
            let attempt = u32::try_from(delivery.attempt_count + 1).unwrap_or(u32::MAX);
            let next = error
                .as_ref()
                .and_then(|_| next_attempt_delay(attempt))
                .map(|delay| now + delay);
            if let Some(error) = &error {
                tracing::warn!(
                    delivery_id = %delivery.delivery_id,
                    webhook_id = %delivery.webhook_id,
                    attempt,
                    error,
                    retry = next.is_some(),
                    "webhook delivery failed"
                );
            }
            self.store
                .record_attempt(delivery.id, status, error, next, now)
                .await?;
        }
        Ok(attempted)
    }

    /// One POST: the HTTP status (0 without a response) and the error, if it failed.
    async fn post(
        &self,
        url: &str,
        secret: &str,
        body: &str,
        now: DateTime<Utc>,
    ) -> (i32, Option<String>) {
        let signature = signature_header(secret.as_bytes(), now.timestamp(), body.as_bytes());
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = i32::from(response.status().as_u16());
                if response.status().is_success() {
                    (status, None)
                } else {
                    (status, Some(format!("receiver answered {status}")))
                }
            }
            Err(err) => (0, Some(format!("no response: {err}"))),
        }
    }
}
