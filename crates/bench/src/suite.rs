//! Leadflow under load: the four services started in a process of their own on fresh databases, the
//! workload they are fed (leads with realistic profiles, activities of every known type with the
//! properties the default scoring model looks at), and the phases measured on them.
//!
//! **Drained** means: every activity accepted by ingestion has been delivered to and applied by
//! scoring, and every score change that produced has been delivered to and applied by
//! qualification. It is read from the services' own databases: ingestion's outbox holds no row,
//! and *then* scoring's outbox holds no row (a relay deletes a row only once the receiver has
//! durably applied it, and the receiver enqueues its own messages in the same transaction; so
//! once ingestion's outbox is empty, scoring's outbox can only shrink, and its being empty after
//! that means qualification has applied everything). Qualification's outbox to handoff is watched
//! the same way and reported separately.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use leadflow_proto::common::v1::{Activity, Consent, Profile, Seniority};
use leadflow_proto::ingestion::v1::{
    BatchItem, BatchRequest, IdentifyRequest, LeadIdentity, TrackRequest, batch_item,
    batch_item_result, ingestion_service_client::IngestionServiceClient,
};
use leadflow_proto::scoring::v1::{
    BatchGetScoresRequest, GetRescoreJobRequest, GetScoreRequest, RescoreJobState, RescoreRequest,
    scoring_service_client::ScoringServiceClient,
};
use leadflow_runtime::server::MAX_MESSAGE_BYTES;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};
use serde::Serialize;
use tonic::transport::Channel;

use crate::load::{self, Limit, Phase};
use crate::served::{Served, Usage};

/// Activities (or identify items) per `Batch` call.
pub(crate) const BATCH_ITEMS: u64 = 100;

/// A SplitMix64 step: a cheap, well-mixed, deterministic hash of `x`.
pub(crate) fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Picks from `choices` by `h`, each weighted.
fn weighted<T: Copy>(h: u64, choices: &[(T, u64)]) -> Option<T> {
    let total: u64 = choices.iter().map(|(_, w)| w).sum();
    let mut roll = h % total.max(1);
    for (choice, weight) in choices {
        if roll < *weight {
            return Some(*choice);
        }
        roll -= weight;
    }
    choices.last().map(|(c, _)| *c)
}

/// Picks from `values` by `h`.
fn pick<'a>(h: u64, values: &[&'a str]) -> &'a str {
    let len = u64::try_from(values.len()).unwrap_or(1).max(1);
    usize::try_from(h % len)
        .ok()
        .and_then(|i| values.get(i))
        .copied()
        .unwrap_or_default()
}

/// Activity types and their share of the traffic (per mille): mostly page views and e-mail
/// opens, a few hand-raises and negative signals.
const ACTIVITY_MIX: &[(&str, u64)] = &[
    ("page_view", 420),
    ("pricing_view", 50),
    ("email_open", 200),
    ("email_click", 80),
    ("content_download", 80),
    ("webinar_registered", 30),
    ("webinar_attended", 20),
    ("form_submit", 50),
    ("demo_request", 15),
    ("contact_sales", 10),
    ("unsubscribe", 25),
    ("bounce", 20),
];

/// The synthetic workload: `leads` people and `activities` things they did, every item a pure
/// function of its index (nothing is held in memory but the lead ids ingestion assigns).
#[derive(Debug, Clone)]
pub(crate) struct Workload {
    /// How many leads.
    pub(crate) leads: u64,
    /// How many activities the ingestion phase sends.
    pub(crate) activities: u64,
    /// Makes message ids unique to this run.
    run_id: String,
    /// Activities happened within the 30 days before this time.
    now: DateTime<Utc>,
}

impl Workload {
    /// A workload of `activities` over `leads` leads.
    pub(crate) fn new(leads: u64, activities: u64) -> Self {
        Self {
            leads: leads.max(1),
            activities,
            run_id: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            now: Utc::now(),
        }
    }

    /// The user id (an e-mail address) of lead `lead`.
    pub(crate) fn user_id(&self, lead: u64) -> String {
        let h = mix(lead ^ 0x5EED);
        let domain = if h % 100 < 15 {
            pick(h >> 8, &["gmail.com", "yahoo.com", "outlook.com", "web.de"]).to_owned()
        } else {
            format!("company{}.io", lead / 7)
        };
        format!("lead{lead}@{domain}")
    }

    /// The profile of lead `lead`: a mix of seniorities, go-to-market and other roles, company
    /// sizes and industries inside and outside the default model's ideal customer profile.
    pub(crate) fn profile(&self, lead: u64) -> Profile {
        let h = mix(lead ^ 0xF17);
        let seniority = weighted(
            h,
            &[
                (Seniority::IndividualContributor, 35),
                (Seniority::Manager, 25),
                (Seniority::Director, 15),
                (Seniority::Vp, 7),
                (Seniority::CLevel, 5),
                (Seniority::Owner, 3),
                (Seniority::Student, 10),
            ],
        )
        .unwrap_or(Seniority::IndividualContributor);
        let function = pick(
            h >> 8,
            &[
                "Marketing",
                "Sales",
                "Growth",
                "Revenue Operations",
                "Demand Generation",
                "Engineering",
                "Finance",
                "Operations",
                "Product",
                "People",
            ],
        );
        let title = match seniority {
            Seniority::Student => format!("{function} Intern"),
            Seniority::Manager => format!("{function} Manager"),
            Seniority::Director => format!("Director of {function}"),
            Seniority::Vp => format!("VP {function}"),
            Seniority::CLevel => "Chief Executive Officer".to_owned(),
            Seniority::Owner => "Founder".to_owned(),
            _ => format!("{function} Specialist"),
        };
        let sizes = [5, 20, 80, 200, 600, 1500, 4000, 12_000];
        let size = sizes
            .get(usize::try_from((h >> 16) % 8).unwrap_or(0))
            .copied()
            .unwrap_or(200);
        let industry = pick(
            h >> 24,
            &[
                "Software",
                "SaaS",
                "Internet",
                "Information Technology",
                "Manufacturing",
                "Retail",
                "Healthcare",
                "Financial Services",
                "Education",
                "Consulting",
            ],
        );
        let country = pick(
            h >> 32,
            &["DE", "US", "GB", "FR", "NL", "AT", "CH", "ES", "SE", "PL"],
        );
        Profile {
            email: Some(self.user_id(lead)),
            first_name: Some(pick(h >> 40, &["Dana", "Sam", "Alex", "Robin", "Kim", "Jo"]).into()),
            last_name: Some(format!("Lead{lead}")),
            title: Some(title),
            seniority: seniority as i32,
            company: Some(format!("Company {}", lead / 7)),
            company_domain: Some(format!("company{}.io", lead / 7)),
            company_size: Some(size),
            industry: Some(industry.to_owned()),
            country: Some(country.to_owned()),
            source_channel: i32::try_from(1 + (h >> 48) % 10).unwrap_or(1),
            consent: Consent::Granted as i32,
            traits: HashMap::from([("plan".to_owned(), "trial".to_owned())]),
        }
    }

    /// The lead activity `i` belongs to (uniform over the leads).
    pub(crate) fn lead_of(&self, i: u64) -> u64 {
        mix(i ^ 0xAC7) % self.leads
    }

    /// Activity `i`: its type by [`ACTIVITY_MIX`], a time within the last 30 days, and the
    /// properties the default model's rules read (`path`, `asset_id`) plus typical extras.
    pub(crate) fn activity(&self, i: u64) -> Activity {
        let h = mix(i);
        let kind = weighted(h % 1000, ACTIVITY_MIX).unwrap_or("page_view");
        let k = (h >> 20) % 1000;
        let mut properties: HashMap<String, String> = HashMap::new();
        let mut put = |key: &str, value: String| {
            properties.insert(key.to_owned(), value);
        };
        match kind {
            "page_view" => {
                let path = match k % 10 {
                    0 => "/pricing".to_owned(),
                    1 => "/pricing/enterprise".to_owned(),
                    2 => "/".to_owned(),
                    3 => "/product".to_owned(),
                    4 => "/customers".to_owned(),
                    5 | 6 => format!("/docs/page-{}", k % 50),
                    _ => format!("/blog/post-{}", k % 80),
                };
                put("path", path);
                put("referrer", "https://www.google.com/".to_owned());
                put(
                    "utm_source",
                    pick(k, &["google", "linkedin", "newsletter"]).to_owned(),
                );
            }
            "pricing_view" => put("path", "/pricing".to_owned()),
            "email_open" | "email_click" => {
                put("asset_id", format!("newsletter-{}", k % 40));
                put("campaign", format!("nurture-{}", k % 5));
            }
            "content_download" => {
                put("asset_id", format!("guide-{}", k % 25));
                put("format", "pdf".to_owned());
            }
            "webinar_registered" | "webinar_attended" => {
                put("asset_id", format!("webinar-{}", k % 12));
            }
            "form_submit" => put(
                "form",
                pick(k, &["newsletter", "contact", "trial"]).to_owned(),
            ),
            "demo_request" => put("form", "demo".to_owned()),
            "contact_sales" => put("form", "contact-sales".to_owned()),
            "unsubscribe" => put("list", "newsletter".to_owned()),
            _ => put("reason", "mailbox unavailable".to_owned()),
        }
        let seconds_ago = i64::try_from((h >> 32) % (30 * 86_400)).unwrap_or(0);
        let at = self.now - chrono::Duration::seconds(seconds_ago);
        Activity {
            r#type: kind.to_owned(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            }),
            properties,
        }
    }

    /// The `Track` of activity `i`; `stream` keeps the message ids of the batch phase (`a`) and
    /// the unary phase (`t`) apart.
    pub(crate) fn track(&self, stream: &str, i: u64) -> TrackRequest {
        TrackRequest {
            message_id: format!("bench-{}-{stream}-{i}", self.run_id),
            identity: Some(LeadIdentity {
                user_id: self.user_id(self.lead_of(i)),
                anonymous_id: String::new(),
            }),
            activity: Some(self.activity(i)),
        }
    }

    /// The `Identify` of lead `lead`.
    fn identify(&self, lead: u64) -> IdentifyRequest {
        IdentifyRequest {
            message_id: format!("bench-{}-p-{lead}", self.run_id),
            identity: Some(LeadIdentity {
                user_id: self.user_id(lead),
                anonymous_id: String::new(),
            }),
            profile: Some(self.profile(lead)),
            occurred_at: None,
        }
    }
}

/// Where each service keeps its data.
#[derive(Debug, Clone)]
pub(crate) struct Databases {
    /// Ingestion's database URL.
    pub(crate) ingestion: String,
    /// Scoring's.
    pub(crate) scoring: String,
    /// Qualification's.
    pub(crate) qualification: String,
    /// Handoff's.
    pub(crate) handoff: String,
}

impl Databases {
    /// The URLs of ingestion, scoring, qualification and handoff, in this order.
    pub(crate) fn of_urls(urls: &[String]) -> anyhow::Result<Self> {
        match urls {
            [ingestion, scoring, qualification, handoff] => Ok(Self {
                ingestion: ingestion.clone(),
                scoring: scoring.clone(),
                qualification: qualification.clone(),
                handoff: handoff.clone(),
            }),
            _ => anyhow::bail!("four database urls expected, not {}", urls.len()),
        }
    }

    /// Four SQLite files in `dir`.
    pub(crate) fn sqlite(dir: &Path) -> Self {
        let url = |name: &str| format!("sqlite://{}", dir.join(format!("{name}.db")).display());
        Self {
            ingestion: url("ingestion"),
            scoring: url("scoring"),
            qualification: url("qualification"),
            handoff: url("handoff"),
        }
    }
}

/// The four services, serving in a process of their own (see [`crate::served`]) on loopback
/// ports until stopped.
#[derive(Debug)]
pub(crate) struct Suite {
    /// Ingestion's address.
    pub(crate) ingestion: SocketAddr,
    /// Scoring's address.
    pub(crate) scoring: SocketAddr,
    databases: Databases,
    process: Served,
}

impl Suite {
    /// Starts the suite process on `databases` (this binary, run with `--serve-suite`), its
    /// services logging at `log`, and waits until it listens.
    pub(crate) async fn start(databases: Databases, log: &str) -> anyhow::Result<Self> {
        let process = Served::start(&[
            "--serve-suite",
            &databases.ingestion,
            &databases.scoring,
            &databases.qualification,
            &databases.handoff,
            "--log",
            log,
        ])
        .await?;
        let [ingestion, scoring] = process.addrs[..] else {
            anyhow::bail!("the suite announced {:?}, not two addresses", process.addrs);
        };
        Ok(Self {
            ingestion,
            scoring,
            databases,
            process,
        })
    }

    /// Stops the four services (in-flight work finishes) and waits for their process to exit.
    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        self.process.stop().await
    }

    /// Fails if the suite process has ended (a start-up or store failure).
    fn check_running(&self) -> anyhow::Result<()> {
        self.process.check_running()
    }

    /// A `kB` field of the suite process's `/proc/<pid>/status` (e.g. `VmHWM:`), in bytes.
    fn memory(&self, field: &str) -> Option<u64> {
        self.process.memory(field)
    }

    /// What the suite process has used so far.
    fn usage(&self) -> Option<Usage> {
        self.process.usage()
    }
}

/// Counts rows of the services' tables, read over connections of its own.
#[derive(Debug)]
struct Backlog {
    ingestion: DatabaseConnection,
    scoring: DatabaseConnection,
    qualification: DatabaseConnection,
}

/// The backlog of each relay, oldest hop first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Pending {
    to_scoring: u64,
    to_qualification: u64,
    to_handoff: u64,
}

impl Backlog {
    /// Connects to the three databases whose outboxes feed the pipeline (read-only on SQLite).
    async fn connect(databases: &Databases) -> anyhow::Result<Self> {
        async fn open(url: &str) -> anyhow::Result<DatabaseConnection> {
            let url = if url.starts_with("sqlite:") {
                format!("{url}?mode=ro")
            } else {
                url.to_owned()
            };
            let mut options = ConnectOptions::new(url);
            options
                .max_connections(1)
                .min_connections(1)
                .sqlx_logging(false);
            Ok(Database::connect(options).await?)
        }
        Ok(Self {
            ingestion: open(&databases.ingestion).await?,
            scoring: open(&databases.scoring).await?,
            qualification: open(&databases.qualification).await?,
        })
    }

    /// Closes the connections.
    async fn close(self) {
        let _ = self.ingestion.close().await;
        let _ = self.scoring.close().await;
        let _ = self.qualification.close().await;
    }

    /// The backlog now, read hop by hop from the first (see the module documentation for why
    /// the order matters).
    async fn pending(&self) -> anyhow::Result<Pending> {
        let to_scoring = count(&self.ingestion, "outbox").await?;
        let to_qualification = count(&self.scoring, "outbox").await?;
        let to_handoff = count(&self.qualification, "outbox").await?;
        Ok(Pending {
            to_scoring,
            to_qualification,
            to_handoff,
        })
    }

    /// Waits until scoring and qualification have applied everything sent so far, polling
    /// every `poll`; the moment it was seen, or `None` after `timeout`.
    async fn wait_drained(
        &self,
        suite: &Suite,
        poll: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Option<Instant>> {
        self.wait(suite, poll, timeout, |p| {
            p.to_scoring == 0 && p.to_qualification == 0
        })
        .await
    }

    /// Waits, as [`wait_drained`](Self::wait_drained), after `phase`; says so when the next
    /// phase must run on a busy suite.
    async fn drain_after(&self, phase: &str, suite: &Suite, plan: &Plan) -> anyhow::Result<bool> {
        let drained = self
            .wait_drained(suite, plan.poll, plan.phase_timeout)
            .await?
            .is_some();
        if !drained {
            eprintln!(
                "  (the {phase} phase's activities were not drained; the next phase runs on a busy suite)"
            );
        }
        Ok(drained)
    }

    /// Waits until also handoff has applied everything qualification sent.
    async fn wait_handoff(
        &self,
        suite: &Suite,
        poll: Duration,
        timeout: Duration,
    ) -> anyhow::Result<Option<Instant>> {
        self.wait(suite, poll, timeout, |p| p == Pending::default())
            .await
    }

    async fn wait(
        &self,
        suite: &Suite,
        poll: Duration,
        timeout: Duration,
        done: impl Fn(Pending) -> bool,
    ) -> anyhow::Result<Option<Instant>> {
        let start = Instant::now();
        let mut last_report = Instant::now();
        loop {
            suite.check_running()?;
            let pending = self.pending().await?;
            if done(pending) {
                return Ok(Some(Instant::now()));
            }
            if start.elapsed() >= timeout {
                eprintln!(
                    "  not drained after {:.0}s: {pending:?}",
                    timeout.as_secs_f64()
                );
                return Ok(None);
            }
            if last_report.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "  … backlog: {} to scoring, {} to qualification, {} to handoff",
                    pending.to_scoring, pending.to_qualification, pending.to_handoff
                );
                last_report = Instant::now();
            }
            // Counting a big backlog is itself work for the stores being measured: poll it
            // sparsely until it is nearly gone, then finely to catch the moment it is.
            let total = pending.to_scoring + pending.to_qualification + pending.to_handoff;
            let wait = if total > SPARSE_POLL_ABOVE {
                poll.max(Duration::from_secs(1))
            } else {
                poll
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Backlog above which the drain is polled once a second at most.
const SPARSE_POLL_ABOVE: u64 = 10_000;

/// The row count of `table`.
async fn count(db: &DatabaseConnection, table: &str) -> anyhow::Result<u64> {
    let sql = format!("SELECT COUNT(*) AS n FROM {table}");
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .with_context(|| format!("count of {table}"))?;
    let n: i64 = row.try_get("", "n")?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// How long the whole pipeline took to take in and apply the batch phase's activities.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EndToEnd {
    /// Activities accepted by ingestion.
    pub(crate) activities: u64,
    /// From the first `Batch` call to drained, in seconds.
    pub(crate) seconds: f64,
    /// Activities per second, end to end.
    pub(crate) activities_per_sec: f64,
    /// From the first `Batch` call to qualification's outbox to handoff empty too, in seconds.
    pub(crate) handoff_drained_seconds: Option<f64>,
    /// What the suite process used from the first `Batch` call to drained (not counting a
    /// PostgreSQL server's own work).
    pub(crate) usage: Option<Usage>,
}

/// `Batch` calls at a given concurrency for a bounded time, and how many failed and were
/// retried (on PostgreSQL: deadlocks between batches updating the same leads).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Contention {
    /// The load phase (successful calls, retries included in their latency).
    pub(crate) phase: Phase,
    /// Calls sent again after a server-side failure.
    pub(crate) retries: u64,
    /// Why the first retried call failed.
    pub(crate) first_failure: Option<String>,
}

/// A rescore job's run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rescore {
    /// Activity facts stored at scoring (what the job replays).
    pub(crate) facts: u64,
    /// Leads re-scored.
    pub(crate) leads: i64,
    /// Leads whose score or grade changed.
    pub(crate) changed_leads: i64,
    /// From the job's start to its end, as scoring recorded them, in seconds.
    pub(crate) seconds: f64,
    /// From the `Rescore` call to the poll that saw it succeed, in seconds.
    pub(crate) client_seconds: f64,
    /// Facts replayed per second.
    pub(crate) facts_per_sec: f64,
    /// What the suite process used from the `Rescore` call to the poll that saw it succeed.
    pub(crate) usage: Option<Usage>,
}

/// What was measured on one backend.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LeadflowRun {
    /// `sqlite` or `postgresql`.
    pub(crate) backend: &'static str,
    /// `Batch` calls of 100 `Identify` items creating the leads.
    pub(crate) identify: Phase,
    /// `Batch` calls of 100 `Track` items: activities/s accepted.
    pub(crate) batch: Phase,
    /// The contention probe (PostgreSQL): `Batch` at the store ceiling's concurrency.
    pub(crate) contention: Option<Contention>,
    /// `Batch` calls sent again after a server-side failure.
    pub(crate) batch_retries: u64,
    /// Why the first retried call failed.
    pub(crate) batch_retry_reason: Option<String>,
    /// Time until the batch phase's activities were applied everywhere.
    pub(crate) end_to_end: Option<EndToEnd>,
    /// Unary `Track`, closed loop.
    pub(crate) track: Option<Phase>,
    /// What the suite process used from the first closed-loop `Track` call until the phase's
    /// activities were drained (none when they were not drained in time).
    pub(crate) track_usage: Option<Usage>,
    /// Unary `Track`, one request in flight: each waits for a commit of its own.
    pub(crate) track_one: Option<Phase>,
    /// `GetScore`, closed loop.
    pub(crate) get_score_max: Option<Phase>,
    /// `GetScore` at the fixed offered rate (half the echo's maximum).
    pub(crate) get_score_fixed: Option<Phase>,
    /// `GetScore`, one request in flight.
    pub(crate) get_score_one: Option<Phase>,
    /// `BatchGetScores`, closed loop.
    pub(crate) batch_get_scores_max: Option<Phase>,
    /// `BatchGetScores` at half its own maximum.
    pub(crate) batch_get_scores_fixed: Option<Phase>,
    /// Ids per `BatchGetScores` call.
    pub(crate) batch_get_scores_ids: u64,
    /// The rescore job.
    pub(crate) rescore: Option<Rescore>,
    /// Activity facts stored at scoring after the load.
    pub(crate) facts_stored: u64,
    /// Leads qualification knows after the load.
    pub(crate) qualification_leads: u64,
    /// Resident memory of the suite process once it listens, before any load (`VmRSS`), in
    /// bytes.
    pub(crate) rss_at_start_bytes: Option<u64>,
    /// Peak resident memory of the suite process after the load (`VmHWM`), in bytes.
    pub(crate) peak_rss_bytes: Option<u64>,
}

/// How a Leadflow run is sized and paced.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The workload.
    pub(crate) workload: Workload,
    /// Requests in flight in the closed-loop unary phases.
    pub(crate) concurrency: usize,
    /// `Batch` calls in flight.
    pub(crate) batch_concurrency: usize,
    /// Ids per `BatchGetScores` call.
    pub(crate) batch_ids: u64,
    /// Length of each rate phase.
    pub(crate) duration: Duration,
    /// Bound on each count-bound phase (ingestion, drain, rescore).
    pub(crate) phase_timeout: Duration,
    /// How often the drain is polled.
    pub(crate) poll: Duration,
    /// The fixed offered rate of `GetScore` (half the echo's maximum).
    pub(crate) fixed_rate: f64,
    /// Everything (SQLite), or ingestion and end to end only (PostgreSQL).
    pub(crate) full: bool,
    /// Log filter of the suite's services.
    pub(crate) log: String,
    /// Before the batch phase, `Batch` at this many in flight for `duration`, to measure
    /// contention between concurrent batches (PostgreSQL).
    pub(crate) contention_probe: Option<usize>,
}

/// Starts the suite on `databases`, runs the plan's phases on it, and stops it.
pub(crate) async fn run(
    backend: &'static str,
    databases: Databases,
    plan: &Plan,
) -> anyhow::Result<LeadflowRun> {
    eprintln!("leadflow on {backend}: starting the four services in a process of their own");
    let suite = Suite::start(databases, &plan.log).await?;
    let rss_at_start = suite.memory("VmRSS:");
    let measured = measure(backend, &suite, plan).await;
    let stopped = suite.stop().await;
    let mut run = measured?;
    stopped?;
    run.rss_at_start_bytes = rss_at_start;
    Ok(run)
}

/// The phases, on a running suite.
async fn measure(backend: &'static str, suite: &Suite, plan: &Plan) -> anyhow::Result<LeadflowRun> {
    let ingestion = channel(suite.ingestion)?;
    let scoring = channel(suite.scoring)?;
    let ingestion = IngestionServiceClient::new(ingestion)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let scoring = ScoringServiceClient::new(scoring)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    wait_serving(&ingestion, suite).await?;
    let backlog = Backlog::connect(&suite.databases).await?;
    let result = phases(backend, suite, plan, &backlog, ingestion, scoring).await;
    backlog.close().await;
    result
}

/// A lazily connected channel to `addr` with Leadflow's client settings.
fn channel(addr: SocketAddr) -> anyhow::Result<Channel> {
    Ok(leadflow_runtime::client::lazy_channel(&format!(
        "http://{addr}"
    ))?)
}

/// Waits until ingestion answers (its migrations done).
async fn wait_serving(
    ingestion: &IngestionServiceClient<Channel>,
    suite: &Suite,
) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        suite.check_running()?;
        let mut client = ingestion.clone();
        let probe = leadflow_proto::ingestion::v1::GetLeadRequest {
            lead_id: "bench-probe".into(),
        };
        match client.get_lead(probe).await {
            Ok(_) => return Ok(()),
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(()),
            Err(status) if start.elapsed() > Duration::from_secs(60) => {
                anyhow::bail!("ingestion did not start: {status}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[allow(clippy::too_many_lines)] // one phase after the other, in the order they run
async fn phases(
    backend: &'static str,
    suite: &Suite,
    plan: &Plan,
    backlog: &Backlog,
    ingestion: IngestionServiceClient<Channel>,
    scoring: ScoringServiceClient<Channel>,
) -> anyhow::Result<LeadflowRun> {
    let workload = Arc::new(plan.workload.clone());
    let leads = workload.leads;

    // 1. The leads, identified with their profiles; the ids ingestion assigns are kept.
    eprintln!("  identifying {leads} leads (Batch, {BATCH_ITEMS} Identify items per call)");
    let ids = Arc::new(Mutex::new(vec![String::new(); usize::try_from(leads)?]));
    let identify = {
        let (client, workload, ids) = (ingestion.clone(), Arc::clone(&workload), Arc::clone(&ids));
        load::closed_loop(
            &format!("{backend}: Batch of Identify"),
            plan.batch_concurrency,
            Limit::count(leads.div_ceil(BATCH_ITEMS), plan.phase_timeout),
            move |call| {
                identify_call(
                    client.clone(),
                    Arc::clone(&workload),
                    Arc::clone(&ids),
                    call,
                )
            },
        )
        .await?
    };
    let lead_ids: Arc<Vec<String>> = Arc::new(
        ids.lock()
            .map_err(|_| anyhow::anyhow!("lead ids poisoned"))?
            .iter()
            .filter(|id| !id.is_empty())
            .cloned()
            .collect(),
    );
    anyhow::ensure!(!lead_ids.is_empty(), "no lead was identified");
    if backlog
        .wait_drained(suite, plan.poll, plan.phase_timeout)
        .await?
        .is_none()
    {
        anyhow::bail!("the profiles were not applied within the phase timeout");
    }

    // 1b. Optionally (PostgreSQL), Batch calls at the contention level, for a bounded time.
    let contention = match plan.contention_probe {
        Some(in_flight) => {
            eprintln!(
                "  contention probe: Batch of {BATCH_ITEMS} Track items, {in_flight} in flight, for {:?}",
                plan.duration
            );
            let retries = Arc::new(Retries::default());
            let phase = {
                let (client, workload, retries) = (
                    ingestion.clone(),
                    Arc::clone(&workload),
                    Arc::clone(&retries),
                );
                load::closed_loop(
                    &format!("{backend}: Batch of Track, {in_flight} in flight"),
                    in_flight,
                    Limit::count(workload.activities.div_ceil(BATCH_ITEMS), plan.duration),
                    move |call| {
                        track_batch_call(
                            client.clone(),
                            Arc::clone(&workload),
                            Arc::clone(&retries),
                            "c",
                            call,
                        )
                    },
                )
                .await?
            };
            eprintln!(
                "  {} Batch calls were retried (first failure: {})",
                retries.total(),
                retries.first().unwrap_or_default()
            );
            if backlog
                .wait_drained(suite, plan.poll, plan.phase_timeout)
                .await?
                .is_none()
            {
                eprintln!("  (the probe's activities were not drained in time)");
            }
            Some(Contention {
                phase,
                retries: retries.total(),
                first_failure: retries.first(),
            })
        }
        None => None,
    };

    // 2. Activities in batches, while the pipeline scores and qualifies them; then until drained.
    let activities = workload.activities;
    eprintln!(
        "  ingesting {activities} activities (Batch, {BATCH_ITEMS} Track items per call, {} in flight)",
        plan.batch_concurrency
    );
    let started = Instant::now();
    let usage_at_start = suite.usage();
    let batch_retries = Arc::new(Retries::default());
    let batch = {
        let (client, workload, retries) = (
            ingestion.clone(),
            Arc::clone(&workload),
            Arc::clone(&batch_retries),
        );
        load::closed_loop(
            &format!("{backend}: Batch of Track"),
            plan.batch_concurrency,
            Limit::count(activities.div_ceil(BATCH_ITEMS), plan.phase_timeout),
            move |call| {
                track_batch_call(
                    client.clone(),
                    Arc::clone(&workload),
                    Arc::clone(&retries),
                    "a",
                    call,
                )
            },
        )
        .await?
    };
    if batch_retries.total() > 0 {
        eprintln!(
            "  {} Batch calls were retried (first failure: {})",
            batch_retries.total(),
            batch_retries.first().unwrap_or_default()
        );
    }
    eprintln!("  waiting until drained (scoring and qualification have applied everything)");
    let drained = backlog
        .wait_drained(suite, plan.poll, plan.phase_timeout)
        .await?;
    let end_to_end = match drained {
        Some(at) => {
            let seconds = at.duration_since(started).as_secs_f64();
            let usage = usage_at_start
                .zip(suite.usage())
                .map(|(start, drained)| start.until(drained));
            let handoff = backlog
                .wait_handoff(suite, plan.poll, plan.phase_timeout)
                .await?
                .map(|at| at.duration_since(started).as_secs_f64());
            #[allow(clippy::cast_precision_loss)]
            let per_sec = batch.items as f64 / seconds.max(1e-9);
            eprintln!(
                "  end to end: {} activities in {seconds:.2}s = {per_sec:.0}/s (handoff drained at {})",
                batch.items,
                handoff.map_or("—".to_owned(), |s| format!("{s:.2}s"))
            );
            Some(EndToEnd {
                activities: batch.items,
                seconds,
                activities_per_sec: per_sec,
                handoff_drained_seconds: handoff,
                usage,
            })
        }
        None => None,
    };

    let mut run = LeadflowRun {
        backend,
        identify,
        batch,
        end_to_end,
        track: None,
        track_usage: None,
        track_one: None,
        get_score_max: None,
        get_score_fixed: None,
        get_score_one: None,
        batch_get_scores_max: None,
        batch_get_scores_fixed: None,
        contention,
        batch_retries: batch_retries.total(),
        batch_retry_reason: batch_retries.first(),
        batch_get_scores_ids: plan.batch_ids,
        rescore: None,
        facts_stored: 0,
        qualification_leads: 0,
        rss_at_start_bytes: None,
        peak_rss_bytes: None,
    };
    if !plan.full {
        run.facts_stored = count(&backlog.scoring, "activity_facts").await?;
        run.qualification_leads = count(&backlog.qualification, "qualification_leads").await?;
        return Ok(run);
    }

    // 3. Unary Track, closed loop, then one in flight; each drained again, so that the next
    // phase runs on a quiet suite.
    let track = |stream: &'static str| {
        let (client, workload) = (ingestion.clone(), Arc::clone(&workload));
        let offset = workload.activities;
        move |i| {
            let mut client = client.clone();
            let request = workload.track(stream, offset + i);
            async move {
                client
                    .track(request)
                    .await
                    .map(|_| 1)
                    .map_err(|s| format!("Track: {s}"))
            }
        }
    };
    eprintln!("  Track, {} in flight", plan.concurrency);
    let usage_at_start = suite.usage();
    run.track = Some(
        load::closed_loop(
            &format!("{backend}: Track"),
            plan.concurrency,
            Limit::time(plan.duration),
            track("t"),
        )
        .await?,
    );
    if backlog.drain_after("Track", suite, plan).await? {
        run.track_usage = usage_at_start
            .zip(suite.usage())
            .map(|(start, drained)| start.until(drained));
    }
    run.track_one = Some(
        load::closed_loop(
            &format!("{backend}: Track one in flight"),
            1,
            Limit::time(plan.duration),
            track("t1"),
        )
        .await?,
    );
    backlog
        .drain_after("Track one in flight", suite, plan)
        .await?;

    // 4. GetScore: maximum, at the fixed rate, one in flight.
    let get_score = {
        let (client, ids) = (scoring.clone(), Arc::clone(&lead_ids));
        move |i: u64| {
            let mut client = client.clone();
            let lead_id = pick_id(&ids, i);
            async move {
                client
                    .get_score(GetScoreRequest { lead_id })
                    .await
                    .map(|_| 1)
                    .map_err(|s| format!("GetScore: {s}"))
            }
        }
    };
    run.get_score_max = Some(
        load::closed_loop(
            &format!("{backend}: GetScore"),
            plan.concurrency,
            Limit::time(plan.duration),
            get_score.clone(),
        )
        .await?,
    );
    run.get_score_fixed = Some(
        load::fixed_rate(
            &format!("{backend}: GetScore at the fixed rate"),
            fixed_rate_workers(plan.concurrency),
            plan.fixed_rate,
            Limit::time(plan.duration),
            get_score.clone(),
        )
        .await?,
    );
    run.get_score_one = Some(
        load::closed_loop(
            &format!("{backend}: GetScore one in flight"),
            1,
            Limit::time(plan.duration),
            get_score,
        )
        .await?,
    );

    // 5. BatchGetScores: maximum, and at half of it.
    let batch_ids = plan.batch_ids;
    let batch_get = {
        let (client, ids) = (scoring.clone(), Arc::clone(&lead_ids));
        move |i: u64| {
            let mut client = client.clone();
            let lead_ids: Vec<String> = (0..batch_ids)
                .map(|k| pick_id(&ids, i.wrapping_mul(batch_ids).wrapping_add(k)))
                .collect();
            async move {
                let response = client
                    .batch_get_scores(BatchGetScoresRequest { lead_ids })
                    .await
                    .map_err(|s| format!("BatchGetScores: {s}"))?;
                Ok(u64::try_from(response.get_ref().results.len()).unwrap_or(0))
            }
        }
    };
    let max = load::closed_loop(
        &format!("{backend}: BatchGetScores"),
        plan.concurrency,
        Limit::time(plan.duration),
        batch_get.clone(),
    )
    .await?;
    let half = (max.rate / 2.0).max(1.0);
    run.batch_get_scores_max = Some(max);
    run.batch_get_scores_fixed = Some(
        load::fixed_rate(
            &format!("{backend}: BatchGetScores at half its maximum"),
            fixed_rate_workers(plan.concurrency),
            half,
            Limit::time(plan.duration),
            batch_get,
        )
        .await?,
    );

    // 6. Rescore every lead from the stored facts.
    run.facts_stored = count(&backlog.scoring, "activity_facts").await?;
    run.rescore = rescore(suite, scoring.clone(), run.facts_stored, plan.phase_timeout).await?;
    run.qualification_leads = count(&backlog.qualification, "qualification_leads").await?;
    run.peak_rss_bytes = suite.memory("VmHWM:");
    Ok(run)
}

/// In-flight bound of a fixed-rate phase: enough that the generator never limits the rate a
/// healthy server can take.
pub(crate) fn fixed_rate_workers(concurrency: usize) -> usize {
    concurrency.saturating_mul(4).max(64)
}

/// The id of a lead chosen by `i`.
fn pick_id(ids: &[String], i: u64) -> String {
    let len = u64::try_from(ids.len()).unwrap_or(1).max(1);
    usize::try_from(mix(i ^ 0x9E7) % len)
        .ok()
        .and_then(|k| ids.get(k))
        .cloned()
        .unwrap_or_default()
}

/// Identify call number `call`: leads `call * 100 ..`, their assigned ids recorded in `ids`.
async fn identify_call(
    mut client: IngestionServiceClient<Channel>,
    workload: Arc<Workload>,
    ids: Arc<Mutex<Vec<String>>>,
    call: u64,
) -> Result<u64, String> {
    let first = call * BATCH_ITEMS;
    let last = (first + BATCH_ITEMS).min(workload.leads);
    let items = (first..last)
        .map(|lead| BatchItem {
            item: Some(batch_item::Item::Identify(workload.identify(lead))),
        })
        .collect();
    let response = client
        .batch(BatchRequest { items })
        .await
        .map_err(|s| format!("Batch of Identify: {s}"))?
        .into_inner();
    let mut ids = ids.lock().map_err(|_| "lead ids poisoned".to_owned())?;
    for (lead, result) in (first..last).zip(response.results) {
        match result.result {
            Some(batch_item_result::Result::Identify(answer)) => {
                if let Some(slot) = usize::try_from(lead).ok().and_then(|k| ids.get_mut(k)) {
                    *slot = answer.lead_id;
                }
            }
            Some(batch_item_result::Result::Error(error)) => {
                return Err(format!(
                    "Identify of lead {lead} refused: {}",
                    error.message
                ));
            }
            _ => return Err(format!("Identify of lead {lead}: unexpected answer")),
        }
    }
    Ok(u64::try_from(response.accepted_count).unwrap_or(0))
}

/// Attempts per `Batch` call: a call failing with a server-side error is sent again (safe:
/// every item carries its message id), as a real client would.
const BATCH_ATTEMPTS: u32 = 5;

/// Retried `Batch` calls, and why the first was retried.
#[derive(Debug, Default)]
struct Retries {
    count: AtomicU64,
    first: Mutex<Option<String>>,
}

impl Retries {
    fn note(&self, why: String) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first.lock() {
            first.get_or_insert(why);
        }
    }

    fn total(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn first(&self) -> Option<String> {
        self.first.lock().ok().and_then(|f| f.clone())
    }
}

/// Batch call number `call`: activities `call * 100 ..` as `Track` items; a server-side failure
/// is retried (noted in `retries`) up to [`BATCH_ATTEMPTS`] times.
async fn track_batch_call(
    mut client: IngestionServiceClient<Channel>,
    workload: Arc<Workload>,
    retries: Arc<Retries>,
    stream: &'static str,
    call: u64,
) -> Result<u64, String> {
    let first = call * BATCH_ITEMS;
    let last = (first + BATCH_ITEMS).min(workload.activities);
    let items: Vec<BatchItem> = (first..last)
        .map(|i| BatchItem {
            item: Some(batch_item::Item::Track(workload.track(stream, i))),
        })
        .collect();
    let mut attempt = 1;
    let response = loop {
        match client
            .batch(BatchRequest {
                items: items.clone(),
            })
            .await
        {
            Ok(response) => break response.into_inner(),
            Err(status)
                if attempt < BATCH_ATTEMPTS
                    && matches!(
                        status.code(),
                        tonic::Code::Internal
                            | tonic::Code::Unavailable
                            | tonic::Code::Aborted
                            | tonic::Code::ResourceExhausted
                            // A call racing the server's GOAWAY when it recycles a connection
                            // after its maximum age (5 minutes) fails as cancelled.
                            | tonic::Code::Cancelled
                    ) =>
            {
                retries.note(status.message().to_owned());
                tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(status) => return Err(format!("Batch of Track: {status}")),
        }
    };
    if response.rejected_count > 0 {
        let first_error = response
            .results
            .iter()
            .find_map(|r| match &r.result {
                Some(batch_item_result::Result::Error(e)) => Some(e.message.clone()),
                _ => None,
            })
            .unwrap_or_default();
        return Err(format!(
            "{} of {} activities refused: {first_error}",
            response.rejected_count,
            last - first
        ));
    }
    Ok(u64::try_from(response.accepted_count).unwrap_or(0))
}

/// Starts a rescore job and polls it to the end; `None` if it did not finish in `timeout`.
async fn rescore(
    suite: &Suite,
    mut scoring: ScoringServiceClient<Channel>,
    facts: u64,
    timeout: Duration,
) -> anyhow::Result<Option<Rescore>> {
    eprintln!("  Rescore of every lead ({facts} stored facts)");
    let started = Instant::now();
    let usage_at_start = suite.usage();
    let job = scoring
        .rescore(RescoreRequest {
            request_id: format!("bench-{}", uuid::Uuid::new_v4().simple()),
        })
        .await?
        .into_inner()
        .job
        .context("Rescore answered no job")?;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let current = scoring
            .get_rescore_job(GetRescoreJobRequest {
                job_id: job.job_id.clone(),
            })
            .await?
            .into_inner()
            .job
            .context("GetRescoreJob answered no job")?;
        let state = RescoreJobState::try_from(current.state).unwrap_or_default();
        match state {
            RescoreJobState::Succeeded => {
                let client_seconds = started.elapsed().as_secs_f64();
                let seconds = match (&current.start_time, &current.end_time) {
                    (Some(s), Some(e)) => {
                        #[allow(clippy::cast_precision_loss)]
                        let secs =
                            (e.seconds - s.seconds) as f64 + f64::from(e.nanos - s.nanos) / 1e9;
                        secs
                    }
                    _ => client_seconds,
                }
                .max(1e-6);
                #[allow(clippy::cast_precision_loss)]
                let facts_per_sec = facts as f64 / seconds;
                eprintln!(
                    "  Rescore: {} leads, {facts} facts in {seconds:.2}s = {facts_per_sec:.0} facts/s ({} changed)",
                    current.processed_leads, current.changed_leads
                );
                return Ok(Some(Rescore {
                    facts,
                    leads: current.processed_leads,
                    changed_leads: current.changed_leads,
                    seconds,
                    client_seconds,
                    facts_per_sec,
                    usage: usage_at_start
                        .zip(suite.usage())
                        .map(|(start, done)| start.until(done)),
                }));
            }
            RescoreJobState::Failed => {
                anyhow::bail!("the rescore job failed: {}", current.error_message)
            }
            _ if started.elapsed() > timeout => {
                eprintln!(
                    "  Rescore not finished after {:.0}s ({} of {} leads)",
                    timeout.as_secs_f64(),
                    current.processed_leads,
                    current.total_leads
                );
                return Ok(None);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_is_deterministic_and_valid() {
        let w = Workload::new(100, 1000);
        assert_eq!(w.activity(7), w.activity(7));
        let mut kinds = std::collections::HashSet::new();
        for i in 0..1000 {
            let a = w.activity(i);
            assert!(a.occurred_at.is_some());
            kinds.insert(a.r#type);
            assert!(w.lead_of(i) < 100);
        }
        assert_eq!(kinds.len(), ACTIVITY_MIX.len());
        assert!(w.profile(3).email.is_some_and(|e| e.contains('@')));
    }
}
