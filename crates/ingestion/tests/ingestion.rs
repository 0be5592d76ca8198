//! Ingestion over real gRPC clients against servers on port-0 listeners, on SQLite and
//! PostgreSQL: round trips, validation, idempotency, identity linking and merges, the outbox to
//! scoring, authentication and tenancy, health, reflection, shutdown and trace propagation.

mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::{Ingestion, Options, ScoringReceiver, activity, identify, track};
use leadflow_proto::common::v1 as common;
use leadflow_proto::ingestion::v1::{self as pb, batch_item_result::Result as ItemResult};
use leadflow_runtime::error::field_violations;
use leadflow_test_support::{TestDb, beside_a_held_writer, on_both_backends};
use tonic::Code;

fn violated_fields(status: &tonic::Status) -> Vec<String> {
    field_violations(status)
        .into_iter()
        .map(|v| v.field)
        .collect()
}

async fn identify_track_and_read_back(db: TestDb) {
    let server = Ingestion::start(&db, Options::default()).await;
    let mut client = server.client(None);
    let profile = common::Profile {
        email: Some("Ana@Acme.io".into()),
        title: Some("Marketing Manager".into()),
        company_size: Some(120),
        country: Some("de".into()),
        seniority: common::Seniority::Manager as i32,
        ..Default::default()
    };
    let lead_id = client
        .identify(identify("m1", "user-ana", "", profile))
        .await
        .expect("identify")
        .into_inner()
        .lead_id;
    let tracked = client
        .track(track(
            "m2",
            "user-ana",
            "",
            activity("content_download", 3, &[("asset_id", "guide-7")]),
        ))
        .await
        .expect("track")
        .into_inner();
    assert_eq!(tracked.lead_id, lead_id);
    assert!(!tracked.activity_id.is_empty());

    let lead = client
        .get_lead(pb::GetLeadRequest {
            lead_id: lead_id.clone(),
        })
        .await
        .expect("get lead")
        .into_inner();
    assert!(!lead.merged);
    let lead = lead.lead.expect("lead");
    let profile = lead.profile.expect("profile");
    assert_eq!(
        profile.email.as_deref(),
        Some("ana@acme.io"),
        "e-mail normalised"
    );
    assert_eq!(profile.country.as_deref(), Some("DE"));
    assert_eq!(lead.user_ids, ["user-ana"]);
    assert_eq!(lead.activity_count, 1);

    let timeline = client
        .get_timeline(pb::GetTimelineRequest {
            lead_id: lead_id.clone(),
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    assert_eq!(timeline.entries.len(), 1);
    let entry = &timeline.entries[0];
    assert_eq!(entry.activity_id, tracked.activity_id);
    let stored = entry.activity.as_ref().expect("activity");
    assert_eq!(stored.r#type, "content_download");
    assert_eq!(
        stored.properties.get("asset_id").map(String::as_str),
        Some("guide-7")
    );

    let missing = client
        .get_lead(pb::GetLeadRequest {
            lead_id: "nope".into(),
        })
        .await
        .expect_err("unknown lead");
    assert_eq!(missing.code(), Code::NotFound);
    server.stop().await;
}

async fn timeline_pages_and_filters(db: TestDb) {
    let server = Ingestion::start(&db, Options::default()).await;
    let mut client = server.client(None);
    // Ten activities, one hour apart, alternating types; hours_ago 10..1.
    let mut lead_id = String::new();
    for i in 0..10 {
        let kind = if i % 2 == 0 {
            "page_view"
        } else {
            "email_open"
        };
        lead_id = client
            .track(track(
                &format!("t{i}"),
                "u",
                "",
                activity(kind, 10 - i, &[]),
            ))
            .await
            .expect("track")
            .into_inner()
            .lead_id;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .get_timeline(pb::GetTimelineRequest {
                lead_id: lead_id.clone(),
                page_size: 3,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.entries.len() <= 3);
        seen.extend(page.entries.iter().map(|e| {
            e.activity
                .as_ref()
                .expect("a")
                .occurred_at
                .expect("t")
                .seconds
        }));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 10, "every activity once across pages");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "newest first");

    let opens = client
        .get_timeline(pb::GetTimelineRequest {
            lead_id: lead_id.clone(),
            types: vec!["email_open".into()],
            start_time: Some(harness::hours_ago(6)),
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner();
    let hours: Vec<i64> = opens.entries.iter().map(harness::age_hours).collect();
    assert_eq!(hours, [1, 3, 5], "email opens of the last six hours");
    server.stop().await;
}

async fn each_validation_rule_names_its_field(db: TestDb) {
    let server = Ingestion::start(&db, Options::default()).await;
    let mut client = server.client(None);
    let cases: Vec<(pb::TrackRequest, &str)> = vec![
        (
            track("", "u", "", activity("page_view", 0, &[])),
            "message_id",
        ),
        (
            track(&"m".repeat(200), "u", "", activity("page_view", 0, &[])),
            "message_id",
        ),
        (
            track("m", "", "", activity("page_view", 0, &[])),
            "identity.user_id",
        ),
        (
            track("m", &"u".repeat(300), "", activity("page_view", 0, &[])),
            "identity.user_id",
        ),
        (
            track("m", "u", "", activity("signup", 0, &[])),
            "activity.type",
        ),
        (
            track("m", "u", "", activity("custom.Bad-Name", 0, &[])),
            "activity.type",
        ),
        (
            track("m", "u", "", activity("page_view", -48, &[])),
            "activity.occurred_at",
        ),
        (
            track("m", "u", "", activity("page_view", 0, &[("", "x")])),
            "activity.properties[]",
        ),
        (
            pb::TrackRequest {
                activity: None,
                ..track("m", "u", "", activity("page_view", 0, &[]))
            },
            "activity",
        ),
    ];
    for (request, field) in cases {
        let status = client.track(request).await.expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert!(
            violated_fields(&status).contains(&field.to_owned()),
            "{field}: {:?}",
            violated_fields(&status)
        );
    }
    let big_properties: Vec<(String, String)> =
        (0..60).map(|i| (format!("k{i}"), "v".into())).collect();
    let refs: Vec<(&str, &str)> = big_properties
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let status = client
        .track(track("m", "u", "", activity("page_view", 0, &refs)))
        .await
        .expect_err("too many properties");
    assert_eq!(violated_fields(&status), ["activity.properties"]);

    let profile_cases: Vec<(common::Profile, &str)> = vec![
        (
            common::Profile {
                email: Some("not-an-email".into()),
                ..Default::default()
            },
            "profile.email",
        ),
        (
            common::Profile {
                country: Some("Germany".into()),
                ..Default::default()
            },
            "profile.country",
        ),
        (
            common::Profile {
                company_size: Some(-5),
                ..Default::default()
            },
            "profile.company_size",
        ),
        (
            common::Profile {
                title: Some("x".repeat(300)),
                ..Default::default()
            },
            "profile.title",
        ),
        (
            common::Profile {
                company_domain: Some("no domain".into()),
                ..Default::default()
            },
            "profile.company_domain",
        ),
        (
            common::Profile {
                seniority: 99,
                ..Default::default()
            },
            "profile.seniority",
        ),
    ];
    for (profile, field) in profile_cases {
        let status = client
            .identify(identify("m", "u", "", profile))
            .await
            .expect_err(field);
        assert_eq!(status.code(), Code::InvalidArgument, "{field}");
        assert_eq!(violated_fields(&status), [field]);
    }

    let status = client
        .batch(pb::BatchRequest { items: vec![] })
        .await
        .expect_err("empty batch");
    assert_eq!(violated_fields(&status), ["items"]);
    let too_many = (0..501)
        .map(|i| pb::BatchItem {
            item: Some(pb::batch_item::Item::Track(track(
                &format!("b{i}"),
                "u",
                "",
                activity("page_view", 0, &[]),
            ))),
        })
        .collect();
    let status = client
        .batch(pb::BatchRequest { items: too_many })
        .await
        .expect_err("too big");
    assert_eq!(violated_fields(&status), ["items"]);

    let status = client
        .get_timeline(pb::GetTimelineRequest {
            lead_id: "x".into(),
            page_token: "garbage".into(),
            page_size: 5000,
            ..Default::default()
        })
        .await
        .expect_err("bad page");
    assert_eq!(violated_fields(&status), ["page_size", "page_token"]);
    server.stop().await;
}

async fn a_bad_batch_item_fails_alone(db: TestDb) {
    let server = Ingestion::start(&db, Options::default()).await;
    let mut client = server.client(None);
    let items = vec![
        pb::batch_item::Item::Identify(identify(
            "b1",
            "u1",
            "",
            common::Profile {
                email: Some("a@b.io".into()),
                ..Default::default()
            },
        )),
        pb::batch_item::Item::Track(track("b2", "u1", "", activity("unknown_thing", 0, &[]))),
        pb::batch_item::Item::Track(track("b3", "u1", "", activity("pricing_view", 0, &[]))),
    ];
    let response = client
        .batch(pb::BatchRequest {
            items: items
                .into_iter()
                .map(|i| pb::BatchItem { item: Some(i) })
                .collect(),
        })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!((response.accepted_count, response.rejected_count), (2, 1));
    let results: Vec<ItemResult> = response
        .results
        .into_iter()
        .map(|r| r.result.expect("result"))
        .collect();
    let ItemResult::Identify(first) = &results[0] else {
        panic!("identify answer expected")
    };
    let ItemResult::Error(error) = &results[1] else {
        panic!("error expected")
    };
    assert_eq!(error.code, Code::InvalidArgument as i32);
    assert_eq!(
        error.field_violations[0].field,
        "items[1].track.activity.type"
    );
    let ItemResult::Track(third) = &results[2] else {
        panic!("track answer expected")
    };
    assert_eq!(third.lead_id, first.lead_id);
    let timeline = client
        .get_timeline(pb::GetTimelineRequest {
            lead_id: first.lead_id.clone(),
            ..Default::default()
        })
        .await
        .expect("timeline")
        .into_inner();
    assert_eq!(
        timeline.entries.len(),
        1,
        "only the valid track was recorded"
    );
    server.stop().await;
}

async fn a_replayed_message_id_has_no_second_effect(db: TestDb) {
    let receiver = ScoringReceiver::start(0).await;
    let server = Ingestion::start(
        &db,
        Options {
            scoring_url: Some(receiver.url()),
            ..Options::default()
        },
    )
    .await;
    let mut client = server.client(None);
    let request = track("same-id", "u1", "", activity("email_open", 1, &[]));
    let first = client
        .track(request.clone())
        .await
        .expect("first")
        .into_inner();
    let again = client.track(request).await.expect("replay").into_inner();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(
        (again.lead_id.as_str(), again.activity_id.as_str()),
        (first.lead_id.as_str(), first.activity_id.as_str())
    );
    let lead = client
        .get_lead(pb::GetLeadRequest {
            lead_id: first.lead_id.clone(),
        })
        .await
        .expect("lead")
        .into_inner();
    assert_eq!(lead.lead.expect("lead").activity_count, 1);
    // One more distinct message, so that once it arrives the replay would have arrived too.
    client
        .track(track("other-id", "u1", "", activity("email_open", 0, &[])))
        .await
        .expect("other");
    let events = receiver.wait_for(2).await;
    assert_eq!(events.len(), 2, "the replay enqueued nothing");
    server.stop().await;
}

/// A request answered before `requests` was rebuilt without a rowid (SQLite) is answered the
/// same after it: its replay is a duplicate with the stored lead and activity.
async fn answered_requests_survive_the_requests_rebuild(db: TestDb) {
    use leadflow_ingestion::store::migrations::Migrator;
    use sea_orm::ConnectionTrait;
    use sea_orm_migration::MigratorTrait;

    let conn = leadflow_runtime::db::connect(&db.url, 2)
        .await
        .expect("connect");
    Migrator::up(&conn, Some(4))
        .await
        .expect("the migrations before it");
    conn.execute_unprepared(
        "INSERT INTO requests (tenant_id, message_id, lead_id, activity_id, merged_lead_ids, created_at) \
         VALUES ('default', 'old-id', 'lead-old', 'activity-old', '[]', '2026-12-01 10:00:00+00:00')",
    )
    .await
    .expect("an old answer");
    let server = Ingestion::start(&db, Options::default()).await;

    let replay = server
        .client(None)
        .track(track("old-id", "u1", "", activity("email_open", 1, &[])))
        .await
        .expect("replay")
        .into_inner();

    assert!(replay.duplicate);
    assert_eq!(
        (replay.lead_id.as_str(), replay.activity_id.as_str()),
        ("lead-old", "activity-old")
    );
    if conn.get_database_backend() == sea_orm::DatabaseBackend::Sqlite {
        let sql = leadflow_test_support::sqlite_schema_sql(&conn, "requests").await;
        assert!(sql.ends_with("WITHOUT ROWID"), "{sql}");
    }
    server.stop().await;
}

async fn anonymous_history_joins_the_known_lead(db: TestDb) {
    let server = Ingestion::start(&db, Options::default()).await;
    let mut client = server.client(None);
    // A visitor browses anonymously, then identifies.
    let anonymous_lead = client
        .track(track("a1", "", "cookie-1", activity("page_view", 5, &[])))
        .await
        .expect("t")
        .into_inner()
        .lead_id;
    client
        .track(track(
            "a2",
            "",
            "cookie-1",
            activity("pricing_view", 4, &[]),
        ))
        .await
        .expect("t");
    let known = client
        .identify(identify(
            "a3",
            "user-1",
            "cookie-1",
            common::Profile {
                email: Some("bo@acme.io".into()),
                ..Default::default()
            },
        ))
        .await
        .expect("identify")
        .into_inner();
    assert_eq!(
        known.lead_id, anonymous_lead,
        "the anonymous lead became known"
    );

    // A known user with history, and separately an anonymous visitor: identify links them.
    let user_lead = client
        .track(track("b1", "user-2", "", activity("email_open", 6, &[])))
        .await
        .expect("t")
        .into_inner()
        .lead_id;
    let stranger = client
        .track(track(
            "b2",
            "",
            "cookie-2",
            activity("content_download", 3, &[]),
        ))
        .await
        .expect("t")
        .into_inner()
        .lead_id;
    assert_ne!(user_lead, stranger);
    let linked = client
        .identify(identify(
            "b3",
            "user-2",
            "cookie-2",
            common::Profile::default(),
        ))
        .await
        .expect("identify")
        .into_inner();
    assert_eq!(linked.lead_id, user_lead);
    assert_eq!(linked.merged_lead_ids, std::slice::from_ref(&stranger));
    client
        .track(track(
            "b4",
            "",
            "cookie-2",
            activity("pricing_view", 1, &[]),
        ))
        .await
        .expect("t");

    let timeline = client
        .get_timeline(pb::GetTimelineRequest {
            lead_id: user_lead.clone(),
            ..Default::default()
        })
        .await
        .expect("tl")
        .into_inner();
    let types: Vec<&str> = timeline
        .entries
        .iter()
        .map(|e| e.activity.as_ref().expect("a").r#type.as_str())
        .collect();
    assert_eq!(
        types,
        ["pricing_view", "content_download", "email_open"],
        "one ordered history"
    );
    assert_eq!(timeline.entries[1].original_lead_id, stranger);

    let merged = client
        .get_lead(pb::GetLeadRequest {
            lead_id: stranger.clone(),
        })
        .await
        .expect("merged lead")
        .into_inner();
    assert!(merged.merged, "the merged id answers as merged");
    assert_eq!(merged.lead.expect("lead").lead_id, user_lead);
    server.stop().await;
}

async fn two_known_leads_merge(db: TestDb) {
    let receiver = ScoringReceiver::start(0).await;
    let server = Ingestion::start(
        &db,
        Options {
            scoring_url: Some(receiver.url()),
            ..Options::default()
        },
    )
    .await;
    let mut client = server.client(None);
    let a = client
        .identify(identify(
            "m1",
            "crm-1",
            "",
            common::Profile {
                email: Some("ana@acme.io".into()),
                ..Default::default()
            },
        ))
        .await
        .expect("a")
        .into_inner()
        .lead_id;
    let b = client
        .identify(identify(
            "m2",
            "web-9",
            "",
            common::Profile {
                title: Some("CMO".into()),
                email: Some("ana.old@acme.io".into()),
                ..Default::default()
            },
        ))
        .await
        .expect("b")
        .into_inner()
        .lead_id;
    client
        .track(track("m3", "crm-1", "", activity("email_open", 2, &[])))
        .await
        .expect("t");
    client
        .track(track(
            "m4",
            "web-9",
            "",
            activity("webinar_attended", 1, &[]),
        ))
        .await
        .expect("t");
    let merge = pb::MergeLeadsRequest {
        message_id: "merge-1".into(),
        source_lead_id: b.clone(),
        target_lead_id: a.clone(),
    };
    let merged = client
        .merge_leads(merge.clone())
        .await
        .expect("merge")
        .into_inner();
    let lead = merged.lead.expect("lead");
    assert_eq!(lead.lead_id, a);
    assert_eq!(lead.merged_lead_ids, std::slice::from_ref(&b));
    assert_eq!(lead.user_ids, ["crm-1", "web-9"]);
    let profile = lead.profile.expect("profile");
    assert_eq!(
        profile.email.as_deref(),
        Some("ana@acme.io"),
        "the survivor's attributes win"
    );
    assert_eq!(
        profile.title.as_deref(),
        Some("CMO"),
        "gaps are filled from the merged lead"
    );
    assert_eq!(lead.activity_count, 2);
    assert!(
        client
            .merge_leads(merge)
            .await
            .expect("replay")
            .into_inner()
            .duplicate
    );

    let after = client
        .track(track("m5", "web-9", "", activity("email_open", 0, &[])))
        .await
        .expect("a track after the merge")
        .into_inner();
    assert_eq!(
        after.lead_id, a,
        "the merged lead's ids record on the survivor"
    );

    let again = pb::MergeLeadsRequest {
        message_id: "merge-2".into(),
        source_lead_id: b.clone(),
        target_lead_id: a.clone(),
    };
    assert_eq!(
        client
            .merge_leads(again)
            .await
            .expect_err("already merged")
            .code(),
        Code::FailedPrecondition
    );
    let unknown = pb::MergeLeadsRequest {
        message_id: "merge-3".into(),
        source_lead_id: "nope".into(),
        target_lead_id: a.clone(),
    };
    assert_eq!(
        client
            .merge_leads(unknown)
            .await
            .expect_err("unknown")
            .code(),
        Code::NotFound
    );

    let events = receiver.wait_for(5).await;
    let merge_event = events.iter().find_map(|e| match &e.event {
        Some(pb::lead_event::Event::LeadsMerged(m)) => Some((
            e.header.as_ref().expect("header").lead_id.clone(),
            m.source_lead_id.clone(),
        )),
        _ => None,
    });
    assert_eq!(
        merge_event,
        Some((a, b)),
        "scoring is told who absorbed whom"
    );
    server.stop().await;
}

async fn every_event_reaches_scoring_once_in_order_despite_failures(db: TestDb) {
    let receiver = ScoringReceiver::start(3).await;
    let server = Ingestion::start(
        &db,
        Options {
            scoring_url: Some(receiver.url()),
            ..Options::default()
        },
    )
    .await;
    let mut client = server.client(None);
    let mut expected: HashMap<String, Vec<String>> = HashMap::new();
    for i in 0..30 {
        let user = format!("user-{}", i % 4);
        let answer = client
            .track(track(
                &format!("e{i}"),
                &user,
                "",
                activity("page_view", 0, &[("seq", &i.to_string())]),
            ))
            .await
            .expect("track")
            .into_inner();
        expected
            .entry(answer.lead_id)
            .or_default()
            .push(i.to_string());
    }
    let events = receiver.wait_for(30).await;
    assert_eq!(events.len(), 30, "exactly once after dedupe");
    let mut received: HashMap<String, Vec<String>> = HashMap::new();
    for event in &events {
        if let Some(pb::lead_event::Event::ActivityRecorded(recorded)) = &event.event {
            let seq = recorded.activity.as_ref().expect("activity").properties["seq"].clone();
            received
                .entry(event.header.as_ref().expect("header").lead_id.clone())
                .or_default()
                .push(seq);
        }
    }
    assert_eq!(received, expected, "per-lead order");
    assert!(receiver.failed_calls() >= 3);
    server.stop().await;
}

async fn a_restart_delivers_what_was_left(db: TestDb) {
    let receiver = ScoringReceiver::start(0).await;
    let unreachable = harness::unused_url().await;
    let server = Ingestion::start(
        &db,
        Options {
            scoring_url: Some(unreachable),
            ..Options::default()
        },
    )
    .await;
    let mut client = server.client(None);
    for i in 0..5 {
        client
            .track(track(
                &format!("r{i}"),
                "u",
                "",
                activity("email_open", 0, &[]),
            ))
            .await
            .expect("track");
    }
    server.stop().await;
    let server = Ingestion::start(
        &db,
        Options {
            scoring_url: Some(receiver.url()),
            ..Options::default()
        },
    )
    .await;
    let events = receiver.wait_for(5).await;
    assert_eq!(events.len(), 5);
    server.stop().await;
}

/// A server with two tenants: `acme` (key `key-acme`) and `globex` (key `key-globex`).
async fn two_tenants(db: &TestDb) -> Ingestion {
    Ingestion::start(
        db,
        Options {
            api_keys: vec!["acme=key-acme".into(), "globex=key-globex".into()],
            ..Options::default()
        },
    )
    .await
}

async fn keys_decide_the_tenant(db: TestDb) {
    let server = two_tenants(&db).await;
    let status = server
        .client(None)
        .track(track("m", "u", "", activity("page_view", 0, &[])))
        .await
        .expect_err("no key");
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = server
        .client(Some("wrong"))
        .track(track("m", "u", "", activity("page_view", 0, &[])))
        .await
        .expect_err("bad key");
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut acme = server.client(Some("key-acme"));
    let lead_id = acme
        .track(track("m", "u", "", activity("page_view", 0, &[])))
        .await
        .expect("acme track")
        .into_inner()
        .lead_id;
    assert!(
        acme.get_lead(pb::GetLeadRequest {
            lead_id: lead_id.clone()
        })
        .await
        .is_ok()
    );
    let mut globex = server.client(Some("key-globex"));
    let status = globex
        .get_lead(pb::GetLeadRequest {
            lead_id: lead_id.clone(),
        })
        .await
        .expect_err("other tenant");
    assert_eq!(
        status.code(),
        Code::NotFound,
        "tenant B cannot read tenant A's lead"
    );
    // The same user id under another tenant is another lead.
    let globex_lead = globex
        .track(track("m", "u", "", activity("page_view", 0, &[])))
        .await
        .expect("globex")
        .into_inner();
    assert_ne!(globex_lead.lead_id, lead_id);
    assert!(!globex_lead.duplicate, "message ids are per tenant");

    let status = server
        .internal_client(Some("key-acme"))
        .get_lead_timeline(pb::GetLeadTimelineRequest {
            tenant_id: "acme".into(),
            lead_id: lead_id.clone(),
            ..Default::default()
        })
        .await
        .expect_err("tenant key on internal rpc");
    assert_eq!(status.code(), Code::PermissionDenied);
    let timeline = server
        .internal_client(Some(harness::INTERNAL_KEY))
        .get_lead_timeline(pb::GetLeadTimelineRequest {
            tenant_id: "acme".into(),
            lead_id,
            ..Default::default()
        })
        .await
        .expect("service credential")
        .into_inner();
    assert_eq!(timeline.timeline.expect("timeline").entries.len(), 1);
    server.stop().await;
}

async fn health_and_reflection(db: TestDb) {
    let server = Ingestion::start(
        &db,
        Options {
            api_keys: vec!["acme=k".into()],
            ..Options::default()
        },
    )
    .await;
    assert_eq!(
        server.health("").await,
        "SERVING",
        "health needs no credentials"
    );
    assert_eq!(
        server
            .health("leadflow.ingestion.v1.IngestionService")
            .await,
        "SERVING"
    );
    let services = server.reflected_services().await;
    for name in [
        "leadflow.ingestion.v1.IngestionService",
        "leadflow.ingestion.v1.IngestionInternalService",
        "grpc.health.v1.Health",
    ] {
        assert!(services.iter().any(|s| s == name), "{name} in {services:?}");
    }
    server.stop().await;
}

async fn the_callers_trace_continues_through_the_outbox(db: TestDb) {
    harness::init_telemetry();
    let receiver = ScoringReceiver::start(0).await;
    let server = Ingestion::start(
        &db,
        Options {
            scoring_url: Some(receiver.url()),
            ..Options::default()
        },
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut request =
        tonic::Request::new(track("traced", "u", "", activity("demo_request", 0, &[])));
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b7-01")
            .parse()
            .expect("ascii"),
    );
    server.client(None).track(request).await.expect("track");
    let events = receiver.wait_for(1).await;
    let carried = events[0]
        .header
        .as_ref()
        .expect("header")
        .trace_context
        .get("traceparent")
        .cloned()
        .unwrap_or_default();
    assert!(
        carried.contains(trace_id),
        "the event carries the caller's trace: {carried:?}"
    );
    let inbound = receiver.traceparents();
    assert!(!inbound.is_empty(), "the relay call carries a traceparent");
    server.stop().await;
}

/// Batches on a lead that already exists: one only tracks it (on SQLite its row is not read),
/// the next links a new cookie to it and then names the lead by that cookie alone (its row,
/// not found by the cookie before the batch, is read by the command-by-command path). Every
/// item lands on the one lead, and the profile change sticks.
async fn batches_on_a_known_lead_track_it_and_change_its_profile(db: TestDb) {
    let server = Ingestion::start(&db, Options::default()).await;
    let mut client = server.client(None);
    let known = client
        .identify(identify(
            "k0",
            "ann@acme.io",
            "",
            common::Profile {
                email: Some("ann@acme.io".into()),
                ..Default::default()
            },
        ))
        .await
        .expect("identify")
        .into_inner()
        .lead_id;
    let batch = |items: Vec<pb::batch_item::Item>| pb::BatchRequest {
        items: items
            .into_iter()
            .map(|i| pb::BatchItem { item: Some(i) })
            .collect(),
    };
    let leads_of = |response: pb::BatchResponse| -> Vec<String> {
        response
            .results
            .into_iter()
            .map(|r| match r.result.expect("result") {
                ItemResult::Track(t) => t.lead_id,
                ItemResult::Identify(i) => i.lead_id,
                ItemResult::Error(e) => panic!("unexpected error {e:?}"),
            })
            .collect()
    };
    let tracked = client
        .batch(batch(vec![
            pb::batch_item::Item::Track(track(
                "k1",
                "ann@acme.io",
                "",
                activity("page_view", 3, &[]),
            )),
            pb::batch_item::Item::Track(track(
                "k2",
                "ann@acme.io",
                "",
                activity("email_open", 2, &[]),
            )),
        ]))
        .await
        .expect("tracking batch")
        .into_inner();
    assert_eq!(leads_of(tracked), [known.clone(), known.clone()]);
    let named = client
        .batch(batch(vec![
            pb::batch_item::Item::Track(track(
                "k3",
                "ann@acme.io",
                "cookie-7",
                activity("page_view", 1, &[]),
            )),
            pb::batch_item::Item::Identify(identify(
                "k4",
                "",
                "cookie-7",
                common::Profile {
                    title: Some("CTO".into()),
                    ..Default::default()
                },
            )),
        ]))
        .await
        .expect("naming batch")
        .into_inner();
    assert_eq!(leads_of(named), [known.clone(), known.clone()]);
    let lead = client
        .get_lead(pb::GetLeadRequest { lead_id: known })
        .await
        .expect("lead")
        .into_inner()
        .lead
        .expect("lead");
    assert_eq!(lead.activity_count, 3);
    assert_eq!(lead.anonymous_ids, ["cookie-7"]);
    let profile = lead.profile.expect("profile");
    assert_eq!(profile.email.as_deref(), Some("ann@acme.io"));
    assert_eq!(profile.title.as_deref(), Some("CTO"));
    server.stop().await;
}

/// One batch that introduces a visitor, then names them, then repeats a message id: the repeat
/// has no second effect, and every item lands on the one lead.
async fn a_batch_links_its_own_ids_and_applies_a_repeated_message_once(db: TestDb) {
    let receiver = ScoringReceiver::start(0).await;
    let server = Ingestion::start(
        &db,
        Options {
            scoring_url: Some(receiver.url()),
            ..Options::default()
        },
    )
    .await;
    let mut client = server.client(None);
    let items = vec![
        pb::batch_item::Item::Track(track("v1", "", "cookie-9", activity("page_view", 3, &[]))),
        pb::batch_item::Item::Identify(identify(
            "v2",
            "kim@acme.io",
            "cookie-9",
            common::Profile {
                email: Some("kim@acme.io".into()),
                ..Default::default()
            },
        )),
        pb::batch_item::Item::Track(track(
            "v3",
            "kim@acme.io",
            "",
            activity("email_open", 2, &[]),
        )),
        pb::batch_item::Item::Track(track("v1", "", "cookie-9", activity("page_view", 3, &[]))),
    ];
    let response = client
        .batch(pb::BatchRequest {
            items: items
                .into_iter()
                .map(|i| pb::BatchItem { item: Some(i) })
                .collect(),
        })
        .await
        .expect("batch")
        .into_inner();
    let answers: Vec<(String, String, bool)> = response
        .results
        .into_iter()
        .map(|r| match r.result.expect("result") {
            ItemResult::Track(t) => (t.lead_id, t.activity_id, t.duplicate),
            ItemResult::Identify(i) => (i.lead_id, String::new(), i.duplicate),
            ItemResult::Error(e) => panic!("unexpected error {e:?}"),
        })
        .collect();
    let lead_id = answers[0].0.clone();
    assert!(answers.iter().all(|a| a.0 == lead_id), "{answers:?}");
    assert_eq!(
        answers.iter().map(|a| a.2).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    assert_eq!(
        answers[3].1, answers[0].1,
        "the repeat answers the first activity"
    );
    let lead = client
        .get_lead(pb::GetLeadRequest {
            lead_id: lead_id.clone(),
        })
        .await
        .expect("lead")
        .into_inner()
        .lead
        .expect("lead");
    assert_eq!(lead.activity_count, 2);
    assert_eq!(lead.user_ids, ["kim@acme.io"]);
    assert_eq!(lead.anonymous_ids, ["cookie-9"]);
    assert_eq!(
        lead.profile.and_then(|p| p.email).as_deref(),
        Some("kim@acme.io")
    );
    let events = receiver.wait_for(3).await;
    assert_eq!(
        events.len(),
        3,
        "one event per applied item, none for the repeat"
    );
    // The same batch again: every item answered from the first time.
    let again = client
        .batch(pb::BatchRequest {
            items: vec![pb::BatchItem {
                item: Some(pb::batch_item::Item::Track(track(
                    "v3",
                    "kim@acme.io",
                    "",
                    activity("email_open", 2, &[]),
                ))),
            }],
        })
        .await
        .expect("batch again")
        .into_inner();
    let Some(ItemResult::Track(t)) = again.results[0].result.clone() else {
        panic!("track answer expected")
    };
    assert!(t.duplicate);
    assert_eq!(t.activity_id, answers[2].1);
    server.stop().await;
}

/// Concurrent writes share commits: every call is answered with its own lead, a message id
/// sent twice at once is applied once, and a merge among them is applied on its own.
async fn concurrent_writes_are_committed_together_and_answered_alone(db: TestDb) {
    let server = Ingestion::start(&db, Options::default()).await;
    let client = server.client(None);
    let mut calls = Vec::new();
    for i in 0..40 {
        let mut client = client.clone();
        calls.push(tokio::spawn(async move {
            // The last two calls are one message sent twice at once, by user 18.
            let (user, message) = if i >= 38 {
                ("user-18@acme.io".to_owned(), "twice".to_owned())
            } else {
                (format!("user-{}@acme.io", i % 20), format!("c-{i}"))
            };
            client
                .track(track(&message, &user, "", activity("page_view", 1, &[])))
                .await
                .map(|r| (message, user, r.into_inner()))
        }));
    }
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("join").expect("track"));
    }
    let twice: Vec<_> = answers.iter().filter(|a| a.0 == "twice").collect();
    assert_eq!(twice.iter().filter(|a| !a.2.duplicate).count(), 1);
    assert_eq!(twice[0].2.activity_id, twice[1].2.activity_id);
    let mut by_user: HashMap<String, String> = HashMap::new();
    for (_, user, answer) in &answers {
        let lead = by_user
            .entry(user.clone())
            .or_insert(answer.lead_id.clone());
        assert_eq!(lead, &answer.lead_id, "one lead per user");
    }
    assert_eq!(by_user.len(), 20);
    let mut client = client.clone();
    let mut total = 0;
    for lead_id in by_user.values() {
        let lead = client
            .get_lead(pb::GetLeadRequest {
                lead_id: lead_id.clone(),
            })
            .await
            .expect("lead")
            .into_inner()
            .lead
            .expect("lead");
        total += lead.activity_count;
    }
    assert_eq!(total, 39, "40 calls, one of them a repeat");
    server.stop().await;
}

/// Concurrent writes of two tenants share commits, their runs interleaved in a group: a later
/// run of a tenant sees what an earlier run of the same group wrote, so no count is lost.
async fn interleaved_tenants_in_one_group_lose_no_write(db: TestDb) {
    let server = two_tenants(&db).await;
    let tenants = [
        server.client(Some("key-acme")),
        server.client(Some("key-globex")),
    ];
    let mut leads = Vec::new();
    for client in &tenants {
        let answer = client
            .clone()
            .track(track("first", "user-1", "", activity("page_view", 0, &[])))
            .await
            .expect("first track")
            .into_inner();
        leads.push(answer.lead_id);
    }
    let mut calls = Vec::new();
    for i in 0..60 {
        let mut client = tenants[i % 2].clone();
        calls.push(tokio::spawn(async move {
            client
                .track(track(
                    &format!("c-{i}"),
                    "user-1",
                    "",
                    activity("page_view", 1, &[]),
                ))
                .await
        }));
    }
    for call in calls {
        call.await.expect("join").expect("track");
    }
    for (client, lead_id) in tenants.iter().zip(leads) {
        let lead = client
            .clone()
            .get_lead(pb::GetLeadRequest { lead_id })
            .await
            .expect("lead")
            .into_inner()
            .lead
            .expect("lead");
        assert_eq!(
            lead.activity_count, 31,
            "the first track and 30 concurrent ones"
        );
    }
    server.stop().await;
}

/// The first page of ten of `lead_id`'s timeline, every type, read from the store.
fn newest_ten(lead_id: &str) -> leadflow_ingestion::store::TimelineQuery {
    leadflow_ingestion::store::TimelineQuery {
        lead_id: lead_id.to_owned(),
        types: Vec::new(),
        start: None,
        end: None,
        page_size: 10,
        after: None,
    }
}

/// Lead and timeline reads go through the read-only connections, so they answer while the
/// one writer connection is held (on SQLite a group commit holds it; here a transaction the
/// test keeps open). Before, they queued for it: a hand-off's warm context timed out behind
/// ingestion's writes.
async fn reads_answer_while_the_writer_is_held(db: TestDb) {
    use leadflow_ingestion::convert::{self, Command};
    use leadflow_ingestion::store::{Store, migrations::Migrator};
    use leadflow_runtime::outbox::{SharedDeletes, Wakeup};

    let leadflow_runtime::db::Pools { writer, reader, .. } =
        leadflow_runtime::db::open_with_reader::<Migrator>(&db.url, 5)
            .await
            .expect("open");
    let store = Store::new(writer.clone(), Wakeup::new(), SharedDeletes::new()).with_reader(reader);
    let now = chrono::Utc::now();
    let commands = vec![
        Command::Identify(
            convert::identify(
                identify("m-1", "ada@acme.io", "", common::Profile::default()),
                now,
            )
            .expect("valid"),
        ),
        Command::Track(
            convert::track(
                track("m-2", "ada@acme.io", "", activity("page_view", 1, &[])),
                now,
            )
            .expect("valid"),
        ),
    ];
    let accepted = store.apply("t", commands, now).await.expect("apply");
    let lead_id = accepted[0].lead_id.clone();

    let reads = async {
        let lead = store
            .lead("t", &lead_id)
            .await
            .expect("lead")
            .expect("known");
        let page = store
            .timeline("t", &newest_ten(&lead_id))
            .await
            .expect("timeline")
            .expect("known");
        (lead, page)
    };
    let (lead, page) = beside_a_held_writer(&writer, reads).await;
    assert_eq!(lead.user_ids, vec!["ada@acme.io".to_owned()]);
    assert_eq!(page.entries.len(), 1);
}

/// Returns once a connection to the test's PostgreSQL database waits for a lock.
async fn until_a_lock_is_awaited(conn: &sea_orm::DatabaseConnection) {
    use sea_orm::{ConnectionTrait, Statement};

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let waiting = Statement::from_string(
        sea_orm::DatabaseBackend::Postgres,
        "SELECT count(*) AS n FROM pg_stat_activity \
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    );
    loop {
        let row = conn
            .query_one_raw(waiting.clone())
            .await
            .expect("read the waits")
            .expect("a row");
        if row.try_get::<i64>("", "n").expect("a count") > 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing ever waited for a lock"
        );
        tokio::task::yield_now().await;
    }
}

/// On PostgreSQL, a command that resolved an anonymous id to a lead another replica is
/// merging away meanwhile is answered ABORTED once that merge commits, not applied to the
/// merged-away lead; sent again, it resolves to the survivor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lead_merged_while_a_command_waited_for_it_aborts_the_command() {
    use leadflow_ingestion::convert::{self, Command};
    use leadflow_ingestion::error::Error;
    use leadflow_ingestion::store::{Store, migrations::Migrator};
    use leadflow_runtime::outbox::{SharedDeletes, Wakeup};
    use sea_orm::{ConnectionTrait, TransactionTrait};

    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let writer = leadflow_runtime::db::open::<Migrator>(&db.url, 5)
        .await
        .expect("open");
    let store = std::sync::Arc::new(Store::new(
        writer.clone(),
        Wakeup::new(),
        SharedDeletes::new(),
    ));
    let now = chrono::Utc::now();
    let lead_of = |accepted: Vec<leadflow_ingestion::store::Accepted>| accepted[0].lead_id.clone();
    let visit = move |id: &str, user: &str, anonymous: &str| {
        let message = track(id, user, anonymous, activity("page_view", 1, &[]));
        vec![Command::Track(convert::track(message, now).expect("valid"))]
    };
    // A visitor's anonymous lead, a known user's lead, and another visitor's.
    let visitor = lead_of(
        store
            .apply("t", visit("m-1", "", "cookie-1"), now)
            .await
            .expect("visitor"),
    );
    let user = lead_of(
        store
            .apply("t", visit("m-2", "ada@acme.io", ""), now)
            .await
            .expect("user"),
    );
    let other = lead_of(
        store
            .apply("t", visit("m-3", "", "cookie-2"), now)
            .await
            .expect("other"),
    );

    // Another replica merges the visitor's lead into the other visitor's: the lead locked,
    // the identity moved, the lead marked merged, not committed yet.
    let replica_db = leadflow_runtime::db::connect(&db.url, 1)
        .await
        .expect("another replica");
    let replica = replica_db.begin().await.expect("begin");
    for sql in [
        format!("SELECT 1 FROM leads WHERE tenant_id = 't' AND lead_id = '{visitor}' FOR UPDATE"),
        format!("UPDATE identities SET lead_id = '{other}' WHERE lead_id = '{visitor}'"),
        format!("UPDATE leads SET merged_into = '{other}' WHERE lead_id = '{visitor}'"),
    ] {
        replica
            .execute_unprepared(&sql)
            .await
            .expect("the other merge");
    }

    // The visitor logs in: its anonymous lead (as read before that merge commits) is to merge
    // into the user's. The command waits for the visitor's lead.
    let login = tokio::spawn({
        let store = store.clone();
        async move {
            store
                .apply(
                    "t",
                    visit("m-4", "ada@acme.io", "cookie-1"),
                    chrono::Utc::now(),
                )
                .await
        }
    });
    until_a_lock_is_awaited(&writer).await;
    replica.commit().await.expect("the other merge commits");
    let answer = login.await.expect("the login task");
    assert!(
        matches!(answer, Err(Error::Conflict(_))),
        "answered {answer:?}"
    );
    assert_eq!(
        tonic::Status::from(answer.expect_err("a conflict")).code(),
        Code::Aborted
    );

    // Sent again, the login finds the anonymous id on the survivor and merges that.
    let again = store
        .apply(
            "t",
            visit("m-4", "ada@acme.io", "cookie-1"),
            chrono::Utc::now(),
        )
        .await
        .expect("the retry");
    assert_eq!(again[0].lead_id, user);
    assert_eq!(again[0].merged_lead_ids, [other]);
}

/// On PostgreSQL several replicas write one database. A merge locks both leads before it
/// moves their activities, so an activity another replica is recording on the merged-away lead
/// at that moment is moved with the rest, not left behind on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_waits_for_an_activity_being_recorded_on_its_source() {
    use leadflow_ingestion::convert::{self, Command};
    use leadflow_ingestion::store::{Store, migrations::Migrator};
    use leadflow_runtime::outbox::{SharedDeletes, Wakeup};
    use sea_orm::{ConnectionTrait, Statement, TransactionTrait};

    let Some(db) = TestDb::postgres().await else {
        return;
    };
    let leadflow_runtime::db::Pools { writer, reader, .. } =
        leadflow_runtime::db::open_with_reader::<Migrator>(&db.url, 5)
            .await
            .expect("open");
    let store = std::sync::Arc::new(
        Store::new(writer.clone(), Wakeup::new(), SharedDeletes::new()).with_reader(reader),
    );
    let now = chrono::Utc::now();
    let visit = track("m-1", "", "cookie-1", activity("page_view", 1, &[]));
    let source = store
        .apply(
            "t",
            vec![Command::Track(convert::track(visit, now).expect("valid"))],
            now,
        )
        .await
        .expect("the visitor's lead")[0]
        .lead_id
        .clone();
    let known = identify("m-2", "ada@acme.io", "", common::Profile::default());
    let target = store
        .apply(
            "t",
            vec![Command::Identify(
                convert::identify(known, now).expect("valid"),
            )],
            now,
        )
        .await
        .expect("the user's lead")[0]
        .lead_id
        .clone();

    // Another replica records an activity on the source: the lead locked, the activity
    // written, the transaction not committed yet.
    let other = leadflow_runtime::db::connect(&db.url, 1)
        .await
        .expect("another replica");
    let replica = other.begin().await.expect("begin");
    replica
        .execute_unprepared(&format!(
            "SELECT 1 FROM leads WHERE tenant_id = 't' AND lead_id = '{source}' FOR UPDATE"
        ))
        .await
        .expect("lock the lead");
    replica
        .execute_unprepared(&format!(
            "INSERT INTO activities (activity_id, tenant_id, lead_id, original_lead_id, \
             activity_type, occurred_at_us, received_at, properties) VALUES \
             ('00000000-0000-7000-8000-000000000001', 't', '{source}', '{source}', \
             'pricing_view', 2, '{}', '{{}}')",
            now.to_rfc3339()
        ))
        .await
        .expect("record an activity");

    let merging = tokio::spawn({
        let (store, source, target) = (store.clone(), source.clone(), target.clone());
        async move {
            store
                .merge("t", "m-3", &source, &target, chrono::Utc::now())
                .await
        }
    });
    // The merge is waiting for a lock (before moving anything, or, as it was, after moving
    // what it could see): only then does the other replica commit.
    until_a_lock_is_awaited(&writer).await;
    replica.commit().await.expect("the other replica commits");
    merging.await.expect("the merge task").expect("the merge");

    let timeline = store
        .timeline("t", &newest_ten(&target))
        .await
        .expect("timeline")
        .expect("the survivor");
    let mut types: Vec<&str> = timeline
        .entries
        .iter()
        .map(|e| e.activity_type.as_str())
        .collect();
    types.sort_unstable();
    assert_eq!(types, ["page_view", "pricing_view"]);
    let left = writer
        .query_one_raw(Statement::from_string(
            sea_orm::DatabaseBackend::Postgres,
            format!("SELECT count(*) AS n FROM activities WHERE lead_id = '{source}'"),
        ))
        .await
        .expect("count")
        .expect("a row")
        .try_get::<i64>("", "n")
        .expect("a count");
    assert_eq!(left, 0, "no activity is left on the merged-away lead");
}

/// A lead's activity count and latest activity time follow its timeline, on the single and
/// the batched path, in any order of occurrence; recording an activity leaves the lead's
/// `update_time` (its own last change) where it was, and an `Identify` moves it.
async fn activities_are_counted_without_changing_the_lead(db: TestDb) {
    let server = Ingestion::start(&db, Options::default()).await;
    let mut client = server.client(None);
    let lead_id = client
        .identify(identify("m1", "user-eve", "", common::Profile::default()))
        .await
        .expect("identify")
        .into_inner()
        .lead_id;
    let read = |mut client: pb::ingestion_service_client::IngestionServiceClient<_>| {
        let lead_id = lead_id.clone();
        async move {
            client
                .get_lead(pb::GetLeadRequest { lead_id })
                .await
                .expect("get lead")
                .into_inner()
                .lead
                .expect("lead")
        }
    };
    let before = read(client.clone()).await;
    assert_eq!(before.activity_count, 0);
    assert_eq!(before.last_activity_time, None);

    let latest = activity("page_view", 2, &[]);
    client
        .track(track("m2", "user-eve", "", latest.clone()))
        .await
        .expect("track");
    let items = [5, 9]
        .into_iter()
        .enumerate()
        .map(|(i, hours)| pb::BatchItem {
            item: Some(pb::batch_item::Item::Track(track(
                &format!("b{i}"),
                "user-eve",
                "",
                activity("page_view", hours, &[]),
            ))),
        })
        .collect();
    let batch = client
        .batch(pb::BatchRequest { items })
        .await
        .expect("batch")
        .into_inner();
    assert_eq!(batch.accepted_count, 2, "{batch:?}");

    let tracked = read(client.clone()).await;
    assert_eq!(tracked.activity_count, 3);
    assert_eq!(
        tracked.last_activity_time, latest.occurred_at,
        "the latest occurrence, not the latest recorded"
    );
    assert_eq!(
        tracked.update_time, before.update_time,
        "activities are not changes to the lead"
    );

    client
        .identify(identify(
            "m3",
            "user-eve",
            "",
            common::Profile {
                title: Some("CTO".into()),
                ..Default::default()
            },
        ))
        .await
        .expect("identify again");
    let identified = read(client.clone()).await;
    let time = |lead: &pb::Lead| lead.update_time.map(|t| (t.seconds, t.nanos));
    assert!(
        time(&identified) > time(&before),
        "{:?} after {:?}",
        identified.update_time,
        before.update_time
    );
    assert_eq!(identified.activity_count, 3);
    server.stop().await;
}

/// The relay runs where it is told to (in `leadflow up`, on the drain's runtime of lower
/// priority), its task and its connection to scoring both, and delivers from there.
async fn the_relay_runs_on_the_runtime_it_is_given(db: TestDb) {
    let relay_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime");
    let tasks = || relay_runtime.metrics().num_alive_tasks();
    let receiver = ScoringReceiver::start(0).await;
    let server = Ingestion::start_with_relay_on(
        &db,
        Options {
            scoring_url: Some(receiver.url()),
            ..Options::default()
        },
        relay_runtime.handle().clone(),
    )
    .await;
    server
        .client(None)
        .track(track("m1", "u1", "", activity("email_open", 0, &[])))
        .await
        .expect("track");
    assert_eq!(receiver.wait_for(1).await.len(), 1, "delivered");
    assert!(
        tasks() >= 2,
        "the relay and its connection's tasks run there: {} tasks",
        tasks()
    );
    server.stop().await;
    relay_runtime.shutdown_background();
}

on_both_backends! {
    reads_beside_the_writer => reads_answer_while_the_writer_is_held;
    relay_runtime => the_relay_runs_on_the_runtime_it_is_given;
    round_trip => identify_track_and_read_back;
    activity_summary => activities_are_counted_without_changing_the_lead;
    timeline_paging => timeline_pages_and_filters;
    validation => each_validation_rule_names_its_field;
    batch_partial => a_bad_batch_item_fails_alone;
    idempotency => a_replayed_message_id_has_no_second_effect;
    requests_rebuild => answered_requests_survive_the_requests_rebuild;
    group_commit => concurrent_writes_are_committed_together_and_answered_alone;
    group_commit_tenants => interleaved_tenants_in_one_group_lose_no_write;
    batch_linking => a_batch_links_its_own_ids_and_applies_a_repeated_message_once;
    batch_known_lead => batches_on_a_known_lead_track_it_and_change_its_profile;
    anonymous_linking => anonymous_history_joins_the_known_lead;
    merge => two_known_leads_merge;
    outbox_delivery => every_event_reaches_scoring_once_in_order_despite_failures;
    outbox_restart => a_restart_delivers_what_was_left;
    tenancy => keys_decide_the_tenant;
    health => health_and_reflection;
    tracing => the_callers_trace_continues_through_the_outbox;
}

/// The standalone binary, started as a Deployment would start it, stops cleanly on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_shuts_the_binary_down_cleanly() {
    let db = TestDb::sqlite("ingestion");
    let mut child = harness::spawn_binary(&db);
    let addr = harness::read_listen_addr(&mut child).await;
    assert_eq!(harness::health_at(&addr, "").await, "SERVING");
    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits in time")
        .expect("wait");
    assert!(status.success(), "clean exit after sigterm: {status}");
}
