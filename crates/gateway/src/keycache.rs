//! The in-memory key store: SHA-256 of a key's secret to its record, key id to
//! its hashes for invalidation, and a short-lived negative cache. It holds
//! every active key without eviction, so that while it is complete (warmed and
//! the change feed live) an unknown key is refused without a query.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::sync::Cache;
use obleth_config::model::{ApiKey, Team};
use uuid::Uuid;

use crate::misses::MissGate;
use crate::settings::CacheSettings;

pub type Hash = [u8; 32];

/// What the store knows about a presented hash.
#[derive(Debug)]
pub enum Lookup {
    Hit(Arc<ApiKey>),
    /// Recently looked up and not found; answer 401 without a query.
    KnownUnknown,
    Miss,
}

/// Keys by hash; every replica holds every active key after warm-up.
#[derive(Debug, Clone)]
pub struct KeyCache(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    maps: RwLock<Maps>,
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
}

/// A read-mostly set: written by the warm-up, the feed and reloads, read by
/// every request.
#[derive(Debug, Default)]
struct Maps {
    by_hash: HashMap<Hash, Arc<ApiKey>>,
    /// Every hash a key answers to: its secret and, after a rotation, the previous one.
    hashes_by_id: HashMap<Uuid, Vec<Hash>>,
}

impl Maps {
    fn insert(&mut self, key: ApiKey) {
        let Ok(hash) = Hash::try_from(key.secret_hash.as_slice()) else {
            return;
        };
        let previous = key
            .previous_secret_hash
            .as_deref()
            .and_then(|p| Hash::try_from(p).ok())
            .filter(|_| {
                key.previous_expires_at
                    .is_some_and(|at| at > chrono::Utc::now())
            });
        let hashes: Vec<Hash> = std::iter::once(hash).chain(previous).collect();
        if let Some(old) = self.hashes_by_id.get(&key.id) {
            for h in old.iter().filter(|h| !hashes.contains(h)) {
                self.by_hash.remove(h);
            }
        }
        let key = Arc::new(key);
        for h in &hashes {
            self.by_hash.insert(*h, Arc::clone(&key));
        }
        self.hashes_by_id.insert(key.id, hashes);
    }

    fn remove_id(&mut self, id: &Uuid) {
        if let Some(hashes) = self.hashes_by_id.remove(id) {
            for h in &hashes {
                self.by_hash.remove(h);
            }
        }
    }
}

impl KeyCache {
    pub fn new(settings: &CacheSettings) -> Self {
        KeyCache(Arc::new(Inner {
            maps: RwLock::new(Maps::default()),
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
        }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Maps> {
        self.0.maps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.0.maps.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, hash: &Hash) -> Lookup {
        if let Some(key) = self.read().by_hash.get(hash) {
            return Lookup::Hit(Arc::clone(key));
        }
        if self.0.negative.contains_key(hash) {
            return Lookup::KnownUnknown;
        }
        Lookup::Miss
    }

    /// Stores or replaces a key under its secret's hash and, during a
    /// rotation's overlap, its previous secret's hash. Negative entries for
    /// those hashes are forgotten (a key created after a failed lookup must
    /// work at once). A new key past `max_keys` is not stored, and the store
    /// is marked incomplete from then on.
    pub fn insert(&self, key: ApiKey) {
        for h in [
            Some(key.secret_hash.as_slice()),
            key.previous_secret_hash.as_deref(),
        ]
        .into_iter()
        .flatten()
        {
            if let Ok(h) = Hash::try_from(h) {
                self.0.negative.invalidate(&h);
            }
        }
        let mut maps = self.write();
        if !maps.hashes_by_id.contains_key(&key.id) && maps.hashes_by_id.len() >= self.0.max_keys {
            drop(maps);
            if !self.0.overflowed.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    max_keys = self.0.max_keys,
                    "Key store full (cache.max_keys); keys past it are looked up in the database, rate-limited."
                );
            }
            return;
        }
        maps.insert(key);
    }

    /// Forgets a deleted key.
    pub fn remove_id(&self, id: &Uuid) {
        self.write().remove_id(id);
    }

    pub fn remember_unknown(&self, hash: Hash) {
        self.0.negative.insert(hash, ());
    }

    /// Makes the store hold exactly `keys` (embedded mode reload); the store
    /// is then complete.
    pub fn replace_all(&self, keys: Vec<ApiKey>) {
        let mut fresh = Maps::default();
        let overflowed = keys.len() > self.0.max_keys;
        for key in keys.into_iter().take(self.0.max_keys) {
            fresh.insert(key);
        }
        *self.write() = fresh;
        self.0.negative.invalidate_all();
        self.0.overflowed.store(overflowed, Ordering::Release);
        self.set_warmed();
        self.set_live(true);
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
        self.read().hashes_by_id.len() as u64
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
        cache.remember_unknown([9; 32]);
        assert!(matches!(cache.get(&[9; 32]), Lookup::KnownUnknown));
        let k = key(9);
        let id = k.id;
        cache.insert(k);
        assert!(matches!(cache.get(&[9; 32]), Lookup::Hit(_)));
        cache.remove_id(&id);
        assert!(matches!(cache.get(&[9; 32]), Lookup::Miss));
        assert!(cache.is_empty());
    }
}
