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

use clap::{Args, ValueEnum};

use super::rebalance;
use super::ringleader::{Mode, Ringleader};
use super::{preload, run_cell, run_probe, Cell, CellResult, Distribution, KeySpace, Mix, Stop};
use crate::cli::output::Output;
use crate::error::{Error, Result};
use crate::tools::cluster::{ClusterOptions, LocalCluster};

/// Tasks that preload the keys.
pub const PRELOAD_CONCURRENCY: usize = 16;

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
    /// YCSB A: 50% getr, 50% setr.
    YcsbA,
    /// YCSB B: 95% getr, 5% setr.
    YcsbB,
    /// YCSB C: 100% getr.
    YcsbC,
    /// Loopback round-trip floor: a plain TCP echo on 127.0.0.1, one client (ignores
    /// --concurrency).
    Probe,
    /// Bulk-load `--keys` keys on their replicas, kill one server, and time re-replication
    /// (ignores --concurrency and --ops).
    Rebalance,
}

impl Workload {
    /// The name on the command line, in the table and in the JSON lines.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_else(|| format!("{self:?}").to_lowercase())
    }

    /// The operation mix, and whether it runs on one server unreplicated; `None` for the
    /// workloads that issue no key/value requests.
    pub fn mix(self) -> Option<(Mix, bool)> {
        Some(match self {
            Workload::Set => (Mix::Write, true),
            Workload::Get => (Mix::Read, true),
            Workload::Setr => (Mix::Write, false),
            Workload::Getr => (Mix::Read, false),
            Workload::YcsbA => (Mix::YcsbA, false),
            Workload::YcsbB => (Mix::YcsbB, false),
            Workload::YcsbC => (Mix::YcsbC, false),
            Workload::Probe | Workload::Rebalance => return None,
        })
    }
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
    /// Run each cell for this many seconds instead of --ops operations.
    #[arg(long, conflicts_with = "ops")]
    pub duration_s: Option<u64>,
    /// Unmeasured operations before each cell, at the cell's concurrency.
    #[arg(long, default_value_t = 0)]
    pub warmup_ops: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Storage servers to start (set/get use the first one).
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Replicated reads with `getr --stale` (one replica) instead of the linearizable getr.
    #[arg(long)]
    pub stale: bool,
}

/// Checks the arguments; returns how each cell stops.
pub fn validate(args: &BenchArgs) -> Result<Stop> {
    let stop = Stop::from_flags(args.ops, args.duration_s)?;
    super::validate_common(
        &args.concurrency,
        args.warmup_ops,
        args.keys,
        args.value_bytes,
    )?;
    if args.servers == 0 {
        return Err(Error::InvalidRequest("--servers must be above 0".into()));
    }
    Ok(stop)
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::bench::{BENCH_CONCURRENCY_MAX, BENCH_DURATION_S_MAX, BENCH_OPS_MAX};
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(argv: &[&str]) -> std::result::Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|c| c.bench)
    }

    fn stop_of(argv: &[&str]) -> Result<Stop> {
        validate(&parse(argv).expect("parses"))
    }

    #[test]
    fn bench_defaults_keep_the_documented_flags() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.workload, vec![Workload::Set, Workload::Get]);
        assert_eq!(args.concurrency, vec![1, 64]);
        assert_eq!(
            (args.ops, args.servers, args.keys, args.value_bytes),
            (50_000, 1, 1_000, 100)
        );
        assert_eq!(args.distribution, Distribution::Uniform);
        assert_eq!((args.warmup_ops, args.duration_s), (0, None));
        assert_eq!(validate(&args).unwrap(), Stop::Ops(50_000));
    }

    #[test]
    fn bench_parses_new_workloads_and_distribution() {
        let args = parse(&[
            "--workload",
            "ycsb-a,ycsb-b,ycsb-c,probe,setr,getr,set,get,rebalance",
            "--distribution",
            "zipfian",
            "--warmup-ops",
            "100",
        ])
        .unwrap();
        assert_eq!(
            args.workload,
            vec![
                Workload::YcsbA,
                Workload::YcsbB,
                Workload::YcsbC,
                Workload::Probe,
                Workload::Setr,
                Workload::Getr,
                Workload::Set,
                Workload::Get,
                Workload::Rebalance
            ]
        );
        assert_eq!(args.distribution, Distribution::Zipfian);
        assert_eq!(Workload::YcsbA.name(), "ycsb-a");
        assert_eq!(Workload::Probe.name(), "probe");
        assert_eq!(Workload::YcsbB.mix(), Some((Mix::YcsbB, false)));
        assert_eq!(Workload::Set.mix(), Some((Mix::Write, true)));
        assert_eq!(Workload::Getr.mix(), Some((Mix::Read, false)));
        assert_eq!(Workload::Rebalance.mix(), None);
        assert!(parse(&["--workload", "ycsb-d"]).is_err());
        assert!(parse(&["--distribution", "latest"]).is_err());
    }

    #[test]
    fn bench_validates_ops_and_duration_bounds() {
        assert!(stop_of(&["--ops", "0"]).is_err());
        assert!(stop_of(&["--ops", &(BENCH_OPS_MAX + 1).to_string()]).is_err());
        assert_eq!(
            stop_of(&["--ops", &BENCH_OPS_MAX.to_string()]).unwrap(),
            Stop::Ops(BENCH_OPS_MAX)
        );
        assert!(stop_of(&["--duration-s", "0"]).is_err());
        assert!(stop_of(&["--duration-s", &(BENCH_DURATION_S_MAX + 1).to_string()]).is_err());
        assert_eq!(
            stop_of(&["--duration-s", "3600"]).unwrap(),
            Stop::For(Duration::from_secs(3600))
        );
        // One or the other, never both.
        assert!(parse(&["--ops", "10", "--duration-s", "5"]).is_err());
        assert!(stop_of(&["--warmup-ops", &(BENCH_OPS_MAX + 1).to_string()]).is_err());
        assert!(stop_of(&["--warmup-ops", "0"]).is_ok());
    }

    #[test]
    fn bench_validates_concurrency_servers_and_keys() {
        assert!(stop_of(&["--concurrency", "1,0"]).is_err());
        assert!(stop_of(&["--concurrency", &(BENCH_CONCURRENCY_MAX + 1).to_string()]).is_err());
        assert!(stop_of(&["--concurrency", "1,16,64"]).is_ok());
        assert!(stop_of(&["--servers", "0"]).is_err());
        assert!(stop_of(&["--keys", "0"]).is_err());
    }
}
