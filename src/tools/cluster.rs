//! A whole cluster inside one process: a view-leader group and storage servers on loopback
//! ports, each with its own shutdown trigger. The demo and the load generator use it so that one
//! command works from a fresh clone with nothing else built, and so do the in-process tests; the
//! real-process tests use the binaries.
//!
//! The view leader is a Raft group of [`ClusterOptions::viewleader_members`] members (3 by
//! default, 1 for a view leader alone), each a task serving its own loopback port. Every
//! member's listener is bound before any member starts, so that each is started knowing the
//! whole group; servers and clients are given every member's address, comma-separated
//! ([`LocalCluster::viewleader_addr`]), and find the leader among them. A member can be killed
//! ([`LocalCluster::kill_member`]: its Raft stops, as a crashed process's would) and started
//! again at the same address from its data dir ([`LocalCluster::restart_member`]), and
//! [`LocalCluster::leader`] finds whom the group follows.
//!
//! Everything is durable as the binaries are: each member keeps its Raft log, vote and snapshot
//! in a directory of its own inside one temporary directory of the cluster's, and each server
//! keeps its keys in a data dir of its own. The cluster owns them all and removes them when it
//! is stopped (a server's, when that server is stopped). A server killed
//! ([`LocalCluster::kill_all`], or the kill token of [`LocalCluster::restart_server`]) and
//! started again from its data dir comes back with its keys, under its old member id while its
//! lease holds. [`ClusterOptions::in_memory`] runs servers and members in memory instead: a
//! restarted one comes back empty (a member then catches up from the leader, having forgotten
//! its vote, which a real deployment must not do).
//!
//! Dropping a cluster without [`LocalCluster::stop`] (a failed start, a panicking test) fires
//! every kill and shutdown token, so nothing it started keeps running unseen.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientOptions};
use crate::errinput;
use crate::error::{Error, Result};
use crate::faults::ReplyFaults;
use crate::net;
use crate::server::{self, ServerOptions, Storage};
use crate::storage::LogOptions;
use crate::types::{MemberStatus, View};
use crate::viewleader::raft::{MemberId, MEMBERS_MAX};
use crate::viewleader::{self, ViewLeader, ViewLeaderOptions};

/// Pause between polls while waiting for the cluster to reach a state.
pub const POLL_MS: u64 = 20;
/// Longest a restart waits for the killed server's or member's port and data dir to be free
/// (its last connections and background work let go of them a moment after its task ends).
pub const RESTART_WAIT_MS: u64 = 10_000;
/// View-leader members of a cluster by default: the smallest group that keeps serving with one
/// member down.
pub const VIEWLEADER_MEMBERS_DEFAULT: usize = 3;
/// Longest wait for the group to agree on a leader. After a leader dies, openraft 0.9's
/// followers let its lease (the longest election timeout) run out and then wait their own
/// election timeout: 1.5 to 2 s with the default timeouts, and a split vote adds another; this
/// leaves room for many on a loaded machine.
pub const LEADER_WAIT_MS: u64 = 15_000;
/// Longest wait for a member to catch up with the leader (a restarted one reads its log back
/// and is sent what it missed, or a snapshot).
pub const CATCH_UP_WAIT_MS: u64 = 15_000;
/// Longest wait at start for every server to be in a settled view.
pub const START_WAIT_MS: u64 = 10_000;

/// Timing of an in-process cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Every member's options. Its Raft id, peers, data dir and fault injection are the
    /// cluster's to set: each member gets its own id (1 to `viewleader_members`), the whole
    /// group as its peers, a directory in the cluster's temporary directory (none in memory),
    /// and `fault_injection` on, as every server of the cluster (the demo and the tests crash
    /// them).
    pub viewleader: ViewLeaderOptions,
    /// Members of the view-leader group, 1 to [`MEMBERS_MAX`].
    pub viewleader_members: usize,
    pub rpc_timeout_ms: u64,
    pub tx_timeout_ms: u64,
    /// Test hook for every server: dropped and duplicated replies.
    pub faults: ReplyFaults,
    /// The cluster every process and client of it belongs to.
    pub cluster: String,
    /// Servers and members keep everything in memory only (a killed one comes back empty),
    /// instead of in temporary data dirs.
    pub in_memory: bool,
    /// How the durable servers' log engine runs.
    pub log: LogOptions,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            viewleader: ViewLeaderOptions::default(),
            viewleader_members: VIEWLEADER_MEMBERS_DEFAULT,
            rpc_timeout_ms: server::RPC_TIMEOUT_MS_DEFAULT,
            tx_timeout_ms: server::TX_TIMEOUT_MS_DEFAULT,
            faults: ReplyFaults::default(),
            cluster: net::CLUSTER_DEFAULT.to_string(),
            in_memory: false,
            log: LogOptions::default(),
        }
    }
}

/// One storage server of a [`LocalCluster`].
pub struct LocalServer {
    pub addr: String,
    shutdown: CancellationToken,
    kill: CancellationToken,
    /// None once the task has been waited for (the server killed, not yet restarted).
    task: Option<JoinHandle<Result<()>>>,
    /// Its data dir (none in memory): kept across restarts, removed when this is dropped.
    data_dir: Option<TempDir>,
}

impl LocalServer {
    /// Where it keeps its keys (none in memory).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(TempDir::path)
    }

    /// Whether its task runs (it was not killed, or was restarted since).
    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// Fires the kill token and waits for the task to end.
    async fn kill_and_wait(&mut self) {
        self.kill.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// One member of a [`LocalCluster`]'s view-leader group.
pub struct LocalMember {
    pub id: MemberId,
    pub addr: String,
    shutdown: CancellationToken,
    /// None once the task has been waited for (the member killed, not yet restarted).
    task: Option<JoinHandle<Result<()>>>,
    /// The running member, for its status without a round trip; dropped when it is killed so
    /// that its log and state machine close.
    member: Option<Arc<ViewLeader>>,
    /// Where it keeps its log, vote and snapshot (none in memory); inside the cluster's
    /// temporary directory, so it outlives a kill.
    data_dir: Option<PathBuf>,
}

impl LocalMember {
    /// Where it keeps its Raft log, vote and snapshot (none in memory).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Whether its task runs: it was not killed (or was restarted since), and its Raft did not
    /// stop it.
    pub fn is_running(&self) -> bool {
        self.task.as_ref().is_some_and(|task| !task.is_finished())
    }

    /// Its status, as `client viewleader status` would show it; none while it is not running.
    pub async fn status(&self) -> Option<MemberStatus> {
        match &self.member {
            Some(member) if self.is_running() => Some(member.full_status().await),
            _ => None,
        }
    }

    fn serve(
        &mut self,
        member: Arc<ViewLeader>,
        listener: Box<dyn net::Listener>,
        shutdown: CancellationToken,
    ) {
        self.shutdown = shutdown.clone();
        self.member = Some(member.clone());
        self.task = Some(tokio::spawn(viewleader::serve(member, listener, shutdown)));
    }

    /// Fires its shutdown token (a member has no goodbye to skip: its Raft simply stops, as a
    /// crashed process's would) and waits until its Raft has stopped.
    async fn kill_and_wait(&mut self) {
        self.shutdown.cancel();
        self.member = None;
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A view-leader group and storage servers running as tasks of this process.
pub struct LocalCluster {
    /// Every view-leader member's address, comma-separated, as `--viewleader` takes it: what
    /// servers and clients of this cluster are given. It stays the same across member restarts
    /// (a member comes back at its address).
    pub viewleader_addr: String,
    options: ClusterOptions,
    /// The world of every node and client: real, in `options.cluster`.
    env: net::Env,
    /// The group as every member was started with it: id to address.
    peers: BTreeMap<MemberId, String>,
    members: Vec<LocalMember>,
    /// Holds every member's data dir (none in memory); removed when the cluster is dropped.
    viewleader_dir: Option<TempDir>,
    pub servers: Vec<LocalServer>,
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // After `stop` these have all fired already; otherwise (a failed start, a panic) this
        // is what stops the tasks that nobody will wait for.
        for server in &self.servers {
            server.kill.cancel();
        }
        for member in &self.members {
            member.shutdown.cancel();
        }
    }
}

impl LocalCluster {
    /// Starts a view-leader group and `servers` storage servers, and waits until the group has
    /// a leader and every server is in a settled view.
    pub async fn start(servers: usize, options: ClusterOptions) -> Result<Self> {
        options.viewleader.validate()?;
        let count = options.viewleader_members;
        if count == 0 || count > MEMBERS_MAX {
            return Err(errinput!(
                "{count} view-leader members (1 to {MEMBERS_MAX})"
            ));
        }
        let env = net::Env::real().in_cluster(&options.cluster)?;
        let viewleader_dir = if options.in_memory {
            None
        } else {
            Some(temp_dir("ringleader-viewleader-")?)
        };
        // Every member is started knowing the whole group, so every address must be known
        // before the first one starts: bind them all first.
        let mut listeners = Vec::with_capacity(count);
        let mut peers = BTreeMap::new();
        for id in 1..=count as MemberId {
            let listener = env
                .bind("127.0.0.1", Some(0), net::VIEWLEADER_PORTS)
                .await?;
            let addr = listener.local_addr()?;
            peers.insert(id, addr.clone());
            listeners.push((id, addr, listener));
        }
        let viewleader_addr = peers.values().cloned().collect::<Vec<_>>().join(",");
        let mut cluster = Self {
            viewleader_addr,
            options,
            env,
            members: Vec::with_capacity(count),
            peers,
            viewleader_dir,
            servers: Vec::new(),
        };
        for (id, addr, listener) in listeners {
            let data_dir = cluster
                .viewleader_dir
                .as_ref()
                .map(|dir| dir.path().join(format!("member-{id}")));
            let mut member = LocalMember {
                id,
                addr,
                shutdown: CancellationToken::new(),
                task: None,
                member: None,
                data_dir,
            };
            let shutdown = CancellationToken::new();
            let started = viewleader::start(
                cluster.member_options(&member, false),
                &member.addr,
                cluster.env.clone(),
                shutdown.clone(),
            )
            .await?;
            member.serve(started, listener, shutdown);
            cluster.members.push(member);
        }
        cluster.leader().await?;
        for _ in 0..servers {
            cluster.add_server().await?;
        }
        let wanted = servers;
        cluster
            .wait_for_view(Duration::from_millis(START_WAIT_MS), |view| {
                view.servers.len() == wanted && !view.rebalancing
            })
            .await?;
        Ok(cluster)
    }

    /// The options member `member` starts with. A restarted member (`rejoin`) never forms a
    /// group: the group exists, and one that lost its log (in memory) must wait to be sent it
    /// rather than start a second history.
    fn member_options(&self, member: &LocalMember, rejoin: bool) -> ViewLeaderOptions {
        let mut options = self.options.viewleader.clone();
        options.raft.id = member.id;
        options.raft.peers = self.peers.clone();
        options.raft.join = rejoin;
        options.data_dir = member.data_dir.clone();
        // The demo and the tests that use this cluster crash and recover its processes.
        options.fault_injection = true;
        options
    }

    /// What the cluster was started with.
    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The view-leader members, in id order (killed ones too).
    pub fn members(&self) -> &[LocalMember] {
        &self.members
    }

    fn member_index(&self, id: MemberId) -> Result<usize> {
        self.members
            .iter()
            .position(|m| m.id == id)
            .ok_or_else(|| errinput!("no view-leader member {id}"))
    }

    /// The status of member `id`; none while it is not running.
    pub async fn member_status(&self, id: MemberId) -> Result<Option<MemberStatus>> {
        Ok(self.members[self.member_index(id)?].status().await)
    }

    /// The statuses of the running members.
    async fn running_statuses(&self) -> Vec<MemberStatus> {
        let mut statuses = Vec::with_capacity(self.members.len());
        for member in &self.members {
            if let Some(status) = member.status().await {
                statuses.push(status);
            }
        }
        statuses
    }

    /// The leader's status if the group has one: a member that leads, in the newest term any
    /// member leads in, that a majority of the voters follow in that term. A deposed leader
    /// that has not heard yet, or a new one the others have not heard from, is not it.
    fn established_leader(statuses: &[MemberStatus]) -> Option<MemberStatus> {
        let leader = statuses
            .iter()
            .filter(|s| s.role == "leader" && s.leader == Some(s.id))
            .max_by_key(|s| s.term)?;
        let following = statuses
            .iter()
            .filter(|s| s.term == leader.term && s.leader == Some(leader.id))
            .count();
        (following > leader.voters.len() / 2).then(|| leader.clone())
    }

    /// The leader's status, waiting up to [`LEADER_WAIT_MS`] for the group to have one (see
    /// [`LocalCluster::wait_for_leader`]).
    pub async fn leader(&self) -> Result<MemberStatus> {
        self.wait_for_leader(Duration::from_millis(LEADER_WAIT_MS))
            .await
    }

    /// The leader's status, once a member leads and a majority of the voters follow it; polls
    /// the running members for at most `timeout`.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Result<MemberStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let statuses = self.running_statuses().await;
            if let Some(leader) = Self::established_leader(&statuses) {
                return Ok(leader);
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the view-leader group agreed on no leader within {} ms (running members: {})",
                    timeout.as_millis(),
                    describe(&statuses)
                )));
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// Stops member `id` at once, as a crash would, and waits until its Raft has stopped. It
    /// stays listed, with its data dir, until [`LocalCluster::restart_member`]. Killing a member
    /// that is not running does nothing.
    pub async fn kill_member(&mut self, id: MemberId) -> Result<()> {
        let index = self.member_index(id)?;
        self.members[index].kill_and_wait().await;
        Ok(())
    }

    /// Starts member `id` again at its address, from its data dir (killing it first if it
    /// still runs); answers its status as it recovered it, before it heard from anyone: its log
    /// read back from disk (empty in memory). It then catches up from the leader
    /// ([`LocalCluster::wait_for_catch_up`]).
    pub async fn restart_member(&mut self, id: MemberId) -> Result<MemberStatus> {
        let index = self.member_index(id)?;
        self.members[index].kill_and_wait().await;
        let addr = self.members[index].addr.clone();
        let port = port_of(&addr)?;
        let options = self.member_options(&self.members[index], true);
        let deadline = Instant::now() + Duration::from_millis(RESTART_WAIT_MS);
        // The port, and the data dir's lock, are let go of a moment after the task ends (its
        // last connections and Raft's own tasks hold on to them until they notice).
        let (listener, started, shutdown) = loop {
            let attempt = async {
                let listener = self
                    .env
                    .bind("127.0.0.1", Some(port), net::VIEWLEADER_PORTS)
                    .await?;
                let shutdown = CancellationToken::new();
                let started =
                    viewleader::start(options.clone(), &addr, self.env.clone(), shutdown.clone())
                        .await?;
                Ok::<_, Error>((listener, started, shutdown))
            };
            match attempt.await {
                Ok(opened) => break opened,
                Err(err) if Instant::now() >= deadline => {
                    return Err(Error::Timeout(format!(
                        "cannot restart view-leader member {id} at {addr} within \
                         {RESTART_WAIT_MS} ms: {err}"
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(POLL_MS)).await,
            }
        };
        // Nothing reaches it before it serves: this is what it read back, not what it was sent.
        let recovered = started.full_status().await;
        self.members[index].serve(started, listener, shutdown);
        Ok(recovered)
    }

    /// Waits until member `id` has caught up: it follows the leader in the leader's term and
    /// has applied every entry the leader had applied when last polled. Answers its status and
    /// the leader's; polls for at most [`CATCH_UP_WAIT_MS`].
    pub async fn wait_for_catch_up(&self, id: MemberId) -> Result<(MemberStatus, MemberStatus)> {
        let index = self.member_index(id)?;
        let deadline = Instant::now() + Duration::from_millis(CATCH_UP_WAIT_MS);
        loop {
            // The leader first: the member must reach what the leader had already applied.
            let statuses = self.running_statuses().await;
            let leader = Self::established_leader(&statuses);
            let member = self.members[index].status().await;
            if let (Some(leader), Some(member)) = (&leader, &member) {
                if member.leader == Some(leader.id)
                    && member.term == leader.term
                    && leader.applied.is_some()
                    && member.applied >= leader.applied
                {
                    return Ok((member.clone(), leader.clone()));
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "view-leader member {id} did not catch up with the leader within \
                     {CATCH_UP_WAIT_MS} ms (member: {}; leader: {})",
                    member.map_or("not running".to_string(), |m| describe(&[m])),
                    leader.map_or("none".to_string(), |l| describe(&[l])),
                )));
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// Starts one more storage server, with a fresh data dir unless in memory; returns its
    /// address.
    pub async fn add_server(&mut self) -> Result<String> {
        let env = self.env.clone();
        let listener = env.bind("127.0.0.1", Some(0), net::SERVER_PORTS).await?;
        let addr = listener.local_addr()?;
        let data_dir = if self.options.in_memory {
            None
        } else {
            Some(temp_dir("ringleader-server-")?)
        };
        let storage = match &data_dir {
            Some(dir) => Storage::data_dir(dir.path(), self.options.log)?,
            None => Storage::Memory,
        };
        let mut server = LocalServer {
            addr: addr.clone(),
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
            task: None,
            data_dir,
        };
        Self::launch(
            &self.options,
            &self.viewleader_addr,
            &mut server,
            listener,
            env,
            storage,
        )?;
        self.servers.push(server);
        Ok(addr)
    }

    /// Starts `server`'s task on `listener` with `storage`; returns the keys it recovered.
    fn launch(
        options: &ClusterOptions,
        viewleader: &str,
        server: &mut LocalServer,
        listener: Box<dyn net::Listener>,
        env: net::Env,
        storage: Storage,
    ) -> Result<u64> {
        let server_options = ServerOptions {
            viewleader: viewleader.to_string(),
            advertise: None,
            heartbeat_interval_ms: options.viewleader.heartbeat_interval_ms,
            rpc_timeout_ms: options.rpc_timeout_ms,
            tx_timeout_ms: options.tx_timeout_ms,
            faults: options.faults,
            planted_bug: None,
            fault_injection: true,
        };
        let started = server::start(&*listener, server_options, env, storage)?;
        let recovered = started.snapshot()?.keys;
        server.shutdown = CancellationToken::new();
        server.kill = CancellationToken::new();
        server.task = Some(tokio::spawn(server::serve(
            started,
            listener,
            server.shutdown.clone(),
            server.kill.clone(),
        )));
        Ok(recovered)
    }

    /// Kills every server at once, as `kill -9` would (the kill token: no goodbye, no handoff),
    /// and waits for their tasks to end. They stay listed, with their data dirs, until
    /// [`LocalCluster::restart_server`] or [`LocalCluster::stop`].
    pub async fn kill_all(&mut self) {
        for server in &self.servers {
            server.kill.cancel();
        }
        for server in &mut self.servers {
            server.kill_and_wait().await;
        }
    }

    /// Starts the server at `addr` again at the same address, from its data dir (killing it
    /// first, as `kill -9` would, if it still runs); returns how many keys it recovered (none in
    /// memory). It comes back under its old member id if its lease still holds; otherwise the
    /// view leader denies that id and it rejoins under a new one, keeping its keys.
    pub async fn restart_server(&mut self, addr: &str) -> Result<u64> {
        let index = self
            .servers
            .iter()
            .position(|s| s.addr == addr)
            .ok_or_else(|| errinput!("no local server at {addr}"))?;
        self.servers[index].kill_and_wait().await;
        let port = port_of(addr)?;
        let env = self.env.clone();
        let deadline = Instant::now() + Duration::from_millis(RESTART_WAIT_MS);
        // The engine (and with it the data dir's lock) goes when the last reference to the old
        // server does, a moment after its task ends.
        let (listener, storage) = loop {
            let attempt = async {
                let listener = env.bind("127.0.0.1", Some(port), net::SERVER_PORTS).await?;
                let storage = match self.servers[index].data_dir() {
                    Some(dir) => Storage::data_dir(dir, self.options.log)?,
                    None => Storage::Memory,
                };
                Ok::<_, Error>((listener, storage))
            };
            match attempt.await {
                Ok(opened) => break opened,
                Err(err) if Instant::now() >= deadline => {
                    return Err(Error::Timeout(format!(
                        "cannot restart {addr} within {RESTART_WAIT_MS} ms: {err}"
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(POLL_MS)).await,
            }
        };
        Self::launch(
            &self.options,
            &self.viewleader_addr,
            &mut self.servers[index],
            listener,
            env,
            storage,
        )
    }

    /// Stops the server at `addr` at once: no goodbye, it simply stops answering and beating, as
    /// a crashed process would. It leaves the cluster for good: its data dir is removed.
    pub async fn kill_server(&mut self, addr: &str) -> Result<()> {
        let mut server = self.take_server(addr)?;
        server.kill_and_wait().await;
        Ok(())
    }

    /// Kills the server at `addr` without waiting for its task (it stays listed in `servers`
    /// until [`LocalCluster::stop`]); for callers that only hold a shared reference.
    pub fn kill_by_addr(&self, addr: &str) -> Result<()> {
        let server = self
            .servers
            .iter()
            .find(|s| s.addr == addr)
            .ok_or_else(|| errinput!("no local server at {addr}"))?;
        server.kill.cancel();
        Ok(())
    }

    /// Stops the server at `addr` gracefully: it leaves the view and hands its keys over first;
    /// then its data dir is removed.
    pub async fn stop_server(&mut self, addr: &str) -> Result<()> {
        let mut server = self.take_server(addr)?;
        server.shutdown.cancel();
        if let Some(task) = server.task.take() {
            let _ = task.await;
        }
        Ok(())
    }

    fn take_server(&mut self, addr: &str) -> Result<LocalServer> {
        let index = self
            .servers
            .iter()
            .position(|s| s.addr == addr)
            .ok_or_else(|| errinput!("no local server at {addr}"))?;
        Ok(self.servers.remove(index))
    }

    /// A client of this cluster.
    pub fn client(&self, wait_ms: u64) -> Client {
        Client::with_env(
            ClientOptions {
                viewleader: self.viewleader_addr.clone(),
                timeout_ms: self.options.rpc_timeout_ms,
                wait_ms,
            },
            self.env.clone(),
        )
    }

    /// Polls the view until `done` holds, for at most `timeout`.
    pub async fn wait_for_view(
        &self,
        timeout: Duration,
        done: impl Fn(&View) -> bool,
    ) -> Result<View> {
        let client = self.client(0);
        let deadline = Instant::now() + timeout;
        loop {
            let view = client.query_servers().await;
            if let Ok(view) = &view {
                if done(view) {
                    return Ok(view.clone());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the cluster did not reach the expected view within {} ms (last: {view:?})",
                    timeout.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// Stops every server (at once: there is nobody left to hand keys to), then every
    /// view-leader member, and removes all their data dirs.
    pub async fn stop(mut self) {
        self.kill_all().await;
        for member in &self.members {
            member.shutdown.cancel();
        }
        for member in &mut self.members {
            member.kill_and_wait().await;
        }
    }
}

/// A temporary directory, removed when the returned handle is dropped.
fn temp_dir(prefix: &str) -> Result<TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|err| Error::Internal(format!("cannot create a temporary data dir: {err}")))
}

/// The port of a `host:port` this cluster bound.
fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| Error::Internal(format!("no port in {addr:?}")))
}

/// One line per member, for errors: who it thinks leads, in which term, how far it applied.
fn describe(statuses: &[MemberStatus]) -> String {
    if statuses.is_empty() {
        return "none".into();
    }
    let lines: Vec<String> = statuses
        .iter()
        .map(|s| {
            format!(
                "member {} {} term {} leader {:?} applied {:?}",
                s.id, s.role, s.term, s.leader, s.applied
            )
        })
        .collect();
    lines.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{LockReply, Value};

    const KEYS: usize = 20;
    /// Locks taken and released while a member is down: each grant and release is a log entry
    /// it misses.
    const MISSED_LOCKS: usize = 10;

    fn options(in_memory: bool) -> ClusterOptions {
        ClusterOptions {
            in_memory,
            ..ClusterOptions::default()
        }
    }

    async fn write_keys(cluster: &LocalCluster) {
        let client = cluster.client(5_000);
        for i in 0..KEYS {
            client
                .setr(&format!("k{i}"), Value::Text(format!("v{i}")))
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servers_killed_at_once_restart_from_their_data_dirs_and_stop_removes_them() {
        let mut cluster = LocalCluster::start(3, options(false)).await.unwrap();
        write_keys(&cluster).await;
        let dirs: Vec<std::path::PathBuf> = cluster
            .servers
            .iter()
            .map(|s| s.data_dir().expect("a durable server").to_path_buf())
            .collect();
        let before = cluster.client(0).query_servers().await.unwrap();
        cluster.kill_all().await;
        assert!(cluster.servers.iter().all(|s| !s.is_running()));
        let addrs: Vec<String> = cluster.servers.iter().map(|s| s.addr.clone()).collect();
        for addr in &addrs {
            // Three servers: each holds a copy of every key.
            assert_eq!(cluster.restart_server(addr).await.unwrap(), KEYS as u64);
        }
        let client = cluster.client(5_000);
        for i in 0..KEYS {
            let found = client.getr(&format!("k{i}")).await.unwrap().unwrap();
            assert_eq!(found.value.value, Value::Text(format!("v{i}")));
        }
        let after = client.query_servers().await.unwrap();
        assert_eq!(
            after.servers.len(),
            before.servers.len(),
            "{before:?} / {after:?}"
        );
        cluster.stop().await;
        for dir in dirs {
            assert!(!dir.exists(), "{} was not removed", dir.display());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_in_memory_server_restarts_empty_under_a_view_leader_alone() {
        let options = ClusterOptions {
            viewleader_members: 1,
            ..options(true)
        };
        let mut cluster = LocalCluster::start(3, options).await.unwrap();
        assert_eq!(cluster.members().len(), 1);
        assert!(!cluster.viewleader_addr.contains(','));
        assert_eq!(cluster.leader().await.unwrap().id, 1);
        write_keys(&cluster).await;
        assert!(cluster.servers[0].data_dir().is_none());
        let addr = cluster.servers[0].addr.clone();
        assert_eq!(cluster.restart_server(&addr).await.unwrap(), 0);
        cluster.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_members_or_too_many_are_refused() {
        for members in [0, MEMBERS_MAX + 1] {
            let options = ClusterOptions {
                viewleader_members: members,
                ..options(true)
            };
            let err = LocalCluster::start(1, options).await.err().unwrap();
            assert!(err.to_string().contains("view-leader members"), "{err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killing_the_leader_member_elects_another_and_the_cluster_keeps_serving() {
        let mut cluster = LocalCluster::start(3, options(true)).await.unwrap();
        assert_eq!(cluster.members().len(), VIEWLEADER_MEMBERS_DEFAULT);
        assert_eq!(
            cluster.viewleader_addr.split(',').count(),
            VIEWLEADER_MEMBERS_DEFAULT
        );
        write_keys(&cluster).await;
        // Made before the kill: it must find its way from the dead leader to the new one.
        let client = cluster.client(5_000);
        let alice = client
            .lock_get_wait("printer", "alice", |_| {})
            .await
            .unwrap();
        let before = client.query_servers().await.unwrap();
        let old = cluster.leader().await.unwrap();

        cluster.kill_member(old.id).await.unwrap();
        let killed = cluster.members().iter().find(|m| m.id == old.id).unwrap();
        assert!(!killed.is_running());
        assert!(cluster.member_status(old.id).await.unwrap().is_none());
        let new = cluster.leader().await.unwrap();
        assert_ne!(new.id, old.id);
        assert!(new.term > old.term, "{old:?} / {new:?}");

        // The lock queue was replicated: bob still waits behind alice, and his grant's token
        // is above hers although another member gives it.
        match client.lock_get("printer", "bob").await.unwrap() {
            LockReply::Retry { holder, position } => {
                assert_eq!((holder.as_str(), position), ("alice", 1))
            }
            other => panic!("bob should wait behind alice: {other:?}"),
        }
        client.lock_release("printer", "alice").await.unwrap();
        match client.lock_get("printer", "bob").await.unwrap() {
            LockReply::Granted { token } => assert!(token > alice, "{token} <= {alice}"),
            other => panic!("bob should hold printer: {other:?}"),
        }
        // A new leader gives every server a full lease: nobody was expired for its silence.
        let after = client.query_servers().await.unwrap();
        let ids = |view: &View| {
            view.servers
                .iter()
                .map(|s| s.id.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(ids(&after), ids(&before));
        client
            .setr("after", Value::Text("failover".into()))
            .await
            .unwrap();
        let found = client.getr("after").await.unwrap().unwrap();
        assert_eq!(found.value.value, Value::Text("failover".into()));
        for i in 0..KEYS {
            let found = client.getr(&format!("k{i}")).await.unwrap().unwrap();
            assert_eq!(found.value.value, Value::Text(format!("v{i}")));
        }
        cluster.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_killed_member_restarted_from_its_data_dir_catches_up() {
        let mut cluster = LocalCluster::start(3, options(false)).await.unwrap();
        let dir = cluster
            .viewleader_dir
            .as_ref()
            .unwrap()
            .path()
            .to_path_buf();
        let leader = cluster.leader().await.unwrap();
        let follower = cluster
            .members()
            .iter()
            .map(|m| m.id)
            .find(|id| *id != leader.id)
            .unwrap();
        let before = cluster.member_status(follower).await.unwrap().unwrap();
        assert!(before.applied.is_some(), "{before:?}");
        cluster.kill_member(follower).await.unwrap();

        let client = cluster.client(5_000);
        for i in 0..MISSED_LOCKS {
            let lock = format!("missed-{i}");
            client.lock_get_wait(&lock, "alice", |_| {}).await.unwrap();
            client.lock_release(&lock, "alice").await.unwrap();
        }
        let leader = cluster.leader().await.unwrap();
        assert!(leader.applied > before.applied, "{leader:?} / {before:?}");

        let recovered = cluster.restart_member(follower).await.unwrap();
        // Its log came back from disk, and it ends where it was killed, before what it missed.
        assert!(
            recovered.last_log_index >= before.applied,
            "{recovered:?} / {before:?}"
        );
        assert!(
            recovered.last_log_index < leader.applied,
            "{recovered:?} / {leader:?}"
        );
        let (member, now) = cluster.wait_for_catch_up(follower).await.unwrap();
        assert!(member.applied >= leader.applied, "{member:?} / {leader:?}");
        assert_eq!(member.leader, Some(now.id));
        assert_eq!(member.role, "follower");

        // The group still has a majority with either other member gone: the restarted member
        // counts again.
        cluster.kill_member(now.id).await.unwrap();
        let next = cluster.leader().await.unwrap();
        assert_ne!(next.id, now.id);
        client.lock_get_wait("after", "bob", |_| {}).await.unwrap();
        cluster.stop().await;
        assert!(!dir.exists(), "{} was not removed", dir.display());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_in_memory_member_restarts_empty_and_is_sent_the_log() {
        let mut cluster = LocalCluster::start(1, options(true)).await.unwrap();
        assert!(cluster.members().iter().all(|m| m.data_dir().is_none()));
        let leader = cluster.leader().await.unwrap();
        let follower = cluster
            .members()
            .iter()
            .map(|m| m.id)
            .find(|id| *id != leader.id)
            .unwrap();
        let recovered = cluster.restart_member(follower).await.unwrap();
        assert_eq!(recovered.last_log_index, None, "{recovered:?}");
        let (member, leader) = cluster.wait_for_catch_up(follower).await.unwrap();
        assert!(member.applied >= leader.applied);
        cluster.stop().await;
    }
}
