//! The four services as separate servers over gRPC, each with its own database: the seed journey
//! tracked at ingestion is scored through the outbox and makes the lead an MQL at qualification
//! (restarting ingestion and qualification half-way loses nothing and counts nothing twice);
//! handoff routes it to an SDR with the lead's real timeline and score explanation; the CRM's
//! accept, qualification's BANT and the CRM's won outcome make it a customer. On SQLite and on
//! PostgreSQL.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::SubsecRound;
use leadflow_proto::common::v1::{
    Activity, Bant, BudgetStatus, FitGrade, HandoffKind, LeadStage, Profile, RejectionReason,
    SalesOutcome, Seniority, WonOutcome, sales_outcome,
};
use leadflow_proto::handoff::v1::{
    self as pb_handoff, handoff_service_client::HandoffServiceClient,
};
use leadflow_proto::ingestion::v1::{
    IdentifyRequest, LeadIdentity, TrackRequest, ingestion_service_client::IngestionServiceClient,
};
use leadflow_proto::qualification::v1::{
    self as pb_qualification, GetFunnelRequest, GetHistoryRequest, GetLeadStageRequest,
    PublishDefinitionRequest, QualificationDefinition, RecordBantRequest, RecycleRules, SqlRule,
    TransitionReason, qualification_service_client::QualificationServiceClient,
};
use leadflow_proto::scoring::v1::{
    ContributionKind, ExplainScoreRequest, scoring_service_client::ScoringServiceClient,
};
use leadflow_runtime::auth::AuthArgs;
use leadflow_runtime::clock::{Clock, ManualClock, SharedClock, SystemClock};
use leadflow_runtime::outbox::OutboxArgs;
use leadflow_test_support::{Backend, TestDb};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

fn fast_outbox() -> OutboxArgs {
    OutboxArgs {
        outbox_poll_ms: 50,
        outbox_batch_size: 10,
        outbox_backoff_ms: 5,
        outbox_backoff_max_ms: 50,
        ..OutboxArgs::default()
    }
}

/// The time the services run on, and how often their background tasks look at it.
#[derive(Clone)]
struct Env {
    clock: SharedClock,
    tick_ms: u64,
}

impl Env {
    /// The wall clock, background tasks effectively idle.
    fn system() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            tick_ms: 60_000,
        }
    }
}

struct Running {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .expect("url")
            .connect_lazy()
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("stops")
            .expect("task")
            .expect("clean");
    }
}

async fn handoff(
    env: &Env,
    db: &TestDb,
    listener: tokio::net::TcpListener,
    upstream: [&Running; 3],
) -> Running {
    let addr = listener.local_addr().expect("addr");
    let [ingestion, scoring, qualification] = upstream;
    let config = leadflow_handoff::Config {
        listen_addr: addr,
        database_url: Some(db.url.clone()),
        data_dir: std::env::temp_dir(),
        database_max_connections: 5,
        ingestion_url: format!("http://{}", ingestion.addr),
        scoring_url: format!("http://{}", scoring.addr),
        qualification_url: format!("http://{}", qualification.addr),
        sla_sweep_interval_ms: env.tick_ms,
        webhook_poll_ms: env.tick_ms,
        auth: AuthArgs::default(),
        outbox: fast_outbox(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(leadflow_handoff::serve(
        config,
        listener,
        env.clock.clone(),
        shutdown.clone(),
    ));
    Running {
        addr,
        shutdown,
        task,
    }
}

async fn qualification(
    env: &Env,
    db: &TestDb,
    addr: Option<SocketAddr>,
    handoff: SocketAddr,
) -> Running {
    let listener = tokio::net::TcpListener::bind(addr.unwrap_or(([127, 0, 0, 1], 0).into()))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = leadflow_qualification::Config {
        listen_addr: addr,
        database_url: Some(db.url.clone()),
        data_dir: std::env::temp_dir(),
        database_max_connections: 5,
        handoff_url: format!("http://{handoff}"),
        recycle_interval_ms: env.tick_ms,
        auth: AuthArgs::default(),
        outbox: fast_outbox(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(leadflow_qualification::serve(
        config,
        listener,
        env.clock.clone(),
        shutdown.clone(),
    ));
    Running {
        addr,
        shutdown,
        task,
    }
}

async fn scoring(env: &Env, db: &TestDb, qualification: &Running) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = leadflow_scoring::Config {
        listen_addr: addr,
        database_url: Some(db.url.clone()),
        data_dir: std::env::temp_dir(),
        database_max_connections: 5,
        qualification_url: format!("http://{}", qualification.addr),
        sweep_interval_ms: env.tick_ms,
        score_cache_leads: leadflow_scoring::DEFAULT_SCORE_CACHE_LEADS,
        auth: AuthArgs::default(),
        outbox: fast_outbox(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(leadflow_scoring::serve(
        config,
        listener,
        env.clock.clone(),
        shutdown.clone(),
    ));
    Running {
        addr,
        shutdown,
        task,
    }
}

async fn ingestion(env: &Env, db: &TestDb, scoring: &Running) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = leadflow_ingestion::Config {
        listen_addr: addr,
        database_url: Some(db.url.clone()),
        data_dir: std::env::temp_dir(),
        database_max_connections: 5,
        scoring_url: format!("http://{}", scoring.addr),
        auth: AuthArgs::default(),
        outbox: fast_outbox(),
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(leadflow_ingestion::serve(
        config,
        listener,
        env.clock.clone(),
        shutdown.clone(),
    ));
    Running {
        addr,
        shutdown,
        task,
    }
}

fn track(message_id: &str, kind: &str, days_ago: i64, asset: &[(&str, &str)]) -> TrackRequest {
    let at = chrono::Utc::now() - chrono::Duration::days(days_ago);
    TrackRequest {
        message_id: message_id.into(),
        identity: Some(LeadIdentity {
            user_id: "dana".into(),
            anonymous_id: String::new(),
        }),
        activity: Some(Activity {
            r#type: kind.into(),
            occurred_at: Some(prost_types::Timestamp {
                seconds: at.timestamp(),
                nanos: 0,
            }),
            properties: asset
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }),
    }
}

async fn seed_journey_is_scored_across_a_restart(backend: Backend) {
    let (Some(ingestion_db), Some(scoring_db), Some(qualification_db), Some(handoff_db)) = (
        TestDb::new(backend).await,
        TestDb::new(backend).await,
        TestDb::new(backend).await,
        TestDb::new(backend).await,
    ) else {
        return;
    };
    let handoff_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let handoff_addr = handoff_listener.local_addr().expect("addr");
    let env = Env::system();
    let first_qualification = qualification(&env, &qualification_db, None, handoff_addr).await;
    let scoring = scoring(&env, &scoring_db, &first_qualification).await;
    let first = ingestion(&env, &ingestion_db, &scoring).await;
    let mut client = IngestionServiceClient::new(first.channel());
    let lead_id = client
        .identify(IdentifyRequest {
            message_id: "profile".into(),
            identity: Some(LeadIdentity {
                user_id: "dana".into(),
                anonymous_id: String::new(),
            }),
            profile: Some(Profile {
                title: Some("Marketing Manager".into()),
                seniority: Seniority::Manager as i32,
                company_size: Some(200),
                industry: Some("Software".into()),
                ..Default::default()
            }),
            occurred_at: None,
        })
        .await
        .expect("identify")
        .into_inner()
        .lead_id;
    client
        .track(track(
            "guide",
            "content_download",
            14,
            &[("asset_id", "guide-7")],
        ))
        .await
        .expect("track");
    client
        .track(track("open-1", "email_open", 12, &[("asset_id", "n1")]))
        .await
        .expect("track");
    client
        .track(track("open-2", "email_open", 7, &[("asset_id", "n2")]))
        .await
        .expect("track");
    first.stop().await;
    // Qualification goes down too and comes back on the same address: scoring's outbox holds
    // the score changes meanwhile and delivers them once.
    let qualification_addr = first_qualification.addr;
    first_qualification.stop().await;

    let second = ingestion(&env, &ingestion_db, &scoring).await;
    let mut client = IngestionServiceClient::new(second.channel());
    // A client retrying across the restart: the replay must not count twice.
    client
        .track(track("open-2", "email_open", 7, &[("asset_id", "n2")]))
        .await
        .expect("replay");
    client
        .track(track("open-3", "email_open", 2, &[("asset_id", "n3")]))
        .await
        .expect("track");
    client
        .track(track("pricing-1", "page_view", 1, &[("path", "/pricing")]))
        .await
        .expect("track");
    client
        .track(track("pricing-2", "page_view", 0, &[("path", "/pricing")]))
        .await
        .expect("track");

    let qualification = qualification(
        &env,
        &qualification_db,
        Some(qualification_addr),
        handoff_addr,
    )
    .await;
    let handoff = handoff(
        &env,
        &handoff_db,
        handoff_listener,
        [&second, &scoring, &qualification],
    )
    .await;
    let mut scores = ScoringServiceClient::new(scoring.channel());
    let explanation = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(response) = scores
                .explain_score(ExplainScoreRequest {
                    lead_id: lead_id.clone(),
                })
                .await
            {
                let explanation = response.into_inner().explanation.expect("explanation");
                let activities: std::collections::HashSet<String> = explanation
                    .contributions
                    .iter()
                    .filter(|c| c.kind == ContributionKind::BehaviorRule as i32)
                    .map(|c| c.activity_id.clone())
                    .collect();
                if activities.len() == 6 {
                    return explanation;
                }
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("every activity reaches scoring");
    let score = explanation.score.expect("score");
    assert!(score.score > 60.0, "the seed MQL: {}", score.score);
    let opens = explanation
        .contributions
        .iter()
        .filter(|c| c.rule_id == "email-open")
        .count();
    assert_eq!(
        opens, 3,
        "three e-mails, each counted once across the restart"
    );

    let mut stages = QualificationServiceClient::new(qualification.channel());
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(response) = stages
                .get_lead_stage(GetLeadStageRequest {
                    lead_id: lead_id.clone(),
                })
                .await
                && response.into_inner().lead.map(|l| l.stage) == Some(LeadStage::Mql as i32)
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the scored lead becomes an MQL at qualification");
    let history = stages
        .get_history(GetHistoryRequest {
            lead_id: lead_id.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .transitions;
    assert_eq!(history.len(), 1, "one MQL transition: {history:?}");
    assert_eq!(history[0].reason, TransitionReason::ScoreThreshold as i32);
    assert!(history[0].score > 60.0);

    sales_close_the_loop(&handoff, &qualification, &lead_id).await;
    second.stop().await;
    scoring.stop().await;
    qualification.stop().await;
    handoff.stop().await;
}

/// Waits for `lead_id`'s open hand-off of `kind` at handoff.
async fn open_handoff(handoff: &Running, lead_id: &str, kind: HandoffKind) -> pb_handoff::Handoff {
    let mut client = HandoffServiceClient::new(handoff.channel());
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let found = client
                .list_handoffs(pb_handoff::ListHandoffsRequest {
                    filter: Some(pb_handoff::HandoffFilter {
                        lead_id: lead_id.to_owned(),
                        kind: kind as i32,
                        statuses: vec![pb_handoff::HandoffStatus::Pending as i32],
                        ..Default::default()
                    }),
                    view: pb_handoff::HandoffView::Full as i32,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .handoffs
                .pop();
            if let Some(found) = found {
                return found;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the hand-off reaches handoff")
}

/// Waits until qualification has `lead_id` in `stage`.
async fn wait_for_stage(qualification: &Running, lead_id: &str, stage: LeadStage) {
    let mut client = QualificationServiceClient::new(qualification.channel());
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let now = client
                .get_lead_stage(GetLeadStageRequest {
                    lead_id: lead_id.to_owned(),
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().lead)
                .map(|l| l.stage);
            if now == Some(stage as i32) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{lead_id} reaches {stage:?} at qualification"));
}

/// Qualification's view of a lead, to explain a failed wait.
async fn describe(qualification: &Running, lead_id: &str) -> String {
    let mut client = QualificationServiceClient::new(qualification.channel());
    let lead = client
        .get_lead_stage(GetLeadStageRequest {
            lead_id: lead_id.to_owned(),
        })
        .await
        .map(|r| r.into_inner().lead);
    let history = client
        .get_history(GetHistoryRequest {
            lead_id: lead_id.to_owned(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().transitions);
    format!("{lead:?}\n{history:?}")
}

/// The hand-over: an SDR reviews the MQL with its warm context and accepts it; BANT makes it
/// SQL; an account executive wins the deal, and qualification follows each step.
async fn sales_close_the_loop(handoff: &Running, qualification: &Running, lead_id: &str) {
    let review = open_handoff(handoff, lead_id, HandoffKind::SdrReview).await;
    let context = review.context.clone().expect("warm context");
    let explained = context.score_explanation.expect("the score explanation");
    assert!(explained.score.map_or(0.0, |s| s.score) > 60.0);
    assert!(
        explained
            .contributions
            .iter()
            .any(|c| c.rule_id == "email-open"),
        "the explanation's contributions travel with the hand-off"
    );
    let viewed: Vec<String> = context
        .recent_activities
        .iter()
        .filter_map(|e| e.activity.as_ref().map(|a| a.r#type.clone()))
        .collect();
    assert_eq!(viewed.len(), 6, "the lead's real timeline: {viewed:?}");
    assert!(viewed.contains(&"content_download".to_owned()));

    let mut crm = HandoffServiceClient::new(handoff.channel());
    crm.record_contact(pb_handoff::RecordContactRequest {
        request_id: "contact-1".into(),
        handoff_id: review.handoff_id.clone(),
        ..Default::default()
    })
    .await
    .expect("contact");
    crm.accept_handoff(pb_handoff::AcceptHandoffRequest {
        request_id: "accept-1".into(),
        handoff_id: review.handoff_id.clone(),
        actor_id: "sdr-sam".into(),
        note: String::new(),
    })
    .await
    .expect("accept");
    wait_for_stage(qualification, lead_id, LeadStage::Sal).await;

    let now = chrono::Utc::now();
    QualificationServiceClient::new(qualification.channel())
        .record_bant(RecordBantRequest {
            request_id: "bant-1".into(),
            lead_id: lead_id.to_owned(),
            bant: Some(Bant {
                budget: BudgetStatus::Expected as i32,
                need: "replace spreadsheets".into(),
                expected_decision_time: Some(prost_types::Timestamp {
                    seconds: (now + chrono::Duration::days(60)).timestamp(),
                    nanos: 0,
                }),
                ..Default::default()
            }),
            actor_id: "sdr-sam".into(),
        })
        .await
        .expect("bant");
    let sales = open_handoff(handoff, lead_id, HandoffKind::Sales).await;
    crm.record_contact(pb_handoff::RecordContactRequest {
        request_id: "contact-2".into(),
        handoff_id: sales.handoff_id.clone(),
        ..Default::default()
    })
    .await
    .expect("contact");
    crm.report_outcome(pb_handoff::ReportOutcomeRequest {
        request_id: "won-1".into(),
        handoff_id: sales.handoff_id,
        outcome: Some(SalesOutcome {
            outcome: Some(sales_outcome::Outcome::Won(WonOutcome::default())),
        }),
        ..Default::default()
    })
    .await
    .expect("won");
    wait_for_stage(qualification, lead_id, LeadStage::Customer).await;
    let journey: Vec<(i32, i32)> = QualificationServiceClient::new(qualification.channel())
        .get_history(GetHistoryRequest {
            lead_id: lead_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .transitions
        .iter()
        .map(|t| (t.to_stage, t.reason))
        .collect();
    assert_eq!(
        journey,
        [
            (
                LeadStage::Mql as i32,
                TransitionReason::ScoreThreshold as i32
            ),
            (LeadStage::Sal as i32, TransitionReason::SdrAccepted as i32),
            (
                LeadStage::Sql as i32,
                TransitionReason::BantQualified as i32
            ),
            (LeadStage::Customer as i32, TransitionReason::Won as i32),
        ],
        "every stage of the seed journey, with its reason"
    );
}

/// The four services on one manual clock, background tasks ticking fast.
struct Suite {
    clock: ManualClock,
    ingestion: Running,
    scoring: Running,
    qualification: Running,
    handoff: Running,
    _dbs: Vec<TestDb>,
}

impl Suite {
    async fn start(backend: Backend) -> Option<Self> {
        let mut dbs = Vec::new();
        for _ in 0..4 {
            dbs.push(TestDb::new(backend).await?);
        }
        let clock = ManualClock::new(chrono::Utc::now().trunc_subsecs(0));
        let env = Env {
            clock: Arc::new(clock.clone()),
            tick_ms: 20,
        };
        let handoff_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let handoff_addr = handoff_listener.local_addr().expect("addr");
        let qualification = qualification(&env, &dbs[2], None, handoff_addr).await;
        let scoring = scoring(&env, &dbs[1], &qualification).await;
        let ingestion = ingestion(&env, &dbs[0], &scoring).await;
        let handoff = handoff(
            &env,
            &dbs[3],
            handoff_listener,
            [&ingestion, &scoring, &qualification],
        )
        .await;
        Some(Self {
            clock,
            ingestion,
            scoring,
            qualification,
            handoff,
            _dbs: dbs,
        })
    }

    /// The seeds' marketing manager as `user`, with the seed activities at the clock's time:
    /// an MQL by score.
    async fn seed_mql(&self, user: &str) -> String {
        let at = self.clock.now();
        let mut client = IngestionServiceClient::new(self.ingestion.channel());
        let identity = Some(LeadIdentity {
            user_id: user.into(),
            anonymous_id: String::new(),
        });
        let lead_id = client
            .identify(IdentifyRequest {
                message_id: format!("{user}-profile"),
                identity: identity.clone(),
                profile: Some(Profile {
                    title: Some("Marketing Manager".into()),
                    seniority: Seniority::Manager as i32,
                    company_size: Some(200),
                    industry: Some("Software".into()),
                    ..Default::default()
                }),
                occurred_at: None,
            })
            .await
            .expect("identify")
            .into_inner()
            .lead_id;
        for (i, (kind, key, value)) in [
            ("content_download", "asset_id", "guide-7"),
            ("email_open", "asset_id", "n1"),
            ("email_open", "asset_id", "n2"),
            ("email_open", "asset_id", "n3"),
            ("page_view", "path", "/pricing"),
            ("page_view", "path", "/pricing/teams"),
        ]
        .into_iter()
        .enumerate()
        {
            client
                .track(TrackRequest {
                    message_id: format!("{user}-{i}"),
                    identity: identity.clone(),
                    activity: Some(Activity {
                        r#type: kind.into(),
                        occurred_at: Some(prost_types::Timestamp {
                            seconds: at.timestamp(),
                            nanos: 0,
                        }),
                        properties: [(key.to_owned(), value.to_owned())].into(),
                    }),
                })
                .await
                .expect("track");
        }
        wait_for_stage(&self.qualification, &lead_id, LeadStage::Mql).await;
        lead_id
    }

    async fn stop(self) {
        for running in [
            self.ingestion,
            self.scoring,
            self.qualification,
            self.handoff,
        ] {
            running.stop().await;
        }
    }
}

/// Rejections by the SDR land where the seeds say, a cold MQL decays back to nurture, a
/// connector's stream sees every hand-off, and the funnel of the run is what we compute by hand.
async fn rejections_decay_stream_and_funnel(backend: Backend) {
    let Some(suite) = Suite::start(backend).await else {
        return;
    };
    let t0 = suite.clock.now();
    let mut crm = HandoffServiceClient::new(suite.handoff.channel());
    crm.upsert_owner(pb_handoff::UpsertOwnerRequest {
        request_id: String::new(),
        owner: Some(pb_handoff::Owner {
            owner_id: "sdr-sam".into(),
            role: pb_handoff::OwnerRole::Sdr as i32,
            team_id: "inbound".into(),
            ..Default::default()
        }),
    })
    .await
    .expect("owner");
    crm.publish_routing_rules(pb_handoff::PublishRoutingRulesRequest {
        request_id: "rules".into(),
        routing_rules: Some(pb_handoff::RoutingRules {
            rules: vec![pb_handoff::RoutingRule {
                id: "everyone".into(),
                owner_ids: vec!["sdr-sam".into()],
                ..Default::default()
            }],
            ..Default::default()
        }),
    })
    .await
    .expect("rules");
    // Recycle on score only, so the cold lead leaves MQL by decay and not by the calendar.
    let mut definitions = QualificationServiceClient::new(suite.qualification.channel());
    definitions
        .publish_definition(PublishDefinitionRequest {
            request_id: "def".into(),
            definition: Some(QualificationDefinition {
                mql_threshold: 60.0,
                min_fit_grade: FitGrade::B as i32,
                hand_raise_activity_types: vec!["demo_request".into(), "contact_sales".into()],
                sql_rule: Some(SqlRule {
                    require_need: true,
                    min_budget: BudgetStatus::Expected as i32,
                    ..Default::default()
                }),
                recycle_rules: Some(RecycleRules {
                    mql_acceptance_timeout: None,
                    mql_score_floor: Some(40.0),
                }),
                ..Default::default()
            }),
        })
        .await
        .expect("definition");
    let mut stream = crm
        .stream_handoffs(pb_handoff::StreamHandoffsRequest::default())
        .await
        .expect("stream")
        .into_inner();

    let cold = suite.seed_mql("cold").await;
    let off_profile = suite.seed_mql("off-profile").await;
    let early = suite.seed_mql("early").await;
    let mut streamed = std::collections::BTreeSet::new();
    while streamed.len() < 3 {
        let item = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("the stream delivers")
            .expect("open")
            .expect("item");
        streamed.insert(item.handoff.expect("handoff").lead_id);
    }
    assert_eq!(
        streamed,
        [cold.clone(), off_profile.clone(), early.clone()].into(),
        "the connector's stream sees every SDR review"
    );

    for (lead, reason, stage) in [
        (
            &off_profile,
            RejectionReason::NotIdealCustomerProfile,
            LeadStage::Disqualified,
        ),
        (&early, RejectionReason::Premature, LeadStage::Nurture),
    ] {
        let review = open_handoff(&suite.handoff, lead, HandoffKind::SdrReview).await;
        crm.record_contact(pb_handoff::RecordContactRequest {
            request_id: format!("contact-{lead}"),
            handoff_id: review.handoff_id.clone(),
            ..Default::default()
        })
        .await
        .expect("contact");
        crm.reject_handoff(pb_handoff::RejectHandoffRequest {
            request_id: format!("reject-{lead}"),
            handoff_id: review.handoff_id,
            reason: reason as i32,
            actor_id: "sdr-sam".into(),
            note: String::new(),
        })
        .await
        .expect("reject");
        wait_for_stage(&suite.qualification, lead, stage).await;
    }

    // Eight months later nobody touched the cold lead: decay takes it under the floor of 40.
    suite.clock.advance(chrono::Duration::days(240));
    let decayed = tokio::spawn({
        let channel = suite.qualification.channel();
        let cold = cold.clone();
        async move {
            let mut client = QualificationServiceClient::new(channel);
            loop {
                let stage = client
                    .get_lead_stage(GetLeadStageRequest {
                        lead_id: cold.clone(),
                    })
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().lead)
                    .map(|l| l.stage);
                if stage == Some(LeadStage::Nurture as i32) {
                    return;
                }
                tokio::task::yield_now().await;
            }
        }
    });
    if tokio::time::timeout(Duration::from_secs(30), decayed)
        .await
        .is_err()
    {
        panic!(
            "the cold lead decays to nurture: {}",
            describe(&suite.qualification, &cold).await
        );
    }
    let last = definitions
        .get_history(GetHistoryRequest {
            lead_id: cold.clone(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .transitions
        .pop()
        .expect("transitions");
    assert_eq!(last.reason, TransitionReason::RecycleScoreDecayed as i32);
    assert!(last.score < 40.0, "decayed to {}", last.score);
    assert_eq!(last.definition_version, 1);

    // The first day, by hand: three leads arrive and become MQLs; none is accepted; one is
    // disqualified as not the ideal customer profile, one recycled as premature. The decay
    // happened months later, outside the period.
    let funnel = definitions
        .get_funnel(GetFunnelRequest {
            start_time: Some(prost_types::Timestamp {
                seconds: t0.timestamp(),
                nanos: 0,
            }),
            end_time: Some(prost_types::Timestamp {
                seconds: (t0 + chrono::Duration::days(1)).timestamp(),
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .expect("funnel")
        .into_inner()
        .total
        .expect("total");
    let entered = |stage: LeadStage| {
        funnel
            .stage_entries
            .iter()
            .find(|e| e.stage == stage as i32)
            .map_or(0, |e| e.entered_count)
    };
    assert_eq!(
        [
            entered(LeadStage::Lead),
            entered(LeadStage::Mql),
            entered(LeadStage::Sal),
            entered(LeadStage::Nurture),
            entered(LeadStage::Disqualified)
        ],
        [3, 3, 0, 1, 1]
    );
    let mql_to_sal = &funnel.conversions[0];
    assert_eq!(
        (
            mql_to_sal.cohort_count,
            mql_to_sal.converted_count,
            mql_to_sal.rate
        ),
        (3, 0, 0.0)
    );
    let reasons = |counts: &[pb_qualification::ReasonCount]| -> Vec<(i32, i32, i64)> {
        counts
            .iter()
            .map(|c| (c.reason, c.rejection_reason, c.count))
            .collect()
    };
    assert_eq!(
        reasons(&funnel.recycled),
        [(
            TransitionReason::SdrRejected as i32,
            RejectionReason::Premature as i32,
            1
        )]
    );
    assert_eq!(
        reasons(&funnel.disqualified),
        [(
            TransitionReason::SdrRejected as i32,
            RejectionReason::NotIdealCustomerProfile as i32,
            1
        )]
    );
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_journey_sqlite() {
    seed_journey_is_scored_across_a_restart(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_journey_postgres() {
    seed_journey_is_scored_across_a_restart(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_decay_stream_and_funnel_sqlite() {
    rejections_decay_stream_and_funnel(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_decay_stream_and_funnel_postgres() {
    rejections_decay_stream_and_funnel(Backend::Postgres).await;
}
