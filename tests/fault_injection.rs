//! Issue 16: fault injection is opt-in. A `server` or `viewleader` started without
//! `--fault-injection` refuses `crash` and `recover` (the `client` commands, over RPC) and
//! `POST /crash`, `/recover`, `/exit` (the gateway) with a clear "forbidden" that names the flag,
//! and keeps serving with its data unchanged; started with it, the same requests work.
//!
//! Real processes through the shared harness: `TestCluster::start_without_fault_injection` starts
//! every process as a deployment would, every other harness cluster passes the flag.

mod common;

use std::time::Duration;

use common::http_client::{http, Response};
use common::{wait_for, TestCluster, Timings, STARTUP_TIMEOUT};

/// The `client` exit code of `Error::Forbidden` (documented in the README).
const FORBIDDEN_EXIT_CODE: i32 = 4;
/// Longest wait for a recovered server to answer again.
const RECOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The gateway address server `number` printed (`http listening on ADDR`).
fn http_addr(cluster: &TestCluster, number: usize) -> String {
    wait_for(
        STARTUP_TIMEOUT,
        "the server prints its HTTP address",
        || {
            cluster
                .server_stdout(number)
                .iter()
                .find_map(|line| line.strip_prefix("http listening on "))
                .map(|addr| addr.trim().to_string())
                .ok_or_else(|| "no `http listening on` line yet".to_string())
        },
    )
}

#[track_caller]
fn post(addr: &str, path: &str) -> Response {
    http(addr, "POST", path, &[], "").unwrap_or_else(|err| panic!("POST {path}: {err}"))
}

#[track_caller]
fn expect_forbidden_run(run: &common::ClientRun, what: &str) {
    run.expect_code(FORBIDDEN_EXIT_CODE);
    let (kind, message) = run.error_json();
    assert_eq!(kind, "forbidden", "{what}: {run:?}");
    assert!(
        message.contains("started without --fault-injection") && message.contains("tests"),
        "{what}: the refusal names the flag and what it is for: {message}"
    );
}

#[test]
fn without_the_flag_crash_recover_and_exit_are_refused_and_the_process_keeps_serving() {
    let cluster =
        TestCluster::start_without_fault_injection(Timings::default(), 3, &["--http-port", "0"]);
    cluster.client(&["setr", "k", "before"]).expect_ok();
    let gateway = http_addr(&cluster, 0);

    // The RPC requests, through `client`, to a server and to the view leader.
    for command in ["crash", "recover"] {
        let run = cluster.client_on(0, &["--json", command]);
        expect_forbidden_run(&run, &format!("client --server {command}"));
        let run = cluster.client(&["--json", command]);
        expect_forbidden_run(&run, &format!("client --viewleader {command}"));
    }
    // Without --json, a person reads the reason on stderr.
    let run = cluster.client_on(0, &["crash"]);
    run.expect_code(FORBIDDEN_EXIT_CODE);
    assert!(run.stderr.contains("--fault-injection"), "{run:?}");

    // The gateway's routes.
    for path in ["/crash", "/recover", "/exit"] {
        let response = post(&gateway, path);
        assert_eq!(response.status, 403, "POST {path}: {response:?}");
        assert!(
            response
                .text()
                .contains("started without --fault-injection"),
            "POST {path}: {response:?}"
        );
    }

    // Nothing happened: the server answers (a crashed one would drop the connection), /exit
    // wrote no log file, and the data is what it was.
    let health = http(&gateway, "GET", "/health", &[], "").expect("GET /health");
    assert_eq!(health.status, 200, "{health:?}");
    assert!(
        !cluster.dir().join("output").exists(),
        "a refused /exit wrote the log"
    );
    assert_eq!(cluster.getr_text("k").as_deref(), Some("before"));
    cluster.client_on(0, &["get", "--ring", "k"]).expect_ok();
    cluster.client(&["setr", "k", "after"]).expect_ok();
    assert_eq!(cluster.getr_text("k").as_deref(), Some("after"));
    let view = cluster.wait_settled();
    assert_eq!(view.servers.len(), 3, "no server left the view: {view:?}");
}

#[test]
fn with_the_flag_crash_and_recover_work_through_client_and_http() {
    let cluster = TestCluster::start_with_server_args(Timings::default(), 3, &["--http-port", "0"]);
    cluster.client(&["setr", "k", "v"]).expect_ok();
    let gateway = http_addr(&cluster, 0);

    // RPC: the server crashes (its gateway then answers nothing but /recover, /exit and the
    // health probes, which say so), and comes back.
    cluster.client_on(0, &["crash"]).expect_ok();
    let health = http(&gateway, "GET", "/health", &[], "").expect("GET /health while crashed");
    assert_eq!(
        health.status, 503,
        "a crashed server is unhealthy: {health:?}"
    );
    cluster.client_on(0, &["recover"]).expect_ok();
    wait_for(
        RECOVER_TIMEOUT,
        "the recovered server is healthy",
        || match http(&gateway, "GET", "/health", &[], "") {
            Ok(response) if response.status == 200 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );

    // HTTP: the same through the gateway.
    let crashed = post(&gateway, "/crash");
    assert_eq!(crashed.status, 200, "{crashed:?}");
    let refused = http(&gateway, "GET", "/admin/status", &[], "");
    assert!(
        refused.is_err(),
        "a crashed node closes the connection: {refused:?}"
    );
    let recovered = post(&gateway, "/recover");
    assert_eq!(recovered.status, 200, "{recovered:?}");

    // The view leader.
    cluster.client(&["crash"]).expect_ok();
    cluster.client(&["recover"]).expect_ok();

    assert_eq!(cluster.getr_text("k").as_deref(), Some("v"));
}
