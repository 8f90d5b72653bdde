//! The view leader replicated by Raft ([openraft] 0.9): the glue between openraft and the view
//! leader's state machine ([`super::state`]).
//!
//! # The protocol
//! The view leader is a group of members, one of which openraft elects leader. Every change to
//! the view leader's state (a join, a leave, an expiry with its epoch bump, a settled view, a
//! lock grant or release, the fencing counter) is a [`Proposal`]: a [`Command`] with the
//! leader's clock reading. The leader appends it to the Raft log; once a majority of members
//! hold it, every member applies it to its copy of the state ([`machine`]), in log order and
//! with the time it carries, reading no clock of its own, so every member computes the same
//! state and the same answers. The leader answers the request with what applying its entry
//! returned.
//!
//! Heartbeat liveness is the exception: a heartbeat that changes nothing is answered by the
//! leader from its state and recorded in its own memory ([`super::liveness`]), and the leader
//! logs an expiry when a lease lapses. A new leader gives every server a full lease, and logs a
//! [`Command::Refresh`] so that every lock place does too (nobody could renew while there was no
//! leader).
//!
//! The clock a command carries is the leader's wall clock in milliseconds, and the state never
//! lets time go backwards ([`super::state::State::apply`]), so a new leader whose clock is
//! behind cannot shorten anyone's lease. Lock leases are tens of seconds, far above the clock
//! skew of machines kept by NTP.
//!
//! The log, the vote and snapshots are on disk ([`log_store`], [`machine`]) and synced before
//! openraft is told they are, so a member killed at any point restarts from its data dir and
//! catches up, from the leader's log or, past a compaction, from its snapshot. A snapshot is
//! the whole state machine (its size is bounded by the state's own limits), taken every
//! [`RaftOptions::snapshot_entries`] entries.
//!
//! Members talk over ringleader's own RPC ([`network`]): openraft's requests and replies are
//! carried, postcard-encoded, inside view-leader requests, so members need no second port.
//!
//! # Deliberately left out
//! * Leader leases for reads: `query_servers` confirms leadership with a round of heartbeats
//!   (read index), which costs a round trip but needs no bound on clock drift.
//! * Forwarding: a member that is not the leader answers [`crate::Error::NotLeader`] naming the
//!   leader it knows, and callers ([`crate::rpc::locator`]) go there themselves. Forwarding would
//!   hide which member answered and add a hop to every request.
//! * Pre-vote: openraft 0.9 has none, so a member cut off and healed may depose a healthy
//!   leader once; the cluster elects again within a few election timeouts.

// openraft's traits return its own error types, which are large; boxing them is not ours to do.
#![allow(clippy::result_large_err)]

pub mod log_store;
pub mod machine;
pub mod network;

use std::collections::BTreeMap;
use std::io::Cursor;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};

use super::state::{Command, Outcome};
use crate::errinput;
use crate::error::{Error, Result};

/// A member's id in the Raft group.
pub type MemberId = u64;

/// What a leader appends to the log: a command and the leader's clock when it took it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub command: Command,
    pub at_ms: u64,
}

/// What applying one log entry answered: the command's outcome (entries that carry no command,
/// a new leader's blank entry or a membership change, answer `None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied(pub Option<Result<Outcome, Error>>);

openraft::declare_raft_types!(
    /// The view leader's Raft types.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = MemberId,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = crate::net::raft_runtime::SeededRuntime,
);

/// The openraft handle of one member.
pub type Raft = openraft::Raft<TypeConfig>;
/// One entry of the view leader's Raft log.
pub type LogEntry = openraft::Entry<TypeConfig>;

/// Default interval between the leader's Raft heartbeats, in ms.
pub const RAFT_HEARTBEAT_MS_DEFAULT: u64 = 150;
/// Default shortest election timeout, in ms; the longest is twice it, and is the leader's lease
/// (see [`RaftOptions::lease_ms`]). A follower stands for election only after the lease and then
/// its own timeout ran out since it last heard the leader, so a leader is replaced 3 to 4 times
/// this after it dies (1.5 to 2 s, inside a caller's default 2 s timeout), while a healthy
/// leader on a loaded machine (two cores running a whole cluster in CI) has the whole 1.5 s to
/// be heard before anyone stands.
pub const ELECTION_TIMEOUT_MS_DEFAULT: u64 = 500;
/// Default log entries between snapshots.
pub const SNAPSHOT_ENTRIES_DEFAULT: u64 = 5_000;
/// Largest piece of a snapshot sent in one message, in bytes (well inside the RPC frame limit).
pub const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Members of a group.
pub use crate::types::VIEWLEADER_MEMBERS_MAX as MEMBERS_MAX;
/// Entries sent in one append.
pub const APPEND_ENTRIES_MAX: u64 = 300;

/// How a member runs its Raft.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftOptions {
    /// This member's id.
    pub id: MemberId,
    /// The group to form if this member's log is empty: id to address, this member included.
    /// Empty: a group of this member alone.
    pub peers: BTreeMap<MemberId, String>,
    /// Form no group: wait for one to add this member (`client viewleader add`).
    pub join: bool,
    pub heartbeat_ms: u64,
    pub election_timeout_ms: u64,
    pub snapshot_entries: u64,
}

impl RaftOptions {
    /// One member alone, with this id (the default: a view leader with no peers).
    pub fn single(id: MemberId) -> Self {
        Self {
            id,
            peers: BTreeMap::new(),
            join: false,
            heartbeat_ms: RAFT_HEARTBEAT_MS_DEFAULT,
            election_timeout_ms: ELECTION_TIMEOUT_MS_DEFAULT,
            snapshot_entries: SNAPSHOT_ENTRIES_DEFAULT,
        }
    }

    /// Rejects settings openraft would refuse or that cannot elect a leader.
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_ms == 0 {
            return Err(errinput!("the Raft heartbeat must be above 0 ms"));
        }
        if self.election_timeout_ms <= self.heartbeat_ms.saturating_mul(2) {
            return Err(errinput!(
                "the election timeout ({} ms) must be above two Raft heartbeats ({} ms)",
                self.election_timeout_ms,
                self.heartbeat_ms.saturating_mul(2)
            ));
        }
        if self.snapshot_entries == 0 {
            return Err(errinput!("snapshot entries must be above 0"));
        }
        if self.peers.len() > MEMBERS_MAX {
            return Err(errinput!(
                "{} peers (limit {MEMBERS_MAX})",
                self.peers.len()
            ));
        }
        if !self.peers.is_empty() && !self.peers.contains_key(&self.id) {
            return Err(errinput!(
                "--peers must list this member's own id {} with its address",
                self.id
            ));
        }
        Ok(())
    }

    /// The longest election timeout, in ms. openraft 0.9 makes it the leader's lease too: a
    /// follower that heard the leader within it refuses to vote, and stands itself only once
    /// it and then its own timeout ran out. A leader answers as leader only while a majority
    /// confirmed it within this long, well before anyone can be elected in its place.
    pub fn lease_ms(&self) -> u64 {
        self.election_timeout_ms.saturating_mul(2)
    }

    /// openraft's configuration for these options.
    pub fn config(&self, cluster: &str) -> Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: cluster.to_string(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_ms,
            election_timeout_max: self.lease_ms(),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_entries),
            // Keep some entries past a snapshot so a follower a little behind catches up from
            // the log; past that it gets the snapshot.
            max_in_snapshot_log_to_keep: (self.snapshot_entries / 4).min(1_000),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            max_payload_entries: APPEND_ENTRIES_MAX,
            ..Default::default()
        };
        config
            .validate()
            .map_err(|err| errinput!("Raft configuration: {err}"))
    }
}

/// Parses `--peers`: `ID=HOST:PORT,ID=HOST:PORT,...`.
pub fn parse_peers(text: &str) -> Result<BTreeMap<MemberId, String>> {
    let mut peers = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .ok_or_else(|| errinput!("peer {part:?} is not ID=HOST:PORT"))?;
        let id: MemberId = id
            .trim()
            .parse()
            .map_err(|_| errinput!("peer id {id:?} is not a number"))?;
        let addr = addr.trim();
        if addr
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return Err(errinput!("peer {id}'s address {addr:?} is not HOST:PORT"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(errinput!("peer id {id} is listed twice"));
        }
    }
    Ok(peers)
}

/// Encodes an openraft message for the wire.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value)
        .map_err(|err| Error::Internal(format!("encoding a Raft message: {err}")))
}

/// Decodes an openraft message from a peer.
pub fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|err| errinput!("undecodable Raft message: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse_and_bad_ones_name_what_is_wrong() {
        let peers = parse_peers("1=127.0.0.1:39000, 2=h:39001").unwrap();
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[&2], "h:39001");
        for (bad, says) in [
            ("1", "not ID=HOST:PORT"),
            ("x=h:1", "not a number"),
            ("1=h", "not HOST:PORT"),
            ("1=h:1,1=h:2", "twice"),
        ] {
            let err = parse_peers(bad).unwrap_err().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn options_must_name_this_member_among_its_peers_and_elect_slower_than_they_beat() {
        let mut options = RaftOptions::single(1);
        options.validate().unwrap();
        options.peers = parse_peers("2=h:1,3=h:2").unwrap();
        assert!(options.validate().is_err());
        options.peers = parse_peers("1=h:0,2=h:1").unwrap();
        options.validate().unwrap();
        options.election_timeout_ms = options.heartbeat_ms;
        assert!(options.validate().is_err());
    }
}
