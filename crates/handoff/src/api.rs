//! The gRPC handlers, kept thin: request → validation → store/domain → response.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::{Stream, StreamExt, TryStreamExt};
use leadflow_proto::common::v1 as common;
use leadflow_proto::handoff::v1::{
    self as pb, handoff_internal_service_server::HandoffInternalService,
    handoff_service_server::HandoffService,
};
use leadflow_proto::qualification::v1::{QualificationEvent, qualification_event::Event};
use leadflow_runtime::auth::tenant_of;
use leadflow_runtime::clock::SharedClock;
use leadflow_runtime::error::FieldViolations;
use leadflow_runtime::outbox::inbox::check_headers;
use leadflow_runtime::pbtime::{timestamp, to_timestamp};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::context::ContextBuilder;
use crate::convert;
use crate::domain::owner::TimeWindow;
use crate::domain::report::{HandoffRecord, sla_report};
use crate::domain::status::Action;
use crate::domain::webhook;
use crate::error::Error;
use crate::store::{Act, Prepared, Reader, Store, handoff, status_of};

/// Largest `ListHandoffs`, `ListOwners` and `ListWebhookDeliveries` page.
pub const MAX_PAGE: usize = 1000;
/// Largest `ListWebhooks` page.
pub const MAX_WEBHOOK_PAGE: usize = 100;
/// Changes read per step of a stream.
const STREAM_BATCH: u64 = 200;

/// The public `HandoffService` and the internal `HandoffInternalService`.
#[derive(Debug, Clone)]
pub struct HandoffApi {
    store: Store,
    clock: SharedClock,
    context: ContextBuilder,
    shutdown: CancellationToken,
}

impl HandoffApi {
    /// Handlers over `store`, reading time from `clock`, building warm contexts with `context`;
    /// open streams end when `shutdown` fires.
    pub fn new(
        store: Store,
        clock: SharedClock,
        context: ContextBuilder,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            clock,
            context,
            shutdown,
        }
    }

    async fn owner_pb(
        &self,
        tenant: &str,
        row: &crate::store::owner::Model,
    ) -> Result<pb::Owner, Error> {
        let owner: crate::domain::owner::Owner = serde_json::from_str(&row.body)
            .map_err(|err| Error::corrupt("stored owner does not parse", err))?;
        let open = self.store.open_counts(tenant).await?;
        Ok(convert::owner_to_pb(
            &owner,
            open.get(&row.owner_id).copied().unwrap_or(0),
            row.created_at,
            row.updated_at,
        ))
    }

    /// Adds the full view to streamed changes: each hand-off's history as of its change (a
    /// later change left out) and its warm context. Read in one snapshot, closed before any of
    /// them is sent, so a slow consumer holds no read transaction open.
    async fn add_full_view(
        &self,
        tenant: &str,
        changes: &mut [(i64, pb::Handoff, handoff::Model)],
    ) -> Result<(), Error> {
        if changes.is_empty() {
            return Ok(());
        }
        let read = self.store.read().await?;
        for (id, handoff, row) in changes.iter_mut() {
            handoff.status_history = read.history_through(tenant, &row.handoff_id, *id).await?;
            handoff.context = convert::warm_context(row);
        }
        Ok(())
    }

    async fn full(read: &Reader, tenant: &str, row: &handoff::Model) -> Result<pb::Handoff, Error> {
        let history = read.history(tenant, &row.handoff_id).await?;
        Ok(convert::handoff_to_pb(row, Some(history)))
    }

    /// Applies one CRM action on a hand-off, idempotent by request id.
    #[allow(clippy::too_many_arguments)] // the action and everything the CRM reported with it
    async fn act(
        &self,
        tenant: &str,
        request_id: &str,
        method: &'static str,
        handoff_id: &str,
        act: Act,
    ) -> Result<(pb::Handoff, bool), Error> {
        let (answer, duplicate) = self
            .store
            .act(tenant, request_id, method, handoff_id, act, |row| {
                pb::GetHandoffResponse {
                    handoff: Some(convert::handoff_to_pb(row, None)),
                }
            })
            .await?;
        // The answer carries the full hand-off as it is now.
        let read = self.store.read().await?;
        let row = read
            .handoff(tenant, handoff_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("hand-off {handoff_id}")))?;
        let mut full = Self::full(&read, tenant, &row).await?;
        if duplicate && let Some(first) = answer.handoff {
            full.status = first.status;
        }
        Ok((full, duplicate))
    }

    fn base_act(&self, action: Action, actor_id: String, note: String) -> Act {
        Act {
            action,
            actor_id,
            note,
            at: self.clock.now(),
            crm_record_id: String::new(),
            rejection_reason: 0,
            outcome: None,
        }
    }
}

fn page_size(size: i32, default: usize, max: usize, v: &mut FieldViolations) -> usize {
    match usize::try_from(size) {
        Ok(0) => default,
        Ok(n) if n <= max => n,
        _ => {
            v.add("page_size", format!("between 0 and {max}"));
            default
        }
    }
}

fn required<'a>(value: &'a str, field: &str, v: &mut FieldViolations) -> &'a str {
    let value = value.trim();
    if value.is_empty() {
        v.add(field, "required");
    }
    value
}

/// A time the caller reported, or now; in the future is a violation.
fn reported_time(
    at: Option<&prost_types::Timestamp>,
    field: &str,
    now: DateTime<Utc>,
    v: &mut FieldViolations,
) -> DateTime<Utc> {
    match at {
        None => now,
        Some(ts) => match timestamp(ts) {
            Some(t) if t <= now => t,
            Some(_) => {
                v.add(field, "must not be in the future");
                now
            }
            None => {
                v.add(field, "not a valid timestamp");
                now
            }
        },
    }
}

fn check_filter(filter: &pb::HandoffFilter, at: &str, v: &mut FieldViolations) {
    for (i, status) in filter.statuses.iter().enumerate() {
        if convert::status_from_pb(*status).is_none() {
            v.add(format!("{at}.statuses[{i}]"), "not a hand-off status");
        }
    }
    if filter.kind != 0 && convert::kind_from_pb(filter.kind).is_none() {
        v.add(format!("{at}.kind"), "not a hand-off kind");
    }
    if pb::HandoffQueue::try_from(filter.queue).is_err() {
        v.add(format!("{at}.queue"), "not a queue");
    }
}

/// Whether a hand-off, as of a change, passes `filter`.
fn passes(filter: &pb::HandoffFilter, h: &pb::Handoff) -> bool {
    (filter.statuses.is_empty() || filter.statuses.contains(&h.status))
        && (filter.owner_id.is_empty() || filter.owner_id == h.owner_id)
        && (filter.kind == 0 || filter.kind == h.kind)
        && (filter.queue == 0 || filter.queue == h.queue)
        && (filter.lead_id.is_empty() || filter.lead_id == h.lead_id)
}

/// Every mistake in a webhook to upsert: the filter's enum values here, the URL and secret
/// rules in the domain.
fn check_webhook(hook: &pb::Webhook, secret: &str, creating: bool, v: &mut FieldViolations) {
    let filter = hook.event_filter.clone().unwrap_or_default();
    for (i, status) in filter.statuses.iter().enumerate() {
        if convert::status_from_pb(*status).is_none() {
            v.add(
                format!("webhook.event_filter.statuses[{i}]"),
                "not a hand-off status",
            );
        }
    }
    for (i, kind) in filter.kinds.iter().enumerate() {
        if convert::kind_from_pb(*kind).is_none() {
            v.add(
                format!("webhook.event_filter.kinds[{i}]"),
                "not a hand-off kind",
            );
        }
    }
    let endpoint = webhook::Webhook {
        id: hook.webhook_id.clone(),
        url: hook.url.trim().to_owned(),
        enabled: hook.enabled,
        ..Default::default()
    };
    if let Err(more) = webhook::validate_webhook(&endpoint, secret.as_bytes(), creating) {
        v.extend(more);
    }
}

fn delivery_to_pb(d: &crate::store::delivery::Model) -> pb::WebhookDelivery {
    let pending = d.state == pb::WebhookDeliveryState::Pending as i32;
    pb::WebhookDelivery {
        delivery_id: d.delivery_id.clone(),
        webhook_id: d.webhook_id.clone(),
        handoff_id: d.handoff_id.clone(),
        handoff_status: d.handoff_status,
        state: d.state,
        attempt_count: d.attempt_count,
        last_http_status: d.last_http_status,
        last_error: d.last_error.clone(),
        create_time: Some(to_timestamp(d.created_at)),
        last_attempt_time: d.last_attempt_at.map(to_timestamp),
        next_attempt_time: pending.then(|| to_timestamp(d.next_attempt_at)),
        delivered_time: d.delivered_at.map(to_timestamp),
    }
}

type HandoffStream = Pin<Box<dyn Stream<Item = Result<pb::StreamHandoffsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl HandoffService for HandoffApi {
    async fn upsert_owner(
        &self,
        request: Request<pb::UpsertOwnerRequest>,
    ) -> Result<Response<pb::UpsertOwnerResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let owner = convert::owner_from_pb(r.owner.unwrap_or_default()).map_err(Error::from)?;
        let (row, created) = self
            .store
            .upsert_owner(&tenant.0, &owner, self.clock.now())
            .await?;
        Ok(Response::new(pb::UpsertOwnerResponse {
            owner: Some(self.owner_pb(&tenant.0, &row).await?),
            created,
        }))
    }

    async fn list_owners(
        &self,
        request: Request<pb::ListOwnersRequest>,
    ) -> Result<Response<pb::ListOwnersResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let role = match r.role {
            0 => None,
            n => convert::role_from_pb(n)
                .map(|role| role.name())
                .or_else(|| {
                    v.add("role", "not an owner role");
                    None
                }),
        };
        let size = page_size(r.page_size, 100, MAX_PAGE, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let team = (!r.team_id.is_empty()).then_some(r.team_id.as_str());
        let mut rows = self
            .store
            .owners(
                &tenant.0,
                role,
                team,
                r.include_inactive,
                after,
                size as u64 + 1,
            )
            .await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(|o| o.owner_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        let mut owners = Vec::with_capacity(rows.len());
        for row in &rows {
            owners.push(self.owner_pb(&tenant.0, row).await?);
        }
        Ok(Response::new(pb::ListOwnersResponse {
            owners,
            next_page_token,
        }))
    }

    async fn deactivate_owner(
        &self,
        request: Request<pb::DeactivateOwnerRequest>,
    ) -> Result<Response<pb::DeactivateOwnerResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let owner_id = required(&r.owner_id, "owner_id", &mut v);
        v.into_result(()).map_err(Error::from)?;
        let (row, reassigned) = self
            .store
            .deactivate_owner(
                &tenant.0,
                owner_id,
                r.reassign_open_handoffs,
                self.clock.now(),
            )
            .await?;
        Ok(Response::new(pb::DeactivateOwnerResponse {
            owner: Some(self.owner_pb(&tenant.0, &row).await?),
            reassigned_count: reassigned,
        }))
    }

    async fn publish_routing_rules(
        &self,
        request: Request<pb::PublishRoutingRulesRequest>,
    ) -> Result<Response<pb::PublishRoutingRulesResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let Some(rules) = r.routing_rules else {
            return Err(Error::invalid("routing_rules", "required").into());
        };
        let rules = convert::rules_from_pb(rules).map_err(Error::from)?;
        let (rules, created, duplicate) = self
            .store
            .publish_rules(&tenant.0, &r.request_id, rules, self.clock.now())
            .await?;
        Ok(Response::new(pb::PublishRoutingRulesResponse {
            routing_rules: Some(convert::rules_to_pb(&rules, Some(created))),
            duplicate,
        }))
    }

    async fn get_routing_rules(
        &self,
        request: Request<pb::GetRoutingRulesRequest>,
    ) -> Result<Response<pb::GetRoutingRulesResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let version = request.into_inner().version;
        if version < 0 {
            return Err(Error::invalid("version", "zero (the active one) or more").into());
        }
        let (active, active_created) = self.store.active_rules(&tenant.0).await?;
        let (rules, created) = if version == 0 {
            (active.clone(), active_created)
        } else {
            self.store
                .rules(&tenant.0, version)
                .await?
                .ok_or_else(|| Error::NotFound(format!("routing rules version {version}")))?
        };
        Ok(Response::new(pb::GetRoutingRulesResponse {
            routing_rules: Some(convert::rules_to_pb(&rules, Some(created))),
            active_version: active.version,
        }))
    }

    async fn list_handoffs(
        &self,
        request: Request<pb::ListHandoffsRequest>,
    ) -> Result<Response<pb::ListHandoffsResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let filter = r.filter.unwrap_or_default();
        check_filter(&filter, "filter", &mut v);
        let size = page_size(r.page_size, 100, MAX_PAGE, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let read = self.store.read().await?;
        let mut rows = read
            .list(&tenant.0, &filter, after, size as u64 + 1)
            .await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|h| h.handoff_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let handoffs = if r.view == pb::HandoffView::Full as i32 {
            let ids: Vec<String> = rows.iter().map(|row| row.handoff_id.clone()).collect();
            let mut histories = read.histories(&tenant.0, &ids).await?;
            rows.iter()
                .map(|row| {
                    let history = histories.remove(&row.handoff_id).unwrap_or_default();
                    convert::handoff_to_pb(row, Some(history))
                })
                .collect()
        } else {
            rows.iter()
                .map(|row| convert::handoff_to_pb(row, None))
                .collect()
        };
        Ok(Response::new(pb::ListHandoffsResponse {
            handoffs,
            next_page_token,
        }))
    }

    type StreamHandoffsStream = HandoffStream;

    async fn stream_handoffs(
        &self,
        request: Request<pb::StreamHandoffsRequest>,
    ) -> Result<Response<Self::StreamHandoffsStream>, Status> {
        let tenant = tenant_of(&request)?.0;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let filter = r.filter.unwrap_or_default();
        check_filter(&filter, "filter", &mut v);
        let mut cursor = match r.cursor.as_str() {
            "" => 0,
            c => c.parse::<i64>().unwrap_or_else(|_| {
                v.add("cursor", "not a cursor this service issued");
                0
            }),
        };
        v.into_result(()).map_err(Error::from)?;
        let full = r.view == pb::HandoffView::Full as i32;
        let (sender, receiver) = tokio::sync::mpsc::channel(64);
        let api = self.clone();
        let mut changes = self.store.subscribe();
        tokio::spawn(async move {
            loop {
                // Mark what is seen before reading, so a commit in between wakes the wait.
                changes.borrow_and_update();
                let batch = match api.store.changes_after(&tenant, cursor, STREAM_BATCH).await {
                    Ok(batch) => batch,
                    Err(err) => {
                        let _ = sender.send(Err(Status::from(err))).await;
                        return;
                    }
                };
                let caught_up = (batch.len() as u64) < STREAM_BATCH;
                if let Some((last, ..)) = batch.last() {
                    cursor = *last;
                }
                let mut items: Vec<_> = batch
                    .into_iter()
                    .filter(|(_, handoff, _)| passes(&filter, handoff))
                    .collect();
                if full && let Err(err) = api.add_full_view(&tenant, &mut items).await {
                    let _ = sender.send(Err(Status::from(err))).await;
                    return;
                }
                for (id, handoff, _) in items {
                    let item = pb::StreamHandoffsResponse {
                        handoff: Some(handoff),
                        cursor: id.to_string(),
                    };
                    if sender.send(Ok(item)).await.is_err() {
                        return;
                    }
                }
                if caught_up {
                    tokio::select! {
                        () = api.shutdown.cancelled() => return,
                        () = sender.closed() => return,
                        changed = changes.changed() => if changed.is_err() { return },
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(receiver),
        )))
    }

    async fn get_handoff(
        &self,
        request: Request<pb::GetHandoffRequest>,
    ) -> Result<Response<pb::GetHandoffResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let id = required(&r.handoff_id, "handoff_id", &mut v);
        v.into_result(()).map_err(Error::from)?;
        let read = self.store.read().await?;
        let row = read
            .handoff(&tenant.0, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("hand-off {id}")))?;
        Ok(Response::new(pb::GetHandoffResponse {
            handoff: Some(Self::full(&read, &tenant.0, &row).await?),
        }))
    }

    async fn acknowledge_handoff(
        &self,
        request: Request<pb::AcknowledgeHandoffRequest>,
    ) -> Result<Response<pb::AcknowledgeHandoffResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let id = required(&r.handoff_id, "handoff_id", &mut v);
        let record = required(&r.crm_record_id, "crm_record_id", &mut v);
        v.into_result(()).map_err(Error::from)?;
        let mut act = self.base_act(Action::Acknowledge, String::new(), String::new());
        act.crm_record_id = record.to_owned();
        let (handoff, duplicate) = self
            .act(&tenant.0, &r.request_id, "AcknowledgeHandoff", id, act)
            .await?;
        Ok(Response::new(pb::AcknowledgeHandoffResponse {
            handoff: Some(handoff),
            duplicate,
        }))
    }

    async fn record_contact(
        &self,
        request: Request<pb::RecordContactRequest>,
    ) -> Result<Response<pb::RecordContactResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let id = required(&r.handoff_id, "handoff_id", &mut v);
        let at = reported_time(
            r.contact_time.as_ref(),
            "contact_time",
            self.clock.now(),
            &mut v,
        );
        v.into_result(()).map_err(Error::from)?;
        let mut act = self.base_act(Action::Contact, r.actor_id.clone(), r.note.clone());
        act.at = at;
        let (handoff, duplicate) = self
            .act(&tenant.0, &r.request_id, "RecordContact", id, act)
            .await?;
        Ok(Response::new(pb::RecordContactResponse {
            handoff: Some(handoff),
            duplicate,
        }))
    }

    async fn accept_handoff(
        &self,
        request: Request<pb::AcceptHandoffRequest>,
    ) -> Result<Response<pb::AcceptHandoffResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let id = required(&r.handoff_id, "handoff_id", &mut v);
        v.into_result(()).map_err(Error::from)?;
        let act = self.base_act(Action::Accept, r.actor_id.clone(), r.note.clone());
        let (handoff, duplicate) = self
            .act(&tenant.0, &r.request_id, "AcceptHandoff", id, act)
            .await?;
        Ok(Response::new(pb::AcceptHandoffResponse {
            handoff: Some(handoff),
            duplicate,
        }))
    }

    async fn reject_handoff(
        &self,
        request: Request<pb::RejectHandoffRequest>,
    ) -> Result<Response<pb::RejectHandoffResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let id = required(&r.handoff_id, "handoff_id", &mut v);
        let known = common::RejectionReason::try_from(r.reason)
            .is_ok_and(|reason| reason != common::RejectionReason::Unspecified);
        if !known {
            v.add(
                "reason",
                "inaccurate data, not the ideal customer profile, or premature",
            );
        }
        v.into_result(()).map_err(Error::from)?;
        let mut act = self.base_act(Action::Reject, r.actor_id.clone(), r.note.clone());
        act.rejection_reason = r.reason;
        let (handoff, duplicate) = self
            .act(&tenant.0, &r.request_id, "RejectHandoff", id, act)
            .await?;
        Ok(Response::new(pb::RejectHandoffResponse {
            handoff: Some(handoff),
            duplicate,
        }))
    }

    async fn report_outcome(
        &self,
        request: Request<pb::ReportOutcomeRequest>,
    ) -> Result<Response<pb::ReportOutcomeResponse>, Status> {
        use common::sales_outcome::Outcome;
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let id = required(&r.handoff_id, "handoff_id", &mut v);
        let at = reported_time(
            r.outcome_time.as_ref(),
            "outcome_time",
            self.clock.now(),
            &mut v,
        );
        let action = match r.outcome.as_ref().and_then(|o| o.outcome.as_ref()) {
            Some(Outcome::Opportunity(_)) => Some(Action::Opportunity),
            Some(Outcome::Won(won)) => {
                if let Some(amount) = &won.amount {
                    check_money(amount, "outcome.won.amount", &mut v);
                }
                Some(Action::Win)
            }
            Some(Outcome::Lost(lost)) => {
                let known = common::LostReason::try_from(lost.reason)
                    .is_ok_and(|reason| reason != common::LostReason::Unspecified);
                if !known {
                    v.add("outcome.lost.reason", "a lost reason");
                }
                Some(Action::Lose)
            }
            None => {
                v.add("outcome", "opportunity, won or lost");
                None
            }
        };
        v.into_result(()).map_err(Error::from)?;
        let Some(action) = action else {
            return Err(Error::invalid("outcome", "required").into());
        };
        let mut act = self.base_act(action, r.actor_id.clone(), r.note.clone());
        act.at = at;
        act.outcome = r.outcome.clone();
        let (handoff, duplicate) = self
            .act(&tenant.0, &r.request_id, "ReportOutcome", id, act)
            .await?;
        Ok(Response::new(pb::ReportOutcomeResponse {
            handoff: Some(handoff),
            duplicate,
        }))
    }

    async fn upsert_webhook(
        &self,
        request: Request<pb::UpsertWebhookRequest>,
    ) -> Result<Response<pb::UpsertWebhookResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let hook = r.webhook.unwrap_or_default();
        let mut v = FieldViolations::new();
        check_webhook(&hook, &r.secret, hook.webhook_id.is_empty(), &mut v);
        v.into_result(()).map_err(Error::from)?;
        let (webhook, created) = self
            .store
            .upsert_webhook(&tenant.0, &r.request_id, hook, &r.secret, self.clock.now())
            .await?;
        Ok(Response::new(pb::UpsertWebhookResponse {
            webhook: Some(webhook),
            created,
        }))
    }

    async fn list_webhooks(
        &self,
        request: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let size = page_size(r.page_size, 20, MAX_WEBHOOK_PAGE, &mut v);
        v.into_result(()).map_err(Error::from)?;
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        let mut webhooks = self
            .store
            .webhooks(&tenant.0, after, size as u64 + 1)
            .await?;
        let next_page_token = if webhooks.len() > size {
            webhooks.truncate(size);
            webhooks
                .last()
                .map(|w| w.webhook_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks,
            next_page_token,
        }))
    }

    async fn delete_webhook(
        &self,
        request: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let id = required(&r.webhook_id, "webhook_id", &mut v);
        v.into_result(()).map_err(Error::from)?;
        self.store
            .delete_webhook(&tenant.0, &r.request_id, id, self.clock.now())
            .await?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let size = page_size(r.page_size, 100, MAX_PAGE, &mut v);
        if pb::WebhookDeliveryState::try_from(r.state).is_err() {
            v.add("state", "not a delivery state");
        }
        let before = match r.page_token.as_str() {
            "" => None,
            token => token.parse::<i64>().ok().or_else(|| {
                v.add("page_token", "not a token this service issued");
                None
            }),
        };
        v.into_result(()).map_err(Error::from)?;
        let mut rows = self
            .store
            .deliveries(&tenant.0, &r, before, size as u64 + 1)
            .await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last().map(|d| d.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: rows.iter().map(delivery_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn get_sla_report(
        &self,
        request: Request<pb::GetSlaReportRequest>,
    ) -> Result<Response<pb::GetSlaReportResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut v = FieldViolations::new();
        let mut end_of = |ts: Option<&prost_types::Timestamp>, field: &str| match ts {
            None => {
                v.add(field, "required");
                None
            }
            Some(ts) => timestamp(ts).or_else(|| {
                v.add(field, "not a valid timestamp");
                None
            }),
        };
        let start = end_of(r.start_time.as_ref(), "start_time");
        let end = end_of(r.end_time.as_ref(), "end_time");
        if let (Some(s), Some(e)) = (start, end)
            && s >= e
        {
            v.add("end_time", "must be after start_time");
        }
        if r.kind != 0 && convert::kind_from_pb(r.kind).is_none() {
            v.add("kind", "not a hand-off kind");
        }
        v.into_result(()).map_err(Error::from)?;
        let (Some(start_time), Some(end_time)) = (start, end) else {
            return Err(Error::invalid("start_time", "required").into());
        };
        let kind = (r.kind != 0).then_some(r.kind);
        let (rows, teams) = self.store.sla_rows(&tenant.0, kind).await?;
        let records = rows
            .iter()
            .map(|row| record(row, &teams))
            .collect::<Result<Vec<_>, Error>>()?;
        let now = self.clock.now();
        let report = sla_report(
            &records,
            &TimeWindow {
                start_time,
                end_time,
            },
            now,
        );
        Ok(Response::new(pb::GetSlaReportResponse {
            owners: report.owners.iter().map(convert::sla_stats_to_pb).collect(),
            teams: report.teams.iter().map(convert::sla_stats_to_pb).collect(),
            total: Some(convert::sla_stats_to_pb(&report.total)),
            report_time: Some(to_timestamp(report.report_time)),
        }))
    }
}

fn check_money(amount: &common::Money, at: &str, v: &mut FieldViolations) {
    let code = &amount.currency_code;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        v.add(
            format!("{at}.currency_code"),
            "an iso 4217 code such as EUR",
        );
    }
    let same_sign =
        (amount.units >= 0 && amount.nanos >= 0) || (amount.units <= 0 && amount.nanos <= 0);
    if !same_sign || amount.nanos.unsigned_abs() >= 1_000_000_000 {
        v.add(format!("{at}.nanos"), "below 10^9 with the sign of units");
    }
}

/// A stored hand-off as the SLA report reads it.
fn record(row: &handoff::Model, teams: &HashMap<String, String>) -> Result<HandoffRecord, Error> {
    let owner = (!row.owner_id.is_empty()).then(|| row.owner_id.clone());
    Ok(HandoffRecord {
        team_id: owner
            .as_ref()
            .and_then(|o| teams.get(o))
            .filter(|t| !t.is_empty())
            .cloned(),
        owner_id: owner,
        status: status_of(row)?,
        created_at: row.created_at,
        sla_deadline: row.sla_deadline,
        first_contact_at: row.first_contact_at,
        sla_breached: row.sla_breached,
    })
}

/// Warm contexts a delivery of qualification events builds at once.
const CONTEXTS_IN_FLIGHT: usize = 16;

impl HandoffApi {
    /// `events` each with the warm context a new hand-off request needs: none for anything
    /// else, or for a request whose hand-off exists already (looked up in one query per
    /// tenant), the rest built [`CONTEXTS_IN_FLIGHT`] at a time, in order.
    async fn prepare(&self, events: Vec<QualificationEvent>) -> Result<Vec<Prepared>, Error> {
        let mut requested: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for event in &events {
            if let (Some(header), Some(Event::HandoffRequested(request))) =
                (&event.header, &event.event)
            {
                requested
                    .entry(header.tenant_id.clone())
                    .or_default()
                    .push(request.transition_id.clone());
            }
        }
        let mut handed_off: HashMap<String, HashSet<String>> = HashMap::new();
        for (tenant, transitions) in requested {
            let found = self.store.handed_off(&tenant, &transitions).await?;
            handed_off.insert(tenant, found);
        }
        let handed_off = &handed_off;
        futures::stream::iter(events)
            .map(|event| async move {
                let header = event.header.clone().unwrap_or_default();
                let context = match &event.event {
                    Some(Event::HandoffRequested(request))
                        if !handed_off
                            .get(&header.tenant_id)
                            .is_some_and(|found| found.contains(&request.transition_id)) =>
                    {
                        Some(
                            self.context
                                .build(&header.tenant_id, &header.lead_id)
                                .await?,
                        )
                    }
                    _ => None,
                };
                Ok::<_, Error>(Prepared { event, context })
            })
            .buffered(CONTEXTS_IN_FLIGHT)
            .try_collect()
            .await
    }
}

#[tonic::async_trait]
impl HandoffInternalService for HandoffApi {
    async fn apply_qualification_events(
        &self,
        request: Request<pb::ApplyQualificationEventsRequest>,
    ) -> Result<Response<pb::ApplyQualificationEventsResponse>, Status> {
        let events = request.into_inner().events;
        check_headers(events.iter().map(|e| e.header.as_ref())).map_err(Error::from)?;
        // Warm contexts are built before the transaction: they need scoring and ingestion.
        // A delivery carries up to hundreds of requests; built one after another they could
        // outlast the sender's deadline and be retried forever, so several are in flight.
        let prepared = self.prepare(events).await?;
        let applied = self
            .store
            .apply_qualification_events(prepared, self.clock.now())
            .await?;
        Ok(Response::new(pb::ApplyQualificationEventsResponse {
            applied_count: applied.applied,
            duplicate_count: applied.duplicates,
        }))
    }
}
