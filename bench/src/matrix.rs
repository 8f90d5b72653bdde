//! The side-by-side matrix: every workload at every concurrency on every system, `--runs`
//! times, the systems interleaved cell by cell so that whatever else loads the machine falls on
//! all of them alike. Each result is one JSON line (stdout and `--out`), which
//! `ringleader-bench report` turns into BENCHMARKS.md.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, ValueEnum};
use ringleader::client::{Client, ClientOptions};
use ringleader::error::{Error, Result};
use ringleader::tools::bench::ringleader::{Mode, Ringleader};
use ringleader::tools::bench::{
    preload, run_cell, run_probe, validate_common, Cell, CellResult, Distribution, Driver,
    KeySpace, Mix, Stop,
};

use crate::etcd::Etcd;
use crate::redis::Redis;

/// Tasks that preload each store.
pub const PRELOAD_CONCURRENCY: usize = 16;
/// The unmeasured pass over each store before the first run: its length and clients.
pub const WARM_UP_S: u64 = 3;
pub const WARM_UP_CONCURRENCY: usize = 16;
/// Round trips the loopback probe makes per run.
pub const PROBE_OPS: u64 = 20_000;
/// A ringleader call's timeout and its bound on waiting out a conflict or a rebalance.
pub const RINGLEADER_TIMEOUT_MS: u64 = 2_000;
pub const RINGLEADER_WAIT_MS: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum System {
    /// setr and linearizable getr.
    Ringleader,
    /// setr and getr --stale.
    RingleaderStale,
    /// put and linearizable range.
    Etcd,
    /// put and serializable range.
    EtcdSerializable,
    /// SET and GET on one node.
    Redis,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Ringleader => "ringleader",
            System::RingleaderStale => "ringleader-stale",
            System::Etcd => "etcd",
            System::EtcdSerializable => "etcd-serializable",
            System::Redis => "redis",
        }
    }

    /// The stale and serializable variants differ from their stores only in reads.
    fn is_read_variant(self) -> bool {
        matches!(self, System::RingleaderStale | System::EtcdSerializable)
    }
}

#[derive(Args, Debug)]
pub struct MatrixArgs {
    /// ringleader's view leader, host:port.
    #[arg(long)]
    pub viewleader: Option<String>,
    /// etcd client endpoints, comma-separated (http://127.0.0.1:PORT).
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Redis, host:port.
    #[arg(long)]
    pub redis: Option<String>,
    /// Systems to measure (each needs its address flag).
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = vec![System::Ringleader, System::RingleaderStale, System::Etcd, System::EtcdSerializable, System::Redis])]
    pub systems: Vec<System>,
    /// Workloads: write-only, read-only and YCSB A/B/C.
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = vec![Mix::Write, Mix::Read, Mix::YcsbA, Mix::YcsbB, Mix::YcsbC])]
    pub mixes: Vec<Mix>,
    /// Key distributions for the YCSB mixes (write-only and read-only use the first).
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = vec![Distribution::Uniform, Distribution::Zipfian])]
    pub distributions: Vec<Distribution>,
    /// Concurrent clients, one cell each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 64])]
    pub concurrency: Vec<usize>,
    /// Runs of the whole matrix (the report takes medians over them).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Seconds each cell is measured.
    #[arg(long, default_value_t = 3)]
    pub duration_s: u64,
    /// Measure each cell for this many operations instead of --duration-s.
    #[arg(long)]
    pub ops: Option<u64>,
    /// Unmeasured operations before each cell.
    #[arg(long, default_value_t = 500)]
    pub warmup_ops: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Connections the etcd and Redis drivers spread requests over.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// Appends every JSON line to this file too.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Tags every line with this section (the report keeps sections apart: `durable` is the
    /// comparison on disk, no section the in-memory matrix).
    #[arg(long)]
    pub section: Option<String>,
}

/// The drivers of one matrix, each connected and preloaded once.
struct Drivers {
    ringleader: Option<Arc<Ringleader>>,
    ringleader_stale: Option<Arc<Ringleader>>,
    etcd: Option<Arc<Etcd>>,
    etcd_serializable: Option<Arc<Etcd>>,
    redis: Option<Arc<Redis>>,
}

fn needs(args: &MatrixArgs, systems: &[System]) -> bool {
    args.systems.iter().any(|s| systems.contains(s))
}

fn missing(flag: &str, system: &str) -> Error {
    Error::InvalidRequest(format!("{flag} is needed to measure {system}"))
}

async fn connect(args: &MatrixArgs, keys: &KeySpace) -> Result<Drivers> {
    let mut drivers = Drivers {
        ringleader: None,
        ringleader_stale: None,
        etcd: None,
        etcd_serializable: None,
        redis: None,
    };
    if needs(args, &[System::Ringleader, System::RingleaderStale]) {
        let viewleader = args
            .viewleader
            .clone()
            .ok_or_else(|| missing("--viewleader", "ringleader"))?;
        let client = Arc::new(Client::new(ClientOptions {
            viewleader,
            timeout_ms: RINGLEADER_TIMEOUT_MS,
            wait_ms: RINGLEADER_WAIT_MS,
        }));
        let linearizable = Arc::new(Ringleader::new(client.clone(), Mode::Replicated));
        eprintln!("preloading {} keys into ringleader", args.keys);
        preload(&linearizable, args.keys, &keys.value, PRELOAD_CONCURRENCY).await?;
        drivers.ringleader = Some(linearizable);
        drivers.ringleader_stale = Some(Arc::new(Ringleader::new(client, Mode::ReplicatedStale)));
    }
    if needs(args, &[System::Etcd, System::EtcdSerializable]) {
        if args.etcd.is_empty() {
            return Err(missing("--etcd", "etcd"));
        }
        let linearizable = Arc::new(Etcd::connect(&args.etcd, args.connections, false).await?);
        eprintln!("preloading {} keys into etcd", args.keys);
        preload(&linearizable, args.keys, &keys.value, PRELOAD_CONCURRENCY).await?;
        drivers.etcd = Some(linearizable);
        drivers.etcd_serializable = Some(Arc::new(
            Etcd::connect(&args.etcd, args.connections, true).await?,
        ));
    }
    if needs(args, &[System::Redis]) {
        let addr = args
            .redis
            .clone()
            .ok_or_else(|| missing("--redis", "Redis"))?;
        let redis = Arc::new(Redis::connect(&addr, args.connections).await?);
        eprintln!("preloading {} keys into Redis", args.keys);
        preload(&redis, args.keys, &keys.value, PRELOAD_CONCURRENCY).await?;
        drivers.redis = Some(redis);
    }
    Ok(drivers)
}

/// Where the JSON lines go.
struct Sink {
    file: Option<std::fs::File>,
    section: Option<String>,
}

impl Sink {
    fn emit(&mut self, mut line: serde_json::Value, run: u32) -> Result<()> {
        line["run"] = run.into();
        if let Some(section) = &self.section {
            line["section"] = section.as_str().into();
        }
        println!("{line}");
        if let Some(file) = &mut self.file {
            writeln!(file, "{line}")
                .map_err(|err| Error::Internal(format!("writing results: {err}")))?;
        }
        Ok(())
    }
}

pub async fn run(args: MatrixArgs) -> Result<()> {
    let stop = match args.ops {
        Some(ops) => Stop::from_flags(ops, None)?,
        None => Stop::from_flags(1, Some(args.duration_s))?,
    };
    let show_progress = std::io::stderr().is_terminal();
    validate_common(
        &args.concurrency,
        args.warmup_ops,
        args.keys,
        args.value_bytes,
    )?;
    if args.runs == 0 || args.distributions.is_empty() {
        return Err(Error::InvalidRequest(
            "--runs and --distributions must not be empty".into(),
        ));
    }
    let file = match &args.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| Error::InvalidRequest(format!("--out {}: {err}", path.display())))?,
        ),
        None => None,
    };
    let mut sink = Sink {
        file,
        section: args.section.clone(),
    };
    // Key choice differs per distribution, the stores and values do not: one key space each.
    let spaces: Vec<(Distribution, KeySpace)> = args
        .distributions
        .iter()
        .map(|d| (*d, KeySpace::new(*d, args.keys, args.value_bytes)))
        .collect();
    let drivers = connect(&args, &spaces[0].1).await?;
    // The first cells after start-up and preload ran slow for every system alike (caches, the
    // stores' own background work settling): an unmeasured pass over each store first.
    let warm = Cell {
        mix: Mix::YcsbA,
        concurrency: WARM_UP_CONCURRENCY,
        stop: Stop::For(std::time::Duration::from_secs(WARM_UP_S)),
        warmup_ops: 0,
        seed: args.seed,
    };
    eprintln!("warming up every store for {WARM_UP_S} s");
    let keys = &spaces[0].1;
    if let Some(driver) = &drivers.ringleader {
        run_cell(driver, keys, &warm, None).await?;
    }
    if let Some(driver) = &drivers.etcd {
        run_cell(driver, keys, &warm, None).await?;
    }
    if let Some(driver) = &drivers.redis {
        run_cell(driver, keys, &warm, None).await?;
    }
    let mut cell_index = 0u64;
    for run in 1..=args.runs {
        let probe = run_probe(1_000, Stop::Ops(PROBE_OPS), None).await?;
        sink.emit(
            CellResult {
                system: "loopback".into(),
                workload: "probe".into(),
                distribution: None,
                concurrency: 1,
                measured: probe,
            }
            .json(),
            run,
        )?;
        for &mix in &args.mixes {
            // Pure writes and pure reads are measured on the first distribution only.
            let distributions = match mix {
                Mix::Write | Mix::Read => &spaces[..1],
                _ => &spaces[..],
            };
            for (distribution, keys) in distributions {
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
                    for &system in &args.systems {
                        if mix == Mix::Write && system.is_read_variant() {
                            continue;
                        }
                        let label = format!(
                            "run {run} {} {} {} c={concurrency}",
                            system.name(),
                            mix.name(),
                            distribution.name()
                        );
                        // A bar on a terminal, a line per cell in a log.
                        let label = if show_progress {
                            Some(label.as_str())
                        } else {
                            eprintln!("{label}");
                            None
                        };
                        let measured = match system {
                            System::Ringleader => {
                                measure(&drivers.ringleader, keys, &cell, label).await?
                            }
                            System::RingleaderStale => {
                                measure(&drivers.ringleader_stale, keys, &cell, label).await?
                            }
                            System::Etcd => measure(&drivers.etcd, keys, &cell, label).await?,
                            System::EtcdSerializable => {
                                measure(&drivers.etcd_serializable, keys, &cell, label).await?
                            }
                            System::Redis => measure(&drivers.redis, keys, &cell, label).await?,
                        };
                        let result = CellResult {
                            system: system.name().into(),
                            workload: mix.name().into(),
                            distribution: Some(*distribution),
                            concurrency,
                            measured,
                        };
                        sink.emit(result.json(), run)?;
                    }
                }
            }
        }
    }
    Ok(())
}

async fn measure<D: Driver>(
    driver: &Option<Arc<D>>,
    keys: &KeySpace,
    cell: &Cell,
    label: Option<&str>,
) -> Result<ringleader::tools::bench::Measured> {
    let driver = driver
        .as_ref()
        .ok_or_else(|| Error::Internal("a system was measured without its driver".into()))?;
    run_cell(driver, keys, cell, label).await
}
