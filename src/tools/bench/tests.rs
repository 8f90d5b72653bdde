use std::collections::HashMap;
use std::sync::Mutex;

use super::report::{self, Machine};
use super::*;

/// A store in a hash map that counts what it was asked: enough to prove the engine issues the
/// mix, counts misses and failures, and stops where it should.
#[derive(Default)]
struct MapStore {
    data: Mutex<HashMap<String, String>>,
    reads: AtomicU64,
    writes: AtomicU64,
    /// Writes to this key fail.
    failing_key: Option<String>,
}

impl Driver for MapStore {
    async fn write(&self, key: &str, value: &str) -> Result<()> {
        self.writes.fetch_add(1, Ordering::Relaxed);
        if self.failing_key.as_deref() == Some(key) {
            return Err(Error::Refused(format!("{key} is read-only")));
        }
        if let Ok(mut data) = self.data.lock() {
            data.insert(key.to_string(), value.to_string());
        }
        Ok(())
    }

    async fn read(&self, key: &str) -> Result<bool> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .data
            .lock()
            .map(|d| d.contains_key(key))
            .unwrap_or(false))
    }
}

fn cell(mix: Mix, concurrency: usize, ops: u64) -> Cell {
    Cell {
        mix,
        concurrency,
        stop: Stop::Ops(ops),
        warmup_ops: 0,
        seed: 5,
    }
}

#[test]
fn stop_counts_ops_or_time() {
    let now = Instant::now();
    assert!(Stop::Ops(2).more(1, now));
    assert!(!Stop::Ops(2).more(2, now));
    assert!(Stop::For(Duration::from_secs(60)).more(u64::MAX, now));
    assert!(!Stop::For(Duration::ZERO).more(0, now));
    assert!(Stop::from_flags(0, None).is_err());
    assert!(Stop::from_flags(1, Some(0)).is_err());
    assert_eq!(
        Stop::from_flags(10, Some(2)).unwrap(),
        Stop::For(Duration::from_secs(2))
    );
}

#[test]
fn validate_common_names_the_bad_flag() {
    let err = validate_common(&[1, 0], 0, 10, 10).unwrap_err();
    assert!(err.to_string().contains("--concurrency"), "{err}");
    let err = validate_common(&[1], 0, 0, 10).unwrap_err();
    assert!(err.to_string().contains("--keys"), "{err}");
    let err = validate_common(&[1], 0, 10, BENCH_VALUE_BYTES_MAX + 1).unwrap_err();
    assert!(err.to_string().contains("--value-bytes"), "{err}");
    let err = validate_common(&[1], BENCH_OPS_MAX + 1, 10, 10).unwrap_err();
    assert!(err.to_string().contains("--warmup-ops"), "{err}");
    assert!(validate_common(&[1, 16, 64], 100, 1_000, 100).is_ok());
}

#[test]
fn percentiles_and_json_line() {
    let mut histogram = new_histogram().unwrap();
    for us in 1..=1_000u64 {
        histogram.record(us).unwrap();
    }
    let p = Percentiles::of(&histogram);
    assert!(p.p50 <= p.p90 && p.p90 <= p.p99 && p.p99 <= p.p999 && p.p999 <= p.max);
    assert!((499..=501).contains(&p.p50), "{p:?}");
    assert!((998..=1_001).contains(&p.max), "{p:?}");
    let cell = CellResult {
        system: "etcd".into(),
        workload: "ycsb-b".into(),
        distribution: Some(Distribution::Zipfian),
        concurrency: 16,
        measured: Measured {
            ops: 1_000,
            errors: 0,
            elapsed: Duration::from_secs(1),
            latency_us: p,
        },
    };
    let line = cell.json();
    assert_eq!(line["system"], "etcd");
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
        distribution: None,
        ..cell
    };
    assert!(probe.json()["distribution"].is_null());
}

#[tokio::test]
async fn probe_echoes_over_loopback() {
    let completed = Arc::new(AtomicU64::new(0));
    let (histogram, errors, _) = probe::run(10, Stop::Ops(200), completed.clone())
        .await
        .unwrap();
    assert_eq!((histogram.len(), errors), (200, 0));
    assert_eq!(completed.load(Ordering::Relaxed), 200);
}

#[tokio::test]
async fn preload_writes_every_key_once() {
    let store = Arc::new(MapStore::default());
    preload(&store, 250, &Arc::from("v"), 7).await.unwrap();
    assert_eq!(store.writes.load(Ordering::Relaxed), 250);
    let data = store.data.lock().unwrap();
    assert_eq!(data.len(), 250);
    assert!(data.contains_key(&key_name(0)) && data.contains_key(&key_name(249)));
}

#[tokio::test]
async fn preload_reports_the_key_that_failed() {
    let store = Arc::new(MapStore {
        failing_key: Some(key_name(3)),
        ..MapStore::default()
    });
    let err = preload(&store, 10, &Arc::from("v"), 1).await.unwrap_err();
    assert!(err.to_string().contains("key-3"), "{err}");
}

#[tokio::test]
async fn run_cell_issues_exactly_the_ops_and_the_mix() {
    let store = Arc::new(MapStore::default());
    let keys = KeySpace::new(Distribution::Uniform, 100, 8);
    preload(&store, 100, &keys.value, 4).await.unwrap();
    let preload_writes = store.writes.load(Ordering::Relaxed);
    let mut ycsb_b = cell(Mix::YcsbB, 8, 4_000);
    ycsb_b.warmup_ops = 500;
    let measured = run_cell(&store, &keys, &ycsb_b, None).await.unwrap();
    assert_eq!((measured.ops, measured.errors), (4_000, 0));
    let reads = store.reads.load(Ordering::Relaxed);
    let writes = store.writes.load(Ordering::Relaxed) - preload_writes;
    // Warm-up plus measured operations, 95% of them reads.
    assert_eq!(reads + writes, 4_500);
    let read_share = reads as f64 / 4_500.0;
    assert!((0.93..0.97).contains(&read_share), "{read_share}");
    assert!(measured.latency_us.p50 >= 1 && measured.latency_us.max >= measured.latency_us.p50);
}

#[tokio::test]
async fn run_cell_counts_missing_keys_and_failed_writes_as_errors() {
    // Nothing preloaded: every read misses.
    let store = Arc::new(MapStore::default());
    let keys = KeySpace::new(Distribution::Uniform, 10, 8);
    let measured = run_cell(&store, &keys, &cell(Mix::Read, 2, 50), None)
        .await
        .unwrap();
    assert_eq!((measured.ops, measured.errors), (0, 50));
    // One key of one refuses writes.
    let store = Arc::new(MapStore {
        failing_key: Some(key_name(0)),
        ..MapStore::default()
    });
    let keys = KeySpace::new(Distribution::Uniform, 1, 8);
    let measured = run_cell(&store, &keys, &cell(Mix::Write, 3, 30), None)
        .await
        .unwrap();
    assert_eq!((measured.ops, measured.errors), (0, 30));
    assert_eq!(measured.ops_per_sec(), 0.0);
}

#[tokio::test]
async fn run_cell_with_a_duration_stops_on_time() {
    let store = Arc::new(MapStore::default());
    let keys = KeySpace::new(Distribution::Zipfian, 10, 8);
    let mut timed = cell(Mix::Write, 4, 1);
    timed.stop = Stop::For(Duration::from_millis(200));
    let measured = run_cell(&store, &keys, &timed, None).await.unwrap();
    assert!(measured.ops > 1, "ran {} ops", measured.ops);
    assert!(measured.elapsed >= Duration::from_millis(200));
}

// ----- the report ------------------------------------------------------------------------------

fn line(system: &str, workload: &str, concurrency: u64, ops: f64, p50: u64) -> serde_json::Value {
    json!({"system": system, "workload": workload, "distribution": "uniform",
           "concurrency": concurrency, "ops_per_sec": ops, "p50_us": p50, "p99_us": p50 * 4,
           "errors": 0, "run": 1})
}

#[test]
fn report_median_of_odd_even_and_empty() {
    assert_eq!(report::median(&mut [3.0, 1.0, 2.0]), Some(2.0));
    assert_eq!(report::median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    assert_eq!(report::median(&mut []), None);
}

#[test]
fn report_tables_medians_ratios_and_targets() {
    let mut lines = Vec::new();
    // Three runs per cell; the medians are the middle values whatever the order.
    for (rl, etcd) in [
        (30_000.0, 9_000.0),
        (36_000.0, 10_000.0),
        (33_000.0, 11_000.0),
    ] {
        lines.push(line("ringleader", "write", 64, rl, 900));
        lines.push(line("etcd", "write", 64, etcd, 5_000));
        lines.push(line("ringleader", "read", 64, rl, 400));
        lines.push(line("etcd", "read", 64, etcd * 2.0, 2_000));
        lines.push(line("ringleader", "write", 1, 5_000.0, 120));
    }
    lines.push(
        json!({"system": "loopback", "workload": "probe", "distribution": null,
                      "concurrency": 1, "p50_us": 20, "ops_per_sec": 40_000, "run": 1}),
    );
    // In-process `client bench` lines (no run) stay out of the matrix and the probe.
    lines.push(
        json!({"system": "loopback", "workload": "probe", "concurrency": 1,
                      "p50_us": 5}),
    );
    lines.push(
        json!({"system": "ringleader", "workload": "write", "distribution": "uniform",
                      "concurrency": 64, "ops_per_sec": 1_000_000.0, "p50_us": 1}),
    );
    lines.push(
        json!({"kind": "memory", "server": "127.0.0.1:1", "keys_held": 600_000,
                      "raw_bytes": 64_000_000, "peak_rss_bytes": 200_000_000}),
    );
    lines.push(json!({"kind": "version", "name": "etcd", "version": "3.4.23"}));
    lines.push(
        json!({"workload": "rebalance", "keys": 100_000, "detect_ms": 2_000,
                      "rereplicate_ms": 140, "copies_moved": 60_000, "copies_minimum": 60_000,
                      "moved_over_minimum": 1.0}),
    );
    lines.push(json!("not an object"));
    let machine = Machine {
        cpu: "Test CPU".into(),
        cores: 2,
        memory_gib: 24.0,
        kernel: "6.1".into(),
        date: "2026-11-23".into(),
    };
    let md = report::render(&lines, &machine, Some("## Profile\n\nbefore/after"));
    // Medians 33,000 and 10,000: 3.30×, which meets the 3× target.
    assert!(
        md.contains("ringleader 33000 ops/s, etcd 10000 ops/s: 3.30× | met |"),
        "{md}"
    );
    // Reads: 33,000 against a median etcd of 20,000: 1.65×, short of 2×.
    assert!(
        md.contains("etcd 20000 ops/s: 1.65× | **not met** |"),
        "{md}"
    );
    // p50 120 µs against 3 × 2 × 20 + 100 = 220 µs.
    assert!(
        md.contains("120 µs against a bound of 220 µs | met |"),
        "{md}"
    );
    // 200 MB peak against 2 × 64 MB + 20 MiB ≈ 143 MiB: not met.
    assert!(md.contains("| peak RSS per server"), "{md}");
    assert!(md.contains("190.7 MiB peak"), "{md}");
    assert!(md.contains("- etcd: 3.4.23"), "{md}");
    assert!(md.contains("Test CPU (2 cores)"), "{md}");
    assert!(
        md.contains("| 100000 | 2000 | 140 | 60000 | 60000 | 1.000 |"),
        "{md}"
    );
    assert!(md.contains("median of 3 runs"), "{md}");
    assert!(md.ends_with("before/after\n"), "{md}");
    // Systems with no results get no column.
    assert!(!md.contains("Redis |"), "{md}");
}

#[test]
fn report_fails_a_target_whose_cells_had_errors_and_names_them() {
    let mut lines = vec![
        line("ringleader", "write", 64, 90_000.0, 100),
        line("etcd", "write", 64, 10_000.0, 100),
    ];
    lines[1]["errors"] = 7.into();
    let md = report::render(&lines, &Machine::default(), None);
    assert!(md.contains("9.00× | **not met** (errors) |"), "{md}");
    assert!(md.contains("| etcd 7 |"), "{md}");
}

#[test]
fn report_without_results_says_not_measured() {
    let md = report::render(&[], &Machine::default(), None);
    assert_eq!(md.matches("not measured").count(), 6, "{md}");
}

#[test]
fn report_keeps_the_durable_section_apart_and_judges_its_targets() {
    let durable = |system: &str, concurrency: u64, ops: f64, p50: u64| {
        let mut l = line(system, "write", concurrency, ops, p50);
        l["section"] = "durable".into();
        l
    };
    let lines = vec![
        line("ringleader", "write", 64, 30_000.0, 900),
        line("etcd", "write", 64, 10_000.0, 5_000),
        durable("ringleader", 64, 9_000.0, 6_000),
        durable("etcd", 64, 5_000.0, 9_000),
        durable("ringleader", 1, 400.0, 2_400),
        durable("etcd", 1, 500.0, 2_000),
    ];
    let md = report::render(&lines, &Machine::default(), None);
    // The in-memory target sees only the matrix: 30,000 against 10,000.
    assert!(
        md.contains("ringleader 30000 ops/s, etcd 10000 ops/s: 3.00× | met |"),
        "{md}"
    );
    // 9,000 against 5,000 is 1.80×, short of 2×; p50 2,400 µs against etcd's 2,000 µs.
    assert!(
        md.contains("ringleader 9000 ops/s, etcd 5000 ops/s: 1.80× | **not met** |"),
        "{md}"
    );
    assert!(
        md.contains("ringleader 2400 µs, etcd 2000 µs | **not met** |"),
        "{md}"
    );
    assert!(md.contains("## Durable writes, both on disk"), "{md}");
    assert!(
        md.contains("| 64 | 9000 | 5000 | 1.80× | 6000 / 24000 | 9000 / 36000 | 0 |"),
        "{md}"
    );
}

#[test]
fn report_reads_the_previous_report_and_shows_it_beside_the_matrix() {
    let before = vec![
        line("ringleader", "write", 64, 20_000.0, 2_000),
        line("etcd", "write", 64, 8_000.0, 7_000),
        line("ringleader", "read", 1, 9_000.0, 100),
    ];
    let machine = Machine {
        date: "2026-11-23".into(),
        ..Machine::default()
    };
    let mut old = report::render(&before, &machine, None);
    old = old.replace(
        "## Machine and versions\n",
        "## Machine and versions\n\n- ringleader: abc1234 (rustc)",
    );
    let mut lines = report::previous_lines(&old);
    assert_eq!(lines[0]["date"], "2026-11-23");
    assert_eq!(lines[0]["version"], "abc1234");
    let previous_write = lines
        .iter()
        .find(|l| l["system"] == "ringleader" && l["workload"] == "write")
        .expect("the write cell");
    assert_eq!(previous_write["ops_per_sec"], 20_000.0);
    assert_eq!(previous_write["p50_us"], 2_000.0);
    assert_eq!(previous_write["p99_us"], 8_000.0);
    lines.push(line("ringleader", "write", 64, 22_000.0, 1_800));
    lines.push(line("etcd", "write", 64, 8_000.0, 7_000));
    let md = report::render(&lines, &Machine::default(), None);
    assert!(
        md.contains("## In-memory mode against the previous report"),
        "{md}"
    );
    assert!(
        md.contains("written on 2026-11-23, ringleader abc1234"),
        "{md}"
    );
    assert!(
        md.contains("| write (setr / put / SET) | uniform | 64 | 20000 | 22000 | 1.10× | 2000 | 1800 | 2.50× | 2.75× |"),
        "{md}"
    );
}

#[test]
fn report_tables_recovery_and_engines() {
    let mut lines = Vec::new();
    for (run, recovered_ms) in [(1, 900.0), (2, 1_100.0), (3, 1_000.0)] {
        lines.push(
            json!({"kind": "recovery", "run": run, "load": "setr", "keys_loaded": 1_000_000,
            "listening_ms": 3.0, "recovered_ms": recovered_ms, "serving_ms": recovered_ms + 5.0,
            "keys_per_sec": 1_000_000.0, "recovered_keys": 1_000_000, "records": 3_000_000,
            "data_bytes": 200_000_000, "data_allocated_bytes": 201_000_000,
            "snapshot_bytes": 100_000_000, "segment_bytes": 100_000_000, "load_s": 60.0, "keys_held": 1_000_000}),
        );
        lines.push(
            json!({"kind": "engine", "engine": "redb", "run": run, "concurrency": 1,
            "ops_per_sec": 300.0 + run as f64, "p50_us": 3_000, "p99_us": 5_000, "errors": 0}),
        );
        lines.push(
            json!({"kind": "engine", "engine": "log-batch", "run": run, "concurrency": 1,
            "ops_per_sec": 500.0, "p50_us": 2_000, "p99_us": 4_000, "errors": 0}),
        );
        lines.push(
            json!({"kind": "fsync_probe", "run": run, "p50_us": 1_500, "p99_us": 3_000,
            "syncs_per_sec": 600}),
        );
    }
    let md = report::render(&lines, &Machine::default(), None);
    assert!(
        md.contains("| 1000000 | setr | on | 3 | 3 | 1000 | 1005 | 1000000 | 1000000 | 3000000 | 190.7 | 200 | 201 | 95.4 | 95.4 | 60.0 |"),
        "{md}"
    );
    assert!(md.contains("p50 1500 µs, p99 3000 µs, 600 syncs/s"), "{md}");
    // The log first, then redb, whatever the order of the lines.
    let log = md.find("| log-batch | 500 | 2000 / 4000 |").expect(&md);
    let redb = md.find("| redb | 302 | 3000 / 5000 |").expect(&md);
    assert!(log < redb, "{md}");
}
