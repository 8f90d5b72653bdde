//! An in-memory network for whole clusters inside one tokio runtime, with no socket opened:
//! connections are `tokio::io::duplex` pipes, reliable and ordered like TCP on one host. Each node
//! gets an [`Env`] from [`MemoryNetwork::env`]; the store's code cannot tell it from the real one.
//!
//! # Deliberately left out
//! * Faults on the wire (partitions, cut links, delay): the turmoil world ([`super::turmoil_net`])
//!   has them. A node is stopped here by dropping its listener and cancelling its tasks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;

use super::{SeededRandom, SimClock};
use crate::errinput;
use crate::error::{Error, Result};
use crate::net::{self, Conn, Env, Listener, Transport};

/// Bytes buffered in each direction of one in-memory connection; a writer beyond it waits for
/// the reader, as with a TCP window.
pub const PIPE_BYTES_MAX: usize = 256 * 1024;
/// Connections waiting to be accepted by one listener; a connect beyond it waits.
pub const ACCEPT_QUEUE_MAX: usize = 128;
/// The first port a host hands out for `port 0` and for the client ends of connections.
pub const EPHEMERAL_PORT_MIN: u16 = 40_000;

type Incoming = mpsc::Sender<(DuplexStream, String)>;

/// The hosts of one simulated network and who listens where.
#[derive(Default)]
pub struct MemoryNetwork {
    listeners: Mutex<HashMap<String, Incoming>>,
    next_port: Mutex<HashMap<String, u16>>,
}

impl MemoryNetwork {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The transport of the host called `host` (its listeners bind `host:PORT`).
    pub fn host(self: &Arc<Self>, host: &str) -> Arc<dyn Transport> {
        Arc::new(MemoryHost {
            network: self.clone(),
            host: host.to_string(),
        })
    }

    /// An [`Env`] for a node on `host`: this network, `clock`, and randomness drawn from `seed`.
    pub fn env(self: &Arc<Self>, host: &str, clock: Arc<SimClock>, seed: u64) -> Env {
        Env {
            transport: self.host(host),
            clock,
            random: Arc::new(SeededRandom::new(seed)),
            cluster: Arc::from(net::CLUSTER_DEFAULT),
            secret: None,
        }
    }

    /// Whether anything listens at `addr`.
    pub fn is_listening(&self, addr: &str) -> bool {
        self.listeners
            .lock()
            .map(|l| l.get(addr).is_some_and(|tx| !tx.is_closed()))
            .unwrap_or(false)
    }

    fn ephemeral_port(&self, host: &str) -> Result<u16> {
        let mut ports = self
            .next_port
            .lock()
            .map_err(|_| Error::Internal("port table poisoned".into()))?;
        let next = ports.entry(host.to_string()).or_insert(EPHEMERAL_PORT_MIN);
        let port = *next;
        *next = next
            .checked_add(1)
            .ok_or_else(|| Error::Unreachable(format!("{host} ran out of ports")))?;
        Ok(port)
    }
}

/// One host's view of the network.
struct MemoryHost {
    network: Arc<MemoryNetwork>,
    host: String,
}

impl Transport for MemoryHost {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Conn>> {
        Box::pin(async move {
            let incoming = self
                .network
                .listeners
                .lock()
                .map_err(|_| Error::Internal("listener table poisoned".into()))?
                .get(addr)
                .cloned();
            let refused = || Error::Unreachable(format!("cannot connect to {addr}: refused"));
            let incoming = incoming.ok_or_else(refused)?;
            let (ours, theirs) = tokio::io::duplex(PIPE_BYTES_MAX);
            let peer = format!("{}:{}", self.host, self.network.ephemeral_port(&self.host)?);
            incoming.send((theirs, peer)).await.map_err(|_| refused())?;
            Ok(Box::new(ours) as Conn)
        })
    }

    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let (host, port) = addr
                .rsplit_once(':')
                .ok_or_else(|| errinput!("bad address {addr:?}"))?;
            if host != self.host {
                return Err(Error::Unreachable(format!(
                    "cannot listen on {addr}: this host is {}",
                    self.host
                )));
            }
            let port: u16 = port
                .parse()
                .map_err(|_| errinput!("bad port in {addr:?}"))?;
            let port = match port {
                0 => self.network.ephemeral_port(host)?,
                port => port,
            };
            let local = format!("{host}:{port}");
            let (tx, rx) = mpsc::channel(ACCEPT_QUEUE_MAX);
            let mut listeners = self
                .network
                .listeners
                .lock()
                .map_err(|_| Error::Internal("listener table poisoned".into()))?;
            if listeners.get(&local).is_some_and(|tx| !tx.is_closed()) {
                return Err(Error::Unreachable(format!(
                    "cannot listen on {local}: address in use"
                )));
            }
            listeners.insert(local.clone(), tx);
            Ok(Box::new(MemoryListener {
                local,
                incoming: tokio::sync::Mutex::new(rx),
            }) as Box<dyn Listener>)
        })
    }
}

/// Accepts the connections made to one address; dropping it frees the address.
struct MemoryListener {
    local: String,
    incoming: tokio::sync::Mutex<mpsc::Receiver<(DuplexStream, String)>>,
}

impl Listener for MemoryListener {
    fn accept(&self) -> BoxFuture<'_, std::io::Result<(Conn, String)>> {
        Box::pin(async move {
            match self.incoming.lock().await.recv().await {
                Some((stream, peer)) => Ok((Box::new(stream) as Conn, peer)),
                None => std::future::pending().await,
            }
        })
    }

    fn local_addr(&self) -> Result<String> {
        Ok(self.local.clone())
    }
}
