//! The view leader's network shell: one member of the Raft group. It answers openraft's
//! messages from the other members; on the leader, it turns requests into [`Command`]s,
//! proposes them through the Raft log ([`super::raft`]) and answers with what applying them
//! returned; it runs the leader's sweep (expiries, lapsed lock places, settling once time has
//! passed) and publishes every new view to the long polls (`WatchView`) that servers keep open.
//! A member that is not the leader answers `NotLeader`, naming the leader it knows. `crash` and
//! `recover` are answered only with `--fault-injection` ([`crate::faults`]). Its HTTP
//! pages (`/metrics`, `/admin/status`) are served by `crate::http` when whoever starts it asks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::liveness::Liveness;
use super::raft::log_store::LogStore;
use super::raft::machine::{Intake, Machine};
use super::raft::network::{Network, CONNECT_TIMEOUT_MS};
use super::raft::{decode, encode, MemberId, Proposal, Raft};
use super::state::{Command, Outcome, State, StateConfig};
use super::ViewLeaderOptions;
use crate::error::{Error, Result};
use crate::faults::{check_injection, Faults};
use crate::metrics::Metrics;
use crate::net::{Env, Listener};
use crate::rpc::client::Pool;
use crate::rpc::message::{RaftMessage, ServiceKind, ViewLeaderReply, ViewLeaderRequest};
use crate::rpc::server::{serve as serve_rpc, Answer, Handler};
use crate::storage::disk::{Disk, RealDisk};
use crate::types::{MemberStatus, View};

/// The longest a `WatchView` long poll is held open before it is answered with the current view.
pub const WATCH_WAIT_MS_MAX: u64 = 30_000;

/// The longest the leader waits for a majority to take a proposal or confirm a read before it
/// answers that the quorum is lost: below the callers' default timeout (2 s), so that they hear
/// why rather than a timeout.
pub const QUORUM_WAIT_MS: u64 = 1_500;

/// Times a leader asks a majority to confirm it leads per lease (the longest it answers as
/// leader without a confirmation: [`super::raft::RaftOptions::lease_ms`]).
pub const CONFIRMS_PER_LEASE: u64 = 4;

/// `confirmed_ms` of a member no majority has confirmed since it started. A restarted member
/// that openraft makes leader again from its own committed vote has heard from nobody: were its
/// start taken for a confirmation, it would answer heartbeats from its old state for a whole
/// lease while the others may have moved on (seen in the simulation: a member back after a
/// majority loss answering as the leader of term 1 while the survivor was at term 4).
const NEVER_CONFIRMED: u64 = u64::MAX;

/// The running member.
pub struct ViewLeader {
    raft: Raft,
    id: MemberId,
    addr: String,
    machine: Machine,
    /// Checks a snapshot sent by a leader before openraft installs it.
    intake: Intake,
    log: LogStore,
    view_rx: watch::Receiver<View>,
    env: Env,
    started: Instant,
    shutdown: CancellationToken,
    /// A simulated crash answers nothing but recover and status, and stops this member's Raft.
    faults: Arc<Faults>,
    pub metrics: Metrics,
    options: ViewLeaderOptions,
    /// While this member leads: the term it leads in and whom it heard from.
    leading: Mutex<Option<(u64, Liveness)>>,
    /// When (uptime ms) a majority last confirmed this member leads, or [`NEVER_CONFIRMED`]. A
    /// leader cut off from the others does not know it was deposed; past a lease without
    /// confirmation it stops answering as leader, so servers and clients go to the members that
    /// know better.
    confirmed_ms: AtomicU64,
}

impl ViewLeader {
    /// Whether the member is in a simulated crash.
    pub fn is_crashed(&self) -> bool {
        self.faults.is_crashed()
    }

    /// Time since the member started.
    pub fn uptime(&self) -> Duration {
        self.env.now().duration_since(self.started)
    }

    fn uptime_ms(&self) -> u64 {
        self.uptime().as_millis() as u64
    }

    /// The leader's clock for the commands it logs: the wall clock, which another member that
    /// becomes leader shares (the state never lets it go backwards).
    fn stamp_ms(&self) -> u64 {
        self.env.wall_us() / 1_000
    }

    /// The view this member applied (the leader's is current; a follower's may lag).
    pub fn view(&self) -> View {
        self.view_rx.borrow().clone()
    }

    /// This member's place in the group.
    pub fn status(&self) -> MemberStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let addr_of = |id: u64| membership.get_node(&id).map(|n| n.addr.clone());
        let voters: Vec<u64> = membership.voter_ids().collect();
        let role = match metrics.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "stopped",
        };
        let (last_log_index, purged) = self.log.indices();
        let (applied, snapshot) = self.machine.indices();
        MemberStatus {
            id: self.id,
            addr: self.addr.clone(),
            role: role.into(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            leader_addr: metrics.current_leader.and_then(addr_of),
            last_log_index: metrics.last_log_index.or(last_log_index),
            // Filled in by `full_status`, which may ask Raft's core; a follower's applied index
            // is its committed one as far as it knows.
            committed: None,
            applied,
            snapshot: snapshot.or(metrics.snapshot.map(|s| s.index)),
            purged: purged.or(metrics.purged.map(|p| p.index)),
            voters: voters
                .iter()
                .map(|id| (*id, addr_of(*id).unwrap_or_default()))
                .collect(),
            learners: membership
                .learner_ids()
                .map(|id| (id, addr_of(id).unwrap_or_default()))
                .collect(),
            epoch: self.view().epoch,
            crashed: self.is_crashed(),
        }
    }

    /// [`ViewLeader::status`] with the commit index, from Raft's core.
    pub async fn full_status(&self) -> MemberStatus {
        let mut status = self.status();
        if let Ok(committed) = self
            .raft
            .with_raft_state(|st| st.committed.map(|c| c.index))
            .await
        {
            status.committed = committed;
        }
        status
    }

    /// Why this member's group cannot be reached through it (`GET /ready`), or `None`: it leads
    /// and a majority confirmed it lately, or it follows a leader it knows (and sends callers
    /// there). A simulated crash is for the caller to check ([`ViewLeader::is_crashed`]).
    pub fn unready_reason(&self) -> Option<String> {
        let status = self.status();
        let refusal = match status.leader {
            Some(id) if id == self.id => self.check_leader().err()?,
            Some(_) => return None,
            None => self.not_leader(&status),
        };
        Some(match refusal {
            Error::NotLeader { detail, .. } => detail,
            other => other.to_string(),
        })
    }

    /// `Ok` if this member leads and a majority confirmed it lately; otherwise the error that
    /// sends the caller to the leader, or to the other members.
    fn check_leader(&self) -> Result<()> {
        let status = self.status();
        if status.role != "leader" || status.leader != Some(self.id) {
            return Err(self.not_leader(&status));
        }
        let confirmed_ms = self.confirmed_ms.load(Ordering::Acquire);
        if confirmed_ms == NEVER_CONFIRMED {
            return Err(Error::NotLeader {
                leader: None,
                detail: self.quorum_lost("has not been confirmed by a majority since it started"),
            });
        }
        let unconfirmed_ms = self.uptime_ms().saturating_sub(confirmed_ms);
        if unconfirmed_ms > self.options.raft.lease_ms() {
            // Not `Unreachable`: the caller should try the other members, and keep trying while
            // a majority may come back, as it does for a member that knows no leader.
            return Err(Error::NotLeader {
                leader: None,
                detail: self.quorum_lost(&format!(
                    "has not heard from a majority for {unconfirmed_ms} ms"
                )),
            });
        }
        Ok(())
    }

    /// Asks a majority whether this member still leads, and notes when they said so.
    async fn confirm(&self) {
        let asked_ms = self.uptime_ms();
        let confirmed = tokio::time::timeout(
            Duration::from_millis(self.options.raft.lease_ms()),
            self.raft.ensure_linearizable(),
        )
        .await;
        if let Ok(Ok(_)) = confirmed {
            self.note_confirmed(asked_ms);
        }
    }

    /// Notes that a majority confirmed this member leads as of `at_ms` (uptime); a confirmation
    /// never moves the time back.
    fn note_confirmed(&self, at_ms: u64) {
        let _ = self
            .confirmed_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |was| {
                (was == NEVER_CONFIRMED || at_ms > was).then_some(at_ms)
            });
    }

    fn not_leader(&self, status: &MemberStatus) -> Error {
        let detail = match (&status.leader_addr, status.leader) {
            (Some(addr), Some(id)) if id != self.id => {
                format!(
                    "member {} follows member {id} at {addr} (term {})",
                    self.id, status.term
                )
            }
            _ => format!(
                "member {} ({}, term {}) knows no leader: an election is under way, or too few of \
                 the voters {} are reachable to elect one (a majority of {} is needed)",
                self.id,
                status.role,
                status.term,
                ids(&status.voters),
                status.voters.len() / 2 + 1
            ),
        };
        Error::NotLeader {
            leader: status
                .leader_addr
                .clone()
                .filter(|_| status.leader != Some(self.id)),
            detail,
        }
    }

    /// What a leader that cannot reach a majority says: `what` it could not do, the voters,
    /// and which of them lag behind its log.
    fn quorum_lost(&self, what: &str) -> String {
        let metrics = self.raft.metrics().borrow().clone();
        let status = self.status();
        let lagging: Vec<String> = metrics
            .replication
            .as_ref()
            .map(|replication| {
                replication
                    .iter()
                    .filter(|(id, matched)| {
                        **id != self.id && matched.map(|m| m.index) < metrics.last_log_index
                    })
                    .map(|(id, _)| id.to_string())
                    .collect()
            })
            .unwrap_or_default();
        format!(
            "the view leader has lost its quorum: member {} {what}; it needs {} of the voters {}{}",
            self.id,
            status.voters.len() / 2 + 1,
            ids(&status.voters),
            if lagging.is_empty() {
                String::new()
            } else {
                format!(", and members [{}] lag behind its log", lagging.join(", "))
            }
        )
    }

    /// Logs `command` and answers with what applying it returned.
    async fn propose(&self, command: Command) -> Result<Outcome> {
        let proposed_ms = self.uptime_ms();
        let proposal = Proposal {
            command,
            at_ms: self.stamp_ms(),
        };
        let written = tokio::time::timeout(
            Duration::from_millis(QUORUM_WAIT_MS),
            self.raft.client_write(proposal),
        )
        .await;
        match written {
            // The entry may still commit if a majority comes back while this member leads: the
            // caller must not take this as a no.
            Err(_) => Err(Error::Uncertain(format!(
                "{}; the change takes effect if a majority returns in time, or never",
                self.quorum_lost(&format!(
                    "could not get a majority to take a change within {QUORUM_WAIT_MS} ms"
                ))
            ))),
            Ok(Ok(response)) => {
                // Committed: a majority took it, so this member led when it was proposed.
                self.note_confirmed(proposed_ms);
                response.data.0.unwrap_or_else(|| {
                    Err(Error::Internal(
                        "a proposal applied without an outcome".into(),
                    ))
                })
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => {
                Err(self.not_leader(&self.status()))
            }
            Ok(Err(err)) => Err(Error::Internal(format!(
                "the Raft log refused a change: {err}"
            ))),
        }
    }

    /// Confirms this member still leads (read index), so that what it reads next is current.
    async fn linearizable(&self) -> Result<()> {
        let confirmed = tokio::time::timeout(
            Duration::from_millis(QUORUM_WAIT_MS),
            self.raft.ensure_linearizable(),
        )
        .await;
        match confirmed {
            Err(_) | Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(Error::NotLeader {
                    leader: None,
                    detail: self.quorum_lost(&format!(
                        "could not get a majority to confirm it leads within {QUORUM_WAIT_MS} ms"
                    )),
                })
            }
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                Err(self.not_leader(&self.status()))
            }
            Ok(Err(err)) => Err(Error::Internal(format!("the Raft group failed: {err}"))),
        }
    }

    /// A long poll: the view once it moves past what the caller knows, or after `wait_ms`. If
    /// this member stops leading meanwhile, the poll ends with `NotLeader`, so that the caller
    /// polls the new leader rather than waiting out a view that no longer changes here.
    async fn watch(&self, epoch_known: u64, rebalancing_known: bool, wait_ms: u64) -> Result<View> {
        let mut rx = self.view_rx.clone();
        let mut metrics = self.raft.metrics();
        let wait = Duration::from_millis(wait_ms.min(WATCH_WAIT_MS_MAX));
        let changed = rx.wait_for(|view| {
            view.epoch > epoch_known
                || (view.epoch == epoch_known && view.rebalancing != rebalancing_known)
        });
        let deposed = metrics.wait_for(|m| m.state != ServerState::Leader);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = self.shutdown.cancelled() => {}
            _ = changed => {}
            _ = deposed => return Err(self.not_leader(&self.status())),
        }
        Ok(self.view())
    }

    /// The leader's periodic duty: on taking over, a full lease for everyone (and the timing
    /// rules, if they differ); then expiries and lapsed lock places, logged when due.
    async fn sweep(&self) -> Result<()> {
        let metrics = self.raft.metrics().borrow().clone();
        // A leader no majority has confirmed lately may have been deposed, and nobody could
        // reach it as leader meanwhile: it logs nothing (an expiry logged now could commit when
        // a majority returns, for servers whose only fault was our isolation), and once
        // confirmed again it starts over as a new leader does, with a full lease for everyone.
        let leads = metrics.state == ServerState::Leader && self.check_leader().is_ok();
        if !leads || self.is_crashed() {
            if let Ok(mut leading) = self.leading.lock() {
                *leading = None;
            }
            return Ok(());
        }
        let config = StateConfig {
            lease_ms: self.options.lease_ms,
            lock_lease_ms: self.options.lock_lease_ms,
        };
        let now_ms = self.uptime_ms();
        let (took_over, sweep) = {
            let mut leading = self
                .leading
                .lock()
                .map_err(|_| Error::Internal("liveness poisoned".into()))?;
            let took_over = leading
                .as_ref()
                .is_none_or(|(term, _)| *term != metrics.current_term);
            if took_over {
                *leading = Some((
                    metrics.current_term,
                    Liveness::new(self.options.lease_ms, self.options.stall_ms()),
                ));
            }
            let members = self.machine.read(State::member_ids)?;
            let sweep = match leading.as_mut() {
                Some((_, liveness)) => liveness.sweep(&members, now_ms),
                None => return Ok(()),
            };
            (took_over, sweep)
        };
        if took_over {
            info!(
                member = self.id,
                term = metrics.current_term,
                "leading the view leader"
            );
            if self.machine.read(|s| *s.config() != config)? {
                self.propose(Command::Configure(config)).await?;
            }
        }
        if took_over || sweep.stalled {
            if sweep.stalled {
                warn!("the view leader stalled: every lease starts over");
            }
            self.propose(Command::Refresh).await?;
        }
        let due = self
            .machine
            .read(|s| s.sweep_due(self.stamp_ms(), &sweep.gone))?;
        if due {
            self.propose(Command::Expire {
                servers: sweep.gone,
            })
            .await?;
        }
        Ok(())
    }

    fn heard(&self, server_id: &str) {
        let now_ms = self.uptime_ms();
        if let Ok(mut leading) = self.leading.lock() {
            if let Some((_, liveness)) = leading.as_mut() {
                liveness.heard(&server_id.to_string(), now_ms);
            }
        }
    }

    async fn raft_message(&self, message: RaftMessage) -> Result<Vec<u8>> {
        match message {
            RaftMessage::Vote(bytes) => encode(&self.raft.vote(decode(&bytes)?).await),
            RaftMessage::Append(bytes) => encode(&self.raft.append_entries(decode(&bytes)?).await),
            RaftMessage::Snapshot(bytes) => {
                encode(&self.intake.install(&self.raft, decode(&bytes)?).await?)
            }
        }
    }

    async fn add_member(&self, id: MemberId, addr: String) -> Result<MemberStatus> {
        self.check_leader()?;
        super::raft::parse_peers(&format!("{id}={addr}"))?;
        let node = BasicNode { addr: addr.clone() };
        self.raft
            .add_learner(id, node, true)
            .await
            .map_err(|err| self.membership_error(err))?;
        info!(id, %addr, "member caught up; making it a voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds([id].into()), false)
            .await
            .map_err(|err| self.membership_error(err))?;
        Ok(self.full_status().await)
    }

    async fn remove_member(&self, id: MemberId) -> Result<MemberStatus> {
        self.check_leader()?;
        let status = self.status();
        if !status.voters.iter().any(|(voter, _)| *voter == id)
            && !status.learners.iter().any(|(learner, _)| *learner == id)
        {
            return Err(crate::errinput!(
                "member {id} is not in the group (voters {})",
                ids(&status.voters)
            ));
        }
        if status.voters.len() == 1 && status.voters[0].0 == id {
            return Err(crate::errinput!(
                "member {id} is the last voter; it cannot be removed"
            ));
        }
        self.raft
            .change_membership(ChangeMembers::RemoveVoters([id].into()), false)
            .await
            .map_err(|err| self.membership_error(err))?;
        Ok(self.full_status().await)
    }

    fn membership_error(
        &self,
        err: RaftError<MemberId, ClientWriteError<MemberId, BasicNode>>,
    ) -> Error {
        match err {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                self.not_leader(&self.status())
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(err)) => {
                Error::Refused(format!("membership change refused: {err}"))
            }
            err => Error::Internal(format!("membership change failed: {err}")),
        }
    }

    fn set_crashed(&self, crashed: bool) {
        if crashed {
            self.faults.crash();
        } else {
            // The sweep stood still meanwhile; its next run sees the gap as our own stall and
            // gives every server a full lease.
            self.faults.recover();
        }
        self.raft.runtime_config().tick(!crashed);
        self.raft.runtime_config().heartbeat(!crashed);
        self.raft.runtime_config().elect(!crashed);
    }
}

fn ids(members: &[(u64, String)]) -> String {
    let ids: Vec<String> = members.iter().map(|(id, _)| id.to_string()).collect();
    format!("[{}]", ids.join(", "))
}

impl Handler for ViewLeader {
    type Request = ViewLeaderRequest;
    type Reply = ViewLeaderReply;
    const SERVICE: ServiceKind = ServiceKind::ViewLeader;

    async fn handle(self: Arc<Self>, request: ViewLeaderRequest) -> Answer<ViewLeaderReply> {
        let ends_crash = matches!(
            request,
            ViewLeaderRequest::Crash | ViewLeaderRequest::Recover | ViewLeaderRequest::Status
        );
        let op = request.name();
        let work = self
            .metrics
            .observed(op, &*self.env.clock, self.clone().dispatch(request));
        self.faults.handle(ends_crash, work).await
    }

    fn members_only(request: &ViewLeaderRequest) -> bool {
        request.members_only()
    }

    fn name(request: &ViewLeaderRequest) -> &'static str {
        request.name()
    }
}

impl ViewLeader {
    async fn dispatch(self: Arc<Self>, request: ViewLeaderRequest) -> Result<ViewLeaderReply> {
        match request {
            ViewLeaderRequest::Heartbeat(beat) => {
                // Heard even by a leader that cannot act now: the server is alive. Unless the
                // beat names a live server at another address, which the log refuses.
                if self
                    .machine
                    .read(|s| s.speaks_for(&beat.server_id, &beat.addr))?
                {
                    self.heard(&beat.server_id);
                }
                self.check_leader()?;
                let command = Command::Heartbeat(beat);
                if let Some(reply) = self.machine.read(|s| s.quiet_heartbeat(&command))? {
                    return Ok(ViewLeaderReply::Heartbeat(reply));
                }
                self.propose(command).await.map(reply_of)
            }
            ViewLeaderRequest::QueryServers => {
                self.check_leader()?;
                self.linearizable().await?;
                Ok(ViewLeaderReply::View(self.view()))
            }
            ViewLeaderRequest::LockGet { lock, requester } => {
                self.check_leader()?;
                self.propose(Command::LockGet { lock, requester })
                    .await
                    .map(reply_of)
            }
            ViewLeaderRequest::LockRelease { lock, requester } => {
                self.check_leader()?;
                self.propose(Command::LockRelease { lock, requester })
                    .await
                    .map(reply_of)
            }
            ViewLeaderRequest::WatchView {
                epoch_known,
                rebalancing_known,
                wait_ms,
            } => {
                self.check_leader()?;
                let view = self.watch(epoch_known, rebalancing_known, wait_ms).await?;
                Ok(ViewLeaderReply::View(view))
            }
            ViewLeaderRequest::Leave { server_id } => {
                self.check_leader()?;
                self.propose(Command::Leave { server_id })
                    .await
                    .map(reply_of)
            }
            ViewLeaderRequest::Crash => {
                check_injection(self.options.fault_injection, "crash")?;
                self.set_crashed(true);
                Ok(ViewLeaderReply::Crashed(true))
            }
            ViewLeaderRequest::Recover => {
                check_injection(self.options.fault_injection, "recover")?;
                self.set_crashed(false);
                Ok(ViewLeaderReply::Crashed(false))
            }
            ViewLeaderRequest::Raft(message) => {
                Ok(ViewLeaderReply::Raft(self.raft_message(message).await?))
            }
            ViewLeaderRequest::Status => Ok(ViewLeaderReply::Status(self.full_status().await)),
            ViewLeaderRequest::AddMember { id, addr } => {
                Ok(ViewLeaderReply::Status(self.add_member(id, addr).await?))
            }
            ViewLeaderRequest::RemoveMember { id } => {
                Ok(ViewLeaderReply::Status(self.remove_member(id).await?))
            }
        }
    }
}

fn reply_of(outcome: Outcome) -> ViewLeaderReply {
    match outcome {
        Outcome::Heartbeat(reply) => ViewLeaderReply::Heartbeat(reply),
        Outcome::View(view) => ViewLeaderReply::View(view),
        Outcome::Lock(reply) => ViewLeaderReply::Lock(reply),
        Outcome::Left { epoch } => ViewLeaderReply::Left { epoch },
    }
}

/// Runs a member on `listener` until `shutdown` fires.
pub async fn run(
    listener: Box<dyn Listener>,
    options: ViewLeaderOptions,
    env: Env,
    shutdown: CancellationToken,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let leader = start(options, &addr, env, shutdown.clone()).await?;
    serve(leader, listener, shutdown).await
}

/// A member, recovered from its data dir and ready to [`serve`] at `addr` (the address the
/// other members and the servers reach it at): whoever starts it can wire its HTTP pages first.
/// A member whose log is empty forms the group of its peers (or a group of itself alone),
/// unless it was told to wait to be added.
pub async fn start(
    options: ViewLeaderOptions,
    addr: &str,
    env: Env,
    shutdown: CancellationToken,
) -> Result<Arc<ViewLeader>> {
    options.validate()?;
    let disk: Option<Arc<dyn Disk>> = match &options.data_dir {
        Some(dir) => Some(Arc::new(RealDisk::open(dir).map_err(|err| {
            Error::Internal(format!("cannot open the data dir {}: {err}", dir.display()))
        })?)),
        None => None,
    };
    start_on(options, disk, addr, env, shutdown).await
}

/// [`start`] on a given disk (the simulation's), or in memory with `None`.
pub async fn start_on(
    options: ViewLeaderOptions,
    disk: Option<Arc<dyn Disk>>,
    addr: &str,
    env: Env,
    shutdown: CancellationToken,
) -> Result<Arc<ViewLeader>> {
    options.validate()?;
    let raft_options = &options.raft;
    let log = match &disk {
        Some(disk) => LogStore::open(disk.clone())?,
        None => {
            info!(
                "no data directory: this member forgets its log, locks and tokens if it restarts"
            );
            LogStore::in_memory()
        }
    };
    let config = StateConfig {
        lease_ms: options.lease_ms,
        lock_lease_ms: options.lock_lease_ms,
    };
    let (view_tx, view_rx) = watch::channel(View::default());
    let machine = Machine::open(disk, State::new(config), view_tx, log.committed_index())?;
    let faults = Arc::new(Faults::default());
    let pool = Arc::new(Pool::new(
        ServiceKind::ViewLeader,
        Duration::from_millis(CONNECT_TIMEOUT_MS),
        &env,
    ));
    let raft = Raft::new(
        raft_options.id,
        Arc::new(raft_options.config(env.cluster())?),
        Network::new(pool, faults.clone()),
        log.clone(),
        machine.clone(),
    )
    .await
    .map_err(|err| Error::Internal(format!("starting Raft: {err}")))?;
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|err| Error::Internal(format!("starting Raft: {err}")))?;
    if !initialized && !raft_options.join {
        let mut members = raft_options.peers.clone();
        members
            .entry(raft_options.id)
            .or_insert_with(|| addr.to_string());
        let nodes: std::collections::BTreeMap<MemberId, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode { addr }))
            .collect();
        info!(members = ?nodes.keys().collect::<Vec<_>>(), "forming a new view-leader group");
        if let Err(err) = raft.initialize(nodes).await {
            // Another member formed the same group first: its log reaches us.
            warn!(%err, "not forming the group");
        }
    }
    info!(
        member = raft_options.id,
        %addr,
        view = view_rx.borrow().epoch,
        "view leader member starting"
    );
    Ok(Arc::new(ViewLeader {
        raft,
        id: raft_options.id,
        addr: addr.to_string(),
        machine,
        intake: Intake::default(),
        log,
        view_rx,
        started: env.now(),
        env,
        shutdown,
        faults,
        metrics: Metrics::with_raft(),
        options,
        leading: Mutex::new(None),
        confirmed_ms: AtomicU64::new(NEVER_CONFIRMED),
    }))
}

/// Serves `leader` on `listener` and runs its sweep until `shutdown` fires; then stops Raft.
pub async fn serve(
    leader: Arc<ViewLeader>,
    listener: Box<dyn Listener>,
    shutdown: CancellationToken,
) -> Result<()> {
    let ticker = {
        let leader = leader.clone();
        let shutdown = shutdown.clone();
        let tick = Duration::from_millis(leader.options.tick_ms());
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            // After a stall, one sweep (which notices the gap) rather than a burst of them.
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = interval.tick() => {
                        if let Err(err) = leader.sweep().await {
                            warn!(%err, "the leader's sweep failed; it runs again next tick");
                        }
                        let running = leader.raft.metrics().borrow().running_state.clone();
                        if let Err(fatal) = running {
                            error!(%fatal, "Raft stopped; this member stops");
                            shutdown.cancel();
                            return;
                        }
                    }
                }
            }
        })
    };
    let confirmer = {
        let leader = leader.clone();
        let shutdown = shutdown.clone();
        let every = Duration::from_millis(leader.options.raft.lease_ms() / CONFIRMS_PER_LEASE);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(every) => {
                        let leads = leader.raft.metrics().borrow().state == ServerState::Leader;
                        if leads && !leader.is_crashed() {
                            leader.confirm().await;
                        }
                    }
                }
            }
        })
    };
    serve_rpc(listener, leader.env.clone(), leader.clone(), shutdown).await;
    let _ = ticker.await;
    let _ = confirmer.await;
    let _ = leader.raft.shutdown().await;
    Ok(())
}
