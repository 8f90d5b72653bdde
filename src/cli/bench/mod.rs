//! `client bench`: a closed-loop load generator. It starts its own local cluster (a view leader
//! and `--servers` storage servers in this process), preloads keys, then for each workload and
//! each concurrency runs that many tasks issuing requests back to back, for `--ops` operations or
//! for `--duration-s` seconds (after `--warmup-ops` unmeasured ones), and reports ops/s with
//! p50/p90/p99/p99.9/max latency from an HDR histogram. Keys are chosen uniformly or zipfian
//! (`--distribution`), from a seeded RNG (`--seed`). The `probe` workload measures a plain TCP
//! echo over loopback: the physical floor under every request.
//!
//! Client and servers share this machine's cores, as they would on one host; the figures are for
//! comparison between runs on the same machine, never pass/fail.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

pub mod probe;
pub mod rebalance;
pub mod workload;

pub use workload::{Distribution, KeyChooser, Mix, Op, Zipfian};

use crate::cli::Output;
use crate::client::Client;
use crate::cluster::{ClusterOptions, LocalCluster};
use crate::error::{Error, Result};
use crate::rpc::message::Value;

/// Operations one benchmark cell may run at most.
pub const BENCH_OPS_MAX: u64 = 10_000_000;
/// Concurrent tasks one cell may run at most.
pub const BENCH_CONCURRENCY_MAX: usize = 4096;
/// Longest one cell may run with `--duration-s`.
pub const BENCH_DURATION_S_MAX: u64 = 3_600;
/// Largest latency the histograms hold (µs); longer ones are clamped into it.
pub const HISTOGRAM_MAX_US: u64 = 60_000_000;

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
}

/// When a cell stops issuing operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this many operations in all.
    Ops(u64),
    /// Once this long has passed since the cell started.
    For(Duration),
}

impl Stop {
    /// Whether another operation may start, given how many have started before it and when the
    /// cell began.
    pub fn more(&self, started_before: u64, began: Instant) -> bool {
        match *self {
            Stop::Ops(ops) => started_before < ops,
            Stop::For(duration) => began.elapsed() < duration,
        }
    }
}

/// Checks the arguments; returns how each cell stops.
pub fn validate(args: &BenchArgs) -> Result<Stop> {
    if args.ops == 0 || args.ops > BENCH_OPS_MAX {
        return Err(Error::InvalidRequest(format!(
            "--ops must be 1 to {BENCH_OPS_MAX}"
        )));
    }
    if args.warmup_ops > BENCH_OPS_MAX {
        return Err(Error::InvalidRequest(format!(
            "--warmup-ops must be 0 to {BENCH_OPS_MAX}"
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
    match args.duration_s {
        None => Ok(Stop::Ops(args.ops)),
        Some(s) if s == 0 || s > BENCH_DURATION_S_MAX => Err(Error::InvalidRequest(format!(
            "--duration-s must be 1 to {BENCH_DURATION_S_MAX}"
        ))),
        Some(s) => Ok(Stop::For(Duration::from_secs(s))),
    }
}

/// Latency percentiles of one cell, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Percentiles {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl Percentiles {
    pub fn of(histogram: &Histogram<u64>) -> Self {
        Percentiles {
            p50: histogram.value_at_quantile(0.50),
            p90: histogram.value_at_quantile(0.90),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// One measured cell.
#[derive(Clone, Debug)]
pub struct CellResult {
    pub workload: Workload,
    pub concurrency: usize,
    pub ops: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Percentiles,
}

impl CellResult {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// The cell as one JSON line.
    pub fn json(&self, distribution: Distribution) -> serde_json::Value {
        let l = &self.latency_us;
        json!({"workload": self.workload.name(), "concurrency": self.concurrency, "ops": self.ops,
               "ops_per_sec": self.ops_per_sec().round(), "elapsed_ms": self.elapsed.as_millis() as u64,
               "distribution": distribution_name(self.workload, distribution),
               "p50_us": l.p50, "p90_us": l.p90, "p99_us": l.p99, "p999_us": l.p999, "max_us": l.max,
               "errors": self.errors})
    }
}

/// The key distribution a cell used (`null` for the probe, which has no keys).
fn distribution_name(workload: Workload, distribution: Distribution) -> Option<String> {
    (workload != Workload::Probe).then(|| {
        distribution
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    })
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

fn print_cell(out: Output, cell: &CellResult, distribution: Distribution) {
    if out.json {
        println!("{}", cell.json(distribution));
        return;
    }
    let l = &cell.latency_us;
    println!(
        "{}",
        table_row([
            cell.workload.name(),
            distribution_name(cell.workload, distribution).unwrap_or_else(|| "-".into()),
            cell.concurrency.to_string(),
            cell.ops.to_string(),
            format!("{:.0}", cell.ops_per_sec()),
            l.p50.to_string(),
            l.p90.to_string(),
            l.p99.to_string(),
            l.p999.to_string(),
            l.max.to_string(),
            cell.errors.to_string(),
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
    let needs_cluster = args.workload.iter().any(|w| Mix::of(*w).is_some());
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

/// What every worker of a key/value cell shares.
struct Shared {
    client: Arc<Client>,
    server: String,
    value: Value,
    keys: Arc<KeyChooser>,
}

async fn bench_cells(
    cluster: Option<&LocalCluster>,
    args: &BenchArgs,
    stop: Stop,
    out: Output,
) -> Result<Vec<CellResult>> {
    let show_progress = !out.json && std::io::stderr().is_terminal();
    let shared = match cluster {
        Some(cluster) => {
            let client = Arc::new(cluster.client(10_000));
            let server = cluster.servers[0].addr.clone();
            let value = Value::Text("x".repeat(args.value_bytes));
            out.progress(format!("preloading {} keys", args.keys));
            // Preload every key both ways so gets and getrs find values.
            for key in 0..args.keys {
                let key = format!("key-{key}");
                client.set(&server, &key, value.clone()).await?;
                client.setr(&key, value.clone()).await?;
            }
            let keys = Arc::new(KeyChooser::new(args.distribution, args.keys));
            Some(Shared {
                client,
                server,
                value,
                keys,
            })
        }
        None => None,
    };
    if !out.json {
        println!("{}", table_row(TABLE_HEADER.map(String::from)));
    }
    let mut results = Vec::new();
    let mut cell_index = 0u64;
    for &workload in &args.workload {
        if workload == Workload::Rebalance {
            continue;
        }
        if workload == Workload::Probe {
            let cell = run_probe(args.warmup_ops, stop, show_progress).await?;
            print_cell(out, &cell, args.distribution);
            results.push(cell);
            continue;
        }
        let (Some(mix), Some(shared)) = (Mix::of(workload), shared.as_ref()) else {
            continue;
        };
        for &concurrency in &args.concurrency {
            cell_index += 1;
            let seed = args
                .seed
                .wrapping_add(cell_index.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let cell = CellPlan {
                mix,
                concurrency,
                seed,
            };
            if args.warmup_ops > 0 {
                let label = format!("warm-up {} c={concurrency}", workload.name());
                run_phase(
                    shared,
                    &cell,
                    Stop::Ops(args.warmup_ops),
                    false,
                    label,
                    show_progress,
                )
                .await?;
            }
            let label = format!("{} c={concurrency}", workload.name());
            let (histogram, errors, elapsed) =
                run_phase(shared, &cell, stop, true, label, show_progress).await?;
            let cell = CellResult {
                workload,
                concurrency,
                ops: histogram.len(),
                errors,
                elapsed,
                latency_us: Percentiles::of(&histogram),
            };
            print_cell(out, &cell, args.distribution);
            results.push(cell);
        }
    }
    Ok(results)
}

/// One key/value cell to run.
struct CellPlan {
    mix: Mix,
    concurrency: usize,
    seed: u64,
}

pub(crate) fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
        .map_err(|err| Error::Internal(format!("histogram: {err}")))
}

/// Runs `cell.concurrency` closed-loop workers until `stop`; returns the merged latency
/// histogram (empty unless `measure`), the error count and the elapsed time.
async fn run_phase(
    shared: &Shared,
    cell: &CellPlan,
    stop: Stop,
    measure: bool,
    label: String,
    show_progress: bool,
) -> Result<(Histogram<u64>, u64, Duration)> {
    let issued = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(show_progress, label, stop, completed.clone());
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(cell.concurrency);
    for worker in 0..cell.concurrency {
        let client = shared.client.clone();
        let server = shared.server.clone();
        let value = shared.value.clone();
        let keys = shared.keys.clone();
        let (issued, completed, errors) = (issued.clone(), completed.clone(), errors.clone());
        let mix = cell.mix;
        // Warm-up and measured phases draw from different streams.
        let seed = cell
            .seed
            .wrapping_add((worker as u64) << 1)
            .wrapping_add(u64::from(measure));
        tasks.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut histogram = new_histogram()?;
            while stop.more(issued.fetch_add(1, Ordering::Relaxed), began) {
                let key = format!("key-{}", keys.next(&mut rng));
                let op = mix.choose(&mut rng);
                let begun = Instant::now();
                let outcome = match op {
                    Op::Set => client.set(&server, &key, value.clone()).await.map(|_| ()),
                    Op::Get => client.get(&server, &key).await.map(|_| ()),
                    Op::Setr => client.setr(&key, value.clone()).await.map(|_| ()),
                    Op::Getr => client.getr(&key).await.map(|_| ()),
                };
                if outcome.is_err() {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                if measure {
                    let micros = (begun.elapsed().as_micros().max(1) as u64).min(HISTOGRAM_MAX_US);
                    let _ = histogram.record(micros);
                }
                completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, Error>(histogram)
        }));
    }
    let mut merged = new_histogram()?;
    let mut failure = None;
    for task in tasks {
        match task.await {
            Ok(Ok(histogram)) => {
                if let Err(err) = merged.add(histogram) {
                    failure.get_or_insert(Error::Internal(format!("histogram: {err}")));
                }
            }
            Ok(Err(err)) => {
                failure.get_or_insert(err);
            }
            Err(err) => {
                failure.get_or_insert(Error::Internal(format!("bench task died: {err}")));
            }
        }
    }
    let elapsed = began.elapsed();
    if let Some(progress) = progress {
        progress.finish();
    }
    match failure {
        Some(err) => Err(err),
        None => Ok((merged, errors.load(Ordering::Relaxed), elapsed)),
    }
}

async fn run_probe(warmup: u64, stop: Stop, show_progress: bool) -> Result<CellResult> {
    let completed = Arc::new(AtomicU64::new(0));
    let progress = Progress::start(show_progress, "probe c=1".into(), stop, completed.clone());
    let outcome = probe::run(warmup, stop, completed).await;
    if let Some(progress) = progress {
        progress.finish();
    }
    let (histogram, errors, elapsed) = outcome?;
    Ok(CellResult {
        workload: Workload::Probe,
        concurrency: 1,
        ops: histogram.len(),
        errors,
        elapsed,
        latency_us: Percentiles::of(&histogram),
    })
}

/// A progress bar on stderr, refreshed by a ticker task from the cell's completed count (or
/// the clock, with `--duration-s`).
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(enabled: bool, label: String, stop: Stop, completed: Arc<AtomicU64>) -> Option<Self> {
        if !enabled {
            return None;
        }
        let (length, template) = match stop {
            Stop::Ops(ops) => (ops, "{msg:>18} [{bar:40}] {pos}/{len} ops (eta {eta})"),
            Stop::For(duration) => (duration.as_secs(), "{msg:>18} [{bar:40}] {pos}/{len} s"),
        };
        let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label);
        let began = Instant::now();
        let ticking = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                let position = match stop {
                    Stop::Ops(ops) => completed.load(Ordering::Relaxed).min(ops),
                    Stop::For(duration) => began.elapsed().min(duration).as_secs(),
                };
                ticking.set_position(position);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Some(Progress { bar, ticker })
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

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

    #[test]
    fn bench_stop_counts_ops_or_time() {
        let now = Instant::now();
        assert!(Stop::Ops(2).more(1, now));
        assert!(!Stop::Ops(2).more(2, now));
        assert!(Stop::For(Duration::from_secs(60)).more(u64::MAX, now));
        assert!(!Stop::For(Duration::ZERO).more(0, now));
    }

    #[test]
    fn bench_percentiles_and_json_line() {
        let mut histogram = new_histogram().unwrap();
        for us in 1..=1_000u64 {
            histogram.record(us).unwrap();
        }
        let p = Percentiles::of(&histogram);
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
        assert!((499..=501).contains(&p.p50), "{p:?}");
        assert!((998..=1_001).contains(&p.max), "{p:?}");
        let cell = CellResult {
            workload: Workload::YcsbB,
            concurrency: 16,
            ops: 1_000,
            errors: 0,
            elapsed: Duration::from_secs(1),
            latency_us: p,
        };
        let line = cell.json(Distribution::Zipfian);
        assert_eq!(line["workload"], "ycsb-b");
        assert_eq!(line["distribution"], "zipfian");
        assert_eq!(line["ops_per_sec"], 1_000.0);
        for key in [
            "p50_us",
            "p90_us",
            "p99_us",
            "p999_us",
            "max_us",
            "errors",
            "concurrency",
        ] {
            assert!(line[key].is_u64(), "{key} in {line}");
        }
        let probe = CellResult {
            workload: Workload::Probe,
            ..cell
        };
        assert!(probe.json(Distribution::Zipfian)["distribution"].is_null());
    }

    #[tokio::test]
    async fn bench_probe_echoes_over_loopback() {
        let completed = Arc::new(AtomicU64::new(0));
        let (histogram, errors, _) = probe::run(10, Stop::Ops(200), completed.clone())
            .await
            .unwrap();
        assert_eq!((histogram.len(), errors), (200, 0));
        assert_eq!(completed.load(Ordering::Relaxed), 200);
    }
}
