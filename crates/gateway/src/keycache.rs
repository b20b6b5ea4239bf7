//! The in-memory key cache: SHA-256 of a key's secret to its record, a map from
//! key id to hash for invalidation, and a short-lived negative cache.

use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;
use obleth_config::model::ApiKey;
use uuid::Uuid;

use crate::settings::CacheSettings;

pub type Hash = [u8; 32];

/// What the cache knows about a presented hash.
#[derive(Debug)]
pub enum Lookup {
    Hit(Arc<ApiKey>),
    /// Recently looked up and not found; answer 401 without a query.
    KnownUnknown,
    Miss,
}

/// Keys by hash; every replica holds every active key after warm-up.
#[derive(Debug, Clone)]
pub struct KeyCache {
    by_hash: Cache<Hash, Arc<ApiKey>>,
    /// Every hash a key answers to: its secret and, after a rotation, the previous one.
    hash_by_id: Cache<Uuid, Vec<Hash>>,
    negative: Cache<Hash, ()>,
}

impl KeyCache {
    pub fn new(settings: &CacheSettings) -> Self {
        KeyCache {
            by_hash: Cache::builder().max_capacity(settings.max_keys).build(),
            hash_by_id: Cache::builder().max_capacity(settings.max_keys).build(),
            negative: Cache::builder()
                .max_capacity(settings.negative_max)
                .time_to_live(Duration::from_secs(settings.negative_ttl_secs))
                .build(),
        }
    }

    pub fn get(&self, hash: &Hash) -> Lookup {
        if let Some(key) = self.by_hash.get(hash) {
            return Lookup::Hit(key);
        }
        if self.negative.contains_key(hash) {
            return Lookup::KnownUnknown;
        }
        Lookup::Miss
    }

    /// Stores or replaces a key under its secret's hash and, during a
    /// rotation's overlap, its previous secret's hash. Negative entries for
    /// those hashes are forgotten (a key created after a failed lookup must
    /// work at once).
    pub fn insert(&self, key: ApiKey) {
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
        if let Some(old) = self.hash_by_id.get(&key.id) {
            for h in old.iter().filter(|h| !hashes.contains(h)) {
                self.by_hash.invalidate(h);
            }
        }
        let key = Arc::new(key);
        for h in &hashes {
            self.negative.invalidate(h);
            self.by_hash.insert(*h, Arc::clone(&key));
        }
        self.hash_by_id.insert(key.id, hashes);
    }

    /// Forgets a deleted key.
    pub fn remove_id(&self, id: &Uuid) {
        if let Some(hashes) = self.hash_by_id.get(id) {
            for h in &hashes {
                self.by_hash.invalidate(h);
            }
        }
        self.hash_by_id.invalidate(id);
    }

    pub fn remember_unknown(&self, hash: Hash) {
        self.negative.insert(hash, ());
    }

    /// Makes the cache hold exactly `keys` (embedded mode reload).
    pub fn replace_all(&self, keys: Vec<ApiKey>) {
        let ids: std::collections::HashSet<Uuid> = keys.iter().map(|k| k.id).collect();
        let stale: Vec<Uuid> = self
            .hash_by_id
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !ids.contains(id))
            .collect();
        for id in stale {
            self.remove_id(&id);
        }
        for key in keys {
            self.insert(key);
        }
        self.negative.invalidate_all();
    }

    /// Keys held (approximate until moka runs its pending tasks).
    pub fn len(&self) -> u64 {
        self.by_hash.run_pending_tasks();
        self.by_hash.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
