//! The domain: the values ringleader stores, their versions, the ids of servers and
//! transactions, the view of the cluster, and the limits every key and value is checked
//! against. The ring, the 2PC state machines, the storage engines and the wire all speak these
//! types; none of them is defined by the wire ([`crate::rpc`] carries them, it does not own them).

use serde::{Deserialize, Serialize};

use crate::errinput;
use crate::error::Result;

/// A storage server's identity: a fresh UUID (as text) at every start.
pub type ServerId = String;
/// A view number; +1 on every view change.
pub type Epoch = u64;
/// A key of the store.
pub type Key = String;
/// A two-phase-commit transaction id, chosen at random by the coordinator.
pub type TxId = u128;
/// The version of a stored value: it only grows.
pub type Version = u64;
/// A grant number of the lock service: it grows with every grant.
pub type FencingToken = u64;

/// A stored value: a text (`setr`) or a list of strings (`append`). Its `Debug` shows its size
/// and a short hash, never its contents: requests and replies are debug-logged whole, and a
/// value may be large or private (`Display` shows the contents, for the client's output).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Value {
    Text(String),
    List(Vec<String>),
}

impl Value {
    /// Bytes the value occupies, for the size limits.
    pub fn len_bytes(&self) -> usize {
        match self {
            Value::Text(text) => text.len(),
            Value::List(items) => items.iter().map(|item| item.len() + 1).sum(),
        }
    }
}

impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use std::hash::{Hash, Hasher};
        // SipHash with fixed keys: the same value shows the same hash in every process.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut hasher);
        let short = hasher.finish() >> 32;
        match self {
            Value::Text(_) => write!(f, "Text({} bytes, hash {short:08x})", self.len_bytes()),
            Value::List(items) => write!(
                f,
                "List({} items, {} bytes, hash {short:08x})",
                items.len(),
                self.len_bytes()
            ),
        }
    }
}

impl std::fmt::Display for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Text(text) => f.write_str(text),
            Value::List(items) => f.write_str(&items.join("\n")),
        }
    }
}

/// A value with its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versioned {
    pub value: Value,
    pub version: Version,
}

/// A live storage server as the view lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: ServerId,
    pub addr: String,
}

/// Members of a view leader's Raft group at most.
pub const VIEWLEADER_MEMBERS_MAX: usize = 16;

/// One view-leader member's place in its Raft group, as it sees it (`client viewleader
/// status`, `/admin/status`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: u64,
    pub addr: String,
    /// `leader`, `follower`, `candidate`, `learner` or `stopped`.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub leader_addr: Option<String>,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    /// The group's voters and learners as this member knows them: id and address.
    pub voters: Vec<(u64, String)>,
    pub learners: Vec<(u64, String)>,
    /// The epoch of the view this member applied.
    pub epoch: Epoch,
    /// In a simulated crash (`client crash`): it answers only `Recover` and `Status`.
    pub crashed: bool,
}

/// The membership at one epoch.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    pub epoch: Epoch,
    /// Sorted by id.
    pub servers: Vec<ServerInfo>,
    /// True while some live server has not reported `rebalanced_epoch == epoch`.
    pub rebalancing: bool,
    /// The last epoch at which no server was rebalancing: every key was then on its replicas in
    /// `settled_servers`. Rebalancing plans against it (see `server::rebalance`).
    pub settled_epoch: Epoch,
    pub settled_servers: Vec<ServerInfo>,
    /// The ranges of the ring whose every replica left the view before the cluster could settle
    /// without them: data there may be lost. Newest last, at most [`LOSSES_MAX`].
    pub losses: Vec<Loss>,
}

/// A settled view that lost every replica of some range of the ring: keys whose replicas in
/// `settled_servers` are none of `survivors` may have been lost (their copies went with those
/// servers, unless one comes back).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loss {
    /// The epoch settled without them.
    pub epoch: Epoch,
    /// The settled view before the loss.
    pub settled_servers: Vec<ServerInfo>,
    /// The servers of `settled_servers` (or their successors) still in the view when it settled.
    pub survivors: Vec<ServerId>,
}

impl Loss {
    /// The addresses of the servers whose copies were lost.
    pub fn lost_addrs(&self) -> Vec<&str> {
        self.settled_servers
            .iter()
            .filter(|s| !self.survivors.contains(&s.id))
            .map(|s| s.addr.as_str())
            .collect()
    }
}

/// Former ids a server reports in its heartbeat; a process keeps only its most recent ones.
pub const FORMER_IDS_MAX: usize = 8;

/// Losses a view remembers; the oldest is forgotten beyond this (its keys then read as absent).
pub const LOSSES_MAX: usize = 8;

/// What a storage server reports in each heartbeat: its proof of life, and how it joins. One
/// type from the wire (`ViewLeaderRequest::Heartbeat`) through the Raft log
/// (`Command::Heartbeat`) to the view leader's state, which checks it before it touches anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub server_id: ServerId,
    pub addr: String,
    pub epoch_seen: Epoch,
    pub rebalanced_epoch: Epoch,
    /// The last settled view this server holds: a restarted view leader, which knows none,
    /// learns it from these and waits for its servers before settling anew.
    pub settled_epoch: Epoch,
    pub settled_servers: Vec<ServerInfo>,
    /// The ids this process held before it was expired and rejoined, newest last, at most
    /// [`FORMER_IDS_MAX`]: it still holds their data, so a view leader counts their ranges as
    /// held while this server is live.
    pub former_ids: Vec<ServerId>,
}

/// The answer to a heartbeat. Every variant carries the current epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// The server is (now) in the view.
    Accepted { epoch: Epoch },
    /// This id expired earlier; the server must rejoin under a fresh id.
    Denied { epoch: Epoch },
    /// Another live id holds this address; try again once it expires.
    Retry { epoch: Epoch, holder: ServerId },
}

impl HeartbeatReply {
    pub fn epoch(&self) -> Epoch {
        match self {
            HeartbeatReply::Accepted { epoch }
            | HeartbeatReply::Denied { epoch }
            | HeartbeatReply::Retry { epoch, .. } => *epoch,
        }
    }
}

/// The lock service's answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockReply {
    /// The requester holds the lock; `token` grows with every grant of the lock.
    Granted { token: FencingToken },
    /// Queued behind `holder`; `position` 1 is next in line.
    Retry { holder: String, position: usize },
    /// The requester left the queue.
    Released,
    /// The requester was not in the lock's queue.
    Unknown,
    /// Waiting would close this cycle of requesters in the wait-for graph.
    Deadlock { cycle: Vec<String> },
}

/// What a transaction does to its key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Replace the value.
    Put(Value),
    /// Add an item to the list at the key (a missing key becomes a one-item list).
    Append(String),
}

/// Where a transaction stands at one participant (the answer to `TxStatus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxState {
    /// Voted yes, no decision known here yet.
    Prepared,
    Committed {
        version: Version,
    },
    /// Aborted here, or never prepared here (and now it never will be).
    Aborted,
}

/// Two-phase commit's first message (see `crate::twopc`); the wire carries it as it is: vote on applying `op` to `key` at `version`. `participants` are all the
/// transaction's replicas in ring order; the first, the primary, holds the decision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepare {
    pub tx: TxId,
    pub key: Key,
    pub op: Op,
    pub epoch: Epoch,
    pub expected_server_id: ServerId,
    pub version: Version,
    pub participants: Vec<ServerInfo>,
    /// The view records the key's range as lost (every replica left before it settled): a
    /// participant that does not hold the key refuses an append, which would start a fresh list
    /// that beats the real one by version if a server that held it comes back.
    pub range_lost: bool,
}

/// Highest version accepted from anyone. Versions follow the wall clock in microseconds (about
/// 2^51 today), so this leaves millennia of room while keeping `version + 1` far from overflow:
/// a peer that sends `u64::MAX` gets an error instead of making a key unwritable.
pub const VERSION_MAX: Version = 1 << 62;
/// Highest epoch accepted from anyone, for the same reason: an epoch is only ever raised by one
/// at a time, so no honest epoch comes near it.
pub const EPOCH_MAX: Epoch = 1 << 62;

/// Rejects a version above [`VERSION_MAX`].
pub fn check_version(version: Version) -> Result<()> {
    if version > VERSION_MAX {
        return Err(errinput!(
            "version {version} is above the highest accepted, {VERSION_MAX}"
        ));
    }
    Ok(())
}

/// Rejects an epoch above [`EPOCH_MAX`].
pub fn check_epoch(epoch: Epoch) -> Result<()> {
    if epoch > EPOCH_MAX {
        return Err(errinput!(
            "epoch {epoch} is above the highest accepted, {EPOCH_MAX}"
        ));
    }
    Ok(())
}

/// The version after `version`, or an error if it would pass [`VERSION_MAX`].
pub fn version_after(version: Version) -> Result<Version> {
    match version.checked_add(1) {
        Some(next) if next <= VERSION_MAX => Ok(next),
        _ => Err(errinput!(
            "no version after {version}: the highest accepted is {VERSION_MAX}"
        )),
    }
}

/// Which of a storage server's two key spaces a request means. They never mix: a key of the
/// same name may live in both, with unrelated values and versions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Space {
    /// The server's own keys (`set`, `get`, `query_all_keys`: the first course task). They stay
    /// on the server that holds them: rebalancing never moves, copies or drops them.
    #[default]
    Local,
    /// The keys the ring places on this server (`setr`, `getr`, the HTTP service): replicated,
    /// and moved by rebalancing when the view changes.
    Ring,
}

impl Space {
    /// How a person calls it in a message.
    pub fn describe(self) -> &'static str {
        match self {
            Space::Local => "single-server",
            Space::Ring => "ring",
        }
    }
}

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
        return Err(errinput!("the key is empty"));
    }
    if key.len() > KEY_BYTES_MAX {
        return Err(errinput!(
            "key is {} bytes, over the limit of {KEY_BYTES_MAX}",
            key.len()
        ));
    }
    Ok(())
}

pub fn check_value(value: &Value) -> Result<()> {
    let len = value.len_bytes();
    if len > VALUE_BYTES_MAX {
        return Err(errinput!(
            "value is {len} bytes, over the limit of {VALUE_BYTES_MAX}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_values_debug_shows_its_size_and_hash_never_its_contents() {
        let secret = Value::Text("the secret contents".into());
        let shown = format!("{secret:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.starts_with("Text(19 bytes, hash "), "{shown}");
        assert_eq!(shown, format!("{:?}", secret.clone()));
        let list = Value::List(vec!["private".into(), "items".into()]);
        let shown = format!("{list:?}");
        assert!(!shown.contains("private"), "{shown}");
        assert!(
            shown.starts_with("List(2 items, 14 bytes, hash "),
            "{shown}"
        );
        // Display, for the client's output, keeps the contents.
        assert_eq!(secret.to_string(), "the secret contents");
    }
}
