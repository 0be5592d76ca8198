//! Serving a Leadflow gRPC service: the same tonic settings, telemetry layer, health and
//! reflection for every service, on a listener bound beforehand (port 0 in tests), until the
//! shutdown token fires.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::telemetry::GrpcServerLayer;

/// Largest request or response message a service accepts, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Binds `addr`; port 0 picks a free port (read it back with `local_addr`).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// The health of one service process: `SERVING` for the process (`""`) and for each of its
/// gRPC services once the store is migrated and answers, `NOT_SERVING` while shutting down.
#[derive(Debug, Clone)]
pub struct Health {
    reporter: HealthReporter,
    services: Vec<&'static str>,
}

impl Health {
    /// A reporter for the given fully qualified gRPC service names; all start `NOT_SERVING`.
    pub fn new(services: Vec<&'static str>) -> Self {
        Self {
            reporter: HealthReporter::new(),
            services,
        }
    }

    /// Marks the process and its services serving or not.
    pub async fn set(&self, serving: bool) {
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.reporter.set_service_status("", status).await;
        for service in &self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }
}

/// Serves `routes` plus `grpc.health.v1` and server reflection (v1 and v1alpha) on `listener`
/// until `shutdown` is cancelled; then reports `NOT_SERVING`, stops accepting and lets
/// in-flight calls finish.
pub async fn serve(
    service: &'static str,
    listener: TcpListener,
    routes: Routes,
    health: Health,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let health_service = tonic_health::pb::health_server::HealthServer::new(
        tonic_health::server::HealthService::from_health_reporter(health.reporter.clone()),
    );
    let routes = routes
        .add_service(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let drain = {
        let health = health.clone();
        async move {
            shutdown.cancelled().await;
            health.set(false).await;
            tracing::info!(service, "draining in-flight calls");
        }
    };
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .max_connection_age(Duration::from_secs(300))
        .layer(GrpcServerLayer::new(service))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, drain)
        .await?;
    Ok(())
}

/// Serves a service until `shutdown` fires, the way every Leadflow service runs: health follows
/// the store (checked now, then watched), an SQLite store's WAL is copied beside its writer
/// ([`crate::checkpoints`]), its tables' planner statistics are kept fresh
/// ([`crate::statistics`]), the server drains in-flight calls, then the `background` tasks
/// (relays, sweepers) finish their current work, then the store's pools close
/// ([`crate::db::Pools::close`]). The store's upkeep (health watch, checkpoints, statistics)
/// runs on `upkeep`: the service's own runtime when it runs alone, the drain's lower-priority
/// runtime in one process with the others.
#[allow(clippy::too_many_arguments)]
pub async fn run_until_shutdown(
    service: &'static str,
    listener: TcpListener,
    routes: Routes,
    health: Health,
    stores: crate::db::Pools,
    mut background: Vec<tokio::task::JoinHandle<()>>,
    upkeep: &tokio::runtime::Handle,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let db = &stores.writer;
    health.set(crate::db::ping(db).await).await;
    background.push(upkeep.spawn(watch_store(
        service,
        db.clone(),
        health.clone(),
        shutdown.clone(),
    )));
    background.push(upkeep.spawn(crate::checkpoints::keep_copying(
        service,
        db.clone(),
        shutdown.clone(),
    )));
    background.push(upkeep.spawn(crate::statistics::keep_fresh(
        service,
        db.clone(),
        shutdown.clone(),
    )));
    tracing::info!(service, addr = %listener.local_addr()?, "listening");
    let served = serve(service, listener, routes, health, shutdown.clone()).await;
    shutdown.cancel();
    for task in background {
        if let Err(err) = task.await {
            tracing::error!(service, error = %err, "background task failed");
        }
    }
    if let Err(err) = stores.close().await {
        tracing::warn!(service, error = %err, "closing the store failed");
    }
    tracing::info!(service, "stopped");
    served
}

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener is unusable.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The descriptor sets for reflection do not decode (a build problem).
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The transport failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(leadflow_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
}

/// Keeps `health` in step with the store until `shutdown`: `NOT_SERVING` while the database does
/// not answer, `SERVING` again once it does.
pub async fn watch_store(
    service: &'static str,
    db: sea_orm::DatabaseConnection,
    health: Health,
    shutdown: CancellationToken,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
        let now_serving = crate::db::ping(&db).await;
        if now_serving != serving {
            tracing::warn!(service, serving = now_serving, "store health changed");
            health.set(now_serving).await;
            serving = now_serving;
        }
    }
}
