//! Issue 16: bearer tokens on the HTTP pages (`--http-token-file`, `--http-read-open`). With a
//! token, writes and admin routes answer 401 with `WWW-Authenticate: Bearer` to a request without
//! the right `Authorization: Bearer TOKEN`, and write nothing; reads too, unless reads are open;
//! `/health` and `/ready` always answer. A bad token file stops the process at start with a
//! reason.
//!
//! Real processes through the shared harness (the gateway with `--http-port 0`); the token file
//! lives in the test's own temp dir.

mod common;

use std::path::{Path, PathBuf};

use common::http_client::{http, Response};
use common::{
    run_service_to_exit, run_service_to_exit_with_env, wait_for, TestCluster, Timings,
    HTTP_TOKEN_FILE_ENV, SERVER_BIN, STARTUP_TIMEOUT, VIEWLEADER_BIN,
};

const TOKEN: &str = "7d4c1f0e9a8b6c5d4e3f2a1b0c9d8e7f";
const WRONG_TOKEN: &str = "7d4c1f0e9a8b6c5d4e3f2a1b0c9d8e7e";
/// A replace of a key through the REST API.
const PUT_BODY: &str = r#"{"type": "PUT", "value": ["written"]}"#;

/// A temp dir holding the token file, with a trailing newline as `openssl rand -hex` writes it.
fn token_file() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let path = dir.path().join("http.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write the token file");
    (dir, path)
}

/// The `http listening on ADDR` address among `lines` once printed.
fn http_addr(what: &str, lines: impl Fn() -> Vec<String>) -> String {
    wait_for(
        STARTUP_TIMEOUT,
        &format!("{what} prints its HTTP address"),
        || {
            lines()
                .iter()
                .find_map(|line| line.strip_prefix("http listening on "))
                .map(|addr| addr.trim().to_string())
                .ok_or_else(|| "no `http listening on` line yet".to_string())
        },
    )
}

/// A cluster of two servers whose gateways take the token in `path`, plus `extra` flags.
fn cluster_with_token(path: &Path, extra: &[&str]) -> (TestCluster, String) {
    let mut args = vec![
        "--http-port".to_string(),
        "0".into(),
        "--http-token-file".into(),
        path.display().to_string(),
    ];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    let cluster = TestCluster::start_with_server_args(Timings::default(), 2, &args);
    let gateway = http_addr("server 0", || cluster.server_stdout(0));
    (cluster, gateway)
}

/// `method path` with `body` (JSON for the key routes, text for the log) and the token if given.
#[track_caller]
fn send(addr: &str, method: &str, path: &str, token: Option<&str>, body: &str) -> Response {
    let content_type = match path.starts_with("/keys/") {
        true => "application/json",
        false => "text/plain",
    };
    let authorization = token.map(|token| format!("Bearer {token}"));
    let mut headers = vec![("Content-Type", content_type)];
    if let Some(value) = &authorization {
        headers.push(("Authorization", value));
    }
    http(addr, method, path, &headers, body).unwrap_or_else(|err| panic!("{method} {path}: {err}"))
}

#[track_caller]
fn expect_unauthorized(response: &Response, what: &str) {
    assert_eq!(response.status, 401, "{what}: {response:?}");
    let challenge = response.header("www-authenticate").unwrap_or("");
    assert!(challenge.starts_with("Bearer"), "{what}: {response:?}");
    assert_eq!(
        response.text().trim().lines().count(),
        1,
        "{what}: a one-line reason: {response:?}"
    );
}

#[test]
fn without_the_right_token_writes_and_admin_routes_get_401_and_nothing_is_written() {
    let (_dir, path) = token_file();
    let (cluster, gateway) = cluster_with_token(&path, &[]);

    for token in [None, Some(WRONG_TOKEN)] {
        let what = |route: &str| format!("{route} with token {token:?}");
        let response = send(&gateway, "POST", "/keys/k", token, PUT_BODY);
        expect_unauthorized(&response, &what("POST /keys/k"));
        let response = send(&gateway, "PUT", "/", token, "an entry");
        expect_unauthorized(&response, &what("PUT /"));
        for route in ["/admin/status", "/metrics", "/keys/k"] {
            expect_unauthorized(&send(&gateway, "GET", route, token, ""), &what(route));
        }
        for route in ["/crash", "/recover", "/exit"] {
            expect_unauthorized(&send(&gateway, "POST", route, token, ""), &what(route));
        }
    }
    let missing = send(&gateway, "POST", "/keys/k", None, PUT_BODY);
    assert!(
        missing.text().contains("Authorization: Bearer"),
        "the reason says what is missing: {missing:?}"
    );
    // Nothing was written, nothing crashed, nothing exited.
    assert_eq!(
        cluster.getr_text("k"),
        None,
        "a refused write reached the store"
    );
    assert_eq!(
        cluster.getr_text("log"),
        None,
        "a refused log entry was appended"
    );
    assert!(
        !cluster.dir().join("output").exists(),
        "a refused /exit wrote the log"
    );
    cluster.client(&["setr", "probe", "up"]).expect_ok();

    // The right token: everything works.
    let written = send(&gateway, "POST", "/keys/k", Some(TOKEN), PUT_BODY);
    assert_eq!(written.status, 204, "{written:?}");
    let read = send(&gateway, "GET", "/keys/k", Some(TOKEN), "");
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.text().trim(), r#"["written"]"#);
    let appended = send(&gateway, "PUT", "/", Some(TOKEN), "entry one");
    assert_eq!(appended.status, 200, "{appended:?}");
    for route in ["/admin/status", "/metrics"] {
        let page = send(&gateway, "GET", route, Some(TOKEN), "");
        assert_eq!(page.status, 200, "{route}: {page:?}");
    }
    // Neither the token nor a near miss is ever logged.
    let logs = cluster.server_stderr(0);
    assert!(logs.contains("bearer token"), "refusals are logged: {logs}");
    assert!(
        !logs.contains(TOKEN) && !logs.contains(WRONG_TOKEN),
        "a token was logged: {logs}"
    );
}

#[test]
fn health_and_ready_answer_without_a_token() {
    let (_dir, path) = token_file();
    let (_cluster, gateway) = cluster_with_token(&path, &[]);
    for route in ["/health", "/ready"] {
        let response = send(&gateway, "GET", route, None, "");
        assert_eq!(response.status, 200, "{route}: {response:?}");
    }
}

#[test]
fn with_reads_open_reads_need_no_token_but_writes_still_do() {
    let (_dir, path) = token_file();
    let (cluster, gateway) = cluster_with_token(&path, &["--http-read-open"]);
    let written = send(&gateway, "POST", "/keys/k", Some(TOKEN), PUT_BODY);
    assert_eq!(written.status, 204, "{written:?}");

    let read = send(&gateway, "GET", "/keys/k", None, "");
    assert_eq!(read.status, 200, "{read:?}");
    assert_eq!(read.text().trim(), r#"["written"]"#);
    let missing = send(&gateway, "GET", "/keys/nothing-here", None, "");
    assert_eq!(missing.status, 404, "{missing:?}");

    let overwrite = r#"{"type": "PUT", "value": ["overwritten"]}"#;
    expect_unauthorized(
        &send(&gateway, "POST", "/keys/k", None, overwrite),
        "POST /keys/k",
    );
    expect_unauthorized(&send(&gateway, "PUT", "/", None, "entry"), "PUT /");
    for route in ["/admin/status", "/metrics"] {
        expect_unauthorized(&send(&gateway, "GET", route, None, ""), route);
    }
    let read = send(&gateway, "GET", "/keys/k", None, "");
    assert_eq!(
        read.text().trim(),
        r#"["written"]"#,
        "the refused write changed the key"
    );
    assert_eq!(cluster.getr_text("log"), None);
}

#[test]
fn the_view_leaders_pages_need_the_token_but_its_health_does_not() {
    let (_dir, path) = token_file();
    let args = [
        "--http-port".to_string(),
        "0".into(),
        "--http-token-file".into(),
        path.display().to_string(),
    ];
    let cluster = TestCluster::start_with_args(Timings::default(), 1, &args, &[]);
    let pages = http_addr("the view leader", || cluster.viewleader_stdout());
    for route in ["/metrics", "/admin/status"] {
        expect_unauthorized(&send(&pages, "GET", route, None, ""), route);
        expect_unauthorized(&send(&pages, "GET", route, Some(WRONG_TOKEN), ""), route);
        let page = send(&pages, "GET", route, Some(TOKEN), "");
        assert_eq!(page.status, 200, "{route}: {page:?}");
    }
    for route in ["/health", "/ready"] {
        let response = send(&pages, "GET", route, None, "");
        assert_eq!(response.status, 200, "{route}: {response:?}");
    }
}

#[test]
fn bad_token_files_are_refused_at_start_with_a_reason() {
    let dir = tempfile::tempdir().expect("create a temp dir");
    let write = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write a token file");
        path.display().to_string()
    };
    let empty = write("empty", "  \n");
    let short = write("short", "hunter2\n");
    let spaced = write("spaced", "7d4c1f0e9a8b6c5d 4e3f2a1b0c9d8e7f\n");
    let missing = dir.path().join("missing").display().to_string();
    let cases = [
        (empty.as_str(), "is empty"),
        (short.as_str(), "token of 7 bytes; at least 16"),
        (spaced.as_str(), "cannot carry"),
        (missing.as_str(), "cannot read the HTTP token file"),
    ];
    for program in [SERVER_BIN, VIEWLEADER_BIN] {
        for (file, reason) in cases {
            let run = run_service_to_exit(
                program,
                &["--port", "0", "--in-memory", "--http-token-file", file],
            );
            assert_ne!(run.code, 0, "{program} started with {file}: {run:?}");
            assert!(run.stderr.contains(reason), "{program} {file}: {run:?}");
            assert!(!run.stdout.contains("listening on"), "{run:?}");
            assert!(
                !run.stderr.contains("hunter2"),
                "the token was printed: {run:?}"
            );
        }
        // The variable stands in for the flag.
        let run = run_service_to_exit_with_env(
            program,
            &["--port", "0", "--in-memory"],
            &[(HTTP_TOKEN_FILE_ENV, short.as_str())],
        );
        assert_ne!(run.code, 0, "{program} with {HTTP_TOKEN_FILE_ENV}: {run:?}");
        assert!(run.stderr.contains("at least 16"), "{program}: {run:?}");
        let run = run_service_to_exit(program, &["--port", "0", "--in-memory", "--http-read-open"]);
        assert_ne!(run.code, 0, "{run:?}");
        assert!(
            run.stderr
                .contains("--http-read-open needs --http-token-file"),
            "{run:?}"
        );
    }
}
