//! Outgoing calls between Leadflow services: a lazily connected channel, and an interceptor
//! that sends the service credential and the current trace context.

use std::time::Duration;

use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use crate::auth::BearerInterceptor;
use crate::telemetry::TraceContextInterceptor;

/// A channel to `url` (`http://host:port`) that connects on first use and reconnects after a
/// failure, so a service starts even when the one it calls is not up yet.
pub fn lazy_channel(url: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true)
        .connect_lazy())
}

/// Sends the bearer credential and continues the caller's trace on every outgoing call.
#[derive(Debug, Clone)]
pub struct ServiceInterceptor {
    bearer: BearerInterceptor,
    trace: TraceContextInterceptor,
}

impl ServiceInterceptor {
    /// Sends `credential` (the internal service key) when given.
    pub fn new(credential: Option<&str>) -> Result<Self, Status> {
        Ok(Self {
            bearer: BearerInterceptor::new(credential)?,
            trace: TraceContextInterceptor,
        })
    }
}

impl Interceptor for ServiceInterceptor {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let request = self.bearer.call(request)?;
        self.trace.call(request)
    }
}
