//! The README's first command, `client demo`, run as a user runs it: the whole tour (writes,
//! servers killed and expired, a join, locks, the view leader's own leader killed while a client
//! writes, every server killed and restarted from its data dir) on a cluster the client process
//! starts itself. The demo checks every claim it makes and exits non-zero on any that fails; this
//! test holds it to that, to its summary, and to a story a person can read.

mod common;

use std::time::Duration;

use common::BackgroundClient;

/// A debug-build demo takes about 25 s on an idle machine; a loaded two-core CI machine may
/// take several times that.
const DEMO_TIMEOUT: Duration = Duration::from_secs(240);
/// Fewer keys than the default 1,000: the tour is the same, the debug build spends less time
/// writing and reading them back.
const KEYS: u64 = 300;

#[test]
fn the_demo_tours_the_cluster_through_every_fault_and_exits_zero_with_its_summary() {
    let run = BackgroundClient::spawn(&["demo", "--keys", &KEYS.to_string(), "--json"])
        .finish(DEMO_TIMEOUT);
    run.expect_ok();
    let summary = run.json();
    assert_eq!(summary["keys"], KEYS, "{summary}");
    // 5 started, two killed and expired, one joined.
    assert_eq!(summary["servers"], 4, "{summary}");
    let failover = &summary["viewleader_failover"];
    assert_eq!(failover["members"], 3, "{summary}");
    assert_ne!(
        failover["new_leader"], failover["killed_leader"],
        "the killed leader cannot lead again at once: {summary}"
    );
    let failover_ms = failover["failover_ms"].as_u64().expect("failover_ms");
    assert!(failover_ms > 0, "{summary}");
    let writes = failover["writes"].as_u64().expect("writes");
    assert!(
        writes > 0,
        "the client wrote through the failover: {summary}"
    );
    // While nobody leads, the writer goes on with the view it holds.
    let leaderless = failover["writes_without_leader"]
        .as_u64()
        .expect("writes_without_leader");
    assert!(
        leaderless > 0,
        "no write finished between the kill and the election: {summary}"
    );
    let recovered = summary["keys_recovered_on_restart"]
        .as_object()
        .expect("keys recovered per server");
    assert_eq!(recovered.len(), 4, "every server restarted: {summary}");

    // The story is for a person: the nodes the demo kills on purpose must not drown it in
    // their warnings (RUST_LOG, when set, asks for them).
    if std::env::var_os("RUST_LOG").is_none() {
        let noise: Vec<&str> = run
            .stderr
            .lines()
            .filter(|line| line.contains(" WARN ") || line.contains(" ERROR "))
            .collect();
        assert!(
            noise.is_empty(),
            "the demo's story holds log lines: {noise:#?}"
        );
    } else {
        println!("not checking the demo's output for log lines: RUST_LOG is set");
    }
}
