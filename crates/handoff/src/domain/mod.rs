//! Handoff's pure domain: no I/O, time passed in as `now`.

pub mod owner;
pub mod report;
pub mod routing;
pub mod sla;
pub mod status;
pub mod webhook;
