//! `GET /health` and `GET /ready` on every HTTP port (a storage server's gateway, a view-leader
//! member's pages), for load balancers and container health checks (Kubernetes' liveness and
//! readiness probes, Docker's `HEALTHCHECK`), which look at the status code alone.
//!
//! * `/health`: 200 `ok` while the process runs. 503 during a simulated crash (`POST /crash`,
//!   `client crash`): the crash stands for a dead process, so a probe should take the node out
//!   as it would a dead one. These two paths answer a crashed node (its other pages close the
//!   connection unanswered) so that a probe tells "crashed on purpose" from "gone".
//! * `/ready`: 200 `ok` when requests sent here will be served. A storage server: it is in the
//!   view it holds, has finished its own rebalancing for that epoch and is not leaving. Other
//!   servers still rebalancing do not count: this node serves meanwhile (a write waits for the
//!   settle as any client's does), and were every node unready together a load balancer would
//!   have nowhere to send anything. A view-leader member: its group has a leader, namely this
//!   member (confirmed by a majority within a lease) or one it follows.
//!
//! Anything else is 503 with one line of plain text saying why, as the other non-data answers of
//! these ports are plain text.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Response, StatusCode};

use super::{text, Gateway};
use crate::server::NodeSnapshot;
use crate::viewleader::ViewLeader;

/// The body of every 200 of `/health` and `/ready`.
pub const OK_BODY: &str = "ok\n";

/// What a crashed node says on both paths.
pub const CRASHED_BODY: &str = "crashed (simulated): answers nothing but recover\n";

/// Why a storage server should not be sent requests, or `None` when it should: from a snapshot
/// of it and whether it is leaving (a graceful stop has begun).
pub fn server_unready_reason(snapshot: &NodeSnapshot, leaving: bool) -> Option<String> {
    if leaving {
        return Some("leaving the view: handing its keys over before it stops".into());
    }
    if !snapshot
        .servers
        .iter()
        .any(|member| member.id == snapshot.server_id)
    {
        return Some(match snapshot.epoch {
            0 => "not in the view: no view from the view leader yet".into(),
            epoch => format!(
                "not in the view of epoch {epoch} ({} servers): not joined yet, or expired",
                snapshot.servers.len()
            ),
        });
    }
    if snapshot.rebalanced_epoch < snapshot.epoch {
        return Some(format!(
            "rebalancing for epoch {}: still copying keys to their new replicas",
            snapshot.epoch
        ));
    }
    None
}

/// `/health` of a storage server.
pub async fn server_health(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    health(gateway.server.is_crashed())
}

/// `/ready` of a storage server.
pub async fn server_ready(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    if gateway.server.is_crashed() {
        return text(StatusCode::SERVICE_UNAVAILABLE, CRASHED_BODY);
    }
    match gateway.server.snapshot() {
        Ok(snapshot) => ready(server_unready_reason(
            &snapshot,
            gateway.server.is_leaving(),
        )),
        Err(err) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {err}\n"),
        ),
    }
}

/// `/health` of a view-leader member.
pub async fn member_health(State(leader): State<Arc<ViewLeader>>) -> Response<Body> {
    health(leader.is_crashed())
}

/// `/ready` of a view-leader member.
pub async fn member_ready(State(leader): State<Arc<ViewLeader>>) -> Response<Body> {
    if leader.is_crashed() {
        return text(StatusCode::SERVICE_UNAVAILABLE, CRASHED_BODY);
    }
    ready(leader.unready_reason())
}

fn health(crashed: bool) -> Response<Body> {
    match crashed {
        true => text(StatusCode::SERVICE_UNAVAILABLE, CRASHED_BODY),
        false => text(StatusCode::OK, OK_BODY),
    }
}

fn ready(unready_reason: Option<String>) -> Response<Body> {
    match unready_reason {
        None => text(StatusCode::OK, OK_BODY),
        Some(why) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::types::ServerInfo;

    fn member(id: &str) -> ServerInfo {
        ServerInfo {
            id: id.into(),
            addr: format!("127.0.0.1:3800{}", id.len()),
        }
    }

    /// Server "me" at epoch 5, in the view and done rebalancing.
    fn settled() -> NodeSnapshot {
        NodeSnapshot {
            server_id: "me".into(),
            addr: "127.0.0.1:38000".into(),
            epoch: 5,
            servers: vec![member("other"), member("me")],
            cluster_rebalancing: false,
            rebalanced_epoch: 5,
            keys: 0,
            local_keys: 0,
            pending_transactions: 0,
            copies_sent: 0,
            copies_to_send: 0,
            keys_dropped: 0,
            requests: 0,
            crashed: false,
            uptime: Duration::from_secs(1),
        }
    }

    #[test]
    fn a_member_done_rebalancing_is_ready() {
        assert_eq!(server_unready_reason(&settled(), false), None);
    }

    #[test]
    fn others_still_rebalancing_do_not_make_a_server_unready() {
        let snapshot = NodeSnapshot {
            cluster_rebalancing: true,
            ..settled()
        };
        assert_eq!(server_unready_reason(&snapshot, false), None);
    }

    #[test]
    fn a_server_rebalancing_for_its_epoch_is_not_ready() {
        let snapshot = NodeSnapshot {
            rebalanced_epoch: 4,
            ..settled()
        };
        let why = server_unready_reason(&snapshot, false).unwrap_or_default();
        assert!(why.starts_with("rebalancing for epoch 5"), "{why}");
    }

    #[test]
    fn a_server_outside_the_view_is_not_ready() {
        let expired = NodeSnapshot {
            servers: vec![member("other")],
            ..settled()
        };
        let why = server_unready_reason(&expired, false).unwrap_or_default();
        assert!(why.starts_with("not in the view of epoch 5"), "{why}");
        let never_joined = NodeSnapshot {
            epoch: 0,
            servers: Vec::new(),
            rebalanced_epoch: 0,
            ..settled()
        };
        let why = server_unready_reason(&never_joined, false).unwrap_or_default();
        assert!(why.contains("no view"), "{why}");
    }

    #[test]
    fn a_leaving_server_is_not_ready() {
        let why = server_unready_reason(&settled(), true).unwrap_or_default();
        assert!(why.starts_with("leaving"), "{why}");
    }
}
