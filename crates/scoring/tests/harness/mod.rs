//! Test harness: scoring on a port-0 listener with a manual clock, typed clients, lead-event
//! builders, and a stand-in for qualification's internal API that records score changes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadflow_proto::common::v1 as common;
use leadflow_proto::ingestion::v1::{self as ingestion, lead_event::Event};
use leadflow_proto::qualification::v1::{
    ApplyHandoffDecisionsRequest, ApplyHandoffDecisionsResponse, ApplyScoreChangesRequest,
    ApplyScoreChangesResponse,
    qualification_internal_service_server::{
        QualificationInternalService, QualificationInternalServiceServer,
    },
};
use leadflow_proto::scoring::v1::{
    ScoreChanged, scoring_internal_service_client::ScoringInternalServiceClient,
    scoring_service_client::ScoringServiceClient,
};
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::background::Background;
use leadflow_runtime::clock::ManualClock;
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_scoring::Config;
use leadflow_test_support::{FakeInbox, TestDb};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The tenant of development mode.
pub(crate) const TENANT: &str = "default";

/// The inbox retention the test servers run with, in hours.
pub(crate) const INBOX_RETENTION_HOURS: u64 = 24;

/// A running scoring server and its clock, run as `leadflow up` runs it: its public RPCs on
/// the test's runtime, its drain (internal RPCs, relay, sweeper, rescore jobs, store) on a
/// lower-priority runtime of its own.
pub(crate) struct Scoring {
    addr: SocketAddr,
    pub(crate) clock: ManualClock,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    drain: Background,
}

impl Scoring {
    /// Starts scoring on `db`, delivering score changes to `qualification_url`.
    pub(crate) async fn start(db: &TestDb, qualification_url: String, clock: ManualClock) -> Self {
        Self::start_with_cache(
            db,
            qualification_url,
            clock,
            leadflow_scoring::DEFAULT_SCORE_CACHE_LEADS,
        )
        .await
    }

    /// [`Scoring::start`], keeping the score inputs of at most `score_cache_leads` in memory.
    pub(crate) async fn start_with_cache(
        db: &TestDb,
        qualification_url: String,
        clock: ManualClock,
        score_cache_leads: usize,
    ) -> Self {
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
            qualification_url,
            sweep_interval_ms: 20,
            score_cache_leads,
            auth: AuthArgs::default(),
            outbox: OutboxArgs {
                outbox_poll_ms: 50,
                outbox_batch_size: 10,
                outbox_backoff_ms: 5,
                outbox_backoff_max_ms: 50,
                // A day, not the default week: the inbox retention test reaches it sooner,
                // and a non-default value shows the flag reaches the store.
                inbox_retention_hours: INBOX_RETENTION_HOURS,
                ..OutboxArgs::default()
            },
        };
        let shutdown = CancellationToken::new();
        let drain = Background::start("scoring-test-drain", 1).expect("start the drain runtime");
        let task = tokio::spawn(leadflow_scoring::serve_with_drain_on(
            config,
            listener,
            Arc::new(clock.clone()),
            shutdown.clone(),
            drain.handle().clone(),
        ));
        Self {
            addr,
            clock,
            shutdown,
            task,
            drain,
        }
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect_lazy()
    }

    /// A public client.
    pub(crate) fn client(&self) -> ScoringServiceClient<Channel> {
        ScoringServiceClient::new(self.channel())
    }

    /// An internal client.
    pub(crate) fn internal(&self) -> ScoringInternalServiceClient<Channel> {
        ScoringInternalServiceClient::new(self.channel())
    }

    /// Shuts down and checks the server stopped without error.
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("stops in time")
            .expect("task")
            .expect("served without error");
        drop(self.drain);
    }
}

/// Records the score changes qualification would receive, deduplicated by message id.
#[derive(Clone)]
pub(crate) struct QualificationReceiver {
    addr: SocketAddr,
    changes: Arc<Mutex<Vec<ScoreChanged>>>,
    count: watch::Receiver<usize>,
}

struct ReceiverService {
    changes: Arc<Mutex<Vec<ScoreChanged>>>,
    inbox: Mutex<FakeInbox>,
    count: watch::Sender<usize>,
}

#[tonic::async_trait]
impl QualificationInternalService for ReceiverService {
    async fn apply_score_changes(
        &self,
        request: Request<ApplyScoreChangesRequest>,
    ) -> Result<Response<ApplyScoreChangesResponse>, Status> {
        let mut changes = self.changes.lock().expect("lock");
        let mut inbox = self.inbox.lock().expect("lock");
        let mut response = ApplyScoreChangesResponse::default();
        let events = request.into_inner().events;
        let ids = events
            .iter()
            .map(|e| e.header.as_ref().map_or("", |h| h.message_id.as_str()));
        let admitted = inbox.admit(ids);
        for (event, admitted) in events.into_iter().zip(admitted) {
            if admitted {
                changes.push(event);
                response.applied_count += 1;
            } else {
                response.duplicate_count += 1;
            }
        }
        self.count.send_replace(changes.len());
        Ok(Response::new(response))
    }

    async fn apply_handoff_decisions(
        &self,
        _request: Request<ApplyHandoffDecisionsRequest>,
    ) -> Result<Response<ApplyHandoffDecisionsResponse>, Status> {
        Err(Status::failed_precondition("not part of this test"))
    }
}

impl QualificationReceiver {
    /// Starts the receiver on a port-0 listener.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let changes = Arc::new(Mutex::new(Vec::new()));
        let (sender, count) = watch::channel(0);
        let service = ReceiverService {
            changes: changes.clone(),
            inbox: Mutex::default(),
            count: sender,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(QualificationInternalServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            changes,
            count,
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until a recorded change satisfies `predicate`, and returns it.
    pub(crate) async fn wait_for(&self, predicate: impl Fn(&ScoreChanged) -> bool) -> ScoreChanged {
        let mut count = self.count.clone();
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(found) = self
                    .changes
                    .lock()
                    .expect("lock")
                    .iter()
                    .find(|c| predicate(c))
                    .cloned()
                {
                    return found;
                }
                count.changed().await.expect("receiver alive");
            }
        })
        .await
        .unwrap_or_else(|_| {
            let seen: Vec<(i32, f64)> = self
                .changes()
                .iter()
                .map(|c| (c.reason, c.score.as_ref().map_or(0.0, |s| s.score)))
                .collect();
            panic!("the score change did not arrive in time; seen (reason, score): {seen:?}")
        })
    }

    /// Every change recorded so far.
    pub(crate) fn changes(&self) -> Vec<ScoreChanged> {
        self.changes.lock().expect("lock").clone()
    }
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

fn event(message_id: &str, lead_id: &str, at: DateTime<Utc>, event: Event) -> ingestion::LeadEvent {
    ingestion::LeadEvent {
        header: Some(common::MessageHeader {
            message_id: message_id.to_owned(),
            tenant_id: TENANT.to_owned(),
            lead_id: lead_id.to_owned(),
            produced_at: Some(timestamp(at)),
            trace_context: Default::default(),
        }),
        event: Some(event),
    }
}

/// A profile change.
pub(crate) fn profile_event(
    message_id: &str,
    lead_id: &str,
    at: DateTime<Utc>,
    profile: common::Profile,
) -> ingestion::LeadEvent {
    event(
        message_id,
        lead_id,
        at,
        Event::ProfileChanged(ingestion::ProfileChanged {
            profile: Some(profile),
        }),
    )
}

/// An activity.
pub(crate) fn activity_event(
    message_id: &str,
    lead_id: &str,
    kind: &str,
    at: DateTime<Utc>,
    properties: &[(&str, &str)],
) -> ingestion::LeadEvent {
    event(
        message_id,
        lead_id,
        at,
        Event::ActivityRecorded(ingestion::ActivityRecorded {
            activity_id: format!("act-{message_id}"),
            activity: Some(common::Activity {
                r#type: kind.to_owned(),
                occurred_at: Some(timestamp(at)),
                properties: properties
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            }),
        }),
    )
}

/// `source` merged into `target`.
pub(crate) fn merge_event(
    message_id: &str,
    target: &str,
    source: &str,
    at: DateTime<Utc>,
    profile: common::Profile,
) -> ingestion::LeadEvent {
    event(
        message_id,
        target,
        at,
        Event::LeadsMerged(ingestion::LeadsMerged {
            source_lead_id: source.to_owned(),
            profile: Some(profile),
        }),
    )
}

/// The seeds' marketing manager at a tech company.
pub(crate) fn manager_profile() -> common::Profile {
    common::Profile {
        title: Some("Marketing Manager".into()),
        seniority: common::Seniority::Manager as i32,
        company_size: Some(200),
        industry: Some("Software".into()),
        email: Some("dana@acme-tech.io".into()),
        ..Default::default()
    }
}

/// The seed journey's events for `lead_id`, starting at `t0`: the profile, a guide, three
/// e-mail opens in two weeks, two pricing visits.
pub(crate) fn seed_journey(lead_id: &str, t0: DateTime<Utc>) -> Vec<ingestion::LeadEvent> {
    let day = |d: i64| t0 + chrono::Duration::days(d);
    vec![
        profile_event(&format!("{lead_id}-p"), lead_id, t0, manager_profile()),
        activity_event(
            &format!("{lead_id}-1"),
            lead_id,
            "content_download",
            day(0),
            &[("asset_id", "guide-7")],
        ),
        activity_event(
            &format!("{lead_id}-2"),
            lead_id,
            "email_open",
            day(2),
            &[("asset_id", "n1")],
        ),
        activity_event(
            &format!("{lead_id}-3"),
            lead_id,
            "email_open",
            day(7),
            &[("asset_id", "n2")],
        ),
        activity_event(
            &format!("{lead_id}-4"),
            lead_id,
            "email_open",
            day(12),
            &[("asset_id", "n3")],
        ),
        activity_event(
            &format!("{lead_id}-5"),
            lead_id,
            "page_view",
            day(13),
            &[("path", "/pricing")],
        ),
        activity_event(
            &format!("{lead_id}-6"),
            lead_id,
            "page_view",
            day(14),
            &[("path", "/pricing")],
        ),
    ]
}

/// Installs logging once per test process (warnings only), so failures show their cause.
pub(crate) fn init_logs() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        let args = leadflow_runtime::telemetry::TelemetryArgs {
            log_filter: "warn".into(),
            ..Default::default()
        };
        if let Ok(guard) = leadflow_runtime::telemetry::init("scoring-test", &args) {
            std::mem::forget(guard);
        }
    });
}
