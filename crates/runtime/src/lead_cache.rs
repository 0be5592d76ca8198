//! The leads one delivered batch touches, held while a receiver applies the batch: read up
//! front with a query per thousand ids (following merges to the surviving lead), changed in
//! memory message after message, and handed back once, in key order, for one multi-row write.
//! A receiver that reads and writes a lead per message instead pays a statement per message.

use std::collections::{HashMap, HashSet};
use std::future::Future;

use sea_orm::DatabaseBackend;

/// `(tenant, lead id)`.
pub type LeadKey = (String, String);

/// What reading one lead id found.
#[derive(Debug)]
pub enum Found<L> {
    /// The lead itself.
    Live(L),
    /// The id was merged into this lead id.
    MergedInto(String),
}

/// A batch's leads keyed by the surviving lead, the ids merged into them as aliases, the ids
/// read and not found, and a mark `D` on each lead changed since the last
/// [`take_changed`](Self::take_changed).
#[derive(Debug)]
pub struct LeadCache<L, D> {
    leads: HashMap<LeadKey, L>,
    aliases: HashMap<LeadKey, LeadKey>,
    absent: HashSet<LeadKey>,
    changed: HashMap<LeadKey, D>,
}

impl<L, D> Default for LeadCache<L, D> {
    fn default() -> Self {
        Self {
            leads: HashMap::new(),
            aliases: HashMap::new(),
            absent: HashSet::new(),
            changed: HashMap::new(),
        }
    }
}

impl<L, D> LeadCache<L, D> {
    /// Reads the leads `keys` name with `read(tenant, ids)` (ids sorted, each once), then the
    /// leads the merged ones point at.
    pub async fn prefetch<E, F, Fut>(
        &mut self,
        keys: impl IntoIterator<Item = LeadKey>,
        mut read: F,
    ) -> Result<(), E>
    where
        F: FnMut(String, Vec<String>) -> Fut,
        Fut: Future<Output = Result<Vec<(String, Found<L>)>, E>>,
    {
        let mut by_tenant: HashMap<String, Vec<String>> = HashMap::new();
        for (tenant, lead) in keys {
            by_tenant.entry(tenant).or_default().push(lead);
        }
        for (tenant, mut ids) in by_tenant {
            ids.sort_unstable();
            ids.dedup();
            let mut survivors = Vec::new();
            let mut missing: HashSet<String> = ids.iter().cloned().collect();
            for (id, found) in read(tenant.clone(), ids).await? {
                missing.remove(&id);
                match found {
                    Found::Live(lead) => {
                        self.leads.insert((tenant.clone(), id), lead);
                    }
                    Found::MergedInto(survivor) => {
                        self.aliases
                            .insert((tenant.clone(), id), (tenant.clone(), survivor.clone()));
                        survivors.push(survivor);
                    }
                }
            }
            self.absent
                .extend(missing.into_iter().map(|id| (tenant.clone(), id)));
            survivors.sort_unstable();
            survivors.dedup();
            survivors.retain(|id| !self.leads.contains_key(&(tenant.clone(), id.clone())));
            if survivors.is_empty() {
                continue;
            }
            for (id, found) in read(tenant.clone(), survivors).await? {
                if let Found::Live(lead) = found {
                    self.leads.insert((tenant.clone(), id), lead);
                }
            }
        }
        Ok(())
    }

    fn resolve(&self, tenant: &str, lead_id: &str) -> LeadKey {
        let requested = (tenant.to_owned(), lead_id.to_owned());
        self.aliases.get(&requested).cloned().unwrap_or(requested)
    }

    /// Whether the lead `lead_id` names, not held, must be read before it is taken for a new
    /// lead: not when the prefetch found no row for it on SQLite, where the transaction reading
    /// it is the one writer, so nothing can have stored it since; on PostgreSQL another
    /// replica may have, and reading it again locks the row it committed.
    fn needs_read(&self, tenant: &str, lead_id: &str, backend: DatabaseBackend) -> bool {
        backend != DatabaseBackend::Sqlite
            || !self
                .absent
                .contains(&(tenant.to_owned(), lead_id.to_owned()))
    }

    /// The lead `lead_id` names (following merges): the one held, else the one `load` reads,
    /// else `new()`, held from now on under the key `survivor` gives it (the lead an id merged
    /// into another reads as). On SQLite `load` is skipped for an id the prefetch found no row
    /// for: the transaction reading it is the one writer, so nothing can have stored it since.
    pub async fn get_or_load<E, Fut>(
        &mut self,
        (tenant, lead_id): (&str, &str),
        backend: DatabaseBackend,
        load: impl FnOnce() -> Fut,
        new: impl FnOnce() -> L,
        survivor: impl FnOnce(&L) -> String,
    ) -> Result<&mut L, E>
    where
        Fut: Future<Output = Result<Option<L>, E>>,
    {
        let key = self.resolve(tenant, lead_id);
        if !self.leads.contains_key(&key) {
            let stored = if self.needs_read(tenant, lead_id, backend) {
                load().await?
            } else {
                None
            };
            let lead = stored.unwrap_or_else(new);
            let survivor = survivor(&lead);
            return Ok(self.insert(tenant, lead_id, &survivor, lead));
        }
        // Held, so the entry is occupied and `new` is not called: a `get_mut` returned from
        // inside the check above would keep `self` borrowed for the insert after it.
        Ok(self.leads.entry(key).or_insert_with(new))
    }

    /// Whether the lead `lead_id` names (following merges) is held.
    pub fn contains(&self, tenant: &str, lead_id: &str) -> bool {
        self.leads.contains_key(&self.resolve(tenant, lead_id))
    }

    /// The held lead `lead_id` names (following merges).
    pub fn get_mut(&mut self, tenant: &str, lead_id: &str) -> Option<&mut L> {
        let key = self.resolve(tenant, lead_id);
        self.leads.get_mut(&key)
    }

    /// Holds `lead` as `survivor`'s, reached from `lead_id` too; a lead already held for
    /// `survivor` is kept (it may carry changes).
    pub fn insert(&mut self, tenant: &str, lead_id: &str, survivor: &str, lead: L) -> &mut L {
        let key = (tenant.to_owned(), survivor.to_owned());
        if lead_id != survivor {
            self.aliases
                .insert((tenant.to_owned(), lead_id.to_owned()), key.clone());
        }
        self.leads.entry(key).or_insert(lead)
    }

    /// Marks the lead `key` changed (a later mark replaces an earlier one).
    pub fn mark_changed(&mut self, key: LeadKey, mark: D) {
        self.changed.insert(key, mark);
    }

    /// Every changed lead with its mark, in key order (the order in which to lock or write
    /// rows, so concurrent writers cannot deadlock); everything else is forgotten.
    pub fn take_changed(&mut self) -> Vec<(L, D)> {
        let mut changed: Vec<(LeadKey, D)> = self.changed.drain().collect();
        changed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let taken = changed
            .into_iter()
            .filter_map(|(key, mark)| self.leads.remove(&key).map(|lead| (lead, mark)))
            .collect();
        self.leads.clear();
        self.aliases.clear();
        self.absent.clear();
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> LeadKey {
        ("t".to_owned(), id.to_owned())
    }

    #[tokio::test]
    async fn merged_ids_reach_their_survivor_and_changes_come_back_in_key_order() {
        let mut cache: LeadCache<u32, &str> = LeadCache::default();
        let mut reads = Vec::new();
        cache
            .prefetch([key("b"), key("a"), key("old"), key("a")], |tenant, ids| {
                reads.push((tenant, ids.clone()));
                async move {
                    Ok::<_, ()>(
                        ids.into_iter()
                            .filter_map(|id| match id.as_str() {
                                "a" => Some((id, Found::Live(1))),
                                "b" => Some((id, Found::Live(2))),
                                "old" => Some((id, Found::MergedInto("c".into()))),
                                "c" => Some((id, Found::Live(3))),
                                _ => None,
                            })
                            .collect(),
                    )
                }
            })
            .await
            .expect("prefetch");
        assert_eq!(
            reads,
            [
                ("t".to_owned(), vec!["a".into(), "b".into(), "old".into()]),
                ("t".to_owned(), vec!["c".into()]),
            ]
        );
        assert_eq!(cache.get_mut("t", "old").copied(), Some(3));
        assert!(!cache.contains("t", "new"));
        *cache.insert("t", "new", "new", 9) += 1;
        assert_eq!(
            *cache.insert("t", "again", "c", 0),
            3,
            "the held lead is kept"
        );
        assert_eq!(cache.get_mut("t", "again").copied(), Some(3));
        cache.mark_changed(key("new"), "second");
        cache.mark_changed(key("c"), "merged");
        cache.mark_changed(key("a"), "first");
        assert_eq!(
            cache.take_changed(),
            [(1, "first"), (3, "merged"), (10, "second")]
        );
        assert!(!cache.contains("t", "b"), "everything is forgotten");
    }

    #[tokio::test]
    async fn an_id_read_and_not_found_is_read_again_only_where_another_writer_may_store_it() {
        let mut cache: LeadCache<u32, ()> = LeadCache::default();
        cache
            .prefetch([key("a"), key("gone"), key("old")], |_, ids| async move {
                Ok::<_, ()>(
                    ids.into_iter()
                        .filter_map(|id| match id.as_str() {
                            "a" => Some((id, Found::Live(1))),
                            "old" => Some((id, Found::MergedInto("c".into()))),
                            _ => None,
                        })
                        .collect(),
                )
            })
            .await
            .expect("prefetch");
        let (sqlite, postgres) = (DatabaseBackend::Sqlite, DatabaseBackend::Postgres);
        assert!(!cache.needs_read("t", "gone", sqlite), "found absent");
        assert!(
            cache.needs_read("t", "gone", postgres),
            "another replica may store it"
        );
        assert!(
            cache.needs_read("t", "c", sqlite),
            "a survivor not found is not known absent"
        );
        assert!(cache.needs_read("t", "never-asked", sqlite));

        let loads = std::cell::Cell::new(0);
        let load = |stored: Option<u32>| {
            loads.set(loads.get() + 1);
            async move { Ok::<_, ()>(stored) }
        };
        let survivor = |_: &u32| "gone".to_owned();
        let held = *cache
            .get_or_load(("t", "a"), sqlite, || load(None), || 0, survivor)
            .await
            .expect("held");
        assert_eq!((held, loads.get()), (1, 0), "held: not read");
        let new = *cache
            .get_or_load(("t", "gone"), sqlite, || load(Some(7)), || 0, survivor)
            .await
            .expect("new");
        assert_eq!(
            (new, loads.get()),
            (0, 0),
            "found absent: new, not read again"
        );
        let mut elsewhere: LeadCache<u32, ()> = LeadCache::default();
        elsewhere.absent.insert(key("gone"));
        let stored = *elsewhere
            .get_or_load(("t", "gone"), postgres, || load(Some(7)), || 0, survivor)
            .await
            .expect("read");
        assert_eq!(
            (stored, loads.get()),
            (7, 1),
            "on PostgreSQL read again, and what another replica stored is taken"
        );
        cache.mark_changed(key("a"), ());
        cache.take_changed();
        assert!(
            cache.needs_read("t", "gone", sqlite),
            "forgotten with the rest: a merge may have stored it"
        );
    }
}
