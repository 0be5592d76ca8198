//! The page cache methods SQLite calls: each forwards to SQLite's own cache (pcache1) and keeps
//! a [`KeyBound`] per cache, so [`truncate`] can skip a call that would remove nothing.
#![allow(unsafe_code)]

use std::ffi::{c_int, c_uint, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use libsqlite3_sys as ffi;

use crate::bound::KeyBound;

/// SQLite's own page cache methods, as they were before [`install`].
struct Inner(ffi::sqlite3_pcache_methods2);

// SAFETY: the methods are plain C functions; `pArg` is SQLite's own argument to them, which
// SQLite itself passes from whichever thread calls the cache.
unsafe impl Send for Inner {}
// SAFETY: as above; the table is never written after it is stored.
unsafe impl Sync for Inner {}

static INNER: OnceLock<Inner> = OnceLock::new();

/// Truncations forwarded to SQLite's cache.
pub(crate) static FORWARDED: AtomicU64 = AtomicU64::new(0);
/// Truncations skipped because they would have removed nothing.
pub(crate) static SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Installs the wrapper as SQLite's page cache, once per process ([`crate::install`] sees to
/// that). SQLite accepts a page cache only before it is initialised (before the process opens
/// its first connection); a later call is refused.
pub(crate) fn install() -> Result<(), c_int> {
    let mut own = ffi::sqlite3_pcache_methods2 {
        iVersion: 0,
        pArg: std::ptr::null_mut(),
        xInit: None,
        xShutdown: None,
        xCreate: None,
        xCachesize: None,
        xPagecount: None,
        xFetch: None,
        xUnpin: None,
        xRekey: None,
        xTruncate: None,
        xDestroy: None,
        xShrink: None,
    };
    // SAFETY: SQLITE_CONFIG_GETPCACHE2 takes a pointer to a methods table and fills it in.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &raw mut own) };
    if rc != ffi::SQLITE_OK {
        return Err(rc);
    }
    if own.xCreate.is_none() || own.xFetch.is_none() || own.xTruncate.is_none() {
        return Err(ffi::SQLITE_MISUSE);
    }
    // `crate::install` runs this once, so the table is never stored twice.
    INNER.set(Inner(own)).map_err(|_| ffi::SQLITE_MISUSE)?;
    let wrapper = ffi::sqlite3_pcache_methods2 {
        iVersion: 1,
        pArg: std::ptr::null_mut(),
        xInit: Some(init),
        xShutdown: Some(shutdown),
        xCreate: Some(create),
        xCachesize: Some(cachesize),
        xPagecount: Some(pagecount),
        xFetch: Some(fetch),
        xUnpin: Some(unpin),
        xRekey: Some(rekey),
        xTruncate: Some(truncate),
        xDestroy: Some(destroy),
        xShrink: Some(shrink),
    };
    // SAFETY: SQLITE_CONFIG_PCACHE2 takes a pointer to a methods table and copies it.
    let rc = unsafe { ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &raw const wrapper) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

fn inner() -> &'static ffi::sqlite3_pcache_methods2 {
    // Every method below is reached only after `install` stored the table.
    &INNER.get().expect("the page cache wrapper is installed").0
}

/// One cache: SQLite's own, and the bound on its keys.
struct Cache {
    inner: *mut ffi::sqlite3_pcache,
    keys: KeyBound,
}

/// The cache behind a handle [`create`] returned.
///
/// # Safety
/// `p` must come from [`create`] and not be destroyed. SQLite never calls one cache from two
/// threads at once (a cache belongs to one connection's pager), so the exclusive borrow holds.
unsafe fn cache<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Cache {
    // SAFETY: per this function's contract.
    unsafe { &mut *p.cast::<Cache>() }
}

unsafe extern "C" fn init(_arg: *mut c_void) -> c_int {
    let inner = inner();
    match inner.xInit {
        // SAFETY: SQLite's own method with its own argument.
        Some(init) => unsafe { init(inner.pArg) },
        None => ffi::SQLITE_OK,
    }
}

unsafe extern "C" fn shutdown(_arg: *mut c_void) {
    let inner = inner();
    if let Some(shutdown) = inner.xShutdown {
        // SAFETY: SQLite's own method with its own argument.
        unsafe { shutdown(inner.pArg) }
    }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra_size: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    let Some(create) = inner().xCreate else {
        return std::ptr::null_mut();
    };
    // SAFETY: SQLite's own method, called as SQLite called ours.
    let own = unsafe { create(page_size, extra_size, purgeable) };
    if own.is_null() {
        return own;
    }
    Box::into_raw(Box::new(Cache {
        inner: own,
        keys: KeyBound::default(),
    }))
    .cast()
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, pages: c_int) {
    if let Some(cachesize) = inner().xCachesize {
        // SAFETY: `p` came from `create`; SQLite's own method on its own cache.
        unsafe { cachesize(cache(p).inner, pages) }
    }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    match inner().xPagecount {
        // SAFETY: `p` came from `create`; SQLite's own method on its own cache.
        Some(pagecount) => unsafe { pagecount(cache(p).inner) },
        None => 0,
    }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    let Some(fetch) = inner().xFetch else {
        return std::ptr::null_mut();
    };
    // SAFETY: `p` came from `create`.
    let cache = unsafe { cache(p) };
    // SAFETY: SQLite's own method on its own cache, called as SQLite called ours.
    let page = unsafe { fetch(cache.inner, key, create) };
    if !page.is_null() {
        cache.keys.present(key);
    }
    page
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    if let Some(unpin) = inner().xUnpin {
        // SAFETY: `p` came from `create`; SQLite's own method on its own cache and page.
        unsafe { unpin(cache(p).inner, page, discard) }
    }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    let Some(rekey) = inner().xRekey else {
        return;
    };
    // SAFETY: `p` came from `create`.
    let cache = unsafe { cache(p) };
    // SAFETY: SQLite's own method on its own cache and page.
    unsafe { rekey(cache.inner, page, old, new) };
    cache.keys.moved(old, new);
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    let Some(truncate) = inner().xTruncate else {
        return;
    };
    // SAFETY: `p` came from `create`.
    let cache = unsafe { cache(p) };
    if cache.keys.may_hold_from(limit) {
        // SAFETY: SQLite's own method on its own cache.
        unsafe { truncate(cache.inner, limit) };
        cache.keys.truncated(limit);
        FORWARDED.fetch_add(1, Ordering::Relaxed);
    } else {
        SKIPPED.fetch_add(1, Ordering::Relaxed);
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `create` and SQLite destroys it once, after its last use.
    let cache = unsafe { Box::from_raw(p.cast::<Cache>()) };
    if let Some(destroy) = inner().xDestroy {
        // SAFETY: SQLite's own method on its own cache.
        unsafe { destroy(cache.inner) }
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    if let Some(shrink) = inner().xShrink {
        // SAFETY: `p` came from `create`; SQLite's own method on its own cache.
        unsafe { shrink(cache(p).inner) }
    }
}
