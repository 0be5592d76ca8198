//! The demo's gRPC clients of the four services' public APIs, sending the tenant key when
//! there is one.

use anyhow::Context;
use leadflow_proto::handoff::v1::handoff_service_client::HandoffServiceClient;
use leadflow_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use leadflow_proto::qualification::v1::qualification_service_client::QualificationServiceClient;
use leadflow_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use leadflow_runtime::auth::BearerInterceptor;
use leadflow_runtime::client::lazy_channel;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::SuiteAddrs;

/// A channel that sends the tenant key.
type Authed = InterceptedService<Channel, BearerInterceptor>;

/// One client per service (cheap to clone: clones share their connection).
#[derive(Debug, Clone)]
pub(crate) struct Clients {
    /// Profiles and activities.
    pub(crate) ingestion: IngestionServiceClient<Authed>,
    /// Scores and their explanations.
    pub(crate) scoring: ScoringServiceClient<Authed>,
    /// Stages, history, BANT, the funnel.
    pub(crate) qualification: QualificationServiceClient<Authed>,
    /// Owners, routing, hand-offs, the CRM's side.
    pub(crate) handoff: HandoffServiceClient<Authed>,
}

impl Clients {
    /// Clients of the suite at `addrs`, connecting on first use, calling with `key` when given.
    pub(crate) fn connect(addrs: SuiteAddrs, key: Option<&str>) -> anyhow::Result<Self> {
        let bearer = BearerInterceptor::new(key).context("the api key")?;
        let channel = |addr| {
            lazy_channel(&format!("http://{addr}")).with_context(|| format!("a channel to {addr}"))
        };
        Ok(Self {
            ingestion: IngestionServiceClient::with_interceptor(
                channel(addrs.ingestion)?,
                bearer.clone(),
            ),
            scoring: ScoringServiceClient::with_interceptor(
                channel(addrs.scoring)?,
                bearer.clone(),
            ),
            qualification: QualificationServiceClient::with_interceptor(
                channel(addrs.qualification)?,
                bearer.clone(),
            ),
            handoff: HandoffServiceClient::with_interceptor(channel(addrs.handoff)?, bearer),
        })
    }
}
