//! The story, step by step: Dana's journey from her first download to a won deal, and the
//! three leads beside her that do not make it; then her history and the funnel.

use anyhow::Context;
use chrono::{DateTime, Utc};
use leadflow_proto::common::v1::{Bant, BudgetStatus, HandoffKind, LeadStage, RejectionReason};
use leadflow_proto::handoff::v1::Handoff;
use leadflow_proto::qualification::v1::RecordBantRequest;
use leadflow_runtime::pbtime;

use super::clients::Clients;
use super::explain;
use super::handoffs;
use super::labels;
use super::lead::Lead;
use super::print::Printer;
use super::report;
use super::setup::{self, SDR};
use super::story::{self, DANA_DISCOVERY, DEAL_EUR, LETS_TALK};

/// How many contributions an explanation shows.
const TOP_CONTRIBUTIONS: usize = 6;

/// Plays the whole story on the suite `clients` call.
pub(crate) async fn play(mut clients: Clients, out: &Printer) -> anyhow::Result<()> {
    let now = Utc::now();
    let run = run_id();
    let clients = &mut clients;

    out.part("the team and the shared definition");
    setup::team(clients, out, &run).await?;

    out.part("dana, marketing manager at a software company: three weeks of interest");
    let (mut dana, review) = dana_becomes_mql(clients, out, &run, now).await?;

    out.part("beside her: a student, a lead gone cold, and one the sdr turns down");
    beside(clients, out, &run, now).await?;

    out.part("dana, from sdr review to customer");
    dana_becomes_customer(clients, out, &mut dana, &review, now).await?;

    report::history(out, dana.name, &dana.history(clients).await?);
    report::funnel(
        clients,
        out,
        now - chrono::Duration::days(earliest_day()),
        Utc::now() + chrono::Duration::minutes(1),
    )
    .await
}

/// Dana's three weeks of interest make her an MQL: her score explained, and the SDR review
/// hand-off it causes.
async fn dana_becomes_mql(
    clients: &mut Clients,
    out: &Printer,
    run: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<(Lead, Handoff)> {
    let mut dana = Lead::arrive(clients, out, &story::dana(), run, now, true).await?;
    dana.reach(clients, out, LeadStage::Mql).await?;
    let explanation = dana.scored(clients).await?;
    explain::print(out, &explanation, now, TOP_CONTRIBUTIONS);
    let review = handoffs::routed(clients, &dana, HandoffKind::SdrReview).await?;
    handoffs::print(out, &dana, &review);
    Ok((dana, review))
}

/// The SDR accepts Dana; she asks to talk and states her need: an SQL, routed to the
/// account executive, who contacts her and wins the deal.
async fn dana_becomes_customer(
    clients: &mut Clients,
    out: &Printer,
    dana: &mut Lead,
    review: &Handoff,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    handoffs::contact(clients, out, dana, review).await?;
    handoffs::accept(
        clients,
        out,
        dana,
        review,
        "fits the icp, wants to see reporting",
    )
    .await?;
    dana.reach(clients, out, LeadStage::Sal).await?;
    dana.act(clients, out, &LETS_TALK, now).await?;
    let score = explain::parts(&dana.scored(clients).await?);
    out.say(
        dana.name,
        format!(
            "score now {:.1}, grade {}, with the hand-raise",
            score.score,
            labels::grade(score.grade)
        ),
    );
    dana.hand_raise_known(clients).await?;
    record_bant(clients, out, dana, Utc::now()).await?;
    dana.reach(clients, out, LeadStage::Sql).await?;
    let sales = handoffs::routed(clients, dana, HandoffKind::Sales).await?;
    handoffs::print(out, dana, &sales);
    handoffs::contact(clients, out, dana, &sales).await?;
    handoffs::won(clients, out, dana, &sales, DEAL_EUR).await?;
    dana.reach(clients, out, LeadStage::Customer).await
}

/// How many days back the story's first activity is.
fn earliest_day() -> i64 {
    [story::dana(), story::noa(), story::chris(), story::robin()]
        .iter()
        .flat_map(|p| p.acts.iter().map(|a| a.days_ago))
        .max()
        .unwrap_or(0)
}

/// The three other leads: a student and a cold lead that stay leads, and an MQL the SDR
/// rejects as not the ideal customer profile.
async fn beside(
    clients: &mut Clients,
    out: &Printer,
    run: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let noa = Lead::arrive(clients, out, &story::noa(), run, now, false).await?;
    let chris = Lead::arrive(clients, out, &story::chris(), run, now, false).await?;
    let mut robin = Lead::arrive(clients, out, &story::robin(), run, now, false).await?;

    let score = explain::parts(&noa.scored(clients).await?);
    let seen = noa.evaluated(clients, score.score).await?;
    out.say(
        noa.name,
        format!(
            "{}: score {:.1}, grade {} (fit {:.1}: a student with a free-mail address; engagement {:+.1})",
            standing(seen.stage),
            score.score,
            labels::grade(score.grade),
            score.fit,
            score.engagement
        ),
    );

    let score = explain::parts(&chris.scored(clients).await?);
    let seen = chris.evaluated(clients, score.score).await?;
    out.say(
        chris.name,
        format!(
            "{}: score {:.1}, grade {} (fit {:.1} + engagement {:.1}): interest months ago has decayed",
            standing(seen.stage),
            score.score,
            labels::grade(score.grade),
            score.fit,
            score.engagement,
        ),
    );
    out.detail(format!(
        "the {:.0} points it earned then are worth {:.1} now (60-day half-life){}; the same interest today would score {:.1}",
        score.earned,
        score.behaviour,
        if score.inactivity < 0.0 {
            format!(", and no e-mail opened for 14 days costs {:.1}", score.inactivity)
        } else {
            String::new()
        },
        score.fit + score.earned
    ));

    robin.reach(clients, out, LeadStage::Mql).await?;
    let review = handoffs::routed(clients, &robin, HandoffKind::SdrReview).await?;
    handoffs::print(out, &robin, &review);
    handoffs::contact(clients, out, &robin, &review).await?;
    let why = (
        RejectionReason::NotIdealCustomerProfile,
        "a one-person consultancy, not a buyer",
    );
    handoffs::reject(clients, out, &robin, &review, why).await?;
    robin.reach(clients, out, LeadStage::Disqualified).await
}

/// Where a lead stands: `stays a lead`, or its stage.
fn standing(stage: i32) -> String {
    if stage == LeadStage::Lead as i32 {
        "stays a lead".to_owned()
    } else {
        format!("is {}", labels::stage(stage))
    }
}

/// The SDR records what Dana said on the call; the definition's SQL rule decides.
async fn record_bant(
    clients: &mut Clients,
    out: &Printer,
    dana: &Lead,
    now: DateTime<Utc>,
) -> anyhow::Result<()> {
    let decision = now + chrono::Duration::days(DANA_DISCOVERY.decision_in_days);
    clients
        .qualification
        .record_bant(RecordBantRequest {
            request_id: format!("demo-bant-{}", dana.id),
            lead_id: dana.id.clone(),
            bant: Some(Bant {
                budget: BudgetStatus::Expected as i32,
                need: DANA_DISCOVERY.need.to_owned(),
                expected_decision_time: Some(pbtime::to_timestamp(decision)),
                notes: DANA_DISCOVERY.notes.to_owned(),
                ..Default::default()
            }),
            actor_id: SDR.to_owned(),
        })
        .await
        .context("record dana's bant at qualification")?;
    out.say(
        SDR,
        format!(
            "records bant for {}: need \"{}\", decision in {} days, budget expected",
            dana.name, DANA_DISCOVERY.need, DANA_DISCOVERY.decision_in_days
        ),
    );
    Ok(())
}

/// An id unique to this run, so message and request ids never repeat across runs on one
/// suite.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}", nanos % (1 << 40))
}
