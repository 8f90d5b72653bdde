//! The view, as a client knows it: fetched from the view leader, cached with its ring for
//! [`super::VIEW_CACHE_TTL_MS`], fetched once for all the callers who find it stale at the same
//! moment, and waited on while the cluster rebalances. While the view leader cannot answer (an
//! election, or no member reachable) a call goes on with the cached view for up to
//! [`super::VIEW_STALE_MAX_MS`]; a call that asked for a fresh view (after a replica reported
//! another epoch) never does.
//!
//! A wait for a rebalancing is told, as it goes, to the one hook a caller may install
//! ([`Client::on_rebalance_wait`]): the library prints nothing, the `client` binary shows it.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{
    unexpected, Client, REBALANCE_POLL_MS, VIEW_CACHE_TTL_MS, VIEW_REFRESH_RETRY_MS,
    VIEW_REFRESH_WAIT_MS, VIEW_STALE_MAX_MS,
};
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::rpc::message::{ViewLeaderReply, ViewLeaderRequest};
use crate::types::{Epoch, ServerInfo, View};

/// A view and its ring, fetched at one time.
#[derive(Debug)]
pub struct CachedView {
    pub view: View,
    /// Shared with the views before it while the set of servers stays the same: the ring
    /// depends on nothing else, and building it costs thousands of hashes.
    pub ring: Arc<Ring>,
    /// When the query that brought this view went out: nothing older than that is in it.
    pub(super) fetched: Instant,
}

impl CachedView {
    /// The view fetched by a query sent at `fetched`, reusing `previous`'s ring when the
    /// servers are the same.
    pub(super) fn new(view: View, fetched: Instant, previous: Option<&CachedView>) -> Self {
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

/// Whether `err` says only that the view leader could not answer now (no member leads, none
/// answered in time, none reachable), so that a view the caller holds may stand in for its
/// answer. Any other error (a protocol mismatch, a refusal) is the caller's to see.
fn leaderless(err: &Error) -> bool {
    matches!(
        err,
        Error::NotLeader { .. } | Error::Unreachable(_) | Error::Timeout(_)
    )
}

/// Whether two server lists hold the same ids in the same order (a view lists its servers in a
/// stable order, so an unchanged membership compares equal).
fn same_ids(a: &[ServerInfo], b: &[ServerInfo]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.id == y.id)
}

impl Client {
    /// One call to the view leader, finding it in its port range the first time.
    pub(super) async fn viewleader_call(
        &self,
        request: ViewLeaderRequest,
    ) -> Result<ViewLeaderReply> {
        self.viewleader.call(&request, self.timeout()).await
    }

    /// The current view, straight from the view leader.
    pub async fn query_servers(&self) -> Result<View> {
        Ok(self.fetch_view().await?.view.clone())
    }

    /// Asks the view leader for the view and caches it.
    async fn fetch_view(&self) -> Result<Arc<CachedView>> {
        self.fetch_view_within(self.timeout()).await
    }

    /// [`Client::fetch_view`], waiting at most `timeout` for the view leader.
    async fn fetch_view_within(&self, timeout: Duration) -> Result<Arc<CachedView>> {
        let sent = self.env.now();
        match self
            .viewleader
            .call(&ViewLeaderRequest::QueryServers, timeout)
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
    /// query went out after this call is good enough. Without it, the cached view stands in
    /// while the view leader cannot answer (see [`super::VIEW_STALE_MAX_MS`]).
    pub async fn view(&self, refresh: bool) -> Result<Arc<CachedView>> {
        let asked = self.env.now();
        let age = |cached: &CachedView| self.env.now().duration_since(cached.fetched);
        let fresh = |cached: &CachedView| age(cached) < Duration::from_millis(VIEW_CACHE_TTL_MS);
        // The cached view a call may go on with if the view leader does not answer.
        let standby = || {
            self.cached_view()
                .filter(|c| !refresh && age(c) < Duration::from_millis(VIEW_STALE_MAX_MS))
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
            let recent =
                self.env.now().duration_since(*sent) < Duration::from_millis(VIEW_REFRESH_RETRY_MS);
            if *sent >= asked || recent {
                if let Some(cached) = standby().filter(|_| leaderless(err)) {
                    return Ok(cached);
                }
            }
            if *sent >= asked {
                return Err(err.clone());
            }
        }
        let standby = standby();
        let timeout = match standby {
            Some(_) => self
                .timeout()
                .min(Duration::from_millis(VIEW_REFRESH_WAIT_MS)),
            None => self.timeout(),
        };
        let sent = self.env.now();
        let fetched = self.fetch_view_within(timeout).await;
        match fetched {
            Ok(fetched) => {
                *last_failure = None;
                Ok(fetched)
            }
            Err(err) => {
                *last_failure = Some((sent, err.clone()));
                match standby.filter(|_| leaderless(&err)) {
                    Some(cached) => {
                        tracing::debug!(
                            %err,
                            epoch = cached.view.epoch,
                            age_ms = age(&cached).as_millis() as u64,
                            "the view leader did not answer; going on with the cached view"
                        );
                        Ok(cached)
                    }
                    None => Err(err),
                }
            }
        }
    }

    /// A view in which the cluster is not rebalancing, waiting up to `wait_ms` for one.
    pub async fn settled_view(&self, refresh: bool) -> Result<Arc<CachedView>> {
        self.settled_view_until(
            refresh,
            self.env.now() + Duration::from_millis(self.options.wait_ms),
        )
        .await
    }

    /// A view in which the cluster is not rebalancing, waiting until `deadline` for one. While
    /// it waits, the hook installed with [`Client::on_rebalance_wait`] hears of it after every
    /// look at the view, and once more when the wait is over.
    pub async fn settled_view_until(
        &self,
        refresh: bool,
        deadline: Instant,
    ) -> Result<Arc<CachedView>> {
        let started = self.env.now();
        let mut waited_for = None;
        let outcome = self
            .settled_view_waiting(refresh, started, deadline, &mut waited_for)
            .await;
        if let Some(epoch) = waited_for {
            self.tell_rebalance_wait(epoch, started, deadline, true);
        }
        outcome
    }

    /// [`Client::settled_view_until`]'s wait; leaves in `waited_for` the last epoch it waited
    /// on, if it waited.
    async fn settled_view_waiting(
        &self,
        refresh: bool,
        started: Instant,
        deadline: Instant,
        waited_for: &mut Option<Epoch>,
    ) -> Result<Arc<CachedView>> {
        let mut view = self.view(refresh).await?;
        while view.view.rebalancing {
            *waited_for = Some(view.view.epoch);
            self.tell_rebalance_wait(view.view.epoch, started, deadline, false);
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

    fn tell_rebalance_wait(&self, epoch: Epoch, started: Instant, deadline: Instant, over: bool) {
        if let Some(hook) = &self.rebalance_wait {
            hook(&RebalanceWait {
                epoch,
                waited: self.env.now().saturating_duration_since(started),
                budget: deadline.saturating_duration_since(started),
                over,
            });
        }
    }
}

/// How a read's or write's wait for the end of a rebalancing stands: what the hook installed
/// with [`Client::on_rebalance_wait`] is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RebalanceWait {
    /// The epoch the cluster is rebalancing for.
    pub epoch: Epoch,
    /// How long the call has waited so far.
    pub waited: Duration,
    /// How long it may wait in all (its `wait_ms`, or what was left of its deadline).
    pub budget: Duration,
    /// The wait is over (the cluster settled, the budget ran out or the view could not be
    /// had): the last call of this wait.
    pub over: bool,
}
