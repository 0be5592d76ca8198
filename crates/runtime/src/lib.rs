//! Plumbing every Leadflow service shares, and only that: configuration pieces, telemetry,
//! authentication, database connection and migrations, WAL checkpoints, planner statistics,
//! error mapping, queue draining, the transactional outbox, health and reflection wiring,
//! graceful shutdown, a lower-priority runtime for background work, and an injectable clock.

pub mod auth;
pub mod background;
pub mod batched;
pub mod checkpoints;
pub mod client;
pub mod clock;
pub mod db;
pub mod error;
pub mod lead_cache;
pub mod lease;
pub mod outbox;
pub mod pbtime;
pub mod queue;
pub mod script;
pub mod server;
pub mod shutdown;
pub mod statistics;
pub mod telemetry;

/// Every Leadflow binary links the runtime, and so allocates with mimalloc: under the suite's
/// many small, short-lived allocations across threads (messages, rows, JSON), glibc's malloc
/// took about a sixth of the CPU in a profile of the benchmark.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
