//! The warm context of a hand-off: the score and its explanation from scoring, and the lead's
//! recent activities from ingestion, fetched over their internal RPCs when the hand-off is
//! requested, then stored with it.

use std::time::Duration;

use leadflow_proto::handoff::v1::WarmContext;
use leadflow_proto::ingestion::v1::GetLeadTimelineRequest;
use leadflow_proto::ingestion::v1::ingestion_internal_service_client::IngestionInternalServiceClient;
use leadflow_proto::scoring::v1::ExplainLeadScoreRequest;
use leadflow_proto::scoring::v1::scoring_internal_service_client::ScoringInternalServiceClient;
use leadflow_runtime::client::{ServiceInterceptor, lazy_channel};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::error::Error;

/// Most recent activities a context carries.
pub const RECENT_ACTIVITIES: i32 = 50;
/// Deadline of each lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

type Intercepted = InterceptedService<Channel, ServiceInterceptor>;

/// Builds warm contexts from scoring and ingestion.
#[derive(Debug, Clone)]
pub struct ContextBuilder {
    scoring: ScoringInternalServiceClient<Intercepted>,
    ingestion: IngestionInternalServiceClient<Intercepted>,
}

impl ContextBuilder {
    /// A builder calling scoring at `scoring_url` and ingestion at `ingestion_url` with the
    /// internal `credential`.
    pub fn new(
        scoring_url: &str,
        ingestion_url: &str,
        credential: Option<&str>,
    ) -> anyhow::Result<Self> {
        let interceptor = ServiceInterceptor::new(credential)?;
        Ok(Self {
            scoring: ScoringInternalServiceClient::with_interceptor(
                lazy_channel(scoring_url)?,
                interceptor.clone(),
            ),
            ingestion: IngestionInternalServiceClient::with_interceptor(
                lazy_channel(ingestion_url)?,
                interceptor,
            ),
        })
    }

    /// The score explanation and recent activities of `lead_id`. A lead either service does
    /// not know yet gets an empty part; an unreachable service is an error, so the request is
    /// retried rather than handed over without its context.
    pub async fn build(&self, tenant: &str, lead_id: &str) -> Result<WarmContext, Error> {
        let mut explain = tonic::Request::new(ExplainLeadScoreRequest {
            tenant_id: tenant.to_owned(),
            lead_id: lead_id.to_owned(),
        });
        explain.set_timeout(LOOKUP_TIMEOUT);
        let mut timeline = tonic::Request::new(GetLeadTimelineRequest {
            tenant_id: tenant.to_owned(),
            lead_id: lead_id.to_owned(),
            page_size: RECENT_ACTIVITIES,
            ..Default::default()
        });
        timeline.set_timeout(LOOKUP_TIMEOUT);
        let (mut scoring, mut ingestion) = (self.scoring.clone(), self.ingestion.clone());
        let (explained, activities) = tokio::join!(
            scoring.explain_lead_score(explain),
            ingestion.get_lead_timeline(timeline)
        );
        let score_explanation = match explained {
            Ok(response) => response.into_inner().explanation,
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => {
                return Err(Error::Unavailable(format!(
                    "scoring explain: {}",
                    status.message()
                )));
            }
        };
        let recent_activities = match activities {
            Ok(response) => response
                .into_inner()
                .timeline
                .map(|t| t.entries)
                .unwrap_or_default(),
            Err(status) if status.code() == tonic::Code::NotFound => Vec::new(),
            Err(status) => {
                return Err(Error::Unavailable(format!(
                    "ingestion timeline: {}",
                    status.message()
                )));
            }
        };
        Ok(WarmContext {
            score_explanation,
            recent_activities,
            ..Default::default()
        })
    }
}
