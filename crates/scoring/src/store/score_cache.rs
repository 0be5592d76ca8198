//! What live leads' scores are computed from, kept in memory so a score lookup needs no query.
//!
//! Only for a store this process alone writes (an SQLite file: one process owns it), where every
//! change to a lead's row passes through this process. Each transaction that writes rows holds
//! [`CacheWrites`] from before it begins until it has ended: once committed, the leads it wrote
//! are stored as written (so a lead is cached from its last change, not from its first read);
//! if it failed, they are forgotten. Transactions that write leads take turns on the cache's
//! write order, so a slower task can never store its older rows over a later transaction's. On
//! PostgreSQL replicas share the database and could not see each other's writes, so there is no
//! cache there.
//!
//! A read that misses is answered from the database and then offered to the cache with the
//! [`Ticket`] taken before the query: if any lead of the same stripe was written in between, the
//! row read may predate that write, and the offer is refused. So the cache never holds a state
//! older than a committed write, and a lookup sees what a read after the writer's commit would,
//! once the writing call has returned.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::NonZeroUsize;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use indexmap::{Equivalent, IndexMap};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::ScoreRead;

/// Leads kept unless configured otherwise (`--score-cache-leads`): some 600 bytes each in the
/// heap (the key, the lead id, a few fit rules and the engagement; measured as peak RSS against
/// cached leads in the benchmark), so about 80 MiB at the most.
pub(super) const DEFAULT_CAPACITY: usize = 131_072;

/// Invalidation counters; a refused offer costs one lead in this many a re-read.
const STRIPES: usize = 64;

/// A lead: tenant and lead id.
type Key = (String, String);

/// A [`Key`] borrowed from a lookup, hashed the same way, so a hit allocates nothing.
struct Borrowed<'a>(&'a str, &'a str);

impl Hash for Borrowed<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0, self.1).hash(state);
    }
}

impl Equivalent<Key> for Borrowed<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// Score inputs of live (not merged) leads by tenant and lead id, at most a fixed number.
#[derive(Debug)]
pub(super) struct ScoreCache {
    inner: RwLock<Inner>,
    capacity: NonZeroUsize,
    hasher: RandomState,
    /// Held by a writing transaction from before it begins until its leads are stored.
    write_order: Arc<Mutex<()>>,
}

#[derive(Debug)]
struct Inner {
    reads: IndexMap<Key, Arc<ScoreRead>>,
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
    pub(super) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            inner: RwLock::new(Inner {
                reads: IndexMap::new(),
                generations: [0; STRIPES],
                hand: 0,
            }),
            capacity,
            hasher: RandomState::new(),
            write_order: Arc::new(Mutex::new(())),
        }
    }

    /// The cached inputs of live lead `lead_id`, if any.
    pub(super) fn get(&self, tenant: &str, lead_id: &str) -> Option<Arc<ScoreRead>> {
        self.read().reads.get(&Borrowed(tenant, lead_id)).cloned()
    }

    /// Taken before a database read whose rows will be offered.
    pub(super) fn ticket(&self) -> Ticket {
        Ticket(self.read().generations)
    }

    /// Keeps the live leads among `reads` of `tenant`, read after `ticket` was taken, except
    /// those of a stripe invalidated since. Reads of merged ids are the survivor's, under
    /// another key: they are never kept.
    pub(super) fn offer<'a>(
        &self,
        ticket: &Ticket,
        tenant: &str,
        reads: impl IntoIterator<Item = &'a Arc<ScoreRead>>,
    ) {
        let mut inner = self.write();
        for read in reads.into_iter().filter(|read| !read.merged) {
            let key = (tenant.to_owned(), read.lead_id.clone());
            let stripe = self.stripe(&key);
            if inner.generations[stripe] != ticket.0[stripe] {
                continue;
            }
            inner.keep(self.capacity, key, Arc::clone(read));
        }
    }

    /// Stores each written lead's new read (`None`: forgets the lead), in order, and refuses
    /// offers read before now for their stripes.
    fn store(&self, written: impl IntoIterator<Item = (Key, Option<ScoreRead>)>) {
        let mut inner = self.write();
        for (key, read) in written {
            let stripe = self.stripe(&key);
            inner.generations[stripe] += 1;
            match read {
                Some(read) => inner.keep(self.capacity, key, Arc::new(read)),
                None => {
                    inner.reads.swap_remove(&key);
                }
            }
        }
    }

    /// Leads cached.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.read().reads.len()
    }

    fn stripe(&self, key: &Key) -> usize {
        // The remainder is below STRIPES, so it fits a usize.
        usize::try_from(self.hasher.hash_one(key) % STRIPES as u64).unwrap_or(0)
    }

    // Nothing panics while holding the lock; if something did, the map would still be whole.
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Inner {
    fn keep(&mut self, capacity: NonZeroUsize, key: Key, read: Arc<ScoreRead>) {
        if self.reads.len() >= capacity.get() && !self.reads.contains_key(&key) {
            self.evict_one();
        }
        self.reads.insert(key, read);
    }

    fn evict_one(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        self.hand %= self.reads.len();
        self.reads.swap_remove_index(self.hand);
        self.hand += 1;
    }
}

/// What a transaction writes to leads, for the cache: held from before the transaction begins
/// (it takes the cache's write order) until it has ended. [`CacheWrites::committed`] stores the
/// new reads; dropped without it (the transaction failed, or an error left the call), every lead
/// written is forgotten instead.
#[derive(Debug)]
pub(super) struct CacheWrites {
    cache: Option<(Arc<ScoreCache>, OwnedMutexGuard<()>)>,
    written: Vec<(Key, Option<ScoreRead>)>,
}

impl CacheWrites {
    /// Waits for the write order of `cache` (none: nothing to record).
    pub(super) async fn begin(cache: Option<&Arc<ScoreCache>>) -> Self {
        let cache = match cache {
            Some(cache) => {
                let turn = Arc::clone(&cache.write_order).lock_owned().await;
                Some((Arc::clone(cache), turn))
            }
            None => None,
        };
        Self {
            cache,
            written: Vec::new(),
        }
    }

    /// True when the cache keeps what is written (so the caller should say what).
    pub(super) fn is_recording(&self) -> bool {
        self.cache.is_some()
    }

    /// Lead `lead_id` of `tenant` is written: `read` is what a read of the new row gives, or
    /// `None` when it is no longer a live lead's (merged).
    pub(super) fn wrote(&mut self, tenant: &str, lead_id: &str, read: Option<ScoreRead>) {
        if self.is_recording() {
            self.written
                .push(((tenant.to_owned(), lead_id.to_owned()), read));
        }
    }

    /// The transaction committed: the leads written are stored as written.
    pub(super) fn committed(mut self) {
        if let Some((cache, _turn)) = self.cache.take() {
            cache.store(std::mem::take(&mut self.written));
        }
    }
}

impl Drop for CacheWrites {
    fn drop(&mut self) {
        if let Some((cache, _turn)) = self.cache.take() {
            let forgotten = std::mem::take(&mut self.written);
            cache.store(forgotten.into_iter().map(|(key, _)| (key, None)));
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    /// A read of `lead_id` whose state is under model `version` (to tell reads apart).
    fn read_of(lead_id: &str, version: i32, merged: bool) -> ScoreRead {
        let at = Utc
            .timestamp_opt(1_764_000_000, 0)
            .single()
            .expect("a time");
        let inputs = crate::store::state::decode_inputs(
            &crate::store::state::encode(&crate::domain::LeadScore::new(at)).expect("encodes"),
        )
        .expect("decodes");
        ScoreRead {
            lead_id: lead_id.into(),
            model_version: version,
            updated_at: at,
            inputs,
            merged,
        }
    }

    fn read(lead_id: &str) -> Arc<ScoreRead> {
        Arc::new(read_of(lead_id, 1, false))
    }

    fn capacity(leads: usize) -> NonZeroUsize {
        NonZeroUsize::new(leads).expect("not zero")
    }

    fn version(cache: &ScoreCache, lead_id: &str) -> Option<i32> {
        cache.get("t", lead_id).map(|r| r.model_version)
    }

    #[test]
    fn an_offered_live_lead_is_served_and_a_merged_id_is_not_kept() {
        let cache = ScoreCache::new(capacity(8));
        let ticket = cache.ticket();
        cache.offer(&ticket, "t", [&read("a"), &Arc::new(read_of("b", 1, true))]);
        assert_eq!(
            cache.get("t", "a").map(|r| r.lead_id.clone()),
            Some("a".into())
        );
        assert!(
            cache.get("t", "b").is_none(),
            "a merged id is the survivor's read"
        );
        assert!(cache.get("other", "a").is_none(), "tenants are apart");
    }

    #[tokio::test]
    async fn a_committed_write_is_stored_and_a_read_from_before_it_is_refused() {
        let cache = Arc::new(ScoreCache::new(capacity(8)));
        cache.offer(&cache.ticket(), "t", [&read("a"), &read("b")]);
        let before_the_write = cache.ticket();
        let mut writes = CacheWrites::begin(Some(&cache)).await;
        writes.wrote("t", "a", Some(read_of("a", 2, false)));
        writes.wrote("t", "b", None);
        writes.committed();
        assert_eq!(version(&cache, "a"), Some(2), "stored as written");
        assert_eq!(version(&cache, "b"), None, "no longer a live lead");
        cache.offer(&before_the_write, "t", [&read("a"), &read("b")]);
        assert_eq!(
            (version(&cache, "a"), version(&cache, "b")),
            (Some(2), None),
            "rows read before the write may be the old ones"
        );
        cache.offer(&cache.ticket(), "t", [&Arc::new(read_of("b", 3, false))]);
        assert_eq!(version(&cache, "b"), Some(3), "a read after it is kept");
    }

    #[tokio::test]
    async fn a_failed_write_forgets_its_leads() {
        let cache = Arc::new(ScoreCache::new(capacity(8)));
        cache.offer(&cache.ticket(), "t", [&read("a"), &read("b")]);
        let failing = async {
            let mut writes = CacheWrites::begin(Some(&cache)).await;
            writes.wrote("t", "a", Some(read_of("a", 2, false)));
            Err::<(), ()>(())
        };
        assert!(failing.await.is_err());
        assert_eq!(version(&cache, "a"), None, "forgotten on the error path");
        assert_eq!(version(&cache, "b"), Some(1));
        let mut none = CacheWrites::begin(None).await;
        assert!(!none.is_recording());
        none.wrote("t", "b", None);
        drop(none);
        assert_eq!(version(&cache, "b"), Some(1), "no cache, nothing recorded");
    }

    #[tokio::test]
    async fn writing_transactions_take_turns() {
        let cache = Arc::new(ScoreCache::new(capacity(8)));
        let mut first = CacheWrites::begin(Some(&cache)).await;
        let second = tokio::spawn({
            let cache = Arc::clone(&cache);
            async move {
                let mut writes = CacheWrites::begin(Some(&cache)).await;
                writes.wrote("t", "a", Some(read_of("a", 3, false)));
                writes.committed();
            }
        });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!second.is_finished(), "the second waits for the first");
        first.wrote("t", "a", Some(read_of("a", 2, false)));
        first.committed();
        second.await.expect("the second ran");
        assert_eq!(
            version(&cache, "a"),
            Some(3),
            "the later write is the one kept"
        );
    }

    #[test]
    fn it_holds_at_most_its_capacity() {
        let cache = ScoreCache::new(capacity(3));
        for n in 0..10 {
            cache.offer(&cache.ticket(), "t", [&read(&format!("lead-{n}"))]);
            assert!(cache.len() <= 3);
        }
        assert!(cache.get("t", "lead-9").is_some(), "the newest is kept");
    }
}
