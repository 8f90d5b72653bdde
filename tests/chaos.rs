//! The bounded chaos run inside `cargo test`: real processes (a view leader of three Raft
//! members and five servers, each in a network namespace of its own where the machine allows it,
//! each with a data dir of its own), concurrent clients and lock clients, a nemesis that strikes
//! every kind of fault it knows at least once (the group's: its leader or a follower killed and
//! restarted, its leader paused, crashed or isolated, a majority or every member killed; the
//! servers': restarts from the data dir, every server killed at once, a server replaced with its
//! data dir wiped, cut links), and the safety and liveness checks, through the `client chaos`
//! command a user would run. Also the tests of the run's own checks: the lock checker, and the
//! group-convergence and election-safety checks, each shown to reject what it must.

use std::process::Command;
use std::time::{Duration, Instant};

use ringleader::tools::chaos::liveness::{converged, sole_leader, Leaders, MemberAnswer};
use ringleader::tools::chaos::nemesis::FaultKind;
use ringleader::tools::chaos::workload::{check_locks, Grant};
use ringleader::tools::chaos::{ELECTION_TIMEOUT_MS_MAX, ELECTION_TIMEOUT_MS_MIN};
use ringleader::types::MemberStatus;
use ringleader::Error;

/// The run's least length, in s: short, since the nemesis strikes until its first round of
/// every kind is done (a fault, a hold of up to a few seconds, a settle and the group's
/// convergence each: one to two minutes, with the lease and the transaction timeout the seed
/// draws), for at most `nemesis::ROUND_OVERRUN_MS_MAX` past this. So the run lasts one round.
const CHAOS_DURATION_S: u64 = 5;
/// The command may take this long before the test calls it hung: the round's longest overrun
/// (180 s), start-up, the liveness bound and checking.
const CHAOS_DEADLINE: Duration = Duration::from_secs(300);
/// Fewer operations than this means the clients hardly ran.
const OPERATIONS_MIN: u64 = 100;
/// Fewer lock grants than this means the lock clients hardly ran.
const LOCK_GRANTS_MIN: u64 = 10;
/// The group the run starts.
const VIEWLEADER_MEMBERS: u64 = 3;

#[test]
fn a_chaos_run_strikes_every_fault_kind_and_finds_no_safety_or_liveness_violation() {
    let seed: u64 = rand::random();
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_client"))
        .args([
            "--json",
            "chaos",
            "--duration-s",
            &CHAOS_DURATION_S.to_string(),
            "--viewleaders",
            &VIEWLEADER_MEMBERS.to_string(),
            "--seed",
            &seed.to_string(),
        ])
        .env("RUST_LOG", "error,openraft=off")
        .output()
        .expect("run client chaos");
    assert!(
        started.elapsed() < CHAOS_DEADLINE,
        "chaos seed {seed} took {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!("chaos (seed {seed}) printed no JSON summary ({err}): {stdout}\n{stderr}")
    });
    eprintln!(
        "chaos seed {seed}: lease {} ms, transaction timeout {} ms, election timeout {} ms, {:.0} s",
        summary["lease_ms"],
        summary["tx_timeout_ms"],
        summary["election_timeout_ms"],
        started.elapsed().as_secs_f64()
    );
    if let Some(skipped) = summary["skipped_fault_kinds"].as_object() {
        for (kind, reason) in skipped {
            eprintln!("skipped fault kind {kind}: {reason}");
        }
    }
    let rerun = summary["rerun"].as_str().unwrap_or_default().to_string();
    assert_eq!(
        summary["violations"], 0,
        "chaos seed {seed} found violations; rerun: {rerun}\n{summary:#}\n{stderr}"
    );
    assert_eq!(output.status.code(), Some(0), "seed {seed}: {stderr}");
    assert!(
        summary["operations"].as_u64().unwrap_or(0) > OPERATIONS_MIN,
        "too few operations: {summary:#}"
    );
    assert!(
        summary["lock_grants"].as_u64().unwrap_or(0) > LOCK_GRANTS_MIN,
        "too few lock grants: {summary:#}"
    );
    assert_eq!(
        summary["viewleader_members"], VIEWLEADER_MEMBERS,
        "{summary:#}"
    );
    let election_timeout = summary["election_timeout_ms"].as_u64().unwrap_or(0);
    assert!(
        (ELECTION_TIMEOUT_MS_MIN..=ELECTION_TIMEOUT_MS_MAX).contains(&election_timeout),
        "the run's election timeout is not its own: {summary:#}"
    );
    let kinds = summary["fault_kinds"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    // The kinds that need no namespaces run everywhere: the restarts from disk among them, of
    // the servers and of the group's members, a majority down, every member down.
    for kind in FaultKind::ALL.into_iter().filter(|k| !k.needs_net()) {
        assert!(
            kinds.iter().any(|k| k == kind.name()),
            "fault kind {} is not run: {summary:#}",
            kind.name()
        );
    }
    for kind in kinds {
        let name = kind.as_str().unwrap_or_default();
        assert!(
            summary["faults"][name].as_u64().unwrap_or(0) >= 1,
            "fault kind {name} never fired (seed {seed}; rerun: {rerun}): {:#}",
            summary["faults"]
        );
    }
    let checked = summary["linearizability"].as_str().unwrap_or_default();
    assert!(
        checked.contains("0 violations, 0 unknown"),
        "seed {seed}: {checked}"
    );
}

/// A grant of `lock` to `requester` with `token`: asked for at `asked` ms, answered at
/// `granted` ms (the request answered was sent at `asked` too), release sent at `released` ms.
fn grant(
    lock: &str,
    requester: &str,
    token: u64,
    asked: u64,
    granted: u64,
    released: Option<u64>,
) -> Grant {
    Grant {
        lock: lock.into(),
        requester: requester.into(),
        token,
        asked_us: asked * 1_000,
        renewed_us: asked * 1_000,
        granted_us: granted * 1_000,
        release_sent_us: released.map(|ms| ms * 1_000),
        released: released.is_some(),
    }
}

/// The lock lease the checks below assume, in ms.
const LEASE_MS: u64 = 10_000;

#[test]
fn the_lock_checker_passes_grants_one_after_another_with_growing_tokens() {
    let grants = [
        grant("a", "x", 1, 0, 10, Some(20)),
        grant("a", "y", 2, 5, 25, Some(40)),
        grant("b", "z", 3, 30, 35, Some(50)),
        grant("a", "x", 4, 45, 50, None),
    ];
    assert_eq!(check_locks(&grants, LEASE_MS), Vec::<String>::new());
}

#[test]
fn the_lock_checker_passes_a_queued_grant_whose_token_was_drawn_before_a_later_answer() {
    // y queued on "a" at 5 and was granted at x's release (20, token 2); z's grant of "b"
    // (token 3) was answered at 30, before y's poll came back at 40 with its older token.
    let grants = [
        grant("a", "x", 1, 0, 10, Some(20)),
        grant("b", "z", 3, 25, 30, Some(60)),
        grant("a", "y", 2, 5, 40, Some(50)),
    ];
    assert_eq!(check_locks(&grants, LEASE_MS), Vec::<String>::new());
}

#[test]
fn the_lock_checker_finds_a_token_below_one_answered_before_it_was_asked_for() {
    let grants = [
        grant("a", "x", 5, 0, 10, Some(20)),
        grant("b", "y", 3, 30, 35, Some(40)),
    ];
    let findings = check_locks(&grants, LEASE_MS);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(findings[0].contains("fencing token 3"), "{findings:?}");
}

#[test]
fn the_lock_checker_finds_a_token_granted_twice() {
    let grants = [
        grant("a", "x", 5, 0, 10, Some(20)),
        grant("b", "y", 5, 0, 12, Some(40)),
    ];
    let findings = check_locks(&grants, LEASE_MS);
    assert!(
        findings.iter().any(|f| f.contains("granted twice")),
        "{findings:?}"
    );
}

#[test]
fn the_lock_checker_finds_two_holders_of_one_lock_at_once() {
    let grants = [
        grant("a", "x", 1, 0, 10, Some(100)),
        grant("a", "y", 2, 20, 50, Some(120)),
    ];
    let findings = check_locks(&grants, LEASE_MS);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(findings[0].contains("two holders"), "{findings:?}");
}

#[test]
fn the_lock_checker_allows_a_holder_whose_place_may_have_lapsed() {
    // x never released "a", but its place lapses a lock lease after its last request.
    let grants = [
        grant("a", "x", 1, 0, 10, None),
        grant("a", "y", 2, 5, LEASE_MS + 1, Some(LEASE_MS + 100)),
    ];
    assert_eq!(check_locks(&grants, LEASE_MS), Vec::<String>::new());
    // Before the lapse, the same grant is a second holder.
    let early = [
        grant("a", "x", 1, 0, 10, None),
        grant("a", "y", 2, 5, LEASE_MS - 1, Some(LEASE_MS + 100)),
    ];
    assert_eq!(check_locks(&early, LEASE_MS).len(), 1);
}

#[test]
fn the_lock_checker_passes_a_grant_answered_just_after_the_release_was_sent() {
    // The release was sent at 30 and y's grant answered at 30: the release may have been
    // applied first, so this is no overlap.
    let grants = [
        grant("a", "x", 1, 0, 10, Some(30)),
        grant("a", "y", 2, 5, 30, Some(60)),
    ];
    assert_eq!(check_locks(&grants, LEASE_MS), Vec::<String>::new());
}

/// A member's status: `role` in `term`, following `leader`, having applied up to `applied`.
fn member(id: u64, role: &str, term: u64, leader: u64, applied: u64) -> MemberAnswer {
    let addr = format!("10.0.0.{id}:39000");
    let status = MemberStatus {
        id,
        addr: addr.clone(),
        role: role.into(),
        term,
        leader: Some(leader),
        applied: Some(applied),
        ..Default::default()
    };
    (addr, Ok(status))
}

#[test]
fn the_group_check_passes_one_leader_that_every_member_follows_and_has_caught_up_with() {
    let answers = [
        member(1, "follower", 4, 2, 90),
        member(2, "leader", 4, 2, 90),
        member(3, "follower", 4, 2, 95),
    ];
    assert_eq!(converged(&answers, &mut None), Some((2, 4)));
}

#[test]
fn the_group_check_waits_for_a_member_behind_the_leader_it_first_saw() {
    let mut target = None;
    let behind = [
        member(1, "follower", 4, 2, 90),
        member(2, "leader", 4, 2, 100),
        member(3, "follower", 4, 2, 99),
    ];
    assert_eq!(converged(&behind, &mut target), None);
    assert_eq!(target, Some(100));
    // Member 3 reached what the leader had applied when first seen; that the leader went on
    // since does not hold the check back (a busy group never stands still).
    let caught_up = [
        member(1, "follower", 4, 2, 101),
        member(2, "leader", 4, 2, 120),
        member(3, "follower", 4, 2, 100),
    ];
    assert_eq!(converged(&caught_up, &mut target), Some((2, 4)));
}

#[test]
fn the_group_check_refuses_two_leaders_an_old_term_a_crashed_or_a_silent_member() {
    let two_leaders = [
        member(1, "leader", 3, 1, 90),
        member(2, "leader", 4, 2, 90),
        member(3, "follower", 4, 2, 90),
    ];
    assert_eq!(converged(&two_leaders, &mut None), None);
    let old_term = [
        member(1, "follower", 3, 2, 90),
        member(2, "leader", 4, 2, 90),
        member(3, "follower", 4, 2, 90),
    ];
    assert_eq!(converged(&old_term, &mut None), None);
    let other_leader = [
        member(1, "follower", 4, 3, 90),
        member(2, "leader", 4, 2, 90),
        member(3, "follower", 4, 2, 90),
    ];
    assert_eq!(converged(&other_leader, &mut None), None);
    let mut crashed = [
        member(1, "follower", 4, 2, 90),
        member(2, "leader", 4, 2, 90),
        member(3, "follower", 4, 2, 90),
    ];
    if let Ok(status) = &mut crashed[0].1 {
        status.crashed = true;
    }
    assert_eq!(converged(&crashed, &mut None), None);
    let silent = [
        (
            "10.0.0.1:39000".to_string(),
            Err(Error::Unreachable("connection refused".into())),
        ),
        member(2, "leader", 4, 2, 90),
        member(3, "follower", 4, 2, 90),
    ];
    assert_eq!(converged(&silent, &mut None), None);
}

#[test]
fn two_members_leading_in_one_term_are_a_safety_finding() {
    let mut leaders = Leaders::default();
    // A leader of an old term restarted from its data dir still says it leads in that term:
    // the same member in the same term is no finding.
    leaders.observe(&[member(1, "leader", 3, 1, 10), member(2, "leader", 4, 2, 20)]);
    leaders.observe(&[member(1, "leader", 3, 1, 10)]);
    assert!(leaders.findings.is_empty(), "{:?}", leaders.findings);
    leaders.observe(&[member(3, "leader", 4, 3, 20)]);
    assert_eq!(leaders.findings.len(), 1, "{:?}", leaders.findings);
}

#[test]
fn the_leader_struck_is_the_one_leading_in_the_newest_term_and_not_crashed() {
    let answers = [
        member(1, "leader", 3, 1, 10),
        member(2, "leader", 4, 2, 20),
        member(3, "follower", 4, 2, 20),
    ];
    assert_eq!(sole_leader(&answers).map(|s| s.id), Some(2));
    let mut crashed = answers.clone();
    if let Ok(status) = &mut crashed[1].1 {
        status.crashed = true;
    }
    assert_eq!(sole_leader(&crashed).map(|s| s.id), None);
}
