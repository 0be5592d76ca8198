//! Handoff's pure domain: no I/O, time passed in as `now`.

pub mod owner;
pub mod report;
pub mod routing;
pub mod sla;
pub mod status;
pub mod webhook;

pub use owner::{CompanySizeRange, LeadFacts, Owner, Role, Territory, TimeWindow};
pub use report::{HandoffRecord, SlaReport, SlaStats, nearest_rank, sla_report};
pub use routing::{
    FallbackReason, HandoffQueue, OpenCounts, PoolWeights, RoundRobinState, Route, RoutingRule,
    RoutingRules, is_eligible, route,
};
pub use sla::{
    Escalation, EscalationCase, EscalationTarget, SlaPolicy, escalate, is_breached, should_escalate,
};
pub use status::{Action, HandoffKind, HandoffStatus, Refusal, apply, can_move};
pub use webhook::{
    RetryPolicy, VerifyError, Webhook, WebhookEventFilter, next_attempt_delay, sign,
    signature_header, validate_webhook, verify,
};
