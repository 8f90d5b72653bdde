//! The rebalancing benchmark: five servers hold `--keys` keys (bulk-loaded straight onto their
//! replicas), one server is killed, and we time how long the view leader takes to notice (the
//! lease) and how long the survivors take to re-replicate, and count the copies moved against
//! the minimum the view change needs.

use std::time::{Duration, Instant};

use serde_json::json;

use super::args::BenchArgs;
use super::ringleader::bulk_load;
use crate::cli::output::Output;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::server::rebalance::minimum_copies;
use crate::tools::cluster::{ClusterOptions, LocalCluster};
use crate::types::{Key, Value};

/// Longest the benchmark waits for detection plus re-replication.
pub const REBALANCE_WAIT_MS_MAX: u64 = 300_000;
/// How often the view is polled while timing.
pub const POLL_MS: u64 = 5;

pub async fn run(args: &BenchArgs, out: Output) -> Result<()> {
    let servers = args.servers.max(2);
    out.progress(format!(
        "rebalance: starting {servers} servers, loading {} keys of {} bytes",
        args.keys, args.value_bytes
    ));
    let cluster = LocalCluster::start(servers, ClusterOptions::default()).await?;
    let outcome = measure(&cluster, args, out).await;
    cluster.stop().await;
    outcome
}

async fn measure(cluster: &LocalCluster, args: &BenchArgs, out: Output) -> Result<()> {
    let client = cluster.client(10_000);
    let view = client.query_servers().await?;
    let ring = Ring::of_servers(&view.servers);
    let keys: Vec<Key> = (0..args.keys).map(|i| format!("key-{i:08}")).collect();
    let value = Value::Text("x".repeat(args.value_bytes));
    let load_started = Instant::now();
    bulk_load(&client, &view, &ring, &keys, &value).await?;
    out.progress(format!(
        "  loaded in {} ms",
        load_started.elapsed().as_millis()
    ));

    let victim = cluster.servers[0].addr.clone();
    let survivors: Vec<String> = cluster
        .servers
        .iter()
        .skip(1)
        .map(|s| s.addr.clone())
        .collect();
    let sent_before = copies_sent(&client, &survivors).await?;
    let killed_at = Instant::now();
    // Killing through the cluster handle needs `&mut`; stop the victim's task by its address.
    cluster_kill(cluster, &victim)?;
    let deadline = killed_at + Duration::from_millis(REBALANCE_WAIT_MS_MAX);
    let (detected_at, new_view) = loop {
        let now_view = client.query_servers().await?;
        if now_view.epoch > view.epoch {
            break (Instant::now(), now_view);
        }
        wait_or_fail(deadline).await?;
    };
    let settled_at = loop {
        let now_view = client.query_servers().await?;
        if now_view.epoch == new_view.epoch && !now_view.rebalancing {
            break Instant::now();
        }
        if now_view.epoch != new_view.epoch {
            return Err(Error::Internal(
                "another view change happened during the benchmark".into(),
            ));
        }
        wait_or_fail(deadline).await?;
    };
    let moved = copies_sent(&client, &survivors)
        .await?
        .saturating_sub(sent_before);
    let minimum = minimum_copies(&ring, &Ring::of_servers(&new_view.servers), &keys) as u64;
    let detect_ms = detected_at.duration_since(killed_at).as_millis() as u64;
    let rereplicate_ms = settled_at.duration_since(detected_at).as_millis() as u64;
    let ratio = moved as f64 / (minimum.max(1)) as f64;
    if out.json {
        println!(
            "{}",
            json!({"workload": "rebalance", "keys": args.keys, "servers": cluster.servers.len(), "detect_ms": detect_ms,
                   "rereplicate_ms": rereplicate_ms, "copies_moved": moved, "copies_minimum": minimum, "moved_over_minimum": ratio})
        );
    } else {
        println!(
            "rebalance: {} keys on {} servers, one killed: detected after {detect_ms} ms (the lease), \
             re-replicated in {rereplicate_ms} ms; copies moved {moved}, minimum {minimum} ({ratio:.3}x)",
            args.keys,
            cluster.servers.len()
        );
    }
    Ok(())
}

async fn wait_or_fail(deadline: Instant) -> Result<()> {
    if Instant::now() >= deadline {
        return Err(Error::Timeout(format!(
            "no settled view within {REBALANCE_WAIT_MS_MAX} ms"
        )));
    }
    tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    Ok(())
}

fn cluster_kill(cluster: &LocalCluster, addr: &str) -> Result<()> {
    cluster.kill_by_addr(addr)
}

async fn copies_sent(client: &Client, addrs: &[String]) -> Result<u64> {
    let mut total = 0;
    for addr in addrs {
        total += client.status(addr).await?.copies_sent;
    }
    Ok(total)
}
