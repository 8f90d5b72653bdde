//! The deterministic simulation (`ringleader::tools::sim`): the real view leader (a Raft group of
//! three members), storage servers and clients in one process, on turmoil's simulated network
//! and clock, under seeded faults. Every run is checked for linearizability, appends exactly
//! once, fencing, one holder per lock, epochs, answers that need a majority of the view leader's
//! members, the rules of Raft in the members' reports, and liveness after healing. A failing run
//! prints the command that replays it.
//!
//! * a seed replays one run exactly, with every kind of fault, leader elections included (the
//!   members' election timeouts are drawn from the seed);
//! * fixed seeds and a time-bounded batch of random seeds pass under the faults the code is meant
//!   to survive ([`FaultKind::HANDLED`]: every kind);
//! * servers whose machines crash come back from their disks without losing an acknowledged
//!   write, every replica of every key crashing at once (issue 14); the scenario that lost a
//!   write through a defect of the log engine (a snapshot taken before the write that
//!   triggered it was applied) keeps it fixed;
//! * a planted bug is caught;
//! * the scenarios that found the defects of the faults issue (#13) on the old code keep every
//!   promise now. The scenarios of defects 2, 4, 5 and 6 each combine faults that the old code
//!   survived one at a time; each test's doc says how they combine, what the old code did, and
//!   what holds now;
//! * the view leader's leader crashed, or cut off from the other members and then from everyone,
//!   is replaced by an election, no server leaves the view, and every promise holds (issue 15); a
//!   deposed leader that callers still reach never answers with its older view; with two of the
//!   three members down, every lock and view query fails cleanly, nobody is elected, and the view
//!   comes back intact. These scenarios run a shorter workload ([`SCENARIO_WORKLOAD_MS`]) to keep
//!   `cargo test` within its budget.

use std::time::{Duration, Instant};

use ringleader::client::RPC_ATTEMPTS_MAX;
use ringleader::faults::PlantedBug;
use ringleader::tools::sim::checks::ViewSample;
use ringleader::tools::sim::run::{
    run, Fault, FaultKind, Leadership, Outcome, SimOptions, CLIENT_TIMEOUT_MS,
    RAFT_ELECTION_TIMEOUT_MS,
};
use ringleader::viewleader::{HEARTBEAT_INTERVAL_MS_DEFAULT, LEASE_MS_DEFAULT};

/// Wall-clock budget of the random batch, so that `cargo test` stays bounded on two cores.
const RANDOM_BATCH_WALL: Duration = Duration::from_secs(30);
/// Seeds of the random batch at most, however fast they run.
const RANDOM_BATCH_SEEDS_MAX: usize = 8;
/// Operations a run must record, at least, for its pass to mean something: more than this.
const OPERATIONS_MIN: usize = 100;

fn fault(kind: FaultKind, hosts: &[&str], at_ms: u64, for_ms: u64) -> Fault {
    Fault {
        kind,
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        at_ms,
        for_ms,
    }
}

/// A run's failure, with what to type to see it again.
fn explain(options: &SimOptions, outcome: &Outcome) -> String {
    let shown: Vec<&String> = outcome.violations.iter().take(10).collect();
    format!(
        "seed {} broke {} promises, first ones:\n  {}\nreplay: {}",
        outcome.seed,
        outcome.violations.len(),
        shown
            .iter()
            .map(|v| v.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        options.replay_command()
    )
}

/// Asserts a run recorded enough operations for its pass to mean something.
#[track_caller]
fn assert_workload_ran(outcome: &Outcome) {
    assert!(
        outcome.operations > OPERATIONS_MIN,
        "seed {}: only {} operations",
        outcome.seed,
        outcome.operations
    );
}

fn assert_passes(options: &SimOptions) {
    let outcome = run(options);
    assert!(outcome.passed(), "{}", explain(options, &outcome));
    assert_workload_ran(&outcome);
}

/// One fault of every kind, one after the other, on four servers and three view-leader members:
/// the view-leader faults name the leader (and, for the last crash, a follower with it, which
/// leaves no majority for a second).
fn every_kind_of_fault() -> Vec<Fault> {
    vec![
        fault(FaultKind::Delay, &["server0", "viewleader"], 2_000, 200),
        fault(FaultKind::ClientCut, &["client0", "server1"], 3_000, 1_000),
        fault(FaultKind::ShortPause, &["server2"], 4_000, 300),
        fault(FaultKind::CutLink, &["server0", "server1"], 5_000, 1_500),
        fault(FaultKind::OneWayCut, &["server2", "server3"], 7_000, 1_500),
        fault(FaultKind::Isolate, &["server1"], 8_000, 1_500),
        fault(FaultKind::IsolateViewLeader, &["viewleader"], 9_000, 2_500),
        fault(FaultKind::LongPause, &["server3"], 11_000, 2_500),
        fault(FaultKind::SplitViewLeader, &["viewleader"], 12_000, 2_500),
        fault(FaultKind::PauseViewLeader, &["viewleader"], 15_000, 2_500),
        fault(FaultKind::Restart, &["server0"], 16_000, 200),
        fault(FaultKind::RestartWiped, &["server1"], 17_000, 200),
        fault(
            FaultKind::RestartViewLeader,
            &["viewleader", "viewleader-follower"],
            18_000,
            1_000,
        ),
    ]
}

#[test]
fn one_seed_replays_one_run_exactly_with_every_kind_of_fault() {
    if !cfg!(tokio_unstable) {
        panic!(
            "the simulation replays a seed only when built with --cfg tokio_unstable, which \
             .cargo/config.toml sets; a RUSTFLAGS in the environment replaces it"
        );
    }
    let mut options = SimOptions::new(7);
    options.schedule = Some(every_kind_of_fault());
    let first = run(&options);
    // The replay on a thread of its own, as a replay in another process would be: nothing a
    // thread keeps (openraft's seed, tokio's and std's per-thread state) may carry over.
    let second = {
        let options = options.clone();
        std::thread::spawn(move || run(&options))
            .join()
            .expect("the replay's thread panicked")
    };
    for kind in FaultKind::ALL {
        assert_eq!(
            first.faults.get(&kind),
            Some(&1),
            "{kind} was not injected once"
        );
    }
    assert_workload_ran(&first);
    if first.trace != second.trace {
        let diverged = first
            .trace
            .iter()
            .zip(&second.trace)
            .position(|(a, b)| a != b)
            .unwrap_or(first.trace.len().min(second.trace.len()));
        panic!(
            "two runs of seed 7 diverged at event {diverged}:\n  {:?}\n  {:?}",
            first.trace.get(diverged),
            second.trace.get(diverged)
        );
    }
    assert!(
        first.leaders.len() >= 2,
        "the schedule elected no second leader to replay: {:?}",
        first.leaders
    );
    assert_eq!(first.leaders, second.leaders);
    assert_eq!(first.trace_hash, second.trace_hash);
    assert_eq!(first.violations, second.violations);
}

#[test]
fn fixed_seeds_keep_every_promise_under_the_handled_faults() {
    for seed in [1, 2, 3] {
        assert_passes(&SimOptions::new(seed));
    }
}

/// Seed 500134: every server's machine crashes for longer than the lease, then the view
/// leader restarts, and long pauses keep the membership moving. The servers came back from
/// their disks having forgotten the last settled view (it was kept in memory only), so the
/// restarted view leader, which knows none, waited for a still membership and reported
/// rebalancing for 10.6 s. They keep it in their data dir now and teach it at once.
#[test]
fn servers_restarted_from_disk_teach_a_restarted_viewleader_the_settled_view() {
    assert_passes(&SimOptions::new(500_134));
}

/// Seed 600086, found by the first campaign with the view leader as a Raft group: a follower cut
/// off from everyone until the workload ends campaigns meanwhile, and when healing brings it
/// back its higher term deposes the leader (openraft has no pre-vote), so the group elects again
/// a second into the audit. The audit asked for the view once, got `NotLeader`, had no final
/// lists, and counted every acknowledged append as lost. It asks until its deadline now.
#[test]
fn the_audit_waits_out_an_election_right_after_healing() {
    assert_passes(&SimOptions::new(600_086));
}

#[test]
fn a_random_batch_of_seeds_keeps_every_promise_under_the_handled_faults() {
    let started = Instant::now();
    let mut seeds = 0;
    while seeds < RANDOM_BATCH_SEEDS_MAX && started.elapsed() < RANDOM_BATCH_WALL {
        let seed: u64 = rand::random();
        println!("random batch: seed {seed}");
        assert_passes(&SimOptions::new(seed));
        seeds += 1;
    }
    println!("random batch: {seeds} seeds in {:?}", started.elapsed());
}

/// Seeds whose runs interleave two appends to one key so that the planted bug loses one. Which
/// seeds do depends on the timing of every message: when a read's repair began to go through
/// the replica holding the value (issue 16), seeds 1 and 2 stopped producing that interleaving
/// (a survey of seeds 1 to 7 with the bug planted: caught on 3, 4, 5, 6 and 7).
const PLANTED_BUG_SEEDS: [u64; 3] = [3, 4, 5];

#[test]
fn a_participant_voting_yes_on_a_held_key_is_caught() {
    let mut caught = Vec::new();
    for seed in PLANTED_BUG_SEEDS {
        let mut options = SimOptions::new(seed);
        options.planted_bug = Some(PlantedBug::VoteYesOnHeldKeys);
        let outcome = run(&options);
        if !outcome.passed() {
            caught.push(seed);
        }
    }
    assert_eq!(
        caught, PLANTED_BUG_SEEDS,
        "the planted bug went unnoticed on some fixed seeds"
    );
}

/// The outcome of a scripted scenario.
fn scenario(seed: u64, schedule: Vec<Fault>) -> Outcome {
    scripted(SimOptions::new(seed), schedule)
}

/// The outcome of a scripted scenario, with options of its own.
fn scripted(mut options: SimOptions, schedule: Vec<Fault>) -> Outcome {
    options.schedule = Some(schedule);
    run(&options)
}

/// The outcome of a scripted scenario with options of its own, asserted to keep every promise
/// (a failure prints the command that replays it).
#[track_caller]
fn scripted_keeping_every_promise(mut options: SimOptions, schedule: Vec<Fault>) -> Outcome {
    options.schedule = Some(schedule);
    let outcome = run(&options);
    assert!(outcome.passed(), "{}", explain(&options, &outcome));
    outcome
}

/// Asserts a scenario that found defect `defect` of the faults issue on the old code keeps every
/// promise now.
#[track_caller]
fn assert_gone(outcome: &Outcome, defect: u32) {
    assert!(
        outcome.passed(),
        "defect {defect} of the faults issue is back (seed {}): {:#?}",
        outcome.seed,
        outcome.violations
    );
    assert_workload_ran(outcome);
}

/// How long a coordinator waits out a replica that does not answer before it has given up on
/// the write for good, in simulated ms: every try of the prepare, then the one try of its abort.
const COORDINATOR_GIVES_UP_MS: u64 = CLIENT_TIMEOUT_MS * (RPC_ATTEMPTS_MAX as u64 + 1);
/// Slack on a hold of coordinators' messages, in simulated ms: a client's first write after the
/// hold begins may start this much later (it finishes a read first, say) and still be given up
/// before the hold ends.
const COORDINATOR_HOLD_SLACK_MS: u64 = 500;
/// Holding a coordinator's messages this long, in simulated ms, orphans its first write: the
/// prepares it sent reach the replicas when the hold ends, after the coordinator gave up, and its
/// abort never does (it went out on a new connection, which did not open before the coordinator
/// stopped waiting). A participant alone with such a write resolves it by asking the others,
/// which today's code does (the scenarios' control runs without their last fault pass).
const ORPHANING_HOLD_MS: u64 = COORDINATOR_GIVES_UP_MS + COORDINATOR_HOLD_SLACK_MS;
/// When a scenario begins holding coordinators' messages, in simulated ms: after the quiet start,
/// with every key written.
const HOLD_AT_MS: u64 = 3_000;
/// Pause between two faults that must happen in order, in simulated ms: enough for the messages
/// the first released to be delivered and handled.
const SETTLE_MS: u64 = 50;

fn hosts(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

/// Every client's messages to each of `servers` held for [`ORPHANING_HOLD_MS`] from `at_ms`
/// (client by client, each over every server in turn): each coordinator's first write after
/// `at_ms` is orphaned on those servers.
fn orphaning_holds(options: &SimOptions, servers: &[&str], at_ms: u64) -> Vec<Fault> {
    let mut holds = Vec::new();
    for client in hosts("client", options.clients) {
        for server in servers {
            holds.push(fault(
                FaultKind::Delay,
                &[&client, server],
                at_ms,
                ORPHANING_HOLD_MS,
            ));
        }
    }
    holds
}

/// Defect 3 was a restarted view leader handing out fencing tokens from 1 again. Its leader's
/// machine now crashes for an instant, and comes back from its disk.
#[test]
fn fencing_tokens_keep_growing_across_a_viewleader_restart() {
    let outcome = scenario(
        11,
        vec![fault(
            FaultKind::RestartViewLeader,
            &["viewleader"],
            6_000,
            100,
        )],
    );
    assert_gone(&outcome, 3);
}

/// Defect 1 came from a fresh process at a dead member's address: with disks, that is a
/// replaced machine (a wiped restart), which knows nothing of the member it replaces.
#[test]
fn a_new_process_at_a_dead_members_address_never_answers_for_it() {
    let outcome = scenario(
        12,
        vec![
            fault(FaultKind::RestartWiped, &["server0"], 6_000, 50),
            fault(FaultKind::RestartWiped, &["server1"], 6_000, 50),
        ],
    );
    assert_gone(&outcome, 1);
    assert_eq!(outcome.disks.restarts_wiped, 2, "{:?}", outcome.disks);
}

/// Defect 2: the view leader restarts while three servers' links to it are slow (each held for
/// half a lease, a delay the cluster survives without the restart). The restarted view leader
/// knew no earlier view; the first server to beat was alone in the new one, held no copy to
/// offer to anybody, reported rebalanced at once, and the view settled on it. Until the others
/// re-registered, reads of the keys it lacked said "not found" and appends to them created
/// one-item lists, which then replaced the real lists (the fresh copy had the higher version).
/// Run with the production heartbeat interval and lease, under which servers re-register up to
/// an interval apart (in the simulation they beat in step, so a restart alone shows no gap). The
/// restart happens twice, with a different server first each time, so that the first one lacks
/// some key whatever the ring of the seed. The view leader is a Raft group now, whose members
/// keep every view on disk: the leader's machine crashes (the delays are listed first, so that
/// they too name the member leading before the crash), and whoever leads next must still wait
/// for the servers before settling.
#[test]
fn a_restarted_viewleader_waits_for_its_servers_before_settling() {
    /// When the view leader first crashes, in simulated ms: after the quiet start, with every
    /// key written.
    const RESTART_AT_MS: u64 = 6_000;
    /// How long the view leader stays down, in simulated ms: a quick restart.
    const DOWN_MS: u64 = 100;
    /// From the first crash to the second, in simulated ms: the cluster has long settled.
    const RESTARTS_APART_MS: u64 = 7_000;
    /// How long each late server's link to the view leader is held from the crash on, in
    /// simulated ms: half a lease, the longest delay the random schedules draw.
    const LATE_REGISTRATION_MS: u64 = LEASE_MS_DEFAULT / 2;
    let mut options = SimOptions::new(3);
    options.heartbeat_interval_ms = HEARTBEAT_INTERVAL_MS_DEFAULT;
    options.lease_ms = LEASE_MS_DEFAULT;
    // Enough keys that the first server lacks some.
    options.keys = 10;
    let servers = hosts("server", options.servers);
    let mut schedule = Vec::new();
    for (round, first) in servers.iter().take(2).enumerate() {
        let at_ms = RESTART_AT_MS + round as u64 * RESTARTS_APART_MS;
        for late in servers.iter().filter(|s| *s != first) {
            schedule.push(fault(
                FaultKind::Delay,
                &[late, "viewleader"],
                at_ms,
                LATE_REGISTRATION_MS,
            ));
        }
        schedule.push(fault(
            FaultKind::RestartViewLeader,
            &["viewleader"],
            at_ms,
            DOWN_MS,
        ));
    }
    let outcome = scripted(options, schedule);
    assert_gone(&outcome, 2);
}

/// Defect 4: every coordinator's messages are held until it has given up on its write, so the
/// replicas of the write each get its prepare late and keep it pending, with no decision coming;
/// then every server pauses for longer than a lease and shorter than the transaction timeout. The
/// view leader expires them and they rejoin under new ids while holding the prepared write. When
/// it times out, its primary no longer sees itself as the primary (`overdue()` compares the
/// current id), so it asks the others instead of aborting; they answer "prepared" and wait for
/// the primary, which answers "prepared" too: the key is locked for good. A coordinator's first
/// write after the hold begins is orphaned only if it comes before any read, so the scenario
/// runs twice.
#[test]
fn a_primary_rejoining_under_a_new_id_still_aborts_its_prepared_write() {
    /// How long every server pauses, in simulated ms: above the lease, so it is expired and
    /// rejoins under a new id, and below the transaction timeout, so nobody resolves the write
    /// before that.
    const PAUSE_MS: u64 = 2_000;
    /// The transaction timeout of the run, in simulated ms: above the pause.
    const TX_TIMEOUT_MS: u64 = 3_000;
    /// Between the starts of the two rounds, in simulated ms: the first round's writes are
    /// decided (or locked) and the rejoined servers rebalanced before the second begins.
    const ROUNDS_APART_MS: u64 = 7_000;
    /// Rounds of the scenario: each orphans a write with odds of about three in four.
    const ROUNDS: u64 = 2;
    /// The bound on the cluster being live after healing, in simulated ms: far above the
    /// transaction timeout; a key still locked then is locked for good.
    const LIVENESS_MS: u64 = 10_000;
    let mut options = SimOptions::new(1);
    options.tx_timeout_ms = TX_TIMEOUT_MS;
    options.liveness_ms = LIVENESS_MS;
    assert!(options.lease_ms < PAUSE_MS && PAUSE_MS < TX_TIMEOUT_MS);
    let servers = hosts("server", options.servers);
    let every_server: Vec<&str> = servers.iter().map(String::as_str).collect();
    let mut schedule = Vec::new();
    for round in 0..ROUNDS {
        let hold_at = HOLD_AT_MS + round * ROUNDS_APART_MS;
        schedule.extend(orphaning_holds(&options, &every_server, hold_at));
        for server in &servers {
            schedule.push(fault(
                FaultKind::LongPause,
                &[server],
                hold_at + ORPHANING_HOLD_MS + SETTLE_MS,
                PAUSE_MS,
            ));
        }
    }
    let outcome = scripted(options, schedule);
    assert_gone(&outcome, 4);
}

/// Defect 5: on three servers (every key on all of them), the coordinators' messages to
/// server0 are held until they have given up, so server0 keeps their writes prepared with no
/// decision coming; then the two other servers are cut off until the workload ends and leave
/// the view. For a write whose primary is one of them (server0 aborts the others itself), the
/// primary and the other replica are gone: server0 asks them where the write stands, hears
/// nothing from either, and (one replica besides the primary being silent) never decides: the
/// key is refused to every write while they are away. The cluster first
/// stalls, rebalancing, while server0 waits for the write to be decided before it plans; the
/// workload runs long enough to see the refusals that follow, past the bound.
#[test]
fn a_write_whose_primary_and_another_replica_left_the_view_is_resolved_by_the_survivor() {
    /// The workload, in simulated ms: long enough for the view leader to drop the two servers,
    /// for server0 to wait out its pending write before rebalancing (`PENDING_WAIT_MS_MAX`,
    /// 10 s), and then for the refusals to run past the bound of the check.
    const WORKLOAD_MS: u64 = 30_000;
    let mut options = SimOptions::new(1);
    options.servers = 3;
    options.workload_ms = WORKLOAD_MS;
    // A few more keys than the default, so that server0 is not the primary of all of them.
    options.keys = 5;
    let mut schedule = orphaning_holds(&options, &["server0"], HOLD_AT_MS);
    let cut_at = HOLD_AT_MS + ORPHANING_HOLD_MS + SETTLE_MS;
    for gone in ["server1", "server2"] {
        schedule.push(fault(
            FaultKind::Isolate,
            &[gone],
            cut_at,
            WORKLOAD_MS - cut_at,
        ));
    }
    let outcome = scripted(options, schedule);
    assert_gone(&outcome, 5);
}

/// Defect 6: one server-to-server link is cut until the workload ends (both ends still reach
/// the view leader and the clients), and another server is cut off for longer than a lease, so
/// the view changes twice (it leaves, then rejoins under a new id, which moves keys across the
/// whole ring). Some key must then move between the two cut servers; the sender retries until the link heals, never reports
/// rebalanced, and the whole cluster stays "rebalancing", refusing every read and write. The
/// auditor's view samples show it past `REBALANCE_STUCK_MS`.
#[test]
fn one_cut_link_between_servers_does_not_stall_rebalancing() {
    /// When the link between server0 and server1 is cut, in simulated ms (it stays cut until
    /// the workload ends).
    const CUT_AT_MS: u64 = 5_000;
    /// When the third server is cut off, in simulated ms: once the link is cut.
    const ISOLATE_AT_MS: u64 = 6_000;
    /// How long it stays cut off, in simulated ms: above the lease, so the view changes while
    /// the link is cut.
    const ISOLATED_MS: u64 = 2_000;
    let options = SimOptions::new(2);
    assert!(ISOLATED_MS > options.lease_ms);
    let cut_ms = options.workload_ms - CUT_AT_MS;
    let schedule = vec![
        fault(
            FaultKind::CutLink,
            &["server0", "server1"],
            CUT_AT_MS,
            cut_ms,
        ),
        fault(FaultKind::Isolate, &["server2"], ISOLATE_AT_MS, ISOLATED_MS),
    ];
    let outcome = scripted(options, schedule);
    assert_gone(&outcome, 6);
}

/// Issue 14: the servers keep their data on disks, so a machine crash loses only what was not
/// synced, and a write is acknowledged only once it is synced on a majority of its replicas.
/// Every server's machine crashes at the same instant, twice: all replicas of every key at once,
/// which in memory would lose every key. The first time the servers stay down for more than a
/// lease, so the view leader expires them and they rejoin under new ids with the keys their disks
/// hold; the second crash comes right after they are back, while they write what rejoining and
/// rebalancing bring, and catches writes that were not synced yet: each disk drops them but for
/// a torn prefix, which recovery must cut off. Every acknowledged write must still be read back
/// (linearizability), every acknowledged append must be in the final lists once, and the cluster
/// must be live after healing.
#[test]
fn a_server_crashed_with_unsynced_writes_comes_back_from_its_disk_without_losing_an_acknowledged_write(
) {
    /// When every machine first crashes, in simulated ms: after the quiet start, with every key
    /// written.
    const FIRST_CRASH_AT_MS: u64 = 6_000;
    /// Down for more than a lease: each server is expired, denied, and rejoins under a new id.
    const LONG_DOWN_MS: u64 = 1_700;
    /// From the servers' return to the second crash, in simulated ms: they are rejoining.
    const BACK_FOR_MS: u64 = 100;
    /// Down for less than a lease: each server comes back as the member it was.
    const QUICK_DOWN_MS: u64 = 300;
    let options = SimOptions::new(8);
    assert!(QUICK_DOWN_MS < options.lease_ms && options.lease_ms < LONG_DOWN_MS);
    let servers = hosts("server", options.servers);
    let every_server: Vec<&str> = servers.iter().map(String::as_str).collect();
    let schedule = vec![
        fault(
            FaultKind::Restart,
            &every_server,
            FIRST_CRASH_AT_MS,
            LONG_DOWN_MS,
        ),
        fault(
            FaultKind::Restart,
            &every_server,
            FIRST_CRASH_AT_MS + LONG_DOWN_MS + BACK_FOR_MS,
            QUICK_DOWN_MS,
        ),
    ];
    let outcome = scripted_keeping_every_promise(options, schedule);
    assert_workload_ran(&outcome);
    let disks = outcome.disks;
    let crashes = 2 * servers.len() as u64;
    assert_eq!(disks.crashes, crashes, "{disks:?}");
    assert_eq!(disks.restarts_from_disk, crashes, "{disks:?}");
    assert_eq!(disks.restarts_wiped, 0, "{disks:?}");
    assert!(
        disks.keys_recovered > 0,
        "no server read a key back from its disk: {disks:?}"
    );
    assert!(
        disks.unsynced_bytes_dropped > 0,
        "no crash caught a write that was not synced yet, which this scenario is for (choose \
         another seed or timing): {disks:?}"
    );
}

/// Found by the first campaign with restarts from disk (seed 2182139857, shrunk to this one
/// fault): every server's machine crashes at once, a little after server2 took a snapshot. The
/// log engine takes a snapshot inside the write of the record that crosses its threshold
/// (`Log::write` calls `maybe_compact`), before the caller has applied that record to the
/// in-memory state the snapshot is made from, and the snapshot then deletes the segment that
/// held the record. So the append of "client1-29" to "l1", acknowledged at 2760 ms, whose commit
/// on server2 triggered its snapshot at 2759 ms, is on server2's disk in neither the snapshot
/// nor a segment. server2 comes back without it, at the same version as the two other replicas,
/// so nothing repairs it: its next read of "l1" misses the append (linearizability), the final
/// list lacks it (appends), and the replicas disagree after healing. Found by the first
/// campaign with disk restarts; fixed in `src/storage/log.rs` (a snapshot is taken only after
/// the change that triggered it is applied).
#[test]
fn a_write_that_triggers_a_snapshot_survives_a_crash_of_every_replica() {
    /// When every machine crashes, in simulated ms: 214 ms after server2's snapshot.
    const CRASH_AT_MS: u64 = 2_973;
    /// Down for less than a lease: each server comes back as its old member.
    const DOWN_MS: u64 = 69;
    let options = SimOptions::new(2_182_139_857);
    let servers = hosts("server", options.servers);
    let every_server: Vec<&str> = servers.iter().map(String::as_str).collect();
    let schedule = vec![fault(
        FaultKind::Restart,
        &every_server,
        CRASH_AT_MS,
        DOWN_MS,
    )];
    let outcome = scripted_keeping_every_promise(options, schedule);
    assert_eq!(outcome.disks.restarts_from_disk, servers.len() as u64);
}

/// The longest a view-leader follower waits, in simulated ms, from the last word of its leader
/// until it stands: openraft's leader lease (the longest election timeout, twice the shortest)
/// and then an election timeout of up to twice the shortest.
const LONGEST_ELECTION_MS: u64 = 4 * RAFT_ELECTION_TIMEOUT_MS;
/// The workload of the view-leader scenarios whose faults are over by then, in simulated ms:
/// shorter than a default run's, which keeps `cargo test` fast (the audit follows it either
/// way).
const SCENARIO_WORKLOAD_MS: u64 = 12_000;
/// Views answered during a stretch a test holds still, at least: the auditor asks every
/// 250 ms, so a stretch of seconds without them means the view leader answered nothing.
const VIEWS_WHILE_STILL_MIN: usize = 8;

/// The member that led last before `at_ms`, as the run's polls saw it.
fn leader_before(outcome: &Outcome, at_ms: u64) -> Leadership {
    *outcome
        .leaders
        .iter()
        .filter(|l| l.since_ms < at_ms)
        .max_by_key(|l| l.term)
        .unwrap_or_else(|| panic!("no leader before {at_ms} ms: {:?}", outcome.leaders))
}

/// Asserts that a member other than `deposed` was elected, in a later term, between `from_ms`
/// and `to_ms`.
#[track_caller]
fn assert_replaced(outcome: &Outcome, deposed: Leadership, from_ms: u64, to_ms: u64) {
    let successor = outcome.leaders.iter().find(|l| {
        l.member != deposed.member
            && l.term > deposed.term
            && (from_ms..to_ms).contains(&l.since_ms)
    });
    assert!(
        successor.is_some(),
        "no member other than {} was elected between {from_ms} and {to_ms} ms: {:?}",
        deposed.member,
        outcome.leaders
    );
}

/// Asserts that the view did not move from before `from_ms` until `to_ms`: every view answered
/// meanwhile (and there were some) has the epoch of the last one answered before, with all
/// `servers` servers. An expiry or a rejoin would have moved the epoch.
#[track_caller]
fn assert_view_still(outcome: &Outcome, servers: usize, from_ms: u64, to_ms: u64) {
    let in_ms = |view: &&ViewSample| view.at_us / 1_000;
    let before = outcome
        .views
        .iter()
        .rev()
        .find(|view| in_ms(view) < from_ms)
        .unwrap_or_else(|| panic!("no view answered before {from_ms} ms"));
    assert_eq!(before.servers.len(), servers, "{before:?}");
    let during: Vec<&ViewSample> = outcome
        .views
        .iter()
        .filter(|view| (from_ms..to_ms).contains(&in_ms(view)))
        .collect();
    assert!(
        during.len() >= VIEWS_WHILE_STILL_MIN,
        "only {} views answered from {from_ms} to {to_ms} ms",
        during.len()
    );
    let moved: Vec<&&ViewSample> = during
        .iter()
        .filter(|view| view.epoch != before.epoch || view.servers.len() != servers)
        .collect();
    assert!(
        moved.is_empty(),
        "the view moved between {from_ms} and {to_ms} ms (epoch {} before): {} views, first {:?}",
        before.epoch,
        moved.len(),
        moved.first()
    );
}

/// The view leader's leader crashes mid-workload, its machine losing what it had not synced, and
/// stays down for longer than an election takes (1.5 to 2 s of silence, then a vote): the two
/// other members elect one of them, the servers and clients find it through their member lists,
/// and every promise holds across the change (fencing tokens keep growing, no epoch names two
/// views or goes backwards, every write linearizable). No server leaves the view, although none
/// could beat anyone for longer than a lease: a new leader gives everyone a full lease. The
/// crashed member comes back from its disk as a follower and catches up: the audit finds the
/// three in one group again.
#[test]
fn a_viewleader_leader_crash_mid_workload_elects_a_new_leader_and_keeps_every_promise() {
    /// When the leader crashes, in simulated ms: after the quiet start, mid-workload.
    const CRASH_AT_MS: u64 = 6_000;
    /// Down for twice the longest election.
    const DOWN_MS: u64 = 2 * LONGEST_ELECTION_MS;
    let mut options = SimOptions::new(21);
    options.workload_ms = SCENARIO_WORKLOAD_MS;
    const { assert!(CRASH_AT_MS + DOWN_MS < SCENARIO_WORKLOAD_MS) };
    let servers = options.servers;
    let schedule = vec![fault(
        FaultKind::RestartViewLeader,
        &["viewleader"],
        CRASH_AT_MS,
        DOWN_MS,
    )];
    let outcome = scripted_keeping_every_promise(options, schedule);
    assert_workload_ran(&outcome);
    assert_eq!(outcome.raft.crashes, 1, "{:?}", outcome.raft);
    let crashed = leader_before(&outcome, CRASH_AT_MS);
    assert_replaced(&outcome, crashed, CRASH_AT_MS, CRASH_AT_MS + DOWN_MS);
    assert_view_still(&outcome, servers, CRASH_AT_MS, CRASH_AT_MS + DOWN_MS);
}

/// The view leader's leader is cut off from the other two members, first while the servers and
/// clients still reach it, then from every host. Each time the two others elect one of them in a
/// later term, and when the cut heals the old leader learns of the new term and follows. Every
/// promise holds throughout, and no server leaves the view: while the first cut lasts, the
/// servers still reach the deposed leader, which does not know it was deposed; once no majority
/// has confirmed it for an election timeout it answers `NotLeader` (the quorum is lost) instead
/// of accepting their heartbeats from its own state, so they go to the other members and beat the
/// new leader, which gives everyone a full lease when it takes over. (A leader that kept
/// answering would hide every heartbeat from the new leader, which would expire every server a
/// lease after it took over: a new epoch, and the store refusing reads and writes until the cut
/// heals.)
#[test]
fn a_partitioned_viewleader_leader_is_replaced_and_every_promise_kept() {
    /// When the leader is first cut off from the other members, and for how long (in simulated
    /// ms): twice the longest election.
    const SPLIT_AT_MS: u64 = 4_000;
    const CUT_MS: u64 = 2 * LONGEST_ELECTION_MS;
    /// When the leader (by then, another member) is cut off from every host.
    const ISOLATE_AT_MS: u64 = 12_000;
    const { assert!(SPLIT_AT_MS + CUT_MS < ISOLATE_AT_MS) };
    let options = SimOptions::new(22);
    let servers = options.servers;
    let schedule = vec![
        fault(
            FaultKind::SplitViewLeader,
            &["viewleader"],
            SPLIT_AT_MS,
            CUT_MS,
        ),
        fault(
            FaultKind::IsolateViewLeader,
            &["viewleader"],
            ISOLATE_AT_MS,
            CUT_MS,
        ),
    ];
    let outcome = scripted_keeping_every_promise(options, schedule);
    assert_workload_ran(&outcome);
    let split = leader_before(&outcome, SPLIT_AT_MS);
    assert_replaced(&outcome, split, SPLIT_AT_MS, SPLIT_AT_MS + CUT_MS);
    let isolated = leader_before(&outcome, ISOLATE_AT_MS);
    assert_replaced(&outcome, isolated, ISOLATE_AT_MS, ISOLATE_AT_MS + CUT_MS);
    assert_view_still(&outcome, servers, SPLIT_AT_MS, ISOLATE_AT_MS + CUT_MS);
}

/// The view leader's leader is cut off from the other members while the servers and clients
/// still reach it, and meanwhile the view moves on at the new leader: a server's machine is
/// replaced, and it rejoins under a new id (a new epoch; its old id expires a lease later,
/// another). The deposed leader, which applied none of it, must not answer view queries with
/// its older view: callers asking during the cut are answered the newer view (a deposed leader
/// answering reads from its own state, confirming nothing, keeps every caller that asks it on
/// the older one), and no view answered after a newer one was answered carries an older epoch
/// (the `epochs` check).
#[test]
fn a_deposed_viewleader_leader_never_answers_with_an_older_view() {
    /// When the leader is cut off from the other members, in simulated ms.
    const SPLIT_AT_MS: u64 = 4_000;
    /// When the server's machine is replaced, in simulated ms: once a new leader has taken over.
    const WIPED_AT_MS: u64 = SPLIT_AT_MS + LONGEST_ELECTION_MS;
    let mut options = SimOptions::new(24);
    options.workload_ms = SCENARIO_WORKLOAD_MS;
    // The cut lasts past the replacement by the lease its old id holds the address for (the
    // new id joins when the old one expires), and by as much again for callers to ask.
    let cut_ms = WIPED_AT_MS - SPLIT_AT_MS + 2 * options.lease_ms;
    assert!(SPLIT_AT_MS + cut_ms < SCENARIO_WORKLOAD_MS);
    let schedule = vec![
        fault(
            FaultKind::SplitViewLeader,
            &["viewleader"],
            SPLIT_AT_MS,
            cut_ms,
        ),
        fault(FaultKind::RestartWiped, &["server0"], WIPED_AT_MS, 200),
    ];
    let outcome = scripted_keeping_every_promise(options, schedule);
    let split = leader_before(&outcome, SPLIT_AT_MS);
    assert_replaced(&outcome, split, SPLIT_AT_MS, SPLIT_AT_MS + cut_ms);
    let epoch_at = |from_ms: u64, to_ms: u64| {
        outcome
            .views
            .iter()
            .filter(|view| (from_ms..to_ms).contains(&(view.at_us / 1_000)))
            .map(|view| view.epoch)
            .max()
    };
    let before = epoch_at(0, SPLIT_AT_MS);
    let during = epoch_at(WIPED_AT_MS, SPLIT_AT_MS + cut_ms);
    assert!(
        before.is_some() && during > before,
        "no caller was answered a newer view while the deposed leader was reachable: epoch \
         {before:?} before, {during:?} after the rejoin"
    );
}

/// Two of the three view-leader members (the leader and a follower) crash together and stay
/// down for three seconds: no majority is left, so no entry can be committed and no read
/// confirmed. Every lock get and release and every view query made meanwhile must fail (the
/// `quorum` check), and some are made (the clients keep asking); no leader is elected
/// meanwhile; nothing the remaining member holds may be corrupted (the polls compare the
/// members' states at each applied index). When they are back from their disks, a leader is
/// elected within an election, the cluster is live again, and the view is the one from before
/// the crash: although no server could beat anyone for longer than a lease, none left it.
#[test]
fn with_two_viewleader_members_down_locks_and_views_fail_cleanly_and_nothing_is_corrupted() {
    /// When the two members crash, and for how long, in simulated ms.
    const CRASH_AT_MS: u64 = 6_000;
    const DOWN_MS: u64 = 3_000;
    const BACK_AT_MS: u64 = CRASH_AT_MS + DOWN_MS;
    let mut options = SimOptions::new(23);
    options.workload_ms = SCENARIO_WORKLOAD_MS;
    const { assert!(BACK_AT_MS + LONGEST_ELECTION_MS < SCENARIO_WORKLOAD_MS) };
    let servers = options.servers;
    let schedule = vec![fault(
        FaultKind::RestartViewLeader,
        &["viewleader", "viewleader-follower"],
        CRASH_AT_MS,
        DOWN_MS,
    )];
    let outcome = scripted_keeping_every_promise(options, schedule);
    let raft = outcome.raft;
    assert_eq!(raft.crashes, 2, "{raft:?}");
    assert_eq!(raft.quorum_losses, 1, "{raft:?}");
    assert!(
        raft.refused_without_quorum > 0,
        "no call needing a majority was made while it was down, which this scenario is for: \
         {raft:?}"
    );
    let elected = |from_ms: u64, to_ms: u64| {
        outcome
            .leaders
            .iter()
            .filter(|l| (from_ms..to_ms).contains(&l.since_ms))
            .count()
    };
    assert_eq!(
        elected(CRASH_AT_MS, BACK_AT_MS),
        0,
        "a leader without a majority: {:?}",
        outcome.leaders
    );
    assert!(
        elected(BACK_AT_MS, BACK_AT_MS + LONGEST_ELECTION_MS) > 0,
        "no leader elected within an election of the majority's return: {:?}",
        outcome.leaders
    );
    // Up to the end of the workload, when the auditor stops sampling.
    assert_view_still(&outcome, servers, CRASH_AT_MS, SCENARIO_WORKLOAD_MS);
}
