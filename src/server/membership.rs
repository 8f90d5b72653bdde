//! Staying in the view and following it. A server proves it is alive with a heartbeat every
//! interval (its first heartbeat is its join), and keeps one long poll (`WatchView`) open on the
//! view leader, answered the moment the epoch moves or the cluster settles: that is how a new
//! view reaches every server at once. A newer view starts a rebalance ([`super::mover`]); the
//! current view settling starts the pass that drops keys owned elsewhere.
//!
//! A heartbeat answered `Denied` means the view leader expired this id (the server was paused or
//! cut off for longer than the lease): the server rejoins under a fresh id, keeping what it holds
//! as candidate copies that rebalancing reconciles by version.
//!
//! # Deliberately left out
//! * Split brain: a server cut off from the view leader keeps serving with the last view it
//!   holds; the epoch and id checks of 2PC keep it from committing with others who moved on.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::mover::Mover;
use super::node::StorageServer;
use crate::error::{Error, Result};
use crate::rpc::message::{ViewLeaderReply, ViewLeaderRequest};
use crate::types::{Heartbeat, HeartbeatReply, View};

/// How long a view long poll is held open by the view leader before it answers anyway.
pub const WATCH_WAIT_MS: u64 = 10_000;
/// Pause after a failed call to the view leader before the next try of the watch loop.
pub const VIEWLEADER_RETRY_MS: u64 = 200;
/// The shortest time a heartbeat waits for its answer, however short the interval.
pub const HEARTBEAT_TIMEOUT_MS_MIN: u64 = 100;
/// Failed heartbeats between two warnings about them (the first is always logged).
pub const HEARTBEAT_FAILURES_PER_WARNING: u64 = 20;

/// Sends a heartbeat every interval, or at once when asked to, until `stop` fires.
pub(super) async fn heartbeats(server: Arc<StorageServer>, stop: CancellationToken) {
    let interval = Duration::from_millis(server.options.heartbeat_interval_ms);
    let mut failures: u64 = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = server.wait_until_up() => {}
        }
        match heartbeat_once(&server).await {
            Ok(()) => {
                if failures > 0 {
                    info!("view leader reachable again");
                }
                failures = 0;
            }
            Err(err) => {
                if failures.is_multiple_of(HEARTBEAT_FAILURES_PER_WARNING) {
                    warn!(%err, "heartbeat failed");
                }
                failures = failures.saturating_add(1);
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = server.beat_now.notified() => {}
        }
    }
}

async fn heartbeat_once(server: &StorageServer) -> Result<()> {
    if server.is_leaving() {
        return Ok(());
    }
    let (server_id, request) = {
        let node = server.node()?;
        let request = ViewLeaderRequest::Heartbeat(Heartbeat {
            server_id: node.id.clone(),
            addr: server.addr.clone(),
            epoch_seen: node.epoch_seen,
            rebalanced_epoch: node.rebalanced_epoch,
            settled_epoch: node.last_settled.0,
            settled_servers: node.last_settled.1.clone(),
            former_ids: node.former_ids.iter().cloned().collect(),
        });
        (node.id.clone(), request)
    };
    let timeout = Duration::from_millis(
        server
            .options
            .heartbeat_interval_ms
            .max(HEARTBEAT_TIMEOUT_MS_MIN),
    );
    let reply = match server.call_viewleader(request, timeout).await? {
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
            let fresh = server.env.new_id();
            let mut node = server.node()?;
            let rejoined = node.id == server_id;
            if rejoined {
                warn!(old_id = %server_id, new_id = %fresh, "expired by the view leader; rejoining under a new id");
                node.rejoin_as(fresh);
            }
            drop(node);
            if rejoined {
                // Recorded before the new id beats: a restart must not come back as an id the
                // view leader has already seen expire, knowing nothing of the new one.
                server.record_identity()?;
            }
            server.beat_now.notify_one();
        }
        HeartbeatReply::Retry { holder, .. } => {
            debug!(%holder, "address still held by an earlier id; retrying");
        }
    }
    let behind = {
        let mut node = server.node()?;
        node.epoch_seen = node.epoch_seen.max(epoch);
        node.view.epoch < epoch
    };
    if behind {
        server.view_stale.notify_one();
    }
    Ok(())
}

/// Follows the view until `stop` fires: a long poll answered as soon as the epoch passes ours
/// or the cluster settles.
pub(super) async fn follow_view(server: Arc<StorageServer>, stop: CancellationToken) {
    loop {
        let (epoch_known, rebalancing_known) = server
            .node()
            .map(|n| (n.view.epoch, n.view.rebalancing))
            .unwrap_or((0, true));
        let request = ViewLeaderRequest::WatchView {
            epoch_known,
            rebalancing_known,
            wait_ms: WATCH_WAIT_MS,
        };
        let timeout = Duration::from_millis(WATCH_WAIT_MS + server.options.rpc_timeout_ms);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = server.wait_until_up() => {}
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            outcome = server.call_viewleader(request, timeout) => outcome,
            // A heartbeat saw a newer epoch than the poll knows: its answer was lost (the view
            // leader was cut off or restarted while it was open), so ask again now rather than
            // wait out the poll's timeout, which would hold the cluster's rebalancing up.
            _ = server.view_stale.notified() => continue,
        };
        match outcome {
            // A view that arrives during a simulated crash is not heard.
            Ok(ViewLeaderReply::View(_)) if server.is_crashed() => {}
            Ok(ViewLeaderReply::View(view)) => on_view(&server, view),
            Ok(other) => warn!(?other, "unexpected reply to a view watch"),
            Err(_) => {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(VIEWLEADER_RETRY_MS)) => {}
                    _ = server.view_stale.notified() => {}
                }
            }
        }
    }
}

/// A view arrived: a newer epoch starts a rebalance (stopping any older one); the current epoch
/// settling starts the pass that drops keys this server no longer owns.
fn on_view(server: &Arc<StorageServer>, view: View) {
    let Ok(mut node) = server.node() else { return };
    let newer = view.epoch > node.view.epoch;
    let settled = view.epoch == node.view.epoch && node.view.rebalancing && !view.rebalancing;
    if !newer && !settled {
        return;
    }
    let newest_loss = node.view.losses.last().map(|loss| loss.epoch);
    if let Some(loss) = view.losses.last().filter(|l| Some(l.epoch) != newest_loss) {
        warn!(
            epoch = loss.epoch,
            survivors = loss.survivors.len(),
            "the view settled without every replica of some keys: their data may be lost"
        );
    }
    if let Some(previous) = node.moving.take() {
        previous.cancel();
    }
    let cancel = server.stopping.child_token();
    node.moving = Some(cancel.clone());
    node.epoch_seen = node.epoch_seen.max(view.epoch);
    let newly_settled = view.settled_epoch > node.last_settled.0;
    if newly_settled {
        node.last_settled = (view.settled_epoch, view.settled_servers.clone());
    }
    node.view = view.clone();
    drop(node);
    // Kept on disk too (outside the node's lock: it syncs): after the view leader and every
    // server restart, the servers are the ones that tell it which view was last settled
    // (else it waits, blind, for the membership to keep still).
    if newly_settled {
        if let Err(err) = server.record_identity() {
            warn!(%err, "could not record the settled view in the data dir");
        }
    }
    let mover = Mover::new(server.clone());
    if newer {
        let member = view.servers.iter().any(|s| s.addr == server.addr);
        info!(
            epoch = view.epoch,
            servers = view.servers.len(),
            member,
            "new view"
        );
        tokio::spawn(mover.rebalance(view, cancel));
    } else {
        debug!(epoch = view.epoch, "view settled");
        tokio::spawn(mover.drop_unowned(view, cancel));
    }
}
