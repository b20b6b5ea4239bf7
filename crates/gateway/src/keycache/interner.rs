//! Interned allowed-models lists: keys with identical lists share one
//! allocation, and a key with no list holds none. Lists no key holds any more
//! are dropped when the set has doubled since the last sweep.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use super::record::ModelList;

#[derive(Debug, Default)]
pub struct Interner {
    lists: HashTable<Arc<ModelList>>,
    hasher: RandomState,
    /// Lists held after the last sweep.
    swept: usize,
}

impl Interner {
    /// The shared list equal to `models`; none for an empty list.
    pub fn intern(&mut self, models: &[String]) -> Option<Arc<ModelList>> {
        if models.is_empty() {
            return None;
        }
        let hash = self.hash(models);
        if let Some(list) = self.lists.find(hash, |l| l.is(models)) {
            return Some(Arc::clone(list));
        }
        if self.lists.len() >= 2 * self.swept + 64 {
            self.sweep();
        }
        let list = Arc::new(ModelList::new(models));
        let hasher = &self.hasher;
        self.lists
            .insert_unique(hash, Arc::clone(&list), |l| hasher.hash_one(&**l));
        Some(list)
    }

    /// Drops the lists only the interner holds.
    pub fn sweep(&mut self) {
        self.lists.retain(|l| Arc::strong_count(l) > 1);
        self.swept = self.lists.len();
    }

    /// Distinct lists held.
    pub fn len(&self) -> usize {
        self.lists.len()
    }

    /// Hashes as `ModelList`'s derived `Hash` does (a slice hashes as its
    /// length then each element, and `String` and `Box<str>` as their
    /// `str`), so a list is found from a borrowed slice without building it.
    fn hash(&self, models: &[String]) -> u64 {
        self.hasher.hash_one(models)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(models: &[&str]) -> Vec<String> {
        models.iter().map(|m| (*m).to_owned()).collect()
    }

    #[test]
    fn identical_lists_share_one_allocation_and_an_empty_list_holds_none() {
        let mut interner = Interner::default();
        let a = interner.intern(&list(&["gpt-4o*", "text-embedding-*"]));
        let b = interner.intern(&list(&["gpt-4o*", "text-embedding-*"]));
        let c = interner.intern(&list(&["gpt-4o*"]));
        let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(interner.len(), 2);
        assert!(interner.intern(&[]).is_none());
        // The slice's hash is the stored list's.
        assert_eq!(
            interner.hasher.hash_one(&*a),
            interner.hash(&list(&["gpt-4o*", "text-embedding-*"]))
        );
    }

    #[test]
    fn a_sweep_drops_the_lists_no_key_holds() {
        let mut interner = Interner::default();
        let kept = interner.intern(&list(&["a"]));
        drop(interner.intern(&list(&["b"])));
        interner.sweep();
        assert_eq!(interner.len(), 1);
        assert!(Arc::ptr_eq(
            &kept.unwrap(),
            &interner.intern(&list(&["a"])).unwrap()
        ));
    }
}
