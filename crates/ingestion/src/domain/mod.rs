//! Ingestion's domain: what a valid identity, profile and activity are, how profiles merge, and
//! the limits callers must respect. No I/O here.

pub mod activity;
pub mod identity;
pub mod limits;
pub mod profile;

pub use activity::{Activity, ActivityType};
pub use identity::Identity;
pub use profile::Profile;
