//! `leadflow up` as a user runs it: it prints where each service listens, serves, keeps its data
//! in one SQLite file per service under the data folder, runs the services behind ingestion's
//! outbox at a lower CPU priority, and stops cleanly on Ctrl-C.

use std::time::Duration;

use leadflow_proto::common::v1::Activity;
use leadflow_proto::ingestion::v1::{
    LeadIdentity, TrackRequest, ingestion_service_client::IngestionServiceClient,
};
use tokio::io::AsyncBufReadExt;
use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// Every service `leadflow up` runs, in port order, with its public gRPC service.
const SERVICES: [(&str, &str); 4] = [
    ("ingestion", "leadflow.ingestion.v1.IngestionService"),
    ("scoring", "leadflow.scoring.v1.ScoringService"),
    (
        "qualification",
        "leadflow.qualification.v1.QualificationService",
    ),
    ("handoff", "leadflow.handoff.v1.HandoffService"),
];

/// The first of `count` consecutive ports that were all free a moment ago: `leadflow up` binds
/// one per service from its base port. A port the system hands out may have a neighbour in use
/// (a client socket of another test), so each candidate's neighbours are bound too.
async fn free_ports(count: u16) -> u16 {
    for _ in 0..100 {
        let first = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = first.local_addr().expect("addr").port();
        let Some(last) = base.checked_add(count - 1) else {
            continue;
        };
        let mut held = Vec::new();
        for port in base + 1..=last {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(listener) => held.push(listener),
                Err(_) => break,
            }
        }
        if held.len() == usize::from(count - 1) {
            return base;
        }
    }
    panic!("no {count} consecutive free ports on 127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_every_service_and_stops_on_ctrl_c() {
    let data_dir =
        std::env::temp_dir().join(format!("leadflow-up-{}", uuid::Uuid::new_v4().simple()));
    let port = free_ports(4).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_leadflow"))
        .arg("up")
        .env("LEADFLOW_DATA_DIR", &data_dir)
        .env("LEADFLOW_BASE_PORT", port.to_string())
        .env("LEADFLOW_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn leadflow up");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    let urls = tokio::time::timeout(Duration::from_secs(30), async {
        let mut urls = std::collections::HashMap::new();
        while let Some(line) = lines.next_line().await.expect("stdout") {
            let mut words = line.split_whitespace();
            if let (Some(service), Some(url)) = (words.next(), words.next())
                && SERVICES.iter().any(|(name, _)| *name == service)
            {
                urls.insert(service.to_owned(), url.replace("grpc://", "http://"));
                if urls.len() == SERVICES.len() {
                    return urls;
                }
            }
        }
        panic!("leadflow up exited before printing where its services listen");
    })
    .await
    .expect("prints its addresses in time");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    for (offset, (service, grpc_service)) in (0u16..).zip(SERVICES) {
        assert_eq!(
            urls[service],
            format!("http://127.0.0.1:{}", port + offset),
            "{service} takes the next port"
        );
        let health = HealthClient::new(
            Channel::from_shared(urls[service].clone())
                .expect("url")
                .connect_lazy(),
        )
        .check(HealthCheckRequest {
            service: grpc_service.into(),
        })
        .await
        .unwrap_or_else(|status| panic!("{service} health: {status}"))
        .into_inner();
        assert_eq!(health.status, 1, "{service} SERVING");
    }

    let channel = Channel::from_shared(urls["ingestion"].clone())
        .expect("url")
        .connect_lazy();
    let tracked = IngestionServiceClient::new(channel)
        .track(TrackRequest {
            message_id: "m-1".into(),
            identity: Some(LeadIdentity {
                user_id: "ana@acme.io".into(),
                anonymous_id: String::new(),
            }),
            activity: Some(Activity {
                r#type: "pricing_view".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("track in development mode")
        .into_inner();
    assert!(!tracked.lead_id.is_empty());
    for (service, _) in SERVICES {
        assert!(
            data_dir.join(format!("{service}.db")).exists(),
            "one SQLite file per service under the data folder: {service}"
        );
    }

    let pid = child.id().expect("pid").to_string();
    #[cfg(target_os = "linux")]
    drain_threads_yield_to_ingestion(&pid);
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("stops in time")
        .expect("wait");
    assert!(status.success(), "clean exit on ctrl-c: {status}");
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Linux's number for the `SCHED_IDLE` scheduling policy.
#[cfg(target_os = "linux")]
const SCHED_IDLE: i32 = 5;

/// Name, nice value and scheduling policy of each thread of process `pid`, from `/proc`.
#[cfg(target_os = "linux")]
fn threads(pid: &str) -> Vec<(String, i32, i32)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("list the threads");
    tasks
        .filter_map(|task| {
            let dir = task.ok()?.path();
            let name = std::fs::read_to_string(dir.join("comm")).ok()?;
            let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
            Some((name.trim().to_owned(), nice_in(&stat), policy_in(&stat)))
        })
        .collect()
}

/// Field `number` (counted from 1, as `proc(5)` does) of a `/proc/<pid>/stat` line, after the
/// name (the 2nd field, which may hold spaces).
#[cfg(target_os = "linux")]
fn stat_field(stat: &str, number: usize) -> i32 {
    let (_, after_name) = stat.rsplit_once(')').expect("a stat line");
    after_name
        .split_whitespace()
        .nth(number - 3)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("field {number} of {stat}"))
}

/// The nice value in a `/proc/<pid>/stat` line: the 19th field.
#[cfg(target_os = "linux")]
fn nice_in(stat: &str) -> i32 {
    stat_field(stat, 19)
}

/// The scheduling policy in a `/proc/<pid>/stat` line: the 41st field.
#[cfg(target_os = "linux")]
fn policy_in(stat: &str) -> i32 {
    stat_field(stat, 41)
}

/// The drain (scoring's, qualification's and handoff's deliveries and stores) runs on the
/// `leadflow-drain` runtime, under `SCHED_IDLE` and niced, and so do the SQLite connection
/// threads of those three stores; the main runtime, which answers every public call, and
/// ingestion's SQLite thread keep the process's priority.
#[cfg(target_os = "linux")]
fn drain_threads_yield_to_ingestion(pid: &str) {
    let process = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let base = nice_in(&process);
    let lowered = (base + leadflow_runtime::background::NICE_INCREMENT).min(19);
    let threads = threads(pid);
    let background = (lowered, SCHED_IDLE);
    let foreground = (base, policy_in(&process));
    let priorities = |name: &str| -> Vec<(i32, i32)> {
        threads
            .iter()
            .filter(|(thread, ..)| thread.starts_with(name))
            .map(|(_, nice, policy)| (*nice, *policy))
            .collect()
    };
    let drain = priorities("leadflow-drain");
    assert!(!drain.is_empty(), "a drain runtime: {threads:?}");
    assert!(
        drain.iter().all(|p| *p == background),
        "drain threads idle and niced: {threads:?}"
    );
    let main = priorities("tokio-rt");
    assert!(!main.is_empty(), "the main runtime: {threads:?}");
    assert!(
        main.iter().all(|p| *p == foreground),
        "main runtime at base: {threads:?}"
    );
    let sqlite = priorities("sqlx-sqlite");
    assert!(
        sqlite.contains(&foreground),
        "ingestion's SQLite thread at base: {threads:?}"
    );
    assert!(
        sqlite.iter().filter(|p| **p == background).count() >= 3,
        "the other three services' SQLite threads idle and niced: {threads:?}"
    );
}
