//! Bounded waiting: the services work asynchronously (through their outboxes), so the demo
//! polls for what it expects, briefly, and fails naming what it waited for.

use std::time::Duration;

use tokio::time::Instant;

/// The longest the demo waits for any one thing.
pub(crate) const LIMIT: Duration = Duration::from_secs(30);
/// The pause between two looks.
const POLL: Duration = Duration::from_millis(25);

/// A wait for one thing, with its deadline.
#[derive(Debug)]
pub(crate) struct Wait {
    what: String,
    deadline: Instant,
}

impl Wait {
    /// Starts waiting for `what` (e.g. "dana to reach sql at qualification").
    pub(crate) fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            deadline: Instant::now() + LIMIT,
        }
    }

    /// Pauses before the next look, or fails when the time is up, with what was last seen.
    pub(crate) async fn again(&self, last_seen: &str) -> anyhow::Result<()> {
        if Instant::now() >= self.deadline {
            anyhow::bail!(
                "timed out after {}s waiting for {} (last seen: {last_seen})",
                LIMIT.as_secs(),
                self.what
            );
        }
        tokio::time::sleep(POLL).await;
        Ok(())
    }
}
