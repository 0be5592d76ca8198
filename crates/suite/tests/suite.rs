//! The suite in one process: it stops as a whole, whether asked to or because one service
//! failed, and a failure names the service.

use std::sync::Arc;
use std::time::Duration;

use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::{SharedClock, SystemClock};
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_suite::{Configs, Listeners};
use leadflow_test_support::TestDb;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Loopback listeners on port 0, and each service's configuration with its own SQLite file
/// (scoring's at `scoring_url` when given).
async fn suite(dbs: &[TestDb; 4], scoring_url: Option<&str>) -> (Configs, Listeners) {
    let bind = || TcpListener::bind("127.0.0.1:0");
    let listeners = Listeners {
        ingestion: bind().await.expect("bind"),
        scoring: bind().await.expect("bind"),
        qualification: bind().await.expect("bind"),
        handoff: bind().await.expect("bind"),
    };
    let addr = |l: &TcpListener| l.local_addr().expect("addr");
    let url = |l: &TcpListener| format!("http://{}", addr(l));
    let data_dir = std::env::temp_dir();
    let configs = Configs {
        ingestion: leadflow_ingestion::Config {
            listen_addr: addr(&listeners.ingestion),
            database_url: Some(dbs[0].url.clone()),
            data_dir: data_dir.clone(),
            database_max_connections: 2,
            scoring_url: url(&listeners.scoring),
            auth: AuthArgs::default(),
            outbox: OutboxArgs::default(),
        },
        scoring: leadflow_scoring::Config {
            listen_addr: addr(&listeners.scoring),
            database_url: Some(scoring_url.map_or_else(|| dbs[1].url.clone(), str::to_owned)),
            data_dir: data_dir.clone(),
            database_max_connections: 2,
            qualification_url: url(&listeners.qualification),
            sweep_interval_ms: 60_000,
            score_cache_leads: 100,
            auth: AuthArgs::default(),
            outbox: OutboxArgs::default(),
        },
        qualification: leadflow_qualification::Config {
            listen_addr: addr(&listeners.qualification),
            database_url: Some(dbs[2].url.clone()),
            data_dir: data_dir.clone(),
            database_max_connections: 2,
            handoff_url: url(&listeners.handoff),
            recycle_interval_ms: 60_000,
            auth: AuthArgs::default(),
            outbox: OutboxArgs::default(),
        },
        handoff: leadflow_handoff::Config {
            listen_addr: addr(&listeners.handoff),
            database_url: Some(dbs[3].url.clone()),
            data_dir,
            database_max_connections: 2,
            ingestion_url: url(&listeners.ingestion),
            scoring_url: url(&listeners.scoring),
            qualification_url: url(&listeners.qualification),
            sla_sweep_interval_ms: 60_000,
            webhook_poll_ms: 1_000,
            auth: AuthArgs::default(),
            outbox: OutboxArgs::default(),
        },
    };
    (configs, listeners)
}

fn databases() -> [TestDb; 4] {
    ["ingestion", "scoring", "qualification", "handoff"].map(TestDb::sqlite)
}

fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_that_fails_stops_the_others_and_is_named() {
    let dbs = databases();
    // A file where scoring's folder should be: no database can be created under it.
    let not_a_folder = std::env::temp_dir().join(format!("leadflow-suite-{}", std::process::id()));
    std::fs::write(&not_a_folder, b"").expect("a file");
    let unopenable = format!(
        "sqlite://{}?mode=rwc",
        not_a_folder.join("scoring.db").display()
    );
    let (configs, listeners) = suite(&dbs, Some(&unopenable)).await;
    let shutdown = CancellationToken::new();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        leadflow_suite::run(configs, listeners, clock(), shutdown.clone()),
    )
    .await
    .expect("the other services stop by themselves");
    let error = format!(
        "{:#}",
        result.expect_err("scoring cannot open its database")
    );
    assert!(error.starts_with("scoring"), "{error}");
    assert!(shutdown.is_cancelled(), "the failure stops the suite");
    let _ = std::fs::remove_file(not_a_folder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_suite_serves_until_shut_down_then_stops_cleanly() {
    let dbs = databases();
    let (configs, listeners) = suite(&dbs, None).await;
    let ingestion = listeners.ingestion.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let suite = tokio::spawn(leadflow_suite::run(
        configs,
        listeners,
        clock(),
        shutdown.clone(),
    ));
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{ingestion}"))
            .expect("url")
            .connect_lazy(),
    );
    let serving = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(answer) = health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
            {
                return answer.into_inner().status;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("ingestion answers");
    assert_eq!(
        serving,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), suite)
        .await
        .expect("stops in time")
        .expect("the suite's task")
        .expect("every service stopped cleanly");
    for db in &dbs {
        let file = db.url.strip_prefix("sqlite://").expect("an sqlite file");
        assert!(
            !std::path::Path::new(&format!("{file}-wal")).exists(),
            "{file}: every connection closed, so sqlite copied its write-ahead log back and removed it"
        );
    }
}
