//! Issue 15: the view leader as a Raft group, tested on real processes. Each test is named after
//! the behaviour it proves: a killed leader is replaced and locks, fencing tokens and epochs carry
//! over; a group that lost two of its three members says so clearly and serves again, intact, when
//! one comes back; a member restarted past a log compaction catches up through a snapshot; members
//! are added and removed while servers heartbeat and a client writes; every member killed at once
//! and restarted keeps the view, the settled view, the locks and the fencing counter; bad
//! `--peers` and an unknown member are refused with a message naming what is wrong.
//!
//! Every process is a real `viewleader`, `server` or `client` binary started by the harness in
//! `tests/common` (`TestCluster::start_group`): each member with its own `--data-dir` and a low
//! `--snapshot-entries`, on ports chosen free beforehand. No timing bound is asserted beyond the
//! deadlines of the waits, which poll a condition; the only sleeps are poll intervals.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{
    lock_ignoring_poison, run_client, run_service_to_exit, unused_ports, wait_for, ClientRun,
    GroupOptions, MemberDoc, Slot, TestCluster, Timings, ViewDoc, SLOT_WEIGHTS, VIEWLEADER_BIN,
};
use ringleader::client::{Client, ClientOptions};
use ringleader::types::View;
use serde_json::Value as Json;

/// A scenario that kills members: its elections must not compete with another cluster for the
/// CPU, so it takes every slot weight and runs alone.
const ALONE: usize = SLOT_WEIGHTS;
/// A scenario that only sends requests and reads answers.
const SHARED: usize = 1;

/// Bound on a new leader after the old one died: 1.5 to 2 s by default; a busy machine gets
/// far more.
const FAILOVER_TIMEOUT: Duration = Duration::from_secs(15);
/// Generous bound for anything that settles after a fault: catching up, a view settling,
/// enough log entries for a compaction.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The client, as a user runs it
// ---------------------------------------------------------------------------------------------

/// `{"error": {"kind", "message"}}` of a failed `--json` run, or what it printed instead.
fn error_of(run: &ClientRun) -> (String, String) {
    match serde_json::from_str::<Json>(run.stderr.trim()) {
        Ok(doc) => (
            doc["error"]["kind"].as_str().unwrap_or("?").to_string(),
            doc["error"]["message"].as_str().unwrap_or("?").to_string(),
        ),
        Err(_) => ("unparsed".to_string(), run.stderr.clone()),
    }
}

/// One `client lock_get LOCK REQUESTER` that does not wait: the grant's fencing token, or the
/// failed run.
fn lock_get(cluster: &TestCluster, lock: &str, requester: &str) -> Result<u64, ClientRun> {
    let run = cluster.client(&["--json", "--wait-ms", "0", "lock_get", lock, requester]);
    if run.code != 0 {
        return Err(run);
    }
    Ok(run.json()["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("lock_get printed no numeric token: {run:?}")))
}

/// `lock_get` that must be granted at once: its token.
#[track_caller]
fn granted(cluster: &TestCluster, lock: &str, requester: &str) -> u64 {
    lock_get(cluster, lock, requester)
        .unwrap_or_else(|run| panic!("lock_get {lock} {requester} was not granted: {run:?}"))
}

#[track_caller]
fn release(cluster: &TestCluster, lock: &str, requester: &str) {
    cluster
        .client(&["lock_release", lock, requester])
        .expect_ok();
}

/// `holder` still holds `lock` under `token` (asking again is granted with the same token), and
/// `other` is told to wait for it (exit 4, `lock_busy`, naming the holder).
#[track_caller]
fn assert_held(cluster: &TestCluster, lock: &str, holder: &str, token: u64, other: &str) {
    let again = granted(cluster, lock, holder);
    assert_eq!(
        again, token,
        "{holder} held {lock:?} under token {token}, and now under {again}: the lock was granted \
         again"
    );
    let run = lock_get(cluster, lock, other).expect_err("a second holder was granted the lock");
    let (kind, message) = error_of(&run);
    assert!(
        run.code == 4 && kind == "lock_busy" && message.contains(holder),
        "{other} must be told {lock:?} is held by {holder}: {run:?}"
    );
}

/// The view with its settled part, through the client library (the CLI prints no settled view).
fn full_view(cluster: &TestCluster) -> View {
    let viewleader = cluster.viewleader_addr();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime for the library's calls");
    rt.block_on(async move {
        Client::new(ClientOptions {
            viewleader,
            ..ClientOptions::default()
        })
        .query_servers()
        .await
    })
    .unwrap_or_else(|err| panic!("query_servers through the library failed: {err}"))
}

/// Grants and releases of `lock` until `done` holds (polled after every few); returns `done`'s
/// value. Each cycle logs two entries, so this drives the group's log past snapshots.
#[track_caller]
fn cycle_lock_until<T>(
    cluster: &TestCluster,
    lock: &str,
    tokens: &mut Vec<u64>,
    what: &str,
    mut done: impl FnMut() -> Result<T, String>,
) -> T {
    wait_for(SETTLE_TIMEOUT, what, || {
        for _ in 0..4 {
            tokens.push(granted(cluster, lock, "cycler"));
            release(cluster, lock, "cycler");
        }
        done()
    })
}

/// The statuses of the members running now that answer, and the leader's among them.
fn running_statuses(cluster: &TestCluster) -> Vec<(usize, MemberDoc)> {
    cluster
        .member_statuses()
        .into_iter()
        .enumerate()
        .filter(|(index, _)| cluster.member_running(*index))
        .filter_map(|(index, status)| status.ok().map(|doc| (index, doc)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. A killed leader is replaced; locks, tokens and epochs carry over
// ---------------------------------------------------------------------------------------------

/// Kill -9 the leader of a group of three while servers heartbeat: another member leads within
/// seconds; setr, getr and lock_get keep working; epochs never go back and no server is expired
/// for the gap; the lock held before the kill is still held by the same requester under the
/// same token (another requester is told to wait); and a grant after the failover carries a
/// token above every earlier one.
#[test]
fn a_killed_leader_is_replaced_and_locks_tokens_and_epochs_carry_over() {
    let _slot = Slot::acquire(ALONE);
    let mut cluster = TestCluster::start_group(Timings::default(), GroupOptions::of(3), 3);
    cluster.client(&["setr", "before", "b1"]).expect_ok();
    let held = granted(&cluster, "held", "alice");
    let mut tokens = vec![held];
    for _ in 0..3 {
        tokens.push(granted(&cluster, "cycled", "carol"));
        release(&cluster, "cycled", "carol");
    }
    let before = cluster.wait_settled();
    let old = cluster.leader_index();
    let old_term = cluster
        .member_status(old)
        .unwrap_or_else(|err| panic!("the leader's status: {err}"))
        .term;

    cluster.kill_member(old);
    let killed = Instant::now();
    let mut epochs = vec![before.epoch];
    let new = wait_for(
        FAILOVER_TIMEOUT,
        "another member leads after the leader was killed",
        || {
            if let Ok(view) = cluster.try_query_servers() {
                epochs.push(view.epoch);
            }
            cluster.try_leader_index()
        },
    );
    eprintln!(
        "member {} leads {} ms after member {} was killed",
        cluster.member_id(new),
        killed.elapsed().as_millis(),
        cluster.member_id(old)
    );
    assert_ne!(new, old, "a killed member cannot lead");
    let new_term = cluster
        .member_status(new)
        .unwrap_or_else(|err| panic!("the new leader's status: {err}"))
        .term;
    assert!(
        new_term > old_term,
        "a new leader is elected in a later term: {old_term} then {new_term}"
    );

    // Nobody was expired while no leader heard the heartbeats, and the epoch never went back.
    let after = cluster.wait_settled();
    epochs.push(after.epoch);
    assert_eq!(
        after.ids(),
        before.ids(),
        "the failover expired servers that kept beating: {before:?} then {after:?}"
    );
    assert!(
        epochs.windows(2).all(|w| w[0] <= w[1]),
        "the epoch went back across the failover: {epochs:?}"
    );

    cluster.client(&["setr", "after", "a1"]).expect_ok();
    assert_eq!(cluster.getr_text("before").as_deref(), Some("b1"));
    assert_eq!(cluster.getr_text("after").as_deref(), Some("a1"));

    assert_held(&cluster, "held", "alice", held, "bob");
    let highest = tokens.iter().copied().max().unwrap_or_default();
    let fresh = granted(&cluster, "fresh", "dave");
    assert!(
        fresh > highest,
        "a grant after the failover must carry a token above every earlier one: {fresh} after \
         {tokens:?}"
    );
    let next = granted(&cluster, "cycled", "erin");
    assert!(next > fresh, "tokens keep growing: {next} after {fresh}");
    let latest = cluster.query_servers();
    assert!(
        latest.epoch >= after.epoch,
        "the epoch went back: {after:?} then {latest:?}"
    );
}

/// A client given only a follower's address (as a server or a user may be, when the leader
/// moved) is sent on to the leader: reads, lock grants and writes all work through it.
#[test]
fn a_client_that_knows_only_a_follower_is_sent_to_the_leader() {
    let _slot = Slot::acquire(SHARED);
    let cluster = TestCluster::start_group(Timings::default(), GroupOptions::of(3), 1);
    let leader = cluster.leader_index();
    let follower = (0..3).find(|index| *index != leader).unwrap_or_default();
    let view = cluster.client_at_member(follower, &["--json", "query_servers"]);
    view.expect_ok();
    assert_eq!(
        ViewDoc::parse(&view.json()).addrs(),
        cluster.live_server_addrs(),
        "the view through a follower"
    );
    let run = cluster.client_at_member(follower, &["--json", "lock_get", "l", "alice"]);
    run.expect_ok();
    let token = run.json()["token"].as_u64();
    assert!(token.is_some(), "no token: {run:?}");
    cluster
        .client_at_member(follower, &["setr", "k", "through-a-follower"])
        .expect_ok();
    assert_eq!(
        cluster.getr_text("k").as_deref(),
        Some("through-a-follower")
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Two of three members lost: a clear error, then service again, intact
// ---------------------------------------------------------------------------------------------

/// Which two of the three members die.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lost {
    /// Both followers: the leader survives alone and cannot reach a majority.
    Followers,
    /// The leader and a follower: the surviving follower cannot elect anyone.
    LeaderAndFollower,
}

/// Kills two members of a group of three as `lost` says and checks that the survivor's answers
/// (setr, lock_get, query_servers, and a getr that needs a fresh view), asked with the client's
/// default flags, fail with the error that says why (`says`); then restarts one of the killed
/// members and checks that the group serves again with its state intact: the lock's holder and
/// token, the view's servers, the data, and a next token above all before.
fn lose_two_members_then_get_one_back(lost: Lost, says: &str) {
    let _slot = Slot::acquire(ALONE);
    let mut cluster = TestCluster::start_group(Timings::default(), GroupOptions::of(3), 3);
    cluster.client(&["setr", "kept", "k1"]).expect_ok();
    let held = granted(&cluster, "held", "alice");
    let mut tokens = vec![held];
    for _ in 0..2 {
        tokens.push(granted(&cluster, "cycled", "carol"));
        release(&cluster, "cycled", "carol");
    }
    let before = cluster.wait_settled();
    let before_full = full_view(&cluster);
    let leader = cluster.leader_index();
    let followers: Vec<usize> = (0..3).filter(|index| *index != leader).collect();
    // The survivor is listed before a killed member, as it is in any order but one.
    let (survivor, killed) = match lost {
        Lost::Followers => (leader, followers.clone()),
        Lost::LeaderAndFollower => (followers[0], vec![leader, followers[1]]),
    };
    for index in &killed {
        cluster.kill_member(*index);
    }
    if lost == Lost::LeaderAndFollower {
        // Until its election timer fires, the survivor still names the dead leader.
        wait_for(
            FAILOVER_TIMEOUT,
            "the surviving follower knows no leader",
            || match cluster.member_status(survivor) {
                Ok(doc) if doc.leader.is_none() => Ok(()),
                other => Err(format!("{other:?}")),
            },
        );
    }

    // What a user sees, with the client's default flags. Problems are gathered and asserted
    // after the group is back, so that the recovery is checked whatever they are.
    let mut unclear = Vec::new();
    for args in [
        vec!["setr", "kept", "k2"],
        vec!["lock_get", "other", "bob"],
        vec!["query_servers"],
        vec!["getr", "kept"],
    ] {
        let mut full = vec!["--json", "--wait-ms", "0"];
        full.extend(&args);
        let started = Instant::now();
        let run = cluster.client(&full);
        let (kind, message) = error_of(&run);
        eprintln!(
            "`client {}` with members {:?} killed: exit {} after {} ms: {kind}: {message}",
            args.join(" "),
            killed,
            run.code,
            started.elapsed().as_millis()
        );
        if run.code != 3 || !message.contains(says) {
            unclear.push(format!(
                "`client {}` exited {} with {kind}: {message:?} (expected exit 3 and a message \
                 containing {says:?})",
                args.join(" "),
                run.code
            ));
        }
    }

    if !unclear.is_empty() {
        // What the survivor answers when it is the only member the client knows of.
        let run = cluster.client_at_member(
            survivor,
            &["--json", "--timeout-ms", "5000", "query_servers"],
        );
        unclear.push(format!(
            "(asked alone, the survivor member {} answers query_servers with exit {}: {:?})",
            cluster.member_id(survivor),
            run.code,
            error_of(&run).1
        ));
    }

    cluster.restart_member(killed[0]);
    let back = cluster.leader_index();
    eprintln!(
        "member {} leads once member {} is back",
        cluster.member_id(back),
        cluster.member_id(killed[0])
    );
    assert_held(&cluster, "held", "alice", held, "dave");
    let after = cluster.wait_settled();
    assert_eq!(
        after.servers, before.servers,
        "the view's servers changed across the loss of quorum"
    );
    assert!(
        after.epoch >= before.epoch,
        "the epoch went back: {before:?} then {after:?}"
    );
    let after_full = full_view(&cluster);
    assert_eq!(
        after_full.settled_servers, before_full.settled_servers,
        "the settled view changed across the loss of quorum"
    );
    assert_eq!(
        cluster.getr_text("kept").as_deref(),
        Some("k1"),
        "the data written before (and nothing written while no view could be had)"
    );
    let highest = tokens.iter().copied().max().unwrap_or_default();
    let fresh = granted(&cluster, "fresh", "erin");
    assert!(
        fresh > highest,
        "a grant after the group is back must carry a token above every earlier one: {fresh} \
         after {tokens:?}"
    );
    assert!(
        unclear.is_empty(),
        "with two of three members killed ({lost:?}), the survivor's answers must say why:\n{}",
        unclear.join("\n")
    );
}

/// Both followers killed: the leader alone answers that it has lost its quorum.
#[test]
fn a_leader_without_its_quorum_says_so_and_serves_again_intact_when_a_member_returns() {
    lose_two_members_then_get_one_back(Lost::Followers, "the view leader has lost its quorum");
}

/// The leader and a follower killed: the surviving follower answers that it knows no leader and
/// too few voters are reachable to elect one.
#[test]
fn a_follower_left_alone_says_no_leader_can_be_elected_and_serves_again_intact_when_a_member_returns(
) {
    lose_two_members_then_get_one_back(
        Lost::LeaderAndFollower,
        "too few of the voters [1, 2, 3] are reachable to elect one",
    );
}

// ---------------------------------------------------------------------------------------------
// 3. A member restarted past a log compaction catches up through a snapshot
// ---------------------------------------------------------------------------------------------

/// A follower is killed; while it is down, a server joins and lock grants and releases drive
/// the leader's log on until it has purged every entry the follower holds. Restarted from its data dir, the member
/// catches up through a snapshot: its status shows a snapshot at or past the leader's purged
/// index, and its applied index and epoch reach the leader's. Then, with the leader killed, the
/// two left commit only together: locks and tokens are as they were.
#[test]
fn a_member_restarted_after_a_log_compaction_catches_up_through_a_snapshot() {
    let _slot = Slot::acquire(ALONE);
    let mut cluster = TestCluster::start_group(Timings::default(), GroupOptions::of(3), 1);
    let kept = granted(&cluster, "kept", "alice");
    let mut tokens = vec![kept];
    let leader = cluster.leader_index();
    let down = (0..3).find(|index| *index != leader).unwrap_or_default();
    let other = (0..3)
        .find(|index| *index != leader && *index != down)
        .unwrap_or_default();
    let held_before = cluster
        .member_status(down)
        .unwrap_or_else(|err| panic!("the follower's status: {err}"))
        .last_log_index
        .unwrap_or_default();

    cluster.kill_member(down);
    // The view moves on while it is down too: a server joins.
    let epoch_before = cluster.query_servers().epoch;
    cluster.add_server();
    let view = cluster.wait_settled();
    assert!(
        view.epoch > epoch_before,
        "a join moves the epoch: {view:?}"
    );
    let purged = cycle_lock_until(
        &cluster,
        "cycled",
        &mut tokens,
        "the leader purged its log past every entry the killed member holds",
        || {
            let statuses = running_statuses(&cluster);
            let lead = statuses
                .iter()
                .map(|(_, doc)| doc)
                .find(|doc| doc.is_leader())
                .ok_or_else(|| format!("no leader among {statuses:?}"))?;
            match lead.purged {
                Some(purged) if purged > held_before => Ok(purged),
                _ => Err(format!(
                    "the killed member holds up to {held_before}; leader: {lead:?}"
                )),
            }
        },
    );

    cluster.restart_member(down);
    let restarted = Instant::now();
    let (caught_up, lead) = wait_for(
        SETTLE_TIMEOUT,
        "the restarted member has a snapshot past the leader's purged index and has applied as \
         far as the leader",
        || {
            let statuses = running_statuses(&cluster);
            let me = statuses
                .iter()
                .find(|(index, _)| *index == down)
                .map(|(_, doc)| doc.clone())
                .ok_or_else(|| format!("the restarted member does not answer: {statuses:?}"))?;
            let lead = statuses
                .iter()
                .map(|(_, doc)| doc.clone())
                .find(MemberDoc::is_leader)
                .ok_or_else(|| format!("no leader among {statuses:?}"))?;
            if me.snapshot.is_some_and(|s| s >= purged)
                && me.applied.is_some()
                && me.applied == lead.applied
            {
                Ok((me, lead))
            } else {
                Err(format!(
                    "purged {purged}; restarted {me:?}; leader {lead:?}"
                ))
            }
        },
    );
    eprintln!(
        "caught up {} ms after the restart: snapshot {:?} (leader purged {purged}), applied {:?}",
        restarted.elapsed().as_millis(),
        caught_up.snapshot,
        caught_up.applied
    );
    assert_eq!(
        caught_up.epoch, lead.epoch,
        "the restarted member applied another view than the leader's"
    );

    // The leader gone, nothing commits unless the restarted member takes it, and it may be the
    // one that leads now, granting from the state the snapshot gave it.
    cluster.kill_member(leader);
    let next = cluster.leader_index();
    eprintln!(
        "member {} leads with members {} and {} (the restarted one)",
        cluster.member_id(next),
        cluster.member_id(other),
        cluster.member_id(down)
    );
    assert_held(&cluster, "kept", "alice", kept, "bob");
    let highest = tokens.iter().copied().max().unwrap_or_default();
    let fresh = granted(&cluster, "fresh", "carol");
    assert!(
        fresh > highest,
        "a grant committed with the restarted member must carry a token above every earlier one: \
         {fresh} after {highest}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Adding and removing members at runtime
// ---------------------------------------------------------------------------------------------

/// What the background writer did to one key.
#[derive(Clone, Debug, Default)]
struct KeyWrites {
    /// The value of the last acknowledged setr.
    acked: Option<String>,
    /// Values of setr that failed after it: each may or may not have landed.
    unsure: Vec<String>,
}

/// A `client setr` loop over a few keys in a thread, each value unique, with the member list the
/// cluster had when it started.
struct Writer {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<(usize, BTreeMap<String, KeyWrites>)>>,
    thread: JoinHandle<()>,
}

impl Writer {
    fn start(cluster: &TestCluster, keys: usize) -> Self {
        let viewleader = cluster.viewleader_addr();
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<(usize, BTreeMap<String, KeyWrites>)>> = Arc::default();
        let thread = {
            let (stop, acks) = (stop.clone(), acks.clone());
            std::thread::spawn(move || {
                let mut round = 0;
                while !stop.load(Ordering::SeqCst) {
                    round += 1;
                    for key in (0..keys).map(|k| format!("w{k}")) {
                        let value = format!("{key}-r{round}");
                        let run = run_client(&["--viewleader", &viewleader, "setr", &key, &value]);
                        let mut acks = lock_ignoring_poison(&acks);
                        let writes = acks.1.entry(key).or_default();
                        if run.code == 0 {
                            writes.acked = Some(value);
                            writes.unsure.clear();
                            acks.0 += 1;
                        } else {
                            writes.unsure.push(value);
                        }
                    }
                }
            })
        };
        Self { stop, acks, thread }
    }

    fn acked(&self) -> usize {
        lock_ignoring_poison(&self.acks).0
    }

    /// Waits until `more` writes were acknowledged after this call.
    #[track_caller]
    fn wait_more(&self, more: usize, during: &str) {
        let target = self.acked() + more;
        wait_for(
            SETTLE_TIMEOUT,
            &format!("{more} more writes are acknowledged {during}"),
            || {
                let acked = self.acked();
                if acked >= target {
                    Ok(())
                } else {
                    Err(format!("{acked} of {target}"))
                }
            },
        );
    }

    fn stop(self) -> BTreeMap<String, KeyWrites> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the writer thread");
        let acks = lock_ignoring_poison(&self.acks);
        acks.1.clone()
    }
}

/// Waits until every running member that answers, the group's `others` excepted, shows exactly
/// `voters` and no learner, and the group agrees on a leader among them; returns their statuses.
#[track_caller]
fn wait_voters(cluster: &TestCluster, voters: &[u64], others: &[usize]) -> Vec<MemberDoc> {
    wait_for(
        SETTLE_TIMEOUT,
        &format!("every member shows the voters {voters:?}"),
        || {
            let statuses: Vec<MemberDoc> = running_statuses(cluster)
                .into_iter()
                .filter(|(index, _)| !others.contains(index))
                .map(|(_, doc)| doc)
                .collect();
            let ids: Vec<u64> = statuses.iter().map(|doc| doc.id).collect();
            if ids != voters {
                return Err(format!("members answering: {ids:?}"));
            }
            if let Some(doc) = statuses
                .iter()
                .find(|doc| doc.voters != voters || !doc.learners.is_empty())
            {
                return Err(format!("{doc:?}"));
            }
            let leader = cluster.try_leader_index()?;
            if !voters.contains(&cluster.member_id(leader)) {
                return Err(format!("member {} leads", cluster.member_id(leader)));
            }
            Ok(statuses)
        },
    )
}

/// While three servers heartbeat and a client writes, a fourth member started with `--join` is
/// added (`client viewleader add 4 ADDR`) and then the leader is removed (`client viewleader
/// remove ID`): every member shows the new voters, another member leads, no server is expired,
/// and every key written throughout reads back as its last acknowledged value (or as a later
/// write whose answer was lost).
#[test]
fn members_added_and_removed_at_runtime_change_the_voters_while_servers_beat_and_writes_land() {
    let _slot = Slot::acquire(ALONE);
    let mut cluster = TestCluster::start_group(Timings::default(), GroupOptions::of(3), 3);
    let before = cluster.wait_settled();
    let writer = Writer::start(&cluster, 4);
    writer.wait_more(4, "before any change");

    let joiner = cluster.start_joining_member();
    let joiner_id = cluster.member_id(joiner);
    assert_eq!(joiner_id, 4);
    cluster
        .client(&[
            "viewleader",
            "add",
            &joiner_id.to_string(),
            &cluster.member_addr(joiner),
        ])
        .expect_ok();
    let statuses = wait_voters(&cluster, &[1, 2, 3, 4], &[]);
    eprintln!("after the add: {statuses:?}");
    writer.wait_more(4, "after the add");

    let leaving = cluster.leader_index();
    let leaving_id = cluster.member_id(leaving);
    cluster
        .client(&["viewleader", "remove", &leaving_id.to_string()])
        .expect_ok();
    let staying: Vec<u64> = [1, 2, 3, 4]
        .into_iter()
        .filter(|id| *id != leaving_id)
        .collect();
    let statuses = wait_voters(&cluster, &staying, &[leaving]);
    eprintln!("after removing member {leaving_id}: {statuses:?}");
    // A removed member may be stopped.
    cluster.kill_member(leaving);
    writer.wait_more(4, "after the removal");
    let written = writer.stop();

    let after = cluster.wait_settled();
    assert_eq!(
        after.ids(),
        before.ids(),
        "a server was expired while the group changed: {before:?} then {after:?}"
    );
    assert!(after.epoch >= before.epoch, "{before:?} then {after:?}");
    for (key, writes) in &written {
        let Some(acked) = &writes.acked else {
            panic!("no write of {key} was ever acknowledged: {writes:?}");
        };
        let read = cluster.getr_text(key);
        assert!(
            read.as_ref() == Some(acked)
                || read.as_ref().is_some_and(|v| writes.unsure.contains(v)),
            "{key} reads {read:?}; its last acknowledged value is {acked:?} (later unacknowledged \
             writes: {:?})",
            writes.unsure
        );
    }
    let remaining = wait_voters(&cluster, &staying, &[leaving]);
    assert!(
        remaining
            .iter()
            .all(|doc| !doc.voters.contains(&leaving_id) && !doc.learners.contains(&leaving_id)),
        "the removed member is still in the group: {remaining:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Every member restarted at once
// ---------------------------------------------------------------------------------------------

/// Drive every member past a snapshot, kill -9 all three and start them all again from their
/// data dirs: the view (the same servers, an epoch not below), the settled view, the lock (its
/// holder and token) and the fencing counter (the next grant's token above all before) are as
/// they were, and the data reads back.
#[test]
fn every_member_killed_and_restarted_keeps_the_view_the_settled_view_the_locks_and_the_tokens() {
    let _slot = Slot::acquire(ALONE);
    let mut cluster = TestCluster::start_group(Timings::default(), GroupOptions::of(3), 3);
    let keys: Vec<String> = (0..5).map(|k| format!("r{k}")).collect();
    for key in &keys {
        cluster
            .client(&["setr", key, &format!("{key}-v")])
            .expect_ok();
    }
    let held = granted(&cluster, "held", "alice");
    let mut tokens = vec![held];
    let snapshots = cycle_lock_until(
        &cluster,
        "cycled",
        &mut tokens,
        "every member has taken a snapshot",
        || {
            let statuses = running_statuses(&cluster);
            if statuses.len() == 3 && statuses.iter().all(|(_, doc)| doc.snapshot.is_some()) {
                Ok(statuses
                    .iter()
                    .map(|(_, doc)| (doc.id, doc.snapshot, doc.last_log_index))
                    .collect::<Vec<_>>())
            } else {
                Err(format!("{statuses:?}"))
            }
        },
    );
    eprintln!("before the restart, (member, snapshot, last log index): {snapshots:?}");
    let before = cluster.wait_settled();
    let before_full = full_view(&cluster);

    for index in 0..3 {
        cluster.kill_member(index);
    }
    for index in 0..3 {
        cluster.restart_member(index);
    }
    let leader = cluster.leader_index();
    eprintln!(
        "member {} leads after the restart",
        cluster.member_id(leader)
    );

    let after: ViewDoc = cluster.wait_settled();
    assert_eq!(
        after.servers, before.servers,
        "the view's servers changed across the restart of every member"
    );
    assert!(
        after.epoch >= before.epoch,
        "the epoch went back across the restart: {before:?} then {after:?}"
    );
    let after_full = full_view(&cluster);
    assert_eq!(
        after_full.settled_servers, before_full.settled_servers,
        "the settled view changed across the restart"
    );
    assert!(
        after_full.settled_epoch >= before_full.settled_epoch,
        "the settled epoch went back: {} then {}",
        before_full.settled_epoch,
        after_full.settled_epoch
    );
    assert_held(&cluster, "held", "alice", held, "bob");
    let highest = tokens.iter().copied().max().unwrap_or_default();
    let fresh = granted(&cluster, "fresh", "carol");
    assert!(
        fresh > highest,
        "the fencing counter restarted: {fresh} after {highest}"
    );
    for key in &keys {
        assert_eq!(cluster.getr_text(key), Some(format!("{key}-v")));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Bad input
// ---------------------------------------------------------------------------------------------

/// `viewleader` with `--peers` that omit its own id, or that are malformed, exits non-zero
/// before serving, with a message naming what is wrong.
#[test]
fn viewleader_refuses_peers_that_omit_its_own_id_or_are_malformed() {
    let _slot = Slot::acquire(SHARED);
    let ports = unused_ports(3);
    let addr = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--id".into(),
                "3".into(),
                "--peers".into(),
                format!("1={},2={}", addr(0), addr(1)),
            ],
            "--peers must list this member's own id 3",
        ),
        (
            vec!["--peers".into(), "1=127.0.0.1".into()],
            "peer 1's address \"127.0.0.1\" is not HOST:PORT",
        ),
        (
            vec!["--peers".into(), format!("one={}", addr(0))],
            "peer id \"one\" is not a number",
        ),
        (
            vec!["--peers".into(), format!("1={},1={}", addr(0), addr(1))],
            "peer id 1 is listed twice",
        ),
        (vec!["--peers".into(), addr(0)], "is not ID=HOST:PORT"),
        (
            vec!["--join".into(), "--peers".into(), format!("1={}", addr(0))],
            "cannot be used with",
        ),
    ];
    for (mut args, says) in cases {
        args.push("--in-memory".into());
        let run = run_service_to_exit(VIEWLEADER_BIN, &args);
        assert!(
            run.code != 0 && run.stderr.contains(says),
            "`viewleader {}` must exit non-zero saying {says:?}: {run:?}",
            args.join(" ")
        );
        assert!(
            !run.stdout.contains("listening on"),
            "`viewleader {}` listened before refusing: {run:?}",
            args.join(" ")
        );
    }
}

/// `client viewleader remove 99` of a member the group does not have answers a clear error
/// (invalid request, exit 5, naming the member and the voters) and changes nothing.
#[test]
fn removing_a_member_the_group_does_not_have_is_refused_clearly() {
    let _slot = Slot::acquire(SHARED);
    let cluster = TestCluster::start_group(Timings::default(), GroupOptions::of(3), 0);
    let run = cluster.client(&["--json", "viewleader", "remove", "99"]);
    let (kind, message) = error_of(&run);
    assert!(
        run.code == 5
            && kind == "invalid_request"
            && message.contains("member 99 is not in the group (voters [1, 2, 3])"),
        "removing an unknown member must be refused, naming it and the voters: {run:?}"
    );
    let statuses = wait_voters(&cluster, &[1, 2, 3], &[]);
    assert_eq!(statuses.len(), 3, "{statuses:?}");
}
