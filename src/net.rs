//! The seam between ringleader and the world: every socket, clock reading and random number the
//! store uses comes from an [`Env`] handed to each node (view leader, storage server, client) when
//! it starts. [`Env::real`] is TCP, the system clocks and the operating system's randomness; a
//! test or a simulation hands in its own (an in-memory network, a clock it drives, a seeded
//! generator) and the same code runs unchanged, with no cargo feature and no `cfg`.
//!
//! The `Env` also names the cluster the node belongs to ([`Env::cluster`], like etcd's initial
//! cluster token): every connection starts with a hello that carries it, and a peer of another
//! cluster is refused there, so one cluster's keys never reach another's processes.
//!
//! Timers (`tokio::time::sleep`, `timeout`, `interval`) are tokio's and are not behind the seam:
//! tokio's clock can already be paused and driven (`start_paused`, turmoil), and [`Clock::now`]
//! reads that same clock, so deadlines and timers agree.
//!
//! # Deliberately left out
//! * File systems: the storage engine has its own seam for files (`crate::storage::disk`), so a
//!   simulation can hand a server a disk that forgets what was not synced.
//! * Tools (`crate::tools`: the load generator's loopback probe, chaos, the demo) open their own
//!   sockets and read the real clock: they measure or drive the real thing.

pub mod admission;
pub mod raft_runtime;
pub mod secret;
pub mod tls;

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use crate::errinput;
use crate::error::{Error, Result};

/// Ports a storage server tries in turn when not told one (the course's range).
pub const SERVER_PORTS: RangeInclusive<u16> = 38000..=38010;
/// Ports a view leader tries in turn when not told one.
pub const VIEWLEADER_PORTS: RangeInclusive<u16> = 39000..=39010;
/// Pause after a failed accept (out of file descriptors, say) before the next, so that a
/// listener in trouble does not spin.
pub const ACCEPT_BACKOFF_MS: u64 = 100;
/// The cluster a process belongs to unless told otherwise (`--cluster`, `RINGLEADER_CLUSTER`).
pub const CLUSTER_DEFAULT: &str = "ringleader";
/// Longest cluster name, in bytes; a longer one is refused as invalid input. A peer's hello may
/// carry anything, but only this much of a foreign name is quoted back in an error.
pub const CLUSTER_NAME_MAX_BYTES: usize = 64;

/// A byte stream to a peer: a TCP connection, or whatever a simulated network offers.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// A connection as every caller sees it.
pub type Conn = Box<dyn Stream>;

/// Where a service accepts connections.
pub trait Listener: Send + Sync {
    /// The next connection and the peer's address.
    fn accept(&self) -> BoxFuture<'_, std::io::Result<(Conn, String)>>;
    /// The address peers reach this listener at.
    fn local_addr(&self) -> Result<String>;
}

/// Opens connections and listeners.
pub trait Transport: Send + Sync {
    /// Dials `addr` (`host:port`).
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Conn>>;
    /// Listens on `addr` (`host:port`; port 0 takes any free port).
    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Box<dyn Listener>>>;
}

/// Reads the time.
pub trait Clock: Send + Sync {
    /// Monotonic time, for deadlines and durations (tokio's clock, so timers agree with it).
    fn now(&self) -> Instant;
    /// Microseconds since the Unix epoch: where proposed versions start.
    fn wall_us(&self) -> u64;
}

/// Draws random numbers: ids of servers, transactions and requests, and jitter.
pub trait Random: Send + Sync {
    fn next_u128(&self) -> u128;
}

/// Everything a node takes from the world. Cheap to clone.
#[derive(Clone)]
pub struct Env {
    pub transport: Arc<dyn Transport>,
    pub clock: Arc<dyn Clock>,
    pub random: Arc<dyn Random>,
    /// The cluster this node belongs to: sent in every hello, and the only one whose peers it
    /// talks to. A valid name (see [`validate_cluster_name`]); set it with [`Env::in_cluster`].
    pub cluster: Arc<str>,
    /// The secret this node proves in every hello and asks its callers to prove
    /// ([`secret`]); `None`: no authentication, which is only for loopback.
    pub secret: Option<Arc<secret::ClusterSecret>>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = self.secret.as_ref().map(|secret| secret.role());
        write!(f, "Env {{ cluster: {:?}, secret: {role:?} }}", self.cluster)
    }
}

impl Env {
    /// TCP, the system clocks and the operating system's randomness, in cluster
    /// [`CLUSTER_DEFAULT`].
    pub fn real() -> Self {
        Self {
            transport: Arc::new(Tcp),
            clock: Arc::new(SystemClock),
            random: Arc::new(OsRandom),
            cluster: Arc::from(CLUSTER_DEFAULT),
            secret: None,
        }
    }

    /// The same world, proving `secret` in every hello and asking callers for it.
    pub fn with_secret(self, secret: Option<secret::ClusterSecret>) -> Self {
        Self {
            secret: secret.map(Arc::new),
            ..self
        }
    }

    /// The same world, for a node of cluster `name`; an invalid name is refused (see
    /// [`validate_cluster_name`]).
    pub fn in_cluster(self, name: &str) -> Result<Self> {
        validate_cluster_name(name)?;
        Ok(Self {
            cluster: Arc::from(name),
            ..self
        })
    }

    /// The cluster this node belongs to.
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    pub fn wall_us(&self) -> u64 {
        self.clock.wall_us()
    }

    pub fn random_u128(&self) -> u128 {
        self.random.next_u128()
    }

    /// A number in `0..bound` (`bound` above 0), for jitter.
    pub fn random_below(&self, bound: u64) -> u64 {
        assert!(bound > 0, "no number lies below 0");
        (self.random.next_u128() % u128::from(bound)) as u64
    }

    /// A fresh server id: a version-4 UUID drawn from [`Env::random`].
    pub fn new_id(&self) -> String {
        uuid::Builder::from_random_bytes(self.random_u128().to_le_bytes())
            .into_uuid()
            .to_string()
    }

    pub async fn connect(&self, addr: &str) -> Result<Conn> {
        self.transport.connect(addr).await
    }

    /// Binds `host:port`, or with no port given the first free port of `range`. Port 0 takes
    /// any free port.
    pub async fn bind(
        &self,
        host: &str,
        port: Option<u16>,
        range: RangeInclusive<u16>,
    ) -> Result<Box<dyn Listener>> {
        if let Some(port) = port {
            return self.transport.bind(&join_host_port(host, port)).await;
        }
        let mut last_err = None;
        for port in range.clone() {
            match self.transport.bind(&join_host_port(host, port)).await {
                Ok(listener) => return Ok(listener),
                Err(err) => last_err = Some(err),
            }
        }
        Err(Error::Unreachable(format!(
            "no free port in {}-{} on {host}: {}",
            range.start(),
            range.end(),
            last_err.map(|e| e.to_string()).unwrap_or_default()
        )))
    }
}

/// Checks a cluster name: 1 to [`CLUSTER_NAME_MAX_BYTES`] bytes of ASCII letters, digits, `-`,
/// `_` and `.`, so that it prints unambiguously in logs and errors.
pub fn validate_cluster_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(errinput!("the cluster name is empty"));
    }
    if name.len() > CLUSTER_NAME_MAX_BYTES {
        return Err(errinput!(
            "the cluster name {:?} is {} bytes long; the limit is {CLUSTER_NAME_MAX_BYTES}",
            shown_cluster(name),
            name.len()
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(errinput!(
            "the cluster name {name:?} holds {bad:?}; use ASCII letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(())
}

/// A cluster name as errors quote it: cut to [`CLUSTER_NAME_MAX_BYTES`] (on a character
/// boundary, marked by `...`), for names that come from a peer and may be anything.
pub fn shown_cluster(name: &str) -> String {
    if name.len() <= CLUSTER_NAME_MAX_BYTES {
        return name.to_string();
    }
    let mut end = CLUSTER_NAME_MAX_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &name[..end])
}

/// `host:port`, with an IPv6 literal in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The next connection on `listener`. A failed accept (out of file descriptors and the like) is
/// logged and retried after [`ACCEPT_BACKOFF_MS`] instead of spinning or ending the service.
pub async fn accept(listener: &dyn Listener) -> (Conn, String) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                tracing::warn!(%err, "accept failed");
                tokio::time::sleep(Duration::from_millis(ACCEPT_BACKOFF_MS)).await;
            }
        }
    }
}

/// Real TCP with Nagle off: our messages are small and latency-bound.
pub struct Tcp;

impl Transport for Tcp {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Conn>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|err| Error::Unreachable(format!("cannot connect to {addr}: {err}")))?;
            let _ = stream.set_nodelay(true);
            Ok(Box::new(stream) as Conn)
        })
    }

    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|err| Error::Unreachable(format!("cannot listen on {addr}: {err}")))?;
            Ok(Box::new(listener) as Box<dyn Listener>)
        })
    }
}

impl Listener for TcpListener {
    fn accept(&self) -> BoxFuture<'_, std::io::Result<(Conn, String)>> {
        Box::pin(async move {
            let (stream, peer) = TcpListener::accept(self).await?;
            let _ = stream.set_nodelay(true);
            Ok((Box::new(stream) as Conn, peer.to_string()))
        })
    }

    fn local_addr(&self) -> Result<String> {
        TcpListener::local_addr(self)
            .map(|addr| addr.to_string())
            .map_err(|err| Error::Internal(format!("listener has no address: {err}")))
    }
}

/// tokio's monotonic clock and the system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_us(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0)
    }
}

/// The operating system's randomness (through `rand`'s thread-local generator).
pub struct OsRandom;

impl Random for OsRandom {
    fn next_u128(&self) -> u128 {
        rand::random()
    }
}

/// The addresses to try for a target given as `host[:port]`: the one address if it has a port,
/// else `host` at every port of `range` in turn (as the course's client does).
pub fn candidates(target: &str, range: RangeInclusive<u16>) -> Result<Vec<String>> {
    let target = target.trim();
    if target.is_empty() {
        return Err(errinput!("empty address"));
    }
    if let Some(addr) = own_port(target) {
        return addr.map(|addr| vec![addr]);
    }
    Ok(range.map(|port| format!("{target}:{port}")).collect())
}

/// Whether `target` names its port (else [`candidates`] expands it to a range). A malformed
/// target counts as naming one: [`candidates`] refuses it before any range is searched.
pub fn names_a_port(target: &str) -> bool {
    own_port(target.trim()).is_some()
}

/// `target` as one address when it names its port (`Some(Err)` when that port is bad).
fn own_port(target: &str) -> Option<Result<String>> {
    // A bracketed IPv6 literal, or host:port with a numeric port.
    let (host, port) = target.rsplit_once(':')?;
    let bracketed_v6 = target.starts_with('[') && host.ends_with(']');
    let plain = !host.contains(':');
    if !(bracketed_v6 || plain) {
        return None;
    }
    Some(match port.parse::<u16>() {
        Ok(port) => {
            let host = if host.is_empty() { "localhost" } else { host };
            Ok(format!("{host}:{port}"))
        }
        Err(_) => Err(errinput!("bad port in address {target:?}")),
    })
}

/// The addresses to try for a comma-separated list of targets, each as [`candidates`], in
/// order and without repeats.
pub fn candidates_of_list(targets: &str, range: RangeInclusive<u16>) -> Result<Vec<String>> {
    let mut all: Vec<String> = Vec::new();
    for target in targets.split(',').filter(|t| !t.trim().is_empty()) {
        for addr in candidates(target, range.clone())? {
            if !all.contains(&addr) {
                all.push(addr);
            }
        }
    }
    if all.is_empty() {
        return Err(errinput!("empty address"));
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_its_port_or_stands_for_a_range() {
        assert!(names_a_port("h:1") && names_a_port(":1") && names_a_port("[::1]:1"));
        assert!(!names_a_port("h") && !names_a_port("::1") && !names_a_port(" h "));
    }

    #[test]
    fn a_list_of_members_is_each_of_them_in_order_once() {
        let all = candidates_of_list("a:1, b:2,a:1,,c", 5..=6).unwrap();
        assert_eq!(all, vec!["a:1", "b:2", "c:5", "c:6"]);
        assert!(candidates_of_list(" , ", 5..=6).is_err());
    }

    #[test]
    fn a_host_without_port_expands_to_the_whole_range() {
        let all = candidates("localhost", 38000..=38002).unwrap();
        assert_eq!(
            all,
            vec!["localhost:38000", "localhost:38001", "localhost:38002"]
        );
    }

    #[test]
    fn an_ipv6_host_is_bracketed_before_its_port() {
        assert_eq!(join_host_port("::1", 5), "[::1]:5");
        assert_eq!(join_host_port("[::1]", 5), "[::1]:5");
        assert_eq!(join_host_port("localhost", 5), "localhost:5");
    }

    #[test]
    fn cluster_names_are_short_printable_ascii() {
        for good in [
            "ringleader",
            "a",
            "prod-eu_1.2",
            &"x".repeat(CLUSTER_NAME_MAX_BYTES),
        ] {
            assert!(validate_cluster_name(good).is_ok(), "{good:?} refused");
            assert_eq!(Env::real().in_cluster(good).unwrap().cluster(), good);
        }
        let long = "x".repeat(CLUSTER_NAME_MAX_BYTES + 1);
        for bad in ["", " ", "a b", "ä", "a\n", "a\"b", "a/b", long.as_str()] {
            let err = validate_cluster_name(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidRequest(ref msg) if msg.contains("cluster name")),
                "{bad:?}: {err}"
            );
            assert!(Env::real().in_cluster(bad).is_err());
        }
        assert_eq!(Env::real().cluster(), CLUSTER_DEFAULT);
        assert!(validate_cluster_name(CLUSTER_DEFAULT).is_ok());
    }

    #[test]
    fn a_foreign_cluster_name_is_cut_when_quoted() {
        assert_eq!(shown_cluster("b"), "b");
        let long = "é".repeat(CLUSTER_NAME_MAX_BYTES);
        let shown = shown_cluster(&long);
        assert!(shown.ends_with("...") && shown.len() <= CLUSTER_NAME_MAX_BYTES + 3);
    }

    #[test]
    fn a_host_with_port_is_taken_as_is() {
        assert_eq!(
            candidates("127.0.0.1:5", 1..=2).unwrap(),
            vec!["127.0.0.1:5"]
        );
        assert_eq!(candidates(":5", 1..=2).unwrap(), vec!["localhost:5"]);
        assert!(candidates("h:notaport", 1..=2).is_err());
    }
}
