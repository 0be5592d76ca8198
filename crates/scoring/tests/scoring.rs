//! Scoring over real gRPC clients on SQLite and PostgreSQL: lead events in, scores, explanations
//! and what-ifs out, model publication and rescoring, the inactivity sweeper on a manual clock,
//! merges, and every RPC's error paths.

mod harness;

use chrono::{Duration, Utc};
use harness::{
    QualificationReceiver, Scoring, activity_event, manager_profile, merge_event, profile_event,
    seed_journey,
};
use leadflow_proto::common::v1 as common;
use leadflow_proto::scoring::v1::{self as pb, ScoreChangeReason};
use leadflow_runtime::clock::{Clock, ManualClock};
use leadflow_runtime::error::field_violations;
use leadflow_scoring::convert::model_to_pb;
use leadflow_scoring::domain::default_model::default_model;
use leadflow_test_support::{TestDb, on_both_backends};
use tonic::Code;

fn fields(status: &tonic::Status) -> Vec<String> {
    field_violations(status)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

async fn start(db: &TestDb) -> (Scoring, QualificationReceiver) {
    let receiver = QualificationReceiver::start().await;
    let t0 = Utc::now() - Duration::days(30);
    let scoring = Scoring::start(
        db,
        receiver.url(),
        ManualClock::new(t0 + Duration::days(14)),
    )
    .await;
    (scoring, receiver)
}

fn journey_start(scoring: &Scoring) -> chrono::DateTime<Utc> {
    scoring.clock.now() - Duration::days(14)
}

async fn the_seed_journey_scores_an_mql_and_explains_it(db: TestDb) {
    let (scoring, receiver) = start(&db).await;
    let t0 = journey_start(&scoring);
    let applied = scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: seed_journey("lead-1", t0),
        })
        .await
        .expect("apply")
        .into_inner();
    assert_eq!((applied.applied_count, applied.duplicate_count), (7, 0));
    let again = scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: seed_journey("lead-1", t0),
        })
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(
        (again.applied_count, again.duplicate_count),
        (0, 7),
        "each message id applies once"
    );

    let score = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "lead-1".into(),
        })
        .await
        .expect("score")
        .into_inner()
        .score
        .expect("score");
    assert!(
        score.score > 60.0,
        "the seed MQL scores over the default threshold: {}",
        score.score
    );
    assert_eq!(score.fit_grade, common::FitGrade::A as i32);

    let explanation = scoring
        .client()
        .explain_score(pb::ExplainScoreRequest {
            lead_id: "lead-1".into(),
        })
        .await
        .expect("explain")
        .into_inner()
        .explanation
        .expect("explanation");
    let total: f64 = explanation.contributions.iter().map(|c| c.value).sum();
    let explained = explanation.score.expect("score");
    assert_eq!(
        total, explained.score,
        "the contributions add up to the score exactly"
    );
    assert!((explained.score - score.score).abs() < 1e-9);
    let rounded: i32 = explanation
        .contributions
        .iter()
        .map(|c| c.rounded_value)
        .sum();
    assert_eq!(rounded, explained.rounded_score);
    let scored: std::collections::HashSet<&str> = explanation
        .contributions
        .iter()
        .filter(|c| c.kind == pb::ContributionKind::BehaviorRule as i32)
        .map(|c| c.activity_id.as_str())
        .collect();
    assert_eq!(
        scored.len(),
        6,
        "every activity scored, the replay counted nothing twice"
    );
    let pricing_lines = explanation
        .contributions
        .iter()
        .filter(|c| c.rule_id == "pricing-page-view")
        .count();
    assert_eq!(pricing_lines, 2, "two pricing visits, one line each");

    let last = receiver
        .wait_for(|c| c.score.as_ref().is_some_and(|s| s.score > 60.0))
        .await;
    assert_eq!(last.header.as_ref().expect("header").lead_id, "lead-1");
    assert!(
        last.profile
            .as_ref()
            .is_some_and(|p| p.title.as_deref() == Some("Marketing Manager")),
        "qualification gets the profile"
    );
    scoring.stop().await;
}

async fn a_hand_raise_is_announced_as_such(db: TestDb) {
    let (scoring, receiver) = start(&db).await;
    let now = scoring.clock.now();
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: vec![activity_event("d1", "lead-2", "demo_request", now, &[])],
        })
        .await
        .expect("apply");
    let change = receiver.wait_for(|c| c.hand_raise).await;
    assert_eq!(change.reason, ScoreChangeReason::Activity as i32);
    assert_eq!(
        change.triggering_activity.expect("activity").r#type,
        "demo_request"
    );
    assert_eq!(change.score.expect("score").hand_raises.len(), 1);
    scoring.stop().await;
}

async fn batch_get_reports_unknown_ids(db: TestDb) {
    let (scoring, _receiver) = start(&db).await;
    let now = scoring.clock.now();
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: vec![activity_event("e1", "known", "pricing_view", now, &[])],
        })
        .await
        .expect("apply");
    let response = scoring
        .client()
        .batch_get_scores(pb::BatchGetScoresRequest {
            lead_ids: vec!["known".into(), "unknown".into()],
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(response.results.len(), 1);
    assert_eq!(response.results[0].requested_lead_id, "known");
    assert_eq!(response.not_found_lead_ids, ["unknown"]);
    let status = scoring
        .client()
        .batch_get_scores(pb::BatchGetScoresRequest { lead_ids: vec![] })
        .await
        .expect_err("empty");
    assert_eq!(fields(&status), ["lead_ids"]);
    let too_many = (0..1001).map(|i| i.to_string()).collect();
    let status = scoring
        .client()
        .batch_get_scores(pb::BatchGetScoresRequest { lead_ids: too_many })
        .await
        .expect_err("too many");
    assert_eq!(fields(&status), ["lead_ids"]);
    scoring.stop().await;
}

async fn error_paths_name_the_field_or_say_not_found(db: TestDb) {
    let (scoring, _receiver) = start(&db).await;
    let mut client = scoring.client();
    let status = client
        .get_score(pb::GetScoreRequest {
            lead_id: " ".into(),
        })
        .await
        .expect_err("empty id");
    assert_eq!(
        (status.code(), fields(&status)),
        (Code::InvalidArgument, vec!["lead_id".to_owned()])
    );
    assert_eq!(
        client
            .get_score(pb::GetScoreRequest {
                lead_id: "nope".into()
            })
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .explain_score(pb::ExplainScoreRequest {
                lead_id: "nope".into()
            })
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .get_model(pb::GetModelRequest { version: 7 })
            .await
            .expect_err("no version 7")
            .code(),
        Code::NotFound
    );
    assert_eq!(
        client
            .get_rescore_job(pb::GetRescoreJobRequest {
                job_id: "nope".into()
            })
            .await
            .expect_err("unknown job")
            .code(),
        Code::NotFound
    );
    let status = client
        .rescore(pb::RescoreRequest {
            request_id: String::new(),
        })
        .await
        .expect_err("no request id");
    assert_eq!(fields(&status), ["request_id"]);

    let mut bad = model_to_pb(&default_model(), Utc::now());
    bad.behavior_rules[0].points = 0.0;
    bad.fit_rules[1].id = bad.fit_rules[0].id.clone();
    let status = client
        .publish_model(pb::PublishModelRequest {
            request_id: "r1".into(),
            model: Some(bad),
        })
        .await
        .expect_err("invalid model");
    assert_eq!(status.code(), Code::InvalidArgument);
    let violated = fields(&status);
    assert!(
        violated.contains(&"model.behavior_rules[0].points".to_owned()),
        "{violated:?}"
    );
    assert!(
        violated.contains(&"model.fit_rules[1].id".to_owned()),
        "{violated:?}"
    );
    let status = client
        .publish_model(pb::PublishModelRequest {
            request_id: "r1".into(),
            model: None,
        })
        .await
        .expect_err("no model");
    assert_eq!(fields(&status), ["model"]);

    let status = client
        .what_if(pb::WhatIfRequest {
            activities: vec![common::Activity {
                r#type: "page_view".into(),
                occurred_at: None,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect_err("activity without time");
    assert_eq!(fields(&status), ["activities[0].occurred_at"]);

    let status = scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: vec![Default::default()],
        })
        .await
        .expect_err("no header");
    assert_eq!(fields(&status), ["events[0].header"]);
    scoring.stop().await;
}

async fn what_if_scores_without_storing(db: TestDb) {
    let (scoring, receiver) = start(&db).await;
    let now = scoring.clock.now();
    let activities: Vec<common::Activity> = seed_journey("x", now - Duration::days(14))
        .into_iter()
        .filter_map(|e| match e.event {
            Some(leadflow_proto::ingestion::v1::lead_event::Event::ActivityRecorded(a)) => {
                a.activity
            }
            _ => None,
        })
        .collect();
    let explanation = scoring
        .client()
        .what_if(pb::WhatIfRequest {
            profile: Some(manager_profile()),
            activities,
            ..Default::default()
        })
        .await
        .expect("what if")
        .into_inner()
        .explanation
        .expect("explanation");
    assert!(explanation.score.expect("score").score > 60.0);
    assert_eq!(
        explanation
            .contributions
            .iter()
            .filter(|c| !c.activity_id.is_empty())
            .map(|c| c.activity_id.as_str())
            .min(),
        Some("0"),
        "activities are named by index"
    );
    // Nothing was stored or announced: the first change qualification sees is a real one.
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: vec![activity_event(
                "real",
                "real-lead",
                "demo_request",
                now,
                &[],
            )],
        })
        .await
        .expect("apply");
    receiver.wait_for(|c| c.hand_raise).await;
    let leads: Vec<String> = receiver
        .changes()
        .iter()
        .map(|c| c.header.as_ref().expect("h").lead_id.clone())
        .collect();
    assert_eq!(leads, ["real-lead"]);
    assert_eq!(
        scoring
            .client()
            .get_score(pb::GetScoreRequest {
                lead_id: String::new() + "x"
            })
            .await
            .expect_err("not stored")
            .code(),
        Code::NotFound
    );
    scoring.stop().await;
}

async fn a_new_model_and_rescore_change_existing_scores(db: TestDb) {
    let (scoring, receiver) = start(&db).await;
    let t0 = journey_start(&scoring);
    // A crowd of leads beside lead-r, so the job spans several steps of its transactions
    // (100 leads each) and a partial last one.
    let crowd: Vec<String> = (0..250).map(|i| format!("crowd-{i:03}")).collect();
    let mut events = seed_journey("lead-r", t0);
    for lead_id in &crowd {
        events.extend(seed_journey(lead_id, t0));
    }
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest { events })
        .await
        .expect("apply");
    let before = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "lead-r".into(),
        })
        .await
        .expect("score")
        .into_inner()
        .score
        .expect("s");
    assert_eq!(before.model_version, 0, "the default model");

    let doubled = doubled_engagement();
    let published = scoring
        .client()
        .publish_model(pb::PublishModelRequest {
            request_id: "pub-1".into(),
            model: Some(model_to_pb(&doubled, Utc::now())),
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(published.model.as_ref().expect("model").version, 1);
    let replay = scoring
        .client()
        .publish_model(pb::PublishModelRequest {
            request_id: "pub-1".into(),
            model: Some(model_to_pb(&doubled, Utc::now())),
        })
        .await
        .expect("replay")
        .into_inner();
    assert!(replay.duplicate);
    let listed = scoring
        .client()
        .list_model_versions(pb::ListModelVersionsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!((listed.models.len(), listed.active_version), (1, 1));
    let unchanged = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "lead-r".into(),
        })
        .await
        .expect("score")
        .into_inner()
        .score
        .expect("s");
    assert_eq!(
        unchanged.model_version, 0,
        "publishing alone changes no score"
    );

    let job = start_rescore(&scoring, "job-1").await;
    receiver
        .wait_for(|c| c.reason == ScoreChangeReason::Rescore as i32)
        .await;
    let job = wait_for_job(&scoring, &job.job_id).await;
    assert_eq!(
        (job.total_leads, job.processed_leads, job.changed_leads),
        (251, 251, 251)
    );
    let crowd_scores = scoring
        .client()
        .batch_get_scores(pb::BatchGetScoresRequest {
            lead_ids: crowd.clone(),
        })
        .await
        .expect("crowd scores")
        .into_inner()
        .results;
    assert_eq!(crowd_scores.len(), crowd.len());
    assert!(
        crowd_scores
            .iter()
            .all(|r| r.score.as_ref().is_some_and(|s| s.model_version == 1)),
        "every lead of every step is rescored"
    );
    let after = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "lead-r".into(),
        })
        .await
        .expect("score")
        .into_inner()
        .score
        .expect("s");
    assert_eq!(after.model_version, 1);
    // Doubled points, within the same caps (the e-mail cap of 20 points per 14 days now binds).
    assert!(
        after.engagement_points > before.engagement_points * 1.5,
        "{} vs {}",
        after.engagement_points,
        before.engagement_points
    );
    let explanation = scoring
        .client()
        .explain_score(pb::ExplainScoreRequest {
            lead_id: "lead-r".into(),
        })
        .await
        .expect("explain")
        .into_inner()
        .explanation
        .expect("e");
    assert!(
        explanation
            .contributions
            .iter()
            .all(|c| c.model_version == 1),
        "the ledger says which model scored each line"
    );
    scoring.stop().await;
}

/// A rescore that meets a fact it cannot read (here in its second step of leads, whose facts
/// SQLite reads ahead on another connection) fails its job, saying why, and changes no score.
async fn a_rescore_that_meets_a_corrupt_fact_fails_and_changes_nothing(db: TestDb) {
    use sea_orm::ConnectionTrait;
    let (scoring, _receiver) = start(&db).await;
    let t0 = journey_start(&scoring);
    let crowd: Vec<String> = (0..150).map(|i| format!("crowd-{i:03}")).collect();
    let events = crowd
        .iter()
        .flat_map(|lead_id| seed_journey(lead_id, t0))
        .collect();
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest { events })
        .await
        .expect("apply");
    let scores = |scoring: &Scoring| {
        let mut client = scoring.client();
        let lead_ids = crowd.clone();
        async move {
            client
                .batch_get_scores(pb::BatchGetScoresRequest { lead_ids })
                .await
                .expect("scores")
                .into_inner()
                .results
                .into_iter()
                .map(|result| result.score.map(|score| score.score))
                .collect::<Vec<_>>()
        }
    };
    let before = scores(&scoring).await;
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    conn.execute_unprepared(
        "UPDATE activity_facts SET properties = 'not json' WHERE lead_id = 'crowd-120'",
    )
    .await
    .expect("corrupt the facts of one lead");
    scoring
        .client()
        .publish_model(pb::PublishModelRequest {
            request_id: "pub-1".into(),
            model: Some(model_to_pb(&doubled_engagement(), Utc::now())),
        })
        .await
        .expect("publish");
    let job = start_rescore(&scoring, "job-1").await;
    let job = job_end(&scoring, &job.job_id).await;
    assert_eq!(
        job.state,
        pb::RescoreJobState::Failed as i32,
        "{}",
        job.error_message
    );
    assert!(
        job.error_message.contains("do not parse"),
        "{}",
        job.error_message
    );
    assert_eq!(job.processed_leads, 0, "its one transaction rolled back");
    assert_eq!(scores(&scoring).await, before, "no score changed");
    scoring.stop().await;
}

/// A rescore on an SQLite store whose reads share the writer's one connection (in memory)
/// reads its facts in its own transaction: read ahead on that pool, they would wait for the
/// transaction holding its connection.
#[tokio::test]
async fn a_rescore_on_an_in_memory_store_finishes() {
    use leadflow_scoring::store::{Store, migrations::Migrator};
    let pools = leadflow_runtime::db::open_with_reader::<Migrator>("sqlite::memory:", 1)
        .await
        .expect("open");
    assert!(
        !pools.reads_beside_writer,
        "in memory, reads share the writer"
    );
    let store = Store::new(
        pools.writer.clone(),
        leadflow_runtime::outbox::Wakeup::new(),
    )
    .with_reader(pools.reader, pools.reads_beside_writer);
    let now = Utc::now();
    let events = (0..150)
        .flat_map(|lead| seed_journey(&format!("lead-{lead:03}"), now - Duration::days(14)))
        .collect();
    store.apply_lead_events(events, now).await.expect("apply");
    let (job, _) = store
        .create_job("default", "job-1", now)
        .await
        .expect("a job");
    let job_id = job.job_id.clone();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.run_job(job, Utc::now),
    )
    .await
    .expect("the job finishes in time")
    .expect("the job succeeds");
    let job = store
        .job("default", &job_id)
        .await
        .expect("read the job")
        .expect("the job");
    assert_eq!((job.total_leads, job.processed_leads), (150, 150));
}

/// The default model with every behaviour rule worth twice its points.
fn doubled_engagement() -> leadflow_scoring::domain::Model {
    let mut doubled = default_model();
    for rule in &mut doubled.behavior_rules {
        rule.points *= 2.0;
    }
    doubled.description = "engagement counts double".into();
    doubled
}

/// Starts a rescore job under the active model.
async fn start_rescore(scoring: &Scoring, request_id: &str) -> pb::RescoreJob {
    scoring
        .client()
        .rescore(pb::RescoreRequest {
            request_id: request_id.into(),
        })
        .await
        .expect("rescore")
        .into_inner()
        .job
        .expect("job")
}

/// The job once it has succeeded.
async fn wait_for_job(scoring: &Scoring, job_id: &str) -> pb::RescoreJob {
    let job = job_end(scoring, job_id).await;
    assert_eq!(
        job.state,
        pb::RescoreJobState::Succeeded as i32,
        "{}",
        job.error_message
    );
    job
}

/// The job once it has ended, succeeded or failed.
async fn job_end(scoring: &Scoring, job_id: &str) -> pb::RescoreJob {
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let job = scoring
                .client()
                .get_rescore_job(pb::GetRescoreJobRequest {
                    job_id: job_id.into(),
                })
                .await
                .expect("job")
                .into_inner()
                .job
                .expect("job");
            if job.state == pb::RescoreJobState::Succeeded as i32
                || job.state == pb::RescoreJobState::Failed as i32
            {
                return job;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the job ends in time")
}

async fn a_cold_lead_loses_points_by_the_sweeper(db: TestDb) {
    let (scoring, receiver) = start(&db).await;
    let now = scoring.clock.now();
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: vec![
                profile_event("p", "cold", now, manager_profile()),
                activity_event("o", "cold", "email_open", now, &[("asset_id", "n1")]),
            ],
        })
        .await
        .expect("apply");
    let before = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "cold".into(),
        })
        .await
        .expect("score")
        .into_inner()
        .score
        .expect("s");
    scoring.clock.advance(Duration::days(15));
    let change = receiver
        .wait_for(|c| c.reason == ScoreChangeReason::Inactivity as i32)
        .await;
    let after = change.score.expect("score");
    assert!(
        after.score < before.score - 9.0,
        "no e-mail opened for 14 days costs points: {} -> {}",
        before.score,
        after.score
    );
    let explanation = scoring
        .client()
        .explain_score(pb::ExplainScoreRequest {
            lead_id: "cold".into(),
        })
        .await
        .expect("explain")
        .into_inner()
        .explanation
        .expect("e");
    assert!(
        explanation
            .contributions
            .iter()
            .any(|c| c.kind == pb::ContributionKind::InactivityRule as i32
                && c.rule_id == "no-email-open-14d")
    );

    // Two half-lives later no rule applies, but decay alone moves the score: announced as such.
    scoring.clock.advance(Duration::days(120));
    let decayed = receiver
        .wait_for(|c| c.reason == ScoreChangeReason::Decay as i32)
        .await;
    let decayed_score = decayed.score.expect("score");
    assert!(
        decayed_score.engagement_points.abs() < after.engagement_points.abs(),
        "engagement decays towards zero"
    );
    assert_eq!(
        decayed_score.fit_points, after.fit_points,
        "fit never decays"
    );
    scoring.stop().await;
}

async fn models_internal_explanations_and_decisions(db: TestDb) {
    let (scoring, _receiver) = start(&db).await;
    let mut client = scoring.client();
    let active = client
        .get_model(pb::GetModelRequest { version: 0 })
        .await
        .expect("default")
        .into_inner();
    assert_eq!(
        (active.active_version, active.model.expect("model").version),
        (0, 0)
    );
    for i in 1..=3 {
        let mut model = default_model();
        model.description = format!("version {i}");
        client
            .publish_model(pb::PublishModelRequest {
                request_id: format!("p{i}"),
                model: Some(model_to_pb(&model, Utc::now())),
            })
            .await
            .expect("publish");
    }
    let second = client
        .get_model(pb::GetModelRequest { version: 2 })
        .await
        .expect("version 2")
        .into_inner();
    assert_eq!(
        (
            second.active_version,
            second.model.expect("model").description.as_str()
        ),
        (3, "version 2")
    );
    let page = client
        .list_model_versions(pb::ListModelVersionsRequest {
            page_size: 2,
            page_token: String::new(),
        })
        .await
        .expect("page")
        .into_inner();
    let versions: Vec<i32> = page.models.iter().map(|m| m.version).collect();
    assert_eq!(versions, [3, 2], "newest first");
    let rest = client
        .list_model_versions(pb::ListModelVersionsRequest {
            page_size: 2,
            page_token: page.next_page_token,
        })
        .await
        .expect("page")
        .into_inner();
    assert_eq!(
        rest.models.iter().map(|m| m.version).collect::<Vec<_>>(),
        [1]
    );
    assert!(rest.next_page_token.is_empty());
    let status = client
        .list_model_versions(pb::ListModelVersionsRequest {
            page_size: 500,
            page_token: "x".into(),
        })
        .await
        .expect_err("bad page");
    assert_eq!(fields(&status), ["page_size", "page_token"]);

    let now = scoring.clock.now();
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: vec![activity_event("e", "lead-i", "pricing_view", now, &[])],
        })
        .await
        .expect("apply");
    let internal = scoring
        .internal()
        .explain_lead_score(pb::ExplainLeadScoreRequest {
            tenant_id: harness::TENANT.into(),
            lead_id: "lead-i".into(),
        })
        .await
        .expect("internal explanation")
        .into_inner();
    assert_eq!(internal.explanation.expect("e").contributions.len(), 1);
    let status = scoring
        .internal()
        .explain_lead_score(pb::ExplainLeadScoreRequest {
            tenant_id: String::new(),
            lead_id: "lead-i".into(),
        })
        .await
        .expect_err("no tenant");
    assert_eq!(fields(&status), ["tenant_id"]);

    let decision = leadflow_proto::handoff::events::v1::HandoffDecision {
        header: Some(common::MessageHeader {
            message_id: "d-1".into(),
            tenant_id: harness::TENANT.into(),
            lead_id: "lead-i".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let request = pb::ApplyHandoffDecisionsRequest {
        events: vec![decision],
    };
    let first = scoring
        .internal()
        .apply_handoff_decisions(request.clone())
        .await
        .expect("decision")
        .into_inner();
    let again = scoring
        .internal()
        .apply_handoff_decisions(request)
        .await
        .expect("replay")
        .into_inner();
    assert_eq!((first.applied_count, again.duplicate_count), (1, 1));
    scoring.stop().await;
}

async fn a_merge_counts_every_point_once(db: TestDb) {
    let (scoring, _receiver) = start(&db).await;
    let t0 = journey_start(&scoring);
    let mut events = seed_journey("survivor", t0);
    // The anonymous visitor's history: the pricing visits, recorded under another lead.
    let pricing = events.split_off(5);
    let visitor: Vec<_> = pricing
        .into_iter()
        .map(|mut e| {
            e.header.as_mut().expect("h").lead_id = "visitor".into();
            e
        })
        .collect();
    events.extend(visitor);
    events.push(merge_event(
        "merge",
        "survivor",
        "visitor",
        t0 + Duration::days(14),
        manager_profile(),
    ));
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest { events })
        .await
        .expect("apply");
    let merged = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "survivor".into(),
        })
        .await
        .expect("score")
        .into_inner()
        .score
        .expect("s");

    let whole = seed_journey("whole", t0);
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest { events: whole })
        .await
        .expect("apply");
    let reference = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "whole".into(),
        })
        .await
        .expect("score")
        .into_inner()
        .score
        .expect("s");
    assert!(
        (merged.score - reference.score).abs() < 1e-9,
        "merged {} vs one history {}",
        merged.score,
        reference.score
    );
    let absorbed = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "visitor".into(),
        })
        .await
        .expect("merged id")
        .into_inner();
    assert!(absorbed.merged);
    assert_eq!(absorbed.score.expect("s").lead_id, "survivor");

    // A batch answers each requested id in request order: the absorbed id with its survivor's
    // score, repeats included, unknown ids listed apart.
    let batch = scoring
        .client()
        .batch_get_scores(pb::BatchGetScoresRequest {
            lead_ids: vec![
                "visitor".into(),
                "nobody".into(),
                "survivor".into(),
                "whole".into(),
                "visitor".into(),
            ],
        })
        .await
        .expect("batch")
        .into_inner();
    let answered: Vec<(&str, &str)> = batch
        .results
        .iter()
        .map(|r| {
            let score = r.score.as_ref().expect("score");
            assert!(
                (score.score - merged.score).abs() < 1e-6,
                "{} scores {} like one history ({})",
                r.requested_lead_id,
                score.score,
                merged.score
            );
            (r.requested_lead_id.as_str(), score.lead_id.as_str())
        })
        .collect();
    assert_eq!(
        answered,
        [
            ("visitor", "survivor"),
            ("survivor", "survivor"),
            ("whole", "whole"),
            ("visitor", "survivor"),
        ]
    );
    assert_eq!(batch.not_found_lead_ids, ["nobody"]);
    scoring.stop().await;
}

/// The facts stored before the migration that clusters them by lead (SQLite) are all there
/// after it, still one per activity id, and reads by lead find them.
async fn stored_facts_survive_the_clustering_migration(db: TestDb) {
    use leadflow_scoring::store::migrations::Migrator;
    use sea_orm::{ConnectionTrait, Statement};
    use sea_orm_migration::MigratorTrait;

    let conn = leadflow_runtime::db::connect(&db.url, 2)
        .await
        .expect("connect");
    Migrator::up(&conn, Some(3))
        .await
        .expect("the migrations before it");
    let insert = |activity: &str, lead: &str| {
        format!(
            "INSERT INTO activity_facts \
             (tenant_id, activity_id, lead_id, activity_type, occurred_at_us, properties) \
             VALUES ('t', '{activity}', '{lead}', 'page_view', 1, '{{\"path\":\"/pricing\"}}')"
        )
    };
    for (activity, lead) in [("a1", "lead-1"), ("a2", "lead-2"), ("a3", "lead-1")] {
        conn.execute_unprepared(&insert(activity, lead))
            .await
            .expect("an old fact");
    }
    Migrator::up(&conn, None).await.expect("the rest");
    let backend = conn.get_database_backend();
    let rows = conn
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT activity_id, properties FROM activity_facts \
             WHERE tenant_id = 't' AND lead_id = 'lead-1' ORDER BY activity_id",
        ))
        .await
        .expect("read by lead");
    let read: Vec<(String, String)> = rows
        .iter()
        .map(|row| {
            (
                row.try_get("", "activity_id").expect("id"),
                row.try_get("", "properties").expect("properties"),
            )
        })
        .collect();
    let pricing = r#"{"path":"/pricing"}"#.to_owned();
    assert_eq!(
        read,
        [
            ("a1".to_owned(), pricing.clone()),
            ("a3".to_owned(), pricing)
        ]
    );
    assert!(
        conn.execute_unprepared(&insert("a2", "lead-3"))
            .await
            .is_err(),
        "an activity id is still stored once per tenant"
    );
    if backend == sea_orm::DatabaseBackend::Sqlite {
        let sql = leadflow_test_support::sqlite_schema_sql(&conn, "activity_facts").await;
        assert!(sql.contains("WITHOUT ROWID"), "{sql}");
    }
}

/// A lead state stored as JSON text, as states were before their binary encoding, survives
/// the migration that follows (PostgreSQL's column becomes bytes): it scores as it did, and is
/// stored in the current encoding once its lead changes.
async fn a_json_state_from_before_the_binary_encoding_still_scores(db: TestDb) {
    use leadflow_scoring::domain::{ActivityFact, LeadScore};

    let seen = Utc::now() - Duration::days(20);
    let mut legacy = LeadScore::new(seen);
    legacy.apply_activity(
        &default_model(),
        &ActivityFact {
            id: "old-pricing".into(),
            activity_type: "pricing_view".into(),
            occurred_at: seen,
            properties: std::collections::BTreeMap::new(),
        },
    );
    let json = serde_json::to_string(&legacy).expect("the old form");
    an_old_state_scores_and_is_rewritten(db, json.into(), legacy, seen, Some(5)).await;
}

/// A lead state in the first binary layout (with the profile's attributes, ids as text) scores
/// as it did and is stored in the current layout once its lead changes.
async fn a_state_in_the_first_binary_layout_still_scores(db: TestDb) {
    use leadflow_scoring::store::state;

    let stored = include_bytes!("fixtures/lead_state_v1.bin").to_vec();
    assert_eq!(stored.first(), Some(&1), "the fixture is in version 1");
    let legacy = state::decode(&stored).expect("version 1 decodes");
    let seen = Utc::now() - Duration::days(400);
    an_old_state_scores_and_is_rewritten(db, stored.into(), legacy, seen, None).await;
}

/// The insert of a lead row of tenant `default` in the columns `lead_scores` had before due
/// times, first seen at `seen`, with nothing announced yet.
fn old_lead_row(
    lead_id: &str,
    state: sea_orm::Value,
    merged_into: Option<&str>,
    seen: chrono::DateTime<Utc>,
) -> sea_orm::sea_query::InsertStatement {
    use sea_orm::sea_query::{Alias, Query};
    Query::insert()
        .into_table(Alias::new("lead_scores"))
        .columns([
            "tenant_id",
            "lead_id",
            "state",
            "profile",
            "first_seen",
            "model_version",
            "merged_into",
            "announced_score",
            "announced_grade",
            "updated_at",
        ])
        .values_panic([
            "default".into(),
            lead_id.into(),
            state.into(),
            Vec::<u8>::new().into(),
            seen.into(),
            default_model().version.into(),
            merged_into.map(str::to_owned).into(),
            0.0_f64.into(),
            0_i32.into(),
            seen.into(),
        ])
        .to_owned()
}

/// Stores `stored` as the state of lead "legacy" after the first `migrated_before` migrations
/// (all of them when `None`), migrates the rest, and checks that the lead scores as `legacy`
/// does, that a new activity is applied on top of it, and that its state is then written in
/// the current layout.
async fn an_old_state_scores_and_is_rewritten(
    db: TestDb,
    stored: sea_orm::Value,
    legacy: leadflow_scoring::domain::LeadScore,
    seen: chrono::DateTime<Utc>,
    migrated_before: Option<u32>,
) {
    use leadflow_scoring::store::{migrations::Migrator, state};
    use sea_orm::{ConnectionTrait, Statement};
    use sea_orm_migration::MigratorTrait;

    let conn = leadflow_runtime::db::connect(&db.url, 2)
        .await
        .expect("connect");
    Migrator::up(&conn, migrated_before)
        .await
        .expect("the migrations before it");
    let model = default_model();
    conn.execute(&old_lead_row("legacy", stored, None, seen))
        .await
        .expect("a state in its old form");
    Migrator::up(&conn, None).await.expect("the rest");

    let (scoring, _receiver) = start(&db).await;
    let now = scoring.clock.now();
    let score = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "legacy".into(),
        })
        .await
        .expect("the old state scores")
        .into_inner()
        .score
        .expect("score");
    let expected = legacy.score(&model, now).score;
    assert!(
        (score.score - expected).abs() < 1e-9,
        "{} against {expected}",
        score.score
    );
    assert!(expected > 0.0, "the old state's points count");

    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest {
            events: vec![activity_event("new", "legacy", "pricing_view", now, &[])],
        })
        .await
        .expect("apply");
    let stored = conn
        .query_one_raw(Statement::from_string(
            conn.get_database_backend(),
            "SELECT state FROM lead_scores WHERE lead_id = 'legacy'",
        ))
        .await
        .expect("read")
        .expect("the row");
    let stored: Vec<u8> = stored.try_get("", "state").expect("bytes");
    assert_eq!(
        stored.first(),
        Some(&2),
        "written back in the current layout"
    );
    let rewritten = state::decode(&stored).expect("decodes");
    assert_eq!(
        rewritten.ledger().len(),
        legacy.ledger().len() + 1,
        "{:?} after {:?}",
        rewritten.ledger(),
        legacy.ledger()
    );
    assert_eq!(
        rewritten.ledger()[..legacy.ledger().len()],
        *legacy.ledger(),
        "the old lines are kept as they were"
    );
    let after = scoring
        .client()
        .get_score(pb::GetScoreRequest {
            lead_id: "legacy".into(),
        })
        .await
        .expect("scores")
        .into_inner()
        .score
        .expect("score");
    assert!(after.score > score.score, "the new activity counts too");
    scoring.stop().await;
}

/// `GetScore` calls in flight together share batched queries: each caller still gets its own
/// lead's score (a merged id its survivor's, an unknown id NOT_FOUND), and a lead whose stored
/// state is corrupt fails only its own calls.
async fn concurrent_score_reads_each_get_their_own_answer(db: TestDb) {
    use sea_orm::ConnectionTrait;
    let (scoring, receiver) = start(&db).await;
    let now = scoring.clock.now();
    let mut events = Vec::new();
    for lead in 0..40 {
        for n in 0..=lead % 5 {
            events.push(activity_event(
                &format!("c{lead}-{n}"),
                &format!("crowd-{lead}"),
                "pricing_view",
                now - Duration::hours(n.into()),
                &[],
            ));
        }
    }
    events.push(merge_event(
        "merge",
        "crowd-0",
        "crowd-1",
        now,
        common::Profile::default(),
    ));
    scoring
        .internal()
        .apply_lead_events(pb::ApplyLeadEventsRequest { events })
        .await
        .expect("apply");
    // The state is corrupted while scoring is stopped: an SQLite store belongs to the process
    // serving it, which keeps the scores of the leads it wrote in memory.
    let clock = scoring.clock.clone();
    scoring.stop().await;
    let conn = sea_orm::Database::connect(db.url.as_str())
        .await
        .expect("connect");
    conn.execute_unprepared("UPDATE lead_scores SET state = '{' WHERE lead_id = 'crowd-7'")
        .await
        .expect("corrupt one state");
    let scoring = Scoring::start(&db, receiver.url(), clock).await;
    let known: Vec<String> = (0..40)
        .filter(|lead| *lead != 7)
        .map(|lead| format!("crowd-{lead}"))
        .collect();
    let expected: std::collections::HashMap<String, (String, f64)> = scoring
        .client()
        .batch_get_scores(pb::BatchGetScoresRequest {
            lead_ids: known.clone(),
        })
        .await
        .expect("batch")
        .into_inner()
        .results
        .into_iter()
        .map(|r| {
            let score = r.score.expect("score");
            (r.requested_lead_id, (score.lead_id, score.score))
        })
        .collect();
    assert_eq!(expected.len(), known.len());
    assert_eq!(
        expected["crowd-1"].0, "crowd-0",
        "crowd-1 was merged into crowd-0"
    );

    let mut calls = tokio::task::JoinSet::new();
    for _round in 0..5 {
        for lead in (0..40).chain([99]) {
            let mut client = scoring.client();
            let lead_id = format!("crowd-{lead}");
            calls.spawn(async move {
                let answer = client
                    .get_score(pb::GetScoreRequest {
                        lead_id: lead_id.clone(),
                    })
                    .await
                    .map(|r| r.into_inner());
                (lead_id, answer)
            });
        }
    }
    let mut answered = 0;
    while let Some(call) = calls.join_next().await {
        let (lead_id, answer) = call.expect("call task");
        match lead_id.as_str() {
            "crowd-99" => assert_eq!(answer.expect_err("unknown").code(), Code::NotFound),
            "crowd-7" => assert_eq!(answer.expect_err("corrupt").code(), Code::Internal),
            _ => {
                let answer = answer.expect("score");
                let score = answer.score.expect("score");
                assert_eq!(answer.merged, lead_id == "crowd-1");
                assert_eq!(
                    (score.lead_id, score.score),
                    expected[&lead_id],
                    "{lead_id} gets its own score"
                );
            }
        }
        answered += 1;
    }
    assert_eq!(answered, 5 * 41);
    scoring.stop().await;
}

/// Applied message ids are forgotten once past the inbox's retention, as deliveries arrive, so
/// the inbox does not keep a row per message for good.
async fn the_inbox_forgets_message_ids_past_their_retention(db: TestDb) {
    use leadflow_test_support::inbox_size;

    let (scoring, _receiver) = start(&db).await;
    let apply = |events| async {
        scoring
            .internal()
            .apply_lead_events(pb::ApplyLeadEventsRequest { events })
            .await
            .expect("apply")
            .into_inner()
            .applied_count
    };
    let page_view =
        |message_id| activity_event(message_id, "lead-1", "page_view", scoring.clock.now(), &[]);
    assert_eq!(
        apply(seed_journey("lead-1", journey_start(&scoring))).await,
        7
    );
    assert_eq!(inbox_size(&db.url).await, 7);

    let retention = Duration::hours(harness::INBOX_RETENTION_HOURS as i64);
    scoring.clock.advance(retention - Duration::minutes(1));
    assert_eq!(apply(vec![page_view("m-within")]).await, 1);
    assert_eq!(
        inbox_size(&db.url).await,
        8,
        "nothing is past the retention yet"
    );
    scoring.clock.advance(Duration::hours(1));
    assert_eq!(apply(vec![page_view("m-later")]).await, 1);
    assert_eq!(
        inbox_size(&db.url).await,
        2,
        "the journey's ids are forgotten, the two applied since are not"
    );
    scoring.stop().await;
}

/// Scores read once (and so kept in memory on SQLite) are read again after each kind of write
/// to their leads: an activity, a merge, the inactivity sweeper. Each read must see the write,
/// through `GetScore` and `BatchGetScores` alike.
async fn a_score_read_after_a_write_sees_it(db: TestDb) {
    let (scoring, receiver) = start(&db).await;
    let now = scoring.clock.now();
    let apply = |events| {
        let mut internal = scoring.internal();
        async move {
            internal
                .apply_lead_events(pb::ApplyLeadEventsRequest { events })
                .await
                .expect("apply");
        }
    };
    let read = |lead_id: &str| {
        let mut client = scoring.client();
        let lead_id = lead_id.to_owned();
        async move {
            let single = client
                .get_score(pb::GetScoreRequest {
                    lead_id: lead_id.clone(),
                })
                .await
                .expect("score")
                .into_inner();
            let batch = client
                .batch_get_scores(pb::BatchGetScoresRequest {
                    lead_ids: vec![lead_id],
                })
                .await
                .expect("batch")
                .into_inner()
                .results
                .remove(0)
                .score
                .expect("s");
            let score = single.score.expect("s");
            assert_eq!(score, batch, "both reads agree");
            (score, single.merged)
        }
    };
    apply(vec![
        profile_event("p-a", "a", now, manager_profile()),
        activity_event("o-a", "a", "email_open", now, &[("asset_id", "n1")]),
        activity_event("o-b", "b", "email_open", now, &[("asset_id", "n2")]),
    ])
    .await;
    let (first, _) = read("a").await;
    let (absorbed, merged) = read("b").await;
    assert!(!merged);

    apply(vec![activity_event(
        "d-a",
        "a",
        "content_download",
        now,
        &[("asset_id", "guide")],
    )])
    .await;
    let (downloaded, _) = read("a").await;
    assert!(
        downloaded.score > first.score,
        "the download counts: {} -> {}",
        first.score,
        downloaded.score
    );

    apply(vec![merge_event("m", "a", "b", now, manager_profile())]).await;
    let (survivor, _) = read("a").await;
    assert!(
        survivor.engagement_points > downloaded.engagement_points,
        "b's e-mail open now counts for a: {} -> {}",
        downloaded.engagement_points,
        survivor.engagement_points
    );
    let (of_b, merged) = read("b").await;
    assert!(merged, "b reads as merged");
    assert_eq!((of_b.lead_id.as_str(), of_b.score), ("a", survivor.score));
    assert_ne!(of_b.score, absorbed.score);

    scoring.clock.advance(Duration::days(15));
    let swept = receiver
        .wait_for(|c| {
            c.reason == ScoreChangeReason::Inactivity as i32
                && c.score.as_ref().is_some_and(|s| s.lead_id == "a")
        })
        .await
        .score
        .expect("score");
    let (after_sweep, _) = read("a").await;
    // PostgreSQL keeps times to the microsecond.
    let micros = |s: &pb::Score| s.update_time.map(|t| (t.seconds, t.nanos / 1000));
    assert_eq!(
        (after_sweep.score, micros(&after_sweep)),
        (swept.score, micros(&swept)),
        "the sweeper's inactivity points are read"
    );
    scoring.stop().await;
}

/// On SQLite a lead's score is served from memory once written, unless the cache is turned off
/// (`--score-cache-leads 0`). Seen by corrupting a lead's row behind the running service, which
/// an operator must never do: from memory its score still reads, from the file it fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_score_cache_setting_reaches_the_store() {
    use sea_orm::ConnectionTrait;
    let db = TestDb::sqlite("scoring");
    let receiver = QualificationReceiver::start().await;
    let clock = ManualClock::new(Utc::now());
    let mut answers = Vec::new();
    for (leads, lead_id) in [
        (leadflow_scoring::DEFAULT_SCORE_CACHE_LEADS, "cached"),
        (0, "uncached"),
    ] {
        let scoring = Scoring::start_with_cache(&db, receiver.url(), clock.clone(), leads).await;
        let now = scoring.clock.now();
        scoring
            .internal()
            .apply_lead_events(pb::ApplyLeadEventsRequest {
                events: vec![activity_event(
                    lead_id,
                    lead_id,
                    "email_open",
                    now,
                    &[("asset_id", "n1")],
                )],
            })
            .await
            .expect("apply");
        let conn = sea_orm::Database::connect(db.url.as_str())
            .await
            .expect("connect");
        conn.execute_unprepared(&format!(
            "UPDATE lead_scores SET state = '{{' WHERE lead_id = '{lead_id}'"
        ))
        .await
        .expect("corrupt the state");
        let answer = scoring
            .client()
            .get_score(pb::GetScoreRequest {
                lead_id: lead_id.into(),
            })
            .await
            .map(|r| r.into_inner().score.expect("score").score)
            .map_err(|status| status.code());
        answers.push(answer);
        scoring.stop().await;
    }
    assert!(
        matches!(answers[0], Ok(score) if score > 0.0),
        "{answers:?}"
    );
    assert_eq!(answers[1], Err(Code::Internal), "read from the file");
}

/// A store on `db` with every migration applied, as the service opens it.
async fn open_store(db: &TestDb) -> leadflow_scoring::store::Store {
    use leadflow_scoring::store::{Store, migrations::Migrator};
    let pools = leadflow_runtime::db::open_with_reader::<Migrator>(&db.url, 2)
        .await
        .expect("open");
    Store::new(pools.writer, leadflow_runtime::outbox::Wakeup::new())
        .with_reader(pools.reader, pools.reads_beside_writer)
}

/// The sweeper reads the leads whose next sweep is due, not every lead: none right after their
/// events, the leads a rule has come due for once its time has passed (never a lead merged
/// into another), each once. A newly published model has every live lead of its tenant read
/// once, since it can change when any of them is due.
async fn the_sweeper_reads_only_due_leads(db: TestDb) {
    use leadflow_scoring::store::Swept;
    let store = open_store(&db).await;
    let now = Utc::now();
    let mut events = Vec::new();
    for lead in ["a", "b", "c"] {
        events.push(profile_event(
            &format!("p-{lead}"),
            lead,
            now,
            manager_profile(),
        ));
        events.push(activity_event(
            &format!("o-{lead}"),
            lead,
            "email_open",
            now,
            &[("asset_id", lead)],
        ));
    }
    events.push(merge_event("m", "b", "c", now, manager_profile()));
    store.apply_lead_events(events, now).await.expect("apply");

    let nothing = Swept::default();
    assert_eq!(
        store.sweep(now).await.expect("sweep"),
        nothing,
        "none is due yet"
    );
    let later = now + Duration::days(15);
    assert_eq!(
        store.sweep(later).await.expect("sweep"),
        Swept {
            visited: 2,
            announced: 2
        },
        "no e-mail opened for 14 days: a and b (which c was merged into) lose points"
    );
    assert_eq!(
        store.sweep(later).await.expect("sweep"),
        nothing,
        "a lead swept is not due again at once"
    );

    store
        .publish("default", "doubled", doubled_engagement(), later)
        .await
        .expect("publish");
    assert_eq!(
        store.sweep(later).await.expect("sweep").visited,
        2,
        "a new model has every live lead read once"
    );
    assert_eq!(store.sweep(later).await.expect("sweep"), nothing);
}

/// An applied event writes a lead's stored due time only when it moves it earlier: a later
/// one is left to the sweeper, which visits the lead at the stored time without announcing
/// anything and stores the real one.
async fn an_event_stores_only_an_earlier_due_time(db: TestDb) {
    use chrono::TimeZone;
    use leadflow_scoring::store::Swept;
    use sea_orm::{ActiveModelTrait, ActiveValue::Set, IntoActiveModel};

    let store = open_store(&db).await;
    let model = default_model();
    let stored_and_real = |at: chrono::DateTime<Utc>| {
        let store = &store;
        let model = &model;
        async move {
            let lead = store
                .lead(harness::TENANT, "a")
                .await
                .expect("read")
                .expect("stored");
            let real = lead
                .score
                .next_sweep_due(model, at)
                .map(|due| Ord::max(due.timestamp_micros(), at.timestamp_micros() + 1));
            (lead.row, real)
        }
    };
    let open = |id: &str, at| activity_event(id, "a", "email_open", at, &[("asset_id", id)]);

    let t0 = Utc::now();
    store
        .apply_lead_events(vec![open("o1", t0)], t0)
        .await
        .expect("apply");
    let (row, real) = stored_and_real(t0).await;
    let first = row
        .sweep_due_us
        .expect("decay and inactivity will change the score");
    assert_eq!(Some(first), real, "a new lead stores its due time");

    let t1 = Utc.timestamp_micros(first).single().expect("a time") + Duration::minutes(1);
    store
        .apply_lead_events(vec![open("o2", t1)], t1)
        .await
        .expect("apply");
    let (row, real) = stored_and_real(t1).await;
    assert!(real.expect("due") > first);
    assert_eq!(
        row.sweep_due_us,
        Some(first),
        "a later due time is not written"
    );
    assert_eq!(
        store.sweep(t1).await.expect("sweep"),
        Swept {
            visited: 1,
            announced: 0
        },
        "the early visit changes nothing the lead announces"
    );
    let (row, real) = stored_and_real(t1).await;
    assert_eq!(row.sweep_due_us, real, "the sweeper stores the real time");
    assert_eq!(store.sweep(t1).await.expect("sweep"), Swept::default());

    let mut late = row.into_active_model();
    late.sweep_due_us = Set(Some(i64::MAX));
    late.update(store.db())
        .await
        .expect("a due time later than need be");
    let t2 = t1 + Duration::seconds(1);
    store
        .apply_lead_events(vec![open("o3", t2)], t2)
        .await
        .expect("apply");
    let (row, real) = stored_and_real(t2).await;
    assert_eq!(row.sweep_due_us, real, "an earlier due time is written");
}

/// A lead stored before leads had due times is read by the first sweep, which stores its time.
async fn a_lead_stored_before_due_times_is_swept_once(db: TestDb) {
    use leadflow_scoring::domain::{ActivityFact, LeadScore};
    use leadflow_scoring::store::{Swept, migrations::Migrator, state};
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::MigratorTrait;

    let now = Utc::now();
    let seen = now - Duration::days(20);
    let mut legacy = LeadScore::new(seen);
    legacy.apply_activity(
        &default_model(),
        &ActivityFact {
            id: "old-open".into(),
            activity_type: "email_open".into(),
            occurred_at: seen,
            properties: [("asset_id".to_owned(), "n1".to_owned())].into(),
        },
    );
    let conn = leadflow_runtime::db::connect(&db.url, 2)
        .await
        .expect("connect");
    let before_due_times = u32::try_from(Migrator::migrations().len() - 1).expect("few");
    Migrator::up(&conn, Some(before_due_times))
        .await
        .expect("the migrations before due times");
    let stored = state::encode(&legacy).expect("encodes");
    for (lead, merged_into) in [("legacy", None), ("gone", Some("legacy"))] {
        conn.execute(&old_lead_row(
            lead,
            stored.clone().into(),
            merged_into,
            seen,
        ))
        .await
        .expect("a lead stored before due times");
    }
    Migrator::up(&conn, None).await.expect("due times");

    let store = open_store(&db).await;
    assert_eq!(
        store.sweep(now).await.expect("sweep"),
        Swept {
            visited: 1,
            announced: 1
        },
        "the live lead is read (its 14 days without an e-mail opened cost points), the merged one not"
    );
    assert_eq!(
        store.sweep(now).await.expect("sweep"),
        Swept::default(),
        "its due time is stored"
    );
}

on_both_backends! {
    inbox_retention => the_inbox_forgets_message_ids_past_their_retention;
    facts_migration => stored_facts_survive_the_clustering_migration;
    json_state => a_json_state_from_before_the_binary_encoding_still_scores;
    state_v1 => a_state_in_the_first_binary_layout_still_scores;
    seed_journey_scores => the_seed_journey_scores_an_mql_and_explains_it;
    hand_raise => a_hand_raise_is_announced_as_such;
    batch_get => batch_get_reports_unknown_ids;
    concurrent_reads => concurrent_score_reads_each_get_their_own_answer;
    error_paths => error_paths_name_the_field_or_say_not_found;
    what_if => what_if_scores_without_storing;
    rescore => a_new_model_and_rescore_change_existing_scores;
    rescore_corrupt_fact => a_rescore_that_meets_a_corrupt_fact_fails_and_changes_nothing;
    inactivity_sweeper => a_cold_lead_loses_points_by_the_sweeper;
    merge => a_merge_counts_every_point_once;
    reads_after_writes => a_score_read_after_a_write_sees_it;
    models_and_internal => models_internal_explanations_and_decisions;
    sweeper_reads_due_leads => the_sweeper_reads_only_due_leads;
    due_time_writes => an_event_stores_only_an_earlier_due_time;
    sweeper_migration => a_lead_stored_before_due_times_is_swept_once;
}
