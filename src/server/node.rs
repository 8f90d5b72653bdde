//! What one storage server is and holds, shared by every part of its shell: its identity and
//! view, the storage engine, the 2PC participant, its connections to the view leader and to its
//! peers, and the faults it is under. The parts that act on it (dispatch, membership,
//! termination, the mover) each live in a file of their own and reach it through
//! [`StorageServer`]; none of them is imported here.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::rebalance::Received;
use super::{Opened, ServerOptions};
use crate::bounded::BoundedMap;
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::metrics::Metrics;
use crate::net::{self, Env};
use crate::rpc::client::Pool;
use crate::rpc::locator::Locator;
use crate::rpc::message::{
    ServerReply, ServerRequest, ServerStatus, ServiceKind, ViewLeaderReply, ViewLeaderRequest,
};
use crate::storage::identity::{self, Identity, IDENTITY_FORMAT};
use crate::storage::{Disk, Durability, Engine};
use crate::twopc::Participant;
use crate::types::{Epoch, ServerId, ServerInfo, Space, TxId, Version, View, FORMER_IDS_MAX};

/// Request ids remembered for exactly-once single-server writes; a retry arriving after this
/// many later sets would be applied again.
pub const RECENT_REQUESTS_MAX: usize = crate::storage::APPLIED_MAX;

/// What one server knows and holds, under one lock.
pub(super) struct NodeState {
    pub(super) id: ServerId,
    /// The newest view this server has fetched.
    pub(super) view: View,
    /// The newest epoch this server has heard of (a heartbeat reply may run ahead of `view`).
    pub(super) epoch_seen: Epoch,
    /// Every send this server owes for this epoch is acknowledged.
    pub(super) rebalanced_epoch: Epoch,
    /// The ring keys: what 2PC writes and rebalancing moves.
    pub(super) store: Box<dyn Engine>,
    /// The single-server keys (`set`): this server's alone, never moved.
    pub(super) local: Box<dyn Engine>,
    pub(super) participant: Participant,
    /// Stops the running rebalance or drop pass when a newer view supersedes it.
    pub(super) moving: Option<CancellationToken>,
    pub(super) copies_sent: u64,
    /// Keys the running rebalance (or leave) has yet to send or find already held by their
    /// owners: set when it plans, brought down batch by batch, 0 once it is done.
    pub(super) copies_to_send: u64,
    pub(super) keys_dropped: u64,
    /// The keys transfers brought for epochs this server has not planned for yet: the plan of
    /// each epoch does not offer its own back (see `rebalance`, "Copies received before
    /// planning").
    pub(super) received: Received,
    /// Request ids of recent single-server sets and the version each produced, so a retried
    /// set applies once.
    pub(super) recent_sets: BoundedMap<u128, Version>,
    /// Overdue transactions whose termination is under way.
    pub(super) resolving: HashSet<TxId>,
    /// The ids this process held before its current one (expired, then rejoined with its data),
    /// newest last, at most [`FORMER_IDS_MAX`].
    pub(super) former_ids: VecDeque<ServerId>,
    /// The newest settled view this server has heard of (epoch, servers), reported in every
    /// heartbeat. Kept apart from `view`: a restarted view leader's first views know no settled
    /// view, and must not make the server forget the one it would teach it.
    pub(super) last_settled: (Epoch, Vec<ServerInfo>),
}

impl NodeState {
    /// Whether this process is, or was, member `id`: it then holds that member's data and its
    /// transactions, and may answer requests addressed to it.
    pub(super) fn is_or_was(&self, id: &str) -> bool {
        self.id == id || self.former_ids.iter().any(|former| former == id)
    }

    /// The engine of one key space.
    pub(super) fn engine(&self, space: Space) -> &dyn Engine {
        match space {
            Space::Local => &*self.local,
            Space::Ring => &*self.store,
        }
    }

    /// Takes a fresh id after the view leader expired the current one, remembering the old one.
    pub(super) fn rejoin_as(&mut self, fresh: ServerId) {
        let old = std::mem::replace(&mut self.id, fresh);
        self.remember_former(old);
        self.rebalanced_epoch = 0;
    }

    fn remember_former(&mut self, old: ServerId) {
        if old == self.id || self.former_ids.contains(&old) {
            return;
        }
        if self.former_ids.len() >= FORMER_IDS_MAX {
            self.former_ids.pop_front();
        }
        self.former_ids.push_back(old);
    }
}

fn identity_of(node: &NodeState, cluster: &str, addr: &str) -> Identity {
    Identity {
        format: IDENTITY_FORMAT,
        cluster: cluster.to_string(),
        server_id: node.id.clone(),
        addr: addr.to_string(),
        former_ids: node.former_ids.iter().cloned().collect(),
        settled_epoch: node.last_settled.0,
        settled_servers: node.last_settled.1.clone(),
    }
}

/// What `/admin/status` and `/metrics` show of a server.
#[derive(Clone, Debug)]
pub struct NodeSnapshot {
    pub server_id: ServerId,
    pub addr: String,
    pub epoch: Epoch,
    pub servers: Vec<ServerInfo>,
    pub cluster_rebalancing: bool,
    pub rebalanced_epoch: Epoch,
    /// Ring keys held.
    pub keys: u64,
    /// Single-server keys held.
    pub local_keys: u64,
    pub pending_transactions: u64,
    pub copies_sent: u64,
    pub copies_to_send: u64,
    pub keys_dropped: u64,
    /// Requests answered since the server started.
    pub requests: u64,
    pub crashed: bool,
    pub uptime: Duration,
}

/// How a graceful leave went: copies offered to the new owners, copies they stored, and whether
/// every owner acknowledged its share within `mover::LEAVE_HANDOFF_MS_MAX`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Left {
    pub offered: u64,
    pub sent: u64,
    pub complete: bool,
}

/// A running storage server.
pub struct StorageServer {
    pub(super) addr: String,
    pub(super) options: ServerOptions,
    pub(super) env: Env,
    state: Mutex<NodeState>,
    viewleader: Locator<ViewLeaderRequest, ViewLeaderReply>,
    /// Calls to other storage servers (rebalancing, termination).
    pub(super) peers: Pool<ServerRequest, ServerReply>,
    started: Instant,
    /// Wakes the heartbeat loop to report at once (a new id, a finished rebalance).
    pub(super) beat_now: Notify,
    /// Wakes the view follower (a heartbeat reply showed a newer epoch).
    pub(super) view_stale: Notify,
    /// Fires when the server stops, for whatever reason: ends background work.
    pub(super) stopping: CancellationToken,
    /// Fires when a `Decommission` asks this server to leave: [`super::serve`] then leaves as
    /// on SIGTERM (hands its keys over, then stops).
    pub(super) decommission: CancellationToken,
    /// Requests handled since start, for a caller's rate of operations (`client status`).
    pub(super) requests: std::sync::atomic::AtomicU64,
    /// How the graceful leave went, once it is over: what a `Decommission` answers.
    pub(super) left: tokio::sync::watch::Sender<Option<Left>>,
    pub(super) faults: Faults,
    /// Set when a graceful stop begins: no more heartbeats (they would rejoin under a new id).
    pub(super) leaving: AtomicBool,
    pub metrics: Arc<Metrics>,
    /// Waits for the engine's writes to be durable before a reply goes out.
    pub(super) durability: Durability,
    /// The same for the single-server keys' engine.
    pub(super) local_durability: Durability,
    /// Where the identity is kept (a durable server), and the cluster it names.
    data: Option<(Arc<dyn Disk>, String)>,
    /// Held while the identity file is written (see [`StorageServer::record_identity`]).
    identity_writes: Mutex<()>,
}

impl StorageServer {
    /// A server reachable at `addr`, resuming what `opened` recovered, not yet serving. A durable
    /// server comes back under the id its data dir names (the view leader denies it if it
    /// expired meanwhile, and it rejoins under a new one); a fresh one draws an id and records
    /// it before it joins.
    pub(super) fn new(
        addr: String,
        options: ServerOptions,
        env: Env,
        opened: Opened,
        cluster: &str,
    ) -> Result<Self> {
        let Opened {
            engine: store,
            local,
            identity,
            disk,
        } = opened;
        let recovered = store.recovered();
        let durability = store.durability();
        let local_durability = local.durability();
        let mut recent_sets = BoundedMap::new(RECENT_REQUESTS_MAX);
        // A data dir from before the spaces were apart has its sets' ids in the ring log.
        for (request_id, version) in recovered.applied.iter().chain(&local.recovered().applied) {
            recent_sets.insert(*request_id, *version);
        }
        let participant = Participant::restore(recovered, 0);
        let settled = identity
            .as_ref()
            .map(|i| (i.settled_epoch, i.settled_servers.clone()))
            .unwrap_or_default();
        let (id, former) = match identity {
            Some(identity) if identity.addr == addr => (identity.server_id, identity.former_ids),
            // The view knows the old id at the old address, where nobody answers now: this
            // is a new member, which keeps the old one's data and transactions.
            Some(identity) => {
                info!(old_addr = %identity.addr, old_id = %identity.server_id, "restarted at another address; joining under a new id");
                let mut former = identity.former_ids;
                former.push(identity.server_id);
                (env.new_id(), former)
            }
            None => (env.new_id(), Vec::new()),
        };
        let rpc_timeout = Duration::from_millis(options.rpc_timeout_ms);
        let viewleader = Locator::new(
            options.viewleader.clone(),
            net::VIEWLEADER_PORTS,
            Pool::new(ServiceKind::ViewLeader, rpc_timeout, &env),
        );
        let mut node = NodeState {
            id,
            view: View::default(),
            epoch_seen: 0,
            rebalanced_epoch: 0,
            store,
            local,
            participant,
            moving: None,
            copies_sent: 0,
            copies_to_send: 0,
            keys_dropped: 0,
            received: Received::default(),
            recent_sets,
            resolving: HashSet::new(),
            former_ids: VecDeque::new(),
            last_settled: settled,
        };
        // A transaction voted under an id the identity file no longer names (the server
        // rejoined and died before recording it) is still this server's to answer for.
        let voted_as: Vec<ServerId> = node
            .participant
            .voted_as_ids()
            .into_iter()
            .map(str::to_string)
            .collect();
        for old in former.into_iter().chain(voted_as) {
            node.remember_former(old);
        }
        let data = disk.map(|disk| (disk, cluster.to_string()));
        if let Some((disk, cluster)) = &data {
            identity::store(&**disk, &identity_of(&node, cluster, &addr))?;
        }
        Ok(Self {
            state: Mutex::new(node),
            durability,
            local_durability,
            data,
            identity_writes: Mutex::new(()),
            viewleader,
            peers: Pool::new(ServiceKind::Server, rpc_timeout, &env),
            faults: Faults::new(options.faults),
            started: env.now(),
            addr,
            options,
            env,
            beat_now: Notify::new(),
            view_stale: Notify::new(),
            stopping: CancellationToken::new(),
            decommission: CancellationToken::new(),
            left: tokio::sync::watch::Sender::new(None),
            requests: std::sync::atomic::AtomicU64::new(0),
            leaving: AtomicBool::new(false),
            metrics: Arc::new(Metrics::new()),
        })
    }

    /// Records the node's id, former ids and last settled view in its data dir (nothing in
    /// memory mode). Called without the node's lock, since it syncs the disk; the identity
    /// lock keeps two writers from interleaving, and each writes the state as it is when its
    /// turn comes, so a later write is never older than an earlier one.
    pub(super) fn record_identity(&self) -> Result<()> {
        let Some((disk, cluster)) = &self.data else {
            return Ok(());
        };
        let _turn = self
            .identity_writes
            .lock()
            .map_err(|_| Error::Internal("identity lock poisoned".into()))?;
        let identity = identity_of(&*self.node()?, cluster, &self.addr);
        identity::store(&**disk, &identity)
    }

    pub(super) fn node(&self) -> Result<MutexGuard<'_, NodeState>> {
        self.state
            .lock()
            .map_err(|_| Error::Internal("server state poisoned".into()))
    }

    /// Milliseconds since the server started, on the clock of its [`Env`].
    pub(super) fn now_ms(&self) -> u64 {
        self.env.now().duration_since(self.started).as_millis() as u64
    }

    /// This server's current id.
    pub fn id(&self) -> ServerId {
        self.node().map(|n| n.id.clone()).unwrap_or_default()
    }

    /// The address others reach this server at.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn options(&self) -> &ServerOptions {
        &self.options
    }

    /// Where this server's sockets, clocks and random numbers come from.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// Fires when the server stops, for whatever reason.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    pub(super) async fn call_viewleader(
        &self,
        request: ViewLeaderRequest,
        timeout: Duration,
    ) -> Result<ViewLeaderReply> {
        self.viewleader.call(&request, timeout).await
    }

    /// Marks this server rebalanced for `epoch` (if that is still its view) and reports at once.
    pub(super) fn report_rebalanced(&self, epoch: Epoch) {
        if let Ok(mut node) = self.node() {
            if node.view.epoch == epoch {
                node.rebalanced_epoch = epoch;
            }
        }
        self.beat_now.notify_one();
    }

    /// Whether a graceful stop has begun (it then hands its keys over and leaves the view).
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// A consistent picture of this server, for `/admin/status` and `/metrics`.
    pub fn snapshot(&self) -> Result<NodeSnapshot> {
        let node = self.node()?;
        Ok(NodeSnapshot {
            server_id: node.id.clone(),
            addr: self.addr.clone(),
            epoch: node.view.epoch,
            servers: node.view.servers.clone(),
            cluster_rebalancing: node.view.rebalancing,
            rebalanced_epoch: node.rebalanced_epoch,
            keys: node.store.len() as u64,
            local_keys: node.local.len() as u64,
            pending_transactions: node.participant.pending_count() as u64,
            copies_sent: node.copies_sent,
            copies_to_send: node.copies_to_send,
            keys_dropped: node.keys_dropped,
            requests: self.requests.load(Ordering::Relaxed),
            crashed: self.is_crashed(),
            uptime: self.env.now().duration_since(self.started),
        })
    }

    pub(super) fn status(&self) -> Result<ServerStatus> {
        let snapshot = self.snapshot()?;
        Ok(ServerStatus {
            server_id: snapshot.server_id,
            addr: snapshot.addr,
            epoch: snapshot.epoch,
            rebalanced_epoch: snapshot.rebalanced_epoch,
            keys: snapshot.keys,
            local_keys: snapshot.local_keys,
            pending_transactions: snapshot.pending_transactions,
            copies_sent: snapshot.copies_sent,
            keys_dropped: snapshot.keys_dropped,
            copies_to_send: snapshot.copies_to_send,
            requests: snapshot.requests,
        })
    }

    /// Starts or ends a simulated crash (see [`crate::faults`]).
    pub fn set_crashed(&self, crashed: bool) {
        if crashed {
            self.faults.crash();
        } else {
            self.faults.recover();
            self.beat_now.notify_one();
        }
    }

    /// Whether the server is in a simulated crash.
    pub fn is_crashed(&self) -> bool {
        self.faults.is_crashed()
    }

    /// Returns once the server is not crashed (at once if it is not).
    pub(super) async fn wait_until_up(&self) {
        self.faults.wait_until_up().await
    }
}
