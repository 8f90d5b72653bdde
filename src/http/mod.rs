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
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::Router;
use futures::FutureExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::{debug, info, warn};

use crate::client::{Client, ClientOptions};
use crate::net::admission::{Admission, Caps, Class};
use crate::net::{self, Listener};
use crate::server::StorageServer;

/// Connections the gateway holds at once. A newcomer beyond it sheds the oldest idle one (see
/// [`crate::net::admission`]; slow-header clients first) and is refused with a 503 only if
/// every one has a request in flight. As many as the RPC port: a gateway is one node's front.
pub const HTTP_CONNECTIONS_MAX: usize = 1024;
/// Connections held at once from one remote address: a quarter of [`HTTP_CONNECTIONS_MAX`], so
/// one address cannot crowd out everyone else's idle connections, with room for a load
/// balancer or a proxy that brings many clients from one address.
pub const HTTP_CONNECTIONS_PER_ADDRESS_MAX: usize = 256;
/// Shed connections still closing on top of [`HTTP_CONNECTIONS_MAX`]; newcomers are refused
/// beyond it. Each closes within [`HTTP_CLOSE_GRACE_MS`].
pub const HTTP_CLOSING_MAX: usize = 256;
/// A connection that has not sent its first request head after this long is shed before any
/// other when a cap is reached, in ms (slow-header clients first); a younger one is shed after
/// the older idle ones, so a newcomer is not shed before it could send its head.
pub const HTTP_HEAD_GRACE_MS: u64 = 1_000;
/// A client must send a whole request head within this time, in ms, or the connection is
/// closed (hyper's `header_read_timeout`; hyper also starts it while a kept-alive connection
/// waits for its next request). A real client sends its head in one write; 10 s covers a slow
/// link, and a slow-header client gives its socket back within it.
pub const HTTP_HEADER_READ_TIMEOUT_MS: u64 = 10_000;
/// A connection with no request being handled for this long is closed, in ms: a kept-alive
/// connection between requests (already bounded by the header timeout), and one whose client
/// stopped reading our response. 30 s lets a slow client read the largest response.
pub const HTTP_IDLE_TIMEOUT_MS: u64 = 30_000;
/// Longest one request may take from its head to its response, in ms, body included: a client
/// that promises a body and sends it slowly, or never, would otherwise hold its connection (a
/// request in flight is never idle) for as long as it likes. The slowest legitimate request, a
/// log append, waits at most `log::LOG_COMMIT_MS_DEFAULT` (4.8 s); 30 s leaves a slow link room.
pub const HTTP_REQUEST_TIMEOUT_MS: u64 = 30_000;
/// How long a connection the gateway closes (shed, idle) may take to finish the response it is
/// writing, in ms; then the socket is dropped.
pub const HTTP_CLOSE_GRACE_MS: u64 = 1_000;
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

/// Serves HTTP/1 connections from `listener` until `stop` fires, each request through
/// `answer`; an `Err` from `answer` closes the connection without a response. Connections are
/// admitted by an [`Admission`] table ([`HTTP_CONNECTIONS_MAX`],
/// [`HTTP_CONNECTIONS_PER_ADDRESS_MAX`]), and closed after [`HTTP_HEADER_READ_TIMEOUT_MS`]
/// without a whole request head or [`HTTP_IDLE_TIMEOUT_MS`] without a request.
pub async fn serve_connections<F, Fut>(
    listener: Box<dyn Listener>,
    stop: CancellationToken,
    answer: F,
) where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, std::io::Error>> + Send + 'static,
{
    serve_connections_with(listener, stop, answer, HttpLimits::default()).await
}

/// The limits of one HTTP listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpLimits {
    pub caps: Caps,
    /// See [`HTTP_HEADER_READ_TIMEOUT_MS`].
    pub header_read_timeout: Duration,
    /// See [`HTTP_IDLE_TIMEOUT_MS`].
    pub idle_timeout: Duration,
    /// See [`HTTP_REQUEST_TIMEOUT_MS`].
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            caps: Caps {
                connections_max: HTTP_CONNECTIONS_MAX,
                per_address_max: HTTP_CONNECTIONS_PER_ADDRESS_MAX,
                closing_max: HTTP_CLOSING_MAX,
                hello_grace: Duration::from_millis(HTTP_HEAD_GRACE_MS),
            },
            header_read_timeout: Duration::from_millis(HTTP_HEADER_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(HTTP_IDLE_TIMEOUT_MS),
            request_timeout: Duration::from_millis(HTTP_REQUEST_TIMEOUT_MS),
        }
    }
}

/// [`serve_connections`] with `limits` of its own.
pub async fn serve_connections_with<F, Fut>(
    listener: Box<dyn Listener>,
    stop: CancellationToken,
    answer: F,
    limits: HttpLimits,
) where
    F: Fn(Request<hyper::body::Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, std::io::Error>> + Send + 'static,
{
    let admission = Admission::new(limits.caps);
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = net::accept(&*listener) => accepted,
        };
        // Connections outlive `stop` as before: the process ends them when it exits.
        let ticket = match admission.admit(&peer, CancellationToken::new()) {
            Ok(ticket) => Arc::new(ticket),
            Err(refused) => {
                debug!(%peer, %refused, "refused an HTTP connection");
                let body = format!("{refused}\n");
                let response = format!(
                    "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
                     content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                // Only if it goes out at once (a fresh socket's send buffer is empty).
                let _ = stream.write_all(response.as_bytes()).now_or_never();
                continue;
            }
        };
        let answer = answer.clone();
        let http1 = http1.clone();
        tokio::spawn(async move {
            let service = {
                let ticket = ticket.clone();
                hyper::service::service_fn(move |request| {
                    // A whole head has arrived: no longer a slow-header suspect.
                    ticket.hello_done();
                    let busy = ticket.start_request();
                    let answered = answer(request);
                    async move {
                        let response = tokio::time::timeout(limits.request_timeout, answered)
                            .await
                            .unwrap_or_else(|_| Ok(request_timed_out(limits.request_timeout)));
                        drop(busy);
                        response
                    }
                })
            };
            let connection = http1.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let idle_timeout = limits.idle_timeout;
            let idle = tokio::time::sleep(idle_timeout);
            tokio::pin!(idle);
            let why = loop {
                tokio::select! {
                    ended = connection.as_mut() => {
                        if let Err(err) = ended {
                            debug!(%peer, %err, "HTTP connection ended");
                        }
                        return;
                    }
                    _ = ticket.token().cancelled() => break "shed to admit a new connection",
                    _ = &mut idle => {
                        // The timer fired at its deadline: that is now, give or take a tick.
                        let now = idle.deadline();
                        match ticket.idle_for() {
                            Some(idle_for) if idle_for >= idle_timeout => break "idle",
                            Some(idle_for) => idle.as_mut().reset(now + (idle_timeout - idle_for)),
                            None => idle.as_mut().reset(now + idle_timeout),
                        }
                    }
                }
            };
            debug!(%peer, why, "closing an HTTP connection");
            if ticket.class() == Class::Hello {
                // Never sent a whole head: nothing to finish, and hyper's graceful shutdown
                // would wait for the rest of it. Dropping the future closes the socket now.
                return;
            }
            connection.as_mut().graceful_shutdown();
            let grace = Duration::from_millis(HTTP_CLOSE_GRACE_MS);
            let _ = tokio::time::timeout(grace, connection).await;
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

/// The answer to a request that took longer than the limit (its body arrived too slowly, or
/// never): 408, and the connection closes after it.
fn request_timed_out(limit: Duration) -> Response<Body> {
    let mut response = text(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request took over {} ms (its body arrived too slowly, or not at all)\n",
            limit.as_millis()
        ),
    );
    response.headers_mut().insert(
        header::CONNECTION,
        header::HeaderValue::from_static("close"),
    );
    response
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

#[cfg(test)]
mod limits_tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;
    use crate::net::Env;

    /// How long `/slow` takes: longer than the idle timeout of the tests plus
    /// [`HTTP_CLOSE_GRACE_MS`], so a connection wrongly found idle is dropped before it answers.
    const SLOW_MS: u64 = 2_000;

    /// Answers every request with `ok`, `/slow` after [`SLOW_MS`].
    async fn start(limits: HttpLimits, stop: &CancellationToken) -> String {
        let listener = Env::real().bind("127.0.0.1", Some(0), 0..=0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answer = |request: Request<hyper::body::Incoming>| async move {
            if request.uri().path() == "/slow" {
                tokio::time::sleep(Duration::from_millis(SLOW_MS)).await;
            }
            if request.uri().path() == "/body" {
                let body = Body::new(request.into_body());
                if axum::body::to_bytes(body, HTTP_BODY_BYTES_MAX)
                    .await
                    .is_err()
                {
                    return Ok(text(StatusCode::BAD_REQUEST, "bad body"));
                }
            }
            Ok(text(StatusCode::OK, "ok"))
        };
        tokio::spawn(serve_connections_with(
            listener,
            stop.clone(),
            answer,
            limits,
        ));
        addr
    }

    fn limits(connections_max: usize, header_ms: u64, idle_ms: u64) -> HttpLimits {
        HttpLimits {
            caps: Caps {
                connections_max,
                per_address_max: connections_max,
                closing_max: 8,
                hello_grace: Duration::ZERO,
            },
            header_read_timeout: Duration::from_millis(header_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            request_timeout: Duration::from_millis(REQUEST_MS),
        }
    }

    /// The tests' request timeout: longer than [`SLOW_MS`], so `/slow` is answered.
    const REQUEST_MS: u64 = SLOW_MS + 1_000;

    #[tokio::test]
    async fn a_request_whose_body_never_arrives_is_answered_408_and_closed() {
        let stop = CancellationToken::new();
        let addr = start(limits(8, 60_000, 60_000), &stop).await;
        let mut stalled = TcpStream::connect(&addr).await.unwrap();
        stalled
            .write_all(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly ten..")
            .await
            .unwrap();
        let got = until_closed(&mut stalled).await.unwrap();
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("arrived too slowly"), "{got}");
        stop.cancel();
    }

    /// Reads until the server closes (`Ok` with what came) or 10 s pass (`Err`).
    async fn until_closed(stream: &mut TcpStream) -> Result<String, String> {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got));
        match read.await {
            Ok(_) => Ok(String::from_utf8_lossy(&got).into_owned()),
            Err(_) => Err(format!(
                "still open after 10 s, got {:?}",
                String::from_utf8_lossy(&got)
            )),
        }
    }

    /// Reads one whole `ok` response off a kept-alive connection.
    async fn one_response(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\nok") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
                .await
                .expect("a response within 10 s")
                .unwrap();
            assert!(n > 0, "closed before the response: {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_request_head_is_closed() {
        let stop = CancellationToken::new();
        let addr = start(limits(8, 300, 60_000), &stop).await;
        let mut slow = TcpStream::connect(&addr).await.unwrap();
        slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let got = until_closed(&mut slow).await.unwrap();
        assert!(!got.contains("200"), "answered: {got}");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_kept_alive_connection_idle_past_the_idle_timeout_is_closed() {
        let stop = CancellationToken::new();
        // The header timer (which hyper also runs between requests) out of the way.
        let addr = start(limits(8, 60_000, 300), &stop).await;
        let mut client = TcpStream::connect(&addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(one_response(&mut client).await.starts_with("HTTP/1.1 200"));
        until_closed(&mut client).await.unwrap();
        stop.cancel();
    }

    #[tokio::test]
    async fn a_request_being_answered_is_not_idle() {
        let stop = CancellationToken::new();
        let addr = start(limits(8, 60_000, 200), &stop).await;
        let mut client = TcpStream::connect(&addr).await.unwrap();
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(one_response(&mut client).await.starts_with("HTTP/1.1 200"));
        stop.cancel();
    }

    #[tokio::test]
    async fn a_slow_header_client_is_shed_for_a_newcomer() {
        let stop = CancellationToken::new();
        let addr = start(limits(2, 60_000, 60_000), &stop).await;
        let mut oldest = TcpStream::connect(&addr).await.unwrap();
        oldest.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut younger = TcpStream::connect(&addr).await.unwrap();
        younger.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut newcomer = TcpStream::connect(&addr).await.unwrap();
        newcomer
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answered = until_closed(&mut newcomer).await.unwrap();
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
        until_closed(&mut oldest).await.unwrap();
        // The younger one is still held: it finishes its request and is answered.
        younger
            .write_all(b"Host: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let answered = until_closed(&mut younger).await.unwrap();
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
        stop.cancel();
    }
}
