//! SQLite's own page cache behind a thin wrapper that skips the cache scans commits do for
//! nothing.
//!
//! At the end of every write transaction SQLite truncates the connection's page cache to the
//! database's size. Its cache (pcache1) remembers only the largest page number it has seen since
//! the last truncation, and when that is far above the database it scans the whole cache: every
//! hash slot, every page. SQLite's B-tree, when it rebalances pages, swaps two pages' numbers
//! through a temporary one far above any database under 1 GiB (the lock-byte page, 262,145 with
//! 4 KiB pages), so after nearly every write transaction the commit walked every page of the
//! writer's cache (24 MiB, ~6,000 pages) to remove none: about a fifth of ingestion's SQLite
//! thread in a profile of unary `Track` calls.
//!
//! The wrapper installs itself through SQLite's documented page cache interface
//! (`SQLITE_CONFIG_PCACHE2`), forwards every call to SQLite's own cache, and keeps an upper
//! bound on the page numbers each cache holds that follows a page moved away and back. A
//! truncation that cannot remove anything is skipped; any other is forwarded as it came.
//!
//! The crate also holds SQLite's other process-wide setting Leadflow makes: how connections
//! allocate their small objects ([`configure_memory`]).

mod bound;
mod memory;
mod shim;

pub use memory::{LOOKASIDE_SLOT_SIZE, LOOKASIDE_SLOTS};

use std::sync::OnceLock;
use std::sync::atomic::Ordering;

/// SQLite refused a process-wide setting (its result code), typically because the process had
/// opened an SQLite connection before; SQLite then keeps its defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused(pub i32);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sqlite refused the setting (code {})", self.0)
    }
}

impl std::error::Error for Refused {}

/// Installs the wrapper as the process's SQLite page cache; call it before the process opens
/// its first SQLite connection. Only the first call does anything; every call returns its
/// outcome.
pub fn install() -> Result<(), Refused> {
    static INSTALLED: OnceLock<Result<(), Refused>> = OnceLock::new();
    *INSTALLED.get_or_init(|| shim::install().map_err(Refused))
}

/// Gives every SQLite connection a lookaside arena of [`LOOKASIDE_SLOTS`] slots and turns
/// SQLite's memory statistics off (see the `memory` module); call it before the process opens
/// its first SQLite connection. Only the first call does anything; every call returns its
/// outcome.
pub fn configure_memory() -> Result<(), Refused> {
    static CONFIGURED: OnceLock<Result<(), Refused>> = OnceLock::new();
    *CONFIGURED.get_or_init(|| memory::configure().map_err(Refused))
}

/// How many cache truncations the process's SQLite asked for, by what the wrapper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncations {
    /// Passed on to SQLite's own cache: it may have held pages to remove.
    pub forwarded: u64,
    /// Skipped: no page could be removed.
    pub skipped: u64,
}

/// The truncations counted since the process started.
pub fn truncations() -> Truncations {
    Truncations {
        forwarded: shim::FORWARDED.load(Ordering::Relaxed),
        skipped: shim::SKIPPED.load(Ordering::Relaxed),
    }
}
