//! The lifecycle stages and the table of legal transitions between them.

use serde::{Deserialize, Serialize};

/// Where a lead stands. Nurture (recycled) and disqualified are side states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Stage {
    /// Subscribed, nothing more yet.
    Subscriber,
    /// Showed interest.
    Lead,
    /// Marketing qualified: engaged, fits, over the threshold; in SDR review.
    Mql,
    /// Sales accepted: an SDR took it for follow-up.
    Sal,
    /// Sales qualified: BANT holds; handed to an account executive.
    Sql,
    /// An opportunity in the CRM.
    Opportunity,
    /// Won.
    Customer,
    /// Recycled to nurturing.
    Nurture,
    /// Out: wrong data or not the ideal customer profile.
    Disqualified,
}

impl Stage {
    /// Every stage, in funnel order.
    pub const ALL: [Stage; 9] = [
        Stage::Subscriber,
        Stage::Lead,
        Stage::Mql,
        Stage::Sal,
        Stage::Sql,
        Stage::Opportunity,
        Stage::Customer,
        Stage::Nurture,
        Stage::Disqualified,
    ];

    /// The stage's name, lowercase.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Subscriber => "subscriber",
            Stage::Lead => "lead",
            Stage::Mql => "mql",
            Stage::Sal => "sal",
            Stage::Sql => "sql",
            Stage::Opportunity => "opportunity",
            Stage::Customer => "customer",
            Stage::Nurture => "nurture",
            Stage::Disqualified => "disqualified",
        }
    }

    /// How far along the funnel the stage is, for merges: the survivor keeps the more advanced
    /// of two stages. Side states rank with the stages they return to (nurture with lead) or
    /// below everything (disqualified), so a live duplicate outranks a disqualified one.
    pub fn advancement(self) -> u8 {
        match self {
            Stage::Disqualified => 0,
            Stage::Subscriber => 1,
            Stage::Lead | Stage::Nurture => 2,
            Stage::Mql => 3,
            Stage::Sal => 4,
            Stage::Sql => 5,
            Stage::Opportunity => 6,
            Stage::Customer => 7,
        }
    }

    /// Whether a lead may move from `self` to `to`. An MQL never goes straight to an account
    /// executive (seed mistake 1): SQL is reached only from SAL.
    pub fn can_move_to(self, to: Stage) -> bool {
        use Stage::*;
        matches!(
            (self, to),
            (Subscriber, Lead | Mql)
                | (Lead, Mql)
                | (Mql, Sal | Nurture | Disqualified)
                | (Sal, Sql | Nurture | Disqualified)
                | (Sql, Opportunity | Customer | Nurture | Disqualified)
                | (Opportunity, Customer | Nurture | Disqualified)
                | (Nurture, Mql)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        assert!(Stage::Mql.can_move_to(Stage::Sal));
        assert!(
            !Stage::Mql.can_move_to(Stage::Sql),
            "no MQL straight to sales"
        );
        assert!(!Stage::Lead.can_move_to(Stage::Sal));
        assert!(
            !Stage::Customer.can_move_to(Stage::Nurture),
            "customer is final"
        );
        assert!(
            !Stage::Disqualified.can_move_to(Stage::Mql),
            "disqualified is final"
        );
        for stage in Stage::ALL {
            assert!(!stage.can_move_to(stage), "{} to itself", stage.name());
        }
    }
}
