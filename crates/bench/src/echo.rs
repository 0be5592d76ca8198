//! The RPC ceiling: a bare tonic unary echo service, written by hand (no `.proto`): it decodes a
//! `GetScoreRequest` with prost and answers it back, so a call costs exactly what tonic, HTTP/2,
//! prost and loopback TCP cost, with no handler work.
//!
//! It is served two ways: bare, with the tonic server settings every Leadflow service uses
//! (TCP_NODELAY, HTTP/2 keep-alive 30 s, connection age 300 s), and through Leadflow's own
//! server stack ([`leadflow_runtime::server::serve`]: the telemetry layer with its span and
//! metrics per call, health and reflection routes) to show what the stack alone costs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use leadflow_proto::scoring::v1::GetScoreRequest;
use leadflow_runtime::server::{Health, MAX_MESSAGE_BYTES};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic_prost::ProstCodec;

/// The echo method's path.
const ECHO_PATH: &str = "/leadflow.bench.v1.Echo/Echo";

/// The echo message: a lead-id lookup's request, the size of a `GetScore` call.
pub(crate) type EchoMessage = GetScoreRequest;

/// The echo gRPC service: answers `Echo` with its request, anything else `UNIMPLEMENTED`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EchoServer;

impl NamedService for EchoServer {
    const NAME: &'static str = "leadflow.bench.v1.Echo";
}

/// The unary method behind [`EchoServer`].
#[derive(Debug, Clone, Copy)]
struct EchoMethod;

impl UnaryService<EchoMessage> for EchoMethod {
    type Response = EchoMessage;
    type Future = std::future::Ready<Result<tonic::Response<EchoMessage>, tonic::Status>>;

    fn call(&mut self, request: tonic::Request<EchoMessage>) -> Self::Future {
        std::future::ready(Ok(tonic::Response::new(request.into_inner())))
    }
}

impl<B> Service<http::Request<B>> for EchoServer
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != ECHO_PATH {
            return Box::pin(async {
                Ok(tonic::Status::unimplemented("only Echo is served").into_http())
            });
        }
        Box::pin(async move {
            let mut grpc =
                tonic::server::Grpc::new(ProstCodec::<EchoMessage, EchoMessage>::default())
                    .apply_max_message_size_config(
                        Some(MAX_MESSAGE_BYTES),
                        Some(MAX_MESSAGE_BYTES),
                    );
            Ok(grpc.unary(EchoMethod, request).await)
        })
    }
}

/// A running echo server.
#[derive(Debug)]
pub(crate) struct Running {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops the server and waits for it.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task).await???;
        Ok(())
    }
}

/// Serves the bare echo on a fresh loopback port with the tonic settings of
/// `leadflow_runtime::server::serve`, without its layer and extra routes.
pub(crate) async fn serve_bare() -> anyhow::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let stop = shutdown.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .max_connection_age(Duration::from_secs(300))
            .add_service(EchoServer)
            .serve_with_incoming_shutdown(incoming, stop)
            .await?;
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown,
        task,
    })
}

/// Serves the echo through Leadflow's server stack exactly as a service runs it (telemetry
/// layer, health, reflection).
pub(crate) async fn serve_stack() -> anyhow::Result<Running> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let health = Health::new(vec![<EchoServer as NamedService>::NAME]);
    health.set(true).await;
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        leadflow_runtime::server::serve("echo", listener, Routes::new(EchoServer), health, stop)
            .await?;
        Ok(())
    });
    Ok(Running {
        addr,
        shutdown,
        task,
    })
}

/// An echo client over one channel (clone it per worker: clones share the connection).
#[derive(Debug, Clone)]
pub(crate) struct EchoClient {
    grpc: tonic::client::Grpc<Channel>,
}

impl EchoClient {
    /// A client of the echo at `addr`, over the channel settings Leadflow's clients use.
    pub(crate) fn new(addr: SocketAddr) -> anyhow::Result<Self> {
        let channel = leadflow_runtime::client::lazy_channel(&format!("http://{addr}"))?;
        Ok(Self {
            grpc: tonic::client::Grpc::new(channel),
        })
    }

    /// One echo call.
    pub(crate) async fn echo(&mut self, message: EchoMessage) -> Result<EchoMessage, String> {
        self.grpc
            .ready()
            .await
            .map_err(|err| format!("echo channel: {err}"))?;
        let path = http::uri::PathAndQuery::from_static(ECHO_PATH);
        let codec = ProstCodec::<EchoMessage, EchoMessage>::default();
        self.grpc
            .unary(tonic::Request::new(message), path, codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("echo: {status}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echo_answers_its_request() {
        let server = serve_bare().await.expect("serve");
        let mut client = EchoClient::new(server.addr).expect("client");
        let message = EchoMessage {
            lead_id: "lead-1".into(),
        };
        assert_eq!(client.echo(message.clone()).await, Ok(message));
        server.stop().await.expect("stop");
    }
}
