//! The bounded chaos run inside `cargo test`: real processes, a nemesis, concurrent clients and
//! the linearizability checker, through the `client chaos` command a user would run.

use std::process::Command;
use std::time::{Duration, Instant};

/// The run's length: long enough for every kind of fault to strike a few times, short enough
/// for CI (the whole command, with healing and checking, stays well under a minute).
const CHAOS_DURATION_S: u64 = 20;
/// The command may take this long before the test calls it hung.
const CHAOS_DEADLINE: Duration = Duration::from_secs(120);

#[test]
fn a_short_chaos_run_finds_no_linearizability_violation_lost_append_or_divergent_replica() {
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
        "chaos took {:?}",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let summary: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|err| {
        panic!("chaos (seed {seed}) printed no JSON summary ({err}): {stdout}\n{stderr}")
    });
    assert_eq!(
        output.status.code(),
        Some(0),
        "chaos seed {seed} found violations: {summary:#}\n{stderr}"
    );
    assert_eq!(summary["violations"], 0, "seed {seed}: {summary:#}");
    assert!(
        summary["operations"].as_u64().unwrap_or(0) > 100,
        "too few operations: {summary:#}"
    );
    let faults = &summary["faults"];
    let injected: u64 = ["kills", "pauses", "crashes", "coordinator_kills"]
        .iter()
        .map(|k| faults[*k].as_u64().unwrap_or(0))
        .sum();
    assert!(
        injected >= 5,
        "the nemesis hardly struck (seed {seed}): {faults}"
    );
    let checked = summary["linearizability"].as_str().unwrap_or_default();
    assert!(
        checked.contains("0 violations, 0 unknown"),
        "seed {seed}: {checked}"
    );
}
