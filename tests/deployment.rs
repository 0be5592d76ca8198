//! Each service binary started the way its Kubernetes Deployment starts it
//! (`deploy/k8s/base/<service>`): the ConfigMap's settings (`config.env`), the Secret's database
//! URL and keys, the downward-API variables of the shared component, nothing else in the
//! environment; a fresh PostgreSQL database; a read-only working directory and, when the test
//! runs as root, the image's non-root user. Its native gRPC probe (`grpc.health.v1`) must answer
//! SERVING, its metrics port must serve, and SIGTERM must stop it cleanly with nothing written.
//!
//! Only the listen and metrics ports differ from the manifests (free ports instead of the fixed
//! ones, so the tests run side by side). The tables below mirror the manifests, and
//! `tables_mirror_the_manifests` fails as soon as either side changes alone.
//!
//! The binaries are the workspace's (`target/<profile>/leadflow-<service>`): `cargo test
//! --workspace` builds them; for this test alone run `cargo build --workspace --bins` first.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The image's user (distroless `nonroot`), as in the Deployment's securityContext.
const RUN_AS: u32 = 65532;

/// How long a service may take to answer SERVING.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One Leadflow service as its base Deployment runs it.
struct Service {
    name: &'static str,
    /// The public gRPC service the readiness probe asks for.
    grpc_service: &'static str,
    /// Its own lines of `config.env` (the ConfigMap); [`SHARED_CONFIG`] holds the rest.
    config: &'static [(&'static str, &'static str)],
}

/// Every service, in port order.
const SERVICES: [Service; 4] = [
    Service {
        name: "ingestion",
        grpc_service: "leadflow.ingestion.v1.IngestionService",
        config: &[
            ("LEADFLOW_INGESTION_LISTEN_ADDR", "0.0.0.0:50051"),
            ("LEADFLOW_SCORING_URL", "http://leadflow-scoring:50052"),
        ],
    },
    Service {
        name: "scoring",
        grpc_service: "leadflow.scoring.v1.ScoringService",
        config: &[
            ("LEADFLOW_SCORING_LISTEN_ADDR", "0.0.0.0:50052"),
            (
                "LEADFLOW_QUALIFICATION_URL",
                "http://leadflow-qualification:50053",
            ),
            ("LEADFLOW_SCORING_SWEEP_INTERVAL_MS", "60000"),
        ],
    },
    Service {
        name: "qualification",
        grpc_service: "leadflow.qualification.v1.QualificationService",
        config: &[
            ("LEADFLOW_QUALIFICATION_LISTEN_ADDR", "0.0.0.0:50053"),
            ("LEADFLOW_HANDOFF_URL", "http://leadflow-handoff:50054"),
            ("LEADFLOW_QUALIFICATION_RECYCLE_INTERVAL_MS", "60000"),
        ],
    },
    Service {
        name: "handoff",
        grpc_service: "leadflow.handoff.v1.HandoffService",
        config: &[
            ("LEADFLOW_HANDOFF_LISTEN_ADDR", "0.0.0.0:50054"),
            ("LEADFLOW_INGESTION_URL", "http://leadflow-ingestion:50051"),
            ("LEADFLOW_SCORING_URL", "http://leadflow-scoring:50052"),
            (
                "LEADFLOW_QUALIFICATION_URL",
                "http://leadflow-qualification:50053",
            ),
            ("LEADFLOW_HANDOFF_SLA_SWEEP_INTERVAL_MS", "60000"),
            ("LEADFLOW_HANDOFF_WEBHOOK_POLL_MS", "1000"),
        ],
    },
];

/// The lines every service's `config.env` shares.
const SHARED_CONFIG: &[(&str, &str)] = &[
    ("LEADFLOW_DATABASE_MAX_CONNECTIONS", "10"),
    ("LEADFLOW_OUTBOX_POLL_MS", "1000"),
    ("LEADFLOW_OUTBOX_BATCH_SIZE", "500"),
    ("LEADFLOW_OUTBOX_BACKOFF_MS", "200"),
    ("LEADFLOW_OUTBOX_BACKOFF_MAX_MS", "60000"),
    ("LEADFLOW_LOG", "info"),
    ("LEADFLOW_LOG_FORMAT", "json"),
    ("LEADFLOW_METRICS_ADDR", "0.0.0.0:9464"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector:4317"),
];

/// The Deployment's variables from the Secret `leadflow-<service>`: (variable, key). The
/// database URL's variable is `LEADFLOW_<SERVICE>_DATABASE_URL`, key `database-url`.
const SECRET_ENV: &[(&str, &str)] = &[
    ("LEADFLOW_INTERNAL_KEY", "internal-key"),
    ("LEADFLOW_API_KEYS", "api-keys"),
];

/// The shared component's downward-API variables, with the values a pod would get.
const DOWNWARD_ENV: &[(&str, &str)] = &[
    ("POD_NAME", "leadflow-test-0"),
    ("POD_NAMESPACE", "leadflow-test"),
    ("NODE_NAME", "test-node"),
];

/// The test's Secret values (the Deployment reads them from `leadflow-<service>`).
const INTERNAL_KEY: &str = "deployment-test-internal-key";
const API_KEYS: &str = "acme=deployment-test-key";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

fn service(name: &str) -> &'static Service {
    SERVICES
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no service {name} in the table"))
}

/// The service's ConfigMap as the test table has it.
fn config_table(service: &Service) -> Vec<(&'static str, &'static str)> {
    service
        .config
        .iter()
        .chain(SHARED_CONFIG)
        .copied()
        .collect()
}

/// `KEY=value` lines of an env file (kustomize `configMapGenerator` `envs:`), comments skipped.
fn parse_env_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("not KEY=value: {line}"));
            (key.trim().to_owned(), value.trim().to_owned())
        })
        .collect()
}

/// The `value:` of the env entry `name` in a manifest's text.
fn manifest_env_value(text: &str, name: &str) -> Option<String> {
    let mut lines = text.lines().skip_while(|line| !is_env_entry(line, name));
    lines.next()?;
    lines
        .take(3)
        .find_map(|line| line.trim().strip_prefix("value: "))
        .map(str::to_owned)
}

fn is_env_entry(line: &str, name: &str) -> bool {
    let line = line.trim().trim_start_matches("- ").trim();
    line == format!("name: {name}")
}

/// Replaces `$(VAR)` references the way the kubelet does.
fn expand(value: &str, vars: &[(&str, &str)]) -> String {
    vars.iter().fold(value.to_owned(), |acc, (name, val)| {
        acc.replace(&format!("$({name})"), val)
    })
}

/// The ConfigMap files, the Deployments' Secret references and the component's downward-API
/// variables say what the tables say.
#[test]
fn tables_mirror_the_manifests() {
    for service in &SERVICES {
        let base = repo().join("deploy/k8s/base").join(service.name);
        let file = base.join("config.env");
        let mut in_file = parse_env_file(&read(&file));
        let mut in_table: Vec<(String, String)> = config_table(service)
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        in_file.sort();
        in_table.sort();
        assert_eq!(
            in_table,
            in_file,
            "the test table and {} disagree: update both together",
            file.display()
        );

        let deployment = read(&base.join("deployment.yaml"));
        let database_var = format!("LEADFLOW_{}_DATABASE_URL", service.name.to_uppercase());
        let secret_refs = std::iter::once((database_var.as_str(), "database-url"))
            .chain(SECRET_ENV.iter().copied());
        for (var, key) in secret_refs {
            let entry: Vec<&str> = deployment
                .lines()
                .skip_while(|line| !is_env_entry(line, var))
                .take(6)
                .map(str::trim)
                .collect();
            assert!(
                entry.contains(&format!("name: leadflow-{}", service.name).as_str())
                    && entry.contains(&format!("key: {key}").as_str()),
                "{}: {var} must come from Secret leadflow-{} key {key}",
                base.display(),
                service.name
            );
        }
        let port = service.config[0].1.rsplit(':').next().expect("port");
        assert!(
            deployment.contains(&format!("containerPort: {port}"))
                && deployment.contains(&format!("service: {}", service.grpc_service)),
            "{}: the gRPC port {port} and the probed service {}",
            base.display(),
            service.grpc_service
        );
    }
    let component = read(&repo().join("deploy/k8s/components/leadflow-service/container.yaml"));
    for (name, _) in DOWNWARD_ENV {
        assert!(
            component.lines().any(|line| is_env_entry(line, name)),
            "the shared component no longer sets {name}: update DOWNWARD_ENV"
        );
    }
    assert!(
        manifest_env_value(&component, "OTEL_RESOURCE_ATTRIBUTES").is_some(),
        "the shared component sets OTEL_RESOURCE_ATTRIBUTES"
    );
}

/// `target/<profile>`, where cargo puts the workspace's binaries (this test runs from
/// `target/<profile>/deps`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is in target/<profile>/deps");
    let path = profile_dir.join(format!("leadflow-{name}"));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` first (`cargo test --workspace` \
         builds it)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// A fresh empty directory, `mode` applied.
fn temp_dir(kind: &str, mode: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "leadflow-deployment-{kind}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir(&dir).expect("create a temp dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
    dir
}

/// One `grpc.health.v1` check, as the kubelet's probe makes it.
async fn health(url: &str, service: &str) -> Result<ServingStatus, String> {
    let channel = Channel::from_shared(url.to_owned())
        .map_err(|err| err.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .connect()
        .await
        .map_err(|err| err.to_string())?;
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .map_err(|status| status.to_string())?
        .into_inner()
        .status;
    ServingStatus::try_from(status).map_err(|err| err.to_string())
}

/// `GET /metrics` on the metrics port: the status line.
async fn metrics_status(port: u16) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8_lossy(&response);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

async fn starts_as_deployed(name: &str) {
    let service = service(name);
    let Some(db) = leadflow_test_support::TestDb::postgres().await else {
        return;
    };
    let program = binary(name);
    let grpc_port = free_port();
    let metrics_port = free_port();
    let upper = name.to_uppercase();
    let listen_var = format!("LEADFLOW_{upper}_LISTEN_ADDR");

    // The environment the pod gets: the ConfigMap (ports aside), the Secret, the downward API.
    let mut env: Vec<(String, String)> = config_table(service)
        .into_iter()
        .map(|(key, value)| {
            let value = if key == listen_var {
                format!("0.0.0.0:{grpc_port}")
            } else if key == "LEADFLOW_METRICS_ADDR" {
                format!("0.0.0.0:{metrics_port}")
            } else {
                value.to_owned()
            };
            (key.to_owned(), value)
        })
        .collect();
    env.push((format!("LEADFLOW_{upper}_DATABASE_URL"), db.url.clone()));
    env.push(("LEADFLOW_INTERNAL_KEY".into(), INTERNAL_KEY.into()));
    env.push(("LEADFLOW_API_KEYS".into(), API_KEYS.into()));
    for (key, value) in DOWNWARD_ENV {
        env.push(((*key).to_owned(), (*value).to_owned()));
    }
    let component = read(&repo().join("deploy/k8s/components/leadflow-service/container.yaml"));
    let attributes =
        manifest_env_value(&component, "OTEL_RESOURCE_ATTRIBUTES").expect("resource attributes");
    env.push((
        "OTEL_RESOURCE_ATTRIBUTES".into(),
        expand(&attributes, DOWNWARD_ENV),
    ));

    // A read-only working directory (the root filesystem); logs go to a file outside it.
    let workdir = temp_dir("workdir", 0o555);
    let logs_dir = temp_dir("logs", 0o700);
    let log_path = logs_dir.join("service.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let mut command = tokio::process::Command::new(&program);
    command
        .env_clear()
        .envs(env)
        .current_dir(&workdir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .kill_on_drop(true);
    if running_as_root() {
        // Root writes anywhere: run as the image's user so the read-only directory holds.
        command.uid(RUN_AS).gid(RUN_AS);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|err| panic!("start {}: {err}", program.display()));
    let logs = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Probe until SERVING, the way the startup and readiness probes do.
    let url = format!("http://127.0.0.1:{grpc_port}");
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let mut backoff = Duration::from_millis(50);
    loop {
        match health(&url, service.grpc_service).await {
            Ok(ServingStatus::Serving) => break,
            Ok(status) => {
                if tokio::time::Instant::now() > deadline {
                    panic!("{name} answers {status:?}, not SERVING\n{}", logs());
                }
            }
            Err(err) => {
                if let Some(status) = child.try_wait().expect("child status") {
                    panic!("{name} exited before serving ({status})\n{}", logs());
                }
                if tokio::time::Instant::now() > deadline {
                    panic!(
                        "{name} is not serving after {START_TIMEOUT:?}: {err}\n{}",
                        logs()
                    );
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(500));
    }
    // The liveness probe asks for the whole process ("").
    assert_eq!(
        health(&url, "").await,
        Ok(ServingStatus::Serving),
        "{name}: the process is SERVING\n{}",
        logs()
    );
    let metrics = metrics_status(metrics_port).await;
    assert!(
        metrics.as_ref().is_ok_and(|line| line.contains(" 200 ")),
        "{name}: the metrics port serves /metrics: {metrics:?}\n{}",
        logs()
    );

    // What the kubelet does at the end of the pod's life.
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success(), "send SIGTERM to {name}");
    let status = tokio::time::timeout(Duration::from_secs(25), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{name} did not stop within the grace period\n{}", logs()))
        .expect("wait");
    assert!(
        status.success(),
        "{name} exits cleanly on SIGTERM: {status}\n{}",
        logs()
    );
    let written: Vec<_> = std::fs::read_dir(&workdir)
        .expect("read the working directory")
        .collect();
    assert!(
        written.is_empty(),
        "{name} wrote into its working directory: {written:?}"
    );
    let _ = std::fs::remove_dir_all(&workdir);
    let _ = std::fs::remove_dir_all(&logs_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingestion_starts_as_deployed() {
    starts_as_deployed("ingestion").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_starts_as_deployed() {
    starts_as_deployed("scoring").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qualification_starts_as_deployed() {
    starts_as_deployed("qualification").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_starts_as_deployed() {
    starts_as_deployed("handoff").await;
}
