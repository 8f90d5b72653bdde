//! The messages of both services. Request and reply enums are paired per service
//! (`ViewLeaderRequest`/`ViewLeaderReply`, `ServerRequest`/`ServerReply`) and are the one source of
//! truth for both ends.
//!
//! postcard encodes enum variants by their index: append new variants at the end and never reorder
//! or remove one without bumping [`PROTOCOL_VERSION`].

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::net;
use crate::net::secret::{Role, SECRET_BYTES};
use crate::types::{
    Epoch, Heartbeat, HeartbeatReply, Key, LockReply, MemberStatus, Prepare, ServerId, ServerInfo,
    Space, TxId, TxState, Value, Version, Versioned, View,
};

/// Bumped on any incompatible change to the messages below. Version 5: the hello names the
/// cluster. Version 6: the view leader is a Raft group (its members' messages, status and
/// membership changes; `NotLeader`). Version 7: the hello proves the cluster secret
/// (challenge-response, `crate::rpc::handshake`); `Forbidden`; `Repair`. Version 8: a server's
/// single-server keys are a space apart from its ring keys (`Get` and `QueryAllKeys` name the
/// space; `ServerStatus::local_keys`).
pub const PROTOCOL_VERSION: u32 = 8;

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

/// A request frame's body: the handshake first (a hello, and a proof when the cluster has a
/// secret), then calls.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Request<T> {
    Hello {
        protocol_version: u32,
        /// The service the caller means to reach.
        service: ServiceKind,
        /// The caller's cluster ([`crate::net::Env::cluster`]); a service of another refuses.
        cluster: String,
        /// The role the caller will prove and its nonce; `None` from a caller without a secret.
        auth: Option<HelloAuth>,
    },
    Call(T),
    /// The caller's proof of the secret of the role its hello claimed, over the hello's
    /// transcript (both nonces among it): the answer to [`Response::Hello`]'s challenge.
    Proof {
        proof: [u8; SECRET_BYTES],
    },
}

/// What a caller with a secret adds to its hello.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloAuth {
    pub role: Role,
    /// Fresh for this connection, so that the service's proof cannot be replayed to it.
    pub nonce: [u8; SECRET_BYTES],
}

/// A service's challenge: its nonce, and its own proof of the role's secret over the
/// transcript, so that the caller knows it reached a process of the cluster too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub nonce: [u8; SECRET_BYTES],
    pub proof: [u8; SECRET_BYTES],
}

/// A reply frame's body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Response<R> {
    Hello {
        protocol_version: u32,
        service: ServiceKind,
        /// The service's cluster: the caller checks it too.
        cluster: String,
        /// Present when the service has a secret: the caller must answer with a
        /// [`Request::Proof`] before any call.
        challenge: Option<Challenge>,
    },
    Reply(R),
    /// The proof was right: calls may follow, with the rights of `role`.
    Welcome {
        role: Role,
    },
}

/// The error of a hello between two clusters, the same from both ends: it names both (a
/// foreign name cut to [`net::CLUSTER_NAME_MAX_BYTES`]) and where a process takes its own.
pub fn cluster_mismatch(
    service: ServiceKind,
    service_cluster: &str,
    caller_cluster: &str,
) -> Error {
    Error::Protocol(format!(
        "the {service} belongs to cluster {:?} but the caller to cluster {:?}; a process talks \
         only to its own cluster (check --cluster / RINGLEADER_CLUSTER)",
        net::shown_cluster(service_cluster),
        net::shown_cluster(caller_cluster),
    ))
}

// ---------------------------------------------------------------------------------------------
// View leader
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ViewLeaderRequest {
    /// A server's periodic proof of life; also how it joins. (A newtype variant encodes as the
    /// struct variant it replaced did: the same bytes.)
    Heartbeat(Heartbeat),
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
    /// Between view-leader members: one of openraft's messages.
    Raft(RaftMessage),
    /// This member's place in the Raft group (any member answers).
    Status,
    /// Add a member to the group, as a voter once it has caught up (the leader answers).
    AddMember { id: u64, addr: String },
    /// Remove a member from the group (the leader answers).
    RemoveMember { id: u64 },
}

/// openraft's requests, each postcard-encoded (`crate::viewleader::raft::encode`); the reply
/// is [`ViewLeaderReply::Raft`] with openraft's result, encoded the same way.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RaftMessage {
    Vote(Vec<u8>),
    Append(Vec<u8>),
    Snapshot(Vec<u8>),
}

impl ViewLeaderRequest {
    /// Whether only a member of the cluster may send this request: a server's heartbeat and
    /// leave (a client must not join, keep alive or drop a server), and everything between the
    /// view leader's members.
    pub fn members_only(&self) -> bool {
        matches!(
            self,
            ViewLeaderRequest::Heartbeat(_)
                | ViewLeaderRequest::Leave { .. }
                | ViewLeaderRequest::Raft(_)
                | ViewLeaderRequest::AddMember { .. }
                | ViewLeaderRequest::RemoveMember { .. }
        )
    }

    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ViewLeaderRequest::Heartbeat(_) => "heartbeat",
            ViewLeaderRequest::QueryServers => "query_servers",
            ViewLeaderRequest::LockGet { .. } => "lock_get",
            ViewLeaderRequest::LockRelease { .. } => "lock_release",
            ViewLeaderRequest::WatchView { .. } => "watch_view",
            ViewLeaderRequest::Leave { .. } => "leave",
            ViewLeaderRequest::Crash => "crash",
            ViewLeaderRequest::Recover => "recover",
            ViewLeaderRequest::Raft(RaftMessage::Vote(_)) => "raft_vote",
            ViewLeaderRequest::Raft(RaftMessage::Append(_)) => "raft_append",
            ViewLeaderRequest::Raft(RaftMessage::Snapshot(_)) => "raft_snapshot",
            ViewLeaderRequest::Status => "status",
            ViewLeaderRequest::AddMember { .. } => "add_member",
            ViewLeaderRequest::RemoveMember { .. } => "remove_member",
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
    /// openraft's answer to a [`RaftMessage`], encoded.
    Raft(Vec<u8>),
    /// A member's status; after a membership change, the leader's.
    Status(MemberStatus),
}

// ---------------------------------------------------------------------------------------------
// Storage server
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ServerRequest {
    /// Print a line on the server's console.
    Print { text: String },
    /// Store a value in this server's own key space ([`Space::Local`]: no replication, never
    /// moved). A retry carries the same `request_id`, and a server applies one id at most once.
    Set {
        key: Key,
        value: Value,
        request_id: Option<u128>,
    },
    /// Read a value from this server alone: from its own keys, or its copy of a ring key (what
    /// this one replica holds, with no check against the view: `Read` is the replicated read).
    Get { key: Key, space: Space },
    /// The keys of one space this server holds, in order, a page at a time: those after
    /// `after`, at most `limit` of them.
    QueryAllKeys {
        after: Option<Key>,
        limit: u32,
        space: Space,
    },
    /// 2PC phase one: vote on applying `op` to `key` at `version`. `participants` are all the
    /// transaction's replicas in ring order; the first, the primary, holds the decision.
    Prepare(Prepare),
    /// 2PC phase two: apply a prepared transaction.
    Commit { tx: TxId, server_id: ServerId },
    /// 2PC phase two: forget a prepared transaction.
    Abort { tx: TxId, server_id: ServerId },
    /// Store these copies unless a newer version is already here. Rebalancing sends them, and
    /// so do a linearizable read's write-back (read repair) and the load generator's bulk load.
    /// `epoch` is the sender's epoch: a transfer from an epoch older than the receiver's is
    /// refused (its plan is superseded).
    Transfer {
        epoch: Epoch,
        server_id: ServerId,
        entries: Vec<(Key, Versioned)>,
    },
    /// This server's identity, epoch and load.
    Status,
    /// Rebalancing: this server's versions of these keys (0 where absent), in order.
    Versions { keys: Vec<Key>, server_id: ServerId },
    /// Termination: where `tx` stands here. Asking about a transaction never prepared here
    /// aborts it here, so a late prepare cannot revive it.
    TxStatus { tx: TxId, server_id: ServerId },
    /// A replicated read: the value with the epoch this server is at, so a reader can tell
    /// that its view is out of date.
    Read { key: Key, server_id: ServerId },
    /// Simulated crash: answer nothing but `Recover`, send nothing, keep memory.
    Crash,
    /// End a simulated crash.
    Recover,
    /// Routing around a cut link: send `request` (a `Transfer`, `Versions` or `TxStatus`) to
    /// the member `to` and answer with its reply. A server that cannot reach a peer directly
    /// asks another member to carry the call; the reply is the peer's own acknowledgement.
    Relay {
        to: ServerInfo,
        request: Box<ServerRequest>,
    },
    /// A linearizable read's repair: send your copy of `key` to the replicas `to` (members of
    /// the view of `epoch`, which lag behind you) and answer how many stored it. The reader
    /// names the replicas, never the value: a client may ask for a repair, but only a member
    /// hands out versions ([`ServerRequest::Transfer`] is members only).
    Repair {
        key: Key,
        server_id: ServerId,
        epoch: Epoch,
        to: Vec<ServerInfo>,
    },
    /// Leave the cluster as on SIGTERM: leave the view, hand every key to its new owners, then
    /// stop. Answered when the handoff is over; meanwhile `Status` shows the copies sent.
    Decommission { server_id: ServerId },
}

/// The member a request is addressed to, for the requests that name one: a process that is not
/// (and never was) that member refuses them, so a fresh process at a dead member's address
/// never answers for it.
impl ServerRequest {
    pub fn addressed_to(&self) -> Option<&ServerId> {
        match self {
            ServerRequest::Prepare(prepare) => Some(&prepare.expected_server_id),
            ServerRequest::Commit { server_id, .. }
            | ServerRequest::Abort { server_id, .. }
            | ServerRequest::Transfer { server_id, .. }
            | ServerRequest::Versions { server_id, .. }
            | ServerRequest::TxStatus { server_id, .. }
            | ServerRequest::Read { server_id, .. }
            | ServerRequest::Repair { server_id, .. }
            | ServerRequest::Decommission { server_id } => Some(server_id),
            _ => None,
        }
    }

    /// Whether only a member of the cluster may send this request: the ones that hand out
    /// versions or decide others' transactions (a transfer stores a version as given; a
    /// termination query aborts a transaction never prepared here), and a relay, which carries
    /// them; and a decommission, which is an operator's. A caller that proved only a client's
    /// secret is refused them.
    pub fn members_only(&self) -> bool {
        matches!(
            self,
            ServerRequest::Transfer { .. }
                | ServerRequest::Versions { .. }
                | ServerRequest::TxStatus { .. }
                | ServerRequest::Relay { .. }
                | ServerRequest::Decommission { .. }
        )
    }

    /// Whether another member may carry this request for its sender ([`ServerRequest::Relay`]).
    pub fn is_relayable(&self) -> bool {
        matches!(
            self,
            ServerRequest::Transfer { .. }
                | ServerRequest::Versions { .. }
                | ServerRequest::TxStatus { .. }
        )
    }
}

impl ServerRequest {
    /// The operation's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            ServerRequest::Print { .. } => "print",
            ServerRequest::Set { .. } => "set",
            ServerRequest::Get { .. } => "get",
            ServerRequest::QueryAllKeys { .. } => "query_all_keys",
            ServerRequest::Prepare(_) => "prepare",
            ServerRequest::Commit { .. } => "commit",
            ServerRequest::Abort { .. } => "abort",
            ServerRequest::Transfer { .. } => "transfer",
            ServerRequest::Status => "status",
            ServerRequest::Versions { .. } => "versions",
            ServerRequest::TxStatus { .. } => "tx_status",
            ServerRequest::Read { .. } => "read",
            ServerRequest::Crash => "crash",
            ServerRequest::Recover => "recover",
            ServerRequest::Relay { .. } => "relay",
            ServerRequest::Repair { .. } => "repair",
            ServerRequest::Decommission { .. } => "decommission",
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
    /// The answer to `Repair`: how many of the replicas named stored the copy (or held a newer
    /// one).
    Repaired {
        stored: u64,
    },
    /// The answer to `Decommission`, once the server has left the view and handed its keys
    /// over (it stops right after): copies offered to the new owners, copies stored, and
    /// whether every owner acknowledged its share.
    Decommissioned {
        offered: u64,
        sent: u64,
        complete: bool,
    },
}

/// A server's self-description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub server_id: ServerId,
    pub addr: String,
    pub epoch: Epoch,
    pub rebalanced_epoch: Epoch,
    /// Ring keys held ([`Space::Ring`]).
    pub keys: u64,
    /// Single-server keys held ([`Space::Local`]).
    pub local_keys: u64,
    pub pending_transactions: u64,
    /// Copies this server has sent while rebalancing, since it started.
    pub copies_sent: u64,
    /// Keys this server has dropped after their new owners confirmed them.
    pub keys_dropped: u64,
    /// Keys its running rebalance has yet to send (or find held by their owners); 0 when none
    /// runs.
    pub copies_to_send: u64,
    /// Requests it has answered since it started: two readings a moment apart give its rate.
    pub requests: u64,
}
