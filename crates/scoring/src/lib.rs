//! Leadflow scoring: fit + engagement scores under a versioned, explainable model.
//!
//! This crate holds scoring's domain today: the model and its validation, fit rules and grades,
//! behaviour rules with caps and once-per-asset, lazy half-life decay, inactivity penalties, the
//! ledger and its explanation, and the default model. The gRPC service and its store build on
//! it.

pub mod domain;
