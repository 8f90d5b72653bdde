//! Issue 17 (operability), on the real binaries: `RINGLEADER_VIEWLEADER` and `RINGLEADER_SERVER`
//! as the defaults of `--viewleader` and `--server` (a flag on the command line wins; `crash` and
//! `recover` never take their target from them), and the shell completions clap generates.
//!
//! Each variable is also pointed at a port where nothing listens, to show that it is read: a
//! client with no flag then fails to reach anything, and one with the flag still succeeds.

mod common;

use common::{
    run_client_with_env, run_service_to_exit, unused_port, TestCluster, SERVER_BIN, SERVER_ENV,
    VIEWLEADER_BIN, VIEWLEADER_ENV,
};

/// Time allowed for each call by the clients that are sent nowhere, in ms: short, since nothing
/// listens there (the refusal is immediate; the client's retries make up the rest).
const NOWHERE_TIMEOUT_MS: &str = "500";

/// An address on loopback where nothing listens.
fn nowhere() -> String {
    format!("127.0.0.1:{}", unused_port())
}

#[test]
fn ringleader_viewleader_is_the_default_of_every_client_viewleader() {
    let cluster = TestCluster::start(3);
    let viewleader = cluster.viewleader_addr();
    let by_env = [(VIEWLEADER_ENV, viewleader.as_str())];

    run_client_with_env(&["setr", "fruit", "apple"], &by_env).expect_ok();
    let read = run_client_with_env(&["--json", "getr", "fruit"], &by_env);
    read.expect_ok();
    assert_eq!(read.json()["value"], "apple", "{read:?}");
    let view = run_client_with_env(&["--json", "query_servers"], &by_env);
    view.expect_ok();
    assert_eq!(
        view.json()["servers"].as_array().map(Vec::len),
        Some(3),
        "{view:?}"
    );

    // The variable is read: pointed nowhere, it sends the client nowhere (exit 3)...
    let nowhere = nowhere();
    let wrong = [(VIEWLEADER_ENV, nowhere.as_str())];
    run_client_with_env(
        &["--timeout-ms", NOWHERE_TIMEOUT_MS, "getr", "fruit"],
        &wrong,
    )
    .expect_code(3);
    // ...and a flag on the command line wins over it.
    let read = run_client_with_env(
        &["--viewleader", &viewleader, "--json", "getr", "fruit"],
        &wrong,
    );
    read.expect_ok();
    assert_eq!(read.json()["value"], "apple", "{read:?}");
}

#[test]
fn ringleader_server_is_the_default_of_the_client_server() {
    let cluster = TestCluster::start(2);
    let (first, second) = (cluster.server_addr(0), cluster.server_addr(1));
    let by_env = [(SERVER_ENV, first.as_str())];

    let stored = run_client_with_env(&["--json", "set", "color", "blue"], &by_env);
    stored.expect_ok();
    assert_eq!(stored.json()["server"], first.as_str(), "{stored:?}");
    let read = run_client_with_env(&["--json", "get", "color"], &by_env);
    read.expect_ok();
    assert_eq!(read.json()["value"], "blue", "{read:?}");

    // A flag on the command line wins over the variable.
    let stored = run_client_with_env(
        &["--server", &second, "--json", "set", "size", "L"],
        &by_env,
    );
    stored.expect_ok();
    assert_eq!(stored.json()["server"], second.as_str(), "{stored:?}");

    // The variable is read: pointed nowhere, `get` reaches nothing (exit 3).
    let nowhere = nowhere();
    run_client_with_env(
        &["--timeout-ms", NOWHERE_TIMEOUT_MS, "get", "color"],
        &[(SERVER_ENV, nowhere.as_str())],
    )
    .expect_code(3);
}

#[test]
fn crash_and_recover_never_take_their_target_from_the_variables() {
    let cluster = TestCluster::start(1);
    let (server, viewleader) = (cluster.server_addr(0), cluster.viewleader_addr());
    let both = [
        (SERVER_ENV, server.as_str()),
        (VIEWLEADER_ENV, viewleader.as_str()),
    ];
    for command in ["crash", "recover"] {
        let run = run_client_with_env(&[command], &both);
        run.expect_code(5);
        assert!(
            run.stderr
                .contains("--server HOST:PORT or --viewleader HOST:PORT"),
            "{run:?}"
        );
    }
    // Nothing was crashed: the cluster still takes a replicated write.
    run_client_with_env(&["setr", "k", "v"], &both).expect_ok();
}

#[test]
fn a_server_given_only_ringleader_viewleader_joins() {
    let mut cluster = TestCluster::start(1);
    let number = cluster.add_server_by_env();
    let view = cluster.wait_settled();
    assert!(
        view.addrs().contains(&cluster.server_addr(number)),
        "{view:?}"
    );
}

#[test]
fn client_completions_print_a_script_naming_the_subcommands() {
    let bash = run_client_with_env(&["completions", "bash"], &[]);
    bash.expect_ok();
    for word in ["complete -F", "setr", "query_servers", "--viewleader"] {
        assert!(bash.stdout.contains(word), "no {word:?} in {bash:?}");
    }
    // The hidden `serve` role of `chaos` is not offered.
    assert!(!bash.stdout.contains(" serve "), "{bash:?}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let run = run_client_with_env(&["completions", shell], &[]);
        run.expect_ok();
        assert!(run.stdout.contains("setr"), "{run:?}");
    }
    // A shell clap does not know is a usage error naming the ones it does.
    let bad = run_client_with_env(&["completions", "tcsh"], &[]);
    bad.expect_code(2);
    assert!(
        bad.stderr.contains("tcsh") && bad.stderr.contains("bash"),
        "{bad:?}"
    );
}

#[test]
fn the_services_print_their_completions_and_exit() {
    let server = run_service_to_exit(SERVER_BIN, &["--completions", "bash"]);
    server.expect_ok();
    assert!(server.stdout.contains("--http-port"), "{server:?}");
    let viewleader = run_service_to_exit(VIEWLEADER_BIN, &["--completions", "fish"]);
    viewleader.expect_ok();
    assert!(viewleader.stdout.contains("peers"), "{viewleader:?}");
    run_service_to_exit(SERVER_BIN, &["--completions", "tcsh"]).expect_code(2);
}
