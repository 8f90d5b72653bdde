//! `client demo`: the README's first command. It starts a view leader and storage servers inside
//! this process, walks through what ringleader does with readable progress, and stops everything
//! it started, whatever happens.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use super::Output;
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::error::{Error, Result};
use crate::rpc::message::{LockReply, Value};

/// Keys the demo writes with `setr`.
pub const DEMO_KEYS: usize = 200;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Storage servers to start.
    #[arg(long, default_value_t = 5)]
    pub servers: usize,
}

/// Runs the demo; returns the exit code.
pub async fn run(args: DemoArgs, out: Output) -> Result<u8> {
    if args.servers < 2 {
        return Err(Error::InvalidRequest(
            "the demo needs at least 2 servers".into(),
        ));
    }
    let started = Instant::now();
    let say = |line: String| println!("[{:>5.1}s] {line}", started.elapsed().as_secs_f64());
    say(format!(
        "starting a view leader and {} storage servers on loopback",
        args.servers
    ));
    let mut cluster = LocalCluster::start(args.servers, ClusterOptions::default()).await?;
    let outcome = tour(&mut cluster, &say).await;
    say("stopping the cluster".into());
    cluster.stop().await;
    match outcome {
        Ok(summary) => {
            if out.json {
                println!("{summary}");
            }
            say("done".into());
            Ok(0)
        }
        Err(err) => Err(err),
    }
}

async fn tour(cluster: &mut LocalCluster, say: &impl Fn(String)) -> Result<serde_json::Value> {
    let client = cluster.client(10_000);
    let view = client.query_servers().await?;
    say(format!(
        "view leader at {}: epoch {}, {} servers",
        cluster.viewleader_addr,
        view.epoch,
        view.servers.len()
    ));
    for server in &view.servers {
        say(format!("  {}  id {}", server.addr, server.id));
    }

    let first = cluster.servers[0].addr.clone();
    say(format!("single-server commands on {first}:"));
    client.print(&first, "hello from the demo").await?;
    let version = client
        .set(&first, "greeting", Value::Text("hello".into()))
        .await?;
    let got = client.get(&first, "greeting").await?;
    say(format!(
        "  set greeting=hello (version {version}); get greeting -> {}",
        got.map(|v| v.value.to_string()).unwrap_or_default()
    ));

    say(format!(
        "writing {DEMO_KEYS} keys with setr (two-phase commit on 3 replicas each)"
    ));
    let write_started = Instant::now();
    for i in 0..DEMO_KEYS {
        client
            .setr(&format!("key-{i:03}"), Value::Text(format!("value-{i}")))
            .await?;
    }
    say(format!(
        "  {DEMO_KEYS} setr in {} ms",
        write_started.elapsed().as_millis()
    ));
    let placement = keys_per_server(cluster, &client).await?;
    say("keys per server (each key is on 3 of them):".into());
    for (addr, keys) in &placement {
        say(format!("  {addr}: {keys}"));
    }

    let key = "key-007";
    let replicas = client.view(true).await?.replicas(key);
    let addrs: Vec<&str> = replicas.iter().map(|r| r.addr.as_str()).collect();
    say(format!(
        "{key} lives on {} (primary first)",
        addrs.join(", ")
    ));
    let primary = replicas[0].addr.clone();
    say(format!("killing its primary {primary}"));
    cluster.kill_server(&primary).await?;
    let reader = cluster.client(10_000);
    // getr walks the replicas in ring order, so the value is found on the next one even before
    // the view leader notices the death.
    let found = reader
        .getr(key)
        .await?
        .ok_or_else(|| Error::Internal(format!("{key} was lost")))?;
    say(format!(
        "  getr {key} -> {} (from {})",
        found.value.value, found.replica.addr
    ));
    say("waiting for the view leader to expire it (lease 2 s)".into());
    let wanted = cluster.servers.len();
    let view = cluster
        .wait_for_view(Duration::from_secs(10), |v| {
            v.servers.len() == wanted && !v.rebalancing
        })
        .await?;
    say(format!(
        "  epoch {} with {} servers",
        view.epoch,
        view.servers.len()
    ));

    say("locks: FIFO, with deadlock detection and fencing tokens".into());
    let token = client.lock_get_wait("printer", "alice", |_| {}).await?;
    say(format!("  alice takes printer (token {token})"));
    if let LockReply::Retry { holder, position } = client.lock_get("printer", "bob").await? {
        say(format!(
            "  bob asks for printer: retry, held by {holder}, bob is number {position} in line"
        ));
    }
    client.lock_get_wait("scanner", "bob", |_| {}).await?;
    say("  bob takes scanner".into());
    if let LockReply::Deadlock { cycle } = client.lock_get("scanner", "alice").await? {
        say(format!(
            "  alice asks for scanner: deadlock refused ({})",
            cycle.join(" -> ")
        ));
    }
    client.lock_release("printer", "alice").await?;
    let token = client.lock_get_wait("printer", "bob", |_| {}).await?;
    say(format!(
        "  alice releases printer; bob is granted it (token {token})"
    ));

    Ok(json!({"keys": DEMO_KEYS, "servers_left": wanted, "epoch": view.epoch}))
}

async fn keys_per_server(
    cluster: &LocalCluster,
    client: &crate::Client,
) -> Result<BTreeMap<String, usize>> {
    let mut placement = BTreeMap::new();
    for server in &cluster.servers {
        let keys = client.query_all_keys(&server.addr).await?;
        placement.insert(
            server.addr.clone(),
            keys.iter().filter(|k| k.starts_with("key-")).count(),
        );
    }
    Ok(placement)
}
