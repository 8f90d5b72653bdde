//! `client wait-settled` and the wait of `setr`/`getr` on a rebalancing, through real processes
//! (issue 17).
//!
//! A cluster that cannot settle is made without a race: a server is crashed (`client crash`: it
//! answers nothing and sends no heartbeat) in a cluster whose lease is far longer than the
//! test, so the view keeps it; once another server joins, the new epoch stays rebalancing, as
//! the crashed server never reports it rebalanced, until the crash is ended.

mod common;

use common::{TestCluster, Timings, EXPIRY_TIMEOUT};

/// Keys loaded before the membership changes, so that rebalancing has copies to move.
const KEYS: usize = 1_000;
/// A lease no step of the crash test comes near: the crashed server stays in the view.
const LONG_LEASE_MS: u64 = 60_000;

fn load_keys(cluster: &TestCluster) {
    let text: String = (0..KEYS).map(|i| format!("key-{i}\tvalue-{i}\n")).collect();
    let path = cluster.dir().join("keys.tsv");
    std::fs::write(&path, text).expect("write the keys");
    cluster
        .client(&["load", &path.display().to_string(), "--concurrency", "32"])
        .expect_ok();
}

/// The addresses `wait-settled` printed, one a line after its first.
fn listed_addrs(stdout: &str) -> Vec<String> {
    let mut addrs: Vec<String> = stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect();
    addrs.sort();
    addrs
}

#[test]
fn wait_settled_returns_once_a_joined_or_lost_server_is_rebalanced() {
    let mut cluster = TestCluster::start(3);
    load_keys(&cluster);

    // A server joins: once it is in the view, wait-settled returns only when it is rebalanced.
    let joined = cluster.add_server();
    let joined_addr = cluster.server_addr(joined);
    cluster.wait_for_view(EXPIRY_TIMEOUT, "the new server is in the view", |view| {
        if view.addrs().contains(&joined_addr) {
            Ok(())
        } else {
            Err(format!("{joined_addr} missing"))
        }
    });
    let run = cluster.client(&["wait-settled", "--wait-ms", "30000"]);
    run.expect_ok();
    let status = cluster.client(&["--json", "status"]).json();
    assert_eq!(status["rebalancing"], false, "{status}");
    for server in status["servers"].as_array().expect("servers") {
        assert_eq!(server["rebalancing"], false, "{status}");
        assert_eq!(server["copies_to_send"], 0, "{status}");
    }
    assert!(
        run.stdout.starts_with(&format!(
            "settled at epoch {} with 4 servers",
            status["epoch"]
        )),
        "{run:?}"
    );
    assert!(run.stdout.contains(&joined_addr), "{run:?}");

    // A server dies: the view lists it until its lease runs out, and wait-settled waits that
    // out, then for the rebalancing without it.
    let lost_addr = cluster.server_addr(0);
    cluster.kill_server(0);
    let run = cluster.client(&["--json", "wait-settled", "--wait-ms", "30000"]);
    run.expect_ok();
    assert!(run.stderr.is_empty(), "no progress with --json: {run:?}");
    let doc = run.json();
    let live: Vec<String> = cluster.live_server_addrs().into_iter().collect();
    let mut listed: Vec<String> = doc["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["addr"].as_str().expect("addr").to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, live, "{doc} (lost {lost_addr})");
    let status = cluster.client(&["--json", "status"]).json();
    assert_eq!(status["rebalancing"], false, "{status}");
    assert_eq!(status["epoch"], doc["epoch"], "{status}");

    // Settled already: it says so at once, with nothing on stderr.
    let run = cluster.client(&["wait-settled", "--wait-ms", "1000"]);
    run.expect_ok();
    assert_eq!(listed_addrs(&run.stdout), live, "{run:?}");
    assert!(run.stderr.is_empty(), "{run:?}");
}

#[test]
fn a_cluster_that_cannot_settle_times_out_naming_its_epoch_and_holds_writes_with_progress() {
    let timings = Timings {
        lease_ms: LONG_LEASE_MS,
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(timings, 3);
    let crashed = cluster.server_addr(0);
    cluster.client_on(0, &["crash"]).expect_ok();

    // The crashed server is in the view but answers nothing: not settled.
    let epoch = cluster.query_servers().epoch;
    let run = cluster.client(&["wait-settled", "--wait-ms", "1500"]);
    run.expect_code(3);
    assert!(
        run.stderr
            .contains(&format!("at epoch {epoch}, 2 of 3 servers"))
            && run.stderr.contains(&format!("{crashed} (no answer")),
        "{run:?}"
    );
    // Progress lines on stderr meanwhile.
    assert!(
        run.stderr
            .contains(&format!("epoch {epoch}: 2 of 3 servers rebalanced")),
        "{run:?}"
    );
    // With --json: the error document alone.
    let run = cluster.client(&["--json", "wait-settled", "--wait-ms", "500"]);
    run.expect_code(3);
    let (kind, message) = run.error_json();
    assert_eq!(kind, "timeout", "{run:?}");
    assert!(message.contains(&format!("at epoch {epoch}")), "{run:?}");

    // A server joins: the new epoch cannot finish rebalancing while the crashed one is silent.
    let joined = cluster.add_server();
    let joined_addr = cluster.server_addr(joined);
    let view = cluster.wait_for_view(EXPIRY_TIMEOUT, "the new server in the view", |view| {
        if view.addrs().contains(&joined_addr) && view.rebalancing {
            Ok(view.clone())
        } else {
            Err(format!("{joined_addr} missing, or settled"))
        }
    });
    // A write waits for it, and says so on stderr once it has waited a second.
    let run = cluster.client(&["setr", "k", "v", "--wait-ms", "2500"]);
    run.expect_code(4);
    assert!(
        run.stderr.contains(&format!(
            "waiting for the cluster to finish rebalancing epoch {} (",
            view.epoch
        )) && run.stderr.contains(" s of the 2.5 s --wait-ms budget)"),
        "{run:?}"
    );
    // Not with --json, and not for a wait under a second.
    let run = cluster.client(&["--json", "setr", "k", "v", "--wait-ms", "1500"]);
    run.expect_code(4);
    assert_eq!(run.error_json().0, "rebalancing", "{run:?}");
    let run = cluster.client(&["getr", "k", "--wait-ms", "400"]);
    run.expect_code(4);
    assert!(!run.stderr.contains("waiting for"), "{run:?}");
    let run = cluster.client(&["wait-settled", "--wait-ms", "500"]);
    run.expect_code(3);
    assert!(
        run.stderr.contains(&format!("at epoch {}", view.epoch))
            && run
                .stderr
                .contains("the view leader reports the view rebalancing"),
        "{run:?}"
    );

    // The crash ends: the cluster settles, and the write goes through.
    cluster.client_on(0, &["recover"]).expect_ok();
    let run = cluster.client(&["wait-settled", "--wait-ms", "30000"]);
    run.expect_ok();
    assert_eq!(
        listed_addrs(&run.stdout),
        cluster.live_server_addrs().into_iter().collect::<Vec<_>>(),
        "{run:?}"
    );
    cluster.client(&["setr", "k", "v"]).expect_ok();
    assert_eq!(cluster.getr_text("k"), Some("v".to_string()));
}
