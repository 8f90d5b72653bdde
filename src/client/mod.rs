//! The client library: every caller of ringleader (the `client` binary, the demo, the load
//! generator, the tests) goes through [`Client`]. Retries, backoff and timeouts live here, never
//! in callers.
//!
//! * Single-server commands (`print`, `set`, `get`, `query_all_keys`) go to one named server.
//! * `query_servers` and the locks go to the view leader.
//! * `setr` coordinates a two-phase commit across the key's replicas ([`coordinator`]); `getr`
//!   reads them in ring order. Both act on a cached view that is refreshed on an epoch or id
//!   mismatch and at most [`VIEW_CACHE_TTL_MS`] after it was fetched, and both wait (up to
//!   `wait_ms`) while the view leader reports the cluster rebalancing.

pub mod coordinator;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use crate::error::{Error, Result};
use crate::net;
use crate::ring::Ring;
use crate::rpc::client::Pool;
use crate::rpc::message::{
    FencingToken, Key, LockReply, Op, ServerInfo, ServerReply, ServerRequest, ServiceKind, Value,
    Version, Versioned, View, ViewLeaderReply, ViewLeaderRequest,
};
use crate::server::store::{check_key, check_value, KEYS_PAGE_MAX};
use coordinator::{Coordinator, Decision};

/// Default time allowed for one call.
pub const TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default bound on every wait for a retry answer (a busy lock, rebalancing).
pub const WAIT_MS_DEFAULT: u64 = 10_000;
/// A cached view older than this is fetched again before use.
pub const VIEW_CACHE_TTL_MS: u64 = 500;
/// Pause between polls of a busy lock.
pub const LOCK_POLL_MS: u64 = 100;
/// Pause between polls of the rebalancing flag.
pub const REBALANCE_POLL_MS: u64 = 50;
/// `setr` attempts when the view changed under it (each after a fresh view).
pub const SETR_ATTEMPTS_MAX: usize = 3;
/// First pause before retrying a write that met another transaction on its key; it doubles up
/// to [`CONFLICT_BACKOFF_MS_MAX`], with jitter, until `wait_ms` runs out.
pub const CONFLICT_BACKOFF_MS_MIN: u64 = 1;
pub const CONFLICT_BACKOFF_MS_MAX: u64 = 50;

/// How a client reaches the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientOptions {
    /// The view leader, `host[:port]`; without a port 39000–39010 are tried in turn.
    pub viewleader: String,
    /// Time allowed for one call.
    pub timeout_ms: u64,
    /// Bound on waiting out a busy lock or a rebalance.
    pub wait_ms: u64,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            viewleader: "localhost:39000".into(),
            timeout_ms: TIMEOUT_MS_DEFAULT,
            wait_ms: WAIT_MS_DEFAULT,
        }
    }
}

/// A view and its ring, fetched at one time.
#[derive(Debug)]
pub struct CachedView {
    pub view: View,
    pub ring: Ring,
    fetched: Instant,
}

impl CachedView {
    fn new(view: View) -> Self {
        let ring = Ring::of_servers(&view.servers);
        Self {
            view,
            ring,
            fetched: Instant::now(),
        }
    }

    /// The replicas of `key` in ring order, primary first.
    pub fn replicas(&self, key: &str) -> Vec<ServerInfo> {
        self.ring
            .replicas(key)
            .into_iter()
            .filter_map(|id| self.view.servers.iter().find(|s| &s.id == id).cloned())
            .collect()
    }
}

/// The result of a successful `setr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetrOutcome {
    pub version: Version,
    pub epoch: u64,
    pub replicas: Vec<ServerInfo>,
}

/// The result of a `getr` that found its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetrOutcome {
    pub value: Versioned,
    pub replica: ServerInfo,
}

/// A handle on the cluster; cheap to share behind an `Arc`, safe to use from many tasks.
pub struct Client {
    options: ClientOptions,
    viewleaders: Pool<ViewLeaderRequest, ViewLeaderReply>,
    servers: Pool<ServerRequest, ServerReply>,
    viewleader_addr: Mutex<Option<String>>,
    view: Mutex<Option<Arc<CachedView>>>,
}

impl Client {
    pub fn new(options: ClientOptions) -> Self {
        let connect = Duration::from_millis(options.timeout_ms);
        Self {
            viewleaders: Pool::new(ServiceKind::ViewLeader, connect),
            servers: Pool::new(ServiceKind::Server, connect),
            viewleader_addr: Mutex::new(None),
            view: Mutex::new(None),
            options,
        }
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.options.timeout_ms)
    }

    // ----- the view leader -------------------------------------------------------------------

    /// One call to the view leader, finding it in its port range the first time.
    async fn viewleader_call(&self, request: ViewLeaderRequest) -> Result<ViewLeaderReply> {
        let known = self.viewleader_addr.lock().ok().and_then(|a| a.clone());
        if let Some(addr) = known {
            match self
                .viewleaders
                .call(&addr, request.clone(), self.timeout())
                .await
            {
                Err(Error::Unreachable(_)) => self.viewleaders.forget(&addr),
                other => return other,
            }
        }
        let mut last = Error::Unreachable(format!("no view leader at {}", self.options.viewleader));
        for addr in net::candidates(&self.options.viewleader, net::VIEWLEADER_PORTS)? {
            match self.viewleaders.get(&addr).await {
                Ok(_) => {
                    if let Ok(mut known) = self.viewleader_addr.lock() {
                        *known = Some(addr.clone());
                    }
                    return self.viewleaders.call(&addr, request, self.timeout()).await;
                }
                // Something else answers there: keep scanning, but remember why.
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// The current view, straight from the view leader.
    pub async fn query_servers(&self) -> Result<View> {
        match self
            .viewleader_call(ViewLeaderRequest::QueryServers)
            .await?
        {
            ViewLeaderReply::View(view) => {
                self.remember_view(view.clone());
                Ok(view)
            }
            other => Err(unexpected("query_servers", &other)),
        }
    }

    fn remember_view(&self, view: View) -> Arc<CachedView> {
        let cached = Arc::new(CachedView::new(view));
        if let Ok(mut slot) = self.view.lock() {
            // Never replace a newer view with an older answer that raced it.
            match slot.as_ref() {
                Some(current) if current.view.epoch > cached.view.epoch => return current.clone(),
                _ => *slot = Some(cached.clone()),
            }
        }
        cached
    }

    /// The cached view if fresh, else a newly fetched one.
    pub async fn view(&self, refresh: bool) -> Result<Arc<CachedView>> {
        if !refresh {
            let cached = self.view.lock().ok().and_then(|v| v.clone());
            if let Some(cached) = cached {
                if cached.fetched.elapsed() < Duration::from_millis(VIEW_CACHE_TTL_MS) {
                    return Ok(cached);
                }
            }
        }
        let view = self.query_servers().await?;
        Ok(Arc::new(CachedView::new(view)))
    }

    /// A view in which the cluster is not rebalancing, waiting up to `wait_ms` for one.
    pub async fn settled_view(&self, refresh: bool) -> Result<Arc<CachedView>> {
        let deadline = Instant::now() + Duration::from_millis(self.options.wait_ms);
        let mut view = self.view(refresh).await?;
        while view.view.rebalancing {
            if Instant::now() >= deadline {
                return Err(Error::Rebalancing(format!(
                    "the cluster is still rebalancing for epoch {} after waiting {} ms; try again later",
                    view.view.epoch, self.options.wait_ms
                )));
            }
            tokio::time::sleep(Duration::from_millis(REBALANCE_POLL_MS)).await;
            view = self.view(true).await?;
        }
        Ok(view)
    }

    /// One `lock_get`: granted, or queued (retry), or deadlock.
    pub async fn lock_get(&self, lock: &str, requester: &str) -> Result<LockReply> {
        let request = ViewLeaderRequest::LockGet {
            lock: lock.into(),
            requester: requester.into(),
        };
        match self.viewleader_call(request).await? {
            ViewLeaderReply::Lock(reply) => Ok(reply),
            other => Err(unexpected("lock_get", &other)),
        }
    }

    /// `lock_get` until granted, polling up to `wait_ms`; `on_wait` sees every retry answer.
    pub async fn lock_get_wait(
        &self,
        lock: &str,
        requester: &str,
        mut on_wait: impl FnMut(&LockReply),
    ) -> Result<FencingToken> {
        let deadline = Instant::now() + Duration::from_millis(self.options.wait_ms);
        loop {
            match self.lock_get(lock, requester).await? {
                LockReply::Granted { token } => return Ok(token),
                LockReply::Deadlock { cycle } => {
                    return Err(Error::Deadlock(format!(
                        "{requester} waiting for {lock:?} would close the cycle {}",
                        cycle.join(" -> ")
                    )))
                }
                reply @ LockReply::Retry { .. } => {
                    if Instant::now() >= deadline {
                        let LockReply::Retry { holder, position } = reply else {
                            unreachable!()
                        };
                        return Err(Error::LockBusy(format!(
                            "{lock:?} is still held by {holder} ({requester} is number {position} in line) \
                             after waiting {} ms",
                            self.options.wait_ms
                        )));
                    }
                    on_wait(&reply);
                    tokio::time::sleep(Duration::from_millis(LOCK_POLL_MS)).await;
                }
                other => return Err(unexpected("lock_get", &ViewLeaderReply::Lock(other))),
            }
        }
    }

    pub async fn lock_release(&self, lock: &str, requester: &str) -> Result<LockReply> {
        let request = ViewLeaderRequest::LockRelease {
            lock: lock.into(),
            requester: requester.into(),
        };
        match self.viewleader_call(request).await? {
            ViewLeaderReply::Lock(reply) => Ok(reply),
            other => Err(unexpected("lock_release", &other)),
        }
    }

    // ----- one server ------------------------------------------------------------------------

    /// The address of the server named by `target` (`host[:port]`; without a port the first of
    /// 38000–38010 that answers as a storage server).
    pub async fn resolve_server(&self, target: &str) -> Result<String> {
        let candidates = net::candidates(target, net::SERVER_PORTS)?;
        if candidates.len() == 1 {
            return Ok(candidates.into_iter().next().unwrap_or_default());
        }
        let mut last = Error::Unreachable(format!("no storage server at {target}"));
        for addr in candidates {
            match self.servers.get(&addr).await {
                Ok(_) => return Ok(addr),
                Err(err) => last = err,
            }
        }
        Err(last)
    }

    /// One call to the server at `addr`.
    pub async fn server_call(&self, addr: &str, request: ServerRequest) -> Result<ServerReply> {
        let reply = self.servers.call(addr, request, self.timeout()).await;
        if let Err(Error::Unreachable(_) | Error::Timeout(_)) = reply {
            self.servers.forget(addr);
        }
        reply
    }

    pub async fn print(&self, addr: &str, text: &str) -> Result<()> {
        match self
            .server_call(addr, ServerRequest::Print { text: text.into() })
            .await?
        {
            ServerReply::Printed => Ok(()),
            other => Err(unexpected_server("print", &other)),
        }
    }

    pub async fn set(&self, addr: &str, key: &str, value: Value) -> Result<Version> {
        check_key(key)?;
        check_value(&value)?;
        match self
            .server_call(
                addr,
                ServerRequest::Set {
                    key: key.into(),
                    value,
                },
            )
            .await?
        {
            ServerReply::Stored { version } => Ok(version),
            other => Err(unexpected_server("set", &other)),
        }
    }

    pub async fn get(&self, addr: &str, key: &str) -> Result<Option<Versioned>> {
        check_key(key)?;
        match self
            .server_call(addr, ServerRequest::Get { key: key.into() })
            .await?
        {
            ServerReply::Value(value) => Ok(value),
            other => Err(unexpected_server("get", &other)),
        }
    }

    /// The server's identity, epoch, load and rebalancing counters.
    pub async fn status(&self, addr: &str) -> Result<crate::rpc::message::ServerStatus> {
        match self.server_call(addr, ServerRequest::Status).await? {
            ServerReply::Status(status) => Ok(status),
            other => Err(unexpected_server("status", &other)),
        }
    }

    /// Every key the server holds, fetched a page at a time.
    pub async fn query_all_keys(&self, addr: &str) -> Result<Vec<Key>> {
        let mut all = Vec::new();
        let mut after: Option<Key> = None;
        loop {
            let request = ServerRequest::QueryAllKeys {
                after: after.clone(),
                limit: KEYS_PAGE_MAX as u32,
            };
            match self.server_call(addr, request).await? {
                ServerReply::Keys { keys, more } => {
                    after = keys.last().cloned();
                    all.extend(keys);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                other => return Err(unexpected_server("query_all_keys", &other)),
            }
        }
    }

    // ----- replicated keys -------------------------------------------------------------------

    /// Writes `value` at `key` on all its replicas, or on none (two-phase commit).
    pub async fn setr(&self, key: &str, value: Value) -> Result<SetrOutcome> {
        check_key(key)?;
        check_value(&value)?;
        let deadline = Instant::now() + Duration::from_millis(self.options.wait_ms);
        let mut view = self.settled_view(false).await?;
        let mut attempt = 1;
        let mut backoff_ms = CONFLICT_BACKOFF_MS_MIN;
        loop {
            match self.setr_once(&view, key, Op::Put(value.clone())).await {
                Ok(outcome) => return Ok(outcome),
                // Another writer holds the key: it is decided within a timeout, so wait (the
                // same bound as any retry answer), then report the conflict.
                Err(err @ Error::Conflict(_)) => {
                    if Instant::now() >= deadline {
                        return Err(err);
                    }
                    let jitter = rand::random::<u64>() % backoff_ms.max(1);
                    tokio::time::sleep(Duration::from_millis(backoff_ms + jitter)).await;
                    backoff_ms = (backoff_ms * 2).min(CONFLICT_BACKOFF_MS_MAX);
                }
                Err(err) if attempt < SETR_ATTEMPTS_MAX && self.worth_another_view(&err) => {
                    let fresh = self.settled_view(true).await?;
                    // The same view would give the same answer: report it instead.
                    if fresh.view == view.view {
                        return Err(err);
                    }
                    tracing::debug!(%err, epoch = fresh.view.epoch, "setr retrying under a newer view");
                    view = fresh;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Errors that a newer view may cure.
    fn worth_another_view(&self, err: &Error) -> bool {
        matches!(
            err,
            Error::StaleView(_) | Error::Rebalancing(_) | Error::Unreachable(_) | Error::Timeout(_)
        )
    }

    async fn setr_once(&self, view: &CachedView, key: &str, op: Op) -> Result<SetrOutcome> {
        let replicas = view.replicas(key);
        if replicas.is_empty() {
            return Err(Error::Unreachable(format!(
                "no storage servers in the view (epoch {}): cannot store {key:?}",
                view.view.epoch
            )));
        }
        let tx: u128 = rand::random();
        let mut coordinator =
            Coordinator::new(tx, key.to_string(), op, view.view.epoch, replicas.clone());
        let mut votes: FuturesUnordered<_> = (0..replicas.len())
            .map(|index| {
                let request = coordinator.prepare(index);
                let addr = replicas[index].addr.clone();
                async move {
                    let vote = match self.server_call(&addr, request).await {
                        Ok(ServerReply::Prepared { version }) => Ok(version),
                        Ok(other) => Err(unexpected_server("prepare", &other)),
                        Err(err) => Err(name_replica(err, &addr)),
                    };
                    (index, vote)
                }
            })
            .collect();
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            match tokio::time::timeout_at(deadline, votes.next()).await {
                Ok(Some((index, vote))) => {
                    if coordinator.on_vote(index, vote).is_some() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    coordinator.on_timeout();
                    break;
                }
            }
        }
        drop(votes);
        let message = coordinator
            .decision_message()
            .ok_or_else(|| Error::Internal("2PC ended undecided".into()))?;
        // Every participant hears the decision, including ones whose vote never arrived.
        let acks: Vec<Result<ServerReply>> = futures::future::join_all(
            replicas
                .iter()
                .map(|replica| self.server_call(&replica.addr, message.clone())),
        )
        .await;
        match coordinator.decision().cloned() {
            Some(Decision::Commit { version }) => {
                for (replica, ack) in replicas.iter().zip(&acks) {
                    if let Err(err) = ack {
                        // The decision is made; a replica that missed it is either dead (and will
                        // be rebalanced away) or will be reconciled by version.
                        tracing::warn!(%err, replica = %replica.addr, "commit not acknowledged");
                    }
                }
                Ok(SetrOutcome {
                    version,
                    epoch: view.view.epoch,
                    replicas,
                })
            }
            Some(Decision::Abort { reason }) => Err(reason),
            None => Err(Error::Internal("2PC ended undecided".into())),
        }
    }

    /// Reads `key` from its replicas in ring order until a live one holds it. `Ok(None)`: no
    /// live replica has the key.
    pub async fn getr(&self, key: &str) -> Result<Option<GetrOutcome>> {
        check_key(key)?;
        let asked = Instant::now();
        let view = self.settled_view(false).await?;
        let from_cache = view.fetched < asked;
        match self.getr_in(&view, key).await {
            // With a cached view a miss may only mean the view moved on: look once more.
            Ok(None) | Err(Error::Unreachable(_) | Error::Timeout(_)) if from_cache => {
                let fresh = self.settled_view(true).await?;
                self.getr_in(&fresh, key).await
            }
            other => other,
        }
    }

    async fn getr_in(&self, view: &CachedView, key: &str) -> Result<Option<GetrOutcome>> {
        let replicas = view.replicas(key);
        if replicas.is_empty() {
            return Err(Error::Unreachable(format!(
                "no storage servers in the view (epoch {}): cannot read {key:?}",
                view.view.epoch
            )));
        }
        let mut answered = false;
        let mut last_err = None;
        for replica in replicas {
            match self.get(&replica.addr, key).await {
                Ok(Some(value)) => return Ok(Some(GetrOutcome { value, replica })),
                Ok(None) => answered = true,
                Err(err) => last_err = Some(name_replica(err, &replica.addr)),
            }
        }
        match (answered, last_err) {
            (true, _) | (false, None) => Ok(None),
            (false, Some(err)) => Err(err),
        }
    }
}

fn name_replica(err: Error, addr: &str) -> Error {
    match err {
        Error::Unreachable(msg) if !msg.contains(addr) => {
            Error::Unreachable(format!("replica {addr}: {msg}"))
        }
        Error::Timeout(msg) if !msg.contains(addr) => {
            Error::Timeout(format!("replica {addr}: {msg}"))
        }
        other => other,
    }
}

fn unexpected(what: &str, reply: &ViewLeaderReply) -> Error {
    Error::Protocol(format!("unexpected reply to {what}: {reply:?}"))
}

fn unexpected_server(what: &str, reply: &ServerReply) -> Error {
    Error::Protocol(format!("unexpected reply to {what}: {reply:?}"))
}
