//! Issue 5 (faults): a coordinator that dies mid-commit, acknowledged writes surviving the loss
//! of their primary, retries that apply exactly once under dropped and duplicated replies,
//! replicated appends, linearizable versus stale reads, and simulated crashes of a server and of
//! the view leader.
//!
//! The protocol-level scenarios run on an in-process [`LocalCluster`] (fast, and the library's
//! test hooks such as `write_then_crash` and the reply fault hook are reachable); the ones about
//! what a user sees run the real binaries through [`TestCluster`]. Every wait polls a condition
//! against a deadline; the only sleeps are poll intervals and the pauses a scenario names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    holds_for, run_client, wait_for, ClientRun, TestCluster, Timings, ViewDoc, EXPIRY_TIMEOUT,
};
use ringleader::client::{Client, ClientOptions, CrashPoint};
use ringleader::faults::ReplyFaults;
use ringleader::tools::cluster::{ClusterOptions, LocalCluster};
use ringleader::types::{Op, ServerInfo, Space, Value, Versioned};
use ringleader::viewleader::ViewLeaderOptions;
use ringleader::Error;

// ---------------------------------------------------------------------------------------------
// Helpers for in-process clusters
// ---------------------------------------------------------------------------------------------

/// Heartbeat interval of the in-process clusters.
const HEARTBEAT_MS: u64 = 200;
/// Lease of the in-process clusters (at least 1 s, so a busy machine expires nobody).
const LEASE_MS: u64 = 1_000;
/// Transaction timeout of the in-process clusters.
const TX_TIMEOUT_MS: u64 = 1_000;
/// Pause between polls.
const POLL: Duration = Duration::from_millis(20);
/// Generous bound for a view change to settle (expiry, rejoin, rebalance).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(10);

fn cluster_options() -> ClusterOptions {
    ClusterOptions {
        viewleader: ViewLeaderOptions {
            heartbeat_interval_ms: HEARTBEAT_MS,
            lease_ms: LEASE_MS,
            ..ViewLeaderOptions::default()
        },
        tx_timeout_ms: TX_TIMEOUT_MS,
        ..ClusterOptions::default()
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// `get` on one server, retried on timeouts and broken connections (a read applies nothing, so
/// retrying it is always safe; with the reply fault hook on, single replies get lost).
async fn get_retrying(client: &Client, addr: &str, space: Space, key: &str) -> Option<Versioned> {
    let mut last = None;
    for _ in 0..20 {
        match client.get(addr, space, key).await {
            Ok(value) => return value,
            Err(err @ (Error::Timeout(_) | Error::Unreachable(_))) => last = Some(err),
            Err(err) => panic!("get {key:?} on {addr} failed: {err}"),
        }
    }
    panic!("get {key:?} on {addr} kept failing: {last:?}")
}

/// What each of `addrs` holds of the ring key `key`, in order.
async fn holdings(client: &Client, addrs: &[String], key: &str) -> Vec<Option<Versioned>> {
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        out.push(get_retrying(client, addr, Space::Ring, key).await);
    }
    out
}

/// Transactions pending on the server at `addr`, retried like [`get_retrying`].
async fn pending_on(client: &Client, addr: &str) -> u64 {
    let mut last = None;
    for _ in 0..20 {
        match client.status(addr).await {
            Ok(status) => return status.pending_transactions,
            Err(err @ (Error::Timeout(_) | Error::Unreachable(_))) => last = Some(err),
            Err(err) => panic!("status of {addr} failed: {err}"),
        }
    }
    panic!("status of {addr} kept failing: {last:?}")
}

fn addrs_of(cluster: &LocalCluster) -> Vec<String> {
    cluster.servers.iter().map(|s| s.addr.clone()).collect()
}

fn replica_addrs(replicas: &[ServerInfo]) -> Vec<String> {
    replicas.iter().map(|r| r.addr.clone()).collect()
}

/// Asserts that every entry is `Some` and that all are equal; returns the common value.
#[track_caller]
fn all_same(what: &str, held: &[Option<Versioned>]) -> Versioned {
    let first = held[0]
        .clone()
        .unwrap_or_else(|| panic!("{what}: a replica lacks the key: {held:?}"));
    assert!(
        held.iter().all(|h| h.as_ref() == Some(&first)),
        "{what}: the replicas disagree: {held:?}"
    );
    first
}

// ---------------------------------------------------------------------------------------------
// 1. Coordinator crash at each step
// ---------------------------------------------------------------------------------------------

/// The client dies at `point` in the middle of a replicated write. Within twice the transaction
/// timeout (plus half a second of slack for the 100 ms check interval and scheduling) the key
/// must be writable again, and every replica must agree: on the crashed write's value when the
/// primary had committed it, on the old value otherwise.
async fn coordinator_crash_at(point: CrashPoint) {
    let cluster = LocalCluster::start(3, cluster_options()).await.unwrap();
    let addrs = addrs_of(&cluster);
    let key = format!("crash-{point:?}");
    let writer = cluster.client(10_000);
    let base = writer.setr(&key, text("base")).await.unwrap();

    // A separate client plays the coordinator that dies.
    let doomed = cluster.client(10_000);
    let crashed = doomed
        .write_then_crash(&key, Op::Put(text("crashed")), point)
        .await;
    let crashed_at = Instant::now();
    let deadline = crashed_at + Duration::from_millis(2 * TX_TIMEOUT_MS + 500);
    assert!(
        crashed.is_err(),
        "{point:?}: a coordinator stopped on purpose reported success: {crashed:?}"
    );

    // The crash left the transaction where the point says.
    let primary = base.replicas[0].addr.clone();
    let mut pending = BTreeMap::new();
    for addr in &addrs {
        pending.insert(addr.clone(), pending_on(&writer, addr).await);
    }
    let pending_at_primary = pending[&primary];
    let pending_elsewhere: u64 = pending
        .iter()
        .filter(|(a, _)| **a != primary)
        .map(|(_, n)| *n)
        .sum();
    let expected = match point {
        CrashPoint::AfterFirstPrepare => (1, 0),
        CrashPoint::AfterAllPrepares => (1, 2),
        CrashPoint::AfterFirstCommit => (0, 2),
    };
    assert_eq!(
        (pending_at_primary, pending_elsewhere),
        expected,
        "{point:?}: pending transactions (primary {primary}) right after the crash: {pending:?}"
    );

    // Meanwhile the key is held: a write that does not wait is refused as a conflict.
    let impatient = cluster.client(0);
    match impatient.setr(&key, text("too-early")).await {
        Err(Error::Conflict(_)) => {}
        other => panic!("{point:?}: a write on the held key gave {other:?}, not a conflict"),
    }

    let committed = point == CrashPoint::AfterFirstCommit;
    if committed {
        // The primary committed: termination must commit the others too.
        let crashed_value = loop {
            let held = holdings(&writer, &addrs, &key).await;
            let done = held
                .iter()
                .all(|h| h.as_ref().is_some_and(|v| v.value == text("crashed")));
            if done {
                break all_same(&format!("{point:?}, crashed write"), &held);
            }
            assert!(
                Instant::now() < deadline,
                "{point:?}: the write committed at the primary did not reach every replica \
                 within 2 x the transaction timeout + 500 ms: {held:?}"
            );
            tokio::time::sleep(POLL).await;
        };
        assert!(
            crashed_value.version > base.version,
            "{point:?}: the committed write did not raise the version: {crashed_value:?} after {base:?}"
        );
    }

    // The key becomes writable again in time.
    let follow = loop {
        match impatient.setr(&key, text("after")).await {
            Ok(outcome) => break outcome,
            Err(err) => {
                assert!(
                    Instant::now() < deadline,
                    "{point:?}: the key was still not writable {} ms after the crash: {err}",
                    crashed_at.elapsed().as_millis()
                );
                // Until then nothing but the base (or the committed crashed write) is visible.
                let held = holdings(&writer, &addrs, &key).await;
                let allowed = if committed { "crashed" } else { "base" };
                assert!(
                    held.iter()
                        .all(|h| h.as_ref().is_some_and(|v| v.value == text(allowed))),
                    "{point:?}: before the follow-up write every replica must hold {allowed:?}: {held:?}"
                );
                tokio::time::sleep(POLL).await;
            }
        }
    };
    assert!(
        Instant::now() <= deadline,
        "{point:?}: the follow-up write finished {} ms after the crash",
        crashed_at.elapsed().as_millis()
    );

    // Every replica holds the follow-up write, at one version; nothing is left pending.
    let held = holdings(&writer, &addrs, &key).await;
    let last = all_same(&format!("{point:?}, after the follow-up write"), &held);
    assert_eq!(
        last,
        Versioned {
            value: text("after"),
            version: follow.version
        },
        "{point:?}: the replicas do not hold the acknowledged follow-up write"
    );
    for addr in &addrs {
        assert_eq!(
            pending_on(&writer, addr).await,
            0,
            "{point:?}: a transaction is still pending on {addr}"
        );
    }
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_crash_after_first_prepare_aborts_and_frees_the_key() {
    coordinator_crash_at(CrashPoint::AfterFirstPrepare).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_crash_after_all_prepares_aborts_and_frees_the_key() {
    coordinator_crash_at(CrashPoint::AfterAllPrepares).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_crash_after_first_commit_commits_everywhere() {
    coordinator_crash_at(CrashPoint::AfterFirstCommit).await;
}

// ---------------------------------------------------------------------------------------------
// 2. An acknowledged write survives the loss of its primary
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_setr_survives_killing_its_primary() {
    let mut cluster = LocalCluster::start(4, cluster_options()).await.unwrap();
    let client = cluster.client(10_000);
    let key = "durable";
    let acked = client.setr(key, text("kept")).await.unwrap();
    let replicas = client.view(true).await.unwrap().replicas(key);
    assert_eq!(replica_addrs(&replicas), replica_addrs(&acked.replicas));
    let primary = replicas[0].addr.clone();
    cluster.kill_server(&primary).await.unwrap();

    // At once (the dead primary is still in the view): a majority still answers.
    let read = client
        .getr(key)
        .await
        .unwrap()
        .expect("the acknowledged key is found");
    assert_eq!(
        read.value,
        Versioned {
            value: text("kept"),
            version: acked.version
        }
    );

    // Once the view dropped the primary and settled, every replica in it holds the write.
    let view = cluster
        .wait_for_view(SETTLE_TIMEOUT, |v| {
            v.servers.len() == 3 && !v.rebalancing && v.servers.iter().all(|s| s.addr != primary)
        })
        .await
        .unwrap();
    let now_replicas = replica_addrs(&client.view(true).await.unwrap().replicas(key));
    assert_eq!(now_replicas.len(), 3, "three replicas in {view:?}");
    assert!(!now_replicas.contains(&primary));
    let held = holdings(&client, &now_replicas, key).await;
    let after = all_same("after the primary died", &held);
    assert_eq!(after.value, text("kept"));
    assert_eq!(after.version, acked.version);
    let read = client.getr(key).await.unwrap().expect("still found");
    assert_eq!(read.value, after);
    cluster.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Retries apply exactly once under dropped and duplicated replies
// ---------------------------------------------------------------------------------------------

const APPEND_TASKS: usize = 4;
const APPENDS_PER_TASK: usize = 10;
/// Every this-many-th item of a task also goes to the second list.
const SECOND_KEY_EVERY: usize = 5;

/// What the appenders did: items acknowledged and items whose append returned an error, per key.
#[derive(Default)]
struct AppendLog {
    acked: BTreeMap<String, BTreeSet<String>>,
    failed: BTreeMap<String, BTreeSet<String>>,
    errors: Vec<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_appends_and_sets_apply_exactly_once() {
    let options = ClusterOptions {
        faults: ReplyFaults {
            drop_every: 4,
            duplicate_every: 5,
        },
        ..cluster_options()
    };
    let cluster = LocalCluster::start(3, options).await.unwrap();
    let addrs = addrs_of(&cluster);
    let client = Arc::new(Client::new(ClientOptions {
        viewleader: cluster.viewleader_addr.clone(),
        timeout_ms: 300,
        wait_ms: 20_000,
    }));
    let keys = ["faulty-list", "faulty-list-2"];

    let log = Arc::new(std::sync::Mutex::new(AppendLog::default()));
    let tasks: Vec<_> = (0..APPEND_TASKS)
        .map(|task| {
            let client = client.clone();
            let log = log.clone();
            tokio::spawn(async move {
                for i in 0..APPENDS_PER_TASK {
                    let item = format!("t{task}-i{i}");
                    let mut targets = vec![keys[0]];
                    if i % SECOND_KEY_EVERY == 0 {
                        targets.push(keys[1]);
                    }
                    for key in targets {
                        let result = client.append(key, &item).await;
                        let mut log = log.lock().unwrap();
                        match result {
                            Ok(_) => log
                                .acked
                                .entry(key.into())
                                .or_default()
                                .insert(item.clone()),
                            Err(err) => {
                                log.errors.push(format!("{key}/{item}: {err}"));
                                log.failed
                                    .entry(key.into())
                                    .or_default()
                                    .insert(item.clone())
                            }
                        };
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    let acked_total: usize = log.acked.values().map(BTreeSet::len).sum();
    eprintln!(
        "appends: {acked_total} acknowledged, {} failed: {:?}",
        log.errors.len(),
        log.errors
    );
    // The retries in the library absorb the faults: nearly every append is acknowledged.
    assert!(
        acked_total >= (APPEND_TASKS * APPENDS_PER_TASK) / 2,
        "too few appends acknowledged under the faults ({acked_total}): {:?}",
        log.errors
    );

    // Let any write left with an unknown outcome settle among the replicas.
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    for addr in &addrs {
        while pending_on(&client, addr).await > 0 {
            assert!(
                Instant::now() < deadline,
                "transactions still pending on {addr}"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    for key in keys {
        let held = holdings(&client, &addrs, key).await;
        let list = all_same(&format!("list {key:?}"), &held);
        let Value::List(items) = &list.value else {
            panic!("{key:?} does not hold a list: {list:?}");
        };
        let mut seen = BTreeMap::<&str, usize>::new();
        for item in items {
            *seen.entry(item.as_str()).or_default() += 1;
        }
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{key:?}: items applied twice: {twice:?}");
        let acked = log.acked.get(key).cloned().unwrap_or_default();
        let failed = log.failed.get(key).cloned().unwrap_or_default();
        let lost: Vec<_> = acked
            .iter()
            .filter(|item| !seen.contains_key(item.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "{key:?}: acknowledged items lost: {lost:?}"
        );
        let strangers: Vec<_> = seen
            .keys()
            .filter(|item| !acked.contains(**item) && !failed.contains(**item))
            .collect();
        assert!(
            strangers.is_empty(),
            "{key:?}: items nobody appended: {strangers:?}"
        );
    }

    // Single-server sets through the same faults, one after another. Each acknowledged set was
    // applied exactly once, so its version is one above the previous write. A set that failed
    // (every try's reply lost) may still have been applied once: then the next acknowledged
    // version skips by one for it. So the guarantee is: acknowledged versions strictly grow, and
    // between two of them the gap is 1 plus at most the number of failed sets in between.
    let addr = &addrs[0];
    let key = "faulty-counter";
    const SETS: usize = 40;
    let mut results = Vec::with_capacity(SETS);
    let mut slow = 0;
    for i in 0..SETS {
        let started = Instant::now();
        let result = client.set(addr, key, text(&format!("v{i}"))).await;
        if started.elapsed() >= Duration::from_millis(250) {
            slow += 1; // at least one try timed out: the retry path was taken
        }
        results.push(result);
    }
    assert!(
        slow > 0,
        "no set needed a retry: the fault hook did not drop anything"
    );
    let mut previous = 0;
    let mut failed_since = 0;
    let mut last_acked = None;
    for (i, result) in results.iter().enumerate() {
        match result {
            Ok(version) => {
                assert!(
                    *version > previous && *version <= previous + 1 + failed_since,
                    "set {i} acknowledged version {version} after version {previous} with \
                     {failed_since} failed sets in between: {results:?}"
                );
                previous = *version;
                failed_since = 0;
                last_acked = Some(i);
            }
            Err(err) => {
                assert!(
                    matches!(err, Error::Timeout(_) | Error::Unreachable(_)),
                    "set {i} failed with {err}"
                );
                failed_since += 1;
            }
        }
    }
    let failures = results.iter().filter(|r| r.is_err()).count();
    if failures == 0 {
        let versions: Vec<u64> = results.iter().map(|r| *r.as_ref().unwrap()).collect();
        assert_eq!(versions, (1..=SETS as u64).collect::<Vec<_>>());
    }
    let stored = get_retrying(&client, addr, Space::Local, key)
        .await
        .expect("the counter key exists");
    assert!(
        stored.version >= previous && stored.version <= previous + failed_since,
        "final version {} after last acknowledged {previous} and {failed_since} failed sets",
        stored.version
    );
    if failed_since == 0 {
        let i = last_acked.expect("some set was acknowledged");
        assert_eq!(stored.value, text(&format!("v{i}")));
    }
    cluster.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Append through the CLI (real processes)
// ---------------------------------------------------------------------------------------------

#[test]
fn append_builds_lists_and_refuses_texts_through_the_cli() {
    let cluster = TestCluster::start(3);
    cluster.client(&["append", "l", "a"]).expect_ok();
    cluster.client(&["append", "l", "b"]).expect_ok();
    let run = cluster.client(&["getr", "l"]);
    run.expect_ok();
    assert_eq!(run.stdout.trim_end(), "a\nb", "{run:?}");
    let run = cluster.client(&["getr", "--json", "l"]);
    run.expect_ok();
    assert_eq!(
        run.json()["value"],
        serde_json::json!(["a", "b"]),
        "{run:?}"
    );

    cluster.client(&["setr", "t", "text"]).expect_ok();
    let run = cluster.client(&["append", "t", "x"]);
    run.expect_code(5);
    let message = run.stderr.to_lowercase();
    assert!(
        message.contains("text") && message.contains("list"),
        "the refusal should name the text/list mismatch: {run:?}"
    );
    let run = cluster.client(&["getr", "t"]);
    run.expect_ok();
    assert_eq!(run.stdout.trim_end(), "text", "the text was left alone");

    cluster.client(&["append", "fresh", "z"]).expect_ok();
    let run = cluster.client(&["getr", "--json", "fresh"]);
    run.expect_ok();
    assert_eq!(run.json()["value"], serde_json::json!(["z"]), "{run:?}");
}

// ---------------------------------------------------------------------------------------------
// Simulated crashes through the CLI
// ---------------------------------------------------------------------------------------------

/// Which process a `crash` / `recover` command names.
enum Target<'a> {
    Server(&'a str),
    ViewLeader,
}

/// Runs `client crash` or `client recover` against `target`, naming exactly one process as the
/// CLI requires (the harness's `TestCluster::client` always adds `--viewleader`).
fn crash_command(cluster: &TestCluster, target: Target<'_>, command: &str) -> ClientRun {
    let mut args = match target {
        Target::Server(addr) => vec!["--server".to_string(), addr.to_string()],
        Target::ViewLeader => vec!["--viewleader".to_string(), cluster.viewleader_addr()],
    };
    args.extend([
        "--timeout-ms".to_string(),
        "500".into(),
        command.to_string(),
    ]);
    run_client(&args)
}

/// Starts a simulated crash of `target`. The crash must take effect; its acknowledgement is
/// currently lost (see [`crash_command_is_acknowledged`]), so a timeout is tolerated here and
/// the callers check the effect instead.
#[track_caller]
fn crash(cluster: &TestCluster, target: Target<'_>) {
    crash_command(cluster, target, "crash").expect_ok();
}

#[track_caller]
fn recover(cluster: &TestCluster, target: Target<'_>) {
    crash_command(cluster, target, "recover").expect_ok();
}

/// `client crash` says the process is now crashed and exits 0, like `recover` does.
#[test]
fn crash_command_is_acknowledged() {
    let cluster = TestCluster::start(1);
    let server = cluster.server_addr(0);
    let run = crash_command(&cluster, Target::Server(&server), "crash");
    run.expect_ok();
    assert!(run.stdout.contains("crashed"), "{run:?}");
    recover(&cluster, Target::Server(&server));

    let run = crash_command(&cluster, Target::ViewLeader, "crash");
    run.expect_ok();
    assert!(run.stdout.contains("crashed"), "{run:?}");
    recover(&cluster, Target::ViewLeader);
}

// ---------------------------------------------------------------------------------------------
// 5. getr --stale versus linearizable getr (real processes)
// ---------------------------------------------------------------------------------------------

#[test]
fn stale_getr_answers_from_one_replica_where_linearizable_needs_a_majority() {
    // A long lease, so that both reads happen while the crashed servers are still in the view.
    let timings = Timings {
        lease_ms: 5_000,
        ..Timings::default()
    };
    let cluster = TestCluster::start_with(timings, 3);
    let before = cluster.query_servers();
    cluster.client(&["setr", "k", "v"]).expect_ok();
    let crashed = [cluster.server_addr(0), cluster.server_addr(1)];
    for addr in &crashed {
        crash(&cluster, Target::Server(addr));
    }

    let stale = cluster.client(&["--timeout-ms", "300", "--json", "getr", "--stale", "k"]);
    stale.expect_ok();
    let doc = stale.json();
    assert_eq!(doc["value"], "v", "{stale:?}");
    assert_eq!(
        doc["replica"],
        cluster.server_addr(2).as_str(),
        "only the live replica can have answered: {stale:?}"
    );

    let linearizable = cluster.client(&["--timeout-ms", "300", "getr", "k"]);
    linearizable.expect_code(3);
    let message = linearizable.stderr.to_lowercase();
    assert!(
        message.contains("majority") || (message.contains("1 of 3") && message.contains("needs 2")),
        "the refusal should say that a majority of the replicas must answer: {linearizable:?}"
    );

    // Both reads saw the crashed servers still in the view (no expiry, no rebalance yet).
    let during = cluster.query_servers();
    assert_eq!(
        during.ids(),
        before.ids(),
        "the lease ran out during the reads; the test proves nothing"
    );

    for addr in &crashed {
        recover(&cluster, Target::Server(addr));
    }
    let run = cluster.client(&["getr", "k"]);
    run.expect_ok();
    assert_eq!(run.stdout.trim_end(), "v");
}

// ---------------------------------------------------------------------------------------------
// 6. Simulated crash and recover of a server (real processes)
// ---------------------------------------------------------------------------------------------

/// `get [--ring] KEY` on server `number`: `(value, version)`, or `None` when it is not there.
fn get_on(cluster: &TestCluster, number: usize, space: Space, key: &str) -> Option<(String, u64)> {
    let run = match space {
        Space::Local => cluster.client_on(number, &["--json", "get", key]),
        Space::Ring => cluster.client_on(number, &["--json", "get", "--ring", key]),
    };
    match run.code {
        0 => {
            let doc = run.json();
            Some((
                doc["value"].as_str().unwrap_or_default().to_string(),
                doc["version"].as_u64().unwrap_or_default(),
            ))
        }
        1 => None,
        _ => panic!("get {key} on server {number} failed: {run:?}"),
    }
}

/// The replica addresses of `key` in `view`.
fn owners(view: &ViewDoc, key: &str) -> Vec<String> {
    let servers = view.server_infos();
    ringleader::ring::replicas(key, &servers)
        .into_iter()
        .map(|id| {
            servers
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.addr.clone())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn crashed_server_rejoins_under_a_new_id_and_is_reconciled() {
    let cluster = TestCluster::start(3);
    let victim = 0;
    let victim_addr = cluster.server_addr(victim);
    let before = cluster.query_servers();
    let old_id = before
        .id_at(&victim_addr)
        .expect("the victim is in the view");

    cluster
        .client_on(victim, &["set", "solo", "only-here"])
        .expect_ok();
    cluster.client(&["setr", "shared", "old"]).expect_ok();
    let old_shared =
        get_on(&cluster, victim, Space::Ring, "shared").expect("the victim is a replica");

    crash(&cluster, Target::Server(&victim_addr));
    let run = cluster.client_on(victim, &["--timeout-ms", "500", "get", "solo"]);
    run.expect_code(3);

    // It stops heartbeating, so the view leader expires it after the lease.
    cluster.wait_for_view(EXPIRY_TIMEOUT, "the crashed server is expired", |view| {
        if view.ids_at(&victim_addr).is_empty() && view.servers.len() == 2 && !view.rebalancing {
            Ok(())
        } else {
            Err("the crashed server is still listed, or the view is rebalancing".into())
        }
    });
    // Written while it was away: the victim's copy of "shared" is now stale.
    cluster.client(&["setr", "shared", "new"]).expect_ok();

    recover(&cluster, Target::Server(&victim_addr));
    let after = cluster.wait_for_view(
        EXPIRY_TIMEOUT,
        "the recovered server rejoined under a new id, settled",
        |view| match view.ids_at(&victim_addr).as_slice() {
            [id] if *id != old_id && view.servers.len() == 3 && !view.rebalancing => {
                Ok(view.clone())
            }
            _ => Err("not rejoined under a new id, or rebalancing".into()),
        },
    );
    assert!(!after.has_id(&old_id), "the old id came back: {after:?}");

    // The newer replicated write wins everywhere.
    let shared_owners = owners(&after, "shared");
    wait_for(
        EXPIRY_TIMEOUT,
        "every owner holds the reconciled keys",
        || {
            let mut seen = Vec::new();
            let mut versions = BTreeSet::new();
            for addr in &shared_owners {
                let held = get_on(&cluster, cluster.server_number(addr), Space::Ring, "shared");
                seen.push(format!("shared@{addr}={held:?}"));
                match held {
                    Some((value, version)) if value == "new" => {
                        versions.insert(version);
                    }
                    _ => return Err(seen.join(", ")),
                }
            }
            if versions.len() != 1 {
                return Err(seen.join(", "));
            }
            Ok(())
        },
    );
    let (_, new_version) =
        get_on(&cluster, victim, Space::Ring, "shared").expect("the victim holds shared");
    assert!(new_version > old_shared.1);
    // The single-server key is the victim's alone: it kept it through the crash and the rejoin,
    // and the rebalancing of the rejoin copied it nowhere, not even where the ring would place a
    // key of that name (issue 17: it used to be copied to those replicas as if it were a ring key).
    for number in 0..3 {
        let held = get_on(&cluster, number, Space::Local, "solo");
        if number == victim {
            assert_eq!(held.map(|(v, _)| v), Some("only-here".to_string()));
        } else {
            assert_eq!(
                held, None,
                "server {number} got a copy of another's single-server key"
            );
        }
        assert_eq!(
            get_on(&cluster, number, Space::Ring, "solo"),
            None,
            "server {number} holds the single-server key as a ring key"
        );
    }
    cluster.client(&["getr", "solo"]).expect_code(1);
    let run = cluster.client(&["getr", "shared"]);
    run.expect_ok();
    assert_eq!(run.stdout.trim_end(), "new");
}

// ---------------------------------------------------------------------------------------------
// 7. Simulated crash of the view leader (real processes)
// ---------------------------------------------------------------------------------------------

#[test]
fn crashed_view_leader_expires_nobody_when_it_recovers() {
    let cluster = TestCluster::start(3);
    let before = cluster.query_servers();
    crash(&cluster, Target::ViewLeader);

    let run = cluster.client(&["--timeout-ms", "500", "query_servers"]);
    run.expect_code(3);
    // The scenario's pause: down for longer than a lease.
    std::thread::sleep(cluster.lease() + Duration::from_millis(500));
    let run = cluster.client(&["--timeout-ms", "500", "query_servers"]);
    run.expect_code(3);

    recover(&cluster, Target::ViewLeader);
    // Its own stall must not expire anyone: the same ids stay for another lease and more.
    holds_for(
        cluster.lease() + Duration::from_millis(500),
        "every server keeps its id after the view leader's crash",
        || match cluster.try_query_servers() {
            Ok(view) if view.ids() == before.ids() => Ok(()),
            Ok(view) => Err(format!("{view:?} instead of {before:?}")),
            Err(run) => Err(format!("query_servers failed: {run:?}")),
        },
    );
    let now = cluster.query_servers();
    assert_eq!(now.ids(), before.ids());
    cluster
        .client(&["setr", "after-vl-crash", "works"])
        .expect_ok();
    let run = cluster.client(&["getr", "after-vl-crash"]);
    run.expect_ok();
    assert_eq!(run.stdout.trim_end(), "works");
}
