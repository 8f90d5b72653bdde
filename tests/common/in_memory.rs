//! A whole cluster inside the test process: a view leader, storage servers and a client on the
//! in-memory network of `ringleader::tools::sim`, for tests on tokio's paused clock (no socket,
//! no real time). Shared by the tests that need one, so each states only what it does to it.

use std::time::Duration;

use ringleader::client::{Client, ClientOptions};
use ringleader::net::{self, Env};
use ringleader::server::{self, ServerOptions};
use ringleader::tools::sim::{MemoryNetwork, SimClock};
use ringleader::types::View;
use ringleader::viewleader::{self, ViewLeaderOptions};
use tokio_util::sync::CancellationToken;

/// The view leader's address on the in-memory network.
pub const VIEWLEADER: &str = "viewleader:39000";
/// Where the simulated wall clock starts: versions are proposed from it.
pub const WALL_START_US: u64 = 1_800_000_000_000_000;
/// Bound on every wait, in simulated time.
pub const WAIT: Duration = Duration::from_secs(30);

/// A running in-memory cluster; `stop` ends every task of it.
pub struct InMemoryCluster {
    pub network: std::sync::Arc<MemoryNetwork>,
    pub client: Client,
    /// One per server (`server{i}:38000`): cancelling it kills that server as a crash would.
    pub kills: Vec<CancellationToken>,
    pub stop: CancellationToken,
}

/// Starts a view leader (lease 2 s, heartbeats every 500 ms) and `servers` in-memory servers,
/// and a client of them. Call on a paused clock.
pub async fn start(servers: u64) -> InMemoryCluster {
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
            // Tests crash and recover it (tests/leaderless_view.rs).
            fault_injection: true,
            ..Default::default()
        },
        leader_env,
        stop.clone(),
    ));
    let mut kills = Vec::new();
    for i in 0..servers {
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
                fault_injection: true,
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
    InMemoryCluster {
        network,
        client,
        kills,
        stop,
    }
}

/// Polls the view until `done` accepts it, for at most [`WAIT`] of simulated time.
pub async fn wait_for_view(client: &Client, what: &str, done: impl Fn(&View) -> bool) -> View {
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
