//! Leadflow ingestion: the front door for profile and activity data.
//!
//! It validates every field, deduplicates by message id, links anonymous visitors to known
//! leads, merges leads, serves leads and timelines, and publishes every change to scoring
//! through its transactional outbox.

pub mod api;
pub mod convert;
pub mod domain;
pub mod error;
pub mod sink;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use leadflow_proto::ingestion::v1::ingestion_internal_service_server::IngestionInternalServiceServer;
use leadflow_proto::ingestion::v1::ingestion_service_server::IngestionServiceServer;
use leadflow_runtime::auth::{AuthArgs, Keys};
use leadflow_runtime::clock::SharedClock;
use leadflow_runtime::outbox::{OutboxArgs, Relay, SharedDeletes, Wakeup};
use leadflow_runtime::server::{self, Health, MAX_MESSAGE_BYTES};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;

use crate::api::IngestionApi;
use crate::sink::ScoringSink;
use crate::store::Store;

/// The service's name in logs, spans and metrics.
pub const SERVICE: &str = "ingestion";

/// Ingestion's configuration: flags, or `LEADFLOW_…` environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "LEADFLOW_INGESTION_LISTEN_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub listen_addr: SocketAddr,
    /// Database URL (`sqlite://…` or `postgres://…`); defaults to `<data-dir>/ingestion.db`.
    #[arg(long, env = "LEADFLOW_INGESTION_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder of the default SQLite files.
    #[arg(long, env = "LEADFLOW_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Most pooled PostgreSQL connections.
    #[arg(long, env = "LEADFLOW_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Scoring's address, where lead events are delivered.
    #[arg(
        long,
        env = "LEADFLOW_SCORING_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub scoring_url: String,
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
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("ingestion.db").display()))
    }
}

/// Runs ingestion on `listener` until `shutdown` fires: migrates its store, serves the public
/// and internal gRPC services with health and reflection, and relays its outbox to scoring.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_relay_on(config, listener, clock, shutdown, Handle::current()).await
}

/// [`serve`], with the relay of the outbox to scoring (its task and its connection to scoring)
/// on `relay_runtime`. In one process with the services it feeds (`leadflow up`), the relay
/// runs with them, at their lower priority, and ingestion's own runtime is left to the calls
/// it acknowledges.
pub async fn serve_with_relay_on(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
    relay_runtime: Handle,
) -> anyhow::Result<()> {
    let keys = Keys::from_args(&config.auth).context("api keys")?;
    keys.log_mode(SERVICE);
    let stores = leadflow_runtime::db::open_with_reader::<store::migrations::Migrator>(
        &config.database_url(),
        config.database_max_connections,
    )
    .await
    .context("open the ingestion database")?;
    let (db, reader) = (stores.writer.clone(), stores.reader.clone());
    let wakeup = Wakeup::new();
    let deletes = SharedDeletes::new();
    let store = Store::new(db.clone(), wakeup.clone(), deletes.clone()).with_reader(reader.clone());
    let api = IngestionApi::new(store, clock);
    let public = InterceptedService::new(
        IngestionServiceServer::new(api.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        keys.public(),
    );
    let internal = InterceptedService::new(
        IngestionInternalServiceServer::new(api).max_decoding_message_size(MAX_MESSAGE_BYTES),
        keys.internal(),
    );
    let routes = Routes::new(public).add_service(internal);

    let health = Health::new(vec![
        <IngestionServiceServer<IngestionApi> as NamedService>::NAME,
        <IngestionInternalServiceServer<IngestionApi> as NamedService>::NAME,
    ]);
    let relay = {
        // The channel to scoring spawns its connection's tasks where it is created.
        let _on_relay_runtime = relay_runtime.enter();
        let sink = ScoringSink::new(&config.scoring_url, keys.internal_key())?;
        let relay = Relay::new(
            db.clone(),
            sink,
            config.outbox.relay_config(store::SCORING),
            wakeup,
        )
        .with_reader(reader)
        .with_shared_deletes(deletes);
        relay_runtime.spawn(relay.run(shutdown.clone()))
    };
    server::run_until_shutdown(
        SERVICE,
        listener,
        routes,
        health,
        stores,
        vec![relay],
        &Handle::current(),
        shutdown,
    )
    .await?;
    Ok(())
}
