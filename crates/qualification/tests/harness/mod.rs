//! Test harness: qualification on a port-0 listener with a manual clock, typed clients,
//! score-change and hand-off-decision builders, and a stand-in for handoff's internal API that
//! records qualification's events.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::handoff::events::v1::{self as handoff_events, handoff_decision::Decision};
use leadflow_proto::handoff::v1::{
    ApplyQualificationEventsRequest, ApplyQualificationEventsResponse,
    handoff_internal_service_server::{HandoffInternalService, HandoffInternalServiceServer},
};
use leadflow_proto::qualification::v1::{
    QualificationEvent, qualification_internal_service_client::QualificationInternalServiceClient,
    qualification_service_client::QualificationServiceClient,
};
use leadflow_proto::scoring::v1::{self as scoring, ScoreChangeReason, ScoreChanged};
use leadflow_qualification::Config;
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

/// A running qualification server and its clock.
pub(crate) struct Qualification {
    addr: SocketAddr,
    pub(crate) clock: ManualClock,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Qualification {
    /// Starts qualification on `db`, delivering its events to `handoff_url`.
    pub(crate) async fn start(db: &TestDb, handoff_url: String, clock: ManualClock) -> Self {
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
            handoff_url,
            recycle_interval_ms: 20,
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
        let task = tokio::spawn(leadflow_qualification::serve(
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
    pub(crate) fn client(&self) -> QualificationServiceClient<Channel> {
        QualificationServiceClient::new(self.channel())
    }

    /// An internal client.
    pub(crate) fn internal(&self) -> QualificationInternalServiceClient<Channel> {
        QualificationInternalServiceClient::new(self.channel())
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

/// Records the events handoff would receive, deduplicated by message id.
#[derive(Clone)]
pub(crate) struct HandoffReceiver {
    addr: SocketAddr,
    events: Arc<Mutex<Vec<QualificationEvent>>>,
    count: watch::Receiver<usize>,
}

struct ReceiverService {
    events: Arc<Mutex<Vec<QualificationEvent>>>,
    count: watch::Sender<usize>,
}

#[tonic::async_trait]
impl HandoffInternalService for ReceiverService {
    async fn apply_qualification_events(
        &self,
        request: Request<ApplyQualificationEventsRequest>,
    ) -> Result<Response<ApplyQualificationEventsResponse>, Status> {
        let mut events = self.events.lock().expect("lock");
        let mut response = ApplyQualificationEventsResponse::default();
        for event in request.into_inner().events {
            let id = event
                .header
                .as_ref()
                .map(|h| h.message_id.clone())
                .unwrap_or_default();
            if events
                .iter()
                .any(|e| e.header.as_ref().is_some_and(|h| h.message_id == id))
            {
                response.duplicate_count += 1;
            } else {
                events.push(event);
                response.applied_count += 1;
            }
        }
        self.count.send_replace(events.len());
        Ok(Response::new(response))
    }
}

impl HandoffReceiver {
    /// Starts the receiver on a port-0 listener.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let events = Arc::new(Mutex::new(Vec::new()));
        let (sender, count) = watch::channel(0);
        let service = ReceiverService {
            events: events.clone(),
            count: sender,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(HandoffInternalServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            events,
            count,
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a recorded event satisfies `predicate`, and returns it.
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        predicate: impl Fn(&QualificationEvent) -> bool,
    ) -> QualificationEvent {
        let mut count = self.count.clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(found) = self
                    .events
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|e| predicate(e))
                    .cloned()
                {
                    return found;
                }
                count.changed().await.expect("receiver alive");
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what} did not arrive in time; seen: {:?}", self.events()))
    }

    /// Every event recorded so far.
    pub(crate) fn events(&self) -> Vec<QualificationEvent> {
        self.events.lock().expect("lock").clone()
    }
}

fn header(message_id: &str, lead_id: &str, at: DateTime<Utc>) -> common::MessageHeader {
    common::MessageHeader {
        message_id: message_id.to_owned(),
        tenant_id: TENANT.to_owned(),
        lead_id: lead_id.to_owned(),
        produced_at: Some(to_timestamp(at)),
        trace_context: Default::default(),
    }
}

/// The seeds' marketing manager at a tech company, from the web.
pub(crate) fn manager_profile(channel: common::SourceChannel) -> common::Profile {
    common::Profile {
        title: Some("Marketing Manager".into()),
        seniority: common::Seniority::Manager as i32,
        company: Some("Acme Tech".into()),
        company_size: Some(200),
        industry: Some("Software".into()),
        country: Some("DE".into()),
        email: Some("dana@acme-tech.io".into()),
        source_channel: channel as i32,
        ..Default::default()
    }
}

/// Scoring's word on `lead_id`: `score` with `grade`, triggered by an activity of `activity`.
pub(crate) fn score_changed(
    message_id: &str,
    lead_id: &str,
    score: f64,
    grade: common::FitGrade,
    activity: Option<&str>,
    at: DateTime<Utc>,
) -> ScoreChanged {
    ScoreChanged {
        header: Some(header(message_id, lead_id, at)),
        reason: if activity.is_some() {
            ScoreChangeReason::Activity
        } else {
            ScoreChangeReason::Profile
        } as i32,
        score: Some(scoring::Score {
            lead_id: lead_id.to_owned(),
            score,
            rounded_score: score.round() as i32,
            fit_points: 30.0,
            engagement_points: score - 30.0,
            fit_grade: grade as i32,
            model_version: 0,
            as_of_time: Some(to_timestamp(at)),
            ..Default::default()
        }),
        triggering_activity: activity.map(|kind| common::Activity {
            r#type: kind.to_owned(),
            occurred_at: Some(to_timestamp(at)),
            properties: Default::default(),
        }),
        triggering_activity_id: activity
            .map(|_| format!("act-{message_id}"))
            .unwrap_or_default(),
        hand_raise: matches!(activity, Some("demo_request" | "contact_sales")),
        profile: Some(manager_profile(common::SourceChannel::OrganicSearch)),
        ..Default::default()
    }
}

/// Scoring announcing that `source` was merged into `target`, with the survivor's score.
pub(crate) fn merged(
    message_id: &str,
    target: &str,
    source: &str,
    score: f64,
    at: DateTime<Utc>,
) -> ScoreChanged {
    ScoreChanged {
        reason: ScoreChangeReason::Merge as i32,
        merged_lead_id: source.to_owned(),
        ..score_changed(message_id, target, score, common::FitGrade::A, None, at)
    }
}

/// A decision on a hand-off of `lead_id`, as handoff reports it.
pub(crate) fn decision(
    message_id: &str,
    lead_id: &str,
    decision: Decision,
    at: DateTime<Utc>,
) -> handoff_events::HandoffDecision {
    handoff_events::HandoffDecision {
        header: Some(header(message_id, lead_id, at)),
        handoff_id: format!("h-{lead_id}"),
        owner_id: "owner-1".into(),
        decision_time: Some(to_timestamp(at)),
        decision: Some(decision),
        ..Default::default()
    }
}

/// A sales outcome decision.
pub(crate) fn outcome(outcome: common::sales_outcome::Outcome) -> Decision {
    Decision::Outcome(common::SalesOutcome {
        outcome: Some(outcome),
    })
}

/// Installs logging once per test process (warnings only), so failures show their cause.
pub(crate) fn init_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let args = leadflow_runtime::telemetry::TelemetryArgs {
            log_filter: "warn".into(),
            ..Default::default()
        };
        if let Ok(guard) = leadflow_runtime::telemetry::init("qualification-test", &args) {
            std::mem::forget(guard);
        }
    });
}
