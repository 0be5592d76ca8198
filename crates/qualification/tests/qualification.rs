//! Qualification over real gRPC clients on SQLite and PostgreSQL: score changes in (each message
//! once), SDR decisions and sales outcomes, versioned definitions recorded on every transition,
//! hand-off requests out through the outbox, the recycle ticker on a manual clock, merges, the
//! funnel, and every RPC's error paths.

mod harness;

use chrono::{Duration, SubsecRound, Utc};
use harness::{
    HandoffReceiver, Qualification, decision, manager_profile, merged, outcome, score_changed,
};
use leadflow_proto::common::v1::{self as common, FitGrade, LeadStage, sales_outcome::Outcome};
use leadflow_proto::handoff::events::v1::{HandoffAccepted, handoff_decision::Decision};
use leadflow_proto::qualification::v1::{
    self as pb, QualificationEvent, TransitionReason, qualification_event::Event,
};
use leadflow_qualification::convert::definition_to_pb;
use leadflow_qualification::domain::Definition;
use leadflow_runtime::clock::{Clock, ManualClock};
use leadflow_runtime::error::field_violations;
use leadflow_runtime::pbtime::to_timestamp;
use leadflow_test_support::{TestDb, beside_a_held_writer, on_both_backends};
use tonic::Code;

fn fields(status: &tonic::Status) -> Vec<String> {
    field_violations(status)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

async fn start(db: &TestDb) -> (Qualification, HandoffReceiver) {
    let receiver = HandoffReceiver::start().await;
    let qualification = Qualification::start(
        db,
        receiver.url(),
        // Whole seconds: PostgreSQL keeps microseconds, and funnel periods start at "now".
        ManualClock::new((Utc::now() - Duration::days(60)).trunc_subsecs(0)),
    )
    .await;
    (qualification, receiver)
}

async fn stage(q: &Qualification, lead_id: &str) -> pb::GetLeadStageResponse {
    q.client()
        .get_lead_stage(pb::GetLeadStageRequest {
            lead_id: lead_id.into(),
        })
        .await
        .expect("get lead stage")
        .into_inner()
}

async fn history(q: &Qualification, lead_id: &str) -> Vec<pb::StageTransition> {
    q.client()
        .get_history(pb::GetHistoryRequest {
            lead_id: lead_id.into(),
            ..Default::default()
        })
        .await
        .expect("history")
        .into_inner()
        .transitions
}

async fn apply(
    q: &Qualification,
    events: Vec<leadflow_proto::scoring::v1::ScoreChanged>,
) -> (i32, i32) {
    let response = q
        .internal()
        .apply_score_changes(pb::ApplyScoreChangesRequest { events })
        .await
        .expect("apply score changes")
        .into_inner();
    (response.applied_count, response.duplicate_count)
}

fn accept(request_id: &str, lead_id: &str) -> pb::AcceptLeadRequest {
    pb::AcceptLeadRequest {
        request_id: request_id.into(),
        lead_id: lead_id.into(),
        actor_id: "sdr-sam".into(),
        note: "called, interested".into(),
    }
}

/// The BANT of the seeds' SQL: a need, a decision within three months, budget expected.
fn seed_bant(now: chrono::DateTime<Utc>) -> common::Bant {
    common::Bant {
        budget: common::BudgetStatus::Expected as i32,
        authority: common::AuthorityLevel::None as i32,
        need: "replace spreadsheets with a real pipeline".into(),
        expected_decision_time: Some(to_timestamp(now + Duration::days(80))),
        notes: "comparing quotes from three vendors".into(),
    }
}

fn stage_of(event: &QualificationEvent) -> Option<(i32, Option<i32>)> {
    match &event.event {
        Some(Event::StageChanged(changed)) => {
            changed.transition.as_ref().map(|t| (t.to_stage, None))
        }
        Some(Event::HandoffRequested(request)) => Some((request.stage, Some(request.kind))),
        _ => None,
    }
}

fn lead_of(event: &QualificationEvent) -> &str {
    event.header.as_ref().map_or("", |h| h.lead_id.as_str())
}

async fn a_score_over_the_threshold_makes_an_mql_once_and_asks_for_sdr_review(db: TestDb) {
    let (q, receiver) = start(&db).await;
    let now = q.clock.now();
    let events = vec![
        score_changed("m1", "lead-1", 30.0, FitGrade::A, None, now),
        score_changed("m2", "lead-1", 64.0, FitGrade::A, Some("page_view"), now),
    ];
    assert_eq!(apply(&q, events.clone()).await, (2, 0));
    assert_eq!(
        apply(&q, events).await,
        (0, 2),
        "redelivery is deduplicated"
    );

    let lead = stage(&q, "lead-1").await.lead.expect("lead");
    assert_eq!(lead.stage, LeadStage::Mql as i32);
    assert_eq!(lead.score.as_ref().map(|s| s.score), Some(64.0));
    assert_eq!(
        lead.profile
            .as_ref()
            .and_then(|p| p.company.clone())
            .as_deref(),
        Some("Acme Tech")
    );
    let transitions = history(&q, "lead-1").await;
    assert_eq!(transitions.len(), 1, "one MQL transition, not two");
    let mql = &transitions[0];
    assert_eq!(
        (mql.from_stage, mql.to_stage, mql.reason, mql.actor_type),
        (
            LeadStage::Lead as i32,
            LeadStage::Mql as i32,
            TransitionReason::ScoreThreshold as i32,
            pb::ActorType::Rule as i32
        )
    );
    assert_eq!((mql.score, mql.fit_grade), (64.0, FitGrade::A as i32));
    assert_eq!(mql.definition_version, 0, "the default definition");
    assert_eq!(mql.trace_id.len(), 32, "the transition names its trace");

    let request = receiver
        .wait_for("the sdr review request", |e| {
            matches!(&e.event, Some(Event::HandoffRequested(_)))
        })
        .await;
    let Some(Event::HandoffRequested(request)) = request.event else {
        unreachable!("matched above")
    };
    assert_eq!(request.kind, common::HandoffKind::SdrReview as i32);
    assert_eq!(request.reason, TransitionReason::ScoreThreshold as i32);
    assert_eq!(request.transition_id, mql.transition_id);
    assert_eq!(
        request.profile.and_then(|p| p.country).as_deref(),
        Some("DE"),
        "what handoff routes on"
    );
    assert_eq!(request.score.map(|s| s.score), Some(64.0));
    let stage_changes = receiver
        .events()
        .iter()
        .filter(|e| matches!(e.event, Some(Event::StageChanged(_))))
        .count();
    assert_eq!(stage_changes, 1, "announced before the request, once");
    q.stop().await;
}

async fn a_fitting_hand_raise_reaches_sql_only_through_sdr_review(db: TestDb) {
    let (q, receiver) = start(&db).await;
    let now = q.clock.now();
    apply(
        &q,
        vec![score_changed(
            "m1",
            "hot",
            22.0,
            FitGrade::B,
            Some("demo_request"),
            now,
        )],
    )
    .await;
    let lead = stage(&q, "hot").await.lead.expect("lead");
    assert_eq!(lead.stage, LeadStage::Mql as i32);
    assert!(lead.hand_raise);
    assert_eq!(
        history(&q, "hot").await[0].reason,
        TransitionReason::HandRaise as i32
    );

    let early = q
        .client()
        .record_bant(pb::RecordBantRequest {
            request_id: "b0".into(),
            lead_id: "hot".into(),
            bant: Some(seed_bant(now)),
            actor_id: "sdr-sam".into(),
        })
        .await
        .expect_err("no SQL before an SDR accepts");
    assert_eq!(early.code(), Code::FailedPrecondition);
    assert_eq!(
        early.message(),
        "cannot record bant for a lead in stage mql"
    );

    let accepted = q
        .client()
        .accept_lead(accept("a1", "hot"))
        .await
        .expect("accept")
        .into_inner();
    let transition = accepted.transition.expect("transition");
    assert_eq!(
        (
            transition.to_stage,
            transition.actor_type,
            transition.actor_id.as_str()
        ),
        (LeadStage::Sal as i32, pb::ActorType::Sdr as i32, "sdr-sam")
    );
    assert_eq!(transition.note, "called, interested");
    assert!(!accepted.duplicate);
    let again = q
        .client()
        .accept_lead(accept("a1", "hot"))
        .await
        .expect("a repeated request is answered, not refused")
        .into_inner();
    assert!(again.duplicate);
    assert_eq!(
        again.transition.map(|t| t.transition_id),
        Some(transition.transition_id)
    );
    let refused = q
        .client()
        .accept_lead(accept("a2", "hot"))
        .await
        .expect_err("a SAL cannot be accepted again");
    assert_eq!(refused.code(), Code::FailedPrecondition);

    let sql = q
        .client()
        .record_bant(pb::RecordBantRequest {
            request_id: "b1".into(),
            lead_id: "hot".into(),
            bant: Some(seed_bant(now)),
            actor_id: "sdr-sam".into(),
        })
        .await
        .expect("bant")
        .into_inner();
    assert_eq!(
        sql.transition.map(|t| (t.from_stage, t.to_stage, t.reason)),
        Some((
            LeadStage::Sal as i32,
            LeadStage::Sql as i32,
            TransitionReason::BantQualified as i32
        ))
    );
    assert_eq!(
        sql.lead.and_then(|l| l.bant).map(|b| b.need),
        Some("replace spreadsheets with a real pipeline".to_owned())
    );
    let sales = receiver
        .wait_for("the sales hand-off", |e| {
            stage_of(e)
                == Some((
                    LeadStage::Sql as i32,
                    Some(common::HandoffKind::Sales as i32),
                ))
        })
        .await;
    let Some(Event::HandoffRequested(sales)) = sales.event else {
        unreachable!("matched above")
    };
    assert!(sales.hand_raise);
    assert_eq!(
        sales.bant.map(|b| b.budget),
        Some(common::BudgetStatus::Expected as i32)
    );
    let stages: Vec<i32> = history(&q, "hot")
        .await
        .iter()
        .map(|t| t.to_stage)
        .collect();
    assert_eq!(
        stages,
        [
            LeadStage::Mql as i32,
            LeadStage::Sal as i32,
            LeadStage::Sql as i32
        ]
    );
    q.stop().await;
}

async fn rejections_and_sales_outcomes_land_where_the_definition_says(db: TestDb) {
    let (q, _receiver) = start(&db).await;
    let now = q.clock.now();
    for (lead, reason, expected) in [
        (
            "fake",
            common::RejectionReason::InaccurateData,
            LeadStage::Disqualified,
        ),
        (
            "off-profile",
            common::RejectionReason::NotIdealCustomerProfile,
            LeadStage::Disqualified,
        ),
        (
            "early",
            common::RejectionReason::Premature,
            LeadStage::Nurture,
        ),
    ] {
        apply(
            &q,
            vec![score_changed(
                &format!("{lead}-1"),
                lead,
                70.0,
                FitGrade::A,
                None,
                now,
            )],
        )
        .await;
        let rejected = q
            .client()
            .reject_lead(pb::RejectLeadRequest {
                request_id: format!("r-{lead}"),
                lead_id: lead.into(),
                reason: reason as i32,
                actor_id: "sdr-sam".into(),
                note: String::new(),
            })
            .await
            .expect("reject")
            .into_inner();
        let transition = rejected.transition.expect("transition");
        assert_eq!(
            (transition.to_stage, transition.rejection_reason),
            (expected as i32, reason as i32),
            "{lead}"
        );
    }

    // A lead accepted and qualified through handoff's decisions, then won.
    apply(
        &q,
        vec![score_changed("w-1", "winner", 70.0, FitGrade::A, None, now)],
    )
    .await;
    let decisions = vec![
        decision("d1", "winner", Decision::Accepted(HandoffAccepted {}), now),
        decision(
            "d2",
            "winner",
            outcome(Outcome::Won(common::WonOutcome::default())),
            now,
        ),
        decision("d3", "early", Decision::Accepted(HandoffAccepted {}), now),
        decision("d4", "nobody", Decision::Accepted(HandoffAccepted {}), now),
    ];
    let applied = q
        .internal()
        .apply_handoff_decisions(pb::ApplyHandoffDecisionsRequest {
            events: decisions.clone(),
        })
        .await
        .expect("decisions")
        .into_inner();
    assert_eq!(
        (
            applied.applied_count,
            applied.duplicate_count,
            applied.ignored_count
        ),
        (4, 0, 3),
        "winning needs SQL, a nurtured and an unknown lead cannot be accepted: recorded, ignored"
    );
    let again = q
        .internal()
        .apply_handoff_decisions(pb::ApplyHandoffDecisionsRequest { events: decisions })
        .await
        .expect("redelivery")
        .into_inner();
    assert_eq!((again.applied_count, again.duplicate_count), (0, 4));
    assert_eq!(
        stage(&q, "winner").await.lead.map(|l| l.stage),
        Some(LeadStage::Sal as i32)
    );
    q.client()
        .record_bant(pb::RecordBantRequest {
            request_id: "wb".into(),
            lead_id: "winner".into(),
            bant: Some(seed_bant(now)),
            actor_id: "sdr-sam".into(),
        })
        .await
        .expect("bant");
    let lost = q
        .internal()
        .apply_handoff_decisions(pb::ApplyHandoffDecisionsRequest {
            events: vec![
                decision(
                    "d5",
                    "winner",
                    outcome(Outcome::Opportunity(common::OpportunityOutcome::default())),
                    now,
                ),
                decision(
                    "d6",
                    "winner",
                    outcome(Outcome::Lost(common::LostOutcome {
                        reason: common::LostReason::NotAFit as i32,
                        note: "wrong segment".into(),
                    })),
                    now,
                ),
            ],
        })
        .await
        .expect("outcomes")
        .into_inner();
    assert_eq!(lost.ignored_count, 0);
    let last = history(&q, "winner").await.pop().expect("transitions");
    assert_eq!(
        (
            last.to_stage,
            last.reason,
            last.lost_reason,
            last.actor_type
        ),
        (
            LeadStage::Disqualified as i32,
            TransitionReason::Lost as i32,
            common::LostReason::NotAFit as i32,
            pb::ActorType::Sales as i32
        ),
        "a deal lost for not being a fit disqualifies"
    );
    assert_eq!(
        last.actor_id, "owner-1",
        "the owner decided when no actor is named"
    );
    q.stop().await;
}

async fn a_definition_change_applies_to_later_evaluations_and_is_recorded(db: TestDb) {
    let (q, _receiver) = start(&db).await;
    let now = q.clock.now();
    apply(
        &q,
        vec![score_changed("e1", "early", 64.0, FitGrade::A, None, now)],
    )
    .await;

    let strict = Definition {
        mql_threshold: 80.0,
        description: "marketing and sales agreed on 80".into(),
        ..Definition::default()
    };
    let published = q
        .client()
        .publish_definition(pb::PublishDefinitionRequest {
            request_id: "p1".into(),
            definition: Some(definition_to_pb(&strict, None)),
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(
        published
            .definition
            .as_ref()
            .map(|d| (d.version, d.mql_threshold)),
        Some((1, 80.0))
    );
    let repeated = q
        .client()
        .publish_definition(pb::PublishDefinitionRequest {
            request_id: "p1".into(),
            definition: Some(definition_to_pb(&strict, None)),
        })
        .await
        .expect("repeat")
        .into_inner();
    assert!(repeated.duplicate);
    assert_eq!(repeated.definition.map(|d| d.version), Some(1));

    apply(
        &q,
        vec![score_changed("l1", "later", 64.0, FitGrade::A, None, now)],
    )
    .await;
    assert_eq!(
        stage(&q, "later").await.lead.map(|l| l.stage),
        Some(LeadStage::Lead as i32),
        "64 no longer qualifies"
    );
    apply(
        &q,
        vec![score_changed("l2", "later", 85.0, FitGrade::A, None, now)],
    )
    .await;
    assert_eq!(history(&q, "later").await[0].definition_version, 1);
    assert_eq!(
        history(&q, "early").await[0].definition_version,
        0,
        "earlier transitions keep the version they were decided under"
    );

    let got = q
        .client()
        .get_definition(pb::GetDefinitionRequest { version: 0 })
        .await
        .expect("active")
        .into_inner();
    assert_eq!(
        (got.active_version, got.definition.map(|d| d.description)),
        (1, Some("marketing and sales agreed on 80".to_owned()))
    );
    let listed = q
        .client()
        .list_definition_versions(pb::ListDefinitionVersionsRequest::default())
        .await
        .expect("list")
        .into_inner();
    assert_eq!(
        listed
            .definitions
            .iter()
            .map(|d| d.version)
            .collect::<Vec<_>>(),
        [1]
    );
    let missing = q
        .client()
        .get_definition(pb::GetDefinitionRequest { version: 7 })
        .await
        .expect_err("no such version");
    assert_eq!(missing.code(), Code::NotFound);

    let mut bad = definition_to_pb(&strict, None);
    bad.mql_threshold = -5.0;
    bad.min_fit_grade = 0;
    let invalid = q
        .client()
        .publish_definition(pb::PublishDefinitionRequest {
            request_id: "p2".into(),
            definition: Some(bad),
        })
        .await
        .expect_err("invalid");
    assert_eq!(invalid.code(), Code::InvalidArgument);
    let mut named = fields(&invalid);
    named.sort();
    assert_eq!(
        named,
        [
            "definition.min_fit_grade",
            "definition.mql_threshold",
            "definition.recycle_rules.mql_score_floor"
        ],
        "a negative threshold also puts the recycle floor above it"
    );
    q.stop().await;
}

async fn unaccepted_mqls_are_recycled_on_the_clock(db: TestDb) {
    let (q, receiver) = start(&db).await;
    let now = q.clock.now();
    apply(
        &q,
        vec![score_changed("m1", "idle", 70.0, FitGrade::A, None, now)],
    )
    .await;
    q.clock.advance(Duration::days(31));
    receiver
        .wait_for("the recycle", |e| {
            lead_of(e) == "idle" && stage_of(e) == Some((LeadStage::Nurture as i32, None))
        })
        .await;
    let last = history(&q, "idle").await.pop().expect("transitions");
    assert_eq!(
        (last.reason, last.actor_type),
        (
            TransitionReason::RecycleNotAccepted as i32,
            pb::ActorType::System as i32
        )
    );
    q.stop().await;
}

async fn a_merge_keeps_the_more_advanced_stage(db: TestDb) {
    let (q, receiver) = start(&db).await;
    let now = q.clock.now();
    apply(
        &q,
        vec![
            score_changed("a1", "dup", 70.0, FitGrade::A, None, now),
            score_changed("b1", "survivor", 20.0, FitGrade::A, None, now),
        ],
    )
    .await;
    q.client()
        .accept_lead(accept("acc", "dup"))
        .await
        .expect("accept");
    apply(&q, vec![merged("mg", "survivor", "dup", 50.0, now)]).await;

    let survivor = stage(&q, "survivor").await.lead.expect("lead");
    assert_eq!(survivor.stage, LeadStage::Sal as i32);
    assert_eq!(survivor.merged_lead_ids, ["dup"]);
    let via_dup = stage(&q, "dup").await;
    assert!(via_dup.merged);
    assert_eq!(via_dup.lead.map(|l| l.lead_id), Some("survivor".to_owned()));
    let merge = history(&q, "survivor").await.pop().expect("transitions");
    assert_eq!(
        (merge.reason, merge.merged_lead_id.as_str()),
        (TransitionReason::Merge as i32, "dup")
    );
    receiver
        .wait_for(
            "the merge notice",
            |e| matches!(&e.event, Some(Event::LeadsMerged(m)) if m.source_lead_id == "dup"),
        )
        .await;
    q.stop().await;
}

async fn the_funnel_reports_entries_conversions_and_times_by_channel(db: TestDb) {
    let (q, _receiver) = start(&db).await;
    let start_time = q.clock.now();
    let mut paid = score_changed("p1", "paid", 70.0, FitGrade::A, None, start_time);
    paid.profile = Some(manager_profile(common::SourceChannel::PaidSearch));
    apply(
        &q,
        vec![
            score_changed("o1", "organic-1", 70.0, FitGrade::A, None, start_time),
            score_changed("o2", "organic-2", 70.0, FitGrade::A, None, start_time),
            paid,
        ],
    )
    .await;
    q.clock.advance(Duration::days(2));
    q.client()
        .accept_lead(accept("x1", "organic-1"))
        .await
        .expect("accept");
    q.clock.advance(Duration::days(2));
    q.client()
        .accept_lead(accept("x2", "paid"))
        .await
        .expect("accept");
    let funnel = q
        .client()
        .get_funnel(pb::GetFunnelRequest {
            start_time: Some(to_timestamp(start_time)),
            end_time: Some(to_timestamp(start_time + Duration::days(10))),
            group_by: vec![pb::FunnelDimension::SourceChannel as i32],
            source_channels: Vec::new(),
        })
        .await
        .expect("funnel")
        .into_inner();
    let total = funnel.total.expect("total");
    let entered = |group: &pb::FunnelGroup, stage: LeadStage| {
        group
            .stage_entries
            .iter()
            .find(|e| e.stage == stage as i32)
            .map_or(0, |e| e.entered_count)
    };
    assert_eq!(entered(&total, LeadStage::Lead), 3);
    assert_eq!(entered(&total, LeadStage::Mql), 3);
    assert_eq!(entered(&total, LeadStage::Sal), 2);
    let mql_to_sal = &total.conversions[0];
    assert_eq!(
        (mql_to_sal.cohort_count, mql_to_sal.converted_count),
        (3, 2)
    );
    assert!((mql_to_sal.rate - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(
        mql_to_sal.median_time.map(|d| d.seconds),
        Some(2 * 86_400),
        "nearest rank of (2 days, 4 days)"
    );
    assert_eq!(mql_to_sal.p90_time.map(|d| d.seconds), Some(4 * 86_400));
    assert_eq!(funnel.groups.len(), 2);
    let organic = funnel
        .groups
        .iter()
        .find(|g| g.source_channel == common::SourceChannel::OrganicSearch as i32)
        .expect("organic group");
    assert_eq!(
        (
            organic.conversions[0].cohort_count,
            organic.conversions[0].converted_count
        ),
        (2, 1)
    );

    let bad = q
        .client()
        .get_funnel(pb::GetFunnelRequest {
            start_time: Some(to_timestamp(start_time)),
            end_time: Some(to_timestamp(start_time - Duration::days(1))),
            group_by: vec![0],
            source_channels: Vec::new(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(fields(&bad), ["end_time", "group_by[0]"]);
    q.stop().await;
}

async fn bad_requests_get_field_violations_and_lists_page(db: TestDb) {
    let (q, _receiver) = start(&db).await;
    let now = q.clock.now();
    let events = (0..5)
        .map(|i| {
            score_changed(
                &format!("m{i}"),
                &format!("lead-{i}"),
                70.0,
                FitGrade::A,
                None,
                now,
            )
        })
        .collect();
    apply(&q, events).await;

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = q
            .client()
            .list_leads(pb::ListLeadsRequest {
                stage: LeadStage::Mql as i32,
                page_size: 2,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        seen.extend(page.leads.into_iter().map(|l| l.lead_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    seen.sort();
    assert_eq!(seen, ["lead-0", "lead-1", "lead-2", "lead-3", "lead-4"]);
    let none = q
        .client()
        .list_leads(pb::ListLeadsRequest {
            stage: LeadStage::Customer as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(none.leads.is_empty());

    let unknown = q
        .client()
        .get_lead_stage(pb::GetLeadStageRequest {
            lead_id: "ghost".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    let invalid = q
        .client()
        .reject_lead(pb::RejectLeadRequest {
            lead_id: " ".into(),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(fields(&invalid), ["lead_id", "actor_id", "reason"]);
    let bant = q
        .client()
        .record_bant(pb::RecordBantRequest {
            lead_id: "lead-0".into(),
            actor_id: "sdr".into(),
            bant: Some(common::Bant {
                budget: 42,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(fields(&bant), ["bant.budget"]);
    let reused = q
        .client()
        .reject_lead(pb::RejectLeadRequest {
            request_id: "same".into(),
            lead_id: "lead-1".into(),
            reason: common::RejectionReason::Premature as i32,
            actor_id: "sdr".into(),
            note: String::new(),
        })
        .await;
    assert!(reused.is_ok());
    let reused = q
        .client()
        .accept_lead(accept("same", "lead-2"))
        .await
        .expect_err("a request id names one call");
    assert_eq!(fields(&reused), ["request_id"]);
    let page = q
        .client()
        .get_history(pb::GetHistoryRequest {
            lead_id: "lead-0".into(),
            page_size: 5000,
            page_token: "x".into(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(fields(&page), ["page_size", "page_token"]);
    let headerless = q
        .internal()
        .apply_score_changes(pb::ApplyScoreChangesRequest {
            events: vec![leadflow_proto::scoring::v1::ScoreChanged::default()],
        })
        .await
        .expect_err("no header");
    assert_eq!(fields(&headerless), ["events[0].header"]);
    q.stop().await;
}

/// Applied message ids are forgotten once past the inbox's retention, as deliveries arrive.
async fn the_inbox_forgets_message_ids_past_their_retention(db: TestDb) {
    let (q, _receiver) = start(&db).await;
    let now = q.clock.now();
    let first = score_changed("s-1", "lead-1", 20.0, common::FitGrade::B, None, now);
    assert_eq!(apply(&q, vec![first.clone()]).await, (1, 0));
    assert_eq!(apply(&q, vec![first]).await, (0, 1), "remembered");
    assert_eq!(leadflow_test_support::inbox_size(&db.url).await, 1);

    q.clock
        .advance(leadflow_runtime::outbox::inbox::DEFAULT_RETENTION + Duration::hours(1));
    let later = score_changed(
        "s-2",
        "lead-1",
        21.0,
        common::FitGrade::B,
        None,
        q.clock.now(),
    );
    assert_eq!(apply(&q, vec![later]).await, (1, 0));
    assert_eq!(
        leadflow_test_support::inbox_size(&db.url).await,
        1,
        "only the new message's id is left"
    );
    q.stop().await;
}

/// The leads of a stage are listed by when they entered it, newest first: a score change that
/// keeps a lead in its stage does not move it ahead, and paging follows the same order.
async fn a_stage_lists_its_leads_newest_entry_first(db: TestDb) {
    let (q, _receiver) = start(&db).await;
    let scored = |id: &str, lead: &str, score: f64| {
        score_changed(id, lead, score, FitGrade::A, None, q.clock.now())
    };
    apply(&q, vec![scored("m1", "lead-a", 70.0)]).await;
    q.clock.advance(Duration::hours(1));
    apply(&q, vec![scored("m2", "lead-b", 75.0)]).await;
    q.clock.advance(Duration::hours(1));
    apply(
        &q,
        vec![scored("m3", "lead-a", 90.0), scored("m4", "lead-c", 20.0)],
    )
    .await;
    let list = |stage: LeadStage, page_size: i32, page_token: String| {
        let mut client = q.client();
        async move {
            client
                .list_leads(pb::ListLeadsRequest {
                    stage: stage as i32,
                    page_size,
                    page_token,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
        }
    };
    let ids = |page: &pb::ListLeadsResponse| {
        page.leads
            .iter()
            .map(|l| l.lead_id.clone())
            .collect::<Vec<_>>()
    };

    let mqls = list(LeadStage::Mql, 10, String::new()).await;
    assert_eq!(ids(&mqls), ["lead-b", "lead-a"]);
    assert_eq!(
        mqls.leads[0].score.as_ref().map(|s| s.score),
        Some(75.0),
        "listed leads carry their latest score"
    );
    assert_eq!(mqls.leads[1].score.as_ref().map(|s| s.score), Some(90.0));
    let first = list(LeadStage::Mql, 1, String::new()).await;
    assert_eq!(ids(&first), ["lead-b"]);
    let second = list(LeadStage::Mql, 1, first.next_page_token).await;
    assert_eq!(ids(&second), ["lead-a"]);
    let everyone = list(LeadStage::Unspecified, 10, String::new()).await;
    assert_eq!(ids(&everyone), ["lead-c", "lead-b", "lead-a"]);

    // Entering another stage moves a lead to the head of that stage's list.
    q.client()
        .accept_lead(accept("r1", "lead-a"))
        .await
        .expect("accept");
    assert_eq!(
        ids(&list(LeadStage::Mql, 10, String::new()).await),
        ["lead-b"]
    );
    assert_eq!(
        ids(&list(LeadStage::Sal, 10, String::new()).await),
        ["lead-a"]
    );
    let everyone = list(LeadStage::Unspecified, 10, String::new()).await;
    assert_eq!(ids(&everyone), ["lead-a", "lead-c", "lead-b"]);

    // A token of the update-time order of before is refused, not read in this order.
    let stale = q
        .client()
        .list_leads(pb::ListLeadsRequest {
            page_token: format!("{}.0.lead-b", q.clock.now().timestamp()),
            ..Default::default()
        })
        .await
        .expect_err("a token of another order");
    assert_eq!(fields(&stale), ["page_token"]);
    q.stop().await;
}

/// Leads stored before `stage_entered_at` was a column get it from their state: the listing
/// follows when they entered their stage, not when they last changed.
async fn stored_leads_list_by_their_stage_entry_after_the_migration(db: TestDb) {
    use leadflow_qualification::domain::{LeadQualification, Stage};
    use leadflow_qualification::store::migrations::Migrator;
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::MigratorTrait;

    let conn = leadflow_runtime::db::connect(&db.url, 2)
        .await
        .expect("connect");
    Migrator::up(&conn, Some(7))
        .await
        .expect("the migrations before it");
    // More leads than one page of the backfill; each entered MQL a minute after the one
    // before it, and changed last in the opposite order.
    const LEADS: i64 = 520;
    let first = Utc::now().trunc_subsecs(0) - Duration::days(30);
    let rows: Vec<String> = (0..LEADS)
        .map(|n| {
            let mut state = LeadQualification::new(first + Duration::minutes(n));
            state.stage = Stage::Mql;
            let state = serde_json::to_string(&state).expect("state");
            let updated = (first + Duration::minutes(2 * LEADS - n)).to_rfc3339();
            format!(
                "('default', 'lead-{n:04}', 'mql', '{state}', '', '', 0, 0, NULL, '{updated}', '{updated}')"
            )
        })
        .collect();
    conn.execute_unprepared(&format!(
        "INSERT INTO qualification_leads (tenant_id, lead_id, stage, state, profile, score, \
         source_channel, definition_version, merged_into, created_at, updated_at) VALUES {}",
        rows.join(", ")
    ))
    .await
    .expect("old leads");
    let (q, _receiver) = start(&db).await;
    let listed = q
        .client()
        .list_leads(pb::ListLeadsRequest {
            stage: LeadStage::Mql as i32,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    let ids: Vec<&str> = listed.leads.iter().map(|l| l.lead_id.as_str()).collect();
    let newest_entry_first: Vec<String> =
        (0..LEADS).rev().map(|n| format!("lead-{n:04}")).collect();
    assert_eq!(ids, newest_entry_first);
    assert_eq!(
        listed.leads[0].stage_enter_time.map(|t| t.seconds),
        Some((first + Duration::minutes(LEADS - 1)).timestamp())
    );
    q.stop().await;
}

/// The read RPCs' reads go through the read-only connections, so they answer while the one
/// writer connection is held (on SQLite each delivery applied holds it; here a transaction the
/// test keeps open).
async fn reads_answer_while_the_writer_is_held(db: TestDb) {
    use leadflow_qualification::store::{Store, migrations::Migrator};
    use leadflow_runtime::outbox::Wakeup;

    let leadflow_runtime::db::Pools { writer, reader, .. } =
        leadflow_runtime::db::open_with_reader::<Migrator>(&db.url, 5)
            .await
            .expect("open");
    let store = Store::new(writer.clone(), Wakeup::new()).with_reader(reader);
    let now = Utc::now();
    let event = score_changed(
        "m-1",
        "lead-1",
        80.0,
        FitGrade::A,
        Some("demo_request"),
        now,
    );
    let tenant = event.header.clone().expect("header").tenant_id;
    store
        .apply_score_changes(vec![event], now)
        .await
        .expect("apply");

    let reads = async {
        let lead = store.lead(&tenant, "lead-1").await.expect("lead");
        let listed = store
            .list_leads(&tenant, None, None, None, 10)
            .await
            .expect("list");
        let history = store
            .history(&tenant, "lead-1", 0, 10)
            .await
            .expect("history");
        let (definition, _) = store.active_definition(&tenant).await.expect("definition");
        (lead, listed, history, definition)
    };
    let (lead, listed, history, definition) = beside_a_held_writer(&writer, reads).await;
    assert!(lead.is_some(), "the lead is read back");
    assert_eq!(listed.len(), 1);
    assert!(!history.is_empty(), "the lead moved at least once");
    assert_eq!(definition.version, 0, "the default definition is active");
}

on_both_backends! {
    reads_beside_the_writer => reads_answer_while_the_writer_is_held;
    inbox_retention => the_inbox_forgets_message_ids_past_their_retention;
    score_threshold => a_score_over_the_threshold_makes_an_mql_once_and_asks_for_sdr_review;
    hand_raise => a_fitting_hand_raise_reaches_sql_only_through_sdr_review;
    rejections_and_outcomes => rejections_and_sales_outcomes_land_where_the_definition_says;
    definition_versions => a_definition_change_applies_to_later_evaluations_and_is_recorded;
    recycle => unaccepted_mqls_are_recycled_on_the_clock;
    merge => a_merge_keeps_the_more_advanced_stage;
    funnel => the_funnel_reports_entries_conversions_and_times_by_channel;
    bad_requests => bad_requests_get_field_violations_and_lists_page;
    list_order => a_stage_lists_its_leads_newest_entry_first;
    list_migration => stored_leads_list_by_their_stage_entry_after_the_migration;
}
