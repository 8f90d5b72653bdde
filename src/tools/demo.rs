//! `client demo`: the README's first command. It starts a view-leader group of three members and
//! storage servers inside this process, tells the story of the system with readable progress
//! (replicated writes, where keys live, servers dying, rebalancing, a server joining, locks, the
//! view leader's own leader killed while a client writes and a lock is queued for, every server
//! killed at once and restarted from its data dir), checks every claim it makes, and stops
//! everything it started, whatever happens. The servers and members keep their data in
//! temporary directories, removed when the demo stops.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::cli::output::Output;
use crate::client::Client;
use crate::client::CrashPoint;
use crate::errinput;
use crate::error::{Error, Result};
use crate::ring::REPLICATION_COUNT;
use crate::tools::cluster::{ClusterOptions, LocalCluster};
use crate::types::{LockReply, MemberStatus, Op, Space, Value};

/// Longest the demo waits for the cluster to settle after a change.
pub const SETTLE_WAIT_MS: u64 = 20_000;
/// Clients appending to the list `guests` at once, and the items they append in all.
const GUEST_CLIENTS: usize = 3;
const GUESTS: usize = 15;
/// The key the dying client writes, and what it writes.
const DYING_KEY: &str = "key-000001";
const DYING_VALUE: &str = "written by a dying client";
/// Members of the view-leader group: the smallest that keeps serving without its leader.
const VIEWLEADER_MEMBERS: usize = 3;
/// Pause between the writes of the client that writes through the view leader's failover: a
/// steady trickle, short next to an election and a few hundred keys in all.
const FAILOVER_WRITE_EVERY_MS: u64 = 20;
/// Writes that client finishes before the leader is killed, so that it holds a view when the
/// leader goes.
const WRITES_BEFORE_KILL: usize = 10;
/// Writes that client finishes after the new leader is elected before it stops, so that its
/// view has been fetched from the new leader (a cached view lives 500 ms).
const WRITES_AFTER_ELECTION: usize = 30;
/// Longest one of that client's calls is retried while no member leads, and longest the demo
/// waits for its writes before the kill and after the election.
const FAILOVER_WAIT_MS: u64 = 15_000;

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
        "starting a view-leader group of {VIEWLEADER_MEMBERS} members and {} storage servers on \
         loopback",
        args.servers
    ));
    let options = ClusterOptions {
        viewleader_members: VIEWLEADER_MEMBERS,
        ..ClusterOptions::default()
    };
    let mut cluster = LocalCluster::start(args.servers, options).await?;
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

/// What the client that wrote through the failover did.
struct Writes {
    /// When each write (and its read back) finished, in order.
    finished: Vec<Instant>,
    slowest_ms: u64,
    /// When the slowest began and ended.
    slowest_span: (Instant, Instant),
    /// Calls that met no leader and were made again.
    retried: u64,
}

fn failover_key(n: usize) -> String {
    format!("failover-{n:04}")
}

fn failover_value(n: usize) -> Value {
    Value::Text(format!("written during the failover #{n}"))
}

fn index(applied: Option<u64>) -> String {
    applied.map_or("none".into(), |i| i.to_string())
}

/// Waits until the failover's writer has finished `wanted` writes, for at most
/// [`FAILOVER_WAIT_MS`].
async fn wait_for_writes(written: &AtomicUsize, wanted: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(FAILOVER_WAIT_MS);
    while written.load(Ordering::SeqCst) < wanted {
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "the client writing through the failover finished {} of {wanted} writes within \
                 {FAILOVER_WAIT_MS} ms",
                written.load(Ordering::SeqCst)
            )));
        }
        tokio::time::sleep(Duration::from_millis(FAILOVER_WRITE_EVERY_MS)).await;
    }
    Ok(())
}

/// `call` until it answers, made again (for at most [`FAILOVER_WAIT_MS`]) while it fails as a
/// call does when the view leader has no leader: no member leads yet, the dead one does not
/// answer, or the election outlasted the call's timeout. Counts the retries in `retried`.
async fn retry_leaderless<T, Fut>(mut call: impl FnMut() -> Fut, retried: &mut u64) -> Result<T>
where
    Fut: Future<Output = Result<T>>,
{
    let deadline = Instant::now() + Duration::from_millis(FAILOVER_WAIT_MS);
    loop {
        match call().await {
            Err(Error::NotLeader { .. } | Error::Unreachable(_) | Error::Timeout(_))
                if Instant::now() < deadline =>
            {
                *retried += 1;
                tokio::time::sleep(Duration::from_millis(FAILOVER_WRITE_EVERY_MS)).await;
            }
            other => return other,
        }
    }
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
            "view leader members at {}: epoch {}, {} servers",
            cluster.viewleader_addr,
            view.epoch,
            view.servers.len()
        ));

        let first = cluster.servers[0].addr.clone();
        let version = client
            .set(&first, "greeting", Value::Text("hello".into()))
            .await?;
        let got = client.get(&first, Space::Local, "greeting").await?;
        self.say(format!(
            "single-server set/get on {first}: greeting = {} (version {version}; that server's own \
             key, which no view change moves)",
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

        let failover = self.viewleader_failover(cluster, &client).await?;

        self.faults(cluster, &client).await?;

        let recovered = self.restart_all(cluster, &client).await?;

        let view = client.query_servers().await?;
        Ok(json!({
            "keys": self.keys, "servers": view.servers.len(), "epoch": view.epoch,
            "copies_moved_on_join": moved, "keys_recovered_on_restart": recovered,
            "viewleader_failover": failover,
        }))
    }

    /// The view leader is a Raft group too: shows it, kills its leader while a client writes
    /// and a lock is held and queued for, measures the election, checks that the writes, the
    /// lock queue and the view came through, and restarts the killed member from its data dir
    /// until it has caught up.
    async fn viewleader_failover(
        &self,
        cluster: &mut LocalCluster,
        client: &Client,
    ) -> Result<serde_json::Value> {
        let old = cluster.leader().await?;
        self.say(format!(
            "the view leader is a Raft group of {} members; member {} leads in term {} \
             (client viewleader status):",
            cluster.members().len(),
            old.id,
            old.term
        ));
        let answered = self.show_group(client).await?;
        if answered != cluster.members().len() {
            return Err(Error::Internal(format!(
                "{answered} of {} view-leader members answered status",
                cluster.members().len()
            )));
        }

        let carol = client.lock_get_wait("ledger", "carol", |_| {}).await?;
        self.check_waiting(client, "dave", "carol").await?;
        self.say(format!(
            "  carol takes the lock ledger (token {carol}); dave waits in line behind her"
        ));
        let before = client.query_servers().await?;
        // What it had applied is on disk: it must read at least that much back at restart.
        let applied_at_kill = cluster
            .member_status(old.id)
            .await?
            .and_then(|s| s.applied)
            .ok_or_else(|| Error::Internal(format!("member {} has applied nothing", old.id)))?;

        let writer = cluster.client(SETTLE_WAIT_MS);
        let written = AtomicUsize::new(0);
        let stop = CancellationToken::new();
        self.say(format!(
            "a client writes and reads back a key every {FAILOVER_WRITE_EVERY_MS} ms; after its \
             first {WRITES_BEFORE_KILL}, the leader, member {} at {}, is killed (its Raft stops, \
             as in a crash)",
            old.id, old.addr
        ));
        let failover = async {
            let outcome = self
                .elect_through(cluster, client, &old, carol, &written)
                .await;
            // The writer stops however the failover went.
            stop.cancel();
            outcome
        };
        let (failover, writes) =
            tokio::join!(failover, self.write_through(&writer, &written, &stop));
        let (killed_at, elected_at, new) = failover?;
        let writes = writes?;
        let failover_ms = elected_at.duration_since(killed_at).as_millis() as u64;
        let leaderless = writes
            .finished
            .iter()
            .filter(|at| **at >= killed_at && **at <= elected_at)
            .count();
        // While nobody leads, a write can only use the view its client already holds; once
        // that is older than the client's cache allows, its next write waits for a leader.
        let (slowest_started, slowest_finished) = writes.slowest_span;
        let spanned = slowest_started <= elected_at && slowest_finished >= killed_at;
        let across = if spanned {
            " (across the election)"
        } else {
            ""
        };
        let were = if writes.retried == 1 { "was" } else { "were" };
        self.say(format!(
            "  the client wrote and read back {} keys in all, {leaderless} of them between the \
             kill and the election (with the view it held); the slowest setr+getr took {} \
             ms{across}; {} of its calls failed for want of a leader and {were} made again",
            writes.finished.len(),
            writes.slowest_ms,
            writes.retried
        ));

        // A new leader gives every server a full lease: nobody may be expired for the silence.
        let after = client.query_servers().await?;
        let ids = |servers: &[crate::types::ServerInfo]| {
            servers.iter().map(|s| s.id.clone()).collect::<Vec<_>>()
        };
        if after.epoch != before.epoch || ids(&after.servers) != ids(&before.servers) {
            return Err(Error::Internal(format!(
                "the view changed over the failover: epoch {} with {} servers became epoch {} \
                 with {}",
                before.epoch,
                before.servers.len(),
                after.epoch,
                after.servers.len()
            )));
        }
        self.say(format!(
            "  no server was expired while nobody led: still epoch {} with the same {} servers",
            after.epoch,
            after.servers.len()
        ));

        let recovered = cluster.restart_member(old.id).await?;
        let restarted_at = Instant::now();
        let read_back = recovered.last_log_index.unwrap_or(0);
        if read_back < applied_at_kill {
            return Err(Error::Internal(format!(
                "member {} read its log back only to index {read_back}; it had applied \
                 {applied_at_kill} when killed",
                old.id
            )));
        }
        self.say(format!(
            "restarting member {} at {} from its data dir: its log read back to index \
             {read_back} (it had applied {applied_at_kill} when killed)",
            old.id, old.addr
        ));
        let (member, leader) = cluster.wait_for_catch_up(old.id).await?;
        let catch_up_ms = restarted_at.elapsed().as_millis() as u64;
        self.say(format!(
            "  caught up in {catch_up_ms} ms: applied index {} (the leader's {}), a follower of \
             member {} in term {}",
            index(member.applied),
            index(leader.applied),
            leader.id,
            leader.term
        ));
        let answered = self.show_group(client).await?;
        if answered != cluster.members().len() {
            return Err(Error::Internal(format!(
                "{answered} of {} view-leader members answered status after the restart",
                cluster.members().len()
            )));
        }
        self.verify_failover_keys(client, writes.finished.len())
            .await?;
        Ok(json!({
            "members": cluster.members().len(), "killed_leader": old.id, "new_leader": new.id,
            "term": new.term, "failover_ms": failover_ms, "catch_up_ms": catch_up_ms,
            "writes": writes.finished.len(), "writes_without_leader": leaderless,
        }))
    }

    /// Once the writer has made [`WRITES_BEFORE_KILL`] writes, kills the leader `old`, waits
    /// for the group to elect another, and takes the lock queue through it: dave still waits
    /// behind carol (who holds `carol`'s token), carol releases, dave is granted a larger
    /// token. Then waits for [`WRITES_AFTER_ELECTION`] more writes. Answers when the leader had
    /// stopped, when the new one was known, and the new one.
    async fn elect_through(
        &self,
        cluster: &mut LocalCluster,
        client: &Client,
        old: &MemberStatus,
        carol: u64,
        written: &AtomicUsize,
    ) -> Result<(Instant, Instant, MemberStatus)> {
        wait_for_writes(written, WRITES_BEFORE_KILL).await?;
        cluster.kill_member(old.id).await?;
        let killed_at = Instant::now();
        let new = cluster.leader().await?;
        let elected_at = Instant::now();
        if new.id == old.id || new.term <= old.term {
            return Err(Error::Internal(format!(
                "no new leader: member {} leads in term {} (member {} led in term {})",
                new.id, new.term, old.id, old.term
            )));
        }
        // openraft 0.9's rule: a follower that knew a leader lets that leader's lease (the
        // longest election timeout) run out, then waits its own election timeout, drawn once
        // between the shortest and the longest.
        let timeout = cluster.options().viewleader.raft.election_timeout_ms;
        self.say(format!(
            "  member {} elected leader in term {}, {} ms after the old leader stopped (a \
             follower that hears nothing lets the leader's lease, {} ms, run out, then waits its \
             own election timeout, {timeout} to {} ms)",
            new.id,
            new.term,
            elected_at.duration_since(killed_at).as_millis(),
            timeout.saturating_mul(2),
            timeout.saturating_mul(2)
        ));

        self.check_waiting(client, "dave", "carol").await?;
        client.lock_release("ledger", "carol").await?;
        let dave = match client.lock_get("ledger", "dave").await? {
            LockReply::Granted { token } if token > carol => token,
            other => {
                return Err(Error::Internal(format!(
                    "dave should be granted ledger with a token above {carol}: {other:?}"
                )))
            }
        };
        client.lock_release("ledger", "dave").await?;
        self.say(format!(
            "  through the new leader: dave was still in line behind carol; carol releases, dave \
             is granted ledger (token {dave}, above carol's {carol})"
        ));

        let wanted = written.load(Ordering::SeqCst) + WRITES_AFTER_ELECTION;
        wait_for_writes(written, wanted).await?;
        Ok((killed_at, elected_at, new))
    }

    /// Checks that `waiter` is next in line for ledger behind `holder`.
    async fn check_waiting(&self, client: &Client, waiter: &str, holder: &str) -> Result<()> {
        match client.lock_get("ledger", waiter).await? {
            LockReply::Retry {
                holder: held_by,
                position: 1,
            } if held_by == holder => Ok(()),
            other => Err(Error::Internal(format!(
                "{waiter} should be next in line for ledger behind {holder}: {other:?}"
            ))),
        }
    }

    /// Writes `failover-N` and reads it back until `stop` fires, one key every
    /// [`FAILOVER_WRITE_EVERY_MS`]; counts finished writes in `written`.
    async fn write_through(
        &self,
        client: &Client,
        written: &AtomicUsize,
        stop: &CancellationToken,
    ) -> Result<Writes> {
        let now = Instant::now();
        let mut writes = Writes {
            finished: Vec::new(),
            slowest_ms: 0,
            slowest_span: (now, now),
            retried: 0,
        };
        while !stop.is_cancelled() {
            let n = writes.finished.len();
            let key = failover_key(n);
            let value = failover_value(n);
            let started = Instant::now();
            retry_leaderless(|| client.setr(&key, value.clone()), &mut writes.retried).await?;
            let found = retry_leaderless(|| client.getr(&key), &mut writes.retried).await?;
            if found.map(|f| f.value.value) != Some(value) {
                return Err(Error::Internal(format!(
                    "{key} did not read back as written during the failover"
                )));
            }
            let finished = Instant::now();
            let took_ms = finished.duration_since(started).as_millis() as u64;
            if took_ms >= writes.slowest_ms {
                writes.slowest_ms = took_ms;
                writes.slowest_span = (started, finished);
            }
            writes.finished.push(finished);
            written.fetch_add(1, Ordering::SeqCst);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(FAILOVER_WRITE_EVERY_MS)) => {}
            }
        }
        Ok(writes)
    }

    /// Reads every key written during the failover back once more.
    async fn verify_failover_keys(&self, client: &Client, count: usize) -> Result<()> {
        for n in 0..count {
            let key = failover_key(n);
            let found = client.getr(&key).await?.map(|f| f.value.value);
            if found != Some(failover_value(n)) {
                return Err(Error::Internal(format!(
                    "{key} was lost or changed after the failover: {found:?}"
                )));
            }
        }
        self.say(format!(
            "  getr reads all {count} keys written during the failover with their values"
        ));
        Ok(())
    }

    /// Prints every member's status as `client viewleader status` gets it; answers how many
    /// members answered.
    async fn show_group(&self, client: &Client) -> Result<usize> {
        let mut answered = 0;
        for (addr, answer) in client.group_status().await? {
            match answer {
                Ok(status) => {
                    answered += 1;
                    let following = match status.leader {
                        Some(leader) if leader != status.id => format!(" of member {leader}"),
                        _ => String::new(),
                    };
                    self.say(format!(
                        "    member {} at {addr}: {}{following}, term {}, applied index {}",
                        status.id,
                        status.role,
                        status.term,
                        index(status.applied)
                    ));
                }
                Err(err) => self.say(format!("    {addr}: no answer ({err})")),
            }
        }
        Ok(answered)
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
                let copy = client.get(&replica.addr, Space::Ring, DYING_KEY).await?;
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
            for key in client.query_all_keys(&server.addr, Space::Ring).await? {
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
            let keys = client.query_all_keys(&server.addr, Space::Ring).await?;
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
