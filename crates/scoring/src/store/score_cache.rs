//! What live leads' scores are computed from, kept in memory so a score lookup needs no query.
//!
//! Only for a store this process alone writes (an SQLite file: one process owns it), where every
//! change to a lead's row passes through this process: each transaction that writes rows
//! invalidates their leads once it has ended ([`Invalidation`]). On PostgreSQL replicas share
//! the database and could not see each other's writes, so there is no cache there.
//!
//! A read that misses is answered from the database and then offered to the cache with the
//! [`Ticket`] taken before the query: if any lead of the same stripe was invalidated in between,
//! the row read may predate that write, and the offer is refused. So the cache never holds a
//! state older than a committed write, and a lookup sees what a read after the writer's commit
//! would, once the writing call has returned.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;

use super::ScoreRead;

/// Leads kept by default: about 300 bytes each (the key, the lead id, a few fit rules and the
/// engagement), so some 40 MiB at the most.
pub(super) const DEFAULT_CAPACITY: usize = 131_072;

/// Invalidation counters; a refused offer costs one lead in this many a re-read.
const STRIPES: usize = 64;

/// A lead: tenant and lead id.
type Key = (String, String);

/// Score inputs of live (not merged) leads by tenant and lead id, at most a fixed number.
#[derive(Debug)]
pub(super) struct ScoreCache {
    inner: Mutex<Inner>,
    capacity: usize,
    hasher: RandomState,
}

#[derive(Debug)]
struct Inner {
    reads: IndexMap<Key, ScoreRead>,
    /// Invalidations so far, by stripe of the lead's key.
    generations: [u64; STRIPES],
    /// Where the next eviction looks (a clock hand over the entries).
    hand: usize,
}

/// The invalidation counters when a database read began: what an offer of its rows is checked
/// against.
#[derive(Debug, Clone)]
pub(super) struct Ticket([u64; STRIPES]);

impl ScoreCache {
    /// An empty cache of at most `capacity` leads.
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                reads: IndexMap::new(),
                generations: [0; STRIPES],
                hand: 0,
            }),
            capacity,
            hasher: RandomState::new(),
        }
    }

    /// The cached inputs of live lead `lead_id`, if any.
    pub(super) fn get(&self, tenant: &str, lead_id: &str) -> Option<ScoreRead> {
        self.lock()
            .reads
            .get(&(tenant.to_owned(), lead_id.to_owned()))
            .cloned()
    }

    /// Taken before a database read whose rows will be offered.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.lock().generations)
    }

    /// Keeps the live leads among `reads` of `tenant`, read after `ticket` was taken, except
    /// those of a stripe invalidated since. Reads of merged ids are the survivor's, under
    /// another key: they are never kept.
    pub(super) fn offer<'a>(
        &self,
        ticket: &Ticket,
        tenant: &str,
        reads: impl IntoIterator<Item = &'a ScoreRead>,
    ) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        for read in reads.into_iter().filter(|read| !read.merged) {
            let key = (tenant.to_owned(), read.lead_id.clone());
            let stripe = self.stripe(&key);
            if inner.generations[stripe] != ticket.0[stripe] {
                continue;
            }
            if inner.reads.len() >= self.capacity && !inner.reads.contains_key(&key) {
                inner.evict_one();
            }
            inner.reads.insert(key, read.clone());
        }
    }

    /// Forgets `keys` and refuses offers read before now for their stripes.
    pub(super) fn invalidate(&self, keys: impl IntoIterator<Item = Key>) {
        let mut inner = self.lock();
        for key in keys {
            let stripe = self.stripe(&key);
            inner.generations[stripe] += 1;
            inner.reads.swap_remove(&key);
        }
    }

    /// Leads cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().reads.len()
    }

    fn stripe(&self, key: &Key) -> usize {
        // The remainder is below STRIPES, so it fits a usize.
        usize::try_from(self.hasher.hash_one(key) % STRIPES as u64).unwrap_or(0)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock; if something did, the map is still whole.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn evict_one(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        self.hand %= self.reads.len();
        self.reads.swap_remove_index(self.hand);
        self.hand += 1;
    }
}

/// The leads a transaction writes, invalidated in the cache when this is dropped: after the
/// transaction has committed or failed, on every path out of the writing call. Declared before
/// the transaction, so it outlives it.
#[derive(Debug)]
pub(super) struct Invalidation {
    cache: Option<Arc<ScoreCache>>,
    keys: Vec<Key>,
}

impl Invalidation {
    /// Collects for `cache` (none: nothing to invalidate).
    pub(super) fn new(cache: Option<&Arc<ScoreCache>>) -> Self {
        Self {
            cache: cache.cloned(),
            keys: Vec::new(),
        }
    }

    /// Lead `lead_id` of `tenant` is written.
    pub(super) fn add(&mut self, tenant: &str, lead_id: &str) {
        if self.cache.is_some() {
            self.keys.push((tenant.to_owned(), lead_id.to_owned()));
        }
    }
}

impl Drop for Invalidation {
    fn drop(&mut self) {
        if let Some(cache) = &self.cache {
            cache.invalidate(std::mem::take(&mut self.keys));
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::domain::ScoreInputs;

    fn read(lead_id: &str, merged: bool) -> ScoreRead {
        let at = Utc
            .timestamp_opt(1_764_000_000, 0)
            .single()
            .expect("a time");
        let inputs: ScoreInputs = crate::store::state::decode(
            &crate::store::state::encode(&crate::domain::LeadScore::new(at)).expect("encodes"),
        )
        .expect("decodes");
        ScoreRead {
            lead_id: lead_id.into(),
            model_version: 1,
            updated_at: at,
            inputs,
            merged,
        }
    }

    #[test]
    fn an_offered_live_lead_is_served_and_a_merged_id_is_not_kept() {
        let cache = ScoreCache::new(8);
        let ticket = cache.ticket();
        cache.offer(&ticket, "t", [&read("a", false), &read("b", true)]);
        assert_eq!(cache.get("t", "a").map(|r| r.lead_id), Some("a".into()));
        assert!(
            cache.get("t", "b").is_none(),
            "a merged id is the survivor's read"
        );
        assert!(cache.get("other", "a").is_none(), "tenants are apart");
    }

    #[test]
    fn an_invalidated_lead_is_gone_and_a_read_from_before_is_refused() {
        let cache = ScoreCache::new(8);
        cache.offer(&cache.ticket(), "t", [&read("a", false)]);
        let before_the_write = cache.ticket();
        cache.invalidate([("t".to_owned(), "a".to_owned())]);
        assert!(cache.get("t", "a").is_none());
        cache.offer(&before_the_write, "t", [&read("a", false)]);
        assert!(
            cache.get("t", "a").is_none(),
            "a row read before the write may be the old one"
        );
        cache.offer(&cache.ticket(), "t", [&read("a", false)]);
        assert!(cache.get("t", "a").is_some(), "a read after it is kept");
    }

    #[test]
    fn it_holds_at_most_its_capacity() {
        let cache = ScoreCache::new(3);
        for n in 0..10 {
            cache.offer(&cache.ticket(), "t", [&read(&format!("lead-{n}"), false)]);
            assert!(cache.len() <= 3);
        }
        assert!(cache.get("t", "lead-9").is_some(), "the newest is kept");
        let off = ScoreCache::new(0);
        off.offer(&off.ticket(), "t", [&read("a", false)]);
        assert_eq!(off.len(), 0);
    }

    #[test]
    fn an_invalidation_applies_when_dropped_on_any_path() {
        let cache = Arc::new(ScoreCache::new(8));
        cache.offer(&cache.ticket(), "t", [&read("a", false), &read("b", false)]);
        let failing = || -> Result<(), ()> {
            let mut written = Invalidation::new(Some(&cache));
            written.add("t", "a");
            Err(())
        };
        assert!(failing().is_err());
        assert!(
            cache.get("t", "a").is_none(),
            "invalidated on the error path"
        );
        assert!(cache.get("t", "b").is_some());
        let mut none = Invalidation::new(None);
        none.add("t", "b");
        drop(none);
        assert!(cache.get("t", "b").is_some());
    }
}
