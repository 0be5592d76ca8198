//! A tokio runtime for work that can wait while callers are served: its threads, and the threads
//! they start (each SQLite connection's worker thread among them), run only on CPU time the rest
//! of the process leaves (Linux's `SCHED_IDLE` policy), niced as well.
//!
//! `leadflow up` runs the whole suite in one process, where a separate deployment would give
//! each service its own CPUs. There, the services that drain ingestion's outbox — scoring,
//! qualification and handoff — run their drain on this runtime, so a burst of `Track` and
//! `Batch` calls is committed and acknowledged first and the pipeline behind the outbox catches
//! up with the CPU left over (all of it once the burst ends). Nothing is dropped or reordered:
//! the outbox holds what waits, and its backlog gauge shows how much.
//!
//! Why `SCHED_IDLE` and not only a higher nice value: a thread of normal priority that wakes
//! (ingestion's writer, back from a trip to its SQLite thread) preempts a `SCHED_IDLE` thread at
//! once, while behind a niced thread it may wait out the rest of that thread's time slice. The
//! nice value stays raised too: it lowers the threads' I/O priority, and it is the fallback
//! where the policy cannot be set.

use std::convert::Infallible;
use std::io;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::runtime::{Builder, Handle, Runtime};
use tonic::server::NamedService;
use tower_service::Service;
use tracing::Instrument;

/// How much lower than the thread that starts the runtime: a nice value 10 higher. Where
/// `SCHED_IDLE` cannot be set, a busy background thread then gets about a tenth of a core against
/// a busy foreground one (the kernel weighs nice 10 at 110 against nice 0 at 1,024); with the
/// foreground idle it gets all of it.
pub const NICE_INCREMENT: i32 = 10;

/// The highest nice value Linux accepts (the lowest priority).
const LOWEST_PRIORITY: i32 = 19;

/// A multi-threaded tokio runtime whose threads run at a lower CPU priority. Dropping it stops
/// its tasks without waiting for them: await what should finish first.
#[derive(Debug)]
pub struct Background {
    handle: Handle,
    /// Taken out only by `drop`.
    runtime: Option<Runtime>,
}

impl Background {
    /// Starts `workers` worker threads named `name` (and blocking threads on demand), each under
    /// `SCHED_IDLE` and [`NICE_INCREMENT`] below the nice value of the calling thread. Where
    /// thread priorities cannot be lowered (not Linux, or refused), the runtime runs at the
    /// caller's priority and a warning says so.
    pub fn start(name: &str, workers: usize) -> io::Result<Self> {
        let nice = lowered(current_nice());
        let runtime = Builder::new_multi_thread()
            .worker_threads(workers.max(1))
            .thread_name(name)
            .enable_all()
            .on_thread_start(move || lower_current_thread(nice))
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where to spawn the background work.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Does not block, so it may run inside another runtime's task.
            runtime.shutdown_background();
        }
    }
}

/// A gRPC service whose calls run on another runtime: in one process, a service's internal
/// RPCs (the drain's deliveries from the service before it) run on the [`Background`] runtime,
/// while its public RPCs, accepted on the same connection-serving runtime, are answered at the
/// callers' priority. The call keeps its server span, so its trace and logs are the caller's.
/// A call whose task panics is answered `INTERNAL`.
#[derive(Debug, Clone)]
pub struct RunOn<S> {
    inner: S,
    runtime: Handle,
}

impl<S> RunOn<S> {
    /// Runs `inner`'s calls on `runtime`.
    pub fn new(inner: S, runtime: Handle) -> Self {
        Self { inner, runtime }
    }
}

impl<S: NamedService> NamedService for RunOn<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, Req, Body> Service<Req> for RunOn<S>
where
    S: Service<Req, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
    Body: Default + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let task = self
            .runtime
            .spawn(self.inner.call(request).in_current_span());
        Box::pin(async move {
            task.await.unwrap_or_else(|err| {
                tracing::error!(error = %err, "call failed on the background runtime");
                Ok(tonic::Status::internal("the call failed").into_http())
            })
        })
    }
}

/// `nice` lowered by [`NICE_INCREMENT`], within what the kernel accepts.
fn lowered(nice: i32) -> i32 {
    nice.saturating_add(NICE_INCREMENT).min(LOWEST_PRIORITY)
}

/// Puts the calling thread under `SCHED_IDLE`, then sets its nice value to `nice` (setting the
/// policy resets it). Threads it starts later inherit both.
#[cfg(target_os = "linux")]
fn lower_current_thread(nice: i32) {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(err) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle)
    {
        tracing::warn!(%err, "cannot put a background thread under SCHED_IDLE");
    }
    set_current_nice(nice);
}

#[cfg(not(target_os = "linux"))]
fn lower_current_thread(nice: i32) {
    set_current_nice(nice);
}

#[cfg(target_os = "linux")]
fn current_nice() -> i32 {
    // On Linux the nice value is per thread, and `None` names the calling one.
    rustix::process::getpriority_process(None).unwrap_or(0)
}

#[cfg(target_os = "linux")]
fn set_current_nice(nice: i32) {
    if let Err(err) = rustix::process::setpriority_process(None, nice) {
        tracing::warn!(%err, nice, "cannot lower a background thread's priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn current_nice() -> i32 {
    0
}

/// Elsewhere the nice value belongs to the whole process: lowering it would slow the callers'
/// work too, so background threads keep the process's priority.
#[cfg(not(target_os = "linux"))]
fn set_current_nice(_nice: i32) {}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(None).expect("read this thread's nice value")
    }

    /// The calling thread's nice value, and whether it runs under `SCHED_IDLE`.
    fn priority() -> (i32, bool) {
        use thread_priority::{NormalThreadSchedulePolicy, ThreadSchedulePolicy};
        let policy = thread_priority::thread_schedule_policy().expect("read the policy");
        let idle = policy == ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        (nice(), idle)
    }

    #[test]
    fn its_threads_and_the_threads_they_start_run_at_a_lower_priority() {
        let foreground = nice();
        let background = Background::start("test-background", 1).expect("start the runtime");
        let (worker, started, blocking) = background.handle().block_on(async {
            let worker = tokio::spawn(async { priority() })
                .await
                .expect("worker task");
            let started = tokio::spawn(async {
                // As sqlx starts an SQLite connection's worker thread from the task opening it.
                std::thread::spawn(priority).join().expect("started thread")
            })
            .await
            .expect("starting task");
            let blocking = tokio::task::spawn_blocking(priority)
                .await
                .expect("blocking task");
            (worker, started, blocking)
        });
        let expected = (lowered(foreground), true);
        assert!(expected.0 > foreground || foreground == LOWEST_PRIORITY);
        assert_eq!(worker, expected, "a worker thread");
        assert_eq!(started, expected, "a thread a task starts");
        assert_eq!(blocking, expected, "a blocking thread");
        assert_eq!(
            priority(),
            (foreground, false),
            "the caller keeps its priority"
        );
    }

    /// The wrapped service answers on the background runtime's threads; a call that panics
    /// there is answered `INTERNAL`, and the service keeps serving.
    #[test]
    fn calls_run_on_the_given_runtime_and_a_panic_is_an_internal_error() {
        let background = Background::start("test-run-on", 1).expect("start the runtime");
        let foreground = Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime");
        let inner = tower::service_fn(|request: http::Request<&'static str>| async move {
            assert_ne!(*request.body(), "panic", "asked to panic");
            let thread = std::thread::current().name().unwrap_or_default().to_owned();
            Ok::<_, Infallible>(http::Response::new(thread))
        });
        let mut service = RunOn::new(inner, background.handle().clone());
        foreground.block_on(async {
            let answered = service
                .call(http::Request::new("hello"))
                .await
                .expect("infallible");
            assert_eq!(answered.body(), "test-run-on");

            let failed = service
                .call(http::Request::new("panic"))
                .await
                .expect("infallible");
            let code = failed.headers().get("grpc-status").map(|v| v.to_str().ok());
            assert_eq!(code, Some(Some("13")), "INTERNAL: {:?}", failed.headers());

            let again = service
                .call(http::Request::new("again"))
                .await
                .expect("infallible");
            assert_eq!(again.body(), "test-run-on");
        });
    }

    #[test]
    fn priorities_stay_within_what_the_kernel_accepts() {
        assert_eq!(lowered(0), NICE_INCREMENT);
        assert_eq!(lowered(15), LOWEST_PRIORITY);
        assert_eq!(lowered(LOWEST_PRIORITY), LOWEST_PRIORITY);
        assert_eq!(lowered(-20), -20 + NICE_INCREMENT);
    }

    #[test]
    fn it_can_be_dropped_inside_another_runtime() {
        let background = Background::start("test-background", 1).expect("start the runtime");
        let outer = Builder::new_current_thread()
            .build()
            .expect("outer runtime");
        outer.block_on(async move {
            let done = background.handle().spawn(async { 7 });
            assert_eq!(done.await.expect("background task"), 7);
            drop(background);
        });
    }
}
