//! Issue 17 (operability), on the real binaries: the messages an operator reads. A client sent to
//! the wrong kind of port says which flag the address belongs to, or that it speaks HTTP; one
//! sent to a host without a port, where nothing answers, names the whole range tried. The view
//! leader logs each join and expiry with the server's address and its reason, and warns when
//! the view is too small to hold three copies.

mod common;

use std::time::Duration;

use common::{run_client, wait_for, wait_until, TestCluster, Timings};

/// Time allowed for each call by a client sent to the wrong place, in ms: short, since the
/// answer (or the refusal) is immediate.
const WRONG_PLACE_TIMEOUT_MS: &str = "2000";

/// How long the view leader's log may take to show a join or an expiry.
const LOG_WAIT: Duration = Duration::from_secs(30);

fn client_at(flag: &str, addr: &str, args: &[&str]) -> common::ClientRun {
    let mut full = vec!["--timeout-ms", WRONG_PLACE_TIMEOUT_MS, flag, addr];
    full.extend_from_slice(args);
    run_client(&full)
}

#[test]
fn a_client_sent_to_the_other_kind_of_service_is_told_which_flag_to_use() {
    let cluster = TestCluster::start(1);
    let viewleader = cluster.viewleader_addr();
    let server = cluster.server_addr(0);

    let run = client_at("--server", &viewleader, &["get", "k"]);
    assert_ne!(run.code, 0, "{run:?}");
    let wanted = format!("{viewleader} is a view leader; use --viewleader {viewleader}");
    assert!(run.stderr.contains(&wanted), "wanted {wanted:?} in {run:?}");

    let run = client_at("--viewleader", &server, &["query_servers"]);
    assert_ne!(run.code, 0, "{run:?}");
    let wanted = format!("{server} is a storage server; use --server {server}");
    assert!(run.stderr.contains(&wanted), "wanted {wanted:?} in {run:?}");
}

#[test]
fn a_client_sent_to_an_http_port_is_told_it_speaks_http() {
    let cluster = TestCluster::start_with_server_args(Timings::default(), 1, &["--http-port", "0"]);
    let http = wait_for(LOG_WAIT, "the server prints its HTTP address", || {
        cluster
            .server_stdout(0)
            .iter()
            .find_map(|line| line.split("http listening on ").nth(1))
            .map(|addr| addr.trim().to_string())
            .ok_or_else(|| format!("{:?}", cluster.server_stdout(0)))
    });

    let run = client_at("--server", &http, &["get", "k"]);
    assert_ne!(run.code, 0, "{run:?}");
    let wanted = format!("{http} speaks HTTP, not the ringleader protocol");
    assert!(run.stderr.contains(&wanted), "wanted {wanted:?} in {run:?}");
}

/// Whether some port of the servers' range is taken on loopback (another test, another
/// program): then a search of the range may find something, and the test below cannot say
/// what the client will print.
fn server_range_in_use() -> bool {
    ringleader::net::SERVER_PORTS
        .into_iter()
        .any(|port| std::net::TcpListener::bind(("127.0.0.1", port)).is_err())
}

#[test]
fn a_client_sent_to_a_host_without_port_names_the_whole_range_tried() {
    if server_range_in_use() {
        eprintln!("skipped: a port of 38000-38010 is in use on 127.0.0.1");
        return;
    }
    let cluster = TestCluster::start(1);
    let run = run_client(&[
        "--timeout-ms",
        WRONG_PLACE_TIMEOUT_MS,
        "--viewleader",
        &cluster.viewleader_addr(),
        "--server",
        "127.0.0.1",
        "get",
        "k",
    ]);
    assert_ne!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("nothing answers at 127.0.0.1 on ports 38000-38010"),
        "{run:?}"
    );
}

#[test]
fn the_view_leader_logs_joins_and_expiries_with_their_reasons() {
    let mut cluster = TestCluster::start(1);
    let server = cluster.server_addr(0);
    let join_line = |log: &str| {
        log.lines()
            .find(|line| {
                line.contains("INFO")
                    && line.contains("server joined the view")
                    && line.contains(&server)
            })
            .map(str::to_string)
    };
    wait_until(LOG_WAIT, "the view leader logs the join", || {
        join_line(&cluster.viewleader_stderr()).is_some()
    });
    let log = cluster.viewleader_stderr();
    assert!(
        log.lines().any(|line| line.contains("WARN")
            && line.contains("fewer than 3")
            && line.contains("cannot place 3 copies")),
        "no warning of a view too small for three copies:\n{log}"
    );

    cluster.kill_server(0);
    wait_until(LOG_WAIT, "the view leader logs the expiry", || {
        cluster.viewleader_stderr().lines().any(|line| {
            line.contains("INFO")
                && line.contains("server expired from the view")
                && line.contains("lease lapsed")
                && line.contains(&server)
        })
    });
}
