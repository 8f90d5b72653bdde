//! `client bench`: the load generator ([`crate::tools::bench`]) on a cluster it starts in this
//! process (a view leader and `--servers` storage servers). It preloads keys, then for each
//! workload and each concurrency runs a closed-loop cell and prints ops/s with
//! p50/p90/p99/p99.9/max latency, as a table or JSON lines. The `probe` workload measures a plain
//! TCP echo over loopback: the physical floor under every request. `rebalance` times
//! re-replication after one server dies.
//!
//! Client and servers share this machine's cores, as they would on one host; the figures are for
//! comparison between runs on the same machine, never pass/fail. The side-by-side comparison
//! with etcd and Redis is `scripts/bench.sh` (the `bench/` workspace member).

use std::io::IsTerminal;
use std::sync::Arc;

use super::args::{validate, BenchArgs, Workload};
use super::rebalance;
use super::ringleader::{Mode, Ringleader};
use super::{preload, run_cell, run_probe, Cell, CellResult, KeySpace, Stop};
use crate::cli::output::Output;
use crate::error::Result;
use crate::tools::cluster::{ClusterOptions, LocalCluster};

/// Tasks that preload the keys.
pub const PRELOAD_CONCURRENCY: usize = 16;

const TABLE_HEADER: [&str; 11] = [
    "op", "dist", "conc", "ops", "ops/s", "p50 us", "p90 us", "p99 us", "p99.9 us", "max us",
    "errors",
];

fn table_row(cells: [String; 11]) -> String {
    let [op, dist, conc, ops, rate, p50, p90, p99, p999, max, errors] = cells;
    format!(
        "{op:<8} {dist:<7} {conc:>5} {ops:>10} {rate:>10} {p50:>8} {p90:>8} {p99:>8} {p999:>9} {max:>9} {errors:>7}"
    )
}

fn print_cell(out: Output, cell: &CellResult) {
    if out.json {
        println!("{}", cell.json());
        return;
    }
    let m = &cell.measured;
    let l = &m.latency_us;
    println!(
        "{}",
        table_row([
            cell.workload.clone(),
            cell.distribution
                .map(|d| d.name())
                .unwrap_or("-")
                .to_string(),
            cell.concurrency.to_string(),
            m.ops.to_string(),
            format!("{:.0}", m.ops_per_sec()),
            l.p50.to_string(),
            l.p90.to_string(),
            l.p99.to_string(),
            l.p999.to_string(),
            l.max.to_string(),
            m.errors.to_string(),
        ])
    );
}

pub async fn run(args: BenchArgs, out: Output) -> Result<u8> {
    let stop = validate(&args)?;
    if args.workload.contains(&Workload::Rebalance) {
        rebalance::run(&args, out).await?;
        if args.workload.iter().all(|w| *w == Workload::Rebalance) {
            return Ok(0);
        }
    }
    let needs_cluster = args.workload.iter().any(|w| w.mix().is_some());
    let cluster = if needs_cluster {
        out.progress(format!(
            "starting a local cluster with {} server(s)",
            args.servers
        ));
        Some(LocalCluster::start(args.servers, ClusterOptions::default()).await?)
    } else {
        None
    };
    let result = bench_cells(cluster.as_ref(), &args, stop, out).await;
    if let Some(cluster) = cluster {
        cluster.stop().await;
    }
    result.map(|_| 0)
}

async fn bench_cells(
    cluster: Option<&LocalCluster>,
    args: &BenchArgs,
    stop: Stop,
    out: Output,
) -> Result<Vec<CellResult>> {
    let show_progress = !out.json && std::io::stderr().is_terminal();
    let keys = KeySpace::new(args.distribution, args.keys, args.value_bytes);
    // One driver per kind of operation, each preloading its keys the first time it is used.
    let mut single: Option<Arc<Ringleader>> = None;
    let mut replicated: Option<Arc<Ringleader>> = None;
    let mode = if args.stale {
        Mode::ReplicatedStale
    } else {
        Mode::Replicated
    };
    if !out.json {
        println!("{}", bench_table_header());
    }
    let mut results = Vec::new();
    let mut cell_index = 0u64;
    for &workload in &args.workload {
        let label = |concurrency: usize| {
            show_progress.then(|| format!("{} c={concurrency}", workload.name()))
        };
        if workload == Workload::Probe {
            let measured = run_probe(args.warmup_ops, stop, label(1).as_deref()).await?;
            let cell = CellResult {
                system: "loopback".into(),
                workload: workload.name(),
                distribution: None,
                concurrency: 1,
                measured,
            };
            print_cell(out, &cell);
            results.push(cell);
            continue;
        }
        let (Some((mix, unreplicated)), Some(cluster)) = (workload.mix(), cluster) else {
            continue;
        };
        let (slot, mode) = if unreplicated {
            (&mut single, Mode::Single(cluster.servers[0].addr.clone()))
        } else {
            (&mut replicated, mode.clone())
        };
        let system = mode.system_name();
        let driver = match slot {
            Some(driver) => driver.clone(),
            None => {
                let driver = Arc::new(Ringleader::new(Arc::new(cluster.client(10_000)), mode));
                out.progress(format!("preloading {} keys", args.keys));
                preload(&driver, args.keys, &keys.value, PRELOAD_CONCURRENCY).await?;
                slot.insert(driver).clone()
            }
        };
        for &concurrency in &args.concurrency {
            cell_index += 1;
            let cell = Cell::numbered(
                mix,
                concurrency,
                stop,
                args.warmup_ops,
                args.seed,
                cell_index,
            );
            let measured = run_cell(&driver, &keys, &cell, label(concurrency).as_deref()).await?;
            let cell = CellResult {
                system: system.into(),
                workload: workload.name(),
                distribution: Some(args.distribution),
                concurrency,
                measured,
            };
            print_cell(out, &cell);
            results.push(cell);
        }
    }
    Ok(results)
}

fn bench_table_header() -> String {
    table_row(TABLE_HEADER.map(String::from))
}
