//! A map that holds at most a fixed number of entries and forgets the oldest first: the shape of
//! every memory that must not grow without bound (a participant's decisions and floors, the
//! exactly-once request ids, the view leader's expired ids). Forgetting the oldest is the safe end
//! to lose: each user says in its own constant's doc what forgetting one costs.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use serde::{Deserialize, Serialize};

/// See the module doc. Order is insertion order: replacing a key's value keeps its place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundedMap<K: Hash + Eq, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    entries_max: usize,
}

impl<K: Hash + Eq + Clone, V> BoundedMap<K, V> {
    /// A map that keeps at most `entries_max` entries.
    pub fn new(entries_max: usize) -> Self {
        assert!(entries_max > 0, "a bounded map must hold something");
        Self {
            map: HashMap::new(),
            order: VecDeque::new(),
            entries_max,
        }
    }

    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.map.contains_key(key)
    }

    /// Inserts or replaces; a new key beyond the bound makes the oldest one forgotten. Returns
    /// the value it replaced.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let old = self.map.insert(key.clone(), value);
        if old.is_none() {
            self.order.push_back(key);
            while self.order.len() > self.entries_max {
                if let Some(oldest) = self.order.pop_front() {
                    self.map.remove(&oldest);
                }
            }
        }
        old
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.order
            .iter()
            .filter_map(|key| self.map.get_key_value(key))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_key_is_forgotten_first_and_a_replaced_value_keeps_its_place() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        assert_eq!(map.insert("a", 10), Some(1), "replacing is not a new entry");
        map.insert("c", 3);
        assert_eq!(map.get(&"a"), None, "a was the oldest");
        assert_eq!((map.get(&"b"), map.get(&"c")), (Some(&2), Some(&3)));
        assert_eq!(map.len(), 2);
    }
}
