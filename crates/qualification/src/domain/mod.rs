//! Qualification's pure domain: no I/O, time passed in as `now`.

pub mod definition;
pub mod funnel;
pub mod lifecycle;
pub mod machine;

pub use definition::{Authority, Bant, Budget, Definition, FitGrade, LostReason, SqlRule};
pub use lifecycle::Stage;
pub use machine::{
    Actor, HandoffKind, Input, LeadQualification, Reason, Refusal, RejectReason, Transition,
    is_legal, replay,
};
