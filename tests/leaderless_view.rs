//! A client whose view leader cannot answer, on the in-memory network of
//! `ringleader::tools::sim` and tokio's paused clock (so that waiting out a view's life costs no
//! real time): reads and writes go on with the view the client holds, for a bounded time.

mod common;

use std::time::Duration;

use common::in_memory::{self, wait_for_view, WAIT};
use ringleader::client::{VIEW_CACHE_TTL_MS, VIEW_STALE_MAX_MS};
use ringleader::error::Error;
use ringleader::types::Value;

const SERVERS: u64 = 4;

/// While the view leader cannot answer (here a simulated crash: it answers nothing), reads and
/// writes go on with the view their client holds, since each replica checks the request's epoch;
/// a caller that needs a fresh view hears that the view leader is unavailable; once the held view
/// is [`VIEW_STALE_MAX_MS`] old the client stops using it; and when the view leader is back, so is
/// everything else.
#[tokio::test(start_paused = true)]
async fn reads_and_writes_go_on_with_the_held_view_while_the_view_leader_cannot_answer() {
    let in_memory::InMemoryCluster { client, stop, .. } = in_memory::start(SERVERS).await;
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
