//! The bounded chaos run inside `cargo test`: real processes (each in a network namespace of its
//! own where the machine allows it, each server with a data dir of its own), a nemesis that
//! strikes every kind of fault it knows at least once (among them restarts from the data dir,
//! every server killed at once, and a server replaced with its data dir wiped), concurrent
//! clients, and the safety and liveness checks, through the `client chaos` command a user would
//! run.

use std::process::Command;
use std::time::{Duration, Instant};

/// The run's length: the nemesis goes round-robin over its kinds and finishes its first round
/// past this if it must (each kind is a fault, a hold of about a lease, and a settle).
const CHAOS_DURATION_S: u64 = 25;
/// The command may take this long before the test calls it hung (duration, the nemesis's
/// overrun to finish its round, the liveness bound, start-up and checking).
const CHAOS_DEADLINE: Duration = Duration::from_secs(180);
/// Fewer operations than this means the clients hardly ran.
const OPERATIONS_MIN: u64 = 100;

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
            "--seed",
            &seed.to_string(),
        ])
        .env("RUST_LOG", "error")
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
        "chaos seed {seed}: lease {} ms, transaction timeout {} ms, {:.0} s",
        summary["lease_ms"],
        summary["tx_timeout_ms"],
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
    let kinds = summary["fault_kinds"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(kinds.len() >= 10, "too few fault kinds: {summary:#}");
    // The kinds that need no namespaces run everywhere: the restarts from disk among them.
    for name in [
        "server_kill_new_addr",
        "server_kill_same_addr",
        "server_wipe_restart",
        "kill_all_restart",
        "during_rebalance",
    ] {
        assert!(
            kinds.iter().any(|k| k == name),
            "fault kind {name} is not run: {summary:#}"
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
