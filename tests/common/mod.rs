//! The real-process test harness: a [`TestCluster`] starts the `viewleader` and `server` binaries
//! on free ports (`--port 0`), reads the `listening on ADDR` line each prints when ready, keeps
//! draining their output so no pipe ever fills, and kills every child when dropped. It can kill
//! (SIGKILL), restart at the same port, pause (SIGSTOP) and resume (SIGCONT) any of them, and runs
//! the `client` binary as a user would, returning its exit code and output.
//!
//! The view leader is one process unless the cluster is started with
//! [`TestCluster::start_group`]: then it is a Raft group of `viewleader` processes, each with its
//! own `--data-dir` and a low `--snapshot-entries`, on ports chosen free beforehand (they must
//! be known to write every member's `--peers`); servers and clients are given every member's
//! address. Members can be killed, restarted from their data dir, and added with `--join`; the
//! harness reads their status (`client viewleader status --json`) and finds the leader.
//!
//! Waiting is always for a condition, polled with a deadline ([`wait_until`], [`wait_for`]); the
//! only sleeps are the poll interval and the scenario pauses a test asks for by name.
//!
//! At most [`CLUSTERS_AT_ONCE`] clusters run at once in one test binary, so a 2-core machine is
//! not swamped by many clusters whose heartbeats would then miss their leases.

#![allow(dead_code)]

pub mod http_client;
pub mod in_memory;
pub mod lib_client;
pub mod reads;

use std::collections::{BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

/// Interval between heartbeats in test clusters.
pub const HEARTBEAT_MS: u64 = 200;
/// Server lease in test clusters (kept at 1 s or more so a busy machine does not expire anyone).
pub const LEASE_MS: u64 = 1_000;
/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(25);
/// Longest wait for a process to print `listening on ADDR`.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest any one `client` run may take before the test kills it and fails.
pub const CLIENT_RUN_TIMEOUT: Duration = Duration::from_secs(30);
/// A generous bound for things that take about one lease (expiry, rejoin): ten times the lease.
pub const EXPIRY_TIMEOUT: Duration = Duration::from_secs(10);
/// Clusters running at once per test binary.
pub const CLUSTERS_AT_ONCE: usize = 2;
/// Output lines kept per stream of a child (the oldest are dropped beyond it).
const LINES_KEPT: usize = 20_000;

pub const VIEWLEADER_BIN: &str = env!("CARGO_BIN_EXE_viewleader");
pub const SERVER_BIN: &str = env!("CARGO_BIN_EXE_server");
pub const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_client");
/// The variable every binary's `--cluster` falls back to.
pub const CLUSTER_ENV: &str = "RINGLEADER_CLUSTER";
/// The variable every `--viewleader` falls back to.
pub const VIEWLEADER_ENV: &str = "RINGLEADER_VIEWLEADER";
/// The variable the client's `--server` falls back to.
pub const SERVER_ENV: &str = "RINGLEADER_SERVER";
/// The variable the services' `--http-token-file` falls back to (removed from every child's
/// environment, so a developer's own setting cannot close a test's gateway).
pub const HTTP_TOKEN_FILE_ENV: &str = "RINGLEADER_HTTP_TOKEN_FILE";

// ---------------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------------

/// Polls `probe` every [`POLL`] until it returns `Ok`, for at most `timeout`; panics naming
/// `what` and the last observation (`Err`) when time runs out.
#[track_caller]
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) => {
                if Instant::now() >= deadline {
                    panic!("timed out after {timeout:?} waiting until {what}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `condition` every [`POLL`] until it holds, for at most `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    wait_for(timeout, what, || {
        if condition() {
            Ok(())
        } else {
            Err("condition false".into())
        }
    })
}

/// Checks `invariant` every [`POLL`] for `duration`, panicking at the first observation that
/// breaks it. For properties that must keep holding (nothing expires), which no single check
/// can prove.
#[track_caller]
pub fn holds_for(
    duration: Duration,
    what: &str,
    mut invariant: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + duration;
    loop {
        if let Err(seen) = invariant() {
            panic!("{what} stopped holding: {seen}");
        }
        if Instant::now() >= deadline {
            return;
        }
        std::thread::sleep(POLL);
    }
}

// ---------------------------------------------------------------------------------------------
// At most CLUSTERS_AT_ONCE clusters per test binary
// ---------------------------------------------------------------------------------------------

static CLUSTERS_RUNNING: Mutex<usize> = Mutex::new(0);
static CLUSTER_SLOT_FREED: Condvar = Condvar::new();

pub fn lock_ignoring_poison<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One of the [`CLUSTERS_AT_ONCE`] slots; given back on drop (also when a test panics).
struct ClusterSlot;

impl ClusterSlot {
    fn acquire() -> Self {
        let mut running = lock_ignoring_poison(&CLUSTERS_RUNNING);
        while *running >= CLUSTERS_AT_ONCE {
            running = CLUSTER_SLOT_FREED
                .wait(running)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *running += 1;
        ClusterSlot
    }
}

impl Drop for ClusterSlot {
    fn drop(&mut self) {
        let mut running = lock_ignoring_poison(&CLUSTERS_RUNNING);
        *running -= 1;
        CLUSTER_SLOT_FREED.notify_one();
    }
}

// ---------------------------------------------------------------------------------------------
// Weighted slots: a test that must not share the CPU takes all of them
// ---------------------------------------------------------------------------------------------

/// Weight of scenarios one test binary runs at once, on top of the cluster limit: a scenario
/// whose timing matters takes all of it and runs alone.
pub const SLOT_WEIGHTS: usize = 2;
static SLOT_WEIGHTS_TAKEN: Mutex<usize> = Mutex::new(0);
static SLOT_WEIGHT_FREED: Condvar = Condvar::new();

/// `weight` of the [`SLOT_WEIGHTS`], given back on drop (also when a test panics).
pub struct Slot(usize);

impl Slot {
    pub fn acquire(weight: usize) -> Self {
        assert!(
            weight <= SLOT_WEIGHTS,
            "a slot of weight {weight} can never be had"
        );
        let mut taken = lock_ignoring_poison(&SLOT_WEIGHTS_TAKEN);
        while *taken + weight > SLOT_WEIGHTS {
            taken = SLOT_WEIGHT_FREED
                .wait(taken)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        *taken += weight;
        Slot(weight)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *lock_ignoring_poison(&SLOT_WEIGHTS_TAKEN) -= self.0;
        SLOT_WEIGHT_FREED.notify_all();
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes with drained output
// ---------------------------------------------------------------------------------------------

type Lines = Arc<Mutex<VecDeque<String>>>;

/// Reads `pipe` line by line until it closes, keeping the lines and forwarding each to `tx`.
fn drain<R: Read + Send + 'static>(
    pipe: R,
    lines: Lines,
    tx: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\n', '\r'])
                        .to_string();
                    if let Some(tx) = &tx {
                        let _ = tx.send(line.clone());
                    }
                    let mut kept = lock_ignoring_poison(&lines);
                    if kept.len() >= LINES_KEPT {
                        kept.pop_front();
                    }
                    kept.push_back(line);
                }
            }
        }
    })
}

/// A child whose stdout and stderr are read by threads as they come.
struct Captured {
    name: String,
    child: Child,
    stdout: Lines,
    stderr: Lines,
    stdout_rx: mpsc::Receiver<String>,
    stderr_rx: mpsc::Receiver<String>,
    readers: Vec<JoinHandle<()>>,
}

impl Captured {
    fn spawn(name: &str, program: &str, args: &[String], dir: Option<&std::path::Path>) -> Self {
        Self::spawn_with_env(name, program, args, dir, &[])
    }

    /// [`Captured::spawn`] with `vars` set in the child's environment. `RINGLEADER_CLUSTER`,
    /// `RINGLEADER_VIEWLEADER` and `RINGLEADER_SERVER` are never inherited from the test's own: a
    /// child takes the default cluster, and goes where its flags say, unless told.
    fn spawn_with_env(
        name: &str,
        program: &str,
        args: &[String],
        dir: Option<&std::path::Path>,
        vars: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(program);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("NO_COLOR", "1")
            .env_remove(CLUSTER_ENV)
            .env_remove(VIEWLEADER_ENV)
            .env_remove(SERVER_ENV)
            .env_remove(HTTP_TOKEN_FILE_ENV)
            .envs(vars.iter().copied());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name} ({program}): {err}"));
        let stdout: Lines = Arc::default();
        let stderr: Lines = Arc::default();
        let (out_tx, stdout_rx) = mpsc::channel();
        let (err_tx, stderr_rx) = mpsc::channel();
        let readers = vec![
            drain(
                child.stdout.take().expect("stdout is piped"),
                stdout.clone(),
                Some(out_tx),
            ),
            drain(
                child.stderr.take().expect("stderr is piped"),
                stderr.clone(),
                Some(err_tx),
            ),
        ];
        Self {
            name: name.to_string(),
            child,
            stdout,
            stderr,
            stdout_rx,
            stderr_rx,
            readers,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stdout_lines(&self) -> Vec<String> {
        lock_ignoring_poison(&self.stdout).iter().cloned().collect()
    }

    fn stderr_text(&self) -> String {
        let lines: Vec<String> = lock_ignoring_poison(&self.stderr).iter().cloned().collect();
        lines.join("\n")
    }

    /// Waits for the first stdout line `listening on ADDR`; `Err` with the child's stderr if it
    /// exits or stays silent until the deadline.
    fn wait_listening(&mut self, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(addr) = line.strip_prefix("listening on ") {
                        return Ok(addr.trim().to_string());
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!(
                        "{} printed no `listening on` line within {timeout:?}; stderr:\n{}",
                        self.name,
                        self.stderr_text()
                    ));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed: the process ended. Collect all it said.
                    let status = self.child.wait().ok();
                    for reader in self.readers.drain(..) {
                        let _ = reader.join();
                    }
                    return Err(format!(
                        "{} exited ({status:?}) before listening; stderr:\n{}",
                        self.name,
                        self.stderr_text()
                    ));
                }
            }
        }
    }

    /// SIGKILL (also ends a stopped process) and reap.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Captured {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends `signal` (`STOP`, `CONT`, `KILL`...) to `pid` with the `kill` command.
pub fn send_signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap_or_else(|err| panic!("cannot run `kill -{signal} {pid}`: {err}"));
    assert!(status.success(), "`kill -{signal} {pid}` failed: {status}");
}

/// The scheduler state of `pid` from /proc (`T` when stopped), where /proc exists.
fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name, which may itself hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.trim_start().chars().next()
}

#[track_caller]
fn wait_stopped(pid: u32, stopped: bool, name: &str) {
    if process_state(pid).is_none() {
        return; // no /proc here: the signal is delivered by the time `kill` returns in practice
    }
    wait_until(
        Duration::from_secs(5),
        &format!(
            "{name} (pid {pid}) is {}",
            if stopped { "stopped" } else { "running" }
        ),
        || process_state(pid).is_some_and(|state| (state == 'T') == stopped),
    );
}

/// A running service (view leader or storage server) and the address it announced.
pub struct Service {
    process: Captured,
    addr: String,
}

impl Service {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn port(&self) -> u16 {
        port_of(&self.addr)
    }

    /// The exit code if the process has ended on its own (-1 for a signal), else `None`.
    pub fn exit_code(&mut self) -> Option<i32> {
        match self.process.child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
            Ok(None) => None,
            Err(err) => panic!("cannot wait for {}: {err}", self.process.name),
        }
    }

    /// Every line the service printed on stdout so far (minus the `listening on` line).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.process
            .stdout_lines()
            .into_iter()
            .filter(|line| !line.starts_with("listening on "))
            .collect()
    }

    pub fn stderr_text(&self) -> String {
        self.process.stderr_text()
    }
}

pub fn start_service(
    name: &str,
    program: &str,
    args: &[String],
    dir: &std::path::Path,
) -> Result<Service, String> {
    start_service_with_env(name, program, args, dir, &[])
}

/// [`start_service`] with `vars` set in the child's environment (`RUST_LOG`, say).
pub fn start_service_with_env(
    name: &str,
    program: &str,
    args: &[String],
    dir: &std::path::Path,
    vars: &[(&str, &str)],
) -> Result<Service, String> {
    let mut process = Captured::spawn_with_env(name, program, args, Some(dir), vars);
    let addr = process.wait_listening(STARTUP_TIMEOUT)?;
    Ok(Service { process, addr })
}

/// The port of `host:port`.
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in address {addr:?}"))
}

/// A port nothing listens on: bound by the OS, then let go.
pub fn unused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener
        .local_addr()
        .expect("ephemeral listener has an address")
        .port()
}

// ---------------------------------------------------------------------------------------------
// Running the client binary
// ---------------------------------------------------------------------------------------------

/// What one `client` run (or another process run to its exit, [`run_to_exit`]) did.
#[derive(Clone, Debug)]
pub struct ClientRun {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ClientRun {
    /// Panics with everything the run printed unless it exited with `code`.
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "`client {}` exited {} instead of {code}\nstdout: {}\nstderr: {}",
            self.args.join(" "),
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        self.expect_code(0)
    }

    /// Stdout parsed as the one JSON document `--json` promises.
    #[track_caller]
    pub fn json(&self) -> Json {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|err| {
            panic!(
                "`client {}` did not print one JSON document on stdout ({err}): {:?}",
                self.args.join(" "),
                self.stdout
            )
        })
    }

    /// Stderr parsed as the `{"error": {"kind", "message"}}` document of `--json`.
    #[track_caller]
    pub fn error_json(&self) -> (String, String) {
        let doc: Json = serde_json::from_str(self.stderr.trim()).unwrap_or_else(|err| {
            panic!(
                "`client {}` did not print one JSON error on stderr ({err}): {:?}",
                self.args.join(" "),
                self.stderr
            )
        });
        let kind = doc["error"]["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("error document without a kind: {doc}"))
            .to_string();
        let message = doc["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("error document without a message: {doc}"))
            .to_string();
        (kind, message)
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    // A client killed by a signal has no code: report it as -1, which no assertion expects.
    status.code().unwrap_or(-1)
}

/// Runs `program` with `args` (in `dir`, if given) until it exits, for at most `timeout`: what it
/// did, as a [`ClientRun`]. `Err` with what it printed if it was still running (it is killed).
pub fn run_to_exit<S: AsRef<str>>(
    name: &str,
    program: &str,
    args: &[S],
    dir: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<ClientRun, String> {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let mut process = Captured::spawn(name, program, &args, dir);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match process.child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
            Ok(None) => break None,
            Err(err) => panic!("cannot wait for {name}: {err}"),
        }
    };
    if status.is_none() {
        process.kill();
    }
    for reader in process.readers.drain(..) {
        let _ = reader.join();
    }
    let stdout = process.stdout_lines().join("\n");
    let stderr = process.stderr_text();
    match status {
        Some(status) => Ok(ClientRun {
            args,
            code: exit_code(status),
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{name} ({} {}) was still running after {timeout:?}; stdout:\n{stdout}\nstderr:\n{stderr}",
            program,
            args.join(" ")
        )),
    }
}

/// Runs the `client` binary with exactly `args`; bounded by [`CLIENT_RUN_TIMEOUT`].
pub fn run_client<S: AsRef<str>>(args: &[S]) -> ClientRun {
    BackgroundClient::spawn(args).finish(CLIENT_RUN_TIMEOUT)
}

/// [`run_client`] with `vars` set in its environment.
pub fn run_client_with_env<S: AsRef<str>>(args: &[S], vars: &[(&str, &str)]) -> ClientRun {
    BackgroundClient::spawn_with_env(args, vars).finish(CLIENT_RUN_TIMEOUT)
}

/// Runs `program` (a service binary that is expected to stop by itself, on bad flags say) as
/// [`run_client`] runs the client: bounded, killed and failed if it does not end in time.
pub fn run_service_to_exit<S: AsRef<str>>(program: &str, args: &[S]) -> ClientRun {
    BackgroundClient::spawn_program(program, args, &[]).finish(CLIENT_RUN_TIMEOUT)
}

/// [`run_service_to_exit`] with the environment variables `vars` set (for flags that fall back
/// to one).
pub fn run_service_to_exit_with_env<S: AsRef<str>>(
    program: &str,
    args: &[S],
    vars: &[(&str, &str)],
) -> ClientRun {
    BackgroundClient::spawn_program(program, args, vars).finish(CLIENT_RUN_TIMEOUT)
}

/// A `client` run in progress, whose output can be watched while it runs.
pub struct BackgroundClient {
    process: Captured,
    args: Vec<String>,
    stderr_seen: Vec<String>,
}

impl BackgroundClient {
    pub fn spawn<S: AsRef<str>>(args: &[S]) -> Self {
        Self::spawn_with_env(args, &[])
    }

    pub fn spawn_with_env<S: AsRef<str>>(args: &[S], vars: &[(&str, &str)]) -> Self {
        Self::spawn_program(CLIENT_BIN, args, vars)
    }

    fn spawn_program<S: AsRef<str>>(program: &str, args: &[S], vars: &[(&str, &str)]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
        Self {
            process: Captured::spawn_with_env("client", program, &args, None, vars),
            args,
            stderr_seen: Vec::new(),
        }
    }

    /// Waits until the client printed a stderr line containing `needle`.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.stderr_seen.iter().any(|line| line.contains(needle)) {
                return;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.process.stderr_rx.recv_timeout(left) {
                Ok(line) => self.stderr_seen.push(line),
                Err(_) => panic!(
                    "`client {}` printed no stderr line containing {needle:?} within {timeout:?}; \
                     stderr so far: {:?}",
                    self.args.join(" "),
                    self.process.stderr_text()
                ),
            }
        }
    }

    /// Waits for the client to exit (killing it and failing after `timeout`) and returns what
    /// it did.
    pub fn finish(mut self, timeout: Duration) -> ClientRun {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.process.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                Ok(None) => {
                    self.process.kill();
                    panic!(
                        "`client {}` did not finish within {timeout:?}; stderr: {}",
                        self.args.join(" "),
                        self.process.stderr_text()
                    );
                }
                Err(err) => panic!("cannot wait for `client {}`: {err}", self.args.join(" ")),
            }
        };
        for reader in self.process.readers.drain(..) {
            let _ = reader.join();
        }
        let join = |lines: &Lines| {
            let lines: Vec<String> = lock_ignoring_poison(lines).iter().cloned().collect();
            lines.join("\n")
        };
        ClientRun {
            args: self.args.clone(),
            code: exit_code(status),
            stdout: join(&self.process.stdout),
            stderr: join(&self.process.stderr),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------------

/// A live server as `query_servers --json` lists it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub id: String,
    pub addr: String,
}

/// The view as `query_servers --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewDoc {
    pub epoch: u64,
    pub servers: Vec<Member>,
    pub rebalancing: bool,
}

impl ViewDoc {
    pub fn parse(doc: &Json) -> Self {
        let epoch = doc["epoch"]
            .as_u64()
            .unwrap_or_else(|| panic!("view without a numeric epoch: {doc}"));
        let rebalancing = doc["rebalancing"]
            .as_bool()
            .unwrap_or_else(|| panic!("view without a boolean rebalancing flag: {doc}"));
        let servers = doc["servers"]
            .as_array()
            .unwrap_or_else(|| panic!("view without a servers list: {doc}"))
            .iter()
            .map(|server| Member {
                id: server["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("server without an id: {doc}"))
                    .to_string(),
                addr: server["addr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("server without an addr: {doc}"))
                    .to_string(),
            })
            .collect();
        Self {
            epoch,
            servers,
            rebalancing,
        }
    }

    /// The ids listed at `addr` (more than one would break "a live id holds its address").
    pub fn ids_at(&self, addr: &str) -> Vec<String> {
        self.servers
            .iter()
            .filter(|s| s.addr == addr)
            .map(|s| s.id.clone())
            .collect()
    }

    /// The one id listed at `addr`, if any.
    pub fn id_at(&self, addr: &str) -> Option<String> {
        self.ids_at(addr).into_iter().next()
    }

    pub fn ids(&self) -> BTreeSet<String> {
        self.servers.iter().map(|s| s.id.clone()).collect()
    }

    pub fn addrs(&self) -> BTreeSet<String> {
        self.servers.iter().map(|s| s.addr.clone()).collect()
    }

    pub fn has_id(&self, id: &str) -> bool {
        self.servers.iter().any(|s| s.id == id)
    }

    /// The servers as the ring takes them.
    pub fn server_infos(&self) -> Vec<ringleader::types::ServerInfo> {
        self.servers
            .iter()
            .map(|m| ringleader::types::ServerInfo {
                id: m.id.clone(),
                addr: m.addr.clone(),
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster
// ---------------------------------------------------------------------------------------------

/// The view leader's `--data-dir`, inside the cluster's temp dir.
pub const VIEWLEADER_DATA_DIR: &str = "viewleader.data";

/// The view leader's flags: `port` (0 for any free one), the timings, its cluster (`None`: the
/// default), its data dir inside `dir` (the cluster's temp dir), the same across its restarts,
/// and `--fault-injection` if `fault_injection`.
fn viewleader_args(
    timings: &Timings,
    cluster: Option<&str>,
    port: u16,
    dir: &std::path::Path,
    fault_injection: bool,
) -> Vec<String> {
    let mut args = cluster_args(cluster);
    args.extend(["--port".to_string(), port.to_string()]);
    args.extend(viewleader_timing_args(timings));
    args.extend([
        "--data-dir".to_string(),
        dir.join(VIEWLEADER_DATA_DIR).display().to_string(),
    ]);
    args.extend(fault_injection_args(fault_injection));
    args
}

/// `--fault-injection` (crash and recover allowed, as the tests need), or nothing: every
/// process of a test cluster has it unless the cluster was started
/// [`TestCluster::start_without_fault_injection`].
fn fault_injection_args(fault_injection: bool) -> Vec<String> {
    match fault_injection {
        true => vec!["--fault-injection".to_string()],
        false => Vec::new(),
    }
}

/// The timing flags every view leader (a lone one or a group member) is started with.
fn viewleader_timing_args(timings: &Timings) -> Vec<String> {
    let mut args = vec![
        "--heartbeat-interval-ms".to_string(),
        timings.heartbeat_ms.to_string(),
        "--lease-ms".into(),
        timings.lease_ms.to_string(),
    ];
    if let Some(lock_lease_ms) = timings.lock_lease_ms {
        args.extend(["--lock-lease-ms".to_string(), lock_lease_ms.to_string()]);
    }
    args
}

/// `--cluster NAME`, or nothing for the default cluster.
fn cluster_args(cluster: Option<&str>) -> Vec<String> {
    cluster
        .map(|name| vec!["--cluster".to_string(), name.to_string()])
        .unwrap_or_default()
}

/// How a test cluster is timed.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    /// `--lock-lease-ms` of the view leader; `None` keeps its default (30 s).
    pub lock_lease_ms: Option<u64>,
    /// `--tx-timeout-ms` of the servers; `None` keeps their default.
    pub tx_timeout_ms: Option<u64>,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            heartbeat_ms: HEARTBEAT_MS,
            lease_ms: LEASE_MS,
            lock_lease_ms: None,
            tx_timeout_ms: None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The view leader as a Raft group
// ---------------------------------------------------------------------------------------------

/// Log entries between snapshots of a test group's members (`--snapshot-entries`): low, so that
/// every restart crosses a log compaction.
pub const SNAPSHOT_ENTRIES: u64 = 20;
/// Longest wait for a group to agree on one leader: several elections (a dead leader is
/// replaced after 1.5 to 2 s by default) on a busy machine.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(20);
/// Tries at starting a group whose ports, chosen free, were taken before its members bound them.
const GROUP_START_TRIES: usize = 5;

/// How a test cluster runs its view leader as a Raft group ([`TestCluster::start_group`]).
#[derive(Clone, Copy, Debug)]
pub struct GroupOptions {
    /// Members that form the group at start (ids 1..=members).
    pub members: usize,
    /// `--snapshot-entries` of every member.
    pub snapshot_entries: u64,
    /// `--election-timeout-ms`; `None` keeps the binary's default (500 ms, at most twice it).
    pub election_timeout_ms: Option<u64>,
    /// `--raft-heartbeat-ms`; `None` keeps the binary's default.
    pub raft_heartbeat_ms: Option<u64>,
}

impl GroupOptions {
    /// A group of `members` with the test defaults ([`SNAPSHOT_ENTRIES`], default elections).
    pub fn of(members: usize) -> Self {
        Self {
            members,
            snapshot_entries: SNAPSHOT_ENTRIES,
            election_timeout_ms: None,
            raft_heartbeat_ms: None,
        }
    }
}

/// One member of a view-leader group: its fixed address and data dir, kept across kills.
struct GroupMember {
    id: u64,
    /// `127.0.0.1:PORT`, chosen free before the member first started.
    addr: String,
    data_dir: std::path::PathBuf,
    /// Started with `--join` (waits to be added) rather than with the group's `--peers`.
    joined: bool,
    /// `None` while killed.
    service: Option<Service>,
}

/// The view leader's group: its members, indexed by the order they were started in.
struct Group {
    options: GroupOptions,
    /// `--peers` of the founding members: `1=127.0.0.1:P1,2=...`.
    peers: String,
    members: Vec<GroupMember>,
}

/// One member's status as `client viewleader status --json` prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDoc {
    pub id: u64,
    pub addr: String,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub last_log_index: Option<u64>,
    pub committed: Option<u64>,
    pub applied: Option<u64>,
    pub snapshot: Option<u64>,
    pub purged: Option<u64>,
    pub epoch: u64,
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub crashed: bool,
}

impl MemberDoc {
    pub fn parse(doc: &Json) -> Self {
        let index = |field: &str| -> Option<u64> {
            let value = &doc[field];
            if value.is_null() {
                None
            } else {
                Some(
                    value
                        .as_u64()
                        .unwrap_or_else(|| panic!("member {field} is not a number: {doc}")),
                )
            }
        };
        let number = |field: &str| {
            index(field).unwrap_or_else(|| panic!("member status without a {field}: {doc}"))
        };
        let ids = |field: &str| -> Vec<u64> {
            doc[field]
                .as_array()
                .unwrap_or_else(|| panic!("member status without a {field} list: {doc}"))
                .iter()
                .map(|id| {
                    id.as_u64()
                        .unwrap_or_else(|| panic!("bad id in {field}: {doc}"))
                })
                .collect()
        };
        Self {
            id: number("id"),
            addr: doc["addr"]
                .as_str()
                .unwrap_or_else(|| panic!("member status without an addr: {doc}"))
                .to_string(),
            role: doc["role"]
                .as_str()
                .unwrap_or_else(|| panic!("member status without a role: {doc}"))
                .to_string(),
            term: number("term"),
            leader: index("leader"),
            last_log_index: index("last_log_index"),
            committed: index("committed"),
            applied: index("applied"),
            snapshot: index("snapshot"),
            purged: index("purged"),
            epoch: number("epoch"),
            voters: ids("voters"),
            learners: ids("learners"),
            crashed: doc["crashed"]
                .as_bool()
                .unwrap_or_else(|| panic!("member status without a crashed flag: {doc}")),
        }
    }

    /// Whether this member leads, as far as it knows (and is not in a simulated crash).
    pub fn is_leader(&self) -> bool {
        self.role == "leader" && !self.crashed
    }
}

/// Ports nothing listens on, all distinct: bound by the OS at once, then let go.
pub fn unused_ports(count: usize) -> Vec<u16> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port"))
        .collect();
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .expect("ephemeral listener has an address")
                .port()
        })
        .collect()
}

/// Whether a failed start was a port taken by someone else (so another port may do).
fn port_taken(failure: &str) -> bool {
    failure.contains("in use")
}

/// A view leader and storage servers running as real processes; all killed on drop.
pub struct TestCluster {
    timings: Timings,
    /// The `--cluster` of every process and client run; `None`: the default.
    cluster: Option<String>,
    viewleader: Option<Service>,
    /// Indexed by server number; `None` while killed.
    servers: Vec<Option<Service>>,
    /// The port of each server number, kept across kills so it can restart there.
    ports: Vec<u16>,
    dir: tempfile::TempDir,
    /// The view leader's address, kept while it is killed so it can restart there (unused when
    /// the view leader is a group).
    viewleader_kept_addr: String,
    /// The view leader as a Raft group ([`TestCluster::start_group`]); `None`: one view leader,
    /// `viewleader` above.
    group: Option<Group>,
    /// Flags every server of this cluster is started with, after the harness's own
    /// ([`TestCluster::start_with_server_args`]).
    server_extra_args: Vec<String>,
    /// Flags every view leader, member and server of this cluster is started with, after the
    /// harness's own ([`TestCluster::start_with_args`]): secrets, certificates.
    node_extra_args: Vec<String>,
    /// Flags every client run against this cluster gets before its command's own.
    client_extra_args: Vec<String>,
    /// Whether the view leader, members and servers get `--fault-injection` (all but
    /// [`TestCluster::start_without_fault_injection`] do).
    fault_injection: bool,
    _slot: ClusterSlot,
}

impl TestCluster {
    /// `client getr KEY` of a text value: `Some(value)`, or `None` when not found (exit 1); any
    /// other outcome fails the test.
    pub fn getr_text(&self, key: &str) -> Option<String> {
        let run = self.client(&["--json", "getr", key]);
        match run.code {
            0 => Some(
                run.json()["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("getr printed no text value: {run:?}"))
                    .to_string(),
            ),
            1 => None,
            _ => panic!("`client getr {key}` failed: {run:?}"),
        }
    }

    /// A view leader and `servers` storage servers with the default test timings, all in the
    /// view and settled.
    pub fn start(servers: usize) -> Self {
        Self::start_with(Timings::default(), servers)
    }

    pub fn start_with(timings: Timings, servers: usize) -> Self {
        Self::start_configured::<&str>(None, timings, servers, &[], &[], &[], true)
    }

    /// [`TestCluster::start_with`] in cluster `cluster` (`None`: the default): every process
    /// started and every client run gets `--cluster`.
    pub fn start_in(cluster: Option<&str>, timings: Timings, servers: usize) -> Self {
        Self::start_configured::<&str>(cluster, timings, servers, &[], &[], &[], true)
    }

    /// As [`TestCluster::start_with`], every server (also when added or restarted later) started
    /// with `server_args` after the harness's own flags (`--in-memory`, `--segment-bytes-max N`).
    pub fn start_with_server_args<S: AsRef<str>>(
        timings: Timings,
        servers: usize,
        server_args: &[S],
    ) -> Self {
        Self::start_configured(None, timings, servers, server_args, &[], &[], true)
    }

    /// As [`TestCluster::start_with_server_args`], but the view leader and every server are
    /// started without `--fault-injection`, as a real deployment would be: `crash`, `recover`
    /// and `/exit` are refused.
    pub fn start_without_fault_injection<S: AsRef<str>>(
        timings: Timings,
        servers: usize,
        server_args: &[S],
    ) -> Self {
        Self::start_configured(None, timings, servers, server_args, &[], &[], false)
    }

    /// As [`TestCluster::start_with`], with `node_args` given to the view leader and every
    /// server (also when restarted), and `client_args` to every client run through the
    /// cluster: the flags of a cluster secret or of TLS, which every process must share.
    pub fn start_with_args<S: AsRef<str>>(
        timings: Timings,
        servers: usize,
        node_args: &[S],
        client_args: &[S],
    ) -> Self {
        Self::start_configured(None, timings, servers, &[], node_args, client_args, true)
    }

    fn start_configured<S: AsRef<str>>(
        cluster: Option<&str>,
        timings: Timings,
        servers: usize,
        server_args: &[S],
        node_args: &[S],
        client_args: &[S],
        fault_injection: bool,
    ) -> Self {
        let slot = ClusterSlot::acquire();
        let dir = tempfile::Builder::new()
            .prefix("ringleader-test-")
            .tempdir()
            .expect("create a temp dir for the cluster");
        let owned = |args: &[S]| -> Vec<String> {
            args.iter().map(|arg| arg.as_ref().to_string()).collect()
        };
        let node_extra_args = owned(node_args);
        let mut args = viewleader_args(&timings, cluster, 0, dir.path(), fault_injection);
        args.extend(node_extra_args.iter().cloned());
        let viewleader = start_service("viewleader", VIEWLEADER_BIN, &args, dir.path())
            .unwrap_or_else(|err| panic!("{err}"));
        let mut cluster = Self {
            timings,
            cluster: cluster.map(str::to_string),
            viewleader_kept_addr: viewleader.addr.clone(),
            viewleader: Some(viewleader),
            group: None,
            servers: Vec::new(),
            ports: Vec::new(),
            dir,
            server_extra_args: owned(server_args),
            node_extra_args,
            client_extra_args: owned(client_args),
            fault_injection,
            _slot: slot,
        };
        for _ in 0..servers {
            cluster.add_server();
        }
        cluster.wait_settled();
        cluster
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.timings.lease_ms)
    }

    /// The view leader's address (also while it is killed: where it restarts). For a group:
    /// every member's address, comma-separated, in the order they were started (killed and
    /// removed members included), as servers and clients take it.
    pub fn viewleader_addr(&self) -> String {
        if let Some(group) = &self.group {
            let addrs: Vec<&str> = group.members.iter().map(|m| m.addr.as_str()).collect();
            return addrs.join(",");
        }
        match &self.viewleader {
            Some(viewleader) => viewleader.addr.clone(),
            None => self.viewleader_kept_addr.clone(),
        }
    }

    /// Where the view leader keeps what must survive its restarts (its `--data-dir`).
    pub fn viewleader_data_dir(&self) -> std::path::PathBuf {
        self.expect_single("viewleader_data_dir");
        self.dir.path().join(VIEWLEADER_DATA_DIR)
    }

    /// The cluster's temp dir (every process runs in it; removed on drop).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn viewleader_pid(&self) -> u32 {
        self.expect_single("viewleader_pid");
        self.viewleader
            .as_ref()
            .expect("the view leader is running")
            .pid()
    }

    /// SIGKILL the view leader and reap it; its address and data dir are kept for a restart.
    pub fn kill_viewleader(&mut self) {
        self.expect_single("kill_viewleader");
        let mut service = self.viewleader.take().expect("the view leader is running");
        service.process.kill();
    }

    /// Starts the view leader again at its old port, with the same flags and the same
    /// `--data-dir` (retrying while the port is not yet free). Does not wait for any view.
    pub fn restart_viewleader(&mut self) {
        self.restart_viewleader_with_env(&[]);
    }

    /// [`TestCluster::restart_viewleader`] with `vars` set in its environment (`RUST_LOG`, to
    /// see what it logs at DEBUG).
    pub fn restart_viewleader_with_env(&mut self, vars: &[(&str, &str)]) {
        self.expect_single("restart_viewleader");
        assert!(
            self.viewleader.is_none(),
            "the view leader is still running"
        );
        let port = port_of(&self.viewleader_kept_addr);
        let mut args = viewleader_args(
            &self.timings,
            self.cluster.as_deref(),
            port,
            self.dir.path(),
            self.fault_injection,
        );
        args.extend(self.node_extra_args.iter().cloned());
        let service = wait_for(
            STARTUP_TIMEOUT,
            "the restarted view leader listens on its old port",
            || start_service_with_env("viewleader", VIEWLEADER_BIN, &args, self.dir.path(), vars),
        );
        assert_eq!(
            service.addr, self.viewleader_kept_addr,
            "the view leader restarted at another address"
        );
        self.viewleader = Some(service);
    }

    /// Every line the view leader printed on stdout so far, minus its `listening on` line
    /// (empty while it is killed): `http listening on ADDR` with `--http-port`.
    pub fn viewleader_stdout(&self) -> Vec<String> {
        self.expect_single("viewleader_stdout");
        self.viewleader
            .as_ref()
            .map(Service::stdout_lines)
            .unwrap_or_default()
    }

    /// The view leader's stderr so far (empty while it is killed).
    pub fn viewleader_stderr(&self) -> String {
        self.expect_single("viewleader_stderr");
        self.viewleader
            .as_ref()
            .map(Service::stderr_text)
            .unwrap_or_default()
    }

    fn server_args(&self, port: u16) -> Vec<String> {
        self.server_args_in(self.cluster.as_deref(), port)
    }

    /// A server's flags as [`TestCluster::server_args`] gives them, in cluster `cluster`.
    fn server_args_in(&self, cluster: Option<&str>, port: u16) -> Vec<String> {
        let mut args = cluster_args(cluster);
        args.extend([
            "--port".into(),
            port.to_string(),
            "--viewleader".into(),
            self.viewleader_addr(),
            "--heartbeat-interval-ms".into(),
            self.timings.heartbeat_ms.to_string(),
        ]);
        if let Some(tx_timeout_ms) = self.timings.tx_timeout_ms {
            args.extend(["--tx-timeout-ms".into(), tx_timeout_ms.to_string()]);
        }
        args.extend(fault_injection_args(self.fault_injection));
        args.extend(self.node_extra_args.iter().cloned());
        args.extend(self.server_extra_args.iter().cloned());
        args
    }

    /// Starts a storage server pointed at this cluster's view leader but with `--cluster
    /// CLUSTER`, which the caller owns: the cluster neither counts nor waits for it. `Err` with
    /// its stderr if it never listens.
    pub fn start_server_of(&self, cluster: &str) -> Result<Service, String> {
        let args = self.server_args_in(Some(cluster), 0);
        start_service(
            &format!("server of cluster {cluster:?}"),
            SERVER_BIN,
            &args,
            self.dir.path(),
        )
    }

    /// Runs the `server` binary as this cluster would start a new one (on any free port, with
    /// the cluster's flags), plus `extra_args`, in the cluster's temp dir, and waits for it to
    /// exit: for starts that must be refused. `Err` (the process killed) if it still runs after
    /// `timeout`.
    pub fn run_server_to_exit<S: AsRef<str>>(
        &self,
        extra_args: &[S],
        timeout: Duration,
    ) -> Result<ClientRun, String> {
        let mut args = self.server_args(0);
        args.extend(extra_args.iter().map(|arg| arg.as_ref().to_string()));
        run_to_exit("server", SERVER_BIN, &args, Some(self.dir.path()), timeout)
    }

    /// Starts server `number` again as [`TestCluster::restart_server`] would (its old port, its
    /// data dir) and waits for it to exit: for a restart that must be refused. `Err` (the
    /// process killed) if it still runs after `timeout`; the server stays killed either way.
    pub fn restart_server_to_exit(
        &self,
        number: usize,
        timeout: Duration,
    ) -> Result<ClientRun, String> {
        assert!(
            self.servers[number].is_none(),
            "server {number} is still running"
        );
        let args = self.server_args(self.ports[number]);
        run_to_exit(
            &format!("server {number}"),
            SERVER_BIN,
            &args,
            Some(self.dir.path()),
            timeout,
        )
    }

    /// Starts one more server on a free port; returns its number. Does not wait for the view.
    pub fn add_server(&mut self) -> usize {
        let number = self.servers.len();
        let service = start_service(
            &format!("server {number}"),
            SERVER_BIN,
            &self.server_args(0),
            self.dir.path(),
        )
        .unwrap_or_else(|err| panic!("{err}"));
        self.ports.push(service.port());
        self.servers.push(Some(service));
        number
    }

    /// Starts one more server as [`TestCluster::add_server`] does, but told where the view
    /// leader is by `RINGLEADER_VIEWLEADER` alone (no `--viewleader`); returns its number. Does
    /// not wait for the view.
    pub fn add_server_by_env(&mut self) -> usize {
        let number = self.servers.len();
        let mut args = self.server_args(0);
        let flag = args
            .iter()
            .position(|arg| arg == "--viewleader")
            .expect("the harness gives servers --viewleader");
        args.drain(flag..flag + 2);
        let viewleader = self.viewleader_addr();
        let mut process = Captured::spawn_with_env(
            &format!("server {number}"),
            SERVER_BIN,
            &args,
            Some(self.dir.path()),
            &[(VIEWLEADER_ENV, viewleader.as_str())],
        );
        let addr = process
            .wait_listening(STARTUP_TIMEOUT)
            .unwrap_or_else(|err| panic!("{err}"));
        let service = Service { process, addr };
        self.ports.push(service.port());
        self.servers.push(Some(service));
        number
    }

    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    fn server(&self, number: usize) -> &Service {
        self.servers
            .get(number)
            .and_then(Option::as_ref)
            .unwrap_or_else(|| panic!("server {number} is not running"))
    }

    /// The address of server `number` (also while it is killed).
    pub fn server_addr(&self, number: usize) -> String {
        format!("127.0.0.1:{}", self.ports[number])
    }

    /// The number of the server at `addr`.
    pub fn server_number(&self, addr: &str) -> usize {
        let port = port_of(addr);
        self.ports
            .iter()
            .position(|p| *p == port)
            .unwrap_or_else(|| panic!("no server of this cluster at {addr}"))
    }

    pub fn server_port(&self, number: usize) -> u16 {
        self.ports[number]
    }

    /// The addresses of the servers running now.
    pub fn live_server_addrs(&self) -> BTreeSet<String> {
        self.servers
            .iter()
            .flatten()
            .map(|s| s.addr.clone())
            .collect()
    }

    pub fn server_stdout(&self, number: usize) -> Vec<String> {
        self.server(number).stdout_lines()
    }

    pub fn server_stderr(&self, number: usize) -> String {
        self.server(number).stderr_text()
    }

    /// SIGKILL server `number` and reap it.
    pub fn kill_server(&mut self, number: usize) {
        let mut service = self.servers[number]
            .take()
            .unwrap_or_else(|| panic!("server {number} is not running"));
        service.process.kill();
    }

    /// Starts server `number` again at its old port, from its data dir (retrying while the port
    /// is not yet free).
    pub fn restart_server(&mut self, number: usize) {
        assert!(
            self.servers[number].is_none(),
            "server {number} is still running"
        );
        let args = self.server_args(self.ports[number]);
        let service = wait_for(
            STARTUP_TIMEOUT,
            "the restarted server listens on its old port",
            || {
                start_service(
                    &format!("server {number}"),
                    SERVER_BIN,
                    &args,
                    self.dir.path(),
                )
            },
        );
        self.servers[number] = Some(service);
    }

    /// Where server `number` keeps its data: the default data dir, under the cluster's temp dir
    /// (every process runs there), named after its port.
    pub fn server_data_dir(&self, number: usize) -> std::path::PathBuf {
        self.dir
            .path()
            .join("ringleader-data")
            .join(format!("server-{}", self.ports[number]))
    }

    /// Starts server `number` again at its old port with its data dir wiped: a fresh process at
    /// a dead member's address (a replaced machine), which knows nothing of the member it
    /// replaces.
    pub fn restart_server_wiped(&mut self, number: usize) {
        let dir = self.server_data_dir(number);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .unwrap_or_else(|err| panic!("wipe {}: {err}", dir.display()));
        }
        self.restart_server(number);
    }

    /// Whether server `number` is running (not killed).
    pub fn server_running(&self, number: usize) -> bool {
        self.servers.get(number).is_some_and(Option::is_some)
    }

    /// Server `number`'s exit code if it has ended on its own (it is still counted as running
    /// by the harness until killed or restarted), else `None`.
    pub fn server_exit_code(&mut self, number: usize) -> Option<i32> {
        self.servers
            .get_mut(number)
            .and_then(Option::as_mut)
            .and_then(Service::exit_code)
    }

    /// The pid of server `number`, for signals sent from another thread at a chosen time.
    pub fn server_pid(&self, number: usize) -> u32 {
        self.server(number).pid()
    }

    pub fn pause_server(&self, number: usize) {
        let pid = self.server(number).pid();
        send_signal(pid, "STOP");
        wait_stopped(pid, true, &format!("server {number}"));
    }

    pub fn resume_server(&self, number: usize) {
        let pid = self.server(number).pid();
        send_signal(pid, "CONT");
        wait_stopped(pid, false, &format!("server {number}"));
    }

    pub fn pause_viewleader(&self) {
        self.expect_single("pause_viewleader");
        let pid = self
            .viewleader
            .as_ref()
            .expect("the view leader is running")
            .pid();
        send_signal(pid, "STOP");
        wait_stopped(pid, true, "the view leader");
    }

    pub fn resume_viewleader(&self) {
        self.expect_single("resume_viewleader");
        let pid = self
            .viewleader
            .as_ref()
            .expect("the view leader is running")
            .pid();
        send_signal(pid, "CONT");
        wait_stopped(pid, false, "the view leader");
    }

    /// Runs `client --viewleader ADDR ARGS...` (and `--cluster` when the cluster has a name).
    pub fn client<S: AsRef<str>>(&self, args: &[S]) -> ClientRun {
        let mut full = cluster_args(self.cluster.as_deref());
        full.extend(self.client_extra_args.iter().cloned());
        full.extend(["--viewleader".to_string(), self.viewleader_addr()]);
        full.extend(args.iter().map(|a| a.as_ref().to_string()));
        run_client(&full)
    }

    /// Runs `client --viewleader ADDR --server SERVER ARGS...` against server `number`.
    pub fn client_on<S: AsRef<str>>(&self, number: usize, args: &[S]) -> ClientRun {
        let mut full = vec!["--server".to_string(), self.server_addr(number)];
        full.extend(args.iter().map(|a| a.as_ref().to_string()));
        self.client(&full)
    }

    /// A client started in the background against this cluster's view leader.
    pub fn client_background<S: AsRef<str>>(&self, args: &[S]) -> BackgroundClient {
        let mut full = cluster_args(self.cluster.as_deref());
        full.extend(self.client_extra_args.iter().cloned());
        full.extend(["--viewleader".to_string(), self.viewleader_addr()]);
        full.extend(args.iter().map(|a| a.as_ref().to_string()));
        BackgroundClient::spawn(&full)
    }

    /// `query_servers --json`, or the failed run.
    pub fn try_query_servers(&self) -> Result<ViewDoc, ClientRun> {
        let run = self.client(&["query_servers", "--json"]);
        if run.code == 0 {
            Ok(ViewDoc::parse(&run.json()))
        } else {
            Err(run)
        }
    }

    #[track_caller]
    pub fn query_servers(&self) -> ViewDoc {
        self.try_query_servers()
            .unwrap_or_else(|run| panic!("query_servers failed: {run:?}"))
    }

    /// Polls the view until `accept` returns `Ok` for it (`Err` says what is still missing).
    #[track_caller]
    pub fn wait_for_view<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut accept: impl FnMut(&ViewDoc) -> Result<T, String>,
    ) -> T {
        wait_for(timeout, what, || match self.try_query_servers() {
            Ok(view) => accept(&view).map_err(|missing| format!("{missing} in {view:?}")),
            Err(run) => Err(format!("query_servers failed: {run:?}")),
        })
    }

    /// Waits until the view lists exactly the running servers and is not rebalancing.
    #[track_caller]
    pub fn wait_settled(&self) -> ViewDoc {
        let want = self.live_server_addrs();
        self.wait_for_view(
            EXPIRY_TIMEOUT,
            "the view lists exactly the running servers, settled",
            |view| {
                if view.addrs() == want && view.servers.len() == want.len() && !view.rebalancing {
                    Ok(view.clone())
                } else {
                    Err(format!("want {want:?} settled"))
                }
            },
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster's view leader as a Raft group
// ---------------------------------------------------------------------------------------------

/// The flags of member `index` of `group`: its id; the group's `--peers` (a founding member,
/// which listens on its own entry's port) or `--join --port PORT`; the cluster's timings; its
/// own `--data-dir`; the group's Raft settings; `--fault-injection` (the group tests crash
/// members). The same flags start it again after a kill.
fn member_args(
    timings: &Timings,
    cluster: Option<&str>,
    group: &Group,
    index: usize,
) -> Vec<String> {
    let member = &group.members[index];
    let mut args = cluster_args(cluster);
    args.extend(["--id".to_string(), member.id.to_string()]);
    if member.joined {
        args.extend([
            "--join".to_string(),
            "--port".into(),
            port_of(&member.addr).to_string(),
        ]);
    } else {
        args.extend(["--peers".to_string(), group.peers.clone()]);
    }
    args.extend(viewleader_timing_args(timings));
    args.extend([
        "--data-dir".to_string(),
        member.data_dir.display().to_string(),
        "--snapshot-entries".into(),
        group.options.snapshot_entries.to_string(),
    ]);
    if let Some(ms) = group.options.election_timeout_ms {
        args.extend(["--election-timeout-ms".to_string(), ms.to_string()]);
    }
    if let Some(ms) = group.options.raft_heartbeat_ms {
        args.extend(["--raft-heartbeat-ms".to_string(), ms.to_string()]);
    }
    args.extend(fault_injection_args(true));
    args
}

impl TestCluster {
    /// A cluster whose view leader is a Raft group of `group.members` real `viewleader`
    /// processes (ids 1, 2, ..., each with its own `--data-dir` in the cluster's temp dir, on
    /// ports chosen free beforehand: a try whose port was taken meanwhile starts over on new
    /// ones), and `servers` storage servers given every member's address. Waits until the group
    /// agrees on one leader and the view lists every server, settled.
    pub fn start_group(timings: Timings, group: GroupOptions, servers: usize) -> Self {
        Self::start_group_in(None, timings, group, servers)
    }

    /// [`TestCluster::start_group`] in cluster `cluster` (`None`: the default).
    pub fn start_group_in(
        cluster: Option<&str>,
        timings: Timings,
        group: GroupOptions,
        servers: usize,
    ) -> Self {
        assert!(group.members >= 1, "a group has at least one member");
        let slot = ClusterSlot::acquire();
        let dir = tempfile::Builder::new()
            .prefix("ringleader-test-")
            .tempdir()
            .expect("create a temp dir for the cluster");
        let mut cluster = Self {
            timings,
            cluster: cluster.map(str::to_string),
            viewleader: None,
            viewleader_kept_addr: String::new(),
            group: None,
            servers: Vec::new(),
            ports: Vec::new(),
            dir,
            server_extra_args: Vec::new(),
            node_extra_args: Vec::new(),
            client_extra_args: Vec::new(),
            fault_injection: true,
            _slot: slot,
        };
        cluster.group = Some(cluster.start_founders(group));
        cluster.leader_index();
        for _ in 0..servers {
            cluster.add_server();
        }
        cluster.wait_settled();
        cluster
    }

    /// Starts the founding members of a group, each with the same `--peers`; starts over on
    /// fresh ports (and fresh data dirs) when one of them finds its port taken.
    fn start_founders(&self, options: GroupOptions) -> Group {
        let mut taken = Vec::new();
        for _ in 0..GROUP_START_TRIES {
            let members: Vec<GroupMember> = unused_ports(options.members)
                .into_iter()
                .enumerate()
                .map(|(index, port)| {
                    let id = index as u64 + 1;
                    GroupMember {
                        id,
                        addr: format!("127.0.0.1:{port}"),
                        data_dir: self.dir.path().join(format!("viewleader-{id}.data")),
                        joined: false,
                        service: None,
                    }
                })
                .collect();
            let peers: Vec<String> = members
                .iter()
                .map(|m| format!("{}={}", m.id, m.addr))
                .collect();
            let mut group = Group {
                options,
                peers: peers.join(","),
                members,
            };
            let mut failed = None;
            for index in 0..group.members.len() {
                let data_dir = &group.members[index].data_dir;
                if data_dir.exists() {
                    std::fs::remove_dir_all(data_dir)
                        .unwrap_or_else(|err| panic!("wipe {}: {err}", data_dir.display()));
                }
                let mut args = member_args(&self.timings, self.cluster.as_deref(), &group, index);
                args.extend(self.node_extra_args.iter().cloned());
                let name = format!("view leader member {}", group.members[index].id);
                match start_service(&name, VIEWLEADER_BIN, &args, self.dir.path()) {
                    Ok(service) => {
                        assert_eq!(
                            service.addr, group.members[index].addr,
                            "{name} listens elsewhere than its --peers entry"
                        );
                        group.members[index].service = Some(service);
                    }
                    Err(err) => {
                        failed = Some(err);
                        break;
                    }
                }
            }
            match failed {
                None => return group,
                // The members started so far die with `group`; the next try takes new ports.
                Some(err) if port_taken(&err) => taken.push(err),
                Some(err) => panic!("{err}"),
            }
        }
        panic!("could not start the view-leader group in {GROUP_START_TRIES} tries: {taken:?}");
    }

    /// Panics unless the view leader is a single process (the `viewleader_*` helpers).
    #[track_caller]
    fn expect_single(&self, helper: &str) {
        if let Some(group) = &self.group {
            panic!(
                "{helper}: the view leader is a group of {} members; use the member helpers",
                group.members.len()
            );
        }
    }

    #[track_caller]
    fn group(&self) -> &Group {
        self.group
            .as_ref()
            .expect("the view leader is a single process, not a group (TestCluster::start_group)")
    }

    #[track_caller]
    fn group_mut(&mut self) -> &mut Group {
        self.group
            .as_mut()
            .expect("the view leader is a single process, not a group (TestCluster::start_group)")
    }

    #[track_caller]
    fn member(&self, index: usize) -> &GroupMember {
        self.group()
            .members
            .get(index)
            .unwrap_or_else(|| panic!("no view-leader member {index}"))
    }

    /// Members started so far (killed and removed ones included).
    pub fn member_count(&self) -> usize {
        self.group().members.len()
    }

    /// The Raft id of member `index`.
    pub fn member_id(&self, index: usize) -> u64 {
        self.member(index).id
    }

    /// The index of the member with Raft id `id`.
    pub fn member_index(&self, id: u64) -> usize {
        self.group()
            .members
            .iter()
            .position(|m| m.id == id)
            .unwrap_or_else(|| panic!("no view-leader member with id {id}"))
    }

    /// The address of member `index` (also while it is killed: where it restarts).
    pub fn member_addr(&self, index: usize) -> String {
        self.member(index).addr.clone()
    }

    /// The `--data-dir` of member `index`.
    pub fn member_data_dir(&self, index: usize) -> std::path::PathBuf {
        self.member(index).data_dir.clone()
    }

    pub fn member_running(&self, index: usize) -> bool {
        self.member(index).service.is_some()
    }

    /// The indices of the members running now.
    pub fn running_members(&self) -> Vec<usize> {
        (0..self.member_count())
            .filter(|index| self.member_running(*index))
            .collect()
    }

    pub fn member_pid(&self, index: usize) -> u32 {
        self.member(index)
            .service
            .as_ref()
            .unwrap_or_else(|| panic!("view-leader member {index} is not running"))
            .pid()
    }

    /// What member `index` printed on stderr so far (empty while it is killed).
    pub fn member_stderr(&self, index: usize) -> String {
        self.member(index)
            .service
            .as_ref()
            .map(Service::stderr_text)
            .unwrap_or_default()
    }

    /// SIGKILL member `index` and reap it; its address and data dir are kept for a restart.
    pub fn kill_member(&mut self, index: usize) {
        let mut service = self.group_mut().members[index]
            .service
            .take()
            .unwrap_or_else(|| panic!("view-leader member {index} is not running"));
        service.process.kill();
    }

    /// Starts member `index` again from its data dir at its old port, with the flags it first
    /// started with (retrying while the port is not yet free). Waits for nothing else.
    pub fn restart_member(&mut self, index: usize) {
        assert!(
            !self.member_running(index),
            "view-leader member {index} is still running"
        );
        let mut args = member_args(&self.timings, self.cluster.as_deref(), self.group(), index);
        args.extend(self.node_extra_args.iter().cloned());
        let addr = self.member_addr(index);
        let name = format!("view leader member {}", self.member_id(index));
        let service = wait_for(
            STARTUP_TIMEOUT,
            &format!("the restarted {name} listens on its old port"),
            || start_service(&name, VIEWLEADER_BIN, &args, self.dir.path()),
        );
        assert_eq!(service.addr, addr, "{name} restarted at another address");
        self.group_mut().members[index].service = Some(service);
    }

    /// Starts a new member with `viewleader --id ID --join --port PORT` (the next id, a port
    /// chosen free, its own data dir), which waits to be added (`client viewleader add`);
    /// returns its index.
    pub fn start_joining_member(&mut self) -> usize {
        let id = self.group().members.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let index = self.member_count();
        let data_dir = self.dir.path().join(format!("viewleader-{id}.data"));
        let name = format!("view leader member {id}");
        let mut taken = Vec::new();
        for _ in 0..GROUP_START_TRIES {
            if data_dir.exists() {
                std::fs::remove_dir_all(&data_dir)
                    .unwrap_or_else(|err| panic!("wipe {}: {err}", data_dir.display()));
            }
            let member = GroupMember {
                id,
                addr: format!("127.0.0.1:{}", unused_port()),
                data_dir: data_dir.clone(),
                joined: true,
                service: None,
            };
            let addr = member.addr.clone();
            self.group_mut().members.push(member);
            let mut args = member_args(&self.timings, self.cluster.as_deref(), self.group(), index);
            args.extend(self.node_extra_args.iter().cloned());
            match start_service(&name, VIEWLEADER_BIN, &args, self.dir.path()) {
                Ok(service) => {
                    assert_eq!(service.addr, addr, "{name} listens elsewhere than --port");
                    self.group_mut().members[index].service = Some(service);
                    return index;
                }
                Err(err) => {
                    self.group_mut().members.pop();
                    if !port_taken(&err) {
                        panic!("{err}");
                    }
                    taken.push(err);
                }
            }
        }
        panic!("could not start {name} in {GROUP_START_TRIES} tries: {taken:?}");
    }

    /// Runs `client --viewleader ADDR ARGS...` against member `index` alone (a redirect to the
    /// leader it names is still followed, as the client always does).
    pub fn client_at_member<S: AsRef<str>>(&self, index: usize, args: &[S]) -> ClientRun {
        let mut full = cluster_args(self.cluster.as_deref());
        full.extend(self.client_extra_args.iter().cloned());
        full.extend(["--viewleader".to_string(), self.member_addr(index)]);
        full.extend(args.iter().map(|a| a.as_ref().to_string()));
        run_client(&full)
    }

    /// Every member's status from one `client viewleader status --json` over all of them,
    /// indexed like the members: `Err` with why for a member that did not answer (a killed one).
    pub fn member_statuses(&self) -> Vec<Result<MemberDoc, String>> {
        let run = self.client(&["--json", "viewleader", "status"]);
        let count = self.member_count();
        if run.code != 0 {
            return vec![Err(format!("`client viewleader status` failed: {run:?}")); count];
        }
        let doc = run.json();
        let listed = doc["members"]
            .as_array()
            .unwrap_or_else(|| panic!("viewleader status printed no members list: {doc}"))
            .clone();
        (0..count)
            .map(|index| {
                let addr = self.member_addr(index);
                match listed
                    .iter()
                    .find(|m| m["addr"].as_str() == Some(addr.as_str()))
                {
                    None => Err(format!("member {index} ({addr}) is not listed in {doc}")),
                    Some(entry) if entry.get("error").is_some() => {
                        Err(format!("member {index} ({addr}): {}", entry["error"]))
                    }
                    Some(entry) => Ok(MemberDoc::parse(entry)),
                }
            })
            .collect()
    }

    /// The status of member `index`, asked of it alone.
    pub fn member_status(&self, index: usize) -> Result<MemberDoc, String> {
        let addr = self.member_addr(index);
        let run = self.client_at_member(index, &["--json", "viewleader", "status"]);
        if run.code != 0 {
            return Err(format!(
                "`client viewleader status` at {addr} failed: {run:?}"
            ));
        }
        let doc = run.json();
        let entry = doc["members"]
            .as_array()
            .and_then(|members| {
                members
                    .iter()
                    .find(|m| m["addr"].as_str() == Some(addr.as_str()))
            })
            .cloned()
            .ok_or_else(|| format!("member {index} ({addr}) is not listed in {doc}"))?;
        if entry.get("error").is_some() {
            return Err(format!("member {index} ({addr}): {}", entry["error"]));
        }
        Ok(MemberDoc::parse(&entry))
    }

    /// One look at the group: the index of its leader if exactly one answering member leads
    /// and every answering member of the group as that leader knows it (voters and learners;
    /// a member waiting to be added knows no leader yet) names it. `Err` says what was seen.
    pub fn try_leader_index(&self) -> Result<usize, String> {
        let statuses = self.member_statuses();
        let answering: Vec<(usize, &MemberDoc)> = statuses
            .iter()
            .enumerate()
            .filter_map(|(index, status)| status.as_ref().ok().map(|doc| (index, doc)))
            .filter(|(_, doc)| !doc.crashed)
            .collect();
        let leaders: Vec<(usize, &MemberDoc)> = answering
            .iter()
            .copied()
            .filter(|(_, doc)| doc.is_leader())
            .collect();
        let [(index, leader)] = leaders[..] else {
            return Err(format!("{} members lead: {statuses:?}", leaders.len()));
        };
        let dissent: Vec<&MemberDoc> = answering
            .iter()
            .map(|(_, doc)| *doc)
            .filter(|doc| leader.voters.contains(&doc.id) || leader.learners.contains(&doc.id))
            .filter(|doc| doc.leader != Some(leader.id))
            .collect();
        if !dissent.is_empty() {
            return Err(format!(
                "member {} leads but these members name another leader: {dissent:?}",
                leader.id
            ));
        }
        Ok(index)
    }

    /// The index of the group's one live leader, polled until the members agree on it.
    #[track_caller]
    pub fn leader_index(&self) -> usize {
        wait_for(
            LEADER_TIMEOUT,
            "the view-leader group agrees on one live leader",
            || self.try_leader_index(),
        )
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Servers first, so none logs a storm of failures about a vanished view leader.
        for server in self.servers.iter_mut() {
            if let Some(mut server) = server.take() {
                server.process.kill();
            }
        }
        if let Some(mut viewleader) = self.viewleader.take() {
            viewleader.process.kill();
        }
        if let Some(group) = self.group.as_mut() {
            for member in group.members.iter_mut() {
                if let Some(mut service) = member.service.take() {
                    service.process.kill();
                }
            }
        }
    }
}
