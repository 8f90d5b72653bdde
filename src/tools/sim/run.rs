//! One simulated run: the real view leader, storage servers and clients as the hosts of one
//! turmoil simulation, a seeded fault schedule against them, a recorded history, and the checks of
//! [`super::checks`] over it. Everything that varies comes from the seed: the ids of servers,
//! transactions and requests, the jitter, the clients' clock skews, the operations, the faults,
//! how much of a crashed disk's unsynced writes survives, and the network's delays (turmoil's
//! own generator, and tokio's scheduler when built with `--cfg tokio_unstable`, as
//! `.cargo/config.toml` does). One seed replays one run.
//!
//! A run has three phases, all in simulated time: the workload with faults
//! ([`SimOptions::workload_ms`]), healing (every partition repaired, every held message released,
//! every crashed host restarted), and the audit, where one more client (which sampled the view
//! all through the workload) checks that the cluster is live again within
//! [`SimOptions::liveness_ms`].
//!
//! # Disks
//! Every storage server runs the durable log engine ([`crate::storage::Log`]) on a
//! [`SimDisk`] of its own machine, kept across the server's restarts, with small segments and
//! snapshot thresholds ([`SEGMENT_BYTES_MAX`], [`COMPACT_BYTES_MIN`]) so that a run rolls segments
//! and takes snapshots. The engine syncs and compacts inline on a simulated disk (no threads), so
//! the disks keep the run deterministic.
//! * [`FaultKind::Restart`] is a machine crash: the processes of one or more servers die at the
//!   same instant, each disk drops what was not synced and keeps a prefix of each file's unsynced
//!   tail (a torn write; its length drawn from the run's seed), and each server restarts from
//!   what its disk kept, at its address, as the member its `identity.json` names (denied and
//!   rejoining under a new id, with its keys, if it stayed down past its lease). Since a disk
//!   survives the crash, the promise of an acknowledged write holds even when every replica of
//!   a key crashes at once, and the schedule draws exactly that: up to every server together.
//! * [`FaultKind::RestartWiped`] is a replaced machine: one server comes back on a fresh empty
//!   disk, under a new id (what `Restart` did before the servers had disks). It loses a replica's
//!   copy for good, so it is drawn for one server at a time, as before; the replicas that keep
//!   their disks hold what it lost.
//!
//! # Deliberately left out
//! * A pause of a process is approximated by holding every message to and from its host: its
//!   timers keep running, as if only its network stalled.
//! * A power loss of the whole cluster: the view leader keeps its data directory on the real
//!   file system (a temporary directory of the run), so its restarts keep everything it wrote;
//!   only the storage servers' disks drop unsynced writes. Servers and the view leader may still
//!   be down at once, when a `Restart` of every server overlaps a `RestartViewLeader`.
//! * Disk faults other than a crash: no full disk, no failed sync, no flipped byte (the log
//!   engine's own tests make those).
//! * Wiped replicas of a key at once: losing every copy of a key is outside the fault model, so
//!   wiped restarts are never drawn to overlap (nor were the memory-losing restarts before).

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

use super::checks::{self, Grant, Recorded, Refusal, ViewSample};
use super::trace::NodeEvents;
use super::turmoil_net::TurmoilTransport;
use super::SeededRandom;
use crate::client::{Client, ClientOptions};
use crate::error::Error;
use crate::faults::PlantedBug;
use crate::net::{self, Clock, Env};
use crate::server::{self, ServerOptions};
use crate::storage::{Disk, FsyncMode, LogOptions, SimDisk};
use crate::tools::checker::{Call, Operation, Return};
use crate::types::{LockReply, Value, View};
use crate::viewleader::{self, ViewLeaderOptions};

/// Where the simulated wall clock starts (2030-01-01): versions are proposed from it.
pub const WALL_START_US: u64 = 1_893_456_000_000_000;
/// The view leader's host and address.
pub const VIEWLEADER_HOST: &str = "viewleader";
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

/// What the fault schedule may draw.
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
    /// Cut the view leader off from everyone.
    IsolateViewLeader,
    /// Hold every message of one server for longer than a lease (a long pause).
    LongPause,
    /// Crash one or more servers' machines at once: each process dies, each disk keeps what was
    /// synced (and a torn prefix of what was not), and each server restarts from its disk at
    /// the same address.
    Restart,
    /// Crash the view leader and restart it.
    RestartViewLeader,
    /// Crash a server and bring it back at the same address on a fresh empty disk: a replaced
    /// machine, which comes back under a new id knowing nothing.
    RestartWiped,
}

impl FaultKind {
    pub const ALL: [FaultKind; 11] = [
        FaultKind::Delay,
        FaultKind::ClientCut,
        FaultKind::ShortPause,
        FaultKind::CutLink,
        FaultKind::OneWayCut,
        FaultKind::Isolate,
        FaultKind::IsolateViewLeader,
        FaultKind::LongPause,
        FaultKind::Restart,
        FaultKind::RestartViewLeader,
        FaultKind::RestartWiped,
    ];

    /// The faults the code is meant to survive, which the default campaign draws from: every
    /// kind. (A kind that finds a defect nobody has fixed yet leaves this list until it is.)
    pub const HANDLED: [FaultKind; 11] = FaultKind::ALL;

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
            FaultKind::IsolateViewLeader => {
                (vec![VIEWLEADER_HOST.to_string()], rng.gen_range(500..4_000))
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
            FaultKind::RestartViewLeader => {
                (vec![VIEWLEADER_HOST.to_string()], rng.gen_range(0..500))
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
    let mut hosts = vec![VIEWLEADER_HOST.to_string(), "auditor".to_string()];
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

/// The view leader's data directory for one run, removed when the run ends: it keeps the
/// restart generation across the view leader's simulated restarts, as a disk would.
struct RunDir(std::path::PathBuf);

impl RunDir {
    fn new(seed: u64) -> Self {
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(std::env::temp_dir().join(format!(
            "ringleader-sim-{}-{seed}-{run}",
            std::process::id()
        )))
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run_hosts(options: &SimOptions) -> Outcome {
    let seed = options.seed;
    let run_dir = RunDir::new(seed);
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
    let viewleader_addr = format!("{VIEWLEADER_HOST}:{PORT}");

    // The view leader, restarted with fresh randomness (and empty memory) after a crash.
    let incarnations = Rc::new(Cell::new(0u64));
    {
        let options = options.clone();
        let incarnations = incarnations.clone();
        let data_dir = run_dir.0.clone();
        sim.host(VIEWLEADER_HOST, move || {
            incarnations.set(incarnations.get() + 1);
            let env = env(
                derive(seed, &format!("viewleader-{}", incarnations.get())),
                0,
            );
            let vl_options = ViewLeaderOptions {
                heartbeat_interval_ms: options.heartbeat_interval_ms,
                lease_ms: options.lease_ms,
                data_dir: Some(data_dir.clone()),
                ..Default::default()
            };
            async move {
                let listener = env
                    .bind(VIEWLEADER_HOST, Some(PORT), net::VIEWLEADER_PORTS)
                    .await?;
                viewleader::run(listener, vl_options, env, CancellationToken::new()).await?;
                Ok(())
            }
        });
    }
    let mut machines = Machines::new(seed);
    for i in 0..options.servers {
        let host = server_host(i);
        let options = options.clone();
        let viewleader_addr = viewleader_addr.clone();
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
                viewleader: viewleader_addr.clone(),
                advertise: Some(format!("{host}:{PORT}")),
                heartbeat_interval_ms: options.heartbeat_interval_ms,
                rpc_timeout_ms: 500,
                tx_timeout_ms: options.tx_timeout_ms,
                faults: Default::default(),
                planted_bug: options.planted_bug,
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
    let mut started = vec![false; schedule.len()];
    let mut ended = vec![false; schedule.len()];
    let mut healed = false;
    let hosts = all_hosts(options);
    let mut failure = None;
    loop {
        let now_ms = sim.elapsed().as_millis() as u64;
        for (n, fault) in schedule.iter().enumerate() {
            if !started[n] && now_ms >= fault.at_ms && !healed {
                started[n] = true;
                *faults.entry(fault.kind).or_default() += 1;
                trace
                    .borrow_mut()
                    .push(format!("{now_ms:>8} ms  fault   {fault}"));
                inject(&mut sim, fault, &hosts, &mut machines);
                for line in machines.lines.drain(..) {
                    trace.borrow_mut().push(format!("{now_ms:>8} ms  {line}"));
                }
            }
            if started[n] && !ended[n] && now_ms >= fault.at_ms + fault.for_ms {
                ended[n] = true;
                trace
                    .borrow_mut()
                    .push(format!("{now_ms:>8} ms  heal    {fault}"));
                end(&mut sim, fault, &hosts, &mut machines);
                // Ending one fault repairs or releases links that another fault still active
                // cuts or holds (a pause ending inside an isolation): apply those again, holds
                // first so that a cut link stays cut rather than held.
                let mut active: Vec<&Fault> = schedule
                    .iter()
                    .enumerate()
                    .filter(|(m, f)| started[*m] && !ended[*m] && f.kind.is_link_fault())
                    .map(|(_, f)| f)
                    .collect();
                active.sort_by_key(|f| f.kind.cuts());
                for fault in active {
                    inject(&mut sim, fault, &hosts, &mut machines);
                }
            }
        }
        if !healed && now_ms >= options.workload_ms {
            healed = true;
            for (n, fault) in schedule.iter().enumerate() {
                if started[n] && !ended[n] {
                    ended[n] = true;
                    end(&mut sim, fault, &hosts, &mut machines);
                }
            }
            trace
                .borrow_mut()
                .push(format!("{now_ms:>8} ms  healed  every fault"));
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

    let recorded = recorded.take();
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
    Outcome {
        seed,
        trace_hash: hasher.finish(),
        operations: recorded.history.len(),
        trace,
        faults,
        violations,
        simulated_ms,
        disks,
    }
}

/// The machines under the hosts, as the process faults see them: each storage server's disk,
/// kept across its restarts, and how many process faults hold each host down (they may overlap:
/// a host comes back when the last one ends).
struct Machines {
    disks: BTreeMap<String, Rc<RefCell<SimDisk>>>,
    down: BTreeMap<String, u32>,
    /// Draws how much of each file's unsynced tail a crash keeps.
    torn: StdRng,
    stats: Rc<RefCell<DiskStats>>,
    /// Lines for the run's trace, taken by the run loop.
    lines: Vec<String>,
}

impl Machines {
    fn new(seed: u64) -> Self {
        Self {
            disks: BTreeMap::new(),
            down: BTreeMap::new(),
            torn: StdRng::seed_from_u64(derive(seed, "torn-writes")),
            stats: Rc::default(),
            lines: Vec::new(),
        }
    }

    /// A fresh disk for `host`'s machine; the host's software reads it at every start.
    fn add_disk(&mut self, host: &str) -> Rc<RefCell<SimDisk>> {
        let disk = Rc::new(RefCell::new(simulated_disk()));
        self.disks.insert(host.to_string(), disk.clone());
        disk
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
            }
            let Some(disk) = self.disks.get(host) else {
                continue;
            };
            match fault.kind {
                // A disk that is already down was crashed when its process died.
                FaultKind::Restart if first => {
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
                    let mut stats = self.stats.borrow_mut();
                    stats.crashes += 1;
                    stats.unsynced_bytes_dropped += dropped;
                    stats.torn_bytes_kept += kept;
                    self.lines.push(format!(
                        "disk    {host} crashed: {dropped} unsynced bytes dropped, {kept} kept torn"
                    ));
                }
                FaultKind::RestartWiped => {
                    disk.replace(simulated_disk());
                    self.lines
                        .push(format!("disk    {host} replaced by an empty one"));
                }
                _ => {}
            }
        }
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
    }
}

/// Every host but `host`.
fn others<'a>(hosts: &'a [String], host: &'a str) -> impl Iterator<Item = &'a String> {
    hosts.iter().filter(move |h| *h != host)
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
        FaultKind::ShortPause | FaultKind::LongPause => {
            for other in others(hosts, &fault.hosts[0]) {
                sim.hold(fault.hosts[0].as_str(), other.as_str());
            }
        }
        FaultKind::Isolate | FaultKind::IsolateViewLeader => {
            for other in others(hosts, &fault.hosts[0]) {
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
        FaultKind::ShortPause | FaultKind::LongPause => {
            for other in others(hosts, &fault.hosts[0]) {
                sim.release(fault.hosts[0].as_str(), other.as_str());
            }
        }
        FaultKind::Isolate | FaultKind::IsolateViewLeader => {
            for other in others(hosts, &fault.hosts[0]) {
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

/// A view as seen now.
fn view_sample(view: &View) -> ViewSample {
    ViewSample {
        at_us: now_us(),
        epoch: view.epoch,
        servers: view.servers.iter().map(|s| s.id.clone()).collect(),
        rebalancing: view.rebalancing,
    }
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
            client_options(format!("{VIEWLEADER_HOST}:{PORT}")),
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
                if let Ok(view) = client.query_servers().await {
                    recorded.borrow_mut().views.push(view_sample(&view));
                }
                continue;
            } else {
                let lock = format!("lock{}", rng.gen_range(0..options.locks));
                if let Ok(LockReply::Granted { token }) = client.lock_get(&lock, &me).await {
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
                    let _ = client.lock_release(&lock, &me).await;
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
/// no transaction stays pending, and that the replicas of each key agree, each within
/// [`SimOptions::liveness_ms`]; records the final lists.
async fn auditor(
    options: SimOptions,
    trace: Rc<RefCell<Vec<String>>>,
    recorded: Rc<RefCell<Recorded>>,
) -> turmoil::Result {
    let client = Client::with_env(
        client_options(format!("{VIEWLEADER_HOST}:{PORT}")),
        env(derive(options.seed, "auditor-env"), 0),
    );
    let start_ms = options.workload_ms;
    while now_us() < start_ms * 1_000 {
        if let Ok(view) = client.query_servers().await {
            recorded.borrow_mut().views.push(view_sample(&view));
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

    // The replicas of every key agree, and the final lists for the append checks.
    let cached = client.view(true).await;
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
                match client.get(&replica.addr, &key).await {
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
    note(&trace, format!("done, {} problems", problems.len()));
    let mut recorded = recorded.borrow_mut();
    recorded.final_lists = final_lists;
    recorded.liveness = problems;
    recorded.audited = true;
    Ok(())
}
