//! The sales team of the story: an SDR and an account executive, and the routing rules that
//! send them hand-offs; and the qualification definition the leads are measured against.

use anyhow::Context;
use leadflow_proto::common::v1::HandoffKind;
use leadflow_proto::handoff::v1::{
    EscalationTarget, Owner, OwnerRole, PublishRoutingRulesRequest, RoutingRule, RoutingRules,
    Territory, UpsertOwnerRequest,
};
use leadflow_proto::qualification::v1::GetDefinitionRequest;
use leadflow_runtime::pbtime;

use super::clients::Clients;
use super::labels;
use super::print::Printer;

/// The SDR who reviews every MQL.
pub(crate) const SDR: &str = "sam";
/// The account executive for the DACH region.
pub(crate) const AE: &str = "alex";
/// Countries the account executive covers.
const DACH: [&str; 3] = ["DE", "AT", "CH"];
/// Time to first contact for an SDR review.
const SDR_REVIEW_SLA_HOURS: i64 = 8;
/// Time to first contact for sales (the seeds' rule).
const SALES_SLA_HOURS: i64 = 24;

/// Sets up the owners and routing rules, and prints them with the qualification definition.
pub(crate) async fn team(clients: &mut Clients, out: &Printer, run: &str) -> anyhow::Result<()> {
    let dach = Territory {
        countries: DACH.iter().map(|c| (*c).to_owned()).collect(),
        ..Default::default()
    };
    for (id, name, role, team, territory) in [
        (
            SDR,
            "Sam Rivera",
            OwnerRole::Sdr,
            "sdr-emea",
            Territory::default(),
        ),
        (
            AE,
            "Alex Novak",
            OwnerRole::AccountExecutive,
            "ae-dach",
            dach.clone(),
        ),
    ] {
        clients
            .handoff
            .upsert_owner(UpsertOwnerRequest {
                request_id: format!("demo-{run}-owner-{id}"),
                owner: Some(Owner {
                    owner_id: id.to_owned(),
                    display_name: name.to_owned(),
                    email: format!("{id}@leadflow.example"),
                    role: role as i32,
                    team_id: team.to_owned(),
                    territory: Some(territory),
                    weight: 1,
                    ..Default::default()
                }),
            })
            .await
            .with_context(|| format!("upsert the owner {id} at handoff"))?;
        out.say(
            "team",
            format!("{id} ({name}), {} in team {team}", labels::owner_role(role)),
        );
    }
    let rules = clients
        .handoff
        .publish_routing_rules(PublishRoutingRulesRequest {
            request_id: format!("demo-{run}-routing"),
            routing_rules: Some(RoutingRules {
                description: "leadflow demo: sam reviews every mql, alex sells in dach".to_owned(),
                rules: vec![
                    RoutingRule {
                        id: "sdr-review".to_owned(),
                        description: "every mql is reviewed by an sdr first".to_owned(),
                        kind: HandoffKind::SdrReview as i32,
                        territory: Some(Territory::default()),
                        owner_ids: vec![SDR.to_owned()],
                    },
                    RoutingRule {
                        id: "sales-dach".to_owned(),
                        description: "sqls in germany, austria and switzerland".to_owned(),
                        kind: HandoffKind::Sales as i32,
                        territory: Some(dach),
                        owner_ids: vec![AE.to_owned()],
                    },
                ],
                sales_sla: Some(pbtime::to_duration(chrono::Duration::hours(
                    SALES_SLA_HOURS,
                ))),
                sdr_review_sla: Some(pbtime::to_duration(chrono::Duration::hours(
                    SDR_REVIEW_SLA_HOURS,
                ))),
                escalation_target: EscalationTarget::NextOwner as i32,
                ..Default::default()
            }),
        })
        .await
        .context("publish the routing rules at handoff")?
        .into_inner()
        .routing_rules
        .unwrap_or_default();
    out.say(
        "team",
        format!(
            "routing rules v{}: sdr review → {SDR}, sales in {} → {AE}; first contact within {SDR_REVIEW_SLA_HOURS}h (sdr review) and {SALES_SLA_HOURS}h (sales)",
            rules.version,
            DACH.join("/")
        ),
    );
    let definition = clients
        .qualification
        .get_definition(GetDefinitionRequest { version: 0 })
        .await
        .context("get the qualification definition")?
        .into_inner();
    let d = definition.definition.unwrap_or_default();
    out.say(
        "definition",
        format!(
            "v{}: mql at score {} with fit grade {} or better; sql on bant; hand-raises: {}",
            definition.active_version,
            d.mql_threshold,
            labels::grade(d.min_fit_grade),
            d.hand_raise_activity_types.join(", ")
        ),
    );
    Ok(())
}
