//! `client demo`: the README's first command. It starts a view leader and storage servers inside
//! this process, tells the story of the system with readable progress (replicated writes, where
//! keys live, servers dying, rebalancing, a server joining, locks, every server killed at once
//! and restarted from its data dir), checks every claim it makes, and stops everything it
//! started, whatever happens. The servers keep their keys in temporary data dirs, removed when
//! the demo stops.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;

use crate::cli::output::Output;
use crate::client::Client;
use crate::client::CrashPoint;
use crate::errinput;
use crate::error::{Error, Result};
use crate::ring::REPLICATION_COUNT;
use crate::tools::cluster::{ClusterOptions, LocalCluster};
use crate::types::{LockReply, Op, Value};

/// Longest the demo waits for the cluster to settle after a change.
pub const SETTLE_WAIT_MS: u64 = 20_000;
/// Clients appending to the list `guests` at once, and the items they append in all.
const GUEST_CLIENTS: usize = 3;
const GUESTS: usize = 15;
/// The key the dying client writes, and what it writes.
const DYING_KEY: &str = "key-000001";
const DYING_VALUE: &str = "written by a dying client";

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Storage servers to start.
    #[arg(long, default_value_t = 5)]
    pub servers: usize,
    /// Keys to write with setr.
    #[arg(long, default_value_t = 1_000)]
    pub keys: usize,
}

/// Runs the demo; returns the exit code.
pub async fn run(args: DemoArgs, out: Output) -> Result<u8> {
    if args.servers < 4 {
        return Err(errinput!(
            "the demo needs at least 4 servers (it kills two)"
        ));
    }
    if args.keys == 0 || args.keys > 1_000_000 {
        return Err(errinput!("--keys must be 1 to 1000000"));
    }
    let demo = Demo {
        started: Instant::now(),
        keys: args.keys,
        json: out.json,
    };
    demo.say(format!(
        "starting a view leader and {} storage servers on loopback",
        args.servers
    ));
    let mut cluster = LocalCluster::start(args.servers, ClusterOptions::default()).await?;
    let outcome = demo.tour(&mut cluster).await;
    demo.say("stopping the cluster".into());
    cluster.stop().await;
    let summary = outcome?;
    if out.json {
        println!("{summary}");
    }
    demo.say("done: every key survived with its copies".into());
    Ok(0)
}

struct Demo {
    started: Instant,
    keys: usize,
    /// With `--json` the story goes to stderr and stdout carries only the summary document.
    json: bool,
}

impl Demo {
    fn say(&self, line: String) {
        let line = format!("[{:>5.1}s] {line}", self.started.elapsed().as_secs_f64());
        if self.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }

    fn key(i: usize) -> String {
        format!("key-{i:06}")
    }

    async fn tour(&self, cluster: &mut LocalCluster) -> Result<serde_json::Value> {
        let client = cluster.client(SETTLE_WAIT_MS);
        let view = client.query_servers().await?;
        self.say(format!(
            "view leader at {}: epoch {}, {} servers",
            cluster.viewleader_addr,
            view.epoch,
            view.servers.len()
        ));

        let first = cluster.servers[0].addr.clone();
        let version = client
            .set(&first, "greeting", Value::Text("hello".into()))
            .await?;
        let got = client.get(&first, "greeting").await?;
        self.say(format!(
            "single-server set/get on {first}: greeting = {} (version {version})",
            got.map(|v| v.value.to_string()).unwrap_or_default()
        ));

        self.say(format!(
            "writing {} keys with setr (two-phase commit on {REPLICATION_COUNT} replicas each)",
            self.keys
        ));
        let write_started = Instant::now();
        for i in 0..self.keys {
            client
                .setr(&Self::key(i), Value::Text(format!("value-{i}")))
                .await?;
        }
        self.say(format!(
            "  done in {} ms",
            write_started.elapsed().as_millis()
        ));
        self.show_placement(cluster, &client).await?;

        let key = Self::key(7);
        let replicas = client.view(true).await?.replicas(&key);
        let addrs: Vec<&str> = replicas.iter().map(|r| r.addr.as_str()).collect();
        self.say(format!(
            "{key} lives on {} (primary first)",
            addrs.join(", ")
        ));
        let primary = replicas[0].addr.clone();
        self.say(format!(
            "killing its primary {primary} (no goodbye, as a crash)"
        ));
        cluster.kill_server(&primary).await?;
        // getr walks the replicas in ring order: the value is found before anyone notices.
        let found = cluster
            .client(SETTLE_WAIT_MS)
            .getr(&key)
            .await?
            .ok_or_else(|| Error::Internal(format!("{key} was lost")))?;
        self.say(format!(
            "  getr {key} -> {} (from {})",
            found.value.value, found.replica.addr
        ));
        self.settle(
            cluster,
            &client,
            "the view leader expires it after its lease (2 s)",
        )
        .await?;

        let second = cluster.servers[1].addr.clone();
        self.say(format!("killing a second server {second}"));
        cluster.kill_server(&second).await?;
        self.settle(cluster, &client, "expiry, then rebalancing")
            .await?;
        self.verify_all(&client).await?;

        self.say("adding a server back".into());
        let sent_before = self.copies_sent(cluster, &client).await;
        let added = cluster.add_server().await?;
        self.settle(cluster, &client, &format!("{added} joins; keys move to it"))
            .await?;
        let moved = self
            .copies_sent(cluster, &client)
            .await
            .saturating_sub(sent_before);
        self.say(format!(
            "  {moved} copies moved for the join (only keys whose replica set changed)"
        ));
        self.verify_all(&client).await?;

        self.say("locks: FIFO, with deadlock detection and fencing tokens".into());
        let token = client.lock_get_wait("printer", "alice", |_| {}).await?;
        self.say(format!("  alice takes printer (token {token})"));
        if let LockReply::Retry { holder, position } = client.lock_get("printer", "bob").await? {
            self.say(format!(
                "  bob asks for printer: retry, held by {holder}, bob is number {position} in line"
            ));
        }
        client.lock_get_wait("scanner", "bob", |_| {}).await?;
        self.say("  bob takes scanner".into());
        if let LockReply::Deadlock { cycle } = client.lock_get("scanner", "alice").await? {
            self.say(format!(
                "  alice asks for scanner: refused, deadlock ({})",
                cycle.join(" -> ")
            ));
        }
        client.lock_release("printer", "alice").await?;
        let token = client.lock_get_wait("printer", "bob", |_| {}).await?;
        self.say(format!(
            "  alice releases printer; bob is granted it (token {token})"
        ));

        self.faults(cluster, &client).await?;

        let recovered = self.restart_all(cluster, &client).await?;

        let view = client.query_servers().await?;
        Ok(json!({
            "keys": self.keys, "servers": view.servers.len(), "epoch": view.epoch,
            "copies_moved_on_join": moved, "keys_recovered_on_restart": recovered,
        }))
    }

    /// Kills every server at once, as `kill -9` would, restarts them all from their data dirs,
    /// and reads every key back.
    async fn restart_all(
        &self,
        cluster: &mut LocalCluster,
        client: &Client,
    ) -> Result<BTreeMap<String, u64>> {
        let before = client.query_servers().await?;
        let addrs: Vec<String> = cluster.servers.iter().map(|s| s.addr.clone()).collect();
        self.say(format!(
            "killing all {} servers at once (as kill -9 would: no goodbye, no handoff)",
            addrs.len()
        ));
        cluster.kill_all().await;
        self.say("restarting every one at its address from its data dir".into());
        let mut recovered = BTreeMap::new();
        for addr in &addrs {
            let keys = cluster.restart_server(addr).await?;
            recovered.insert(addr.clone(), keys);
        }
        let line: Vec<String> = recovered
            .iter()
            .map(|(addr, keys)| format!("{addr}={keys}"))
            .collect();
        self.say(format!(
            "  keys each recovered from disk (every key it held, not only key-*): {}",
            line.join(" ")
        ));
        self.settle(
            cluster,
            client,
            "the servers report to the view leader again",
        )
        .await?;
        let after = client.query_servers().await?;
        let same_ids = after
            .servers
            .iter()
            .filter(|s| before.servers.iter().any(|b| b.id == s.id))
            .count();
        self.say(if same_ids == after.servers.len() {
            format!(
                "  all {same_ids} are back under their old ids (their leases still held): epoch {}",
                after.epoch
            )
        } else {
            format!(
                "  {same_ids} back under their old ids, {} rejoined under new ids keeping their \
                 keys (their leases ran out): epoch {}",
                after.servers.len() - same_ids,
                after.epoch
            )
        });
        self.verify_all(client).await?;
        let guests = match client.getr("guests").await?.map(|f| f.value.value) {
            Some(Value::List(items)) => items.len(),
            _ => 0,
        };
        if guests != GUESTS {
            return Err(Error::Internal(format!(
                "guests holds {guests} items after the restart, not {GUESTS}"
            )));
        }
        self.say(format!(
            "  and the list guests still holds its {GUESTS} items"
        ));
        Ok(recovered)
    }

    /// Lists, a coordinator that dies mid-commit, and a simulated crash.
    async fn faults(&self, cluster: &LocalCluster, client: &Client) -> Result<()> {
        self.say("appends: three clients append to one list at once".into());
        let appends = (0..GUEST_CLIENTS).map(|c| async move {
            for i in 0..GUESTS / GUEST_CLIENTS {
                client
                    .append("guests", &format!("client{c}-guest{i}"))
                    .await?;
            }
            Ok::<_, Error>(())
        });
        for outcome in futures::future::join_all(appends).await {
            outcome?;
        }
        let list = client.getr("guests").await?.map(|f| f.value.value);
        let count = match &list {
            Some(Value::List(items)) => items.len(),
            _ => 0,
        };
        self.say(format!(
            "  getr guests -> a list of {count} items, each appended exactly once"
        ));

        self.say("a client dies after committing at the primary only".into());
        let outcome = client
            .write_then_crash(
                DYING_KEY,
                Op::Put(Value::Text(DYING_VALUE.into())),
                CrashPoint::AfterFirstCommit,
            )
            .await;
        self.say(format!(
            "  the client saw: {}",
            outcome.err().map(|e| e.to_string()).unwrap_or_default()
        ));
        let replicas = client.view(true).await?.replicas(DYING_KEY);
        let deadline = Instant::now() + Duration::from_millis(SETTLE_WAIT_MS);
        loop {
            let mut agreed = true;
            for replica in &replicas {
                let copy = client.get(&replica.addr, DYING_KEY).await?;
                agreed &= copy.map(|c| c.value) == Some(Value::Text(DYING_VALUE.into()));
            }
            if agreed {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(
                    "the replicas did not finish the dying client's write".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.say(format!(
            "  the other replicas asked the primary and committed too: all {} agree",
            replicas.len()
        ));

        let victim = cluster.servers[0].addr.clone();
        self.say(format!(
            "simulated crash of {victim}: it answers nothing but recover"
        ));
        client.set_crashed(&victim, true).await?;
        let stale = client
            .getr_stale("key-000002")
            .await?
            .map(|f| f.value.value.to_string())
            .unwrap_or_default();
        let linear = client
            .getr("key-000002")
            .await?
            .map(|f| f.value.value.to_string())
            .unwrap_or_default();
        self.say(format!(
            "  getr (majority) -> {linear}; getr --stale (first live replica) -> {stale}"
        ));
        client.set_crashed(&victim, false).await?;
        self.say(format!("  {victim} recovered"));
        Ok(())
    }

    /// Waits, with progress, until the view is settled and every key has exactly its copies.
    async fn settle(&self, cluster: &LocalCluster, client: &Client, what: &str) -> Result<()> {
        self.say(format!("  waiting: {what}"));
        let live = cluster.servers.len();
        let deadline = Instant::now() + Duration::from_millis(SETTLE_WAIT_MS);
        let mut last = String::new();
        loop {
            let view = client.query_servers().await?;
            let counts = self.copies_per_key(cluster, client).await?;
            let wanted = REPLICATION_COUNT.min(live);
            let exact = counts.get(&wanted).copied().unwrap_or(0);
            let state = if view.servers.len() != live {
                format!(
                    "epoch {}: {} servers in the view",
                    view.epoch,
                    view.servers.len()
                )
            } else if view.rebalancing {
                format!("epoch {}: rebalancing", view.epoch)
            } else {
                format!(
                    "epoch {}: {exact}/{} keys on exactly {wanted} servers",
                    view.epoch, self.keys
                )
            };
            if state != last {
                self.say(format!("    {state}"));
                last = state;
            }
            if view.servers.len() == live && !view.rebalancing && exact == self.keys {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the cluster did not settle within {SETTLE_WAIT_MS} ms"
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.show_placement(cluster, client).await
    }

    async fn copies_per_key(
        &self,
        cluster: &LocalCluster,
        client: &Client,
    ) -> Result<BTreeMap<usize, usize>> {
        let mut copies: BTreeMap<String, usize> = BTreeMap::new();
        for server in &cluster.servers {
            for key in client.query_all_keys(&server.addr).await? {
                if key.starts_with("key-") {
                    *copies.entry(key).or_default() += 1;
                }
            }
        }
        let mut histogram = BTreeMap::new();
        for n in copies.values() {
            *histogram.entry(*n).or_default() += 1;
        }
        Ok(histogram)
    }

    async fn show_placement(&self, cluster: &LocalCluster, client: &Client) -> Result<()> {
        let mut line = String::from("  keys per server:");
        for server in &cluster.servers {
            let keys = client.query_all_keys(&server.addr).await?;
            line.push_str(&format!(
                " {}={}",
                server.addr,
                keys.iter().filter(|k| k.starts_with("key-")).count()
            ));
        }
        self.say(line);
        Ok(())
    }

    async fn copies_sent(&self, cluster: &LocalCluster, client: &Client) -> u64 {
        let mut total = 0;
        for server in &cluster.servers {
            if let Ok(status) = client.status(&server.addr).await {
                total += status.copies_sent;
            }
        }
        total
    }

    /// Reads every key back with getr and checks its value (the dying client's key holds what
    /// it wrote once that write is done).
    async fn verify_all(&self, client: &Client) -> Result<()> {
        for i in 0..self.keys {
            let key = Self::key(i);
            let found = client
                .getr(&key)
                .await?
                .ok_or_else(|| Error::Internal(format!("{key} was lost")))?;
            let dying = Value::Text(DYING_VALUE.into());
            if found.value.value != Value::Text(format!("value-{i}"))
                && !(key == DYING_KEY && found.value.value == dying)
            {
                return Err(Error::Internal(format!(
                    "{key} has a wrong value: {}",
                    found.value.value
                )));
            }
        }
        self.say(format!(
            "  getr reads all {} keys with their values",
            self.keys
        ));
        Ok(())
    }
}
