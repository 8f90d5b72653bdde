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
//! Two engines: [`memory`] (nothing on disk: `--in-memory`) and [`log`] (the durable default: a
//! log of records on disk under the [`disk`] layer, with every value also in memory). A durable
//! engine writes each change before it returns, and [`durability`] lets the server wait for the
//! sync that covers it (group commit) without holding the engine: a request is answered only
//! after what it changed is durable. What a restarted engine read back of the records is
//! [`Engine::recovered`]; the server's identity lives beside the log ([`identity`]).
//!
//! # Deliberately left out
//! * Transactions across keys: every operation touches one key, or a batch of independent copies.

pub mod disk;
pub mod durability;
#[cfg(test)]
pub(crate) mod fuzz_support;
pub mod identity;
pub mod log;
pub mod memory;
pub mod record;

pub use disk::{Disk, Prefixed, RealDisk, SimDisk};
pub use durability::{Durability, FsyncMode, Lsn};
pub use log::{Log, LogOptions};
pub use memory::Memory;

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::types::{
    Epoch, Key, Op, ServerId, ServerInfo, TxId, TxState, Value, Version, Versioned, KEYS_PAGE_MAX,
};

/// Decisions remembered for idempotent commit/abort and termination queries; the oldest is
/// forgotten beyond it (a commit retried after this many later decisions is refused).
pub const DECIDED_MAX: usize = 100_000;
/// Key floors remembered; the oldest is forgotten beyond it.
pub const FLOORS_MAX: usize = 100_000;
/// Request ids remembered for exactly-once single-server writes; a retry arriving after this
/// many later sets would be applied again.
pub const APPLIED_MAX: usize = 100_000;
/// The largest record a durable engine writes (a transfer batch is bounded by the frame limit,
/// 8 MiB, well under it).
pub const RECORD_BYTES_MAX: usize = 32 * 1024 * 1024;

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

    /// Writes `record` so that it survives a restart (see the module doc); the caller waits on
    /// [`Engine::durability`] before it acts on it outside the process.
    fn record(&mut self, record: &Record<'_>) -> Result<()>;

    /// A handle to wait for what was written to be durable; one that never waits for an engine
    /// with nothing on disk.
    fn durability(&self) -> Durability {
        Durability::none()
    }

    /// The records read back when the engine was opened (nothing for an engine that keeps none).
    fn recovered(&self) -> Recovered {
        Recovered::default()
    }

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

/// A yes vote as a durable engine keeps it: everything the participant needs to finish the
/// transaction after a restart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedTx {
    pub tx: TxId,
    pub key: Key,
    pub op: Op,
    /// The value the key will hold if the transaction commits.
    pub value: Value,
    pub version: Version,
    pub epoch: Epoch,
    pub participants: Vec<ServerInfo>,
    /// The member id the vote was cast as.
    pub voted_as: ServerId,
    /// The key's version when the vote was cast.
    pub base_version: Version,
}

/// What a durable engine read back of the [`Record`]s when it was opened: the undecided yes
/// votes, the recent decisions, the key floors and the applied request ids, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    pub pending: Vec<PreparedTx>,
    pub decided: Vec<(TxId, TxState)>,
    pub floors: Vec<(Key, Version)>,
    pub applied: Vec<(u128, Version)>,
}

/// What must be durable before the participant or the server answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A yes vote: the write the transaction will make if it commits.
    Prepared(&'a PreparedTx),
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
