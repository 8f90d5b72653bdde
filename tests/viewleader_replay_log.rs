//! A view-leader member restarted from its data dir replays its Raft log, and with it every
//! join and expiry it applied before: those are logged at DEBUG marked `replayed`, never again
//! at INFO as if they happened now, while a join after the restart is logged at INFO as usual.

mod common;

use std::time::Duration;

use common::{wait_until, TestCluster};

/// Longest wait for a line in a process's log.
const LOG_WAIT: Duration = Duration::from_secs(30);

/// The restarted view leader logs its state machine at DEBUG, the rest as by default.
const RUST_LOG_MACHINE_DEBUG: &str =
    "warn,ringleader=info,ringleader::viewleader::raft::machine=debug";

const JOINED: &str = "server joined the view";
const EXPIRED: &str = "server expired from the view";

/// The lines of `log` at `level` that say `what` about the server at `addr`.
fn lines<'a>(log: &'a str, level: &str, what: &str, addr: &str) -> Vec<&'a str> {
    log.lines()
        .filter(|line| line.contains(level) && line.contains(what) && line.contains(addr))
        .collect()
}

#[test]
fn a_restarted_view_leader_logs_old_joins_and_expiries_as_replayed_and_new_joins_at_info() {
    let mut cluster = TestCluster::start(2);
    let (stays, expires) = (cluster.server_addr(0), cluster.server_addr(1));
    cluster.kill_server(1);
    wait_until(LOG_WAIT, "the view leader logs the expiry", || {
        !lines(&cluster.viewleader_stderr(), "INFO", EXPIRED, &expires).is_empty()
    });
    let before = cluster.viewleader_stderr();
    for addr in [&stays, &expires] {
        assert_eq!(
            lines(&before, "INFO", JOINED, addr).len(),
            1,
            "the first view leader logs {addr}'s join once:\n{before}"
        );
    }

    cluster.kill_viewleader();
    cluster.restart_viewleader_with_env(&[("RUST_LOG", RUST_LOG_MACHINE_DEBUG)]);
    // The replay is what brings the view back: once the surviving server is in it, it is done.
    cluster.wait_for_view(
        LOG_WAIT,
        "the restarted view leader has its view back",
        |view| {
            if view.addrs().contains(&stays) {
                Ok(())
            } else {
                Err(format!("{stays} missing"))
            }
        },
    );
    let added = cluster.add_server();
    let new_addr = cluster.server_addr(added);
    wait_until(
        LOG_WAIT,
        "the restarted view leader logs the new join",
        || !lines(&cluster.viewleader_stderr(), "INFO", JOINED, &new_addr).is_empty(),
    );

    let after = cluster.viewleader_stderr();
    for (what, addr) in [(JOINED, &stays), (JOINED, &expires), (EXPIRED, &expires)] {
        assert!(
            lines(&after, "INFO", what, addr).is_empty(),
            "the restarted view leader logs \"{what}\" of {addr} again at INFO, as if it \
             happened now:\n{after}"
        );
        let replayed = lines(&after, "DEBUG", what, addr);
        assert!(
            replayed.iter().any(|line| line.contains("replayed=true")),
            "the restarted view leader replays \"{what}\" of {addr} at DEBUG, marked \
             replayed:\n{after}"
        );
    }
    let live = lines(&after, "INFO", JOINED, &new_addr);
    assert_eq!(
        live.len(),
        1,
        "the join after the restart is logged once at INFO:\n{after}"
    );
    assert!(
        !live[0].contains("replayed"),
        "a live join is not marked replayed: {}",
        live[0]
    );
}
