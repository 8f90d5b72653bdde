//! The nemesis: which faults a chaos run injects, in what order, and how each is made and healed.
//!
//! It goes round-robin over every kind of fault the run can make, in an order shuffled from the
//! seed for each round, with seeded gaps and hold times, so that a run of a few tens of seconds
//! strikes every kind at least once (a run lasts past its `--duration-s` until its first round
//! is done, within [`ROUND_OVERRUN_MS_MAX`]). One fault (or one pair) at a time: each is healed,
//! and the cluster must settle again (every live server in the view under its current id, not
//! rebalancing) within [`Nemesis::settle_bound_ms`]; a cluster that does not is a liveness
//! finding.
//!
//! The servers are durable: every kill restarts its server from its data dir (see
//! [`super::procs`]), which it comes back with, under its old member id if its lease still holds.
//! So kills strike at any time, and [`FaultKind::KillAllRestart`] kills every server at once
//! (sometimes the view leader too): an acknowledged write must survive it, and the workload's
//! checks (linearizability, every acknowledged append exactly once) go on through it as through
//! any fault (calls in flight at the kill fail or end unknown, which the checker allows either
//! way). The one fault that loses data, [`FaultKind::ServerWipeRestart`] (a replaced machine),
//! is only made on a settled cluster and on one server, so no key ever loses every copy: that
//! would be a loss no protocol can prevent, not a finding.
//!
//! A server restarted at a new address comes back under a new id, keeping its data: either
//! because the view leader expired its old id meanwhile (the restart is denied it), or because
//! its data dir records the address it had (a server at another address never takes its old id,
//! which the view knows at the dead address). [`FaultKind::ServerKillNewAddr`] strikes both ways.
//!
//! Left out: clock skew, disk faults (a full or failing disk, torn writes: the kill -9s only
//! test what the operating system already holds), power loss (unsynced writes lost), and
//! message delay or loss short of a cut link.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::liveness;
use super::procs::Cluster;
use super::Timing;
use crate::cli::output::Output;
use crate::client::Client;
use crate::error::{Error, Result};

/// How long past `--duration-s` a run may go on to finish its first round of faults.
pub const ROUND_OVERRUN_MS_MAX: u64 = 60_000;
/// Shortest and longest pause between two faults.
pub const GAP_MS_MIN: u64 = 100;
pub const GAP_MS_MAX: u64 = 500;
/// Part of every settle bound that does not scale with the lease and the transaction timeout.
pub const SETTLE_MS_BASE: u64 = 10_000;
/// Longest a healing request (recover from a simulated crash) is retried.
pub const HEAL_RETRY_MS: u64 = 5_000;
/// Pause between two tries of a healing request.
pub const HEAL_RETRY_PAUSE_MS: u64 = 100;
/// Longest wait, beyond the lease, for a view change a fault during rebalancing waits for.
pub const VIEW_CHANGE_WAIT_MS: u64 = 5_000;

/// A kind of fault, counted under its name in the summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FaultKind {
    /// `SIGKILL` a server; a hold later (one time in two after the view leader has expired it)
    /// it starts again at a new port from its data dir, and rejoins under a new id with its data.
    ServerKillNewAddr,
    /// `SIGKILL` a server; it starts again at once at the same address from its data dir (under
    /// its old id: its lease still holds).
    ServerKillSameAddr,
    /// `SIGKILL` a server and wipe its data dir: a replaced machine, holding nothing, under a new
    /// id, at the same address at once or at a new port after a hold.
    ServerWipeRestart,
    /// `SIGKILL` every server at once, and one time in two the view leader with them; after a
    /// hold of up to two leases every one starts again at its address from its data dir.
    KillAllRestart,
    /// `SIGSTOP` a server, then `SIGCONT` (sometimes longer than the lease).
    ServerPause,
    /// A server's simulated crash (`Crash`, then `Recover`): it answers nothing, keeps its memory.
    ServerCrash,
    /// `SIGKILL` the view leader; it starts again at once at the same address and `--data-dir`.
    ViewLeaderKillRestart,
    /// `SIGSTOP` the view leader for longer than the lease, then `SIGCONT`.
    ViewLeaderPause,
    /// The view leader's simulated crash and recovery.
    ViewLeaderCrash,
    /// A server and the view leader cut apart (both ways).
    CutServerViewLeader,
    /// Two servers cut apart (both ways); both still reach the view leader and the clients.
    CutServerServer,
    /// One server cannot call another; the other still calls it.
    CutServerServerOneWay,
    /// The clients (this process) cut from one server: a minority of every key's replicas.
    CutClientMinority,
    /// The view leader cut from everyone: every server and the clients.
    IsolateViewLeader,
    /// Two faults at once on different targets (pauses, crashes, cuts).
    TwoAtOnce,
    /// A server killed; as soon as the view changes (its expiry: the cluster rebalancing) a
    /// second fault on another target, and the killed server restarted at its address from its
    /// data dir (rejoining under a new id: another view change) while the second fault holds.
    DuringRebalance,
    /// Two servers cut apart, then a third killed and, once expired, restarted at its address
    /// from its data dir (view changes that may move keys across the cut): the cluster must
    /// settle with the link still cut.
    ViewChangeUnderCut,
    /// A client stops mid-commit (after the first prepare, all prepares or the first commit);
    /// injected by the workload, one write in [`super::workload::COORDINATOR_KILL_ONE_IN`].
    CoordinatorKill,
}

impl FaultKind {
    pub const ALL: [FaultKind; 18] = [
        FaultKind::ServerKillNewAddr,
        FaultKind::ServerKillSameAddr,
        FaultKind::ServerWipeRestart,
        FaultKind::KillAllRestart,
        FaultKind::ServerPause,
        FaultKind::ServerCrash,
        FaultKind::ViewLeaderKillRestart,
        FaultKind::ViewLeaderPause,
        FaultKind::ViewLeaderCrash,
        FaultKind::CutServerViewLeader,
        FaultKind::CutServerServer,
        FaultKind::CutServerServerOneWay,
        FaultKind::CutClientMinority,
        FaultKind::IsolateViewLeader,
        FaultKind::TwoAtOnce,
        FaultKind::DuringRebalance,
        FaultKind::ViewChangeUnderCut,
        FaultKind::CoordinatorKill,
    ];

    /// The name counted in the summary.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ServerKillNewAddr => "server_kill_new_addr",
            FaultKind::ServerKillSameAddr => "server_kill_same_addr",
            FaultKind::ServerWipeRestart => "server_wipe_restart",
            FaultKind::KillAllRestart => "kill_all_restart",
            FaultKind::ServerPause => "server_pause",
            FaultKind::ServerCrash => "server_crash",
            FaultKind::ViewLeaderKillRestart => "viewleader_kill_restart",
            FaultKind::ViewLeaderPause => "viewleader_pause",
            FaultKind::ViewLeaderCrash => "viewleader_crash",
            FaultKind::CutServerViewLeader => "cut_server_viewleader",
            FaultKind::CutServerServer => "cut_server_server",
            FaultKind::CutServerServerOneWay => "cut_server_server_one_way",
            FaultKind::CutClientMinority => "cut_client_minority",
            FaultKind::IsolateViewLeader => "isolate_viewleader",
            FaultKind::TwoAtOnce => "two_at_once",
            FaultKind::DuringRebalance => "during_rebalance",
            FaultKind::ViewChangeUnderCut => "view_change_under_cut",
            FaultKind::CoordinatorKill => "coordinator_kill",
        }
    }

    /// Needs the run's network namespaces.
    pub fn needs_net(self) -> bool {
        matches!(
            self,
            FaultKind::CutServerViewLeader
                | FaultKind::CutServerServer
                | FaultKind::CutServerServerOneWay
                | FaultKind::CutClientMinority
                | FaultKind::IsolateViewLeader
                | FaultKind::ViewChangeUnderCut
        )
    }

    /// Loses a server's data (its memory and its disk): only made on a settled cluster.
    fn loses_data(self) -> bool {
        self == FaultKind::ServerWipeRestart
    }

    /// Made and healed around a hold (what [`FaultKind::TwoAtOnce`] combines).
    fn holdable(self) -> bool {
        matches!(
            self,
            FaultKind::ServerPause
                | FaultKind::ServerCrash
                | FaultKind::ViewLeaderPause
                | FaultKind::ViewLeaderCrash
        ) || (self.needs_net() && self != FaultKind::ViewChangeUnderCut)
    }

    /// Strikes the view leader itself (two of these at once would fight over it).
    fn on_viewleader(self) -> bool {
        matches!(
            self,
            FaultKind::ViewLeaderPause | FaultKind::ViewLeaderCrash | FaultKind::IsolateViewLeader
        )
    }

    /// The kinds a run makes: all of them, less the partitions when it has no namespaces.
    pub fn runnable(net: bool) -> Vec<FaultKind> {
        FaultKind::ALL
            .into_iter()
            .filter(|kind| net || !kind.needs_net())
            .collect()
    }
}

/// A fault in force, undone by [`Nemesis::heal`].
enum Held {
    PausedServer(usize),
    CrashedServer(String),
    PausedViewLeader,
    CrashedViewLeader,
    /// Cut links (the network heals every cut in force at once).
    Cut,
}

/// What the nemesis did and saw.
#[derive(Debug, Default)]
pub struct NemesisReport {
    /// Faults made, by kind name (the nemesis's kinds; the workload adds coordinator kills).
    pub faults: BTreeMap<&'static str, u64>,
    /// Liveness problems seen during the run (a cluster that did not settle after a heal).
    pub findings: Vec<String>,
    /// Kinds skipped for a while because the cluster had not settled.
    pub deferred: u64,
    /// Whether every kind fired in the time allowed.
    pub rounds_completed: u64,
}

pub struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    admin: Arc<Client>,
    rng: StdRng,
    timing: Timing,
    out: Output,
    started: Instant,
    report: NemesisReport,
}

impl<'a> Nemesis<'a> {
    pub fn new(
        cluster: &'a mut Cluster,
        admin: Arc<Client>,
        rng: StdRng,
        timing: Timing,
        out: Output,
    ) -> Self {
        Self {
            cluster,
            admin,
            rng,
            timing,
            out,
            started: Instant::now(),
            report: NemesisReport::default(),
        }
    }

    /// How long the cluster may take to settle once a fault is healed.
    pub fn settle_bound_ms(timing: &Timing) -> u64 {
        SETTLE_MS_BASE + 2 * timing.tx_timeout_ms + 2 * timing.lease_ms
    }

    /// Strikes until `duration` has passed and every kind has fired once (bounded by
    /// [`ROUND_OVERRUN_MS_MAX`]); every fault is healed when it returns.
    pub async fn run(mut self, duration: Duration) -> Result<NemesisReport> {
        let kinds: Vec<FaultKind> = FaultKind::runnable(self.cluster.net.is_some())
            .into_iter()
            .filter(|k| *k != FaultKind::CoordinatorKill)
            .collect();
        for kind in &kinds {
            self.report.faults.insert(kind.name(), 0);
        }
        let deadline = self.started + duration;
        let hard_deadline = deadline + Duration::from_millis(ROUND_OVERRUN_MS_MAX);
        let mut settled = true;
        'rounds: loop {
            let mut round = kinds.clone();
            round.shuffle(&mut self.rng);
            let mut deferrals = 0;
            while let Some(kind) = round.first().copied() {
                let now = Instant::now();
                if now >= hard_deadline || (now >= deadline && self.report.rounds_completed > 0) {
                    break 'rounds;
                }
                let gap = self.rng.gen_range(GAP_MS_MIN..=GAP_MS_MAX);
                tokio::time::sleep(Duration::from_millis(gap)).await;
                if kind.loses_data() && !settled {
                    settled = self
                        .settle(Duration::from_millis(self.timing.lease_ms))
                        .await;
                    if !settled && deferrals < round.len() {
                        // Try the others first; come back to it once the cluster settled.
                        round.rotate_left(1);
                        deferrals += 1;
                        self.report.deferred += 1;
                        continue;
                    }
                    if !settled {
                        self.note(format!("skip {}: the cluster never settled", kind.name()));
                        round.remove(0);
                        continue;
                    }
                }
                round.remove(0);
                deferrals = 0;
                self.inject(kind).await?;
                *self.report.faults.entry(kind.name()).or_default() += 1;
                let bound = Self::settle_bound_ms(&self.timing);
                settled = self.settle(Duration::from_millis(bound)).await;
                if !settled {
                    let finding = format!(
                        "the cluster did not settle within {bound} ms after {} was healed (at {:.1} s)",
                        kind.name(),
                        self.started.elapsed().as_secs_f64()
                    );
                    self.note(format!("FINDING: {finding}"));
                    self.report.findings.push(finding);
                }
            }
            self.report.rounds_completed += 1;
        }
        self.heal_everything().await;
        Ok(self.report)
    }

    fn note(&self, line: String) {
        self.out.progress(format!(
            "  [{:6.1} s] {line}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    async fn settle(&self, bound: Duration) -> bool {
        liveness::wait_settled(&self.admin, &self.cluster.server_addrs(), bound).await
    }

    fn hold_server_ms(&mut self) -> u64 {
        let lease = self.timing.lease_ms;
        self.rng.gen_range(lease / 3..=2 * lease)
    }

    fn hold_viewleader_ms(&mut self) -> u64 {
        self.timing.lease_ms + self.rng.gen_range(200..=1_000)
    }

    async fn inject(&mut self, kind: FaultKind) -> Result<()> {
        match kind {
            FaultKind::ServerKillNewAddr => {
                let victim = self.rng.gen_range(0..self.cluster.servers.len());
                let hold = self.rng.gen_range(100..=self.timing.lease_ms);
                let after_expiry = self.rng.gen_bool(0.5);
                let old = self.cluster.servers[victim].proc.addr.clone();
                let expired = if after_expiry {
                    self.kill_until_expired(victim).await?
                } else {
                    blocking(|| self.cluster.kill_server(victim))?;
                    false
                };
                tokio::time::sleep(Duration::from_millis(hold)).await;
                self.restart(victim, false).await?;
                self.note(format!(
                    "kill -9 {old}; {}{hold} ms later restarted from its data dir at {}",
                    match (after_expiry, expired) {
                        (false, _) => "",
                        (true, true) => "expired, and ",
                        (true, false) => "NOT expired in time; ",
                    },
                    self.cluster.servers[victim].proc.addr
                ));
            }
            FaultKind::ServerKillSameAddr => {
                let victim = self.rng.gen_range(0..self.cluster.servers.len());
                self.kill_same_addr(victim).await?;
            }
            FaultKind::ServerWipeRestart => {
                let victim = self.rng.gen_range(0..self.cluster.servers.len());
                let same_addr = self.rng.gen_bool(0.5);
                let hold = if same_addr {
                    0
                } else {
                    self.rng.gen_range(100..=self.timing.lease_ms)
                };
                let old = self.cluster.servers[victim].proc.addr.clone();
                blocking(|| {
                    self.cluster.kill_server(victim)?;
                    self.cluster.wipe_server_data(victim)
                })?;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                blocking(|| self.cluster.restart_server(victim, same_addr))?;
                self.note(format!(
                    "kill -9 {old} and wipe its data dir (a replaced machine); {hold} ms later a \
                     fresh server at {}",
                    self.cluster.servers[victim].proc.addr
                ));
            }
            FaultKind::KillAllRestart => {
                let with_viewleader = self.rng.gen_bool(0.5);
                let hold = self.rng.gen_range(100..=2 * self.timing.lease_ms);
                let servers = self.cluster.servers.len();
                blocking(|| {
                    for slot in 0..servers {
                        self.cluster.kill_server(slot)?;
                    }
                    if with_viewleader {
                        self.cluster.kill_viewleader();
                    }
                    Ok::<_, Error>(())
                })?;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                if with_viewleader {
                    blocking(|| self.cluster.start_viewleader())?;
                }
                for slot in 0..servers {
                    self.restart(slot, true).await?;
                }
                let mut held = Vec::new();
                for addr in self.cluster.server_addrs() {
                    let keys = match self.admin.status(&addr).await {
                        Ok(status) => status.keys.to_string(),
                        Err(_) => "?".into(),
                    };
                    held.push(format!("{addr}={keys}"));
                }
                self.note(format!(
                    "kill -9 every server{} at once; {hold} ms later all restarted from their \
                     data dirs, holding keys: {}",
                    if with_viewleader {
                        " and the view leader"
                    } else {
                        ""
                    },
                    held.join(" ")
                ));
            }
            FaultKind::ViewLeaderKillRestart => {
                blocking(|| self.cluster.restart_viewleader())?;
                self.note(format!(
                    "kill -9 the view leader; restarted at once at {}",
                    self.cluster.viewleader.addr
                ));
            }
            FaultKind::TwoAtOnce => {
                let mut candidates: Vec<FaultKind> =
                    FaultKind::runnable(self.cluster.net.is_some())
                        .into_iter()
                        .filter(|k| k.holdable())
                        .collect();
                candidates.shuffle(&mut self.rng);
                let first = candidates[0];
                let second = candidates
                    .iter()
                    .copied()
                    .find(|k| *k != first && !(k.on_viewleader() && first.on_viewleader()))
                    .unwrap_or(FaultKind::ServerPause);
                let mut busy = Vec::new();
                let a = self.start(first, &mut busy).await?;
                let b = self.start(second, &mut busy).await?;
                let hold = self.hold_server_ms().max(self.hold_viewleader_ms());
                self.note(format!(
                    "two at once: {} and {}, for {hold} ms",
                    first.name(),
                    second.name()
                ));
                tokio::time::sleep(Duration::from_millis(hold)).await;
                self.heal(a).await;
                self.heal(b).await;
            }
            FaultKind::DuringRebalance => {
                let epoch = self
                    .admin
                    .query_servers()
                    .await
                    .map(|v| v.epoch)
                    .unwrap_or(0);
                let victim = self.rng.gen_range(0..self.cluster.servers.len());
                let old = self.cluster.servers[victim].proc.addr.clone();
                blocking(|| self.cluster.kill_server(victim))?;
                self.note(format!("kill -9 {old}"));
                let changed = self.wait_view_change(epoch).await;
                let mut candidates = vec![FaultKind::ServerPause, FaultKind::ServerCrash];
                if self.cluster.net.is_some() {
                    candidates.extend([
                        FaultKind::CutServerServer,
                        FaultKind::CutServerViewLeader,
                        FaultKind::CutServerServerOneWay,
                    ]);
                }
                let second = candidates[self.rng.gen_range(0..candidates.len())];
                let mut busy = vec![victim];
                let held = self.start(second, &mut busy).await?;
                // At its address: under its old id if that has not expired, else it rejoins.
                self.restart(victim, true).await?;
                let hold = self.hold_server_ms();
                self.note(format!(
                    "during rebalancing ({}): {} for {hold} ms, {old} restarted from its data dir",
                    if changed {
                        "the view changed"
                    } else {
                        "no view change seen yet"
                    },
                    second.name()
                ));
                tokio::time::sleep(Duration::from_millis(hold)).await;
                self.heal(held).await;
            }
            FaultKind::ViewChangeUnderCut => {
                let mut busy = Vec::new();
                self.start_cut(FaultKind::CutServerServer, &mut busy)?;
                let victim = self.pick_server(&mut busy);
                let old = self.cluster.servers[victim].proc.addr.clone();
                let expired = self.kill_until_expired(victim).await?;
                self.restart(victim, true).await?;
                self.note(format!(
                    "kill -9 {old}; {} restarted from its data dir",
                    if expired {
                        "expired, then"
                    } else {
                        "not expired in time;"
                    }
                ));
                // One cut link never stalls the cluster: it settles with the link still cut.
                let bound = Self::settle_bound_ms(&self.timing);
                if !self.settle(Duration::from_millis(bound)).await {
                    let finding = format!(
                        "the cluster did not settle within {bound} ms of a view change while a \
                         server-to-server link was cut (at {:.1} s)",
                        self.started.elapsed().as_secs_f64()
                    );
                    self.note(format!("FINDING: {finding}"));
                    self.report.findings.push(finding);
                }
                if let Some(net) = self.cluster.net.as_mut() {
                    net.heal_all();
                }
                self.note("view change under a cut link: healed".into());
            }
            FaultKind::CoordinatorKill => {}
            holdable => {
                let mut busy = Vec::new();
                let held = self.start(holdable, &mut busy).await?;
                let hold = if holdable.on_viewleader() {
                    self.hold_viewleader_ms()
                } else {
                    self.hold_server_ms()
                };
                tokio::time::sleep(Duration::from_millis(hold)).await;
                self.heal(held).await;
                self.note(format!("{} held {hold} ms, healed", holdable.name()));
            }
        }
        Ok(())
    }

    async fn kill_same_addr(&mut self, victim: usize) -> Result<()> {
        blocking(|| self.cluster.kill_server(victim))?;
        self.restart(victim, true).await?;
        self.note(format!(
            "kill -9 {}; restarted at once at the same address from its data dir",
            self.cluster.servers[victim].proc.addr
        ));
        Ok(())
    }

    /// Kills server `victim` and waits (the lease plus [`VIEW_CHANGE_WAIT_MS`]) until the view no
    /// longer names its address: the view leader expired its id. Whether it did.
    async fn kill_until_expired(&mut self, victim: usize) -> Result<bool> {
        let addr = self.cluster.servers[victim].proc.addr.clone();
        blocking(|| self.cluster.kill_server(victim))?;
        let deadline =
            Instant::now() + Duration::from_millis(self.timing.lease_ms + VIEW_CHANGE_WAIT_MS);
        while Instant::now() < deadline {
            if let Ok(view) = self.admin.query_servers().await {
                if !view.servers.iter().any(|s| s.addr == addr) {
                    return Ok(true);
                }
            }
            tokio::time::sleep(Duration::from_millis(liveness::POLL_MS)).await;
        }
        Ok(false)
    }

    /// Starts server `victim` (killed) again from its data dir. A server that cannot start from
    /// its data dir is a finding (a kill -9 must leave a data dir it recovers from); it is then
    /// started afresh with the data dir wiped, so the run goes on.
    async fn restart(&mut self, victim: usize, same_addr: bool) -> Result<()> {
        let Err(err) = blocking(|| self.cluster.restart_server(victim, same_addr)) else {
            return Ok(());
        };
        let finding = format!(
            "server slot {victim} did not start again from its data dir {} (at {:.1} s): {err}",
            self.cluster.servers[victim].data_dir.display(),
            self.started.elapsed().as_secs_f64()
        );
        self.note(format!(
            "FINDING: {finding}; starting it with its data dir wiped"
        ));
        self.report.findings.push(finding);
        blocking(|| {
            self.cluster.wipe_server_data(victim)?;
            self.cluster.restart_server(victim, same_addr)
        })
    }

    /// Polls the view until its epoch passes `epoch` (the lease plus [`VIEW_CHANGE_WAIT_MS`]).
    async fn wait_view_change(&self, epoch: u64) -> bool {
        let deadline =
            Instant::now() + Duration::from_millis(self.timing.lease_ms + VIEW_CHANGE_WAIT_MS);
        while Instant::now() < deadline {
            if let Ok(view) = self.admin.query_servers().await {
                if view.epoch > epoch {
                    return true;
                }
            }
            tokio::time::sleep(Duration::from_millis(liveness::POLL_MS)).await;
        }
        false
    }

    /// A server slot not in `busy`, now in it.
    fn pick_server(&mut self, busy: &mut Vec<usize>) -> usize {
        let free: Vec<usize> = (0..self.cluster.servers.len())
            .filter(|s| !busy.contains(s))
            .collect();
        let slot = free
            .choose(&mut self.rng)
            .copied()
            .unwrap_or_else(|| self.rng.gen_range(0..self.cluster.servers.len()));
        busy.push(slot);
        slot
    }

    /// Makes a holdable fault on targets not in `busy`.
    async fn start(&mut self, kind: FaultKind, busy: &mut Vec<usize>) -> Result<Held> {
        match kind {
            FaultKind::ServerPause => {
                let slot = self.pick_server(busy);
                self.cluster.servers[slot].proc.signal("STOP");
                self.note(format!("SIGSTOP {}", self.cluster.servers[slot].proc.addr));
                Ok(Held::PausedServer(slot))
            }
            FaultKind::ServerCrash => {
                let slot = self.pick_server(busy);
                let addr = self.cluster.servers[slot].proc.addr.clone();
                if let Err(err) = self.admin.set_crashed(&addr, true).await {
                    self.note(format!("the crash request to {addr} failed: {err}"));
                }
                self.note(format!("simulated crash of {addr}"));
                Ok(Held::CrashedServer(addr))
            }
            FaultKind::ViewLeaderPause => {
                self.cluster.viewleader.signal("STOP");
                self.note("SIGSTOP the view leader".into());
                Ok(Held::PausedViewLeader)
            }
            FaultKind::ViewLeaderCrash => {
                if let Err(err) = self.admin.set_viewleader_crashed(true).await {
                    self.note(format!("the view leader's crash request failed: {err}"));
                }
                self.note("simulated crash of the view leader".into());
                Ok(Held::CrashedViewLeader)
            }
            FaultKind::CutServerViewLeader
            | FaultKind::CutServerServer
            | FaultKind::CutServerServerOneWay
            | FaultKind::CutClientMinority
            | FaultKind::IsolateViewLeader => {
                self.start_cut(kind, busy)?;
                Ok(Held::Cut)
            }
            other => Err(Error::Internal(format!(
                "{} is not a fault made around a hold",
                other.name()
            ))),
        }
    }

    fn start_cut(&mut self, kind: FaultKind, busy: &mut Vec<usize>) -> Result<()> {
        let a = self.pick_server(busy);
        let b = if matches!(
            kind,
            FaultKind::CutServerServer | FaultKind::CutServerServerOneWay
        ) {
            self.pick_server(busy)
        } else {
            a
        };
        let node = |slot: usize| {
            self.cluster.servers[slot]
                .node
                .clone()
                .ok_or_else(|| Error::Internal("a cut needs the run's namespaces".into()))
        };
        let (node_a, node_b) = (node(a)?, node(b)?);
        let viewleader = self
            .cluster
            .viewleader_node
            .clone()
            .ok_or_else(|| Error::Internal("a cut needs the run's namespaces".into()))?;
        let peers: Vec<Ipv4Addr> = self.cluster.server_ips();
        let net = self
            .cluster
            .net
            .as_mut()
            .ok_or_else(|| Error::Internal("a cut needs the run's namespaces".into()))?;
        let client = net.client_ip();
        let (made, what) = match kind {
            FaultKind::CutServerViewLeader => (
                net.cut_both_ways(&node_a, viewleader.ip, Some(&viewleader.ns)),
                format!("cut {} <-/-> view leader", node_a.ip),
            ),
            FaultKind::CutServerServer => (
                net.cut_both_ways(&node_a, node_b.ip, Some(&node_b.ns)),
                format!("cut {} <-/-> {}", node_a.ip, node_b.ip),
            ),
            FaultKind::CutServerServerOneWay => (
                net.cut_one_way(&node_a, node_b.ip),
                format!("cut one way: {} cannot call {}", node_a.ip, node_b.ip),
            ),
            FaultKind::CutClientMinority => (
                net.isolate(&node_a, &[client]),
                format!("cut the clients from {}", node_a.ip),
            ),
            _ => {
                let mut everyone = peers;
                everyone.push(client);
                (
                    net.isolate(&viewleader, &everyone),
                    "cut the view leader from everyone".to_string(),
                )
            }
        };
        made.map_err(Error::Internal)?;
        self.note(what);
        Ok(())
    }

    async fn heal(&mut self, held: Held) {
        match held {
            Held::PausedServer(slot) => {
                if let Some(server) = self.cluster.servers.get(slot) {
                    server.proc.signal("CONT");
                }
            }
            Held::CrashedServer(addr) => {
                let admin = self.admin.clone();
                self.retry_heal(&format!("recover {addr}"), || {
                    let (admin, addr) = (admin.clone(), addr.clone());
                    async move { admin.set_crashed(&addr, false).await.map(|_| ()) }
                })
                .await;
            }
            Held::PausedViewLeader => self.cluster.viewleader.signal("CONT"),
            Held::CrashedViewLeader => {
                let admin = self.admin.clone();
                self.retry_heal("recover the view leader", || {
                    let admin = admin.clone();
                    async move { admin.set_viewleader_crashed(false).await.map(|_| ()) }
                })
                .await;
            }
            Held::Cut => {
                if let Some(net) = self.cluster.net.as_mut() {
                    net.heal_all();
                }
            }
        }
    }

    async fn retry_heal<F, Fut>(&mut self, what: &str, mut attempt: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let deadline = Instant::now() + Duration::from_millis(HEAL_RETRY_MS);
        loop {
            match attempt().await {
                Ok(()) => return,
                Err(err) if Instant::now() >= deadline => {
                    let finding = format!("could not {what} within {HEAL_RETRY_MS} ms: {err}");
                    self.note(format!("FINDING: {finding}"));
                    self.report.findings.push(finding);
                    return;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(HEAL_RETRY_PAUSE_MS)).await,
            }
        }
    }

    /// Every process running, every cut healed, every simulated crash over.
    async fn heal_everything(&mut self) {
        if let Some(net) = self.cluster.net.as_mut() {
            net.heal_all();
        }
        self.cluster.viewleader.signal("CONT");
        let _ = self.admin.set_viewleader_crashed(false).await;
        for server in &self.cluster.servers {
            server.proc.signal("CONT");
            let _ = self.admin.set_crashed(&server.proc.addr, false).await;
        }
    }
}

/// Runs blocking process work (spawning, waiting for a port) without stalling the runtime's
/// other tasks, where the runtime allows it.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}
