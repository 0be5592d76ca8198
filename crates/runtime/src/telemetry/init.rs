//! Installing the global subscriber, propagator and providers, and tearing them down.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanExporter, TracerProviderBuilder};
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use super::metrics_endpoint::MetricsServer;
use super::{LogFormat, SCOPE, TelemetryArgs, TelemetryError};

/// Set once [`init`] has claimed the process-wide telemetry.
static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// Crates whose spans and events never become OpenTelemetry spans: their per-frame and
/// per-connection spans would each start a trace of their own.
const TRANSPORT_TARGETS: [&str; 6] = ["h2", "hyper", "hyper_util", "tonic", "tower", "tower_http"];

/// Installs logging, tracing, metrics and W3C propagation for this process.
///
/// Call it once, inside the multi-thread tokio runtime (the OTLP exporters and the metrics
/// endpoint need it), before building servers and clients. A second call answers
/// [`TelemetryError::AlreadyInitialized`] and changes nothing. `service_name` becomes the
/// `service.name` resource attribute of every span and metric.
pub fn init(service_name: &str, args: &TelemetryArgs) -> Result<TelemetryGuard, TelemetryError> {
    install(service_name, args, |builder| builder)
}

/// [`init`], and also hands every finished span synchronously to `exporter`.
///
/// Meant for tests (`opentelemetry_sdk::trace::InMemorySpanExporter`): spans are visible the
/// moment they close, no flushing or waiting needed.
pub fn init_with_span_exporter<E>(
    service_name: &str,
    args: &TelemetryArgs,
    exporter: E,
) -> Result<TelemetryGuard, TelemetryError>
where
    E: SpanExporter + 'static,
{
    install(service_name, args, |builder| {
        builder.with_simple_exporter(exporter)
    })
}

fn install(
    service_name: &str,
    args: &TelemetryArgs,
    customize: impl FnOnce(TracerProviderBuilder) -> TracerProviderBuilder,
) -> Result<TelemetryGuard, TelemetryError> {
    let log_filter =
        EnvFilter::try_new(&args.log_filter).map_err(|source| TelemetryError::LogFilter {
            filter: args.log_filter.clone(),
            source,
        })?;
    let otlp_endpoint = args
        .otlp_endpoint
        .as_deref()
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty())
        .map(with_default_scheme);
    if (otlp_endpoint.is_some() || args.metrics_addr.is_some())
        && tokio::runtime::Handle::try_current().is_err()
    {
        return Err(TelemetryError::NoRuntime);
    }
    if INITIALIZED
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(TelemetryError::AlreadyInitialized);
    }
    let installed = build_and_install(
        service_name,
        args,
        log_filter,
        otlp_endpoint.as_deref(),
        customize,
    );
    if installed.is_err() {
        // Nothing global was installed: a later call may try again.
        INITIALIZED.store(false, Ordering::Release);
    }
    installed
}

fn build_and_install(
    service_name: &str,
    args: &TelemetryArgs,
    log_filter: EnvFilter,
    otlp_endpoint: Option<&str>,
    customize: impl FnOnce(TracerProviderBuilder) -> TracerProviderBuilder,
) -> Result<TelemetryGuard, TelemetryError> {
    let resource = Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();

    // Always a tracer provider, exporter or not: spans need OpenTelemetry ids for the trace to
    // be propagated through this service and for logs to carry it.
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if let Some(endpoint) = otlp_endpoint {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        tracer_builder = tracer_builder.with_batch_exporter(exporter);
    }
    let tracer_provider = customize(tracer_builder).build();

    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .build()
        .map_err(TelemetryError::Prometheus)?;
    let mut meter_builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus_reader);
    if let Some(endpoint) = otlp_endpoint {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?;
        meter_builder = meter_builder.with_reader(PeriodicReader::builder(exporter).build());
    }
    let meter_provider = meter_builder.build();

    let metrics_server = match args.metrics_addr {
        Some(addr) => Some(
            MetricsServer::start(addr, registry)
                .map_err(|source| TelemetryError::MetricsBind { addr, source })?,
        ),
        None => None,
    };

    let fmt_layer: Box<dyn Layer<Registry> + Send + Sync> = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
    };
    // Without the extras nothing here reads, each a cost on every RPC's span: busy and idle
    // times (two clock reads per poll), thread attributes (an allocation per span), and the
    // OpenTelemetry context activated on every poll (propagation reads the span's own context).
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer(SCOPE))
        .with_tracked_inactivity(false)
        .with_threads(false)
        .with_context_activation(false)
        .with_filter(span_filter());
    super::layer::set_trace_ids_in_logs(log_filter.max_level_hint());
    let subscriber = tracing_subscriber::registry()
        .with(fmt_layer.with_filter(log_filter))
        .with(otel_layer);
    if let Err(error) = subscriber.try_init() {
        if let Some(server) = metrics_server {
            server.stop();
        }
        return Err(TelemetryError::Subscriber(error));
    }

    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(tracer_provider.clone());
    opentelemetry::global::set_meter_provider(meter_provider.clone());

    let metrics_addr = metrics_server.as_ref().map(MetricsServer::local_addr);
    tracing::info!(
        service = service_name,
        otlp_endpoint,
        metrics_addr = metrics_addr.map(tracing::field::display),
        "telemetry initialised"
    );
    Ok(TelemetryGuard {
        tracer_provider,
        meter_provider,
        metrics_server,
    })
}

/// Which spans and events become OpenTelemetry spans: INFO and above, without transport noise.
fn span_filter() -> Targets {
    TRANSPORT_TARGETS.iter().fold(
        Targets::new().with_default(LevelFilter::INFO),
        |targets, target| targets.with_target(*target, LevelFilter::OFF),
    )
}

/// An OTLP endpoint without a scheme is plain-text gRPC (opentelemetry-otlp 0.33 would make it
/// `https://`, which this build cannot speak).
fn with_default_scheme(endpoint: &str) -> String {
    let has_scheme = endpoint
        .split_once("://")
        .is_some_and(|(scheme, _)| !scheme.contains(['/', '?', '#']));
    if has_scheme {
        endpoint.to_owned()
    } else {
        format!("http://{endpoint}")
    }
}

/// Keeps the telemetry pipeline of the process; call [`TelemetryGuard::shutdown`] at exit.
///
/// Dropping it without `shutdown` loses the spans and metrics not yet exported.
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    metrics_server: Option<MetricsServer>,
}

impl TelemetryGuard {
    /// The address the Prometheus endpoint actually listens on, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(MetricsServer::local_addr)
    }

    /// Exports the spans and metrics recorded so far, blocking until done.
    ///
    /// It blocks the calling thread: from async code with OTLP export on, call it through
    /// `tokio::task::spawn_blocking`.
    pub fn force_flush(&self) -> Result<(), TelemetryError> {
        self.tracer_provider
            .force_flush()
            .map_err(TelemetryError::Flush)?;
        self.meter_provider
            .force_flush()
            .map_err(TelemetryError::Flush)
    }

    /// Stops the metrics endpoint, then flushes and shuts down the tracer and meter providers.
    ///
    /// Failures are logged, not returned: there is nothing left to do about them at exit.
    pub async fn shutdown(self) {
        if let Some(server) = self.metrics_server {
            server.stop();
        }
        let tracer_provider = self.tracer_provider;
        let meter_provider = self.meter_provider;
        // The providers block while their exporters finish, and the OTLP exporters need the
        // runtime to make progress: never block a runtime thread with them.
        let flushed = tokio::task::spawn_blocking(move || {
            if let Err(error) = tracer_provider.shutdown() {
                tracing::warn!(%error, "tracer provider shutdown failed");
            }
            if let Err(error) = meter_provider.shutdown() {
                tracing::warn!(%error, "meter provider shutdown failed");
            }
        })
        .await;
        if let Err(error) = flushed {
            tracing::warn!(%error, "telemetry shutdown task failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_without_scheme_is_plain_http() {
        assert_eq!(
            with_default_scheme("collector:4317"),
            "http://collector:4317"
        );
        assert_eq!(
            with_default_scheme("http://collector:4317"),
            "http://collector:4317"
        );
        assert_eq!(
            with_default_scheme("https://collector:4317"),
            "https://collector:4317"
        );
        assert_eq!(
            with_default_scheme("collector:4317/a://b"),
            "http://collector:4317/a://b"
        );
    }
}
