//! Restart time and recovery rate of a durable server, and its disk bytes per key.
//!
//! It starts a view leader and `--servers` durable storage servers as processes (the `viewleader`
//! and `server` binaries of `--bin-dir`, each server with its own data dir under `--dir`, default
//! flags: `--fsync batch`), loads `--keys` keys of `--value-bytes` bytes (by `setr`, the way
//! clients write, or by `transfer`, the bulk copies rebalancing makes), measures the first
//! server's data dir, then `--restarts` times kills that server with `SIGKILL` and starts it
//! again on the same data dir and port, timing from the start of the process:
//! * `listening_ms`: its `listening on` line (printed when the port is bound, before the data
//!   dir is opened);
//! * `recovered_ms`: its `recovered N keys from the data dir` line (the log replayed);
//! * `serving_ms`: the first answer to a `get` of a loaded key sent to it.
//!
//! One JSON line per restart (`"kind": "recovery"`), with the data dir's bytes (the files'
//! lengths, and what `du` counts: allocated blocks) split into snapshots and segments.
//! The restarts read the data dir from the page cache (the files were just written): a process
//! crash, not a machine reboot.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use ringleader::client::{Client, ClientOptions};
use ringleader::error::{Error, Result};
use ringleader::ring::Ring;
use ringleader::tools::bench::ringleader::{bulk_load, Mode, Ringleader};
use ringleader::tools::bench::{key_name, preload};
use ringleader::types::Value;
use serde_json::json;

use crate::process::{addr_of, Proc, Stream};

pub use crate::process::LINE_WAIT_MS;
/// A call's timeout while loading and probing.
pub const CALL_TIMEOUT_MS: u64 = 60_000;
/// Pause between two tries to reach a restarted server that refuses connections.
pub const RETRY_MS: u64 = 5;
/// `--compact-bytes-min` with `--no-snapshots`: 1 TiB, more than any run writes.
pub const NO_SNAPSHOT_BYTES: u64 = 1 << 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Load {
    /// Replicated writes (2PC), `--concurrency` at a time: the records clients leave.
    Setr,
    /// Bulk copies straight onto the replicas, as rebalancing sends them.
    Transfer,
}

#[derive(Args, Debug)]
pub struct RecoveryArgs {
    /// Where the `viewleader` and `server` binaries are.
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// A fresh directory on the disk to measure (removed at the end).
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Storage servers; the first is the one restarted.
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    #[arg(long, value_enum, default_value_t = Load::Setr)]
    pub load: Load,
    /// Concurrent writers while loading by setr.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Kill-and-restart cycles on the loaded data dir.
    #[arg(long, default_value_t = 3)]
    pub restarts: u32,
    /// Start the servers with snapshots off (the hidden `--compact-bytes-min`, set beyond any
    /// log this run writes): the data dir is the log alone, and a restart replays all of it.
    #[arg(long)]
    pub no_snapshots: bool,
    /// Appends every JSON line to this file too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The number after `prefix` in `line` (`recovered 123 keys`, `records=456`).
fn number_after(line: &str, prefix: &str) -> Option<u64> {
    let (_, rest) = line.split_once(prefix)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// What a data dir holds on disk.
#[derive(Clone, Copy, Debug, Default)]
struct DirBytes {
    /// The files' lengths.
    apparent: u64,
    /// Allocated blocks, as `du` counts them.
    allocated: u64,
    snapshots: u64,
    snapshot_bytes: u64,
    segments: u64,
    segment_bytes: u64,
}

fn measure_dir(dir: &Path) -> Result<DirBytes> {
    let mut bytes = DirBytes::default();
    let entries = std::fs::read_dir(dir)
        .map_err(|err| Error::Internal(format!("{}: {err}", dir.display())))?;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        bytes.apparent += meta.len();
        bytes.allocated += meta.blocks() * 512;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".snap") {
            bytes.snapshots += 1;
            bytes.snapshot_bytes += meta.len();
        } else if name.ends_with(".log") {
            bytes.segments += 1;
            bytes.segment_bytes += meta.len();
        }
    }
    Ok(bytes)
}

fn server_args(port: u16, viewleader: &str, data_dir: &Path, no_snapshots: bool) -> Vec<String> {
    let mut args = vec![
        "--port".into(),
        port.to_string(),
        "--viewleader".into(),
        viewleader.into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
    ];
    if no_snapshots {
        args.extend(["--compact-bytes-min".into(), NO_SNAPSHOT_BYTES.to_string()]);
    }
    args
}

fn port_of(addr: &str) -> Result<u16> {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| Error::Internal(format!("no port in {addr:?}")))
}

/// Sends one `get` for `key` to `addr` until one is answered; returns when.
async fn first_answer(addr: &str, viewleader: &str, key: &str) -> Result<Instant> {
    let client = Client::new(ClientOptions {
        viewleader: viewleader.into(),
        timeout_ms: CALL_TIMEOUT_MS,
        wait_ms: CALL_TIMEOUT_MS,
    });
    let deadline = Instant::now() + Duration::from_millis(LINE_WAIT_MS);
    loop {
        match client.get(addr, key).await {
            Ok(Some(_)) => return Ok(Instant::now()),
            Ok(None) => {
                return Err(Error::Internal(format!(
                    "the restarted server at {addr} does not hold {key}"
                )))
            }
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => tokio::time::sleep(Duration::from_millis(RETRY_MS)).await,
        }
    }
}

fn ms(from: Instant, to: Instant) -> f64 {
    (to.saturating_duration_since(from).as_micros() as f64 / 1000.0 * 10.0).round() / 10.0
}

pub async fn run(args: RecoveryArgs) -> Result<()> {
    ringleader::tools::bench::validate_common(&[args.concurrency], 0, args.keys, args.value_bytes)?;
    if args.servers == 0 || args.restarts == 0 {
        return Err(Error::InvalidRequest(
            "--servers and --restarts must be above 0".into(),
        ));
    }
    let mut out = match &args.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|err| Error::InvalidRequest(format!("--out {}: {err}", path.display())))?,
        ),
        None => None,
    };
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)
        .map_err(|err| Error::Internal(format!("{}: {err}", args.dir.display())))?;
    let outcome = measure(&args, &mut out).await;
    let _ = std::fs::remove_dir_all(&args.dir);
    outcome
}

async fn measure(args: &RecoveryArgs, out: &mut Option<std::fs::File>) -> Result<()> {
    let mut viewleader = Proc::spawn(
        &args.bin_dir.join("viewleader"),
        &[
            "--port".into(),
            "0".into(),
            "--data-dir".into(),
            args.dir.join("viewleader").display().to_string(),
        ],
    )?;
    let (_, line) = viewleader.wait_line(Stream::Stdout, "listening on").await?;
    let vl_addr = addr_of(&line)?;
    let server_exe = args.bin_dir.join("server");
    let mut servers = Vec::new();
    for i in 0..args.servers {
        let data_dir = args.dir.join(format!("server-{i}"));
        let mut server = Proc::spawn(
            &server_exe,
            &server_args(0, &vl_addr, &data_dir, args.no_snapshots),
        )?;
        let (_, line) = server.wait_line(Stream::Stdout, "listening on").await?;
        let addr = addr_of(&line)?;
        server
            .wait_line(Stream::Stderr, "keys from the data dir")
            .await?;
        servers.push((server, addr, data_dir));
    }
    let client = Arc::new(Client::new(ClientOptions {
        viewleader: vl_addr.clone(),
        timeout_ms: CALL_TIMEOUT_MS,
        wait_ms: CALL_TIMEOUT_MS,
    }));
    let deadline = Instant::now() + Duration::from_millis(LINE_WAIT_MS);
    let view = loop {
        let view = client.query_servers().await?;
        if view.servers.len() == args.servers {
            break view;
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(
                "the servers did not all join the view".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "loading {} keys of {} B by {:?} on {} durable server(s)",
        args.keys, args.value_bytes, args.load, args.servers
    );
    let value: Arc<str> = "x".repeat(args.value_bytes).into();
    let loading = Instant::now();
    match args.load {
        Load::Setr => {
            let driver = Arc::new(Ringleader::new(client.clone(), Mode::Replicated));
            preload(&driver, args.keys, &value, args.concurrency).await?;
        }
        Load::Transfer => {
            let ring = Ring::of_servers(&view.servers);
            let keys: Vec<String> = (0..args.keys).map(key_name).collect();
            bulk_load(
                &client,
                &view,
                &ring,
                &keys,
                &Value::Text(value.to_string()),
            )
            .await?;
        }
    }
    let load_s = loading.elapsed().as_secs_f64();
    eprintln!(
        "loaded in {load_s:.1} s ({:.0} keys/s)",
        args.keys as f64 / load_s
    );
    let (mut server, addr, data_dir) = servers.remove(0);
    let held = client.status(&addr).await?.keys;
    let port = port_of(&addr)?;
    // A key the restarted server holds (with one server, every key).
    let probe_key = key_name(0);
    for restart in 1..=args.restarts {
        let before = measure_dir(&data_dir)?;
        server.kill();
        let mut restarted = Proc::spawn(
            &server_exe,
            &server_args(port, &vl_addr, &data_dir, args.no_snapshots),
        )?;
        let started = restarted.started;
        let (listening, _) = restarted.wait_line(Stream::Stdout, "listening on").await?;
        let (recovered, line) = restarted
            .wait_line(Stream::Stderr, "keys from the data dir")
            .await?;
        let serving = first_answer(&addr, &vl_addr, &probe_key).await?;
        let recovered_keys = number_after(&line, "recovered ").unwrap_or(0);
        let records = number_after(&line, "records=");
        let recovered_s = recovered.saturating_duration_since(started).as_secs_f64();
        let line = json!({
            "kind": "recovery", "run": restart, "load": format!("{:?}", args.load).to_lowercase(),
            "snapshots_on": !args.no_snapshots,
            "keys_loaded": args.keys, "value_bytes": args.value_bytes, "servers": args.servers,
            "keys_held": held, "load_s": (load_s * 10.0).round() / 10.0,
            "listening_ms": ms(started, listening), "recovered_ms": ms(started, recovered),
            "serving_ms": ms(started, serving), "recovered_keys": recovered_keys,
            "records": records,
            "keys_per_sec": (recovered_keys as f64 / recovered_s.max(f64::EPSILON)).round(),
            "data_bytes": before.apparent, "data_allocated_bytes": before.allocated,
            "snapshots": before.snapshots, "snapshot_bytes": before.snapshot_bytes,
            "segments": before.segments, "segment_bytes": before.segment_bytes,
            "bytes_per_key": (before.apparent as f64 / held.max(1) as f64).round(),
        });
        println!("{line}");
        if let Some(file) = out {
            use std::io::Write as _;
            writeln!(file, "{line}")
                .map_err(|err| Error::Internal(format!("writing results: {err}")))?;
        }
        server = restarted;
    }
    drop(server);
    drop(servers);
    drop(viewleader);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_numbers_of_the_recovered_line() {
        let line = "2026-11-29T23:00:00Z  INFO ringleader::server: recovered 1000000 keys from \
                    the data dir keys=1000000 records=3000012 segments=3 snapshot=none";
        assert_eq!(number_after(line, "recovered "), Some(1_000_000));
        assert_eq!(number_after(line, "records="), Some(3_000_012));
        assert_eq!(number_after(line, "torn_tails="), None);
        assert_eq!(
            addr_of("listening on 127.0.0.1:4000").unwrap(),
            "127.0.0.1:4000"
        );
    }
}
