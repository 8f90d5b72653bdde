//! The cluster name through real processes (issue 14, "Identity"): every process belongs to a
//! named cluster (`--cluster`, else `RINGLEADER_CLUSTER`, else `ringleader`), and a peer of
//! another cluster is refused in the hello with an error naming both, so one cluster's keys never
//! reach another's processes. Here a view leader and a server of cluster "a" meet a server, and
//! clients, of cluster "b" (refused, both names on their stderr) and of cluster "a" (served);
//! last, the tools' in-process cluster, named in its options.

mod common;

use std::time::Duration;

use common::{
    holds_for, run_client, run_client_with_env, run_service_to_exit, wait_until, TestCluster,
    Timings, CLUSTER_ENV, EXPIRY_TIMEOUT, VIEWLEADER_BIN,
};

/// Whether `text` names both clusters of these tests, as a refused hello does.
fn names_both_clusters(text: &str) -> bool {
    text.contains(r#"cluster "a""#) && text.contains(r#"cluster "b""#)
}

/// A view leader and one server of cluster "a".
fn cluster_a() -> TestCluster {
    TestCluster::start_in(Some("a"), Timings::default(), 1)
}

#[test]
fn a_server_of_another_cluster_is_refused_by_the_view_leader_and_logs_both_names() {
    let cluster = cluster_a();
    let stranger = cluster
        .start_server_of("b")
        .unwrap_or_else(|err| panic!("{err}"));
    wait_until(
        EXPIRY_TIMEOUT,
        "the server of cluster b logs its refusal, naming both clusters",
        || names_both_clusters(&stranger.stderr_text()),
    );
    // Refused at the hello, it never joins: the view keeps the one server of "a" while the
    // stranger goes on trying for several heartbeat intervals.
    let want = cluster.live_server_addrs();
    holds_for(
        Duration::from_millis(5 * cluster.timings().heartbeat_ms),
        "the view lists only the server of cluster a",
        || {
            let view = cluster.query_servers();
            if view.addrs() == want && !view.addrs().contains(stranger.addr()) {
                Ok(())
            } else {
                Err(format!("{view:?}"))
            }
        },
    );
    assert!(
        names_both_clusters(&stranger.stderr_text()),
        "{}",
        stranger.stderr_text()
    );
}

#[test]
fn a_client_of_another_cluster_is_refused_with_both_names() {
    let cluster = cluster_a();
    let vl = cluster.viewleader_addr();
    let server = cluster.server_addr(0);

    // By flag, by environment variable, and by default (the default cluster is not "a" either).
    let by_flag = run_client(&["--cluster", "b", "--viewleader", &vl, "query_servers"]);
    let by_env = run_client_with_env(
        &["--viewleader", &vl, "query_servers"],
        &[(CLUSTER_ENV, "b")],
    );
    for run in [&by_flag, &by_env] {
        run.expect_code(5);
        assert!(names_both_clusters(&run.stderr), "{run:?}");
        assert!(run.stderr.contains(&vl), "the refusing address: {run:?}");
    }
    let by_default = run_client(&["--viewleader", &vl, "query_servers"]);
    by_default.expect_code(5);
    assert!(
        by_default.stderr.contains(r#"cluster "a""#)
            && by_default.stderr.contains(r#"cluster "ringleader""#),
        "{by_default:?}"
    );

    // A storage server refuses too, and --json says it is a protocol error.
    let run = run_client(&[
        "--cluster",
        "b",
        "--json",
        "--viewleader",
        &vl,
        "--server",
        &server,
        "get",
        "k",
    ]);
    run.expect_code(5);
    let (kind, message) = run.error_json();
    assert_eq!(kind, "protocol", "{run:?}");
    assert!(names_both_clusters(&message), "{run:?}");

    // Writes of cluster "b" are refused before any of them reaches a server of "a".
    let run = run_client(&["--cluster", "b", "--viewleader", &vl, "setr", "k", "from-b"]);
    run.expect_code(5);
    assert_eq!(
        cluster.getr_text("k"),
        None,
        "a write of cluster b landed in a"
    );
}

#[test]
fn with_the_matching_name_everything_works() {
    let mut cluster = cluster_a();
    // The cluster's own server joined (TestCluster::start_in waited for it), and its clients,
    // which pass `--cluster a`, write and read.
    assert_eq!(cluster.query_servers().servers.len(), 1);
    cluster.client(&["setr", "k", "v"]).expect_ok();
    assert_eq!(cluster.getr_text("k").as_deref(), Some("v"));
    // The same by environment variable.
    let vl = cluster.viewleader_addr();
    let run = run_client_with_env(&["--viewleader", &vl, "getr", "k"], &[(CLUSTER_ENV, "a")]);
    run.expect_ok();
    assert_eq!(run.stdout.trim(), "v");
    // A second server of "a" joins.
    cluster.add_server();
    cluster.wait_settled();
    assert_eq!(cluster.query_servers().servers.len(), 2);
}

#[test]
fn a_malformed_cluster_name_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let data_dir = dir.path().join("vl").display().to_string();
    let viewleader = run_service_to_exit(
        VIEWLEADER_BIN,
        &["--port", "0", "--data-dir", &data_dir, "--cluster", "a b"],
    );
    viewleader.expect_code(2);
    assert!(viewleader.stderr.contains("cluster name"), "{viewleader:?}");
    let long = "x".repeat(ringleader::net::CLUSTER_NAME_MAX_BYTES + 1);
    let client = run_client(&["--cluster", &long, "query_servers"]);
    client.expect_code(5);
    assert!(client.stderr.contains("cluster name"), "{client:?}");
    let empty = run_client_with_env(&["query_servers"], &[(CLUSTER_ENV, "")]);
    empty.expect_code(5);
    assert!(empty.stderr.contains("cluster name"), "{empty:?}");
}

/// The in-process cluster of the tools (demo, bench) takes its name from its options: its own
/// client is served, a client of the default cluster refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_process_cluster_serves_only_its_own_cluster() {
    use ringleader::client::{Client, ClientOptions};
    use ringleader::tools::cluster::{ClusterOptions, LocalCluster};
    use ringleader::types::Value;

    let options = ClusterOptions {
        cluster: "a".into(),
        ..ClusterOptions::default()
    };
    let cluster = LocalCluster::start(1, options).await.unwrap();
    let own = cluster.client(0);
    own.setr("k", Value::Text("v".into())).await.unwrap();
    let stranger = Client::new(ClientOptions {
        viewleader: cluster.viewleader_addr.clone(),
        ..ClientOptions::default()
    });
    let err = stranger.getr("k").await.unwrap_err();
    assert!(
        matches!(&err, ringleader::Error::Protocol(msg)
            if msg.contains(r#"cluster "a""#) && msg.contains(r#"cluster "ringleader""#)),
        "{err}"
    );
    let bad = ClusterOptions {
        cluster: "a b".into(),
        ..ClusterOptions::default()
    };
    assert!(LocalCluster::start(1, bad).await.is_err());
    cluster.stop().await;
}
