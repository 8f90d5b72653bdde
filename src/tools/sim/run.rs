//! One simulated run: the real view leader (a Raft group of [`VIEWLEADER_MEMBERS`] members),
//! storage servers and clients as the hosts of one turmoil simulation, a seeded fault schedule
//! against them, a recorded history, and the checks of [`super::checks`] over it. Everything that
//! varies comes from the seed: the ids of servers, transactions and requests, the jitter, the
//! clients' clock skews, the operations, the faults, how much of a crashed disk's unsynced writes
//! survives, the network's delays (turmoil's own generator, and tokio's scheduler when built with
//! `--cfg tokio_unstable`, as `.cargo/config.toml` does), and the members' election timeouts
//! (see [Randomness of the view leader's Raft](#randomness-of-the-view-leaders-raft)). One seed
//! replays one run.
//!
//! A run has three phases, all in simulated time: the workload with faults
//! ([`SimOptions::workload_ms`]), healing (every partition repaired, every held message released,
//! every crashed host restarted), and the audit, where one more client (which sampled the view
//! all through the workload) checks that the cluster is live again within
//! [`SimOptions::liveness_ms`]: the view settled with every server, every key writable, no
//! transaction pending, the replicas of each key agreeing, and the view leader's members one
//! group again (one leader, followed by every member in its term, all at the same applied index).
//!
//! # The view leader
//! Three members, `viewleader1` to `viewleader3`, each a host of its own; servers and clients
//! are given the list of all three and find the leader themselves ([`crate::rpc::locator`]). The
//! Raft timings are the simulation's own ([`RAFT_HEARTBEAT_MS`], [`RAFT_ELECTION_TIMEOUT_MS`]),
//! set explicitly rather than taken from the view leader's defaults, so that a change of those
//! does not silently change every seed's run; a member snapshots every [`RAFT_SNAPSHOT_ENTRIES`]
//! entries, so a run compacts its log several times and a member down long enough catches up
//! from a snapshot. Schedules name members symbolically ([`VIEWLEADER_HOST`]: whichever leads
//! when the fault begins; [`VIEWLEADER_FOLLOWER`]: another one), so that a drawn fault hits the
//! leader whoever it is by then. Every [`RAFT_POLL_MS`] the run loop reads each member's own report
//! between two steps (when nothing runs) and holds the group to the rules of Raft: one leader per
//! term, and one state per applied index (two members that applied the log to the same index
//! hold the same view).
//!
//! # Disks
//! Every storage server runs the durable log engine ([`crate::storage::Log`]) on a
//! [`SimDisk`] of its own machine, kept across the server's restarts, with small segments and
//! snapshot thresholds ([`SEGMENT_BYTES_MAX`], [`COMPACT_BYTES_MIN`]) so that a run rolls segments
//! and takes snapshots; every view-leader member keeps its Raft log, vote and snapshot on one
//! too. Both sync and compact inline on a simulated disk (no threads), so the disks keep the run
//! deterministic.
//! * [`FaultKind::Restart`] is a machine crash: the processes of one or more servers die at the
//!   same instant, each disk drops what was not synced and keeps a prefix of each file's unsynced
//!   tail (a torn write; its length drawn from the run's seed), and each server restarts from
//!   what its disk kept, at its address, as the member its `identity.json` names (denied and
//!   rejoining under a new id, with its keys, if it stayed down past its lease). Since a disk
//!   survives the crash, the promise of an acknowledged write holds even when every replica of
//!   a key crashes at once, and the schedule draws exactly that: up to every server together.
//! * [`FaultKind::RestartViewLeader`] is the same machine crash for view-leader members: one
//!   (the leader, mostly), or the leader and a follower together, which leaves no majority for up
//!   to three seconds; the checks then hold the view leader to refusing what needs a majority
//!   (lock gets and releases, view queries) until one is back. A member's Raft log syncs votes
//!   and entries before openraft hears they are written, so what a crash drops (torn) is the
//!   unsynced record of the commit index, which the member learns again.
//! * [`FaultKind::RestartWiped`] is a replaced machine: one server comes back on a fresh empty
//!   disk, under a new id (what `Restart` did before the servers had disks). It loses a replica's
//!   copy for good, so it is drawn for one server at a time, as before; the replicas that keep
//!   their disks hold what it lost.
//!
//! # Randomness of the view leader's Raft
//! openraft draws randomness in one place, each member's election timeout (once per start of the
//! member), from its runtime's thread-local generator ([`crate::net::raft_runtime`]). turmoil
//! runs every host on the thread that runs the simulation, stepping their runtimes in turn, so
//! the run seeds that one thread's generator from the seed before it starts, and the members'
//! draws follow from it in the order they make them, which the seed fixes too. Nothing else of
//! openraft's varies between two runs of one seed: its timers and instants are tokio's
//! (turmoil's simulated clock), its tasks are spawned on the host's single-threaded runtime,
//! whose scheduler and `select!` turmoil seeds, it starts no thread, and it iterates no `HashMap`
//! outside its tests. Its only reading of the wall clock formats instants for its own log lines,
//! which are not part of the trace. The determinism test in `tests/simulation.rs` replays a run
//! with every kind of fault on a thread of its own and compares the traces, leader elections
//! included.
//!
//! # Deliberately left out
//! * A pause of a process is approximated by holding every message to and from its host: its
//!   timers keep running, as if only its network stalled.
//! * All three view-leader members down at once, and a power loss of the whole cluster: two of
//!   three down already takes the majority away and brings it back from disks; with the third
//!   down too, nothing answers until two are back, and they come back as two of three do.
//! * Membership changes of the view leader's group (`client viewleader add`/`remove`): the group
//!   is the same three members throughout.
//! * Disk faults other than a crash: no full disk, no failed sync, no flipped byte (the log
//!   engine's own tests make those).
//! * Wiped replicas of a key at once: losing every copy of a key is outside the fault model, so
//!   wiped restarts are never drawn to overlap (nor were the memory-losing restarts before); nor
//!   is a view-leader member ever wiped (that is `remove` and `add` back, left out above).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use super::checks::{self, Grant, QuorumCall, Recorded, Refusal, ViewSample};
use super::trace::NodeEvents;
use super::turmoil_net::TurmoilTransport;
use super::SeededRandom;
use crate::client::{Client, ClientOptions};
use crate::error::Error;
use crate::faults::PlantedBug;
use crate::net::raft_runtime::seed_thread;
use crate::net::{self, Clock, Env};
use crate::server::{self, ServerOptions};
use crate::storage::{Disk, FsyncMode, LogOptions, SimDisk};
use crate::tools::checker::{Call, Operation, Return};
use crate::types::{LockReply, MemberStatus, Space, Value, View};
use crate::viewleader::raft::MemberId;
use crate::viewleader::{self, RaftOptions, ViewLeader, ViewLeaderOptions};

/// Where the simulated wall clock starts (2030-01-01): versions are proposed from it.
pub const WALL_START_US: u64 = 1_893_456_000_000_000;
/// In a schedule, the view-leader member that leads when the fault begins (resolved by the run
/// loop as the fault begins); each member's own host is [`viewleader_host`].
pub const VIEWLEADER_HOST: &str = "viewleader";
/// In a schedule, a view-leader member that does not lead when the fault begins, drawn from the
/// run's seed among the others.
pub const VIEWLEADER_FOLLOWER: &str = "viewleader-follower";
/// Members of the view leader's Raft group, with ids `1..=VIEWLEADER_MEMBERS`.
pub const VIEWLEADER_MEMBERS: MemberId = 3;
/// Interval between the Raft leader's heartbeats, in simulated ms: several fit in the shortest
/// election timeout, so that a few delayed or lost ones do not depose a healthy leader.
pub const RAFT_HEARTBEAT_MS: u64 = 75;
/// Shortest election timeout, in simulated ms (the longest is twice it, and openraft's leader
/// lease is the longest, so a follower that stops hearing its leader stands after 1.5 to 2 s).
/// Set here, not taken from the view leader's default: the schedules' fault lengths (up to
/// three leases of the default run, 3 s) are drawn to outlast an election or not, and the
/// scenario tests time their faults against it.
pub const RAFT_ELECTION_TIMEOUT_MS: u64 = 500;
/// Log entries between a member's snapshots: few, so that a run of a few hundred entries takes
/// several, compacts its log, and brings back members that were down past a compaction with a
/// snapshot (the production default is 5,000).
pub const RAFT_SNAPSHOT_ENTRIES: u64 = 64;
/// How often the run loop reads every member's status (leaders, terms, applied state), in
/// simulated ms.
pub const RAFT_POLL_MS: u64 = 10;
/// The port every service listens on in the simulation (each host has its own addresses).
pub const PORT: u16 = 7000;
/// Simulated time a run may take at most, workload, healing and audit included.
pub const RUN_MS_MAX: u64 = 300_000;
/// Pause of a client between two operations, drawn up to this, in simulated ms.
pub const THINK_MS_MAX: u64 = 50;
/// Longest a client holds a lock before releasing it, in simulated ms.
pub const LOCK_HOLD_MS_MAX: u64 = 300;
/// Pause between two reads of a key's replicas while the audit waits for them to agree, in
/// simulated ms.
pub const AGREEMENT_POLL_MS: u64 = 50;
/// Largest clock skew drawn for a client, in µs either way.
pub const CLOCK_SKEW_US_MAX: i64 = 2_000_000;
/// Time a client of the simulation allows one call, in simulated ms (a fraction of the lease, so
/// that a write retries within one).
pub const CLIENT_TIMEOUT_MS: u64 = 500;
/// Bound on a client's waits for a busy key or a rebalance, in simulated ms: short, so that the
/// workload keeps moving through faults.
pub const CLIENT_WAIT_MS: u64 = 2_000;
/// How often the auditor samples the view during the workload, in simulated ms. The workload
/// clients sample it too, but only between operations, and while the cluster stalls each of
/// their operations waits out the client's whole wait: the stuck-rebalancing check needs samples
/// on both sides of its bound whatever the clients are doing.
pub const VIEW_SAMPLE_MS: u64 = 250;
/// Size at which a simulated server's log moves to a new segment: small, so that a run of a
/// few hundred writes per server crosses segment rolls (the production default is 64 MiB).
pub const SEGMENT_BYTES_MAX: u64 = 8 * 1024;
/// Log size since the last snapshot below which a simulated server takes none: small, so that a
/// run takes snapshots and deletes the segments they cover (the production default is 64 MiB).
pub const COMPACT_BYTES_MIN: u64 = 32 * 1024;

/// How a simulated server's log engine runs: group commit, as the real binary's default, on
/// small segments and snapshots.
pub fn log_options() -> LogOptions {
    LogOptions {
        fsync: FsyncMode::Batch,
        segment_bytes_max: SEGMENT_BYTES_MAX,
        compact_bytes_min: COMPACT_BYTES_MIN,
    }
}

/// How long a sync of a simulated disk takes, in simulated µs: long enough that writes of
/// other requests arrive while one is under way (group commit shares it) and a crash can catch
/// them unsynced, as on a real disk.
pub const DISK_SYNC_US: u64 = 500;

/// A disk for one simulated machine.
fn simulated_disk() -> SimDisk {
    let disk = SimDisk::new();
    disk.set_sync_delay(Duration::from_micros(DISK_SYNC_US));
    disk
}

/// What the fault schedule may draw. The view-leader kinds name a member symbolically
/// ([`VIEWLEADER_HOST`]: the leader; [`VIEWLEADER_FOLLOWER`]: another member), resolved when the
/// fault begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Hold every message between two hosts for a while, then deliver them (delay).
    Delay,
    /// Cut a client off from one storage server (a minority of a key's replicas).
    ClientCut,
    /// Hold every message of one server for less than a lease (a short pause).
    ShortPause,
    /// Cut one server-to-server link, both ways.
    CutLink,
    /// Cut one server-to-server link one way only.
    OneWayCut,
    /// Partition one server from everyone.
    Isolate,
    /// Cut one view-leader member (the leader, mostly) off from every other host.
    IsolateViewLeader,
    /// Cut one view-leader member (the leader, mostly) off from the other members only: the
    /// servers and clients still reach it, and it may not know it was deposed.
    SplitViewLeader,
    /// Hold every message to and from one view-leader member (the leader, mostly), then deliver
    /// them: a paused process, whose stale messages arrive after the others moved on.
    PauseViewLeader,
    /// Hold every message of one server for longer than a lease (a long pause).
    LongPause,
    /// Crash one or more servers' machines at once: each process dies, each disk keeps what was
    /// synced (and a torn prefix of what was not), and each server restarts from its disk at
    /// the same address.
    Restart,
    /// Crash view-leader members' machines: one member (the leader, mostly), or now and then
    /// the leader and a follower together, which leaves no majority until one is back. Each
    /// disk keeps what was synced (and a torn prefix of what was not); each member restarts
    /// from its Raft log and snapshot.
    RestartViewLeader,
    /// Crash a server and bring it back at the same address on a fresh empty disk: a replaced
    /// machine, which comes back under a new id knowing nothing.
    RestartWiped,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::Delay,
        FaultKind::ClientCut,
        FaultKind::ShortPause,
        FaultKind::CutLink,
        FaultKind::OneWayCut,
        FaultKind::Isolate,
        FaultKind::IsolateViewLeader,
        FaultKind::SplitViewLeader,
        FaultKind::PauseViewLeader,
        FaultKind::LongPause,
        FaultKind::Restart,
        FaultKind::RestartViewLeader,
        FaultKind::RestartWiped,
    ];

    /// The faults the code is meant to survive, which the default campaign draws from: every
    /// kind. (A kind that finds a defect nobody has fixed yet leaves this list until it is.)
    pub const HANDLED: [FaultKind; 13] = FaultKind::ALL;

    /// Whether the fault acts on links (cuts or holds them) rather than on a process.
    pub fn is_link_fault(self) -> bool {
        !self.is_process_fault()
    }

    /// Whether the fault stops processes (and restarts them when it ends).
    pub fn is_process_fault(self) -> bool {
        matches!(
            self,
            FaultKind::Restart | FaultKind::RestartViewLeader | FaultKind::RestartWiped
        )
    }

    /// Whether the fault cuts links (messages dropped) rather than holding them.
    pub fn cuts(self) -> bool {
        matches!(
            self,
            FaultKind::ClientCut
                | FaultKind::CutLink
                | FaultKind::OneWayCut
                | FaultKind::Isolate
                | FaultKind::IsolateViewLeader
                | FaultKind::SplitViewLeader
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Delay => "delay",
            FaultKind::ClientCut => "client-cut",
            FaultKind::ShortPause => "short-pause",
            FaultKind::CutLink => "cut-link",
            FaultKind::OneWayCut => "one-way-cut",
            FaultKind::Isolate => "isolate",
            FaultKind::IsolateViewLeader => "isolate-viewleader",
            FaultKind::SplitViewLeader => "split-viewleader",
            FaultKind::PauseViewLeader => "pause-viewleader",
            FaultKind::LongPause => "long-pause",
            FaultKind::Restart => "restart",
            FaultKind::RestartViewLeader => "restart-viewleader",
            FaultKind::RestartWiped => "restart-wiped",
        }
    }

    pub fn parse(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One fault of a schedule: what, on which hosts, from when, for how long (simulated ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub hosts: Vec<String>,
    pub at_ms: u64,
    pub for_ms: u64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} at {} ms for {} ms",
            self.kind,
            self.hosts.join("/"),
            self.at_ms,
            self.for_ms
        )
    }
}

/// How one run goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimOptions {
    pub seed: u64,
    pub servers: usize,
    pub clients: usize,
    /// Text keys and list keys each; few, so that writes conflict.
    pub keys: usize,
    pub locks: usize,
    /// Simulated time of the workload, faults included.
    pub workload_ms: u64,
    /// Bound on the cluster becoming live again after healing, in simulated ms.
    pub liveness_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub lease_ms: u64,
    pub tx_timeout_ms: u64,
    /// The kinds the schedule draws from; empty: no faults.
    pub faults: Vec<FaultKind>,
    /// A scripted schedule instead of a drawn one.
    pub schedule: Option<Vec<Fault>>,
    /// A defect switched on in every server, to prove the checks catch it.
    pub planted_bug: Option<PlantedBug>,
}

impl SimOptions {
    /// The default run of `seed`: four servers, three clients, the handled faults.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            servers: 4,
            clients: 3,
            keys: 3,
            locks: 2,
            workload_ms: 20_000,
            liveness_ms: 30_000,
            heartbeat_interval_ms: 250,
            lease_ms: 1_000,
            tx_timeout_ms: 1_500,
            faults: FaultKind::HANDLED.to_vec(),
            schedule: None,
            planted_bug: None,
        }
    }

    /// The command that replays this run: `client sim` for this one seed and these faults,
    /// writing its trace. The command line gives only the seed and the faults; when this run
    /// differs from `client sim`'s in anything else (a scripted schedule, a planted bug, other
    /// sizes or timings), a shell comment after the command says so.
    pub fn replay_command(&self) -> String {
        let faults: Vec<&str> = self.faults.iter().map(|kind| kind.name()).collect();
        let faults = if faults.is_empty() {
            "none".to_string()
        } else {
            faults.join(",")
        };
        let mut command = format!(
            "cargo run --release --bin client -- sim --seeds 1 --start {} --faults {faults} --trace",
            self.seed
        );
        let mut cli_run = SimOptions::new(self.seed);
        cli_run.faults = self.faults.clone();
        let mut unsaid = Vec::new();
        if self.schedule.is_some() {
            unsaid.push("its scripted schedule");
        }
        if self.planted_bug.is_some() {
            unsaid.push("its planted bug");
        }
        cli_run.schedule = self.schedule.clone();
        cli_run.planted_bug = self.planted_bug;
        if *self != cli_run {
            unsaid.push("its sizes and timings");
        }
        if !unsaid.is_empty() {
            command.push_str(&format!(
                "  # not this run exactly: the command line cannot give {}",
                unsaid.join(", ")
            ));
        }
        command
    }
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    /// Every event of the run with its simulated time, in order.
    pub trace: Vec<String>,
    /// A hash of the trace: two runs of one seed must give the same.
    pub trace_hash: u64,
    pub operations: usize,
    pub faults: BTreeMap<FaultKind, u64>,
    /// Promises broken; empty when the run passed.
    pub violations: Vec<String>,
    pub simulated_ms: u64,
    /// What the servers' disks went through.
    pub disks: DiskStats,
    /// What the view leader's Raft group went through.
    pub raft: RaftStats,
    /// Every leader the polls saw, in the order they were first seen.
    pub leaders: Vec<Leadership>,
    /// Every view the clients and the auditor were answered by the view leader, in the order
    /// they were recorded.
    pub views: Vec<ViewSample>,
}

/// One member leading one term, as the run loop's polls saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub term: u64,
    pub member: MemberId,
    /// When a poll first saw it, in simulated ms.
    pub since_ms: u64,
}

/// What the view leader's Raft group went through in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RaftStats {
    /// Member machine crashes ([`FaultKind::RestartViewLeader`]): one per member crashed.
    pub crashes: u64,
    /// Bytes of the members' disks written but not synced that crashes threw away.
    pub unsynced_bytes_dropped: u64,
    /// Bytes of the members' disks written but not synced that crashes kept (torn prefixes).
    pub torn_bytes_kept: u64,
    /// Times a majority of the members was down at once.
    pub quorum_losses: u64,
    /// Simulated ms during which a majority was down, summed.
    pub quorum_lost_ms: u64,
    /// Terms in which the polls saw a leader.
    pub leaders: u64,
    /// The highest term any member reached.
    pub max_term: u64,
    /// Snapshots taken or installed: a member's snapshot index moving on between two polls.
    pub snapshots: u64,
    /// The highest log index a member purged (entries a snapshot covers, dropped).
    pub purged_max: u64,
    /// Calls that need a majority (lock gets and releases, view queries) made and failed while
    /// a majority of the members was down: the view leader refusing cleanly.
    pub refused_without_quorum: u64,
}

impl RaftStats {
    pub fn add(&mut self, other: &RaftStats) {
        self.crashes += other.crashes;
        self.unsynced_bytes_dropped += other.unsynced_bytes_dropped;
        self.torn_bytes_kept += other.torn_bytes_kept;
        self.quorum_losses += other.quorum_losses;
        self.quorum_lost_ms += other.quorum_lost_ms;
        self.leaders += other.leaders;
        self.max_term = self.max_term.max(other.max_term);
        self.snapshots += other.snapshots;
        self.purged_max = self.purged_max.max(other.purged_max);
        self.refused_without_quorum += other.refused_without_quorum;
    }
}

/// What the storage servers' simulated disks went through in one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Machine crashes ([`FaultKind::Restart`]): one per server crashed.
    pub crashes: u64,
    /// Bytes written but not synced that crashes threw away.
    pub unsynced_bytes_dropped: u64,
    /// Bytes written but not synced that crashes kept (the torn prefixes).
    pub torn_bytes_kept: u64,
    /// Server starts on a disk a previous incarnation had written.
    pub restarts_from_disk: u64,
    /// Keys the servers held when they started from a disk, summed over those starts.
    pub keys_recovered: u64,
    /// Prepared writes (yes votes with no decision) read back by those starts.
    pub prepared_recovered: u64,
    /// Server starts on a fresh empty disk after a [`FaultKind::RestartWiped`].
    pub restarts_wiped: u64,
}

impl DiskStats {
    pub fn add(&mut self, other: &DiskStats) {
        self.crashes += other.crashes;
        self.unsynced_bytes_dropped += other.unsynced_bytes_dropped;
        self.torn_bytes_kept += other.torn_bytes_kept;
        self.restarts_from_disk += other.restarts_from_disk;
        self.keys_recovered += other.keys_recovered;
        self.prepared_recovered += other.prepared_recovered;
        self.restarts_wiped += other.restarts_wiped;
    }
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The simulated time, in µs since the run began.
fn now_us() -> u64 {
    turmoil::sim_elapsed()
        .map(|elapsed| elapsed.as_micros() as u64)
        .unwrap_or(0)
}

/// A host's clock: tokio's (which turmoil drives) for deadlines, and the simulation's time since
/// the run began, shifted by this host's skew, for the wall clock. Unlike tokio's clock it does
/// not restart when the host does.
struct SimWallClock {
    skew_us: i64,
}

impl Clock for SimWallClock {
    fn now(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    fn wall_us(&self) -> u64 {
        WALL_START_US
            .saturating_add(now_us())
            .saturating_add_signed(self.skew_us)
    }
}

fn env(seed: u64, skew_us: i64) -> Env {
    Env {
        transport: Arc::new(TurmoilTransport),
        clock: Arc::new(SimWallClock { skew_us }),
        random: Arc::new(SeededRandom::new(seed)),
        cluster: Arc::from(net::CLUSTER_DEFAULT),
        secret: None,
    }
}

/// A seed for one purpose of one run, so that changing one part of a run (the faults, say)
/// leaves the others' draws alone.
fn derive(seed: u64, purpose: &str) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    (seed, purpose).hash(&mut hasher);
    hasher.finish()
}

fn server_host(i: usize) -> String {
    format!("server{i}")
}

fn client_host(i: usize) -> String {
    format!("client{i}")
}

/// The host of view-leader member `id`.
pub fn viewleader_host(id: MemberId) -> String {
    format!("viewleader{id}")
}

/// The view leader as servers and clients are told it: every member's address.
pub fn viewleader_members() -> String {
    let members: Vec<String> = (1..=VIEWLEADER_MEMBERS)
        .map(|id| format!("{}:{PORT}", viewleader_host(id)))
        .collect();
    members.join(",")
}

/// How view-leader member `id` of a run of `options` runs: the run's heartbeat interval and
/// lease, the simulation's Raft timings, and the group of every member, which a member whose
/// log is empty forms (the others, if they formed it too, agree with it). No data directory: each
/// member is handed its machine's simulated disk.
pub fn viewleader_options(options: &SimOptions, id: MemberId) -> ViewLeaderOptions {
    ViewLeaderOptions {
        heartbeat_interval_ms: options.heartbeat_interval_ms,
        lease_ms: options.lease_ms,
        data_dir: None,
        raft: RaftOptions {
            id,
            peers: (1..=VIEWLEADER_MEMBERS)
                .map(|id| (id, format!("{}:{PORT}", viewleader_host(id))))
                .collect(),
            join: false,
            heartbeat_ms: RAFT_HEARTBEAT_MS,
            election_timeout_ms: RAFT_ELECTION_TIMEOUT_MS,
            snapshot_entries: RAFT_SNAPSHOT_ENTRIES,
        },
        fault_injection: true,
        ..Default::default()
    }
}

/// The schedule a run of `options` draws: one fault every one to three seconds of the workload
/// (after a quiet start), each lasting up to four seconds, so two may overlap.
pub fn draw_schedule(options: &SimOptions) -> Vec<Fault> {
    if let Some(schedule) = &options.schedule {
        return schedule.clone();
    }
    let mut rng = StdRng::seed_from_u64(derive(options.seed, "faults"));
    let mut schedule = Vec::new();
    if options.faults.is_empty() {
        return schedule;
    }
    let lease = options.lease_ms;
    let mut at_ms = 2_000 + rng.gen_range(0..1_000);
    while at_ms + 1_000 < options.workload_ms {
        let kind = options.faults[rng.gen_range(0..options.faults.len())];
        let server = |rng: &mut StdRng| server_host(rng.gen_range(0..options.servers));
        // A view-leader member: the leader three times in four, where a fault does the most harm.
        let member = |rng: &mut StdRng| {
            if rng.gen_bool(0.75) {
                VIEWLEADER_HOST.to_string()
            } else {
                VIEWLEADER_FOLLOWER.to_string()
            }
        };
        let (hosts, for_ms) = match kind {
            FaultKind::Delay => {
                let a = server(&mut rng);
                let b = if rng.gen_bool(0.5) {
                    VIEWLEADER_HOST.to_string()
                } else {
                    client_host(rng.gen_range(0..options.clients))
                };
                (vec![a, b], rng.gen_range(50..lease / 2))
            }
            FaultKind::ClientCut => (
                vec![
                    client_host(rng.gen_range(0..options.clients)),
                    server(&mut rng),
                ],
                rng.gen_range(500..4_000),
            ),
            FaultKind::ShortPause => (vec![server(&mut rng)], rng.gen_range(50..lease / 2)),
            FaultKind::LongPause => (vec![server(&mut rng)], rng.gen_range(lease * 2..lease * 4)),
            FaultKind::CutLink | FaultKind::OneWayCut => {
                let a = rng.gen_range(0..options.servers);
                let b = (a + rng.gen_range(1..options.servers)) % options.servers;
                (
                    vec![server_host(a), server_host(b)],
                    rng.gen_range(1_000..4_000),
                )
            }
            FaultKind::Isolate => (vec![server(&mut rng)], rng.gen_range(500..4_000)),
            FaultKind::IsolateViewLeader | FaultKind::SplitViewLeader => {
                (vec![member(&mut rng)], rng.gen_range(500..4_000))
            }
            FaultKind::Restart => {
                // One machine half the time, otherwise from two up to every server at once:
                // with their disks, every replica of a key may crash together. Down for up to
                // two leases, so a server comes back both as its old member and, denied, under
                // a new id.
                let crashed = if options.servers < 2 || rng.gen_bool(0.5) {
                    1
                } else {
                    rng.gen_range(2..=options.servers)
                };
                let mut picked =
                    rand::seq::index::sample(&mut rng, options.servers, crashed).into_vec();
                picked.sort_unstable();
                (
                    picked.into_iter().map(server_host).collect(),
                    rng.gen_range(0..lease * 2),
                )
            }
            // From a blink to past an election (1.5 to 2 s without the leader).
            FaultKind::PauseViewLeader => (vec![member(&mut rng)], rng.gen_range(50..lease * 3)),
            FaultKind::RestartViewLeader => {
                // One time in five the leader and a follower together: no majority is left, so
                // nothing may be logged (no view change, no lock granted) until one is back,
                // within a few seconds. Otherwise one member, the leader mostly, down from an
                // instant (back before anyone stands) to past an election.
                if rng.gen_bool(0.2) {
                    (
                        vec![VIEWLEADER_HOST.to_string(), VIEWLEADER_FOLLOWER.to_string()],
                        rng.gen_range(500..lease * 3),
                    )
                } else {
                    (vec![member(&mut rng)], rng.gen_range(0..lease * 3))
                }
            }
            // Shorter than the gap between two faults: two wiped restarts never overlap.
            FaultKind::RestartWiped => (vec![server(&mut rng)], rng.gen_range(0..500)),
        };
        schedule.push(Fault {
            kind,
            hosts,
            at_ms,
            for_ms,
        });
        at_ms += rng.gen_range(1_000..3_000);
    }
    schedule
}

/// Every host, for faults that cut one host from all the others.
fn all_hosts(options: &SimOptions) -> Vec<String> {
    let mut hosts: Vec<String> = (1..=VIEWLEADER_MEMBERS).map(viewleader_host).collect();
    hosts.push("auditor".to_string());
    hosts.extend((0..options.servers).map(server_host));
    hosts.extend((0..options.clients).map(client_host));
    hosts
}

/// Runs one simulation. Never panics on what the system under test does: a broken promise is a
/// violation in the outcome. The nodes' own events join the trace, tagged with their host.
pub fn run(options: &SimOptions) -> Outcome {
    use tracing_subscriber::layer::SubscriberExt;
    let events = NodeEvents::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    let mut outcome = tracing::subscriber::with_default(subscriber, || run_hosts(options));
    let mut lines = events.take();
    if !lines.is_empty() {
        lines.append(&mut outcome.trace);
        // Every line opens with its simulated time: one timeline, stable for equal times.
        lines.sort_by_key(|line| {
            line.split_whitespace()
                .next()
                .and_then(|ms| ms.parse::<u64>().ok())
                .unwrap_or(0)
        });
        outcome.trace = lines;
        let mut hasher = std::hash::DefaultHasher::new();
        outcome.trace.hash(&mut hasher);
        outcome.trace_hash = hasher.finish();
    }
    outcome
}

/// A view-leader member's current process, for the run loop's polls and for naming the leader
/// in a fault: set by each incarnation once it has started, cleared when its machine crashes.
type Handle = Rc<RefCell<Option<Arc<ViewLeader>>>>;

fn run_hosts(options: &SimOptions) -> Outcome {
    let seed = options.seed;
    // turmoil runs every host on this one thread, stepping each host's runtime in turn, so
    // seeding this thread's generator feeds every member's election timeouts from the run's
    // seed, drawn in the order the members draw them (which the seed fixes too).
    seed_thread(derive(seed, "raft-elections"));
    let trace = Rc::new(RefCell::new(Vec::<String>::new()));
    let recorded = Rc::new(RefCell::new(Recorded::default()));
    let mut sim = turmoil::Builder::new()
        .rng_seed(derive(seed, "network"))
        .simulation_duration(Duration::from_millis(RUN_MS_MAX))
        .epoch(UNIX_EPOCH + Duration::from_micros(WALL_START_US))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(2))
        .tcp_capacity(1024)
        .build();
    let mut machines = Machines::new(seed);

    // The view leader's members, each restarted from its disk (and with fresh randomness) after
    // a crash.
    for id in 1..=VIEWLEADER_MEMBERS {
        let host = viewleader_host(id);
        let disk = machines.add_disk(&host);
        let handle = machines.add_member(id, &host);
        let incarnations = Rc::new(Cell::new(0u64));
        let vl_options = viewleader_options(options, id);
        sim.host(host.as_str(), move || {
            incarnations.set(incarnations.get() + 1);
            let host = viewleader_host(id);
            let env = env(derive(seed, &format!("{host}-{}", incarnations.get())), 0);
            let disk: Arc<dyn Disk> = Arc::new(disk.borrow().clone());
            let vl_options = vl_options.clone();
            let handle = handle.clone();
            async move {
                let listener = env.bind(&host, Some(PORT), net::VIEWLEADER_PORTS).await?;
                let shutdown = CancellationToken::new();
                let addr = format!("{host}:{PORT}");
                let member =
                    viewleader::start_on(vl_options, Some(disk), &addr, env, shutdown.clone())
                        .await?;
                handle.replace(Some(member.clone()));
                viewleader::serve(member, listener, shutdown).await?;
                Ok(())
            }
        });
    }
    for i in 0..options.servers {
        let host = server_host(i);
        let options = options.clone();
        let incarnations = Rc::new(Cell::new(0u64));
        let disk = machines.add_disk(&host);
        let stats = machines.stats.clone();
        let trace = trace.clone();
        sim.host(host.as_str(), move || {
            incarnations.set(incarnations.get() + 1);
            let restart = incarnations.get() > 1;
            let host = server_host(i);
            let env = env(derive(seed, &format!("{host}-{}", incarnations.get())), 0);
            // The disk of this machine as the last crash left it (or a fresh one, if the
            // machine was replaced): a clone shares its files.
            let disk = disk.borrow().clone();
            let from_disk = disk.list().is_ok_and(|names| !names.is_empty());
            let storage = server::Storage::Disk {
                disk: Arc::new(disk),
                options: log_options(),
            };
            let stats = stats.clone();
            let trace = trace.clone();
            let server_options = ServerOptions {
                viewleader: viewleader_members(),
                advertise: Some(format!("{host}:{PORT}")),
                heartbeat_interval_ms: options.heartbeat_interval_ms,
                rpc_timeout_ms: 500,
                tx_timeout_ms: options.tx_timeout_ms,
                faults: Default::default(),
                planted_bug: options.planted_bug,
                // A test harness: every fault is allowed, as in the in-process cluster.
                fault_injection: true,
            };
            async move {
                let listener = env.bind(&host, Some(PORT), net::SERVER_PORTS).await?;
                let server = server::start(&*listener, server_options, env, storage)?;
                if restart {
                    let snapshot = server.snapshot()?;
                    let mut stats = stats.borrow_mut();
                    let line = if from_disk {
                        stats.restarts_from_disk += 1;
                        stats.keys_recovered += snapshot.keys;
                        stats.prepared_recovered += snapshot.pending_transactions;
                        format!(
                            "restarted from its disk: {} keys, {} prepared writes, as {}",
                            snapshot.keys, snapshot.pending_transactions, snapshot.server_id
                        )
                    } else {
                        stats.restarts_wiped += 1;
                        format!("restarted on an empty disk, as {}", snapshot.server_id)
                    };
                    trace
                        .borrow_mut()
                        .push(format!("{:>8} ms  {host} {line}", now_us() / 1_000));
                }
                server::serve(
                    server,
                    listener,
                    CancellationToken::new(),
                    CancellationToken::new(),
                )
                .await?;
                Ok(())
            }
        });
    }
    for i in 0..options.clients {
        let client = workload_client(options, i, trace.clone(), recorded.clone());
        sim.client(client_host(i).as_str(), client);
    }
    sim.client(
        "auditor",
        auditor(options.clone(), trace.clone(), recorded.clone()),
    );

    let schedule = draw_schedule(options);
    let mut faults: BTreeMap<FaultKind, u64> = BTreeMap::new();
    // Each fault as it began, its symbolic hosts named; `None` until it begins.
    let mut begun: Vec<Option<Fault>> = vec![None; schedule.len()];
    let mut ended = vec![false; schedule.len()];
    // Which member a fault naming a follower takes: drawn as the faults begin.
    let mut picks = StdRng::seed_from_u64(derive(seed, "viewleader-picks"));
    let mut polls = Polls::default();
    let mut next_poll_ms = 0;
    let mut healed = false;
    let hosts = all_hosts(options);
    let mut failure = None;
    loop {
        let now_ms = sim.elapsed().as_millis() as u64;
        for (n, drawn) in schedule.iter().enumerate() {
            if begun[n].is_none() && now_ms >= drawn.at_ms && !healed {
                let fault = machines.resolve(drawn, &mut picks);
                *faults.entry(fault.kind).or_default() += 1;
                let named = if fault.hosts == drawn.hosts {
                    String::new()
                } else {
                    format!(" (named {})", drawn.hosts.join("/"))
                };
                trace
                    .borrow_mut()
                    .push(format!("{now_ms:>8} ms  fault   {fault}{named}"));
                inject(&mut sim, &fault, &hosts, &mut machines);
                for line in machines.lines.drain(..) {
                    trace.borrow_mut().push(format!("{now_ms:>8} ms  {line}"));
                }
                begun[n] = Some(fault);
            }
            let Some(fault) = &begun[n] else { continue };
            if !ended[n] && now_ms >= fault.at_ms + fault.for_ms {
                ended[n] = true;
                trace
                    .borrow_mut()
                    .push(format!("{now_ms:>8} ms  heal    {fault}"));
                end(&mut sim, fault, &hosts, &mut machines);
                for line in machines.lines.drain(..) {
                    trace.borrow_mut().push(format!("{now_ms:>8} ms  {line}"));
                }
                // Ending one fault repairs or releases links that another fault still active
                // cuts or holds (a pause ending inside an isolation): apply those again, holds
                // first so that a cut link stays cut rather than held.
                let mut active: Vec<&Fault> = begun
                    .iter()
                    .zip(&ended)
                    .filter_map(|(fault, ended)| fault.as_ref().filter(|_| !ended))
                    .filter(|f| f.kind.is_link_fault())
                    .collect();
                active.sort_by_key(|f| f.kind.cuts());
                for fault in active {
                    inject(&mut sim, fault, &hosts, &mut machines);
                }
            }
        }
        if !healed && now_ms >= options.workload_ms {
            healed = true;
            for (n, fault) in begun.iter().enumerate() {
                if let Some(fault) = fault.as_ref().filter(|_| !ended[n]) {
                    ended[n] = true;
                    end(&mut sim, fault, &hosts, &mut machines);
                }
            }
            for line in machines.lines.drain(..) {
                trace.borrow_mut().push(format!("{now_ms:>8} ms  {line}"));
            }
            trace
                .borrow_mut()
                .push(format!("{now_ms:>8} ms  healed  every fault"));
        }
        if now_ms >= next_poll_ms {
            next_poll_ms = now_ms + RAFT_POLL_MS;
            polls.poll(&machines.running_members(), now_ms, &trace);
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => {
                failure = Some(format!("the simulation stopped: {err}"));
                break;
            }
        }
    }
    let simulated_ms = sim.elapsed().as_millis() as u64;
    drop(sim);

    let mut recorded = recorded.take();
    recorded.quorum_lost = machines.quorum_lost.clone();
    recorded.raft = polls.problems.clone();
    let mut violations = checks::check(
        &recorded,
        checks::key_blocked_bound_ms(options.lease_ms, options.tx_timeout_ms),
    );
    if let Some(failure) = failure {
        violations.push(failure);
    }
    let trace = trace.take();
    let mut hasher = std::hash::DefaultHasher::new();
    trace.hash(&mut hasher);
    let disks = *machines.stats.borrow();
    let mut raft = machines.raft;
    raft.leaders = polls.leaders.len() as u64;
    raft.max_term = polls.max_term;
    raft.snapshots = polls.snapshots;
    raft.purged_max = polls.purged_max;
    raft.refused_without_quorum =
        checks::refused_without_quorum(&recorded.quorum_calls, &recorded.quorum_lost);
    Outcome {
        seed,
        trace_hash: hasher.finish(),
        operations: recorded.history.len(),
        trace,
        faults,
        violations,
        simulated_ms,
        disks,
        raft,
        leaders: polls.order,
        views: recorded.views,
    }
}

/// A member's state as one poll read it.
struct MemberPoll {
    id: MemberId,
    status: MemberStatus,
    view: View,
}

/// Problems the polls report at most: one broken rule shows at every poll while it lasts.
const RAFT_PROBLEMS_MAX: usize = 10;

/// What the run loop's polls of the members found: who led which term, the snapshots, and the
/// rules of Raft that the members' own reports must keep.
#[derive(Default)]
struct Polls {
    /// The leader of each term seen.
    leaders: BTreeMap<u64, MemberId>,
    /// The leaders in the order they were first seen.
    order: Vec<Leadership>,
    /// Each member's snapshot index at the last poll.
    snapshot_index: BTreeMap<MemberId, u64>,
    snapshots: u64,
    purged_max: u64,
    max_term: u64,
    problems: Vec<String>,
}

impl Polls {
    /// Reads the running members' reports at `now_ms`: polls run between two steps of the
    /// simulation, when no task of any host runs, so each member's status and view are of one
    /// instant.
    fn poll(&mut self, members: &[MemberPoll], now_ms: u64, trace: &Rc<RefCell<Vec<String>>>) {
        for member in members {
            let status = &member.status;
            self.max_term = self.max_term.max(status.term);
            if let Some(purged) = status.purged {
                self.purged_max = self.purged_max.max(purged);
            }
            if let Some(snapshot) = status.snapshot {
                let last = self.snapshot_index.insert(member.id, snapshot);
                if last.is_none_or(|last| last < snapshot) {
                    self.snapshots += 1;
                }
            }
            if status.role != "leader" {
                continue;
            }
            match self.leaders.get(&status.term) {
                // Election safety: at most one leader per term.
                Some(&other) if other != member.id => self.problem(format!(
                    "raft: members {other} and {} both led term {} (seen at {now_ms} ms)",
                    member.id, status.term
                )),
                Some(_) => {}
                None => {
                    self.leaders.insert(status.term, member.id);
                    self.order.push(Leadership {
                        term: status.term,
                        member: member.id,
                        since_ms: now_ms,
                    });
                    trace.borrow_mut().push(format!(
                        "{now_ms:>8} ms  raft    {} leads term {}",
                        viewleader_host(member.id),
                        status.term
                    ));
                }
            }
        }
        // State machine safety: members that applied the log up to the same index applied the
        // same entries, so they hold the same state, of which the view is the visible part.
        for (n, a) in members.iter().enumerate() {
            for b in &members[n + 1..] {
                let same_index = a.status.applied.is_some() && a.status.applied == b.status.applied;
                if same_index && a.view != b.view {
                    self.problem(format!(
                        "raft: members {} and {} both applied the log up to index {} but hold \
                         different views: epoch {} with {:?} against epoch {} with {:?} (seen at \
                         {now_ms} ms)",
                        a.id,
                        b.id,
                        a.status.applied.unwrap_or_default(),
                        a.view.epoch,
                        server_ids(&a.view),
                        b.view.epoch,
                        server_ids(&b.view)
                    ));
                }
            }
        }
    }

    fn problem(&mut self, problem: String) {
        if self.problems.len() < RAFT_PROBLEMS_MAX && !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }
}

fn server_ids(view: &View) -> Vec<&str> {
    view.servers.iter().map(|s| s.id.as_str()).collect()
}

/// The machines under the hosts, as the process faults see them: each storage server's and
/// view-leader member's disk, kept across its restarts; how many process faults hold each host
/// down (they may overlap: a host comes back when the last one ends); and when a majority of
/// the members was down.
struct Machines {
    disks: BTreeMap<String, Rc<RefCell<SimDisk>>>,
    down: BTreeMap<String, u32>,
    /// Each member's host, id and current process.
    members: BTreeMap<String, (MemberId, Handle)>,
    /// Draws how much of each file's unsynced tail a crash keeps.
    torn: StdRng,
    stats: Rc<RefCell<DiskStats>>,
    raft: RaftStats,
    /// When the current loss of the members' majority began, in simulated µs.
    quorum_lost_since: Option<u64>,
    /// Every stretch of simulated time (µs, from and to) during which a majority of the members
    /// was down.
    quorum_lost: Vec<(u64, u64)>,
    /// Lines for the run's trace, taken by the run loop.
    lines: Vec<String>,
}

impl Machines {
    fn new(seed: u64) -> Self {
        Self {
            disks: BTreeMap::new(),
            down: BTreeMap::new(),
            members: BTreeMap::new(),
            torn: StdRng::seed_from_u64(derive(seed, "torn-writes")),
            stats: Rc::default(),
            raft: RaftStats::default(),
            quorum_lost_since: None,
            quorum_lost: Vec::new(),
            lines: Vec::new(),
        }
    }

    /// A fresh disk for `host`'s machine; the host's software reads it at every start.
    fn add_disk(&mut self, host: &str) -> Rc<RefCell<SimDisk>> {
        let disk = Rc::new(RefCell::new(simulated_disk()));
        self.disks.insert(host.to_string(), disk.clone());
        disk
    }

    /// Registers view-leader member `id` on `host`; its incarnations fill the handle in.
    fn add_member(&mut self, id: MemberId, host: &str) -> Handle {
        let handle = Handle::default();
        self.members.insert(host.to_string(), (id, handle.clone()));
        handle
    }

    fn is_down(&self, host: &str) -> bool {
        self.down.get(host).is_some_and(|down| *down > 0)
    }

    /// What every running member reports now.
    fn running_members(&self) -> Vec<MemberPoll> {
        self.members
            .iter()
            .filter(|(host, _)| !self.is_down(host))
            .filter_map(|(_, (id, handle))| {
                let member = handle.borrow().clone()?;
                Some(MemberPoll {
                    id: *id,
                    status: member.status(),
                    view: member.view(),
                })
            })
            .collect()
    }

    /// `fault` with its symbolic hosts named. [`VIEWLEADER_HOST`] is the member that leads now:
    /// of the running members that say they lead, the one in the highest term; while none does
    /// (an election), the running member in the highest term, the lowest id on a tie; with
    /// every member down, member 1. [`VIEWLEADER_FOLLOWER`] is another member, not named by
    /// the fault already, a running one if there is one, drawn from `picks`.
    fn resolve(&self, fault: &Fault, picks: &mut StdRng) -> Fault {
        let symbolic = |h: &String| h == VIEWLEADER_HOST || h == VIEWLEADER_FOLLOWER;
        if !fault.hosts.iter().any(symbolic) {
            return fault.clone();
        }
        let running = self.running_members();
        let leader = running
            .iter()
            .max_by_key(|m| {
                (
                    m.status.role == "leader",
                    m.status.term,
                    std::cmp::Reverse(m.id),
                )
            })
            .map_or(1, |m| m.id);
        let mut named: Vec<String> = Vec::new();
        for host in &fault.hosts {
            let host = match host.as_str() {
                VIEWLEADER_HOST => viewleader_host(leader),
                VIEWLEADER_FOLLOWER => {
                    let taken =
                        |id: &MemberId| *id == leader || named.contains(&viewleader_host(*id));
                    let others: Vec<MemberId> =
                        (1..=VIEWLEADER_MEMBERS).filter(|id| !taken(id)).collect();
                    let up: Vec<MemberId> = others
                        .iter()
                        .copied()
                        .filter(|id| !self.is_down(&viewleader_host(*id)))
                        .collect();
                    let pool = if up.is_empty() { &others } else { &up };
                    match pool.len() {
                        0 => viewleader_host(leader),
                        len => viewleader_host(pool[picks.gen_range(0..len)]),
                    }
                }
                _ => host.clone(),
            };
            named.push(host);
        }
        Fault {
            hosts: named,
            ..fault.clone()
        }
    }

    /// A machine crash of `host`'s disk: it drops what was not synced but a torn prefix of
    /// each file's unsynced tail, drawn from the run's seed. Returns the bytes dropped and kept.
    fn crash_disk(&mut self, host: &str) -> (u64, u64) {
        let Some(disk) = self.disks.get(host) else {
            return (0, 0);
        };
        let (mut dropped, mut kept) = (0, 0);
        let torn = &mut self.torn;
        disk.borrow().crash(&mut |unsynced| {
            let keep = if unsynced == 0 {
                0
            } else {
                torn.gen_range(0..=unsynced)
            };
            dropped += (unsynced - keep) as u64;
            kept += keep as u64;
            keep
        });
        self.lines.push(format!(
            "disk    {host} crashed: {dropped} unsynced bytes dropped, {kept} kept torn"
        ));
        (dropped, kept)
    }

    /// Stops the fault's hosts: the processes die (unless already down) and, for a machine
    /// crash, each disk drops what was not synced but a torn prefix; a wiped machine gets a
    /// fresh disk.
    fn stop(&mut self, sim: &mut turmoil::Sim<'_>, fault: &Fault) {
        for host in &fault.hosts {
            let down = self.down.entry(host.clone()).or_default();
            *down += 1;
            let first = *down == 1;
            if first {
                sim.crash(host.as_str());
                if let Some((_, handle)) = self.members.get(host) {
                    handle.replace(None);
                }
            }
            match fault.kind {
                // A disk that is already down was crashed when its process died.
                FaultKind::Restart if first => {
                    let (dropped, kept) = self.crash_disk(host);
                    let mut stats = self.stats.borrow_mut();
                    stats.crashes += 1;
                    stats.unsynced_bytes_dropped += dropped;
                    stats.torn_bytes_kept += kept;
                }
                FaultKind::RestartViewLeader if first => {
                    let (dropped, kept) = self.crash_disk(host);
                    self.raft.crashes += 1;
                    self.raft.unsynced_bytes_dropped += dropped;
                    self.raft.torn_bytes_kept += kept;
                }
                FaultKind::RestartWiped => {
                    if let Some(disk) = self.disks.get(host) {
                        disk.replace(simulated_disk());
                        self.lines
                            .push(format!("disk    {host} replaced by an empty one"));
                    }
                }
                _ => {}
            }
        }
        self.note_quorum(sim);
    }

    /// Ends the fault on its hosts: each comes back once no other process fault holds it down.
    fn start(&mut self, sim: &mut turmoil::Sim<'_>, fault: &Fault) {
        for host in &fault.hosts {
            let down = self.down.entry(host.clone()).or_default();
            *down = down.saturating_sub(1);
            if *down == 0 {
                sim.bounce(host.as_str());
            }
        }
        self.note_quorum(sim);
    }

    /// Notes when a majority of the members goes down and when it is back: meanwhile no entry
    /// can be committed, so nothing the view leader logs may be answered.
    fn note_quorum(&mut self, sim: &turmoil::Sim<'_>) {
        // The run loop's time: `now_us` reads the running host's, and none runs here.
        let now_us = sim.elapsed().as_micros() as u64;
        let down = self
            .members
            .keys()
            .filter(|host| self.is_down(host))
            .count() as u64;
        let lost = down * 2 > VIEWLEADER_MEMBERS;
        match (lost, self.quorum_lost_since) {
            (true, None) => self.quorum_lost_since = Some(now_us),
            (false, Some(since)) => {
                let until = now_us;
                self.quorum_lost_since = None;
                self.quorum_lost.push((since, until));
                self.raft.quorum_losses += 1;
                self.raft.quorum_lost_ms += (until - since) / 1_000;
                self.lines.push(format!(
                    "raft    a majority of the members was down from {} ms to {} ms",
                    since / 1_000,
                    until / 1_000
                ));
            }
            _ => {}
        }
    }
}

/// Every host but `host`.
fn others<'a>(hosts: &'a [String], host: &'a str) -> impl Iterator<Item = &'a String> {
    hosts.iter().filter(move |h| *h != host)
}

/// Every view-leader member's host but `host`.
fn other_members(host: &str) -> impl Iterator<Item = String> + '_ {
    (1..=VIEWLEADER_MEMBERS)
        .map(viewleader_host)
        .filter(move |h| h != host)
}

fn inject(sim: &mut turmoil::Sim<'_>, fault: &Fault, hosts: &[String], machines: &mut Machines) {
    match fault.kind {
        FaultKind::Delay => sim.hold(fault.hosts[0].as_str(), fault.hosts[1].as_str()),
        FaultKind::ClientCut | FaultKind::CutLink => {
            sim.partition(fault.hosts[0].as_str(), fault.hosts[1].as_str())
        }
        FaultKind::OneWayCut => {
            sim.partition_oneway(fault.hosts[0].as_str(), fault.hosts[1].as_str())
        }
        FaultKind::ShortPause | FaultKind::LongPause | FaultKind::PauseViewLeader => {
            for other in others(hosts, &fault.hosts[0]) {
                sim.hold(fault.hosts[0].as_str(), other.as_str());
            }
        }
        FaultKind::Isolate | FaultKind::IsolateViewLeader => {
            for other in others(hosts, &fault.hosts[0]) {
                sim.partition(fault.hosts[0].as_str(), other.as_str());
            }
        }
        FaultKind::SplitViewLeader => {
            for other in other_members(&fault.hosts[0]) {
                sim.partition(fault.hosts[0].as_str(), other.as_str());
            }
        }
        FaultKind::Restart | FaultKind::RestartViewLeader | FaultKind::RestartWiped => {
            machines.stop(sim, fault)
        }
    }
}

fn end(sim: &mut turmoil::Sim<'_>, fault: &Fault, hosts: &[String], machines: &mut Machines) {
    match fault.kind {
        FaultKind::Delay => sim.release(fault.hosts[0].as_str(), fault.hosts[1].as_str()),
        FaultKind::ClientCut | FaultKind::CutLink => {
            sim.repair(fault.hosts[0].as_str(), fault.hosts[1].as_str())
        }
        FaultKind::OneWayCut => sim.repair_oneway(fault.hosts[0].as_str(), fault.hosts[1].as_str()),
        FaultKind::ShortPause | FaultKind::LongPause | FaultKind::PauseViewLeader => {
            for other in others(hosts, &fault.hosts[0]) {
                sim.release(fault.hosts[0].as_str(), other.as_str());
            }
        }
        FaultKind::Isolate | FaultKind::IsolateViewLeader => {
            for other in others(hosts, &fault.hosts[0]) {
                sim.repair(fault.hosts[0].as_str(), other.as_str());
            }
        }
        FaultKind::SplitViewLeader => {
            for other in other_members(&fault.hosts[0]) {
                sim.repair(fault.hosts[0].as_str(), other.as_str());
            }
        }
        FaultKind::Restart | FaultKind::RestartViewLeader | FaultKind::RestartWiped => {
            machines.start(sim, fault)
        }
    }
}

/// The keys of a run: texts are written whole, lists appended to; a few of each, so that
/// operations conflict.
fn text_key(k: usize) -> String {
    format!("t{k}")
}

fn list_key(k: usize) -> String {
    format!("l{k}")
}

/// How a failed write counts: only an uncertain outcome may have taken effect.
fn write_failure(err: &Error) -> Return {
    match err {
        Error::Uncertain(_) => Return::Unknown,
        _ => Return::Failed,
    }
}

fn client_options(viewleader: String) -> ClientOptions {
    ClientOptions {
        viewleader,
        timeout_ms: CLIENT_TIMEOUT_MS,
        wait_ms: CLIENT_WAIT_MS,
    }
}

/// A view as seen now, asked for at `invoked_us`.
fn view_sample(view: &View, invoked_us: u64) -> ViewSample {
    ViewSample {
        invoked_us,
        at_us: now_us(),
        epoch: view.epoch,
        servers: view.servers.iter().map(|s| s.id.clone()).collect(),
        rebalancing: view.rebalancing,
    }
}

/// What keeps the members' reports from showing one healthy group: how many lead, who follows
/// whom in which term, and how far each applied the log. `None`: one leader, followed by all in
/// its term, everyone at the same applied index and view epoch.
fn members_disagree(statuses: &[MemberStatus]) -> Option<String> {
    let leaders: Vec<&MemberStatus> = statuses.iter().filter(|s| s.role == "leader").collect();
    let [leader] = leaders.as_slice() else {
        let ids: Vec<u64> = leaders.iter().map(|s| s.id).collect();
        return Some(format!("{} members lead {ids:?}", leaders.len()));
    };
    for status in statuses {
        if status.leader != Some(leader.id) || status.term != leader.term {
            return Some(format!(
                "member {} ({}, term {}) follows {:?} while member {} leads term {}",
                status.id, status.role, status.term, status.leader, leader.id, leader.term
            ));
        }
        if status.applied != leader.applied || status.epoch != leader.epoch {
            return Some(format!(
                "member {} applied up to {:?} (epoch {}), the leader up to {:?} (epoch {})",
                status.id, status.applied, status.epoch, leader.applied, leader.epoch
            ));
        }
    }
    None
}

/// Records a write refused because another transaction held its key, for the check that no key
/// stays blocked while the faults go on.
fn note_refusal(recorded: &Rc<RefCell<Recorded>>, key: &str, err: &Error) {
    if let Error::Conflict(_) = err {
        recorded.borrow_mut().refusals.push(Refusal {
            key: key.to_string(),
            at_us: now_us(),
        });
    }
}

/// One client of the workload: random operations on few keys until the workload ends, each
/// recorded with its simulated invocation and completion times.
fn workload_client(
    options: &SimOptions,
    i: usize,
    trace: Rc<RefCell<Vec<String>>>,
    recorded: Rc<RefCell<Recorded>>,
) -> impl std::future::Future<Output = turmoil::Result> + 'static {
    let options = options.clone();
    async move {
        let mut rng = StdRng::seed_from_u64(derive(options.seed, &client_host(i)));
        let skew_us = rng.gen_range(-CLOCK_SKEW_US_MAX..=CLOCK_SKEW_US_MAX);
        let client = Client::with_env(
            client_options(viewleader_members()),
            env(derive(options.seed, &format!("client{i}-env")), skew_us),
        );
        let me = client_host(i);
        let mut written = 0u64;
        loop {
            let think = rng.gen_range(0..=THINK_MS_MAX);
            tokio::time::sleep(Duration::from_millis(think)).await;
            // The workload ends on time: the auditor checks the replicas once every client
            // is done, and an operation begun later could still be on its way to them.
            if now_us() >= options.workload_ms * 1_000 {
                break;
            }
            let roll = rng.gen_range(0..100);
            let invoked_us = now_us();
            let (key, call, ret) = if roll < 30 {
                let key = text_key(rng.gen_range(0..options.keys));
                written += 1;
                let value = format!("{me}-{written}");
                let outcome = client.setr(&key, Value::Text(value.clone())).await;
                let ret = match &outcome {
                    Ok(_) => Return::Written,
                    Err(err) => {
                        note_refusal(&recorded, &key, err);
                        write_failure(err)
                    }
                };
                (key, Call::Write(Value::Text(value)), ret)
            } else if roll < 50 {
                let key = list_key(rng.gen_range(0..options.keys));
                written += 1;
                let item = format!("{me}-{written}");
                let ret = match client.append(&key, &item).await {
                    Ok(_) => Return::Appended,
                    Err(err) => {
                        note_refusal(&recorded, &key, &err);
                        write_failure(&err)
                    }
                };
                (key, Call::Append(item), ret)
            } else if roll < 80 {
                let key = if rng.gen_bool(0.5) {
                    text_key(rng.gen_range(0..options.keys))
                } else {
                    list_key(rng.gen_range(0..options.keys))
                };
                let ret = match client.getr(&key).await {
                    Ok(found) => Return::ReadValue(found.map(|f| f.value.value)),
                    Err(_) => Return::Failed,
                };
                (key, Call::Read, ret)
            } else if roll < 88 {
                let key = text_key(rng.gen_range(0..options.keys));
                if let Ok(found) = client.getr_stale(&key).await {
                    recorded.borrow_mut().stale_reads.push((
                        key.clone(),
                        found.map(|f| f.value.value),
                        now_us(),
                    ));
                }
                continue;
            } else if roll < 93 {
                let view = client.query_servers().await;
                let mut recorded = recorded.borrow_mut();
                recorded.note_quorum_call(
                    QuorumCall::QueryServers,
                    invoked_us,
                    now_us(),
                    view.is_ok(),
                );
                if let Ok(view) = view {
                    recorded.views.push(view_sample(&view, invoked_us));
                }
                continue;
            } else {
                let lock = format!("lock{}", rng.gen_range(0..options.locks));
                let reply = client.lock_get(&lock, &me).await;
                recorded.borrow_mut().note_quorum_call(
                    QuorumCall::LockGet,
                    invoked_us,
                    now_us(),
                    reply.is_ok(),
                );
                if let Ok(LockReply::Granted { token }) = reply {
                    let granted_us = now_us();
                    trace.borrow_mut().push(format!(
                        "{:>8} ms  {me} holds {lock} with token {token}",
                        granted_us / 1_000
                    ));
                    let hold = rng.gen_range(0..=LOCK_HOLD_MS_MAX);
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                    // The client holds the lock until it asks to release it.
                    recorded.borrow_mut().grants.push(Grant {
                        lock: lock.clone(),
                        requester: me.clone(),
                        token,
                        invoked_us,
                        completed_us: granted_us,
                        released_us: now_us(),
                    });
                    let release_us = now_us();
                    let released = client.lock_release(&lock, &me).await;
                    recorded.borrow_mut().note_quorum_call(
                        QuorumCall::LockRelease,
                        release_us,
                        now_us(),
                        released.is_ok(),
                    );
                }
                continue;
            };
            let completed_us = (ret != Return::Unknown).then(now_us);
            let mut recorded = recorded.borrow_mut();
            let id = recorded.history.len() as u64;
            trace.borrow_mut().push(format!(
                "{:>8} ms  {me} {call:?} {key:?} -> {ret:?} ({} ms)",
                invoked_us / 1_000,
                completed_us.map_or(0, |c| (c - invoked_us) / 1_000)
            ));
            recorded.history.push(Operation {
                id,
                client: i as u64,
                key,
                call,
                invoked_us,
                completed_us,
                ret,
            });
        }
        recorded.borrow_mut().clients_done += 1;
        Ok(())
    }
}

/// During the workload: samples the view every [`VIEW_SAMPLE_MS`]. After healing: waits for the
/// cluster to settle with every server in the view, then checks that every key is writable, that
/// no transaction stays pending, that the replicas of each key agree, and that the view leader's
/// members are one group again ([`members_disagree`]), each within [`SimOptions::liveness_ms`];
/// records the final lists.
async fn auditor(
    options: SimOptions,
    trace: Rc<RefCell<Vec<String>>>,
    recorded: Rc<RefCell<Recorded>>,
) -> turmoil::Result {
    let client = Client::with_env(
        client_options(viewleader_members()),
        env(derive(options.seed, "auditor-env"), 0),
    );
    let start_ms = options.workload_ms;
    while now_us() < start_ms * 1_000 {
        let invoked_us = now_us();
        let view = client.query_servers().await;
        {
            let mut recorded = recorded.borrow_mut();
            recorded.note_quorum_call(QuorumCall::QueryServers, invoked_us, now_us(), view.is_ok());
            if let Ok(view) = view {
                recorded.views.push(view_sample(&view, invoked_us));
            }
        }
        let left_ms = start_ms.saturating_sub(now_us() / 1_000);
        // At least a millisecond: a query refused at once must not spin without time passing.
        tokio::time::sleep(Duration::from_millis(VIEW_SAMPLE_MS.min(left_ms).max(1))).await;
    }
    let deadline_us = (start_ms + options.liveness_ms) * 1_000;
    // Every workload client finishes its last operation first (each is bounded by the
    // client's wait), so that what the audit reads is final.
    while recorded.borrow().clients_done < options.clients && now_us() < deadline_us {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut problems = Vec::new();
    let note = |trace: &Rc<RefCell<Vec<String>>>, what: String| {
        trace
            .borrow_mut()
            .push(format!("{:>8} ms  auditor {what}", now_us() / 1_000));
    };

    // Settled, with every server back in the view.
    let mut settled = None;
    while now_us() < deadline_us {
        if let Ok(view) = client.query_servers().await {
            if view.servers.len() == options.servers && !view.rebalancing {
                settled = Some(view);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(view) = settled else {
        problems.push(format!(
            "liveness: the view did not settle with all {} servers within {} ms of healing",
            options.servers, options.liveness_ms
        ));
        recorded.borrow_mut().liveness = problems;
        return Ok(());
    };
    note(&trace, format!("view settled at epoch {}", view.epoch));

    // Every key writable again (a text key gets one more write, recorded like any other).
    for k in 0..options.keys {
        let key = text_key(k);
        let value = format!("audit-{k}");
        let mut done = false;
        while now_us() < deadline_us {
            let invoked_us = now_us();
            match client.setr(&key, Value::Text(value.clone())).await {
                Ok(_) => {
                    let mut recorded = recorded.borrow_mut();
                    let id = recorded.history.len() as u64;
                    recorded.history.push(Operation {
                        id,
                        client: u64::MAX,
                        key: key.clone(),
                        call: Call::Write(Value::Text(value.clone())),
                        invoked_us,
                        completed_us: Some(now_us()),
                        ret: Return::Written,
                    });
                    done = true;
                    break;
                }
                Err(err) => {
                    let ret = write_failure(&err);
                    let completed_us = (ret != Return::Unknown).then(now_us);
                    {
                        let mut recorded = recorded.borrow_mut();
                        let id = recorded.history.len() as u64;
                        recorded.history.push(Operation {
                            id,
                            client: u64::MAX,
                            key: key.clone(),
                            call: Call::Write(Value::Text(value.clone())),
                            invoked_us,
                            completed_us,
                            ret,
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if !done {
            problems.push(format!(
                "liveness: {key:?} was not writable within {} ms of healing",
                options.liveness_ms
            ));
        }
    }

    // Nothing pending on any replica.
    for server in &view.servers {
        let mut idle = false;
        while now_us() < deadline_us {
            if let Ok(status) = client.status(&server.addr).await {
                if status.pending_transactions == 0 {
                    idle = true;
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !idle {
            problems.push(format!(
                "liveness: {} still holds pending transactions {} ms after healing",
                server.addr, options.liveness_ms
            ));
        }
    }

    // The replicas of every key agree, and the final lists for the append checks. The view
    // comes from the view leader, which may be between leaders even now: a member cut off until
    // healing campaigned meanwhile, and its higher term deposes the leader when it is back
    // (openraft has no pre-vote). Ask until the deadline.
    let cached = loop {
        match client.view(true).await {
            Err(_) if now_us() < deadline_us => {
                tokio::time::sleep(Duration::from_millis(AGREEMENT_POLL_MS)).await
            }
            answer => break answer,
        }
    };
    let mut final_lists = BTreeMap::new();
    for key in (0..options.keys)
        .map(text_key)
        .chain((0..options.keys).map(list_key))
    {
        let Ok(cached) = &cached else { break };
        // A write is acknowledged once a majority committed; the last replica may still be
        // applying it. Read again until the copies agree, within the liveness bound.
        let mut copies = Vec::new();
        loop {
            copies.clear();
            let mut unanswered = Vec::new();
            for replica in cached.replicas(&key) {
                match client.get(&replica.addr, Space::Ring, &key).await {
                    Ok(copy) => copies.push((replica.addr.clone(), copy)),
                    Err(err) => unanswered.push(format!(
                        "liveness: replica {} of {key:?} did not answer: {err}",
                        replica.addr
                    )),
                }
            }
            let agree = copies.windows(2).all(|pair| pair[0].1 == pair[1].1);
            if (agree && unanswered.is_empty()) || now_us() >= deadline_us {
                problems.extend(unanswered);
                break;
            }
            tokio::time::sleep(Duration::from_millis(AGREEMENT_POLL_MS)).await;
        }
        if let Some((_, first)) = copies.first() {
            if copies.iter().any(|(_, copy)| copy != first) {
                let shown: Vec<String> = copies
                    .iter()
                    .map(|(addr, copy)| {
                        format!("{addr}: {:?}", copy.as_ref().map(|c| (&c.value, c.version)))
                    })
                    .collect();
                problems.push(format!(
                    "replicas of {key:?} disagree: {}",
                    shown.join("; ")
                ));
            }
            if let Some(Some(copy)) = copies.first().map(|(_, copy)| copy) {
                if let Value::List(items) = &copy.value {
                    final_lists.insert(key.clone(), items.clone());
                }
            }
        }
    }
    if let Err(err) = &cached {
        problems.push(format!("liveness: no view for the audit: {err}"));
    }

    // The view leader's group whole again: every member answers, one leads, every member
    // follows it in its term, and all applied the log to the same index and the same view.
    let mut disagreement = None;
    while now_us() < deadline_us {
        let mut statuses = Vec::new();
        for id in 1..=VIEWLEADER_MEMBERS {
            let addr = format!("{}:{PORT}", viewleader_host(id));
            match client.member_status(&addr).await {
                Ok(status) => statuses.push(status),
                Err(err) => {
                    disagreement = Some(format!("member {id} did not answer: {err}"));
                    break;
                }
            }
        }
        if statuses.len() as u64 == VIEWLEADER_MEMBERS {
            disagreement = members_disagree(&statuses);
            if disagreement.is_none() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(AGREEMENT_POLL_MS)).await;
    }
    if let Some(disagreement) = disagreement {
        problems.push(format!(
            "liveness: the view leader's members did not agree within {} ms of healing: \
             {disagreement}",
            options.liveness_ms
        ));
    }
    note(&trace, format!("done, {} problems", problems.len()));
    let mut recorded = recorded.borrow_mut();
    recorded.final_lists = final_lists;
    recorded.liveness = problems;
    // Without a view there are no final lists, and every acknowledged append would look lost:
    // the audit did not finish, which is a violation of its own.
    recorded.audited = cached.is_ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_members_options_are_valid_with_the_simulations_and_productions_timings() {
        let mut options = SimOptions::new(1);
        for id in 1..=VIEWLEADER_MEMBERS {
            let member = viewleader_options(&options, id);
            member.validate().unwrap();
            assert_eq!(member.raft.peers.len() as u64, VIEWLEADER_MEMBERS);
            assert_eq!(member.raft.election_timeout_ms, RAFT_ELECTION_TIMEOUT_MS);
        }
        // Some scenarios run with the production heartbeat interval and lease.
        options.heartbeat_interval_ms = viewleader::HEARTBEAT_INTERVAL_MS_DEFAULT;
        options.lease_ms = viewleader::LEASE_MS_DEFAULT;
        viewleader_options(&options, 1).validate().unwrap();
    }

    #[test]
    fn drawn_viewleader_faults_name_members_symbolically_and_never_take_all_three() {
        let mut options = SimOptions::new(0);
        options.faults = vec![
            FaultKind::RestartViewLeader,
            FaultKind::IsolateViewLeader,
            FaultKind::SplitViewLeader,
            FaultKind::PauseViewLeader,
        ];
        let (mut one, mut two) = (0, 0);
        for seed in 0..50 {
            options.seed = seed;
            for fault in draw_schedule(&options) {
                for host in &fault.hosts {
                    assert!(
                        host == VIEWLEADER_HOST || host == VIEWLEADER_FOLLOWER,
                        "{fault}"
                    );
                }
                if fault.kind != FaultKind::RestartViewLeader {
                    assert_eq!(fault.hosts.len(), 1, "{fault}");
                    continue;
                }
                // A majority is back within three leases: the audit's liveness bound is far above.
                assert!(fault.for_ms < 3 * options.lease_ms, "{fault}");
                match fault.hosts.as_slice() {
                    [_] => one += 1,
                    [a, b] if a != b => two += 1,
                    _ => panic!("{fault}"),
                }
            }
        }
        assert!(
            one > 0 && two > 0,
            "{one} one-member and {two} two-member crashes"
        );
    }
}
