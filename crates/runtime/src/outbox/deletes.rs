//! Deletes of delivered outbox rows carried by the service's own write transactions.
//!
//! On SQLite a service has one writer connection, and its relay's delete of each delivered
//! batch was a transaction of its own, queued for that connection between the service's own
//! writes (ingestion's group commits, a receiver applying a delivery): one more commit each
//! time, and the writes behind it waited for it. A relay given [`SharedDeletes`] offers each
//! delete there first; the next write transaction that claims it ([`SharedDeletes::claim_into`])
//! runs it and commits it with its own writes. An offer nobody claimed by the time the relay's
//! delivery beside it is back is taken back and run by the relay itself, so an idle service
//! still deletes, as before.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use super::relay::delete_statement;
use crate::script::WriteScript;

/// The deletes a service's relays offer to its write transactions (cheap to clone: every clone
/// shares the offers).
#[derive(Debug, Clone, Default)]
pub struct SharedDeletes {
    offers: Arc<Mutex<Offers>>,
}

#[derive(Debug, Default)]
struct Offers {
    next_ticket: u64,
    waiting: Vec<Offer>,
}

#[derive(Debug)]
struct Offer {
    ticket: u64,
    ids: Vec<i64>,
    committed: oneshot::Sender<()>,
}

/// The deletes a write transaction took on. Call [`ClaimedDeletes::committed`] once that
/// transaction has committed; dropped without it (the transaction failed or was given up), they
/// count as not done and their relays delete the rows later.
#[must_use = "the relays learn that their rows are deleted only from `committed`"]
#[derive(Debug, Default)]
pub struct ClaimedDeletes(Vec<oneshot::Sender<()>>);

impl ClaimedDeletes {
    /// Whether the transaction took on no delete.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Tells each relay its rows are deleted for good.
    pub fn committed(self) {
        for committed in self.0 {
            // A relay that stopped waiting no longer needs to know.
            let _ = committed.send(());
        }
    }
}

/// A relay's offer, to take back or wait on.
#[derive(Debug)]
pub(crate) struct Ticket {
    ticket: u64,
    committed: oneshot::Receiver<()>,
}

/// What became of an offer.
#[derive(Debug)]
pub(crate) enum Taken {
    /// Nobody claimed it: the relay deletes these rows itself.
    Back(Vec<i64>),
    /// A write transaction claimed it: resolves once it committed, or with an error if it did
    /// not.
    Claimed(oneshot::Receiver<()>),
}

impl SharedDeletes {
    /// No offers yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds to `script` a delete of every row offered so far, for the transaction `script`
    /// runs in; tell the relays through the returned claim once it has committed.
    pub fn claim_into(&self, script: &mut WriteScript) -> ClaimedDeletes {
        let offers = std::mem::take(&mut self.lock().waiting);
        if offers.is_empty() {
            return ClaimedDeletes::default();
        }
        let ids: Vec<i64> = offers
            .iter()
            .flat_map(|offer| offer.ids.iter().copied())
            .collect();
        script.push(&delete_statement(&ids));
        ClaimedDeletes(offers.into_iter().map(|offer| offer.committed).collect())
    }

    /// Offers the delete of `ids` to the next write transaction.
    pub(crate) fn offer(&self, ids: Vec<i64>) -> Ticket {
        let (sender, committed) = oneshot::channel();
        let mut offers = self.lock();
        let ticket = offers.next_ticket;
        offers.next_ticket += 1;
        offers.waiting.push(Offer {
            ticket,
            ids,
            committed: sender,
        });
        Ticket { ticket, committed }
    }

    /// Takes the offer back if no transaction has claimed it yet.
    pub(crate) fn take_back(&self, ticket: Ticket) -> Taken {
        let mut offers = self.lock();
        match offers
            .waiting
            .iter()
            .position(|o| o.ticket == ticket.ticket)
        {
            Some(index) => Taken::Back(offers.waiting.swap_remove(index).ids),
            None => Taken::Claimed(ticket.committed),
        }
    }

    /// The offers; a panic while they were held cannot leave them half-changed (each change
    /// is one push or one take), so a poisoned lock is used as it is.
    fn lock(&self) -> std::sync::MutexGuard<'_, Offers> {
        self.offers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::DatabaseBackend;

    use super::*;

    #[test]
    fn an_unclaimed_offer_comes_back_whole() {
        let deletes = SharedDeletes::new();
        let ticket = deletes.offer(vec![3, 1, 2]);
        match deletes.take_back(ticket) {
            Taken::Back(ids) => assert_eq!(ids, vec![3, 1, 2]),
            Taken::Claimed(_) => panic!("nobody claimed it"),
        }
        let mut script = WriteScript::new(DatabaseBackend::Sqlite);
        let _ = deletes.claim_into(&mut script);
        assert!(script.is_empty(), "a taken-back offer is not deleted twice");
    }

    #[tokio::test]
    async fn a_claimed_offer_resolves_when_committed_and_fails_when_dropped() {
        let deletes = SharedDeletes::new();
        let first = deletes.offer(vec![1]);
        let mut script = WriteScript::new(DatabaseBackend::Sqlite);
        let claim = deletes.claim_into(&mut script);
        assert!(!script.is_empty());
        let second = deletes.offer(vec![2]);
        let dropped = deletes.claim_into(&mut WriteScript::new(DatabaseBackend::Sqlite));
        claim.committed();
        drop(dropped);
        let Taken::Claimed(first) = deletes.take_back(first) else {
            panic!("claimed")
        };
        let Taken::Claimed(second) = deletes.take_back(second) else {
            panic!("claimed")
        };
        assert!(first.await.is_ok(), "committed");
        assert!(second.await.is_err(), "its transaction never committed");
    }
}
