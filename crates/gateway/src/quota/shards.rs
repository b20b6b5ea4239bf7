//! The quota counters in a sharded map: a request locks only the shard of
//! its subject (a key or a team) and dimension, so requests of different keys
//! do not queue on one lock. A subject's windows (this minute and the one
//! before, read for the sliding carry) share a shard.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use super::{CounterId, Slot};

/// A power of two, well above the cores a gateway runs on.
const SHARDS: usize = 32;

#[derive(Debug)]
pub(super) struct Shards {
    shards: Box<[Mutex<HashMap<CounterId, Slot>>]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Shards {
    fn default() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Shards {
    /// The shard holding `id` (and every other window of its subject and
    /// dimension), locked.
    pub(super) fn lock(&self, id: &CounterId) -> MutexGuard<'_, HashMap<CounterId, Slot>> {
        self.shards[self.shard_of(id)]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn shard_of(&self, id: &CounterId) -> usize {
        let mut h = self.hasher.build_hasher();
        id.subject.hash(&mut h);
        id.dimension.hash(&mut h);
        (h.finish() as usize) & (SHARDS - 1)
    }

    /// Every shard, one at a time, for housekeeping.
    pub(super) fn each(&self, mut f: impl FnMut(&mut HashMap<CounterId, Slot>)) {
        for shard in self.shards.iter() {
            f(&mut shard.lock().unwrap_or_else(|e| e.into_inner()));
        }
    }
}

#[cfg(test)]
mod tests {
    use obleth_config::db::quota::Dimension;
    use uuid::Uuid;

    use super::*;

    #[test]
    fn a_subjects_windows_share_a_shard_and_subjects_spread() {
        let shards = Shards::default();
        let mut used = std::collections::HashSet::new();
        for n in 0..256u128 {
            let id = CounterId {
                subject: Uuid::from_u128(n),
                dimension: Dimension::Requests,
                window: 600,
            };
            let previous = CounterId { window: 540, ..id };
            assert_eq!(shards.shard_of(&id), shards.shard_of(&previous));
            used.insert(shards.shard_of(&id));
        }
        assert!(
            used.len() > SHARDS / 2,
            "256 subjects in {} shards",
            used.len()
        );
    }
}
