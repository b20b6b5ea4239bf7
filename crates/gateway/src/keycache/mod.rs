//! The in-memory key store: every active key's compact record (see
//! `record`) in one table found by its secret's hash or its id, and a
//! short-lived negative cache. It holds every active key without eviction,
//! so that while it is complete (warmed and the change feed live) an unknown
//! key is refused without a query.

mod interner;
mod record;
mod table;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use obleth_config::db::key_store::KeyColumns;
use obleth_config::model::{ApiKey, Team};
use uuid::Uuid;

pub use record::{KeyRecord, ModelList};
pub use table::{Entry, Hash};

use crate::misses::MissGate;
use crate::settings::CacheSettings;
use table::{Found, Table};

/// What the store knows about a presented hash.
#[derive(Debug)]
pub enum Lookup {
    /// The key, which the hash authenticates: its current secret's, or its
    /// previous secret's within the rotation overlap.
    Hit(KeyRecord),
    /// Recently looked up and not found, or a previous secret past its
    /// overlap; answer 401 without a query.
    KnownUnknown,
    Miss,
}

/// Keys by hash; every replica holds every active key after warm-up.
#[derive(Debug, Clone)]
pub struct KeyCache(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Read by every request; written by the warm-up, the feed and reloads.
    table: RwLock<Table>,
    max_keys: usize,
    /// Unknown hashes looked up while the store was incomplete.
    negative: Cache<Hash, ()>,
    /// The warm-up loaded every active key.
    warmed: AtomicBool,
    /// The change feed has caught up and is listening.
    live: AtomicBool,
    /// A key was not stored because `max_keys` was reached.
    overflowed: AtomicBool,
    /// Database lookups of misses while the store is incomplete.
    misses: MissGate,
    /// Every team, by id: the limits its keys share.
    teams: RwLock<HashMap<Uuid, Arc<Team>>>,
    /// Bumped by every write of the database's newer state: the feed's
    /// inserts and removals, a reload's sweep, an embedded reload. A lookup
    /// that read a key before one of them may hold an older copy (a key
    /// revoked meanwhile), which must not replace the newer one.
    changes: AtomicU64,
}

impl KeyCache {
    pub fn new(settings: &CacheSettings) -> Self {
        KeyCache(Arc::new(Inner {
            table: RwLock::new(Table::default()),
            max_keys: usize::try_from(settings.max_keys).unwrap_or(usize::MAX),
            negative: Cache::builder()
                .max_capacity(settings.negative_max)
                .time_to_live(Duration::from_secs(settings.negative_ttl_secs))
                .build(),
            warmed: AtomicBool::new(false),
            live: AtomicBool::new(false),
            overflowed: AtomicBool::new(false),
            misses: MissGate::new(settings.miss_lookups_per_sec),
            teams: RwLock::default(),
            changes: AtomicU64::new(0),
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.0.table.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.0.table.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, hash: &Hash) -> Lookup {
        self.get_at(hash, Utc::now())
    }

    /// What `hash` finds at `now`.
    pub fn get_at(&self, hash: &Hash, now: DateTime<Utc>) -> Lookup {
        match self.read().get(hash, record::micros(now)) {
            Some(Found::Key(key)) => return Lookup::Hit(key.clone()),
            Some(Found::Expired) => return Lookup::KnownUnknown,
            None => {}
        }
        if self.0.negative.contains_key(hash) {
            return Lookup::KnownUnknown;
        }
        Lookup::Miss
    }

    /// Stores or replaces a key under its secret's hash and, during a
    /// rotation's overlap, its previous secret's hash: the database's
    /// current state (the change feed). Negative entries for those hashes
    /// are forgotten (a key created after a failed lookup must work at
    /// once). A new key past `max_keys` is not stored, and the store is
    /// marked incomplete from then on.
    pub fn insert(&self, key: ApiKey) {
        self.put(key, None);
    }

    /// Where a database lookup of a miss starts: pass it to
    /// [`KeyCache::store_looked_up`] and [`KeyCache::remember_unknown`].
    pub fn generation(&self) -> u64 {
        self.0.changes.load(Ordering::Acquire)
    }

    /// Stores a key a lookup read after [`KeyCache::generation`] answered
    /// `since`, answering its record (also when not stored); none for a
    /// hash that is not 32 bytes. When the feed or a reload wrote the store
    /// since, the read may be older than what the store holds (the key
    /// revoked meanwhile): the record still answers the request that looked
    /// it up, which ran concurrently with the change, but is not stored.
    pub fn store_looked_up(&self, key: ApiKey, since: u64) -> Option<KeyRecord> {
        self.put(key, Some(since))
    }

    fn put(&self, key: ApiKey, looked_up_since: Option<u64>) -> Option<KeyRecord> {
        let entry = Entry::new(KeyColumns::of_key(&key))?;
        let now = record::micros(Utc::now());
        let mut table = self.write();
        match looked_up_since {
            Some(since) if self.0.changes.load(Ordering::Acquire) != since => {
                return Some(table.record_of(entry));
            }
            Some(_) => {}
            None => {
                self.0.changes.fetch_add(1, Ordering::AcqRel);
            }
        }
        for h in entry.hashes() {
            self.0.negative.invalidate(h);
        }
        let record = match table.upsert(entry, now, self.0.max_keys) {
            Ok(record) => record.clone(),
            Err(entry) => {
                let record = table.record_of(*entry);
                drop(table);
                self.overflow();
                return Some(record);
            }
        };
        Some(record)
    }

    /// Stores a warm-up's batch of keys, emptying it. Negative entries are
    /// not looked at: the warm-up ends with [`KeyCache::warmed_up`].
    pub fn load(&self, batch: &mut Vec<Entry>) {
        let now = record::micros(Utc::now());
        let mut table = self.write();
        let mut full = false;
        for entry in batch.drain(..) {
            full |= table.upsert(entry, now, self.0.max_keys).is_err();
        }
        drop(table);
        if full {
            self.overflow();
        }
    }

    /// Room for `additional` more keys, so that a warm-up grows nothing.
    pub fn reserve(&self, additional: usize) {
        self.write().reserve(additional.min(self.0.max_keys));
    }

    fn overflow(&self) {
        if !self.0.overflowed.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                max_keys = self.0.max_keys,
                "Key store full (cache.max_keys); keys past it are looked up in the database, rate-limited."
            );
        }
    }

    /// Forgets a deleted key.
    pub fn remove_id(&self, id: &Uuid) {
        let mut table = self.write();
        self.0.changes.fetch_add(1, Ordering::AcqRel);
        table.remove_id(id);
    }

    /// Forgets every key whose id is not in `seen` (a full reload's sweep:
    /// keys revoked or deleted while the feed could not follow); answers
    /// how many. The ids are found under the read lock and removed a
    /// chunk a write lock, so requests wait for one chunk at most.
    pub fn retain_ids(&self, seen: &HashSet<Uuid>) -> usize {
        // A lookup that read a key before the reload's scans stores it
        // before this bump (and is swept below) or not at all.
        self.0.changes.fetch_add(1, Ordering::AcqRel);
        let gone = self.read().ids_not(|id| seen.contains(id));
        for chunk in gone.chunks(4096) {
            let mut table = self.write();
            for id in chunk {
                table.remove_id(id);
            }
        }
        gone.len()
    }

    /// Remembers that a lookup started at generation `since` found no key
    /// for `hash`; not when the store changed since (the key may have been
    /// created meanwhile, and must work at once).
    pub fn remember_unknown(&self, hash: Hash, since: u64) {
        let _table = self.read();
        if self.0.changes.load(Ordering::Acquire) == since {
            self.0.negative.insert(hash, ());
        }
    }

    /// Makes the store hold exactly `keys` (embedded mode reload); the store
    /// is then complete.
    pub fn replace_all(&self, keys: Vec<ApiKey>) {
        let mut fresh = Table::default();
        let now = record::micros(Utc::now());
        fresh.reserve(keys.len().min(self.0.max_keys));
        let mut overflowed = false;
        for key in &keys {
            if let Some(entry) = Entry::new(KeyColumns::of_key(key)) {
                overflowed |= fresh.upsert(entry, now, self.0.max_keys).is_err();
            }
        }
        let mut table = self.write();
        self.0.changes.fetch_add(1, Ordering::AcqRel);
        *table = fresh;
        drop(table);
        self.0.negative.invalidate_all();
        self.0.overflowed.store(overflowed, Ordering::Release);
        self.set_warmed();
        self.set_live(true);
    }

    /// The warm-up has loaded every active key: the negative entries made
    /// meanwhile are forgotten (the batches did not look at them), and the
    /// store is warmed.
    pub fn warmed_up(&self) {
        self.0.negative.invalidate_all();
        self.set_warmed();
    }

    /// The warm-up has loaded every active key.
    pub fn set_warmed(&self) {
        self.0.warmed.store(true, Ordering::Release);
    }

    /// Whether the change feed is caught up and listening.
    pub fn set_live(&self, live: bool) {
        self.0.live.store(live, Ordering::Release);
    }

    /// Whether the store holds every key the database has, as of the feed's
    /// last catch-up: warmed, feed live, nothing left out for `max_keys`.
    /// While it is, a miss is an unknown key.
    pub fn is_complete(&self) -> bool {
        self.0.warmed.load(Ordering::Acquire)
            && self.0.live.load(Ordering::Acquire)
            && !self.0.overflowed.load(Ordering::Acquire)
    }

    /// Database lookups of misses while the store is incomplete.
    pub fn misses(&self) -> &MissGate {
        &self.0.misses
    }

    /// Keys held.
    pub fn len(&self) -> u64 {
        self.read().len() as u64
    }

    /// Distinct allowed-models lists the stored keys share.
    pub fn model_lists(&self) -> usize {
        self.read().model_lists()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The team with id `id`, if this gateway knows it.
    pub fn team(&self, id: Uuid) -> Option<Arc<Team>> {
        self.0
            .teams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// Stores a team read after a change.
    pub fn set_team(&self, team: Team) {
        self.0
            .teams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(team.id, Arc::new(team));
    }

    pub fn remove_team(&self, id: Uuid) {
        self.0
            .teams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    /// Replaces every team (the warm-up).
    pub fn replace_teams(&self, teams: Vec<Team>) {
        let teams = teams.into_iter().map(|t| (t.id, Arc::new(t))).collect();
        *self.0.teams.write().unwrap_or_else(|e| e.into_inner()) = teams;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> ApiKey {
        let now = chrono::Utc::now();
        ApiKey {
            id: Uuid::new_v4(),
            public_id: format!("pub{n:09}"),
            secret_hash: vec![n; 32],
            name: String::new(),
            owner: None,
            allowed_models: Vec::new(),
            rpm_limit: None,
            tpm_limit: None,
            token_budget: None,
            expires_at: None,
            revoked_at: None,
            created_at: now,
            updated_at: now,
            previous_secret_hash: None,
            previous_expires_at: None,
            team_id: None,
            budget_usd_micros: None,
            budget_period: Default::default(),
        }
    }

    #[test]
    fn keys_past_max_keys_are_not_stored_and_make_the_store_incomplete() {
        let settings = CacheSettings {
            max_keys: 2,
            ..CacheSettings::default()
        };
        let cache = KeyCache::new(&settings);
        cache.set_warmed();
        cache.set_live(true);
        let (a, b, c) = (key(1), key(2), key(3));
        cache.insert(a.clone());
        cache.insert(b);
        assert!(cache.is_complete());
        // Replacing a held key is not growth.
        cache.insert(a);
        assert!(cache.is_complete());
        cache.insert(c);
        assert_eq!(cache.len(), 2);
        assert!(matches!(cache.get(&[3; 32]), Lookup::Miss));
        assert!(!cache.is_complete(), "a key was left out");
    }

    #[test]
    fn a_stored_key_clears_its_negative_entry_and_removal_forgets_it() {
        let cache = KeyCache::new(&CacheSettings::default());
        cache.remember_unknown([9; 32], cache.generation());
        assert!(matches!(cache.get(&[9; 32]), Lookup::KnownUnknown));
        let k = key(9);
        let id = k.id;
        cache.insert(k);
        assert!(matches!(cache.get(&[9; 32]), Lookup::Hit(_)));
        cache.remove_id(&id);
        assert!(matches!(cache.get(&[9; 32]), Lookup::Miss));
        assert!(cache.is_empty());
    }

    #[test]
    fn a_lookup_older_than_the_feeds_change_never_replaces_it() {
        let cache = KeyCache::new(&CacheSettings::default());
        let active = key(5);
        let mut revoked = active.clone();
        revoked.revoked_at = Some(chrono::Utc::now());
        // A miss is looked up; before its answer is stored, the feed applies
        // the key's revocation.
        let since = cache.generation();
        cache.insert(revoked);
        let record = cache.store_looked_up(active.clone(), since).unwrap();
        assert!(!record.is_revoked(), "the lookup's own request is answered");
        match cache.get(&[5; 32]) {
            Lookup::Hit(held) => assert!(held.is_revoked(), "the revocation stays"),
            other => panic!("{other:?}"),
        }
        // A removal and a reload's sweep count as changes too.
        let since = cache.generation();
        cache.remove_id(&active.id);
        cache.store_looked_up(active.clone(), since);
        assert!(matches!(cache.get(&[5; 32]), Lookup::Miss));
        let since = cache.generation();
        cache.retain_ids(&HashSet::new());
        cache.store_looked_up(active.clone(), since);
        assert!(matches!(cache.get(&[5; 32]), Lookup::Miss));
        // With no change since, the lookup's answer is stored.
        let since = cache.generation();
        cache.store_looked_up(active, since);
        assert!(matches!(cache.get(&[5; 32]), Lookup::Hit(_)));
    }

    #[test]
    fn a_key_created_during_a_failed_lookup_is_not_remembered_as_unknown() {
        let cache = KeyCache::new(&CacheSettings::default());
        let since = cache.generation();
        cache.insert(key(6));
        cache.remember_unknown([6; 32], since);
        assert!(matches!(cache.get(&[6; 32]), Lookup::Hit(_)));
        let since = cache.generation();
        cache.remember_unknown([7; 32], since);
        assert!(matches!(cache.get(&[7; 32]), Lookup::KnownUnknown));
    }

    #[test]
    fn a_rotated_key_answers_to_both_secrets_until_the_overlap_ends() {
        let cache = KeyCache::new(&CacheSettings::default());
        let now = chrono::Utc::now();
        let mut k = key(2);
        k.previous_secret_hash = Some(vec![1; 32]);
        k.previous_expires_at = Some(now + chrono::Duration::seconds(60));
        let id = k.id;
        cache.insert(k);
        for hash in [[1; 32], [2; 32]] {
            assert!(matches!(cache.get_at(&hash, now), Lookup::Hit(r) if r.id == id));
        }
        let later = now + chrono::Duration::seconds(60);
        assert!(matches!(
            cache.get_at(&[1; 32], later),
            Lookup::KnownUnknown
        ));
        assert!(matches!(cache.get_at(&[2; 32], later), Lookup::Hit(_)));
        assert_eq!(cache.len(), 1);
        cache.remove_id(&id);
        assert!(matches!(cache.get_at(&[1; 32], now), Lookup::Miss));
    }

    #[test]
    fn replace_all_holds_exactly_the_given_keys() {
        let cache = KeyCache::new(&CacheSettings::default());
        cache.insert(key(1));
        cache.remember_unknown([3; 32], cache.generation());
        cache.replace_all(vec![key(2), key(3)]);
        assert!(matches!(cache.get(&[1; 32]), Lookup::Miss));
        assert!(matches!(cache.get(&[2; 32]), Lookup::Hit(_)));
        assert!(
            matches!(cache.get(&[3; 32]), Lookup::Hit(_)),
            "the negative entry is gone"
        );
        assert_eq!(cache.len(), 2);
        assert!(cache.is_complete());
    }

    #[test]
    fn retain_ids_forgets_exactly_the_keys_not_seen() {
        let cache = KeyCache::new(&CacheSettings::default());
        let keys: Vec<ApiKey> = (1..=5).map(key).collect();
        for k in &keys {
            cache.insert(k.clone());
        }
        let seen: HashSet<Uuid> = [keys[0].id, keys[3].id].into_iter().collect();
        assert_eq!(cache.retain_ids(&seen), 3);
        assert_eq!(cache.len(), 2);
        for (n, k) in keys.iter().enumerate() {
            let held = matches!(cache.get(&[(n + 1) as u8; 32]), Lookup::Hit(r) if r.id == k.id);
            assert_eq!(held, seen.contains(&k.id), "key {n}");
        }
    }

    #[test]
    fn a_warm_up_batch_past_max_keys_makes_the_store_incomplete() {
        let settings = CacheSettings {
            max_keys: 2,
            ..CacheSettings::default()
        };
        let cache = KeyCache::new(&settings);
        cache.reserve(10);
        let keys: Vec<ApiKey> = (1..=3).map(key).collect();
        let mut batch: Vec<Entry> = keys
            .iter()
            .filter_map(|k| Entry::new(KeyColumns::of_key(k)))
            .collect();
        cache.load(&mut batch);
        assert!(batch.is_empty());
        cache.warmed_up();
        cache.set_live(true);
        assert_eq!(cache.len(), 2);
        assert!(!cache.is_complete());
    }
}
