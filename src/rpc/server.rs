//! The accept loop and per-connection handler shared by the view leader and the storage server.
//!
//! accept → handshake → read frames → handle each request (in a task of its own if it has to
//! wait) → replies through one writer task that flushes once per burst. Requests on one connection run concurrently (a long poll
//! does not hold up a `get` behind it) and their replies carry the request id, so clients can
//! pipeline. A connection that sends something wrong gets an error frame and, if its byte stream
//! can no longer be trusted, is closed; every other connection is untouched.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::frame::{decode, encode, write_coalesced};
use super::handshake;
use super::message::{Request, Response, ServiceKind};
use crate::error::{Error, Result};
use crate::net::secret::Role;
use crate::net::{self, Conn, Env, Listener};

/// Connections served at once; the accept loop waits for a free slot beyond it.
pub const CONNECTIONS_MAX: usize = 1024;
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

/// Serves `listener` for peers of `env`'s cluster until `shutdown` fires, then gives open
/// connections a grace period. A hello from another cluster is refused, and so is one that does
/// not prove `env`'s secret when it has one.
pub async fn serve<H: Handler>(
    listener: Box<dyn Listener>,
    env: Env,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = net::accept(&*listener) => accepted,
        };
        let handler = handler.clone();
        let shutdown = shutdown.clone();
        let env = env.clone();
        let span = tracing::debug_span!("connection", %peer, service = %H::SERVICE);
        tracker.spawn(
            async move {
                connection(stream, &env, handler, shutdown).await;
                drop(permit);
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

async fn connection<H: Handler>(
    stream: Conn,
    env: &Env,
    handler: Arc<H>,
    shutdown: CancellationToken,
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

    let (sink, mut frames) = framed.split();
    let (reply_tx, reply_rx) = mpsc::channel::<Bytes>(REPLY_QUEUE_MAX);
    let writer = tokio::spawn(write_coalesced(sink, reply_rx));
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT_PER_CONNECTION_MAX));
    // Fired by a request answered with `Answer::Hangup`, also from a task of its own.
    let hangup = CancellationToken::new();

    loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = hangup.cancelled() => break,
            next = frames.next() => next,
        };
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
        let mut task = Box::pin(
            async move {
                debug!(request_id, ?request, "request");
                let (reply, twice) = match handler.handle(request).await {
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
    drop(reply_tx);
    let _ = writer.await;
    debug!("connection closed");
}
