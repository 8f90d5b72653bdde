//! The nemesis: which faults a chaos run injects, in what order, and how each is made and healed.
//!
//! It goes round-robin over every kind of fault the run can make, in an order shuffled from the
//! seed for each round, with seeded gaps and hold times, so that every run strikes every kind at
//! least once (a run lasts past its `--duration-s` until its first round is done, within
//! [`ROUND_OVERRUN_MS_MAX`]; a round takes one to two minutes). One fault (or one pair) at a
//! time: each is healed, and the cluster must settle again (every live server in the view under
//! its current id, not rebalancing) within [`Nemesis::settle_bound_ms`], and the view leader's
//! group must converge again within [`group_converge_ms`] (exactly one leader, whom every member
//! follows in its term, and every member's applied index up to the leader's): a cluster that
//! does not is a liveness finding.
//!
//! The servers are durable: every kill restarts its server from its data dir (see
//! [`super::procs`]), which it comes back with, under its old member id if its lease still holds.
//! So kills strike at any time, and [`FaultKind::KillAllRestart`] kills every server at once
//! (sometimes every view-leader member too): an acknowledged write must survive it, and the
//! workload's checks (linearizability, every acknowledged append exactly once, locks) go on
//! through it as through any fault (calls in flight at the kill fail or end unknown, which the
//! checker allows either way). The one fault that loses data, [`FaultKind::ServerWipeRestart`]
//! (a replaced machine), is only made on a settled cluster and on one server, so no key ever
//! loses every copy: that would be a loss no protocol can prevent, not a finding.
//!
//! A server restarted at a new address comes back under a new id, keeping its data: either
//! because the view leader expired its old id meanwhile (the restart is denied it), or because
//! its data dir records the address it had (a server at another address never takes its old id,
//! which the view knows at the dead address). [`FaultKind::ServerKillNewAddr`] strikes both ways.
//!
//! The view leader is a Raft group ([`crate::viewleader::raft`]). Faults aimed at "the leader"
//! ask every member for its status first and strike the one that leads (within
//! [`leader_wait_ms`]; a group that names none is a finding, and a member picked at random is
//! struck instead). Members are killed and started again as themselves, from their data dirs,
//! at their addresses; killing two of three (a majority, [`FaultKind::MajorityKill`]) or all of
//! them leaves the group unable to elect or commit for at most [`MAJORITY_DOWN_MS_MAX`]: while
//! a majority is down a view query must be refused (answered at all, it is a safety finding), and
//! the cluster must settle and the group converge once they are back. Every member status the
//! nemesis reads is also checked for Raft's election safety: two members that each say they
//! lead in the same term are a safety finding.
//!
//! Left out: clock skew, disk faults (a full or failing disk, torn writes: the kill -9s only
//! test what the operating system already holds), power loss (unsynced writes lost), message
//! delay or loss short of a cut link, a follower member cut off (without pre-vote it deposes
//! the leader when healed, which the Raft module documents), changes to the group's membership
//! (adding, removing or replacing a member), and a majority of members down for longer than
//! [`MAJORITY_DOWN_MS_MAX`] (or than the hold of [`FaultKind::KillAllRestart`]).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use super::liveness::{self, failover_ms, Leaders};
use super::procs::Cluster;
use super::{Timing, ADMIN_TIMEOUT_MS};
use crate::cli::output::Output;
use crate::client::{Client, ClientOptions};
use crate::error::{Error, Result};

/// How long past `--duration-s` a run may go on to finish its first round of faults, in ms. A
/// round of every kind takes about a minute with a short lease and transaction timeout, and
/// about a minute and a half with the longest the seed draws (holds and settles scale with
/// them); this leaves a loaded machine room to finish it, so that a short run (`cargo test`'s)
/// strikes every kind.
pub const ROUND_OVERRUN_MS_MAX: u64 = 180_000;
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
/// Failovers in [`leader_wait_ms`]: a follower whose log is shorter than another's waits two
/// longest election timeouts more (one failover again, to let the other win), and then a split
/// vote may cost one more election.
pub const LEADER_WAIT_FAILOVERS: u64 = 3;
/// Part of [`group_converge_ms`] past an election, in ms: a snapshot sent to a member that fell
/// behind a compaction, and its applying it.
pub const GROUP_CATCH_UP_MS: u64 = 5_000;

/// Longest wait for the group to name a leader before a fault aimed at the leader, in ms.
pub fn leader_wait_ms(election_timeout_ms: u64) -> u64 {
    LEADER_WAIT_FAILOVERS * failover_ms(election_timeout_ms)
}

/// Longest the view leader's group may take, once a fault is healed and the cluster settled,
/// to have exactly one leader that every member follows and every member's applied index up to
/// the leader's, in ms: an election ([`leader_wait_ms`]) and a catch-up ([`GROUP_CATCH_UP_MS`]).
pub fn group_converge_ms(election_timeout_ms: u64) -> u64 {
    leader_wait_ms(election_timeout_ms) + GROUP_CATCH_UP_MS
}

/// The shortest hold on a view-leader member is this fraction of an election timeout: well
/// inside it, so the others never notice.
pub const HOLD_ELECTION_TIMEOUT_FRACTION: u64 = 4;
/// Shortest hold of a fault that kills and restarts, in ms: long enough that the kill is seen
/// (connections break, calls fail) before the restart.
pub const HOLD_MS_MIN: u64 = 100;
/// Longest a majority of the members is down at once ([`FaultKind::MajorityKill`],
/// [`FaultKind::MembersKillAllRestart`]), in ms: long enough for the group to be seen refusing,
/// short enough that a run spends little of its time with no view leader at all.
pub const MAJORITY_DOWN_MS_MAX: u64 = 4_000;
/// Shortest time a majority is down in [`FaultKind::MajorityKill`]: long enough for the refusal
/// probe, a view query bounded by the checking client's timeout, to have its answer (with
/// [`PROBE_MARGIN_MS`] for the kills before it and the client's last round trip).
pub const MAJORITY_DOWN_MS_MIN: u64 = ADMIN_TIMEOUT_MS + PROBE_MARGIN_MS;
/// See [`MAJORITY_DOWN_MS_MIN`], in ms.
pub const PROBE_MARGIN_MS: u64 = 500;

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
    /// `SIGKILL` every server at once, and one time in two every view-leader member with them;
    /// after a hold of up to two leases every one starts again at its address from its data dir.
    KillAllRestart,
    /// `SIGSTOP` a server, then `SIGCONT` (sometimes longer than the lease).
    ServerPause,
    /// A server's simulated crash (`Crash`, then `Recover`): it answers nothing, keeps its memory.
    ServerCrash,
    /// `SIGKILL` the leading member; after a hold of up to [`failover_ms`] and an election
    /// timeout it starts again from its data dir: sometimes before the others elected a new
    /// leader (openraft restores a member that led as leader of its old term at once),
    /// sometimes after (it comes back a leader of an old term and must step down).
    LeaderKillRestart,
    /// `SIGKILL` a following member; after a hold of up to two leases (the group goes on
    /// committing, and may compact past it) it starts again from its data dir and catches up.
    FollowerKillRestart,
    /// `SIGSTOP` the leading member, then `SIGCONT`: shorter or longer than [`failover_ms`], so
    /// it comes back either still leading or deposed.
    LeaderPause,
    /// A member's simulated crash (`client --viewleader MEMBER crash`, then `recover`): the
    /// leader one time in two, else a follower. It answers nothing and its Raft stands still.
    MemberCrash,
    /// The leading member cut from the other members and every server (and one time in two from
    /// the clients too, which then keep reaching a leader that cannot commit).
    LeaderIsolate,
    /// `SIGKILL` a majority of the members (the leader among them one time in two): the group
    /// can neither elect nor commit, and must refuse; after at most [`MAJORITY_DOWN_MS_MAX`]
    /// they start again from their data dirs.
    MajorityKill,
    /// `SIGKILL` every member at once (the servers go on); after at most
    /// [`MAJORITY_DOWN_MS_MAX`] every one starts again from its data dir.
    MembersKillAllRestart,
    /// A server and every view-leader member cut apart (both ways).
    CutServerViewLeader,
    /// Two servers cut apart (both ways); both still reach the view leader and the clients.
    CutServerServer,
    /// One server cannot call another; the other still calls it.
    CutServerServerOneWay,
    /// The clients (this process) cut from one server: a minority of every key's replicas.
    CutClientMinority,
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
    pub const ALL: [FaultKind; 21] = [
        FaultKind::ServerKillNewAddr,
        FaultKind::ServerKillSameAddr,
        FaultKind::ServerWipeRestart,
        FaultKind::KillAllRestart,
        FaultKind::ServerPause,
        FaultKind::ServerCrash,
        FaultKind::LeaderKillRestart,
        FaultKind::FollowerKillRestart,
        FaultKind::LeaderPause,
        FaultKind::MemberCrash,
        FaultKind::LeaderIsolate,
        FaultKind::MajorityKill,
        FaultKind::MembersKillAllRestart,
        FaultKind::CutServerViewLeader,
        FaultKind::CutServerServer,
        FaultKind::CutServerServerOneWay,
        FaultKind::CutClientMinority,
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
            FaultKind::LeaderKillRestart => "viewleader_leader_kill_restart",
            FaultKind::FollowerKillRestart => "viewleader_follower_kill_restart",
            FaultKind::LeaderPause => "viewleader_leader_pause",
            FaultKind::MemberCrash => "viewleader_member_crash",
            FaultKind::LeaderIsolate => "viewleader_leader_isolate",
            FaultKind::MajorityKill => "viewleader_majority_kill",
            FaultKind::MembersKillAllRestart => "viewleader_kill_all_restart",
            FaultKind::CutServerViewLeader => "cut_server_viewleader",
            FaultKind::CutServerServer => "cut_server_server",
            FaultKind::CutServerServerOneWay => "cut_server_server_one_way",
            FaultKind::CutClientMinority => "cut_client_minority",
            FaultKind::TwoAtOnce => "two_at_once",
            FaultKind::DuringRebalance => "during_rebalance",
            FaultKind::ViewChangeUnderCut => "view_change_under_cut",
            FaultKind::CoordinatorKill => "coordinator_kill",
        }
    }

    /// The kind named `name` in the summary.
    pub fn from_name(name: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|kind| kind.name() == name)
    }

    /// Needs the run's network namespaces.
    pub fn needs_net(self) -> bool {
        matches!(
            self,
            FaultKind::CutServerViewLeader
                | FaultKind::CutServerServer
                | FaultKind::CutServerServerOneWay
                | FaultKind::CutClientMinority
                | FaultKind::LeaderIsolate
                | FaultKind::ViewChangeUnderCut
        )
    }

    /// Strikes the view leader's Raft group: a member, its leader, or a majority of it.
    pub fn on_group(self) -> bool {
        matches!(
            self,
            FaultKind::LeaderKillRestart
                | FaultKind::FollowerKillRestart
                | FaultKind::LeaderPause
                | FaultKind::MemberCrash
                | FaultKind::LeaderIsolate
                | FaultKind::MajorityKill
                | FaultKind::MembersKillAllRestart
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
                | FaultKind::LeaderPause
                | FaultKind::MemberCrash
        ) || (self.needs_net() && self != FaultKind::ViewChangeUnderCut)
    }

    /// Takes a view-leader member out while it holds: two of these at once could take a
    /// majority down for a whole hold, which only the kinds bounded by
    /// [`MAJORITY_DOWN_MS_MAX`] may.
    fn on_viewleader(self) -> bool {
        matches!(
            self,
            FaultKind::LeaderPause | FaultKind::MemberCrash | FaultKind::LeaderIsolate
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
    /// A view-leader member stopped (`SIGSTOP`), by index.
    PausedMember(usize),
    /// A view-leader member in a simulated crash, by index.
    CrashedMember(usize),
    /// Cut links (the network heals every cut in force at once).
    Cut,
}

/// What the nemesis did and saw.
#[derive(Debug, Default)]
pub struct NemesisReport {
    /// Faults made, by kind name (the nemesis's kinds; the workload adds coordinator kills).
    pub faults: BTreeMap<&'static str, u64>,
    /// Liveness problems seen during the run (a cluster that did not settle after a heal, a
    /// group that did not converge).
    pub findings: Vec<String>,
    /// Safety problems seen during the run: two leaders in one term, a view answered while a
    /// majority of the members was down.
    pub safety_findings: Vec<String>,
    /// Kinds skipped for a while because the cluster had not settled.
    pub deferred: u64,
    /// Whether every kind fired in the time allowed.
    pub rounds_completed: u64,
    /// How the group refused while a majority of it was down: error kind, count.
    pub refusals: BTreeMap<&'static str, u64>,
}

pub struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    admin: Arc<Client>,
    /// One client per view-leader member, naming that member alone: a simulated crash and its
    /// recovery go to the member itself, whoever leads.
    members: Vec<Arc<Client>>,
    /// Every leader seen in a member's status, by term.
    leaders: Leaders,
    /// The leader and term the group last converged on.
    last_led: Option<(u64, u64)>,
    /// The kinds this run makes (all it can, unless told fewer).
    kinds: Vec<FaultKind>,
    rng: StdRng,
    timing: Timing,
    /// The members' shortest election timeout, as the cluster gave it them.
    election_timeout_ms: u64,
    out: Output,
    started: Instant,
    report: NemesisReport,
}

impl<'a> Nemesis<'a> {
    /// A nemesis over every kind the cluster allows, or over `only` of them when given.
    pub fn new(
        cluster: &'a mut Cluster,
        admin: Arc<Client>,
        only: Option<&[FaultKind]>,
        rng: StdRng,
        timing: Timing,
        out: Output,
    ) -> Self {
        let members = cluster
            .viewleader
            .addrs()
            .into_iter()
            .map(|addr| {
                Arc::new(Client::new(ClientOptions {
                    viewleader: addr,
                    timeout_ms: ADMIN_TIMEOUT_MS,
                    wait_ms: 0,
                }))
            })
            .collect();
        let kinds = FaultKind::runnable(cluster.net.is_some())
            .into_iter()
            .filter(|k| *k != FaultKind::CoordinatorKill)
            .filter(|k| only.is_none_or(|only| only.contains(k)))
            .collect();
        let election_timeout_ms = cluster.election_timeout_ms;
        Self {
            cluster,
            admin,
            members,
            leaders: Leaders::default(),
            last_led: None,
            kinds,
            rng,
            timing,
            election_timeout_ms,
            out,
            started: Instant::now(),
            report: NemesisReport::default(),
        }
    }

    /// How long the cluster may take to settle once a fault is healed.
    pub fn settle_bound_ms(timing: &Timing, election_timeout_ms: u64) -> u64 {
        // A failover on top: after a fault on the view leader's group, the view changes only
        // once the group has elected a leader.
        SETTLE_MS_BASE
            + 2 * timing.tx_timeout_ms
            + 2 * timing.lease_ms
            + failover_ms(election_timeout_ms)
    }

    /// Strikes until `duration` has passed and every kind has fired once (bounded by
    /// [`ROUND_OVERRUN_MS_MAX`]); every fault is healed when it returns.
    pub async fn run(mut self, duration: Duration) -> Result<NemesisReport> {
        let kinds = self.kinds.clone();
        for kind in &kinds {
            self.report.faults.insert(kind.name(), 0);
        }
        let deadline = self.started + duration;
        let hard_deadline = deadline + Duration::from_millis(ROUND_OVERRUN_MS_MAX);
        let mut settled = true;
        if kinds.is_empty() {
            // Nothing to strike (every kind asked for needs what this machine lacks): the
            // clients still run for the duration, and a round of nothing would spin.
            tokio::time::sleep_until(deadline.into()).await;
            return Ok(self.report);
        }
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
                let outcome = self.inject(kind).await;
                if outcome.is_err() {
                    // Whatever the fault left behind must not outlive the run.
                    self.heal_everything().await;
                }
                outcome?;
                *self.report.faults.entry(kind.name()).or_default() += 1;
                let bound = Self::settle_bound_ms(&self.timing, self.election_timeout_ms);
                settled = self.settle(Duration::from_millis(bound)).await;
                if !settled {
                    self.finding(format!(
                        "the cluster did not settle within {bound} ms after {} was healed (at {:.1} s)",
                        kind.name(),
                        self.started.elapsed().as_secs_f64()
                    ));
                }
                self.check_group(kind.name()).await;
            }
            self.report.rounds_completed += 1;
        }
        self.heal_everything().await;
        self.report
            .safety_findings
            .append(&mut self.leaders.findings);
        Ok(self.report)
    }

    fn note(&self, line: String) {
        self.out.progress(format!(
            "  [{:6.1} s] {line}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    /// Records a liveness finding, and says so as it happens.
    fn finding(&mut self, finding: String) {
        self.note(format!("FINDING: {finding}"));
        self.report.findings.push(finding);
    }

    async fn settle(&self, bound: Duration) -> bool {
        liveness::wait_settled(&self.admin, &self.cluster.server_addrs(), bound).await
    }

    /// After `after` was healed: the group must converge within [`group_converge_ms`].
    async fn check_group(&mut self, after: &str) {
        let addrs = self.cluster.viewleader.addrs();
        let bound_ms = group_converge_ms(self.election_timeout_ms);
        let converged = liveness::wait_group_converged(
            &self.admin,
            &addrs,
            Duration::from_millis(bound_ms),
            &mut self.leaders,
        )
        .await;
        match converged {
            // Said when it changed: which member leads, and how often elections happen.
            Ok(led) if self.last_led != Some(led) => {
                self.last_led = Some(led);
                self.note(format!(
                    "the group converged: member {} leads in term {}",
                    led.0, led.1
                ));
            }
            Ok(_) => {}
            Err(problem) => self.finding(format!(
                "the view leader's group did not converge within {bound_ms} ms after \
                 {after} was healed (at {:.1} s): {problem}",
                self.started.elapsed().as_secs_f64()
            )),
        }
    }

    /// The index of the member that leads, asking every member until one does (for at most
    /// [`leader_wait_ms`]). A group that names no leader in time is a finding, and a member
    /// picked at random stands in for the leader.
    async fn leader(&mut self) -> usize {
        let addrs = self.cluster.viewleader.addrs();
        let wait_ms = leader_wait_ms(self.election_timeout_ms);
        let deadline = Instant::now() + Duration::from_millis(wait_ms);
        loop {
            let answers = liveness::member_statuses(&self.admin, &addrs).await;
            self.leaders.observe(&answers);
            let leader = liveness::sole_leader(&answers)
                .and_then(|status| self.cluster.viewleader.index_of(&status.addr));
            if let Some(index) = leader {
                return index;
            }
            if Instant::now() >= deadline {
                self.finding(format!(
                    "no view-leader member led within {wait_ms} ms (at {:.1} s): {}",
                    self.started.elapsed().as_secs_f64(),
                    liveness::describe_members(&answers)
                ));
                return self.rng.gen_range(0..addrs.len());
            }
            tokio::time::sleep(Duration::from_millis(liveness::POLL_MS)).await;
        }
    }

    /// A member other than `leader`, picked at random (the leader itself in a group of one).
    fn follower(&mut self, leader: usize) -> usize {
        let others: Vec<usize> = (0..self.cluster.viewleader.members.len())
            .filter(|i| *i != leader)
            .collect();
        others.choose(&mut self.rng).copied().unwrap_or(leader)
    }

    fn member_label(&self, index: usize) -> String {
        self.cluster
            .viewleader
            .members
            .get(index)
            .map(|m| format!("member {} ({})", m.id, m.addr))
            .unwrap_or_else(|| format!("member #{index}"))
    }

    fn hold_server_ms(&mut self) -> u64 {
        let lease = self.timing.lease_ms;
        self.rng.gen_range(lease / 3..=2 * lease)
    }

    /// A hold on a view-leader member: from well inside an election timeout (it comes back
    /// still leading, or never missed) to past [`failover_ms`] (the others elected a new leader)
    /// and past the servers' lease.
    fn hold_viewleader_ms(&mut self) -> u64 {
        let election_timeout = self.election_timeout_ms;
        let longest = failover_ms(election_timeout).max(self.timing.lease_ms) + election_timeout;
        self.rng
            .gen_range(election_timeout / HOLD_ELECTION_TIMEOUT_FRACTION..=longest)
    }

    /// Kills the members at `indices` at once.
    fn kill_members(&mut self, indices: &[usize]) -> Result<()> {
        blocking(|| {
            for index in indices {
                self.cluster.kill_member(*index)?;
            }
            Ok(())
        })
    }

    /// Starts the members at `indices` again from their data dirs. A member that cannot start
    /// from its data dir is a finding (a kill -9 must leave a Raft log it recovers from); the
    /// run stops then, since a member is never started afresh as someone else.
    fn start_members(&mut self, indices: &[usize]) -> Result<()> {
        for index in indices {
            if let Err(err) = blocking(|| self.cluster.start_member(*index)) {
                let finding = format!(
                    "{} did not start again from its data dir (at {:.1} s): {err}",
                    self.member_label(*index),
                    self.started.elapsed().as_secs_f64()
                );
                self.finding(finding.clone());
                return Err(Error::Internal(finding));
            }
        }
        Ok(())
    }

    /// While a majority of the members is down, a view query must be refused: one answered is
    /// a safety finding (a read that no majority confirmed). The kind of refusal is counted. The
    /// query is given at most `within` (the rest of the outage, so that the probe never keeps
    /// the majority down longer than its hold); no answer by then counts as `no_answer`.
    async fn probe_refusal(&mut self, what: &str, within: Duration) {
        match tokio::time::timeout(within, self.admin.query_servers()).await {
            Ok(Ok(view)) => {
                let finding = format!(
                    "a view query was answered (epoch {}) while {what} (at {:.1} s)",
                    view.epoch,
                    self.started.elapsed().as_secs_f64()
                );
                self.note(format!("FINDING: {finding}"));
                self.report.safety_findings.push(finding);
            }
            Ok(Err(err)) => {
                self.note(format!("the view leader refused while {what}: {err}"));
                *self.report.refusals.entry(err.kind()).or_default() += 1;
            }
            Err(_) => {
                self.note(format!(
                    "the view leader gave no answer within {} ms while {what}",
                    within.as_millis()
                ));
                *self.report.refusals.entry("no_answer").or_default() += 1;
            }
        }
    }

    async fn inject(&mut self, kind: FaultKind) -> Result<()> {
        match kind {
            FaultKind::ServerKillNewAddr => {
                let victim = self.rng.gen_range(0..self.cluster.servers.len());
                let hold = self.rng.gen_range(HOLD_MS_MIN..=self.timing.lease_ms);
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
                    self.rng.gen_range(HOLD_MS_MIN..=self.timing.lease_ms)
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
                let hold = self.rng.gen_range(HOLD_MS_MIN..=2 * self.timing.lease_ms);
                let servers = self.cluster.servers.len();
                let members: Vec<usize> = if with_viewleader {
                    (0..self.cluster.viewleader.members.len()).collect()
                } else {
                    Vec::new()
                };
                blocking(|| {
                    for slot in 0..servers {
                        self.cluster.kill_server(slot)?;
                    }
                    Ok::<_, Error>(())
                })?;
                self.kill_members(&members)?;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                self.start_members(&members)?;
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
                        " and every view-leader member"
                    } else {
                        ""
                    },
                    held.join(" ")
                ));
            }
            FaultKind::LeaderKillRestart => {
                let leader = self.leader().await;
                let hold = self.rng.gen_range(
                    0..=failover_ms(self.election_timeout_ms) + self.election_timeout_ms,
                );
                self.kill_members(&[leader])?;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                self.start_members(&[leader])?;
                self.note(format!(
                    "kill -9 the leader, {}; {hold} ms later restarted from its data dir",
                    self.member_label(leader)
                ));
            }
            FaultKind::FollowerKillRestart => {
                let leader = self.leader().await;
                let victim = self.follower(leader);
                let hold = self.rng.gen_range(HOLD_MS_MIN..=2 * self.timing.lease_ms);
                self.kill_members(&[victim])?;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                self.start_members(&[victim])?;
                self.note(format!(
                    "kill -9 a follower, {}; {hold} ms later restarted from its data dir",
                    self.member_label(victim)
                ));
            }
            FaultKind::MajorityKill => {
                let leader = self.leader().await;
                let count = self.cluster.viewleader.majority();
                let mut order: Vec<usize> = (0..self.cluster.viewleader.members.len()).collect();
                order.shuffle(&mut self.rng);
                if self.rng.gen_bool(0.5) {
                    // The leader among them: the survivors must elect and cannot.
                    order.retain(|i| *i != leader);
                    order.insert(0, leader);
                } else if order.len() > count {
                    // The leader spared: it stays leader but cannot commit or confirm a read.
                    order.retain(|i| *i != leader);
                }
                let victims: Vec<usize> = order.into_iter().take(count).collect();
                let hold = self
                    .rng
                    .gen_range(MAJORITY_DOWN_MS_MIN..=MAJORITY_DOWN_MS_MAX);
                let labels: Vec<String> = victims.iter().map(|i| self.member_label(*i)).collect();
                let down = Instant::now();
                self.kill_members(&victims)?;
                self.note(format!(
                    "kill -9 a majority: {} (the leader was {})",
                    labels.join(", "),
                    self.member_label(leader)
                ));
                let hold = Duration::from_millis(hold);
                self.probe_refusal(
                    "a majority of the members was down",
                    hold.saturating_sub(down.elapsed()),
                )
                .await;
                let left = hold.saturating_sub(down.elapsed());
                tokio::time::sleep(left).await;
                self.start_members(&victims)?;
                self.note(format!(
                    "the majority restarted from their data dirs after {} ms",
                    down.elapsed().as_millis()
                ));
            }
            FaultKind::MembersKillAllRestart => {
                let hold = self.rng.gen_range(HOLD_MS_MIN..=MAJORITY_DOWN_MS_MAX);
                let members: Vec<usize> = (0..self.cluster.viewleader.members.len()).collect();
                self.kill_members(&members)?;
                tokio::time::sleep(Duration::from_millis(hold)).await;
                self.start_members(&members)?;
                self.note(format!(
                    "kill -9 every view-leader member at once; {hold} ms later all restarted \
                     from their data dirs"
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
                self.start_cut(FaultKind::CutServerServer, &mut busy)
                    .await?;
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
                let bound = Self::settle_bound_ms(&self.timing, self.election_timeout_ms);
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
            FaultKind::LeaderPause => {
                let leader = self.leader().await;
                self.cluster.signal_member(leader, "STOP");
                self.note(format!("SIGSTOP the leader, {}", self.member_label(leader)));
                Ok(Held::PausedMember(leader))
            }
            FaultKind::MemberCrash => {
                let leader = self.leader().await;
                let victim = if self.rng.gen_bool(0.5) {
                    leader
                } else {
                    self.follower(leader)
                };
                let label = self.member_label(victim);
                match self.members.get(victim) {
                    Some(member) => {
                        if let Err(err) = member.set_viewleader_crashed(true).await {
                            self.note(format!("the crash request to {label} failed: {err}"));
                        }
                    }
                    None => self.note(format!("no client for {label}")),
                }
                self.note(format!(
                    "simulated crash of {label}{}",
                    if victim == leader {
                        ", the leader"
                    } else {
                        ", a follower"
                    }
                ));
                Ok(Held::CrashedMember(victim))
            }
            FaultKind::CutServerViewLeader
            | FaultKind::CutServerServer
            | FaultKind::CutServerServerOneWay
            | FaultKind::CutClientMinority
            | FaultKind::LeaderIsolate => {
                self.start_cut(kind, busy).await?;
                Ok(Held::Cut)
            }
            other => Err(Error::Internal(format!(
                "{} is not a fault made around a hold",
                other.name()
            ))),
        }
    }

    async fn start_cut(&mut self, kind: FaultKind, busy: &mut Vec<usize>) -> Result<()> {
        let no_net = || Error::Internal("a cut needs the run's namespaces".into());
        // The leader is looked up before any server is picked: the look-up may take a while,
        // and it must not see the cut it is about to make.
        let leader = match kind {
            FaultKind::LeaderIsolate => Some(self.leader().await),
            _ => None,
        };
        let cut_clients_too = self.rng.gen_bool(0.5);
        let a = self.pick_server(busy);
        let b = if matches!(
            kind,
            FaultKind::CutServerServer | FaultKind::CutServerServerOneWay
        ) {
            self.pick_server(busy)
        } else {
            a
        };
        let node = |slot: usize| self.cluster.servers[slot].node.clone().ok_or_else(no_net);
        let (node_a, node_b) = (node(a)?, node(b)?);
        let members: Vec<_> = self
            .cluster
            .viewleader
            .members
            .iter()
            .map(|m| m.node.clone().ok_or_else(no_net))
            .collect::<Result<_>>()?;
        let leader_label = leader.map(|l| self.member_label(l)).unwrap_or_default();
        let servers: Vec<Ipv4Addr> = self.cluster.server_ips();
        let member_ips: Vec<Ipv4Addr> = self.cluster.member_ips();
        let net = self.cluster.net.as_mut().ok_or_else(no_net)?;
        let client = net.client_ip();
        let (made, what) = match kind {
            FaultKind::CutServerViewLeader => {
                let mut made = Ok(());
                for member in &members {
                    made =
                        made.and_then(|()| net.cut_both_ways(&node_a, member.ip, Some(&member.ns)));
                }
                (
                    made,
                    format!("cut {} <-/-> every view-leader member", node_a.ip),
                )
            }
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
                let leader_node = leader
                    .and_then(|l| members.get(l).cloned())
                    .ok_or_else(no_net)?;
                let mut everyone: Vec<Ipv4Addr> = member_ips
                    .into_iter()
                    .filter(|ip| *ip != leader_node.ip)
                    .chain(servers)
                    .collect();
                if cut_clients_too {
                    everyone.push(client);
                }
                (
                    net.isolate(&leader_node, &everyone),
                    format!(
                        "cut the leader, {leader_label}, from the other members and every \
                         server{}",
                        if cut_clients_too {
                            " and the clients"
                        } else {
                            " (the clients still reach it)"
                        }
                    ),
                )
            }
        };
        if let Err(err) = made {
            // A cut made in part is undone whole.
            net.heal_all();
            return Err(Error::Internal(err));
        }
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
            Held::PausedMember(index) => self.cluster.signal_member(index, "CONT"),
            Held::CrashedMember(index) => {
                let label = self.member_label(index);
                let Some(member) = self.members.get(index).cloned() else {
                    return;
                };
                self.retry_heal(&format!("recover {label}"), || {
                    let member = member.clone();
                    async move { member.set_viewleader_crashed(false).await.map(|_| ()) }
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
        for index in 0..self.cluster.viewleader.members.len() {
            self.cluster.signal_member(index, "CONT");
            if self.cluster.viewleader.members[index].is_down() {
                let _ = blocking(|| self.cluster.start_member(index));
            }
        }
        for member in &self.members {
            let _ = member.set_viewleader_crashed(false).await;
        }
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
