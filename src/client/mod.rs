//! The client library: every caller of ringleader (the `client` binary, the demo, the load
//! generator, the tests) goes through [`Client`]. Retries, backoff and timeouts live here, never
//! in callers.
//!
//! * Single-server commands (`print`, `set`, `get`, `query_all_keys`) go to one named server.
//! * `query_servers` and the locks go to the view leader.
//! * `setr` and `append` coordinate a two-phase commit across the key's replicas
//!   ([`crate::twopc::coordinator`]); `getr` reads a majority of them, `getr --stale` the first that answers
//!   (see `replicated`). Both act on a cached view that is refreshed on an epoch or id
//!   mismatch and at most [`VIEW_CACHE_TTL_MS`] after it was fetched, and both wait (up to
//!   `wait_ms`) while the view leader reports the cluster rebalancing.

mod replicated;

pub use replicated::CrashPoint;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::net::{self, Env};
use crate::ring::Ring;
use crate::rpc::client::Pool;
use crate::rpc::locator::Locator;
use crate::rpc::message::{
    ServerReply, ServerRequest, ServiceKind, ViewLeaderReply, ViewLeaderRequest,
};
use crate::types::{check_key, check_value, KEYS_PAGE_MAX};
use crate::types::{FencingToken, Key, LockReply, ServerInfo, Value, Version, Versioned, View};

/// Default time allowed for one call.
pub const TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default bound on every wait for a retry answer (a busy lock, rebalancing).
pub const WAIT_MS_DEFAULT: u64 = 10_000;
/// A cached view older than this is fetched again before use.
pub const VIEW_CACHE_TTL_MS: u64 = 500;
/// Pause between polls of a busy lock.
pub const LOCK_POLL_MS: u64 = 100;
/// Pause between polls of the view while waiting for it to drop an unreachable replica.
pub const VIEW_POLL_MS: u64 = 50;
/// Pause between polls of the rebalancing flag.
pub const REBALANCE_POLL_MS: u64 = 50;
/// Tries of one idempotent call (a set with its request id, a prepare, commit or abort with its
/// transaction id) after a timeout or a broken connection.
pub const RPC_ATTEMPTS_MAX: usize = 3;
/// Attempts of one `setr`, `append` or `getr` when the view changed under it (each after a fresh
/// view).
pub const VIEW_ATTEMPTS_MAX: usize = 3;
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
    /// Shared with the views before it while the set of servers stays the same: the ring
    /// depends on nothing else, and building it costs thousands of hashes.
    pub ring: Arc<Ring>,
    /// When the query that brought this view went out: nothing older than that is in it.
    fetched: Instant,
}

impl CachedView {
    /// The view fetched by a query sent at `fetched`, reusing `previous`'s ring when the
    /// servers are the same.
    fn new(view: View, fetched: Instant, previous: Option<&CachedView>) -> Self {
        let ring = match previous {
            Some(previous) if same_ids(&previous.view.servers, &view.servers) => {
                previous.ring.clone()
            }
            _ => Arc::new(Ring::of_servers(&view.servers)),
        };
        Self {
            view,
            ring,
            fetched,
        }
    }

    /// The replicas of `key` in ring order, primary first.
    pub fn replicas(&self, key: &str) -> Vec<ServerInfo> {
        self.replicas_borrowed(key).into_iter().cloned().collect()
    }

    /// [`CachedView::replicas`] without copying them, for a caller that only reads them.
    pub fn replicas_borrowed(&self, key: &str) -> Vec<&ServerInfo> {
        self.ring
            .replicas(key)
            .into_iter()
            .filter_map(|id| self.view.servers.iter().find(|s| &s.id == id))
            .collect()
    }
}

/// Whether two server lists hold the same ids in the same order (a view lists its servers in a
/// stable order, so an unchanged membership compares equal).
fn same_ids(a: &[ServerInfo], b: &[ServerInfo]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.id == y.id)
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
    /// Where ids, jitter, proposed versions and deadlines come from.
    pub(crate) env: Env,
    viewleader: Locator<ViewLeaderRequest, ViewLeaderReply>,
    servers: Pool<ServerRequest, ServerReply>,
    view: Mutex<Option<Arc<CachedView>>>,
    /// Held while one caller fetches the view, so that the callers who find the cache stale at
    /// the same moment share one query instead of each sending their own. It keeps the last
    /// failed fetch (when it was sent, and why) so those waiters share the failure too rather
    /// than each waiting out its own timeout in turn.
    view_fetch: tokio::sync::Mutex<Option<(Instant, Error)>>,
    /// The last version this client proposed; proposals only grow.
    last_version: std::sync::atomic::AtomicU64,
}

impl Client {
    /// A client on the real network, clocks and randomness.
    pub fn new(options: ClientOptions) -> Self {
        Self::with_env(options, Env::real())
    }

    /// A client that takes its sockets, clocks and random numbers from `env`.
    pub fn with_env(options: ClientOptions, env: Env) -> Self {
        let connect = Duration::from_millis(options.timeout_ms);
        Self {
            viewleader: Locator::new(
                options.viewleader.clone(),
                net::VIEWLEADER_PORTS,
                Pool::new(ServiceKind::ViewLeader, connect, env.transport.clone()),
            ),
            servers: Pool::new(ServiceKind::Server, connect, env.transport.clone()),
            env,
            view: Mutex::new(None),
            view_fetch: tokio::sync::Mutex::new(None),
            last_version: std::sync::atomic::AtomicU64::new(0),
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
        self.viewleader.call(&request, self.timeout()).await
    }

    /// The current view, straight from the view leader.
    pub async fn query_servers(&self) -> Result<View> {
        Ok(self.fetch_view().await?.view.clone())
    }

    /// Asks the view leader for the view and caches it.
    async fn fetch_view(&self) -> Result<Arc<CachedView>> {
        let sent = self.env.now();
        match self
            .viewleader_call(ViewLeaderRequest::QueryServers)
            .await?
        {
            ViewLeaderReply::View(view) => Ok(self.remember_view(view, sent)),
            other => Err(unexpected("query_servers", &other)),
        }
    }

    fn cached_view(&self) -> Option<Arc<CachedView>> {
        self.view.lock().ok().and_then(|v| v.clone())
    }

    /// Caches `view` (fetched by a query sent at `sent`) unless a newer one is already cached;
    /// returns whichever is cached.
    fn remember_view(&self, view: View, sent: Instant) -> Arc<CachedView> {
        let Ok(mut slot) = self.view.lock() else {
            return Arc::new(CachedView::new(view, sent, None));
        };
        // Never replace a newer view with an older answer that raced it.
        if let Some(current) = slot.as_ref() {
            if current.view.epoch > view.epoch {
                return current.clone();
            }
        }
        let cached = Arc::new(CachedView::new(view, sent, slot.as_deref()));
        *slot = Some(cached.clone());
        cached
    }

    /// The cached view if fresh, else a newly fetched one. With `refresh`, only a view whose
    /// query went out after this call is good enough.
    pub async fn view(&self, refresh: bool) -> Result<Arc<CachedView>> {
        let asked = self.env.now();
        let fresh = |cached: &CachedView| {
            self.env.now().duration_since(cached.fetched) < Duration::from_millis(VIEW_CACHE_TTL_MS)
        };
        if !refresh {
            if let Some(cached) = self.cached_view().filter(|c| fresh(c)) {
                return Ok(cached);
            }
        }
        let mut last_failure = self.view_fetch.lock().await;
        // Whoever held the lock before us may have fetched (or failed to) since we asked.
        if let Some(cached) = self.cached_view() {
            if cached.fetched >= asked || (!refresh && fresh(&cached)) {
                return Ok(cached);
            }
        }
        if let Some((sent, err)) = last_failure.as_ref() {
            if *sent >= asked {
                return Err(err.clone());
            }
        }
        let sent = self.env.now();
        let fetched = self.fetch_view().await;
        match &fetched {
            Ok(_) => *last_failure = None,
            Err(err) => *last_failure = Some((sent, err.clone())),
        }
        fetched
    }

    /// A view in which the cluster is not rebalancing, waiting up to `wait_ms` for one.
    pub async fn settled_view(&self, refresh: bool) -> Result<Arc<CachedView>> {
        self.settled_view_until(
            refresh,
            self.env.now() + Duration::from_millis(self.options.wait_ms),
        )
        .await
    }

    /// A view in which the cluster is not rebalancing, waiting until `deadline` for one.
    pub async fn settled_view_until(
        &self,
        refresh: bool,
        deadline: Instant,
    ) -> Result<Arc<CachedView>> {
        let started = self.env.now();
        let mut view = self.view(refresh).await?;
        while view.view.rebalancing {
            if self.env.now() >= deadline {
                return Err(Error::Rebalancing(format!(
                    "the cluster is still rebalancing for epoch {} after waiting {} ms; try again later",
                    view.view.epoch,
                    self.env.now().duration_since(started).as_millis()
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
        let deadline = self.env.now() + Duration::from_millis(self.options.wait_ms);
        loop {
            match self.lock_get(lock, requester).await? {
                LockReply::Granted { token } => return Ok(token),
                LockReply::Deadlock { cycle } => {
                    return Err(Error::Deadlock(format!(
                        "{requester} waiting for {lock:?} would close the cycle {}",
                        cycle.join(" -> ")
                    )))
                }
                LockReply::Retry { holder, position } => {
                    if self.env.now() >= deadline {
                        return Err(Error::LockBusy(format!(
                            "{lock:?} is still held by {holder} ({requester} is number {position} in line) \
                             after waiting {} ms",
                            self.options.wait_ms
                        )));
                    }
                    on_wait(&LockReply::Retry { holder, position });
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
        self.server_call_ref(addr, &request).await
    }

    async fn server_call_ref(&self, addr: &str, request: &ServerRequest) -> Result<ServerReply> {
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

    /// Stores `value` at `key` on one server. A retry after a timeout or a broken connection
    /// carries the same request id, so the server applies the write once.
    pub async fn set(&self, addr: &str, key: &str, value: Value) -> Result<Version> {
        check_key(key)?;
        check_value(&value)?;
        let request_id = Some(self.env.random_u128());
        let request = ServerRequest::Set {
            key: key.into(),
            value,
            request_id,
        };
        match self.call_retrying(addr, request, RPC_ATTEMPTS_MAX).await? {
            ServerReply::Stored { version } => Ok(version),
            other => Err(unexpected_server("set", &other)),
        }
    }

    /// One call, repeated (the same request, so the same ids) after a timeout or a broken
    /// connection, up to `attempts` times. Only for requests the server applies at most once.
    pub(crate) async fn call_retrying(
        &self,
        addr: &str,
        request: ServerRequest,
        attempts: usize,
    ) -> Result<ServerReply> {
        let mut attempt = 1;
        loop {
            match self.server_call_ref(addr, &request).await {
                Err(Error::Timeout(_) | Error::Unreachable(_)) if attempt < attempts => {
                    tracing::debug!(%addr, attempt, "retrying with the same request id");
                    attempt += 1;
                }
                other => return other,
            }
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

    /// Starts (`true`) or ends a simulated crash of the server at `addr`; returns the new state.
    pub async fn set_crashed(&self, addr: &str, crash: bool) -> Result<bool> {
        let request = if crash {
            ServerRequest::Crash
        } else {
            ServerRequest::Recover
        };
        match self.server_call(addr, request).await? {
            ServerReply::Crashed(crashed) => Ok(crashed),
            other => Err(unexpected_server("crash", &other)),
        }
    }

    /// Starts (`true`) or ends a simulated crash of the view leader; returns the new state.
    pub async fn set_viewleader_crashed(&self, crash: bool) -> Result<bool> {
        let request = if crash {
            ViewLeaderRequest::Crash
        } else {
            ViewLeaderRequest::Recover
        };
        match self.viewleader_call(request).await? {
            ViewLeaderReply::Crashed(crashed) => Ok(crashed),
            other => Err(unexpected("crash", &other)),
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
}

pub(crate) fn name_replica(err: Error, addr: &str) -> Error {
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

pub(crate) fn unexpected_server(what: &str, reply: &ServerReply) -> Error {
    Error::Protocol(format!("unexpected reply to {what}: {reply:?}"))
}
