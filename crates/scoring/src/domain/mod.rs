//! Scoring's pure domain: no I/O, time passed in as `now`.

pub mod caps;
pub mod compact_id;
pub mod decay;
pub mod default_model;
pub mod engine;
pub mod fit;
pub mod inactivity;
pub mod model;
pub mod predicate;
pub mod stamp;

pub use engine::{
    ActivityFact, Explanation, LeadScore, LeadScoreV1, LedgerLine, LineKind, ScoreInputs,
};
pub use fit::Grade;
pub use model::Model;
