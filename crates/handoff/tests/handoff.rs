//! Handoff over real gRPC clients on SQLite and PostgreSQL: routing qualification's requests to
//! owners with a warm context, the CRM connector API with decisions flowing back, the SLA
//! sweeper on a manual clock and its report, stream resumption from a cursor, signed webhooks
//! with retries against a local receiver, and every RPC's error paths.

mod harness;

use std::sync::{Arc, Mutex};

use chrono::{Duration, SubsecRound, Utc};
use harness::{Handoff, Upstream, requested, stage_changed};
use leadflow_handoff::domain::webhook::{SIGNATURE_HEADER, verify};
use leadflow_proto::common::v1::{self as common, HandoffKind, sales_outcome::Outcome};
use leadflow_proto::handoff::events::v1::handoff_decision::Decision;
use leadflow_proto::handoff::v1::{self as pb, HandoffQueue, HandoffStatus};
use leadflow_runtime::clock::{Clock, ManualClock};
use leadflow_runtime::error::field_violations;
use leadflow_runtime::pbtime::to_timestamp;
use leadflow_test_support::{TestDb, beside_a_held_writer, on_both_backends};
use tokio_stream::StreamExt;
use tonic::Code;

fn fields(status: &tonic::Status) -> Vec<String> {
    field_violations(status)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

async fn start(db: &TestDb) -> (Handoff, Upstream) {
    let upstream = Upstream::start().await;
    // Close to the wall clock (webhook receivers check signature times), in whole seconds.
    let clock = ManualClock::new(Utc::now().trunc_subsecs(0));
    (Handoff::start(db, &upstream, clock).await, upstream)
}

fn owner(id: &str, role: pb::OwnerRole, weight: i32, team: &str) -> pb::Owner {
    pb::Owner {
        owner_id: id.into(),
        display_name: id.into(),
        role: role as i32,
        team_id: team.into(),
        weight,
        ..Default::default()
    }
}

async fn upsert(h: &Handoff, owner: pb::Owner) {
    h.client()
        .upsert_owner(pb::UpsertOwnerRequest {
            request_id: String::new(),
            owner: Some(owner),
        })
        .await
        .expect("upsert owner");
}

/// DACH hand-offs go to a pool of two SDRs (weights 1 and 2) and one account executive.
async fn dach_rules(h: &Handoff, escalation: pb::EscalationTarget) {
    upsert(h, owner("sdr-1", pb::OwnerRole::Sdr, 1, "berlin")).await;
    upsert(h, owner("sdr-2", pb::OwnerRole::Sdr, 2, "berlin")).await;
    upsert(
        h,
        owner("ae-1", pb::OwnerRole::AccountExecutive, 1, "munich"),
    )
    .await;
    h.client()
        .publish_routing_rules(pb::PublishRoutingRulesRequest {
            request_id: "rules-1".into(),
            routing_rules: Some(pb::RoutingRules {
                description: "dach".into(),
                rules: vec![pb::RoutingRule {
                    id: "dach".into(),
                    territory: Some(pb::Territory {
                        countries: vec!["DE".into(), "AT".into(), "CH".into()],
                        ..Default::default()
                    }),
                    owner_ids: vec!["sdr-1".into(), "sdr-2".into(), "ae-1".into()],
                    ..Default::default()
                }],
                escalation_target: escalation as i32,
                ..Default::default()
            }),
        })
        .await
        .expect("publish rules");
}

async fn apply(
    h: &Handoff,
    events: Vec<leadflow_proto::qualification::v1::QualificationEvent>,
) -> (i32, i32) {
    let r = h
        .internal()
        .apply_qualification_events(pb::ApplyQualificationEventsRequest { events })
        .await
        .expect("apply")
        .into_inner();
    (r.applied_count, r.duplicate_count)
}

async fn handoffs_of(h: &Handoff, lead_id: &str) -> Vec<pb::Handoff> {
    h.client()
        .list_handoffs(pb::ListHandoffsRequest {
            filter: Some(pb::HandoffFilter {
                lead_id: lead_id.into(),
                ..Default::default()
            }),
            view: pb::HandoffView::Full as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .handoffs
}

async fn requests_are_routed_by_weight_with_a_warm_context(db: TestDb) {
    let (h, upstream) = start(&db).await;
    dach_rules(&h, pb::EscalationTarget::NextOwner).await;
    let now = h.clock.now();
    let events: Vec<_> = (0..6)
        .map(|i| {
            requested(
                &format!("m{i}"),
                &format!("lead-{i}"),
                HandoffKind::SdrReview,
                "DE",
                now,
            )
        })
        .chain([
            requested("sales", "lead-s", HandoffKind::Sales, "AT", now),
            requested("far", "lead-far", HandoffKind::SdrReview, "US", now),
        ])
        .collect();
    assert_eq!(apply(&h, events.clone()).await, (8, 0));
    assert_eq!(
        apply(&h, events).await,
        (0, 8),
        "each request is applied once"
    );

    let mut per_owner = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..6 {
        let [handoff] = &handoffs_of(&h, &format!("lead-{i}")).await[..] else {
            panic!("one hand-off per request")
        };
        *per_owner.entry(handoff.owner_id.clone()).or_default() += 1;
    }
    assert_eq!(
        per_owner,
        [("sdr-1".to_owned(), 2), ("sdr-2".to_owned(), 4)].into(),
        "weights 1 and 2; account executives get no SDR reviews"
    );
    let [sales] = &handoffs_of(&h, "lead-s").await[..] else {
        panic!("one sales hand-off")
    };
    assert_eq!(sales.owner_id, "ae-1");
    assert_eq!(
        sales.sla_deadline.as_ref().map(|t| t.seconds),
        Some(to_timestamp(now + Duration::hours(24)).seconds),
        "the seeds' 24-hour sales SLA"
    );
    let [far] = &handoffs_of(&h, "lead-far").await[..] else {
        panic!("one hand-off")
    };
    assert_eq!(
        (far.owner_id.as_str(), far.queue),
        ("", HandoffQueue::Fallback as i32),
        "no rule covers the US: the fallback queue"
    );

    let context = sales.context.clone().expect("warm context");
    assert_eq!(
        context
            .score_explanation
            .and_then(|e| e.score)
            .map(|s| s.rounded_score),
        Some(64)
    );
    let activities: Vec<String> = context
        .recent_activities
        .iter()
        .filter_map(|e| e.activity.as_ref().map(|a| a.r#type.clone()))
        .collect();
    assert_eq!(activities, ["demo_request", "content_download"]);
    assert_eq!(
        context.profile.and_then(|p| p.company).as_deref(),
        Some("Acme Tech")
    );
    assert_eq!(
        context.bant.map(|b| b.need).as_deref(),
        Some("a real pipeline")
    );
    assert_eq!(sales.status_history.len(), 1, "created");

    assert_eq!(
        upstream.explained(),
        8,
        "one context per request: the redelivery built none"
    );

    let listed = h
        .client()
        .list_owners(pb::ListOwnersRequest {
            role: pb::OwnerRole::Sdr as i32,
            ..Default::default()
        })
        .await
        .expect("owners")
        .into_inner()
        .owners;
    assert_eq!(
        listed
            .iter()
            .map(|o| (o.owner_id.as_str(), o.open_handoff_count))
            .collect::<Vec<_>>(),
        [("sdr-1", 2), ("sdr-2", 4)]
    );

    // sdr-2 leaves: its open reviews go to whoever is left in the pool.
    let gone = h
        .client()
        .deactivate_owner(pb::DeactivateOwnerRequest {
            request_id: String::new(),
            owner_id: "sdr-2".into(),
            reassign_open_handoffs: true,
        })
        .await
        .expect("deactivate")
        .into_inner();
    assert_eq!(gone.reassigned_count, 4);
    assert_eq!(
        gone.owner.map(|o| (o.active, o.open_handoff_count)),
        Some((false, 0))
    );
    for i in 0..6 {
        assert_eq!(
            handoffs_of(&h, &format!("lead-{i}")).await[0].owner_id,
            "sdr-1"
        );
    }
    h.stop().await;
}

async fn the_crm_moves_a_handoff_and_decisions_flow_back(db: TestDb) {
    let (h, upstream) = start(&db).await;
    dach_rules(&h, pb::EscalationTarget::NextOwner).await;
    let now = h.clock.now();
    apply(
        &h,
        vec![
            requested("r1", "lead-1", HandoffKind::SdrReview, "DE", now),
            requested("r2", "lead-2", HandoffKind::Sales, "DE", now),
        ],
    )
    .await;
    let review = handoffs_of(&h, "lead-1").await.remove(0);
    let sales = handoffs_of(&h, "lead-2").await.remove(0);

    let early = h
        .client()
        .accept_handoff(pb::AcceptHandoffRequest {
            request_id: "x".into(),
            handoff_id: review.handoff_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("no decision before contact");
    assert_eq!(early.code(), Code::FailedPrecondition);
    assert_eq!(
        early.message(),
        "cannot accept a hand-off in status pending"
    );

    let ack = |record: &str| pb::AcknowledgeHandoffRequest {
        request_id: String::new(),
        handoff_id: review.handoff_id.clone(),
        crm_record_id: record.into(),
    };
    let acked = h
        .client()
        .acknowledge_handoff(ack("crm-1"))
        .await
        .expect("ack")
        .into_inner();
    assert!(!acked.duplicate);
    assert_eq!(
        acked.handoff.map(|x| (x.status, x.crm_record_id)),
        Some((HandoffStatus::Acknowledged as i32, "crm-1".to_owned()))
    );
    assert!(
        h.client()
            .acknowledge_handoff(ack("crm-1"))
            .await
            .expect("same record again")
            .into_inner()
            .duplicate
    );
    let other = h
        .client()
        .acknowledge_handoff(ack("crm-2"))
        .await
        .expect_err("another record");
    assert_eq!(other.code(), Code::FailedPrecondition);

    h.clock.advance(Duration::hours(2));
    let contacted = h
        .client()
        .record_contact(pb::RecordContactRequest {
            request_id: "c1".into(),
            handoff_id: review.handoff_id.clone(),
            actor_id: "sdr-2".into(),
            ..Default::default()
        })
        .await
        .expect("contact")
        .into_inner()
        .handoff
        .expect("handoff");
    assert_eq!(
        contacted.first_contact_time.map(|t| t.seconds),
        Some(to_timestamp(now + Duration::hours(2)).seconds)
    );
    h.client()
        .accept_handoff(pb::AcceptHandoffRequest {
            request_id: "acc".into(),
            handoff_id: review.handoff_id.clone(),
            actor_id: "sdr-2".into(),
            note: "budget this quarter".into(),
        })
        .await
        .expect("accept");
    let repeat = h
        .client()
        .accept_handoff(pb::AcceptHandoffRequest {
            request_id: "acc".into(),
            handoff_id: review.handoff_id.clone(),
            actor_id: "sdr-2".into(),
            note: "budget this quarter".into(),
        })
        .await
        .expect("a repeated request is answered")
        .into_inner();
    assert!(repeat.duplicate);

    // Sales makes contact before the CRM creates its record: the acknowledgement that follows
    // stores the record id and keeps the status.
    h.client()
        .record_contact(pb::RecordContactRequest {
            request_id: "s-contact".into(),
            handoff_id: sales.handoff_id.clone(),
            ..Default::default()
        })
        .await
        .expect("contact");
    let late_ack = h
        .client()
        .acknowledge_handoff(pb::AcknowledgeHandoffRequest {
            request_id: "s-ack".into(),
            handoff_id: sales.handoff_id.clone(),
            crm_record_id: "opp-9".into(),
        })
        .await
        .expect("an acknowledgement after contact")
        .into_inner()
        .handoff
        .expect("handoff");
    assert_eq!(
        (late_ack.status, late_ack.crm_record_id.as_str()),
        (HandoffStatus::Contacted as i32, "opp-9")
    );
    let won = h
        .client()
        .report_outcome(pb::ReportOutcomeRequest {
            request_id: "s-won".into(),
            handoff_id: sales.handoff_id.clone(),
            outcome: Some(common::SalesOutcome {
                outcome: Some(Outcome::Won(common::WonOutcome {
                    amount: Some(common::Money {
                        currency_code: "EUR".into(),
                        units: 12_000,
                        nanos: 0,
                    }),
                })),
            }),
            ..Default::default()
        })
        .await
        .expect("won")
        .into_inner()
        .handoff
        .expect("handoff");
    assert_eq!(won.status, HandoffStatus::Won as i32);
    let moves: Vec<(i32, i32)> = won
        .status_history
        .iter()
        .map(|c| (c.from_status, c.to_status))
        .collect();
    let (pending, contacted) = (
        HandoffStatus::Pending as i32,
        HandoffStatus::Contacted as i32,
    );
    assert_eq!(
        moves,
        [
            (pending, pending),
            (pending, contacted),
            (contacted, contacted),
            (contacted, HandoffStatus::Won as i32)
        ],
        "created, contact, acknowledgement in place, won"
    );

    let decisions = upstream.decisions(2).await;
    assert_eq!(
        decisions.len(),
        2,
        "one accept, one outcome; repeats send nothing"
    );
    let accept = decisions
        .iter()
        .find(|d| matches!(d.decision, Some(Decision::Accepted(_))))
        .expect("the accept");
    assert_eq!(
        (
            accept.header.as_ref().map(|h| h.lead_id.as_str()),
            accept.actor_id.as_str(),
            accept.note.as_str()
        ),
        (Some("lead-1"), "sdr-2", "budget this quarter")
    );
    assert!(decisions.iter().any(|d| matches!(
        &d.decision,
        Some(Decision::Outcome(o)) if matches!(o.outcome, Some(Outcome::Won(_)))
    )));

    // The lead left SDR review some other way: its open hand-off is withdrawn.
    apply(
        &h,
        vec![requested("r3", "lead-3", HandoffKind::SdrReview, "DE", now)],
    )
    .await;
    apply(
        &h,
        vec![stage_changed(
            "s3",
            "lead-3",
            common::LeadStage::Nurture,
            now,
        )],
    )
    .await;
    assert_eq!(
        handoffs_of(&h, "lead-3").await[0].status,
        HandoffStatus::Withdrawn as i32
    );
    h.stop().await;
}

async fn breaches_are_escalated_and_reported(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    dach_rules(&h, pb::EscalationTarget::NextOwner).await;
    let t0 = h.clock.now();
    apply(
        &h,
        vec![
            requested("a", "lead-a", HandoffKind::SdrReview, "DE", t0),
            requested("b", "lead-b", HandoffKind::SdrReview, "DE", t0),
            requested("c", "lead-c", HandoffKind::SdrReview, "DE", t0),
        ],
    )
    .await;
    // lead-a contacted after 1 hour (met), lead-b after 30 hours (late), lead-c never.
    let contact = |lead: &'static str| {
        let h = &h;
        async move {
            let id = handoffs_of(h, lead).await[0].handoff_id.clone();
            h.client()
                .record_contact(pb::RecordContactRequest {
                    request_id: format!("c-{lead}"),
                    handoff_id: id,
                    ..Default::default()
                })
                .await
                .expect("contact");
        }
    };
    h.clock.advance(Duration::hours(1));
    contact("lead-a").await;
    h.clock.advance(Duration::hours(29));
    // The sweeper escalates b and c (not a), re-routing each to another SDR.
    let escalated = (
        until(&h, "lead-b", |x| x.sla_breached).await,
        until(&h, "lead-c", |x| x.sla_breached).await,
    );
    for (before, after) in [
        (handoffs_of(&h, "lead-b").await, escalated.0),
        (handoffs_of(&h, "lead-c").await, escalated.1),
    ] {
        assert_eq!(after.status, HandoffStatus::Escalated as i32);
        let history = &before[0].status_history;
        let first_owner = &history[0].owner_id;
        assert_ne!(&after.owner_id, first_owner, "re-routed to the next owner");
        assert!(after.owner_id.starts_with("sdr-"));
    }
    contact("lead-b").await;

    let report = h
        .client()
        .get_sla_report(pb::GetSlaReportRequest {
            start_time: Some(to_timestamp(t0)),
            end_time: Some(to_timestamp(t0 + Duration::hours(1))),
            kind: 0,
        })
        .await
        .expect("report")
        .into_inner();
    let total = report.total.expect("total");
    assert_eq!(total.handoff_count, 3);
    assert_eq!(total.contacted_count, 2);
    assert_eq!(total.within_sla_count, 1);
    assert!((total.within_sla_share - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(total.breach_count, 2);
    assert_eq!(total.open_overdue_count, 1, "lead-c is still waiting");
    assert_eq!(
        (
            total.median_time_to_first_contact.map(|d| d.seconds),
            total.p90_time_to_first_contact.map(|d| d.seconds)
        ),
        (Some(3600), Some(30 * 3600)),
        "nearest rank of (1 h, 30 h)"
    );
    assert_eq!(report.teams.len(), 1);
    assert_eq!(report.teams[0].team_id, "berlin");
    h.stop().await;
}

async fn a_stream_resumes_from_its_cursor_without_loss_or_repeats(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    let now = h.clock.now();
    apply(
        &h,
        (0..3)
            .map(|i| {
                requested(
                    &format!("m{i}"),
                    &format!("lead-{i}"),
                    HandoffKind::Sales,
                    "DE",
                    now,
                )
            })
            .collect(),
    )
    .await;
    // A change to lead-0 after its creation: the creation item still shows it as created.
    let first_id = handoffs_of(&h, "lead-0").await[0].handoff_id.clone();
    h.client()
        .acknowledge_handoff(pb::AcknowledgeHandoffRequest {
            request_id: String::new(),
            handoff_id: first_id,
            crm_record_id: "crm-0".into(),
        })
        .await
        .expect("ack");
    let mut first = h
        .client()
        .stream_handoffs(pb::StreamHandoffsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let mut seen = Vec::new();
    let mut cursor = String::new();
    for i in 0..2 {
        let item = first.next().await.expect("an item").expect("ok");
        let handoff = item.handoff.expect("handoff");
        if i == 0 {
            assert_eq!(
                (handoff.status, handoff.crm_record_id.as_str()),
                (HandoffStatus::Pending as i32, ""),
                "each item is the hand-off as of its change"
            );
        }
        seen.push(handoff.lead_id);
        cursor = item.cursor;
    }
    drop(first);
    apply(
        &h,
        vec![requested("m3", "lead-3", HandoffKind::Sales, "DE", now)],
    )
    .await;
    let mut second = h
        .client()
        .stream_handoffs(pb::StreamHandoffsRequest {
            cursor,
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    for _ in 0..3 {
        let item = second.next().await.expect("an item").expect("ok");
        seen.push(item.handoff.expect("handoff").lead_id);
    }
    assert_eq!(
        seen,
        ["lead-0", "lead-1", "lead-2", "lead-0", "lead-3"],
        "lead-0 again when it was acknowledged"
    );
    // A change made while the stream waits arrives live.
    apply(
        &h,
        vec![requested("m4", "lead-4", HandoffKind::Sales, "DE", now)],
    )
    .await;
    let live = second.next().await.expect("an item").expect("ok");
    assert_eq!(live.handoff.map(|x| x.lead_id).as_deref(), Some("lead-4"));
    drop(second);
    let bad = h
        .client()
        .stream_handoffs(pb::StreamHandoffsRequest {
            cursor: "yesterday".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad cursor");
    assert_eq!(fields(&bad), ["cursor"]);

    // The full view carries each item's history as of its change too, not as of now.
    let mut full = h
        .client()
        .stream_handoffs(pb::StreamHandoffsRequest {
            view: pb::HandoffView::Full as i32,
            ..Default::default()
        })
        .await
        .expect("full stream")
        .into_inner();
    let mut lead_0 = Vec::new();
    for _ in 0..4 {
        let handoff = full
            .next()
            .await
            .expect("an item")
            .expect("ok")
            .handoff
            .expect("handoff");
        assert!(
            handoff.context.is_some(),
            "the warm context is in the full view"
        );
        if handoff.lead_id == "lead-0" {
            let statuses: Vec<i32> = handoff.status_history.iter().map(|c| c.to_status).collect();
            lead_0.push(statuses);
        }
    }
    let (pending, acknowledged) = (
        HandoffStatus::Pending as i32,
        HandoffStatus::Acknowledged as i32,
    );
    assert_eq!(lead_0, [vec![pending], vec![pending, acknowledged]]);
    h.stop().await;
}

/// Polls the lead's only hand-off until `done` holds (the sweeper runs every 20 ms).
async fn until(h: &Handoff, lead: &str, done: impl Fn(&pb::Handoff) -> bool) -> pb::Handoff {
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            let handoff = handoffs_of(h, lead).await.remove(0);
            if done(&handoff) {
                return handoff;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the sweeper gets there")
}

fn escalations(handoff: &pb::Handoff) -> usize {
    handoff
        .status_history
        .iter()
        .filter(|c| c.to_status == HandoffStatus::Escalated as i32)
        .count()
}

async fn a_new_owner_who_misses_the_fresh_sla_is_escalated_again(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    dach_rules(&h, pb::EscalationTarget::NextOwner).await;
    let t0 = h.clock.now();
    apply(
        &h,
        vec![requested("a", "lead-a", HandoffKind::SdrReview, "DE", t0)],
    )
    .await;
    let first_owner = handoffs_of(&h, "lead-a").await[0].owner_id.clone();
    let seconds = |hours: i64| Some(to_timestamp(t0 + Duration::hours(hours)).seconds);

    h.clock.advance(Duration::hours(25));
    let once = until(&h, "lead-a", |x| escalations(x) == 1).await;
    assert_ne!(once.owner_id, first_owner);
    assert_eq!(
        once.sla_deadline.map(|t| t.seconds),
        seconds(24),
        "the SLA stays"
    );
    assert_eq!(
        once.contact_due_time.map(|t| t.seconds),
        seconds(25 + 24),
        "the new owner gets a fresh 24 hours from the escalation"
    );

    h.clock.advance(Duration::hours(25));
    let twice = until(&h, "lead-a", |x| escalations(x) == 2).await;
    assert_eq!(
        twice.owner_id, first_owner,
        "the only other eligible SDR takes it"
    );
    assert_eq!(twice.contact_due_time.map(|t| t.seconds), seconds(50 + 24));
    assert!(twice.sla_breached);
    h.stop().await;
}

async fn the_manager_queue_ends_escalation(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    dach_rules(&h, pb::EscalationTarget::ManagerQueue).await;
    let t0 = h.clock.now();
    apply(
        &h,
        vec![requested("m", "lead-m", HandoffKind::Sales, "DE", t0)],
    )
    .await;
    h.clock.advance(Duration::hours(25));
    let escalated = until(&h, "lead-m", |x| escalations(x) == 1).await;
    assert_eq!(
        (
            escalated.queue,
            escalated.owner_id.as_str(),
            escalated.status
        ),
        (
            HandoffQueue::Manager as i32,
            "",
            HandoffStatus::Escalated as i32
        )
    );
    // A second hand-off breaking a day later proves the sweeper ran past lead-m's due time
    // again; lead-m, in the manager queue, is left there.
    apply(
        &h,
        vec![requested(
            "s",
            "lead-s",
            HandoffKind::Sales,
            "DE",
            h.clock.now(),
        )],
    )
    .await;
    h.clock.advance(Duration::hours(25));
    until(&h, "lead-s", |x| escalations(x) == 1).await;
    let still = handoffs_of(&h, "lead-m").await.remove(0);
    assert_eq!(escalations(&still), 1);
    assert_eq!(still.queue, HandoffQueue::Manager as i32);
    let listed = h
        .client()
        .list_handoffs(pb::ListHandoffsRequest {
            filter: Some(pb::HandoffFilter {
                queue: HandoffQueue::Manager as i32,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("the managers' queue")
        .into_inner();
    let leads: Vec<&str> = listed.handoffs.iter().map(|x| x.lead_id.as_str()).collect();
    assert_eq!(leads, ["lead-m", "lead-s"]);
    h.stop().await;
}

/// The full view of a listed page carries each hand-off's own history (read for the whole page
/// at once), as `GetHandoff` shows it.
async fn a_full_page_carries_each_handoffs_own_history(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    let now = h.clock.now();
    let events = (0..3)
        .map(|i| {
            requested(
                &format!("f{i}"),
                &format!("lead-{i}"),
                HandoffKind::SdrReview,
                "DE",
                now,
            )
        })
        .collect();
    apply(&h, events).await;
    let acknowledged = handoffs_of(&h, "lead-1").await.remove(0);
    h.client()
        .acknowledge_handoff(pb::AcknowledgeHandoffRequest {
            request_id: String::new(),
            handoff_id: acknowledged.handoff_id.clone(),
            crm_record_id: "crm-1".into(),
        })
        .await
        .expect("ack");
    let page = h
        .client()
        .list_handoffs(pb::ListHandoffsRequest {
            view: pb::HandoffView::Full as i32,
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner()
        .handoffs;
    assert_eq!(page.len(), 3);
    for listed in &page {
        let got = h
            .client()
            .get_handoff(pb::GetHandoffRequest {
                handoff_id: listed.handoff_id.clone(),
            })
            .await
            .expect("get")
            .into_inner()
            .handoff
            .expect("a hand-off");
        assert_eq!(
            listed.status_history, got.status_history,
            "{}",
            listed.lead_id
        );
        let expected = if listed.lead_id == "lead-1" { 2 } else { 1 };
        assert_eq!(listed.status_history.len(), expected, "{}", listed.lead_id);
    }
    h.stop().await;
}

async fn handoffs_are_listed_oldest_first_in_pages(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    let now = h.clock.now();
    for i in 0..5 {
        let kind = if i % 2 == 0 {
            HandoffKind::Sales
        } else {
            HandoffKind::SdrReview
        };
        apply(
            &h,
            vec![requested(
                &format!("p{i}"),
                &format!("lead-{i}"),
                kind,
                "DE",
                now,
            )],
        )
        .await;
    }
    let page = |token: String, kind: HandoffKind| {
        let h = &h;
        async move {
            h.client()
                .list_handoffs(pb::ListHandoffsRequest {
                    filter: Some(pb::HandoffFilter {
                        kind: kind as i32,
                        ..Default::default()
                    }),
                    page_size: 2,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .expect("page")
                .into_inner()
        }
    };
    let mut leads = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let r = page(token, HandoffKind::Unspecified).await;
        leads.extend(r.handoffs.into_iter().map(|x| x.lead_id));
        pages += 1;
        if r.next_page_token.is_empty() {
            break;
        }
        token = r.next_page_token;
    }
    assert_eq!(leads, ["lead-0", "lead-1", "lead-2", "lead-3", "lead-4"]);
    assert_eq!(pages, 3);
    let sales = page(String::new(), HandoffKind::Sales).await;
    let sales_leads: Vec<&str> = sales.handoffs.iter().map(|x| x.lead_id.as_str()).collect();
    assert_eq!(sales_leads, ["lead-0", "lead-2"]);
    let rest = page(sales.next_page_token, HandoffKind::Sales).await;
    assert_eq!(
        rest.handoffs
            .iter()
            .map(|x| x.lead_id.as_str())
            .collect::<Vec<_>>(),
        ["lead-4"]
    );
    assert!(rest.next_page_token.is_empty());
    h.stop().await;
}

/// Changes committed concurrently (on PostgreSQL, by parallel transactions) reach a following
/// stream each exactly once: a change id drawn early never commits after a later one is read.
async fn a_stream_misses_nothing_from_concurrent_writers(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    let now = h.clock.now();
    const LEADS: usize = 24;
    apply(
        &h,
        (0..LEADS)
            .map(|i| {
                requested(
                    &format!("w{i}"),
                    &format!("lead-{i}"),
                    HandoffKind::Sales,
                    "DE",
                    now,
                )
            })
            .collect(),
    )
    .await;
    let ids: Vec<String> = (0..LEADS)
        .map(|i| format!("lead-{i}"))
        .map(|lead| {
            let h = &h;
            async move { handoffs_of(h, &lead).await.remove(0).handoff_id }
        })
        .collect::<futures::future::JoinAll<_>>()
        .await;
    let mut stream = h
        .client()
        .stream_handoffs(pb::StreamHandoffsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let writers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let client = h.client();
            let id = id.clone();
            tokio::spawn(async move {
                let mut client = client;
                client
                    .acknowledge_handoff(pb::AcknowledgeHandoffRequest {
                        request_id: format!("ack-{i}"),
                        handoff_id: id.clone(),
                        crm_record_id: format!("crm-{i}"),
                    })
                    .await
                    .expect("ack");
                client
                    .record_contact(pb::RecordContactRequest {
                        request_id: format!("contact-{i}"),
                        handoff_id: id,
                        ..Default::default()
                    })
                    .await
                    .expect("contact");
            })
        })
        .collect();
    let mut cursors = std::collections::HashSet::new();
    let mut per_lead = std::collections::HashMap::<String, usize>::new();
    let expected = LEADS * 3;
    tokio::time::timeout(std::time::Duration::from_secs(60), async {
        while cursors.len() < expected {
            let item = stream.next().await.expect("an item").expect("ok");
            assert!(cursors.insert(item.cursor.clone()), "no change twice");
            *per_lead
                .entry(item.handoff.expect("handoff").lead_id)
                .or_default() += 1;
        }
    })
    .await
    .expect("every change arrives");
    for writer in writers {
        writer.await.expect("writer");
    }
    assert!(per_lead.values().all(|n| *n == 3), "{per_lead:?}");
    h.stop().await;
}

/// A local webhook receiver: verifies each signature against the wall clock, fails the first
/// `fail_first` deliveries with 503, and records the verified bodies.
async fn receiver(
    secret: &'static [u8],
    fail_first: usize,
) -> (String, Arc<Mutex<Vec<(u16, String)>>>) {
    use http_body_util::BodyExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!(
        "http://{}/hooks/leadflow",
        listener.local_addr().expect("addr")
    );
    let log: Arc<Mutex<Vec<(u16, String)>>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |request: hyper::Request<hyper::body::Incoming>| {
                        let seen = seen.clone();
                        async move {
                            let header = request
                                .headers()
                                .get(SIGNATURE_HEADER)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let body = request
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let verified = verify(
                                secret,
                                &header,
                                &body,
                                Utc::now().timestamp(),
                                chrono::TimeDelta::minutes(5),
                            );
                            let mut seen = seen.lock().expect("lock");
                            let status = match verified {
                                Err(_) => 401,
                                Ok(())
                                    if seen.iter().filter(|(s, _)| *s == 503).count()
                                        < fail_first =>
                                {
                                    503
                                }
                                Ok(()) => 200,
                            };
                            seen.push((status, String::from_utf8_lossy(&body).into_owned()));
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(status)
                                    .body(http_body_util::Empty::<bytes::Bytes>::new())
                                    .expect("response"),
                            )
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, log)
}

async fn webhooks_are_signed_retried_and_logged(db: TestDb) {
    const SECRET: &[u8] = b"a webhook secret of 32+ bytes!!!";
    let (h, _upstream) = start(&db).await;
    let (url, log) = receiver(SECRET, 1).await;
    let created = h
        .client()
        .upsert_webhook(pb::UpsertWebhookRequest {
            request_id: "w1".into(),
            webhook: Some(pb::Webhook {
                url: url.clone(),
                enabled: true,
                event_filter: Some(pb::WebhookEventFilter {
                    statuses: vec![HandoffStatus::Pending as i32],
                    kinds: Vec::new(),
                }),
                ..Default::default()
            }),
            secret: String::from_utf8(SECRET.to_vec()).expect("utf-8"),
        })
        .await
        .expect("create")
        .into_inner();
    assert!(created.created);
    let hook = created.webhook.expect("webhook");
    assert!(
        hook.secret_update_time.is_some(),
        "the secret is never returned, only when set"
    );

    let now = h.clock.now();
    apply(
        &h,
        vec![requested("m1", "lead-1", HandoffKind::Sales, "DE", now)],
    )
    .await;
    let wait_for = |state: pb::WebhookDeliveryState, attempts: i32| {
        let h = &h;
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(30), async {
                loop {
                    let deliveries = h
                        .client()
                        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest::default())
                        .await
                        .expect("deliveries")
                        .into_inner()
                        .deliveries;
                    if let Some(d) = deliveries
                        .into_iter()
                        .find(|d| d.state == state as i32 && d.attempt_count == attempts)
                    {
                        return d;
                    }
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("the delivery reaches its state")
        }
    };
    let failed_once = wait_for(pb::WebhookDeliveryState::Pending, 1).await;
    assert_eq!(failed_once.last_http_status, 503);
    h.clock.advance(Duration::seconds(6));
    let delivered = wait_for(pb::WebhookDeliveryState::Delivered, 2).await;
    assert_eq!(delivered.last_http_status, 200);
    let bodies = log.lock().expect("lock").clone();
    assert_eq!(bodies.len(), 2, "one failure, one retry");
    let body: serde_json::Value = serde_json::from_str(&bodies[1].1).expect("json");
    assert_eq!(body["handoff"]["lead_id"], "lead-1");
    assert_eq!(body["handoff"]["status"], "pending");
    assert_eq!(body["event"], "handoff.created");

    // A receiver whose clock disagrees by an hour rejects the delivery as stale.
    h.clock.advance(Duration::hours(1));
    apply(
        &h,
        vec![requested(
            "m2",
            "lead-2",
            HandoffKind::Sales,
            "DE",
            h.clock.now(),
        )],
    )
    .await;
    let stale = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        loop {
            if log
                .lock()
                .expect("lock")
                .iter()
                .any(|(status, _)| *status == 401)
            {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        stale.is_ok(),
        "the stale signature is refused by the receiver"
    );

    let bad = h
        .client()
        .upsert_webhook(pb::UpsertWebhookRequest {
            request_id: "w2".into(),
            webhook: Some(pb::Webhook {
                url: "ftp://example.com".into(),
                event_filter: Some(pb::WebhookEventFilter {
                    statuses: vec![42],
                    kinds: Vec::new(),
                }),
                ..Default::default()
            }),
            secret: "short".into(),
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        fields(&bad),
        ["webhook.event_filter.statuses[0]", "webhook.url", "secret"]
    );
    h.client()
        .delete_webhook(pb::DeleteWebhookRequest {
            request_id: "d1".into(),
            webhook_id: hook.webhook_id.clone(),
        })
        .await
        .expect("delete");
    let gone = h
        .client()
        .delete_webhook(pb::DeleteWebhookRequest {
            request_id: "d2".into(),
            webhook_id: hook.webhook_id,
        })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    h.stop().await;
}

async fn bad_requests_get_field_violations(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    let owner = h
        .client()
        .upsert_owner(pb::UpsertOwnerRequest {
            request_id: String::new(),
            owner: Some(pb::Owner {
                owner_id: String::new(),
                territory: Some(pb::Territory {
                    countries: vec!["Germany".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }),
        })
        .await
        .expect_err("invalid");
    assert_eq!(
        fields(&owner),
        [
            "owner.role",
            "owner.owner_id",
            "owner.territory.countries[0]"
        ]
    );
    let rules = h
        .client()
        .publish_routing_rules(pb::PublishRoutingRulesRequest {
            request_id: "r".into(),
            routing_rules: Some(pb::RoutingRules {
                rules: vec![pb::RoutingRule {
                    id: "x".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        })
        .await
        .expect_err("invalid");
    assert_eq!(fields(&rules), ["routing_rules.rules[0].owner_ids"]);
    let missing = h
        .client()
        .get_handoff(pb::GetHandoffRequest {
            handoff_id: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(missing.code(), Code::NotFound);
    let outcome = h
        .client()
        .report_outcome(pb::ReportOutcomeRequest {
            handoff_id: "h".into(),
            outcome: Some(common::SalesOutcome {
                outcome: Some(Outcome::Lost(common::LostOutcome::default())),
            }),
            outcome_time: Some(to_timestamp(h.clock.now() + Duration::days(1))),
            ..Default::default()
        })
        .await
        .expect_err("invalid");
    assert_eq!(fields(&outcome), ["outcome_time", "outcome.lost.reason"]);
    let headerless = h
        .internal()
        .apply_qualification_events(pb::ApplyQualificationEventsRequest {
            events: vec![Default::default()],
        })
        .await
        .expect_err("no header");
    assert_eq!(fields(&headerless), ["events[0].header"]);
    for view in [pb::HandoffView::Basic, pb::HandoffView::Full] {
        let listed = h
            .client()
            .list_handoffs(pb::ListHandoffsRequest {
                filter: Some(pb::HandoffFilter {
                    statuses: vec![99],
                    kind: 99,
                    queue: 99,
                    ..Default::default()
                }),
                page_size: i32::try_from(leadflow_handoff::api::MAX_PAGE + 1).expect("fits"),
                view: view as i32,
                ..Default::default()
            })
            .await
            .expect_err("invalid");
        assert_eq!(listed.code(), Code::InvalidArgument);
        assert_eq!(
            fields(&listed),
            [
                "filter.statuses[0]",
                "filter.kind",
                "filter.queue",
                "page_size"
            ]
        );
    }
    h.stop().await;
}

/// Applied message ids are forgotten once past the inbox's retention, as deliveries arrive.
async fn the_inbox_forgets_message_ids_past_their_retention(db: TestDb) {
    let (h, _upstream) = start(&db).await;
    let now = h.clock.now();
    let first = stage_changed("q-1", "lead-1", common::LeadStage::Nurture, now);
    assert_eq!(apply(&h, vec![first.clone()]).await, (1, 0));
    assert_eq!(apply(&h, vec![first]).await, (0, 1), "remembered");
    assert_eq!(leadflow_test_support::inbox_size(&db.url).await, 1);

    h.clock
        .advance(leadflow_runtime::outbox::inbox::DEFAULT_RETENTION + Duration::hours(1));
    let later = stage_changed("q-2", "lead-1", common::LeadStage::Lead, h.clock.now());
    assert_eq!(apply(&h, vec![later]).await, (1, 0));
    assert_eq!(
        leadflow_test_support::inbox_size(&db.url).await,
        1,
        "only the new message's id is left"
    );
    h.stop().await;
}

/// The read RPCs' reads and the warm-context check go through the read-only connections, so
/// they answer while the one writer connection is held (on SQLite each delivery applied holds
/// it; here a transaction the test keeps open).
async fn reads_answer_while_the_writer_is_held(db: TestDb) {
    use leadflow_handoff::store::{Prepared, Store, migrations::Migrator};

    let leadflow_runtime::db::Pools { writer, reader, .. } =
        leadflow_runtime::db::open_with_reader::<Migrator>(&db.url, 5)
            .await
            .expect("open");
    let store = Store::new(writer.clone(), Vec::new()).with_reader(reader);
    let now = Utc::now();
    let event = requested("m-1", "lead-1", HandoffKind::Sales, "US", now);
    let tenant = event.header.clone().expect("header").tenant_id;
    store
        .apply_qualification_events(
            vec![Prepared {
                event,
                context: Some(pb::WarmContext::default()),
            }],
            now,
        )
        .await
        .expect("apply");

    let reads = async {
        let read = store.read().await.expect("snapshot");
        let listed = read
            .list(&tenant, &pb::HandoffFilter::default(), None, 10)
            .await
            .expect("list");
        drop(read);
        let handed_off = store
            .handed_off(&tenant, &["t-m-1".to_owned()])
            .await
            .expect("handed off");
        let (rules, _) = store.active_rules(&tenant).await.expect("rules");
        (listed, handed_off, rules)
    };
    let (listed, handed_off, rules) = beside_a_held_writer(&writer, reads).await;
    assert_eq!(listed.len(), 1, "the hand-off is listed");
    assert!(handed_off.contains("t-m-1"));
    assert_eq!(rules.version, 0, "the default rules are active");
}

on_both_backends! {
    reads_beside_the_writer => reads_answer_while_the_writer_is_held;
    inbox_retention => the_inbox_forgets_message_ids_past_their_retention;
    routing => requests_are_routed_by_weight_with_a_warm_context;
    crm_flow => the_crm_moves_a_handoff_and_decisions_flow_back;
    sla => breaches_are_escalated_and_reported;
    stream => a_stream_resumes_from_its_cursor_without_loss_or_repeats;
    stream_concurrent => a_stream_misses_nothing_from_concurrent_writers;
    escalation_again => a_new_owner_who_misses_the_fresh_sla_is_escalated_again;
    manager_queue => the_manager_queue_ends_escalation;
    paging => handoffs_are_listed_oldest_first_in_pages;
    full_page => a_full_page_carries_each_handoffs_own_history;
    webhooks => webhooks_are_signed_retried_and_logged;
    bad_requests => bad_requests_get_field_violations;
    deadline_index => the_unused_deadline_index_is_dropped;
}

/// The `(status, sla_deadline)` index no query used is gone from a store made before its drop,
/// and from a new one.
async fn the_unused_deadline_index_is_dropped(db: TestDb) {
    use leadflow_handoff::store::migrations::Migrator;
    use sea_orm::{ConnectionTrait, Statement};
    use sea_orm_migration::MigratorTrait;

    let conn = leadflow_runtime::db::connect(&db.url, 2)
        .await
        .expect("connect");
    let has_index = || async {
        let sql = match conn.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => {
                "SELECT 1 FROM pg_indexes WHERE indexname = 'handoffs_status_deadline'"
            }
            _ => {
                "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = 'handoffs_status_deadline'"
            }
        };
        conn.query_one_raw(Statement::from_string(conn.get_database_backend(), sql))
            .await
            .expect("catalog")
            .is_some()
    };
    let before = Migrator::migrations()
        .iter()
        .position(|m| m.name().ends_with("drop_handoffs_status_deadline"))
        .expect("the drop is a migration") as u32;
    Migrator::up(&conn, Some(before))
        .await
        .expect("the migrations before the drop");
    assert!(has_index().await, "made by the first schema");
    Migrator::up(&conn, None).await.expect("the drop");
    assert!(!has_index().await, "dropped");
}
