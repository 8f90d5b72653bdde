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
use futures::{SinkExt, StreamExt};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::frame::{codec, decode, encode, write_coalesced};
use super::message::{Request, Response, ServiceKind, PROTOCOL_VERSION};
use crate::error::{Error, Result};
use crate::net::{self, Conn, Listener};

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

/// Serves `listener` until `shutdown` fires, then gives open connections a grace period.
pub async fn serve<H: Handler>(
    listener: Box<dyn Listener>,
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
        let span = tracing::debug_span!("connection", %peer, service = %H::SERVICE);
        tracker.spawn(
            async move {
                connection(stream, handler, shutdown).await;
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

async fn connection<H: Handler>(stream: Conn, handler: Arc<H>, shutdown: CancellationToken) {
    let mut framed = Framed::new(stream, codec());
    let hello = tokio::time::timeout(Duration::from_millis(HANDSHAKE_TIMEOUT_MS), framed.next());
    let first = tokio::select! {
        _ = shutdown.cancelled() => return,
        first = hello => first,
    };
    let payload = match first {
        Err(_) | Ok(None) => return,
        Ok(Some(Err(err))) => {
            let _ = send_error(&mut framed, 0, Error::InvalidRequest(frame_error(&err))).await;
            return;
        }
        Ok(Some(Ok(payload))) => payload,
    };
    match decode::<Request<H::Request>>(&payload) {
        Ok(envelope) => match envelope.body {
            Request::Hello {
                protocol_version,
                service,
            } if protocol_version == PROTOCOL_VERSION && service == H::SERVICE => {
                let hello: Result<Response<H::Reply>> = Ok(Response::Hello {
                    protocol_version,
                    service,
                });
                let Ok(bytes) = encode(envelope.request_id, &hello) else {
                    return;
                };
                if framed.send(bytes).await.is_err() {
                    return;
                }
            }
            Request::Hello {
                protocol_version,
                service,
            } => {
                let err = Error::Protocol(format!(
                    "this is a {} speaking protocol version {PROTOCOL_VERSION}; \
                     the peer asked for a {service} speaking version {protocol_version}",
                    H::SERVICE
                ));
                let _ = send_error(&mut framed, envelope.request_id, err).await;
                return;
            }
            Request::Call(_) => {
                let err = Error::Protocol("the first message must be a hello".into());
                let _ = send_error(&mut framed, envelope.request_id, err).await;
                return;
            }
        },
        Err((request_id, err)) => {
            let err = match err {
                Error::InvalidRequest(what) => Error::Protocol(format!(
                    "expected a hello of protocol version {PROTOCOL_VERSION}: {what}"
                )),
                other => other,
            };
            let _ = send_error(&mut framed, request_id.unwrap_or(0), err).await;
            return;
        }
    }
    debug!("handshake done");

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
                    &Err(Error::InvalidRequest(frame_error(&err))),
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
            } => {
                let reply: Result<Response<H::Reply>> =
                    if protocol_version == PROTOCOL_VERSION && service == H::SERVICE {
                        Ok(Response::Hello {
                            protocol_version,
                            service,
                        })
                    } else {
                        Err(Error::Protocol(format!(
                            "this is a {} speaking protocol version {PROTOCOL_VERSION}",
                            H::SERVICE
                        )))
                    };
                if let Ok(bytes) = encode(request_id, &reply) {
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

async fn send_error(
    framed: &mut Framed<Conn, tokio_util::codec::LengthDelimitedCodec>,
    request_id: u64,
    err: Error,
) -> Result<()> {
    let reply: Result<Response<()>> = Err(err);
    let bytes = encode(request_id, &reply)?;
    framed.send(bytes).await.map_err(Error::from)
}

fn frame_error(err: &std::io::Error) -> String {
    if err.kind() == std::io::ErrorKind::InvalidData {
        format!(
            "frame larger than the limit of {} bytes",
            super::frame::FRAME_BYTES_MAX
        )
    } else {
        format!("bad frame: {err}")
    }
}
