//! The view leader's HTTP pages: `/admin/status` (the view in plain text) and `/metrics`
//! (requests by operation, epoch, live servers, crashed, in the OpenMetrics text format).

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

use super::{serve_connections, text};
use crate::net::Listener;
use crate::viewleader::ViewLeader;

/// Serves the pages of `leader` on `listener` until `stop` fires.
pub async fn serve(listener: Box<dyn Listener>, leader: Arc<ViewLeader>, stop: CancellationToken) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "view leader HTTP pages listening");
    }
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/status", get(admin_status))
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
    let mut out = format!(
        "role: view leader\nepoch: {}\nrebalancing: {}\nsettled epoch: {}\nmembers: {}\n",
        view.epoch,
        view.rebalancing,
        view.settled_epoch,
        view.servers.len()
    );
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
