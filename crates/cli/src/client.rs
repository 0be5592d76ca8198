//! Connections: the four services' endpoints and the API key, from flags or the environment,
//! and what every command shares (output mode, idempotency key).

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use clap::Args;
use leadflow_proto::handoff::v1::handoff_service_client::HandoffServiceClient;
use leadflow_proto::ingestion::v1::ingestion_service_client::IngestionServiceClient;
use leadflow_proto::qualification::v1::qualification_service_client::QualificationServiceClient;
use leadflow_proto::scoring::v1::scoring_service_client::ScoringServiceClient;
use leadflow_runtime::auth::BearerInterceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::CliError;

/// A channel that sends the API key with every call.
pub(crate) type Authed = InterceptedService<Channel, BearerInterceptor>;

/// Times a call is sent again after a transient failure unless `--retries` says otherwise.
const DEFAULT_RETRIES: usize = 3;

/// Whether `status` is worth sending the same call again for: the service unavailable
/// (restarting, not yet listening, shedding load), the connection closed under the call (a
/// server recycling its connections), or a write that met a concurrent one (ABORTED). A call that
/// ran out of `--timeout` is not: sending it again would only wait as long again.
fn is_transient(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::Aborted => true,
        Code::Cancelled => status.message() != tonic::TimeoutExpired(()).to_string(),
        _ => false,
    }
}

/// `$client.$method($request)` through [`Ctx::retried`]: each attempt sends a clone of the
/// request on a clone of the client (both cheap: a channel handle, a message).
macro_rules! retried {
    ($ctx:expr, $client:expr, $method:ident, $request:expr) => {{
        let (client, request) = ($client, $request);
        $ctx.retried(|| {
            let (mut client, request) = (client.clone(), request.clone());
            async move { client.$method(request).await }
        })
        .await
    }};
}
pub(crate) use retried;

/// Largest response accepted (a full hand-off list with warm contexts can be large).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Where the services are and who is calling: global flags.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub(crate) struct ConnectArgs {
    /// Ingestion's gRPC endpoint [default: http://127.0.0.1:50051].
    #[arg(long, global = true, env = "LEADFLOW_INGESTION_URL")]
    pub(crate) ingestion_url: Option<String>,
    /// Scoring's gRPC endpoint [default: http://127.0.0.1:50052].
    #[arg(long, global = true, env = "LEADFLOW_SCORING_URL")]
    pub(crate) scoring_url: Option<String>,
    /// Qualification's gRPC endpoint [default: http://127.0.0.1:50053].
    #[arg(long, global = true, env = "LEADFLOW_QUALIFICATION_URL")]
    pub(crate) qualification_url: Option<String>,
    /// Handoff's gRPC endpoint [default: http://127.0.0.1:50054].
    #[arg(long, global = true, env = "LEADFLOW_HANDOFF_URL")]
    pub(crate) handoff_url: Option<String>,
    /// The tenant's API key, sent as `authorization: Bearer <key>` (none in development mode).
    #[arg(long, global = true, env = "LEADFLOW_API_KEY", hide_env_values = true)]
    pub(crate) api_key: Option<String>,
    /// Seconds to wait for connecting and for each answer [default: 30].
    #[arg(long, global = true, env = "LEADFLOW_TIMEOUT")]
    pub(crate) timeout: Option<u64>,
    /// Print JSON (the protobuf JSON mapping; JSON lines for `handoff stream`) instead of tables.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Idempotency key of a write (request or message id); a fresh one per call when absent. Pass
    /// the same key again to retry a write safely.
    #[arg(long, global = true, env = "LEADFLOW_REQUEST_ID")]
    pub(crate) request_id: Option<String>,
    /// How many times a call is sent again after a transient failure (the service unavailable or
    /// restarting, the connection closed under the call, a write that met a concurrent one), with
    /// the same idempotency key, waiting 100 ms, then twice as long each time (at most 2 s)
    /// [default: 3; 0: never].
    #[arg(long, global = true, env = "LEADFLOW_RETRIES")]
    pub(crate) retries: Option<usize>,
}

/// What a command runs with.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    args: ConnectArgs,
    /// Print JSON instead of tables.
    pub(crate) json: bool,
}

impl Ctx {
    /// The context of one invocation.
    pub(crate) fn new(args: ConnectArgs) -> Self {
        Self {
            json: args.json,
            args,
        }
    }

    /// The idempotency key of this invocation's write.
    pub(crate) fn request_id(&self) -> String {
        self.args
            .request_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
    }

    /// The answer of `call`, sent again after each transient failure (see [`is_transient`]), up
    /// to `--retries` times with exponential backoff. A resent write carries the idempotency key
    /// it was built with, so the service applies it once.
    pub(crate) async fn retried<T, F, Fut>(&self, call: F) -> Result<T, Status>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(2))
            .with_max_times(self.args.retries.unwrap_or(DEFAULT_RETRIES))
            .with_jitter();
        call.retry(backoff)
            .when(is_transient)
            .notify(|status: &Status, wait: Duration| {
                eprintln!(
                    "warning: {:?}: {}; sending again in {} ms",
                    status.code(),
                    status.message(),
                    wait.as_millis()
                );
            })
            .await
    }

    fn channel(&self, flag: &str, url: Option<&str>, port: u16) -> Result<Authed, CliError> {
        let url = match url {
            Some(url) if url.contains("://") => url.to_owned(),
            Some(address) => format!("http://{address}"),
            None => format!("http://127.0.0.1:{port}"),
        };
        let timeout = Duration::from_secs(self.args.timeout.unwrap_or(30).max(1));
        let channel = Endpoint::from_shared(url.clone())
            .map_err(|e| CliError::Local(format!("--{flag} {url}: {e}")))?
            .connect_timeout(timeout)
            // Bounds the wait for each answer's head; a stream's items are not bounded by it.
            .timeout(timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let bearer = BearerInterceptor::new(self.args.api_key.as_deref())
            .map_err(|e| CliError::Local(format!("--api-key: {}", e.message())))?;
        Ok(InterceptedService::new(channel, bearer))
    }

    /// A client of ingestion.
    pub(crate) fn ingestion(&self) -> Result<IngestionServiceClient<Authed>, CliError> {
        let channel = self.channel("ingestion-url", self.args.ingestion_url.as_deref(), 50051)?;
        Ok(IngestionServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
    }

    /// A client of scoring.
    pub(crate) fn scoring(&self) -> Result<ScoringServiceClient<Authed>, CliError> {
        let channel = self.channel("scoring-url", self.args.scoring_url.as_deref(), 50052)?;
        Ok(ScoringServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
    }

    /// A client of qualification.
    pub(crate) fn qualification(&self) -> Result<QualificationServiceClient<Authed>, CliError> {
        let channel = self.channel(
            "qualification-url",
            self.args.qualification_url.as_deref(),
            50053,
        )?;
        Ok(QualificationServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
    }

    /// A client of handoff.
    pub(crate) fn handoff(&self) -> Result<HandoffServiceClient<Authed>, CliError> {
        let channel = self.channel("handoff-url", self.args.handoff_url.as_deref(), 50054)?;
        Ok(HandoffServiceClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES))
    }
}
