//! Issue 14 (durable storage): real-process tests of what a server's data dir keeps across a
//! `kill -9`, and of the starts it must refuse.
//!
//! Every process is a real `viewleader`, `server` or `client` binary started by the harness in
//! `tests/common` on `--port 0`, in a temp dir that is also the working directory of every
//! process, so server N keeps its data in `TestCluster::server_data_dir(N)`. A coordinator that
//! dies mid-write is played by the library (`Client::write_then_crash`), as in tests/restarts.rs.
//! No timing bound is asserted: every wait polls a condition against a generous deadline.
//!
//! What a `kill -9` proves and what it does not: the process dies at an arbitrary point, so
//! these tests hold the recovery of the data dir (replay, segments, snapshots, identity, locks,
//! the 2PC records) and the rule that a write is in the log before it is acknowledged. They do
//! not prove that the log is *synced* before the acknowledgement: the operating system keeps the
//! written pages of a killed process. The crash-model tests of the engine (a simulated disk that
//! drops unsynced writes) hold that.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::lib_client::{
    crash_coordinator, library_client, owners, runtime, wait_nothing_pending, UNBLOCK_TIMEOUT,
};
use common::reads::{classify, getr, with_quick_timeouts, Read};
use common::{run_client, wait_for, ClientRun, Slot, TestCluster, Timings, SLOT_WEIGHTS};
use ringleader::client::{Client, CrashPoint};
use ringleader::net::CLUSTER_DEFAULT;
use ringleader::types::Space;
use serde_json::{json, Value as Json};

/// Generous bound for a cluster to settle after a fault (expiry, rejoin, rebalancing).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a server whose start must be refused to exit.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);
/// Per-call timeout and rebalancing wait of the `client` runs made while a fault is in the air,
/// so that an error comes back quickly and the next try goes out.
const QUICK_MS: &str = "1000";

/// A scenario whose kills and races must not compete with another cluster for the CPU.
const ALONE: usize = SLOT_WEIGHTS;
/// A scenario that only kills, restarts and reads.
const SHARED: usize = 1;

// ---------------------------------------------------------------------------------------------
// Reading and writing through the CLI
// ---------------------------------------------------------------------------------------------

/// `client --viewleader VIEWLEADER --json ARGS` with short timeouts, by a client that knows only
/// the view leader (the writer threads have no `TestCluster`).
fn run_quick(viewleader: &str, args: &[&str]) -> ClientRun {
    let mut full = vec!["--viewleader", viewleader, "--json"]
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    full.extend(with_quick_timeouts(QUICK_MS, args));
    run_client(&full)
}

/// `client getr KEY` with short timeouts: for reads made while a fault may be in the air.
fn getr_quick(viewleader: &str, key: &str) -> (Read, ClientRun) {
    let run = run_quick(viewleader, &["getr", key]);
    (classify(&run), run)
}

/// The value `getr KEY` returns once the cluster answers (errors are retried, "not found"
/// fails the test: every key read this way was acknowledged).
#[track_caller]
fn getr_found(cluster: &TestCluster, key: &str) -> Json {
    let viewleader = cluster.viewleader_addr();
    wait_for(
        SETTLE_TIMEOUT,
        &format!("getr {key} answers"),
        || match getr_quick(&viewleader, key) {
            (Read::Found(value), _) => Ok(value),
            (Read::NotFound, run) => panic!("getr {key} said \"not found\": {run:?}"),
            (Read::Failed { .. }, run) => Err(format!("{run:?}")),
        },
    )
}

/// `client --json setr|append KEY VALUE` with short timeouts, by a writer that knows only the
/// view leader: whether it was acknowledged (exit 0). Any other exit is an outcome unknown to
/// the writer: the write may or may not have happened.
fn write_quick(viewleader: &str, command: &str, key: &str, value: &str) -> bool {
    let run = run_quick(viewleader, &[command, key, value]);
    if run.code == 0 {
        assert_eq!(
            run.json()["ok"],
            json!(true),
            "an acknowledged {command} printed no ok: {run:?}"
        );
    }
    run.code == 0
}

/// `client --server ADDR --json get [--ring] KEY` on server `number`: its value, or `None` when
/// not found; any other outcome fails the test.
#[track_caller]
fn get_on(cluster: &TestCluster, number: usize, space: Space, key: &str) -> Option<Json> {
    let run = match space {
        Space::Local => cluster.client_on(number, &["--json", "get", key]),
        Space::Ring => cluster.client_on(number, &["--json", "get", "--ring", key]),
    };
    match run.code {
        0 => Some(run.json()["value"].clone()),
        1 => None,
        _ => panic!("`get {key}` on server {number} failed: {run:?}"),
    }
}

/// `client --server ADDR --json query_all_keys [--ring]` on server `number`.
#[track_caller]
fn keys_on(cluster: &TestCluster, number: usize, space: Space) -> BTreeSet<String> {
    let run = match space {
        Space::Local => cluster.client_on(number, &["--json", "query_all_keys"]),
        Space::Ring => cluster.client_on(number, &["--json", "query_all_keys", "--ring"]),
    };
    run.expect_ok();
    run.json()["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("query_all_keys printed no keys list: {run:?}"))
        .iter()
        .map(|key| key.as_str().unwrap_or_default().to_string())
        .collect()
}

fn items_of(list: &Json) -> Vec<String> {
    list.as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|item| item.as_str().unwrap_or_default().to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The view, the ring, the library
// ---------------------------------------------------------------------------------------------

/// The member id the server at `addr` answers as, once it answers.
#[track_caller]
fn id_answering_at(rt: &tokio::runtime::Runtime, client: &Client, addr: &str) -> String {
    wait_for(
        SETTLE_TIMEOUT,
        &format!("the server at {addr} answers"),
        || {
            rt.block_on(client.status(addr))
                .map(|status| status.server_id)
                .map_err(|err| err.to_string())
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Data dirs
// ---------------------------------------------------------------------------------------------

/// The names of the files in `dir`.
fn files_in(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("list {}: {err}", dir.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// The `identity.json` of a data dir.
fn identity_in(dir: &Path) -> Json {
    let path = dir.join("identity.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|err| panic!("{} is not JSON: {err}", path.display()))
}

/// The byte offsets at which the records of a log segment start (after its 8-byte header;
/// each record is a 4-byte little-endian payload length, a 4-byte CRC, then the payload), and
/// the length of each payload. A cut-short tail is left out.
fn records_of(segment: &[u8]) -> Vec<(usize, usize)> {
    const HEADER: usize = 8;
    let mut records = Vec::new();
    let mut offset = HEADER;
    while offset + 8 <= segment.len() {
        let len = u32::from_le_bytes(segment[offset..offset + 4].try_into().expect("4 bytes"));
        let end = offset + 8 + len as usize;
        if end > segment.len() {
            break;
        }
        records.push((offset, len as usize));
        offset = end;
    }
    records
}

// ---------------------------------------------------------------------------------------------
// Shared by the scenarios
// ---------------------------------------------------------------------------------------------

/// When killed servers are restarted from their data dirs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Restarted {
    /// At once, within their lease: they come back under their ids.
    Promptly,
    /// Once the view dropped their ids: they are denied and rejoin under new ids, with their data.
    AfterExpiry,
}

/// Sets its flag when dropped: background writers stop when the test ends, also by a panic.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Acknowledged writes survive kill -9 of every server under load
// ---------------------------------------------------------------------------------------------

/// Servers of the load scenario.
const LOAD_SERVERS: usize = 4;
/// Writer threads, each with keys and a list of its own (so each key's writes are in order).
const LOAD_WRITERS: usize = 4;
/// Text keys per writer.
const LOAD_KEYS_PER_WRITER: usize = 3;
/// Rounds of load, kill -9 of every server, restart and check: when the servers come back.
const LOAD_ROUNDS: [Restarted; 4] = [
    Restarted::Promptly,
    Restarted::AfterExpiry,
    Restarted::Promptly,
    Restarted::AfterExpiry,
];
/// Acknowledged writes a round waits for before it kills the servers (so they die mid-load).
const LOAD_ACKS_BEFORE_KILL: usize = 10 * LOAD_WRITERS;

/// One write a writer tried, in the order it tried them.
#[derive(Clone, Debug)]
struct Attempt {
    key: String,
    value: String,
    acked: bool,
}

/// Writer `writer`'s keys: its text keys, then its list.
fn writer_keys(writer: usize) -> (Vec<String>, String) {
    let texts = (0..LOAD_KEYS_PER_WRITER)
        .map(|k| format!("load-w{writer}-k{k}"))
        .collect();
    (texts, format!("load-w{writer}-list"))
}

/// Writes until `stop` is set, one write at a time: `setr` on its text keys in turn, every
/// third write an `append` to its list, each with a value no other write uses. Counts the
/// acknowledged ones in `acks`.
fn run_writer(
    viewleader: String,
    writer: usize,
    round: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> (Vec<Attempt>, Vec<Attempt>) {
    let (texts, list) = writer_keys(writer);
    let mut sets = Vec::new();
    let mut appends = Vec::new();
    let mut n = 0;
    while !stop.load(Ordering::Acquire) {
        let value = format!("w{writer}-r{round}-{n}");
        if n % 3 == 2 {
            let acked = write_quick(&viewleader, "append", &list, &value);
            appends.push(Attempt {
                key: list.clone(),
                value,
                acked,
            });
            if acked {
                acks.fetch_add(1, Ordering::AcqRel);
            }
        } else {
            let key = texts[n % texts.len()].clone();
            let acked = write_quick(&viewleader, "setr", &key, &value);
            sets.push(Attempt { key, value, acked });
            if acked {
                acks.fetch_add(1, Ordering::AcqRel);
            }
        }
        n += 1;
    }
    (sets, appends)
}

/// What the checks have learnt so far about one key: every write tried on it, in order, and the
/// latest of them a read has shown (a later read may show it or a later one, never an earlier).
#[derive(Default)]
struct TextHistory {
    attempts: Vec<Attempt>,
    seen: Option<usize>,
}

impl TextHistory {
    /// The first write a read may show: the last acknowledged one, or a later one already seen.
    fn floor(&self) -> Option<usize> {
        let acked = self.attempts.iter().rposition(|a| a.acked);
        acked.max(self.seen)
    }

    /// Checks what `getr` said of the key against its writes, and remembers it.
    fn check(&mut self, read: Read) -> Result<(), String> {
        let floor = self.floor();
        match (read, floor) {
            (Read::Found(value), _) => {
                let Some(at) = self.attempts.iter().position(|a| json!(a.value) == value) else {
                    return Err(format!("a value nobody wrote: {value}"));
                };
                if let Some(floor) = floor.filter(|floor| at < *floor) {
                    return Err(format!(
                        "{value} is older than the acknowledged or already read {:?} (writes in \
                         order: {:?})",
                        self.attempts[floor], self.attempts
                    ));
                }
                self.seen = Some(at);
                Ok(())
            }
            (Read::NotFound, None) => Ok(()),
            (Read::NotFound, Some(floor)) => Err(format!(
                "\"not found\" after the acknowledged or already read write {:?}",
                self.attempts[floor]
            )),
            (Read::Failed { .. }, _) => Err("getr failed".to_string()),
        }
    }
}

/// Every item appended to one list, and the items reads have shown (which must stay).
#[derive(Default)]
struct ListHistory {
    attempts: Vec<Attempt>,
    seen: BTreeSet<String>,
}

impl ListHistory {
    /// Checks what `getr` said of the list against its appends, and remembers it.
    fn check(&mut self, read: Read) -> Result<(), String> {
        let items = match read {
            Read::Found(value) => items_of(&value),
            Read::NotFound => Vec::new(),
            Read::Failed { .. } => return Err("getr failed".to_string()),
        };
        let count = |item: &str| items.iter().filter(|i| *i == item).count();
        for attempt in &self.attempts {
            let n = count(&attempt.value);
            if attempt.acked && n != 1 {
                return Err(format!(
                    "the acknowledged append {:?} appears {n} times, not once: {items:?}",
                    attempt.value
                ));
            }
            if n > 1 {
                return Err(format!(
                    "the unacknowledged append {:?} appears {n} times: {items:?}",
                    attempt.value
                ));
            }
        }
        if let Some(item) = items
            .iter()
            .find(|item| !self.attempts.iter().any(|a| a.value == **item))
        {
            return Err(format!("an item nobody appended: {item:?} in {items:?}"));
        }
        if let Some(item) = self.seen.iter().find(|item| !items.contains(item)) {
            return Err(format!(
                "{item:?}, shown by an earlier read, is gone: {items:?}"
            ));
        }
        // Each acknowledged append finished before the next began: they keep that order.
        let acked = |item: &String| self.attempts.iter().any(|a| a.acked && a.value == *item);
        let listed: Vec<&String> = items.iter().filter(|item| acked(item)).collect();
        let issued: Vec<&String> = self
            .attempts
            .iter()
            .filter(|a| a.acked)
            .map(|a| &a.value)
            .collect();
        if listed != issued {
            return Err(format!(
                "the acknowledged appends are out of order: {items:?}"
            ));
        }
        self.seen.extend(items);
        Ok(())
    }
}

/// Each live server's own copy of `key` (`client --server ADDR get`), for a failure message.
fn copies_of(cluster: &TestCluster, key: &str) -> String {
    (0..cluster.server_count())
        .filter(|&number| cluster.server_running(number))
        .map(|number| {
            let run = cluster.client_on(number, &["--json", "get", "--ring", key]);
            format!(
                "server {number} ({}): {} {}",
                cluster.server_addr(number),
                run.stdout.trim(),
                run.stderr.trim()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Panics with what `check` found wrong about `key`, the read, and each server's copy.
#[track_caller]
fn expect_consistent(
    cluster: &TestCluster,
    key: &str,
    round: usize,
    run: &ClientRun,
    checked: Result<(), String>,
) {
    if let Err(wrong) = checked {
        panic!(
            "round {round}: getr {key}: {wrong}\nthe read: {run:?}\neach server's copy:\n{}\n\
             view: {:?}",
            copies_of(cluster, key),
            cluster.try_query_servers()
        );
    }
}

/// What one run of the load scenario saw of the servers' logs.
struct LoadReport {
    /// Restarts (a server's start-up line) that loaded a snapshot.
    snapshot_recoveries: usize,
    /// Whether some data dir holds a segment that reached `--segment-bytes-max` (and so rolled).
    segment_rolled: bool,
}

/// Four servers started with `log_flags`, four writer threads running `client setr` and
/// `client append` with unique values, in rounds ([`LOAD_ROUNDS`]): the load runs, every server
/// is killed -9 mid-load and restarted from its data dir (at once, or once the view dropped
/// them all), the cluster settles and takes writes again, the writers stop, and `getr` checks
/// every key: every acknowledged `setr` reads back (its value or a later write to the key,
/// never an earlier one or one an earlier read moved past), every acknowledged append appears
/// exactly once and in order, an unacknowledged one at most once, and nothing appears that
/// nobody wrote.
fn kill_every_server_during_a_write_load(log_flags: &[&str], segment_bytes_max: u64) -> LoadReport {
    let started = Instant::now();
    let mut cluster =
        TestCluster::start_with_server_args(Timings::default(), LOAD_SERVERS, log_flags);
    let viewleader = cluster.viewleader_addr();
    let mut texts: BTreeMap<String, TextHistory> = BTreeMap::new();
    let mut lists: BTreeMap<String, ListHistory> = BTreeMap::new();
    let mut snapshot_recoveries = 0;

    for (round, restarted) in LOAD_ROUNDS.into_iter().enumerate() {
        let ids_before = cluster.wait_settled().ids();
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(AtomicUsize::new(0));
        let writers: Vec<_> = (0..LOAD_WRITERS)
            .map(|writer| {
                let (viewleader, stop, acks) = (viewleader.clone(), stop.clone(), acks.clone());
                std::thread::spawn(move || run_writer(viewleader, writer, round, stop, acks))
            })
            .collect();
        let _stop_on_panic = StopOnDrop(stop.clone());

        wait_for(
            SETTLE_TIMEOUT,
            "the writers' load is running",
            || match acks.load(Ordering::Acquire) {
                acked if acked >= LOAD_ACKS_BEFORE_KILL => Ok(()),
                acked => Err(format!("{acked} writes acknowledged")),
            },
        );
        let acked_before_kill = acks.load(Ordering::Acquire);
        for number in 0..LOAD_SERVERS {
            cluster.kill_server(number);
        }
        if restarted == Restarted::AfterExpiry {
            cluster.wait_for_view(
                SETTLE_TIMEOUT,
                "the view dropped every server",
                |view| match view.servers.iter().find(|m| ids_before.contains(&m.id)) {
                    Some(member) => Err(format!("{member:?} is still listed")),
                    None => Ok(()),
                },
            );
        }
        for number in 0..LOAD_SERVERS {
            cluster.restart_server(number);
        }
        cluster.wait_settled();
        let acked_at_restart = acks.load(Ordering::Acquire);
        wait_for(
            SETTLE_TIMEOUT,
            "the load goes on after the restart",
            || match acks.load(Ordering::Acquire) - acked_at_restart {
                since if since >= LOAD_WRITERS => Ok(()),
                since => Err(format!("{since} writes acknowledged since")),
            },
        );
        stop.store(true, Ordering::Release);
        for (writer, handle) in writers.into_iter().enumerate() {
            let (sets, appends) = handle
                .join()
                .unwrap_or_else(|_| panic!("writer {writer} panicked"));
            for attempt in sets {
                let history = texts.entry(attempt.key.clone()).or_default();
                history.attempts.push(attempt);
            }
            for attempt in appends {
                let history = lists.entry(attempt.key.clone()).or_default();
                history.attempts.push(attempt);
            }
        }
        snapshot_recoveries += (0..LOAD_SERVERS)
            .filter(|&number| {
                let stderr = cluster.server_stderr(number);
                stderr.contains("recovered") && stderr.contains("snapshot=\"snap-")
            })
            .count();

        cluster.wait_settled();
        for (key, history) in texts.iter_mut() {
            let (read, run) = getr(&cluster, key);
            expect_consistent(&cluster, key, round, &run, history.check(read));
        }
        for (list, history) in lists.iter_mut() {
            let (read, run) = getr(&cluster, list);
            expect_consistent(&cluster, list, round, &run, history.check(read));
        }
        let all = texts
            .values()
            .flat_map(|h| &h.attempts)
            .chain(lists.values().flat_map(|h| &h.attempts));
        let (tried, acked) = all.fold((0, 0), |(t, a), attempt| {
            (t + 1, a + usize::from(attempt.acked))
        });
        eprintln!(
            "round {round} (restarted {restarted:?}): {acked_before_kill} writes acknowledged \
             before the kill; so far {tried} tried, {acked} acknowledged, all checked ({} ms)",
            started.elapsed().as_millis()
        );
    }
    let segment_rolled = (0..LOAD_SERVERS).any(|number| {
        let dir = cluster.server_data_dir(number);
        files_in(&dir).iter().any(|name| {
            name.starts_with("wal-")
                && std::fs::metadata(dir.join(name)).is_ok_and(|m| m.len() >= segment_bytes_max)
        })
    });
    LoadReport {
        snapshot_recoveries,
        segment_rolled,
    }
}

/// Small segments, so the load's records cross many segment rolls; compactions at their default
/// threshold (64 MiB), far above what the load writes. See
/// [`kill_every_server_during_a_write_load`].
#[test]
fn every_acknowledged_write_survives_kill_9_of_every_server_across_segment_rolls() {
    let _slot = Slot::acquire(ALONE);
    let report = kill_every_server_during_a_write_load(&["--segment-bytes-max", "2048"], 2048);
    assert!(
        report.segment_rolled,
        "no segment reached --segment-bytes-max: the load never rolled a segment"
    );
    assert_eq!(
        report.snapshot_recoveries, 0,
        "a restart loaded a snapshot, although compaction was meant to stay off here"
    );
}

/// Small segments and a low compaction threshold, so the load crosses segment rolls and
/// snapshots (at least one restart must load a snapshot). See
/// [`kill_every_server_during_a_write_load`].
#[test]
fn every_acknowledged_write_survives_kill_9_of_every_server_during_a_write_load() {
    let _slot = Slot::acquire(ALONE);
    let report = kill_every_server_during_a_write_load(
        &["--segment-bytes-max", "2048", "--compact-bytes-min", "8192"],
        2048,
    );
    assert!(
        report.snapshot_recoveries > 0,
        "no restart recovered from a snapshot: the load never crossed a compaction, so the \
         test proves less than it says (lower --compact-bytes-min)"
    );
}

/// A single server whose log takes a snapshot at its first write (`--compact-bytes-min 1`):
/// a `set` is acknowledged, the server is killed -9 and restarted from its data dir, and `get`
/// must still find the key. The smallest reproduction of a defect this file found: the snapshot
/// was taken before the write that triggered it was applied, and the write's segment deleted.
#[test]
fn a_write_that_triggers_a_compaction_survives_kill_9() {
    let _slot = Slot::acquire(SHARED);
    let mut cluster =
        TestCluster::start_with_server_args(Timings::default(), 1, &["--compact-bytes-min", "1"]);
    cluster
        .client_on(0, &["set", "compacted", "kept"])
        .expect_ok();
    assert_eq!(
        get_on(&cluster, 0, Space::Local, "compacted"),
        Some(json!("kept"))
    );
    cluster.kill_server(0);
    cluster.restart_server(0);
    let files = files_in(&cluster.server_data_dir(0));
    assert_eq!(
        get_on(&cluster, 0, Space::Local, "compacted"),
        Some(json!("kept")),
        "the acknowledged set is gone after kill -9 and restart; the data dir holds {files:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Two replicas of a key killed mid-commit
// ---------------------------------------------------------------------------------------------

/// Servers of the mid-commit scenario: a key has three replicas, and one more server.
const MID_COMMIT_SERVERS: usize = 4;

/// Where the write of the key is when two of its replicas are killed.
#[derive(Clone, Copy, Debug)]
enum KilledDuring {
    /// A background `client setr` loop is running: the kills land wherever they catch it.
    SetrLoop,
    /// A coordinator stopped right after the primary committed: the other replicas hold only
    /// their (durable) yes votes.
    AfterFirstCommit,
    /// A coordinator stopped after every replica voted yes: nobody heard the decision.
    AfterAllPrepares,
}

/// The rounds of the mid-commit scenario, in order.
const MID_COMMIT_ROUNDS: [(KilledDuring, Restarted); 4] = [
    (KilledDuring::SetrLoop, Restarted::Promptly),
    (KilledDuring::SetrLoop, Restarted::AfterExpiry),
    (KilledDuring::AfterFirstCommit, Restarted::Promptly),
    (KilledDuring::AfterAllPrepares, Restarted::AfterExpiry),
];

/// `setr` of `key` until `stop`, one at a time, each with a value of its own; counts the
/// acknowledged ones in `acks`.
fn run_key_writer(
    viewleader: String,
    key: String,
    round: usize,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicUsize>,
) -> Vec<Attempt> {
    let mut attempts = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let value = format!("r{round}-{}", attempts.len());
        let acked = write_quick(&viewleader, "setr", &key, &value);
        if acked {
            acks.fetch_add(1, Ordering::AcqRel);
        }
        attempts.push(Attempt {
            key: key.clone(),
            value,
            acked,
        });
    }
    attempts
}

/// Kill -9 the primary and the second replica of a key while a write of it is under way, and
/// restart both from their data dirs, in four rounds ([`MID_COMMIT_ROUNDS`]): the kills land
/// wherever a background `client setr` loop happens to be, or exactly after a coordinator's
/// primary committed, or after every replica voted yes; the replicas come back at once (same
/// ids) or after the view dropped them (new ids, same data). Each time, once `getr` answers it
/// shows the last acknowledged value or a later write (never an older one, never "not found");
/// a later `setr` is acknowledged within a bound; and no server keeps a pending transaction.
#[test]
fn a_key_resolves_and_keeps_its_acknowledged_value_when_two_replicas_are_killed_mid_commit() {
    let _slot = Slot::acquire(ALONE);
    let timings = Timings {
        tx_timeout_ms: Some(1_500),
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(timings, MID_COMMIT_SERVERS);
    let rt = runtime();
    let client = library_client(&rt, &cluster);
    let viewleader = cluster.viewleader_addr();
    let key = "mid-commit";
    cluster.client(&["setr", key, "base"]).expect_ok();
    let mut history = TextHistory {
        attempts: vec![Attempt {
            key: key.to_string(),
            value: "base".to_string(),
            acked: true,
        }],
        seen: None,
    };

    for (round, (during, restarted)) in MID_COMMIT_ROUNDS.into_iter().enumerate() {
        let view = cluster.wait_settled();
        let replicas = owners(&view, key);
        assert_eq!(replicas.len(), 3, "three replicas of {key} in {view:?}");
        let victims: Vec<usize> = replicas[..2]
            .iter()
            .map(|addr| cluster.server_number(addr))
            .collect();
        let victim_ids: Vec<String> = replicas[..2]
            .iter()
            .map(|addr| view.id_at(addr).expect("a replica is in the view"))
            .collect();
        let restart = |cluster: &mut TestCluster| {
            if restarted == Restarted::AfterExpiry {
                cluster.wait_for_view(SETTLE_TIMEOUT, "the view dropped both victims", |view| {
                    match victim_ids.iter().find(|id| view.has_id(id)) {
                        Some(id) => Err(format!("{id} is still listed")),
                        None => Ok(()),
                    }
                });
            }
            for &victim in &victims {
                cluster.restart_server(victim);
            }
        };
        let tried_before = history.attempts.len();
        let crash_at = match during {
            KilledDuring::SetrLoop => None,
            KilledDuring::AfterFirstCommit => Some(CrashPoint::AfterFirstCommit),
            KilledDuring::AfterAllPrepares => Some(CrashPoint::AfterAllPrepares),
        };
        if let Some(crash_at) = crash_at {
            let value = format!("crashed-r{round}");
            crash_coordinator(&rt, &client, key, &value, crash_at);
            history.attempts.push(Attempt {
                key: key.to_string(),
                value,
                acked: false,
            });
            for &victim in &victims {
                cluster.kill_server(victim);
            }
            restart(&mut cluster);
        } else {
            let stop = Arc::new(AtomicBool::new(false));
            let acks = Arc::new(AtomicUsize::new(0));
            let _stop_on_panic = StopOnDrop(stop.clone());
            let writer = {
                let (viewleader, key, stop, acks) = (
                    viewleader.clone(),
                    key.to_string(),
                    stop.clone(),
                    acks.clone(),
                );
                std::thread::spawn(move || run_key_writer(viewleader, key, round, stop, acks))
            };
            wait_for(
                SETTLE_TIMEOUT,
                "the background setr loop is writing",
                || match acks.load(Ordering::Acquire) {
                    acked if acked >= 2 => Ok(()),
                    acked => Err(format!("{acked} acknowledged")),
                },
            );
            for &victim in &victims {
                cluster.kill_server(victim);
            }
            // The setr in flight when the kills landed is the writer's last.
            stop.store(true, Ordering::Release);
            restart(&mut cluster);
            history
                .attempts
                .extend(writer.join().expect("the background writer"));
        }
        eprintln!(
            "round {round} ({during:?}, restarted {restarted:?}): killed servers {victims:?} \
             after {:?}",
            &history.attempts[tried_before..]
        );

        let (read, run) =
            wait_for(
                UNBLOCK_TIMEOUT,
                &format!("getr {key} answers"),
                || match getr_quick(&viewleader, key) {
                    (Read::Failed { .. }, run) => Err(format!("{run:?}")),
                    answered => Ok(answered),
                },
            );
        expect_consistent(&cluster, key, round, &run, history.check(read));

        let mut tries = 0;
        wait_for(
            UNBLOCK_TIMEOUT,
            &format!("a later setr of {key} is acknowledged"),
            || {
                tries += 1;
                let value = format!("after-r{round}-{tries}");
                let acked = write_quick(&viewleader, "setr", key, &value);
                history.attempts.push(Attempt {
                    key: key.to_string(),
                    value: value.clone(),
                    acked,
                });
                if acked {
                    Ok(())
                } else {
                    Err(format!("setr {key} {value} not acknowledged"))
                }
            },
        );
        cluster.wait_settled();
        let (read, run) = getr(&cluster, key);
        expect_consistent(&cluster, key, round, &run, history.check(read));
        wait_nothing_pending(&rt, &client, &cluster);
    }
}

// ---------------------------------------------------------------------------------------------
// 3-4. One server restarted, within its lease and after it
// ---------------------------------------------------------------------------------------------

/// The server that is killed and restarted in the single-server scenarios.
const TARGET: usize = 1;

/// Replicated keys (`setr`) and keys only server [`TARGET`] holds (`set`), each key's value
/// being `KEY-value`.
fn write_replicated_and_solo_keys(
    cluster: &TestCluster,
    prefix: &str,
) -> (Vec<String>, Vec<String>) {
    let replicated: Vec<String> = (0..6).map(|i| format!("{prefix}-{i}")).collect();
    for key in &replicated {
        cluster
            .client(&["setr", key, &format!("{key}-value")])
            .expect_ok();
    }
    let solo: Vec<String> = (0..3).map(|i| format!("{prefix}-solo-{i}")).collect();
    for key in &solo {
        cluster
            .client_on(TARGET, &["set", key, &format!("{key}-value")])
            .expect_ok();
    }
    (replicated, solo)
}

fn value_of(key: &str) -> Json {
    json!(format!("{key}-value"))
}

/// Kill -9 one of three servers and restart it from its data dir at once, well within a 3 s
/// lease: it answers as the same member id, the view still lists that id at its address with
/// no view change, and the keys only it held (single-server `set`) and the replicated keys are
/// all there (`get`, `query_all_keys`), and it takes part in new writes under its old id.
#[test]
fn a_server_restarted_within_its_lease_comes_back_under_the_same_id_with_its_keys() {
    let _slot = Slot::acquire(SHARED);
    let timings = Timings {
        lease_ms: 3_000,
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(timings, 3);
    let rt = runtime();
    let client = library_client(&rt, &cluster);
    let (replicated, solo) = write_replicated_and_solo_keys(&cluster, "within");
    let before = cluster.wait_settled();
    let addr = cluster.server_addr(TARGET);
    let id = before.id_at(&addr).expect("the target is in the view");

    cluster.kill_server(TARGET);
    cluster.restart_server(TARGET);
    assert_eq!(
        id_answering_at(&rt, &client, &addr),
        id,
        "the server restarted within its lease answers under another id"
    );
    let after = cluster.wait_settled();
    assert_eq!(
        after.id_at(&addr),
        Some(id.clone()),
        "the view lists another id at {addr}: {before:?} then {after:?}"
    );
    assert_eq!(
        after.epoch, before.epoch,
        "the view changed although the server came back within its lease: {before:?} then \
         {after:?}"
    );
    assert_eq!(
        identity_in(&cluster.server_data_dir(TARGET))["server_id"],
        json!(id),
        "identity.json names another id"
    );

    for key in &solo {
        assert_eq!(
            get_on(&cluster, TARGET, Space::Local, key),
            Some(value_of(key)),
            "`get {key}` on the restarted server (a key only it held)"
        );
    }
    let held = keys_on(&cluster, TARGET, Space::Ring);
    for key in &replicated {
        assert!(
            held.contains(key),
            "query_all_keys --ring on the restarted server misses {key}: {held:?}"
        );
    }
    let held = keys_on(&cluster, TARGET, Space::Local);
    for key in &solo {
        assert!(
            held.contains(key),
            "query_all_keys on the restarted server misses {key}: {held:?}"
        );
    }
    for key in &replicated {
        assert_eq!(getr_found(&cluster, key), value_of(key), "getr {key}");
    }
    // With three servers every server is a replica of every key: this write goes through it.
    let write = cluster.client(&["--json", "setr", &replicated[0], "again"]);
    write.expect_ok();
    assert!(
        write.json()["replicas"]
            .as_array()
            .is_some_and(|replicas| replicas.contains(&json!(addr))),
        "the write did not go through the restarted server: {write:?}"
    );
    assert_eq!(
        get_on(&cluster, TARGET, Space::Ring, &replicated[0]),
        Some(json!("again"))
    );
}

/// Kill -9 one of three servers and restart it from its data dir only after the view dropped
/// its id: it is denied, rejoins under a new id (recorded in identity.json with the old one
/// among its former ids), still holds the keys only it held (single-server `set`, read with
/// `get`), and every replicated key reads back with `getr`.
#[test]
fn a_server_restarted_after_its_lease_rejoins_under_a_new_id_and_keeps_its_data() {
    let _slot = Slot::acquire(SHARED);
    let mut cluster = TestCluster::start(3);
    let rt = runtime();
    let client = library_client(&rt, &cluster);
    let (replicated, solo) = write_replicated_and_solo_keys(&cluster, "after");
    let before = cluster.wait_settled();
    let addr = cluster.server_addr(TARGET);
    let id = before.id_at(&addr).expect("the target is in the view");

    cluster.kill_server(TARGET);
    cluster.wait_for_view(
        SETTLE_TIMEOUT,
        "the view dropped the killed server",
        |view| {
            if view.has_id(&id) {
                Err(format!("{id} is still listed"))
            } else {
                Ok(())
            }
        },
    );
    cluster.restart_server(TARGET);
    let fresh = cluster.wait_for_view(
        SETTLE_TIMEOUT,
        "the restarted server is in the view under a new id, settled",
        |view| match view.id_at(&addr) {
            Some(fresh) if fresh != id && view.servers.len() == 3 && !view.rebalancing => Ok(fresh),
            other => Err(format!("at {addr}: {other:?}")),
        },
    );
    assert_eq!(
        id_answering_at(&rt, &client, &addr),
        fresh,
        "the server answers under another id than the view lists"
    );
    let identity = identity_in(&cluster.server_data_dir(TARGET));
    assert_eq!(identity["server_id"], json!(fresh), "{identity}");
    assert!(
        identity["former_ids"]
            .as_array()
            .is_some_and(|former| former.contains(&json!(id))),
        "identity.json does not remember the expired id {id}: {identity}"
    );

    for key in &solo {
        assert_eq!(
            get_on(&cluster, TARGET, Space::Local, key),
            Some(value_of(key)),
            "`get {key}` on the rejoined server (a key only it held)"
        );
    }
    for key in &replicated {
        assert_eq!(getr_found(&cluster, key), value_of(key), "getr {key}");
    }
}

// ---------------------------------------------------------------------------------------------
// 5. Every server at once
// ---------------------------------------------------------------------------------------------

/// Write keys and lists on four servers, kill -9 all four, restart them all from their data
/// dirs: once settled, `getr` finds every key with its value and every list whole (in memory,
/// every key was lost).
#[test]
fn every_server_restarted_at_once_keeps_every_key() {
    let _slot = Slot::acquire(SHARED);
    let servers = 4;
    let mut cluster = TestCluster::start(servers);
    let keys: Vec<String> = (0..24).map(|i| format!("all-{i:02}")).collect();
    for key in &keys {
        cluster
            .client(&["setr", key, &format!("{key}-value")])
            .expect_ok();
    }
    let lists: Vec<String> = (0..3).map(|i| format!("all-list-{i}")).collect();
    for list in &lists {
        for item in ["a", "b", "c"] {
            cluster.client(&["append", list, item]).expect_ok();
        }
    }
    cluster.wait_settled();

    for number in 0..servers {
        cluster.kill_server(number);
    }
    for number in 0..servers {
        cluster.restart_server(number);
    }
    cluster.wait_settled();

    for key in &keys {
        assert_eq!(getr_found(&cluster, key), value_of(key), "getr {key}");
    }
    for list in &lists {
        assert_eq!(
            getr_found(&cluster, list),
            json!(["a", "b", "c"]),
            "getr {list}"
        );
    }
    cluster.client(&["setr", &keys[0], "again"]).expect_ok();
    assert_eq!(getr_found(&cluster, &keys[0]), json!("again"));
}

// ---------------------------------------------------------------------------------------------
// 6-8. Starts that are refused
// ---------------------------------------------------------------------------------------------

/// Start a second `server` by hand on the data dir of a running one: it exits non-zero saying
/// the dir is locked by another process, and changes nothing: the running server keeps its
/// files, its identity, its keys and its place in the view.
#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let _slot = Slot::acquire(SHARED);
    let cluster = TestCluster::start(1);
    cluster.client_on(0, &["set", "held", "mine"]).expect_ok();
    let before = cluster.wait_settled();
    let dir = cluster.server_data_dir(0);
    let files_before = files_in(&dir);
    let identity_before = identity_in(&dir);

    let dir_arg = dir.display().to_string();
    let run = cluster
        .run_server_to_exit(&["--data-dir", &dir_arg], REFUSAL_TIMEOUT)
        .unwrap_or_else(|running| panic!("a second server on a data dir in use ran: {running}"));
    assert_ne!(run.code, 0, "the second server exited 0: {run:?}");
    assert!(
        run.stderr.contains("locked by another process") && run.stderr.contains(&dir_arg),
        "the refusal must name the data dir and say it is locked by another process: {run:?}"
    );

    assert_eq!(
        files_in(&dir),
        files_before,
        "the refused server changed the data dir"
    );
    assert_eq!(
        identity_in(&dir),
        identity_before,
        "the refused server changed identity.json"
    );
    assert_eq!(
        get_on(&cluster, 0, Space::Local, "held"),
        Some(json!("mine"))
    );
    let after = cluster.wait_settled();
    assert_eq!(
        after.servers, before.servers,
        "the view changed: {before:?} then {after:?}"
    );
}

/// Start a server on a data dir whose identity.json names cluster "other": it exits non-zero
/// with a message naming both clusters and how to fix it (another `--data-dir`), and neither
/// joins nor writes a log there.
#[test]
fn a_data_dir_of_another_cluster_is_refused() {
    let _slot = Slot::acquire(SHARED);
    let cluster = TestCluster::start(1);
    let before = cluster.wait_settled();
    let dir = cluster.dir().join("from-another-cluster");
    std::fs::create_dir_all(&dir).expect("create the foreign data dir");
    let identity = r#"{"format":1,"cluster":"other","server_id":"x","former_ids":[]}"#;
    std::fs::write(dir.join("identity.json"), identity).expect("write identity.json");

    let dir_arg = dir.display().to_string();
    let run = cluster
        .run_server_to_exit(&["--data-dir", &dir_arg], REFUSAL_TIMEOUT)
        .unwrap_or_else(|running| panic!("a server on another cluster's data dir ran: {running}"));
    assert_ne!(run.code, 0, "the server exited 0: {run:?}");
    let ours = format!("{CLUSTER_DEFAULT:?}");
    for needle in [dir_arg.as_str(), "\"other\"", ours.as_str(), "--data-dir"] {
        assert!(
            run.stderr.contains(needle),
            "the refusal must name the data dir, both clusters and the fix; no {needle:?} in \
             {run:?}"
        );
    }

    assert_eq!(
        std::fs::read_to_string(dir.join("identity.json")).expect("identity.json"),
        identity,
        "the refused server rewrote identity.json"
    );
    let logs: Vec<String> = files_in(&dir)
        .into_iter()
        .filter(|name| name.starts_with("wal-") || name.starts_with("snap-"))
        .collect();
    assert!(logs.is_empty(), "the refused server wrote a log: {logs:?}");
    let after = cluster.wait_settled();
    assert_eq!(
        after.servers, before.servers,
        "the view changed: {before:?} then {after:?}"
    );
}

/// Kill -9 a server and flip one byte inside a record in the middle of one of its log
/// segments (a record with valid ones after it: corruption, not a torn tail). The restart is
/// refused: non-zero exit, stderr names the segment and the byte offset of the damaged record
/// and says to move the data dir away, and the segment is left as it was. After moving the data
/// dir away the server starts, rejoins under a new id, the other replicas refill it, and `getr`
/// finds every key.
#[test]
fn a_damaged_data_dir_is_refused_with_where_and_how_to_recover() {
    let _slot = Slot::acquire(SHARED);
    let mut cluster = TestCluster::start(3);
    let keys: Vec<String> = (0..10).map(|i| format!("damaged-{i}")).collect();
    for key in &keys {
        cluster
            .client(&["setr", key, &format!("{key}-value")])
            .expect_ok();
    }
    let before = cluster.wait_settled();
    let target = 0;
    let addr = cluster.server_addr(target);
    let id = before.id_at(&addr).expect("the target is in the view");
    cluster.kill_server(target);

    let dir = cluster.server_data_dir(target);
    let (segment, mut bytes, records) = files_in(&dir)
        .into_iter()
        .filter(|name| name.starts_with("wal-") && name.ends_with(".log"))
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).expect("read a segment");
            let records = records_of(&bytes);
            (name, bytes, records)
        })
        .max_by_key(|(_, _, records)| records.len())
        .expect("the server wrote a log segment");
    assert!(
        records.len() >= 3,
        "{segment} holds only {} records",
        records.len()
    );
    let (offset, len) = records[records.len() / 2];
    bytes[offset + 8 + len / 2] ^= 0xff;
    std::fs::write(dir.join(&segment), &bytes).expect("write the damaged segment");
    eprintln!(
        "flipped a byte of record {} of {} in {segment} (record at byte {offset})",
        records.len() / 2,
        records.len()
    );

    let run = cluster
        .restart_server_to_exit(target, REFUSAL_TIMEOUT)
        .unwrap_or_else(|running| panic!("the server started on a damaged data dir: {running}"));
    assert_ne!(
        run.code, 0,
        "the server exited 0 on a damaged data dir: {run:?}"
    );
    for needle in [
        segment.as_str(),
        &format!("at byte {offset}"),
        "move the data dir away",
    ] {
        assert!(
            run.stderr.contains(needle),
            "the refusal must name the file, the offset and how to recover; no {needle:?} in \
             {run:?}"
        );
    }
    assert_eq!(
        std::fs::read(dir.join(&segment)).expect("read the damaged segment"),
        bytes,
        "the refused start changed the damaged segment"
    );

    let moved: PathBuf = dir.with_extension("damaged");
    std::fs::rename(&dir, &moved).expect("move the damaged data dir away");
    cluster.restart_server(target);
    cluster.wait_for_view(
        SETTLE_TIMEOUT,
        "the server with a fresh data dir rejoins under a new id, settled",
        |view| match view.id_at(&addr) {
            Some(fresh) if fresh != id && view.servers.len() == 3 && !view.rebalancing => Ok(()),
            other => Err(format!("at {addr}: {other:?}")),
        },
    );
    for key in &keys {
        assert_eq!(getr_found(&cluster, key), value_of(key), "getr {key}");
    }
    wait_for(
        SETTLE_TIMEOUT,
        "the replicas refill the rejoined server",
        || {
            let held = keys_on(&cluster, target, Space::Ring);
            let missing: Vec<&String> = keys.iter().filter(|k| !held.contains(*k)).collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("missing {missing:?}"))
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 9. --in-memory
// ---------------------------------------------------------------------------------------------

/// With `--in-memory`, no data dir is created, and a server restarted at its port holds
/// nothing: the keys only it held are gone for good, it joins under a new id once the old one
/// expired, and the replicated keys come back from the other replicas.
#[test]
fn in_memory_servers_keep_todays_behaviour() {
    let _slot = Slot::acquire(SHARED);
    let timings = Timings {
        lease_ms: 3_000,
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with_server_args(timings, 3, &["--in-memory"]);
    let (replicated, solo) = write_replicated_and_solo_keys(&cluster, "memory");
    let before = cluster.wait_settled();
    let addr = cluster.server_addr(TARGET);
    let id = before.id_at(&addr).expect("the target is in the view");
    let data_root = cluster.dir().join("ringleader-data");
    assert!(
        !data_root.exists(),
        "in-memory servers created {}",
        data_root.display()
    );

    cluster.kill_server(TARGET);
    cluster.restart_server(TARGET);
    let mut held = keys_on(&cluster, TARGET, Space::Ring);
    held.extend(keys_on(&cluster, TARGET, Space::Local));
    let old_id_still_listed = cluster.query_servers().id_at(&addr) == Some(id.clone());
    if old_id_still_listed {
        // Not yet a member: nothing can have been copied to it.
        assert!(
            held.is_empty(),
            "the restarted in-memory server holds keys: {held:?}"
        );
    }
    for key in &solo {
        assert_eq!(
            get_on(&cluster, TARGET, Space::Local, key),
            None,
            "the restarted in-memory server still holds {key}"
        );
    }

    cluster.wait_for_view(
        SETTLE_TIMEOUT,
        "the restarted in-memory server joins under a new id, settled",
        |view| match view.id_at(&addr) {
            Some(fresh) if fresh != id && view.servers.len() == 3 && !view.rebalancing => Ok(()),
            other => Err(format!("at {addr}: {other:?}")),
        },
    );
    for key in &replicated {
        assert_eq!(getr_found(&cluster, key), value_of(key), "getr {key}");
    }
    for key in &solo {
        assert_eq!(
            get_on(&cluster, TARGET, Space::Local, key),
            None,
            "{key} came back"
        );
    }
    assert!(
        !data_root.exists(),
        "in-memory servers created {}",
        data_root.display()
    );
}
