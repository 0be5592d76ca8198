//! `leadctl` as an operator runs it, against the four real services started in-process (SQLite,
//! development mode): owners and routing from YAML, the seeds' journey imported from CSV, the
//! score explained, the lead becoming an MQL and handed to the SDR, the definition published,
//! and the exit codes scripts rely on.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use leadflow_proto::ingestion::v1 as ingestion;
use leadflow_proto::ingestion::v1::ingestion_service_server::{
    IngestionService, IngestionServiceServer,
};
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::SystemClock;
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_test_support::TestDb;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What one run of `leadctl` did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs `leadctl` with the given service URLs and arguments.
fn leadctl(urls: &[(&str, String)], args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_leadctl"));
    for var in [
        "LEADFLOW_API_KEY",
        "LEADFLOW_REQUEST_ID",
        "LEADFLOW_TIMEOUT",
    ] {
        command.env_remove(var);
    }
    for (var, url) in urls {
        command.env(var, url);
    }
    let output = command.args(args).output().expect("run leadctl");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn fast_outbox() -> OutboxArgs {
    OutboxArgs {
        outbox_poll_ms: 50,
        outbox_batch_size: 10,
        outbox_backoff_ms: 5,
        outbox_backoff_max_ms: 50,
        ..OutboxArgs::default()
    }
}

/// The four services, each on its own port and SQLite file, on a runtime of their own.
struct Stack {
    runtime: tokio::runtime::Runtime,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    urls: Vec<(&'static str, String)>,
    dir: PathBuf,
    _dbs: Vec<TestDb>,
}

impl Stack {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dbs: Vec<TestDb> = ["ingestion", "scoring", "qualification", "handoff"]
            .into_iter()
            .map(TestDb::sqlite)
            .collect();
        let shutdown = CancellationToken::new();
        let (tasks, addrs) = runtime.block_on(Self::serve(&dbs, &shutdown));
        let [ingestion, scoring, qualification, handoff] = addrs.map(|a| format!("http://{a}"));
        let dir = std::env::temp_dir().join(format!("leadctl-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self {
            runtime,
            shutdown,
            tasks,
            urls: vec![
                ("LEADFLOW_INGESTION_URL", ingestion),
                ("LEADFLOW_SCORING_URL", scoring),
                ("LEADFLOW_QUALIFICATION_URL", qualification),
                ("LEADFLOW_HANDOFF_URL", handoff),
            ],
            dir,
            _dbs: dbs,
        }
    }

    async fn serve(
        dbs: &[TestDb],
        shutdown: &CancellationToken,
    ) -> (
        Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
        [SocketAddr; 4],
    ) {
        let mut listeners = Vec::new();
        for _ in 0..4 {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.expect("bind"));
        }
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr"))
            .collect();
        let [i, s, q, h] = [addrs[0], addrs[1], addrs[2], addrs[3]];
        let [li, ls, lq, lh] = <[TcpListener; 4]>::try_from(listeners).expect("four listeners");
        let url = |a: SocketAddr| format!("http://{a}");
        let clock = || Arc::new(SystemClock);
        let tasks = vec![
            tokio::spawn(leadflow_ingestion::serve(
                leadflow_ingestion::Config {
                    listen_addr: i,
                    database_url: Some(dbs[0].url.clone()),
                    data_dir: std::env::temp_dir(),
                    database_max_connections: 5,
                    scoring_url: url(s),
                    auth: AuthArgs::default(),
                    outbox: fast_outbox(),
                },
                li,
                clock(),
                shutdown.clone(),
            )),
            tokio::spawn(leadflow_scoring::serve(
                leadflow_scoring::Config {
                    listen_addr: s,
                    database_url: Some(dbs[1].url.clone()),
                    data_dir: std::env::temp_dir(),
                    database_max_connections: 5,
                    qualification_url: url(q),
                    sweep_interval_ms: 60_000,
                    score_cache_leads: leadflow_scoring::DEFAULT_SCORE_CACHE_LEADS,
                    auth: AuthArgs::default(),
                    outbox: fast_outbox(),
                },
                ls,
                clock(),
                shutdown.clone(),
            )),
            tokio::spawn(leadflow_qualification::serve(
                leadflow_qualification::Config {
                    listen_addr: q,
                    database_url: Some(dbs[2].url.clone()),
                    data_dir: std::env::temp_dir(),
                    database_max_connections: 5,
                    handoff_url: url(h),
                    recycle_interval_ms: 60_000,
                    auth: AuthArgs::default(),
                    outbox: fast_outbox(),
                },
                lq,
                clock(),
                shutdown.clone(),
            )),
            tokio::spawn(leadflow_handoff::serve(
                leadflow_handoff::Config {
                    listen_addr: h,
                    database_url: Some(dbs[3].url.clone()),
                    data_dir: std::env::temp_dir(),
                    database_max_connections: 5,
                    ingestion_url: url(i),
                    scoring_url: url(s),
                    qualification_url: url(q),
                    sla_sweep_interval_ms: 60_000,
                    webhook_poll_ms: 60_000,
                    auth: AuthArgs::default(),
                    outbox: fast_outbox(),
                },
                lh,
                clock(),
                shutdown.clone(),
            )),
        ];
        (tasks, [i, s, q, h])
    }

    fn run(&self, args: &[&str]) -> Run {
        leadctl(&self.urls, args)
    }

    /// Writes `contents` to a file named `name` in the test's folder.
    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, contents).expect("write file");
        path.display().to_string()
    }

    /// Runs `args` until `done` holds for the run, at most 30 seconds.
    fn until(&self, args: &[&str], done: impl Fn(&Run) -> bool) -> Run {
        for _ in 0..600 {
            let run = self.run(args);
            if done(&run) {
                return run;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("`leadctl {}` never got there", args.join(" "));
    }

    fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            self.runtime
                .block_on(async { tokio::time::timeout(Duration::from_secs(20), task).await })
                .expect("stops in time")
                .expect("task")
                .expect("clean stop");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn days_ago(days: i64) -> String {
    (chrono::Utc::now() - chrono::Duration::days(days))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

const OWNERS: &str = "\
- owner_id: sdr-sam
  display_name: Sam Seller
  email: sam@example.com
  role: OWNER_ROLE_SDR
  team_id: emea
- owner_id: ae-alex
  display_name: Alex Closer
  role: OWNER_ROLE_ACCOUNT_EXECUTIVE
  team_id: emea
";

const ROUTING: &str = "\
description: every lead to the EMEA team
rules:
  - id: emea-review
    kind: HANDOFF_KIND_SDR_REVIEW
    owner_ids: [sdr-sam]
  - id: emea-sales
    kind: HANDOFF_KIND_SALES
    owner_ids: [ae-alex]
sales_sla: 86400s
sdr_review_sla: 14400s
escalation_target: ESCALATION_TARGET_MANAGER_QUEUE
";

const PROFILES: &str = "\
user_id,email,first_name,last_name,title,seniority,company,company_size,industry,country,source_channel
dana,dana@acme.io,Dana,Lee,Marketing Manager,manager,Acme,200,Software,DE,organic-search
";

fn definition(threshold: &str) -> String {
    format!(
        "\
description: a stricter MQL
mql_threshold: {threshold}
min_fit_grade: FIT_GRADE_B
hand_raise_activity_types: [demo_request, contact_sales]
sql_rule:
  require_need: true
  max_time_to_decision: 7776000s
  min_budget: BUDGET_STATUS_EXPECTED
  min_authority: AUTHORITY_LEVEL_INFLUENCER
recycle_rules:
  mql_acceptance_timeout: 2592000s
  mql_score_floor: 40
default_lost_stage: LEAD_STAGE_NURTURE
"
    )
}

/// The seeds' journey end to end through `leadctl`.
#[test]
fn an_operator_runs_the_seed_journey_with_leadctl() {
    let stack = Stack::start();

    // (5, first half) Owners and routing rules from YAML, before any lead qualifies.
    let owners = stack.file("owners.yaml", OWNERS);
    let run = stack.run(&["owner", "upsert", &owners]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("sdr-sam") && run.stdout.contains("created"),
        "{run:?}"
    );
    let routing = stack.file("routing.yaml", ROUTING);
    let run = stack.run(&["routing", "publish", &routing]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("routing rules version 1"), "{run:?}");

    // (1) The seeds' marketing manager: profile, then a guide, three e-mails, pricing twice.
    let profiles = stack.file("profiles.csv", PROFILES);
    let run = stack.run(&["import", "--profiles", &profiles]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("1 accepted"), "{run:?}");
    let activities = stack.file(
        "activities.csv",
        &format!(
            "user_id,type,occurred_at,prop_asset_id,prop_path\n\
             dana,content_download,{},guide-7,\n\
             dana,email_open,{},n1,\n\
             dana,email_open,{},n2,\n\
             dana,email_open,{},n3,\n\
             dana,page_view,{},,/pricing\n\
             dana,page_view,{},,/pricing\n",
            days_ago(14),
            days_ago(12),
            days_ago(7),
            days_ago(2),
            days_ago(1),
            days_ago(0),
        ),
    );
    let run = stack.run(&["--json", "import", &activities]);
    assert_eq!(run.code, 0, "{run:?}");
    let report = run.json();
    assert_eq!(report["accepted"], 6, "{report}");
    assert_eq!(report["rejected"], 0, "{report}");
    let lead_id = report["leads"][0]["leadId"]
        .as_str()
        .expect("lead id")
        .to_owned();
    let run = stack.run(&["import", &activities]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("0 accepted, 6 duplicate"),
        "importing again changes nothing: {run:?}"
    );

    // (1) A file with one bad row: the others go in, the row is named, exit 2.
    let bad = stack.file(
        "bad.csv",
        "user_id,type,prop_path\neve,page_view,/blog\neve,bogus_type,/x\neve,page_view,/docs\n",
    );
    let run = stack.run(&["import", &bad]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stdout.contains("2 accepted"), "{run:?}");
    assert!(run.stderr.contains("row 2 (line 3)"), "{run:?}");
    assert!(run.stderr.contains("activity.type"), "{run:?}");

    // (2) Every activity reaches scoring; the explanation's contributions add up to the score.
    let run = stack.until(&["--json", "score", "explain", &lead_id], |run| {
        run.code == 0
            && run.json()["explanation"]["contributions"]
                .as_array()
                .is_some_and(|c| {
                    let activities: std::collections::HashSet<&str> =
                        c.iter().filter_map(|c| c["activityId"].as_str()).collect();
                    activities.len() == 7 // six activities and the fit lines' empty id
                })
    });
    let explanation = &run.json()["explanation"];
    let score = explanation["score"]["score"].as_f64().expect("score");
    assert!(score > 60.0, "the seed MQL scores about 70: {score}");
    let sum: f64 = explanation["contributions"]
        .as_array()
        .expect("contributions")
        .iter()
        .filter_map(|c| c["value"].as_f64())
        .sum();
    assert!((sum - score).abs() < 1e-6, "{sum} vs {score}");
    let run = stack.run(&["score", "explain", &lead_id]);
    assert!(
        run.stdout.contains("email-open") && run.stdout.contains("grade a"),
        "{run:?}"
    );

    // (4) Qualification makes it an MQL.
    stack.until(&["lead", "stage", &lead_id], |run| {
        run.code == 0 && run.stdout.contains("stage:") && run.stdout.contains(" mql")
    });
    let run = stack.run(&["lead", "history", &lead_id]);
    assert!(run.stdout.contains("score-threshold"), "{run:?}");

    // (5) Handoff routed it to the SDR of the routing rules.
    let run = stack.until(
        &[
            "--json",
            "handoff",
            "list",
            "--lead",
            &lead_id,
            "--kind",
            "sdr-review",
        ],
        |run| {
            run.code == 0
                && run.json()["handoffs"]
                    .as_array()
                    .is_some_and(|h| !h.is_empty())
        },
    );
    let handoff = &run.json()["handoffs"][0];
    assert_eq!(handoff["ownerId"], "sdr-sam", "{handoff}");
    assert_eq!(handoff["status"], "HANDOFF_STATUS_PENDING", "{handoff}");
    let run = stack.run(&["--json", "handoff", "stream", "--max", "1"]);
    assert_eq!(run.code, 0, "{run:?}");
    let item = run.json();
    assert_eq!(item["handoff"]["leadId"], lead_id.as_str(), "{item}");
    assert!(
        item["cursor"].as_str().is_some_and(|c| !c.is_empty()),
        "{item}"
    );

    // (3) A new definition from YAML, and a bad one refused naming the field.
    let good = stack.file("definition.yaml", &definition("75"));
    let run = stack.run(&["definition", "publish", &good]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = stack.run(&["--json", "definition", "get"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["definition"]["mqlThreshold"], 75.0, "{run:?}");
    let bad = stack.file("negative.yaml", &definition("-5"));
    let run = stack.run(&["definition", "publish", &bad]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("INVALID_ARGUMENT"), "{run:?}");
    assert!(run.stderr.contains("definition.mql_threshold"), "{run:?}");

    // The model round-trips: what `model get --output yaml` prints, `model publish` takes.
    let run = stack.run(&["model", "get", "--output", "yaml"]);
    assert_eq!(run.code, 0, "{run:?}");
    let model = stack.file("model.yaml", &run.stdout);
    let run = stack.run(&["model", "publish", &model, "--description", "round trip"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("published model version 1"), "{run:?}");

    stack.stop();
}

/// Exit codes that need no running service: usage, a bad file, an unreachable endpoint.
#[test]
fn failures_have_their_exit_codes() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let urls = [("LEADFLOW_SCORING_URL", format!("http://127.0.0.1:{closed}"))];

    let run = leadctl(&urls, &["--timeout", "5", "score", "get", "some-lead"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("error: UNAVAILABLE"), "{run:?}");

    let run = leadctl(&urls, &["--help"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("Exit codes"), "{run:?}");
    let run = leadctl(&urls, &["score"]);
    assert_eq!(run.code, 1, "usage errors exit 1: {run:?}");

    let dir = std::env::temp_dir().join(format!("leadctl-offline-{closed}"));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("model.yaml");
    std::fs::write(&path, "descripton: a typo\n").expect("write");
    let run = leadctl(&urls, &["model", "publish", &path.display().to_string()]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("descripton"), "{run:?}");
    let csv = dir.join("bad.csv");
    std::fs::write(&csv, "user_id,kind\nana,page_view\n").expect("write");
    let run = leadctl(&urls, &["import", Path::new(&csv).to_str().expect("utf-8")]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("unknown column `kind`"), "{run:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The real ingestion API with faults injected into `Track`: it answers each of `failures` in
/// turn before the real handler takes the call, and records the message id of every `Track` it
/// gets. Every other method is the real one.
struct FlakyIngestion {
    api: leadflow_ingestion::api::IngestionApi,
    failures: std::sync::Mutex<Vec<tonic::Status>>,
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

#[tonic::async_trait]
impl IngestionService for FlakyIngestion {
    async fn track(
        &self,
        request: tonic::Request<ingestion::TrackRequest>,
    ) -> Result<tonic::Response<ingestion::TrackResponse>, tonic::Status> {
        let message_id = request.get_ref().message_id.clone();
        self.seen.lock().expect("seen").push(message_id);
        if let Some(status) = self.failures.lock().expect("failures").pop() {
            return Err(status);
        }
        self.api.track(request).await
    }

    async fn identify(
        &self,
        request: tonic::Request<ingestion::IdentifyRequest>,
    ) -> Result<tonic::Response<ingestion::IdentifyResponse>, tonic::Status> {
        self.api.identify(request).await
    }

    async fn batch(
        &self,
        request: tonic::Request<ingestion::BatchRequest>,
    ) -> Result<tonic::Response<ingestion::BatchResponse>, tonic::Status> {
        self.api.batch(request).await
    }

    async fn get_lead(
        &self,
        request: tonic::Request<ingestion::GetLeadRequest>,
    ) -> Result<tonic::Response<ingestion::GetLeadResponse>, tonic::Status> {
        self.api.get_lead(request).await
    }

    async fn get_timeline(
        &self,
        request: tonic::Request<ingestion::GetTimelineRequest>,
    ) -> Result<tonic::Response<ingestion::GetTimelineResponse>, tonic::Status> {
        self.api.get_timeline(request).await
    }

    async fn merge_leads(
        &self,
        request: tonic::Request<ingestion::MergeLeadsRequest>,
    ) -> Result<tonic::Response<ingestion::MergeLeadsResponse>, tonic::Status> {
        self.api.merge_leads(request).await
    }
}

/// `leadctl track` against a [`FlakyIngestion`] answering `failures` (the last one first)
/// before the real handler takes it; what it did, and the message ids the service got.
fn track_against(failures: Vec<tonic::Status>, flags: &[&str]) -> (Run, Vec<String>) {
    use leadflow_ingestion::store::{Store, migrations::Migrator};
    use leadflow_runtime::outbox::{SharedDeletes, Wakeup};

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let db = TestDb::sqlite("ingestion");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let addr = runtime.block_on(async {
        let conn = leadflow_runtime::db::open::<Migrator>(&db.url, 2)
            .await
            .expect("open");
        let store = Store::new(conn, Wakeup::new(), SharedDeletes::new());
        let service = FlakyIngestion {
            api: leadflow_ingestion::api::IngestionApi::new(store, Arc::new(SystemClock)),
            failures: std::sync::Mutex::new(failures),
            seen: Arc::clone(&seen),
        };
        let keys = leadflow_runtime::auth::Keys::from_args(&AuthArgs::default()).expect("keys");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(tonic::service::interceptor::InterceptedService::new(
                    IngestionServiceServer::new(service),
                    keys.public(),
                ))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    });
    let urls = [("LEADFLOW_INGESTION_URL", format!("http://{addr}"))];
    let mut args = flags.to_vec();
    args.extend(["track", "--user-id", "ana", "page_view"]);
    let run = leadctl(&urls, &args);
    let seen = seen.lock().expect("seen").clone();
    (run, seen)
}

/// A call answered UNAVAILABLE (a restarting service) or ABORTED (a write that met a concurrent
/// one) is sent again, with the same idempotency key, until it is accepted; `--retries 0` sends
/// it once; an answer that would not change (INVALID_ARGUMENT) is never sent again.
#[test]
fn transient_failures_are_sent_again_with_the_same_key() {
    let (run, seen) = track_against(
        vec![
            tonic::Status::aborted("lead merged meanwhile"),
            tonic::Status::unavailable("restarting"),
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(seen.len(), 3, "sent three times: {seen:?}");
    assert!(seen.iter().all(|id| id == &seen[0]), "one key: {seen:?}");
    assert!(run.stderr.contains("sending again"), "{run:?}");

    let (run, seen) = track_against(
        vec![tonic::Status::unavailable("down")],
        &["--retries", "0"],
    );
    assert_eq!((run.code, seen.len()), (4, 1), "{run:?}");
    assert!(run.stderr.contains("error: UNAVAILABLE"), "{run:?}");

    let (run, seen) = track_against(vec![tonic::Status::invalid_argument("bad")], &[]);
    assert_eq!((run.code, seen.len()), (3, 1), "{run:?}");
}
