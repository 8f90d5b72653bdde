//! `client chaos`: a checked fault-injection run. It starts a local cluster of real processes
//! (this very binary, in its hidden `serve` role, so nothing else needs to be built): a view
//! leader of `--viewleaders` Raft members and `--servers` storage servers, each in a network
//! namespace of its own where the machine allows it. It runs concurrent `setr`/`getr`/`append`
//! clients and a small lock workload against it while a nemesis strikes servers and view-leader
//! members alike, records every operation with its invocation and completion times, then heals
//! the cluster and checks safety and liveness. Servers and clients are given every member's
//! address and find the leader themselves.
//!
//! * [`serve`](mod@serve): the hidden `serve` role (a view-leader member or a storage server in
//!   this process);
//! * [`netns`]: the run's private network (namespaces, a bridge, cut links);
//! * [`procs`]: the cluster's processes (start, kill, restart at the same or a new address);
//! * [`nemesis`]: the faults, round-robin over every kind, and their healing;
//! * [`workload`]: the clients, the lock clients and the monitor of epochs;
//! * [`liveness`]: after the heal, is every key writable, every transaction resolved, every
//!   replica in agreement, the view leader's group converged, within a named bound;
//! * this file: the run itself and its summary.
//!
//! Safety checked: linearizability of every key ([`crate::tools::checker`]); every acknowledged
//! append present exactly once, no failed one present; epochs never going backwards; fencing
//! tokens only growing and no lock with two holders at once ([`workload::check_locks`]); at most
//! one leader per Raft term, and no view answered while a majority of the members was down
//! ([`nemesis`]). Liveness checked: see [`liveness`]; and after every fault the cluster settles
//! again within [`nemesis::Nemesis::settle_bound_ms`] and the group converges within
//! [`nemesis::group_converge_ms`].
//!
//! The run is seeded: the seed draws the lease, the transaction timeout and the members' election
//! timeout ([`election_timeout_ms_from_seed`]: the run's own, never the view leader's default),
//! the order and timing of the faults and the clients' choices (the interleavings still vary).
//! It prints the seed, the timing and the faults by kind, exits 1 on any violation and then
//! prints the command that reruns it.
//!
//! The servers and the members are durable, each with a data dir of its own under the run's
//! temporary directory ([`procs`]): a killed process restarts with its data, and the nemesis may
//! kill every server, or every member, at once ([`nemesis`]).
//!
//! Left out: several hosts, and faults of the disk or the clock.

pub mod liveness;
pub mod nemesis;
pub mod netns;
pub mod procs;
pub mod serve;
pub mod workload;

pub use serve::{serve, Role, ServeArgs};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::cli::output::Output;
use crate::client::{Client, ClientOptions};
use crate::errinput;
use crate::error::{Error, Result};
use crate::tools::checker::{self, Call, CheckOptions, Return};
use crate::types::Value;
use nemesis::{FaultKind, Nemesis};
use workload::{Keys, LockLog, Recorder};

/// Longest a chaos run may be asked to last.
pub const CHAOS_DURATION_S_MAX: u64 = 3_600;
/// Storage servers a run may have: at least a key's three replicas.
pub const SERVERS_MIN: usize = 3;
pub const SERVERS_MAX: usize = 10;
/// Most clients, and most register keys (as many lists again), a run may have.
pub const CLIENTS_MAX: usize = 64;
pub const KEYS_MAX: usize = 100;
/// Fewest view-leader members a run may have: a group of one or two has no member to lose
/// without losing its majority, which every kind of member fault but the bounded ones relies on.
pub const VIEWLEADERS_MIN: usize = 3;
/// Longest wait for the fresh cluster to settle before the run starts.
pub const STARTUP_SETTLE_MS: u64 = 30_000;
/// Heartbeat interval of the chaos cluster.
pub const CHAOS_HEARTBEAT_MS: u64 = 200;
/// The lease is drawn from this range per run (≥ 1 s, ≥ 5 heartbeats).
pub const LEASE_MS_MIN: u64 = 1_000;
pub const LEASE_MS_MAX: u64 = 3_000;
/// The transaction timeout is drawn from this range per run, independently of the lease: across
/// seeds the lease is both shorter and longer than it.
pub const TX_TIMEOUT_MS_MIN: u64 = 500;
pub const TX_TIMEOUT_MS_MAX: u64 = 3_000;
/// The view-leader members' shortest election timeout is drawn from this range per run, in ms
/// (openraft waits up to twice it): see [`election_timeout_ms_from_seed`]. Above two of the
/// members' Raft heartbeats (150 ms), which the view leader requires.
pub const ELECTION_TIMEOUT_MS_MIN: u64 = 500;
pub const ELECTION_TIMEOUT_MS_MAX: u64 = 1_000;
/// Client call timeout during the run.
pub const CHAOS_RPC_TIMEOUT_MS: u64 = 500;
/// How long a client waits out a rebalancing before its call fails.
pub const CLIENT_WAIT_MS: u64 = 2_000;
/// The checking client's call timeout.
pub const ADMIN_TIMEOUT_MS: u64 = 2_000;
/// Mixes the seed into the timing's own stream, so adding a fault kind does not change it.
const TIMING_SALT: u64 = 0x7469_6d69_6e67;
/// Mixes the seed into the election timeout's own stream, apart from the rest of the timing's
/// (so that a seed keeps the lease and transaction timeout it always had).
const ELECTION_SALT: u64 = 0x656c_6563_7469_6f6e;
/// Mixes the seed into each lock client's stream, apart from the other clients'.
const LOCK_SALT: u64 = 0x6c6f_636b_7365_6564;

#[derive(Args, Debug, Clone)]
pub struct ChaosArgs {
    /// How long clients and nemesis run, in seconds (the nemesis goes on past it until every
    /// kind of fault has struck once).
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
    /// Members of the view leader's Raft group.
    #[arg(long, default_value_t = procs::VIEWLEADER_MEMBERS_DEFAULT)]
    pub viewleaders: usize,
    /// Make only these kinds of fault (comma-separated names, as the summary counts them);
    /// default: every kind the machine allows.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<String>,
    /// Seed of the timing, the nemesis and the clients' choices (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Run every process on loopback, without network namespaces (no partitions).
    #[arg(long)]
    pub no_netns: bool,
}

/// The timing of one run's cluster, drawn from its seed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub heartbeat_ms: u64,
    pub lease_ms: u64,
    pub tx_timeout_ms: u64,
}

impl Timing {
    pub fn from_seed(seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ TIMING_SALT);
        Self {
            heartbeat_ms: CHAOS_HEARTBEAT_MS,
            lease_ms: rng.gen_range(LEASE_MS_MIN..=LEASE_MS_MAX),
            tx_timeout_ms: rng.gen_range(TX_TIMEOUT_MS_MIN..=TX_TIMEOUT_MS_MAX),
        }
    }
}

/// The view-leader members' shortest election timeout for a run, drawn from its seed. The run
/// gives it to its members (`--election-timeout-ms`) rather than taking the view leader's
/// default, and derives every wait on the group from it ([`liveness::failover_ms`]): a new
/// default changes nothing here. Across seeds both a short timeout (quick failovers, and
/// elections a loaded machine may trip) and a long one are run.
pub fn election_timeout_ms_from_seed(seed: u64) -> u64 {
    StdRng::seed_from_u64(seed ^ ELECTION_SALT)
        .gen_range(ELECTION_TIMEOUT_MS_MIN..=ELECTION_TIMEOUT_MS_MAX)
}

/// Runs the chaos test; returns the exit code (0: no violation). Ctrl-C stops it and cleans up.
pub async fn run(args: ChaosArgs, out: Output) -> Result<u8> {
    tokio::select! {
        outcome = run_checked(args, out) => outcome,
        _ = tokio::signal::ctrl_c() => Err(Error::Internal("interrupted".into())),
    }
}

async fn run_checked(args: ChaosArgs, out: Output) -> Result<u8> {
    if args.duration_s == 0 || args.duration_s > CHAOS_DURATION_S_MAX {
        return Err(errinput!(
            "--duration-s must be 1 to {CHAOS_DURATION_S_MAX}"
        ));
    }
    if !(SERVERS_MIN..=SERVERS_MAX).contains(&args.servers)
        || !(1..=CLIENTS_MAX).contains(&args.clients)
        || !(1..=KEYS_MAX).contains(&args.keys)
    {
        return Err(errinput!(
            "chaos needs {SERVERS_MIN} to {SERVERS_MAX} servers, 1 to {CLIENTS_MAX} clients and \
             1 to {KEYS_MAX} keys"
        ));
    }
    if !(VIEWLEADERS_MIN..=procs::VIEWLEADER_MEMBERS_MAX).contains(&args.viewleaders) {
        return Err(errinput!(
            "chaos needs {VIEWLEADERS_MIN} to {} view-leader members",
            procs::VIEWLEADER_MEMBERS_MAX
        ));
    }
    let only: Option<Vec<FaultKind>> = if args.faults.is_empty() {
        None
    } else {
        let mut only = Vec::new();
        for name in &args.faults {
            match FaultKind::from_name(name.trim()) {
                Some(kind) if kind != FaultKind::CoordinatorKill => only.push(kind),
                _ => {
                    return Err(errinput!(
                        "--faults: no fault kind {name:?} (the nemesis's kinds are {})",
                        FaultKind::ALL
                            .iter()
                            .filter(|k| **k != FaultKind::CoordinatorKill)
                            .map(|k| k.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                }
            }
        }
        Some(only)
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let timing = Timing::from_seed(seed);
    let election_timeout_ms = election_timeout_ms_from_seed(seed);
    let rerun = format!(
        "cargo run --release --bin client -- chaos --seed {seed} --duration-s {} --servers {} --clients {} --keys {} --viewleaders {}{}{}",
        args.duration_s,
        args.servers,
        args.clients,
        args.keys,
        args.viewleaders,
        if args.faults.is_empty() {
            String::new()
        } else {
            format!(" --faults {}", args.faults.join(","))
        },
        if args.no_netns { " --no-netns" } else { "" }
    );
    out.progress(format!(
        "chaos: seed {seed}, lease {} ms, transaction timeout {} ms, election timeout {} ms, {} view-leader members, {} servers, {} clients, {} s",
        timing.lease_ms,
        timing.tx_timeout_ms,
        election_timeout_ms,
        args.viewleaders,
        args.servers,
        args.clients,
        args.duration_s
    ));
    let net = if args.no_netns {
        Err("--no-netns".to_string())
    } else {
        netns::Net::create()
    };
    let skipped_reason = net.as_ref().err().cloned();
    if let Some(reason) = &skipped_reason {
        // Said even with --json (on stderr): a run without partitions must not pass unnoticed.
        eprintln!("chaos: partition faults skipped: {reason}");
    }
    let mut cluster = procs::Cluster::start_group(
        net.ok(),
        args.viewleaders,
        args.servers,
        timing,
        election_timeout_ms,
    )?;
    let viewleader = cluster.viewleader.addr.clone();
    let client_options = |timeout_ms, wait_ms| ClientOptions {
        viewleader: viewleader.clone(),
        timeout_ms,
        wait_ms,
    };
    let admin = Arc::new(Client::new(client_options(
        ADMIN_TIMEOUT_MS,
        CLIENT_WAIT_MS,
    )));
    if !liveness::wait_settled(
        &admin,
        &cluster.server_addrs(),
        Duration::from_millis(STARTUP_SETTLE_MS),
    )
    .await
    {
        return Err(Error::Timeout(format!(
            "the fresh cluster did not settle within {STARTUP_SETTLE_MS} ms"
        )));
    }

    let recorder = Arc::new(Recorder::new());
    let coordinator_kills = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let keys = Keys {
        registers: (0..args.keys).map(|i| format!("reg-{i}")).collect(),
        lists: (0..args.keys).map(|i| format!("list-{i}")).collect(),
    };
    let mut workers = Vec::new();
    for client_id in 0..args.clients as u64 {
        let client = Client::new(client_options(CHAOS_RPC_TIMEOUT_MS, CLIENT_WAIT_MS));
        let rng = StdRng::seed_from_u64(seed ^ (client_id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        workers.push(tokio::spawn(workload::client_loop(
            client,
            recorder.clone(),
            coordinator_kills.clone(),
            stop.clone(),
            client_id,
            rng,
            keys.clone(),
        )));
    }
    let locks = Arc::new(LockLog::default());
    for locker in 0..workload::LOCK_CLIENTS {
        let rng = StdRng::seed_from_u64(seed ^ (locker + 1).wrapping_mul(LOCK_SALT));
        workers.push(tokio::spawn(workload::lock_loop(
            Client::new(client_options(CHAOS_RPC_TIMEOUT_MS, 0)),
            recorder.clone(),
            locks.clone(),
            stop.clone(),
            locker,
            rng,
        )));
    }
    let epochs = tokio::spawn(workload::epoch_monitor(
        client_options(CHAOS_RPC_TIMEOUT_MS, 0),
        recorder.clone(),
        stop.clone(),
    ));

    let nemesis = Nemesis::new(
        &mut cluster,
        admin.clone(),
        only.as_deref(),
        StdRng::seed_from_u64(seed),
        timing,
        out,
    );
    let nemesis_outcome = nemesis.run(Duration::from_secs(args.duration_s)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in workers {
        let _ = worker.await;
    }
    let mut safety_findings = Vec::new();
    match epochs.await {
        Ok(problems) => safety_findings.extend(problems),
        Err(err) => safety_findings.push(format!("the epoch monitor failed: {err}")),
    }
    safety_findings.extend(locks.findings());
    let mut nemesis_report = nemesis_outcome?;
    safety_findings.append(&mut nemesis_report.safety_findings);

    let bound_ms = liveness::liveness_bound_ms(&timing, election_timeout_ms);
    out.progress(format!(
        "healed: checking liveness within {bound_ms} ms, then the history"
    ));
    let mut leaders = liveness::Leaders::default();
    let liveness_findings = liveness::check(
        &admin,
        &recorder,
        &cluster.server_addrs(),
        &cluster.viewleader.addrs(),
        &mut leaders,
        &keys,
        Duration::from_millis(bound_ms),
    )
    .await;
    safety_findings.append(&mut leaders.findings);

    // Final reads, recorded too: they must agree with everything before them.
    let mut final_lists = BTreeMap::new();
    let mut read_findings = Vec::new();
    for key in keys.registers.iter().chain(&keys.lists) {
        let invoked = recorder.now_us();
        match admin.getr(key).await {
            Ok(found) => {
                let value = found.map(|found| found.value.value);
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
            Err(err) => read_findings.push(format!("the final read of {key:?} failed: {err}")),
        }
    }

    let history = recorder.history();
    let report = checker::check(&history, &CheckOptions::default());
    let append_problems = checker::check_appends(&history, &final_lists);
    let mut faults: BTreeMap<&str, u64> = nemesis_report.faults.clone();
    faults.insert(
        FaultKind::CoordinatorKill.name(),
        coordinator_kills.load(Ordering::Relaxed),
    );
    let kinds: Vec<&str> = FaultKind::runnable(skipped_reason.is_none())
        .into_iter()
        .filter(|k| {
            *k == FaultKind::CoordinatorKill || only.as_ref().is_none_or(|only| only.contains(k))
        })
        .map(FaultKind::name)
        .collect();
    let skipped: BTreeMap<&str, String> = FaultKind::ALL
        .into_iter()
        .filter(|k| !kinds.contains(&k.name()))
        .map(|k| {
            let reason = if k.needs_net() {
                skipped_reason
                    .clone()
                    .unwrap_or_else(|| "not in --faults".into())
            } else {
                "not in --faults".into()
            };
            (k.name(), reason)
        })
        .collect();
    let violations = report.violations()
        + report.unknowns()
        + append_problems.len()
        + safety_findings.len()
        + liveness_findings.len()
        + read_findings.len()
        + nemesis_report.findings.len();
    let summary = workload::summarize(&history);
    if out.json {
        println!(
            "{}",
            json!({
                "seed": seed, "duration_s": args.duration_s,
                "heartbeat_ms": timing.heartbeat_ms, "lease_ms": timing.lease_ms,
                "tx_timeout_ms": timing.tx_timeout_ms,
                "election_timeout_ms": election_timeout_ms,
                "liveness_bound_ms": bound_ms,
                "viewleader_members": args.viewleaders,
                "operations": history.len(), "outcomes": summary,
                "locks": locks.summary(), "lock_grants": locks.grants().len(),
                "refusals_while_majority_down": nemesis_report.refusals,
                "failures_by_kind": recorder.failures(),
                "fault_kinds": kinds, "faults": faults, "skipped_fault_kinds": skipped,
                "rounds_completed": nemesis_report.rounds_completed,
                "linearizability": report.to_string(), "append_problems": append_problems,
                "safety_findings": safety_findings, "liveness_findings": liveness_findings,
                "final_read_failures": read_findings,
                "nemesis_findings": nemesis_report.findings, "violations": violations,
                "rerun": rerun,
            })
        );
    } else {
        println!("chaos run, seed {seed}");
        println!(
            "  timing: heartbeat {} ms, lease {} ms, transaction timeout {} ms, election timeout {} ms; liveness bound {bound_ms} ms",
            timing.heartbeat_ms, timing.lease_ms, timing.tx_timeout_ms, election_timeout_ms
        );
        println!("  operations: {} ({summary})", history.len());
        println!("  locks: {}", locks.summary());
        let failures: Vec<String> = recorder
            .failures()
            .iter()
            .map(|(kind, n)| format!("{n} {kind}"))
            .collect();
        println!("  failed calls by kind: {}", failures.join(", "));
        let by_kind: Vec<String> = faults.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "  faults ({} rounds): {}",
            nemesis_report.rounds_completed,
            by_kind.join(", ")
        );
        for (kind, reason) in &skipped {
            println!("  skipped {kind}: {reason}");
        }
        if !nemesis_report.refusals.is_empty() {
            let refusals: Vec<String> = nemesis_report
                .refusals
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            println!(
                "  refused while a majority of the members was down: {}",
                refusals.join(", ")
            );
        }
        println!("  linearizability: {report}");
        let problems = append_problems
            .iter()
            .map(|p| ("append problem", p))
            .chain(safety_findings.iter().map(|p| ("safety", p)))
            .chain(
                nemesis_report
                    .findings
                    .iter()
                    .map(|p| ("liveness during the run", p)),
            )
            .chain(
                liveness_findings
                    .iter()
                    .map(|p| ("liveness after the heal", p)),
            )
            .chain(read_findings.iter().map(|p| ("final read", p)));
        for (what, problem) in problems {
            println!("  {what}: {problem}");
        }
        println!("  violations: {violations}");
    }
    drop(cluster);
    if violations == 0 {
        Ok(0)
    } else {
        eprintln!("chaos: {violations} violations; rerun with: {rerun}");
        Ok(1)
    }
}
