//! The messages of both services. Request and reply enums are paired per service
//! (`ViewLeaderRequest`/`ViewLeaderReply`, `ServerRequest`/`ServerReply`) and are the one source of
//! truth for both ends.
//!
//! postcard encodes enum variants by their index: append new variants at the end and never reorder
//! or remove one without bumping [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 2;

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

/// Which service a connection talks to. Checked in the handshake so a client that dialled the
/// wrong port gets a clear error instead of a misread message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceKind {
    ViewLeader,
    Server,
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceKind::ViewLeader => f.write_str("view leader"),
            ServiceKind::Server => f.write_str("storage server"),
        }
    }
}

/// What travels in one frame: a request id that pairs a reply with its request on a pipelined
/// connection, and the body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub request_id: u64,
    pub body: T,
}

/// A request frame's body: the handshake first, then calls.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request<T> {
    Hello {
        protocol_version: u32,
        service: ServiceKind,
    },
    Call(T),
}

/// A reply frame's body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response<R> {
    Hello {
        protocol_version: u32,
        service: ServiceKind,
    },
    Reply(R),
}

/// A stored value: a text (`setr`) or a list of strings (`append`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
}

// ---------------------------------------------------------------------------------------------
// View leader
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ViewLeaderRequest {
    /// A server's periodic proof of life; also how it joins.
    Heartbeat {
        server_id: ServerId,
        addr: String,
        epoch_seen: Epoch,
        rebalanced_epoch: Epoch,
    },
    /// The current view.
    QueryServers,
    /// Take (or keep, renewing its lease) a lock, or queue for it.
    LockGet { lock: String, requester: String },
    /// Leave a lock's queue, whether holding or waiting.
    LockRelease { lock: String, requester: String },
    /// Long poll: answered with the view as soon as its epoch exceeds `epoch_known` or its
    /// rebalancing flag differs from `rebalancing_known`, or after `wait_ms` (capped) with the
    /// current one. This is how a new view, and its settling, reach the servers at once.
    WatchView {
        epoch_known: Epoch,
        rebalancing_known: bool,
        wait_ms: u64,
    },
    /// A server stopping on purpose: drop it from the view now rather than at lease expiry.
    Leave { server_id: ServerId },
    /// Simulated crash: answer nothing but `Recover`, expire nobody, keep memory.
    Crash,
    /// End a simulated crash.
    Recover,
}

impl ViewLeaderRequest {
    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ViewLeaderRequest::Heartbeat { .. } => "heartbeat",
            ViewLeaderRequest::QueryServers => "query_servers",
            ViewLeaderRequest::LockGet { .. } => "lock_get",
            ViewLeaderRequest::LockRelease { .. } => "lock_release",
            ViewLeaderRequest::WatchView { .. } => "watch_view",
            ViewLeaderRequest::Leave { .. } => "leave",
            ViewLeaderRequest::Crash => "crash",
            ViewLeaderRequest::Recover => "recover",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ViewLeaderReply {
    Heartbeat(HeartbeatReply),
    View(View),
    Lock(LockReply),
    Left {
        epoch: Epoch,
    },
    /// The answer to `Crash` and `Recover`: whether the process is crashed now.
    Crashed(bool),
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

// ---------------------------------------------------------------------------------------------
// Storage server
// ---------------------------------------------------------------------------------------------

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

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ServerRequest {
    /// Print a line on the server's console.
    Print { text: String },
    /// Store a value on this server alone (no replication). A retry carries the same
    /// `request_id`, and a server applies one id at most once.
    Set {
        key: Key,
        value: Value,
        request_id: Option<u128>,
    },
    /// Read a value from this server alone.
    Get { key: Key },
    /// The keys this server holds, in order, a page at a time: those after `after`, at most
    /// `limit` of them.
    QueryAllKeys { after: Option<Key>, limit: u32 },
    /// 2PC phase one: vote on applying `op` to `key` at `version`. `participants` are all the
    /// transaction's replicas in ring order; the first, the primary, holds the decision.
    Prepare {
        tx: TxId,
        key: Key,
        op: Op,
        epoch: Epoch,
        expected_server_id: ServerId,
        version: Version,
        participants: Vec<ServerInfo>,
    },
    /// 2PC phase two: apply a prepared transaction.
    Commit { tx: TxId },
    /// 2PC phase two: forget a prepared transaction.
    Abort { tx: TxId },
    /// Rebalancing: store these copies unless a newer version is already here.
    Transfer {
        epoch: Epoch,
        entries: Vec<(Key, Versioned)>,
    },
    /// This server's identity, epoch and load.
    Status,
    /// Rebalancing: this server's versions of these keys (0 where absent), in order.
    Versions { keys: Vec<Key> },
    /// Termination: where `tx` stands here. Asking about a transaction never prepared here
    /// aborts it here, so a late prepare cannot revive it.
    TxStatus { tx: TxId },
    /// A replicated read: the value with the epoch this server is at, so a reader can tell
    /// that its view is out of date.
    Read { key: Key },
    /// Simulated crash: answer nothing but `Recover` (and `Exit`), send nothing, keep memory.
    Crash,
    /// End a simulated crash.
    Recover,
}

impl ServerRequest {
    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ServerRequest::Print { .. } => "print",
            ServerRequest::Set { .. } => "set",
            ServerRequest::Get { .. } => "get",
            ServerRequest::QueryAllKeys { .. } => "query_all_keys",
            ServerRequest::Prepare { .. } => "prepare",
            ServerRequest::Commit { .. } => "commit",
            ServerRequest::Abort { .. } => "abort",
            ServerRequest::Transfer { .. } => "transfer",
            ServerRequest::Status => "status",
            ServerRequest::Versions { .. } => "versions",
            ServerRequest::TxStatus { .. } => "tx_status",
            ServerRequest::Read { .. } => "read",
            ServerRequest::Crash => "crash",
            ServerRequest::Recover => "recover",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerReply {
    Printed,
    Stored {
        version: Version,
    },
    Value(Option<Versioned>),
    /// A page of keys, and whether more follow the last one.
    Keys {
        keys: Vec<Key>,
        more: bool,
    },
    /// A yes vote.
    Prepared,
    Committed,
    Aborted,
    Transferred {
        stored: u64,
    },
    Status(ServerStatus),
    Versions(Vec<Version>),
    TxState(TxState),
    /// A no vote because the proposed version is not above `above` (the key's version, or the
    /// version of a transaction aborted on it); the coordinator proposes again above it.
    Outdated {
        above: Version,
    },
    /// The answer to `Read`.
    ReadValue {
        value: Option<Versioned>,
        epoch: Epoch,
    },
    /// The answer to `Crash` and `Recover`: whether the process is crashed now.
    Crashed(bool),
}

/// A server's self-description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub server_id: ServerId,
    pub addr: String,
    pub epoch: Epoch,
    pub rebalanced_epoch: Epoch,
    pub keys: u64,
    pub pending_transactions: u64,
    /// Copies this server has sent while rebalancing, since it started.
    pub copies_sent: u64,
    /// Keys this server has dropped after their new owners confirmed them.
    pub keys_dropped: u64,
}
