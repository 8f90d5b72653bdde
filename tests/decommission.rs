//! `client decommission ADDR` through real processes (issue 17): a server asked from the client
//! leaves as SIGTERM would make it leave: it leaves the view, hands every key to its new owners,
//! and stops; the client shows the handoff as it goes; no key is lost; the view leader logs the
//! leave with its reason.

mod common;

use common::{wait_until, TestCluster, EXPIRY_TIMEOUT};

/// Keys written before the decommission.
const KEYS: usize = 60;

#[test]
fn a_decommissioned_server_hands_over_every_key_leaves_the_view_and_stops() {
    let mut cluster = TestCluster::start(4);
    for i in 0..KEYS {
        cluster
            .client(&["setr", &format!("key-{i}"), &format!("value-{i}")])
            .expect_ok();
    }
    let leaving = 1;
    let addr = cluster.server_addr(leaving);
    let run = cluster.client(&["decommission", &addr]);
    run.expect_ok();
    assert!(
        run.stdout.contains(&format!("{addr} (")) && run.stdout.contains("left the cluster"),
        "{run:?}"
    );
    // It offered every key it held to the key's owners in the view without it, and every owner
    // answered (they may have had the copy already: the survivors rebalance at the same time).
    assert!(
        run.stdout.contains("copies it offered")
            && !run.stdout.contains("of the 0 copies")
            && !run.stdout.contains("not every owner answered"),
        "{run:?}"
    );
    // Progress lines on stderr, as it is not a terminal here.
    assert!(
        run.stderr.contains(&format!("decommissioning {addr}:")),
        "{run:?}"
    );
    let mut exit_code = None;
    wait_until(EXPIRY_TIMEOUT, "the decommissioned server exits", || {
        exit_code = cluster.server_exit_code(leaving);
        exit_code.is_some()
    });
    assert_eq!(exit_code, Some(0), "a decommissioned server stops cleanly");
    let view = cluster.query_servers();
    assert!(!view.addrs().contains(&addr), "{view:?}");
    // The view leader logs the leave with its reason and the server's address, at INFO.
    let logged = cluster.viewleader_stderr();
    assert!(
        logged.lines().any(
            |line| line.contains("server left the view (it asked to leave)")
                && line.contains(&addr)
                && line.contains("INFO")
        ),
        "{logged}"
    );
    assert_eq!(view.servers.len(), 3, "{view:?}");
    for i in 0..KEYS {
        assert_eq!(
            cluster.getr_text(&format!("key-{i}")),
            Some(format!("value-{i}")),
            "key-{i} after the decommission"
        );
    }
}

#[test]
fn decommission_wants_a_servers_own_address() {
    let cluster = TestCluster::start(3);
    let run = cluster.client(&["decommission", "localhost"]);
    run.expect_code(5);
    assert!(run.stderr.contains("HOST:PORT"), "{run:?}");
    assert_eq!(cluster.query_servers().servers.len(), 3);
}

// The client waits longer for a decommission's answer than the server may take to give it.
const _: () = assert!(
    ringleader::client::DECOMMISSION_WAIT_MS
        > ringleader::server::mover::DECOMMISSION_ANSWER_MS_MAX
);
