//! One trace across the four services: a single `Track` that makes a fitting lead raise its hand
//! is one trace holding spans of ingestion (the call), scoring and qualification (their outbox
//! deliveries), and handoff (the hand-off request, and its warm-context lookups back at scoring
//! and ingestion) — the asynchronous outbox hops continue the trace stored on each row. The
//! services run as `leadflow up` runs them, so the trace also crosses from the runtime that
//! accepts the calls to the drain's runtime that applies the deliveries.
//!
//! Telemetry is process-wide, so this test binary initialises it once, with an in-memory span
//! exporter, and holds one test: the journey on SQLite, then on PostgreSQL.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use leadflow_proto::common::v1::{Activity, Profile, Seniority};
use leadflow_proto::handoff::v1::{
    HandoffFilter, ListHandoffsRequest, handoff_service_client::HandoffServiceClient,
};
use leadflow_proto::ingestion::v1::{
    IdentifyRequest, LeadIdentity, TrackRequest, ingestion_service_client::IngestionServiceClient,
};
use leadflow_proto::qualification::v1::{
    GetLeadStageRequest, qualification_service_client::QualificationServiceClient,
};
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::SystemClock;
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_runtime::telemetry::{self, TelemetryArgs};
use leadflow_suite::{Configs, Listeners};
use leadflow_test_support::TestDb;
use opentelemetry::Value;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

fn outbox() -> OutboxArgs {
    OutboxArgs {
        outbox_poll_ms: 50,
        outbox_batch_size: 10,
        outbox_backoff_ms: 5,
        outbox_backoff_max_ms: 50,
        ..OutboxArgs::default()
    }
}

async fn listener() -> (tokio::net::TcpListener, SocketAddr) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    (listener, addr)
}

fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect_lazy()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| match &kv.value {
            Value::String(s) => s.to_string(),
            other => other.to_string(),
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_that_makes_an_mql_is_one_trace_across_four_services() {
    let spans = InMemorySpanExporter::default();
    let args = TelemetryArgs {
        log_filter: "warn".into(),
        ..TelemetryArgs::default()
    };
    let _guard = telemetry::init_with_span_exporter("leadflow-trace-test", &args, spans.clone())
        .expect("telemetry");

    let sqlite = ["ingestion", "scoring", "qualification", "handoff"].map(TestDb::sqlite);
    one_trace_across_four_services(&sqlite, &spans).await;
    let mut postgres = Vec::new();
    for _ in 0..4 {
        // None only outside CI without a configured server (in CI it panics).
        if let Some(db) = TestDb::postgres().await {
            postgres.push(db);
        }
    }
    if let Ok(postgres) = <[TestDb; 4]>::try_from(postgres) {
        spans.reset();
        one_trace_across_four_services(&postgres, &spans).await;
    }
}

/// Starts the four services on `dbs` (ingestion, scoring, qualification, handoff), makes a lead
/// raise its hand, and checks the `Track`'s trace reaches all four.
async fn one_trace_across_four_services(dbs: &[TestDb; 4], spans: &InMemorySpanExporter) {
    let (ingestion_listener, ingestion_addr) = listener().await;
    let (scoring_listener, scoring_addr) = listener().await;
    let (qualification_listener, qualification_addr) = listener().await;
    let (handoff_listener, handoff_addr) = listener().await;
    let url = |addr: SocketAddr| format!("http://{addr}");
    let shutdown = CancellationToken::new();
    let configs = Configs {
        ingestion: leadflow_ingestion::Config {
            listen_addr: ingestion_addr,
            database_url: Some(dbs[0].url.clone()),
            data_dir: std::env::temp_dir(),
            database_max_connections: 5,
            scoring_url: url(scoring_addr),
            auth: AuthArgs::default(),
            outbox: outbox(),
        },
        scoring: leadflow_scoring::Config {
            listen_addr: scoring_addr,
            database_url: Some(dbs[1].url.clone()),
            data_dir: std::env::temp_dir(),
            database_max_connections: 5,
            qualification_url: url(qualification_addr),
            sweep_interval_ms: 60_000,
            score_cache_leads: leadflow_scoring::DEFAULT_SCORE_CACHE_LEADS,
            auth: AuthArgs::default(),
            outbox: outbox(),
        },
        qualification: leadflow_qualification::Config {
            listen_addr: qualification_addr,
            database_url: Some(dbs[2].url.clone()),
            data_dir: std::env::temp_dir(),
            database_max_connections: 5,
            handoff_url: url(handoff_addr),
            recycle_interval_ms: 60_000,
            auth: AuthArgs::default(),
            outbox: outbox(),
        },
        handoff: leadflow_handoff::Config {
            listen_addr: handoff_addr,
            database_url: Some(dbs[3].url.clone()),
            data_dir: std::env::temp_dir(),
            database_max_connections: 5,
            ingestion_url: url(ingestion_addr),
            scoring_url: url(scoring_addr),
            qualification_url: url(qualification_addr),
            sla_sweep_interval_ms: 60_000,
            webhook_poll_ms: 60_000,
            auth: AuthArgs::default(),
            outbox: outbox(),
        },
    };
    let listeners = Listeners {
        ingestion: ingestion_listener,
        scoring: scoring_listener,
        qualification: qualification_listener,
        handoff: handoff_listener,
    };
    // As `leadflow up` runs them: the drain (internal deliveries, relays) on its own
    // lower-priority runtime, which the trace must cross.
    let suite = tokio::spawn(leadflow_suite::run(
        configs,
        listeners,
        Arc::new(SystemClock),
        shutdown.clone(),
    ));

    let identity = Some(LeadIdentity {
        user_id: "dana".into(),
        anonymous_id: String::new(),
    });
    let mut ingestion = IngestionServiceClient::new(channel(ingestion_addr));
    let lead_id = ingestion
        .identify(IdentifyRequest {
            message_id: "profile".into(),
            identity: identity.clone(),
            profile: Some(Profile {
                title: Some("Marketing Manager".into()),
                seniority: Seniority::Manager as i32,
                company_size: Some(200),
                industry: Some("Software".into()),
                ..Default::default()
            }),
            occurred_at: None,
        })
        .await
        .expect("identify")
        .into_inner()
        .lead_id;
    // A relay batch continues the trace of its first message (the others are linked): let the
    // profile reach qualification first, so the Track's event travels in batches of its own.
    let mut stages = QualificationServiceClient::new(channel(qualification_addr));
    tokio::time::timeout(Duration::from_secs(30), async {
        while stages
            .get_lead_stage(GetLeadStageRequest {
                lead_id: lead_id.clone(),
            })
            .await
            .is_err()
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the profile reaches qualification");
    spans.reset();
    let mut handoffs = HandoffServiceClient::new(channel(handoff_addr));

    ingestion
        .track(TrackRequest {
            message_id: "lets-talk".into(),
            identity,
            activity: Some(Activity {
                r#type: "demo_request".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("track");
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let listed = handoffs
                .list_handoffs(ListHandoffsRequest {
                    filter: Some(HandoffFilter {
                        lead_id: lead_id.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .handoffs;
            if !listed.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the hand-raise reaches handoff");

    let services_in_the_track_trace = || {
        let finished = spans.get_finished_spans().expect("spans");
        let Some(track) = finished.iter().find(|s| {
            attribute(s, "rpc.method").as_deref() == Some("Track")
                && attribute(s, "leadflow.service").as_deref() == Some("ingestion")
        }) else {
            return (BTreeSet::new(), 0);
        };
        let trace_id = track.span_context.trace_id();
        let in_trace: Vec<&SpanData> = finished
            .iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .collect();
        let services: BTreeSet<String> = in_trace
            .iter()
            .filter_map(|s| attribute(s, "leadflow.service"))
            .collect();
        (services, in_trace.len())
    };
    let all_four: BTreeSet<String> = ["handoff", "ingestion", "qualification", "scoring"]
        .map(String::from)
        .into();
    let (services, span_count) = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (services, count) = services_in_the_track_trace();
            if services == all_four {
                return (services, count);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "one trace holds all four services; the Track's trace has {:?}",
            services_in_the_track_trace()
        )
    });
    assert_eq!(services, all_four);
    assert!(
        span_count >= 6,
        "the call, three deliveries and the context lookups: {span_count} spans"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), suite)
        .await
        .expect("stops")
        .expect("task")
        .expect("clean");
}
