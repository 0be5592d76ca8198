//! Hand-offs as the demo sees them: waiting for one to be routed, printing it with its SLA and
//! warm context, and the CRM's side (contact, accept, reject, outcome).

use anyhow::Context;
use leadflow_proto::common::v1::{
    HandoffKind, Money, RejectionReason, SalesOutcome, WonOutcome, sales_outcome,
};
use leadflow_proto::handoff::v1::{
    AcceptHandoffRequest, Handoff, HandoffFilter, HandoffStatus, HandoffView, ListHandoffsRequest,
    RecordContactRequest, RejectHandoffRequest, ReportOutcomeRequest,
};
use leadflow_runtime::pbtime;

use super::clients::Clients;
use super::labels;
use super::lead::Lead;
use super::print::Printer;
use super::wait::Wait;

/// Waits until handoff has routed `lead`'s `kind` hand-off (pending, with its warm context).
pub(crate) async fn routed(
    clients: &mut Clients,
    lead: &Lead,
    kind: HandoffKind,
) -> anyhow::Result<Handoff> {
    let wait = Wait::new(format!(
        "the {} hand-off of {} at handoff",
        labels::kind(kind),
        lead.name
    ));
    loop {
        let seen = match clients
            .handoff
            .list_handoffs(ListHandoffsRequest {
                filter: Some(HandoffFilter {
                    lead_id: lead.id.clone(),
                    kind: kind as i32,
                    statuses: vec![HandoffStatus::Pending as i32],
                    ..Default::default()
                }),
                view: HandoffView::Full as i32,
                ..Default::default()
            })
            .await
        {
            Ok(response) => match response.into_inner().handoffs.pop() {
                Some(handoff) => return Ok(handoff),
                None => "none yet".to_owned(),
            },
            Err(status) => format!("handoff answered {}", status.message()),
        };
        wait.again(&seen).await?;
    }
}

/// Prints `handoff`: where it was routed, its SLA and its warm context.
pub(crate) fn print(out: &Printer, lead: &Lead, handoff: &Handoff) {
    let kind = HandoffKind::try_from(handoff.kind).unwrap_or(HandoffKind::Unspecified);
    let to = if handoff.owner_id.is_empty() {
        "the fallback queue".to_owned()
    } else {
        handoff.owner_id.clone()
    };
    out.say(
        lead.name,
        format!(
            "hand-off for {} → {to} (routing rule {}, v{}), {}",
            labels::kind(kind),
            if handoff.routing_rule_id.is_empty() {
                "-"
            } else {
                &handoff.routing_rule_id
            },
            handoff.routing_rules_version,
            labels::status(handoff.status)
        ),
    );
    let created = handoff.create_time.as_ref().and_then(pbtime::timestamp);
    let deadline = handoff.sla_deadline.as_ref().and_then(pbtime::timestamp);
    if let (Some(created), Some(deadline)) = (created, deadline) {
        out.detail(format!(
            "sla: first contact within {}, by {}",
            labels::span(deadline - created),
            labels::time(deadline)
        ));
    }
    let Some(context) = &handoff.context else {
        out.detail("warm context: none");
        return;
    };
    let score = context
        .score_explanation
        .as_ref()
        .and_then(|e| e.score.clone())
        .unwrap_or_default();
    let activities = labels::counted(
        context
            .recent_activities
            .iter()
            .filter_map(|e| e.activity.as_ref().map(|a| a.r#type.as_str())),
    );
    out.detail(format!(
        "warm context: score {:.1} (grade {}, {} contributions), why: {}, hand-raise: {}",
        score.score,
        labels::grade(score.fit_grade),
        context
            .score_explanation
            .as_ref()
            .map_or(0, |e| e.contributions.len()),
        labels::reason(context.reason),
        if context.hand_raise { "yes" } else { "no" },
    ));
    out.detail(format!(
        "  {} recent activities: {activities}",
        context.recent_activities.len()
    ));
    if let Some(bant) = context.bant.as_ref().filter(|b| !b.need.is_empty()) {
        out.detail(format!(
            "  stated need: \"{}\", decision by {}",
            bant.need,
            labels::pb_time(bant.expected_decision_time.as_ref())
        ));
    }
}

/// The owner makes first contact now; prints how long after the hand-off, against its SLA.
pub(crate) async fn contact(
    clients: &mut Clients,
    out: &Printer,
    lead: &Lead,
    handoff: &Handoff,
) -> anyhow::Result<Handoff> {
    let contacted = clients
        .handoff
        .record_contact(RecordContactRequest {
            request_id: format!("demo-contact-{}", handoff.handoff_id),
            handoff_id: handoff.handoff_id.clone(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("record the contact with {} at handoff", lead.name))?
        .into_inner()
        .handoff
        .context("no hand-off in the answer")?;
    let after = match (
        contacted.create_time.as_ref().and_then(pbtime::timestamp),
        contacted
            .first_contact_time
            .as_ref()
            .and_then(pbtime::timestamp),
    ) {
        (Some(created), Some(contact)) => {
            format!("{} after the hand-off", labels::span(contact - created))
        }
        _ => "after the hand-off".to_owned(),
    };
    out.say(
        &contacted.owner_id,
        format!(
            "contacts {} {after}: {}",
            lead.name,
            if contacted.sla_breached {
                "sla breached"
            } else {
                "within the sla"
            }
        ),
    );
    Ok(contacted)
}

/// The SDR accepts the reviewed lead.
pub(crate) async fn accept(
    clients: &mut Clients,
    out: &Printer,
    lead: &Lead,
    handoff: &Handoff,
    note: &str,
) -> anyhow::Result<()> {
    clients
        .handoff
        .accept_handoff(AcceptHandoffRequest {
            request_id: format!("demo-accept-{}", handoff.handoff_id),
            handoff_id: handoff.handoff_id.clone(),
            actor_id: handoff.owner_id.clone(),
            note: note.to_owned(),
        })
        .await
        .with_context(|| format!("accept {}'s hand-off at handoff", lead.name))?;
    out.say(
        &handoff.owner_id,
        format!("accepts {} (\"{note}\")", lead.name),
    );
    Ok(())
}

/// The SDR rejects the reviewed lead for `reason`.
pub(crate) async fn reject(
    clients: &mut Clients,
    out: &Printer,
    lead: &Lead,
    handoff: &Handoff,
    (reason, note): (RejectionReason, &str),
) -> anyhow::Result<()> {
    clients
        .handoff
        .reject_handoff(RejectHandoffRequest {
            request_id: format!("demo-reject-{}", handoff.handoff_id),
            handoff_id: handoff.handoff_id.clone(),
            reason: reason as i32,
            actor_id: handoff.owner_id.clone(),
            note: note.to_owned(),
        })
        .await
        .with_context(|| format!("reject {}'s hand-off at handoff", lead.name))?;
    out.say(
        &handoff.owner_id,
        format!(
            "rejects {}: {} (\"{note}\")",
            lead.name,
            labels::rejection(reason as i32)
        ),
    );
    Ok(())
}

/// Sales reports the deal won, for `eur` euros.
pub(crate) async fn won(
    clients: &mut Clients,
    out: &Printer,
    lead: &Lead,
    handoff: &Handoff,
    eur: i64,
) -> anyhow::Result<()> {
    clients
        .handoff
        .report_outcome(ReportOutcomeRequest {
            request_id: format!("demo-won-{}", handoff.handoff_id),
            handoff_id: handoff.handoff_id.clone(),
            outcome: Some(SalesOutcome {
                outcome: Some(sales_outcome::Outcome::Won(WonOutcome {
                    amount: Some(Money {
                        currency_code: "EUR".to_owned(),
                        units: eur,
                        nanos: 0,
                    }),
                })),
            }),
            actor_id: handoff.owner_id.clone(),
            ..Default::default()
        })
        .await
        .with_context(|| format!("report {}'s deal won at handoff", lead.name))?;
    out.say(
        &handoff.owner_id,
        format!(
            "reports the deal with {} won: eur {}",
            lead.name,
            labels::thousands(eur)
        ),
    );
    Ok(())
}
