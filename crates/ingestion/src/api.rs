//! The gRPC handlers, kept thin: request → validation → store → response.

use leadflow_proto::common::v1::ItemError;
use leadflow_proto::ingestion::v1::{
    self as pb, batch_item_result::Result as ItemResult,
    ingestion_internal_service_server::IngestionInternalService,
    ingestion_service_server::IngestionService,
};
use leadflow_runtime::auth::tenant_of;
use leadflow_runtime::clock::SharedClock;
use leadflow_runtime::error::FieldViolations;
use tonic::{Code, Request, Response, Status};

use crate::convert::{self, Command, micros_to_timestamp, profile_to_pb, to_timestamp};
use crate::domain::limits::{DEFAULT_PAGE_SIZE, MAX_BATCH_ITEMS, MAX_PAGE_SIZE};
use crate::error::Error;
use crate::store::{Accepted, LeadView, Store, TimelinePage};
use crate::store::{Cursor, TimelineQuery};

/// The public `IngestionService` and the internal `IngestionInternalService`.
#[derive(Debug, Clone)]
pub struct IngestionApi {
    store: Store,
    clock: SharedClock,
}

impl IngestionApi {
    /// Handlers over `store`, reading time from `clock`.
    pub fn new(store: Store, clock: SharedClock) -> Self {
        Self { store, clock }
    }

    async fn timeline(
        &self,
        tenant: &str,
        request: TimelineRequest<'_>,
    ) -> Result<pb::GetTimelineResponse, Error> {
        let mut violations = FieldViolations::new();
        if request.lead_id.trim().is_empty() {
            violations.add("lead_id", "required");
        }
        let page_size = match usize::try_from(request.page_size) {
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) if n <= MAX_PAGE_SIZE => n,
            _ => {
                violations.add(
                    "page_size",
                    format!("must be between 0 and {MAX_PAGE_SIZE}"),
                );
                DEFAULT_PAGE_SIZE
            }
        };
        let after = match request.page_token {
            "" => None,
            token => Cursor::parse(token).or_else(|| {
                violations.add("page_token", "not a token this service issued");
                None
            }),
        };
        let mut time = |field: &str, ts: Option<&prost_types::Timestamp>| {
            ts.and_then(|ts| {
                convert::timestamp(ts).or_else(|| {
                    violations.add(field, "not a valid time");
                    None
                })
            })
        };
        let start = time("start_time", request.start_time);
        let end = time("end_time", request.end_time);
        let query = violations.into_result(TimelineQuery {
            lead_id: request.lead_id.trim().to_owned(),
            types: request.types.to_vec(),
            start,
            end,
            page_size,
            after,
        })?;
        let page = self
            .store
            .timeline(tenant, &query)
            .await?
            .ok_or_else(|| Error::LeadNotFound(query.lead_id.clone()))?;
        Ok(timeline_to_pb(page))
    }
}

/// The fields of a timeline request, public or internal.
struct TimelineRequest<'a> {
    lead_id: &'a str,
    types: &'a [String],
    start_time: Option<&'a prost_types::Timestamp>,
    end_time: Option<&'a prost_types::Timestamp>,
    page_size: i32,
    page_token: &'a str,
}

#[tonic::async_trait]
impl IngestionService for IngestionApi {
    async fn identify(
        &self,
        request: Request<pb::IdentifyRequest>,
    ) -> Result<Response<pb::IdentifyResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let command =
            convert::identify(request.into_inner(), self.clock.now()).map_err(Error::from)?;
        let accepted = self
            .apply_one(&tenant.0, Command::Identify(command))
            .await?;
        Ok(Response::new(identify_response(accepted)))
    }

    async fn track(
        &self,
        request: Request<pb::TrackRequest>,
    ) -> Result<Response<pb::TrackResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let command =
            convert::track(request.into_inner(), self.clock.now()).map_err(Error::from)?;
        let accepted = self.apply_one(&tenant.0, Command::Track(command)).await?;
        Ok(Response::new(track_response(accepted)))
    }

    async fn batch(
        &self,
        request: Request<pb::BatchRequest>,
    ) -> Result<Response<pb::BatchResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let items = request.into_inner().items;
        if items.is_empty() || items.len() > MAX_BATCH_ITEMS {
            return Err(Error::from(single_violation(
                "items",
                format!(
                    "a batch holds 1 to {MAX_BATCH_ITEMS} items, not {}",
                    items.len()
                ),
            ))
            .into());
        }
        let now = self.clock.now();
        let mut commands = Vec::with_capacity(items.len());
        let checked: Vec<Checked> = items
            .into_iter()
            .map(|item| match convert::batch_item(item, now) {
                Ok(command) => {
                    let kind = match command {
                        Command::Identify(_) => Checked::Identify,
                        Command::Track(_) => Checked::Track,
                    };
                    commands.push(command);
                    kind
                }
                Err(violations) => Checked::Rejected(violations),
            })
            .collect();
        let mut accepted = self
            .store
            .apply(&tenant.0, commands, now)
            .await?
            .into_iter();
        let mut response = pb::BatchResponse::default();
        for (index, item) in checked.into_iter().enumerate() {
            let result = match item {
                Checked::Rejected(violations) => {
                    response.rejected_count += 1;
                    ItemResult::Error(item_error(index, violations))
                }
                kind => {
                    let Some(answer) = accepted.next() else {
                        return Err(Status::internal("batch answers out of step"));
                    };
                    response.accepted_count += 1;
                    if matches!(kind, Checked::Identify) {
                        ItemResult::Identify(identify_response(answer))
                    } else {
                        ItemResult::Track(track_response(answer))
                    }
                }
            };
            response.results.push(pb::BatchItemResult {
                result: Some(result),
            });
        }
        Ok(Response::new(response))
    }

    async fn get_lead(
        &self,
        request: Request<pb::GetLeadRequest>,
    ) -> Result<Response<pb::GetLeadResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let lead_id = request.into_inner().lead_id;
        if lead_id.trim().is_empty() {
            return Err(Error::from(single_violation("lead_id", "required")).into());
        }
        let view = self
            .store
            .lead(&tenant.0, lead_id.trim())
            .await?
            .ok_or_else(|| Error::LeadNotFound(lead_id.clone()))?;
        Ok(Response::new(pb::GetLeadResponse {
            merged: view.merged,
            lead: Some(lead_to_pb(view)),
        }))
    }

    async fn get_timeline(
        &self,
        request: Request<pb::GetTimelineRequest>,
    ) -> Result<Response<pb::GetTimelineResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let page = self
            .timeline(
                &tenant.0,
                TimelineRequest {
                    lead_id: &r.lead_id,
                    types: &r.types,
                    start_time: r.start_time.as_ref(),
                    end_time: r.end_time.as_ref(),
                    page_size: r.page_size,
                    page_token: &r.page_token,
                },
            )
            .await?;
        Ok(Response::new(page))
    }

    async fn merge_leads(
        &self,
        request: Request<pb::MergeLeadsRequest>,
    ) -> Result<Response<pb::MergeLeadsResponse>, Status> {
        let tenant = tenant_of(&request)?;
        let r = request.into_inner();
        let mut violations = FieldViolations::new();
        for (field, value) in [
            ("message_id", &r.message_id),
            ("source_lead_id", &r.source_lead_id),
            ("target_lead_id", &r.target_lead_id),
        ] {
            if value.trim().is_empty() {
                violations.add(field, "required");
            }
        }
        if !r.source_lead_id.is_empty() && r.source_lead_id == r.target_lead_id {
            violations.add("target_lead_id", "must differ from source_lead_id");
        }
        violations.into_result(()).map_err(Error::from)?;
        let accepted = self
            .store
            .merge(
                &tenant.0,
                r.message_id.trim(),
                r.source_lead_id.trim(),
                r.target_lead_id.trim(),
                self.clock.now(),
            )
            .await?;
        let view = self
            .store
            .lead(&tenant.0, &accepted.lead_id)
            .await?
            .ok_or_else(|| Error::LeadNotFound(accepted.lead_id.clone()))?;
        Ok(Response::new(pb::MergeLeadsResponse {
            lead: Some(lead_to_pb(view)),
            duplicate: accepted.duplicate,
        }))
    }
}

#[tonic::async_trait]
impl IngestionInternalService for IngestionApi {
    async fn get_lead_timeline(
        &self,
        request: Request<pb::GetLeadTimelineRequest>,
    ) -> Result<Response<pb::GetLeadTimelineResponse>, Status> {
        let r = request.into_inner();
        if r.tenant_id.trim().is_empty() {
            return Err(Error::from(single_violation("tenant_id", "required")).into());
        }
        let page = self
            .timeline(
                r.tenant_id.trim(),
                TimelineRequest {
                    lead_id: &r.lead_id,
                    types: &r.types,
                    start_time: r.start_time.as_ref(),
                    end_time: r.end_time.as_ref(),
                    page_size: r.page_size,
                    page_token: &r.page_token,
                },
            )
            .await?;
        Ok(Response::new(pb::GetLeadTimelineResponse {
            timeline: Some(page),
        }))
    }
}

impl IngestionApi {
    async fn apply_one(&self, tenant: &str, command: Command) -> Result<Accepted, Error> {
        let mut answers = self
            .store
            .apply(tenant, vec![command], self.clock.now())
            .await?;
        answers
            .pop()
            .ok_or_else(|| Error::Store(sea_orm::DbErr::Custom("no answer for the command".into())))
    }
}

fn single_violation(field: &str, description: impl Into<String>) -> FieldViolations {
    let mut violations = FieldViolations::new();
    violations.add(field, description);
    violations
}

/// A `Batch` item once checked: the kind of command it was accepted as (the store answers
/// accepted commands in order), or why it was rejected.
enum Checked {
    Identify,
    Track,
    Rejected(FieldViolations),
}

fn item_error(index: usize, violations: FieldViolations) -> ItemError {
    ItemError {
        code: Code::InvalidArgument as i32,
        message: format!("items[{index}]: invalid: {violations}"),
        field_violations: violations
            .violations()
            .iter()
            .map(|v| leadflow_proto::common::v1::FieldViolation {
                field: format!("items[{index}].{}", v.field),
                description: v.description.clone(),
            })
            .collect(),
    }
}

fn identify_response(accepted: Accepted) -> pb::IdentifyResponse {
    pb::IdentifyResponse {
        lead_id: accepted.lead_id,
        duplicate: accepted.duplicate,
        merged_lead_ids: accepted.merged_lead_ids,
    }
}

fn track_response(accepted: Accepted) -> pb::TrackResponse {
    pb::TrackResponse {
        lead_id: accepted.lead_id,
        activity_id: accepted.activity_id.unwrap_or_default(),
        duplicate: accepted.duplicate,
    }
}

fn lead_to_pb(view: LeadView) -> pb::Lead {
    pb::Lead {
        lead_id: view.lead.lead_id,
        user_ids: view.user_ids,
        anonymous_ids: view.anonymous_ids,
        profile: Some(profile_to_pb(&view.profile)),
        merged_lead_ids: view.merged_lead_ids,
        create_time: Some(to_timestamp(view.lead.created_at)),
        update_time: Some(to_timestamp(view.lead.updated_at)),
        last_activity_time: view.activities.last_occurred_us.map(micros_to_timestamp),
        activity_count: view.activities.count,
    }
}

fn timeline_to_pb(page: TimelinePage) -> pb::GetTimelineResponse {
    let entries = page
        .entries
        .into_iter()
        .map(|row| pb::TimelineEntry {
            original_lead_id: if row.original_lead_id == row.lead_id {
                String::new()
            } else {
                row.original_lead_id
            },
            activity: Some(leadflow_proto::common::v1::Activity {
                r#type: row.activity_type,
                occurred_at: Some(micros_to_timestamp(row.occurred_at_us)),
                properties: serde_json::from_str(&row.properties).unwrap_or_default(),
            }),
            receive_time: Some(to_timestamp(row.received_at)),
            activity_id: row.activity_id,
        })
        .collect();
    pb::GetTimelineResponse {
        lead_id: page.lead_id,
        entries,
        next_page_token: page.next_page_token,
    }
}
