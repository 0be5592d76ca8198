//! Leadflow handoff: the bridge from qualification to sales.
//!
//! Handoff receives qualification's hand-off requests, routes each to an owner (territories,
//! weighted round-robin, capacity, availability, a fallback queue), stores it with a warm context
//! built from scoring and ingestion, and serves it to CRM connectors (list, stream from a cursor,
//! acknowledge, contact, accept, reject, outcomes) and to webhooks. An SLA sweeper escalates
//! hand-offs nobody contacted in time; decisions and outcomes flow back to qualification and
//! scoring through the outbox.

pub mod api;
pub mod context;
pub mod convert;
pub mod dispatch;
pub mod domain;
pub mod error;
pub mod sink;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use leadflow_proto::handoff::v1::handoff_internal_service_server::HandoffInternalServiceServer;
use leadflow_proto::handoff::v1::handoff_service_server::HandoffServiceServer;
use leadflow_runtime::auth::{AuthArgs, Keys};
use leadflow_runtime::background::RunOn;
use leadflow_runtime::clock::SharedClock;
use leadflow_runtime::lease::{self, Lease};
use leadflow_runtime::outbox::{OutboxArgs, Relay, Wakeup};
use leadflow_runtime::server::{self, Health, MAX_MESSAGE_BYTES};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

use crate::api::HandoffApi;
use crate::context::ContextBuilder;
use crate::dispatch::Dispatcher;
use crate::sink::{QualificationSink, ScoringSink};
use crate::store::Store;

/// The service's name in logs, spans and metrics.
pub const SERVICE: &str = "handoff";

/// Handoff's configuration: flags, or `LEADFLOW_…` environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "LEADFLOW_HANDOFF_LISTEN_ADDR",
        default_value = "127.0.0.1:50054"
    )]
    pub listen_addr: SocketAddr,
    /// Database URL (`sqlite://…` or `postgres://…`); defaults to `<data-dir>/handoff.db`.
    #[arg(long, env = "LEADFLOW_HANDOFF_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder of the default SQLite files.
    #[arg(long, env = "LEADFLOW_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Most pooled PostgreSQL connections.
    #[arg(long, env = "LEADFLOW_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Ingestion's address, for the lead's timeline in the warm context.
    #[arg(
        long,
        env = "LEADFLOW_INGESTION_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    pub ingestion_url: String,
    /// Scoring's address, for the score explanation and where outcomes are delivered.
    #[arg(
        long,
        env = "LEADFLOW_SCORING_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub scoring_url: String,
    /// Qualification's address, where decisions and outcomes are delivered.
    #[arg(
        long,
        env = "LEADFLOW_QUALIFICATION_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub qualification_url: String,
    /// How often the SLA sweeper looks for breaches, in milliseconds.
    #[arg(
        long,
        env = "LEADFLOW_HANDOFF_SLA_SWEEP_INTERVAL_MS",
        default_value_t = 60_000
    )]
    pub sla_sweep_interval_ms: u64,
    /// How often pending webhook deliveries are attempted, in milliseconds.
    #[arg(
        long,
        env = "LEADFLOW_HANDOFF_WEBHOOK_POLL_MS",
        default_value_t = 1_000
    )]
    pub webhook_poll_ms: u64,
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
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("handoff.db").display()))
    }
}

/// Runs handoff on `listener` until `shutdown` fires: migrates its store, serves the public and
/// internal gRPC services with health and reflection, sweeps for SLA breaches, delivers
/// webhooks, and relays decisions to qualification and scoring.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_drain_on(config, listener, clock, shutdown, Handle::current()).await
}

/// [`serve`], with the drain on `drain`: the internal RPCs qualification's relay calls, the
/// relays back to qualification and scoring, the SLA sweeper, the webhook dispatcher and the
/// store's connections and upkeep. In one process with the other services (`leadflow up`) that
/// is their lower-priority runtime, while the public RPCs the CRM connectors call are answered
/// on the runtime this runs on, at the callers' priority.
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
    .context("open the handoff database")?;
    let (db, reader) = (stores.writer.clone(), stores.reader.clone());
    let (qualification_wakeup, scoring_wakeup) = (Wakeup::new(), Wakeup::new());
    let store = Store::new(
        db.clone(),
        vec![qualification_wakeup.clone(), scoring_wakeup.clone()],
    )
    .with_reader(reader.clone())
    .with_inbox_retention(config.outbox.inbox_retention());
    let context = ContextBuilder::new(
        &config.scoring_url,
        &config.ingestion_url,
        keys.internal_key(),
    )?;
    let api = HandoffApi::new(store.clone(), clock.clone(), context, shutdown.clone());
    let public = InterceptedService::new(
        HandoffServiceServer::new(api.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        keys.public(),
    );
    let internal = InterceptedService::new(
        RunOn::new(
            HandoffInternalServiceServer::new(api)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            drain.clone(),
        ),
        keys.internal(),
    );
    let routes = Routes::new(public).add_service(internal);
    let health = Health::new(vec![
        <HandoffServiceServer<HandoffApi> as NamedService>::NAME,
        <HandoffInternalServiceServer<HandoffApi> as NamedService>::NAME,
    ]);
    let interval = Duration::from_millis(config.sla_sweep_interval_ms.max(1));
    let lease = Lease::new(db.clone(), "handoff.sla_sweeper", lease::ttl_for(interval));
    let sweeper = drain.spawn(lease::every(lease, interval, shutdown.clone(), {
        let (store, clock) = (store.clone(), clock.clone());
        move || sweep(store.clone(), clock.clone())
    }));
    let interval = Duration::from_millis(config.webhook_poll_ms.max(1));
    let lease = Lease::new(db.clone(), "handoff.webhooks", lease::ttl_for(interval));
    let dispatcher = Dispatcher::new(store, clock)?;
    let dispatcher = drain.spawn(lease::every(lease, interval, shutdown.clone(), move || {
        let dispatcher = dispatcher.clone();
        async move {
            if let Err(err) = dispatcher.run_once().await {
                tracing::warn!(service = SERVICE, error = %err, "webhook dispatch failed");
            }
        }
    }));
    let (to_qualification, to_scoring) = {
        // The relays' channels spawn their connections' tasks where they are created.
        let _on_drain = drain.enter();
        let to_qualification = Relay::new(
            db.clone(),
            QualificationSink::new(&config.qualification_url, keys.internal_key())?,
            config.outbox.relay_config(store::QUALIFICATION),
            qualification_wakeup,
        )
        .with_reader(reader.clone());
        let to_scoring = Relay::new(
            db.clone(),
            ScoringSink::new(&config.scoring_url, keys.internal_key())?,
            config.outbox.relay_config(store::SCORING),
            scoring_wakeup,
        )
        .with_reader(reader);
        (to_qualification, to_scoring)
    };
    let relays = [
        drain.spawn(to_qualification.run(shutdown.clone())),
        drain.spawn(to_scoring.run(shutdown.clone())),
    ];
    let mut background = vec![sweeper, dispatcher];
    background.extend(relays);
    server::run_until_shutdown(
        SERVICE, listener, routes, health, stores, background, &drain, shutdown,
    )
    .await?;
    Ok(())
}

/// One SLA sweep: escalates breached hand-offs.
async fn sweep(store: Store, clock: SharedClock) {
    match store.sweep_sla(clock.now()).await {
        Ok(0) => {}
        Ok(escalated) => tracing::info!(service = SERVICE, escalated, "sla breaches escalated"),
        Err(err) => tracing::warn!(service = SERVICE, error = %err, "sla sweep failed"),
    }
}
