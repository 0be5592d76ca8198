//! The Prometheus scrape endpoint: `GET /metrics` over plain HTTP/1.1 on its own port.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running metrics endpoint.
#[derive(Debug)]
pub(super) struct MetricsServer {
    local_addr: SocketAddr,
    accept_loop: JoinHandle<()>,
}

impl MetricsServer {
    /// Binds `addr` now (so a taken port is an error of the caller) and serves `registry` from a
    /// task of the current tokio runtime.
    pub(super) fn start(addr: SocketAddr, registry: Registry) -> io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let local_addr = listener.local_addr()?;
        let accept_loop = tokio::spawn(accept_loop(listener, registry));
        Ok(Self {
            local_addr,
            accept_loop,
        })
    }

    /// The address actually bound.
    pub(super) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections; scrapes in flight finish on their own.
    pub(super) fn stop(self) {
        self.accept_loop.abort();
    }
}

async fn accept_loop(listener: TcpListener, registry: Registry) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: do not spin on it.
                tracing::warn!(%error, "metrics endpoint accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                std::future::ready(Ok::<_, Infallible>(respond(&registry, &request)))
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection failed");
            }
        });
    }
}

fn respond(registry: &Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let encoder = TextEncoder::new();
    match encoder.encode_to_string(&registry.gather()) {
        Ok(text) => with_body(StatusCode::OK, prometheus::TEXT_FORMAT, text.into()),
        Err(error) => {
            tracing::error!(%error, "metrics encoding failed");
            plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            )
        }
    }
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    with_body(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

fn with_body(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    response
}
