//! A client whose view leader cannot answer, on the in-memory network of
//! `ringleader::tools::sim` and tokio's paused clock (so that waiting out a view's life costs no
//! real time): reads and writes go on with the view the client holds, for a bounded time.

use std::time::Duration;

use ringleader::client::{Client, ClientOptions, VIEW_CACHE_TTL_MS, VIEW_STALE_MAX_MS};
use ringleader::error::Error;
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

/// While the view leader cannot answer (here a simulated crash: it answers nothing), reads and
/// writes go on with the view their client holds, since each replica checks the request's epoch;
/// a caller that needs a fresh view hears that the view leader is unavailable; once the held view
/// is [`VIEW_STALE_MAX_MS`] old the client stops using it; and when the view leader is back, so is
/// everything else.
#[tokio::test(start_paused = true)]
async fn reads_and_writes_go_on_with_the_held_view_while_the_view_leader_cannot_answer() {
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
    for i in 0..SERVERS {
        let host = format!("server{i}");
        let server_env = env(&host, 10 + i);
        let listener = server_env
            .bind(&host, Some(38000), net::SERVER_PORTS)
            .await
            .unwrap();
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
            CancellationToken::new(),
        ));
    }
    let client = Client::with_env(
        ClientOptions {
            viewleader: VIEWLEADER.into(),
            ..Default::default()
        },
        env("client", 99),
    );
    wait_for_view(&client, "with every server, settled", |view| {
        view.servers.len() == SERVERS as usize && !view.rebalancing
    })
    .await;
    client.setr("k", Value::Text("v1".into())).await.unwrap();

    assert!(client.set_viewleader_crashed(true).await.unwrap());
    // Past the cache's life, so that the next call asks the view leader and gets no answer.
    tokio::time::sleep(Duration::from_millis(VIEW_CACHE_TTL_MS * 2)).await;
    client
        .setr("k", Value::Text("v2".into()))
        .await
        .expect("a write with the held view while the view leader does not answer");
    let read = client
        .getr("k")
        .await
        .expect("a read with the held view while the view leader does not answer")
        .expect("k was written");
    assert_eq!(read.value.value, Value::Text("v2".into()));
    match client.view(true).await {
        Err(Error::Timeout(_) | Error::Unreachable(_) | Error::NotLeader { .. }) => {}
        other => panic!("a fresh view while the view leader does not answer: {other:?}"),
    }

    tokio::time::sleep(Duration::from_millis(VIEW_STALE_MAX_MS)).await;
    match client.setr("k", Value::Text("v3".into())).await {
        Err(Error::Timeout(_) | Error::Unreachable(_) | Error::NotLeader { .. }) => {}
        other => panic!("a write with a view {VIEW_STALE_MAX_MS} ms old: {other:?}"),
    }

    assert!(!client.set_viewleader_crashed(false).await.unwrap());
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.setr("k", Value::Text("v4".into())).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no write within {WAIT:?} of the view leader's recovery"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let read = client.getr("k").await.unwrap().expect("k was written");
    assert_eq!(read.value.value, Value::Text("v4".into()));
    stop.cancel();
}
