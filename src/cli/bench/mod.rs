//! `client bench`: a closed-loop load generator. It starts its own local cluster (a view leader
//! and `--servers` storage servers in this process), preloads keys, then for each workload and
//! each concurrency runs that many tasks issuing requests back to back for `--ops` operations,
//! and reports ops/s with p50/p99 latency from an HDR histogram.
//!
//! Client and servers share this machine's cores, as they would on one host; the figures are for
//! comparison between runs on the same machine, never pass/fail.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;

pub mod rebalance;

use crate::cli::Output;
use crate::client::Client;
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::error::{Error, Result};
use crate::rpc::message::Value;

/// Operations one benchmark cell may run at most.
pub const BENCH_OPS_MAX: u64 = 10_000_000;
/// Concurrent tasks one cell may run at most.
pub const BENCH_CONCURRENCY_MAX: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Unreplicated set on one server.
    Set,
    /// Unreplicated get on one server.
    Get,
    /// Replicated set (two-phase commit).
    Setr,
    /// Replicated get.
    Getr,
    /// Bulk-load `--keys` keys on their replicas, kill one server, and time re-replication
    /// (ignores --concurrency and --ops).
    Rebalance,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workloads to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![Workload::Set, Workload::Get])]
    pub workload: Vec<Workload>,
    /// Concurrent requests (closed loop), one cell each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 64])]
    pub concurrency: Vec<usize>,
    /// Operations per cell.
    #[arg(long, default_value_t = 50_000)]
    pub ops: u64,
    /// Storage servers to start (set/get use the first one).
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
}

/// One measured cell.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub workload: Workload,
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl CellResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

pub async fn run(args: BenchArgs, out: Output) -> Result<u8> {
    if args.ops == 0 || args.ops > BENCH_OPS_MAX {
        return Err(Error::InvalidRequest(format!(
            "--ops must be 1 to {BENCH_OPS_MAX}"
        )));
    }
    if args
        .concurrency
        .iter()
        .any(|&c| c == 0 || c > BENCH_CONCURRENCY_MAX)
    {
        return Err(Error::InvalidRequest(format!(
            "--concurrency must be 1 to {BENCH_CONCURRENCY_MAX}"
        )));
    }
    if args.servers == 0 || args.keys == 0 {
        return Err(Error::InvalidRequest(
            "--servers and --keys must be above 0".into(),
        ));
    }
    if args.workload.contains(&Workload::Rebalance) {
        rebalance::run(&args, out).await?;
        if args.workload.iter().all(|w| *w == Workload::Rebalance) {
            return Ok(0);
        }
    }
    out.progress(format!(
        "starting a local cluster with {} server(s)",
        args.servers
    ));
    let cluster = LocalCluster::start(args.servers, ClusterOptions::default()).await?;
    let result = bench_cells(&cluster, &args, out).await;
    cluster.stop().await;
    result.map(|_| 0)
}

async fn bench_cells(
    cluster: &LocalCluster,
    args: &BenchArgs,
    out: Output,
) -> Result<Vec<CellResult>> {
    let client = Arc::new(cluster.client(10_000));
    let server = cluster.servers[0].addr.clone();
    let value = Value::Text("x".repeat(args.value_bytes));
    // Preload every key both ways so gets and getrs find values.
    for key in 0..args.keys {
        let key = format!("key-{key}");
        client.set(&server, &key, value.clone()).await?;
        client.setr(&key, value.clone()).await?;
    }
    if !out.json {
        println!(
            "{:<6} {:>5} {:>10} {:>12} {:>9} {:>9} {:>7}",
            "op", "conc", "ops", "ops/s", "p50 us", "p99 us", "errors"
        );
    }
    let mut results = Vec::new();
    for &workload in &args.workload {
        if workload == Workload::Rebalance {
            continue;
        }
        for &concurrency in &args.concurrency {
            let cell = run_cell(&client, &server, workload, concurrency, args, &value).await?;
            if out.json {
                println!(
                    "{}",
                    json!({"workload": format!("{workload:?}").to_lowercase(), "concurrency": concurrency, "ops": cell.ops,
                           "ops_per_sec": cell.ops_per_sec().round(), "p50_us": cell.p50_us, "p99_us": cell.p99_us, "errors": cell.errors})
                );
            } else {
                println!(
                    "{:<6} {:>5} {:>10} {:>12.0} {:>9} {:>9} {:>7}",
                    format!("{workload:?}").to_lowercase(),
                    concurrency,
                    cell.ops,
                    cell.ops_per_sec(),
                    cell.p50_us,
                    cell.p99_us,
                    cell.errors
                );
            }
            results.push(cell);
        }
    }
    Ok(results)
}

async fn run_cell(
    client: &Arc<Client>,
    server: &str,
    workload: Workload,
    concurrency: usize,
    args: &BenchArgs,
    value: &Value,
) -> Result<CellResult> {
    let issued = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(concurrency);
    for worker in 0..concurrency {
        let client = client.clone();
        let server = server.to_string();
        let value = value.clone();
        let issued = issued.clone();
        let errors = errors.clone();
        let (ops, keys) = (args.ops, args.keys);
        tasks.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                .map_err(|err| Error::Internal(format!("histogram: {err}")))?;
            let mut n = worker as u64;
            while issued.fetch_add(1, Ordering::Relaxed) < ops {
                // A cheap spread over the key space that differs per worker.
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let key = format!("key-{}", (n >> 33) % keys);
                let begun = Instant::now();
                let outcome = match workload {
                    Workload::Set => client.set(&server, &key, value.clone()).await.map(|_| ()),
                    Workload::Get => client.get(&server, &key).await.map(|_| ()),
                    Workload::Setr => client.setr(&key, value.clone()).await.map(|_| ()),
                    Workload::Getr => client.getr(&key).await.map(|_| ()),
                    // Measured by `rebalance::run`, never as a cell.
                    Workload::Rebalance => Ok(()),
                };
                if outcome.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                let _ = histogram.record(begun.elapsed().as_micros().max(1) as u64);
            }
            Ok::<_, Error>(histogram)
        }));
    }
    let mut merged = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
        .map_err(|err| Error::Internal(format!("histogram: {err}")))?;
    for task in tasks {
        let histogram = task
            .await
            .map_err(|err| Error::Internal(format!("bench task died: {err}")))??;
        merged
            .add(histogram)
            .map_err(|err| Error::Internal(format!("histogram: {err}")))?;
    }
    Ok(CellResult {
        workload,
        concurrency,
        ops: merged.len(),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        p50_us: merged.value_at_quantile(0.50),
        p99_us: merged.value_at_quantile(0.99),
    })
}
