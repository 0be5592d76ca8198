//! How SQLite's connections allocate their small, short-lived objects: a larger lookaside
//! arena per connection, and no process-wide memory statistics.
//!
//! Each connection serves small allocations (bound values, cursors, a statement's pieces) from
//! its lookaside arena, a free list of fixed slots, and sends the rest to `malloc`. SQLite's
//! default arena (48,000 bytes: about 30 slots of 1,200 bytes and 90 of 128) is held almost
//! whole by the statements a service keeps prepared, so nearly every text value a statement
//! binds went to glibc's `malloc` and back: 3% of the suite's samples in a profile of the
//! benchmark's ingestion and drain, and with glibc's own bookkeeping about as much again
//! (BENCHMARKS.md, thirty-second session). With [`LOOKASIDE_SLOTS`] slots, most of them are
//! served from the arena.
//!
//! SQLite's memory statistics (`sqlite3_memory_used` and the soft heap limit built on them)
//! take a process-wide mutex on every allocation; Leadflow reads neither, and SQLite recommends
//! turning them off where they are not needed.
#![allow(unsafe_code)]

use std::ffi::c_int;

use libsqlite3_sys as ffi;

/// Bytes per large lookaside slot: SQLite's default.
pub const LOOKASIDE_SLOT_SIZE: c_int = 1200;
/// Slots per connection (SQLite splits their memory between large and 128-byte ones): 600,000
/// bytes per connection, about 9 MiB over the sixteen connections of `leadflow up`.
pub const LOOKASIDE_SLOTS: c_int = 500;

/// Sets the lookaside arena of every connection opened from now on and turns the memory
/// statistics off. SQLite accepts both only before it is initialised (before the process opens
/// its first connection); a later call is refused with `SQLITE_MISUSE`.
pub(crate) fn configure() -> Result<(), c_int> {
    // SAFETY: SQLITE_CONFIG_LOOKASIDE takes two ints, the slot size and the slot count.
    let rc = unsafe {
        ffi::sqlite3_config(
            ffi::SQLITE_CONFIG_LOOKASIDE,
            LOOKASIDE_SLOT_SIZE,
            LOOKASIDE_SLOTS,
        )
    };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    // SAFETY: SQLITE_CONFIG_MEMSTATUS takes one int, a boolean.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_MEMSTATUS, 0 as c_int) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}
