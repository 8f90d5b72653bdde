//! The engine micro-benchmark behind the choice in docs/storage.md ("Why this and not redb"):
//! N concurrent writers, each putting 100-byte values and waiting until its put is durable,
//! against ringleader's log engine and against redb, on the same disk, with the same load
//! generator as the matrix (one closed-loop cell per engine and concurrency).
//!
//! The engines:
//! * `log-batch`: [`Log`] over [`RealDisk`] with `--fsync batch`, held in a mutex as the server
//!   holds it; a writer appends under the lock, lets go, and waits on the group commit
//!   ([`ringleader::storage::Durability::wait`]) for a sync that covers its record.
//! * `log-always`: the same with `--fsync always`: each record synced under the lock.
//! * `redb`: one write transaction and a durable commit per put (redb has one writer at a time,
//!   so concurrent writers queue for it).
//! * `redb-batched`: the writers hand their puts to one committer thread, which puts everything
//!   waiting into one transaction and commits it: group commit built around redb.
//!
//! Next to them, a probe of the disk itself: append 128 bytes and `fdatasync`, one at a time.
//! Each cell starts on a fresh directory. One JSON line per cell and per probe.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use clap::{Args, ValueEnum};
use redb::{Database, TableDefinition};
use ringleader::error::{Error, Result};
use ringleader::storage::{Disk, Engine as _, FsyncMode, Log, LogOptions, RealDisk};
use ringleader::tools::bench::{
    new_histogram, run_cell, Cell, Distribution, Driver, KeySpace, Mix, Percentiles, Stop,
};
use ringleader::types::{Value, Versioned};
use serde_json::json;
use tokio::sync::oneshot;

/// redb's table of the benchmark.
const TABLE: TableDefinition<&str, &str> = TableDefinition::new("kv");
/// Bytes each probe write appends before its sync.
pub const PROBE_WRITE_BYTES: usize = 128;
/// Puts one redb-batched commit takes at most (the rest wait for the next).
pub const REDB_BATCH_MAX: usize = 4_096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineKind {
    LogBatch,
    LogAlways,
    Redb,
    RedbBatched,
}

impl EngineKind {
    fn name(self) -> &'static str {
        match self {
            EngineKind::LogBatch => "log-batch",
            EngineKind::LogAlways => "log-always",
            EngineKind::Redb => "redb",
            EngineKind::RedbBatched => "redb-batched",
        }
    }
}

#[derive(Args, Debug)]
pub struct EnginesArgs {
    /// A directory on the disk to measure (each cell uses a fresh directory under it).
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, value_enum, value_delimiter = ',',
          default_values_t = vec![EngineKind::LogBatch, EngineKind::LogAlways, EngineKind::Redb, EngineKind::RedbBatched])]
    pub engines: Vec<EngineKind>,
    /// Concurrent writers, one cell each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 64])]
    pub concurrency: Vec<usize>,
    /// Runs of every cell (the report takes medians).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Seconds each cell is measured.
    #[arg(long, default_value_t = 3)]
    pub duration_s: u64,
    /// Unmeasured puts before each cell.
    #[arg(long, default_value_t = 200)]
    pub warmup_ops: u64,
    /// Distinct keys the puts go to (uniformly).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Syncs the disk probe makes per run.
    #[arg(long, default_value_t = 1_000)]
    pub probe_syncs: u64,
    /// Appends every JSON line to this file too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The log engine as the server holds it: behind a mutex, its syncs shared by the waiters.
struct LogDriver {
    log: Mutex<Log>,
    version: AtomicU64,
}

impl Driver for LogDriver {
    async fn write(&self, key: &str, value: &str) -> Result<()> {
        let (durability, lsn) = {
            let mut log = self
                .log
                .lock()
                .map_err(|_| Error::Internal("the log's lock is poisoned".into()))?;
            let versioned = Versioned {
                value: Value::Text(value.to_string()),
                version: self.version.fetch_add(1, Ordering::Relaxed),
            };
            log.put_if_newer(key.to_string(), versioned)?;
            (log.durability(), log.written())
        };
        durability.wait(lsn).await
    }

    async fn read(&self, _key: &str) -> Result<bool> {
        Err(Error::Internal("the engine benchmark only writes".into()))
    }
}

fn redb_error(err: impl std::fmt::Display) -> Error {
    Error::Internal(format!("redb: {err}"))
}

/// redb with a transaction and a durable commit per put.
struct RedbDriver {
    db: Arc<Database>,
}

impl Driver for RedbDriver {
    async fn write(&self, key: &str, value: &str) -> Result<()> {
        let (db, key, value) = (self.db.clone(), key.to_string(), value.to_string());
        tokio::task::spawn_blocking(move || {
            let txn = db.begin_write().map_err(redb_error)?;
            {
                let mut table = txn.open_table(TABLE).map_err(redb_error)?;
                table
                    .insert(key.as_str(), value.as_str())
                    .map_err(redb_error)?;
            }
            txn.commit().map_err(redb_error)
        })
        .await
        .map_err(|err| Error::Internal(format!("redb writer died: {err}")))?
    }

    async fn read(&self, _key: &str) -> Result<bool> {
        Err(Error::Internal("the engine benchmark only writes".into()))
    }
}

/// A put waiting for the committer, and where its outcome goes.
type Put = (String, String, oneshot::Sender<Result<()>>);

/// redb with group commit: one committer thread puts whatever is waiting into one transaction.
struct RedbBatchedDriver {
    puts: Mutex<Option<mpsc::Sender<Put>>>,
    committer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl RedbBatchedDriver {
    fn start(db: Database) -> Result<Self> {
        let (puts, waiting) = mpsc::channel::<Put>();
        let committer = std::thread::Builder::new()
            .name("redb-committer".into())
            .spawn(move || {
                while let Ok(first) = waiting.recv() {
                    let mut batch = vec![first];
                    while batch.len() < REDB_BATCH_MAX {
                        match waiting.try_recv() {
                            Ok(put) => batch.push(put),
                            Err(_) => break,
                        }
                    }
                    let outcome = (|| {
                        let txn = db.begin_write().map_err(redb_error)?;
                        {
                            let mut table = txn.open_table(TABLE).map_err(redb_error)?;
                            for (key, value, _) in &batch {
                                table
                                    .insert(key.as_str(), value.as_str())
                                    .map_err(redb_error)?;
                            }
                        }
                        txn.commit().map_err(redb_error)
                    })();
                    for (_, _, done) in batch {
                        let _ = done.send(outcome.clone());
                    }
                }
            })
            .map_err(|err| Error::Internal(format!("cannot start the committer: {err}")))?;
        Ok(Self {
            puts: Mutex::new(Some(puts)),
            committer: Mutex::new(Some(committer)),
        })
    }

    /// Stops the committer once the puts queued are done.
    fn stop(&self) {
        if let Ok(mut puts) = self.puts.lock() {
            puts.take();
        }
        if let Some(committer) = self.committer.lock().ok().and_then(|mut c| c.take()) {
            let _ = committer.join();
        }
    }
}

impl Driver for RedbBatchedDriver {
    async fn write(&self, key: &str, value: &str) -> Result<()> {
        let (done, outcome) = oneshot::channel();
        self.puts
            .lock()
            .ok()
            .and_then(|puts| puts.clone())
            .ok_or_else(|| Error::Internal("the committer has stopped".into()))?
            .send((key.to_string(), value.to_string(), done))
            .map_err(|_| Error::Internal("the committer has stopped".into()))?;
        outcome
            .await
            .map_err(|_| Error::Internal("the committer dropped a put".into()))?
    }

    async fn read(&self, _key: &str) -> Result<bool> {
        Err(Error::Internal("the engine benchmark only writes".into()))
    }
}

fn io(path: &Path, err: std::io::Error) -> Error {
    Error::Internal(format!("{}: {err}", path.display()))
}

fn open_log(dir: &Path, fsync: FsyncMode) -> Result<LogDriver> {
    let disk: Arc<dyn Disk> = Arc::new(RealDisk::open(dir).map_err(|err| io(dir, err))?);
    let log = Log::open(
        disk,
        LogOptions {
            fsync,
            ..LogOptions::default()
        },
    )?;
    Ok(LogDriver {
        log: Mutex::new(log),
        version: AtomicU64::new(1),
    })
}

fn open_redb(dir: &Path) -> Result<Database> {
    std::fs::create_dir_all(dir).map_err(|err| io(dir, err))?;
    let db = Database::create(dir.join("bench.redb")).map_err(redb_error)?;
    // The table exists before the first measured put.
    let txn = db.begin_write().map_err(redb_error)?;
    txn.open_table(TABLE).map_err(redb_error)?;
    txn.commit().map_err(redb_error)?;
    Ok(db)
}

/// Bytes the directory's files take (their lengths).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The raw disk: append and `fdatasync`, one at a time.
fn probe(dir: &Path, syncs: u64) -> Result<(Percentiles, f64)> {
    std::fs::create_dir_all(dir).map_err(|err| io(dir, err))?;
    let path = dir.join("probe");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&path)
        .map_err(|err| io(&path, err))?;
    let mut histogram = new_histogram()?;
    let payload = [b'x'; PROBE_WRITE_BYTES];
    let began = Instant::now();
    for _ in 0..syncs {
        let one = Instant::now();
        file.write_all(&payload).map_err(|err| io(&path, err))?;
        file.sync_data().map_err(|err| io(&path, err))?;
        let _ = histogram.record((one.elapsed().as_micros() as u64).max(1));
    }
    let rate = syncs as f64 / began.elapsed().as_secs_f64().max(f64::EPSILON);
    Ok((Percentiles::of(&histogram), rate))
}

fn emit(out: &mut Option<std::fs::File>, line: serde_json::Value) -> Result<()> {
    println!("{line}");
    if let Some(file) = out {
        writeln!(file, "{line}")
            .map_err(|err| Error::Internal(format!("writing results: {err}")))?;
    }
    Ok(())
}

pub async fn run(args: EnginesArgs) -> Result<()> {
    ringleader::tools::bench::validate_common(
        &args.concurrency,
        args.warmup_ops,
        args.keys,
        args.value_bytes,
    )?;
    let stop = Stop::from_flags(1, Some(args.duration_s))?;
    let mut out = match &args.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| io(path, err))?,
        ),
        None => None,
    };
    std::fs::create_dir_all(&args.dir).map_err(|err| io(&args.dir, err))?;
    let keys = KeySpace::new(Distribution::Uniform, args.keys, args.value_bytes);
    let mut cell_index = 0u64;
    for run in 1..=args.runs {
        let probe_dir = args.dir.join(format!("probe-{run}"));
        let (latency, rate) = probe(&probe_dir, args.probe_syncs)?;
        let _ = std::fs::remove_dir_all(&probe_dir);
        emit(
            &mut out,
            json!({"kind": "fsync_probe", "run": run, "syncs": args.probe_syncs,
                   "write_bytes": PROBE_WRITE_BYTES, "syncs_per_sec": rate.round(),
                   "p50_us": latency.p50, "p99_us": latency.p99, "max_us": latency.max}),
        )?;
        for &concurrency in &args.concurrency {
            cell_index += 1;
            let cell = Cell::numbered(
                Mix::Write,
                concurrency,
                stop,
                args.warmup_ops,
                42,
                cell_index,
            );
            for &engine in &args.engines {
                let dir = args
                    .dir
                    .join(format!("{}-c{concurrency}-run{run}", engine.name()));
                let _ = std::fs::remove_dir_all(&dir);
                eprintln!("run {run} {} c={concurrency}", engine.name());
                let measured = match engine {
                    EngineKind::LogBatch => {
                        let driver = Arc::new(open_log(&dir, FsyncMode::Batch)?);
                        run_cell(&driver, &keys, &cell, None).await?
                    }
                    EngineKind::LogAlways => {
                        let driver = Arc::new(open_log(&dir, FsyncMode::Always)?);
                        run_cell(&driver, &keys, &cell, None).await?
                    }
                    EngineKind::Redb => {
                        let driver = Arc::new(RedbDriver {
                            db: Arc::new(open_redb(&dir)?),
                        });
                        run_cell(&driver, &keys, &cell, None).await?
                    }
                    EngineKind::RedbBatched => {
                        let driver = Arc::new(RedbBatchedDriver::start(open_redb(&dir)?)?);
                        let measured = run_cell(&driver, &keys, &cell, None).await;
                        driver.stop();
                        measured?
                    }
                };
                let bytes = dir_bytes(&dir);
                let _ = std::fs::remove_dir_all(&dir);
                let l = measured.latency_us;
                emit(
                    &mut out,
                    json!({"kind": "engine", "engine": engine.name(), "run": run,
                           "concurrency": concurrency, "ops": measured.ops,
                           "ops_per_sec": measured.ops_per_sec().round(),
                           "p50_us": l.p50, "p99_us": l.p99, "max_us": l.max,
                           "errors": measured.errors, "dir_bytes": bytes,
                           "value_bytes": args.value_bytes, "keys": args.keys}),
                )?;
            }
        }
    }
    // The directory was ours only if it is empty now.
    let _ = std::fs::remove_dir(&args.dir);
    Ok(())
}
