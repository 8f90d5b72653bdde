//! The calling side of a connection: [`RpcClient`] multiplexes many concurrent calls over one TCP
//! connection (request ids pair replies with calls), and [`Pool`] keeps one such connection per
//! address so that nothing on the hot path dials.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::frame::{decode, encode, write_coalesced};
use super::handshake;
use super::message::{Request, Response, ServiceKind};
use crate::error::{Error, Result};
use crate::fasthash::FastBuildHasher;
use crate::net::Env;

/// Calls waiting for a reply on one connection; a caller beyond it waits for a slot.
pub const IN_FLIGHT_PER_CONNECTION_MAX: usize = 4096;
/// Encoded requests waiting for the writer of one connection.
pub const REQUEST_QUEUE_MAX: usize = 1024;

/// Ids come from a counter on this side, never from the peer: see [`crate::fasthash`].
type Pending<Rep> = Mutex<HashMap<u64, oneshot::Sender<Result<Rep>>, FastBuildHasher>>;

struct Inner<Rep> {
    addr: String,
    out_tx: mpsc::Sender<Bytes>,
    pending: Pending<Rep>,
    next_id: AtomicU64,
    closed: AtomicBool,
    slots: Semaphore,
}

impl<Rep> Inner<Rep> {
    fn fail_all(&self, err: Error) {
        self.closed.store(true, Ordering::Release);
        let drained: Vec<_> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        for (_, waiter) in drained {
            let _ = waiter.send(Err(err.clone()));
        }
    }
}

/// One connection to a service, shared by any number of concurrent callers.
pub struct RpcClient<Req, Rep> {
    inner: Arc<Inner<Rep>>,
    _request: PhantomData<fn(Req)>,
}

impl<Req, Rep> Clone for RpcClient<Req, Rep> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            _request: PhantomData,
        }
    }
}

impl<Req, Rep> RpcClient<Req, Rep>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    /// Dials `addr` through `env`'s transport and does the handshake as a member of `env`'s
    /// cluster, all within `timeout`. A service of another cluster is refused, whichever end
    /// notices first.
    pub async fn connect(
        env: &Env,
        addr: &str,
        service: ServiceKind,
        timeout: Duration,
    ) -> Result<Self> {
        tokio::time::timeout(timeout, Self::connect_inner(env, addr, service))
            .await
            .map_err(|_| {
                Error::Timeout(format!(
                    "connecting to {addr} took over {} ms",
                    timeout.as_millis()
                ))
            })?
    }

    async fn connect_inner(env: &Env, addr: &str, service: ServiceKind) -> Result<Self> {
        let stream = env.connect(addr).await?;
        let mut framed = handshake::wire(stream);
        handshake::offer::<Rep>(&mut framed, addr, service, env).await?;

        let (sink, mut frames) = framed.split();
        let (out_tx, out_rx) = mpsc::channel::<Bytes>(REQUEST_QUEUE_MAX);
        let inner = Arc::new(Inner {
            addr: addr.to_string(),
            out_tx,
            pending: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            slots: Semaphore::new(IN_FLIGHT_PER_CONNECTION_MAX),
        });
        tokio::spawn(write_coalesced(sink, out_rx));
        // The reader holds only a weak reference, so dropping every handle ends the connection.
        let weak = Arc::downgrade(&inner);
        tokio::spawn(async move {
            while let Some(next) = frames.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let payload = match next {
                    Ok(payload) => payload,
                    Err(err) => {
                        inner.fail_all(Error::Unreachable(format!("{}: {err}", inner.addr)));
                        return;
                    }
                };
                match decode::<Result<Response<Rep>>>(&payload) {
                    Ok(envelope) if envelope.request_id != 0 => {
                        let waiter = inner
                            .pending
                            .lock()
                            .ok()
                            .and_then(|mut p| p.remove(&envelope.request_id));
                        if let Some(waiter) = waiter {
                            let reply = match envelope.body {
                                Ok(Response::Reply(reply)) => Ok(reply),
                                Ok(Response::Hello { .. } | Response::Welcome { .. }) => {
                                    Err(Error::Protocol("a handshake answer to a call".into()))
                                }
                                Err(err) => Err(err),
                            };
                            let _ = waiter.send(reply);
                        }
                    }
                    Ok(envelope) => {
                        // Id 0 is a connection-level error: the peer is closing on us.
                        let err = envelope
                            .body
                            .err()
                            .unwrap_or_else(|| Error::Protocol("reply without a request".into()));
                        inner.fail_all(err);
                        return;
                    }
                    Err((_, err)) => {
                        inner.fail_all(Error::Protocol(format!(
                            "{} sent an undecodable reply: {err}",
                            inner.addr
                        )));
                        return;
                    }
                }
            }
            if let Some(inner) = weak.upgrade() {
                let addr = inner.addr.clone();
                inner.fail_all(Error::Unreachable(format!("{addr} closed the connection")));
            }
        });
        Ok(Self {
            inner,
            _request: PhantomData,
        })
    }

    /// Sends one request and waits up to `timeout` for its reply. The request is borrowed: it
    /// is only encoded, and a caller that retries sends the same one again without a copy.
    pub async fn call(&self, request: &Req, timeout: Duration) -> Result<Rep> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(Error::Unreachable(format!(
                "connection to {} is closed",
                inner.addr
            )));
        }
        // One deadline bounds the whole call: waiting for a slot, sending and the reply. It is
        // read off a timer (tokio's clock, which a simulation drives) rather than a clock of our
        // own. Each wait polls its work before the timer, so a request that can go out at once
        // always does, even if the caller gives up on the reply right after.
        let deadline = tokio::time::sleep(timeout).deadline();
        let _slot = tokio::time::timeout_at(deadline, inner.slots.acquire())
            .await
            .map_err(|_| Error::Timeout(format!("{} has too many calls in flight", inner.addr)))?
            .map_err(|_| Error::Unreachable(format!("connection to {} is closed", inner.addr)))?;
        let request_id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = encode(request_id, &Request::Call(request))?;
        let (tx, rx) = oneshot::channel();
        inner
            .pending
            .lock()
            .map_err(|_| Error::Internal("pending-call table poisoned".into()))?
            .insert(request_id, tx);
        let outcome = tokio::time::timeout_at(deadline, async {
            inner.out_tx.send(bytes).await.map_err(|_| {
                Error::Unreachable(format!("connection to {} is closed", inner.addr))
            })?;
            rx.await.map_err(|_| {
                Error::Unreachable(format!("connection to {} is closed", inner.addr))
            })?
        })
        .await;
        match outcome {
            Ok(reply) => reply,
            Err(_) => {
                if let Ok(mut pending) = inner.pending.lock() {
                    pending.remove(&request_id);
                }
                Err(Error::Timeout(format!(
                    "{} did not answer within {} ms",
                    inner.addr,
                    timeout.as_millis()
                )))
            }
        }
    }

    /// Whether the connection has broken; a pool replaces such a client.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    pub fn addr(&self) -> &str {
        &self.inner.addr
    }
}

/// Addresses a pool keeps connections to; beyond it, broken connections are dropped first, then
/// the least recently used one.
pub const POOL_CONNECTIONS_MAX: usize = 256;

/// A pooled connection and the pool's use count at its last use.
type Pooled<Req, Rep> = (RpcClient<Req, Rep>, u64);

/// One shared connection per address, dialled on first use and replaced once broken.
pub struct Pool<Req, Rep> {
    service: ServiceKind,
    connect_timeout: Duration,
    /// Where connections come from, and the cluster their hellos name.
    env: Env,
    /// Keyed by address; addresses come from views and options, not peers: see
    /// [`crate::fasthash`]. Each connection carries the use count at its last use.
    conns: Mutex<HashMap<String, Pooled<Req, Rep>, FastBuildHasher>>,
    /// Counts uses, to tell the least recently used connection.
    uses: AtomicU64,
}

impl<Req, Rep> Pool<Req, Rep>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    /// A pool of connections to `service`s of `env`'s cluster, dialled through `env`.
    pub fn new(service: ServiceKind, connect_timeout: Duration, env: &Env) -> Self {
        Self {
            service,
            connect_timeout,
            env: env.clone(),
            conns: Mutex::new(HashMap::default()),
            uses: AtomicU64::new(0),
        }
    }

    /// The time on the clock of the pool's `Env`.
    pub fn now(&self) -> tokio::time::Instant {
        self.env.now()
    }

    /// The live connection to `addr`, dialling if there is none.
    pub async fn get(&self, addr: &str) -> Result<RpcClient<Req, Rep>> {
        if let Some(client) = self.cached(addr) {
            return Ok(client);
        }
        let client =
            RpcClient::connect(&self.env, addr, self.service, self.connect_timeout).await?;
        let used = self.uses.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut conns) = self.conns.lock() {
            if conns.len() >= POOL_CONNECTIONS_MAX {
                conns.retain(|_, (c, _)| !c.is_closed());
                if conns.len() >= POOL_CONNECTIONS_MAX {
                    let victim = conns
                        .iter()
                        .min_by_key(|(_, (_, last_used))| *last_used)
                        .map(|(addr, _)| addr.clone());
                    if let Some(victim) = victim {
                        conns.remove(&victim);
                    }
                }
            }
            // Another caller may have dialled meanwhile; keep theirs so both share one.
            if let Some((existing, _)) = conns.get(addr).filter(|(c, _)| !c.is_closed()) {
                return Ok(existing.clone());
            }
            conns.insert(addr.to_string(), (client.clone(), used));
        }
        Ok(client)
    }

    fn cached(&self, addr: &str) -> Option<RpcClient<Req, Rep>> {
        let mut conns = self.conns.lock().ok()?;
        let (client, last_used) = conns.get_mut(addr).filter(|(c, _)| !c.is_closed())?;
        *last_used = self.uses.fetch_add(1, Ordering::Relaxed);
        Some(client.clone())
    }

    /// One call to `addr` over the pooled connection.
    pub async fn call(&self, addr: &str, request: &Req, timeout: Duration) -> Result<Rep> {
        let client = match self.cached(addr) {
            Some(client) => client,
            None => tokio::time::timeout(timeout, self.get(addr))
                .await
                .map_err(|_| {
                    Error::Timeout(format!(
                        "connecting to {addr} took over {} ms",
                        timeout.as_millis()
                    ))
                })??,
        };
        client.call(request, timeout).await
    }

    /// Forgets the connection to `addr` (after the peer was found dead or restarted).
    pub fn forget(&self, addr: &str) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.remove(addr);
        }
    }
}
