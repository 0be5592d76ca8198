//! Telemetry end to end: trace propagation through a real tonic server and client, the outbox
//! carrier helpers, and the Prometheus endpoint.
//!
//! Telemetry is process-wide, so this binary initialises it once (with an in-memory span
//! exporter) and every test runs on one shared runtime; tests tell their spans apart by trace id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::LazyLock;

use futures::future::BoxFuture;
use http::uri::PathAndQuery;
use leadflow_runtime::telemetry::{
    self, GrpcServerLayer, TelemetryArgs, TelemetryError, TelemetryGuard, TraceContextInterceptor,
};
use opentelemetry::Value;
use opentelemetry::trace::{SpanId, SpanKind, TraceContextExt, TraceId};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::wrappers::TcpListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic_prost::ProstCodec;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const SERVICE: &str = "leadflow.test.v1.PingService";
const PING: &str = "/leadflow.test.v1.PingService/Ping";
const FAIL: &str = "/leadflow.test.v1.PingService/Fail";
/// Response header in which `Ping` answers the trace id it saw, to check handlers run inside the
/// server span.
const SEEN_TRACE_ID: &str = "x-seen-trace-id";

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
});

struct Telemetry {
    guard: TelemetryGuard,
    spans: InMemorySpanExporter,
}

static TELEMETRY: LazyLock<Telemetry> = LazyLock::new(|| {
    let _runtime = RUNTIME.enter();
    let spans = InMemorySpanExporter::default();
    let args = TelemetryArgs {
        log_filter: "warn".to_owned(),
        metrics_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
        ..TelemetryArgs::default()
    };
    let guard = telemetry::init_with_span_exporter("telemetry-test", &args, spans.clone())
        .expect("telemetry initialises");
    Telemetry { guard, spans }
});

/// Runs `test` on the shared runtime, telemetry initialised.
fn run<F: Future<Output = ()>>(test: F) {
    LazyLock::force(&TELEMETRY);
    RUNTIME.block_on(test);
}

/// A gRPC service without generated code: `Ping` answers `()` (and the trace id it ran in),
/// `Fail` answers INVALID_ARGUMENT, anything else UNIMPLEMENTED.
#[derive(Clone)]
struct PingService;

impl tonic::server::NamedService for PingService {
    const NAME: &'static str = SERVICE;
}

impl tower::Service<http::Request<tonic::body::Body>> for PingService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            let response = match request.uri().path() {
                PING => {
                    let handler = tower::service_fn(|_: tonic::Request<()>| async {
                        let mut response = tonic::Response::new(());
                        if let Some(trace_id) = telemetry::current_trace_id() {
                            let value = trace_id.parse().expect("trace id is ascii");
                            response.metadata_mut().insert(SEEN_TRACE_ID, value);
                        }
                        Ok::<_, tonic::Status>(response)
                    });
                    tonic::server::Grpc::new(ProstCodec::<(), ()>::default())
                        .unary(handler, request)
                        .await
                }
                FAIL => tonic::Status::invalid_argument("always fails").into_http(),
                _ => tonic::Status::unimplemented("no such method").into_http(),
            };
            Ok(response)
        })
    }
}

/// Serves the ping and health services behind [`GrpcServerLayer`] on an ephemeral port.
async fn start_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let (_, health) = tonic_health::server::health_reporter();
    let server = tonic::transport::Server::builder()
        .layer(GrpcServerLayer::new("test"))
        .add_service(PingService)
        .add_service(health)
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(async move { server.await.expect("server runs") });
    addr
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// Calls `path` with an empty message through `client`.
async fn call<T>(
    client: &mut tonic::client::Grpc<T>,
    request: tonic::Request<()>,
    path: &'static str,
) -> Result<tonic::Response<()>, tonic::Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    T::ResponseBody: http_body::Body<Data = hyper::body::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    client
        .ready()
        .await
        .map_err(|error| tonic::Status::unavailable(error.into().to_string()))?;
    client
        .unary(
            request,
            PathAndQuery::from_static(path),
            ProstCodec::<(), ()>::default(),
        )
        .await
}

/// The finished spans of one trace.
fn spans_of(trace_id: TraceId) -> Vec<SpanData> {
    TELEMETRY.guard.force_flush().expect("flush");
    TELEMETRY
        .spans
        .get_finished_spans()
        .expect("finished spans")
        .into_iter()
        .filter(|span| span.span_context.trace_id() == trace_id)
        .collect()
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key.as_str() == key)
        .map(|attribute| &attribute.value)
}

#[test]
fn a_traceparent_is_continued_by_the_server() {
    run(async {
        let addr = start_server().await;
        let mut client = tonic::client::Grpc::new(channel(addr).await);
        let trace_id = TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("trace id");
        let parent_id = SpanId::from_hex("00f067aa0ba902b7").expect("span id");
        let mut request = tonic::Request::new(());
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-{parent_id}-01")
                .parse()
                .expect("ascii"),
        );

        let response = call(&mut client, request, PING).await.expect("ping");

        let seen = response
            .metadata()
            .get(SEEN_TRACE_ID)
            .expect("trace id seen");
        assert_eq!(seen.to_str().expect("ascii"), trace_id.to_string());
        let spans = spans_of(trace_id);
        let [server] = spans.as_slice() else {
            panic!("one server span expected, got {spans:#?}");
        };
        assert_eq!(server.name, "leadflow.test.v1.PingService/Ping");
        assert_eq!(server.span_kind, SpanKind::Server);
        assert_eq!(server.parent_span_id, parent_id);
        assert!(server.parent_span_is_remote);
        assert_eq!(
            attribute(server, "rpc.service"),
            Some(&Value::from(SERVICE))
        );
        assert_eq!(attribute(server, "rpc.method"), Some(&Value::from("Ping")));
        assert_eq!(
            attribute(server, "leadflow.service"),
            Some(&Value::from("test"))
        );
        assert_eq!(
            attribute(server, "rpc.grpc.status_code"),
            Some(&Value::I64(0))
        );
        // Costs on every call that nothing reads: left out. The trace id field is for log lines,
        // and this binary's filter (`warn`) writes none inside RPC spans.
        for unrecorded in ["busy_ns", "idle_ns", "thread.id", "thread.name", "trace_id"] {
            assert_eq!(attribute(server, unrecorded), None, "{unrecorded} recorded");
        }
    });
}

#[test]
fn the_interceptor_carries_the_client_trace_to_the_server() {
    run(async {
        let addr = start_server().await;
        let mut client = tonic::client::Grpc::new(InterceptedService::new(
            channel(addr).await,
            TraceContextInterceptor,
        ));
        let client_span = tracing::info_span!("client.call");
        let client_context = client_span.context();
        let trace_id = client_context.span().span_context().trace_id();
        let client_span_id = client_context.span().span_context().span_id();

        let status = call(&mut client, tonic::Request::new(()), FAIL)
            .instrument(client_span.clone())
            .await
            .expect_err("fail fails");
        drop(client_span);

        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        let spans = spans_of(trace_id);
        let server = spans
            .iter()
            .find(|span| span.span_kind == SpanKind::Server)
            .unwrap_or_else(|| panic!("no server span in {spans:#?}"));
        assert_eq!(server.parent_span_id, client_span_id);
        assert_eq!(
            attribute(server, "rpc.grpc.status_code"),
            Some(&Value::I64(3))
        );
        assert!(
            spans.iter().any(|span| span.name == "client.call"),
            "client span exported in the same trace"
        );
    });
}

#[test]
fn health_checks_are_served_without_a_trace() {
    run(async {
        let addr = start_server().await;
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel(addr).await);
        let trace_id = TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").expect("trace id");
        let mut request = tonic::Request::new(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        });
        request.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-b7ad6b7169203331-01")
                .parse()
                .expect("ascii"),
        );

        health.check(request).await.expect("health answers");

        assert!(spans_of(trace_id).is_empty(), "probes are DEBUG spans");
        let metrics_addr = TELEMETRY.guard.metrics_addr().expect("metrics enabled");
        let text = http_get(metrics_addr, "/metrics").await;
        assert!(
            text.lines()
                .any(|line| line.starts_with("rpc_server_requests_total{")
                    && line.contains("rpc_service=\"grpc.health.v1.Health\"")
                    && line.contains("rpc_method=\"Check\"")),
            "probes are still counted: {text}"
        );
    });
}

#[test]
fn a_stored_carrier_continues_the_trace() {
    run(async {
        assert!(telemetry::current_trace_context().is_empty());
        assert_eq!(telemetry::current_trace_id(), None);

        let producer = tracing::info_span!("outbox.enqueue");
        let (carrier, producer_trace_id) = producer.in_scope(|| {
            (
                telemetry::current_trace_context(),
                telemetry::current_trace_id().expect("traced"),
            )
        });
        assert!(carrier.contains_key("traceparent"), "{carrier:?}");

        let relay = tracing::info_span!("outbox.deliver");
        assert!(telemetry::set_parent_from(&relay, &carrier));
        let relay_trace_id = relay.in_scope(telemetry::current_trace_id);
        assert_eq!(relay_trace_id, Some(producer_trace_id.clone()));
        assert!(
            !telemetry::set_parent_from(&relay, &carrier),
            "an entered span keeps its parent"
        );

        let unrelated = tracing::info_span!("outbox.unrelated");
        assert!(!telemetry::set_parent_from(&unrelated, &HashMap::new()));
        let garbage = HashMap::from([("traceparent".to_owned(), "garbage".to_owned())]);
        assert!(!telemetry::set_parent_from(&unrelated, &garbage));
        let unrelated_trace_id = unrelated.in_scope(telemetry::current_trace_id);
        assert_ne!(unrelated_trace_id, Some(producer_trace_id.clone()));

        let batch = tracing::info_span!("outbox.batch");
        telemetry::add_link_from(&batch, &carrier);
        let batch_trace_id = batch.context().span().span_context().trace_id();
        drop(batch);
        let batch_span = spans_of(batch_trace_id)
            .into_iter()
            .find(|span| span.name == "outbox.batch")
            .expect("batch span exported");
        let link = batch_span.links.iter().next().expect("one link");
        assert_eq!(link.span_context.trace_id().to_string(), producer_trace_id);
    });
}

#[test]
fn rpc_metrics_are_scraped_from_the_metrics_endpoint() {
    run(async {
        let addr = start_server().await;
        let mut client = tonic::client::Grpc::new(channel(addr).await);
        call(&mut client, tonic::Request::new(()), PING)
            .await
            .expect("ping");
        call(&mut client, tonic::Request::new(()), FAIL)
            .await
            .expect_err("fail");
        call(
            &mut client,
            tonic::Request::new(()),
            "/leadflow.test.v1.PingService/Nope",
        )
        .await
        .expect_err("unimplemented");

        let metrics_addr = TELEMETRY.guard.metrics_addr().expect("metrics enabled");
        let text = http_get(metrics_addr, "/metrics").await;

        let counter = |method: &str, code: &str| {
            text.lines().any(|line| {
                line.starts_with("rpc_server_requests_total{")
                    && line.contains(&format!("rpc_method=\"{method}\""))
                    && line.contains(&format!("rpc_grpc_status_code=\"{code}\""))
            })
        };
        assert!(counter("Ping", "OK"), "{text}");
        assert!(counter("Fail", "INVALID_ARGUMENT"), "{text}");
        assert!(counter("_OTHER", "UNIMPLEMENTED"), "{text}");
        assert!(
            text.contains("rpc_server_duration_seconds_bucket{"),
            "{text}"
        );
        assert!(text.contains("service_name=\"telemetry-test\""), "{text}");
        assert!(
            http_get(metrics_addr, "/nope").await.is_empty(),
            "unknown paths answer 404"
        );
    });
}

#[test]
fn a_second_init_is_refused() {
    run(async {
        let error = telemetry::init("again", &TelemetryArgs::default()).expect_err("second init");
        assert!(
            matches!(error, TelemetryError::AlreadyInitialized),
            "{error}"
        );
    });
}

/// `GET path` over HTTP/1.1: the body of a 200 answer, empty for anything else.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("read");
    let (head, body) = answer.split_once("\r\n\r\n").expect("http answer");
    if head.starts_with("HTTP/1.1 200") {
        body.to_owned()
    } else {
        String::new()
    }
}
