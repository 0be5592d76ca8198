//! Leadflow qualification: where "what is a qualified lead" stops being an argument.
//!
//! This crate holds qualification's domain today: the lifecycle stages and their legal
//! transitions, the versioned definition (MQL threshold, minimum fit, BANT rule for SQL, recycle
//! rules), and the state machine that applies scores, SDR decisions and sales outcomes to a lead,
//! recording every transition with its reason. The gRPC service and its store build on it.

pub mod domain;
