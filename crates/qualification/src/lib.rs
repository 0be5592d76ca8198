//! Leadflow qualification: where "what is a qualified lead" stops being an argument.
//!
//! Qualification receives score changes from scoring's outbox and SDR decisions and sales
//! outcomes from handoff's, and moves every lead through one shared, versioned definition of
//! MQL, SAL and SQL (the pure state machine in [`domain`]), recording each transition with its
//! reason, actor, definition version, score and trace id. It answers stage, history and funnel
//! questions, recycles MQLs nobody accepted on a ticker, and asks handoff, through its own
//! outbox, to hand leads over to SDRs and to sales.

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
use leadflow_proto::qualification::v1::qualification_internal_service_server::QualificationInternalServiceServer;
use leadflow_proto::qualification::v1::qualification_service_server::QualificationServiceServer;
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

use crate::api::QualificationApi;
use crate::sink::HandoffSink;
use crate::store::Store;

/// The service's name in logs, spans and metrics.
pub const SERVICE: &str = "qualification";

/// Qualification's configuration: flags, or `LEADFLOW_…` environment variables.
#[derive(clap::Args, Debug, Clone)]
pub struct Config {
    /// Address the gRPC server listens on.
    #[arg(
        long,
        env = "LEADFLOW_QUALIFICATION_LISTEN_ADDR",
        default_value = "127.0.0.1:50053"
    )]
    pub listen_addr: SocketAddr,
    /// Database URL (`sqlite://…` or `postgres://…`); defaults to `<data-dir>/qualification.db`.
    #[arg(long, env = "LEADFLOW_QUALIFICATION_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Folder of the default SQLite files.
    #[arg(long, env = "LEADFLOW_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// Most pooled PostgreSQL connections.
    #[arg(long, env = "LEADFLOW_DATABASE_MAX_CONNECTIONS", default_value_t = 10)]
    pub database_max_connections: u32,
    /// Handoff's address, where hand-off requests and stage changes are delivered.
    #[arg(
        long,
        env = "LEADFLOW_HANDOFF_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub handoff_url: String,
    /// How often the recycle rules run over un-accepted MQLs, in milliseconds.
    #[arg(
        long,
        env = "LEADFLOW_QUALIFICATION_RECYCLE_INTERVAL_MS",
        default_value_t = 60_000
    )]
    pub recycle_interval_ms: u64,
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
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("qualification.db").display()
            )
        })
    }
}

/// Runs qualification on `listener` until `shutdown` fires: migrates its store, serves the
/// public and internal gRPC services with health and reflection, recycles un-accepted MQLs on a
/// ticker, and relays its events to handoff.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    clock: SharedClock,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    serve_with_drain_on(config, listener, clock, shutdown, Handle::current()).await
}

/// [`serve`], with the drain on `drain`: the internal RPCs scoring's relay calls, the relay to
/// handoff, the recycler and the store's connections and upkeep. In one process with the other
/// services (`leadflow up`) that is their lower-priority runtime, while the public RPCs are
/// answered on the runtime this runs on, at the callers' priority.
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
    .context("open the qualification database")?;
    let (db, reader) = (stores.writer.clone(), stores.reader.clone());
    let wakeup = Wakeup::new();
    let deletes = SharedDeletes::new();
    let store = Store::new(db.clone(), wakeup.clone())
        .with_reader(reader.clone())
        .with_shared_deletes(deletes.clone())
        .with_inbox_retention(config.outbox.inbox_retention());
    let api = QualificationApi::new(store.clone(), clock.clone());
    let public = InterceptedService::new(
        QualificationServiceServer::new(api.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
        keys.public(),
    );
    let internal = InterceptedService::new(
        RunOn::new(
            QualificationInternalServiceServer::new(api)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
            drain.clone(),
        ),
        keys.internal(),
    );
    let routes = Routes::new(public).add_service(internal);
    let health = Health::new(vec![
        <QualificationServiceServer<QualificationApi> as NamedService>::NAME,
        <QualificationInternalServiceServer<QualificationApi> as NamedService>::NAME,
    ]);
    let interval = Duration::from_millis(config.recycle_interval_ms.max(1));
    let lease = Lease::new(
        db.clone(),
        "qualification.recycler",
        lease::ttl_for(interval),
    );
    let recycler = drain.spawn(lease::every(lease, interval, shutdown.clone(), move || {
        recycle(store.clone(), clock.clone())
    }));
    let sink = {
        // The channel to handoff spawns its connection's tasks where it is created.
        let _on_drain = drain.enter();
        HandoffSink::new(&config.handoff_url, keys.internal_key())?
    };
    let relay = Relay::new(
        db.clone(),
        sink,
        config.outbox.relay_config(store::HANDOFF),
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
        vec![relay, recycler],
        &drain,
        shutdown,
    )
    .await?;
    Ok(())
}

/// One pass of the recycle rules.
async fn recycle(store: Store, clock: SharedClock) {
    match store.recycle(clock.now()).await {
        Ok(0) => {}
        Ok(recycled) => tracing::info!(service = SERVICE, recycled, "mqls recycled"),
        Err(err) => tracing::warn!(service = SERVICE, error = %err, "recycle failed"),
    }
}
