//! Issue 6 (HTTP gateway): the REST key/value API with every status code it gives, any node
//! serving any key, `/admin/status` and `/metrics`, and the INF-3203 distributed log played by a
//! client like the course's (one request at a time to a random node, 5 s timeout, any HTTP
//! response counts as success) through crashes, recoveries and `/exit`, checked with the
//! external checker's three conditions. Issue 17: `/health` and `/ready` of servers and
//! view-leader members, settled, crashed, outside the view and without a leader.
//!
//! Everything runs on real processes: a `viewleader` and `server --http-port 0 --fault-injection`
//! binaries started here (the shared harness does not know `--http-port`), each in a temporary working directory
//! so the files `/exit` writes land there. The HTTP client is a tiny HTTP/1.1 client over
//! `std::net::TcpStream`, because "the connection was closed without any response" is itself an
//! answer of the contract and must be told apart from a response. Every wait polls a condition
//! against a deadline.

mod common;

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::http_client::{request, Reply, Response};
use common::{lock_ignoring_poison, run_client, wait_for, ClientRun, Slot, POLL, SLOT_WEIGHTS};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Interval between heartbeats of the test clusters.
const HEARTBEAT_MS: u64 = 200;
/// Lease of the test clusters (at least 1 s, so a busy machine expires nobody).
const LEASE_MS: u64 = 1_000;
/// The INF-3203 client's timeout, used for every request here.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a process to print its `listening on` lines.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Generous bound for a view change to settle (expiry, rejoin, rebalance).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(15);
/// A log entry arriving while up to two of five nodes are crashed commits within the
/// gateway's 4.8 s (two replicas of the log crashed at once wait out a lease and the view
/// leader's return wait, about 4.2 s at this lease); the response arrives within the client's
/// timeout.
const LOG_COMMIT_BOUND: Duration = HTTP_TIMEOUT;
/// A node exits by itself this long after `/exit` at the latest (its linger is 3 s).
const EXIT_BOUND: Duration = Duration::from_secs(10);
/// Stderr lines kept per process for failure messages.
const STDERR_LINES_KEPT: usize = 400;

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process whose stdout lines come through a channel and whose stderr tail is kept;
/// both pipes are drained by threads until they close. Killed on drop.
struct Proc {
    name: String,
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

impl Proc {
    fn spawn(name: &str, program: &str, args: &[String], dir: &Path) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .env_remove(common::CLUSTER_ENV)
            .env_remove(common::VIEWLEADER_ENV)
            .env_remove(common::HTTP_TOKEN_FILE_ENV)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name} ({program}): {err}"));
        let (tx, stdout) = mpsc::channel();
        let out = child.stdout.take().expect("stdout is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(line);
            }
        });
        let stderr: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let kept = stderr.clone();
        let err = child.stderr.take().expect("stderr is piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                let mut kept = lock_ignoring_poison(&kept);
                if kept.len() >= STDERR_LINES_KEPT {
                    kept.pop_front();
                }
                kept.push_back(line);
            }
        });
        Self {
            name: name.to_string(),
            child,
            stdout,
            stderr,
        }
    }

    fn stderr_tail(&self) -> String {
        lock_ignoring_poison(&self.stderr)
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The rest of the next stdout line starting with `prefix` (other lines are skipped).
    fn line_after(&mut self, prefix: &str, deadline: Instant) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.trim().to_string();
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "{} printed no `{prefix}` line in time; stderr:\n{}",
                    self.name,
                    self.stderr_tail()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "{} exited ({status:?}) before printing `{prefix}`; stderr:\n{}",
                        self.name,
                        self.stderr_tail()
                    )
                }
            }
        }
    }

    /// The exit status once the process ended by itself, or `None` at `deadline`.
    fn exited_by(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A storage server with its HTTP gateway.
struct Node {
    proc: Proc,
    /// The RPC address (`listening on`).
    rpc: String,
    /// The HTTP address (`http listening on`).
    http: String,
}

/// A view leader and storage servers with HTTP gateways, in a temporary working directory.
/// Fields drop in order: the servers die before the view leader, then the directory goes.
struct Cluster {
    nodes: Vec<Node>,
    viewleader: Option<Proc>,
    viewleader_addr: String,
    /// The view leader's `/metrics` and `/admin/status` address.
    viewleader_http: String,
    output_id: String,
    dir: tempfile::TempDir,
    _slot: Slot,
}

impl Cluster {
    /// A view leader and `servers` servers, all in the view and settled; holds `weight` slots.
    fn start(servers: usize, weight: usize) -> Self {
        let slot = Slot::acquire(weight);
        let dir = tempfile::Builder::new()
            .prefix("ringleader-http-")
            .tempdir()
            .expect("create a temp dir");
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let mut viewleader = Proc::spawn(
            "viewleader",
            common::VIEWLEADER_BIN,
            &strings(&[
                "--port",
                "0",
                "--http-port",
                "0",
                "--heartbeat-interval-ms",
                &HEARTBEAT_MS.to_string(),
                "--lease-ms",
                &LEASE_MS.to_string(),
                // The log harness crashes and recovers nodes.
                "--fault-injection",
            ]),
            dir.path(),
        );
        let viewleader_addr = viewleader.line_after("listening on ", deadline);
        let viewleader_http = viewleader.line_after("http listening on ", deadline);
        let output_id = format!("run{}", rand::random::<u32>());
        let mut nodes = Vec::new();
        for number in 0..servers {
            let mut proc = Proc::spawn(
                &format!("server {number}"),
                common::SERVER_BIN,
                &strings(&[
                    "--port",
                    "0",
                    "--http-port",
                    "0",
                    "--viewleader",
                    &viewleader_addr,
                    "--heartbeat-interval-ms",
                    &HEARTBEAT_MS.to_string(),
                    "--log-output-id",
                    &output_id,
                    "--fault-injection",
                ]),
                dir.path(),
            );
            let rpc = proc.line_after("listening on ", deadline);
            let http = proc.line_after("http listening on ", deadline);
            nodes.push(Node { proc, rpc, http });
        }
        let cluster = Self {
            viewleader_http,
            nodes,
            viewleader: Some(viewleader),
            viewleader_addr,
            output_id,
            dir,
            _slot: slot,
        };
        let all: Vec<usize> = (0..servers).collect();
        cluster.wait_settled(&all, &all);
        cluster
    }

    fn http(&self, number: usize) -> &str {
        &self.nodes[number].http
    }

    /// Waits until every node of `asked` sees a settled view of exactly the nodes `members`, at
    /// one epoch; returns the epoch.
    #[track_caller]
    fn wait_settled(&self, asked: &[usize], members: &[usize]) -> u64 {
        let want: BTreeSet<String> = members.iter().map(|&n| self.nodes[n].rpc.clone()).collect();
        wait_for(
            SETTLE_TIMEOUT,
            &format!("nodes {asked:?} see a settled view of nodes {members:?}"),
            || {
                let mut epochs = BTreeSet::new();
                for &number in asked {
                    let status = match send(self.http(number), "GET", "/admin/status", None, b"") {
                        Reply::Answered(r) if r.status == 200 => r.text(),
                        other => return Err(format!("node {number}: {other}")),
                    };
                    let seen = status_members(&status);
                    if seen != want {
                        return Err(format!("node {number} sees {seen:?}"));
                    }
                    let rebalancing = status_field(&status, "rebalancing").unwrap_or("");
                    if !rebalancing.starts_with("settled") {
                        return Err(format!("node {number}: rebalancing: {rebalancing}"));
                    }
                    epochs.insert(status_number(&status, "epoch"));
                }
                match epochs.len() {
                    1 => Ok(epochs.into_iter().next().unwrap_or_default()),
                    _ => Err(format!("epochs differ: {epochs:?}")),
                }
            },
        )
    }

    /// Runs `client --viewleader ADDR ARGS...`.
    fn client(&self, args: &[&str]) -> ClientRun {
        let mut full = vec!["--viewleader", self.viewleader_addr.as_str()];
        full.extend_from_slice(args);
        run_client(&full)
    }

    fn kill_viewleader(&mut self) {
        drop(self.viewleader.take());
    }

    /// Where `/exit` of node `number` writes the log.
    fn exit_file(&self, number: usize) -> PathBuf {
        let (host, port) = self.http(number).rsplit_once(':').expect("host:port");
        self.dir
            .path()
            .join("output")
            .join(format!("{}-server-{host}{port}.csv", self.output_id))
    }

    fn stderr_of(&self, number: usize) -> String {
        self.nodes[number].proc.stderr_tail()
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// The value of `name: value` in an `/admin/status` text.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(": "))
}

#[track_caller]
fn status_number(status: &str, name: &str) -> u64 {
    status_field(status, name)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {name:?} in the status:\n{status}"))
}

/// The member addresses an `/admin/status` text lists (the indented lines).
fn status_members(status: &str) -> BTreeSet<String> {
    status
        .lines()
        .filter(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// One request with an optional content type.
fn send(addr: &str, method: &str, path: &str, content_type: Option<&str>, body: &[u8]) -> Reply {
    match content_type {
        Some(content_type) => request(addr, method, path, &[("Content-Type", content_type)], body),
        None => request(addr, method, path, &[], body),
    }
}

fn get(addr: &str, path: &str) -> Reply {
    send(addr, "GET", path, None, b"")
}

fn post(addr: &str, path: &str, content_type: Option<&str>, body: &str) -> Reply {
    send(addr, "POST", path, content_type, body.as_bytes())
}

/// `POST /keys/{key}` with `application/json`.
fn post_json(addr: &str, path: &str, body: &str) -> Reply {
    post(addr, path, Some("application/json"), body)
}

/// `PUT /` of one log entry, as the INF-3203 client sends it.
fn put_entry(addr: &str, entry: &str) -> Reply {
    send(
        addr,
        "PUT",
        "/",
        Some("text/plain; charset=utf-8"),
        entry.as_bytes(),
    )
}

#[track_caller]
fn answered(reply: Reply, what: &str) -> Response {
    match reply {
        Reply::Answered(response) => response,
        other => panic!("{what}: expected a response, got {other}"),
    }
}

/// A response with `status`, panicking with what came instead.
#[track_caller]
fn expect_status(reply: Reply, status: u16, what: &str) -> Response {
    let response = answered(reply, what);
    assert_eq!(response.status, status, "{what}: got {response}");
    response
}

#[track_caller]
fn expect_closed(reply: Reply, what: &str) {
    assert!(
        matches!(reply, Reply::Closed),
        "{what}: expected the connection closed without a response, got {reply}"
    );
}

/// A 400 with a text/plain message containing `needle`.
#[track_caller]
fn expect_bad_request(reply: Reply, needle: &str, what: &str) {
    let response = expect_status(reply, 400, what);
    assert!(
        response.content_type().starts_with("text/plain"),
        "{what}: a 400 must be text/plain, got {response}"
    );
    assert!(
        response.text().contains(needle),
        "{what}: the message should name the problem ({needle:?}), got {response}"
    );
}

/// `GET path` must be a 200 with a JSON list of strings; returns it.
#[track_caller]
fn get_list(addr: &str, path: &str) -> Vec<String> {
    let what = format!("GET {path} on {addr}");
    let response = expect_status(get(addr, path), 200, &what);
    assert!(
        response.content_type().starts_with("application/json"),
        "{what}: expected a JSON content type, got {response}"
    );
    serde_json::from_slice(&response.body)
        .unwrap_or_else(|err| panic!("{what}: not a JSON list of strings ({err}): {response}"))
}

fn list(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------------
// The key/value REST API
// ---------------------------------------------------------------------------------------------

#[test]
fn rest_api_status_codes() {
    let mut cluster = Cluster::start(3, 1);
    let node = cluster.http(0).to_string();
    let n = node.as_str();

    // 404 for a key that does not exist (text/plain naming it).
    let missing = expect_status(get(n, "/keys/missing"), 404, "GET a missing key");
    assert!(
        missing.content_type().starts_with("text/plain") && missing.text().contains("missing"),
        "a 404 names the key in text/plain: {missing}"
    );

    // PUT replaces with a list; GET returns it as JSON.
    let put = expect_status(
        post_json(n, "/keys/fruits", r#"{"type": "PUT", "value": ["a", "b"]}"#),
        204,
        "PUT [a, b]",
    );
    assert!(put.body.is_empty(), "a 204 has no body: {put}");
    assert_eq!(get_list(n, "/keys/fruits"), list(&["a", "b"]));

    // APPEND one string, then (the assignment's own example) a list of one.
    expect_status(
        post_json(n, "/keys/fruits", r#"{"type": "APPEND", "value": "c"}"#),
        204,
        "APPEND c",
    );
    expect_status(
        post_json(
            n,
            "/keys/fruits",
            r#"{"type": "APPEND", "value": ["mouse"]}"#,
        ),
        204,
        "APPEND [mouse]",
    );
    assert_eq!(get_list(n, "/keys/fruits"), list(&["a", "b", "c", "mouse"]));
    // A list of several items is appended in order.
    expect_status(
        post_json(
            n,
            "/keys/fruits",
            r#"{"type": "APPEND", "value": ["x", "y"]}"#,
        ),
        204,
        "APPEND [x, y]",
    );
    assert_eq!(
        get_list(n, "/keys/fruits"),
        list(&["a", "b", "c", "mouse", "x", "y"])
    );

    // APPEND on a missing key acts as PUT of [item].
    expect_status(
        post_json(n, "/keys/fresh", r#"{"type": "APPEND", "value": "first"}"#),
        204,
        "APPEND to a missing key",
    );
    assert_eq!(get_list(n, "/keys/fresh"), list(&["first"]));
    // PUT replaces the whole list, also with an empty one.
    expect_status(
        post_json(n, "/keys/fresh", r#"{"type": "PUT", "value": []}"#),
        204,
        "PUT []",
    );
    assert_eq!(get_list(n, "/keys/fresh"), Vec::<String>::new());

    // Media type parameters are fine.
    expect_status(
        post(
            n,
            "/keys/charset",
            Some("application/json; charset=utf-8"),
            r#"{"type": "PUT", "value": ["ü"]}"#,
        ),
        204,
        "PUT with application/json; charset=utf-8",
    );
    assert_eq!(get_list(n, "/keys/charset"), list(&["ü"]));

    // Keys with slashes, URL-encoded or raw, are one key once decoded.
    expect_status(
        post_json(n, "/keys/dir%2Fname", r#"{"type": "PUT", "value": ["s"]}"#),
        204,
        "PUT to /keys/dir%2Fname",
    );
    assert_eq!(get_list(n, "/keys/dir/name"), list(&["s"]));
    expect_status(
        post_json(n, "/keys/dir/name", r#"{"type": "APPEND", "value": "t"}"#),
        204,
        "APPEND to /keys/dir/name",
    );
    assert_eq!(get_list(n, "/keys/dir%2Fname"), list(&["s", "t"]));
    assert_eq!(get_list(n, "/keys/dir%2fname"), list(&["s", "t"]));
    // The stored key is the decoded one: the command-line client finds it as `dir/name`.
    let run = cluster.client(&["getr", "dir/name", "--json"]);
    let doc = run.expect_ok().json();
    assert_eq!(
        (doc["key"].as_str(), doc["value"].clone()),
        (Some("dir/name"), serde_json::json!(["s", "t"])),
        "`client getr dir/name --json`: {doc}"
    );

    // 400 with a text/plain message naming the problem.
    let bad: [(&str, Option<&str>, &str, &str); 11] = [
        (
            "another media type",
            Some("text/plain"),
            r#"{"type": "PUT", "value": ["z"]}"#,
            "media type",
        ),
        (
            "no media type",
            None,
            r#"{"type": "PUT", "value": ["z"]}"#,
            "media type",
        ),
        (
            "malformed JSON",
            Some("application/json"),
            r#"{"type": "PUT", "value": ["z"#,
            "malformed JSON",
        ),
        (
            "an empty body",
            Some("application/json"),
            "",
            "malformed JSON",
        ),
        (
            "a body that is not an object",
            Some("application/json"),
            r#"["z"]"#,
            "JSON object",
        ),
        (
            "an unknown type",
            Some("application/json"),
            r#"{"type": "DELETE", "value": ["z"]}"#,
            "unknown type",
        ),
        (
            "no type",
            Some("application/json"),
            r#"{"value": ["z"]}"#,
            "missing \"type\"",
        ),
        (
            "no value",
            Some("application/json"),
            r#"{"type": "PUT"}"#,
            "missing \"value\"",
        ),
        (
            "PUT with a string",
            Some("application/json"),
            r#"{"type": "PUT", "value": "z"}"#,
            "PUT value must be a list of strings",
        ),
        (
            "APPEND with a number",
            Some("application/json"),
            r#"{"type": "APPEND", "value": 5}"#,
            "APPEND value must be",
        ),
        (
            "APPEND with an empty list",
            Some("application/json"),
            r#"{"type": "APPEND", "value": []}"#,
            "APPEND value must be",
        ),
    ];
    for (what, content_type, body, needle) in bad {
        expect_bad_request(post(n, "/keys/fruits", content_type, body), needle, what);
    }
    expect_bad_request(
        post_json(n, "/keys/fruits", r#"{"type": "PUT", "value": ["ok", 1]}"#),
        "list of strings",
        "PUT with a number in the list",
    );
    assert_eq!(
        get_list(n, "/keys/fruits"),
        list(&["a", "b", "c", "mouse", "x", "y"]),
        "rejected requests change nothing"
    );

    // A key holding a text (set by `setr`) is not a list: GET and APPEND give 400; PUT
    // replaces it with a list.
    cluster.client(&["setr", "prose", "some text"]).expect_ok();
    expect_bad_request(get(n, "/keys/prose"), "holds a text", "GET a text");
    expect_bad_request(
        post_json(n, "/keys/prose", r#"{"type": "APPEND", "value": "c"}"#),
        "holds a text",
        "APPEND to a text",
    );
    expect_status(
        post_json(
            n,
            "/keys/prose",
            r#"{"type": "PUT", "value": ["now", "a list"]}"#,
        ),
        204,
        "PUT over a text",
    );
    assert_eq!(get_list(n, "/keys/prose"), list(&["now", "a list"]));

    // The key limit: 4096 bytes work, one more is a 400 naming the limit.
    let longest = "k".repeat(4096);
    expect_status(
        post_json(
            n,
            &format!("/keys/{longest}"),
            r#"{"type": "PUT", "value": ["long"]}"#,
        ),
        204,
        "PUT to a 4096-byte key",
    );
    assert_eq!(get_list(n, &format!("/keys/{longest}")), list(&["long"]));
    let too_long = "k".repeat(4097);
    expect_bad_request(
        get(n, &format!("/keys/{too_long}")),
        "over the limit",
        "GET a 4097-byte key",
    );
    expect_bad_request(
        post_json(
            n,
            &format!("/keys/{too_long}"),
            r#"{"type": "PUT", "value": ["long"]}"#,
        ),
        "over the limit",
        "PUT to a 4097-byte key",
    );

    // A body over the gateway's limit (1 MiB) is refused before it is parsed.
    let huge = format!(
        r#"{{"type": "PUT", "value": ["{}"]}}"#,
        "x".repeat(1024 * 1024)
    );
    expect_status(post_json(n, "/keys/huge", &huge), 413, "a body over 1 MiB");
    expect_status(get(n, "/keys/huge"), 404, "the refused body stored nothing");

    // Outside the API: an empty key matches no route (404), another method on a key is 405.
    expect_status(get(n, "/keys/"), 404, "GET /keys/ (empty key)");
    expect_status(
        send(n, "PUT", "/keys/fruits", Some("application/json"), b"{}"),
        405,
        "PUT /keys/fruits",
    );
    expect_status(
        send(n, "DELETE", "/keys/fruits", None, b""),
        405,
        "DELETE /keys/fruits",
    );

    // 500 on an unexpected error: with the view leader gone, the gateway cannot find the
    // replicas (once its cached view is too old to use).
    cluster.kill_viewleader();
    for (what, path, body) in [
        ("GET", "/keys/fruits", None),
        (
            "POST",
            "/keys/fruits",
            Some(r#"{"type": "APPEND", "value": "z"}"#),
        ),
    ] {
        let response = wait_for(
            Duration::from_secs(10),
            &format!("{what} {path} answers 500 without a view leader"),
            || {
                let reply = match body {
                    None => get(n, path),
                    Some(body) => post_json(n, path, body),
                };
                match reply {
                    Reply::Answered(r) if r.status == 500 => Ok(r),
                    other => Err(other.to_string()),
                }
            },
        );
        assert!(
            response.content_type().starts_with("text/plain") && !response.body.is_empty(),
            "a 500 carries a text/plain message: {response}"
        );
    }
}

#[test]
fn any_node_serves_any_key() {
    let cluster = Cluster::start(4, 1);
    let keys: Vec<String> = (0..8).map(|i| format!("animals/{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        let body = format!(r#"{{"type": "PUT", "value": ["cat{i}", "dog{i}"]}}"#);
        expect_status(
            post_json(cluster.http(0), &format!("/keys/{key}"), &body),
            204,
            &format!("PUT {key} via node 0"),
        );
    }
    for key in &keys {
        let i = key.rsplit('/').next().unwrap_or_default();
        for node in 0..4 {
            assert_eq!(
                get_list(cluster.http(node), &format!("/keys/{key}")),
                vec![format!("cat{i}"), format!("dog{i}")],
                "node {node} reads {key}"
            );
        }
    }
    // Appends through different nodes land in one list, in order, visible everywhere.
    for node in 0..4 {
        let body = format!(r#"{{"type": "APPEND", "value": "from{node}"}}"#);
        expect_status(
            post_json(cluster.http(node), "/keys/animals/0", &body),
            204,
            &format!("APPEND via node {node}"),
        );
    }
    let want = list(&["cat0", "dog0", "from0", "from1", "from2", "from3"]);
    for node in 0..4 {
        assert_eq!(
            get_list(cluster.http(node), "/keys/animals%2F0"),
            want,
            "node {node}"
        );
        expect_status(
            get(cluster.http(node), "/keys/animals/none"),
            404,
            &format!("GET a missing key via node {node}"),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// /admin/status and /metrics
// ---------------------------------------------------------------------------------------------

/// The value of the sample `series` (name with its labels, exactly as printed) in a text
/// exposition.
fn sample(exposition: &str, series: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[track_caller]
fn expect_sample(exposition: &str, series: &str, node: usize) -> f64 {
    sample(exposition, series)
        .unwrap_or_else(|| panic!("node {node}: no sample {series} in /metrics:\n{exposition}"))
}

#[test]
fn admin_status_and_metrics() {
    let cluster = Cluster::start(3, 1);
    // Writes through the gateway (3 servers: every node replicates every key), and one that
    // is refused by the replicas (APPEND to a text), so both outcomes are counted.
    let keys = ["m/one", "m/two", "m/three"];
    for key in keys {
        expect_status(
            post_json(
                cluster.http(0),
                &format!("/keys/{key}"),
                r#"{"type": "PUT", "value": ["v"]}"#,
            ),
            204,
            "PUT",
        );
        expect_status(
            post_json(
                cluster.http(1),
                &format!("/keys/{key}"),
                r#"{"type": "APPEND", "value": "w"}"#,
            ),
            204,
            "APPEND",
        );
        get_list(cluster.http(2), &format!("/keys/{key}"));
    }
    cluster.client(&["setr", "m/text", "prose"]).expect_ok();
    expect_bad_request(
        post_json(
            cluster.http(2),
            "/keys/m/text",
            r#"{"type": "APPEND", "value": "w"}"#,
        ),
        "holds a text",
        "APPEND to a text",
    );
    // A request every node refuses, so each has an error to count. The refused APPEND above
    // does not guarantee that: its coordinator aborts at the first "no" and may never send
    // its prepare to the last replica.
    for node in &cluster.nodes {
        refuse_a_request(&node.rpc);
    }
    let writes = keys.len() * 2 + 1; // committed: the PUTs, the APPENDs, the setr
    let held = keys.len() as u64 + 1;
    let all: Vec<usize> = (0..3).collect();
    let epoch = cluster.wait_settled(&all, &all);

    let mut commits = 0.0;
    let mut aborts = 0.0;
    let mut reads = 0.0;
    for node in 0..3 {
        // /admin/status: readable text with every field the contract lists.
        let status = wait_for(
            Duration::from_secs(10),
            &format!("node {node}'s status shows no pending transaction"),
            || {
                let response = answered(
                    get(cluster.http(node), "/admin/status"),
                    "GET /admin/status",
                );
                if response.status != 200 {
                    return Err(response.to_string());
                }
                match status_field(&response.text(), "pending transactions") {
                    Some("0") => Ok(response),
                    _ => Err(response.to_string()),
                }
            },
        );
        assert!(
            status.content_type().starts_with("text/plain"),
            "node {node}: /admin/status is text/plain: {status}"
        );
        let text = status.text();
        let id = status_field(&text, "node id").unwrap_or_default();
        assert_eq!(id.len(), 36, "node {node}: a node id (uuid):\n{text}");
        assert_eq!(
            status_field(&text, "address"),
            Some(
                format!(
                    "{} (http {})",
                    cluster.nodes[node].rpc, cluster.nodes[node].http
                )
                .as_str()
            ),
            "node {node}: its addresses:\n{text}"
        );
        assert_eq!(
            status_field(&text, "role"),
            Some("storage server"),
            "{text}"
        );
        assert_eq!(status_number(&text, "epoch"), epoch, "{text}");
        assert_eq!(status_number(&text, "members"), 3, "{text}");
        let members: BTreeSet<String> = cluster.nodes.iter().map(|n| n.rpc.clone()).collect();
        assert_eq!(status_members(&text), members, "{text}");
        let me = format!("  {} {id} (this node)", cluster.nodes[node].rpc);
        assert!(
            text.lines().any(|line| line == me),
            "node {node}: the member list marks this node ({me:?}):\n{text}"
        );
        assert_eq!(status_number(&text, "keys held"), held, "{text}");
        assert_eq!(
            status_field(&text, "rebalancing"),
            Some(format!("settled at epoch {epoch}").as_str()),
            "{text}"
        );
        assert_eq!(status_field(&text, "crashed"), Some("false"), "{text}");
        let uptime = status_field(&text, "uptime").unwrap_or_default();
        assert!(
            uptime.ends_with(" s") && uptime.trim_end_matches(" s").parse::<u64>().is_ok(),
            "node {node}: uptime in seconds:\n{text}"
        );

        // /metrics: the text exposition with every family the contract lists.
        let metrics = expect_status(get(cluster.http(node), "/metrics"), 200, "GET /metrics");
        assert!(
            metrics
                .content_type()
                .starts_with("application/openmetrics-text"),
            "node {node}: /metrics content type: {}",
            metrics.content_type()
        );
        let text = metrics.text();
        assert!(
            text.trim_end().ends_with("# EOF"),
            "an OpenMetrics exposition ends with # EOF"
        );
        for line in [
            "# TYPE ringleader_requests counter",
            "# TYPE ringleader_request_errors counter",
            "# TYPE ringleader_request_latency_seconds histogram",
            "# TYPE ringleader_transactions counter",
            "# TYPE ringleader_keys gauge",
            "# TYPE ringleader_rebalance_copies_sent gauge",
            "# TYPE ringleader_rebalance_keys_dropped gauge",
            "# TYPE ringleader_epoch gauge",
            "# TYPE ringleader_servers gauge",
            "# TYPE ringleader_crashed gauge",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "node {node}: no {line:?} in /metrics:\n{text}"
            );
        }
        // Every node is a replica of every key (3 servers), so each one prepares and commits.
        // Reads are another matter: a linearizable GET reads a majority, the first two replicas
        // in ring order, so a node may serve none of them; they are counted over all nodes.
        if let Some(served) = sample(&text, "ringleader_requests_total{op=\"read\"}") {
            reads += served;
            expect_sample(
                &text,
                "ringleader_request_latency_seconds_bucket{le=\"+Inf\",op=\"read\"}",
                node,
            );
        }
        assert!(
            expect_sample(&text, "ringleader_request_errors_total{op=\"get\"}", node) >= 1.0,
            "node {node}: the refused get is counted as an error"
        );
        for op in ["prepare", "commit"] {
            let requests = expect_sample(
                &text,
                &format!("ringleader_requests_total{{op=\"{op}\"}}"),
                node,
            );
            assert!(requests >= 1.0, "node {node}: {op} requests counted");
            expect_sample(
                &text,
                &format!("ringleader_request_latency_seconds_sum{{op=\"{op}\"}}"),
                node,
            );
            expect_sample(
                &text,
                &format!("ringleader_request_latency_seconds_bucket{{le=\"+Inf\",op=\"{op}\"}}"),
                node,
            );
        }
        assert_eq!(
            expect_sample(&text, "ringleader_requests_total{op=\"commit\"}", node),
            expect_sample(
                &text,
                "ringleader_request_latency_seconds_count{op=\"commit\"}",
                node
            ),
            "node {node}: every commit request is timed"
        );
        assert_eq!(expect_sample(&text, "ringleader_keys", node), held as f64);
        assert_eq!(expect_sample(&text, "ringleader_epoch", node), epoch as f64);
        assert_eq!(expect_sample(&text, "ringleader_servers", node), 3.0);
        assert_eq!(expect_sample(&text, "ringleader_crashed", node), 0.0);
        let committed = expect_sample(
            &text,
            "ringleader_transactions_total{outcome=\"commit\",reason=\"coordinator\"}",
            node,
        );
        assert!(
            committed >= writes as f64,
            "node {node}: {committed} commits counted, want at least {writes}:\n{text}"
        );
        commits += committed;
        aborts += sample(
            &text,
            "ringleader_transactions_total{outcome=\"abort\",reason=\"coordinator\"}",
        )
        .unwrap_or(0.0);
    }
    assert!(commits >= (3 * writes) as f64, "{commits} commits in all");
    // Each of the GETs read at least a majority (2) of the 3 replicas.
    assert!(
        reads >= (2 * keys.len()) as f64,
        "{reads} replica reads counted for {} GETs",
        keys.len()
    );
    assert!(
        aborts >= 1.0,
        "the refused APPEND is counted as an abort on some node"
    );
}

// ---------------------------------------------------------------------------------------------
// The distributed log
// ---------------------------------------------------------------------------------------------

#[test]
fn a_crashed_node_answers_nothing_but_recover_and_exit() {
    let cluster = Cluster::start(3, 1);
    let node = cluster.http(1).to_string();
    let n = node.as_str();
    expect_status(put_entry(n, "before"), 200, "PUT / before the crash");
    let crashed = expect_status(post(n, "/crash", None, ""), 200, "POST /crash");
    assert!(crashed.content_type().starts_with("text/plain"));

    expect_closed(get(n, "/admin/status"), "GET /admin/status while crashed");
    expect_closed(get(n, "/metrics"), "GET /metrics while crashed");
    expect_closed(put_entry(n, "while-crashed"), "PUT / while crashed");
    expect_closed(get(n, "/keys/log"), "GET /keys/log while crashed");
    expect_closed(
        post_json(n, "/keys/k", r#"{"type": "PUT", "value": ["a"]}"#),
        "POST /keys/k while crashed",
    );
    expect_closed(post(n, "/crash", None, ""), "POST /crash while crashed");

    // The others keep the log going (the crashed replica is waited out within the commit bound).
    let started = Instant::now();
    expect_status(
        put_entry(cluster.http(0), "during"),
        200,
        "PUT / on a live node",
    );
    assert!(
        started.elapsed() < LOG_COMMIT_BOUND,
        "took {:?}",
        started.elapsed()
    );

    expect_status(post(n, "/recover", None, ""), 200, "POST /recover");
    let status = expect_status(get(n, "/admin/status"), 200, "GET /admin/status recovered");
    assert_eq!(
        status_field(&status.text(), "crashed"),
        Some("false"),
        "{status}"
    );
    // /recover of a node that is not crashed is fine too.
    expect_status(post(n, "/recover", None, ""), 200, "POST /recover again");

    let all: Vec<usize> = (0..3).collect();
    cluster.wait_settled(&all, &all);
    expect_status(put_entry(n, "after"), 200, "PUT / after recovering");
    for number in 0..3 {
        assert_eq!(
            get_list(cluster.http(number), "/keys/log"),
            list(&["before", "during", "after"]),
            "node {number}: the entry sent while crashed never appears"
        );
    }
}

#[test]
fn a_log_entry_is_one_utf8_line() {
    let cluster = Cluster::start(3, 1);
    let n = cluster.http(2);
    for (what, body, needle) in [
        ("two lines", &b"first\nsecond"[..], "one line"),
        ("a carriage return", &b"first\rsecond"[..], "one line"),
        ("not UTF-8", &b"\xff\xfe"[..], "UTF-8"),
        (
            "over 64 KiB",
            &[b'a'; 64 * 1024 + 1][..],
            "at most 65536 bytes",
        ),
    ] {
        expect_bad_request(
            send(n, "PUT", "/", Some("text/plain"), body),
            needle,
            &format!("PUT / with {what}"),
        );
    }
    expect_bad_request(
        send(n, "PUT", "/", Some("text/plain"), b""),
        "non-empty",
        "PUT / with an empty entry",
    );
    let longest = "b".repeat(64 * 1024);
    expect_status(put_entry(n, "ünïcode"), 200, "PUT / of a UTF-8 entry");
    expect_status(put_entry(n, &longest), 200, "PUT / of a 64 KiB entry");
    // The media type does not matter.
    expect_status(
        send(n, "PUT", "/", None, b"untyped"),
        200,
        "PUT / without a media type",
    );
    assert_eq!(
        get_list(cluster.http(0), "/keys/log"),
        vec!["ünïcode".to_string(), longest, "untyped".to_string()],
        "the log key holds exactly the accepted entries, in order"
    );
    // Other methods on the log endpoints.
    expect_status(get(n, "/"), 405, "GET /");
    expect_status(get(n, "/crash"), 405, "GET /crash");
    expect_status(get(n, "/nowhere"), 404, "GET /nowhere");
}

/// What the INF-3203 client saw of one entry.
struct Sent {
    entry: String,
    node: usize,
    acknowledged: bool,
}

#[test]
fn distributed_log_with_crashes_meets_the_checker_conditions() {
    const NODES: usize = 5;
    const ENTRIES: usize = 40;
    let test_started = Instant::now();
    let cluster = Cluster::start(NODES, SLOT_WEIGHTS);
    let seed: u64 = rand::random();
    eprintln!("log scenario seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let nonce: u32 = rng.gen();
    let mut crashed: BTreeSet<usize> = BTreeSet::new();
    let mut sent: Vec<Sent> = Vec::new();
    let mut slow: Vec<String> = Vec::new();

    let crash = |crashed: &mut BTreeSet<usize>, node: usize| {
        expect_status(
            post(cluster.http(node), "/crash", None, ""),
            200,
            &format!("POST /crash to node {node}"),
        );
        crashed.insert(node);
    };
    let recover = |crashed: &mut BTreeSet<usize>, node: usize| {
        expect_status(
            post(cluster.http(node), "/recover", None, ""),
            200,
            &format!("POST /recover to node {node}"),
        );
        crashed.remove(&node);
    };
    let live = |crashed: &BTreeSet<usize>| -> Vec<usize> {
        (0..NODES).filter(|n| !crashed.contains(n)).collect()
    };

    // The nodes holding the log (the only key here), among `among`, in a settled view.
    let holders = |among: &[usize]| -> Vec<usize> {
        cluster.wait_settled(among, among);
        among
            .iter()
            .copied()
            .filter(|&node| {
                let status = expect_status(get(cluster.http(node), "/admin/status"), 200, "status");
                status_number(&status.text(), "keys held") > 0
            })
            .collect()
    };

    for i in 0..ENTRIES {
        let entry = format!("entry-{nonce:08x}-{i:02}");
        // The scenario: crash a replica of the log; once the view dropped it, crash a second
        // one (a PUT must still commit within the commit bound); send an entry to a crashed node; recover
        // both once the view dropped them; crash two replicas at once (again a PUT within the bound);
        // recover one, leaving the other crashed when /exit arrives.
        let mut target = None;
        let mut must_commit = false;
        match i {
            6 | 12 | 30 => {
                let alive = live(&crashed);
                let mut replicas = holders(&alive);
                let count = if i == 30 { 2 } else { 1 };
                assert!(
                    replicas.len() >= count,
                    "the log has replicas among {alive:?}: {replicas:?}"
                );
                for _ in 0..count {
                    let node = replicas.remove(rng.gen_range(0..replicas.len()));
                    crash(&mut crashed, node);
                }
                if i != 6 {
                    let alive = live(&crashed);
                    target = Some(alive[rng.gen_range(0..alive.len())]);
                    must_commit = true;
                }
            }
            15 | 38 => target = crashed.iter().next().copied(),
            20 | 36 => {
                let alive = live(&crashed);
                cluster.wait_settled(&alive, &alive);
                let down: Vec<usize> = crashed.iter().copied().collect();
                let recovering = if i == 20 { &down[..] } else { &down[..1] };
                for &node in recovering {
                    recover(&mut crashed, node);
                }
            }
            _ => {}
        }
        let node = target.unwrap_or_else(|| rng.gen_range(0..NODES));
        let was_crashed = crashed.contains(&node);
        let started = Instant::now();
        let reply = put_entry(cluster.http(node), &entry);
        let took = started.elapsed();
        let acknowledged = matches!(reply, Reply::Answered(_));
        eprintln!(
            "[{:>6.2?}] PUT {entry} to node {node} (crashed {crashed:?}): {reply} after {took:?}",
            test_started.elapsed()
        );
        if was_crashed {
            expect_closed(reply, &format!("PUT {entry} to crashed node {node}"));
        } else if must_commit {
            let response = expect_status(
                reply,
                200,
                &format!("PUT {entry} to node {node} with nodes {crashed:?} crashed"),
            );
            assert_eq!(response.text(), "committed\n");
            assert!(
                took < LOG_COMMIT_BOUND,
                "PUT {entry} with nodes {crashed:?} crashed took {took:?} (seed {seed})"
            );
        } else {
            match &reply {
                Reply::Answered(r) if r.status == 200 && took < LOG_COMMIT_BOUND => {}
                other => slow.push(format!(
                    "PUT {entry} to node {node} (crashed {crashed:?}): {other} after {took:?}"
                )),
            }
        }
        sent.push(Sent {
            entry,
            node,
            acknowledged,
        });
    }
    assert!(
        slow.is_empty(),
        "with at most two of five nodes crashed, every PUT to a live node commits within 5 s \
         (seed {seed}): {slow:#?}"
    );
    assert_eq!(crashed.len(), 1, "one node is still crashed for /exit");
    let to_crashed = sent.iter().filter(|s| !s.acknowledged).count();
    assert!(to_crashed >= 1, "at least one PUT went to a crashed node");

    // /exit to all five back to back (one still crashed).
    let mut exited_at = Vec::new();
    for node in 0..NODES {
        let response = expect_status(
            post(cluster.http(node), "/exit", None, ""),
            200,
            &format!("POST /exit to node {node}"),
        );
        exited_at.push(Instant::now());
        assert!(
            response.text().contains(".csv"),
            "node {node}: /exit names the file: {response}"
        );
    }
    // An exiting node takes no more entries (it answers nothing to them); the last one asked
    // is surely still lingering.
    expect_closed(
        put_entry(cluster.http(NODES - 1), &format!("entry-{nonce:08x}-late")),
        "PUT / after /exit",
    );

    let files: Vec<Vec<String>> = (0..NODES)
        .map(|node| {
            let path = cluster.exit_file(node);
            wait_for(
                Duration::from_secs(10),
                &format!("node {node} wrote {}", path.display()),
                || match std::fs::read_to_string(&path) {
                    Ok(text) => Ok(text.lines().map(str::to_string).collect()),
                    Err(err) => Err(err.to_string()),
                },
            )
        })
        .collect();

    // The checker's three conditions.
    let acknowledged: BTreeSet<&str> = sent
        .iter()
        .filter(|s| s.acknowledged)
        .map(|s| s.entry.as_str())
        .collect();
    let unacknowledged: Vec<(&str, usize)> = sent
        .iter()
        .filter(|s| !s.acknowledged)
        .map(|s| (s.entry.as_str(), s.node))
        .collect();
    for (node, lines) in files.iter().enumerate() {
        let written: BTreeSet<&str> = lines.iter().map(String::as_str).collect();
        let missing: Vec<&&str> = acknowledged.difference(&written).collect();
        assert!(
            missing.is_empty(),
            "node {node}'s file lacks acknowledged entries {missing:?} (seed {seed})"
        );
        let appeared: Vec<&(&str, usize)> = unacknowledged
            .iter()
            .filter(|(entry, _)| written.contains(entry))
            .collect();
        assert!(
            appeared.is_empty(),
            "node {node}'s file holds unacknowledged entries {appeared:?} (seed {seed})"
        );
        assert_eq!(
            written.len(),
            lines.len(),
            "node {node}'s file repeats an entry (seed {seed}): {lines:#?}"
        );
        assert_eq!(
            lines, &files[0],
            "node {node}'s file differs from node 0's (seed {seed})"
        );
    }

    // Each process ends by itself after its linger.
    let mut cluster = cluster;
    for (node, at) in exited_at.iter().enumerate() {
        let stderr = cluster.stderr_of(node);
        let status = cluster.nodes[node].proc.exited_by(*at + EXIT_BOUND);
        match status {
            Some(status) => assert!(
                status.success(),
                "node {node} exited with {status} after /exit; stderr:\n{stderr}"
            ),
            None => panic!("node {node} still runs {EXIT_BOUND:?} after /exit; stderr:\n{stderr}"),
        }
    }
    eprintln!(
        "log scenario: {} entries acknowledged, {} not, {:?} in all",
        acknowledged.len(),
        unacknowledged.len(),
        test_started.elapsed()
    );
}

#[test]
fn the_view_leader_serves_metrics_and_status() {
    let cluster = Cluster::start(2, 1);
    let vl = cluster.viewleader_http.as_str();
    let status = expect_status(
        get(vl, "/admin/status"),
        200,
        "GET /admin/status of the view leader",
    );
    assert!(status.content_type().starts_with("text/plain"), "{status}");
    let text = status.text();
    assert_eq!(
        status_field(&text, "role"),
        Some("view leader member 1 (leader)"),
        "a lone member leads its group: {status}"
    );
    assert!(status_number(&text, "term") >= 1, "{status}");
    assert!(
        status_field(&text, "voters").is_some_and(|v| v.starts_with("1=127.0.0.1:")),
        "{status}"
    );
    assert!(status_number(&text, "applied") >= 1, "{status}");
    assert_eq!(status_number(&text, "servers"), 2, "{status}");
    let metrics = expect_status(get(vl, "/metrics"), 200, "GET /metrics of the view leader");
    let text = metrics.text();
    assert!(
        sample(&text, "ringleader_servers").is_some_and(|v| v == 2.0),
        "{text}"
    );
    assert!(
        sample(&text, "ringleader_epoch").is_some_and(|v| v >= 2.0),
        "{text}"
    );
    assert!(
        sample(&text, "ringleader_raft_leader").is_some_and(|v| v == 1.0),
        "{text}"
    );
    assert!(
        sample(&text, "ringleader_raft_applied_index").is_some_and(|v| v >= 1.0),
        "{text}"
    );
    // Every server's heartbeats are counted by operation.
    assert!(
        sample(&text, "ringleader_requests_total{op=\"heartbeat\"}").is_some_and(|v| v > 0.0),
        "{text}"
    );
}

/// Sends the storage server at `addr` a `get` of the empty key, which it refuses as invalid
/// (the client library refuses it before sending, so it goes out raw).
fn refuse_a_request(addr: &str) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("no runtime for a raw request: {err}"),
    };
    let client = ringleader::Client::new(ringleader::client::ClientOptions::default());
    let request = ringleader::rpc::message::ServerRequest::Get {
        key: String::new(),
        space: ringleader::types::Space::Ring,
    };
    let reply = runtime.block_on(client.server_call(addr, request));
    assert!(
        matches!(reply, Err(ringleader::Error::InvalidRequest(_))),
        "{addr} should refuse the empty key, got {reply:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Health endpoints (issue 17)
// ---------------------------------------------------------------------------------------------

/// `GET path` answers `status` with a text/plain body containing `needle`.
#[track_caller]
fn expect_probe(addr: &str, path: &str, status: u16, needle: &str) -> String {
    let what = format!("GET {path} on {addr}");
    let response = expect_status(get(addr, path), status, &what);
    assert!(
        response.content_type().starts_with("text/plain"),
        "{what}: got {response}"
    );
    let body = response.text();
    assert!(body.contains(needle), "{what}: no {needle:?} in {response}");
    body
}

/// Waits until `GET /ready` on `addr` answers 200.
#[track_caller]
fn wait_ready(addr: &str, what: &str) {
    wait_for(SETTLE_TIMEOUT, what, || match get(addr, "/ready") {
        Reply::Answered(r) if r.status == 200 => Ok(()),
        other => Err(format!("/ready: {other}")),
    });
}

#[test]
fn health_and_ready_answer_200_in_a_settled_cluster_and_503_while_crashed() {
    let cluster = Cluster::start(3, 1);
    for number in 0..3 {
        expect_probe(cluster.http(number), "/health", 200, "ok");
        expect_probe(cluster.http(number), "/ready", 200, "ok");
    }
    let vl = cluster.viewleader_http.as_str();
    expect_probe(vl, "/health", 200, "ok");
    expect_probe(vl, "/ready", 200, "ok");

    // A crashed server answers both with a 503 (its other pages close the connection).
    let n = cluster.http(1).to_string();
    expect_status(post(&n, "/crash", None, ""), 200, "POST /crash");
    expect_probe(&n, "/health", 503, "crashed");
    expect_probe(&n, "/ready", 503, "crashed");
    expect_closed(get(&n, "/admin/status"), "GET /admin/status while crashed");
    expect_status(post(&n, "/recover", None, ""), 200, "POST /recover");
    expect_probe(&n, "/health", 200, "ok");
    wait_ready(&n, "node 1 ready again after its recovery");

    // So does a crashed view leader.
    cluster.client(&["crash"]).expect_ok();
    expect_probe(vl, "/health", 503, "crashed");
    expect_probe(vl, "/ready", 503, "crashed");
    cluster.client(&["recover"]).expect_ok();
    expect_probe(vl, "/health", 200, "ok");
    wait_ready(vl, "the view leader ready again after its recovery");
}

#[test]
fn a_server_is_not_ready_until_it_is_in_the_view() {
    let _slot = Slot::acquire(1);
    let dir = tempfile::Builder::new()
        .prefix("ringleader-http-ready-")
        .tempdir()
        .expect("create a temp dir");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    // The server starts first, pointed at a view leader that is not there yet.
    let viewleader_port = common::unused_port().to_string();
    let mut server = Proc::spawn(
        "server",
        common::SERVER_BIN,
        &strings(&[
            "--port",
            "0",
            "--http-port",
            "0",
            "--in-memory",
            "--viewleader",
            &format!("127.0.0.1:{viewleader_port}"),
            "--heartbeat-interval-ms",
            &HEARTBEAT_MS.to_string(),
        ]),
        dir.path(),
    );
    let http = server.line_after("http listening on ", deadline);
    expect_probe(&http, "/health", 200, "ok");
    expect_probe(&http, "/ready", 503, "not ready: not in the view");

    let mut viewleader = Proc::spawn(
        "viewleader",
        common::VIEWLEADER_BIN,
        &strings(&[
            "--port",
            &viewleader_port,
            "--in-memory",
            "--heartbeat-interval-ms",
            &HEARTBEAT_MS.to_string(),
            "--lease-ms",
            &LEASE_MS.to_string(),
        ]),
        dir.path(),
    );
    viewleader.line_after("listening on ", deadline);
    wait_ready(&http, "the server ready once it joined the view");
}

#[test]
fn a_view_leader_member_that_knows_no_leader_is_not_ready() {
    let _slot = Slot::acquire(1);
    let dir = tempfile::Builder::new()
        .prefix("ringleader-http-member-")
        .tempdir()
        .expect("create a temp dir");
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    // `--join` forms no group: the member waits to be added, and knows no leader meanwhile.
    let mut member = Proc::spawn(
        "viewleader --join",
        common::VIEWLEADER_BIN,
        &strings(&[
            "--id",
            "2",
            "--join",
            "--port",
            "0",
            "--http-port",
            "0",
            "--in-memory",
        ]),
        dir.path(),
    );
    let http = member.line_after("http listening on ", deadline);
    expect_probe(&http, "/health", 200, "ok");
    expect_probe(&http, "/ready", 503, "knows no leader");
}
