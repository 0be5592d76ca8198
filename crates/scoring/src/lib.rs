//! Leadflow scoring: fit + engagement scores under a versioned, explainable model.
//!
//! Scoring receives lead events from ingestion's outbox, keeps each lead's ledger and the
//! activity facts it was sent, answers score, explanation and what-if questions, publishes model
//! versions and re-scores history with them, applies inactivity and decay with a periodic
//! sweeper, and announces score changes to qualification through its own outbox.

pub mod api;
pub mod convert;
pub mod domain;
pub mod error;
pub mod sink;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use leadflow_proto::scoring::v1::scoring_internal_service_server::ScoringInternalServiceServer;
use leadflow_proto::scoring::v1::scoring_service_server::ScoringServiceServer;
use leadflow_runtime::auth::{AuthArgs, Keys};
use leadflow_runtime::background::RunOn;
use leadflow_runtime::clock::SharedClock;
use leadflow_runtime::lease::{self, Lease};
use leadflow_runtime::outbox::{OutboxArgs, Relay, SharedDeletes, Wakeup};
use leadflow_runtime::server::{self, Health, MAX_MESSAGE_BYTES};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

pub use store::DEFAULT_SCORE_CACHE_LEADS;

use crate::api::ScoringApi;
use crate::sink::QualificationSink;
use crate::store::Store;

/// The service's name in logs, spans and metrics.
pub const SERVICE: &str = "scoring";

/// Scoring's configuration: flags, or `LEADFLOW_…` environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "LEADFLOW_SCORING_LISTEN_ADDR",
        default_value = "127.0.0.1:50052"
    )]
    pub listen_addr: SocketAddr,
    /// Database URL (`sqlite://…` or `postgres://…`); defaults to `<data-dir>/scoring.db`.
    #[arg(long, env = "LEADFLOW_SCORING_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder of the default SQLite files.
    #[arg(long, env = "LEADFLOW_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Most pooled PostgreSQL connections.
    #[arg(long, env = "LEADFLOW_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Qualification's address, where score changes are delivered.
    #[arg(
        long,
        env = "LEADFLOW_QUALIFICATION_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub qualification_url: String,
    /// How often the sweeper applies inactivity rules and announces decay, in milliseconds.
    #[arg(
        long,
        env = "LEADFLOW_SCORING_SWEEP_INTERVAL_MS",
        default_value_t = 60_000
    )]
    pub sweep_interval_ms: u64,
    /// Leads whose score inputs are kept in memory on an SQLite store (some 600 bytes each;
    /// 0: none). PostgreSQL stores keep none.
    #[arg(
        long,
        env = "LEADFLOW_SCORING_SCORE_CACHE_LEADS",
        default_value_t = DEFAULT_SCORE_CACHE_LEADS
    )]
    pub score_cache_leads: usize,
    /// API keys.
    #[command(flatten)]
    pub auth: AuthArgs,
    /// Outbox relay settings.
    #[command(flatten)]
    pub outbox: OutboxArgs,
}

impl Config {
    /// The database URL in effect.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("scoring.db").display()))
    }
}

/// Runs scoring on `listener` until `shutdown` fires: migrates its store, serves the public and
/// internal gRPC services with health and reflection, resumes unfinished rescore jobs, sweeps
/// for inactivity and decay, and relays score changes to qualification.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_drain_on(config, listener, clock, shutdown, Handle::current()).await
}

/// [`serve`], with the drain on `drain`: the internal RPCs ingestion's relay calls, the relay to
/// qualification, the sweeper, rescore jobs and the store's connections and upkeep. In one
/// process with the other services (`leadflow up`) that is their lower-priority runtime, while
/// the public RPCs (`GetScore` and the rest) are answered on the runtime this runs on, at the
/// callers' priority.
pub async fn serve_with_drain_on(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
    drain: Handle,
) -> anyhow::Result<()> {
    let keys = Keys::from_args(&config.auth).context("api keys")?;
    keys.log_mode(SERVICE);
    let stores = leadflow_runtime::db::open_on::<store::migrations::Migrator>(
        &drain,
        &config.database_url(),
        config.database_max_connections,
    )
    .await
    .context("open the scoring database")?;
    let (db, reader) = (stores.writer.clone(), stores.reader.clone());
    let reads_beside_writer = stores.reads_beside_writer;
    let wakeup = Wakeup::new();
    let deletes = SharedDeletes::new();
    let store = Store::new(db.clone(), wakeup.clone())
        .with_shared_deletes(deletes.clone())
        .with_reader(reader.clone(), reads_beside_writer)
        .with_score_cache_leads(config.score_cache_leads)
        .with_inbox_retention(config.outbox.inbox_retention());
    let api = ScoringApi::new(store.clone(), clock.clone()).with_jobs_on(drain.clone());
    for job in store
        .unfinished_jobs()
        .await
        .context("unfinished rescore jobs")?
    {
        tracing::info!(job_id = %job.job_id, "resuming rescore job");
        api.spawn_job(job);
    }
    let public = InterceptedService::new(
        ScoringServiceServer::new(api.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        keys.public(),
    );
    let internal = InterceptedService::new(
        RunOn::new(
            ScoringInternalServiceServer::new(api)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            drain.clone(),
        ),
        keys.internal(),
    );
    let routes = Routes::new(public).add_service(internal);

    let health = Health::new(vec![
        <ScoringServiceServer<ScoringApi> as NamedService>::NAME,
        <ScoringInternalServiceServer<ScoringApi> as NamedService>::NAME,
    ]);
    let interval = Duration::from_millis(config.sweep_interval_ms.max(1));
    let lease = Lease::new(db.clone(), "scoring.sweeper", lease::ttl_for(interval));
    let sweeper = drain.spawn(lease::every(lease, interval, shutdown.clone(), {
        let store = store.clone();
        move || sweep(store.clone(), clock.clone())
    }));
    let sink = {
        // The channel to qualification spawns its connection's tasks where it is created.
        let _on_drain = drain.enter();
        QualificationSink::new(&config.qualification_url, keys.internal_key())?
    };
    let relay = Relay::new(
        db.clone(),
        sink,
        config.outbox.relay_config(store::QUALIFICATION),
        wakeup,
    )
    .with_reader(reader)
    .with_shared_deletes(deletes);
    let relay = drain.spawn(relay.run(shutdown.clone()));
    server::run_until_shutdown(
        SERVICE,
        listener,
        routes,
        health,
        stores,
        vec![relay, sweeper],
        &drain,
        shutdown,
    )
    .await?;
    Ok(())
}

/// One sweep: applies inactivity rules and announces decay to the leads that are due.
async fn sweep(store: Store, clock: SharedClock) {
    match store.sweep(clock.now()).await {
        Ok(swept) if swept.visited == 0 => {}
        Ok(swept) => tracing::info!(
            service = SERVICE,
            visited = swept.visited,
            announced = swept.announced,
            "swept due leads"
        ),
        Err(err) => tracing::warn!(service = SERVICE, error = %err, "sweep failed"),
    }
}
