//! The storage server's network shell: it answers requests from the store and the participant,
//! keeps its membership alive (heartbeats), and follows the view (a long poll on the view leader
//! that answers as soon as the epoch moves or the cluster settles), starting a rebalance
//! ([`super::mover`]) for every new view.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ServerOptions;
use crate::error::{Error, Result};
use crate::net;
use crate::rpc::client::Pool;
use crate::rpc::message::{
    ServerReply, ServerRequest, ServerStatus, ServiceKind, ViewLeaderReply, ViewLeaderRequest,
};
use crate::rpc::server::{serve, Handler, ReplyFault};
use crate::storage::{self, Engine, Record};
use crate::twopc::participant::{Context, Overdue, Vote};
use crate::twopc::{Participant, Prepare};
use crate::types::{check_key, check_value};
use crate::types::{Epoch, HeartbeatReply, Op, ServerId, ServerInfo, TxId, TxState, Version, View};

/// How long a view long poll is held open by the view leader before it answers anyway.
pub const WATCH_WAIT_MS: u64 = 10_000;
/// Pause after a failed call to the view leader before the next try of the watch loop.
pub const VIEWLEADER_RETRY_MS: u64 = 200;
/// How often pending transactions are checked against the transaction timeout.
pub const TX_CHECK_MS: u64 = 100;

/// What one server knows and holds.
pub(super) struct Node {
    pub(super) id: ServerId,
    /// The newest view this server has fetched.
    pub(super) view: View,
    /// The newest epoch this server has heard of (a heartbeat reply may run ahead of `view`).
    epoch_seen: Epoch,
    /// Every send this server owes for this epoch is acknowledged.
    pub(super) rebalanced_epoch: Epoch,
    pub(super) store: Box<dyn Engine>,
    pub(super) participant: Participant,
    /// Stops the running rebalance or drop pass when a newer view supersedes it.
    moving: Option<CancellationToken>,
    pub(super) copies_sent: u64,
    pub(super) keys_dropped: u64,
    /// Request ids of recent single-server sets, so a retried set applies once.
    recent_sets: RecentIds,
    /// Overdue transactions whose termination is under way.
    resolving: std::collections::HashSet<TxId>,
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
    pub keys: u64,
    pub pending_transactions: u64,
    pub copies_sent: u64,
    pub keys_dropped: u64,
    pub crashed: bool,
    pub uptime: Duration,
}

/// Request ids remembered for exactly-once single-server writes.
pub const RECENT_REQUESTS_MAX: usize = 100_000;

/// A bounded memory of request ids and the version each produced.
#[derive(Debug, Default)]
struct RecentIds {
    versions: std::collections::HashMap<u128, Version>,
    order: std::collections::VecDeque<u128>,
}

impl RecentIds {
    fn get(&self, id: u128) -> Option<Version> {
        self.versions.get(&id).copied()
    }

    fn insert(&mut self, id: u128, version: Version) {
        if self.versions.insert(id, version).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > RECENT_REQUESTS_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.versions.remove(&oldest);
            }
        }
    }
}

/// A running storage server.
pub struct StorageServer {
    pub(super) addr: String,
    pub(super) options: ServerOptions,
    node: Mutex<Node>,
    viewleader: Pool<ViewLeaderRequest, ViewLeaderReply>,
    started: Instant,
    /// Wakes the heartbeat loop to report at once (a new id, a finished rebalance).
    beat_now: Notify,
    /// Wakes the view follower (a heartbeat reply showed a newer epoch).
    view_stale: Notify,
    /// Calls to other storage servers (rebalancing).
    pub(super) peers: Pool<ServerRequest, ServerReply>,
    /// Fires when the server stops, for whatever reason: ends background work.
    pub(super) stopping: CancellationToken,
    /// A simulated crash: answer nothing but recover, send nothing, keep memory.
    crashed: std::sync::atomic::AtomicBool,
    /// Wakes background work when a simulated crash ends.
    recovered: Notify,
    /// Replies sent, for the fault hook.
    replies: std::sync::atomic::AtomicU64,
    /// Set when a graceful stop begins: no more heartbeats (they would rejoin under a new id).
    pub(super) leaving: std::sync::atomic::AtomicBool,
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
}

impl StorageServer {
    pub(super) fn node(&self) -> Result<MutexGuard<'_, Node>> {
        self.node
            .lock()
            .map_err(|_| Error::Internal("server state poisoned".into()))
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// This server's current id.
    pub fn id(&self) -> ServerId {
        self.node().map(|n| n.id.clone()).unwrap_or_default()
    }

    pub(super) async fn call_viewleader(
        &self,
        request: ViewLeaderRequest,
        timeout: Duration,
    ) -> Result<ViewLeaderReply> {
        let mut last = Error::Unreachable(format!("no view leader at {}", self.options.viewleader));
        for addr in net::candidates(&self.options.viewleader, net::VIEWLEADER_PORTS)? {
            match self.viewleader.call(&addr, &request, timeout).await {
                Ok(reply) => return Ok(reply),
                Err(err) => {
                    self.viewleader.forget(&addr);
                    last = err;
                }
            }
        }
        Err(last)
    }

    async fn heartbeat_once(&self) -> Result<()> {
        if self.leaving.load(std::sync::atomic::Ordering::Acquire) {
            return Ok(());
        }
        let (server_id, epoch_seen, rebalanced_epoch) = {
            let node = self.node()?;
            (node.id.clone(), node.epoch_seen, node.rebalanced_epoch)
        };
        let request = ViewLeaderRequest::Heartbeat {
            server_id: server_id.clone(),
            addr: self.addr.clone(),
            epoch_seen,
            rebalanced_epoch,
        };
        let timeout = Duration::from_millis(self.options.heartbeat_interval_ms.max(100));
        let reply = match self.call_viewleader(request, timeout).await? {
            ViewLeaderReply::Heartbeat(reply) => reply,
            other => {
                return Err(Error::Protocol(format!(
                    "unexpected heartbeat reply {other:?}"
                )))
            }
        };
        let epoch = reply.epoch();
        match reply {
            HeartbeatReply::Accepted { .. } => {}
            HeartbeatReply::Denied { .. } => {
                // We were expired: rejoin as a new server. What we hold stays, as candidate copies
                // that rebalancing reconciles by version.
                let fresh = uuid::Uuid::new_v4().to_string();
                let mut node = self.node()?;
                if node.id == server_id {
                    warn!(old_id = %server_id, new_id = %fresh, "expired by the view leader; rejoining under a new id");
                    node.id = fresh;
                    node.rebalanced_epoch = 0;
                }
                drop(node);
                self.beat_now.notify_one();
            }
            HeartbeatReply::Retry { holder, .. } => {
                debug!(%holder, "address still held by an earlier id; retrying");
            }
        }
        let behind = {
            let mut node = self.node()?;
            node.epoch_seen = node.epoch_seen.max(epoch);
            node.view.epoch < epoch
        };
        if behind {
            self.view_stale.notify_one();
        }
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let interval = Duration::from_millis(self.options.heartbeat_interval_ms);
        let mut failures: u64 = 0;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wait_until_up() => {}
            }
            match self.heartbeat_once().await {
                Ok(()) => {
                    if failures > 0 {
                        info!("view leader reachable again");
                    }
                    failures = 0;
                }
                Err(err) => {
                    // Log the first failure and then every 20th, not every beat.
                    if failures % 20 == 0 {
                        warn!(%err, "heartbeat failed");
                    }
                    failures += 1;
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = self.beat_now.notified() => {}
            }
        }
    }

    /// Follows the view: a long poll answered as soon as the epoch passes ours or the cluster
    /// settles.
    async fn view_loop(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let (epoch_known, rebalancing_known) = self
                .node()
                .map(|n| (n.view.epoch, n.view.rebalancing))
                .unwrap_or((0, true));
            let request = ViewLeaderRequest::WatchView {
                epoch_known,
                rebalancing_known,
                wait_ms: WATCH_WAIT_MS,
            };
            let timeout = Duration::from_millis(WATCH_WAIT_MS + self.options.rpc_timeout_ms);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wait_until_up() => {}
            }
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.call_viewleader(request, timeout) => outcome,
            };
            match outcome {
                // A view that arrives during a simulated crash is not heard.
                Ok(ViewLeaderReply::View(_)) if self.is_crashed() => {}
                Ok(ViewLeaderReply::View(view)) => self.clone().on_view(view),
                Ok(other) => warn!(?other, "unexpected reply to a view watch"),
                Err(_) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(VIEWLEADER_RETRY_MS)) => {}
                        _ = self.view_stale.notified() => {}
                    }
                }
            }
        }
    }

    /// A view arrived: a newer epoch starts a rebalance (stopping any older one); the current
    /// epoch settling starts the pass that drops keys this server no longer owns.
    fn on_view(self: Arc<Self>, view: View) {
        let Ok(mut node) = self.node() else { return };
        let newer = view.epoch > node.view.epoch;
        let settled = view.epoch == node.view.epoch && node.view.rebalancing && !view.rebalancing;
        if !newer && !settled {
            return;
        }
        if let Some(previous) = node.moving.take() {
            previous.cancel();
        }
        let cancel = self.stopping.child_token();
        node.moving = Some(cancel.clone());
        node.epoch_seen = node.epoch_seen.max(view.epoch);
        node.view = view.clone();
        drop(node);
        if newer {
            let member = view.servers.iter().any(|s| s.addr == self.addr);
            info!(
                epoch = view.epoch,
                servers = view.servers.len(),
                member,
                "new view"
            );
            tokio::spawn(self.rebalance(view, cancel));
        } else {
            debug!(epoch = view.epoch, "view settled");
            tokio::spawn(self.drop_unowned(view, cancel));
        }
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
            pending_transactions: node.participant.pending_count() as u64,
            copies_sent: node.copies_sent,
            keys_dropped: node.keys_dropped,
            crashed: self.is_crashed(),
            uptime: self.started.elapsed(),
        })
    }

    /// Starts or ends a simulated crash.
    pub fn set_crashed(&self, crashed: bool) {
        self.crashed
            .store(crashed, std::sync::atomic::Ordering::Release);
        if crashed {
            info!("simulated crash: answering nothing but recover until then");
        } else {
            self.recovered.notify_waiters();
            self.beat_now.notify_one();
            info!("recovered from a simulated crash");
        }
    }

    /// Whether the server is in a simulated crash.
    pub fn is_crashed(&self) -> bool {
        self.crashed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Returns once the server is not crashed (at once if it is not).
    pub(super) async fn wait_until_up(&self) {
        while self.is_crashed() {
            let woken = self.recovered.notified();
            if !self.is_crashed() {
                return;
            }
            woken.await;
        }
    }

    /// Resolves transactions whose coordinator went silent (see `participant`'s termination).
    async fn termination_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut interval = tokio::time::interval(Duration::from_millis(TX_CHECK_MS));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = interval.tick() => {}
            }
            if self.is_crashed() {
                continue;
            }
            let now_ms = self.now_ms();
            let overdue = {
                let Ok(mut guard) = self.node() else { return };
                let node = &mut *guard;
                let me = node.id.clone();
                let overdue = node
                    .participant
                    .overdue(&me, now_ms, self.options.tx_timeout_ms);
                let mut asks = Vec::new();
                for item in overdue {
                    match item {
                        Overdue::Ask { tx, .. } if !node.resolving.insert(tx) => {}
                        Overdue::Ask { .. } => asks.push(item),
                        Overdue::AbortAsPrimary { tx, .. } => {
                            if node.participant.abort(&mut *node.store, tx).is_ok() {
                                asks.push(item);
                            }
                        }
                    }
                }
                asks
            };
            for item in overdue {
                match item {
                    Overdue::AbortAsPrimary { tx, key } => {
                        self.metrics.transaction("abort", "primary_timeout");
                        info!(tx = %format!("{tx:x}"), %key, "coordinator silent; aborted as the primary");
                    }
                    Overdue::Ask { tx, others } => {
                        tokio::spawn(self.clone().terminate(tx, others));
                    }
                }
            }
        }
    }

    async fn terminate(self: Arc<Self>, tx: TxId, others: Vec<ServerInfo>) {
        let timeout = Duration::from_millis(self.options.rpc_timeout_ms);
        let asks = others.iter().map(|other| async {
            let state = match self
                .peers
                .call(&other.addr, &ServerRequest::TxStatus { tx }, timeout)
                .await
            {
                Ok(ServerReply::TxState(state)) => Some(state),
                _ => None,
            };
            (other.clone(), state)
        });
        let answers = futures::future::join_all(asks).await;
        let Ok(mut node) = self.node() else { return };
        let node = &mut *node;
        node.resolving.remove(&tx);
        if self.is_crashed() {
            return;
        }
        let primary_gone = node
            .participant
            .primary_of(tx)
            .is_some_and(|primary| !node.view.servers.iter().any(|s| s.id == primary.id));
        let state = node
            .participant
            .resolve(&mut *node.store, tx, &answers, primary_gone);
        match state {
            TxState::Prepared => return,
            TxState::Committed { .. } => self.metrics.transaction("commit", "termination"),
            TxState::Aborted => self.metrics.transaction("abort", "termination"),
        }
        info!(tx = %format!("{tx:x}"), ?state, "coordinator silent; resolved with the other participants");
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

    fn status(&self) -> Result<ServerStatus> {
        let snapshot = self.snapshot()?;
        Ok(ServerStatus {
            server_id: snapshot.server_id,
            addr: snapshot.addr,
            epoch: snapshot.epoch,
            rebalanced_epoch: snapshot.rebalanced_epoch,
            keys: snapshot.keys,
            pending_transactions: snapshot.pending_transactions,
            copies_sent: snapshot.copies_sent,
            keys_dropped: snapshot.keys_dropped,
        })
    }
}

impl Handler for StorageServer {
    type Request = ServerRequest;
    type Reply = ServerReply;
    const SERVICE: ServiceKind = ServiceKind::Server;

    fn is_answering(&self) -> bool {
        !self.is_crashed()
    }

    fn accepts(&self, request: &ServerRequest) -> bool {
        !self.is_crashed() || self.answers_while_crashed(request)
    }

    fn answers_while_crashed(&self, request: &ServerRequest) -> bool {
        matches!(request, ServerRequest::Recover | ServerRequest::Crash)
    }

    fn reply_fault(&self) -> ReplyFault {
        let faults = self.options.faults;
        if faults.drop_every == 0 && faults.duplicate_every == 0 {
            return ReplyFault::None;
        }
        let n = self
            .replies
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if faults.drop_every > 0 && n % faults.drop_every == 0 {
            ReplyFault::Drop
        } else if faults.duplicate_every > 0 && n % faults.duplicate_every == 0 {
            ReplyFault::Duplicate
        } else {
            ReplyFault::None
        }
    }

    async fn handle(self: Arc<Self>, request: ServerRequest) -> Result<ServerReply> {
        let op = request.name();
        let started = Instant::now();
        let reply = self.clone().dispatch(request).await;
        self.metrics.observe(op, started.elapsed(), reply.is_ok());
        reply
    }
}

impl StorageServer {
    async fn dispatch(self: Arc<Self>, request: ServerRequest) -> Result<ServerReply> {
        match request {
            ServerRequest::Print { text } => {
                println!("{text}");
                info!(%text, "print");
                Ok(ServerReply::Printed)
            }
            ServerRequest::Set {
                key,
                value,
                request_id,
            } => {
                check_key(&key)?;
                check_value(&value)?;
                let mut node = self.node()?;
                if let Some(version) = request_id.and_then(|id| node.recent_sets.get(id)) {
                    // A retry of a set already applied: the same answer, applied once.
                    return Ok(ServerReply::Stored { version });
                }
                if node.participant.is_held(&key) {
                    return Err(Error::Conflict(format!(
                        "{key:?} is held by a pending transaction"
                    )));
                }
                let version = storage::set_local(&mut *node.store, key, value)?;
                if let Some(id) = request_id {
                    node.store.record(&Record::Applied {
                        request_id: id,
                        version,
                    })?;
                    node.recent_sets.insert(id, version);
                }
                Ok(ServerReply::Stored { version })
            }
            ServerRequest::Get { key } => {
                check_key(&key)?;
                Ok(ServerReply::Value(self.node()?.store.get(&key)))
            }
            ServerRequest::QueryAllKeys { after, limit } => {
                let (keys, more) =
                    storage::keys_page(&*self.node()?.store, after.as_deref(), limit as usize);
                Ok(ServerReply::Keys { keys, more })
            }
            ServerRequest::Prepare {
                tx,
                key,
                op,
                epoch,
                expected_server_id,
                version,
                participants,
            } => {
                check_key(&key)?;
                if let Op::Put(value) = &op {
                    check_value(value)?;
                }
                if participants.is_empty() || participants.len() > crate::ring::REPLICATION_COUNT {
                    return Err(Error::InvalidRequest(format!(
                        "a transaction has 1 to {} participants, not {}",
                        crate::ring::REPLICATION_COUNT,
                        participants.len()
                    )));
                }
                let now_ms = self.now_ms();
                let mut node = self.node()?;
                let node = &mut *node;
                let ctx = Context {
                    server_id: &node.id,
                    epoch: node.view.epoch,
                    rebalancing: node.rebalanced_epoch < node.view.epoch,
                    now_ms,
                };
                let args = Prepare {
                    tx,
                    key,
                    op,
                    epoch,
                    expected_server_id,
                    version,
                    participants,
                };
                match node.participant.prepare(&ctx, &mut *node.store, args) {
                    Ok(Vote::Yes) => Ok(ServerReply::Prepared),
                    Ok(Vote::Outdated { above }) => {
                        self.metrics.transaction("vote_no", "outdated");
                        Ok(ServerReply::Outdated { above })
                    }
                    Err(err) => {
                        self.metrics.transaction("vote_no", err.kind());
                        Err(err)
                    }
                }
            }
            ServerRequest::Commit { tx } => {
                let mut node = self.node()?;
                let node = &mut *node;
                node.participant.commit(&mut *node.store, tx)?;
                self.metrics.transaction("commit", "coordinator");
                Ok(ServerReply::Committed)
            }
            ServerRequest::Abort { tx } => {
                let mut node = self.node()?;
                let node = &mut *node;
                node.participant.abort(&mut *node.store, tx)?;
                self.metrics.transaction("abort", "coordinator");
                Ok(ServerReply::Aborted)
            }
            ServerRequest::Read { key } => {
                check_key(&key)?;
                let node = self.node()?;
                Ok(ServerReply::ReadValue {
                    value: node.store.get(&key),
                    epoch: node.view.epoch,
                })
            }
            ServerRequest::Crash => {
                self.crashed
                    .store(true, std::sync::atomic::Ordering::Release);
                info!("simulated crash: answering nothing but recover until then");
                Ok(ServerReply::Crashed(true))
            }
            ServerRequest::Recover => {
                self.crashed
                    .store(false, std::sync::atomic::Ordering::Release);
                self.recovered.notify_waiters();
                self.beat_now.notify_one();
                info!("recovered from a simulated crash");
                Ok(ServerReply::Crashed(false))
            }
            ServerRequest::TxStatus { tx } => {
                let mut node = self.node()?;
                let node = &mut *node;
                Ok(ServerReply::TxState(
                    node.participant.status(&mut *node.store, tx)?,
                ))
            }
            ServerRequest::Transfer { entries, .. } => {
                for (key, _) in &entries {
                    check_key(key)?;
                }
                let stored = self.node()?.store.apply_batch(entries)?;
                Ok(ServerReply::Transferred { stored })
            }
            ServerRequest::Status => Ok(ServerReply::Status(self.status()?)),
            ServerRequest::Versions { keys } => {
                if keys.len() > super::mover::VERSIONS_BATCH_KEYS_MAX {
                    return Err(Error::InvalidRequest(format!(
                        "at most {} keys per versions request",
                        super::mover::VERSIONS_BATCH_KEYS_MAX
                    )));
                }
                let node = self.node()?;
                Ok(ServerReply::Versions(
                    keys.iter().map(|k| node.store.version(k)).collect(),
                ))
            }
        }
    }
}

/// Runs a storage server on `listener` until `shutdown` fires.
pub async fn run(
    listener: TcpListener,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> Result<()> {
    run_until(listener, options, shutdown, CancellationToken::new()).await
}

/// Runs a storage server on `listener`. When `shutdown` fires it leaves gracefully: it tells the
/// view leader it is leaving, hands its keys to their new owners, then returns. When `kill`
/// fires (at any time, also during the handoff) it stops at once, as a crash would.
pub async fn run_until(
    listener: TcpListener,
    options: ServerOptions,
    shutdown: CancellationToken,
    kill: CancellationToken,
) -> Result<()> {
    run_with_http(listener, None, options, shutdown, kill).await
}

/// [`run_until`], also serving the HTTP gateway ([`crate::http`]) on `http` when given.
pub async fn run_with_http(
    listener: TcpListener,
    http: Option<(TcpListener, crate::http::HttpOptions)>,
    options: ServerOptions,
    shutdown: CancellationToken,
    kill: CancellationToken,
) -> Result<()> {
    options.validate()?;
    let bound = listener
        .local_addr()
        .map_err(|err| Error::Internal(format!("listener has no address: {err}")))?;
    let addr = options
        .advertise
        .clone()
        .unwrap_or_else(|| bound.to_string());
    let id = uuid::Uuid::new_v4().to_string();
    info!(%addr, %id, viewleader = %options.viewleader, "storage server starting");
    let rpc_timeout = Duration::from_millis(options.rpc_timeout_ms);
    let stopping = CancellationToken::new();
    let server = Arc::new(StorageServer {
        addr,
        node: Mutex::new(Node {
            id,
            view: View::default(),
            epoch_seen: 0,
            rebalanced_epoch: 0,
            store: Box::new(storage::Memory::new()),
            participant: Participant::default(),
            moving: None,
            copies_sent: 0,
            keys_dropped: 0,
            recent_sets: RecentIds::default(),
            resolving: Default::default(),
        }),
        viewleader: Pool::new(ServiceKind::ViewLeader, rpc_timeout),
        peers: Pool::new(ServiceKind::Server, rpc_timeout),
        options,
        started: Instant::now(),
        beat_now: Notify::new(),
        view_stale: Notify::new(),
        stopping: stopping.clone(),
        crashed: std::sync::atomic::AtomicBool::new(false),
        recovered: Notify::new(),
        replies: std::sync::atomic::AtomicU64::new(0),
        leaving: std::sync::atomic::AtomicBool::new(false),
        metrics: Arc::new(crate::metrics::Metrics::new()),
    });
    // A graceful stop leaves the view and hands the keys over while still serving (clients
    // with an older view still get answers), then stops everything.
    let control = {
        let stopping = stopping.clone();
        let kill = kill.clone();
        let server = server.clone();
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tokio::select! {
                        _ = kill.cancelled() => warn!("killed during the handoff"),
                        _ = server.leave() => {}
                    }
                }
                _ = kill.cancelled() => {}
            }
            stopping.cancel();
        }
    };
    let heartbeats = tokio::spawn(server.clone().heartbeat_loop(stopping.clone()));
    let views = tokio::spawn(server.clone().view_loop(stopping.clone()));
    let terminations = tokio::spawn(server.clone().termination_loop(stopping.clone()));
    let gateway = http.map(|(http_listener, http_options)| {
        tokio::spawn(crate::http::serve(
            http_listener,
            server.clone(),
            http_options,
            stopping.clone(),
            kill.clone(),
        ))
    });
    tokio::join!(control, serve(listener, server.clone(), stopping));
    let _ = heartbeats.await;
    let _ = views.await;
    let _ = terminations.await;
    if let Some(gateway) = gateway {
        let _ = gateway.await;
    }
    Ok(())
}
