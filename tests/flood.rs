//! Issue 16, limits that hold under abuse: floods of idle connections do not lock clients out.
//!
//! * 2,000 idle RPC connections that complete the hello, from 20 source addresses (127.0.0.2 to
//!   127.0.0.21), to one server while a client runs `setr` and `getr`: every call succeeds.
//! * 2,000 slow-header HTTP clients (a request line, then nothing) against a server's gateway
//!   while a client POSTs and GETs keys: every request succeeds.
//! * An RPC connection idle past the idle timeout (`--rpc-idle-timeout-ms`) is closed.
//! * An HTTP body over the limit gets 413 and changes nothing.
//!
//! Real processes (the `TestCluster` harness). On Linux all of 127/8 is loopback, so each flood
//! socket is bound to its source address before connecting; where 127.0.0.2 cannot be bound the
//! flood tests are skipped with a printed reason. The figures (connections held, requests
//! served, the server's RSS and open files) are printed, never asserted on.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, Slot, TestCluster, Timings, SLOT_WEIGHTS};
use futures::future::BoxFuture;
use futures::StreamExt;
use ringleader::net::{Conn, Env, Listener, Transport};
use ringleader::rpc::client::RpcClient;
use ringleader::rpc::message::{ServerReply, ServerRequest, ServiceKind};

/// Connections each flood opens.
const FLOOD_CONNECTIONS: usize = 2_000;
/// Source addresses of a flood: 127.0.0.2 up to 127.0.0.21.
const FLOOD_SOURCES: u8 = 20;
/// Flood connections being opened at once.
const FLOOD_CONCURRENCY: usize = 64;
/// Time allowed for one flood connection to connect (and say hello).
const FLOOD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rounds of client requests after the flood has finished, so some are served while the
/// server's table is full.
const ROUNDS_AFTER_FLOOD: usize = 5;
/// Bound on the whole flood, connections and requests.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(180);
/// Timeout of one HTTP request of the well-behaved client.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// The idle timeout test (3) gives the servers: at least 1 s, so heartbeats and the long poll
/// keep the cluster's own connections busy.
const IDLE_TIMEOUT_MS: u64 = 1_000;

/// The `n`-th source address of a flood.
fn source(n: usize) -> IpAddr {
    let last = 2 + (n % usize::from(FLOOD_SOURCES)) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
}

/// `Some(reason)` when this machine cannot bind 127.0.0.2 (not Linux): the floods skip.
fn cannot_flood() -> Option<String> {
    match std::net::TcpListener::bind("127.0.0.2:0") {
        Ok(_) => {
            // Each flood holds its sockets in this process too.
            ringleader::cli::process::raise_open_files_limit();
            None
        }
        Err(err) => Some(format!(
            "cannot bind 127.0.0.2 ({err}): only Linux routes all of 127/8 to loopback"
        )),
    }
}

/// Dials from a fixed source address: the flood's many "hosts".
struct FromSource(IpAddr);

impl FromSource {
    async fn dial(&self, addr: &str) -> std::io::Result<tokio::net::TcpStream> {
        let target: SocketAddr = addr
            .parse()
            .map_err(|err| std::io::Error::other(format!("bad address {addr}: {err}")))?;
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.0, 0))?;
        socket.connect(target).await
    }
}

impl Transport for FromSource {
    fn connect<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, ringleader::Result<Conn>> {
        Box::pin(async move {
            let stream = self.dial(addr).await.map_err(|err| {
                ringleader::Error::Unreachable(format!("{} -> {addr}: {err}", self.0))
            })?;
            Ok(Box::new(stream) as Conn)
        })
    }

    fn bind<'a>(&'a self, addr: &'a str) -> BoxFuture<'a, ringleader::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            Err(ringleader::Error::InvalidRequest(format!(
                "the flood only dials; cannot listen on {addr}"
            )))
        })
    }
}

/// A process's resident memory in kB, from /proc/PID/status.
fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Files (sockets included) a process has open, from /proc/PID/fd.
fn open_files(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the flood")
}

/// What a flood left behind.
struct Flood<T> {
    held: Vec<T>,
    failed: usize,
    first_error: Option<String>,
}

/// Opens [`FLOOD_CONNECTIONS`] connections with `open` (given the source), [`FLOOD_CONCURRENCY`]
/// at a time.
async fn flood<T, F, Fut>(open: F) -> Flood<T>
where
    F: Fn(IpAddr) -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let outcomes: Vec<Result<T, String>> = futures::stream::iter(0..FLOOD_CONNECTIONS)
        .map(|n| {
            let opened = open(source(n));
            async move {
                tokio::time::timeout(FLOOD_CONNECT_TIMEOUT, opened)
                    .await
                    .unwrap_or_else(|_| Err("connect timed out".into()))
            }
        })
        .buffer_unordered(FLOOD_CONCURRENCY)
        .collect()
        .await;
    let mut flood = Flood {
        held: Vec::new(),
        failed: 0,
        first_error: None,
    };
    for outcome in outcomes {
        match outcome {
            Ok(held) => flood.held.push(held),
            Err(err) => {
                flood.failed += 1;
                flood.first_error.get_or_insert(err);
            }
        }
    }
    flood
}

/// Runs `request(round)` rounds on this thread while `flood` runs, then
/// [`ROUNDS_AFTER_FLOOD`] more; returns the flood's outcome and the rounds run.
fn while_flooding<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    flood: impl std::future::Future<Output = Flood<T>> + Send + 'static,
    mut request: impl FnMut(usize),
) -> (Flood<T>, usize, usize) {
    let started = std::time::Instant::now();
    let handle = runtime.spawn(flood);
    let mut rounds = 0;
    while !handle.is_finished() {
        assert!(started.elapsed() < FLOOD_TIMEOUT, "the flood never ended");
        request(rounds);
        rounds += 1;
    }
    let during = rounds;
    for _ in 0..ROUNDS_AFTER_FLOOD {
        request(rounds);
        rounds += 1;
    }
    let flood = runtime
        .block_on(handle)
        .unwrap_or_else(|err| panic!("the flood task failed: {err}"));
    (flood, during, rounds)
}

#[test]
fn two_thousand_idle_rpc_connections_do_not_lock_out_a_client() {
    if let Some(reason) = cannot_flood() {
        eprintln!("skipped: {reason}");
        return;
    }
    let _alone = Slot::acquire(SLOT_WEIGHTS);
    let cluster = TestCluster::start(3);
    let target = cluster.server_addr(0);
    let pid = cluster.server_pid(0);
    let (rss_before, files_before) = (rss_kb(pid), open_files(pid));
    let runtime = runtime();

    let addr = target.clone();
    let idle_flood = flood(move |from| {
        let addr = addr.clone();
        async move {
            let env = Env {
                transport: Arc::new(FromSource(from)),
                ..Env::real()
            };
            RpcClient::<ServerRequest, ServerReply>::connect(
                &env,
                &addr,
                ServiceKind::Server,
                FLOOD_CONNECT_TIMEOUT,
            )
            .await
            .map_err(|err| err.to_string())
        }
    });
    let (mut writes, mut reads) = (0, 0);
    let (flood, during, rounds) = while_flooding(&runtime, idle_flood, |round| {
        // Every key has a replica on every one of the three servers, the flooded one too.
        let (key, value) = (format!("flood-{round}"), format!("v{round}"));
        cluster.client(&["setr", &key, &value]).expect_ok();
        writes += 1;
        assert_eq!(cluster.getr_text(&key).as_deref(), Some(value.as_str()));
        reads += 1;
    });

    // The cap holds: the server sheds what it cannot keep (each shed socket closes at once).
    let cap = ringleader::rpc::server::CONNECTIONS_MAX;
    wait_until(
        Duration::from_secs(30),
        "the flood is cut to the cap",
        || flood.held.iter().filter(|c| !c.is_closed()).count() <= cap,
    );
    let held = flood.held.iter().filter(|c| !c.is_closed()).count();
    let (rss_after, files_after) = (rss_kb(pid), open_files(pid));
    eprintln!(
        "RPC flood: {} connections completed the hello ({} failed{}); {held} still held at the \
         end (cap {cap}); {writes} setr and {reads} getr succeeded ({during} rounds during the \
         flood, {rounds} in all); server RSS {rss_before:?} kB before, {rss_after:?} kB after; \
         open files {files_before:?} before, {files_after:?} after",
        flood.held.len(),
        flood.failed,
        flood
            .first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
    );
    assert!(writes > ROUNDS_AFTER_FLOOD && reads == writes);
}

/// Sends one HTTP/1.1 request on a fresh connection (`Connection: close`); the status and body.
fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|err| format!("connect {addr}: {err}"))?;
    let _ = stream.set_read_timeout(Some(HTTP_TIMEOUT));
    let _ = stream.set_write_timeout(Some(HTTP_TIMEOUT));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    stream
        .write_all(&out)
        .map_err(|err| format!("write: {err}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|err| format!("read after {} bytes: {err}", raw.len()))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no whole response: {text:?}"))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    Ok((status, body.to_string()))
}

#[track_caller]
fn expect_http(addr: &str, method: &str, path: &str, body: &str, status: u16) -> String {
    match http(addr, method, path, body.as_bytes()) {
        Ok((got, text)) if got == status => text,
        other => panic!("{method} {path}: wanted {status}, got {other:?}"),
    }
}

/// A cluster of `servers` whose servers serve the gateway; the gateway of server 0.
fn start_with_gateways(servers: usize) -> (TestCluster, String) {
    let cluster =
        TestCluster::start_with_server_args(Timings::default(), servers, &["--http-port", "0"]);
    let mut gateway = None;
    wait_until(
        Duration::from_secs(15),
        "server 0 announces its gateway",
        || {
            gateway = cluster
                .server_stdout(0)
                .iter()
                .find_map(|line| line.strip_prefix("http listening on ").map(str::to_string));
            gateway.is_some()
        },
    );
    let gateway = gateway.unwrap_or_default().trim().to_string();
    (cluster, gateway)
}

/// Whether the peer has closed `stream` (a non-blocking std socket).
fn closed(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    match stream.peek(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(err) => err.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn two_thousand_slow_header_clients_do_not_lock_out_the_gateway() {
    if let Some(reason) = cannot_flood() {
        eprintln!("skipped: {reason}");
        return;
    }
    let _alone = Slot::acquire(SLOT_WEIGHTS);
    let (cluster, gateway) = start_with_gateways(3);
    let pid = cluster.server_pid(0);
    let (rss_before, files_before) = (rss_kb(pid), open_files(pid));
    let runtime = runtime();

    let addr = gateway.clone();
    let slow_flood = flood(move |from| {
        let addr = addr.clone();
        async move {
            let mut stream = FromSource(from)
                .dial(&addr)
                .await
                .map_err(|err| err.to_string())?;
            use tokio::io::AsyncWriteExt;
            stream
                .write_all(b"GET / HTTP/1.1\r\n")
                .await
                .map_err(|err| err.to_string())?;
            stream.into_std().map_err(|err| err.to_string())
        }
    });
    let (mut writes, mut reads) = (0, 0);
    let (flood, during, rounds) = while_flooding(&runtime, slow_flood, |round| {
        let path = format!("/keys/slow-{round}");
        let put = format!(r#"{{"type": "PUT", "value": ["v{round}"]}}"#);
        expect_http(&gateway, "POST", &path, &put, 204);
        writes += 1;
        let got = expect_http(&gateway, "GET", &path, "", 200);
        assert_eq!(got.trim(), format!(r#"["v{round}"]"#));
        reads += 1;
    });

    let cap = ringleader::http::HTTP_CONNECTIONS_MAX;
    wait_until(
        Duration::from_secs(30),
        "the flood is cut to the cap",
        || flood.held.iter().filter(|s| !closed(s)).count() <= cap,
    );
    let held = flood.held.iter().filter(|s| !closed(s)).count();
    let (rss_after, files_after) = (rss_kb(pid), open_files(pid));
    eprintln!(
        "HTTP slow-header flood: {} connections opened ({} failed{}); {held} still held at the \
         end (cap {cap}); {writes} POST and {reads} GET succeeded ({during} rounds during the \
         flood, {rounds} in all); server RSS {rss_before:?} kB before, {rss_after:?} kB after; \
         open files {files_before:?} before, {files_after:?} after",
        flood.held.len(),
        flood.failed,
        flood
            .first_error
            .as_deref()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
    );
    assert!(writes > ROUNDS_AFTER_FLOOD && reads == writes);
}

#[test]
fn an_rpc_connection_idle_past_the_idle_timeout_is_closed() {
    let idle = IDLE_TIMEOUT_MS.to_string();
    let cluster = TestCluster::start_with_args(
        Timings::default(),
        2,
        &["--rpc-idle-timeout-ms", idle.as_str()],
        &[],
    );
    let runtime = runtime();
    let addr = cluster.server_addr(0);
    let idle_client = runtime
        .block_on(RpcClient::<ServerRequest, ServerReply>::connect(
            &Env::real(),
            &addr,
            ServiceKind::Server,
            FLOOD_CONNECT_TIMEOUT,
        ))
        .unwrap_or_else(|err| panic!("cannot say hello to {addr}: {err}"));
    wait_until(
        Duration::from_secs(30),
        "the server closes the idle connection",
        || idle_client.is_closed(),
    );
    // The cluster's own connections (heartbeats, the view's long poll, 2PC) live with it.
    cluster.client(&["setr", "after-idle", "v"]).expect_ok();
    assert_eq!(cluster.getr_text("after-idle").as_deref(), Some("v"));
}

#[test]
fn an_oversized_body_gets_413_and_changes_nothing() {
    let (cluster, gateway) = start_with_gateways(1);
    expect_http(
        &gateway,
        "POST",
        "/keys/big",
        r#"{"type": "PUT", "value": ["before"]}"#,
        204,
    );
    let limit = ringleader::http::HTTP_BODY_BYTES_MAX;
    let head = r#"{"type": "PUT", "value": [""#;
    let tail = r#""]}"#;
    let mut body = head.to_string();
    body.push_str(&"x".repeat(limit + 1 - head.len() - tail.len()));
    body.push_str(tail);
    assert_eq!(body.len(), limit + 1);
    expect_http(&gateway, "POST", "/keys/big", &body, 413);
    let kept = expect_http(&gateway, "GET", "/keys/big", "", 200);
    assert_eq!(kept.trim(), r#"["before"]"#);
    drop(cluster);
}
