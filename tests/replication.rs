//! Issue 3 through real processes (specification section 3.4): `setr`/`getr` on the hash ring,
//! placement on exactly three replicas, reads past a dead primary, and the two-phase commit's
//! refusals (a participant's id differs, a key already has a pending transaction), each leaving
//! the key writable afterwards.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use common::{BackgroundClient, TestCluster, Timings, ViewDoc, EXPIRY_TIMEOUT};
use ringleader::rpc::client::RpcClient;
use ringleader::rpc::message::{ServerReply, ServerRequest, ServiceKind};
use ringleader::types::{Op, Prepare, ServerInfo, TxId, Value};

/// The replicas `setr --json` reports having stored `key` on, in ring order.
fn setr_replicas(cluster: &TestCluster, key: &str, value: &str) -> Vec<String> {
    let run = cluster.client(&["--json", "setr", key, value]);
    run.expect_ok();
    let doc = run.json();
    assert_eq!(doc["ok"], true, "{doc}");
    doc["replicas"]
        .as_array()
        .unwrap_or_else(|| panic!("setr without a replicas list: {doc}"))
        .iter()
        .map(|addr| {
            addr.as_str()
                .unwrap_or_else(|| panic!("a replica that is not an address: {doc}"))
                .to_string()
        })
        .collect()
}

/// `getr KEY`'s value, or `None` when it exits 1 (not found).
fn getr(cluster: &TestCluster, key: &str) -> Option<String> {
    cluster.getr_text(key)
}

/// `get --ring KEY` on server `number` (its copy of a ring key): `(value, version)`, or `None`
/// when not found there.
fn get_on(cluster: &TestCluster, number: usize, key: &str) -> Option<(String, u64)> {
    let run = cluster.client_on(number, &["--json", "get", "--ring", key]);
    match run.code {
        0 => {
            let doc = run.json();
            Some((
                doc["value"]
                    .as_str()
                    .unwrap_or_else(|| panic!("get printed no text value: {doc}"))
                    .to_string(),
                doc["version"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("get printed no version: {doc}")),
            ))
        }
        1 => None,
        _ => panic!("get {key} on server {number} failed: {run:?}"),
    }
}

/// Which running servers hold each ring key, from `query_all_keys --ring --json` on every one of
/// them.
fn holders_by_key(cluster: &TestCluster) -> BTreeMap<String, BTreeSet<String>> {
    let mut holders: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for addr in cluster.live_server_addrs() {
        let number = cluster.server_number(&addr);
        let run = cluster.client_on(number, &["--json", "query_all_keys", "--ring"]);
        run.expect_ok();
        let doc = run.json();
        for key in doc["keys"]
            .as_array()
            .unwrap_or_else(|| panic!("query_all_keys without keys: {doc}"))
        {
            let key = key.as_str().expect("keys are strings").to_string();
            holders.entry(key).or_default().insert(addr.clone());
        }
    }
    holders
}

/// Speaks the storage server's protocol directly, to act as a coordinator that stops half-way
/// (a prepare held open).
struct RawParticipants {
    runtime: tokio::runtime::Runtime,
    connections: HashMap<String, RpcClient<ServerRequest, ServerReply>>,
}

impl RawParticipants {
    fn new() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("build a tokio runtime for the raw RPC client");
        Self {
            runtime,
            connections: HashMap::new(),
        }
    }

    fn call(&mut self, addr: &str, request: ServerRequest) -> ringleader::Result<ServerReply> {
        let timeout = Duration::from_secs(5);
        if !self.connections.contains_key(addr) {
            let client = self.runtime.block_on(RpcClient::connect(
                &ringleader::net::Env::real(),
                addr,
                ServiceKind::Server,
                timeout,
            ))?;
            self.connections.insert(addr.to_string(), client);
        }
        let client = self.connections[addr].clone();
        self.runtime.block_on(client.call(&request, timeout))
    }

    /// Prepares `tx` (a put of `value` at `key`) on the server at `addr` as the view says it.
    #[track_caller]
    fn prepare_yes(&mut self, view: &ViewDoc, addr: &str, tx: TxId, key: &str, value: &str) {
        let expected_server_id = view
            .id_at(addr)
            .unwrap_or_else(|| panic!("{addr} is not in the view {view:?}"));
        // Every replica of the key, in ring order, as a coordinator would list them.
        let ids: Vec<String> = view.servers.iter().map(|m| m.id.clone()).collect();
        let participants: Vec<ServerInfo> = ringleader::ring::Ring::new(&ids)
            .replicas(key)
            .into_iter()
            .filter_map(|id| view.servers.iter().find(|m| &m.id == id))
            .map(|m| ServerInfo {
                id: m.id.clone(),
                addr: m.addr.clone(),
            })
            .collect();
        let reply = self.call(
            addr,
            ServerRequest::Prepare(Prepare {
                tx,
                key: key.into(),
                op: Op::Put(Value::Text(value.into())),
                epoch: view.epoch,
                expected_server_id,
                version: 1,
                participants,
                range_lost: false,
            }),
        );
        assert!(
            matches!(reply, Ok(ServerReply::Prepared)),
            "prepare of {key:?} on {addr} should be a yes vote, got {reply:?}"
        );
    }

    /// The id of the member at `addr`, as it reports it: commits and aborts name it.
    #[track_caller]
    fn id_of(&mut self, addr: &str) -> String {
        match self.call(addr, ServerRequest::Status) {
            Ok(ServerReply::Status(status)) => status.server_id,
            other => panic!("status of {addr}: {other:?}"),
        }
    }

    #[track_caller]
    fn abort(&mut self, addr: &str, tx: TxId) {
        let server_id = self.id_of(addr);
        let reply = self.call(addr, ServerRequest::Abort { tx, server_id });
        assert_eq!(reply, Ok(ServerReply::Aborted), "abort on {addr}");
    }

    #[track_caller]
    fn commit(&mut self, addr: &str, tx: TxId) {
        let server_id = self.id_of(addr);
        let reply = self.call(addr, ServerRequest::Commit { tx, server_id });
        assert_eq!(reply, Ok(ServerReply::Committed), "commit on {addr}");
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn setr_then_getr_returns_the_value_and_a_rewrite_replaces_it() {
    let cluster = TestCluster::start(3);
    assert_eq!(getr(&cluster, "colour"), None, "nothing stored yet");

    let first = cluster.client(&["--json", "setr", "colour", "red"]);
    first.expect_ok();
    let v1 = first.json()["version"]
        .as_u64()
        .expect("setr reports a version");
    assert_eq!(getr(&cluster, "colour").as_deref(), Some("red"));

    let second = cluster.client(&["--json", "setr", "colour", "blue"]);
    second.expect_ok();
    let v2 = second.json()["version"]
        .as_u64()
        .expect("setr reports a version");
    assert!(v2 > v1, "versions only grow: {v1} then {v2}");
    assert_eq!(getr(&cluster, "colour").as_deref(), Some("blue"));

    // The human forms: a confirmation, and the bare value.
    let human = cluster.client(&["setr", "colour", "green"]);
    human.expect_ok();
    assert!(human.stdout.contains("colour"), "{}", human.stdout);
    let read = cluster.client(&["getr", "colour"]);
    read.expect_ok();
    assert_eq!(read.stdout.trim(), "green");
}

#[test]
fn with_five_servers_each_key_lives_on_exactly_three_of_them() {
    let cluster = TestCluster::start(5);
    let keys: Vec<String> = (0..20).map(|i| format!("key-{i}")).collect();
    let mut reported: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for key in &keys {
        let replicas = setr_replicas(&cluster, key, &format!("value of {key}"));
        let distinct: BTreeSet<String> = replicas.iter().cloned().collect();
        assert_eq!(distinct.len(), 3, "{key} on {replicas:?}");
        reported.insert(key.clone(), distinct);
    }

    // Where the keys really are, asked of every server.
    let held = holders_by_key(&cluster);
    assert_eq!(
        held, reported,
        "each key is exactly on the replicas setr named"
    );
    let used: BTreeSet<&String> = held.values().flatten().collect();
    assert_eq!(used.len(), 5, "the ring spreads 20 keys over all 5 servers");

    // One key, asked with `get` of every server: exactly its three replicas answer.
    let key = &keys[0];
    let mut found = 0;
    for number in 0..cluster.server_count() {
        let addr = cluster.server_addr(number);
        match get_on(&cluster, number, key) {
            Some((value, _)) => {
                assert_eq!(value, format!("value of {key}"));
                assert!(
                    reported[key].contains(&addr),
                    "{key} on a non-replica {addr}"
                );
                found += 1;
            }
            None => assert!(!reported[key].contains(&addr), "{key} missing on {addr}"),
        }
    }
    assert_eq!(found, 3);
    for key in &keys {
        assert_eq!(getr(&cluster, key), Some(format!("value of {key}")));
    }
}

#[test]
fn with_two_servers_each_key_lives_on_both() {
    let cluster = TestCluster::start(2);
    let everyone = cluster.live_server_addrs();
    for i in 0..5 {
        let key = format!("pair-{i}");
        let replicas: BTreeSet<String> = setr_replicas(&cluster, &key, "v").into_iter().collect();
        assert_eq!(replicas, everyone);
    }
    let held = holders_by_key(&cluster);
    assert_eq!(held.len(), 5);
    for (key, holders) in &held {
        assert_eq!(holders, &everyone, "{key}");
    }
    for number in 0..2 {
        assert_eq!(
            get_on(&cluster, number, "pair-0")
                .map(|(value, _)| value)
                .as_deref(),
            Some("v")
        );
    }
}

#[test]
fn getr_still_reads_a_key_after_its_primary_replica_is_killed() {
    let mut cluster = TestCluster::start(5);
    let replicas = setr_replicas(&cluster, "survivor", "alive");
    let primary = replicas[0].clone();
    let number = cluster.server_number(&primary);
    cluster.kill_server(number);

    // The view still lists the dead primary: getr skips it for the next replica in ring order.
    let run = cluster.client(&["--json", "getr", "survivor"]);
    run.expect_ok();
    let doc = run.json();
    assert_eq!(doc["value"], "alive");
    assert_ne!(
        doc["replica"],
        primary.as_str(),
        "the dead primary cannot have answered"
    );

    // And once the primary has expired from the view.
    cluster.wait_for_view(EXPIRY_TIMEOUT, "the primary expires", |view| {
        if view.addrs().contains(&primary) {
            Err(format!("{primary} still listed"))
        } else {
            Ok(())
        }
    });
    cluster.wait_settled();
    assert_eq!(getr(&cluster, "survivor").as_deref(), Some("alive"));
}

#[test]
fn a_commit_fails_when_a_participant_restarted_under_a_new_id_and_the_key_stays_writable() {
    // A long lease keeps the dead id in the view while the test writes through it.
    let timings = Timings {
        lease_ms: 2_000,
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(timings, 3);
    let addr = cluster.server_addr(0);
    let old_id = cluster
        .query_servers()
        .id_at(&addr)
        .expect("server 0 is in the view");

    cluster.kill_server(0);
    cluster.restart_server_wiped(0);

    // With three servers every server is a replica of every key, so the write reaches the
    // restarted one, which is not the server the view (and so the coordinator) expects.
    let refused = cluster.client(&["--json", "setr", "fragile", "v1"]);
    let view = cluster.query_servers();
    assert_eq!(
        view.id_at(&addr).as_deref(),
        Some(old_id.as_str()),
        "the old id must still be in the view for this test to mean anything"
    );
    refused.expect_code(4);
    let (kind, message) = refused.error_json();
    assert_eq!(kind, "stale_view", "{message}");
    assert!(
        message.contains(&old_id) && message.contains("id"),
        "the reason names the id mismatch: {message}"
    );

    // The failed commit was aborted everywhere: no replica stored anything.
    for number in 1..3 {
        assert_eq!(get_on(&cluster, number, "fragile"), None, "server {number}");
    }
    assert_eq!(get_on(&cluster, 0, "fragile"), None, "restarted server");

    // Once the old id expires and the new one joins, the same key is written everywhere.
    let settled =
        cluster.wait_for_view(
            EXPIRY_TIMEOUT,
            "the restarted server rejoins",
            |view| match view.id_at(&addr) {
                Some(id) if id != old_id && !view.rebalancing => Ok(view.clone()),
                _ => Err("old id still there or rebalancing".into()),
            },
        );
    assert_eq!(settled.servers.len(), 3);
    let replicas: BTreeSet<String> = setr_replicas(&cluster, "fragile", "v2")
        .into_iter()
        .collect();
    assert_eq!(replicas, cluster.live_server_addrs());
    for number in 0..3 {
        assert_eq!(
            get_on(&cluster, number, "fragile")
                .map(|(value, _)| value)
                .as_deref(),
            Some("v2"),
            "server {number}"
        );
    }
}

#[test]
fn a_held_prepare_refuses_a_second_write_to_its_key_but_not_to_other_keys() {
    // The test plays a coordinator that stays silent on purpose: keep termination out of it.
    let cluster = TestCluster::start_with(
        Timings {
            tx_timeout_ms: Some(60_000),
            ..Timings::default()
        },
        3,
    );
    let view = cluster.wait_settled();
    let addrs: Vec<String> = cluster.live_server_addrs().into_iter().collect();
    let mut raw = RawParticipants::new();

    // A coordinator that prepared "contended" and "parallel" on every replica and went quiet:
    // two transactions on different keys pending on the same servers at once.
    let held: TxId = 0x5eed_0001;
    let parallel: TxId = 0x5eed_0002;
    for addr in &addrs {
        raw.prepare_yes(&view, addr, held, "contended", "held value");
        raw.prepare_yes(&view, addr, parallel, "parallel", "parallel value");
    }

    // A second writer of the same key waits out its --wait-ms for the pending transaction to be
    // decided, then is refused as a conflict...
    let refused = cluster.client(&["--json", "--wait-ms", "300", "setr", "contended", "second"]);
    refused.expect_code(4);
    let (kind, message) = refused.error_json();
    assert_eq!(kind, "conflict", "{message}");
    assert!(
        message.contains("contended") && message.contains("pending"),
        "the reason names the key and the pending transaction: {message}"
    );
    // ...while other keys on the same servers are written as usual.
    cluster.client(&["setr", "bystander", "fine"]).expect_ok();
    assert_eq!(getr(&cluster, "bystander").as_deref(), Some("fine"));
    // Nothing of either pending write is visible yet.
    for number in 0..3 {
        assert_eq!(get_on(&cluster, number, "contended"), None);
        assert_eq!(get_on(&cluster, number, "parallel"), None);
    }

    // The stalled coordinator decides: abort one, commit the other.
    for addr in &addrs {
        raw.abort(addr, held);
        raw.commit(addr, parallel);
    }
    assert_eq!(
        getr(&cluster, "parallel").as_deref(),
        Some("parallel value")
    );
    assert_eq!(
        getr(&cluster, "contended"),
        None,
        "the aborted write left nothing"
    );

    // With the transaction aborted the key is writable again.
    cluster.client(&["setr", "contended", "third"]).expect_ok();
    assert_eq!(getr(&cluster, "contended").as_deref(), Some("third"));
}

#[test]
fn a_commit_refused_by_one_participant_is_aborted_on_all_so_the_key_stays_writable() {
    let cluster = TestCluster::start_with(
        Timings {
            tx_timeout_ms: Some(60_000),
            ..Timings::default()
        },
        3,
    );
    let view = cluster.wait_settled();
    let blocker = cluster.server_addr(0);
    let mut raw = RawParticipants::new();
    let tx: TxId = 0xb10c;
    raw.prepare_yes(&view, &blocker, tx, "k", "blocking");

    // Servers 1 and 2 vote yes, server 0 no: the coordinator must abort all three.
    // (The client retries a conflict until --wait-ms runs out: every attempt must be aborted.)
    let refused = cluster.client(&["--wait-ms", "300", "setr", "k", "first"]);
    refused.expect_code(4);
    assert!(refused.stderr.contains("vote no"), "{}", refused.stderr);
    for number in 0..3 {
        assert_eq!(get_on(&cluster, number, "k"), None, "server {number}");
    }

    // Were the yes votes of servers 1 and 2 still pending, they would now refuse the key.
    raw.abort(&blocker, tx);
    cluster.client(&["setr", "k", "second"]).expect_ok();
    let copies: Vec<_> = (0..3).map(|n| get_on(&cluster, n, "k")).collect();
    assert!(
        copies
            .iter()
            .all(|c| c.as_ref().map(|(v, _)| v.as_str()) == Some("second")),
        "{copies:?}"
    );
    assert!(
        copies.windows(2).all(|pair| pair[0] == pair[1]),
        "every replica stores the same version: {copies:?}"
    );
}

#[test]
fn simultaneous_setr_on_one_key_leave_every_replica_agreeing_on_a_written_value() {
    let cluster = TestCluster::start(3);
    let writers: Vec<(String, BackgroundClient)> = (0..4)
        .map(|i| {
            let value = format!("writer-{i}");
            let client = cluster.client_background(&["--json", "setr", "race", &value]);
            (value, client)
        })
        .collect();
    let mut succeeded = Vec::new();
    for (value, client) in writers {
        let run = client.finish(Duration::from_secs(30));
        match run.code {
            0 => succeeded.push((value, run.json()["version"].as_u64().expect("a version"))),
            4 => {}
            _ => panic!("a racing setr may succeed or be refused, nothing else: {run:?}"),
        }
    }

    let copies: Vec<_> = (0..3).map(|n| get_on(&cluster, n, "race")).collect();
    assert!(
        copies.windows(2).all(|pair| pair[0] == pair[1]),
        "replicas disagree after concurrent writes: {copies:?} (succeeded: {succeeded:?})"
    );
    match succeeded.iter().max_by_key(|(_, version)| *version) {
        Some((value, version)) => assert_eq!(
            copies[0],
            Some((value.clone(), *version)),
            "the replicas hold the last successful write"
        ),
        None => assert_eq!(copies[0], None, "no write succeeded, none is visible"),
    }
    // Whatever happened, the key is writable now.
    cluster.client(&["setr", "race", "after"]).expect_ok();
    assert_eq!(getr(&cluster, "race").as_deref(), Some("after"));
}

#[test]
fn setr_without_any_live_server_fails_as_unreachable() {
    let mut cluster = TestCluster::start(1);
    cluster.client(&["setr", "k", "v"]).expect_ok();

    // The only replica is dead but still in the view: without a wait, the write fails at once
    // naming it.
    let addr = cluster.server_addr(0);
    cluster.kill_server(0);
    let dead = cluster.client(&["--json", "--wait-ms", "0", "setr", "k", "v2"]);
    dead.expect_code(3);
    let (kind, message) = dead.error_json();
    assert_eq!(kind, "unreachable", "{message}");
    assert!(message.contains(&addr), "names the replica: {message}");

    // With time to wait, the write waits for the view leader to drop the dead replica and then
    // says there is nobody left to write to.
    let waited = cluster.client(&["setr", "k", "v2"]);
    waited.expect_code(3);
    assert!(
        waited.stderr.contains("no storage servers"),
        "{}",
        waited.stderr
    );

    // And once the view is empty.
    cluster.wait_for_view(EXPIRY_TIMEOUT, "the view is empty", |view| {
        if view.servers.is_empty() {
            Ok(())
        } else {
            Err("servers left".into())
        }
    });
    let none = cluster.client(&["setr", "k", "v3"]);
    none.expect_code(3);
    assert!(
        none.stderr.contains("no storage servers"),
        "{}",
        none.stderr
    );
    cluster.client(&["getr", "k"]).expect_code(3);
}
