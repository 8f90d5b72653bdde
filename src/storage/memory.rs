//! The in-memory engine: every key in one ordered map, nothing on disk. A process that dies
//! loses what it held (the other replicas carry it); the records of [`super::Record`] are not
//! kept, because the participant's own maps are all a process needs while it lives.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use super::{Engine, Record};
use crate::errinput;
use crate::error::Result;
use crate::types::{Key, Value, Version, Versioned};

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
pub struct Memory {
    texts: BTreeSet<TextRecord>,
    lists: BTreeMap<Key, Versioned>,
}

impl Memory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the key is held (as a text or a list).
    pub fn contains(&self, key: &str) -> bool {
        self.texts.contains(key) || self.lists.contains_key(key)
    }

    /// Whether the key holds a text.
    pub fn holds_text(&self, key: &str) -> bool {
        self.texts.contains(key)
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
}

impl Engine for Memory {
    fn get(&self, key: &str) -> Option<Versioned> {
        match self.texts.get(key) {
            Some(record) => Some(record.versioned()),
            None => self.lists.get(key).cloned(),
        }
    }

    fn version(&self, key: &str) -> Version {
        match self.texts.get(key) {
            Some(record) => record.version,
            None => self.lists.get(key).map_or(0, |v| v.version),
        }
    }

    fn put_if_newer(&mut self, key: Key, versioned: Versioned) -> Result<bool> {
        let held = match self.texts.get(key.as_str()) {
            Some(record) => Some(record.version),
            None => self.lists.get(&key).map(|v| v.version),
        };
        if held.is_some_and(|version| version >= versioned.version) {
            return Ok(false);
        }
        self.put(key, versioned);
        Ok(true)
    }

    fn append(&mut self, key: Key, item: String, version: Version) -> Result<()> {
        if self.texts.contains(key.as_str()) {
            return Err(errinput!(
                "{key:?} holds a text, not a list: cannot append to it"
            ));
        }
        let entry = self.lists.entry(key).or_insert_with(|| Versioned {
            value: Value::List(Vec::new()),
            version,
        });
        if let Value::List(items) = &mut entry.value {
            items.push(item);
        }
        entry.version = version;
        Ok(())
    }

    fn remove(&mut self, key: &str) -> Result<Option<Versioned>> {
        Ok(match self.texts.take(key) {
            Some(record) => Some(record.versioned()),
            None => self.lists.remove(key),
        })
    }

    fn scan<'a>(&'a self, after: Option<&'a str>) -> Box<dyn Iterator<Item = &'a str> + 'a> {
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
        Box::new(MergeSorted {
            a: texts.peekable(),
            b: lists.peekable(),
        })
    }

    fn len(&self) -> usize {
        self.texts.len() + self.lists.len()
    }

    fn record(&mut self, _record: &Record<'_>) -> Result<()> {
        Ok(())
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
    use crate::storage::{keys_page, set_local};

    fn text(s: &str, version: Version) -> Versioned {
        Versioned {
            value: Value::Text(s.into()),
            version,
        }
    }

    #[test]
    fn an_older_copy_never_overwrites_a_newer_one() {
        let mut store = Memory::new();
        assert!(store.put_if_newer("k".into(), text("new", 5)).unwrap());
        assert!(!store.put_if_newer("k".into(), text("old", 3)).unwrap());
        assert!(!store.put_if_newer("k".into(), text("same", 5)).unwrap());
        assert_eq!(store.get("k"), Some(text("new", 5)));
        assert!(store.put_if_newer("k".into(), text("newer", 6)).unwrap());
        assert_eq!(store.get("k"), Some(text("newer", 6)));
    }

    #[test]
    fn local_sets_bump_the_version() {
        let mut store = Memory::new();
        assert_eq!(
            set_local(&mut store, "k".into(), Value::Text("a".into())).unwrap(),
            1
        );
        assert_eq!(
            set_local(&mut store, "k".into(), Value::Text("b".into())).unwrap(),
            2
        );
    }

    #[test]
    fn keys_are_paged_in_order() {
        let mut store = Memory::new();
        for key in ["c", "a", "b", "d"] {
            set_local(&mut store, key.into(), Value::Text(String::new())).unwrap();
        }
        assert_eq!(
            keys_page(&store, None, 2),
            (vec!["a".to_string(), "b".to_string()], true)
        );
        assert_eq!(
            keys_page(&store, Some("b"), 2),
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
        let mut store = Memory::new();
        store.put_if_newer("b".into(), list(&["x"], 1)).unwrap();
        store.put_if_newer("d".into(), list(&[], 1)).unwrap();
        for key in ["e", "a", "c"] {
            store.put_if_newer(key.into(), text(key, 1)).unwrap();
        }
        assert_eq!(
            store.scan(None).collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e"]
        );
        assert_eq!(store.len(), 5);
        assert_eq!(
            keys_page(&store, Some("a"), 3),
            (vec!["b".to_string(), "c".into(), "d".into()], true)
        );
        assert_eq!(
            keys_page(&store, Some("d"), 3),
            (vec!["e".to_string()], false)
        );
    }

    #[test]
    fn a_key_changes_between_text_and_list_and_is_held_once() {
        let mut store = Memory::new();
        store.put_if_newer("k".into(), text("t", 1)).unwrap();
        assert!(!matches!(
            store.get("k").map(|v| v.value),
            Some(Value::List(_))
        ));
        store
            .put_if_newer("k".into(), list(&["a", "b"], 2))
            .unwrap();
        assert_eq!(store.get("k"), Some(list(&["a", "b"], 2)));
        assert_eq!(store.len(), 1);
        // An older text never replaces the newer list.
        assert!(!store.put_if_newer("k".into(), text("old", 1)).unwrap());
        store.put_if_newer("k".into(), text("back", 3)).unwrap();
        assert_eq!((store.get("k"), store.len()), (Some(text("back", 3)), 1));
        assert!(!matches!(
            store.get("k").map(|v| v.value),
            Some(Value::List(_))
        ));
        assert_eq!(store.remove("k").unwrap(), Some(text("back", 3)));
        assert!(store.len() == 0 && store.get("k").is_none() && store.version("k") == 0);
    }

    #[test]
    fn keys_that_prefix_each_other_stay_apart() {
        // The key and its text share one allocation: "ab" + "c" must not be "a" + "bc".
        let mut store = Memory::new();
        store.put_if_newer("a".into(), text("bc", 1)).unwrap();
        store.put_if_newer("ab".into(), text("c", 2)).unwrap();
        store.put_if_newer("".into(), text("abc", 3)).unwrap();
        assert_eq!(store.get("a"), Some(text("bc", 1)));
        assert_eq!(store.get("ab"), Some(text("c", 2)));
        assert_eq!(store.get(""), Some(text("abc", 3)));
        assert!(store.get("abc").is_none());
        assert_eq!(store.scan(None).collect::<Vec<_>>(), ["", "a", "ab"]);
    }

    #[test]
    fn unicode_keys_and_texts_round_trip() {
        let mut store = Memory::new();
        store
            .put_if_newer("ключ".into(), text("значение ✓", 4))
            .unwrap();
        assert_eq!(store.get("ключ"), Some(text("значение ✓", 4)));
        assert_eq!(store.version("ключ"), 4);
    }
}
