//! The key/value map of one storage server. Every value carries a version that only grows: a
//! local `set` bumps it, a 2PC commit brings the version its coordinator chose, and a copy that
//! arrives by rebalancing is kept only if it is newer than what is here.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use crate::types::{Key, Value, Version, Versioned, KEYS_PAGE_MAX};

/// A key holding a text, with its value, in one allocation: the key's bytes followed by the
/// text's. Nearly every key holds a text, and a server holds millions of them: one allocation
/// instead of two, and 32 bytes in the tree instead of 56, take the store from about 270 bytes
/// per 100-byte value to about 195 (see docs/profiling.md, "Memory per key").
#[derive(Debug)]
struct TextRecord {
    key_and_text: Box<str>,
    key_len: usize,
    version: Version,
}

impl TextRecord {
    fn new(key: &str, text: &str, version: Version) -> Self {
        let mut key_and_text = String::with_capacity(key.len() + text.len());
        key_and_text.push_str(key);
        key_and_text.push_str(text);
        TextRecord {
            key_and_text: key_and_text.into_boxed_str(),
            key_len: key.len(),
            version,
        }
    }

    fn key(&self) -> &str {
        // Always a char boundary: the key was a whole string when the record was built.
        self.key_and_text.get(..self.key_len).unwrap_or_default()
    }

    fn text(&self) -> &str {
        self.key_and_text.get(self.key_len..).unwrap_or_default()
    }

    fn versioned(&self) -> Versioned {
        Versioned {
            value: Value::Text(self.text().to_string()),
            version: self.version,
        }
    }
}

// Ordered and compared by key alone, so the set is a map from key to record and can be searched
// with a `&str` (which `Borrow` requires to order the same way).
impl PartialEq for TextRecord {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for TextRecord {}

impl PartialOrd for TextRecord {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TextRecord {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl Borrow<str> for TextRecord {
    fn borrow(&self) -> &str {
        self.key()
    }
}

/// What a server holds: texts compactly, lists (appended to, rarely many) as they come. A key
/// is in one of the two, never both. Ordered, so that listing keys can be paged.
#[derive(Debug, Default)]
pub struct Store {
    texts: BTreeSet<TextRecord>,
    lists: BTreeMap<Key, Versioned>,
}

impl Store {
    /// The key's value, copied out.
    pub fn get(&self, key: &str) -> Option<Versioned> {
        match self.texts.get(key) {
            Some(record) => Some(record.versioned()),
            None => self.lists.get(key).cloned(),
        }
    }

    pub fn version(&self, key: &str) -> Version {
        match self.texts.get(key) {
            Some(record) => record.version,
            None => self.lists.get(key).map_or(0, |v| v.version),
        }
    }

    /// Whether the key holds a list (an append would extend it) and its items.
    pub fn list(&self, key: &str) -> Option<&[String]> {
        match self.lists.get(key).map(|v| &v.value) {
            Some(Value::List(items)) => Some(items),
            _ => None,
        }
    }

    pub fn contains(&self, key: &str) -> bool {
        self.texts.contains(key) || self.lists.contains_key(key)
    }

    /// A local write: the next version after what is here.
    pub fn set(&mut self, key: Key, value: Value) -> Version {
        let version = self.version(&key) + 1;
        self.put(key, Versioned { value, version });
        version
    }

    /// Stores `versioned` unless a newer or equal version is already here. Returns whether it
    /// was stored. This is the only way copies from other servers enter the store.
    pub fn merge(&mut self, key: Key, versioned: Versioned) -> bool {
        let held = match self.texts.get(key.as_str()) {
            Some(record) => Some(record.version),
            None => self.lists.get(&key).map(|v| v.version),
        };
        if held.is_some_and(|version| version >= versioned.version) {
            return false;
        }
        self.put(key, versioned);
        true
    }

    fn put(&mut self, key: Key, versioned: Versioned) {
        match versioned.value {
            Value::Text(text) => {
                let record = TextRecord::new(&key, &text, versioned.version);
                self.lists.remove(&key);
                self.texts.replace(record);
            }
            Value::List(_) => {
                self.texts.remove(key.as_str());
                self.lists.insert(key, versioned);
            }
        }
    }

    pub fn remove(&mut self, key: &str) -> Option<Versioned> {
        match self.texts.take(key) {
            Some(record) => Some(record.versioned()),
            None => self.lists.remove(key),
        }
    }

    pub fn len(&self) -> usize {
        self.texts.len() + self.lists.len()
    }

    pub fn is_empty(&self) -> bool {
        self.texts.is_empty() && self.lists.is_empty()
    }

    /// Every key after `after` (exclusive; all with `None`), in order.
    pub fn keys_after<'a>(&'a self, after: Option<&'a str>) -> impl Iterator<Item = &'a str> {
        let from = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        let texts = self
            .texts
            .range::<str, _>((from, Bound::Unbounded))
            .map(TextRecord::key);
        let lists = self
            .lists
            .range::<str, _>((from, Bound::Unbounded))
            .map(|(key, _)| key.as_str());
        MergeSorted {
            a: texts.peekable(),
            b: lists.peekable(),
        }
    }

    /// Every key, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys_after(None)
    }

    /// Up to `limit` keys after `after` (exclusive), in order, and whether more follow.
    pub fn keys_page(&self, after: Option<&str>, limit: usize) -> (Vec<Key>, bool) {
        let limit = limit.clamp(1, KEYS_PAGE_MAX);
        let mut iter = self.keys_after(after);
        let keys: Vec<Key> = iter.by_ref().take(limit).map(str::to_string).collect();
        let more = iter.next().is_some();
        (keys, more)
    }
}

/// Two ascending iterators of distinct keys as one ascending iterator.
struct MergeSorted<'a, A: Iterator<Item = &'a str>, B: Iterator<Item = &'a str>> {
    a: std::iter::Peekable<A>,
    b: std::iter::Peekable<B>,
}

impl<'a, A: Iterator<Item = &'a str>, B: Iterator<Item = &'a str>> Iterator
    for MergeSorted<'a, A, B>
{
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        match (self.a.peek(), self.b.peek()) {
            (Some(a), Some(b)) if b < a => self.b.next(),
            (Some(_), _) => self.a.next(),
            (None, _) => self.b.next(),
        }
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
        assert_eq!(store.get("k"), Some(text("new", 5)));
        assert!(store.merge("k".into(), text("newer", 6)));
        assert_eq!(store.get("k"), Some(text("newer", 6)));
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

    fn list(items: &[&str], version: Version) -> Versioned {
        Versioned {
            value: Value::List(items.iter().map(|i| i.to_string()).collect()),
            version,
        }
    }

    #[test]
    fn texts_and_lists_are_paged_together_in_order() {
        let mut store = Store::default();
        store.merge("b".into(), list(&["x"], 1));
        store.merge("d".into(), list(&[], 1));
        for key in ["e", "a", "c"] {
            store.merge(key.into(), text(key, 1));
        }
        assert_eq!(store.keys().collect::<Vec<_>>(), ["a", "b", "c", "d", "e"]);
        assert_eq!(store.len(), 5);
        assert_eq!(
            store.keys_page(Some("a"), 3),
            (vec!["b".to_string(), "c".into(), "d".into()], true)
        );
        assert_eq!(
            store.keys_page(Some("d"), 3),
            (vec!["e".to_string()], false)
        );
    }

    #[test]
    fn a_key_changes_between_text_and_list_and_is_held_once() {
        let mut store = Store::default();
        store.merge("k".into(), text("t", 1));
        assert!(store.list("k").is_none());
        store.merge("k".into(), list(&["a", "b"], 2));
        assert_eq!(
            store.list("k"),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert_eq!(store.get("k"), Some(list(&["a", "b"], 2)));
        assert_eq!(store.len(), 1);
        // An older text never replaces the newer list.
        assert!(!store.merge("k".into(), text("old", 1)));
        store.merge("k".into(), text("back", 3));
        assert_eq!((store.get("k"), store.len()), (Some(text("back", 3)), 1));
        assert!(store.list("k").is_none());
        assert_eq!(store.remove("k"), Some(text("back", 3)));
        assert!(store.is_empty() && store.get("k").is_none() && store.version("k") == 0);
    }

    #[test]
    fn keys_that_prefix_each_other_stay_apart() {
        // The key and its text share one allocation: "ab" + "c" must not be "a" + "bc".
        let mut store = Store::default();
        store.merge("a".into(), text("bc", 1));
        store.merge("ab".into(), text("c", 2));
        store.merge("".into(), text("abc", 3));
        assert_eq!(store.get("a"), Some(text("bc", 1)));
        assert_eq!(store.get("ab"), Some(text("c", 2)));
        assert_eq!(store.get(""), Some(text("abc", 3)));
        assert!(store.get("abc").is_none());
        assert_eq!(store.keys().collect::<Vec<_>>(), ["", "a", "ab"]);
    }

    #[test]
    fn unicode_keys_and_texts_round_trip() {
        let mut store = Store::default();
        store.merge("ключ".into(), text("значение ✓", 4));
        assert_eq!(store.get("ключ"), Some(text("значение ✓", 4)));
        assert_eq!(store.version("ключ"), 4);
    }
}
