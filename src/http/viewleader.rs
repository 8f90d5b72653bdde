//! A view-leader member's HTTP pages: `/admin/status` (its place in the Raft group and the view
//! it applied, in plain text), `/metrics` (requests by operation, epoch, live servers,
//! crashed, Raft term and indices, in the OpenMetrics text format), and `/health` and `/ready`
//! ([`super::health`]). With a bearer token ([`super::auth`]), `/metrics` and `/admin/status`
//! need it; `/health` and `/ready` never do.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::info;

use super::auth::{self, HttpAuth};
use super::{health, serve_connections, text};
use crate::net::Listener;
use crate::viewleader::ViewLeader;

/// Serves the pages of `leader` on `listener` until `stop` fires, to the callers `auth` admits.
pub async fn serve(
    listener: Box<dyn Listener>,
    leader: Arc<ViewLeader>,
    auth: HttpAuth,
    stop: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "view leader HTTP pages listening");
    }
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/status", get(admin_status))
        .route("/health", get(health::member_health))
        .route("/ready", get(health::member_ready))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            auth::require,
        ))
        .with_state(leader);
    serve_connections(listener, stop, move |request: Request<_>| {
        let router = router.clone();
        async move {
            Ok(router
                .oneshot(request.map(Body::new))
                .await
                .unwrap_or_else(|never| match never {}))
        }
    })
    .await
}

async fn metrics(State(leader): State<Arc<ViewLeader>>) -> Response<Body> {
    let view = leader.view();
    leader.metrics.epoch.set(view.epoch as i64);
    leader.metrics.servers.set(view.servers.len() as i64);
    leader.metrics.crashed.set(i64::from(leader.is_crashed()));
    let status = leader.full_status().await;
    let gauge = |value: Option<u64>| value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    leader.metrics.raft_term.set(gauge(Some(status.term)));
    leader
        .metrics
        .raft_leader
        .set(i64::from(status.role == "leader"));
    leader
        .metrics
        .raft_last_log_index
        .set(gauge(status.last_log_index));
    leader.metrics.raft_committed.set(gauge(status.committed));
    leader.metrics.raft_applied.set(gauge(status.applied));
    leader.metrics.raft_snapshot.set(gauge(status.snapshot));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        leader.metrics.encode(),
    )
        .into_response()
}

async fn admin_status(State(leader): State<Arc<ViewLeader>>) -> Response<Body> {
    let view = leader.view();
    let status = leader.full_status().await;
    let show = |index: Option<u64>| index.map_or("-".to_string(), |i| i.to_string());
    let members = |list: &[(u64, String)]| {
        list.iter()
            .map(|(id, addr)| format!("{id}={addr}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "role: view leader member {} ({})\nterm: {}\nleader: {}\nvoters: {}\nlearners: {}\n\
         last log index: {}\ncommitted: {}\napplied: {}\nsnapshot: {}\npurged: {}\n",
        status.id,
        status.role,
        status.term,
        match (status.leader, &status.leader_addr) {
            (Some(id), Some(addr)) => format!("{id} at {addr}"),
            (Some(id), None) => id.to_string(),
            _ => "none known".into(),
        },
        members(&status.voters),
        members(&status.learners),
        show(status.last_log_index),
        show(status.committed),
        show(status.applied),
        show(status.snapshot),
        show(status.purged),
    );
    out.push_str(&format!(
        "epoch: {}\nrebalancing: {}\nsettled epoch: {}\nservers: {}\n",
        view.epoch,
        view.rebalancing,
        view.settled_epoch,
        view.servers.len()
    ));
    for server in &view.servers {
        out.push_str(&format!("  {} {}\n", server.addr, server.id));
    }
    out.push_str(&format!(
        "crashed: {}\nuptime: {} s\n",
        leader.is_crashed(),
        leader.uptime().as_secs()
    ));
    text(StatusCode::OK, out)
}
