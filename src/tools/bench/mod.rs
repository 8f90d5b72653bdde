//! The load generator: closed-loop workers drive a [`Driver`] with a key/value workload and
//! measure every operation. `client bench` ([`command`], its flags in [`args`]; [`rebalance`] for
//! its rebalancing workload) uses it on an in-process ringleader cluster; the side-by-side
//! benchmark (`bench/`, `scripts/bench.sh`) uses the same code on ringleader, etcd and Redis, so
//! the three are measured by one code path and differ only in their driver.
//!
//! A cell is one workload at one concurrency: that many tasks, each issuing its next operation
//! the moment the last one answered, for a number of operations or a duration (after unmeasured
//! warm-up operations). Keys are chosen uniformly or zipfian from a seeded RNG; latencies go
//! into HDR histograms (µs, three significant digits) merged at the end of the cell.
//!
//! Deliberately left out: open-loop (fixed arrival rate) load, which would show queueing that a
//! closed loop hides; coordinated-omission correction; multiple load-generator machines.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

pub mod args;
pub mod command;
pub mod probe;
pub mod rebalance;
pub mod report;
pub mod ringleader;
pub mod workload;

pub use workload::{Distribution, KeyChooser, Mix, Op, Zipfian};

use crate::errinput;
use crate::error::{Error, Result};

/// Operations one cell may run at most.
pub const BENCH_OPS_MAX: u64 = 10_000_000;
/// Concurrent tasks one cell may run at most.
pub const BENCH_CONCURRENCY_MAX: usize = 4096;
/// Longest one cell may run with a duration.
pub const BENCH_DURATION_S_MAX: u64 = 3_600;
/// Largest latency the histograms hold (µs); longer ones are clamped into it.
pub const HISTOGRAM_MAX_US: u64 = 60_000_000;
/// Keys a benchmark may preload at most.
pub const BENCH_KEYS_MAX: u64 = 100_000_000;
/// Bytes per value at most.
pub const BENCH_VALUE_BYTES_MAX: usize = 1 << 20;
/// Longest one operation may take before it counts as an error (and the worker moves on).
pub const OP_TIMEOUT_MS: u64 = 10_000;
/// How often the progress bar is redrawn.
pub const PROGRESS_TICK_MS: u64 = 100;

/// A store the load generator can drive. `write` is the store's replicated write (ringleader's
/// `setr`, etcd's put, Redis's SET); `read` its read in the chosen consistency, answering whether
/// the key was found (a preloaded key that is missing counts as an error).
pub trait Driver: Send + Sync + 'static {
    fn write(&self, key: &str, value: &str) -> impl Future<Output = Result<()>> + Send;
    fn read(&self, key: &str) -> impl Future<Output = Result<bool>> + Send;
}

/// The name of key number `i`, the same for every store.
pub fn key_name(i: u64) -> String {
    format!("key-{i}")
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

    /// `--ops` or `--duration-s`, checked against their bounds.
    pub fn from_flags(ops: u64, duration_s: Option<u64>) -> Result<Stop> {
        if ops == 0 || ops > BENCH_OPS_MAX {
            return Err(errinput!("--ops must be 1 to {BENCH_OPS_MAX}"));
        }
        match duration_s {
            None => Ok(Stop::Ops(ops)),
            Some(s) if s == 0 || s > BENCH_DURATION_S_MAX => Err(errinput!(
                "--duration-s must be 1 to {BENCH_DURATION_S_MAX}"
            )),
            Some(s) => Ok(Stop::For(Duration::from_secs(s))),
        }
    }
}

/// Checks the flags every benchmark shares.
pub fn validate_common(
    concurrency: &[usize],
    warmup_ops: u64,
    keys: u64,
    value_bytes: usize,
) -> Result<()> {
    if warmup_ops > BENCH_OPS_MAX {
        return Err(errinput!("--warmup-ops must be 0 to {BENCH_OPS_MAX}"));
    }
    if concurrency
        .iter()
        .any(|&c| c == 0 || c > BENCH_CONCURRENCY_MAX)
    {
        return Err(errinput!(
            "--concurrency must be 1 to {BENCH_CONCURRENCY_MAX}"
        ));
    }
    if keys == 0 || keys > BENCH_KEYS_MAX {
        return Err(errinput!("--keys must be 1 to {BENCH_KEYS_MAX}"));
    }
    if value_bytes > BENCH_VALUE_BYTES_MAX {
        return Err(errinput!(
            "--value-bytes must be 0 to {BENCH_VALUE_BYTES_MAX}"
        ));
    }
    Ok(())
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

/// What one cell measured.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Operations that succeeded (the latencies and ops/s are theirs alone).
    pub ops: u64,
    /// Operations that failed, timed out or missed a preloaded key.
    pub errors: u64,
    pub elapsed: Duration,
    pub latency_us: Percentiles,
}

impl Measured {
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// One measured cell, labelled.
#[derive(Clone, Debug)]
pub struct CellResult {
    /// Which store and driver mode ("ringleader", "etcd", "etcd-serializable", "redis", ...).
    pub system: String,
    pub workload: String,
    /// `None` for cells without keys (the probe).
    pub distribution: Option<Distribution>,
    pub concurrency: usize,
    pub measured: Measured,
}

impl CellResult {
    /// The cell as one JSON line (the format `report` reads back).
    pub fn json(&self) -> serde_json::Value {
        let m = &self.measured;
        let l = &m.latency_us;
        json!({"system": self.system, "workload": self.workload,
               "distribution": self.distribution.map(|d| d.name()),
               "concurrency": self.concurrency, "ops": m.ops,
               "ops_per_sec": m.ops_per_sec().round(), "elapsed_ms": m.elapsed.as_millis() as u64,
               "p50_us": l.p50, "p90_us": l.p90, "p99_us": l.p99, "p999_us": l.p999, "max_us": l.max,
               "errors": m.errors})
    }
}

/// One key/value cell to run.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub mix: Mix,
    pub concurrency: usize,
    pub stop: Stop,
    pub warmup_ops: u64,
    pub seed: u64,
}

impl Cell {
    /// Cell number `index` of a run seeded with `seed`: every cell draws its own stream, the
    /// same one each time the run is repeated with that seed.
    pub fn numbered(
        mix: Mix,
        concurrency: usize,
        stop: Stop,
        warmup_ops: u64,
        seed: u64,
        index: u64,
    ) -> Self {
        Cell {
            mix,
            concurrency,
            stop,
            warmup_ops,
            seed: seed.wrapping_add(index.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        }
    }
}

/// The keys and the value every worker of a cell shares.
#[derive(Clone, Debug)]
pub struct KeySpace {
    pub chooser: Arc<KeyChooser>,
    pub value: Arc<str>,
}

impl KeySpace {
    pub fn new(distribution: Distribution, keys: u64, value_bytes: usize) -> Self {
        KeySpace {
            chooser: Arc::new(KeyChooser::new(distribution, keys)),
            value: "x".repeat(value_bytes).into(),
        }
    }
}

pub fn new_histogram() -> Result<Histogram<u64>> {
    Histogram::<u64>::new_with_bounds(1, HISTOGRAM_MAX_US, 3)
        .map_err(|err| Error::Internal(format!("histogram: {err}")))
}

/// Writes keys `0..keys` once each from `concurrency` tasks, so reads find them.
pub async fn preload<D: Driver>(
    driver: &Arc<D>,
    keys: u64,
    value: &Arc<str>,
    concurrency: usize,
) -> Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency.max(1) {
        let (driver, next, value) = (driver.clone(), next.clone(), value.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= keys {
                    return Ok::<_, Error>(());
                }
                let key = key_name(i);
                driver
                    .write(&key, &value)
                    .await
                    .map_err(|err| Error::Internal(format!("preloading {key}: {err}")))?;
            }
        }));
    }
    for task in tasks {
        task.await
            .map_err(|err| Error::Internal(format!("preload task died: {err}")))??;
    }
    Ok(())
}

/// Runs `cell` against `driver`: its warm-up, then the measured phase. `label` names the
/// progress bar; `None` draws none.
pub async fn run_cell<D: Driver>(
    driver: &Arc<D>,
    keys: &KeySpace,
    cell: &Cell,
    label: Option<&str>,
) -> Result<Measured> {
    if cell.warmup_ops > 0 {
        let warmup_label = label.map(|l| format!("warm-up {l}"));
        run_phase(
            driver,
            keys,
            cell,
            Stop::Ops(cell.warmup_ops),
            false,
            warmup_label,
        )
        .await?;
    }
    let (histogram, errors, elapsed) = run_phase(
        driver,
        keys,
        cell,
        cell.stop,
        true,
        label.map(str::to_string),
    )
    .await?;
    Ok(Measured {
        ops: histogram.len(),
        errors,
        elapsed,
        latency_us: Percentiles::of(&histogram),
    })
}

/// Runs `cell.concurrency` closed-loop workers until `stop`; returns the merged latency
/// histogram (empty unless `measure`), the error count and the elapsed time.
async fn run_phase<D: Driver>(
    driver: &Arc<D>,
    keys: &KeySpace,
    cell: &Cell,
    stop: Stop,
    measure: bool,
    label: Option<String>,
) -> Result<(Histogram<u64>, u64, Duration)> {
    let issued = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let progress = label.map(|label| Progress::start(label, stop, completed.clone()));
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(cell.concurrency);
    for worker in 0..cell.concurrency {
        let driver = driver.clone();
        let keys = keys.clone();
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
                let key = key_name(keys.chooser.next(&mut rng));
                let op = mix.choose(&mut rng);
                let begun = Instant::now();
                let bound = Duration::from_millis(OP_TIMEOUT_MS);
                let ok = match op {
                    Op::Write => matches!(
                        tokio::time::timeout(bound, driver.write(&key, &keys.value)).await,
                        Ok(Ok(()))
                    ),
                    Op::Read => matches!(
                        tokio::time::timeout(bound, driver.read(&key)).await,
                        Ok(Ok(true))
                    ),
                };
                // A failure is counted, never timed: a store that fails fast must not look fast.
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                } else if measure {
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

/// Runs the loopback probe as a cell.
pub async fn run_probe(warmup: u64, stop: Stop, label: Option<&str>) -> Result<Measured> {
    let completed = Arc::new(AtomicU64::new(0));
    let progress = label.map(|l| Progress::start(l.to_string(), stop, completed.clone()));
    let outcome = probe::run(warmup, stop, completed).await;
    if let Some(progress) = progress {
        progress.finish();
    }
    let (histogram, errors, elapsed) = outcome?;
    Ok(Measured {
        ops: histogram.len(),
        errors,
        elapsed,
        latency_us: Percentiles::of(&histogram),
    })
}

/// A progress bar on stderr, refreshed by a ticker task from the cell's completed count (or
/// the clock, with a duration).
struct Progress {
    bar: ProgressBar,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(label: String, stop: Stop, completed: Arc<AtomicU64>) -> Self {
        let (length, template) = match stop {
            Stop::Ops(ops) => (ops, "{msg:>24} [{bar:40}] {pos}/{len} ops (eta {eta})"),
            Stop::For(duration) => (duration.as_secs(), "{msg:>24} [{bar:40}] {pos}/{len} s"),
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
                tokio::time::sleep(Duration::from_millis(PROGRESS_TICK_MS)).await;
            }
        });
        Progress { bar, ticker }
    }

    fn finish(self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests;
