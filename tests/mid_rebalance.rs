//! `client status` and `client locate` against a cluster held in the middle of a rebalance, on
//! real processes, then released.
//!
//! A rebalance that cannot end until the test lets it: a server in a simulated crash
//! (`client --server ADDR crash`: it keeps its memory, answers nothing but `recover`, sends
//! nothing, no heartbeats either) stays in the view for a whole lease, which is long here
//! ([`LEASE_MS`]). Crashed before a view change, it can neither report that it rebalanced for
//! the new epoch nor take part in the moves:
//!
//! 1. **A receiver that cannot receive.** Four servers; one (D) is crashed and another (A)
//!    stopped with SIGTERM, so that it leaves the view. Every key then lives on the three that
//!    are left, and a key that was on A and two others but not on D must reach D: its
//!    designated sender (the first of its settled replicas in ring order still in the view)
//!    retries for ever, and shows itself rebalancing with copies still to send.
//! 2. **A sender that cannot send.** Three settled servers; the one that is primary of the
//!    most keys (X) is crashed and a fifth server (E) joins. E becomes a replica of some of the
//!    keys whose designated sender is X: those it cannot hold until X comes back. The other
//!    senders finish, and so does E, which owes nobody anything (the copies it got came with
//!    their designated senders, and it does not offer them back, to X among others); the view
//!    stays rebalancing, and `locate` shows E without the copy and X without an answer.
//! 3. **A server that plans late.** Of the four servers now, one (Y) is crashed and another (L)
//!    stopped with SIGTERM. A third (R) holds a transaction whose coordinator died after the
//!    prepares, so it plans for the new view only once that transaction times out, seconds
//!    later; L's handoff has brought it its new keys by then (status shows them while R still
//!    waits). R then owes Y exactly its own sends as a designated sender, as the planner
//!    computes them, and offers none of the copies it received: offered, they too would wait
//!    on Y (the defect this phase was written for showed 9 more).
//!
//! Each time, once the crashed server recovers, everything settles and `locate` shows every
//! replica of every key holding the version written. Which keys and servers play which part is
//! computed from the view with the library's ring (the same pure function the servers use), so
//! nothing depends on timing but phase 3's margin (R plans [`TX_TIMEOUT_MS`] after the prepares,
//! L hands over within a second of its stop); the only chance involved is that E, whose id is random, is a new
//! replica of none of the keys X is primary of, about (1/4)^(KEYS/3).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::lib_client::{crash_coordinator, library_client, runtime};
use common::{send_signal, wait_for, TestCluster, Timings, ViewDoc, HEARTBEAT_MS};
use ringleader::client::CrashPoint;
use ringleader::ring::{replicas, Ring};
use ringleader::server::rebalance::plan;
use serde_json::Value as Json;

/// The servers' lease: long, so that a crashed server stays in the view for the whole of a
/// phase (each takes some seconds); nothing here waits it out.
const LEASE_MS: u64 = 60_000;
/// Keys written at the start.
const KEYS: usize = 60;
/// Longest wait for a view change, a settled view, a state the status shows.
const WAIT: Duration = Duration::from_secs(40);

/// The servers' transaction timeout: long enough that a server holding a transaction from the
/// coordinator that dies in phase 3 plans for the next view seconds after the others.
const TX_TIMEOUT_MS: u64 = 8_000;

fn timings() -> Timings {
    Timings {
        heartbeat_ms: HEARTBEAT_MS,
        lease_ms: LEASE_MS,
        tx_timeout_ms: Some(TX_TIMEOUT_MS),
        ..Timings::default()
    }
}

fn status(cluster: &TestCluster) -> Json {
    cluster.client(&["--json", "status"]).expect_ok().json()
}

fn locate(cluster: &TestCluster, key: &str) -> Json {
    cluster
        .client(&["--json", "locate", key])
        .expect_ok()
        .json()
}

/// The entry of `status` or `locate` for the server with `id`.
fn entry<'a>(doc: &'a Json, list: &str, id: &str) -> Option<&'a Json> {
    doc[list]
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["id"] == id))
}

/// The number of the server with `id` in `view`.
fn number_of(cluster: &TestCluster, view: &ViewDoc, id: &str) -> usize {
    let addr = &view
        .servers
        .iter()
        .find(|m| m.id == id)
        .expect("a member")
        .addr;
    cluster.server_number(addr)
}

/// Crashes (or recovers) the server `number`.
fn crash(cluster: &TestCluster, number: usize, crashed: bool) {
    let command = if crashed { "crash" } else { "recover" };
    cluster.client_on(number, &[command]).expect_ok();
}

/// Waits until the view lists exactly `addrs` at an epoch above `after`; returns it.
fn wait_view(cluster: &TestCluster, addrs: &BTreeSet<String>, after: u64) -> ViewDoc {
    cluster.wait_for_view(WAIT, "the view changes", |view| {
        if view.addrs() == *addrs && view.servers.len() == addrs.len() && view.epoch > after {
            Ok(view.clone())
        } else {
            Err(format!("want {addrs:?} after epoch {after}"))
        }
    })
}

/// Waits until the view lists exactly `addrs`, settled, and `status` shows every server at
/// the view's epoch, none rebalancing, nothing left to send; returns the view.
fn wait_settled(cluster: &TestCluster, addrs: &BTreeSet<String>) -> ViewDoc {
    let view = cluster.wait_for_view(WAIT, "the view settles", |view| {
        if view.addrs() == *addrs && view.servers.len() == addrs.len() && !view.rebalancing {
            Ok(view.clone())
        } else {
            Err(format!("want {addrs:?} settled"))
        }
    });
    wait_for(WAIT, "status shows every server settled", || {
        let doc = status(cluster);
        let servers = doc["servers"].as_array().ok_or("no servers")?;
        let settled = doc["rebalancing"] == false
            && servers.len() == addrs.len()
            && servers.iter().all(|s| {
                s["rebalancing"] == false && s["copies_to_send"] == 0 && s["epoch"] == doc["epoch"]
            });
        if settled {
            Ok(())
        } else {
            Err(doc.to_string())
        }
    });
    view
}

/// Waits until `locate` shows every replica of every key of `written` holding its version.
fn wait_every_replica_holds(cluster: &TestCluster, written: &BTreeMap<String, u64>) {
    for (key, version) in written {
        wait_for(WAIT, &format!("every replica of {key} holds it"), || {
            let doc = locate(cluster, key);
            let replicas = doc["replicas"].as_array().ok_or("no replicas")?;
            if doc["rebalancing"] == false
                && replicas.len() == 3
                && replicas.iter().all(|r| r["version"] == *version)
            {
                Ok(())
            } else {
                Err(doc.to_string())
            }
        });
    }
}

/// Fails clearly if a crash outlasted the lease: the crashed server would then have left the
/// view, and what the test saw would not be the state it set up.
#[track_caller]
fn within_lease(crashed_at: Instant, phase: &str) {
    assert!(
        crashed_at.elapsed() < Duration::from_millis(LEASE_MS),
        "{phase} took {:?}, past the {LEASE_MS} ms lease that keeps the crashed server in the view",
        crashed_at.elapsed()
    );
}

#[test]
fn status_and_locate_show_a_cluster_held_mid_rebalance_and_its_settling_once_released() {
    let mut cluster = TestCluster::start_with(timings(), 4);
    let mut written = BTreeMap::new();
    for i in 0..KEYS {
        let key = format!("key-{i}");
        let doc = cluster
            .client(&["--json", "setr", &key, &format!("value-{i}")])
            .expect_ok()
            .json();
        let version = doc["version"].as_u64().expect("setr's version");
        written.insert(key, version);
    }
    let view0 = cluster.query_servers();
    assert!(!view0.rebalancing, "{view0:?}");
    let ring0 = view0.server_infos();

    // ---- 1. A receiver that cannot receive -------------------------------------------------
    let d = view0.servers[3].id.clone();
    let (k0, owners) = written
        .keys()
        .map(|key| (key.clone(), replicas(key, &ring0)))
        .find(|(_, owners)| !owners.contains(&d))
        .expect("some key is not on the server to crash (each is on three of four)");
    // The primary leaves; the next replica in ring order is then the key's designated sender.
    let (a, sender) = (owners[0].clone(), owners[1].clone());
    let (d_number, a_number, sender_addr) = (
        number_of(&cluster, &view0, &d),
        number_of(&cluster, &view0, &a),
        {
            let s = number_of(&cluster, &view0, &sender);
            cluster.server_addr(s)
        },
    );
    let left: BTreeSet<String> = view0
        .servers
        .iter()
        .filter(|m| m.id != a)
        .map(|m| m.addr.clone())
        .collect();

    crash(&cluster, d_number, true);
    let crashed_at = Instant::now();
    send_signal(cluster.server_pid(a_number), "TERM");
    let view1 = wait_view(&cluster, &left, view0.epoch);

    let mid = wait_for(
        WAIT,
        "status shows the sender of a key bound for the crashed server with copies to send",
        || {
            let doc = status(&cluster);
            match entry(&doc, "servers", &sender) {
                Some(s) if s["copies_to_send"].as_u64().is_some_and(|n| n > 0) => Ok(doc),
                _ => Err(doc.to_string()),
            }
        },
    );
    assert_eq!(mid["rebalancing"], true, "the view rebalances: {mid}");
    assert_eq!(mid["epoch"], view1.epoch, "{mid}");
    let listed: BTreeSet<&str> = mid["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["addr"].as_str().expect("addr"))
        .collect();
    assert_eq!(
        listed,
        left.iter().map(String::as_str).collect(),
        "status lists the servers of the view, not the one that left: {mid}"
    );
    let held_up = entry(&mid, "servers", &sender).expect("the sender");
    assert_eq!(held_up["rebalancing"], true, "{mid}");
    assert!(
        held_up["rebalanced_epoch"]
            .as_u64()
            .is_some_and(|done| done < view1.epoch),
        "the sender has not rebalanced for the view: {mid}"
    );
    assert_eq!(
        held_up["epoch"], view1.epoch,
        "the sender is at the view's epoch: {mid}"
    );
    let silent = entry(&mid, "servers", &d).expect("the crashed server is listed");
    assert!(
        silent["error"].is_string() && silent["keys"].is_null(),
        "the crashed server is shown without an answer: {mid}"
    );
    assert!(
        cluster.query_servers().rebalancing,
        "query_servers says rebalancing too"
    );

    let placed = wait_for(WAIT, "locate shows k0 on its live replicas", || {
        let doc = locate(&cluster, &k0);
        let replicas = doc["replicas"].as_array().ok_or("no replicas")?;
        let live_hold = replicas
            .iter()
            .filter(|r| r["id"] != d.as_str())
            .all(|r| r["version"] == written[&k0]);
        if replicas.len() == 3 && live_hold {
            Ok(doc)
        } else {
            Err(doc.to_string())
        }
    });
    assert_eq!(placed["rebalancing"], true, "{placed}");
    let on_d = entry(&placed, "replicas", &d).expect("the crashed server is a replica of k0");
    assert!(
        on_d["error"].is_string() && on_d["version"].is_null(),
        "locate shows the crashed replica without an answer: {placed}"
    );
    assert_eq!(
        entry(&placed, "replicas", &sender).map(|r| r["addr"].clone()),
        Some(Json::from(sender_addr.as_str())),
        "{placed}"
    );
    within_lease(crashed_at, "phase 1");

    crash(&cluster, d_number, false);
    let view1 = wait_settled(&cluster, &left);
    wait_every_replica_holds(&cluster, &written);
    wait_for(
        WAIT,
        "the server that left hands its keys over and exits",
        || match cluster.server_exit_code(a_number) {
            Some(0) => Ok(()),
            other => Err(format!("exit code {other:?}")),
        },
    );

    // ---- 2. A sender that cannot send ------------------------------------------------------
    let ring1 = view1.server_infos();
    let mut primaries: BTreeMap<String, usize> = BTreeMap::new();
    for key in written.keys() {
        *primaries
            .entry(replicas(key, &ring1)[0].clone())
            .or_default() += 1;
    }
    let x = primaries
        .iter()
        .max_by_key(|(_, keys)| **keys)
        .map(|(id, _)| id.clone())
        .expect("a primary");
    let x_number = number_of(&cluster, &view0, &x);
    crash(&cluster, x_number, true);
    let crashed_at = Instant::now();
    let e_number = cluster.add_server();
    let e_addr = cluster.server_addr(e_number);
    let mut with_e = left.clone();
    with_e.insert(e_addr.clone());
    let view2 = wait_view(&cluster, &with_e, view1.epoch);
    let e = view2.id_at(&e_addr).expect("the new server's id");
    let ring2 = view2.server_infos();
    // Keys E must get: from X (stuck) or from a live sender (moved).
    let (stuck, moved): (Vec<&String>, Vec<&String>) = written
        .keys()
        .filter(|key| replicas(key, &ring2).contains(&e))
        .partition(|key| replicas(key, &ring1)[0] == x);
    // Prefer a stuck key X is still a replica of, to see both at once.
    let k1 = stuck
        .iter()
        .find(|key| replicas(key, &ring2).contains(&x))
        .or(stuck.first())
        .unwrap_or_else(|| {
            panic!(
                "the new server {e} is a replica of none of the {} keys the crashed server \
                 {x} is primary of (a chance of about 1 in 4^{}; the ring: {ring2:?})",
                primaries[&x], primaries[&x]
            )
        })
        .to_string();

    // Every server but the crashed one is done: the settled replicas sent what they owe the
    // new server, and the new server owes nobody anything. The copies it got, before or after
    // it planned for the new view, came from their designated senders, which cover every new
    // replica: it does not offer them back (to the crashed server among others) and wait.
    let mid = wait_for(
        WAIT,
        "status shows every server but the crashed one done rebalancing, the new one too",
        || {
            let doc = status(&cluster);
            let servers = doc["servers"].as_array().ok_or("no servers")?;
            let done = servers.len() == with_e.len()
                && servers.iter().filter(|s| s["id"] != x.as_str()).all(|s| {
                    s["rebalancing"] == false
                        && s["copies_to_send"] == 0
                        && s["epoch"] == view2.epoch
                });
            if done {
                Ok(doc)
            } else {
                Err(doc.to_string())
            }
        },
    );
    assert_eq!(
        mid["rebalancing"], true,
        "the view rebalances while the crashed server cannot report: {mid}"
    );
    let silent = entry(&mid, "servers", &x).expect("the crashed server is listed");
    assert!(
        silent["error"].is_string() && silent["keys"].is_null(),
        "the crashed server is shown without an answer: {mid}"
    );
    let joined = entry(&mid, "servers", &e).expect("the new server is listed");
    assert_eq!(
        joined["keys"].as_u64(),
        Some(moved.len() as u64),
        "the new server holds the keys live senders owed it, and none of the {} the crashed \
         server owes it: {mid}",
        stuck.len()
    );

    let placed = locate(&cluster, &k1);
    assert_eq!(placed["rebalancing"], true, "{placed}");
    for replica in placed["replicas"].as_array().expect("replicas") {
        let id = replica["id"].as_str().expect("id");
        if id == e {
            assert!(
                replica["version"].is_null()
                    && replica["error"].is_null()
                    && replica["epoch"].is_u64(),
                "the new replica answers that it has no copy yet: {placed}"
            );
        } else if id == x {
            assert!(
                replica["error"].is_string(),
                "the crashed replica is shown without an answer: {placed}"
            );
        } else {
            assert_eq!(
                replica["version"], written[&k1],
                "a settled replica holds the version written: {placed}"
            );
        }
    }
    assert!(
        entry(&placed, "replicas", &e).is_some(),
        "the new server is a replica of {k1}: {placed}"
    );
    if let Some(key) = moved.first() {
        let doc = locate(&cluster, key);
        assert_eq!(
            entry(&doc, "replicas", &e).map(|r| r["version"].clone()),
            Some(Json::from(written[*key])),
            "a key from a live sender has reached the new server: {doc}"
        );
    }
    within_lease(crashed_at, "phase 2");

    crash(&cluster, x_number, false);
    let view3 = wait_settled(&cluster, &with_e);
    wait_every_replica_holds(&cluster, &written);

    // ---- 3. A server that plans late -----------------------------------------------------------
    let ring3 = view3.server_infos();
    let ids: Vec<String> = view3.servers.iter().map(|m| m.id.clone()).collect();
    let replica_set =
        |key: &str| -> BTreeSet<String> { replicas(key, &ring3).into_iter().collect() };
    // Roles among the four: L leaves, Y crashes, R plans late. With four servers every key is
    // on three: L's handoff brings R every key it was not a replica of (on L, Y and the fourth),
    // before R plans. P, a fresh key, is on the three that stay, and its primary is not Y (so
    // the primary aborts P's transaction on time).
    let (l, y, r, early, p) = (0..ids.len())
        .flat_map(|l| (0..ids.len()).map(move |y| (l, y)))
        .flat_map(|(l, y)| (0..ids.len()).map(move |r| (l, y, r)))
        .filter(|(l, y, r)| l != y && y != r && l != r)
        .find_map(|(l, y, r)| {
            let (l, y, r) = (ids[l].clone(), ids[y].clone(), ids[r].clone());
            let early: Vec<String> = written
                .keys()
                .filter(|key| !replica_set(key).contains(&r))
                .cloned()
                .collect();
            let p = (0..1_000).map(|i| format!("pending-{i}")).find(|key| {
                let owners = replicas(key, &ring3);
                !owners.contains(&l) && owners[0] != y
            })?;
            (!early.is_empty()).then_some((l, y, r, early, p))
        })
        .expect("some key is not on one of the four servers");
    let (l_number, y_number, r_addr) = (
        number_of(&cluster, &view3, &l),
        number_of(&cluster, &view3, &y),
        cluster.server_addr(number_of(&cluster, &view3, &r)),
    );
    let stay: BTreeSet<String> = view3
        .servers
        .iter()
        .filter(|m| m.id != l)
        .map(|m| m.addr.clone())
        .collect();

    // R (with Y and S) holds P's transaction prepared under the settled view: the coordinator
    // died after the prepares, so it stays pending until its primary aborts it at the
    // transaction timeout, and R plans for the next view only then.
    let rt = runtime();
    let client = library_client(&rt, &cluster);
    let r_status = || {
        rt.block_on(client.status(&r_addr))
            .map_err(|err| format!("status of {r_addr}: {err}"))
    };
    let held_by_r: Vec<&String> = written
        .keys()
        .filter(|key| replica_set(key).contains(&r))
        .collect();
    let before = wait_for(WAIT, "R holds just the keys it owns", || {
        let now = r_status()?;
        if now.keys == held_by_r.len() as u64 {
            Ok(now)
        } else {
            Err(format!("{now:?}, owns {}", held_by_r.len()))
        }
    });
    crash_coordinator(
        &rt,
        &client,
        &p,
        "never committed",
        CrashPoint::AfterAllPrepares,
    );
    let prepared = r_status().expect("R answers");
    assert_eq!(prepared.pending_transactions, 1, "{prepared:?}");
    crash(&cluster, y_number, true);
    let crashed_at = Instant::now();
    send_signal(cluster.server_pid(l_number), "TERM");
    let view4 = wait_view(&cluster, &stay, view3.epoch);

    // L's handoff brings R the keys it newly owns while R still waits on the transaction.
    let holding = wait_for(
        WAIT,
        "R holds what L handed over, still waiting on its transaction",
        || {
            let now = r_status()?;
            if now.keys == before.keys + early.len() as u64 {
                Ok(now)
            } else {
                Err(format!("{now:?}"))
            }
        },
    );
    assert!(
        holding.pending_transactions == 1 && holding.rebalanced_epoch < view4.epoch,
        "R had not planned for the view when the copies reached it: {holding:?}"
    );

    // Once it plans, R sends what it owes as a designated sender (what it owes Y waits for Y),
    // and offers none of what it received: L's handoff and the keys' designated senders cover
    // every new replica of them. Offered, they would wait on Y too.
    let owed_to_y = plan(
        &r,
        &Ring::of_servers(&ring3),
        &Ring::of_servers(&view4.server_infos()),
        held_by_r,
    )
    .sends
    .get(&y)
    .map_or(0, Vec::len) as u64;
    let planned = wait_for(
        WAIT,
        "R has planned and has nothing left to send but what it owes the crashed server",
        || {
            let now = r_status()?;
            let planned = now.pending_transactions == 0
                && now.epoch == view4.epoch
                && now.copies_to_send == owed_to_y
                && (now.rebalanced_epoch == view4.epoch) == (owed_to_y == 0);
            if planned {
                Ok(now)
            } else {
                Err(format!(
                    "{now:?}; owes {y} {owed_to_y}, received {} from {l}",
                    early.len()
                ))
            }
        },
    );
    assert_eq!(planned.keys, holding.keys, "{planned:?}");
    within_lease(crashed_at, "phase 3");

    crash(&cluster, y_number, false);
    wait_settled(&cluster, &stay);
    wait_every_replica_holds(&cluster, &written);
    wait_for(WAIT, "L hands its keys over and exits", || {
        match cluster.server_exit_code(l_number) {
            Some(0) => Ok(()),
            other => Err(format!("exit code {other:?}")),
        }
    });
}
