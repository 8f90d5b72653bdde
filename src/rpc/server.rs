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
use super::message::{cluster_mismatch, Request, Response, ServiceKind, PROTOCOL_VERSION};
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

/// Serves `listener` for peers of `cluster` until `shutdown` fires, then gives open connections
/// a grace period. A hello from another cluster is refused.
pub async fn serve<H: Handler>(
    listener: Box<dyn Listener>,
    cluster: Arc<str>,
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
        let cluster = cluster.clone();
        let span = tracing::debug_span!("connection", %peer, service = %H::SERVICE);
        tracker.spawn(
            async move {
                connection(stream, &cluster, handler, shutdown).await;
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

/// The answer to a hello: ours if it asks for this service, in this protocol version and this
/// cluster; else the error that says which of them differs. A caller of this version that asked
/// for the other service is answered with our own kind (and the connection then closed), so that
/// it can say which flag the address belongs to.
fn answer_hello<R>(
    protocol_version: u32,
    service: ServiceKind,
    peer_cluster: &str,
    service_wanted: ServiceKind,
    cluster: &str,
) -> Result<Response<R>> {
    if protocol_version == PROTOCOL_VERSION && service != service_wanted {
        return Ok(Response::Hello {
            protocol_version,
            service: service_wanted,
            cluster: cluster.to_string(),
        });
    }
    if protocol_version != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "this is a {service_wanted} speaking protocol version {PROTOCOL_VERSION}; \
             the peer asked for a {service} speaking version {protocol_version}"
        )));
    }
    if peer_cluster != cluster {
        debug!(peer_cluster = %net::shown_cluster(peer_cluster), "refused a hello from another cluster");
        return Err(cluster_mismatch(service_wanted, cluster, peer_cluster));
    }
    Ok(Response::Hello {
        protocol_version,
        service,
        cluster: cluster.to_string(),
    })
}

async fn connection<H: Handler>(
    stream: Conn,
    cluster: &str,
    handler: Arc<H>,
    shutdown: CancellationToken,
) {
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
                cluster: peer_cluster,
            } => {
                let hello: Result<Response<H::Reply>> = answer_hello(
                    protocol_version,
                    service,
                    &peer_cluster,
                    H::SERVICE,
                    cluster,
                );
                if let Err(err) = hello {
                    let _ = send_error(&mut framed, envelope.request_id, err).await;
                    return;
                }
                let Ok(bytes) = encode(envelope.request_id, &hello) else {
                    return;
                };
                if framed.send(bytes).await.is_err() || service != H::SERVICE {
                    // A caller that wanted the other service has been told what this is.
                    return;
                }
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
                cluster: peer_cluster,
            } => {
                // A later hello is answered (and checked) like the first, but a refusal leaves
                // the connection, already past its handshake, open.
                let reply: Result<Response<H::Reply>> = answer_hello(
                    protocol_version,
                    service,
                    &peer_cluster,
                    H::SERVICE,
                    cluster,
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Env;
    use crate::rpc::client::RpcClient;

    /// A service that answers `n` with `n + 1`.
    struct Increment;

    impl Handler for Increment {
        type Request = u64;
        type Reply = u64;
        const SERVICE: ServiceKind = ServiceKind::ViewLeader;

        async fn handle(self: Arc<Self>, request: u64) -> Answer<u64> {
            Answer::Reply(Ok(request + 1))
        }
    }

    /// Serves [`Increment`] for cluster `cluster` on a free loopback port; returns its address.
    async fn start(cluster: &str, shutdown: &CancellationToken) -> String {
        let env = Env::real().in_cluster(cluster).unwrap();
        let listener = env.bind("127.0.0.1", Some(0), 0..=0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            env.cluster.clone(),
            Arc::new(Increment),
            shutdown.clone(),
        ));
        addr
    }

    async fn connect(addr: &str, cluster: &str) -> Result<RpcClient<u64, u64>> {
        let env = Env::real().in_cluster(cluster).unwrap();
        RpcClient::connect(&env, addr, ServiceKind::ViewLeader, Duration::from_secs(5)).await
    }

    #[test]
    fn a_hello_for_the_other_service_is_answered_with_our_kind() {
        // The caller then says which flag the address belongs to; the connection is closed.
        match answer_hello::<()>(
            PROTOCOL_VERSION,
            ServiceKind::Server,
            "a",
            ServiceKind::ViewLeader,
            "a",
        ) {
            Ok(Response::Hello { service, .. }) => assert_eq!(service, ServiceKind::ViewLeader),
            other => panic!("a hello for the other service answered {other:?}"),
        }
        let err = crate::rpc::client::wrong_service("h:1", ServiceKind::ViewLeader);
        assert!(
            err.to_string()
                .contains("h:1 is a view leader; use --viewleader h:1"),
            "{err}"
        );
    }

    #[test]
    fn a_hello_from_another_cluster_is_answered_with_an_error_naming_both() {
        let answer = |cluster: &str| {
            answer_hello::<()>(
                PROTOCOL_VERSION,
                ServiceKind::Server,
                cluster,
                ServiceKind::Server,
                "a",
            )
        };
        match answer("a") {
            Ok(Response::Hello { cluster, .. }) => assert_eq!(cluster, "a"),
            other => panic!("a hello of the same cluster answered {other:?}"),
        }
        let err = answer("b").unwrap_err();
        let Error::Protocol(msg) = &err else {
            panic!("not a protocol error: {err:?}")
        };
        assert!(
            msg.contains(r#"storage server belongs to cluster "a""#)
                && msg.contains(r#"caller to cluster "b""#),
            "{msg}"
        );
        // A wrong version is reported as such, whatever the cluster.
        let err = answer_hello::<()>(
            PROTOCOL_VERSION - 1,
            ServiceKind::Server,
            "b",
            ServiceKind::Server,
            "a",
        )
        .unwrap_err();
        assert!(err.to_string().contains("protocol version"), "{err}");
    }

    #[tokio::test]
    async fn a_caller_of_another_cluster_is_refused_and_one_of_the_same_is_served() {
        let shutdown = CancellationToken::new();
        let addr = start("a", &shutdown).await;

        let err = connect(&addr, "b")
            .await
            .err()
            .expect("cluster b was served");
        let Error::Protocol(msg) = &err else {
            panic!("not a protocol error: {err:?}")
        };
        assert!(
            msg.contains(&addr)
                && msg.contains(r#"view leader belongs to cluster "a""#)
                && msg.contains(r#"caller to cluster "b""#),
            "{msg}"
        );
        assert!(!err.is_retryable(), "{err:?}");

        let client = connect(&addr, "a").await.unwrap();
        assert_eq!(client.call(&41, Duration::from_secs(5)).await.unwrap(), 42);
        shutdown.cancel();
    }

    /// The caller checks the answer too: a service that says hello from another cluster (one
    /// that does not check, say) is refused by the caller.
    #[tokio::test]
    async fn a_hello_answered_from_another_cluster_is_refused_by_the_caller() {
        let env = Env::real();
        let listener = env.bind("127.0.0.1", Some(0), 0..=0).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (stream, _) = net::accept(&*listener).await;
            let mut framed = Framed::new(stream, codec());
            let Some(Ok(payload)) = framed.next().await else {
                return;
            };
            let Ok(envelope) = decode::<Request<u64>>(&payload) else {
                return;
            };
            let hello: Result<Response<u64>> = Ok(Response::Hello {
                protocol_version: PROTOCOL_VERSION,
                service: ServiceKind::ViewLeader,
                cluster: "a".into(),
            });
            let _ = framed
                .send(encode(envelope.request_id, &hello).unwrap())
                .await;
            // Hold the connection open until the caller goes.
            let _ = framed.next().await;
        });
        let err = connect(&addr, "b")
            .await
            .err()
            .expect("cluster b was served");
        let Error::Protocol(msg) = &err else {
            panic!("not a protocol error: {err:?}")
        };
        assert!(
            msg.contains(&addr) && msg.contains(r#"cluster "a""#) && msg.contains(r#"cluster "b""#),
            "{msg}"
        );
    }
}
