//! The hand-off status machine: which status may follow which, per hand-off kind.
//!
//! Both kinds start `pending` and are acknowledged by the CRM and contacted by their owner
//! (contact may come before the CRM's acknowledgement; it stops the SLA clock, and a later
//! acknowledgement records the CRM's record without moving the status). After contact an
//! SDR_REVIEW hand-off is accepted or rejected; a SALES hand-off becomes an opportunity, won or
//! lost, and an opportunity is then won or lost. A hand-off whose SLA broke before contact is
//! escalated (re-routed or moved to the manager queue) and goes on from there: it can still be
//! acknowledged, contacted and then decided. Qualification can withdraw any open hand-off.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Who must act on a hand-off (`HandoffKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HandoffKind {
    /// An SDR reviews an MQL: accepts or rejects it.
    SdrReview,
    /// An account executive takes an SQL: opportunity, won or lost.
    Sales,
}

impl HandoffKind {
    /// Both kinds.
    pub const ALL: [HandoffKind; 2] = [HandoffKind::SdrReview, HandoffKind::Sales];

    /// The kind's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            HandoffKind::SdrReview => "sdr review",
            HandoffKind::Sales => "sales",
        }
    }
}

/// The status of a hand-off (`HandoffStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HandoffStatus {
    /// Created and routed; not yet in the CRM.
    Pending,
    /// The CRM created its record.
    Acknowledged,
    /// The owner made first contact.
    Contacted,
    /// SDR review accepted the lead (final).
    Accepted,
    /// SDR review rejected the lead (final).
    Rejected,
    /// Sales opened an opportunity.
    Opportunity,
    /// Sales won the deal (final).
    Won,
    /// Sales lost the deal (final).
    Lost,
    /// The SLA broke before contact and the hand-off was escalated.
    Escalated,
    /// Qualification moved the lead out of the stage the hand-off was for (final).
    Withdrawn,
}

impl HandoffStatus {
    /// Every status, in proto order.
    pub const ALL: [HandoffStatus; 10] = [
        HandoffStatus::Pending,
        HandoffStatus::Acknowledged,
        HandoffStatus::Contacted,
        HandoffStatus::Accepted,
        HandoffStatus::Rejected,
        HandoffStatus::Opportunity,
        HandoffStatus::Won,
        HandoffStatus::Lost,
        HandoffStatus::Escalated,
        HandoffStatus::Withdrawn,
    ];

    /// The status a new hand-off starts in.
    pub const INITIAL: HandoffStatus = HandoffStatus::Pending;

    /// The status's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            HandoffStatus::Pending => "pending",
            HandoffStatus::Acknowledged => "acknowledged",
            HandoffStatus::Contacted => "contacted",
            HandoffStatus::Accepted => "accepted",
            HandoffStatus::Rejected => "rejected",
            HandoffStatus::Opportunity => "opportunity",
            HandoffStatus::Won => "won",
            HandoffStatus::Lost => "lost",
            HandoffStatus::Escalated => "escalated",
            HandoffStatus::Withdrawn => "withdrawn",
        }
    }

    /// True for the statuses nothing follows: accepted, rejected, won, lost, withdrawn.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            HandoffStatus::Accepted
                | HandoffStatus::Rejected
                | HandoffStatus::Won
                | HandoffStatus::Lost
                | HandoffStatus::Withdrawn
        )
    }

    /// True while the hand-off is open: it counts against its owner's capacity.
    pub fn is_open(self) -> bool {
        !self.is_final()
    }

    /// True while the SLA clock runs: no contact yet and not escalated (pending, acknowledged).
    pub fn awaits_contact(self) -> bool {
        matches!(self, HandoffStatus::Pending | HandoffStatus::Acknowledged)
    }

    /// True when a hand-off of `kind` can ever be in this status.
    pub fn applies_to(self, kind: HandoffKind) -> bool {
        match self {
            HandoffStatus::Accepted | HandoffStatus::Rejected => kind == HandoffKind::SdrReview,
            HandoffStatus::Opportunity | HandoffStatus::Won | HandoffStatus::Lost => {
                kind == HandoffKind::Sales
            }
            _ => true,
        }
    }
}

impl fmt::Display for HandoffStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// True when a hand-off of `kind` may move from `from` to `to` (the whole table).
pub fn can_move(kind: HandoffKind, from: HandoffStatus, to: HandoffStatus) -> bool {
    use HandoffStatus::*;
    if !to.applies_to(kind) || !from.applies_to(kind) {
        return false;
    }
    match from {
        Pending => matches!(to, Acknowledged | Contacted | Escalated | Withdrawn),
        Acknowledged => matches!(to, Contacted | Escalated | Withdrawn),
        Escalated => matches!(to, Acknowledged | Contacted | Withdrawn),
        Contacted => matches!(
            to,
            Accepted | Rejected | Opportunity | Won | Lost | Withdrawn
        ),
        Opportunity => matches!(to, Won | Lost | Withdrawn),
        Accepted | Rejected | Won | Lost | Withdrawn => false,
    }
}

/// Something done to a hand-off; each leads to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Action {
    /// The CRM created its record (`AcknowledgeHandoff`).
    Acknowledge,
    /// The owner made first contact (`RecordContact`).
    Contact,
    /// The SDR accepts (`AcceptHandoff`).
    Accept,
    /// The SDR rejects (`RejectHandoff`).
    Reject,
    /// Sales opened an opportunity (`ReportOutcome`).
    Opportunity,
    /// Sales won the deal (`ReportOutcome`).
    Win,
    /// Sales lost the deal (`ReportOutcome`).
    Lose,
    /// The SLA broke (the SLA sweeper).
    Escalate,
    /// Qualification moved the lead on.
    Withdraw,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 9] = [
        Action::Acknowledge,
        Action::Contact,
        Action::Accept,
        Action::Reject,
        Action::Opportunity,
        Action::Win,
        Action::Lose,
        Action::Escalate,
        Action::Withdraw,
    ];

    /// The status the action leads to.
    pub fn target(self) -> HandoffStatus {
        match self {
            Action::Acknowledge => HandoffStatus::Acknowledged,
            Action::Contact => HandoffStatus::Contacted,
            Action::Accept => HandoffStatus::Accepted,
            Action::Reject => HandoffStatus::Rejected,
            Action::Opportunity => HandoffStatus::Opportunity,
            Action::Win => HandoffStatus::Won,
            Action::Lose => HandoffStatus::Lost,
            Action::Escalate => HandoffStatus::Escalated,
            Action::Withdraw => HandoffStatus::Withdrawn,
        }
    }

    /// The action that leads to `status`; none for pending (only creation does).
    pub fn leading_to(status: HandoffStatus) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.target() == status)
    }

    /// The action as a verb phrase, lowercase, for messages.
    pub fn verb(self) -> &'static str {
        match self {
            Action::Acknowledge => "acknowledge",
            Action::Contact => "record contact for",
            Action::Accept => "accept",
            Action::Reject => "reject",
            Action::Opportunity => "open an opportunity for",
            Action::Win => "win",
            Action::Lose => "lose",
            Action::Escalate => "escalate",
            Action::Withdraw => "withdraw",
        }
    }
}

/// An action the hand-off's kind or status does not allow (answered `FAILED_PRECONDITION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// What was attempted.
    pub action: Action,
    /// The hand-off's kind.
    pub kind: HandoffKind,
    /// The status the hand-off is in.
    pub status: HandoffStatus,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.action.target().applies_to(self.kind) {
            write!(
                f,
                "cannot {} a hand-off in status {}",
                self.action.verb(),
                self.status
            )
        } else {
            write!(
                f,
                "cannot {} a hand-off of kind {}",
                self.action.verb(),
                self.kind.name()
            )
        }
    }
}

impl std::error::Error for Refusal {}

/// True when acknowledging a hand-off in `status` records the CRM's record id without moving
/// it: the owner made contact (and maybe decided) before the CRM created its record.
pub fn acknowledges_in_place(status: HandoffStatus) -> bool {
    use HandoffStatus::*;
    matches!(
        status,
        Contacted | Opportunity | Accepted | Rejected | Won | Lost
    )
}

/// The status `action` moves a hand-off of `kind` in status `from` to (`from` itself for an
/// acknowledgement in place), or why it cannot.
pub fn apply(
    kind: HandoffKind,
    from: HandoffStatus,
    action: Action,
) -> Result<HandoffStatus, Refusal> {
    let to = action.target();
    if action == Action::Acknowledge && acknowledges_in_place(from) && from.applies_to(kind) {
        Ok(from)
    } else if can_move(kind, from, to) {
        Ok(to)
    } else {
        Err(Refusal {
            action,
            kind,
            status: from,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use HandoffKind::*;
    use HandoffStatus::*;
    use proptest::prelude::*;

    /// The legal moves, written out independently of `can_move`.
    const LEGAL: &[(HandoffKind, HandoffStatus, HandoffStatus)] = &[
        (SdrReview, Pending, Acknowledged),
        (SdrReview, Pending, Contacted),
        (SdrReview, Pending, Escalated),
        (SdrReview, Pending, Withdrawn),
        (SdrReview, Acknowledged, Contacted),
        (SdrReview, Acknowledged, Escalated),
        (SdrReview, Acknowledged, Withdrawn),
        (SdrReview, Escalated, Acknowledged),
        (SdrReview, Escalated, Contacted),
        (SdrReview, Escalated, Withdrawn),
        (SdrReview, Contacted, Accepted),
        (SdrReview, Contacted, Rejected),
        (SdrReview, Contacted, Withdrawn),
        (Sales, Pending, Acknowledged),
        (Sales, Pending, Contacted),
        (Sales, Pending, Escalated),
        (Sales, Pending, Withdrawn),
        (Sales, Acknowledged, Contacted),
        (Sales, Acknowledged, Escalated),
        (Sales, Acknowledged, Withdrawn),
        (Sales, Escalated, Acknowledged),
        (Sales, Escalated, Contacted),
        (Sales, Escalated, Withdrawn),
        (Sales, Contacted, Opportunity),
        (Sales, Contacted, Won),
        (Sales, Contacted, Lost),
        (Sales, Contacted, Withdrawn),
        (Sales, Opportunity, Won),
        (Sales, Opportunity, Lost),
        (Sales, Opportunity, Withdrawn),
    ];

    #[test]
    fn the_table_allows_exactly_the_legal_moves() {
        for kind in HandoffKind::ALL {
            for from in HandoffStatus::ALL {
                for to in HandoffStatus::ALL {
                    let legal = LEGAL.contains(&(kind, from, to));
                    assert_eq!(can_move(kind, from, to), legal, "{kind:?} {from} -> {to}");
                    if let Some(action) = Action::leading_to(to) {
                        let result = apply(kind, from, action);
                        if action == Action::Acknowledge
                            && acknowledges_in_place(from)
                            && from.applies_to(kind)
                        {
                            assert_eq!(result, Ok(from), "{kind:?} {from} acknowledged in place");
                        } else if legal {
                            assert_eq!(result, Ok(to));
                        } else {
                            let refusal = result.expect_err("refused");
                            assert_eq!(refusal.status, from);
                            assert!(refusal.to_string().starts_with("cannot "));
                        }
                    } else {
                        assert_eq!(to, Pending);
                        assert!(!legal, "nothing moves back to pending");
                    }
                }
            }
        }
    }

    #[test]
    fn refusals_name_the_current_status_or_the_kind() {
        let refusal = apply(SdrReview, Pending, Action::Accept).expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "cannot accept a hand-off in status pending"
        );
        let refusal = apply(Sales, Won, Action::Contact).expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "cannot record contact for a hand-off in status won"
        );
        let refusal = apply(Sales, Contacted, Action::Accept).expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "cannot accept a hand-off of kind sales"
        );
        let refusal = apply(SdrReview, Contacted, Action::Win).expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "cannot win a hand-off of kind sdr review"
        );
        let refusal = apply(Sales, Contacted, Action::Escalate).expect_err("refused");
        assert_eq!(
            refusal.to_string(),
            "cannot escalate a hand-off in status contacted"
        );
    }

    #[test]
    fn open_final_and_the_sla_clock() {
        let open: Vec<HandoffStatus> = HandoffStatus::ALL
            .into_iter()
            .filter(|s| s.is_open())
            .collect();
        assert_eq!(
            open,
            [Pending, Acknowledged, Contacted, Opportunity, Escalated]
        );
        let clock: Vec<HandoffStatus> = HandoffStatus::ALL
            .into_iter()
            .filter(|s| s.awaits_contact())
            .collect();
        assert_eq!(clock, [Pending, Acknowledged]);
        assert_eq!(HandoffStatus::INITIAL, Pending);
    }

    #[test]
    fn a_late_acknowledgement_keeps_the_status() {
        for (kind, from) in [
            (Sales, Contacted),
            (Sales, Opportunity),
            (Sales, Won),
            (Sales, Lost),
            (SdrReview, Contacted),
            (SdrReview, Accepted),
            (SdrReview, Rejected),
        ] {
            assert_eq!(apply(kind, from, Action::Acknowledge), Ok(from));
        }
        for from in [Withdrawn, Acknowledged] {
            let refusal = apply(Sales, from, Action::Acknowledge).expect_err("refused");
            assert_eq!(refusal.status, from);
        }
        let refusal = apply(SdrReview, Won, Action::Acknowledge).expect_err("not its kind");
        assert_eq!(refusal.status, Won);
    }

    #[test]
    fn an_escalated_hand_off_goes_on_to_a_decision() {
        let mut status = Pending;
        for action in [
            Action::Escalate,
            Action::Acknowledge,
            Action::Contact,
            Action::Opportunity,
            Action::Win,
        ] {
            status = apply(Sales, status, action).expect("legal");
        }
        assert_eq!(status, Won);
        let mut status = Acknowledged;
        for action in [Action::Escalate, Action::Contact, Action::Reject] {
            status = apply(SdrReview, status, action).expect("legal");
        }
        assert_eq!(status, Rejected);
    }

    fn any_action() -> impl Strategy<Value = Action> {
        prop::sample::select(Action::ALL.to_vec())
    }

    proptest! {
        /// Whatever is attempted, a hand-off only ever holds statuses of its kind, every move
        /// is in the table, and nothing leaves a final status.
        #[test]
        fn any_sequence_stays_in_the_table(sales in any::<bool>(), actions in prop::collection::vec(any_action(), 0..40)) {
            let kind = if sales { Sales } else { SdrReview };
            let mut status = HandoffStatus::INITIAL;
            for action in actions {
                match apply(kind, status, action) {
                    Ok(next) if next == status => {
                        prop_assert_eq!(action, Action::Acknowledge);
                        prop_assert!(acknowledges_in_place(status));
                    }
                    Ok(next) => {
                        prop_assert!(!status.is_final());
                        prop_assert!(LEGAL.contains(&(kind, status, next)));
                        status = next;
                    }
                    Err(refusal) => prop_assert_eq!(refusal.status, status),
                }
                prop_assert!(status.applies_to(kind));
            }
        }
    }
}
