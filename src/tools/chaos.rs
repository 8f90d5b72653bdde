//! `client chaos`: a checked fault-injection run. It starts a local cluster of real processes
//! (this very binary, in its hidden `serve` role, so nothing else needs to be built), runs
//! concurrent `setr`/`getr`/`append` clients against it while a nemesis kills and restarts
//! servers, pauses them (SIGSTOP/SIGCONT), simulates crashes and kills coordinators mid-commit,
//! records every operation with its invocation and completion times, then heals the cluster and
//! checks:
//! * linearizability of every key ([`crate::tools::checker`]);
//! * every acknowledged append present exactly once, none duplicated, no failed one present;
//! * the replicas of every key identical (value and version) after the run.
//!
//! It prints a summary and exits non-zero on any violation. The run is seeded: the seed is
//! printed and `--seed` repeats the nemesis's choices (the interleavings still vary).
//!
//! Deliberately left out: network partitions (they need network namespaces; the nemesis only
//! stops whole processes), and faults of the view leader (its own crash has a test of its own).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command as Process, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::cli::output::Output;
use crate::client::{Client, ClientOptions, CrashPoint};
use crate::errinput;
use crate::error::{Error, Result};
use crate::tools::checker::{self, Call, CheckOptions, Operation, Return};
use crate::types::{Op, Value};

/// Longest a chaos run may be asked to last.
pub const CHAOS_DURATION_S_MAX: u64 = 3_600;
/// Longest wait for a process to print its `listening on` line.
pub const STARTUP_WAIT_MS: u64 = 10_000;
/// Longest wait for the cluster to settle after healing.
pub const SETTLE_WAIT_MS: u64 = 60_000;
/// Heartbeat interval, lease and transaction timeout of the chaos cluster (short, so faults
/// have visible effects within a short run; the lease stays ≥ 1 s).
pub const CHAOS_HEARTBEAT_MS: u64 = 200;
pub const CHAOS_LEASE_MS: u64 = 1_000;
pub const CHAOS_TX_TIMEOUT_MS: u64 = 1_000;
/// Client call timeout during the run.
pub const CHAOS_RPC_TIMEOUT_MS: u64 = 500;

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long clients and nemesis run, in seconds.
    #[arg(long, default_value_t = 100)]
    pub duration_s: u64,
    /// Storage servers.
    #[arg(long, default_value_t = 5)]
    pub servers: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Keys written with setr (registers); as many again are lists written with append.
    #[arg(long, default_value_t = 4)]
    pub keys: usize,
    /// Seed of the nemesis and the clients' choices (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The role of the hidden `serve` subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Viewleader,
    Server,
}

/// `client serve`: run a view leader or a storage server in this process (used by `chaos` so
/// that one binary is enough).
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[arg(long, value_enum)]
    pub role: Role,
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    #[arg(long, default_value = "localhost:39000")]
    pub viewleader_addr: String,
    #[arg(long, default_value_t = crate::viewleader::HEARTBEAT_INTERVAL_MS_DEFAULT)]
    pub heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = crate::viewleader::LEASE_MS_DEFAULT)]
    pub lease_ms: u64,
    #[arg(long, default_value_t = crate::server::TX_TIMEOUT_MS_DEFAULT)]
    pub tx_timeout_ms: u64,
}

/// Runs the hidden `serve` role until a signal.
pub async fn serve(args: ServeArgs) -> Result<u8> {
    let (shutdown, kill) = crate::cli::process::shutdown_on_signal();
    match args.role {
        Role::Viewleader => {
            let options = crate::viewleader::ViewLeaderOptions {
                heartbeat_interval_ms: args.heartbeat_interval_ms,
                lease_ms: args.lease_ms,
                ..Default::default()
            };
            let env = crate::net::Env::real();
            let listener = env
                .bind("127.0.0.1", Some(args.port), crate::net::VIEWLEADER_PORTS)
                .await?;
            crate::cli::process::announce(&*listener)?;
            crate::viewleader::run(listener, options, env, shutdown).await?;
        }
        Role::Server => {
            let options = crate::server::ServerOptions {
                viewleader: args.viewleader_addr,
                heartbeat_interval_ms: args.heartbeat_interval_ms,
                tx_timeout_ms: args.tx_timeout_ms,
                ..Default::default()
            };
            let env = crate::net::Env::real();
            let listener = env
                .bind("127.0.0.1", Some(args.port), crate::net::SERVER_PORTS)
                .await?;
            crate::cli::process::announce(&*listener)?;
            crate::server::run(listener, options, env, shutdown, kill).await?;
        }
    }
    Ok(0)
}

/// A child process of the run, killed when dropped.
struct Proc {
    child: Child,
    addr: String,
}

impl Proc {
    fn spawn(args: &[String]) -> Result<Self> {
        let exe = std::env::current_exe()
            .map_err(|err| Error::Internal(format!("cannot find this binary: {err}")))?;
        let mut child = Process::new(exe)
            .arg("serve")
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| Error::Internal(format!("cannot start a cluster process: {err}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Internal("no stdout".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(Duration::from_millis(STARTUP_WAIT_MS))
            .map_err(|_| {
                let _ = child.kill();
                Error::Timeout("a cluster process did not say where it listens".into())
            })?;
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| {
                Error::Internal(format!(
                    "unexpected first line from a cluster process: {line:?}"
                ))
            })?
            .to_string();
        Ok(Self { child, addr })
    }

    fn signal(&self, signal: &str) {
        let _ = Process::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the nemesis did, counted.
#[derive(Debug, Default)]
struct Faults {
    kills: u64,
    pauses: u64,
    crashes: u64,
    coordinator_kills: AtomicU64,
}

/// The shared record of operations.
struct Recorder {
    started: Instant,
    next_id: AtomicU64,
    history: Mutex<Vec<Operation>>,
}

impl Recorder {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn record(&self, client: u64, key: &str, call: Call, invoked_us: u64, ret: Return) {
        let completed_us = (ret != Return::Unknown).then(|| self.now_us());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut history) = self.history.lock() {
            history.push(Operation {
                id,
                client,
                key: key.to_string(),
                call,
                invoked_us,
                completed_us,
                ret,
            });
        }
    }
}

/// Runs the chaos test; returns the exit code (0: no violation).
pub async fn run(args: ChaosArgs, out: Output) -> Result<u8> {
    if args.duration_s == 0 || args.duration_s > CHAOS_DURATION_S_MAX {
        return Err(errinput!(
            "--duration-s must be 1 to {CHAOS_DURATION_S_MAX}"
        ));
    }
    if args.servers < 3
        || args.servers > 10
        || args.clients == 0
        || args.clients > 64
        || args.keys == 0
        || args.keys > 100
    {
        return Err(errinput!(
            "chaos needs 3 to 10 servers, 1 to 64 clients and 1 to 100 keys"
        ));
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    out.progress(format!(
        "chaos: seed {seed}, {} servers, {} clients, {} s",
        args.servers, args.clients, args.duration_s
    ));
    let viewleader = Proc::spawn(&[
        "--role".into(),
        "viewleader".into(),
        "--heartbeat-interval-ms".into(),
        CHAOS_HEARTBEAT_MS.to_string(),
        "--lease-ms".into(),
        CHAOS_LEASE_MS.to_string(),
    ])?;
    let server_args = |port: u16| -> Vec<String> {
        vec![
            "--role".into(),
            "server".into(),
            "--port".into(),
            port.to_string(),
            "--viewleader-addr".into(),
            viewleader.addr.clone(),
            "--heartbeat-interval-ms".into(),
            CHAOS_HEARTBEAT_MS.to_string(),
            "--tx-timeout-ms".into(),
            CHAOS_TX_TIMEOUT_MS.to_string(),
        ]
    };
    let mut servers: Vec<Proc> = Vec::new();
    for _ in 0..args.servers {
        servers.push(Proc::spawn(&server_args(0))?);
    }
    let admin = Client::new(ClientOptions {
        viewleader: viewleader.addr.clone(),
        timeout_ms: 2_000,
        wait_ms: SETTLE_WAIT_MS,
    });
    wait_settled(&admin, args.servers).await?;

    let recorder = Arc::new(Recorder {
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        history: Mutex::new(Vec::new()),
    });
    let faults = Arc::new(Faults::default());
    let stop = Arc::new(AtomicBool::new(false));
    let registers: Vec<String> = (0..args.keys).map(|i| format!("reg-{i}")).collect();
    let lists: Vec<String> = (0..args.keys).map(|i| format!("list-{i}")).collect();
    let mut workers = Vec::new();
    for client_id in 0..args.clients as u64 {
        let client = Client::new(ClientOptions {
            viewleader: viewleader.addr.clone(),
            timeout_ms: CHAOS_RPC_TIMEOUT_MS,
            wait_ms: 2_000,
        });
        let (recorder, faults, stop) = (recorder.clone(), faults.clone(), stop.clone());
        let (registers, lists) = (registers.clone(), lists.clone());
        let mut rng =
            StdRng::seed_from_u64(seed ^ (client_id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let unique = format!("c{client_id}-{n}");
                client_step(
                    &client, &recorder, &faults, client_id, &mut rng, &registers, &lists, unique,
                )
                .await;
            }
        }));
    }

    // The nemesis: one fault at a time, each on a settled cluster, so no key ever loses every
    // replica (that would be a loss no protocol can prevent, not a finding).
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Faults::default();
    let deadline = Instant::now() + Duration::from_secs(args.duration_s);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(300..1_200))).await;
        if Instant::now() >= deadline {
            break;
        }
        let victim = rng.gen_range(0..servers.len());
        let hold = Duration::from_millis(rng.gen_range(200..2_500));
        match rng.gen_range(0..3) {
            0 => {
                out.progress(format!(
                    "  nemesis: kill {} and start a fresh server",
                    servers[victim].addr
                ));
                drop(servers.remove(victim));
                tally.kills += 1;
                tokio::time::sleep(hold).await;
                servers.push(Proc::spawn(&server_args(0))?);
            }
            1 => {
                out.progress(format!(
                    "  nemesis: pause {} for {} ms",
                    servers[victim].addr,
                    hold.as_millis()
                ));
                servers[victim].signal("STOP");
                tally.pauses += 1;
                tokio::time::sleep(hold).await;
                servers[victim].signal("CONT");
            }
            _ => {
                out.progress(format!(
                    "  nemesis: simulated crash of {} for {} ms",
                    servers[victim].addr,
                    hold.as_millis()
                ));
                let addr = servers[victim].addr.clone();
                if let Err(err) = admin.set_crashed(&addr, true).await {
                    out.progress(format!("  nemesis: the crash request failed: {err}"));
                }
                tally.crashes += 1;
                tokio::time::sleep(hold).await;
                if let Err(err) = admin.set_crashed(&addr, false).await {
                    out.progress(format!("  nemesis: the recover request failed: {err}"));
                }
            }
        }
        // Let the cluster settle before the next fault (bounded; the run goes on regardless).
        let _ = tokio::time::timeout(
            Duration::from_millis(SETTLE_WAIT_MS / 4),
            wait_settled(&admin, servers.len()),
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }

    out.progress("healing: every process running, waiting for the cluster to settle");
    for server in &servers {
        server.signal("CONT");
        let _ = admin.set_crashed(&server.addr, false).await;
    }
    wait_settled(&admin, servers.len()).await?;
    // Transactions left by killed coordinators settle within the transaction timeout.
    tokio::time::sleep(Duration::from_millis(2 * CHAOS_TX_TIMEOUT_MS + 500)).await;

    // Final reads, recorded too: they must agree with everything before them.
    let mut final_lists = BTreeMap::new();
    for key in registers.iter().chain(&lists) {
        let invoked = recorder.now_us();
        let value = admin.getr(key).await?.map(|found| found.value.value);
        recorder.record(
            u64::MAX,
            key,
            Call::Read,
            invoked,
            Return::ReadValue(value.clone()),
        );
        if let Some(Value::List(items)) = value {
            final_lists.insert(key.clone(), items);
        }
    }
    let divergent = divergent_replicas(&admin, registers.iter().chain(&lists)).await?;

    let history = recorder
        .history
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    let report = checker::check(&history, &CheckOptions::default());
    let append_problems = checker::check_appends(&history, &final_lists);
    tally.coordinator_kills = AtomicU64::new(faults.coordinator_kills.load(Ordering::Relaxed));
    let violations =
        report.violations() + report.unknowns() + append_problems.len() + divergent.len();
    let summary = summarize(&history);
    if out.json {
        println!(
            "{}",
            json!({
                "seed": seed, "operations": history.len(), "outcomes": summary,
                "faults": {"kills": tally.kills, "pauses": tally.pauses, "crashes": tally.crashes,
                           "coordinator_kills": tally.coordinator_kills.load(Ordering::Relaxed)},
                "linearizability": report.to_string(), "append_problems": append_problems,
                "divergent_replicas": divergent, "violations": violations
            })
        );
    } else {
        println!("chaos run, seed {seed}");
        println!("  operations: {} ({summary})", history.len());
        println!(
            "  faults: {} kills, {} pauses, {} simulated crashes, {} coordinators killed mid-commit",
            tally.kills,
            tally.pauses,
            tally.crashes,
            tally.coordinator_kills.load(Ordering::Relaxed)
        );
        println!("  linearizability: {report}");
        for problem in &append_problems {
            println!("  append problem: {problem}");
        }
        for problem in &divergent {
            println!("  replicas differ: {problem}");
        }
        println!("  violations: {violations}");
    }
    drop(servers);
    drop(viewleader);
    Ok(if violations == 0 { 0 } else { 1 })
}

#[allow(clippy::too_many_arguments)]
async fn client_step(
    client: &Client,
    recorder: &Recorder,
    faults: &Faults,
    client_id: u64,
    rng: &mut StdRng,
    registers: &[String],
    lists: &[String],
    unique: String,
) {
    let invoked = recorder.now_us();
    match rng.gen_range(0..10) {
        0..=2 => {
            let key = &registers[rng.gen_range(0..registers.len())];
            let value = Value::Text(unique);
            let crash = (rng.gen_range(0..20) == 0).then(|| match rng.gen_range(0..3) {
                0 => CrashPoint::AfterFirstPrepare,
                1 => CrashPoint::AfterAllPrepares,
                _ => CrashPoint::AfterFirstCommit,
            });
            let outcome = match crash {
                Some(point) => {
                    faults.coordinator_kills.fetch_add(1, Ordering::Relaxed);
                    client
                        .write_then_crash(key, Op::Put(value.clone()), point)
                        .await
                }
                None => client.setr(key, value.clone()).await,
            };
            // A killed coordinator's write may or may not happen: unknown, like a timeout.
            let ret = match (&outcome, crash) {
                (_, Some(_)) => Return::Unknown,
                (Ok(_), None) => Return::Written,
                (Err(err), None) => write_failure(err),
            };
            recorder.record(client_id, key, Call::Write(value), invoked, ret);
        }
        3..=5 => {
            let key = &lists[rng.gen_range(0..lists.len())];
            let ret = match client.append(key, &unique).await {
                Ok(_) => Return::Appended,
                Err(err) => write_failure(&err),
            };
            recorder.record(client_id, key, Call::Append(unique), invoked, ret);
        }
        _ => {
            let key = if rng.gen_bool(0.5) {
                &registers[rng.gen_range(0..registers.len())]
            } else {
                &lists[rng.gen_range(0..lists.len())]
            };
            // A read that failed returned nothing: it constrains nothing and is left out.
            if let Ok(found) = client.getr(key).await {
                recorder.record(
                    client_id,
                    key,
                    Call::Read,
                    invoked,
                    Return::ReadValue(found.map(|f| f.value.value)),
                );
            }
        }
    }
}

/// How a failed write counts: only an uncertain outcome may have taken effect.
fn write_failure(err: &Error) -> Return {
    match err {
        Error::Uncertain(_) => Return::Unknown,
        _ => Return::Failed,
    }
}

fn summarize(history: &[Operation]) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for op in history {
        let call = match op.call {
            Call::Write(_) => "setr",
            Call::Append(_) => "append",
            Call::Read => "getr",
        };
        let ret = match op.ret {
            Return::Failed => "failed",
            Return::Unknown => "unknown",
            _ => "ok",
        };
        *counts.entry(format!("{call} {ret}")).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Polls until `servers` servers are in the view and none is rebalancing.
async fn wait_settled(admin: &Client, servers: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(SETTLE_WAIT_MS);
    loop {
        if let Ok(view) = admin.query_servers().await {
            if view.servers.len() == servers && !view.rebalancing {
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!(
                "the cluster did not settle with {servers} servers"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Keys whose replicas do not all hold the same value and version.
async fn divergent_replicas<'a>(
    admin: &Client,
    keys: impl Iterator<Item = &'a String>,
) -> Result<Vec<String>> {
    let view = admin.view(true).await?;
    let mut problems = Vec::new();
    for key in keys {
        let mut copies = Vec::new();
        for replica in view.replicas(key) {
            match admin.get(&replica.addr, key).await {
                Ok(copy) => copies.push((replica.addr.clone(), copy)),
                Err(err) => problems.push(format!(
                    "{key:?}: replica {} did not answer: {err}",
                    replica.addr
                )),
            }
        }
        let first = copies.first().map(|(_, v)| v.clone());
        if copies.iter().any(|(_, v)| Some(v.clone()) != first) {
            let detail: Vec<String> = copies
                .iter()
                .map(|(addr, v)| {
                    format!(
                        "{addr}={}",
                        v.as_ref()
                            .map(|v| format!("v{}", v.version))
                            .unwrap_or_else(|| "none".into())
                    )
                })
                .collect();
            problems.push(format!("{key:?}: {}", detail.join(" ")));
        }
    }
    Ok(problems)
}
