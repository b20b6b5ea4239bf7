//! The key table: every stored key's record in one slab (`Vec`), found by its
//! secret's hash or by its id through hash tables of slab positions (4 bytes
//! and a control byte a bucket), plus a small map of previous secrets for
//! rotations still in their overlap.

use std::collections::HashMap;

use hashbrown::HashTable;
use obleth_config::apikey::hashes_equal;
use obleth_config::db::key_store::KeyColumns;
use uuid::Uuid;

use super::interner::Interner;
use super::record::{micros, KeyRecord};

pub type Hash = [u8; 32];

/// A key decoded and ready to store; its models are interned when stored.
#[derive(Debug)]
pub struct Entry {
    hash: Hash,
    /// The previous secret's hash and the end of its overlap (µs).
    previous: Option<(Hash, i64)>,
    key: KeyRecord,
    models: Vec<String>,
}

impl Entry {
    /// The entry of `c`; none when its hash is not 32 bytes (no SHA-256 is
    /// anything else, and the database refuses other lengths).
    pub fn new(c: KeyColumns<'_>) -> Option<Entry> {
        let hash = Hash::try_from(c.secret_hash).ok()?;
        let previous = c
            .previous_secret_hash
            .and_then(|p| Hash::try_from(p).ok())
            .zip(c.previous_expires_at.map(micros));
        Some(Entry {
            hash,
            previous,
            key: KeyRecord::new(&c, None),
            models: c.allowed_models,
        })
    }

    pub fn id(&self) -> Uuid {
        self.key.id
    }

    /// Every hash the key answers to.
    pub fn hashes(&self) -> impl Iterator<Item = &Hash> {
        std::iter::once(&self.hash).chain(self.previous.as_ref().map(|(h, _)| h))
    }
}

/// A key in the slab with the hash it is found by.
#[derive(Debug)]
struct Slot {
    hash: Hash,
    key: KeyRecord,
}

/// The previous secret of a key within its rotation overlap.
#[derive(Debug, Clone, Copy)]
struct Previous {
    id: Uuid,
    /// End of the overlap (µs since the epoch), excluded.
    until: i64,
}

/// What a hash finds.
#[derive(Debug)]
pub enum Found<'a> {
    Key(&'a KeyRecord),
    /// A previous secret whose overlap has ended.
    Expired,
}

#[derive(Debug, Default)]
pub struct Table {
    slots: Vec<Slot>,
    by_hash: HashTable<u32>,
    by_id: HashTable<u32>,
    previous: HashMap<Hash, Previous>,
    previous_of: HashMap<Uuid, Hash>,
    models: Interner,
}

/// Folds two words with one wide multiply. SHA-256 output and v4 ids are
/// uniform already; the fold keeps other ids (tests', a file's hand-written
/// hashes) spread over the buckets and the control bytes.
fn fold(a: u64, b: u64) -> u64 {
    let m = u128::from(a) * u128::from(b ^ 0x9e37_79b9_7f4a_7c15);
    (m as u64) ^ ((m >> 64) as u64)
}

fn hash_key(h: &Hash) -> u64 {
    let word = |i: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&h[i..i + 8]);
        u64::from_le_bytes(w)
    };
    fold(word(0), word(8))
}

fn id_key(id: &Uuid) -> u64 {
    let (a, b) = id.as_u64_pair();
    fold(a, b)
}

fn position(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Removes the position `i` found under `key`.
fn unindex(table: &mut HashTable<u32>, key: u64, i: usize) {
    if let Ok(entry) = table.find_entry(key, |&j| j as usize == i) {
        entry.remove();
    }
}

/// Points the entry under `key` at `to` instead of `from`.
fn reindex(table: &mut HashTable<u32>, key: u64, from: usize, to: usize) {
    if let Some(j) = table.find_mut(key, |&j| j as usize == from) {
        *j = position(to);
    }
}

impl Table {
    /// Room for `additional` more keys without growing.
    pub fn reserve(&mut self, additional: usize) {
        self.slots.reserve_exact(additional);
        let slots = &self.slots;
        self.by_hash
            .reserve(additional, |&j| hash_key(&slots[j as usize].hash));
        self.by_id
            .reserve(additional, |&j| id_key(&slots[j as usize].key.id));
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    #[cfg(test)]
    pub fn contains_id(&self, id: &Uuid) -> bool {
        self.slot_of_id(id).is_some()
    }

    fn slot_of_id(&self, id: &Uuid) -> Option<usize> {
        self.by_id
            .find(id_key(id), |&j| self.slots[j as usize].key.id == *id)
            .map(|&j| j as usize)
    }

    /// The slot holding `hash`. The comparison takes the same time wherever
    /// two hashes differ.
    fn slot_of_hash(&self, hash: &Hash) -> Option<usize> {
        self.by_hash
            .find(hash_key(hash), |&j| {
                hashes_equal(&self.slots[j as usize].hash, hash)
            })
            .map(|&j| j as usize)
    }

    /// The key `hash` belongs to at `now` (µs): its current secret's, or its
    /// previous secret's while the rotation overlap lasts.
    pub fn get(&self, hash: &Hash, now: i64) -> Option<Found<'_>> {
        if let Some(i) = self.slot_of_hash(hash) {
            return Some(Found::Key(&self.slots[i].key));
        }
        let previous = self.previous.get(hash)?;
        let i = self.slot_of_id(&previous.id)?;
        Some(if now < previous.until {
            Found::Key(&self.slots[i].key)
        } else {
            Found::Expired
        })
    }

    /// Stores or replaces the entry's key and answers its record; a new key
    /// when the table already holds `max_keys` is not stored and its entry
    /// is given back. The previous secret is kept only if its overlap lasts
    /// past `now` (µs).
    pub fn upsert(
        &mut self,
        entry: Entry,
        now: i64,
        max_keys: usize,
    ) -> Result<&KeyRecord, Box<Entry>> {
        let id = entry.key.id;
        let mut held = self.slot_of_id(&id);
        if held.is_none() && self.slots.len() >= max_keys {
            return Err(Box::new(entry));
        }
        let Entry {
            hash,
            previous,
            mut key,
            models,
        } = entry;
        key.set_models(self.models.intern(&models));
        // Another key under this hash gives way (only a file listing one
        // secret twice can do that: the database keeps hashes unique).
        if let Some(i) = self.slot_of_hash(&hash) {
            let other = self.slots[i].key.id;
            if other != id {
                self.remove_id(&other);
                held = self.slot_of_id(&id);
            }
        }
        let i = match held {
            Some(i) => {
                let old = self.slots[i].hash;
                if old != hash {
                    unindex(&mut self.by_hash, hash_key(&old), i);
                    let slots = &self.slots;
                    self.by_hash
                        .insert_unique(hash_key(&hash), position(i), |&j| {
                            hash_key(&slots[j as usize].hash)
                        });
                }
                self.slots[i] = Slot { hash, key };
                i
            }
            None => {
                let i = self.slots.len();
                self.slots.push(Slot { hash, key });
                let slots = &self.slots;
                self.by_hash
                    .insert_unique(hash_key(&hash), position(i), |&j| {
                        hash_key(&slots[j as usize].hash)
                    });
                self.by_id.insert_unique(id_key(&id), position(i), |&j| {
                    id_key(&slots[j as usize].key.id)
                });
                i
            }
        };
        self.forget_previous(&id);
        if let Some((previous, until)) = previous.filter(|&(p, until)| until > now && p != hash) {
            self.previous.insert(previous, Previous { id, until });
            self.previous_of.insert(id, previous);
        }
        Ok(&self.slots[i].key)
    }

    /// The record of `entry`, its models interned, without storing it.
    pub fn record_of(&mut self, entry: Entry) -> KeyRecord {
        let mut key = entry.key;
        key.set_models(self.models.intern(&entry.models));
        key
    }

    /// Forgets the key with id `id`; answers whether it was held.
    pub fn remove_id(&mut self, id: &Uuid) -> bool {
        self.forget_previous(id);
        let Some(i) = self.slot_of_id(id) else {
            return false;
        };
        unindex(&mut self.by_hash, hash_key(&self.slots[i].hash), i);
        unindex(&mut self.by_id, id_key(id), i);
        let last = self.slots.len() - 1;
        self.slots.swap_remove(i);
        if i != last {
            let moved = &self.slots[i];
            reindex(&mut self.by_hash, hash_key(&moved.hash), last, i);
            reindex(&mut self.by_id, id_key(&moved.key.id), last, i);
        }
        true
    }

    /// The ids of the stored keys `keep` refuses.
    pub fn ids_not(&self, keep: impl Fn(&Uuid) -> bool) -> Vec<Uuid> {
        self.slots
            .iter()
            .map(|s| s.key.id)
            .filter(|id| !keep(id))
            .collect()
    }

    fn forget_previous(&mut self, id: &Uuid) {
        if self.previous_of.is_empty() {
            return;
        }
        if let Some(p) = self.previous_of.remove(id) {
            if self.previous.get(&p).is_some_and(|x| x.id == *id) {
                self.previous.remove(&p);
            }
        }
    }

    /// Distinct allowed-models lists held.
    pub fn model_lists(&self) -> usize {
        self.models.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keycache::record::tests::columns;

    fn entry(id: Uuid, hash: u8) -> Entry {
        Entry::new(columns(id, "abc123def456", &[hash; 32])).unwrap()
    }

    fn found(table: &Table, hash: u8) -> Option<Uuid> {
        match table.get(&[hash; 32], 0) {
            Some(Found::Key(k)) => Some(k.id),
            _ => None,
        }
    }

    #[test]
    fn a_slot_stays_within_128_bytes() {
        assert!(std::mem::size_of::<Slot>() <= 128);
    }

    #[test]
    fn removing_keys_keeps_every_other_key_findable() {
        let mut table = Table::default();
        let ids: Vec<Uuid> = (0..200u8).map(|_| Uuid::new_v4()).collect();
        for (n, id) in ids.iter().enumerate() {
            table.upsert(entry(*id, n as u8), 0, usize::MAX).unwrap();
        }
        // Remove from the front, the middle and the end; the slab moves
        // its last slot into each hole.
        for n in [0usize, 100, 199, 57] {
            assert!(table.remove_id(&ids[n]));
            assert!(!table.remove_id(&ids[n]));
        }
        assert_eq!(table.len(), 196);
        for (n, id) in ids.iter().enumerate() {
            let gone = [0, 100, 199, 57].contains(&n);
            assert_eq!(found(&table, n as u8), (!gone).then_some(*id), "key {n}");
            assert_eq!(table.contains_id(id), !gone);
        }
    }

    #[test]
    fn replacing_a_key_moves_it_to_its_new_hash() {
        let mut table = Table::default();
        let id = Uuid::new_v4();
        table.upsert(entry(id, 1), 0, 1).unwrap();
        table
            .upsert(entry(id, 2), 0, 1)
            .expect("a held key is replaced when the table is full");
        assert!(table.upsert(entry(Uuid::new_v4(), 3), 0, 1).is_err());
        assert_eq!((found(&table, 1), found(&table, 2)), (None, Some(id)));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_previous_secret_works_until_its_overlap_ends() {
        let mut table = Table::default();
        let id = Uuid::new_v4();
        let mut c = columns(id, "abc123def456", &[2; 32]);
        c.previous_secret_hash = Some(&[1; 32]);
        c.previous_expires_at = Some(chrono::DateTime::from_timestamp_micros(1_000).unwrap());
        table.upsert(Entry::new(c).unwrap(), 0, 1).unwrap();
        assert!(matches!(table.get(&[1; 32], 999), Some(Found::Key(k)) if k.id == id));
        assert!(matches!(table.get(&[1; 32], 1_000), Some(Found::Expired)));
        // The next version of the key, without a previous secret, drops it.
        table.upsert(entry(id, 2), 0, 1).unwrap();
        assert!(table.get(&[1; 32], 0).is_none());
        // An overlap already over when the key is stored is not kept.
        let mut c = columns(id, "abc123def456", &[2; 32]);
        c.previous_secret_hash = Some(&[1; 32]);
        c.previous_expires_at = Some(chrono::DateTime::from_timestamp_micros(1_000).unwrap());
        table.upsert(Entry::new(c).unwrap(), 1_000, 1).unwrap();
        assert!(table.get(&[1; 32], 0).is_none());
    }

    #[test]
    fn keys_with_the_same_models_share_one_list() {
        let mut table = Table::default();
        let mut records = Vec::new();
        for n in 0..3u8 {
            let mut c = columns(Uuid::new_v4(), "abc123def456", &[n; 32]);
            c.allowed_models = vec!["gpt-4o*".to_owned()];
            records.push(table.upsert(Entry::new(c).unwrap(), 0, 9).unwrap().clone());
        }
        let plain = table
            .upsert(entry(Uuid::new_v4(), 9), 0, 9)
            .unwrap()
            .clone();
        let (a, b) = (records[0].models().unwrap(), records[2].models().unwrap());
        assert!(Arc::ptr_eq(a, b));
        assert!(plain.models().is_none());
        assert_eq!(table.model_lists(), 1);
        assert!(records[1].allows_model("gpt-4o-mini") && !records[1].allows_model("o1"));
    }
}
