//! Storage engines: where a storage server keeps its keys, and the records the 2PC participant
//! and the exactly-once memory must not lose.
//!
//! An [`Engine`] is a map from key to versioned value with the handful of operations the server
//! needs: read, store a copy unless a newer one is there (every write, transfer and repair is
//! such a merge, so an older copy never replaces a newer one), append one item to a list, remove,
//! scan the keys in order, and apply a batch of copies at once. Versions are chosen outside the
//! engine (by the 2PC coordinator, or by [`set_local`] for a single-server `set`); the engine only
//! compares them.
//!
//! [`Engine::record`] is the place for what a durable server must have on disk before it
//! answers: a yes vote's prepared write, a decision, an aborted transaction's floor, a
//! single-server set's request id. The participant and the server call it at those points
//! whatever the engine; an engine that keeps nothing past the process (the [`memory`] engine)
//! accepts and forgets them.
//!
//! # Deliberately left out
//! * A durable engine: the durable storage issue adds one behind this trait, with recovery of
//!   the records (nothing reads them back yet).
//! * Transactions across keys: every operation touches one key, or a batch of independent copies.

pub mod memory;

pub use memory::Memory;

use crate::error::Result;
use crate::types::{
    Epoch, Key, Op, ServerInfo, TxId, TxState, Value, Version, Versioned, KEYS_PAGE_MAX,
};

/// A key/value store of versioned values. See the module doc.
pub trait Engine: Send + std::fmt::Debug {
    /// The key's value and version, copied out.
    fn get(&self, key: &str) -> Option<Versioned>;

    /// The key's version; 0 when the key is absent.
    fn version(&self, key: &str) -> Version;

    /// Stores `versioned` unless the key already holds an equal or newer version; returns
    /// whether it was stored. The only way a value enters the store.
    fn put_if_newer(&mut self, key: Key, versioned: Versioned) -> Result<bool>;

    /// Adds `item` to the end of the list at `key` and gives the list `version` (a missing key
    /// becomes `[item]`). Refused if the key holds a text. The caller checked the version.
    fn append(&mut self, key: Key, item: String, version: Version) -> Result<()>;

    /// Removes the key; a durable engine records a tombstone so it stays removed after a restart.
    fn remove(&mut self, key: &str) -> Result<Option<Versioned>>;

    /// Every key after `after` (all with `None`), in order.
    fn scan<'a>(&'a self, after: Option<&'a str>) -> Box<dyn Iterator<Item = &'a str> + 'a>;

    /// Keys held.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Makes `record` durable before the caller acts on it (see the module doc).
    fn record(&mut self, record: &Record<'_>) -> Result<()>;

    /// Stores each copy unless a newer one is here; returns how many were stored. A durable
    /// engine makes the whole batch durable at once.
    fn apply_batch(&mut self, batch: Vec<(Key, Versioned)>) -> Result<u64> {
        let mut stored = 0;
        for (key, versioned) in batch {
            if self.put_if_newer(key, versioned)? {
                stored += 1;
            }
        }
        Ok(stored)
    }
}

/// What must be durable before the participant or the server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A yes vote: the write the transaction will make if it commits.
    Prepared {
        tx: TxId,
        key: &'a str,
        op: &'a Op,
        value: &'a Value,
        version: Version,
        epoch: Epoch,
        participants: &'a [ServerInfo],
    },
    /// A transaction's decision, as this participant learnt it.
    Decided { tx: TxId, state: TxState },
    /// No write at or below `version` may be applied to `key` (an aborted transaction's floor).
    Floor { key: &'a str, version: Version },
    /// A single-server set with this request id was applied and produced `version`.
    Applied { request_id: u128, version: Version },
}

/// A single-server write (`set`, course task 1): the next version after what the key holds.
pub fn set_local(engine: &mut dyn Engine, key: Key, value: Value) -> Result<Version> {
    let version = crate::types::version_after(engine.version(&key))?;
    engine.put_if_newer(key, Versioned { value, version })?;
    Ok(version)
}

/// Up to `limit` keys after `after` (exclusive), in order, and whether more follow.
pub fn keys_page(engine: &dyn Engine, after: Option<&str>, limit: usize) -> (Vec<Key>, bool) {
    let limit = limit.clamp(1, KEYS_PAGE_MAX);
    let mut iter = engine.scan(after);
    let keys: Vec<Key> = iter.by_ref().take(limit).map(str::to_string).collect();
    let more = iter.next().is_some();
    (keys, more)
}

#[cfg(test)]
mod tests;
