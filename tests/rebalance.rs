//! Issue 4 through real processes (docs/rebalancing.md): after every view change each key
//! ends on exactly its replicas in the new view, nothing is lost and nothing older resurfaces;
//! the epoch is the view leader's; the copies moved stay within 5 % of the minimum; writes wait
//! out (or are refused during) a rebalance; a server stopped with SIGTERM hands its keys over;
//! a server that expired and rejoined under a new id has its data reconciled by version.
//!
//! Bulk writes, reads and placement checks go through the library's `Client` (one process per
//! key would be slow); the `client` binary is used for the user-visible checks (exit codes,
//! messages, `--json` output).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};

use common::{send_signal, wait_for, TestCluster, Timings, SERVER_BIN, STARTUP_TIMEOUT};
use ringleader::client::ClientOptions;
use ringleader::ring::Ring;
use ringleader::rpc::message::{ServerReply, ServerRequest, ServerStatus};
use ringleader::server::rebalance::minimum_copies;
use ringleader::types::{Space, Value, Version, Versioned, View};
use ringleader::Client;

/// Copies of each key when the view has that many servers or more.
const REPLICAS: usize = 3;
/// Longest wait for a view change to be seen, settle and have every key in place (a loss takes
/// about a lease to be noticed; the rest is moving at most 1,000 keys).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(20);
/// Requests the library keeps in flight for bulk writes and reads.
const IN_FLIGHT: usize = 16;

// ---------------------------------------------------------------------------------------------
// The library client, driven from synchronous tests
// ---------------------------------------------------------------------------------------------

/// A library `Client` with its own runtime.
struct Lib {
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Lib {
    fn new(viewleader: &str, timeout_ms: u64, wait_ms: u64) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build a tokio runtime for the library client");
        let client = {
            let _inside = runtime.enter();
            Client::new(ClientOptions {
                viewleader: viewleader.to_string(),
                timeout_ms,
                wait_ms,
            })
        };
        Self { runtime, client }
    }

    /// A client of `cluster` that waits generously for a rebalance to end.
    fn of(cluster: &TestCluster) -> Self {
        Self::new(&cluster.viewleader_addr(), 2_000, 20_000)
    }

    fn view(&self) -> Result<View, String> {
        self.runtime
            .block_on(self.client.query_servers())
            .map_err(|err| format!("query_servers failed: {err}"))
    }

    #[track_caller]
    fn current_view(&self) -> View {
        self.view().unwrap_or_else(|err| panic!("{err}"))
    }

    fn status(&self, addr: &str) -> Result<ServerStatus, String> {
        self.runtime
            .block_on(self.client.status(addr))
            .map_err(|err| format!("status of {addr} failed: {err}"))
    }

    /// Puts a ring key on the server at `addr` alone, as a peer's transfer would, and returns
    /// its version: a copy no other server has, which only that server can pass on.
    #[track_caller]
    fn place_only_on(&self, addr: &str, key: &str, value: &str) -> Version {
        let status = self.status(addr).unwrap_or_else(|err| panic!("{err}"));
        let version = 1;
        let request = ServerRequest::Transfer {
            epoch: status.epoch,
            server_id: status.server_id,
            entries: vec![(
                key.to_string(),
                Versioned {
                    value: Value::Text(value.to_string()),
                    version,
                },
            )],
        };
        match self
            .runtime
            .block_on(self.client.server_call(addr, request))
        {
            Ok(ServerReply::Transferred { stored: 1 }) => version,
            other => panic!("placing {key:?} on {addr} alone: {other:?}"),
        }
    }

    fn keys_on(&self, addr: &str) -> Result<Vec<String>, String> {
        self.runtime
            .block_on(self.client.query_all_keys(addr, Space::Ring))
            .map_err(|err| format!("query_all_keys on {addr} failed: {err}"))
    }

    /// Writes every `(key, value)` with `setr`; panics on any failure. Returns each key's
    /// committed version.
    #[track_caller]
    fn setr_all(&self, entries: &BTreeMap<String, String>) -> BTreeMap<String, Version> {
        let client = &self.client;
        let outcomes: Vec<(String, ringleader::Result<Version>)> = self.runtime.block_on(
            stream::iter(entries.iter())
                .map(|(key, value)| async move {
                    let outcome = client
                        .setr(key, Value::Text(value.clone()))
                        .await
                        .map(|o| o.version);
                    (key.clone(), outcome)
                })
                .buffer_unordered(IN_FLIGHT)
                .collect(),
        );
        outcomes
            .into_iter()
            .map(|(key, outcome)| {
                let version = outcome.unwrap_or_else(|err| panic!("setr {key:?} failed: {err}"));
                (key, version)
            })
            .collect()
    }

    /// Reads every key with `getr`; returns what was wrong (a miss, another value, an error).
    fn getr_problems(&self, expected: &BTreeMap<String, String>) -> Vec<String> {
        let client = &self.client;
        let problems: Vec<Option<String>> = self.runtime.block_on(
            stream::iter(expected.iter())
                .map(|(key, want)| async move {
                    match client.getr(key).await {
                        Ok(Some(found)) if found.value.value == Value::Text(want.clone()) => None,
                        Ok(Some(found)) => Some(format!(
                            "getr {key:?} read {:?} (version {}) from {} instead of {want:?}",
                            found.value.value, found.value.version, found.replica.addr
                        )),
                        Ok(None) => Some(format!("getr {key:?} found no value")),
                        Err(err) => Some(format!("getr {key:?} failed: {err}")),
                    }
                })
                .buffer_unordered(IN_FLIGHT)
                .collect(),
        );
        problems.into_iter().flatten().collect()
    }

    /// `get` of every key of `keys` on the server at `addr`.
    fn get_all_on(
        &self,
        addr: &str,
        keys: impl Iterator<Item = String>,
    ) -> Result<BTreeMap<String, Option<Versioned>>, String> {
        let client = &self.client;
        let answers: Vec<(String, ringleader::Result<Option<Versioned>>)> = self.runtime.block_on(
            stream::iter(keys)
                .map(|key| async move {
                    let answer = client.get(addr, Space::Ring, &key).await;
                    (key, answer)
                })
                .buffer_unordered(IN_FLIGHT)
                .collect(),
        );
        answers
            .into_iter()
            .map(|(key, answer)| match answer {
                Ok(value) => Ok((key, value)),
                Err(err) => Err(format!("get {key:?} on {addr} failed: {err}")),
            })
            .collect()
    }

    /// The sum of `copies_sent` over the servers at `addrs`.
    fn copies_sent(&self, addrs: &BTreeSet<String>) -> u64 {
        addrs
            .iter()
            .map(|addr| {
                self.status(addr)
                    .unwrap_or_else(|err| panic!("{err}"))
                    .copies_sent
            })
            .sum()
    }
}

// ---------------------------------------------------------------------------------------------
// Views and placement
// ---------------------------------------------------------------------------------------------

fn addrs_of(view: &View) -> BTreeSet<String> {
    view.servers.iter().map(|s| s.addr.clone()).collect()
}

/// `Ok` when `view` lists exactly the servers at `addrs` and is not rebalancing.
fn settled_on(view: &View, addrs: &BTreeSet<String>) -> Result<(), String> {
    if addrs_of(view) != *addrs || view.servers.len() != addrs.len() {
        return Err(format!(
            "the view (epoch {}) lists {:?}, want {addrs:?}",
            view.epoch,
            addrs_of(view)
        ));
    }
    if view.rebalancing {
        return Err(format!("the view (epoch {}) is rebalancing", view.epoch));
    }
    Ok(())
}

/// `Ok` when every key of `expected` is held by exactly its replicas in `view` (min(3, live)
/// servers) and no server holds a key it should not or one nobody wrote.
fn placement_problem(
    lib: &Lib,
    view: &View,
    expected: &BTreeMap<String, String>,
) -> Result<(), String> {
    let ring = Ring::of_servers(&view.servers);
    let copies = view.servers.len().min(REPLICAS);
    let mut held: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for server in &view.servers {
        for key in lib.keys_on(&server.addr)? {
            if !expected.contains_key(&key) {
                return Err(format!("{} holds {key:?}, which nobody wrote", server.addr));
            }
            held.entry(key).or_default().insert(server.id.clone());
        }
    }
    let empty = BTreeSet::new();
    let misplaced: Vec<String> = expected
        .keys()
        .filter_map(|key| {
            let want: BTreeSet<String> = ring.replicas(key).into_iter().cloned().collect();
            let have = held.get(key).unwrap_or(&empty);
            (want.len() != copies || *have != want).then(|| {
                format!(
                    "{key:?} on {} servers {have:?}, its replicas are {want:?}",
                    have.len()
                )
            })
        })
        .collect();
    if misplaced.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} keys not on exactly their {copies} replicas in epoch {}, e.g. {:?}",
            misplaced.len(),
            expected.len(),
            view.epoch,
            &misplaced[..misplaced.len().min(3)]
        ))
    }
}

/// Waits until the view lists exactly the servers at `addrs`, has settled, and every key is on
/// exactly its replicas (drops run right after the view settles, so this polls). Returns the
/// view.
#[track_caller]
fn wait_placed(
    lib: &Lib,
    addrs: &BTreeSet<String>,
    expected: &BTreeMap<String, String>,
    what: &str,
) -> View {
    wait_for(SETTLE_TIMEOUT, what, || {
        let view = lib.view()?;
        settled_on(&view, addrs)?;
        placement_problem(lib, &view, expected)?;
        // Nothing moved while we looked.
        let after = lib.view()?;
        if after.epoch != view.epoch || after.rebalancing {
            return Err(format!(
                "the view moved on from epoch {} while checking",
                view.epoch
            ));
        }
        Ok(view)
    })
}

/// Checks every key with `getr` through the library, and a few through the `client` binary.
#[track_caller]
fn assert_all_readable(
    cluster: &TestCluster,
    lib: &Lib,
    expected: &BTreeMap<String, String>,
    when: &str,
) {
    let problems = lib.getr_problems(expected);
    assert!(
        problems.is_empty(),
        "{when}: {} of {} keys unreadable or wrong, e.g. {:?}",
        problems.len(),
        expected.len(),
        &problems[..problems.len().min(5)]
    );
    let keys: Vec<&String> = expected.keys().collect();
    for key in [keys[0], keys[keys.len() / 2], keys[keys.len() - 1]] {
        assert_eq!(
            getr_cli(cluster, key).as_deref(),
            Some(expected[key].as_str()),
            "{when}: `client getr {key}`"
        );
    }
}

/// `client getr KEY --json`: its value, `None` when it exits 1; panics on any other exit.
#[track_caller]
fn getr_cli(cluster: &TestCluster, key: &str) -> Option<String> {
    cluster.getr_text(key)
}

fn keys_with(count: usize, tag: &str) -> BTreeMap<String, String> {
    (0..count)
        .map(|i| (format!("key-{i:04}"), format!("value-{i}-{tag}")))
        .collect()
}

/// Sets its flag when dropped, also while unwinding from a panic.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

// ---------------------------------------------------------------------------------------------
// A storage server the test owns (the harness keeps its servers' process ids to itself, and a
// SIGTERM test needs one to signal and to see exit)
// ---------------------------------------------------------------------------------------------

struct OwnServer {
    child: Child,
    addr: String,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl OwnServer {
    /// Starts a `server` against `viewleader` with `timings`, as the harness starts its own.
    fn start(viewleader: &str, timings: Timings) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ringleader-own-server-")
            .tempdir()
            .expect("create a temp dir for a server");
        let stdout_path = dir.path().join("stdout");
        let stderr_path = dir.path().join("stderr");
        let child = Command::new(SERVER_BIN)
            .args([
                "--port",
                "0",
                "--viewleader",
                viewleader,
                "--heartbeat-interval-ms",
                &timings.heartbeat_ms.to_string(),
            ])
            .current_dir(dir.path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("create the server's stdout file"))
            .stderr(File::create(&stderr_path).expect("create the server's stderr file"))
            .spawn()
            .expect("start a server");
        let mut server = Self {
            child,
            addr: String::new(),
            stderr_path,
            _dir: dir,
        };
        server.addr = wait_for(STARTUP_TIMEOUT, "the own server listens", || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "the server exited ({status}) before listening; stderr:\n{}",
                    server.stderr()
                );
            }
            let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
            stdout
                .lines()
                .find_map(|line| line.strip_prefix("listening on "))
                .map(|addr| addr.trim().to_string())
                .ok_or_else(|| "no `listening on` line yet".to_string())
        });
        server
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits for the process to exit by itself; panics (after killing it) past `timeout`.
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the server") {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the server did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(common::POLL);
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn five_servers_lose_servers_one_by_one_down_to_one_and_grow_back_without_losing_a_key() {
    let mut cluster = TestCluster::start(5);
    let lib = Lib::of(&cluster);
    let expected = keys_with(1_000, "v1");
    lib.setr_all(&expected);
    let mut view = wait_placed(
        &lib,
        &cluster.live_server_addrs(),
        &expected,
        "1,000 keys are on exactly 3 of 5 servers",
    );
    assert_all_readable(&cluster, &lib, &expected, "with 5 servers");

    for victim in 0..4 {
        let before = view.epoch;
        cluster.kill_server(victim);
        let live = cluster.live_server_addrs();
        view = wait_placed(
            &lib,
            &live,
            &expected,
            &format!(
                "after killing server {victim}, every key is on exactly {} of the {} live servers",
                live.len().min(REPLICAS),
                live.len()
            ),
        );
        assert!(
            view.epoch > before,
            "losing server {victim} must raise the epoch past {before}: {view:?}"
        );
        assert_all_readable(
            &cluster,
            &lib,
            &expected,
            &format!("with {} live servers", live.len()),
        );
    }
    assert_eq!(view.servers.len(), 1, "down to one server: {view:?}");

    for _ in 0..4 {
        let before = view.epoch;
        let added = cluster.add_server();
        let live = cluster.live_server_addrs();
        view = wait_placed(
            &lib,
            &live,
            &expected,
            &format!(
                "after server {added} joined, every key is on exactly {} of the {} live servers \
                 and on no other",
                live.len().min(REPLICAS),
                live.len()
            ),
        );
        assert!(
            view.epoch > before,
            "a join must raise the epoch past {before}: {view:?}"
        );
        assert_all_readable(
            &cluster,
            &lib,
            &expected,
            &format!("grown back to {} servers", live.len()),
        );
    }
    assert_eq!(view.servers.len(), 5, "grown back to five: {view:?}");
}

/// Every server's epoch is at most the view leader's at every look, and eventually equal to it
/// with its rebalance for it reported.
#[track_caller]
fn wait_servers_caught_up(lib: &Lib, view: &View) {
    wait_for(
        SETTLE_TIMEOUT,
        &format!(
            "every server reports the view leader's epoch {}",
            view.epoch
        ),
        || {
            let before = lib.view()?;
            let statuses: Vec<ServerStatus> = before
                .servers
                .iter()
                .map(|s| lib.status(&s.addr))
                .collect::<Result<_, _>>()?;
            let after = lib.view()?;
            for status in &statuses {
                assert!(
                    status.epoch <= after.epoch && status.rebalanced_epoch <= after.epoch,
                    "server {} is at epoch {} (rebalanced {}), ahead of the view leader's {}: \
                     the epoch must come from the view leader",
                    status.addr,
                    status.epoch,
                    status.rebalanced_epoch,
                    after.epoch
                );
            }
            if before.epoch != view.epoch || after.epoch != view.epoch {
                panic!(
                    "the view moved from epoch {} to {} with nothing happening",
                    view.epoch, after.epoch
                );
            }
            let behind: Vec<String> = statuses
                .iter()
                .filter(|s| s.epoch != after.epoch || s.rebalanced_epoch != after.epoch)
                .map(|s| {
                    format!(
                        "{} at epoch {} rebalanced {}",
                        s.addr, s.epoch, s.rebalanced_epoch
                    )
                })
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!("behind epoch {}: {behind:?}", after.epoch))
            }
        },
    );
}

#[test]
fn a_view_change_is_triggered_by_a_join_and_by_a_loss_and_the_epoch_comes_from_the_view_leader() {
    let mut cluster = TestCluster::start(3);
    let lib = Lib::of(&cluster);
    let expected = keys_with(100, "v1");
    lib.setr_all(&expected);
    let start = wait_placed(&lib, &cluster.live_server_addrs(), &expected, "3 settled");
    wait_servers_caught_up(&lib, &start);

    // A join.
    let added = cluster.add_server();
    let joined = wait_placed(
        &lib,
        &cluster.live_server_addrs(),
        &expected,
        &format!("server {added} joined and the keys moved"),
    );
    assert!(
        joined.epoch > start.epoch,
        "a join must raise the epoch: {} then {}",
        start.epoch,
        joined.epoch
    );
    wait_servers_caught_up(&lib, &joined);
    // The user sees the view leader's epoch, and a write carries it.
    assert_eq!(cluster.query_servers().epoch, joined.epoch);
    let run = cluster.client(&["--json", "setr", "key-0000", "after-join"]);
    run.expect_ok();
    assert_eq!(
        run.json()["epoch"].as_u64(),
        Some(joined.epoch),
        "setr reports the view leader's epoch: {run:?}"
    );

    // A loss.
    cluster.kill_server(0);
    let mut expected = expected;
    expected.insert("key-0000".into(), "after-join".into());
    let lost = wait_placed(
        &lib,
        &cluster.live_server_addrs(),
        &expected,
        "server 0 expired and the keys moved",
    );
    assert!(
        lost.epoch > joined.epoch,
        "a loss must raise the epoch: {} then {}",
        joined.epoch,
        lost.epoch
    );
    wait_servers_caught_up(&lib, &lost);
    assert_eq!(cluster.query_servers().epoch, lost.epoch);
    assert_all_readable(&cluster, &lib, &expected, "after a join and a loss");
}

/// Asserts `minimum <= moved <= 1.05 × minimum` for one view change.
#[track_caller]
fn assert_near_minimum(change: &str, moved: u64, minimum: usize) {
    let minimum = minimum as u64;
    eprintln!("{change}: {moved} copies sent, minimum {minimum}");
    assert!(minimum > 0, "{change}: some keys must change replicas");
    assert!(
        moved >= minimum,
        "{change}: {moved} copies sent, fewer than the {minimum} new (key, server) pairs: \
         some new replica never got its key"
    );
    assert!(
        moved * 100 <= minimum * 105,
        "{change}: {moved} copies sent, more than 1.05 × the minimum {minimum}"
    );
}

#[test]
fn moved_copies_after_one_join_and_one_loss_are_within_five_percent_of_the_minimum() {
    let mut cluster = TestCluster::start(5);
    let lib = Lib::of(&cluster);
    let expected = keys_with(1_000, "v1");
    lib.setr_all(&expected);
    let keys: Vec<String> = expected.keys().cloned().collect();

    // One join.
    let five = wait_placed(&lib, &cluster.live_server_addrs(), &expected, "5 settled");
    let sent_before = lib.copies_sent(&addrs_of(&five));
    cluster.add_server();
    let six = wait_placed(
        &lib,
        &cluster.live_server_addrs(),
        &expected,
        "the sixth server joined and the keys moved",
    );
    let moved = lib.copies_sent(&addrs_of(&six)) - sent_before;
    let minimum = minimum_copies(
        &Ring::of_servers(&five.servers),
        &Ring::of_servers(&six.servers),
        &keys,
    );
    assert_near_minimum("one join (5 → 6 servers)", moved, minimum);

    // One loss: the killed server's counter goes with it, so count the survivors only.
    let victim = 0;
    let victim_addr = cluster.server_addr(victim);
    let survivors: BTreeSet<String> = addrs_of(&six)
        .into_iter()
        .filter(|addr| *addr != victim_addr)
        .collect();
    let sent_before = lib.copies_sent(&survivors);
    cluster.kill_server(victim);
    let five_again = wait_placed(
        &lib,
        &cluster.live_server_addrs(),
        &expected,
        "server 0 expired and the keys moved",
    );
    assert_eq!(addrs_of(&five_again), survivors);
    let moved = lib.copies_sent(&survivors) - sent_before;
    let minimum = minimum_copies(
        &Ring::of_servers(&six.servers),
        &Ring::of_servers(&five_again.servers),
        &keys,
    );
    assert_near_minimum("one loss (6 → 5 servers)", moved, minimum);
    assert_all_readable(&cluster, &lib, &expected, "after a join and a loss");
}

#[test]
fn setr_during_rebalancing_waits_or_is_refused_and_getr_finds_every_value_across_view_changes() {
    let mut cluster = TestCluster::start(4);
    let lib = Lib::of(&cluster);
    let mut expected = keys_with(200, "v1");
    lib.setr_all(&expected);
    let settled = wait_placed(&lib, &cluster.live_server_addrs(), &expected, "4 settled");
    let viewleader = cluster.viewleader_addr();
    let written_before = expected.clone();

    let stop = AtomicBool::new(false);
    let passes = AtomicUsize::new(0);
    let problems: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        // Reads every key again and again while the views change; each must have its value.
        let (stop, passes, problems) = (&stop, &passes, &problems);
        let reader = scope.spawn(move || {
            let reader = Lib::new(&viewleader, 1_000, 20_000);
            let entries: Vec<(String, String)> = written_before.into_iter().collect();
            let chunks: Vec<BTreeMap<String, String>> = entries
                .chunks(IN_FLIGHT)
                .map(|chunk| chunk.iter().cloned().collect())
                .collect();
            'passes: while !stop.load(Ordering::SeqCst) {
                for chunk in &chunks {
                    if stop.load(Ordering::SeqCst) {
                        break 'passes;
                    }
                    let found = reader.getr_problems(chunk);
                    problems.lock().unwrap().extend(found);
                }
                passes.fetch_add(1, Ordering::SeqCst);
            }
        });

        // However this ends (a failed assertion too), the reader stops, so the scope can end.
        let _stop_reader = SetOnDrop(stop);

        // A server stops answering (it will expire) and another joins: the join's rebalance
        // cannot finish until the stopped server is expired and the survivors re-replicate.
        cluster.pause_server(0);
        let joined = cluster.add_server();
        let rebalancing = wait_for(
            SETTLE_TIMEOUT,
            "the view leader reports the cluster rebalancing",
            || match lib.view() {
                Ok(view) if view.rebalancing => Ok(view),
                Ok(view) => Err(format!("not rebalancing at epoch {}", view.epoch)),
                Err(err) => Err(err),
            },
        );
        assert!(rebalancing.epoch > settled.epoch);

        // A write that may not wait: done or refused for the rebalance, nothing else.
        let hasty = cluster.client(&["--json", "--wait-ms", "0", "setr", "hasty", "now"]);
        eprintln!(
            "setr --wait-ms 0 during the rebalance of epoch {}: exit {}, {}",
            rebalancing.epoch,
            hasty.code,
            hasty.stderr.trim()
        );
        match hasty.code {
            0 => {
                assert_eq!(hasty.json()["ok"], true, "{hasty:?}");
                expected.insert("hasty".into(), "now".into());
            }
            4 => {
                let (kind, message) = hasty.error_json();
                assert!(
                    (kind == "rebalancing" || kind == "stale_view")
                        && (message.contains("rebalanc") || message.contains("epoch")),
                    "setr --wait-ms 0 during a rebalance must be refused for the rebalance or \
                     the epoch, got kind {kind:?}: {message}"
                );
            }
            _ => panic!(
                "setr --wait-ms 0 during a rebalance must exit 0 or 4: {hasty:?} (view {:?})",
                lib.view()
            ),
        }
        // A write that may wait: it succeeds once the cluster settles.
        let patient = cluster.client_background(&[
            "--json",
            "--wait-ms",
            "20000",
            "setr",
            "patient",
            "later",
        ]);

        // Server 0 expires; the survivors and the newcomer settle without it.
        let mut live = cluster.live_server_addrs();
        live.remove(&cluster.server_addr(0));
        let run = patient.finish(Duration::from_secs(25));
        run.expect_ok();
        assert_eq!(run.json()["ok"], true, "{run:?}");
        expected.insert("patient".into(), "later".into());
        let after = wait_placed(
            &lib,
            &live,
            &expected,
            &format!("server 0 expired, server {joined} joined, and the keys moved"),
        );
        assert!(after.epoch > rebalancing.epoch, "{after:?}");
        cluster.kill_server(0);

        // Let the reader finish a whole pass begun after the cluster settled.
        let done = passes.load(Ordering::SeqCst);
        common::wait_until(
            SETTLE_TIMEOUT,
            "the reader read every key twice more",
            || passes.load(Ordering::SeqCst) >= done + 2,
        );
        stop.store(true, Ordering::SeqCst);
        reader.join().expect("the reader thread");
        eprintln!(
            "the reader read all 200 keys {} times across the changes",
            passes.load(Ordering::SeqCst)
        );
    });
    let problems = problems.into_inner().unwrap();
    assert!(
        problems.is_empty(),
        "getr during the view changes: {} problems, e.g. {:?}",
        problems.len(),
        &problems[..problems.len().min(5)]
    );
    assert_all_readable(&cluster, &lib, &expected, "after the view changes");
}

#[test]
fn a_server_stopped_with_sigterm_hands_its_keys_over_so_no_replica_is_lost() {
    let cluster = TestCluster::start(3);
    let lib = Lib::of(&cluster);
    let mut leaving = OwnServer::start(&cluster.viewleader_addr(), cluster.timings());
    let mut four = cluster.live_server_addrs();
    four.insert(leaving.addr.clone());
    let settled = wait_for(SETTLE_TIMEOUT, "four servers settled", || {
        let view = lib.view()?;
        settled_on(&view, &four)?;
        Ok(view)
    });
    let expected = keys_with(400, "v1");
    lib.setr_all(&expected);
    wait_placed(&lib, &four, &expected, "every key on 3 of 4 servers");
    let held = lib
        .status(&leaving.addr)
        .unwrap_or_else(|err| panic!("{err}"))
        .keys;
    assert!(held > 0, "the leaving server holds keys");
    // A ring key only the leaving server holds: only its handoff can save it; the other servers
    // have no copy to re-replicate from.
    lib.place_only_on(&leaving.addr, "only-on-the-leaver", "handed-over");
    let mut expected = expected;
    expected.insert("only-on-the-leaver".into(), "handed-over".into());

    send_signal(leaving.pid(), "TERM");
    let status = leaving.wait_exit(Duration::from_secs(15));
    assert!(
        status.success(),
        "a server stopped with SIGTERM exits 0: {status}; stderr:\n{}",
        leaving.stderr()
    );
    // It told the view leader before it exited: the view already lacks it, no lease needed.
    let view = lib.current_view();
    assert!(
        !addrs_of(&view).contains(&leaving.addr),
        "the server left the view before exiting: {view:?}"
    );
    assert!(
        view.epoch > settled.epoch,
        "the leave raised the epoch: {} then {view:?}",
        settled.epoch
    );
    assert!(
        leaving.stderr().contains("left the cluster"),
        "the server finished its handoff; stderr:\n{}",
        leaving.stderr()
    );

    let three = cluster.live_server_addrs();
    wait_placed(
        &lib,
        &three,
        &expected,
        "every key on all 3 remaining servers",
    );
    for addr in &three {
        let values = lib
            .get_all_on(addr, expected.keys().cloned())
            .unwrap_or_else(|err| panic!("{err}"));
        for (key, found) in values {
            let found = found.unwrap_or_else(|| panic!("{addr} lacks {key:?}"));
            assert_eq!(
                found.value,
                Value::Text(expected[&key].clone()),
                "{key:?} on {addr}"
            );
        }
    }
    assert_all_readable(&cluster, &lib, &expected, "after the graceful leave");
}

#[test]
fn an_expired_server_rejoins_under_a_new_id_and_its_data_is_reconciled_not_wiped() {
    let cluster = TestCluster::start(3);
    let lib = Lib::of(&cluster);
    let mut expected = keys_with(300, "v1");
    let mut versions = lib.setr_all(&expected);
    let all = cluster.live_server_addrs();
    let before = wait_placed(&lib, &all, &expected, "every key on all 3 servers");
    let sleeper = 0;
    let sleeper_addr = cluster.server_addr(sleeper);
    let old_id = before
        .servers
        .iter()
        .find(|s| s.addr == sleeper_addr)
        .map(|s| s.id.clone())
        .expect("the sleeper is in the view");

    // A ring key only the sleeper holds: if its data were wiped on rejoining, this key would be
    // gone for good.
    let solo_version = lib.place_only_on(&sleeper_addr, "only-on-the-sleeper", "kept");
    expected.insert("only-on-the-sleeper".into(), "kept".into());
    versions.insert("only-on-the-sleeper".into(), solo_version);

    cluster.pause_server(sleeper);
    let mut awake = all.clone();
    awake.remove(&sleeper_addr);
    let without = wait_for(
        SETTLE_TIMEOUT,
        "the paused server expired and the other two settled",
        || {
            let view = lib.view()?;
            settled_on(&view, &awake)?;
            Ok(view)
        },
    );
    assert!(without.epoch > before.epoch);

    // New versions of a third of the keys while it sleeps.
    let updates: BTreeMap<String, String> = expected
        .keys()
        .filter(|key| key.starts_with("key-"))
        .step_by(3)
        .map(|key| (key.clone(), format!("{key}-v2")))
        .collect();
    let updated = lib.setr_all(&updates);
    for (key, version) in &updated {
        assert!(
            *version > versions[key],
            "{key:?}: the new write's version {version} is above the old {}",
            versions[key]
        );
    }
    expected.extend(updates.clone());
    versions.extend(updated);

    cluster.resume_server(sleeper);
    let rejoined = wait_for(
        SETTLE_TIMEOUT,
        "the resumed server rejoined under a new id and the view settled",
        || {
            // Its data is kept, not wiped, at every look while it rejoins.
            if let Ok(status) = lib.status(&sleeper_addr) {
                assert_eq!(
                    status.keys,
                    expected.len() as u64,
                    "the rejoining server still holds every key (id {})",
                    status.server_id
                );
            }
            let view = lib.view()?;
            settled_on(&view, &all)?;
            Ok(view)
        },
    );
    let new_id = rejoined
        .servers
        .iter()
        .find(|s| s.addr == sleeper_addr)
        .map(|s| s.id.clone())
        .expect("the sleeper is in the view again");
    assert_ne!(new_id, old_id, "it rejoined under a new id");
    assert!(rejoined.epoch > without.epoch);

    wait_placed(&lib, &all, &expected, "every key on all 3 servers again");
    // Every replica holds the newest version; no older one resurfaced anywhere.
    wait_for(
        SETTLE_TIMEOUT,
        "every replica holds the newest version",
        || {
            for addr in &all {
                let values = lib.get_all_on(addr, expected.keys().cloned())?;
                for (key, found) in values {
                    let want = Versioned {
                        value: Value::Text(expected[&key].clone()),
                        version: versions[&key],
                    };
                    match found {
                        Some(found) if found == want => {}
                        Some(found) if found.version > want.version => panic!(
                            "{key:?} on {addr} has version {} ({:?}), newer than the last write's \
                         {want:?}",
                            found.version, found.value
                        ),
                        other => {
                            return Err(format!("{key:?} on {addr} is {other:?}, want {want:?}"));
                        }
                    }
                }
            }
            Ok(())
        },
    );
    let status = lib
        .status(&sleeper_addr)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(status.server_id, new_id);
    assert_all_readable(&cluster, &lib, &expected, "after the rejoin");
}
