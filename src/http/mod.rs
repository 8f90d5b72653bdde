//! Every HTTP router of ringleader. The gateway of a storage server (`server --http-port`): any
//! node serves any key by acting as the client (2PC coordinator) on the caller's behalf; and the
//! view leader's pages ([`viewleader`], `viewleader --http-port`).
//!
//! * [`keys`]: the REST key/value API (`GET`/`POST /keys/{key}`, lists of strings), the contract
//!   of the PySyncObj assignment; `docs/openapi.yaml` publishes it.
//! * [`log`]: the consistent distributed log of INF-3203 (`PUT /` appends an entry, `POST /crash`,
//!   `/recover`, `/exit`).
//! * [`admin`]: `/admin/status` (text) and `/metrics` (Prometheus text format).
//! * [`health`]: `/health` and `/ready` for load balancers and container health checks, on the
//!   gateway and on the view leader's pages.
//! * [`auth`]: the bearer token (`--http-token-file`) every router checks before any handler.
//!
//! Connections are served by hyper directly rather than `axum::serve`, because two answers of
//! the log contract are "close the connection without any response" (a crashed node, an entry
//! that could not be committed in time): the service then returns an error, and hyper drops the
//! connection unanswered.

pub mod admin;
pub mod auth;
pub mod health;
pub mod keys;
pub mod log;
pub mod viewleader;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::client::{Client, ClientOptions};
use crate::net::{self, Listener};
use crate::server::StorageServer;

/// Connections the gateway serves at once; the accept loop waits beyond it.
pub const HTTP_CONNECTIONS_MAX: usize = 1024;
/// Largest request body accepted, in bytes (a value list or a log entry).
pub const HTTP_BODY_BYTES_MAX: usize = 1024 * 1024;

/// How the gateway runs.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The view leader, for the gateway's own client.
    pub viewleader: String,
    /// The list-valued key that holds the distributed log.
    pub log_key: String,
    /// `{output_id}` of the file `/exit` writes.
    pub log_output_id: String,
    /// Time a log entry may take to commit before the node gives up on it.
    pub log_commit_ms: u64,
    /// Time the node keeps serving other nodes after `/exit`.
    pub exit_linger_ms: u64,
    /// Who may use the gateway (`--http-token-file`, `--http-read-open`); default: everybody.
    pub auth: auth::HttpAuth,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            viewleader: "localhost:39000".into(),
            log_key: "log".into(),
            log_output_id: "run".into(),
            log_commit_ms: log::LOG_COMMIT_MS_DEFAULT,
            exit_linger_ms: log::EXIT_LINGER_MS_DEFAULT,
            auth: auth::HttpAuth::default(),
        }
    }
}

/// What every handler shares.
pub struct Gateway {
    pub server: Arc<StorageServer>,
    pub client: Client,
    pub options: HttpOptions,
    /// The gateway's own address, `host:port` (the `/exit` file is named after it).
    pub local_addr: String,
    /// Set by `/exit`: no more log entries are accepted.
    pub exiting: AtomicBool,
    /// Ends the whole process (after `/exit`'s linger).
    pub kill: CancellationToken,
}

/// A response marker: drop the connection instead of answering.
#[derive(Clone, Copy, Debug)]
pub struct DropConnection;

/// The response that tells the connection layer to close without answering.
pub fn drop_connection() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    response.extensions_mut().insert(DropConnection);
    response
}

/// Serves the gateway of `server` on `listener` until `stop` fires; `/exit` fires `kill`.
pub async fn serve(
    listener: Box<dyn Listener>,
    server: Arc<StorageServer>,
    options: HttpOptions,
    stop: CancellationToken,
    kill: CancellationToken,
) {
    let local_addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(err) => {
            warn!(%err, "the HTTP listener has no address");
            return;
        }
    };
    let client = Client::with_env(
        ClientOptions {
            viewleader: options.viewleader.clone(),
            timeout_ms: log::GATEWAY_RPC_TIMEOUT_MS,
            wait_ms: options.log_commit_ms,
        },
        server.env().clone(),
    );
    let gateway = Arc::new(Gateway {
        server,
        client,
        options,
        local_addr: local_addr.clone(),
        exiting: AtomicBool::new(false),
        kill,
    });
    let router = router(gateway.clone());
    info!(%local_addr, "HTTP gateway listening");
    serve_connections(listener, stop, move |request| {
        answer(router.clone(), gateway.clone(), request)
    })
    .await
}

/// Serves HTTP/1 connections from `listener` until `stop` fires, at most
/// [`HTTP_CONNECTIONS_MAX`] at once, each request through `answer`. An `Err` from `answer`
/// closes the connection without a response.
pub async fn serve_connections<F, Fut>(
    listener: Box<dyn Listener>,
    stop: CancellationToken,
    answer: F,
) where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, std::io::Error>> + Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(HTTP_CONNECTIONS_MAX));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = net::accept(&*listener) => accepted,
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(answer);
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = connection.await {
                debug!(%peer, %err, "HTTP connection ended");
            }
            drop(permit);
        });
    }
}

/// Routes one request, or refuses to answer it (crashed node, entry not committed in time).
async fn answer(
    router: Router,
    gateway: Arc<Gateway>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, std::io::Error> {
    let path = request.uri().path().to_string();
    // The health paths answer a crashed node too, with a 503 (see `health`).
    let always = matches!(path.as_str(), "/recover" | "/exit" | "/health" | "/ready");
    if gateway.server.is_crashed() && !always {
        return Err(std::io::Error::other("crashed: no answer"));
    }
    let response = router
        .oneshot(request.map(Body::new))
        .await
        .unwrap_or_else(|never| match never {});
    if response.extensions().get::<DropConnection>().is_some() {
        return Err(std::io::Error::other("closing without an answer"));
    }
    Ok(response)
}

/// Every route of the gateway, behind the bearer-token check ([`auth`]), which runs first (also
/// for unknown paths) so that a refused request reaches no handler.
fn router(gateway: Arc<Gateway>) -> Router {
    let auth = Arc::new(gateway.options.auth.clone());
    Router::new()
        .route("/keys/{*key}", get(keys::get_key).post(keys::post_key))
        .route("/", put(log::put_entry))
        .route("/crash", post(log::crash))
        .route("/recover", post(log::recover))
        .route("/exit", post(log::exit))
        .route("/admin/status", get(admin::status))
        .route("/metrics", get(admin::metrics))
        .route("/health", get(health::server_health))
        .route("/ready", get(health::server_ready))
        .layer(axum::extract::DefaultBodyLimit::max(HTTP_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(auth, auth::require))
        .with_state(gateway)
}

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Whether the gateway still takes log entries.
pub fn accepting(gateway: &Gateway) -> bool {
    !gateway.exiting.load(Ordering::Acquire)
}
