//! The view leader: membership (heartbeats, leases, epochs) and the lock service, replicated
//! by a Raft group.
//!
//! [`state`] is the deterministic state machine and documents membership and locks; [`raft`]
//! replicates it and documents how; [`liveness`] is the leader's record of heartbeats, which
//! are not logged; [`service`] is the network shell of one member.

pub mod liveness;
pub mod raft;
pub mod service;
pub mod state;

pub use raft::RaftOptions;
pub use service::{run, serve, start, start_on, ViewLeader};

use crate::errinput;
use crate::error::Result;

/// Default interval between a server's heartbeats.
pub const HEARTBEAT_INTERVAL_MS_DEFAULT: u64 = 500;
/// Default time without a heartbeat after which a server is expired.
pub const LEASE_MS_DEFAULT: u64 = 2_000;
/// Default time a non-server lock requester keeps its place without asking again (the course's).
pub const LOCK_LEASE_MS_DEFAULT: u64 = 30_000;
/// Heartbeats that may be lost in a row before the lease runs out; `validate` enforces it.
pub const HEARTBEATS_PER_LEASE_MIN: u64 = 2;

/// How the view leader runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewLeaderOptions {
    /// The heartbeat interval the servers use (given to each server by its own flag); sets the
    /// expiry timer's resolution and the lease check.
    pub heartbeat_interval_ms: u64,
    pub lease_ms: u64,
    pub lock_lease_ms: u64,
    /// Where the Raft log, vote and snapshot are kept. Without one (`--in-memory`), a restarted
    /// member forgets everything and, alone, starts its epochs, locks and fencing tokens over
    /// (it says so at start).
    pub data_dir: Option<std::path::PathBuf>,
    /// This member's place in its Raft group.
    pub raft: RaftOptions,
    /// `--fault-injection`: answer `crash` and `recover`. Off by default: without it anyone who
    /// reaches the port could stop this member (see [`crate::faults`]).
    pub fault_injection: bool,
}

impl Default for ViewLeaderOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            lease_ms: LEASE_MS_DEFAULT,
            lock_lease_ms: LOCK_LEASE_MS_DEFAULT,
            data_dir: None,
            raft: RaftOptions::single(1),
            fault_injection: false,
        }
    }
}

impl ViewLeaderOptions {
    /// Rejects settings that would expire healthy servers or never expire dead ones.
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_interval_ms == 0 {
            return Err(errinput!("heartbeat interval must be above 0 ms"));
        }
        if self.lease_ms < self.heartbeat_interval_ms * HEARTBEATS_PER_LEASE_MIN {
            return Err(errinput!(
                "lease ({} ms) must be at least {HEARTBEATS_PER_LEASE_MIN} heartbeat intervals ({} ms)",
                self.lease_ms,
                self.heartbeat_interval_ms * HEARTBEATS_PER_LEASE_MIN
            ));
        }
        if self.lock_lease_ms == 0 {
            return Err(errinput!("lock lease must be above 0 ms"));
        }
        self.raft.validate()
    }

    /// How often the expiry timer sweeps: a fraction of the heartbeat interval, so expiry lands
    /// within a few percent of the lease.
    pub fn tick_ms(&self) -> u64 {
        (self.heartbeat_interval_ms / 5).clamp(10, 100)
    }

    /// Sweeps further apart than this mean the view leader itself stalled: half a lease, far
    /// above the tick, so ordinary scheduling jitter never counts.
    pub fn stall_ms(&self) -> u64 {
        (self.lease_ms / 2).max(self.tick_ms() * 10)
    }
}
