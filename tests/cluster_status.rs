//! `client status` on real processes: the whole cluster in one table, each server of the view
//! with what it reports of itself and its share of the ring.

mod common;

use std::time::Duration;

use common::{run_client, wait_for, TestCluster};

/// Keys written before the status is read; each is held by three servers.
const KEYS: usize = 20;
/// How long the servers' own counts may take to agree with what was written.
const STATUS_WAIT: Duration = Duration::from_secs(20);

#[test]
fn status_shows_every_server_of_the_view_with_its_keys_epoch_and_share_of_the_ring() {
    let cluster = TestCluster::start(4);
    let view = cluster.wait_settled();
    for i in 0..KEYS {
        cluster
            .client(&["setr", &format!("key-{i}"), "v"])
            .expect_ok();
    }

    let status = wait_for(STATUS_WAIT, "the servers hold every copy", || {
        let status = cluster.client(&["--json", "status"]).json();
        let held: u64 = status["servers"]
            .as_array()
            .ok_or("no servers")?
            .iter()
            .map(|s| s["keys"].as_u64().unwrap_or(0))
            .sum();
        if held == 3 * KEYS as u64 {
            Ok(status)
        } else {
            Err(format!("{held} copies in {status}"))
        }
    });
    assert_eq!(status["epoch"], view.epoch, "{status}");
    assert_eq!(status["rebalancing"], false, "{status}");
    let servers = status["servers"].as_array().expect("servers");
    let mut addrs: Vec<&str> = servers
        .iter()
        .map(|s| s["addr"].as_str().expect("addr"))
        .collect();
    addrs.sort();
    let mut expected: Vec<String> = view.servers.iter().map(|m| m.addr.clone()).collect();
    expected.sort();
    assert_eq!(addrs, expected, "{status}");
    let mut share = 0.0;
    for server in servers {
        assert_eq!(server["epoch"], view.epoch, "{status}");
        assert_eq!(server["rebalancing"], false, "{status}");
        share += server["primary_share"].as_f64().expect("primary_share");
    }
    assert!(
        (share - 1.0).abs() < 1e-6,
        "the shares add up to {share}: {status}"
    );

    let text = cluster.client(&["status"]);
    text.expect_ok();
    for addr in &expected {
        assert!(text.stdout.contains(addr.as_str()), "{addr} in {text:?}");
    }
    assert!(text.stdout.contains("PRIMARY"), "{text:?}");
}

#[test]
fn status_shows_each_servers_rate_of_operations_and_nothing_left_to_send_once_settled() {
    let cluster = TestCluster::start(3);
    cluster.wait_settled();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let viewleader = cluster.viewleader_addr();
    let status = std::thread::scope(|scope| {
        // A writer keeps every server busy while status reads their counters.
        scope.spawn(|| {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let key = format!("busy-{}", i % 5);
                run_client(&[
                    "--viewleader",
                    viewleader.as_str(),
                    "setr",
                    key.as_str(),
                    "v",
                ])
                .expect_ok();
                i += 1;
            }
        });
        // The writer stops however this ends, a failed wait included.
        let _stop_writer = StopOnDrop(&stop);
        let status = wait_for(STATUS_WAIT, "every server answers with a rate", || {
            let status = cluster.client(&["--json", "status"]).json();
            let servers = status["servers"].as_array().ok_or("no servers")?.clone();
            let busy = servers
                .iter()
                .filter(|s| s["ops_per_s"].as_f64().is_some_and(|ops| ops > 0.0))
                .count();
            if busy == servers.len() {
                Ok(status)
            } else {
                Err(format!("{busy} busy servers in {status}"))
            }
        });
        status
    });
    for server in status["servers"].as_array().expect("servers") {
        assert_eq!(server["copies_to_send"], 0, "a settled server: {status}");
    }
    let text = cluster.client(&["status"]);
    assert!(
        text.stdout.contains("OPS/S") && text.stdout.contains("TO_SEND"),
        "{text:?}"
    );
}

/// Sets its flag when dropped.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}
