//! Delivery of handoff's outbox: decisions and outcomes to qualification (they move the lead's
//! stage) and to scoring (recorded for the closed loop), each its own relay.

use std::time::Duration;

use leadflow_proto::handoff::events::v1::HandoffDecision;
use leadflow_proto::qualification::v1::ApplyHandoffDecisionsRequest as QualificationRequest;
use leadflow_proto::qualification::v1::qualification_internal_service_client::QualificationInternalServiceClient;
use leadflow_proto::scoring::v1::ApplyHandoffDecisionsRequest as ScoringRequest;
use leadflow_proto::scoring::v1::scoring_internal_service_client::ScoringInternalServiceClient;
use leadflow_runtime::client::{ServiceInterceptor, lazy_channel};
use leadflow_runtime::outbox::{DeliveryError, OutboxMessage, OutboxSink, decode_batch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Deadline of one delivery call.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

type Intercepted = InterceptedService<Channel, ServiceInterceptor>;

fn decode(messages: &[OutboxMessage]) -> Result<Vec<HandoffDecision>, DeliveryError> {
    decode_batch(messages, |event: &mut HandoffDecision| {
        event.header.as_mut()
    })
}

fn failed(status: tonic::Status) -> DeliveryError {
    DeliveryError(format!("{:?}: {}", status.code(), status.message()))
}

/// Sends decisions to qualification's `ApplyHandoffDecisions`.
#[derive(Debug, Clone)]
pub struct QualificationSink {
    client: QualificationInternalServiceClient<Intercepted>,
}

impl QualificationSink {
    /// A sink calling qualification at `url` with `credential`.
    pub fn new(url: &str, credential: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            client: QualificationInternalServiceClient::with_interceptor(
                lazy_channel(url)?,
                ServiceInterceptor::new(credential)?,
            ),
        })
    }
}

impl OutboxSink for QualificationSink {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let mut request = tonic::Request::new(QualificationRequest {
            events: decode(messages)?,
        });
        request.set_timeout(DELIVERY_TIMEOUT);
        self.client
            .clone()
            .apply_handoff_decisions(request)
            .await
            .map_err(failed)?;
        Ok(())
    }
}

/// Sends decisions to scoring's `ApplyHandoffDecisions`.
#[derive(Debug, Clone)]
pub struct ScoringSink {
    client: ScoringInternalServiceClient<Intercepted>,
}

impl ScoringSink {
    /// A sink calling scoring at `url` with `credential`.
    pub fn new(url: &str, credential: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            client: ScoringInternalServiceClient::with_interceptor(
                lazy_channel(url)?,
                ServiceInterceptor::new(credential)?,
            ),
        })
    }
}

impl OutboxSink for ScoringSink {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let mut request = tonic::Request::new(ScoringRequest {
            events: decode(messages)?,
        });
        request.set_timeout(DELIVERY_TIMEOUT);
        self.client
            .clone()
            .apply_handoff_decisions(request)
            .await
            .map_err(failed)?;
        Ok(())
    }
}
