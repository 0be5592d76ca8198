//! W3C trace-context propagation through gRPC metadata and stored carriers (outbox rows).
//!
//! Everything goes through the global propagator that [`super::init`] sets to W3C
//! `traceparent`/`tracestate`.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TraceContextExt;
use opentelemetry::{Context, global};
use tonic::metadata::{AsciiMetadataValue, MetadataKey, MetadataMap};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Client interceptor that passes the current span's trace on in the outgoing metadata.
///
/// ```ignore
/// let client = IngestionServiceClient::with_interceptor(channel, TraceContextInterceptor);
/// ```
///
/// Interceptors run when the call starts, so the span current there is the parent the server
/// continues: make the call inside the span (`.instrument(span)` or `#[instrument]`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceContextInterceptor;

impl tonic::service::Interceptor for TraceContextInterceptor {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        inject_current_context(request.metadata_mut());
        Ok(request)
    }
}

/// Writes the current span's trace context into `metadata` (for interceptors of your own that
/// do more than [`TraceContextInterceptor`]). Writes nothing outside a traced span.
pub fn inject_current_context(metadata: &mut MetadataMap) {
    let context = Span::current().context();
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// The current span's trace context as a carrier to store (e.g. on an outbox row); empty outside
/// a traced span.
pub fn current_trace_context() -> HashMap<String, String> {
    let mut carrier = HashMap::new();
    let context = Span::current().context();
    if context.span().span_context().is_valid() {
        global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut carrier);
        });
    }
    carrier
}

/// Makes the trace stored in `carrier` the parent of `span`, which must not have been entered
/// yet. Returns whether it did: an empty or invalid carrier, an entered span or a span that is
/// not traced leave `span` as it was.
pub fn set_parent_from(span: &Span, carrier: &HashMap<String, String>) -> bool {
    match valid_context(carrier) {
        Some(parent) => span.set_parent(parent).is_ok(),
        None => false,
    }
}

/// Links `span` to the trace stored in `carrier` without making it the parent (for work that
/// handles many messages at once, such as a relay batch). Works on entered spans too; no-op on
/// an empty or invalid carrier.
pub fn add_link_from(span: &Span, carrier: &HashMap<String, String>) {
    if let Some(linked) = valid_context(carrier) {
        span.add_link(linked.span().span_context().clone());
    }
}

/// The hexadecimal trace id of the current span (32 characters), to store on records and to
/// find the trace later; `None` outside a traced span.
pub fn current_trace_id() -> Option<String> {
    let context = Span::current().context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The remote context in HTTP request headers; an empty context when there is none.
pub(super) fn extract_from_headers(headers: &http::HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), &HeaderExtractor(headers))
    })
}

fn valid_context(carrier: &HashMap<String, String>) -> Option<Context> {
    if carrier.is_empty() {
        return None;
    }
    let context = global::get_text_map_propagator(|propagator| {
        propagator.extract_with_context(&Context::new(), carrier)
    });
    context.span().span_context().is_valid().then_some(context)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The W3C propagator writes lowercase ASCII names and values; anything else is skipped.
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            AsciiMetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}
