//! A whole cluster (a view leader, four storage servers, a client) inside one process, over the
//! in-memory network of `ringleader::tools::sim`, on tokio's paused clock and seeded randomness:
//! the seam of `ringleader::net` holds, and nothing of the store needs a real socket or the real
//! time. This file holds one test so that no other test's sockets share its process.

use std::time::Duration;

use ringleader::client::{Client, ClientOptions};
use ringleader::net::{self, Env};
use ringleader::server::{self, ServerOptions};
use ringleader::tools::sim::{MemoryNetwork, SimClock};
use ringleader::types::{Value, View};
use ringleader::viewleader::{self, ViewLeaderOptions};
use tokio_util::sync::CancellationToken;

const VIEWLEADER: &str = "viewleader:39000";
/// Where the simulated wall clock starts: versions are proposed from it.
const WALL_START_US: u64 = 1_800_000_000_000_000;
const SERVERS: u64 = 4;
/// Bound on every wait, in simulated time.
const WAIT: Duration = Duration::from_secs(30);

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

async fn wait_for_view(client: &Client, what: &str, done: impl Fn(&View) -> bool) -> View {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(view) = client.query_servers().await {
            if done(&view) {
                return view;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no view {what} within {WAIT:?} of simulated time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_cluster_on_an_in_memory_network_writes_reads_and_survives_a_view_change() {
    let sockets_before = open_sockets();
    let network = MemoryNetwork::new();
    let clock = SimClock::new(WALL_START_US);
    let env = |host: &str, seed: u64| -> Env { network.env(host, clock.clone(), seed) };
    let stop = CancellationToken::new();

    let leader_env = env("viewleader", 1);
    let listener = leader_env
        .bind("viewleader", Some(39000), net::VIEWLEADER_PORTS)
        .await
        .unwrap();
    tokio::spawn(viewleader::run(
        listener,
        ViewLeaderOptions {
            heartbeat_interval_ms: 500,
            lease_ms: 2_000,
            ..Default::default()
        },
        leader_env,
        stop.clone(),
    ));
    let mut kills = Vec::new();
    for i in 0..SERVERS {
        let host = format!("server{i}");
        let server_env = env(&host, 10 + i);
        let listener = server_env
            .bind(&host, Some(38000), net::SERVER_PORTS)
            .await
            .unwrap();
        let kill = CancellationToken::new();
        tokio::spawn(server::run(
            listener,
            ServerOptions {
                viewleader: VIEWLEADER.into(),
                heartbeat_interval_ms: 500,
                ..Default::default()
            },
            server_env,
            server::Storage::Memory,
            stop.clone(),
            kill.clone(),
        ));
        kills.push(kill);
    }
    let client = Client::with_env(
        ClientOptions {
            viewleader: VIEWLEADER.into(),
            ..Default::default()
        },
        env("client", 99),
    );

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
    let moved = client.get(&newcomer, "k").await.unwrap();
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
