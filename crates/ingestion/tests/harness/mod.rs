//! Test harness: ingestion on a port-0 listener, typed clients, and a stand-in for scoring's
//! internal API that can fail its first calls.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use chrono::Utc;
use leadflow_ingestion::Config;
use leadflow_proto::common::v1 as common;
use leadflow_proto::ingestion::v1::{
    self as pb, ingestion_internal_service_client::IngestionInternalServiceClient,
    ingestion_service_client::IngestionServiceClient,
};
use leadflow_proto::scoring::v1::{
    ApplyLeadEventsRequest, ApplyLeadEventsResponse,
    scoring_internal_service_server::{ScoringInternalService, ScoringInternalServiceServer},
};
use leadflow_runtime::auth::{AuthArgs, BearerInterceptor};
use leadflow_runtime::clock::SystemClock;
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_test_support::{FakeInbox, TestDb};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

/// The service credential tests configure alongside tenant keys.
pub(crate) const INTERNAL_KEY: &str = "internal-test-key";

/// How a test wants ingestion configured.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Where the outbox delivers; an unreachable address when `None`.
    pub(crate) scoring_url: Option<String>,
    /// Tenant keys (`tenant=key`); development mode when empty.
    pub(crate) api_keys: Vec<String>,
}

/// A running ingestion server.
pub(crate) struct Ingestion {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

type Client = IngestionServiceClient<InterceptedService<Channel, BearerInterceptor>>;
type InternalClient =
    IngestionInternalServiceClient<InterceptedService<Channel, BearerInterceptor>>;

impl Ingestion {
    /// Starts ingestion on `db`; calls made right away queue on the bound listener.
    pub(crate) async fn start(db: &TestDb, options: Options) -> Self {
        Self::start_with_relay_on(db, options, tokio::runtime::Handle::current()).await
    }

    /// [`Ingestion::start`], its outbox relayed from `relay_runtime`.
    pub(crate) async fn start_with_relay_on(
        db: &TestDb,
        options: Options,
        relay_runtime: tokio::runtime::Handle,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let scoring_url = match options.scoring_url {
            Some(url) => url,
            None => unused_url().await,
        };
        let internal_key = (!options.api_keys.is_empty()).then(|| INTERNAL_KEY.to_owned());
        let config = Config {
            listen_addr: addr,
            database_url: Some(db.url.clone()),
            data_dir: std::env::temp_dir(),
            database_max_connections: 5,
            scoring_url,
            auth: AuthArgs {
                api_keys: options.api_keys,
                api_keys_file: None,
                internal_key,
            },
            outbox: OutboxArgs {
                outbox_poll_ms: 50,
                outbox_batch_size: 10,
                outbox_backoff_ms: 5,
                outbox_backoff_max_ms: 50,
                ..OutboxArgs::default()
            },
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(leadflow_ingestion::serve_with_relay_on(
            config,
            listener,
            Arc::new(SystemClock),
            shutdown.clone(),
            relay_runtime,
        ));
        Self {
            addr,
            shutdown,
            task,
        }
    }

    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect_lazy()
    }

    /// A public client sending `key`.
    pub(crate) fn client(&self, key: Option<&str>) -> Client {
        IngestionServiceClient::with_interceptor(
            self.channel(),
            BearerInterceptor::new(key).expect("key"),
        )
    }

    /// An internal client sending `key`.
    pub(crate) fn internal_client(&self, key: Option<&str>) -> InternalClient {
        IngestionInternalServiceClient::with_interceptor(
            self.channel(),
            BearerInterceptor::new(key).expect("key"),
        )
    }

    /// The health status of `service` as its name.
    pub(crate) async fn health(&self, service: &str) -> String {
        health_at(&self.addr.to_string(), service).await
    }

    /// The service names reflection lists.
    pub(crate) async fn reflected_services(&self) -> Vec<String> {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(self.channel());
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .expect("reflection")
            .into_inner();
        let response = responses
            .message()
            .await
            .expect("response")
            .expect("one response");
        match response.message_response {
            Some(MessageResponse::ListServicesResponse(list)) => {
                list.service.into_iter().map(|s| s.name).collect()
            }
            other => panic!("unexpected reflection answer {other:?}"),
        }
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

/// The health status of `service` at `addr`.
pub(crate) async fn health_at(addr: &str, service: &str) -> String {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy();
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("health check")
        .into_inner();
    tonic_health::pb::health_check_response::ServingStatus::try_from(response.status)
        .expect("known status")
        .as_str_name()
        .to_owned()
}

/// A loopback URL nothing listens on.
pub(crate) async fn unused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    format!("http://{addr}")
}

/// A stand-in for scoring's internal API: fails its first `failures` calls, dedupes by message
/// id like a real receiver, and keeps the applied events in arrival order.
#[derive(Clone)]
pub(crate) struct ScoringReceiver {
    addr: SocketAddr,
    state: Arc<Mutex<ReceiverState>>,
    applied: watch::Receiver<usize>,
}

#[derive(Default)]
struct ReceiverState {
    failures_left: usize,
    failed_calls: usize,
    inbox: FakeInbox,
    events: Vec<pb::LeadEvent>,
    traceparents: Vec<String>,
}

struct ReceiverService {
    state: Arc<Mutex<ReceiverState>>,
    applied: watch::Sender<usize>,
}

#[tonic::async_trait]
impl ScoringInternalService for ReceiverService {
    async fn apply_lead_events(
        &self,
        request: Request<ApplyLeadEventsRequest>,
    ) -> Result<Response<ApplyLeadEventsResponse>, Status> {
        let traceparent = request
            .metadata()
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut state = self.state.lock().expect("lock");
        if state.failures_left > 0 {
            state.failures_left -= 1;
            state.failed_calls += 1;
            return Err(Status::unavailable("scoring is restarting"));
        }
        state.traceparents.extend(traceparent);
        let mut response = ApplyLeadEventsResponse::default();
        let events = request.into_inner().events;
        let ids = events
            .iter()
            .map(|e| e.header.as_ref().map_or("", |h| h.message_id.as_str()));
        let admitted = state.inbox.admit(ids);
        for (event, admitted) in events.into_iter().zip(admitted) {
            if admitted {
                state.events.push(event);
                response.applied_count += 1;
            } else {
                response.duplicate_count += 1;
            }
        }
        self.applied.send_replace(state.events.len());
        Ok(Response::new(response))
    }

    async fn apply_handoff_decisions(
        &self,
        _request: Request<leadflow_proto::scoring::v1::ApplyHandoffDecisionsRequest>,
    ) -> Result<Response<leadflow_proto::scoring::v1::ApplyHandoffDecisionsResponse>, Status> {
        Err(Status::failed_precondition("not part of this test"))
    }

    async fn explain_lead_score(
        &self,
        _request: Request<leadflow_proto::scoring::v1::ExplainLeadScoreRequest>,
    ) -> Result<Response<leadflow_proto::scoring::v1::ExplainLeadScoreResponse>, Status> {
        Err(Status::failed_precondition("not part of this test"))
    }
}

impl ScoringReceiver {
    /// Starts the receiver on a port-0 listener.
    pub(crate) async fn start(failures: usize) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(ReceiverState {
            failures_left: failures,
            ..ReceiverState::default()
        }));
        let (sender, applied) = watch::channel(0);
        let service = ReceiverService {
            state: state.clone(),
            applied: sender,
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(ScoringInternalServiceServer::new(service))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Self {
            addr,
            state,
            applied,
        }
    }

    /// Its URL.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits until `count` distinct events arrived, and returns them in arrival order.
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<pb::LeadEvent> {
        let mut applied = self.applied.clone();
        tokio::time::timeout(Duration::from_secs(30), applied.wait_for(|n| *n >= count))
            .await
            .expect("events arrive in time")
            .expect("receiver alive");
        self.state.lock().expect("lock").events.clone()
    }

    /// Calls refused so far.
    pub(crate) fn failed_calls(&self) -> usize {
        self.state.lock().expect("lock").failed_calls
    }

    /// The `traceparent` headers of accepted calls.
    pub(crate) fn traceparents(&self) -> Vec<String> {
        self.state.lock().expect("lock").traceparents.clone()
    }
}

/// A timestamp `hours` hours ago (negative: in the future).
pub(crate) fn hours_ago(hours: i64) -> prost_types::Timestamp {
    let t = Utc::now() - chrono::Duration::hours(hours);
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

/// How many hours ago a timeline entry occurred, rounded.
pub(crate) fn age_hours(entry: &pb::TimelineEntry) -> i64 {
    let seconds = entry
        .activity
        .as_ref()
        .and_then(|a| a.occurred_at)
        .expect("time")
        .seconds;
    ((Utc::now().timestamp() - seconds) as f64 / 3600.0).round() as i64
}

/// An activity of `kind`, `hours` hours ago, with `properties`.
pub(crate) fn activity(kind: &str, hours: i64, properties: &[(&str, &str)]) -> common::Activity {
    common::Activity {
        r#type: kind.to_owned(),
        occurred_at: Some(hours_ago(hours)),
        properties: properties
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn identity(user_id: &str, anonymous_id: &str) -> Option<pb::LeadIdentity> {
    Some(pb::LeadIdentity {
        user_id: user_id.to_owned(),
        anonymous_id: anonymous_id.to_owned(),
    })
}

/// An `IdentifyRequest`.
pub(crate) fn identify(
    message_id: &str,
    user_id: &str,
    anonymous_id: &str,
    profile: common::Profile,
) -> pb::IdentifyRequest {
    pb::IdentifyRequest {
        message_id: message_id.to_owned(),
        identity: identity(user_id, anonymous_id),
        profile: Some(profile),
        occurred_at: None,
    }
}

/// A `TrackRequest`.
pub(crate) fn track(
    message_id: &str,
    user_id: &str,
    anonymous_id: &str,
    activity: common::Activity,
) -> pb::TrackRequest {
    pb::TrackRequest {
        message_id: message_id.to_owned(),
        identity: identity(user_id, anonymous_id),
        activity: Some(activity),
    }
}

/// Installs telemetry once per test process, so spans carry OpenTelemetry trace ids.
pub(crate) fn init_telemetry() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let args = leadflow_runtime::telemetry::TelemetryArgs {
            log_filter: "warn".into(),
            ..Default::default()
        };
        match leadflow_runtime::telemetry::init("ingestion-test", &args) {
            Ok(guard) => std::mem::forget(guard),
            Err(err) => panic!("telemetry: {err}"),
        }
    });
}

/// Starts the standalone binary as a Deployment would: configuration from the environment,
/// JSON logs, a port-0 listener.
pub(crate) fn spawn_binary(db: &TestDb) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_leadflow-ingestion"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("LEADFLOW_INGESTION_LISTEN_ADDR", "127.0.0.1:0")
        .env("LEADFLOW_INGESTION_DATABASE_URL", &db.url)
        .env("LEADFLOW_LOG_FORMAT", "json")
        .env("LEADFLOW_SCORING_URL", "http://127.0.0.1:9")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn leadflow-ingestion")
}

/// Reads the child's JSON logs until it says where it listens; keeps draining them after.
pub(crate) async fn read_listen_addr(child: &mut tokio::process::Child) -> String {
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read log") {
            let Ok(json) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if json["message"] == "listening" {
                return json["addr"].as_str().expect("addr field").to_owned();
            }
        }
        panic!("the binary exited before listening");
    })
    .await
    .expect("listens in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    addr
}
