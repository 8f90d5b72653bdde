//! The mover carries out the rebalancing plans of [`super::rebalance`]: batched transfers to new
//! owners, version offers for candidate copies, dropping keys once their new owners hold them,
//! and the handoff of a server that leaves. Every send is retried until acknowledged or until a
//! newer view makes it moot.
//!
//! When it plans for an epoch it hands the planner the copies transfers of that epoch brought
//! before (the node's [`super::rebalance::Received`], filled by the `Transfer` handler), so that
//! it does not offer them back to their other new replicas: why that is safe is in
//! [`super::rebalance`] ("Copies received before planning").

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::dispatch::VERSIONS_BATCH_KEYS_MAX;
use super::node::{Left, StorageServer};
use super::rebalance::{plan_covered, Covered};
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::rpc::message::{ServerReply, ServerRequest, ViewLeaderReply, ViewLeaderRequest};
use crate::types::{Epoch, Key, ServerId, ServerInfo, Version, Versioned, View};

/// Bytes of keys and values in one transfer; keeps every batch well under the frame limit.
pub const TRANSFER_BATCH_BYTES_MAX: usize = 1024 * 1024;
/// Keys in one transfer.
pub const TRANSFER_BATCH_KEYS_MAX: usize = 20_000;
/// Pause before retrying a failed transfer, doubling up to [`MOVE_RETRY_MS_MAX`].
pub const MOVE_RETRY_MS_MIN: u64 = 50;
pub const MOVE_RETRY_MS_MAX: u64 = 1_000;
/// Longest wait for transactions prepared under an older view before planning anyway.
pub const PENDING_WAIT_MS_MAX: u64 = 10_000;
/// The bound on one rebalance, from a new view to every send acknowledged: long enough for
/// retries around a dead peer until its lease runs out and for relays around a cut link, short
/// enough that nobody waits on a stuck cluster. The simulation fails a run that stays
/// rebalancing longer, and a server that passes it says so.
pub const REBALANCE_STUCK_MS: u64 = 10_000;
/// Longest a leaving server spends handing its keys over.
pub const LEAVE_HANDOFF_MS_MAX: u64 = 30_000;

/// Longest a `Decommission` waits for the handoff it started: the handoff's own bound plus time
/// to leave the view first.
pub const DECOMMISSION_ANSWER_MS_MAX: u64 = LEAVE_HANDOFF_MS_MAX + 5_000;

/// Moves one server's keys; cheap to clone (every send of a plan runs on a clone).
#[derive(Clone)]
pub(super) struct Mover {
    server: Arc<StorageServer>,
}

impl Mover {
    pub(super) fn new(server: Arc<StorageServer>) -> Self {
        Self { server }
    }

    /// Rebalances for `view`: waits out older transactions, plans, sends, reports.
    pub(super) async fn rebalance(self, view: View, cancel: CancellationToken) {
        let epoch = view.epoch;
        let started = self.server.env.now();
        // A key never moves with a decision pending on it.
        loop {
            let pending = self
                .server
                .node()
                .map(|n| n.participant.has_pending_before(epoch))
                .unwrap_or(false);
            if !pending {
                break;
            }
            if self.server.env.now().duration_since(started)
                > Duration::from_millis(PENDING_WAIT_MS_MAX)
            {
                warn!(
                    epoch,
                    "transactions from an older view are still undecided; planning anyway"
                );
                break;
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        let the_plan = {
            let Ok(mut node) = self.server.node() else {
                return;
            };
            let received = node.received.take_for(epoch);
            let covered = Covered::new(received, |key| node.store.version(key), &view.losses);
            let settled = Ring::of_servers(&view.settled_servers);
            let new = Ring::of_servers(&view.servers);
            let the_plan = plan_covered(&node.id, &settled, &new, node.store.scan(None), &covered);
            if !covered.is_empty() {
                debug!(
                    epoch,
                    received = covered.len(),
                    "copies received for this epoch before planning are not offered back"
                );
            }
            the_plan
        };
        let planned = the_plan
            .sends
            .iter()
            .chain(the_plan.offers.iter())
            .map(|(_, keys)| keys.len() as u64)
            .sum();
        self.set_to_send(planned);
        let members = members(&view.servers);
        let sends = the_plan.sends.iter().map(|(target, keys)| {
            let to = member(&members, target);
            let this = self.clone();
            let cancel = cancel.clone();
            async move { this.send_keys(&to, epoch, keys, &cancel).await }
        });
        let offers = the_plan.offers.iter().map(|(target, keys)| {
            let to = member(&members, target);
            let this = self.clone();
            let cancel = cancel.clone();
            async move {
                this.offer_keys(&to, epoch, keys, &cancel)
                    .await
                    .map(|(sent, _)| sent)
            }
        });
        // Nothing waits on this bound (the sends retry until a newer view), but a rebalance that
        // passes it is stuck on something a user should hear about.
        let watchdog = {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(REBALANCE_STUCK_MS)) => warn!(
                        epoch,
                        bound_ms = REBALANCE_STUCK_MS,
                        "rebalance still unfinished past its bound: a peer unreachable even through relays?"
                    ),
                }
            })
        };
        let (sent, offered) = tokio::join!(join_all(sends), join_all(offers));
        watchdog.abort();
        if cancel.is_cancelled() {
            return;
        }
        let copies: u64 = sent
            .iter()
            .chain(offered.iter())
            .filter_map(|r| r.as_ref().ok())
            .sum();
        if let Some(err) = sent
            .iter()
            .chain(offered.iter())
            .find_map(|r| r.as_ref().err())
        {
            // Only a newer view stops the retries, so this is a stop: the next view replans.
            warn!(epoch, %err, "rebalance interrupted");
            return;
        }
        info!(
            epoch,
            copies,
            elapsed_ms = self.server.env.now().duration_since(started).as_millis() as u64,
            "rebalanced"
        );
        self.set_to_send(0);
        self.server.report_rebalanced(epoch);
    }

    /// Once `view` has settled: drops every key this server does not own in it, after each new
    /// owner confirmed a version at least as new (sending it first where not).
    pub(super) async fn drop_unowned(self, view: View, cancel: CancellationToken) {
        let (me, unowned) = {
            let Ok(node) = self.server.node() else { return };
            let me = node.id.clone();
            // A server outside the view may be about to rejoin: it keeps everything.
            if !view.servers.iter().any(|s| s.id == me) {
                return;
            }
            let ring = Ring::of_servers(&view.servers);
            let unowned: Vec<(Key, Version, Vec<ServerId>)> = node
                .store
                .scan(None)
                .filter(|key| !node.participant.is_held(key))
                .filter_map(|key| {
                    let owners = ring.replicas(key);
                    (!owners.is_empty() && !owners.contains(&&me)).then(|| {
                        (
                            key.to_string(),
                            node.store.version(key),
                            owners.into_iter().cloned().collect(),
                        )
                    })
                })
                .collect();
            (me, unowned)
        };
        if unowned.is_empty() {
            return;
        }
        let members = members(&view.servers);
        let mut by_owner: BTreeMap<ServerId, Vec<Key>> = BTreeMap::new();
        for (key, _, owners) in &unowned {
            for owner in owners {
                by_owner.entry(owner.clone()).or_default().push(key.clone());
            }
        }
        let confirmations = join_all(by_owner.iter().map(|(owner, keys)| {
            let to = member(&members, owner);
            let this = self.clone();
            let cancel = cancel.clone();
            async move {
                (
                    owner.clone(),
                    this.offer_keys(&to, view.epoch, keys, &cancel).await,
                )
            }
        }))
        .await;
        if cancel.is_cancelled() {
            return;
        }
        // owner → its confirmed version of each key offered to it.
        let mut confirmed: HashMap<&ServerId, HashMap<&Key, Version>> = HashMap::new();
        for (owner, outcome) in &confirmations {
            match outcome {
                Ok((_, versions)) => {
                    let keys = &by_owner[owner];
                    confirmed.insert(owner, keys.iter().zip(versions.iter().copied()).collect());
                }
                Err(err) => warn!(%owner, %err, "cannot confirm copies; keeping them"),
            }
        }
        let Ok(mut node) = self.server.node() else {
            return;
        };
        let mut dropped = 0u64;
        for (key, version, owners) in &unowned {
            let all_hold = owners.iter().all(|owner| {
                confirmed
                    .get(owner)
                    .and_then(|versions| versions.get(key))
                    .is_some_and(|v| v >= version)
            });
            // Not if it changed since, or a transaction took it meanwhile.
            if all_hold && node.store.version(key) == *version && !node.participant.is_held(key) {
                match node.store.remove(key) {
                    Ok(_) => dropped += 1,
                    Err(err) => warn!(%key, %err, "cannot drop a key owned elsewhere; keeping it"),
                }
            }
        }
        node.keys_dropped = node.keys_dropped.saturating_add(dropped);
        drop(node);
        info!(epoch = view.epoch, dropped, me = %me, "dropped keys owned elsewhere");
    }

    /// A graceful stop: leave the view, then offer every key to its owners in the new view.
    pub(super) async fn leave(self) -> Left {
        self.server
            .leaving
            .store(true, std::sync::atomic::Ordering::Release);
        let started = self.server.env.now();
        let server_id = self.server.id();
        let timeout = Duration::from_millis(self.server.options.rpc_timeout_ms);
        if let Err(err) = self
            .server
            .call_viewleader(ViewLeaderRequest::Leave { server_id }, timeout)
            .await
        {
            warn!(%err, "could not tell the view leader we are leaving; its lease will expire us");
        }
        let view = match self
            .server
            .call_viewleader(ViewLeaderRequest::QueryServers, timeout)
            .await
        {
            Ok(ViewLeaderReply::View(view)) => view,
            _ => {
                warn!("no view to hand keys over to; leaving them to the surviving replicas");
                return Left::default();
            }
        };
        let ring = Ring::of_servers(&view.servers);
        let mut by_owner: BTreeMap<ServerId, Vec<Key>> = BTreeMap::new();
        if let Ok(node) = self.server.node() {
            for key in node.store.scan(None) {
                for owner in ring.replicas(key) {
                    by_owner
                        .entry(owner.clone())
                        .or_default()
                        .push(key.to_string());
                }
            }
        }
        let keys: usize = by_owner.values().map(Vec::len).sum();
        self.set_to_send(keys as u64);
        let members = members(&view.servers);
        let cancel = CancellationToken::new();
        let handoff = join_all(by_owner.iter().map(|(owner, keys)| {
            let to = member(&members, owner);
            let this = self.clone();
            let cancel = cancel.clone();
            async move {
                this.offer_keys(&to, view.epoch, keys, &cancel)
                    .await
                    .map(|(sent, _)| sent)
            }
        }));
        match tokio::time::timeout(Duration::from_millis(LEAVE_HANDOFF_MS_MAX), handoff).await {
            Ok(results) => {
                let sent: u64 = results.iter().filter_map(|r| r.as_ref().ok()).sum();
                info!(
                    offered = keys,
                    sent,
                    elapsed_ms = self.server.env.now().duration_since(started).as_millis() as u64,
                    "left the cluster"
                );
                Left {
                    offered: keys as u64,
                    sent,
                    complete: results.iter().all(Result::is_ok),
                }
            }
            Err(_) => {
                cancel.cancel();
                warn!(
                    "handoff did not finish in time; the surviving replicas re-replicate the rest"
                );
                Left {
                    offered: keys as u64,
                    ..Left::default()
                }
            }
        }
    }

    /// Sends the current copies of `keys` to member `to` in batches; retries each batch until it
    /// is acknowledged or `cancel` fires. Returns the number of copies sent.
    async fn send_keys(
        &self,
        to: &ServerInfo,
        epoch: Epoch,
        keys: &[Key],
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let mut sent = 0u64;
        let mut rest = keys;
        while !rest.is_empty() {
            let (batch, used) = self.batch(rest)?;
            rest = &rest[used..];
            // Keys no longer held were skipped: nothing left to send of them.
            self.sent_or_skipped((used - batch.len()) as u64);
            if batch.is_empty() {
                continue;
            }
            let count = batch.len() as u64;
            let request = ServerRequest::Transfer {
                epoch,
                server_id: to.id.clone(),
                entries: batch,
            };
            self.call_member_until(to, request, cancel).await?;
            self.sent_or_skipped(count);
            sent = sent.saturating_add(count);
            if let Ok(mut node) = self.server.node() {
                node.copies_sent = node.copies_sent.saturating_add(count);
            }
        }
        Ok(sent)
    }

    /// Asks member `to` for its versions of `keys`, sends those it lacks or holds older, and
    /// returns (copies sent, the versions it now holds, in the order of `keys`).
    async fn offer_keys(
        &self,
        to: &ServerInfo,
        epoch: Epoch,
        keys: &[Key],
        cancel: &CancellationToken,
    ) -> Result<(u64, Vec<Version>)> {
        let mut sent: u64 = 0;
        let mut held = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(VERSIONS_BATCH_KEYS_MAX) {
            let request = ServerRequest::Versions {
                keys: chunk.to_vec(),
                server_id: to.id.clone(),
            };
            let theirs = match self.call_member_until(to, request, cancel).await? {
                ServerReply::Versions(versions) if versions.len() == chunk.len() => versions,
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected reply to versions: {other:?}"
                    )))
                }
            };
            let mine: Vec<Version> = {
                let node = self.server.node()?;
                chunk.iter().map(|k| node.store.version(k)).collect()
            };
            let wanted: Vec<Key> = chunk
                .iter()
                .zip(theirs.iter().zip(&mine))
                .filter(|(_, (theirs, mine))| theirs < mine)
                .map(|(key, _)| key.clone())
                .collect();
            // Keys the owner already holds as new: nothing to send of them.
            self.sent_or_skipped((chunk.len() - wanted.len()) as u64);
            sent = sent.saturating_add(self.send_keys(to, epoch, &wanted, cancel).await?);
            held.extend(
                theirs
                    .iter()
                    .zip(&mine)
                    .map(|(theirs, mine)| (*theirs).max(*mine)),
            );
        }
        Ok((sent, held))
    }

    /// A rebalance (or leave) planned `copies` sends: what `Status` reports as still to send.
    fn set_to_send(&self, copies: u64) {
        if let Ok(mut node) = self.server.node() {
            node.copies_to_send = copies;
        }
    }

    /// `copies` of the plan are done: sent, or found not to need sending.
    fn sent_or_skipped(&self, copies: u64) {
        if let Ok(mut node) = self.server.node() {
            node.copies_to_send = node.copies_to_send.saturating_sub(copies);
        }
    }

    /// The next transfer batch from the front of `keys`: (entries, keys consumed). Keys no
    /// longer held are skipped.
    fn batch(&self, keys: &[Key]) -> Result<(Vec<(Key, Versioned)>, usize)> {
        let node = self.server.node()?;
        let mut entries = Vec::new();
        let mut bytes = 0;
        let mut used = 0;
        for key in keys {
            let Some(versioned) = node.store.get(key) else {
                used += 1;
                continue;
            };
            let size = key.len() + versioned.value.len_bytes() + 16;
            if !entries.is_empty()
                && (bytes + size > TRANSFER_BATCH_BYTES_MAX
                    || entries.len() >= TRANSFER_BATCH_KEYS_MAX)
            {
                break;
            }
            bytes += size;
            used += 1;
            entries.push((key.clone(), versioned));
        }
        Ok((entries, used))
    }

    /// One call to another member, retried with backoff until it succeeds or `cancel` fires.
    /// Each attempt after a failed direct call goes through relays ([`super::peers`]), so one
    /// cut link does not hold the rebalance up.
    async fn call_member_until(
        &self,
        to: &ServerInfo,
        request: ServerRequest,
        cancel: &CancellationToken,
    ) -> Result<ServerReply> {
        let mut backoff_ms = MOVE_RETRY_MS_MIN;
        let mut attempt: usize = 0;
        loop {
            // A crashed server sends nothing.
            tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Refused("superseded by a newer view".into())),
                _ = self.server.wait_until_up() => {}
            }
            let outcome = tokio::select! {
                _ = cancel.cancelled() => return Err(Error::Refused("superseded by a newer view".into())),
                outcome = self.server.call_member(to, &request, attempt) => outcome,
            };
            attempt = attempt.wrapping_add(1);
            match outcome {
                Ok(reply) => return Ok(reply),
                Err(err) if err.is_retryable() => {
                    tracing::debug!(addr = %to.addr, %err, backoff_ms, "peer call failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return Err(Error::Refused("superseded by a newer view".into())),
                        _ = tokio::time::sleep(Duration::from_millis(backoff_ms)) => {}
                    }
                    backoff_ms = (backoff_ms * 2).min(MOVE_RETRY_MS_MAX);
                }
                Err(err) => return Err(err),
            }
        }
    }
}

fn members(servers: &[ServerInfo]) -> HashMap<ServerId, ServerInfo> {
    servers.iter().map(|s| (s.id.clone(), s.clone())).collect()
}

/// The member with id `id`. Plans only name members of the view they were made for; an unknown
/// id gets an address nobody listens at, so its sends fail and retry until a newer view.
fn member(members: &HashMap<ServerId, ServerInfo>, id: &ServerId) -> ServerInfo {
    members.get(id).cloned().unwrap_or_else(|| ServerInfo {
        id: id.clone(),
        addr: String::new(),
    })
}

impl StorageServer {
    /// Leaves as on SIGTERM and answers once the handoff is over (the server stops right after).
    pub(super) async fn decommission(&self) -> Result<ServerReply> {
        info!("asked to decommission");
        self.decommission.cancel();
        let mut left = self.left.subscribe();
        let wait = Duration::from_millis(DECOMMISSION_ANSWER_MS_MAX);
        let settled = async { left.wait_for(Option::is_some).await.map(|left| *left) };
        match tokio::time::timeout(wait, settled).await {
            Ok(Ok(left)) => {
                let left = left.unwrap_or_default();
                Ok(ServerReply::Decommissioned {
                    offered: left.offered,
                    sent: left.sent,
                    complete: left.complete,
                })
            }
            Ok(Err(_)) | Err(_) => Err(Error::Timeout(format!(
                "the handoff of {} did not end within {DECOMMISSION_ANSWER_MS_MAX} ms",
                self.addr
            ))),
        }
    }
}
