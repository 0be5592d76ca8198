//! Documented bounds on what a caller may send.

/// Most items in one `Batch` call.
pub const MAX_BATCH_ITEMS: usize = 500;
/// Longest message id (idempotency key).
pub const MAX_MESSAGE_ID_LEN: usize = 128;
/// Longest user id or anonymous id.
pub const MAX_ID_LEN: usize = 256;
/// Longest profile text attribute (names, title, company, industry).
pub const MAX_ATTRIBUTE_LEN: usize = 256;
/// Most traits or activity properties.
pub const MAX_PROPERTIES: usize = 50;
/// Longest trait or property key.
pub const MAX_PROPERTY_KEY_LEN: usize = 64;
/// Longest trait or property value.
pub const MAX_PROPERTY_VALUE_LEN: usize = 2048;
/// Largest total size of an activity's properties (keys and values), in bytes.
pub const MAX_PROPERTIES_BYTES: usize = 16 * 1024;
/// How far in the future an activity may claim to have happened (clock skew allowance).
pub const MAX_FUTURE_SKEW_SECS: i64 = 300;
/// Largest company size accepted.
pub const MAX_COMPANY_SIZE: i32 = 10_000_000;
/// Largest timeline page.
pub const MAX_PAGE_SIZE: usize = 1000;
/// Timeline page size when none is asked for.
pub const DEFAULT_PAGE_SIZE: usize = 100;
