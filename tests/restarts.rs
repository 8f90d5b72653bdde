//! Issue 13 (faults, second round): one real-process regression test per defect, named after the
//! behaviour it proves. Restarts at the same address, view-leader restarts, a primary that
//! rejoins under a new id, a transaction whose primary and one more replica left, arithmetic at
//! the edges, and loss reported as loss. (Defect 6, a cut link, is held by tests/cut_link.rs.)
//!
//! Every process is a real `viewleader`, `server` or `client` binary started by the harness in
//! `tests/common` on `--port 0` in a temp dir; a coordinator that dies mid-write and a peer that
//! sends raw requests are played by the library (`Client::write_then_crash`, `Client::server_call`,
//! an `RpcClient`), as a real peer would. No timing bound is asserted: every wait polls a
//! condition against a generous deadline; the only sleeps are poll intervals and the pauses a
//! scenario names.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::lib_client::{
    crash_coordinator, library_client, owners, pending_on, runtime, wait_nothing_pending,
    UNBLOCK_TIMEOUT,
};
use common::reads::{classify, error_of, getr, with_quick_timeouts, Read};
use common::{
    unused_port, wait_for, ClientRun, Slot, TestCluster, Timings, ViewDoc, POLL, SLOT_WEIGHTS,
};
use ringleader::client::{Client, CrashPoint};
use ringleader::rpc::client::RpcClient;
use ringleader::rpc::message::{ServerRequest, ServiceKind, ViewLeaderReply, ViewLeaderRequest};
use ringleader::types::{Epoch, Heartbeat, Key, ServerInfo, Value, Versioned};
use serde_json::{json, Value as Json};

/// Generous bound for a cluster to settle after a fault (expiry, rejoin, rebalancing).
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Per-call timeout and rebalancing wait of the `client` runs made while a fault is in the air,
/// so that an error comes back quickly and the next read goes out.
const QUICK_MS: &str = "500";

// ---------------------------------------------------------------------------------------------
// The fault scenarios take every slot weight ([`common::Slot`]) and run alone
// ---------------------------------------------------------------------------------------------

/// A scenario whose pauses and races must not compete with another cluster for the CPU.
const ALONE: usize = SLOT_WEIGHTS;
/// A scenario that only sends requests and reads answers.
const SHARED: usize = 1;

// ---------------------------------------------------------------------------------------------
// Reading and writing through the CLI
// ---------------------------------------------------------------------------------------------

/// `client getr KEY` with short timeouts: for reads made while a fault is in the air.
fn getr_quick(cluster: &TestCluster, key: &str) -> (Read, ClientRun) {
    let run = cluster.client(&with_quick_timeouts(QUICK_MS, &["--json", "getr", key]));
    (classify(&run), run)
}

/// `client append KEY ITEM` with short timeouts: whether it was acknowledged.
fn append_quick(cluster: &TestCluster, key: &str, item: &str) -> bool {
    let run = cluster.client(&with_quick_timeouts(QUICK_MS, &["append", key, item]));
    run.code == 0
}

/// Whether `view` lists exactly the running servers of `cluster`, none of `gone_ids`, settled.
fn settled_without(cluster: &TestCluster, view: &ViewDoc, gone_ids: &[String]) -> bool {
    let want = cluster.live_server_addrs();
    !view.rebalancing
        && view.addrs() == want
        && view.servers.len() == want.len()
        && gone_ids.iter().all(|id| !view.has_id(id))
}

// ---------------------------------------------------------------------------------------------
// The library, as a coordinator or a peer
// ---------------------------------------------------------------------------------------------

fn text(s: &str) -> Value {
    Value::Text(s.to_string())
}

/// A `Transfer` as a peer sends it to the member `to`, naming that member as every
/// member-addressed request does. The one place that builds it.
fn transfer_to(to: &ServerInfo, epoch: Epoch, entries: Vec<(Key, Versioned)>) -> ServerRequest {
    ServerRequest::Transfer {
        epoch,
        entries,
        server_id: to.id.clone(),
    }
}

/// The member of the current view at `addr`, and the epoch that server is at.
fn member_at(rt: &tokio::runtime::Runtime, client: &Client, addr: &str) -> (ServerInfo, Epoch) {
    let status = rt
        .block_on(client.status(addr))
        .unwrap_or_else(|err| panic!("status of {addr}: {err}"));
    (
        ServerInfo {
            id: status.server_id,
            addr: addr.to_string(),
        },
        status.epoch,
    )
}

/// A heartbeat as a server would send it, from `server_id` at `addr`, having seen `epoch_seen`.
/// The one place that builds it (a server would also report its last settled view and former
/// ids; an intruder reports none).
fn heartbeat(server_id: &str, addr: &str, epoch_seen: Epoch) -> ViewLeaderRequest {
    ViewLeaderRequest::Heartbeat(Heartbeat {
        server_id: server_id.to_string(),
        addr: addr.to_string(),
        epoch_seen,
        rebalanced_epoch: 0,
        settled_epoch: 0,
        settled_servers: Vec::new(),
        former_ids: Vec::new(),
    })
}

/// One raw request to the view leader at `addr`, on a connection of its own.
fn viewleader_call(
    rt: &tokio::runtime::Runtime,
    addr: &str,
    request: ViewLeaderRequest,
) -> ringleader::Result<ViewLeaderReply> {
    rt.block_on(async {
        let timeout = Duration::from_secs(5);
        let conn = RpcClient::<ViewLeaderRequest, ViewLeaderReply>::connect(
            &ringleader::net::Env::real(),
            addr,
            ServiceKind::ViewLeader,
            timeout,
        )
        .await?;
        conn.call(&request, timeout).await
    })
}

/// SIGCONT without failing: the process may be gone already when a test fails early.
fn resume_quietly(pid: u32) {
    let _ = Command::new("kill")
        .arg("-CONT")
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

// ---------------------------------------------------------------------------------------------
// 1. A new process at a dead member's address is a different member
// ---------------------------------------------------------------------------------------------

/// Kill -9 the first two replicas of a key and start new servers on the same ports at once.
/// The new processes are not the members the view (and every reader's cached view) names at
/// those addresses, so until the view has dropped the dead ids and settled, no `getr` of a
/// committed key may say "not found" or return an older value (errors and retries are fine);
/// afterwards every key reads its committed value.
#[test]
fn a_fresh_process_at_a_dead_members_port_never_answers_for_it() {
    let _slot = Slot::acquire(ALONE);
    let mut cluster = TestCluster::start(3);
    let keys: Vec<String> = (0..12).map(|i| format!("member-{i:02}")).collect();
    let mut committed = BTreeMap::new();
    for key in &keys {
        // Two writes, so that an older value exists to be wrongly shown.
        for round in ["old", "new"] {
            cluster
                .client(&["setr", key, &format!("{key}-{round}")])
                .expect_ok();
        }
        committed.insert(key.clone(), json!(format!("{key}-new")));
    }
    let before = cluster.wait_settled();

    // The pair of servers that are the first two replicas of the most keys: a linearizable
    // read asks those two first, so they alone could make a key look absent.
    let mut by_pair: BTreeMap<BTreeSet<String>, Vec<&String>> = BTreeMap::new();
    for key in &keys {
        let first_two: BTreeSet<String> = owners(&before, key).into_iter().take(2).collect();
        by_pair.entry(first_two).or_default().push(key);
    }
    let (pair, exposed) = by_pair
        .iter()
        .max_by_key(|(_, keys)| keys.len())
        .expect("some key has replicas");
    let victims: Vec<usize> = pair
        .iter()
        .map(|addr| cluster.server_number(addr))
        .collect();
    let dead_ids: Vec<String> = pair
        .iter()
        .map(|addr| before.id_at(addr).expect("a victim is in the view"))
        .collect();
    eprintln!("killing servers {victims:?} ({pair:?}), the first two replicas of {exposed:?}");

    for &victim in &victims {
        cluster.kill_server(victim);
    }
    for &victim in &victims {
        cluster.restart_server_wiped(victim);
    }

    let started = Instant::now();
    let mut failures = BTreeMap::<String, usize>::new();
    let mut reads = 0;
    loop {
        let settled = cluster
            .try_query_servers()
            .is_ok_and(|view| settled_without(&cluster, &view, &dead_ids));
        let mut all_found = true;
        for key in &keys {
            let (read, run) = getr_quick(&cluster, key);
            reads += 1;
            match read {
                Read::Found(value) => assert_eq!(
                    value,
                    committed[key],
                    "getr {key} returned another value than the committed one, {} ms after \
                     the restart at the same ports: {run:?}",
                    started.elapsed().as_millis()
                ),
                Read::NotFound => panic!(
                    "getr {key} said \"not found\" for a committed key {} ms after two of its \
                     replicas were restarted at the same ports (a process that is not the \
                     member answered for it): {run:?}",
                    started.elapsed().as_millis()
                ),
                Read::Failed { kind, .. } => {
                    all_found = false;
                    *failures.entry(kind).or_default() += 1;
                }
            }
        }
        if settled && all_found {
            break;
        }
        assert!(
            started.elapsed() < SETTLE_TIMEOUT,
            "the cluster did not settle with every key readable within {SETTLE_TIMEOUT:?}; \
             view: {:?}; errors so far: {failures:?}",
            cluster.try_query_servers()
        );
        std::thread::sleep(POLL);
    }
    eprintln!(
        "settled after {} ms; {reads} reads, errors by kind meanwhile: {failures:?}",
        started.elapsed().as_millis()
    );
    for key in &keys {
        let (read, run) = getr(&cluster, key);
        assert!(
            matches!(&read, Read::Found(value) if *value == committed[key]),
            "after settling, getr {key} must return its committed value: {run:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A restarted view leader never settles on a partial view
// ---------------------------------------------------------------------------------------------

/// Servers of the partial-view scenario: enough that one of them holds only half of the keys.
const PARTIAL_VIEW_SERVERS: usize = 6;
/// How long the servers that re-register late are held back after the view leader restarts:
/// well under the lease, so they are alive all along and the view leader must wait for them.
const HELD_BACK: Duration = Duration::from_millis(500);

/// Write 30 keys and 5 lists on six servers, kill -9 the view leader and restart it on the same
/// port with the same data dir, while five of the six servers are held back (stopped for half a
/// lease) so they re-register late. During and after, no `getr` says "not found" for any key or
/// list (errors are fine while the view settles), and appends made after the restart are never
/// lost: every list keeps its items, and each acknowledged new item appears exactly once.
#[test]
fn a_restarted_view_leader_never_settles_on_a_partial_view() {
    let _slot = Slot::acquire(ALONE);
    let mut cluster = TestCluster::start(PARTIAL_VIEW_SERVERS);
    let keys: Vec<String> = (0..30).map(|i| format!("vl-key-{i:02}")).collect();
    let lists: Vec<String> = (0..5).map(|i| format!("vl-list-{i}")).collect();
    for key in &keys {
        cluster
            .client(&["setr", key, &format!("{key}-value")])
            .expect_ok();
    }
    for list in &lists {
        for item in ["a", "b"] {
            cluster.client(&["append", list, item]).expect_ok();
        }
    }
    let before = cluster.wait_settled();

    // Every server but one is held back, the view leader killed and restarted meanwhile.
    let held_back: Vec<u32> = (1..PARTIAL_VIEW_SERVERS)
        .map(|n| cluster.server_pid(n))
        .collect();
    for number in 1..PARTIAL_VIEW_SERVERS {
        cluster.pause_server(number);
    }
    cluster.kill_viewleader();
    cluster.restart_viewleader();
    let restarted = Instant::now();
    let resumer = std::thread::spawn(move || {
        std::thread::sleep(HELD_BACK.saturating_sub(restarted.elapsed()));
        for pid in held_back {
            resume_quietly(pid);
        }
    });

    let mut acked: BTreeMap<&String, Vec<String>> = BTreeMap::new();
    let mut unacked: BTreeMap<&String, Vec<String>> = BTreeMap::new();
    let mut failures = BTreeMap::<String, usize>::new();
    let check_list = |list: &str, value: &Json, run: &ClientRun| {
        let items: Vec<&str> = value
            .as_array()
            .unwrap_or_else(|| panic!("{list} is not a list: {run:?}"))
            .iter()
            .map(|item| item.as_str().unwrap_or_default())
            .collect();
        assert!(
            items.len() >= 2 && items[..2] == ["a", "b"],
            "{list} lost the items it had before the view leader restarted, {} ms after the \
             restart: {items:?} ({run:?})",
            restarted.elapsed().as_millis()
        );
    };
    let mut round = 0;
    loop {
        let settled = cluster.try_query_servers().is_ok_and(|view| {
            view.servers.len() == PARTIAL_VIEW_SERVERS && { settled_without(&cluster, &view, &[]) }
        });
        // Appends to the existing lists every round while the view is being rebuilt (a fresh
        // item each time).
        round += 1;
        for list in &lists {
            let item = format!("c{round}");
            if append_quick(&cluster, list, &item) {
                acked.entry(list).or_default().push(item);
            } else {
                unacked.entry(list).or_default().push(item);
            }
        }
        let mut all_found = true;
        for key in keys.iter().chain(&lists) {
            let (read, run) = getr_quick(&cluster, key);
            match read {
                Read::Found(value) if lists.contains(key) => check_list(key, &value, &run),
                Read::Found(value) => assert_eq!(
                    value,
                    json!(format!("{key}-value")),
                    "getr {key} returned another value: {run:?}"
                ),
                Read::NotFound => panic!(
                    "getr {key} said \"not found\" {} ms after the view leader restarted (round \
                     {round}): the restarted view leader settled on a partial view: {run:?}",
                    restarted.elapsed().as_millis()
                ),
                Read::Failed { kind, .. } => {
                    all_found = false;
                    *failures.entry(kind).or_default() += 1;
                }
            }
        }
        if settled && all_found && resumer.is_finished() {
            break;
        }
        assert!(
            restarted.elapsed() < SETTLE_TIMEOUT,
            "the cluster did not settle with every key readable within {SETTLE_TIMEOUT:?} of \
             the view leader's restart; view: {:?}; errors so far: {failures:?}",
            cluster.try_query_servers()
        );
        std::thread::sleep(POLL);
    }
    resumer.join().expect("the resumer thread");
    let after = cluster.query_servers();
    eprintln!(
        "settled after {} ms (epoch {} before, {} after); errors meanwhile: {failures:?}; \
         appends meanwhile: {acked:?} acknowledged, {unacked:?} not",
        restarted.elapsed().as_millis(),
        before.epoch,
        after.epoch
    );
    assert!(
        after.epoch >= before.epoch,
        "the epoch went back across the restart: {before:?} then {after:?}"
    );

    // One more append to every list, now that the view has settled (a fresh item per try, so a
    // try whose outcome is unknown can never be counted twice).
    for list in &lists {
        let mut tries = 0;
        wait_for(
            SETTLE_TIMEOUT,
            &format!("an append to {list} is acknowledged"),
            || {
                tries += 1;
                let item = format!("d{tries}");
                let run = cluster.client(&["append", list, &item]);
                if run.code == 0 {
                    acked.entry(list).or_default().push(item);
                    Ok(())
                } else {
                    unacked.entry(list).or_default().push(item);
                    Err(format!("{run:?}"))
                }
            },
        );
    }

    for key in &keys {
        let (read, run) = getr(&cluster, key);
        assert!(
            matches!(&read, Read::Found(value) if *value == json!(format!("{key}-value"))),
            "after settling, getr {key} must return its value: {run:?}"
        );
    }
    for list in &lists {
        let (read, run) = getr(&cluster, list);
        let Read::Found(value) = read else {
            panic!("after settling, getr {list} must find the list: {run:?}");
        };
        check_list(list, &value, &run);
        let items: Vec<String> = value
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .map(|i| i.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        let count = |item: &str| items.iter().filter(|i| *i == item).count();
        for item in acked.get(list).into_iter().flatten() {
            assert_eq!(
                count(item),
                1,
                "{list}: the acknowledged append {item:?} must appear exactly once: {items:?}"
            );
        }
        for item in unacked.get(list).into_iter().flatten() {
            assert!(
                count(item) <= 1,
                "{list}: the unacknowledged append {item:?} appears more than once: {items:?}"
            );
        }
        for item in &items {
            let known = ["a", "b"].contains(&item.as_str())
                || acked.get(list).is_some_and(|a| a.contains(item))
                || unacked.get(list).is_some_and(|u| u.contains(item));
            assert!(
                known,
                "{list}: an item nobody appended: {item:?} in {items:?}"
            );
        }
        assert_eq!(
            (count("a"), count("b")),
            (1, 1),
            "{list}: the items from before the restart must appear once each: {items:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Fencing tokens never repeat across a view-leader restart
// ---------------------------------------------------------------------------------------------

/// `client lock_get LOCK REQUESTER`: the fencing token of the grant.
#[track_caller]
fn take_lock(cluster: &TestCluster, lock: &str, requester: &str) -> Result<u64, ClientRun> {
    let run = cluster.client(&["--json", "lock_get", lock, requester]);
    if run.code != 0 {
        return Err(run);
    }
    let token = run.json()["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("lock_get printed no numeric token: {run:?}"));
    Ok(token)
}

#[track_caller]
fn release_lock(cluster: &TestCluster, lock: &str, requester: &str) {
    cluster
        .client(&["lock_release", lock, requester])
        .expect_ok();
}

/// Take a lock a few times, kill -9 the view leader and restart it on the same port with the
/// same `--data-dir`, and take the lock again (another requester): the new token is strictly
/// greater than every token granted before the restart.
#[test]
fn fencing_tokens_keep_growing_across_a_view_leader_restart() {
    let _slot = Slot::acquire(SHARED);
    // A restarted view leader may grant nothing until any holder from before it would have lost
    // the lock anyway: a short lock lease keeps that wait short.
    let timings = Timings {
        lock_lease_ms: Some(2_000),
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(timings, 1);
    let mut before = Vec::new();
    for _ in 0..3 {
        let token = take_lock(&cluster, "fence", "alice")
            .unwrap_or_else(|run| panic!("lock_get failed: {run:?}"));
        before.push(token);
        release_lock(&cluster, "fence", "alice");
    }
    assert!(
        before.windows(2).all(|w| w[0] < w[1]),
        "tokens grow with each grant: {before:?}"
    );

    cluster.kill_viewleader();
    cluster.restart_viewleader();
    let after = wait_for(
        SETTLE_TIMEOUT,
        "the restarted view leader grants the lock",
        || take_lock(&cluster, "fence", "bob").map_err(|run| format!("{run:?}")),
    );
    let highest = before.iter().copied().max().unwrap_or_default();
    assert!(
        after > highest,
        "a fencing token repeated across the view leader's restart: {after} after {before:?}"
    );
    assert!(
        cluster.viewleader_data_dir().is_dir(),
        "the view leader kept nothing in its --data-dir {}",
        cluster.viewleader_data_dir().display()
    );
    release_lock(&cluster, "fence", "bob");
    let next = take_lock(&cluster, "fence", "alice")
        .unwrap_or_else(|run| panic!("lock_get failed: {run:?}"));
    assert!(
        next > after,
        "tokens grow after the restart too: {next} after {after}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. A primary that rejoins under a new id does not hold its prepared key
// ---------------------------------------------------------------------------------------------

/// Transaction timeout of the rejoin scenario: well above the lease and the pause.
const REJOIN_TX_TIMEOUT_MS: u64 = 4_000;
/// How long the primary is stopped: longer than the lease (it is expired and rejoins under a
/// new id), shorter than the transaction timeout (its prepared write is not yet overdue).
const PRIMARY_PAUSE: Duration = Duration::from_millis(2_000);

/// A coordinator dies after every replica voted yes; the key's primary is then stopped for
/// longer than the lease but shorter than the transaction timeout, so it comes back under a new
/// id still holding the prepared write. Within a deadline the key is writable again and no
/// server reports a pending transaction.
#[test]
fn a_primary_that_rejoins_under_a_new_id_never_holds_its_prepared_key() {
    let _slot = Slot::acquire(ALONE);
    let timings = Timings {
        lease_ms: 1_000,
        tx_timeout_ms: Some(REJOIN_TX_TIMEOUT_MS),
        ..Timings::default()
    };
    assert!(
        PRIMARY_PAUSE > Duration::from_millis(timings.lease_ms)
            && PRIMARY_PAUSE < Duration::from_millis(REJOIN_TX_TIMEOUT_MS)
    );
    let cluster = TestCluster::start_with(timings, 3);
    let rt = runtime();
    let client = library_client(&rt, &cluster);
    let key = "held-by-a-rejoiner";
    let base = rt
        .block_on(client.setr(key, text("base")))
        .expect("the base write");
    let primary = base.replicas[0].clone();
    let primary_number = cluster.server_number(&primary.addr);

    let doomed = library_client(&rt, &cluster);
    crash_coordinator(&rt, &doomed, key, "crashed", CrashPoint::AfterAllPrepares);
    for replica in &base.replicas {
        assert_eq!(
            pending_on(&rt, &client, &replica.addr),
            Ok(1),
            "every replica holds the prepared write ({})",
            replica.addr
        );
    }

    cluster.pause_server(primary_number);
    std::thread::sleep(PRIMARY_PAUSE);
    cluster.resume_server(primary_number);
    cluster.wait_for_view(
        SETTLE_TIMEOUT,
        "the primary rejoined under a new id",
        |view| match view.id_at(&primary.addr) {
            Some(id) if id != primary.id => Ok(()),
            Some(_) => {
                Err("the primary still has its old id (the pause was not long enough)".into())
            }
            None => Err("the primary is not in the view".into()),
        },
    );

    let written = wait_for(UNBLOCK_TIMEOUT, "the key is writable again", || {
        rt.block_on(client.setr(key, text("after")))
            .map_err(|err| err.to_string())
    });
    wait_nothing_pending(&rt, &client, &cluster);
    let (read, run) = getr(&cluster, key);
    assert!(
        matches!(&read, Read::Found(value) if *value == json!("after")),
        "getr returns the write made after the rejoin ({written:?}): {run:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. A transaction whose primary and one other replica left is resolved by the survivor
// ---------------------------------------------------------------------------------------------

/// A coordinator dies after every replica voted yes, then the key's primary and one other
/// replica are killed for good. The survivor resolves the transaction: within a deadline the key
/// is writable on the surviving cluster and nothing is pending; two fresh servers then join and
/// the cluster settles with the write readable.
#[test]
fn a_transaction_whose_primary_and_another_replica_left_is_resolved_by_the_survivor() {
    let _slot = Slot::acquire(ALONE);
    let timings = Timings {
        lease_ms: 1_000,
        tx_timeout_ms: Some(2_000),
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(timings, 3);
    let rt = runtime();
    let client = library_client(&rt, &cluster);
    let key = "left-by-two";
    let base = rt
        .block_on(client.setr(key, text("base")))
        .expect("the base write");
    assert_eq!(base.replicas.len(), 3, "three replicas: {base:?}");

    let doomed = library_client(&rt, &cluster);
    crash_coordinator(&rt, &doomed, key, "crashed", CrashPoint::AfterAllPrepares);
    let survivor = base.replicas[2].clone();
    assert_eq!(pending_on(&rt, &client, &survivor.addr), Ok(1));
    for gone in &base.replicas[..2] {
        let number = cluster.server_number(&gone.addr);
        cluster.kill_server(number);
    }
    let gone_ids: Vec<String> = base.replicas[..2].iter().map(|r| r.id.clone()).collect();
    cluster.wait_for_view(
        SETTLE_TIMEOUT,
        "the view dropped the primary and the other killed replica",
        |view| {
            if gone_ids.iter().all(|id| !view.has_id(id)) && view.has_id(&survivor.id) {
                Ok(())
            } else {
                Err("a killed replica is still listed, or the survivor is not".into())
            }
        },
    );

    let written = wait_for(
        UNBLOCK_TIMEOUT,
        "the key is writable on the survivor",
        || {
            rt.block_on(client.setr(key, text("after")))
                .map_err(|err| err.to_string())
        },
    );
    wait_for(
        UNBLOCK_TIMEOUT,
        "the survivor has no pending transaction",
        || match pending_on(&rt, &client, &survivor.addr) {
            Ok(0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // Back to three replicas: two fresh servers join and the survivor hands the key over.
    cluster.add_server();
    cluster.add_server();
    wait_for(
        SETTLE_TIMEOUT,
        "the grown cluster settles",
        || match cluster.try_query_servers() {
            Ok(view) if settled_without(&cluster, &view, &gone_ids) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let (read, run) = getr(&cluster, key);
    assert!(
        matches!(&read, Read::Found(value) if *value == json!("after")),
        "getr returns the write the survivor took ({written:?}): {run:?}"
    );
    cluster.client(&["setr", key, "again"]).expect_ok();
    wait_nothing_pending(&rt, &client, &cluster);
}

// ---------------------------------------------------------------------------------------------
// 7. Arithmetic at the edges
// ---------------------------------------------------------------------------------------------

/// A peer sends a `Transfer` carrying version `u64::MAX`: it is refused with an error naming the
/// version, and the key stays writable with `setr`; a single-server `set` after such a transfer
/// never stores version 0.
#[test]
fn a_transfer_at_the_last_version_is_refused_and_the_key_stays_writable() {
    let _slot = Slot::acquire(SHARED);
    let cluster = TestCluster::start(3);
    let rt = runtime();
    let client = library_client(&rt, &cluster);
    let key = "edge-version";
    let base = rt
        .block_on(client.setr(key, text("before")))
        .expect("the base write");

    for replica in &base.replicas {
        let (member, epoch) = member_at(&rt, &client, &replica.addr);
        let request = transfer_to(
            &member,
            epoch,
            vec![(
                key.to_string(),
                Versioned {
                    value: text("from-a-peer"),
                    version: u64::MAX,
                },
            )],
        );
        match rt.block_on(client.server_call(&replica.addr, request)) {
            Err(err) => {
                let message = err.to_string();
                assert!(
                    message.contains(&u64::MAX.to_string())
                        || message.to_lowercase().contains("version"),
                    "the refusal should name the version: {err:?}"
                );
            }
            Ok(reply) => panic!(
                "{} accepted a transfer at version u64::MAX: {reply:?}",
                replica.addr
            ),
        }
    }
    cluster.client(&["setr", key, "after"]).expect_ok();
    let (read, run) = getr(&cluster, key);
    assert!(
        matches!(&read, Read::Found(value) if *value == json!("after")),
        "getr returns the write after the refused transfer: {run:?}"
    );

    // A transfer at the last version is refused, and a transfer never reaches a server's own
    // keys anyway: a single-server set of the same name starts at version 1.
    let addr = cluster.server_addr(0);
    let (member, epoch) = member_at(&rt, &client, &addr);
    let solo = "edge-version-solo";
    let request = transfer_to(
        &member,
        epoch,
        vec![(
            solo.to_string(),
            Versioned {
                value: text("from-a-peer"),
                version: u64::MAX,
            },
        )],
    );
    let offered = rt.block_on(client.server_call(&addr, request));
    assert!(
        offered.is_err(),
        "the transfer at u64::MAX of {solo} was accepted: {offered:?}"
    );
    let run = cluster.client_on(0, &["--json", "set", solo, "mine"]);
    assert_eq!(
        run.expect_ok().json()["version"].as_u64(),
        Some(1),
        "the set after a transfer of that name: {run:?}"
    );
    let run = cluster.client_on(0, &["--json", "get", solo]);
    assert_eq!(run.expect_ok().json()["value"], json!("mine"), "{run:?}");
}

/// A heartbeat reporting `epoch_seen = u64::MAX` is refused, and the epoch does not wrap: it
/// stays small, and later views have larger epochs.
#[test]
fn a_heartbeat_at_the_last_epoch_is_refused_and_the_epoch_never_wraps() {
    let _slot = Slot::acquire(SHARED);
    let mut cluster = TestCluster::start(2);
    let rt = runtime();
    let before = cluster.wait_settled();
    let intruder_addr = format!("127.0.0.1:{}", unused_port());
    let intruder = format!("intruder-{}", uuid::Uuid::new_v4());
    let reply = viewleader_call(
        &rt,
        &cluster.viewleader_addr(),
        heartbeat(&intruder, &intruder_addr, u64::MAX),
    );
    let during = cluster.try_query_servers();
    assert!(
        matches!(
            reply,
            Err(ringleader::Error::InvalidRequest(_) | ringleader::Error::Refused(_))
        ),
        "a heartbeat with epoch_seen u64::MAX must be refused with a clear error: {reply:?} \
         (the view then: {during:?})"
    );
    let view = during.unwrap_or_else(|run| panic!("query_servers failed: {run:?}"));
    assert!(
        !view.has_id(&intruder),
        "the refused heartbeat joined: {view:?}"
    );
    assert!(
        view.epoch >= before.epoch && view.epoch < 1_000,
        "the epoch wrapped or jumped: {before:?} then {view:?}"
    );

    cluster.add_server();
    let grown = cluster.wait_settled();
    assert!(
        grown.epoch > view.epoch && grown.epoch < 1_000,
        "a later view has a larger, small epoch: {view:?} then {grown:?}"
    );
}

/// A `Transfer` whose epoch is older than the receiver's is refused, and the key keeps its value.
#[test]
fn a_transfer_from_an_older_epoch_never_lands() {
    let _slot = Slot::acquire(SHARED);
    let cluster = TestCluster::start(3);
    let rt = runtime();
    let client = library_client(&rt, &cluster);
    let key = "edge-epoch";
    let base = rt
        .block_on(client.setr(key, text("current")))
        .expect("the base write");
    let target = &base.replicas[0];
    let number = cluster.server_number(&target.addr);
    let (member, epoch) = member_at(&rt, &client, &target.addr);
    assert!(epoch >= 1, "three joins made the epoch at least 3: {epoch}");
    let held = |run: &ClientRun| (run.json()["value"].clone(), run.json()["version"].as_u64());
    let run = cluster.client_on(number, &["--json", "get", "--ring", key]);
    run.expect_ok();
    let (value, version) = held(&run);
    assert_eq!(value, json!("current"));
    let version = version.expect("get prints the version");

    let request = transfer_to(
        &member,
        epoch - 1,
        vec![(
            key.to_string(),
            Versioned {
                value: text("from-an-old-epoch"),
                version: version + 100,
            },
        )],
    );
    let reply = rt.block_on(client.server_call(&target.addr, request));
    let run = cluster.client_on(number, &["--json", "get", "--ring", key]);
    run.expect_ok();
    assert_eq!(
        held(&run),
        (json!("current"), Some(version)),
        "a transfer from epoch {} (the receiver at {epoch}) changed the key ({reply:?}): {run:?}",
        epoch - 1
    );
    assert!(
        reply.is_err(),
        "a transfer from an older epoch was not refused: {reply:?}"
    );
    let (read, run) = getr(&cluster, key);
    assert!(
        matches!(&read, Read::Found(value) if *value == json!("current")),
        "getr still returns the committed value: {run:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Loss is reported, not shown as absence
// ---------------------------------------------------------------------------------------------

/// Whether `run` reports possible data loss: kind `data_loss`, an exit code of its own (neither
/// found nor "not found"), and a message naming the loss.
fn reports_loss(run: &ClientRun) -> bool {
    let (kind, message) = error_of(run);
    let message = message.to_lowercase();
    kind == "data_loss"
        && run.code != 0
        && run.code != 1
        && (message.contains("lost") || message.contains("loss"))
}

/// Write keys, kill -9 every server and start fresh ones: once the cluster settles, `getr` of an
/// earlier key does not say "not found" but reports that the data may have been lost (kind
/// `data_loss`, its own exit code, a message naming the loss). The cluster goes on: a key
/// written again reads back.
#[test]
fn loss_of_every_replica_is_reported_not_shown_as_absence() {
    let _slot = Slot::acquire(SHARED);
    let mut cluster = TestCluster::start(3);
    let keys: Vec<String> = (0..5).map(|i| format!("lost-{i}")).collect();
    for key in &keys {
        cluster.client(&["setr", key, "gone-soon"]).expect_ok();
    }
    let before = cluster.wait_settled();
    for number in 0..3 {
        cluster.kill_server(number);
    }
    for _ in 0..3 {
        cluster.add_server();
    }
    let dead_ids: Vec<String> = before.ids().into_iter().collect();
    wait_for(
        SETTLE_TIMEOUT,
        "the fresh servers make up the view, settled",
        || match cluster.try_query_servers() {
            Ok(view) if settled_without(&cluster, &view, &dead_ids) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    for key in &keys {
        let (read, run) = getr(&cluster, key);
        match read {
            Read::Failed { .. } => assert!(
                reports_loss(&run),
                "getr {key} must report possible data loss (kind data_loss, an exit code of \
                 its own, a message naming the loss): {run:?}"
            ),
            Read::NotFound => {
                panic!("getr {key} said plain \"not found\" after every replica was lost: {run:?}")
            }
            Read::Found(value) => panic!("getr {key} found {value} on fresh servers: {run:?}"),
        }
    }
    cluster.client(&["setr", &keys[0], "reborn"]).expect_ok();
    let (read, run) = getr(&cluster, &keys[0]);
    assert!(
        matches!(&read, Read::Found(value) if *value == json!("reborn")),
        "a key written again after the loss reads back: {run:?}"
    );
}

/// Servers of the partial-loss scenario: three of them die, two survive.
const PARTIAL_LOSS_SERVERS: usize = 5;

/// Kill -9 the three replicas of some keys on five servers (two survive): keys whose every
/// replica died report possible data loss, keys with a surviving replica are found, and a key
/// never written, whose range kept a replica, still says "not found".
#[test]
fn a_key_never_written_still_reads_as_absent_beside_a_loss() {
    let _slot = Slot::acquire(SHARED);
    let mut cluster = TestCluster::start(PARTIAL_LOSS_SERVERS);
    let keys: Vec<String> = (0..20).map(|i| format!("maybe-lost-{i:02}")).collect();
    for key in &keys {
        cluster
            .client(&["setr", key, &format!("{key}-value")])
            .expect_ok();
    }
    let before = cluster.wait_settled();
    let doomed: BTreeSet<String> = owners(&before, &keys[0]).into_iter().collect();
    assert_eq!(doomed.len(), 3, "three replicas: {before:?}");
    let lost: Vec<&String> = keys
        .iter()
        .filter(|key| owners(&before, key).iter().all(|a| doomed.contains(a)))
        .collect();
    let kept: Vec<&String> = keys.iter().filter(|key| !lost.contains(key)).collect();
    let never_written = (0..)
        .map(|i| format!("never-written-{i}"))
        .find(|key| owners(&before, key).iter().any(|a| !doomed.contains(a)))
        .expect("some name has a surviving replica");
    eprintln!("killing {doomed:?}: lost {lost:?}, kept {kept:?}, never written {never_written}");

    for addr in &doomed {
        let number = cluster.server_number(addr);
        cluster.kill_server(number);
    }
    let dead_ids: Vec<String> = doomed
        .iter()
        .map(|addr| before.id_at(addr).expect("a doomed server is in the view"))
        .collect();
    wait_for(
        SETTLE_TIMEOUT,
        "the survivors make up the view, settled",
        || match cluster.try_query_servers() {
            Ok(view) if settled_without(&cluster, &view, &dead_ids) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    for key in &lost {
        let (_, run) = getr(&cluster, key);
        assert!(
            reports_loss(&run),
            "getr {key}, whose every replica died, must report possible data loss: {run:?}"
        );
    }
    for key in &kept {
        let (read, run) = getr(&cluster, key);
        assert!(
            matches!(&read, Read::Found(value) if *value == json!(format!("{key}-value"))),
            "getr {key}, which kept a replica, returns its value: {run:?}"
        );
    }
    let (read, run) = getr(&cluster, &never_written);
    assert!(
        matches!(read, Read::NotFound),
        "a key never written, whose range kept a replica, still says \"not found\": {run:?}"
    );
}
