//! Test harness: handoff on a port-0 listener with a manual clock, and one stand-in server for
//! what handoff calls — scoring's explanation and ingestion's timeline (the warm context), and
//! the decision receivers of qualification and scoring, which record what they get.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadflow_handoff::Config;
use leadflow_proto::common::v1 as common;
use leadflow_proto::handoff::events::v1::HandoffDecision;
use leadflow_proto::handoff::v1::{
    handoff_internal_service_client::HandoffInternalServiceClient,
    handoff_service_client::HandoffServiceClient,
};
use leadflow_proto::ingestion::v1::{
    self as ingestion,
    ingestion_internal_service_server::{IngestionInternalService, IngestionInternalServiceServer},
};
use leadflow_proto::qualification::v1::{
    self as qualification, QualificationEvent, TransitionReason,
    qualification_event::Event,
    qualification_internal_service_server::{
        QualificationInternalService, QualificationInternalServiceServer,
    },
};
use leadflow_proto::scoring::v1::{
    self as scoring,
    scoring_internal_service_server::{ScoringInternalService, ScoringInternalServiceServer},
};
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::ManualClock;
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_runtime::pbtime::to_timestamp;
use leadflow_test_support::TestDb;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The tenant of development mode.
pub(crate) const TENANT: &str = "default";

/// A running handoff server and its clock.
pub(crate) struct Handoff {
    addr: SocketAddr,
    pub(crate) clock: ManualClock,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Handoff {
    /// Starts handoff on `db`, calling `upstream` for everything it needs.
    pub(crate) async fn start(db: &TestDb, upstream: &Upstream, clock: ManualClock) -> Self {
        init_logs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let config = Config {
            listen_addr: addr,
            database_url: Some(db.url.clone()),
            data_dir: std::env::temp_dir(),
            database_max_connections: 5,
            ingestion_url: upstream.url(),
            scoring_url: upstream.url(),
            qualification_url: upstream.url(),
            sla_sweep_interval_ms: 20,
            webhook_poll_ms: 20,
            auth: AuthArgs::default(),
            outbox: OutboxArgs {
                outbox_poll_ms: 50,
                outbox_batch_size: 10,
                outbox_backoff_ms: 5,
                outbox_backoff_max_ms: 50,
                ..OutboxArgs::default()
            },
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(leadflow_handoff::serve(
            config,
            listener,
            Arc::new(clock.clone()),
            shutdown.clone(),
        ));
        Self {
            addr,
            clock,
            shutdown,
            task,
        }
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect_lazy()
    }

    /// A public client.
    pub(crate) fn client(&self) -> HandoffServiceClient<Channel> {
        HandoffServiceClient::new(self.channel())
    }

    /// An internal client.
    pub(crate) fn internal(&self) -> HandoffInternalServiceClient<Channel> {
        HandoffInternalServiceClient::new(self.channel())
    }

    /// Shuts down and checks the server stopped without error.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("served without error");
    }
}

/// What the stand-in upstream services recorded.
#[derive(Default)]
struct Recorded {
    to_qualification: Vec<HandoffDecision>,
    to_scoring: Vec<HandoffDecision>,
    /// Score explanations asked for (one per warm context built).
    explained: usize,
}

/// Scoring, ingestion and qualification as handoff sees them, on one port.
#[derive(Clone)]
pub(crate) struct Upstream {
    addr: SocketAddr,
    recorded: Arc<Mutex<Recorded>>,
    count: watch::Receiver<usize>,
}

#[derive(Clone)]
struct UpstreamService {
    recorded: Arc<Mutex<Recorded>>,
    count: Arc<watch::Sender<usize>>,
}

impl UpstreamService {
    fn record(&self, f: impl FnOnce(&mut Recorded)) {
        let mut recorded = self.recorded.lock().expect("lock");
        f(&mut recorded);
        self.count
            .send_replace(recorded.to_qualification.len() + recorded.to_scoring.len());
    }
}

#[tonic::async_trait]
impl ScoringInternalService for UpstreamService {
    async fn apply_lead_events(
        &self,
        _request: Request<scoring::ApplyLeadEventsRequest>,
    ) -> Result<Response<scoring::ApplyLeadEventsResponse>, Status> {
        Err(Status::failed_precondition("not part of this test"))
    }

    async fn apply_handoff_decisions(
        &self,
        request: Request<scoring::ApplyHandoffDecisionsRequest>,
    ) -> Result<Response<scoring::ApplyHandoffDecisionsResponse>, Status> {
        let events = request.into_inner().events;
        let applied = events.len() as i32;
        self.record(|r| r.to_scoring.extend(events));
        Ok(Response::new(scoring::ApplyHandoffDecisionsResponse {
            applied_count: applied,
            duplicate_count: 0,
        }))
    }

    async fn explain_lead_score(
        &self,
        request: Request<scoring::ExplainLeadScoreRequest>,
    ) -> Result<Response<scoring::ExplainLeadScoreResponse>, Status> {
        let lead_id = request.into_inner().lead_id;
        self.recorded.lock().expect("lock").explained += 1;
        if lead_id == "unknown" {
            return Err(Status::not_found("lead unknown not found"));
        }
        Ok(Response::new(scoring::ExplainLeadScoreResponse {
            explanation: Some(scoring::ScoreExplanation {
                score: Some(scoring::Score {
                    lead_id,
                    score: 64.0,
                    rounded_score: 64,
                    fit_grade: common::FitGrade::A as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            merged: false,
        }))
    }
}

#[tonic::async_trait]
impl IngestionInternalService for UpstreamService {
    async fn get_lead_timeline(
        &self,
        request: Request<ingestion::GetLeadTimelineRequest>,
    ) -> Result<Response<ingestion::GetLeadTimelineResponse>, Status> {
        let r = request.into_inner();
        let entry = |id: &str, kind: &str| ingestion::TimelineEntry {
            activity_id: id.to_owned(),
            activity: Some(common::Activity {
                r#type: kind.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(Response::new(ingestion::GetLeadTimelineResponse {
            timeline: Some(ingestion::GetTimelineResponse {
                lead_id: r.lead_id,
                entries: vec![entry("a2", "demo_request"), entry("a1", "content_download")],
                next_page_token: String::new(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl QualificationInternalService for UpstreamService {
    async fn apply_score_changes(
        &self,
        _request: Request<qualification::ApplyScoreChangesRequest>,
    ) -> Result<Response<qualification::ApplyScoreChangesResponse>, Status> {
        Err(Status::failed_precondition("not part of this test"))
    }

    async fn apply_handoff_decisions(
        &self,
        request: Request<qualification::ApplyHandoffDecisionsRequest>,
    ) -> Result<Response<qualification::ApplyHandoffDecisionsResponse>, Status> {
        let events = request.into_inner().events;
        let applied = events.len() as i32;
        self.record(|r| r.to_qualification.extend(events));
        Ok(Response::new(
            qualification::ApplyHandoffDecisionsResponse {
                applied_count: applied,
                ..Default::default()
            },
        ))
    }
}

impl Upstream {
    /// Starts the stand-ins on a port-0 listener.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let recorded = Arc::new(Mutex::new(Recorded::default()));
        let (sender, count) = watch::channel(0);
        let service = UpstreamService {
            recorded: recorded.clone(),
            count: Arc::new(sender),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ScoringInternalServiceServer::new(service.clone()))
                .add_service(IngestionInternalServiceServer::new(service.clone()))
                .add_service(QualificationInternalServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            recorded,
            count,
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many warm contexts asked scoring for an explanation so far.
    pub(crate) fn explained(&self) -> usize {
        self.recorded.lock().expect("lock").explained
    }

    /// Waits until qualification and scoring each received `n` decisions, and returns
    /// qualification's.
    pub(crate) async fn decisions(&self, n: usize) -> Vec<HandoffDecision> {
        let mut count = self.count.clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                {
                    let recorded = self.recorded.lock().expect("lock");
                    if recorded.to_qualification.len() >= n && recorded.to_scoring.len() >= n {
                        return recorded.to_qualification.clone();
                    }
                }
                count.changed().await.expect("upstream alive");
            }
        })
        .await
        .expect("the decisions arrive in time")
    }
}

/// Qualification asking for a hand-off of `lead_id` from `country`.
pub(crate) fn requested(
    message_id: &str,
    lead_id: &str,
    kind: common::HandoffKind,
    country: &str,
    at: DateTime<Utc>,
) -> QualificationEvent {
    QualificationEvent {
        header: Some(common::MessageHeader {
            message_id: message_id.to_owned(),
            tenant_id: TENANT.to_owned(),
            lead_id: lead_id.to_owned(),
            produced_at: Some(to_timestamp(at)),
            trace_context: Default::default(),
        }),
        event: Some(Event::HandoffRequested(qualification::HandoffRequested {
            kind: kind as i32,
            reason: TransitionReason::HandRaise as i32,
            transition_id: format!("t-{message_id}"),
            hand_raise: true,
            stage: common::LeadStage::Mql as i32,
            profile: Some(common::Profile {
                country: Some(country.to_owned()),
                industry: Some("Software".into()),
                company_size: Some(200),
                company: Some("Acme Tech".into()),
                source_channel: common::SourceChannel::PaidSearch as i32,
                ..Default::default()
            }),
            score: None,
            bant: Some(common::Bant {
                need: "a real pipeline".into(),
                ..Default::default()
            }),
            definition_version: 0,
        })),
    }
}

/// Qualification announcing that `lead_id` moved to `stage`.
pub(crate) fn stage_changed(
    message_id: &str,
    lead_id: &str,
    stage: common::LeadStage,
    at: DateTime<Utc>,
) -> QualificationEvent {
    QualificationEvent {
        event: Some(Event::StageChanged(qualification::StageChanged {
            transition: Some(qualification::StageTransition {
                lead_id: lead_id.to_owned(),
                to_stage: stage as i32,
                ..Default::default()
            }),
        })),
        ..requested(
            message_id,
            lead_id,
            common::HandoffKind::SdrReview,
            "DE",
            at,
        )
    }
}

/// Installs logging once per test process (warnings only), so failures show their cause.
pub(crate) fn init_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let args = leadflow_runtime::telemetry::TelemetryArgs {
            log_filter: "warn".into(),
            ..Default::default()
        };
        if let Ok(guard) = leadflow_runtime::telemetry::init("handoff-test", &args) {
            std::mem::forget(guard);
        }
    });
}
