//! The server-side tower layer: one span per RPC continuing the caller's trace, and RPC metrics.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};
use opentelemetry::trace::TraceContextExt;
use tower::{Layer, Service};
use tracing::field::{Empty, display};
use tracing::{Instrument, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::LevelFilter;

use super::propagation::extract_from_headers;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Histogram buckets of `rpc.server.duration`, in seconds (0.5 ms to 10 s).
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// gRPC status code names, indexed by code.
const CODE_NAMES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];
const CANCELLED: u8 = 1;
const UNKNOWN: u8 = 2;
const UNIMPLEMENTED: u8 = 12;

/// Metric attribute value standing for paths that are not a served method, so that random paths
/// cannot create unbounded metric series.
const OTHER: &str = "_OTHER";

/// Tower layer for `tonic::transport::Server::builder().layer(...)` that traces and measures
/// every RPC.
///
/// Each request gets a span `grpc.server` (INFO; DEBUG for health and reflection, so probes do
/// not flood traces) named after the method path, a child of the W3C trace context in the
/// request headers, with `rpc.*` attributes, `leadflow.service` and, once known,
/// `rpc.grpc.status_code`; its `trace_id` field puts the trace id in every log line of the call
/// (recorded only when the log filter writes lines of the span's level: see
/// [`set_trace_ids_in_logs`]).
/// It also counts `rpc.server.requests` and records `rpc.server.duration` (seconds) by
/// `rpc.service`, `rpc.method` and `rpc.grpc.status_code` (`"OK"`, `"INVALID_ARGUMENT"`, ...).
///
/// The status is read from the response headers, where tonic puts every error of a unary call;
/// a streaming call that fails after its first message counts as `OK`. A call dropped before it
/// answers (client gone, server timeout) counts as `CANCELLED`. Requests refused by tonic's own
/// `load_shed`, `concurrency_limit` and `timeout` never reach this layer (tonic puts those
/// outside user layers); put such limits as layers after this one to have them measured.
///
/// Build it after [`super::init`]: the instruments come from the global meter provider.
#[derive(Clone)]
pub struct GrpcServerLayer {
    service: &'static str,
    instruments: Arc<Instruments>,
}

struct Instruments {
    requests: Counter<u64>,
    duration: Histogram<f64>,
}

impl GrpcServerLayer {
    /// A layer for the Leadflow service `service` (`"ingestion"`, ...), recorded as the
    /// `leadflow.service` span attribute so services sharing a process stay apart.
    pub fn new(service: &'static str) -> Self {
        let meter = super::meter();
        let instruments = Instruments {
            requests: meter
                .u64_counter("rpc.server.requests")
                .with_description("gRPC requests served, by method and status code")
                .build(),
            duration: meter
                .f64_histogram("rpc.server.duration")
                .with_description("Time to answer a gRPC request, by method and status code")
                .with_unit("s")
                .with_boundaries(DURATION_BUCKETS.to_vec())
                .build(),
        };
        Self {
            service,
            instruments: Arc::new(instruments),
        }
    }
}

impl fmt::Debug for GrpcServerLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcServerLayer")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for GrpcServerLayer {
    type Service = GrpcServerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcServerService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`GrpcServerLayer`] wraps around the inner gRPC service.
///
/// Errors of the inner service are answered as gRPC statuses (as tonic itself would) so that
/// they are measured too.
#[derive(Clone, Debug)]
pub struct GrpcServerService<S> {
    inner: S,
    layer: GrpcServerLayer,
}

impl<S, B, ResBody> Service<http::Request<B>> for GrpcServerService<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    S::Error: Into<BoxError> + Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let start = Instant::now();
        let path = request.uri().path();
        let (rpc_service, rpc_method) = split_path(path).unwrap_or((OTHER, OTHER));
        let span = server_span(self.layer.service, path, rpc_service, rpc_method);
        let parent = extract_from_headers(request.headers());
        if parent.span().span_context().is_valid() {
            // Fails only for spans nobody traces (DEBUG probes): nothing to continue then.
            let _ = span.set_parent(parent);
        }
        if TRACE_IDS_IN_LOGS.load(Ordering::Relaxed) {
            let trace_id = span.context().span().span_context().trace_id();
            if trace_id != opentelemetry::trace::TraceId::INVALID {
                span.record("trace_id", display(trace_id));
            }
        }
        let mut call = Call {
            instruments: Arc::clone(&self.layer.instruments),
            rpc_service: rpc_service.to_owned(),
            rpc_method: rpc_method.to_owned(),
            start,
            span,
            finished: false,
        };
        let response = {
            let _entered = call.span.enter();
            self.inner.call(request)
        };
        let span = call.span.clone();
        Box::pin(async move {
            let response = match response.instrument(span).await {
                Ok(response) => response,
                Err(error) => tonic::Status::from_error(error.into()).into_http(),
            };
            call.finish(status_code(response.headers()));
            Ok(response)
        })
    }
}

/// Whether RPC spans record their `trace_id` field: reading the trace id back from the span's
/// OpenTelemetry context and recording it through both layers was ~4.6% of the CPU of serving
/// score reads, wasted when the log filter writes no lines of the span's level (the fmt layer
/// then never sees the span, and the exported span has its trace id anyway).
static TRACE_IDS_IN_LOGS: AtomicBool = AtomicBool::new(true);

/// Tells the layer how verbose the log filter may be (its `max_level_hint`, `None` when it
/// cannot tell): RPC spans, INFO or more verbose, record their trace id for log lines only when
/// the filter may write INFO lines. [`super::init`] calls it; until then trace ids are recorded.
pub(super) fn set_trace_ids_in_logs(log_max_level: Option<LevelFilter>) {
    TRACE_IDS_IN_LOGS.store(logs_show_rpc_spans(log_max_level), Ordering::Relaxed);
}

/// Whether a log filter of this most verbose level may write lines inside RPC spans.
fn logs_show_rpc_spans(log_max_level: Option<LevelFilter>) -> bool {
    log_max_level.is_none_or(|max| max >= LevelFilter::INFO)
}

/// One RPC being served; records its outcome exactly once, as `CANCELLED` if dropped unanswered.
struct Call {
    instruments: Arc<Instruments>,
    rpc_service: String,
    rpc_method: String,
    start: Instant,
    span: Span,
    finished: bool,
}

impl Call {
    fn finish(&mut self, code: u8) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let elapsed = self.start.elapsed().as_secs_f64();
        // As i64: tracing-opentelemetry turns unsigned fields into strings.
        self.span.record("rpc.grpc.status_code", i64::from(code));
        if is_server_error(code) {
            self.span.record("otel.status_code", "error");
        }
        let (rpc_service, rpc_method) = if code == UNIMPLEMENTED {
            (OTHER.to_owned(), OTHER.to_owned())
        } else {
            (
                std::mem::take(&mut self.rpc_service),
                std::mem::take(&mut self.rpc_method),
            )
        };
        let attributes = [
            KeyValue::new("rpc.service", rpc_service),
            KeyValue::new("rpc.method", rpc_method),
            KeyValue::new("rpc.grpc.status_code", code_name(code)),
        ];
        self.instruments.requests.add(1, &attributes);
        self.instruments.duration.record(elapsed, &attributes);
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.finish(CANCELLED);
    }
}

fn server_span(service: &'static str, path: &str, rpc_service: &str, rpc_method: &str) -> Span {
    let name = path.strip_prefix('/').unwrap_or(path);
    macro_rules! server_span {
        ($level:expr) => {
            tracing::span!(
                $level,
                "grpc.server",
                otel.name = name,
                otel.kind = "server",
                otel.status_code = Empty,
                rpc.system = "grpc",
                rpc.service = rpc_service,
                rpc.method = rpc_method,
                rpc.grpc.status_code = Empty,
                leadflow.service = service,
                trace_id = Empty,
            )
        };
    }
    if is_probe(path) {
        server_span!(tracing::Level::DEBUG)
    } else {
        server_span!(tracing::Level::INFO)
    }
}

/// Health checks and reflection: called all the time by machines, rarely worth a trace.
fn is_probe(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// `/package.Service/Method` → (`package.Service`, `Method`).
fn split_path(path: &str) -> Option<(&str, &str)> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!service.is_empty() && !method.is_empty() && !method.contains('/'))
        .then_some((service, method))
}

/// The `grpc-status` of a trailers-only response; `OK` when absent (it then comes in the
/// trailers, after a successful response).
fn status_code(headers: &http::HeaderMap) -> u8 {
    match headers.get("grpc-status") {
        None => 0,
        Some(value) => std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|text| text.parse::<u8>().ok())
            .filter(|code| usize::from(*code) < CODE_NAMES.len())
            .unwrap_or(UNKNOWN),
    }
}

fn code_name(code: u8) -> &'static str {
    CODE_NAMES
        .get(usize::from(code))
        .copied()
        .unwrap_or("UNKNOWN")
}

/// Codes that mark a server span as failed (OpenTelemetry gRPC conventions); the others are the
/// caller's mistakes.
fn is_server_error(code: u8) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/leadflow.ingestion.v1.IngestionService/Track"),
            Some(("leadflow.ingestion.v1.IngestionService", "Track"))
        );
        assert_eq!(split_path("/"), None);
        assert_eq!(split_path("/a"), None);
        assert_eq!(split_path("/a/"), None);
        assert_eq!(split_path("/a/b/c"), None);
        assert_eq!(split_path("a/b"), None);
    }

    #[test]
    fn status_codes_are_named() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(code_name(status_code(&headers)), "OK");
        headers.insert("grpc-status", http::HeaderValue::from_static("3"));
        assert_eq!(code_name(status_code(&headers)), "INVALID_ARGUMENT");
        headers.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(code_name(status_code(&headers)), "UNAUTHENTICATED");
        headers.insert("grpc-status", http::HeaderValue::from_static("99"));
        assert_eq!(code_name(status_code(&headers)), "UNKNOWN");
        assert_eq!(CODE_NAMES[usize::from(UNIMPLEMENTED)], "UNIMPLEMENTED");
    }

    #[test]
    fn trace_ids_are_recorded_only_for_filters_that_may_log_inside_rpc_spans() {
        assert!(!logs_show_rpc_spans(Some(LevelFilter::OFF)));
        assert!(!logs_show_rpc_spans(Some(LevelFilter::WARN)));
        assert!(logs_show_rpc_spans(Some(LevelFilter::INFO)));
        assert!(logs_show_rpc_spans(Some(LevelFilter::TRACE)));
        assert!(logs_show_rpc_spans(None), "a filter that cannot tell");
    }

    #[test]
    fn probes_are_recognised() {
        assert!(is_probe("/grpc.health.v1.Health/Check"));
        assert!(is_probe(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
        assert!(!is_probe("/leadflow.ingestion.v1.IngestionService/Track"));
    }
}
