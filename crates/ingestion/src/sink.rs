//! Delivery of ingestion's outbox to scoring's internal `ApplyLeadEvents`.

use std::time::Duration;

use leadflow_proto::ingestion::v1::LeadEvent;
use leadflow_proto::scoring::v1::ApplyLeadEventsRequest;
use leadflow_proto::scoring::v1::scoring_internal_service_client::ScoringInternalServiceClient;
use leadflow_runtime::client::{ServiceInterceptor, lazy_channel};
use leadflow_runtime::outbox::{DeliveryError, OutboxMessage, OutboxSink, decode_batch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Deadline of one delivery call.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends batches of lead events to scoring with the internal service credential.
#[derive(Debug, Clone)]
pub struct ScoringSink {
    client: ScoringInternalServiceClient<InterceptedService<Channel, ServiceInterceptor>>,
}

impl ScoringSink {
    /// A sink calling scoring at `url` with `credential`.
    pub fn new(url: &str, credential: Option<&str>) -> anyhow::Result<Self> {
        let channel = lazy_channel(url)?;
        let interceptor = ServiceInterceptor::new(credential)?;
        Ok(Self {
            client: ScoringInternalServiceClient::with_interceptor(channel, interceptor),
        })
    }
}

impl OutboxSink for ScoringSink {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let events = decode_batch(messages, |event: &mut LeadEvent| event.header.as_mut())?;
        let mut request = tonic::Request::new(ApplyLeadEventsRequest { events });
        request.set_timeout(DELIVERY_TIMEOUT);
        self.client
            .clone()
            .apply_lead_events(request)
            .await
            .map_err(|status| {
                DeliveryError(format!("{:?}: {}", status.code(), status.message()))
            })?;
        Ok(())
    }
}
