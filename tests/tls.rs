//! Issue 16 (encryption on request): TLS on the RPC and HTTP ports, on real processes.
//!
//! Every test makes its certificates with `client tls-certs` in a temp dir of its own, and
//! starts its cluster with `--tls-cert`, `--tls-key` and `--tls-ca` on every node and every
//! client run (`TestCluster::start_with_args`). Over TLS the cluster writes, reads, rebalances
//! and serves HTTPS; a client or a server whose certificate comes from another CA, a client
//! without TLS, and a TLS client at a plain port all fail with an error that says so. The HTTPS
//! client here is rustls itself (blocking, over `std::net::TcpStream`), with the test's CA.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::{
    holds_for, run_client, run_client_with_env, run_service_to_exit, run_to_exit, wait_for,
    TestCluster, Timings, LEASE_MS, SERVER_BIN,
};
use ringleader::net::tls::TlsConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Keys written before a server joins, each read back after the rebalance.
const KEYS: usize = 12;
/// How long a server of another CA is watched not joining: several leases, so that a server
/// that did get in would show in the view.
const NOT_JOINED_FOR: Duration = Duration::from_millis(4 * LEASE_MS);
/// Read and write timeout of the test's HTTPS client.
const HTTPS_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the `http listening on` line of a server.
const HTTP_LINE_TIMEOUT: Duration = Duration::from_secs(15);

/// A development CA and its certificates, made by `client tls-certs` in a temp dir.
struct Certs {
    dir: tempfile::TempDir,
}

impl Certs {
    fn make() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("ringleader-tls-")
            .tempdir()
            .expect("create a temp dir for certificates");
        let out = dir.path().join("certs");
        let out = out.display().to_string();
        run_client(&["tls-certs", out.as_str()]).expect_ok();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join("certs").join(name)
    }

    fn flags(&self, cert: &str, key: &str) -> Vec<String> {
        let shown = |name: &str| self.path(name).display().to_string();
        vec![
            "--tls-cert".into(),
            shown(cert),
            "--tls-key".into(),
            shown(key),
            "--tls-ca".into(),
            shown("ca.pem"),
        ]
    }

    /// The flags of servers and view leaders.
    fn node_flags(&self) -> Vec<String> {
        self.flags("node.pem", "node-key.pem")
    }

    /// The flags of clients.
    fn client_flags(&self) -> Vec<String> {
        self.flags("client.pem", "client-key.pem")
    }

    /// The client's certificate and key with another CA's certificate as `--tls-ca`.
    fn client_flags_trusting(&self, ca: &Certs) -> Vec<String> {
        let mut flags = self.client_flags();
        flags[5] = ca.path("ca.pem").display().to_string();
        flags
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|arg| arg.to_string()).collect()
}

/// `args` then `tail`, as one argument list.
fn joined(args: &[String], tail: &[&str]) -> Vec<String> {
    let mut all = args.to_vec();
    all.extend(strings(tail));
    all
}

#[test]
fn over_tls_a_cluster_writes_reads_and_rebalances() {
    let certs = Certs::make();
    let mut cluster = TestCluster::start_with_args(
        Timings::default(),
        2,
        &certs.node_flags(),
        &certs.client_flags(),
    );
    let value = |i: usize| format!("value-{i}");
    for i in 0..KEYS {
        cluster
            .client(&["setr", &format!("key-{i}"), &value(i)])
            .expect_ok();
    }
    for i in 0..KEYS {
        assert_eq!(cluster.getr_text(&format!("key-{i}")), Some(value(i)));
    }

    // A third server joins: the keys are copied to it over TLS, and every key still reads.
    let joined_server = cluster.add_server();
    cluster.wait_settled();
    for i in 0..KEYS {
        assert_eq!(cluster.getr_text(&format!("key-{i}")), Some(value(i)));
    }
    // Three servers and three replicas: the new one holds every key.
    let held = cluster.client_on(joined_server, &["--json", "query_all_keys", "--ring"]);
    let held = held.expect_ok().json();
    let held: Vec<&str> = held["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("query_all_keys printed no keys: {held}"))
        .iter()
        .filter_map(|key| key.as_str())
        .collect();
    for i in 0..KEYS {
        let key = format!("key-{i}");
        assert!(
            held.contains(&key.as_str()),
            "{key} was not copied to the new server: {held:?}"
        );
    }

    // The environment variables do what the flags do.
    let flags = certs.client_flags();
    let vars = [
        ("RINGLEADER_TLS_CERT", flags[1].as_str()),
        ("RINGLEADER_TLS_KEY", flags[3].as_str()),
        ("RINGLEADER_TLS_CA", flags[5].as_str()),
    ];
    let viewleader = cluster.viewleader_addr();
    let by_env = run_client_with_env(
        &[
            "--viewleader",
            viewleader.as_str(),
            "--json",
            "getr",
            "key-0",
        ],
        &vars,
    );
    assert_eq!(by_env.expect_ok().json()["value"], "value-0");
}

#[test]
fn peers_without_a_certificate_of_the_cluster_ca_are_refused() {
    let certs = Certs::make();
    let stranger = Certs::make();
    let cluster = TestCluster::start_with_args(
        Timings::default(),
        1,
        &certs.node_flags(),
        &certs.client_flags(),
    );
    let viewleader = cluster.viewleader_addr();
    let query = [
        "--viewleader",
        viewleader.as_str(),
        "--json",
        "query_servers",
    ];

    // Without TLS: the port says it speaks TLS.
    let plain = run_client(&query);
    assert_ne!(plain.code, 0, "a plain client was answered: {plain:?}");
    let (_, message) = plain.error_json();
    assert!(
        message.contains(&viewleader) && message.contains("speaks TLS"),
        "{message}"
    );

    // A certificate of another CA (trusting ours): the view leader refuses it.
    let refused = run_client(&joined(&stranger.client_flags_trusting(&certs), &query));
    assert_ne!(
        refused.code, 0,
        "a client of another CA was answered: {refused:?}"
    );
    let (_, message) = refused.error_json();
    assert!(
        message.contains(&viewleader)
            && message.contains("TLS")
            && message.contains("refused this process's certificate")
            && message.contains("UnknownCA"),
        "{message}"
    );

    // Trusting only another CA: the client refuses the view leader's certificate.
    let distrusting = run_client(&joined(&stranger.client_flags(), &query));
    assert_ne!(distrusting.code, 0, "{distrusting:?}");
    let (_, message) = distrusting.error_json();
    assert!(
        message.contains(&viewleader)
            && message.contains("TLS")
            && message.contains("not trusted")
            && message.contains("UnknownIssuer"),
        "{message}"
    );

    // A server of another CA never joins: it is told why, and the view never lists it.
    let server_args = joined(
        &stranger.node_flags(),
        &[
            "--port",
            "0",
            "--in-memory",
            "--viewleader",
            viewleader.as_str(),
            "--heartbeat-interval-ms",
            "200",
        ],
    );
    let dir = stranger.dir.path().to_path_buf();
    let foreign = std::thread::spawn(move || {
        run_to_exit(
            "server of another CA",
            SERVER_BIN,
            &server_args,
            Some(&dir),
            NOT_JOINED_FOR,
        )
    });
    let members = cluster.live_server_addrs();
    holds_for(
        NOT_JOINED_FOR,
        "the view lists only the cluster's server",
        || {
            let view = cluster.query_servers();
            match view.addrs() == members {
                true => Ok(()),
                false => Err(format!("{:?}", view.addrs())),
            }
        },
    );
    let output = match foreign.join().expect("the foreign server's runner") {
        Err(still_running) => still_running,
        Ok(exited) => format!("{exited:?}"),
    };
    assert!(
        output.contains("heartbeat failed")
            && output.contains(&viewleader)
            && output.contains("TLS")
            && output.contains("UnknownIssuer"),
        "the server of another CA did not say why it cannot join: {output}"
    );
    assert_eq!(cluster.query_servers().addrs(), members);
}

#[test]
fn a_tls_client_at_a_plain_port_is_told_it_does_not_speak_tls() {
    let certs = Certs::make();
    let cluster = TestCluster::start(0);
    let viewleader = cluster.viewleader_addr();
    let run = run_client(&joined(
        &certs.client_flags(),
        &[
            "--viewleader",
            viewleader.as_str(),
            "--json",
            "query_servers",
        ],
    ));
    assert_ne!(run.code, 0, "{run:?}");
    let (_, message) = run.error_json();
    assert!(
        message.contains(&viewleader) && message.contains("does not answer in TLS"),
        "{message}"
    );
}

#[test]
fn a_partial_or_unreadable_set_of_tls_files_stops_a_node_with_exit_code_2() {
    let certs = Certs::make();
    let cert = certs.path("node.pem").display().to_string();
    let ca = certs.path("ca.pem").display().to_string();
    let partial = run_service_to_exit(
        SERVER_BIN,
        &[
            "--port",
            "0",
            "--in-memory",
            "--tls-cert",
            &cert,
            "--tls-ca",
            &ca,
        ],
    );
    partial.expect_code(2);
    assert!(
        partial.stderr.contains("missing: --tls-key"),
        "{}",
        partial.stderr
    );
    let missing = certs.path("nowhere.pem").display().to_string();
    let unreadable = run_service_to_exit(
        common::VIEWLEADER_BIN,
        &[
            "--port",
            "0",
            "--in-memory",
            "--tls-cert",
            &cert,
            "--tls-key",
            &missing,
            "--tls-ca",
            &ca,
        ],
    );
    unreadable.expect_code(2);
    assert!(
        unreadable.stderr.contains("--tls-key") && unreadable.stderr.contains("nowhere.pem"),
        "{}",
        unreadable.stderr
    );
}

// ---------------------------------------------------------------------------------------------
// HTTPS
// ---------------------------------------------------------------------------------------------

/// A status code and a body.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

/// The CA certificate of `certs` as a root store.
fn roots(certs: &Certs) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(certs.path("ca.pem")).expect("read ca.pem") {
        roots
            .add(cert.expect("a CA certificate"))
            .expect("a usable CA");
    }
    roots
}

/// One HTTP/1.1 request over TLS with `config` to `addr`; `Err` with what failed.
fn https(config: Arc<rustls::ClientConfig>, addr: &str, request: &str) -> Result<Reply, String> {
    let host = addr.rsplit_once(':').map(|(host, _)| host).unwrap_or(addr);
    let name = ServerName::try_from(host.to_string()).map_err(|err| err.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|err| err.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|err| err.to_string())?;
    tcp.set_read_timeout(Some(HTTPS_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(HTTPS_TIMEOUT)))
        .map_err(|err| err.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(request.as_bytes())
        .and_then(|()| tls.flush())
        .map_err(|err| format!("sending: {err}"))?;
    let mut raw = Vec::new();
    if let Err(err) = tls.read_to_end(&mut raw) {
        // A peer that closes without close_notify after a whole answer is still an answer.
        if raw.is_empty() {
            return Err(format!("reading: {err}"));
        }
    }
    parse(&raw)
}

fn plain_http(addr: &str, request: &str) -> Result<Reply, String> {
    let mut tcp = TcpStream::connect(addr).map_err(|err| err.to_string())?;
    tcp.set_read_timeout(Some(HTTPS_TIMEOUT))
        .map_err(|err| err.to_string())?;
    tcp.write_all(request.as_bytes())
        .map_err(|err| err.to_string())?;
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).map_err(|err| err.to_string())?;
    parse(&raw)
}

fn parse(raw: &[u8]) -> Result<Reply, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no whole HTTP response: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("no status line: {head:?}"))?;
    Ok(Reply {
        status,
        body: body.to_string(),
    })
}

fn request(method: &str, path: &str, body: &str) -> String {
    format!(
        "{method} {path} HTTP/1.1\r\nhost: ringleader\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The address of server `number`'s HTTP gateway, from its `http listening on` line.
fn http_addr(cluster: &TestCluster, number: usize) -> String {
    wait_for(
        HTTP_LINE_TIMEOUT,
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

#[test]
fn the_http_gateway_answers_get_and_post_over_https_only() {
    let certs = Certs::make();
    let node_args = joined(&certs.node_flags(), &["--http-port", "0"]);
    let cluster =
        TestCluster::start_with_args(Timings::default(), 1, &node_args, &certs.client_flags());
    let gateway = http_addr(&cluster, 0);
    let client = TlsConfig::load(
        &certs.path("client.pem"),
        &certs.path("client-key.pem"),
        &certs.path("ca.pem"),
    )
    .expect("the client's certificates load")
    .client_config();

    let put = r#"{"type": "PUT", "value": ["a", "b"]}"#;
    let posted = https(
        client.clone(),
        &gateway,
        &request("POST", "/keys/fruits", put),
    )
    .expect("POST over HTTPS");
    assert_eq!(posted.status, 204, "{posted:?}");
    let got = https(
        client.clone(),
        &gateway,
        &request("GET", "/keys/fruits", ""),
    )
    .expect("GET over HTTPS");
    assert_eq!(got.status, 200, "{got:?}");
    let list: serde_json::Value = serde_json::from_str(got.body.trim())
        .unwrap_or_else(|err| panic!("GET answered no JSON ({err}): {got:?}"));
    assert_eq!(list, serde_json::json!(["a", "b"]));
    // What the gateway wrote is what the cluster holds.
    assert_eq!(
        cluster
            .client(&["--json", "getr", "fruits"])
            .expect_ok()
            .json()["value"],
        serde_json::json!(["a", "b"])
    );

    // Plain HTTP to the HTTPS port: a 400 that says so.
    let plain = plain_http(&gateway, &request("GET", "/keys/fruits", "")).expect("an answer");
    assert_eq!(plain.status, 400, "{plain:?}");
    assert!(plain.body.contains("speaks HTTPS"), "{plain:?}");

    // HTTPS without a client certificate: refused.
    let anonymous = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots(&certs))
    .with_no_client_auth();
    match https(
        Arc::new(anonymous),
        &gateway,
        &request("GET", "/keys/fruits", ""),
    ) {
        Err(err) => assert!(err.contains("CertificateRequired"), "{err}"),
        Ok(reply) => panic!("a caller without a certificate was answered: {reply:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// What TLS costs (a measurement, not a pass/fail test)
// ---------------------------------------------------------------------------------------------

/// Sequential operations timed per kind and per cluster.
const MEASURED_OPS: usize = 1_000;
/// Unmeasured operations first (connections dialled, handshakes done, caches warm).
const WARMUP_OPS: usize = 100;

/// The median and the 99th percentile of `samples`, in microseconds.
fn median_p99(samples: &mut [Duration]) -> (u128, u128) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_micros();
    (at(0.5), at(0.99))
}

/// `MEASURED_OPS` sequential setr, then as many getr, through the library's client on `env`.
fn time_setr_getr(cluster: &TestCluster, env: ringleader::net::Env) -> [(u128, u128); 2] {
    use ringleader::client::{Client, ClientOptions};
    use ringleader::types::Value;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let options = ClientOptions {
            viewleader: cluster.viewleader_addr(),
            timeout_ms: 5_000,
            wait_ms: 5_000,
        };
        let client = Client::with_env(options, env);
        let value = Value::Text("x".repeat(100));
        for i in 0..WARMUP_OPS {
            let key = format!("warm-{i}");
            client.setr(&key, value.clone()).await.expect("setr");
            client.getr(&key).await.expect("getr");
        }
        let (mut sets, mut gets) = (Vec::new(), Vec::new());
        for i in 0..MEASURED_OPS {
            let started = std::time::Instant::now();
            client
                .setr(&format!("key-{i}"), value.clone())
                .await
                .expect("setr");
            sets.push(started.elapsed());
        }
        for i in 0..MEASURED_OPS {
            let started = std::time::Instant::now();
            client.getr(&format!("key-{i}")).await.expect("getr");
            gets.push(started.elapsed());
        }
        [median_p99(&mut sets), median_p99(&mut gets)]
    })
}

#[test]
#[ignore = "a measurement: cargo test --release --test tls -- --ignored --nocapture"]
fn measure_setr_and_getr_latency_with_and_without_tls() {
    let certs = Certs::make();
    let client_tls = TlsConfig::load(
        &certs.path("client.pem"),
        &certs.path("client-key.pem"),
        &certs.path("ca.pem"),
    )
    .expect("the client's certificates load");
    // Interleaved, so that a change in the machine's load falls on both.
    for round in 0..2 {
        for tls in [false, true] {
            let (node_args, client_args) = match tls {
                true => (certs.node_flags(), certs.client_flags()),
                false => (Vec::new(), Vec::new()),
            };
            let cluster =
                TestCluster::start_with_args(Timings::default(), 3, &node_args, &client_args);
            let env = match tls {
                true => {
                    ringleader::net::tls::with_tls(ringleader::net::Env::real(), client_tls.clone())
                }
                false => ringleader::net::Env::real(),
            };
            let [(set_median, set_p99), (get_median, get_p99)] = time_setr_getr(&cluster, env);
            println!(
                "round {round} tls={tls}: setr median {set_median} us p99 {set_p99} us; \
                 getr median {get_median} us p99 {get_p99} us ({MEASURED_OPS} each, 3 servers)"
            );
        }
    }
}
