//! Delivery of scoring's outbox to qualification's internal `ApplyScoreChanges`.

use std::time::Duration;

use leadflow_proto::qualification::v1::ApplyScoreChangesRequest;
use leadflow_proto::qualification::v1::qualification_internal_service_client::QualificationInternalServiceClient;
use leadflow_proto::scoring::v1::ScoreChanged;
use leadflow_runtime::client::{ServiceInterceptor, lazy_channel};
use leadflow_runtime::outbox::{DeliveryError, OutboxMessage, OutboxSink, decode_batch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Deadline of one delivery call.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends batches of score changes to qualification with the internal service credential.
#[derive(Debug, Clone)]
pub struct QualificationSink {
    client: QualificationInternalServiceClient<InterceptedService<Channel, ServiceInterceptor>>,
}

impl QualificationSink {
    /// A sink calling qualification at `url` with `credential`.
    pub fn new(url: &str, credential: Option<&str>) -> anyhow::Result<Self> {
        let channel = lazy_channel(url)?;
        let interceptor = ServiceInterceptor::new(credential)?;
        Ok(Self {
            client: QualificationInternalServiceClient::with_interceptor(channel, interceptor),
        })
    }
}

impl OutboxSink for QualificationSink {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let events = decode_batch(messages, |event: &mut ScoreChanged| event.header.as_mut())?;
        let mut request = tonic::Request::new(ApplyScoreChangesRequest { events });
        request.set_timeout(DELIVERY_TIMEOUT);
        self.client
            .clone()
            .apply_score_changes(request)
            .await
            .map_err(|status| {
                DeliveryError(format!("{:?}: {}", status.code(), status.message()))
            })?;
        Ok(())
    }
}
