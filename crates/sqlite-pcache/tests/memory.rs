//! The process-wide memory settings, in a process of their own: SQLite accepts them only
//! before its first connection.
#![allow(unsafe_code)]

use std::ffi::{CString, c_int};
use std::ptr;

use libsqlite3_sys as ffi;

/// Lookaside slots SQLite's default arena has (48,000 bytes: 30 of 1,200 and 93 of 128).
const DEFAULT_SLOTS: c_int = 123;

/// An in-memory connection, closed on drop.
struct Connection(*mut ffi::sqlite3);

impl Connection {
    fn open() -> Self {
        let mut db = ptr::null_mut();
        let name = CString::new(":memory:").expect("no nul");
        // SAFETY: a valid name and out pointer; the handle is closed by `Drop`.
        let rc = unsafe {
            ffi::sqlite3_open_v2(
                name.as_ptr(),
                &raw mut db,
                ffi::SQLITE_OPEN_READWRITE | ffi::SQLITE_OPEN_CREATE,
                ptr::null(),
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        Self(db)
    }

    /// Prepares `sql` and keeps the statement (as a service's statement cache does).
    fn prepare(&self, sql: &str) -> *mut ffi::sqlite3_stmt {
        let sql = CString::new(sql).expect("no nul");
        let mut stmt = ptr::null_mut();
        // SAFETY: a valid connection, statement text and out pointer.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(self.0, sql.as_ptr(), -1, &raw mut stmt, ptr::null_mut())
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        stmt
    }

    /// The most lookaside slots the connection has had in use at once.
    fn lookaside_slots_used_at_most(&self) -> c_int {
        let (mut current, mut highest) = (0, 0);
        // SAFETY: a valid connection and out pointers.
        let rc = unsafe {
            ffi::sqlite3_db_status(
                self.0,
                ffi::SQLITE_DBSTATUS_LOOKASIDE_USED,
                &raw mut current,
                &raw mut highest,
                0,
            )
        };
        assert_eq!(rc, ffi::SQLITE_OK);
        highest
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: the handle is valid; every statement of it was finalized before.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

fn memory_used() -> i64 {
    let (mut current, mut highest) = (0, 0);
    // SAFETY: valid out pointers.
    let rc = unsafe {
        ffi::sqlite3_status64(
            ffi::SQLITE_STATUS_MEMORY_USED,
            &raw mut current,
            &raw mut highest,
            0,
        )
    };
    assert_eq!(rc, ffi::SQLITE_OK);
    current
}

#[test]
fn connections_get_the_larger_arena_and_no_memory_statistics() {
    leadflow_sqlite_pcache::configure_memory().expect("configured before the first connection");
    leadflow_sqlite_pcache::install().expect("the page cache goes in beside it");

    let conn = Connection::open();
    let mut statements = Vec::new();
    for table in 0..4 {
        statements.push(conn.prepare(&format!(
            "CREATE TABLE t{table} (id TEXT PRIMARY KEY, body BLOB, at INTEGER)"
        )));
    }
    for statement in &statements {
        // SAFETY: a prepared statement of this connection.
        assert_eq!(unsafe { ffi::sqlite3_step(*statement) }, ffi::SQLITE_DONE);
    }
    for table in 0..4 {
        for _ in 0..8 {
            statements.push(conn.prepare(&format!(
                "INSERT INTO t{table} (id, body, at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (id) DO UPDATE SET body = excluded.body, at = excluded.at"
            )));
        }
    }
    assert!(
        conn.lookaside_slots_used_at_most() > DEFAULT_SLOTS,
        "the statements it keeps prepared outgrow SQLite's default arena: {} slots",
        conn.lookaside_slots_used_at_most()
    );
    assert_eq!(
        memory_used(),
        0,
        "sqlite counts no memory with the statistics off"
    );
    assert_eq!(
        leadflow_sqlite_pcache::configure_memory(),
        Ok(()),
        "a second call reports the first one's outcome"
    );
    for statement in statements {
        // SAFETY: a prepared statement of this connection, finalized once.
        unsafe { ffi::sqlite3_finalize(statement) };
    }
}
