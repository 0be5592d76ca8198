//! A lead of the story as the demo follows it: its arrival at ingestion, and waiting for
//! scoring and qualification to catch up with it.

use std::collections::HashSet;

use anyhow::Context;
use chrono::{DateTime, Utc};
use leadflow_proto::common::v1::{Activity, LeadStage};
use leadflow_proto::ingestion::v1::{IdentifyRequest, LeadIdentity, TrackRequest};
use leadflow_proto::qualification::v1::{
    GetHistoryRequest, GetLeadStageRequest, LeadQualification,
};
use leadflow_proto::scoring::v1::{ContributionKind, ExplainScoreRequest, ScoreExplanation};
use leadflow_runtime::pbtime;

use super::clients::Clients;
use super::labels;
use super::print::Printer;
use super::story::{Act, Person};
use super::wait::Wait;

/// A lead the demo created and follows.
#[derive(Debug)]
pub(crate) struct Lead {
    /// The short name the demo prints.
    pub(crate) name: &'static str,
    /// The lead id ingestion gave it.
    pub(crate) id: String,
    /// The id this run knows the lead by at ingestion.
    user_id: String,
    /// Unique to this run, so a second demo on the same suite repeats nothing.
    run: String,
    /// Every activity tracked, by ingestion's id.
    activity_ids: Vec<String>,
    /// How many of its transitions were printed.
    shown: usize,
}

impl Lead {
    /// Identifies `person` at ingestion and tracks its acts (as of `now`), printing each act
    /// when `one_by_one`, otherwise one summary line.
    pub(crate) async fn arrive(
        clients: &mut Clients,
        out: &Printer,
        person: &Person,
        run: &str,
        now: DateTime<Utc>,
        one_by_one: bool,
    ) -> anyhow::Result<Self> {
        let user_id = format!("demo-{run}-{}", person.name);
        let lead_id = clients
            .ingestion
            .identify(IdentifyRequest {
                message_id: format!("demo-{run}-{}-profile", person.name),
                identity: Some(identity(&user_id)),
                profile: Some(person.profile.clone()),
                occurred_at: person
                    .acts
                    .first()
                    .map(|act| pbtime::to_timestamp(now - chrono::Duration::days(act.days_ago))),
            })
            .await
            .with_context(|| format!("identify {} at ingestion", person.name))?
            .into_inner()
            .lead_id;
        out.say(person.name, labels::profile(&person.profile));
        let mut lead = Self {
            name: person.name,
            id: lead_id,
            user_id,
            run: run.to_owned(),
            activity_ids: Vec::new(),
            shown: 0,
        };
        for act in &person.acts {
            if one_by_one {
                lead.act(clients, out, act, now).await?;
            } else {
                lead.track(clients, act, now).await?;
            }
        }
        if !one_by_one {
            out.say(lead.name, summary(&person.acts));
        }
        Ok(lead)
    }

    /// Tracks `act` at ingestion (see [`Lead::track`]) and prints it.
    pub(crate) async fn act(
        &mut self,
        clients: &mut Clients,
        out: &Printer,
        act: &Act,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        self.track(clients, act, now).await?;
        out.say(
            self.name,
            format!(
                "{}: {} ({})",
                labels::days_ago(act.days_ago),
                act.what,
                act.kind
            ),
        );
        Ok(())
    }

    /// Tracks `act` at ingestion, dated `act.days_ago` days before `now`.
    async fn track(
        &mut self,
        clients: &mut Clients,
        act: &Act,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let at = now - chrono::Duration::days(act.days_ago);
        let tracked = clients
            .ingestion
            .track(TrackRequest {
                message_id: format!(
                    "demo-{}-{}-{}",
                    self.run,
                    self.name,
                    self.activity_ids.len()
                ),
                identity: Some(identity(&self.user_id)),
                activity: Some(Activity {
                    r#type: act.kind.to_owned(),
                    occurred_at: Some(pbtime::to_timestamp(at)),
                    properties: act
                        .properties
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                }),
            })
            .await
            .with_context(|| format!("track {}'s {} at ingestion", self.name, act.kind))?
            .into_inner();
        self.activity_ids.push(tracked.activity_id);
        Ok(())
    }

    /// Waits until scoring has scored every activity tracked so far, and returns the score's
    /// explanation.
    pub(crate) async fn scored(&self, clients: &mut Clients) -> anyhow::Result<ScoreExplanation> {
        let wait = Wait::new(format!(
            "scoring to score {}'s {} activities",
            self.name,
            self.activity_ids.len()
        ));
        loop {
            let seen = match clients
                .scoring
                .explain_score(ExplainScoreRequest {
                    lead_id: self.id.clone(),
                })
                .await
            {
                Ok(response) => match response.into_inner().explanation {
                    Some(explanation) => {
                        let scored: HashSet<&str> = explanation
                            .contributions
                            .iter()
                            .filter(|c| c.kind == ContributionKind::BehaviorRule as i32)
                            .map(|c| c.activity_id.as_str())
                            .collect();
                        let missing = self
                            .activity_ids
                            .iter()
                            .filter(|id| !scored.contains(id.as_str()))
                            .count();
                        if missing == 0 {
                            return Ok(explanation);
                        }
                        format!("{missing} activities not scored yet")
                    }
                    None => "no explanation".to_owned(),
                },
                Err(status) => format!("scoring answered {}", status.message()),
            };
            wait.again(&seen).await?;
        }
    }

    /// Waits until qualification has evaluated `score` (its copy of the score is the same),
    /// and returns the lead as qualification sees it.
    pub(crate) async fn evaluated(
        &self,
        clients: &mut Clients,
        score: f64,
    ) -> anyhow::Result<LeadQualification> {
        let wait = Wait::new(format!(
            "qualification to evaluate {}'s score {score:.1}",
            self.name
        ));
        loop {
            let seen = match self.qualification(clients).await {
                Ok(lead) => {
                    let known = lead.score.as_ref().map_or(f64::NAN, |s| s.score);
                    if (known - score).abs() < 0.5 {
                        return Ok(lead);
                    }
                    format!("score {known:.1}")
                }
                Err(status) => format!("qualification answered {}", status.message()),
            };
            wait.again(&seen).await?;
        }
    }

    /// Waits until qualification knows the lead's hand-raise.
    pub(crate) async fn hand_raise_known(&self, clients: &mut Clients) -> anyhow::Result<()> {
        let wait = Wait::new(format!("qualification to hear {}'s hand-raise", self.name));
        loop {
            let seen = match self.qualification(clients).await {
                Ok(lead) if lead.hand_raise => return Ok(()),
                Ok(_) => "no hand-raise".to_owned(),
                Err(status) => format!("qualification answered {}", status.message()),
            };
            wait.again(&seen).await?;
        }
    }

    /// Waits until qualification has the lead in `stage`, then prints the transitions that
    /// got it there.
    pub(crate) async fn reach(
        &mut self,
        clients: &mut Clients,
        out: &Printer,
        stage: LeadStage,
    ) -> anyhow::Result<()> {
        let wait = Wait::new(format!(
            "{} to reach {} at qualification",
            self.name,
            labels::stage(stage as i32)
        ));
        loop {
            let seen = match self.qualification(clients).await {
                Ok(lead) if lead.stage == stage as i32 => break,
                Ok(lead) => labels::stage(lead.stage),
                Err(status) => format!("qualification answered {}", status.message()),
            };
            wait.again(&seen).await?;
        }
        self.show_transitions(clients, out).await
    }

    /// Prints the lead's transitions that were not printed yet.
    pub(crate) async fn show_transitions(
        &mut self,
        clients: &mut Clients,
        out: &Printer,
    ) -> anyhow::Result<()> {
        let history = self.history(clients).await?;
        for t in history.iter().skip(self.shown) {
            out.say(self.name, labels::transition(t));
        }
        self.shown = history.len();
        Ok(())
    }

    /// The lead's transitions at qualification, oldest first.
    pub(crate) async fn history(
        &self,
        clients: &mut Clients,
    ) -> anyhow::Result<Vec<leadflow_proto::qualification::v1::StageTransition>> {
        Ok(clients
            .qualification
            .get_history(GetHistoryRequest {
                lead_id: self.id.clone(),
                page_size: 1_000,
                page_token: String::new(),
            })
            .await
            .with_context(|| format!("{}'s history at qualification", self.name))?
            .into_inner()
            .transitions)
    }

    /// The lead as qualification sees it now.
    async fn qualification(
        &self,
        clients: &mut Clients,
    ) -> Result<LeadQualification, tonic::Status> {
        clients
            .qualification
            .get_lead_stage(GetLeadStageRequest {
                lead_id: self.id.clone(),
            })
            .await?
            .into_inner()
            .lead
            .ok_or_else(|| tonic::Status::not_found("no lead in the answer"))
    }
}

/// The identity of a lead known by `user_id`.
fn identity(user_id: &str) -> LeadIdentity {
    LeadIdentity {
        user_id: user_id.to_owned(),
        anonymous_id: String::new(),
    }
}

/// Acts in one line: `8 activities, 12 days ago to yesterday: webinar_attended, …`.
fn summary(acts: &[Act]) -> String {
    let kinds = labels::counted(acts.iter().map(|act| act.kind));
    let (first, last) = (
        acts.first().map_or(0, |a| a.days_ago),
        acts.last().map_or(0, |a| a.days_ago),
    );
    let when = if first == last {
        labels::days_ago(first)
    } else {
        format!("{} to {}", labels::days_ago(first), labels::days_ago(last))
    };
    match acts.len() {
        1 => format!("1 activity, {when}: {kinds}"),
        n => format!("{n} activities, {when}: {kinds}"),
    }
}
