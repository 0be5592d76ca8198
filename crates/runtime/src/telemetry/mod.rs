//! Telemetry: logs, OpenTelemetry traces and metrics, W3C trace-context propagation.
//!
//! A service calls [`init`] once, early in `main` (inside the multi-thread tokio runtime), keeps
//! the returned [`TelemetryGuard`] and calls [`TelemetryGuard::shutdown`] after its servers have
//! drained. Its gRPC server gets a [`GrpcServerLayer`] (continues the caller's trace, records RPC
//! metrics) and its clients a [`TraceContextInterceptor`] (passes the trace on). The outbox stores
//! [`current_trace_context`] on each row and its relay continues it with [`set_parent_from`].
//!
//! What is always on, OTLP endpoint or not: the W3C trace-context propagator, the OpenTelemetry
//! tracing layer (spans get trace ids, so a call chain through a service that exports nothing is
//! still one trace, and logs carry the trace id), and the meter provider feeding the Prometheus
//! registry. With an OTLP endpoint, spans (batched) and metrics (periodically) are also exported
//! over OTLP/gRPC.

mod init;
mod layer;
mod metrics_endpoint;
mod propagation;

use std::net::SocketAddr;

pub use init::{TelemetryGuard, init, init_with_span_exporter};
pub use layer::{GrpcServerLayer, GrpcServerService};
pub use propagation::{
    TraceContextInterceptor, add_link_from, current_trace_context, current_trace_id,
    inject_current_context, set_parent_from,
};

/// Instrumentation scope name of every Leadflow meter and tracer.
pub const SCOPE: &str = "leadflow";

/// The meter every Leadflow component records its metrics with (the global meter provider's
/// `leadflow` scope).
///
/// Instruments created before [`init`] stay no-ops forever, so create them after it.
pub fn meter() -> opentelemetry::metrics::Meter {
    opentelemetry::global::meter(SCOPE)
}

/// Log output format.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, coloured when stdout is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Command-line flags and environment variables that configure telemetry.
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct TelemetryArgs {
    /// Log output format.
    #[arg(long, env = "LEADFLOW_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Which logs to write, as `tracing` env-filter directives (`info`,
    /// `info,leadflow_runtime=debug`, ...). Does not affect which spans are exported.
    #[arg(long, env = "LEADFLOW_LOG", default_value = "info")]
    pub log_filter: String,

    /// OTLP/gRPC collector endpoint for traces and metrics (`http://collector:4317`); export is
    /// off when unset. An endpoint without a scheme means plain-text `http://`; `https://` is not
    /// supported (no TLS feature is built in), terminate TLS in a local collector.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Address of the Prometheus scrape endpoint (`GET /metrics`), e.g. `0.0.0.0:9464`; off when
    /// unset. Port 0 picks a free port (see [`TelemetryGuard::metrics_addr`]).
    #[arg(long, env = "LEADFLOW_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

impl Default for TelemetryArgs {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            otlp_endpoint: None,
            metrics_addr: None,
        }
    }
}

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TelemetryError {
    /// [`init`] already ran in this process.
    #[error("telemetry is already initialised")]
    AlreadyInitialized,
    /// The log filter does not parse.
    #[error("invalid log filter {filter:?}")]
    LogFilter {
        /// The filter as given.
        filter: String,
        /// What is wrong with it.
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// OTLP export or the metrics endpoint was asked for outside a tokio runtime.
    #[error("telemetry must be initialised inside a tokio runtime")]
    NoRuntime,
    /// The OTLP span or metric exporter could not be built (a malformed endpoint, `https://`).
    #[error("cannot build the otlp exporter")]
    Otlp(#[from] opentelemetry_otlp::ExporterBuildError),
    /// The Prometheus exporter could not be built.
    #[error("cannot build the prometheus exporter")]
    Prometheus(#[source] opentelemetry_sdk::error::OTelSdkError),
    /// The metrics endpoint could not bind its address.
    #[error("cannot bind the metrics endpoint on {addr}")]
    MetricsBind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why the bind failed.
        #[source]
        source: std::io::Error,
    },
    /// Another global `tracing` subscriber or `log` logger is already installed.
    #[error("cannot install the global tracing subscriber")]
    Subscriber(#[source] tracing_subscriber::util::TryInitError),
    /// Flushing spans or metrics failed.
    #[error("cannot flush telemetry")]
    Flush(#[source] opentelemetry_sdk::error::OTelSdkError),
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        telemetry: TelemetryArgs,
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "x",
            "--log-format",
            "json",
            "--log-filter",
            "debug",
            "--otlp-endpoint",
            "collector:4317",
            "--metrics-addr",
            "127.0.0.1:9464",
        ])
        .expect("flags parse");
        assert_eq!(cli.telemetry.log_format, LogFormat::Json);
        assert_eq!(cli.telemetry.log_filter, "debug");
        assert_eq!(
            cli.telemetry.otlp_endpoint.as_deref(),
            Some("collector:4317")
        );
        assert_eq!(
            cli.telemetry.metrics_addr,
            Some("127.0.0.1:9464".parse().expect("addr"))
        );
    }

    #[test]
    fn bad_log_format_is_refused() {
        assert!(Cli::try_parse_from(["x", "--log-format", "xml"]).is_err());
    }
}
