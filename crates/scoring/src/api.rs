//! The gRPC handlers, kept thin: request → validation → store/domain → response.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use leadflow_proto::scoring::v1::{
    self as pb, scoring_internal_service_server::ScoringInternalService,
    scoring_service_server::ScoringService,
};
use leadflow_runtime::auth::tenant_of;
use leadflow_runtime::clock::SharedClock;
use leadflow_runtime::error::FieldViolations;
use leadflow_runtime::outbox::inbox::check_headers;
use tokio::runtime::Handle;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::domain::{ActivityFact, LeadScore, Model};
use crate::error::Error;
use crate::store::{LeadState, ScoreRead, Store, rescore_job};

/// Most ids in one `BatchGetScores`.
pub const MAX_BATCH_IDS: usize = 1000;
/// Most activities in one `WhatIf`.
pub const MAX_WHAT_IF_ACTIVITIES: usize = 1000;
/// Largest `ListModelVersions` page.
pub const MAX_MODEL_PAGE: usize = 100;

/// The public `ScoringService` and the internal `ScoringInternalService`.
#[derive(Debug, Clone)]
pub struct ScoringApi {
    store: Store,
    clock: SharedClock,
    /// Where rescore jobs run; `None`: on the runtime that starts them.
    jobs_on: Option<Handle>,
}

impl ScoringApi {
    /// Handlers over `store`, reading time from `clock`.
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self {
            store,
            clock,
            jobs_on: None,
        }
    }

    /// Runs rescore jobs on `runtime` (the drain's, in one process with the other services).
    #[must_use]
    pub fn with_jobs_on(mut self, runtime: Handle) -> Self {
        self.jobs_on = Some(runtime);
        self
    }

    /// Runs a rescore job in the background, recording a failure on the job.
    pub fn spawn_job(&self, job: rescore_job::Model) {
        let store = self.store.clone();
        let clock = self.clock.clone();
        let job = async move {
            let (tenant, job_id) = (job.tenant_id.clone(), job.job_id.clone());
            let now = {
                let clock = clock.clone();
                move || clock.now()
            };
            if let Err(err) = store.run_job(job, now).await {
                tracing::error!(tenant, job_id, error = %err, "rescore job failed");
                if let Err(err) = store
                    .fail_job(&tenant, &job_id, &err.to_string(), clock.now())
                    .await
                {
                    tracing::error!(tenant, job_id, error = %err, "cannot record the job's failure");
                }
            }
        };
        let runtime = self.jobs_on.clone().unwrap_or_else(Handle::current);
        drop(runtime.spawn(job));
    }

    async fn lead(&self, tenant: &str, lead_id: &str) -> Result<(LeadState, Arc<Model>), Error> {
        let lead_id = lead_id_of(lead_id)?;
        let lead = self
            .store
            .lead(tenant, lead_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("lead {lead_id}")))?;
        let model = self.model_of(tenant, lead.row.model_version).await?;
        Ok((lead, model))
    }

    async fn model_of(&self, tenant: &str, version: i32) -> Result<Arc<Model>, Error> {
        self.store
            .scoring_model(tenant, version)
            .await?
            .ok_or_else(|| Error::Corrupt(format!("model version {version} missing")))
    }

    /// The score `read` gives at the service's now under `model`.
    fn score_of(&self, read: &ScoreRead, model: &Model) -> pb::Score {
        let view = read.inputs.score(model, self.clock.now());
        convert::score_to_pb(&read.lead_id, &view, model.version, Some(read.updated_at))
    }

    fn explanation(&self, lead: &LeadState, model: &Model) -> pb::ScoreExplanation {
        let now = self.clock.now();
        let view = lead.score.score(model, now);
        let explanation = lead.score.explain(model, now);
        convert::explanation_to_pb(
            &lead.row.lead_id,
            &view,
            &explanation,
            model,
            model.version,
            Some(lead.row.updated_at),
        )
    }

    async fn explain(
        &self,
        tenant: &str,
        lead_id: &str,
    ) -> Result<(pb::ScoreExplanation, bool), Error> {
        let (lead, model) = self.lead(tenant, lead_id).await?;
        Ok((self.explanation(&lead, &model), lead.merged))
    }
}

fn job_to_pb(job: rescore_job::Model) -> pb::RescoreJob {
    pb::RescoreJob {
        job_id: job.job_id,
        model_version: job.model_version,
        state: job.state,
        total_leads: job.total_leads,
        processed_leads: job.processed_leads,
        changed_leads: job.changed_leads,
        create_time: Some(convert::to_timestamp(job.created_at)),
        start_time: job.started_at.map(convert::to_timestamp),
        end_time: job.ended_at.map(convert::to_timestamp),
        error_message: job.error.unwrap_or_default(),
    }
}

/// The requested lead id, trimmed; it is required.
fn lead_id_of(raw: &str) -> Result<&str, Error> {
    let id = raw.trim();
    if id.is_empty() {
        return Err(Error::invalid("lead_id", "required"));
    }
    Ok(id)
}

fn request_id(raw: &str) -> Result<&str, Error> {
    let id = raw.trim();
    if id.is_empty() || id.len() > 128 {
        return Err(Error::invalid(
            "request_id",
            "required, at most 128 bytes: it makes retries safe",
        ));
    }
    Ok(id)
}

#[tonic::async_trait]
impl ScoringService for ScoringApi {
    async fn get_score(
        &self,
        request: Request<pb::GetScoreRequest>,
    ) -> Result<Response<pb::GetScoreResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let lead_id = lead_id_of(&request.get_ref().lead_id)?;
        let read = self
            .store
            .score_read(&tenant.0, lead_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("lead {lead_id}")))?;
        let model = self.model_of(&tenant.0, read.model_version).await?;
        Ok(Response::new(pb::GetScoreResponse {
            score: Some(self.score_of(&read, &model)),
            merged: read.merged,
        }))
    }

    async fn batch_get_scores(
        &self,
        request: Request<pb::BatchGetScoresRequest>,
    ) -> Result<Response<pb::BatchGetScoresResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let ids = request.into_inner().lead_ids;
        if ids.is_empty() || ids.len() > MAX_BATCH_IDS {
            return Err(Error::invalid(
                "lead_ids",
                &format!("1 to {MAX_BATCH_IDS} ids, not {}", ids.len()),
            )
            .into());
        }
        let mut response = pb::BatchGetScoresResponse::default();
        let trimmed: Vec<String> = ids.iter().map(|id| id.trim().to_owned()).collect();
        let leads = self.store.score_reads(&tenant.0, &trimmed).await?;
        let mut models: Vec<Arc<Model>> = Vec::new();
        for (id, key) in ids.into_iter().zip(&trimmed) {
            let Some(lead) = leads.get(key.as_str()) else {
                response.not_found_lead_ids.push(id);
                continue;
            };
            let model = match models.iter().find(|m| m.version == lead.model_version) {
                Some(model) => model.clone(),
                None => {
                    let model = self.model_of(&tenant.0, lead.model_version).await?;
                    models.push(model.clone());
                    model
                }
            };
            response.results.push(pb::BatchGetScoresResult {
                requested_lead_id: id,
                score: Some(self.score_of(lead, &model)),
            });
        }
        Ok(Response::new(response))
    }

    async fn explain_score(
        &self,
        request: Request<pb::ExplainScoreRequest>,
    ) -> Result<Response<pb::ExplainScoreResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let (explanation, merged) = self.explain(&tenant.0, &request.get_ref().lead_id).await?;
        Ok(Response::new(pb::ExplainScoreResponse {
            explanation: Some(explanation),
            merged,
        }))
    }

    async fn what_if(
        &self,
        request: Request<pb::WhatIfRequest>,
    ) -> Result<Response<pb::WhatIfResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        if r.activities.len() > MAX_WHAT_IF_ACTIVITIES {
            violations.add("activities", format!("at most {MAX_WHAT_IF_ACTIVITIES}"));
        }
        let as_of = match r.as_of_time.as_ref().map(convert::timestamp) {
            Some(None) => {
                violations.add("as_of_time", "not a valid time");
                self.clock.now()
            }
            Some(Some(t)) => t,
            None => self.clock.now(),
        };
        let mut facts: Vec<ActivityFact> = Vec::new();
        for (i, activity) in r.activities.iter().enumerate() {
            match convert::fact_from_pb(&i.to_string(), activity) {
                Ok(fact) => facts.push(fact),
                Err(nested) => violations.extend_prefixed(&format!("activities[{i}]"), nested),
            }
        }
        violations.into_result(()).map_err(Error::from)?;
        let model = if r.model_version == 0 {
            self.store.active_model(self.store.db(), &tenant.0).await?.0
        } else {
            self.store
                .model(&tenant.0, r.model_version)
                .await?
                .ok_or_else(|| Error::NotFound(format!("model version {}", r.model_version)))?
                .0
        };
        let first_seen: DateTime<Utc> = facts
            .iter()
            .map(|f| f.occurred_at)
            .min()
            .unwrap_or(as_of)
            .min(as_of);
        let attributes = convert::profile_attributes(&r.profile.unwrap_or_default());
        let lead = LeadScore::replay(&model, &attributes, &facts, first_seen, as_of);
        let view = lead.score(&model, as_of);
        let explanation = lead.explain(&model, as_of);
        Ok(Response::new(pb::WhatIfResponse {
            explanation: Some(convert::explanation_to_pb(
                "",
                &view,
                &explanation,
                &model,
                model.version,
                None,
            )),
        }))
    }

    async fn publish_model(
        &self,
        request: Request<pb::PublishModelRequest>,
    ) -> Result<Response<pb::PublishModelResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let request_id = request_id(&r.request_id)?;
        let model = match r.model {
            Some(model) => convert::model_from_pb(model).map_err(|nested| {
                let mut violations = FieldViolations::new();
                violations.extend_prefixed("model", nested);
                Error::Invalid(violations)
            })?,
            None => return Err(Error::invalid("model", "required").into()),
        };
        let (model, created, duplicate) = self
            .store
            .publish(&tenant.0, request_id, model, self.clock.now())
            .await?;
        Ok(Response::new(pb::PublishModelResponse {
            model: Some(convert::model_to_pb(&model, created)),
            duplicate,
        }))
    }

    async fn get_model(
        &self,
        request: Request<pb::GetModelRequest>,
    ) -> Result<Response<pb::GetModelResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let version = request.get_ref().version;
        let (active, active_created) = self.store.active_model(self.store.db(), &tenant.0).await?;
        let (model, created) = if version == 0 || version == active.version {
            (active.clone(), active_created)
        } else {
            self.store
                .model(&tenant.0, version)
                .await?
                .ok_or_else(|| Error::NotFound(format!("model version {version}")))?
        };
        Ok(Response::new(pb::GetModelResponse {
            model: Some(convert::model_to_pb(&model, created)),
            active_version: active.version,
        }))
    }

    async fn list_model_versions(
        &self,
        request: Request<pb::ListModelVersionsRequest>,
    ) -> Result<Response<pb::ListModelVersionsResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        let page_size = match usize::try_from(r.page_size) {
            Ok(0) => 20,
            Ok(n) if n <= MAX_MODEL_PAGE => n,
            _ => {
                violations.add("page_size", format!("between 0 and {MAX_MODEL_PAGE}"));
                20
            }
        };
        let before = match r.page_token.as_str() {
            "" => None,
            token => token.parse::<i32>().ok().or_else(|| {
                violations.add("page_token", "not a token this service issued");
                None
            }),
        };
        violations.into_result(()).map_err(Error::from)?;
        let mut models = self
            .store
            .models(&tenant.0, before, page_size as u64 + 1)
            .await?;
        let next_page_token = if models.len() > page_size {
            models.truncate(page_size);
            models
                .last()
                .map(|(m, _)| m.version.to_string())
                .unwrap_or_default()
        } else {
            String::new()
        };
        let active_version = self
            .store
            .active_model(self.store.db(), &tenant.0)
            .await?
            .0
            .version;
        Ok(Response::new(pb::ListModelVersionsResponse {
            models: models
                .iter()
                .map(|(m, created)| convert::model_to_pb(m, *created))
                .collect(),
            next_page_token,
            active_version,
        }))
    }

    async fn rescore(
        &self,
        request: Request<pb::RescoreRequest>,
    ) -> Result<Response<pb::RescoreResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let request_id = request_id(&request.get_ref().request_id)?;
        let (job, duplicate) = self
            .store
            .create_job(&tenant.0, request_id, self.clock.now())
            .await?;
        if !duplicate {
            self.spawn_job(job.clone());
        }
        Ok(Response::new(pb::RescoreResponse {
            job: Some(job_to_pb(job)),
            duplicate,
        }))
    }

    async fn get_rescore_job(
        &self,
        request: Request<pb::GetRescoreJobRequest>,
    ) -> Result<Response<pb::GetRescoreJobResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let job_id = request.get_ref().job_id.trim();
        if job_id.is_empty() {
            return Err(Error::invalid("job_id", "required").into());
        }
        let job = self
            .store
            .job(&tenant.0, job_id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("rescore job {job_id}")))?;
        Ok(Response::new(pb::GetRescoreJobResponse {
            job: Some(job_to_pb(job)),
        }))
    }
}

#[tonic::async_trait]
impl ScoringInternalService for ScoringApi {
    async fn apply_lead_events(
        &self,
        request: Request<pb::ApplyLeadEventsRequest>,
    ) -> Result<Response<pb::ApplyLeadEventsResponse>, Status> {
        let events = request.into_inner().events;
        check_headers(events.iter().map(|e| e.header.as_ref())).map_err(Error::from)?;
        let applied = self
            .store
            .apply_lead_events(events, self.clock.now())
            .await?;
        Ok(Response::new(pb::ApplyLeadEventsResponse {
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
        let records = events
            .into_iter()
            .filter_map(|event| {
                let payload = prost::Message::encode_to_vec(&event);
                event
                    .header
                    .map(|h| (h.message_id, h.tenant_id, h.lead_id, payload))
            })
            .collect();
        let applied = self
            .store
            .record_decisions(records, self.clock.now())
            .await?;
        Ok(Response::new(pb::ApplyHandoffDecisionsResponse {
            applied_count: applied.applied,
            duplicate_count: applied.duplicates,
        }))
    }

    async fn explain_lead_score(
        &self,
        request: Request<pb::ExplainLeadScoreRequest>,
    ) -> Result<Response<pb::ExplainLeadScoreResponse>, Status> {
        let r = request.into_inner();
        if r.tenant_id.trim().is_empty() {
            return Err(Error::invalid("tenant_id", "required").into());
        }
        let (explanation, merged) = self.explain(r.tenant_id.trim(), &r.lead_id).await?;
        Ok(Response::new(pb::ExplainLeadScoreResponse {
            explanation: Some(explanation),
            merged,
        }))
    }
}
