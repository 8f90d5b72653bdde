//! Issue 2 through real processes: the client CLI (commands, global flags, `--json`, exit codes),
//! the view leader's membership (joins, expiry, denied rejoin, held addresses, its own stalls) and
//! its lock service (FIFO, fencing tokens, dead holders, lock leases, deadlock, bounded waits).

mod common;

use std::time::Duration;

use common::{
    holds_for, run_client, unused_port, wait_for, wait_until, TestCluster, Timings, EXPIRY_TIMEOUT,
};

// ---------------------------------------------------------------------------------------------
// The client CLI
// ---------------------------------------------------------------------------------------------

#[test]
fn single_server_commands_print_set_get_and_query_all_keys_work() {
    let cluster = TestCluster::start(1);

    cluster
        .client_on(0, &["print", "hello", "from", "the", "test"])
        .expect_ok();
    wait_until(
        Duration::from_secs(5),
        "the server printed the text on its stdout",
        || {
            cluster
                .server_stdout(0)
                .iter()
                .any(|line| line == "hello from the test")
        },
    );

    let first = cluster.client_on(0, &["set", "fruit", "apple"]);
    first.expect_ok();
    assert!(
        first.stdout.contains("fruit") && first.stdout.contains(&cluster.server_addr(0)),
        "set confirms the key and the server: {:?}",
        first.stdout
    );
    let got = cluster.client_on(0, &["get", "fruit"]);
    got.expect_ok();
    assert_eq!(got.stdout.trim(), "apple");

    // An overwrite replaces the value.
    cluster.client_on(0, &["set", "fruit", "pear"]).expect_ok();
    assert_eq!(
        cluster
            .client_on(0, &["get", "fruit"])
            .expect_ok()
            .stdout
            .trim(),
        "pear"
    );

    cluster.client_on(0, &["set", "veg", "leek"]).expect_ok();
    let keys = cluster.client_on(0, &["query_all_keys"]);
    keys.expect_ok();
    let listed: Vec<&str> = keys.stdout.lines().collect();
    assert_eq!(listed, vec!["fruit", "veg"]);

    // The kebab-case aliases name the same commands.
    let alias = cluster.client_on(0, &["query-all-keys"]);
    alias.expect_ok();
    assert_eq!(alias.stdout, keys.stdout);
}

/// Issue 17: a server's own keys (`set`) are a space apart from the ring keys (`setr`). A key of
/// the same name lives in both with unrelated values; a view change copies the ring key to a new
/// replica and never the single-server one; each listing shows its own space, and a reader who
/// asks the wrong space is told where to look.
#[test]
fn single_server_keys_stay_apart_from_ring_keys_and_rebalancing_never_moves_them() {
    let mut cluster = TestCluster::start(1);
    cluster.wait_settled();
    cluster
        .client_on(0, &["set", "both", "server-zero-only"])
        .expect_ok();
    cluster.client(&["setr", "both", "replicated"]).expect_ok();
    cluster.client(&["setr", "ring-only", "r"]).expect_ok();

    // Two servers join: every ring key now has three replicas; nothing else moves.
    let joined = [cluster.add_server(), cluster.add_server()];
    wait_for(
        Duration::from_secs(30),
        "both newcomers hold their ring copies",
        || {
            let view = cluster.wait_settled();
            let held: Vec<String> = joined
                .iter()
                .map(|&n| cluster.client_on(n, &["get", "--ring", "both"]).stdout)
                .collect();
            if view.servers.len() == 3 && held.iter().all(|h| h.trim() == "replicated") {
                Ok(())
            } else {
                Err(format!("{} servers, copies {held:?}", view.servers.len()))
            }
        },
    );
    for number in joined {
        let own = cluster.client_on(number, &["--json", "query_all_keys"]);
        assert_eq!(
            own.expect_ok().json()["keys"],
            serde_json::json!([]),
            "server {number}"
        );
        assert_eq!(own.json()["space"], "local");
        assert!(
            own.stderr.contains("query_all_keys --ring"),
            "an empty listing points at the ring keys: {own:?}"
        );
        let ring = cluster.client_on(number, &["--json", "query_all_keys", "--ring"]);
        assert_eq!(
            ring.expect_ok().json()["keys"],
            serde_json::json!(["both", "ring-only"])
        );
        assert_eq!(ring.json()["space"], "ring");
        let missing = cluster.client_on(number, &["get", "both"]);
        missing.expect_code(1);
        assert!(
            missing.stderr.contains("get --ring") && missing.stderr.contains("getr"),
            "a get of a ring key points at getr and get --ring: {missing:?}"
        );
    }

    let own = cluster.client_on(0, &["get", "both"]);
    assert_eq!(own.expect_ok().stdout.trim(), "server-zero-only");
    let keys = cluster.client_on(0, &["query_all_keys"]);
    assert_eq!(keys.expect_ok().stdout.trim(), "both");
    assert_eq!(cluster.getr_text("both").as_deref(), Some("replicated"));
    let status = cluster.client(&["--json", "status"]).json();
    let local_keys: Vec<u64> = status["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| s["local_keys"].as_u64().expect("local_keys"))
        .collect();
    assert_eq!(local_keys.iter().sum::<u64>(), 1, "{status}");
}

#[test]
fn query_servers_lists_the_epoch_and_every_live_server() {
    let cluster = TestCluster::start(2);
    let view = cluster.query_servers();
    assert!(view.epoch >= 2, "two joins gave epoch {}", view.epoch);
    assert_eq!(view.addrs(), cluster.live_server_addrs());
    assert!(!view.rebalancing);
    assert_eq!(view.ids().len(), 2, "two distinct ids: {view:?}");

    // The human form names the epoch and every (address, id) pair.
    let human = cluster.client(&["query_servers"]);
    human.expect_ok();
    assert!(
        human.stdout.contains(&format!("epoch {}", view.epoch)),
        "{}",
        human.stdout
    );
    for member in &view.servers {
        assert!(
            human.stdout.contains(&member.addr) && human.stdout.contains(&member.id),
            "{} missing from {:?}",
            member.addr,
            human.stdout
        );
    }
}

#[test]
fn global_flags_work_after_the_subcommand() {
    let cluster = TestCluster::start(1);
    let server = cluster.server_addr(0);
    let viewleader = cluster.viewleader_addr();

    let set = run_client(&["set", "k", "v", "--server", &server, "--json"]);
    set.expect_ok();
    assert_eq!(set.json()["key"], "k");

    let got = run_client(&[
        "get",
        "k",
        "--json",
        "--server",
        &server,
        "--timeout-ms",
        "3000",
    ]);
    got.expect_ok();
    assert_eq!(got.json()["value"], "v");

    let view = run_client(&["query_servers", "--viewleader", &viewleader, "--json"]);
    view.expect_ok();
    assert_eq!(view.json()["servers"][0]["addr"], server.as_str());

    run_client(&["lock_get", "l", "alice", "--viewleader", &viewleader]).expect_ok();
    let busy = run_client(&[
        "lock_get",
        "l",
        "bob",
        "--wait-ms",
        "0",
        "--viewleader",
        &viewleader,
        "--json",
    ]);
    busy.expect_code(4);
    assert_eq!(busy.error_json().0, "lock_busy");
}

#[test]
fn json_output_is_one_document_per_command() {
    let cluster = TestCluster::start(1);
    let server = cluster.server_addr(0);

    let printed = cluster
        .client_on(0, &["--json", "print", "json", "please"])
        .json();
    assert_eq!(printed["ok"], true);
    assert_eq!(printed["server"], server.as_str());

    let set = cluster.client_on(0, &["--json", "set", "k", "v1"]).json();
    assert_eq!(set["ok"], true);
    assert_eq!(set["key"], "k");
    assert_eq!(set["server"], server.as_str());
    let v1 = set["version"]
        .as_u64()
        .expect("set reports a numeric version");
    let set2 = cluster.client_on(0, &["--json", "set", "k", "v2"]).json();
    let v2 = set2["version"]
        .as_u64()
        .expect("set reports a numeric version");
    assert!(v2 > v1, "versions only grow: {v1} then {v2}");

    let got = cluster.client_on(0, &["--json", "get", "k"]).json();
    assert_eq!(got["key"], "k");
    assert_eq!(got["value"], "v2");
    assert_eq!(got["version"].as_u64(), Some(v2));

    let missing = cluster.client_on(0, &["--json", "get", "nope"]);
    missing.expect_code(1);
    let missing = missing.json();
    assert_eq!(missing["key"], "nope");
    assert!(missing["value"].is_null());

    let keys = cluster.client_on(0, &["--json", "query_all_keys"]).json();
    assert_eq!(keys["server"], server.as_str());
    assert_eq!(keys["keys"], serde_json::json!(["k"]));

    let view = cluster.client(&["--json", "query_servers"]).json();
    assert!(view["epoch"].is_u64());
    assert_eq!(view["rebalancing"], false);
    assert_eq!(view["servers"][0]["addr"], server.as_str());
    assert!(view["servers"][0]["id"].is_string());

    let granted = cluster.client(&["--json", "lock_get", "l", "alice"]).json();
    assert_eq!(granted["lock"], "l");
    assert_eq!(granted["requester"], "alice");
    assert_eq!(granted["result"], "granted");
    assert!(granted["token"].is_u64());
    let released = cluster
        .client(&["--json", "lock_release", "l", "alice"])
        .json();
    assert_eq!(released["result"], "released");

    let setr = cluster.client(&["--json", "setr", "rk", "rv"]).json();
    assert_eq!(setr["ok"], true);
    assert_eq!(setr["replicas"], serde_json::json!([server]));
    assert!(setr["version"].is_u64() && setr["epoch"].is_u64());
    let getr = cluster.client(&["--json", "getr", "rk"]).json();
    assert_eq!(getr["value"], "rv");
    assert_eq!(getr["replica"], server.as_str());

    // Not found (exit 1) answers on stdout like a missing key, with the reason on stderr.
    let unknown = cluster.client(&["--json", "lock_release", "l", "nobody"]);
    unknown.expect_code(1);
    assert_eq!(unknown.json()["result"], "unknown");
    assert!(unknown.stderr.contains("nobody"), "{}", unknown.stderr);

    // Errors: one JSON document on stderr, nothing on stdout.
    let long_key = "k".repeat(5000);
    let invalid = cluster.client(&["--json", "setr", long_key.as_str(), "v"]);
    invalid.expect_code(5);
    assert!(invalid.stdout.trim().is_empty(), "{:?}", invalid.stdout);
    let (kind, message) = invalid.error_json();
    assert_eq!(kind, "invalid_request");
    assert!(message.contains("key"), "{message}");
}

#[test]
fn exit_codes_say_what_happened() {
    let cluster = TestCluster::start(1);
    let dead = format!("127.0.0.1:{}", unused_port());

    // 0: success.
    cluster.client_on(0, &["set", "k", "v"]).expect_code(0);
    // 1: not found.
    cluster.client_on(0, &["get", "absent"]).expect_code(1);
    cluster.client(&["getr", "absent"]).expect_code(1);
    // 2: usage.
    run_client(&["frobnicate"]).expect_code(2);
    run_client(&["set", "only-a-key"]).expect_code(2);
    run_client(&["get", "k", "--wait-ms", "soon"]).expect_code(2);
    // 3: unreachable.
    let unreachable = run_client(&["--viewleader", &dead, "--json", "query_servers"]);
    unreachable.expect_code(3);
    let (kind, message) = unreachable.error_json();
    assert_eq!(kind, "unreachable");
    assert!(message.contains(&dead), "names the address: {message}");
    run_client(&["--server", &dead, "get", "k"]).expect_code(3);
    run_client(&["--viewleader", &dead, "lock_get", "l", "me"]).expect_code(3);
    run_client(&["--viewleader", &dead, "setr", "k", "v"]).expect_code(3);
    // 5: invalid request: a key over the 4096-byte limit, through every command that takes one.
    let long_key = "k".repeat(4097);
    let too_long = cluster.client_on(0, &["--json", "set", &long_key, "v"]);
    too_long.expect_code(5);
    let (kind, message) = too_long.error_json();
    assert_eq!(kind, "invalid_request");
    assert!(message.contains("4096"), "{message}");
    cluster.client_on(0, &["get", &long_key]).expect_code(5);
    cluster.client(&["setr", &long_key, "v"]).expect_code(5);
    cluster.client(&["getr", &long_key]).expect_code(5);
    // A key of exactly 4096 bytes is fine.
    cluster
        .client_on(0, &["set", &"k".repeat(4096), "v"])
        .expect_code(0);
    // 5 as well: a storage command sent to the view leader's port (the wrong service).
    run_client(&["--server", &cluster.viewleader_addr(), "get", "k"]).expect_code(5);
}

// ---------------------------------------------------------------------------------------------
// Membership
// ---------------------------------------------------------------------------------------------

#[test]
fn a_joining_server_enters_the_view_under_a_higher_epoch() {
    let mut cluster = TestCluster::start(1);
    let before = cluster.query_servers();
    let number = cluster.add_server();
    let addr = cluster.server_addr(number);
    let after = cluster.wait_for_view(EXPIRY_TIMEOUT, "the new server is in the view", |view| {
        view.id_at(&addr)
            .map(|_| view.clone())
            .ok_or_else(|| format!("{addr} absent"))
    });
    assert!(after.epoch > before.epoch, "{before:?} -> {after:?}");
    assert!(
        before.servers.iter().all(|s| after.has_id(&s.id)),
        "the first server keeps its id: {before:?} -> {after:?}"
    );
}

#[test]
fn a_killed_server_is_expired_from_the_view_and_the_epoch_goes_up() {
    let mut cluster = TestCluster::start(2);
    let before = cluster.query_servers();
    let killed = cluster.server_addr(0);
    let survivor = cluster.server_addr(1);
    let survivor_id = before.id_at(&survivor).expect("server 1 is in the view");

    cluster.kill_server(0);
    let after = cluster.wait_for_view(
        EXPIRY_TIMEOUT,
        "the killed server leaves the view",
        |view| {
            if view.id_at(&killed).is_none() {
                Ok(view.clone())
            } else {
                Err(format!("{killed} still listed"))
            }
        },
    );
    assert!(after.epoch > before.epoch, "{before:?} -> {after:?}");
    assert_eq!(
        after.id_at(&survivor).as_deref(),
        Some(survivor_id.as_str()),
        "the survivor stays under its id"
    );
    assert_eq!(after.servers.len(), 1, "{after:?}");
}

#[test]
fn a_server_paused_past_its_lease_rejoins_under_a_new_id_and_keeps_its_data() {
    let cluster = TestCluster::start(2);
    let addr = cluster.server_addr(0);
    let old_id = cluster
        .query_servers()
        .id_at(&addr)
        .expect("server 0 is in the view");
    cluster
        .client_on(0, &["set", "kept", "still here"])
        .expect_ok();
    let epoch_before = cluster.query_servers().epoch;

    cluster.pause_server(0);
    let expired = cluster.wait_for_view(EXPIRY_TIMEOUT, "the paused server is expired", |view| {
        if view.has_id(&old_id) {
            Err(format!("{old_id} still listed"))
        } else {
            Ok(view.clone())
        }
    });
    assert!(expired.epoch > epoch_before);
    cluster.resume_server(0);

    let rejoined = cluster.wait_for_view(
        EXPIRY_TIMEOUT,
        "the resumed server is back at its address",
        |view| view.id_at(&addr).ok_or_else(|| format!("{addr} absent")),
    );
    assert_ne!(
        rejoined, old_id,
        "the expired id must be denied, not readmitted"
    );
    let view = cluster.query_servers();
    assert!(!view.has_id(&old_id), "the old id never returns: {view:?}");
    assert!(view.epoch > expired.epoch, "the rejoin is a view change");
    assert_eq!(view.ids_at(&addr).len(), 1, "{view:?}");

    // What the server held survives the rejoin.
    let got = cluster.client_on(0, &["get", "kept"]);
    got.expect_ok();
    assert_eq!(got.stdout.trim(), "still here");
}

#[test]
fn a_restarted_server_joins_under_a_new_id_only_after_its_old_id_expires() {
    // A long lease makes the window in which the old id still holds the address wide enough to
    // observe on a busy machine.
    let timings = Timings {
        lease_ms: 2_000,
        ..Timings::default()
    };
    let mut cluster = TestCluster::start_with(timings, 2);
    let addr = cluster.server_addr(0);
    let old_id = cluster
        .query_servers()
        .id_at(&addr)
        .expect("server 0 is in the view");

    cluster.kill_server(0);
    cluster.restart_server_wiped(0);
    let first = cluster.query_servers();
    assert_eq!(
        first.ids_at(&addr),
        vec![old_id.clone()],
        "right after the restart the old id still holds the address (lease not over yet)"
    );

    // Until the old id expires, the new process must not be admitted beside it.
    let new_id = wait_for(EXPIRY_TIMEOUT, "a new id holds the address", || {
        let view = cluster
            .try_query_servers()
            .map_err(|run| format!("query_servers failed: {run:?}"))?;
        let ids = view.ids_at(&addr);
        assert!(ids.len() <= 1, "two ids at one address: {view:?}");
        match ids.first() {
            Some(id) if *id != old_id => Ok(id.clone()),
            _ => Err(format!("{view:?}")),
        }
    });
    assert_ne!(new_id, old_id);
    let view = cluster.query_servers();
    assert!(!view.has_id(&old_id), "{view:?}");
    assert!(view.epoch > first.epoch);
}

#[test]
fn a_stalled_view_leader_expires_nobody_when_it_resumes() {
    let cluster = TestCluster::start(2);
    let before = cluster.wait_settled();

    cluster.pause_viewleader();
    // The scenario: the view leader hears nothing for well over a lease. This pause is the
    // fault under test, not a wait for something to happen.
    std::thread::sleep(cluster.lease() + cluster.lease() / 2);
    cluster.resume_viewleader();

    // For more than a lease after resuming, the same servers stay in the same view.
    holds_for(
        cluster.lease() + cluster.lease() / 2,
        "the view across the view leader's stall",
        || {
            let view = cluster
                .try_query_servers()
                .map_err(|run| format!("query_servers failed: {run:?}"))?;
            if view.ids() == before.ids() && view.epoch == before.epoch {
                Ok(())
            } else {
                Err(format!("{before:?} became {view:?}"))
            }
        },
    );
}

// ---------------------------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------------------------

fn granted_token(run: &common::ClientRun) -> u64 {
    run.expect_ok();
    let doc = run.json();
    assert_eq!(doc["result"], "granted", "{doc}");
    doc["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("a grant without a token: {doc}"))
}

#[test]
fn lock_waiters_are_granted_in_fifo_order_with_growing_fencing_tokens() {
    let cluster = TestCluster::start(0);
    let get = |who: &str| cluster.client(&["--json", "--wait-ms", "0", "lock_get", "door", who]);

    let t_a = granted_token(&get("a"));
    // b then c queue up; with --wait-ms 0 each answer is "busy" at once.
    let b = get("b");
    b.expect_code(4);
    assert_eq!(b.error_json().0, "lock_busy");
    get("c").expect_code(4);
    // Asking again keeps each in its place.
    get("c").expect_code(4);
    get("b").expect_code(4);
    assert_eq!(
        granted_token(&get("a")),
        t_a,
        "the holder re-asking keeps its grant"
    );

    cluster.client(&["lock_release", "door", "a"]).expect_ok();
    // b was first in line: it holds the lock now, c still waits.
    get("c").expect_code(4);
    let t_b = granted_token(&get("b"));
    assert!(t_b > t_a, "tokens grow: {t_a} then {t_b}");

    cluster.client(&["lock_release", "door", "b"]).expect_ok();
    let t_c = granted_token(&get("c"));
    assert!(t_c > t_b, "tokens grow: {t_b} then {t_c}");

    // Released by its last holder, the lock is free for anyone, with a larger token still.
    cluster.client(&["lock_release", "door", "c"]).expect_ok();
    let t_d = granted_token(&get("d"));
    assert!(t_d > t_c);
}

#[test]
fn releasing_a_lock_one_neither_holds_nor_awaits_exits_1() {
    let cluster = TestCluster::start(0);
    cluster
        .client(&["lock_release", "never-taken", "x"])
        .expect_code(1);
    cluster.client(&["lock_get", "l", "holder"]).expect_ok();
    let stranger = cluster.client(&["lock_release", "l", "stranger"]);
    stranger.expect_code(1);
    assert!(stranger.stderr.contains("stranger"), "{}", stranger.stderr);
    // A waiter can leave the line; the holder is unaffected.
    cluster
        .client(&["--wait-ms", "0", "lock_get", "l", "waiter"])
        .expect_code(4);
    cluster.client(&["lock_release", "l", "waiter"]).expect_ok();
    cluster
        .client(&["lock_release", "l", "waiter"])
        .expect_code(1);
    cluster.client(&["lock_release", "l", "holder"]).expect_ok();
    cluster
        .client(&["lock_release", "l", "holder"])
        .expect_code(1);
}

#[test]
fn a_lock_held_by_a_killed_server_is_released_when_it_expires() {
    let mut cluster = TestCluster::start(1);
    let requester = format!(":{}", cluster.server_port(0));
    let t_server = granted_token(&cluster.client(&["--json", "lock_get", "job", &requester]));
    cluster
        .client(&["--wait-ms", "0", "lock_get", "job", "next"])
        .expect_code(4);

    cluster.kill_server(0);
    let t_next = wait_for(EXPIRY_TIMEOUT, "the dead server's lock passes on", || {
        let run = cluster.client(&["--json", "--wait-ms", "0", "lock_get", "job", "next"]);
        match run.code {
            0 => Ok(granted_token(&run)),
            4 => Err(run.stderr),
            _ => panic!("unexpected answer: {run:?}"),
        }
    });
    assert!(t_next > t_server);
    assert!(
        !cluster
            .query_servers()
            .addrs()
            .contains(&cluster.server_addr(0)),
        "the lock moved because the server expired"
    );
    cluster
        .client(&["lock_release", "job", &requester])
        .expect_code(1);
}

#[test]
fn a_lock_not_renewed_lapses_after_the_lock_lease_but_a_live_servers_does_not() {
    let timings = Timings {
        lock_lease_ms: Some(1_000),
        ..Timings::default()
    };
    let cluster = TestCluster::start_with(timings, 1);
    let server = format!(":{}", cluster.server_port(0));

    // The server's grant and bob's place on b are older than alice's grant on a: any sweep that
    // lapses alice would lapse them too, were they lapsable.
    cluster.client(&["lock_get", "b", &server]).expect_ok();
    cluster
        .client(&["--wait-ms", "0", "lock_get", "b", "bob"])
        .expect_code(4);
    cluster.client(&["lock_get", "a", "alice"]).expect_ok();

    // bob's own wait keeps renewing his place; alice never renews hers, so it lapses.
    let waited = cluster.client(&["--json", "--wait-ms", "10000", "lock_get", "a", "bob"]);
    granted_token(&waited);
    cluster
        .client(&["lock_release", "a", "alice"])
        .expect_code(1);

    // The server's hold on b, older than alice's, has outlived the lock lease: a server's place
    // lasts as long as the server does.
    let still = cluster.client(&["--wait-ms", "0", "lock_get", "b", "bob"]);
    still.expect_code(4);
    assert!(still.stderr.contains(&server), "{}", still.stderr);
}

#[test]
fn a_lock_request_that_would_close_a_cycle_is_refused_as_deadlock() {
    let cluster = TestCluster::start(0);
    cluster.client(&["lock_get", "x", "A"]).expect_ok();
    cluster.client(&["lock_get", "y", "B"]).expect_ok();
    cluster
        .client(&["--wait-ms", "0", "lock_get", "x", "B"])
        .expect_code(4);

    // A waiting for y would wait for B, who waits for A.
    let refused = cluster.client(&["--wait-ms", "5000", "lock_get", "y", "A"]);
    refused.expect_code(4);
    assert!(
        refused.stderr.to_lowercase().contains("deadlock"),
        "{}",
        refused.stderr
    );
    let json = cluster.client(&["--json", "--wait-ms", "0", "lock_get", "y", "A"]);
    json.expect_code(4);
    assert_eq!(json.error_json().0, "deadlock");
    // The refused request was not queued.
    cluster.client(&["lock_release", "y", "A"]).expect_code(1);
    // Once B gives up waiting on x the same request just waits.
    cluster.client(&["lock_release", "x", "B"]).expect_ok();
    cluster
        .client(&["--json", "--wait-ms", "0", "lock_get", "y", "A"])
        .expect_code(4);
    cluster.client(&["lock_release", "y", "B"]).expect_ok();
    granted_token(&cluster.client(&["--json", "--wait-ms", "0", "lock_get", "y", "A"]));
}

#[test]
fn lock_get_waits_up_to_wait_ms_and_is_granted_when_the_holder_releases_meanwhile() {
    let cluster = TestCluster::start(0);
    let t_first = granted_token(&cluster.client(&["--json", "lock_get", "l", "first"]));

    // A bounded wait on a lock nobody releases ends busy.
    let gave_up = cluster.client(&["--wait-ms", "300", "lock_get", "l", "impatient"]);
    gave_up.expect_code(4);
    assert!(
        gave_up.stderr.contains("first"),
        "names the holder: {}",
        gave_up.stderr
    );
    cluster
        .client(&["lock_release", "l", "impatient"])
        .expect_ok();

    // A long wait that sees the holder release meanwhile succeeds.
    let mut waiter = cluster.client_background(&["--wait-ms", "20000", "lock_get", "l", "second"]);
    waiter.wait_for_stderr("waiting for lock", Duration::from_secs(10));
    cluster.client(&["lock_release", "l", "first"]).expect_ok();
    let done = waiter.finish(Duration::from_secs(20));
    done.expect_ok();
    let token: u64 = done
        .stdout
        .rsplit("fencing token ")
        .next()
        .and_then(|rest| rest.trim().trim_end_matches(')').parse().ok())
        .unwrap_or_else(|| panic!("no fencing token in {:?}", done.stdout));
    assert!(token > t_first);
    assert!(done.stdout.contains("second"), "{}", done.stdout);
}
