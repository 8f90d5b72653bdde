//! The key/value map of one storage server. Every value carries a version that only grows: a
//! local `set` bumps it, a 2PC commit brings the version its coordinator chose, and a copy that
//! arrives by rebalancing is kept only if it is newer than what is here.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::rpc::message::{Key, Value, Version, Versioned};

/// Longest key accepted, in bytes.
pub const KEY_BYTES_MAX: usize = 4 * 1024;
/// Largest value accepted, in bytes (a list counts each item plus one). Keeps any one value,
/// with its key and envelope, well inside a frame.
pub const VALUE_BYTES_MAX: usize = 1024 * 1024;
/// Keys returned by one `query_all_keys` page.
pub const KEYS_PAGE_MAX: usize = 10_000;

/// Rejects keys and values outside the limits, naming which and by how much.
pub fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidRequest("the key is empty".into()));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(Error::InvalidRequest(format!(
            "key is {} bytes, over the limit of {KEY_BYTES_MAX}",
            key.len()
        )));
    }
    Ok(())
}

pub fn check_value(value: &Value) -> Result<()> {
    let len = value.len_bytes();
    if len > VALUE_BYTES_MAX {
        return Err(Error::InvalidRequest(format!(
            "value is {len} bytes, over the limit of {VALUE_BYTES_MAX}"
        )));
    }
    Ok(())
}

/// What a server holds. Ordered, so that listing keys can be paged.
#[derive(Debug, Default)]
pub struct Store {
    map: BTreeMap<Key, Versioned>,
}

impl Store {
    pub fn get(&self, key: &str) -> Option<&Versioned> {
        self.map.get(key)
    }

    pub fn version(&self, key: &str) -> Version {
        self.map.get(key).map_or(0, |v| v.version)
    }

    /// A local write: the next version after what is here.
    pub fn set(&mut self, key: Key, value: Value) -> Version {
        let version = self.version(&key) + 1;
        self.map.insert(key, Versioned { value, version });
        version
    }

    /// Stores `versioned` unless a newer or equal version is already here. Returns whether it
    /// was stored. This is the only way copies from other servers enter the store.
    pub fn merge(&mut self, key: Key, versioned: Versioned) -> bool {
        match self.map.get(&key) {
            Some(current) if current.version >= versioned.version => false,
            _ => {
                self.map.insert(key, versioned);
                true
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Versioned> {
        self.map.remove(key)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Up to `limit` keys after `after` (exclusive), in order, and whether more follow.
    pub fn keys_page(&self, after: Option<&str>, limit: usize) -> (Vec<Key>, bool) {
        let limit = limit.clamp(1, KEYS_PAGE_MAX);
        let mut iter: Box<dyn Iterator<Item = &Key>> = match after {
            Some(after) => Box::new(
                self.map
                    .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
                    .map(|(k, _)| k),
            ),
            None => Box::new(self.map.keys()),
        };
        let keys: Vec<Key> = iter.by_ref().take(limit).cloned().collect();
        let more = iter.next().is_some();
        (keys, more)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Versioned)> {
        self.map.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str, version: Version) -> Versioned {
        Versioned {
            value: Value::Text(s.into()),
            version,
        }
    }

    #[test]
    fn an_older_copy_never_overwrites_a_newer_one() {
        let mut store = Store::default();
        assert!(store.merge("k".into(), text("new", 5)));
        assert!(!store.merge("k".into(), text("old", 3)));
        assert!(!store.merge("k".into(), text("same", 5)));
        assert_eq!(store.get("k"), Some(&text("new", 5)));
        assert!(store.merge("k".into(), text("newer", 6)));
    }

    #[test]
    fn local_sets_bump_the_version() {
        let mut store = Store::default();
        assert_eq!(store.set("k".into(), Value::Text("a".into())), 1);
        assert_eq!(store.set("k".into(), Value::Text("b".into())), 2);
    }

    #[test]
    fn keys_are_paged_in_order() {
        let mut store = Store::default();
        for key in ["c", "a", "b", "d"] {
            store.set(key.into(), Value::Text(String::new()));
        }
        assert_eq!(
            store.keys_page(None, 2),
            (vec!["a".to_string(), "b".to_string()], true)
        );
        assert_eq!(
            store.keys_page(Some("b"), 2),
            (vec!["c".to_string(), "d".to_string()], false)
        );
    }
}
