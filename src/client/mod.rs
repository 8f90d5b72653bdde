//! The client library: every caller of ringleader (the `client` binary, the demo, the load
//! generator, the tests) goes through [`Client`]. Retries, backoff and timeouts live here, never
//! in callers.
//!
//! * Single-server commands (`print`, `set`, `get`, `query_all_keys`) go to one named server
//!   (`direct`).
//! * `query_servers` and the view cache (`view`) and the locks (`locks`) go to the view leader.
//! * `setr` and `append` coordinate a two-phase commit across the key's replicas
//!   ([`crate::twopc::coordinator`]); `getr` reads a majority of them, `getr --stale` the first that answers
//!   (see `replicated`). Both act on a cached view that is refreshed on an epoch or id
//!   mismatch and at most [`VIEW_CACHE_TTL_MS`] after it was fetched, and both wait (up to
//!   `wait_ms`) while the view leader reports the cluster rebalancing. While the view leader
//!   cannot answer (its members are electing a leader, or none is reachable), they go on with
//!   the view they hold for up to [`VIEW_STALE_MAX_MS`]: the servers check every request's
//!   epoch, so an outdated view is refused there, never acted on.
//! * `load` writes a stream of pairs with `setr`, a bounded number at once; `wait_settled`
//!   waits until the cluster has finished rebalancing (`settle`). Both tell their progress
//!   through a callback, as `decommission` does, and a wait for a rebalancing inside a read or
//!   write is told to the hook of [`Client::on_rebalance_wait`]: the library prints nothing.

mod decommission;
mod direct;
mod load;
mod locate;
mod locks;
mod members;
mod replicated;
mod settle;
mod status;
mod view;

pub use decommission::{Handoff, DECOMMISSION_POLL_MS, DECOMMISSION_WAIT_MS};
pub use load::{
    LoadProgress, LoadReport, LOAD_CONCURRENCY_DEFAULT, LOAD_CONCURRENCY_MAX,
    LOAD_FAILURES_KEPT_MAX,
};
pub use locate::{Location, ReplicaCopy};
pub use settle::{Settling, SETTLE_POLL_MS};
pub use status::{ClusterStatus, ServerStatusOf};
pub use view::{CachedView, RebalanceWait};

pub use crate::faults::CrashPoint;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::net::{self, Env};
use crate::rpc::client::Pool;
use crate::rpc::locator::Locator;
use crate::rpc::message::{
    ServerReply, ServerRequest, ServiceKind, ViewLeaderReply, ViewLeaderRequest,
};
use crate::types::{ServerInfo, Version, Versioned};

/// Default time allowed for one call.
pub const TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default bound on every wait for a retry answer (a busy lock, rebalancing).
pub const WAIT_MS_DEFAULT: u64 = 10_000;
/// A cached view older than this is fetched again before use.
pub const VIEW_CACHE_TTL_MS: u64 = 500;
/// Oldest cached view a read or write goes on with while the view leader cannot answer (no
/// member leads during an election, or none is reachable). Safe at any age, since a replica
/// refuses a request of another epoch; the bound is there so that a client cut off from the
/// view leader for good says so instead of failing every call on a view long gone. Several
/// elections long (one takes 1.5 to 2 s with the default timing).
pub const VIEW_STALE_MAX_MS: u64 = 10_000;
/// Longest a refresh of a cached view, not yet [`VIEW_STALE_MAX_MS`] old, waits for the view
/// leader before the call goes on with the cached view: a healthy view leader answers in well
/// under a millisecond, and a caller should not wait out an election for a view it already has.
pub const VIEW_REFRESH_WAIT_MS: u64 = 250;
/// After a refresh failed, callers go on with the cached view without asking again for this
/// long (as long as a fetched view is trusted), so that a stream of writes during an election
/// pays [`VIEW_REFRESH_WAIT_MS`] once per this, not on every call.
pub const VIEW_REFRESH_RETRY_MS: u64 = 500;
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
    /// Told how each wait for a rebalancing stands ([`Client::on_rebalance_wait`]).
    rebalance_wait: Option<RebalanceWaitHook>,
}

/// What [`Client::on_rebalance_wait`] installs.
pub type RebalanceWaitHook = Box<dyn Fn(&RebalanceWait) + Send + Sync>;

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
                Pool::new(ServiceKind::ViewLeader, connect, &env),
            ),
            servers: Pool::new(ServiceKind::Server, connect, &env),
            env,
            view: Mutex::new(None),
            view_fetch: tokio::sync::Mutex::new(None),
            last_version: std::sync::atomic::AtomicU64::new(0),
            rebalance_wait: None,
            options,
        }
    }

    /// The same client, calling `hook` while a `setr`, `append` or `getr` waits for the cluster
    /// to finish rebalancing: after every look at the view ([`REBALANCE_POLL_MS`] apart) and
    /// once more when the wait is over. It runs on the caller's task, so it must be quick; it
    /// is how a caller shows the wait, as the library prints nothing.
    pub fn on_rebalance_wait(
        mut self,
        hook: impl Fn(&RebalanceWait) + Send + Sync + 'static,
    ) -> Self {
        self.rebalance_wait = Some(Box::new(hook));
        self
    }

    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    pub(crate) fn timeout(&self) -> Duration {
        Duration::from_millis(self.options.timeout_ms)
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

pub(crate) fn unexpected(what: &str, reply: &ViewLeaderReply) -> Error {
    Error::Protocol(format!("unexpected reply to {what}: {reply:?}"))
}

pub(crate) fn unexpected_server(what: &str, reply: &ServerReply) -> Error {
    Error::Protocol(format!("unexpected reply to {what}: {reply:?}"))
}
