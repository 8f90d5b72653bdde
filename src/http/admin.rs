//! A storage server's own pages: `/admin/status` (who it is, the view it holds, its keys,
//! pending transactions and rebalancing, in plain text) and `/metrics` (OpenMetrics text).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Response, StatusCode};
use axum::response::IntoResponse;

use super::{text, Gateway};

pub async fn status(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    let snapshot = match gateway.server.snapshot() {
        Ok(snapshot) => snapshot,
        Err(err) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
    };
    let rebalancing = if snapshot.rebalanced_epoch < snapshot.epoch {
        format!("rebalancing for epoch {}", snapshot.epoch)
    } else if snapshot.cluster_rebalancing {
        format!(
            "done for epoch {} (others still rebalancing)",
            snapshot.epoch
        )
    } else {
        format!("settled at epoch {}", snapshot.epoch)
    };
    let mut out = String::new();
    out.push_str(&format!("node id: {}\n", snapshot.server_id));
    out.push_str(&format!(
        "address: {} (http {})\n",
        snapshot.addr, gateway.local_addr
    ));
    out.push_str("role: storage server\n");
    out.push_str(&format!("epoch: {}\n", snapshot.epoch));
    out.push_str(&format!("members: {}\n", snapshot.servers.len()));
    for member in &snapshot.servers {
        let me = if member.id == snapshot.server_id {
            " (this node)"
        } else {
            ""
        };
        out.push_str(&format!("  {} {}{me}\n", member.addr, member.id));
    }
    out.push_str(&format!("keys held: {}\n", snapshot.keys));
    out.push_str(&format!(
        "single-server keys held: {}\n",
        snapshot.local_keys
    ));
    out.push_str(&format!(
        "pending transactions: {}\n",
        snapshot.pending_transactions
    ));
    out.push_str(&format!("rebalancing: {rebalancing}\n"));
    out.push_str(&format!(
        "copies sent by rebalancing: {}\n",
        snapshot.copies_sent
    ));
    out.push_str(&format!("crashed: {}\n", snapshot.crashed));
    out.push_str(&format!("uptime: {} s\n", snapshot.uptime.as_secs()));
    text(StatusCode::OK, out)
}

pub async fn metrics(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    let metrics = &gateway.server.metrics;
    if let Ok(snapshot) = gateway.server.snapshot() {
        metrics.keys.set(snapshot.keys as i64);
        metrics.copies_sent.set(snapshot.copies_sent as i64);
        metrics.keys_dropped.set(snapshot.keys_dropped as i64);
        metrics.epoch.set(snapshot.epoch as i64);
        metrics.servers.set(snapshot.servers.len() as i64);
        metrics.crashed.set(i64::from(snapshot.crashed));
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
        .into_response()
}
