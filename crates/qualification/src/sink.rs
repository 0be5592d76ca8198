//! Delivery of qualification's outbox to handoff's internal `ApplyQualificationEvents`.

use std::time::Duration;

use leadflow_proto::handoff::v1::ApplyQualificationEventsRequest;
use leadflow_proto::handoff::v1::handoff_internal_service_client::HandoffInternalServiceClient;
use leadflow_proto::qualification::v1::QualificationEvent;
use leadflow_runtime::client::{ServiceInterceptor, lazy_channel};
use leadflow_runtime::outbox::{DeliveryError, OutboxMessage, OutboxSink, decode_batch};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// Deadline of one delivery call.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends batches of qualification events to handoff with the internal service credential.
#[derive(Debug, Clone)]
pub struct HandoffSink {
    client: HandoffInternalServiceClient<InterceptedService<Channel, ServiceInterceptor>>,
}

impl HandoffSink {
    /// A sink calling handoff at `url` with `credential`.
    pub fn new(url: &str, credential: Option<&str>) -> anyhow::Result<Self> {
        let channel = lazy_channel(url)?;
        let interceptor = ServiceInterceptor::new(credential)?;
        Ok(Self {
            client: HandoffInternalServiceClient::with_interceptor(channel, interceptor),
        })
    }
}

impl OutboxSink for HandoffSink {
    async fn deliver(&self, messages: &[OutboxMessage]) -> Result<(), DeliveryError> {
        let events = decode_batch(messages, |event: &mut QualificationEvent| {
            event.header.as_mut()
        })?;
        let mut request = tonic::Request::new(ApplyQualificationEventsRequest { events });
        request.set_timeout(DELIVERY_TIMEOUT);
        self.client
            .clone()
            .apply_qualification_events(request)
            .await
            .map_err(|status| {
                DeliveryError(format!("{:?}: {}", status.code(), status.message()))
            })?;
        Ok(())
    }
}
