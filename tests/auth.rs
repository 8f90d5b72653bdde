//! Cluster authentication through real processes (issue 16): a cluster whose processes hold the
//! member secret of `client secrets DIR` serves clients that prove the client secret, refuses
//! everyone else in the hello with an error that says what to do, never lets a client send a
//! member's request (a forged heartbeat, leave or transfer), and a process without a secret
//! refuses to listen anywhere but loopback.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    holds_for, run_client, run_service_to_exit, start_service, wait_until, TestCluster, Timings,
    EXPIRY_TIMEOUT, SERVER_BIN, VIEWLEADER_BIN,
};
use ringleader::net::secret::ClusterSecret;
use ringleader::net::Env;
use ringleader::rpc::client::RpcClient;
use ringleader::rpc::message::{
    ServerReply, ServerRequest, ServiceKind, ViewLeaderReply, ViewLeaderRequest,
};
use ringleader::types::{Heartbeat, Value, Versioned};
use ringleader::Error;

/// The exit code of a refusal (`Forbidden` among them).
const EXIT_REFUSED: i32 = 4;
/// The exit code of a setting that makes no sense.
const EXIT_USAGE: i32 = 2;
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// `client secrets DIR` into `dir/name`: (member file, client file).
fn make_secrets(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let out = dir.join(name);
    let run = run_client(&["--json", "secrets", &out.display().to_string()]);
    run.expect_ok();
    let doc = run.json();
    let file = |role: &str| PathBuf::from(doc[role].as_str().expect("a path"));
    (file("member"), file("client"))
}

fn secret_flag(file: &Path) -> Vec<String> {
    vec![
        "--cluster-secret-file".to_string(),
        file.display().to_string(),
    ]
}

/// A cluster of three servers whose every process holds the member secret of `dir/ours`, and
/// whose client runs prove the client secret.
fn secured_cluster(dir: &Path) -> (TestCluster, PathBuf, PathBuf) {
    let (member, client) = make_secrets(dir, "ours");
    let cluster = TestCluster::start_with_args(
        Timings::default(),
        3,
        &secret_flag(&member),
        &secret_flag(&client),
    );
    (cluster, member, client)
}

#[test]
fn secrets_are_made_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (member, client) = make_secrets(dir.path(), "s");
    for file in [&member, &client] {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(text.starts_with("ringleader-"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(file).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", file.display());
        }
    }
    let before = std::fs::read_to_string(&member).unwrap();
    let again = run_client(&["secrets", &dir.path().join("s").display().to_string()]);
    again.expect_code(5);
    assert!(again.stderr.contains("exists already"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&member).unwrap(), before);
}

#[test]
fn a_secured_cluster_serves_clients_with_the_secret_and_refuses_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _, _) = secured_cluster(dir.path());
    cluster.client(&["setr", "alpha", "one"]).expect_ok();
    assert_eq!(cluster.getr_text("alpha").as_deref(), Some("one"));

    // No secret: refused in the hello, told how to get one.
    let bare = run_client(&["--viewleader", &cluster.viewleader_addr(), "getr", "alpha"]);
    bare.expect_code(EXIT_REFUSED);
    assert!(
        bare.stderr.contains("requires the cluster secret")
            && bare.stderr.contains("--cluster-secret-file"),
        "{}",
        bare.stderr
    );

    // Another cluster's secret, of either kind: the service cannot prove ours.
    let (other_member, other_client) = make_secrets(dir.path(), "theirs");
    for wrong in [&other_member, &other_client] {
        let mut args = secret_flag(wrong);
        args.extend([
            "--viewleader".to_string(),
            cluster.viewleader_addr(),
            "getr".to_string(),
            "alpha".to_string(),
        ]);
        let run = run_client(&args);
        run.expect_code(EXIT_REFUSED);
        assert!(
            run.stderr.contains("could not prove the cluster secret"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(cluster.getr_text("alpha").as_deref(), Some("one"));
}

#[test]
fn a_server_without_the_secret_never_joins_and_one_with_a_clients_secret_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _, client) = secured_cluster(dir.path());
    let want = cluster.live_server_addrs();

    let bare_args: Vec<String> = [
        "--port",
        "0",
        "--in-memory",
        "--viewleader",
        &cluster.viewleader_addr(),
        "--heartbeat-interval-ms",
        &cluster.timings().heartbeat_ms.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let stranger = start_service(
        "a server without the secret",
        SERVER_BIN,
        &bare_args,
        dir.path(),
    )
    .unwrap_or_else(|err| panic!("{err}"));
    wait_until(
        EXPIRY_TIMEOUT,
        "the server without the secret logs its refusal",
        || {
            stranger
                .stderr_text()
                .contains("requires the cluster secret")
        },
    );
    holds_for(
        Duration::from_millis(5 * cluster.timings().heartbeat_ms),
        "the view lists only the servers with the secret",
        || {
            let view = cluster.query_servers();
            if view.addrs() == want {
                Ok(())
            } else {
                Err(format!("{view:?}"))
            }
        },
    );

    let mut with_client_secret = bare_args.clone();
    with_client_secret.extend(secret_flag(&client));
    let run = run_service_to_exit(SERVER_BIN, &with_client_secret);
    run.expect_code(EXIT_USAGE);
    assert!(
        run.stderr.contains("holds a client's secret") && run.stderr.contains("member.secret"),
        "{}",
        run.stderr
    );
}

#[test]
fn without_a_secret_a_process_refuses_to_listen_beyond_loopback() {
    for program in [SERVER_BIN, VIEWLEADER_BIN] {
        let run = run_service_to_exit(
            program,
            &["--host", "0.0.0.0", "--port", "0", "--in-memory"],
        );
        run.expect_code(EXIT_USAGE);
        assert!(
            run.stderr
                .contains("refusing to listen on 0.0.0.0 without a cluster secret")
                && run.stderr.contains("client secrets DIR"),
            "{program}: {}",
            run.stderr
        );
    }
}

/// A connection to `addr` proving `secret`.
async fn connect<Req, Rep>(
    addr: &str,
    service: ServiceKind,
    secret: &ClusterSecret,
) -> RpcClient<Req, Rep>
where
    Req: serde::Serialize + Send + 'static,
    Rep: serde::de::DeserializeOwned + Send + 'static,
{
    let env = Env::real().with_secret(Some(secret.clone()));
    RpcClient::connect(&env, addr, service, CALL_TIMEOUT)
        .await
        .unwrap_or_else(|err| panic!("connect to {addr}: {err}"))
}

#[track_caller]
fn assert_forbidden<T: std::fmt::Debug>(outcome: Result<T, Error>, what: &str) {
    match outcome {
        Err(Error::Forbidden(msg)) => assert!(
            msg.contains("a request between cluster members"),
            "{what}: {msg}"
        ),
        other => panic!("{what}: not forbidden: {other:?}"),
    }
}

#[test]
fn a_client_cannot_forge_a_heartbeat_a_leave_or_a_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _, client_file) = secured_cluster(dir.path());
    cluster.client(&["setr", "alpha", "one"]).expect_ok();
    let view = cluster.query_servers();
    let victim = view.servers[0].clone();
    let client_secret = ClusterSecret::load(&client_file).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let viewleader: RpcClient<ViewLeaderRequest, ViewLeaderReply> = connect(
            &cluster.viewleader_addr(),
            ServiceKind::ViewLeader,
            &client_secret,
        )
        .await;
        let leave = ViewLeaderRequest::Leave {
            server_id: victim.id.clone(),
        };
        assert_forbidden(
            viewleader.call(&leave, CALL_TIMEOUT).await,
            "a forged leave",
        );
        let heartbeat = ViewLeaderRequest::Heartbeat(Heartbeat {
            server_id: "forged".into(),
            addr: "127.0.0.1:1".into(),
            epoch_seen: 0,
            rebalanced_epoch: 0,
            settled_epoch: 0,
            settled_servers: Vec::new(),
            former_ids: Vec::new(),
        });
        assert_forbidden(
            viewleader.call(&heartbeat, CALL_TIMEOUT).await,
            "a forged heartbeat",
        );
        // The same connection still answers what a client may ask.
        assert!(matches!(
            viewleader
                .call(&ViewLeaderRequest::QueryServers, CALL_TIMEOUT)
                .await,
            Ok(ViewLeaderReply::View(_))
        ));

        let server: RpcClient<ServerRequest, ServerReply> =
            connect(&victim.addr, ServiceKind::Server, &client_secret).await;
        let transfer = ServerRequest::Transfer {
            epoch: view.epoch,
            server_id: victim.id.clone(),
            entries: vec![(
                "alpha".to_string(),
                Versioned {
                    value: Value::Text("forged".into()),
                    version: u64::MAX / 2,
                },
            )],
        };
        assert_forbidden(
            server.call(&transfer, CALL_TIMEOUT).await,
            "a forged transfer",
        );
    });

    // Nothing changed: the victim is in the view, no forged server joined, the key is as written.
    let after = cluster.query_servers();
    assert_eq!(after.ids(), view.ids());
    assert_eq!(cluster.getr_text("alpha").as_deref(), Some("one"));
    cluster.client(&["setr", "alpha", "two"]).expect_ok();
    assert_eq!(cluster.getr_text("alpha").as_deref(), Some("two"));
}

/// A linearizable read by a client that finds a replica behind has the holder send its copy
/// (`Repair`): a client never sends a version itself, yet the read still brings the value to a
/// majority before answering.
#[test]
fn a_clients_read_repair_goes_through_the_replica_that_holds_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, member_file, _) = secured_cluster(dir.path());
    let written = cluster.client(&["--json", "setr", "beta", "one"]);
    let version = written.expect_ok().json()["version"]
        .as_u64()
        .expect("setr prints the version");
    let view = cluster.query_servers();
    let located = cluster.client(&["--json", "locate", "beta"]);
    let doc = located.expect_ok().json();
    let primary = doc["replicas"][0]["addr"]
        .as_str()
        .expect("an address")
        .to_string();
    let primary_id = view.id_at(&primary).expect("the primary is in the view");

    // A newer version on the primary alone, as if a write had reached only it: a member's
    // transfer (a client may not send one).
    let member_secret = ClusterSecret::load(&member_file).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server: RpcClient<ServerRequest, ServerReply> =
            connect(&primary, ServiceKind::Server, &member_secret).await;
        let transfer = ServerRequest::Transfer {
            epoch: view.epoch,
            server_id: primary_id,
            entries: vec![(
                "beta".to_string(),
                Versioned {
                    value: Value::Text("two".into()),
                    version: version + 1,
                },
            )],
        };
        match server.call(&transfer, CALL_TIMEOUT).await {
            Ok(ServerReply::Transferred { stored: 1 }) => {}
            other => panic!("the member's transfer to the primary: {other:?}"),
        }
    });
    assert_eq!(cluster.getr_text("beta").as_deref(), Some("two"));

    // The read repaired the others: every replica now holds the primary's version.
    let doc = cluster
        .client(&["--json", "locate", "beta"])
        .expect_ok()
        .json();
    let versions: Vec<u64> = doc["replicas"]
        .as_array()
        .expect("replicas")
        .iter()
        .map(|r| r["version"].as_u64().expect("a version on every replica"))
        .collect();
    assert!(
        versions.iter().filter(|v| **v == versions[0]).count() >= 2,
        "the newest version is on fewer than a majority after the read: {versions:?}"
    );
}

/// `client tls-certs DIR` into `dir/name`: the TLS flags of a node and of a client.
fn make_certs(dir: &Path, name: &str) -> (Vec<String>, Vec<String>) {
    let out = dir.join(name);
    run_client(&["tls-certs", &out.display().to_string()]).expect_ok();
    let flags = |cert: &str, key: &str| {
        ["--tls-cert", cert, "--tls-key", key, "--tls-ca", "ca.pem"]
            .iter()
            .enumerate()
            .map(|(i, arg)| match i % 2 {
                0 => arg.to_string(),
                _ => out.join(arg).display().to_string(),
            })
            .collect::<Vec<String>>()
    };
    (
        flags("node.pem", "node-key.pem"),
        flags("client.pem", "client-key.pem"),
    )
}

/// The secret and TLS together: the hello's proof runs inside the TLS session, and a client
/// needs both.
#[test]
fn with_a_secret_and_tls_a_client_needs_both() {
    let dir = tempfile::tempdir().unwrap();
    let (member, client) = make_secrets(dir.path(), "ours");
    let (node_tls, client_tls) = make_certs(dir.path(), "certs");
    let node_args = [secret_flag(&member), node_tls].concat();
    let client_args = [secret_flag(&client), client_tls.clone()].concat();
    let cluster = TestCluster::start_with_args(Timings::default(), 3, &node_args, &client_args);
    cluster.client(&["setr", "gamma", "one"]).expect_ok();
    assert_eq!(cluster.getr_text("gamma").as_deref(), Some("one"));

    let viewleader = cluster.viewleader_addr();
    let tail = ["--viewleader", viewleader.as_str(), "getr", "gamma"];
    let tls_only = run_client(&[client_tls, tail.map(String::from).to_vec()].concat());
    tls_only.expect_code(EXIT_REFUSED);
    assert!(
        tls_only.stderr.contains("requires the cluster secret"),
        "{}",
        tls_only.stderr
    );
    let secret_only = run_client(&[secret_flag(&client), tail.map(String::from).to_vec()].concat());
    assert_ne!(secret_only.code, 0, "a client without TLS was served");
    assert!(secret_only.stderr.contains("TLS"), "{}", secret_only.stderr);
}

/// Hellos timed per cluster in [`measure_hello_with_and_without_the_secret`].
const MEASURED_HELLOS: usize = 500;

/// The median of `MEASURED_HELLOS` fresh connections to a server of `cluster` (each a TCP
/// connect and a hello, and one status call), in microseconds.
fn time_hellos(cluster: &TestCluster, secret: Option<ClusterSecret>) -> u128 {
    let addr = cluster.query_servers().servers[0].addr.clone();
    let env = Env::real().with_secret(secret);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut samples: Vec<Duration> = runtime.block_on(async {
        let mut samples = Vec::new();
        for _ in 0..MEASURED_HELLOS {
            let started = std::time::Instant::now();
            let conn: RpcClient<ServerRequest, ServerReply> =
                RpcClient::connect(&env, &addr, ServiceKind::Server, CALL_TIMEOUT)
                    .await
                    .expect("connect");
            conn.call(&ServerRequest::Status, CALL_TIMEOUT)
                .await
                .expect("status");
            samples.push(started.elapsed());
        }
        samples
    });
    samples.sort();
    samples[samples.len() / 2].as_micros()
}

#[test]
#[ignore = "a measurement: cargo test --release --test auth -- --ignored --nocapture"]
fn measure_hello_with_and_without_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (member, client) = make_secrets(dir.path(), "ours");
    let client_secret = ClusterSecret::load(&client).unwrap();
    let plain = TestCluster::start(1);
    let secured = TestCluster::start_with_args(
        Timings::default(),
        1,
        &secret_flag(&member),
        &secret_flag(&client),
    );
    // Interleaved, so that a change in the machine's load falls on both.
    for round in 0..3 {
        let without = time_hellos(&plain, None);
        let with = time_hellos(&secured, Some(client_secret.clone()));
        println!(
            "round {round}: connect + hello + status, median of {MEASURED_HELLOS}: \
             {without} us without a secret, {with} us with one ({:.2}x)",
            with as f64 / without.max(1) as f64
        );
    }
}

/// `Repair` is a client's request, and the server sends the copy on in a member's `Transfer`:
/// so the server must not let a client choose where or at which epoch (review of issue 17). A
/// repair naming an epoch far past any the server heard of is refused, and so is one at the
/// server's own epoch aimed at a server that is no replica of the key; a proper one still works.
#[test]
fn a_clients_repair_cannot_carry_a_far_future_epoch_or_reach_a_non_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (cluster, _, client_file) = secured_cluster(dir.path());
    let mut cluster = cluster;
    cluster.add_server();
    let view = cluster.wait_settled();
    assert_eq!(view.servers.len(), 4, "{view:?}");
    cluster.client(&["setr", "gamma", "one"]).expect_ok();
    let servers = view.server_infos();
    let replicas = ringleader::ring::replicas("gamma", &servers);
    let holder = servers
        .iter()
        .find(|s| s.id == replicas[0])
        .expect("the primary")
        .clone();
    let replica = servers
        .iter()
        .find(|s| s.id == replicas[1])
        .expect("a second replica")
        .clone();
    let outsider = servers
        .iter()
        .find(|s| !replicas.contains(&s.id))
        .expect("a server that is no replica")
        .clone();
    let client_secret = ClusterSecret::load(&client_file).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let server: RpcClient<ServerRequest, ServerReply> =
            connect(&holder.addr, ServiceKind::Server, &client_secret).await;
        let repair = |epoch, to: &ringleader::types::ServerInfo| ServerRequest::Repair {
            key: "gamma".into(),
            server_id: holder.id.clone(),
            epoch,
            to: vec![to.clone()],
        };
        match server
            .call(
                &repair(ringleader::types::EPOCH_MAX, &replica),
                CALL_TIMEOUT,
            )
            .await
        {
            Err(Error::StaleView(msg)) => assert!(msg.contains("has heard of epoch"), "{msg}"),
            other => panic!("a repair of a far-future epoch: {other:?}"),
        }
        match server
            .call(&repair(view.epoch, &outsider), CALL_TIMEOUT)
            .await
        {
            Err(Error::InvalidRequest(msg)) => {
                assert!(msg.contains("is not a replica of"), "{msg}")
            }
            other => panic!("a repair aimed at a non-replica: {other:?}"),
        }
        match server
            .call(&repair(view.epoch, &replica), CALL_TIMEOUT)
            .await
        {
            Ok(ServerReply::Repaired { .. }) => {}
            other => panic!("a proper repair: {other:?}"),
        }
    });
    let held = cluster.client_on(
        cluster.server_number(&outsider.addr),
        &["get", "--ring", "gamma"],
    );
    held.expect_code(1);
}
