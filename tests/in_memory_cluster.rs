//! A whole cluster (a view leader, four storage servers, a client) inside one process, over the
//! in-memory network of `ringleader::tools::sim`, on tokio's paused clock and seeded randomness:
//! the seam of `ringleader::net` holds, and nothing of the store needs a real socket or the real
//! time. This file holds one test so that no other test's sockets share its process.

mod common;

use std::time::Duration;

use common::in_memory::{self, wait_for_view, WAIT, WALL_START_US};
use ringleader::types::{Space, Value};

const SERVERS: u64 = 4;

/// Sockets this process holds, or `None` where `/proc` cannot tell.
fn open_sockets() -> Option<usize> {
    let entries = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(
        entries
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().starts_with("socket:"))
            .count(),
    )
}

#[tokio::test(start_paused = true)]
async fn a_cluster_on_an_in_memory_network_writes_reads_and_survives_a_view_change() {
    let sockets_before = open_sockets();
    let in_memory::InMemoryCluster {
        network,
        client,
        kills,
        stop,
    } = in_memory::start(SERVERS).await;

    let before = wait_for_view(&client, "with every server, settled", |view| {
        view.servers.len() == SERVERS as usize && !view.rebalancing
    })
    .await;
    let written = client
        .setr("k", Value::Text("v1".into()))
        .await
        .expect("setr on the in-memory cluster");
    assert!(
        written.version >= WALL_START_US,
        "versions come from the simulated wall clock, got {}",
        written.version
    );
    let read = client.getr("k").await.unwrap().expect("k was written");
    assert_eq!(read.value.value, Value::Text("v1".into()));

    // The key's primary stops as a crash would: the view leader expires it after its lease,
    // the view changes, and the survivors copy the key to the server that takes its place.
    let replicas = client.view(true).await.unwrap().replicas("k");
    assert_eq!(replicas.len(), 3);
    let victim = replicas[0].addr.clone();
    let newcomer = before
        .servers
        .iter()
        .find(|s| !replicas.contains(s))
        .expect("four servers, three replicas")
        .addr
        .clone();
    let victim_index: usize = victim
        .trim_start_matches("server")
        .trim_end_matches(":38000")
        .parse()
        .unwrap();
    kills[victim_index].cancel();
    assert!(
        tokio::time::timeout(WAIT, async {
            while network.is_listening(&victim) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .is_ok(),
        "the killed server still listens"
    );
    let after = wait_for_view(&client, "without the killed server, settled", |view| {
        view.servers.len() == SERVERS as usize - 1 && !view.rebalancing
    })
    .await;
    assert!(after.epoch > before.epoch, "a view change raises the epoch");
    assert!(after.servers.iter().all(|s| s.addr != victim));
    let moved = client.get(&newcomer, Space::Ring, "k").await.unwrap();
    assert_eq!(
        moved.map(|v| v.value),
        Some(Value::Text("v1".into())),
        "rebalancing copied the key to its new replica {newcomer}"
    );
    let read = client
        .getr("k")
        .await
        .unwrap()
        .expect("k survives the view change");
    assert_eq!(read.value.value, Value::Text("v1".into()));
    client.setr("k", Value::Text("v2".into())).await.unwrap();
    let read = client
        .getr("k")
        .await
        .unwrap()
        .expect("k was written again");
    assert_eq!(read.value.value, Value::Text("v2".into()));
    stop.cancel();

    match (sockets_before, open_sockets()) {
        (Some(before), Some(after)) => {
            assert_eq!(before, after, "the in-memory cluster opened sockets")
        }
        _ => println!("skipping the socket count: /proc/self/fd is not readable here"),
    }
}
