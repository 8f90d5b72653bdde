//! The accept loop and per-connection handler shared by the view leader and the storage server.
//!
//! accept → handshake → read frames → handle each request (in a task of its own if it has to
//! wait) → replies through one writer task that flushes once per burst. Requests on one connection run concurrently (a long poll
//! does not hold up a `get` behind it) and their replies carry the request id, so clients can
//! pipeline. A connection that sends something wrong gets an error frame and, if its byte stream
//! can no longer be trusted, is closed; every other connection is untouched.
//!
//! Connections are admitted by an [`Admission`] table: at a cap a newcomer sheds the oldest idle
//! connection instead of waiting, and a connection with no request in flight for
//! [`RPC_IDLE_TIMEOUT_MS`] after its hello is closed (docs/security.md, "Limits that hold under
//! abuse"). A caller that proved a member's secret is shed last.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::frame::{codec, decode, encode, write_coalesced};
use super::handshake;
use super::message::{Request, Response, ServiceKind};
use crate::error::{Error, Result};
use crate::net::admission::{Admission, Caps, Refused, Ticket};
use crate::net::secret::Role;
use crate::net::{self, Conn, Env, Listener};

/// Connections held at once. A newcomer beyond it sheds the oldest idle connection (see
/// [`crate::net::admission`]) and is refused only if every one has a request in flight. 1024
/// is far above what a cluster needs (one pooled connection per member and client) and well
/// under the open-file limit the binaries raise at start.
pub const CONNECTIONS_MAX: usize = 1024;
/// Connections held at once from one remote address: a quarter of [`CONNECTIONS_MAX`], so one
/// address alone cannot crowd out the others' idle connections, and still room for a
/// one-machine cluster whose members and clients all come from 127.0.0.1 (each server keeps a
/// long poll open at the view leader, which counts as busy).
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 256;
/// Shed connections still closing on top of [`CONNECTIONS_MAX`]; newcomers are refused beyond
/// it. A shed connection closes within [`CLOSE_GRACE_MS`], so this bounds the sockets held
/// while a flood is being shed faster than the shed tasks run.
pub const CLOSING_MAX: usize = 256;
/// A connection still in its hello after this long is shed before any other when a cap is
/// reached, in ms; a younger one is shed after the older idle ones (a flood that finishes its
/// hellos at once must not shed every newcomer mid-hello). A hello takes a round trip or two.
pub const HELLO_GRACE_MS: u64 = 1_000;
/// A connection past its hello with no request in flight for this long is closed, in ms. A
/// minute: pooled connections that carry traffic (heartbeats, 2PC, a client's calls) never get
/// there, and one that does costs its caller a redial on next use, while the sockets of an idle
/// flood are given back within a minute even when no cap is reached. A long poll in flight
/// (`WatchView`) is not idle. The binaries' hidden `--rpc-idle-timeout-ms` overrides it (tests).
pub const RPC_IDLE_TIMEOUT_MS: u64 = 60_000;
/// How long a connection the server closes (shed, idle) may take to flush the replies already
/// queued, in ms; then it is dropped. A peer that does not read cannot hold a socket longer.
pub const CLOSE_GRACE_MS: u64 = 1_000;
/// Requests of one connection being handled at once; reading pauses at the limit, which pushes
/// back on a client that pipelines faster than we serve.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 1024;
/// Encoded replies waiting for the writer of one connection.
pub const REPLY_QUEUE_MAX: usize = 1024;
/// How long a stopping server waits for open connections to finish their requests.
pub const SHUTDOWN_GRACE_MS: u64 = 2_000;
/// A peer that connects but does not say hello within this time is dropped.
pub const HANDSHAKE_TIMEOUT_MS: u64 = 5_000;

/// A service: what one request turns into.
pub trait Handler: Send + Sync + 'static {
    type Request: DeserializeOwned + Send + std::fmt::Debug + 'static;
    type Reply: Serialize + Send + 'static;
    const SERVICE: ServiceKind;

    fn handle(
        self: Arc<Self>,
        request: Self::Request,
    ) -> impl Future<Output = Answer<Self::Reply>> + Send;

    /// Whether only a caller that proved a member's secret may send `request` (a client's is
    /// answered `Forbidden`).
    fn members_only(request: &Self::Request) -> bool;

    /// The request's name, for logs and errors.
    fn name(request: &Self::Request) -> &'static str;
}

/// What the connection does with one request's outcome. Besides the plain reply, a handler may
/// choose silence or a dropped connection: what a crashed or misbehaving peer looks like from
/// the other end (see [`crate::faults`], which decides when).
#[derive(Debug)]
pub enum Answer<R> {
    /// Send the reply.
    Reply(Result<R>),
    /// Send the reply twice: the caller must ignore the second.
    Twice(Result<R>),
    /// Send nothing: the caller times out.
    Silence,
    /// Close the connection without answering this or any later request on it.
    Hangup,
}

/// The limits of one RPC listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub caps: Caps,
    /// See [`RPC_IDLE_TIMEOUT_MS`].
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            caps: Caps {
                connections_max: CONNECTIONS_MAX,
                per_address_max: CONNECTIONS_PER_ADDRESS_MAX,
                closing_max: CLOSING_MAX,
                hello_grace: Duration::from_millis(HELLO_GRACE_MS),
            },
            idle_timeout: Duration::from_millis(RPC_IDLE_TIMEOUT_MS),
        }
    }
}

/// The idle timeout [`serve`] gives connections, in ms, when not [`RPC_IDLE_TIMEOUT_MS`].
static IDLE_TIMEOUT_MS: AtomicU64 = AtomicU64::new(RPC_IDLE_TIMEOUT_MS);

/// Sets the idle timeout of the connections every [`serve`] of this process accepts from now
/// on (the binaries' hidden `--rpc-idle-timeout-ms`, so a test need not wait a minute). 0 is
/// refused.
pub fn set_idle_timeout_ms(ms: u64) -> Result<()> {
    if ms == 0 {
        return Err(Error::InvalidRequest(
            "the RPC idle timeout must be at least 1 ms".into(),
        ));
    }
    IDLE_TIMEOUT_MS.store(ms, Ordering::Relaxed);
    Ok(())
}

/// Serves `listener` for peers of `env`'s cluster until `shutdown` fires, then gives open
/// connections a grace period. A hello from another cluster is refused, and so is one that does
/// not prove `env`'s secret when it has one.
pub async fn serve<H: Handler>(
    listener: Box<dyn Listener>,
    env: Env,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let limits = Limits {
        idle_timeout: Duration::from_millis(IDLE_TIMEOUT_MS.load(Ordering::Relaxed)),
        ..Limits::default()
    };
    serve_with(listener, env, handler, shutdown, limits).await
}

/// [`serve`] with `limits` of its own.
pub async fn serve_with<H: Handler>(
    listener: Box<dyn Listener>,
    env: Env,
    handler: Arc<H>,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let admission = Admission::new(limits.caps);
    let tracker = TaskTracker::new();
    loop {
        let (mut stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = net::accept(&*listener) => accepted,
        };
        // The connection's own token: fired by the server's shutdown, or by the table to shed it.
        let ticket = match admission.admit(&peer, shutdown.child_token()) {
            Ok(ticket) => ticket,
            Err(refused) => {
                debug!(%peer, %refused, "refused a connection");
                refuse(&mut stream, &refused);
                continue;
            }
        };
        let handler = handler.clone();
        let env = env.clone();
        let span = tracing::debug_span!("connection", %peer, service = %H::SERVICE);
        tracker.spawn(
            async move {
                let token = ticket.token().clone();
                connection(stream, &env, handler, token, ticket, limits.idle_timeout).await;
            }
            .instrument(span),
        );
    }
    tracker.close();
    if tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), tracker.wait())
        .await
        .is_err()
    {
        info!("connections still open after the shutdown grace period; dropping them");
    }
}

/// Tells a refused newcomer why, if that can be done without waiting (a fresh socket's send
/// buffer is empty), then closes it.
fn refuse(stream: &mut Conn, refused: &Refused) {
    let reply: Result<Response<()>> = Err(Error::Unreachable(format!("refused: {refused}")));
    let Ok(bytes) = encode(0, &reply) else {
        return;
    };
    let mut frame = bytes::BytesMut::new();
    if tokio_util::codec::Encoder::encode(&mut codec(), bytes, &mut frame).is_ok() {
        let _ = stream.write_all(&frame).now_or_never();
    }
}

/// Serves one connection. `shutdown` fires when the server stops or the admission table sheds
/// the connection (`ticket` says which); `idle_timeout` applies after the hello.
async fn connection<H: Handler>(
    stream: Conn,
    env: &Env,
    handler: Arc<H>,
    shutdown: CancellationToken,
    ticket: Ticket,
    idle_timeout: Duration,
) {
    let mut framed = handshake::wire(stream);
    let hello = tokio::time::timeout(
        Duration::from_millis(HANDSHAKE_TIMEOUT_MS),
        handshake::accept::<H::Request>(&mut framed, H::SERVICE, env),
    );
    let role = tokio::select! {
        _ = shutdown.cancelled() => return,
        role = hello => match role {
            Ok(Some(role)) => role,
            Err(_) | Ok(None) => return,
        },
    };
    debug!(%role, "handshake done");
    ticket.hello_done();
    // Without a secret every caller counts as a member: only a proven one is shed last.
    if role == Role::Member && env.secret.is_some() {
        ticket.mark_member();
    }

    let (sink, mut frames) = framed.split();
    let (reply_tx, reply_rx) = mpsc::channel::<Bytes>(REPLY_QUEUE_MAX);
    let mut writer = tokio::spawn(write_coalesced(sink, reply_rx));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION_MAX));
    // Fired by a request answered with `Answer::Hangup`, also from a task of its own.
    let hangup = CancellationToken::new();
    // Checked when it fires: activity since then moves it on.
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    // Why the server closes the connection, told to the peer (id 0: "closing").
    let mut closing: Option<String> = None;

    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => {
                if ticket.was_shed() {
                    closing = Some("an idle connection shed to admit a new one".into());
                }
                break;
            }
            _ = hangup.cancelled() => break,
            _ = &mut idle => {
                // The timer fired at its deadline: that is now, give or take a tick.
                let now = idle.deadline();
                match ticket.idle_for() {
                    Some(idle_for) if idle_for >= idle_timeout => {
                        debug!(idle_ms = idle_timeout.as_millis(), "closing an idle connection");
                        closing = Some(format!(
                            "idle for {} ms; closed by the server",
                            idle_timeout.as_millis()
                        ));
                        break;
                    }
                    Some(idle_for) => idle.as_mut().reset(now + (idle_timeout - idle_for)),
                    None => idle.as_mut().reset(now + idle_timeout),
                }
                continue;
            }
            next = frames.next() => next,
        };
        ticket.touch();
        let payload = match next {
            None => break,
            Some(Err(err)) => {
                // Oversized or cut-off frame: the stream is out of step, so say why and close.
                debug!(%err, "bad frame; closing");
                if let Ok(bytes) = encode::<Result<Response<H::Reply>>>(
                    0,
                    &Err(Error::InvalidRequest(handshake::frame_error(&err))),
                ) {
                    let _ = reply_tx.send(bytes).await;
                }
                break;
            }
            Some(Ok(payload)) => payload,
        };
        let envelope = match decode::<Request<H::Request>>(&payload) {
            Ok(envelope) => envelope,
            Err((request_id, err)) => {
                debug!(%err, "undecodable request");
                // Without a request id the reply (id 0) means "closing" to the client, so close;
                // with one, the frame boundary is intact and the connection goes on.
                let bytes =
                    encode::<Result<Response<H::Reply>>>(request_id.unwrap_or(0), &Err(err));
                if let Ok(bytes) = bytes {
                    if reply_tx.send(bytes).await.is_err() {
                        break;
                    }
                }
                if request_id.is_none() {
                    break;
                }
                continue;
            }
        };
        let request_id = envelope.request_id;
        let request = match envelope.body {
            Request::Hello {
                protocol_version,
                service,
                cluster: peer_cluster,
                ..
            } => {
                // A later hello is checked like the first and answered without a challenge (it
                // grants nothing); a refusal leaves the connection, past its handshake, open.
                let reply: Result<Response<H::Reply>> = handshake::check_hello(
                    protocol_version,
                    service,
                    &peer_cluster,
                    H::SERVICE,
                    env.cluster(),
                )
                .map(|()| Response::Hello {
                    protocol_version,
                    service: H::SERVICE,
                    cluster: env.cluster().to_string(),
                    challenge: None,
                });
                if let Ok(bytes) = encode(request_id, &reply) {
                    let _ = reply_tx.send(bytes).await;
                }
                continue;
            }
            Request::Proof { .. } => {
                let err = Error::Protocol("a proof outside the hello".into());
                if let Ok(bytes) = encode::<Result<Response<H::Reply>>>(request_id, &Err(err)) {
                    let _ = reply_tx.send(bytes).await;
                }
                continue;
            }
            Request::Call(request) if role == Role::Client && H::members_only(&request) => {
                debug!(
                    request = H::name(&request),
                    "refused a member's request from a client"
                );
                let err = Error::Forbidden(format!(
                    "`{}` is a request between cluster members; this connection proved a \
                     client's secret (use the member secret file for it)",
                    H::name(&request)
                ));
                if let Ok(bytes) = encode::<Result<Response<H::Reply>>>(request_id, &Err(err)) {
                    let _ = reply_tx.send(bytes).await;
                }
                continue;
            }
            Request::Call(request) => request,
        };
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let handler = handler.clone();
        let reply_tx = reply_tx.clone();
        let hangup_on_answer = hangup.clone();
        let busy = ticket.start_request();
        let mut task = Box::pin(
            async move {
                debug!(request_id, ?request, "request");
                let answer = handler.handle(request).await;
                // Handled: a reply stuck behind a peer that does not read leaves the connection
                // idle, so the idle timeout still closes it.
                drop(busy);
                let (reply, twice) = match answer {
                    Answer::Reply(reply) => (reply, false),
                    Answer::Twice(reply) => (reply, true),
                    Answer::Silence => return,
                    Answer::Hangup => {
                        hangup_on_answer.cancel();
                        return;
                    }
                };
                match encode(request_id, &reply.map(Response::Reply)) {
                    Ok(bytes) => {
                        if twice {
                            let _ = reply_tx.send(bytes.clone()).await;
                        }
                        let _ = reply_tx.send(bytes).await;
                    }
                    Err(err) => warn!(%err, "cannot encode a reply"),
                }
                drop(permit);
            }
            .in_current_span(),
        );
        // Nearly every request is answered without waiting (a lookup under a lock), so try it
        // here first: that saves a task spawn and a cross-thread wake-up per request. One that
        // does wait (a long poll) moves to a task of its own and holds up nothing behind it.
        let waiting = std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx).is_pending()));
        if waiting.await {
            tokio::spawn(task);
        } else if hangup.is_cancelled() {
            break;
        }
    }
    if let Some(why) = &closing {
        if let Ok(bytes) =
            encode::<Result<Response<H::Reply>>>(0, &Err(Error::Unreachable(why.clone())))
        {
            let _ = reply_tx.try_send(bytes);
        }
    }
    drop(reply_tx);
    if closing.is_some() {
        // Our decision: the queued replies get a bounded time, then the socket goes.
        let grace = Duration::from_millis(CLOSE_GRACE_MS);
        if tokio::time::timeout(grace, &mut writer).await.is_err() {
            writer.abort();
        }
    } else {
        let _ = writer.await;
    }
    debug!("connection closed");
}

#[cfg(test)]
mod tests {
    use tokio_util::codec::Framed;

    use super::*;
    use crate::rpc::client::{Pool, RpcClient};

    /// A service that answers `n` with `n + 1`.
    struct Increment;

    impl Handler for Increment {
        type Request = u64;
        type Reply = u64;
        const SERVICE: ServiceKind = ServiceKind::ViewLeader;

        async fn handle(self: Arc<Self>, request: u64) -> Answer<u64> {
            Answer::Reply(Ok(request + 1))
        }

        fn members_only(_: &u64) -> bool {
            false
        }

        fn name(_: &u64) -> &'static str {
            "increment"
        }
    }

    async fn connect(addr: &str) -> Result<RpcClient<u64, u64>> {
        RpcClient::connect(
            &Env::real(),
            addr,
            ServiceKind::ViewLeader,
            Duration::from_secs(5),
        )
        .await
    }

    /// A service that waits `n` ms before answering `n`, and says when a request starts.
    struct Sleepy {
        started: tokio::sync::Notify,
    }

    impl Handler for Sleepy {
        type Request = u64;
        type Reply = u64;
        const SERVICE: ServiceKind = ServiceKind::ViewLeader;

        async fn handle(self: Arc<Self>, request: u64) -> Answer<u64> {
            self.started.notify_one();
            tokio::time::sleep(Duration::from_millis(request)).await;
            Answer::Reply(Ok(request))
        }

        fn members_only(_: &u64) -> bool {
            false
        }

        fn name(_: &u64) -> &'static str {
            "sleep"
        }
    }

    /// Serves `handler` with `limits` on a free loopback port; returns its address.
    async fn start_with<H: Handler>(
        handler: Arc<H>,
        limits: Limits,
        shutdown: &CancellationToken,
    ) -> String {
        start_in(Env::real(), handler, limits, shutdown).await
    }

    /// As [`start_with`], the service's world (and secret) being `env`.
    async fn start_in<H: Handler>(
        env: Env,
        handler: Arc<H>,
        limits: Limits,
        shutdown: &CancellationToken,
    ) -> String {
        let listener = env.bind("127.0.0.1", Some(0), 0..=0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve_with(listener, env, handler, shutdown.clone(), limits));
        addr
    }

    fn limits(connections_max: usize, idle_ms: u64) -> Limits {
        Limits {
            caps: Caps {
                connections_max,
                per_address_max: connections_max,
                closing_max: 8,
                hello_grace: Duration::from_millis(HELLO_GRACE_MS),
            },
            idle_timeout: Duration::from_millis(idle_ms),
        }
    }

    /// Polls `condition` every 10 ms for up to 10 s.
    async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !condition() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_a_pooled_caller_only_redials() {
        let shutdown = CancellationToken::new();
        let addr = start_with(Arc::new(Increment), limits(8, 300), &shutdown).await;
        let pool: Pool<u64, u64> = Pool::new(
            ServiceKind::ViewLeader,
            Duration::from_secs(5),
            &Env::real(),
        );
        assert_eq!(
            pool.call(&addr, &1, Duration::from_secs(5)).await.unwrap(),
            2
        );
        let pooled = pool.get(&addr).await.unwrap();
        eventually("the server closes the idle connection", || {
            pooled.is_closed()
        })
        .await;
        // The next call on the pool dials again and succeeds.
        assert_eq!(
            pool.call(&addr, &2, Duration::from_secs(5)).await.unwrap(),
            3
        );
        assert!(!pool.get(&addr).await.unwrap().is_closed());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_request_in_flight_keeps_its_connection_open_past_the_idle_timeout() {
        let shutdown = CancellationToken::new();
        let sleepy = Arc::new(Sleepy {
            started: tokio::sync::Notify::new(),
        });
        let addr = start_with(sleepy, limits(8, 200), &shutdown).await;
        let client = connect(&addr).await.unwrap();
        // A long poll four idle timeouts long.
        assert_eq!(
            client.call(&800, Duration::from_secs(5)).await.unwrap(),
            800
        );
        assert!(!client.is_closed());
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_newcomer_over_the_cap_sheds_the_oldest_idle_connection() {
        let shutdown = CancellationToken::new();
        let addr = start_with(Arc::new(Increment), limits(2, 60_000), &shutdown).await;
        let oldest = connect(&addr).await.unwrap();
        assert_eq!(oldest.call(&1, Duration::from_secs(5)).await.unwrap(), 2);
        let younger = connect(&addr).await.unwrap();
        assert_eq!(younger.call(&1, Duration::from_secs(5)).await.unwrap(), 2);
        let newcomer = connect(&addr).await.unwrap();
        assert_eq!(newcomer.call(&1, Duration::from_secs(5)).await.unwrap(), 2);
        eventually("the oldest idle connection is shed", || oldest.is_closed()).await;
        assert_eq!(younger.call(&5, Duration::from_secs(5)).await.unwrap(), 6);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_newcomer_is_refused_with_the_reason_when_every_connection_is_busy() {
        let shutdown = CancellationToken::new();
        let sleepy = Arc::new(Sleepy {
            started: tokio::sync::Notify::new(),
        });
        let addr = start_with(sleepy.clone(), limits(1, 60_000), &shutdown).await;
        let busy = connect(&addr).await.unwrap();
        let started = sleepy.started.notified();
        let poll = tokio::spawn(async move { busy.call(&2_000, Duration::from_secs(10)).await });
        started.await;
        // Raw, sending nothing: the refusal is the first and only frame.
        let stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let mut framed = Framed::new(stream, codec());
        let frame = framed
            .next()
            .await
            .expect("a frame before the close")
            .unwrap();
        let reply = decode::<Result<Response<u64>>>(&frame).unwrap();
        assert_eq!(reply.request_id, 0);
        match reply.body {
            Err(Error::Unreachable(msg)) => assert!(msg.contains("busy"), "{msg}"),
            other => panic!("not a refusal: {other:?}"),
        }
        assert!(
            framed.next().await.is_none(),
            "the refused connection stays open"
        );
        // The busy connection was not shed.
        assert_eq!(poll.await.unwrap().unwrap(), 2_000);
        shutdown.cancel();
    }

    #[tokio::test]
    async fn a_caller_that_proved_the_member_secret_is_shed_after_clients() {
        use crate::net::secret::{ClusterSecret, SECRET_BYTES};
        let secret = ClusterSecret::member([7; SECRET_BYTES]);
        let as_member = Env::real().with_secret(Some(secret.clone()));
        let as_client = Env::real().with_secret(Some(secret.client_part()));
        let shutdown = CancellationToken::new();
        let addr = start_in(
            as_member.clone(),
            Arc::new(Increment),
            limits(2, 60_000),
            &shutdown,
        )
        .await;
        let member = dial(&as_member, &addr).await.unwrap();
        assert_eq!(member.call(&1, Duration::from_secs(5)).await.unwrap(), 2);
        let client = dial(&as_client, &addr).await.unwrap();
        assert_eq!(client.call(&1, Duration::from_secs(5)).await.unwrap(), 2);
        // The member is the oldest idle connection, but the client goes.
        let newcomer = dial(&as_client, &addr).await.unwrap();
        assert_eq!(newcomer.call(&1, Duration::from_secs(5)).await.unwrap(), 2);
        eventually("the client's idle connection is shed", || {
            client.is_closed()
        })
        .await;
        assert_eq!(member.call(&2, Duration::from_secs(5)).await.unwrap(), 3);
        shutdown.cancel();
    }

    async fn dial(env: &Env, addr: &str) -> Result<RpcClient<u64, u64>> {
        RpcClient::connect(env, addr, ServiceKind::ViewLeader, Duration::from_secs(5)).await
    }
}
