//! The gRPC handlers, kept thin: request → validation → store/domain → response.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use leadflow_proto::qualification::v1::{
    self as pb, qualification_internal_service_server::QualificationInternalService,
    qualification_service_server::QualificationService,
};
use leadflow_runtime::auth::tenant_of;
use leadflow_runtime::clock::SharedClock;
use leadflow_runtime::error::FieldViolations;
use leadflow_runtime::outbox::inbox::check_headers;
use leadflow_runtime::pbtime::to_timestamp;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::domain::funnel::{self, Figures, Period};
use crate::domain::{Input, Stage};
use crate::error::Error;
use crate::store::{FunnelLead, LeadRecord, Recorded, Store};

/// Largest `ListLeads` and `GetHistory` page.
pub const MAX_PAGE: usize = 1000;
/// Largest `ListDefinitionVersions` page.
pub const MAX_DEFINITION_PAGE: usize = 100;
/// Longest note an actor can attach.
pub const MAX_NOTE_CHARS: usize = 10_000;

/// The public `QualificationService` and the internal `QualificationInternalService`.
#[derive(Debug, Clone)]
pub struct QualificationApi {
    store: Store,
    clock: SharedClock,
}

impl QualificationApi {
    /// Handlers over `store`, reading time from `clock`.
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    async fn lead(&self, tenant: &str, lead_id: &str) -> Result<LeadRecord, Error> {
        self.store
            .lead(tenant, lead_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("lead {lead_id}")))
    }

    async fn lead_to_pb(
        &self,
        tenant: &str,
        lead: &LeadRecord,
    ) -> Result<pb::LeadQualification, Error> {
        let mut merged = self
            .store
            .merged_ids(tenant, std::slice::from_ref(&lead.row.lead_id))
            .await?;
        Ok(lead_to_pb(
            lead,
            merged.remove(&lead.row.lead_id).unwrap_or_default(),
        ))
    }
}

/// The contract's view of a stored lead.
fn lead_to_pb(lead: &LeadRecord, merged_lead_ids: Vec<String>) -> pb::LeadQualification {
    pb::LeadQualification {
        lead_id: lead.row.lead_id.clone(),
        stage: convert::stage_to_pb(lead.state.stage) as i32,
        stage_enter_time: Some(to_timestamp(lead.state.stage_entered_at)),
        score: lead.score.clone(),
        profile: Some(lead.profile.clone()),
        bant: lead.state.bant.as_ref().map(convert::bant_to_pb),
        hand_raise: lead.state.hand_raised,
        definition_version: lead.row.definition_version,
        merged_lead_ids,
        create_time: Some(to_timestamp(lead.row.created_at)),
        update_time: Some(to_timestamp(lead.row.updated_at)),
    }
}

/// A page size of a request: `default` for zero, a violation outside `0..=max`.
fn page_size(size: i32, default: usize, max: usize, violations: &mut FieldViolations) -> usize {
    match usize::try_from(size) {
        Ok(0) => default,
        Ok(n) if n <= max => n,
        _ => {
            violations.add("page_size", format!("between 0 and {max}"));
            default
        }
    }
}

/// The required id in `field`, trimmed.
fn required<'a>(value: &'a str, field: &str, violations: &mut FieldViolations) -> &'a str {
    let value = value.trim();
    if value.is_empty() {
        violations.add(field, "required");
    }
    value
}

fn check_note(note: &str, violations: &mut FieldViolations) {
    if note.chars().count() > MAX_NOTE_CHARS {
        violations.add("note", format!("at most {MAX_NOTE_CHARS} characters"));
    }
}

/// `ListLeads` cursor: `e`, then the last lead's stage entry time, as stored (seconds and
/// nanoseconds), and its id. The letter tells these tokens from the update-time tokens of
/// before, which are refused rather than read as a position in another order.
fn lead_cursor(lead: &LeadRecord) -> String {
    let at = lead.row.stage_entered_at;
    format!(
        "e{}.{}.{}",
        at.timestamp(),
        at.timestamp_subsec_nanos(),
        lead.row.lead_id
    )
}

fn parse_lead_cursor(token: &str) -> Option<(DateTime<Utc>, String)> {
    let mut parts = token.strip_prefix('e')?.splitn(3, '.');
    let seconds = parts.next()?.parse().ok()?;
    let nanos = parts.next()?.parse().ok()?;
    let lead_id = parts.next()?;
    Some((
        DateTime::from_timestamp(seconds, nanos)?,
        lead_id.to_owned(),
    ))
}

/// The answer of a decision RPC: the lead now, and the transition it caused, if any.
fn decided(
    lead: &LeadRecord,
    recorded: &[Recorded],
) -> (pb::LeadQualification, Option<pb::StageTransition>) {
    (
        lead_to_pb(lead, Vec::new()),
        recorded.last().map(Recorded::to_pb),
    )
}

#[tonic::async_trait]
impl QualificationService for QualificationApi {
    async fn get_lead_stage(
        &self,
        request: Request<pb::GetLeadStageRequest>,
    ) -> Result<Response<pb::GetLeadStageResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let lead_id = required(&r.lead_id, "lead_id", &mut violations);
        violations.into_result(()).map_err(Error::from)?;
        let lead = self.lead(&tenant.0, lead_id).await?;
        Ok(Response::new(pb::GetLeadStageResponse {
            lead: Some(self.lead_to_pb(&tenant.0, &lead).await?),
            merged: lead.merged,
        }))
    }

    async fn list_leads(
        &self,
        request: Request<pb::ListLeadsRequest>,
    ) -> Result<Response<pb::ListLeadsResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let stage = match r.stage {
            0 => None,
            n => convert::stage_from_pb(n).or_else(|| {
                violations.add("stage", "not a lead stage");
                None
            }),
        };
        let source_channel = match r.source_channel {
            0 => None,
            n if leadflow_proto::common::v1::SourceChannel::try_from(n).is_ok() => Some(n),
            _ => {
                violations.add("source_channel", "not a source channel");
                None
            }
        };
        let size = page_size(r.page_size, 100, MAX_PAGE, &mut violations);
        let after = match r.page_token.as_str() {
            "" => None,
            token => parse_lead_cursor(token).or_else(|| {
                violations.add("page_token", "not a token this service issued");
                None
            }),
        };
        violations.into_result(()).map_err(Error::from)?;
        let mut leads = self
            .store
            .list_leads(&tenant.0, stage, source_channel, after, size as u64 + 1)
            .await?;
        let next_page_token = if leads.len() > size {
            leads.truncate(size);
            leads.last().map(lead_cursor).unwrap_or_default()
        } else {
            String::new()
        };
        let ids: Vec<String> = leads.iter().map(|l| l.row.lead_id.clone()).collect();
        let mut merged = self.store.merged_ids(&tenant.0, &ids).await?;
        Ok(Response::new(pb::ListLeadsResponse {
            leads: leads
                .iter()
                .map(|lead| lead_to_pb(lead, merged.remove(&lead.row.lead_id).unwrap_or_default()))
                .collect(),
            next_page_token,
        }))
    }

    async fn get_history(
        &self,
        request: Request<pb::GetHistoryRequest>,
    ) -> Result<Response<pb::GetHistoryResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let lead_id = required(&r.lead_id, "lead_id", &mut violations);
        let size = page_size(r.page_size, 100, MAX_PAGE, &mut violations);
        let after = match r.page_token.as_str() {
            "" => 0,
            token => token.parse::<i64>().unwrap_or_else(|_| {
                violations.add("page_token", "not a token this service issued");
                0
            }),
        };
        violations.into_result(()).map_err(Error::from)?;
        let lead = self.lead(&tenant.0, lead_id).await?;
        let mut rows = self
            .store
            .history(&tenant.0, &lead.row.lead_id, after, size as u64 + 1)
            .await?;
        let next_page_token = if rows.len() > size {
            rows.truncate(size);
            rows.last()
                .map(|(id, _)| id.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::GetHistoryResponse {
            lead_id: lead.row.lead_id,
            transitions: rows.iter().map(|(_, r)| r.to_pb()).collect(),
            next_page_token,
        }))
    }

    async fn record_bant(
        &self,
        request: Request<pb::RecordBantRequest>,
    ) -> Result<Response<pb::RecordBantResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let lead_id = required(&r.lead_id, "lead_id", &mut violations);
        let actor = required(&r.actor_id, "actor_id", &mut violations);
        let bant = match r.bant.as_ref().map(convert::bant_from_pb) {
            None => {
                violations.add("bant", "required");
                None
            }
            Some(Err(bad)) => {
                violations.extend_prefixed("bant", bad);
                None
            }
            Some(Ok(bant)) => Some(bant),
        };
        violations.into_result(()).map_err(Error::from)?;
        let input = Input::RecordBant {
            sdr: actor.to_owned(),
            bant: bant.unwrap_or_default(),
        };
        let (mut answer, duplicate) = self
            .store
            .decide(
                &tenant.0,
                &r.request_id,
                "RecordBant",
                lead_id,
                input,
                "",
                self.clock.now(),
                |lead, recorded| {
                    let (lead, transition) = decided(lead, recorded);
                    pb::RecordBantResponse {
                        lead: Some(lead),
                        transition,
                        duplicate: false,
                    }
                },
            )
            .await?;
        answer.duplicate = duplicate;
        Ok(Response::new(answer))
    }

    async fn accept_lead(
        &self,
        request: Request<pb::AcceptLeadRequest>,
    ) -> Result<Response<pb::AcceptLeadResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let lead_id = required(&r.lead_id, "lead_id", &mut violations);
        let actor = required(&r.actor_id, "actor_id", &mut violations);
        check_note(&r.note, &mut violations);
        violations.into_result(()).map_err(Error::from)?;
        let input = Input::Accept {
            sdr: actor.to_owned(),
        };
        let (mut answer, duplicate) = self
            .store
            .decide(
                &tenant.0,
                &r.request_id,
                "AcceptLead",
                lead_id,
                input,
                &r.note,
                self.clock.now(),
                |lead, recorded| {
                    let (lead, transition) = decided(lead, recorded);
                    pb::AcceptLeadResponse {
                        lead: Some(lead),
                        transition,
                        duplicate: false,
                    }
                },
            )
            .await?;
        answer.duplicate = duplicate;
        Ok(Response::new(answer))
    }

    async fn reject_lead(
        &self,
        request: Request<pb::RejectLeadRequest>,
    ) -> Result<Response<pb::RejectLeadResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let lead_id = required(&r.lead_id, "lead_id", &mut violations);
        let actor = required(&r.actor_id, "actor_id", &mut violations);
        let reason = convert::reject_reason_from_pb(r.reason);
        if reason.is_none() {
            violations.add(
                "reason",
                "inaccurate data, not the ideal customer profile, or premature",
            );
        }
        check_note(&r.note, &mut violations);
        violations.into_result(()).map_err(Error::from)?;
        let Some(reason) = reason else {
            return Err(Error::invalid("reason", "required").into());
        };
        let input = Input::Reject {
            sdr: actor.to_owned(),
            reason,
        };
        let (mut answer, duplicate) = self
            .store
            .decide(
                &tenant.0,
                &r.request_id,
                "RejectLead",
                lead_id,
                input,
                &r.note,
                self.clock.now(),
                |lead, recorded| {
                    let (lead, transition) = decided(lead, recorded);
                    pb::RejectLeadResponse {
                        lead: Some(lead),
                        transition,
                        duplicate: false,
                    }
                },
            )
            .await?;
        answer.duplicate = duplicate;
        Ok(Response::new(answer))
    }

    async fn get_funnel(
        &self,
        request: Request<pb::GetFunnelRequest>,
    ) -> Result<Response<pb::GetFunnelResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let period = match convert::funnel_period_from_pb(&r) {
            Ok(period) => Some(period),
            Err(bad) => {
                violations.extend(bad);
                None
            }
        };
        let mut by_channel = false;
        let mut by_version = false;
        for (i, dimension) in r.group_by.iter().enumerate() {
            match pb::FunnelDimension::try_from(*dimension) {
                Ok(pb::FunnelDimension::SourceChannel) => by_channel = true,
                Ok(pb::FunnelDimension::DefinitionVersion) => by_version = true,
                _ => violations.add(
                    format!("group_by[{i}]"),
                    "source channel or definition version",
                ),
            }
        }
        for (i, channel) in r.source_channels.iter().enumerate() {
            if *channel == 0
                || leadflow_proto::common::v1::SourceChannel::try_from(*channel).is_err()
            {
                violations.add(format!("source_channels[{i}]"), "not a source channel");
            }
        }
        violations.into_result(()).map_err(Error::from)?;
        let Some(period) = period else {
            return Err(Error::invalid("start_time", "required").into());
        };
        let leads = self
            .store
            .funnel_leads(&tenant.0, period.start, period.end, &r.source_channels)
            .await?;
        let total = lead_figures(leads.iter(), period);
        let mut keyed: BTreeMap<(i32, i32), Vec<&FunnelLead>> = BTreeMap::new();
        if by_channel || by_version {
            for lead in &leads {
                let channel = if by_channel { lead.source_channel } else { 0 };
                let version = if by_version {
                    version_in_period(lead, period)
                } else {
                    0
                };
                keyed.entry((channel, version)).or_default().push(lead);
            }
        }
        Ok(Response::new(pb::GetFunnelResponse {
            groups: keyed
                .into_iter()
                .map(|((channel, version), group)| {
                    convert::figures_to_pb(
                        &lead_figures(group.into_iter(), period),
                        channel,
                        version,
                    )
                })
                .collect(),
            total: Some(convert::figures_to_pb(&total, 0, 0)),
            report_time: Some(to_timestamp(self.clock.now())),
        }))
    }

    async fn publish_definition(
        &self,
        request: Request<pb::PublishDefinitionRequest>,
    ) -> Result<Response<pb::PublishDefinitionResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let definition = match r.definition {
            None => return Err(Error::invalid("definition", "required").into()),
            Some(definition) => convert::definition_from_pb(definition).map_err(|bad| {
                let mut violations = FieldViolations::new();
                violations.extend_prefixed("definition", bad);
                Error::Invalid(violations)
            })?,
        };
        let (definition, created, duplicate) = self
            .store
            .publish(&tenant.0, &r.request_id, definition, self.clock.now())
            .await?;
        Ok(Response::new(pb::PublishDefinitionResponse {
            definition: Some(convert::definition_to_pb(&definition, Some(created))),
            duplicate,
        }))
    }

    async fn get_definition(
        &self,
        request: Request<pb::GetDefinitionRequest>,
    ) -> Result<Response<pb::GetDefinitionResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let version = request.into_inner().version;
        if version < 0 {
            return Err(Error::invalid("version", "zero (the active one) or more").into());
        }
        let (active, active_created) = self.store.active_definition(&tenant.0).await?;
        let (definition, created) = if version == 0 {
            (active.clone(), active_created)
        } else {
            self.store
                .definition(&tenant.0, version)
                .await?
                .ok_or_else(|| Error::NotFound(format!("definition version {version}")))?
        };
        Ok(Response::new(pb::GetDefinitionResponse {
            definition: Some(convert::definition_to_pb(&definition, Some(created))),
            active_version: active.version,
        }))
    }

    async fn list_definition_versions(
        &self,
        request: Request<pb::ListDefinitionVersionsRequest>,
    ) -> Result<Response<pb::ListDefinitionVersionsResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let size = page_size(r.page_size, 20, MAX_DEFINITION_PAGE, &mut violations);
        let before = match r.page_token.as_str() {
            "" => None,
            token => token.parse::<i32>().ok().or_else(|| {
                violations.add("page_token", "not a token this service issued");
                None
            }),
        };
        violations.into_result(()).map_err(Error::from)?;
        let mut definitions = self
            .store
            .definitions(&tenant.0, before, size as u64 + 1)
            .await?;
        let next_page_token = if definitions.len() > size {
            definitions.truncate(size);
            definitions
                .last()
                .map(|(d, _)| d.version.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let (active, _) = self.store.active_definition(&tenant.0).await?;
        Ok(Response::new(pb::ListDefinitionVersionsResponse {
            definitions: definitions
                .iter()
                .map(|(d, created)| convert::definition_to_pb(d, Some(*created)))
                .collect(),
            next_page_token,
            active_version: active.version,
        }))
    }
}

/// The funnel of `leads`: the domain's figures from their transitions, plus the leads first
/// seen in the period as entries to the lead stage (a lead is created there, not moved there).
fn lead_figures<'a>(
    leads: impl Iterator<Item = &'a FunnelLead> + Clone,
    period: Period,
) -> Figures {
    let mut figures = funnel::figures(leads.clone().map(|l| l.transitions.as_slice()), period);
    let created = leads.filter(|l| period.contains(l.created_at)).count() as u64;
    if created > 0 {
        *figures.entered.entry(Stage::Lead).or_default() += created;
    }
    figures
}

/// The definition version a lead is grouped under: that of its first transition in the period,
/// or of its latest when it only arrived in the period.
fn version_in_period(lead: &FunnelLead, period: Period) -> i32 {
    lead.transitions
        .iter()
        .find(|t| period.contains(t.at))
        .map_or(lead.definition_version, |t| t.definition_version)
}

#[tonic::async_trait]
impl QualificationInternalService for QualificationApi {
    async fn apply_score_changes(
        &self,
        request: Request<pb::ApplyScoreChangesRequest>,
    ) -> Result<Response<pb::ApplyScoreChangesResponse>, Status> {
        let events = request.into_inner().events;
        check_headers(events.iter().map(|e| e.header.as_ref())).map_err(Error::from)?;
        let applied = self
            .store
            .apply_score_changes(events, self.clock.now())
            .await?;
        Ok(Response::new(pb::ApplyScoreChangesResponse {
            applied_count: applied.applied,
            duplicate_count: applied.duplicates,
        }))
    }

    async fn apply_handoff_decisions(
        &self,
        request: Request<pb::ApplyHandoffDecisionsRequest>,
    ) -> Result<Response<pb::ApplyHandoffDecisionsResponse>, Status> {
        let events = request.into_inner().events;
        check_headers(events.iter().map(|e| e.header.as_ref())).map_err(Error::from)?;
        let applied = self
            .store
            .apply_handoff_decisions(events, self.clock.now())
            .await?;
        Ok(Response::new(pb::ApplyHandoffDecisionsResponse {
            applied_count: applied.applied,
            duplicate_count: applied.duplicates,
            ignored_count: applied.ignored,
        }))
    }
}
