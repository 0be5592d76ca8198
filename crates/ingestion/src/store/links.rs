//! The writer's memory of which lead each identity points at, so that on SQLite a group of
//! `Track` commands on known visitors can be written without first reading their identities:
//! one trip to SQLite's thread instead of two. It is only a prediction. The group's transaction
//! checks every link it relied on ([`bulk::expect_links`](super::bulk)) and aborts when one
//! does not hold (a merge moved it, say), and the group is then applied the usual way.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Most links remembered. A link is a 64-bit hash and a 128-bit lead id (~32 bytes with the
/// map's overhead): 8 MiB when full, when the whole memory is dropped and learnt again.
const CAPACITY: usize = 1 << 18;

/// Identity links learnt from the writer's reads and writes, by hash of (tenant, kind, id).
/// Two identities that share a hash predict one's lead for the other; the transaction's check
/// catches that like any other stale link.
#[derive(Debug, Default)]
pub(super) struct LinkCache {
    hasher: RandomState,
    leads: HashMap<u64, u128>,
}

impl LinkCache {
    /// The lead the identity `(kind, external_id)` of `tenant` pointed at when last seen.
    pub(super) fn lead_of(&self, tenant: &str, kind: &str, external_id: &str) -> Option<String> {
        let lead = self.leads.get(&self.key(tenant, kind, external_id))?;
        Some(uuid::Uuid::from_u128(*lead).to_string())
    }

    /// Remembers that the identity points at `lead_id`. Lead ids that are not canonical UUIDs
    /// (as this service makes them) are not remembered.
    pub(super) fn learn(&mut self, tenant: &str, kind: &str, external_id: &str, lead_id: &str) {
        let Some(lead) = canonical_uuid(lead_id) else {
            return;
        };
        if self.leads.len() >= CAPACITY {
            self.leads.clear();
        }
        let key = self.key(tenant, kind, external_id);
        self.leads.insert(key, lead);
    }

    /// Forgets the identity's link, once a transaction found it did not hold.
    pub(super) fn forget(&mut self, tenant: &str, kind: &str, external_id: &str) {
        let key = self.key(tenant, kind, external_id);
        self.leads.remove(&key);
    }

    /// Links remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.leads.len()
    }

    fn key(&self, tenant: &str, kind: &str, external_id: &str) -> u64 {
        self.hasher.hash_one((tenant, kind, external_id))
    }
}

/// `id` as a number, when it is a UUID written the way [`uuid::Uuid`] writes one.
fn canonical_uuid(id: &str) -> Option<u128> {
    let uuid = uuid::Uuid::try_parse(id).ok()?;
    (uuid
        .hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        == id)
        .then(|| uuid.as_u128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn predicts_what_it_learnt_per_tenant_and_kind() {
        let mut links = LinkCache::default();
        let lead = uuid::Uuid::now_v7().to_string();
        links.learn("acme", "anonymous", "cookie-1", &lead);
        assert_eq!(links.lead_of("acme", "anonymous", "cookie-1"), Some(lead));
        assert_eq!(links.lead_of("acme", "user", "cookie-1"), None);
        assert_eq!(links.lead_of("globex", "anonymous", "cookie-1"), None);
    }

    #[test]
    fn forgets_a_link_that_did_not_hold() {
        let mut links = LinkCache::default();
        let lead = uuid::Uuid::now_v7().to_string();
        links.learn("acme", "user", "ada", &lead);
        links.forget("acme", "user", "ada");
        assert_eq!(links.lead_of("acme", "user", "ada"), None);
    }

    #[test]
    fn does_not_remember_lead_ids_it_could_not_write_back_the_same() {
        let mut links = LinkCache::default();
        let lead = uuid::Uuid::now_v7().to_string();
        links.learn("acme", "user", "upper", &lead.to_uppercase());
        links.learn("acme", "user", "other", "lead-42");
        assert_eq!(links.len(), 0);
    }

    #[test]
    fn starts_over_when_full() {
        let mut links = LinkCache::default();
        let lead = uuid::Uuid::now_v7().to_string();
        for n in 0..CAPACITY {
            links.learn("acme", "anonymous", &n.to_string(), &lead);
        }
        assert_eq!(links.len(), CAPACITY);
        links.learn("acme", "anonymous", "one more", &lead);
        assert_eq!(links.len(), 1);
        assert_eq!(links.lead_of("acme", "anonymous", "one more"), Some(lead));
    }

    proptest! {
        #[test]
        fn the_latest_link_learnt_wins(bits in proptest::collection::vec(any::<u128>(), 1..8)) {
            let mut links = LinkCache::default();
            for lead in &bits {
                links.learn("acme", "anonymous", "cookie", &uuid::Uuid::from_u128(*lead).to_string());
            }
            let last = uuid::Uuid::from_u128(*bits.last().expect("at least one lead")).to_string();
            prop_assert_eq!(links.lead_of("acme", "anonymous", "cookie"), Some(last));
        }
    }
}
