//! Which page numbers a page cache may hold: the bookkeeping that lets a truncation that would
//! remove nothing be skipped. Pure logic, no SQLite.

/// An upper bound on the page numbers (keys) a cache holds.
///
/// Invariant: every key in the cache is at most `bound`, or is `high`. `high` remembers the one
/// page moved above the bound by a rekey, so that moving it back down (as SQLite's B-tree does
/// within a few calls) restores the tight bound instead of leaving it at the far key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct KeyBound {
    bound: u32,
    high: Option<u32>,
}

impl KeyBound {
    /// A page with `key` is in the cache (fetched, created, or found).
    pub(crate) fn present(&mut self, key: u32) {
        self.bound = self.bound.max(key);
    }

    /// The page at `old` now has the key `new`.
    pub(crate) fn moved(&mut self, old: u32, new: u32) {
        if self.high == Some(old) {
            self.high = None;
        }
        if new > self.bound {
            if let Some(high) = self.high {
                self.bound = self.bound.max(high);
            }
            self.high = Some(new);
        }
    }

    /// Whether the cache may hold a page whose key is `limit` or more; when not, truncating it
    /// at `limit` removes nothing.
    pub(crate) fn may_hold_from(&self, limit: u32) -> bool {
        self.bound >= limit || self.high.is_some_and(|high| high >= limit)
    }

    /// Every page whose key is `limit` or more has been removed.
    pub(crate) fn truncated(&mut self, limit: u32) {
        let below = limit.saturating_sub(1);
        self.bound = self.bound.max(self.high.unwrap_or(0)).min(below);
        self.high = None;
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// SQLite's B-tree balancing swaps two pages' numbers through a key far above the database
    /// (the lock-byte page, 262,145 with 4 KiB pages); the commit's truncation at the database
    /// size must then find nothing to do.
    #[test]
    fn a_swap_through_a_far_key_leaves_the_bound_tight() {
        let far = 262_145;
        let mut keys = KeyBound::default();
        for key in 1..=500 {
            keys.present(key);
        }
        keys.moved(7, far);
        keys.moved(420, 7);
        keys.moved(far, 420);
        assert!(!keys.may_hold_from(501));
        assert!(keys.may_hold_from(500));
    }

    #[test]
    fn a_page_left_above_the_bound_is_truncated() {
        let mut keys = KeyBound::default();
        keys.present(10);
        keys.moved(3, 50);
        assert!(keys.may_hold_from(11));
        keys.truncated(11);
        assert!(!keys.may_hold_from(11));
        assert!(keys.may_hold_from(10));
    }

    #[test]
    fn a_second_page_moved_high_keeps_the_first_bounded() {
        let mut keys = KeyBound::default();
        keys.present(10);
        keys.moved(3, 40);
        keys.moved(4, 30);
        keys.moved(30, 5);
        assert!(keys.may_hold_from(40), "the page at 40 is still there");
    }

    /// One call SQLite's pager makes on a cache.
    #[derive(Debug, Clone)]
    enum Call {
        Fetch(u32),
        Discard(usize),
        Rekey(usize, u32),
        Truncate(u32),
    }

    fn call() -> impl Strategy<Value = Call> {
        // Small keys collide often; a few far ones stand for the lock-byte page.
        let key = prop_oneof![4 => 1u32..64, 1 => 200u32..300];
        prop_oneof![
            4 => key.clone().prop_map(Call::Fetch),
            1 => any::<usize>().prop_map(Call::Discard),
            3 => (any::<usize>(), key.clone()).prop_map(|(page, key)| Call::Rekey(page, key)),
            2 => key.prop_map(Call::Truncate),
        ]
    }

    proptest! {
        /// Whatever the calls, a truncation the bound calls needless removes no page: checked
        /// against the set of keys a real cache would hold.
        #[test]
        fn a_skipped_truncation_never_leaves_a_page_behind(calls in prop::collection::vec(call(), 0..200)) {
            let mut cache = BTreeSet::new();
            let mut keys = KeyBound::default();
            for call in calls {
                match call {
                    Call::Fetch(key) => {
                        cache.insert(key);
                        keys.present(key);
                    }
                    Call::Discard(pick) => {
                        if let Some(&key) = cache.iter().nth(pick % cache.len().max(1)) {
                            cache.remove(&key);
                        }
                    }
                    Call::Rekey(pick, new) => {
                        let Some(&old) = cache.iter().nth(pick % cache.len().max(1)) else {
                            continue;
                        };
                        if old == new {
                            continue;
                        }
                        // SQLite's move first looks the new key up and drops the page there.
                        if cache.remove(&new) {
                            keys.present(new);
                        }
                        cache.remove(&old);
                        cache.insert(new);
                        keys.moved(old, new);
                    }
                    Call::Truncate(limit) => {
                        let would_remove = cache.range(limit..).next().is_some();
                        if keys.may_hold_from(limit) {
                            cache.retain(|&key| key < limit);
                            keys.truncated(limit);
                        } else {
                            prop_assert!(!would_remove, "skipped a truncation at {} of {:?}", limit, cache);
                        }
                    }
                }
            }
        }
    }
}
