//! `BENCHMARKS.md` from the JSON lines a benchmark run wrote: medians over the runs of each
//! cell, the ratios ringleader/etcd, the targets with the figures that decide them, the
//! rebalancing and memory results, and the machine. A pure function of its input, so the table
//! is tested without running anything.
//!
//! Lines it understands (others are ignored, so one file can collect every tool's output):
//! * a cell of the matrix: `{"system", "workload", "distribution", "concurrency", "run",
//!   "ops_per_sec", "p50_us", ...}` (what [`super::CellResult::json`] writes, with the run
//!   number the matrix adds); the probe is system `loopback`, workload `probe`. Cells without a
//!   run (`client bench --json`, an in-process cluster) are not mixed into the matrix;
//! * `{"workload": "rebalance", "keys", "detect_ms", "rereplicate_ms", "copies_moved", ...}`;
//! * `{"kind": "memory", "server", "keys_held", "raw_bytes", "peak_rss_bytes"}`;
//! * `{"kind": "version", "name", "version"}`, `{"kind": "setting", "name", "value"}`;
//! * a matrix cell with `"section": "durable"`: the durable write comparison (ringleader's
//!   default durable servers against etcd with its data dir on the same disk), kept apart from
//!   the in-memory matrix;
//! * `{"kind": "previous", "system", "workload", "distribution", "concurrency", "ops_per_sec",
//!   "p50_us", "p99_us"}` and `{"kind": "previous_run", "date", "version"}`: the figures of the
//!   report this one replaces ([`previous_lines`] reads them out of its tables), shown beside
//!   the in-memory ones;
//! * `{"kind": "recovery", "recovered_ms", "keys_per_sec", "bytes_per_key", ...}`: a restart of
//!   a durable server (`ringleader-bench recovery`);
//! * `{"kind": "engine", "engine", "concurrency", "ops_per_sec", "p50_us", ...}` and
//!   `{"kind": "fsync_probe", "p50_us", ...}`: the storage engine micro-benchmark
//!   (`ringleader-bench engines`).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;

/// The targets.
pub const SETR_OVER_ETCD_PUT_MIN: f64 = 3.0;
pub const GETR_OVER_ETCD_GET_MIN: f64 = 2.0;
/// setr p50 at one client ≤ this many loopback pairs of round trips, plus the slack below.
pub const SETR_P50_ROUND_TRIP_PAIRS: f64 = 3.0;
pub const SETR_P50_SLACK_US: f64 = 100.0;
/// Durable setr at 64 clients ≥ this factor of etcd's put with its WAL on the same disk.
pub const DURABLE_SETR_OVER_ETCD_PUT_MIN: f64 = 2.0;
/// Peak RSS per server ≤ this factor of its raw bytes, plus the allowance below.
pub const RSS_RAW_FACTOR: f64 = 2.0;
pub const RSS_ALLOWANCE_BYTES: f64 = 20.0 * 1024.0 * 1024.0;

/// The systems in the order of the table's columns, with their headings.
pub const SYSTEMS: [(&str, &str); 5] = [
    ("ringleader", "ringleader"),
    ("ringleader-stale", "ringleader stale"),
    ("etcd", "etcd"),
    ("etcd-serializable", "etcd serializable"),
    ("redis", "Redis"),
];

/// Where and with what the run happened.
#[derive(Clone, Debug, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub date: String,
}

impl Machine {
    /// This machine, read from /proc (fields it cannot read stay empty).
    pub fn this_one(date: String) -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, name)| name.trim().to_string())
            .unwrap_or_default();
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            date,
        }
    }
}

/// The median of `values` (the mean of the middle two for an even count); `None` if empty.
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Identifies a cell across runs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct CellKey {
    workload_order: usize,
    workload: String,
    distribution: String,
    concurrency: u64,
}

/// The medians of one system in one cell.
#[derive(Clone, Debug, Default)]
struct Medians {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    runs: usize,
    errors: u64,
}

const WORKLOAD_ORDER: [&str; 5] = ["write", "read", "ycsb-a", "ycsb-b", "ycsb-c"];

fn workload_label(workload: &str) -> String {
    match workload {
        "write" => "write (setr / put / SET)".into(),
        "read" => "read (getr / get / GET)".into(),
        other => other.to_string(),
    }
}

/// Whether a line is a result of the matrix (it carries its run number) in `section` (`None`:
/// the in-memory matrix, which has no section).
fn is_section_line(line: &Json, section: Option<&str>) -> bool {
    line.get("run").is_some_and(Json::is_u64)
        && line.get("system").is_some()
        && str_of(line, "kind").is_none()
        && str_of(line, "section") == section
}

fn is_matrix_line(line: &Json) -> bool {
    is_section_line(line, None)
}

fn str_of<'a>(line: &'a Json, field: &str) -> Option<&'a str> {
    line.get(field).and_then(Json::as_str)
}

fn num_of(line: &Json, field: &str) -> Option<f64> {
    line.get(field).and_then(Json::as_f64)
}

/// Per cell, the medians of each system.
type Cells = BTreeMap<CellKey, BTreeMap<String, Medians>>;

/// Medians per cell and system, of the matrix `section`.
fn cell_medians(lines: &[Json], section: Option<&str>) -> Cells {
    let mut samples: BTreeMap<(CellKey, String), Vec<&Json>> = BTreeMap::new();
    for line in lines.iter().filter(|l| is_section_line(l, section)) {
        let (Some(system), Some(workload)) = (str_of(line, "system"), str_of(line, "workload"))
        else {
            continue;
        };
        let Some(order) = WORKLOAD_ORDER.iter().position(|w| *w == workload) else {
            continue;
        };
        let key = CellKey {
            workload_order: order,
            workload: workload.to_string(),
            distribution: str_of(line, "distribution").unwrap_or("-").to_string(),
            concurrency: line.get("concurrency").and_then(Json::as_u64).unwrap_or(0),
        };
        samples
            .entry((key, system.to_string()))
            .or_default()
            .push(line);
    }
    let mut cells: Cells = BTreeMap::new();
    for ((key, system), runs) in samples {
        let field = |name: &str| {
            let mut values: Vec<f64> = runs.iter().filter_map(|l| num_of(l, name)).collect();
            median(&mut values).unwrap_or(0.0)
        };
        let medians = Medians {
            ops_per_sec: field("ops_per_sec"),
            p50_us: field("p50_us"),
            p99_us: field("p99_us"),
            runs: runs.len(),
            errors: runs
                .iter()
                .filter_map(|l| l.get("errors").and_then(Json::as_u64))
                .sum(),
        };
        cells.entry(key).or_default().insert(system, medians);
    }
    cells
}

fn ratio(numerator: Option<&Medians>, denominator: Option<&Medians>) -> Option<f64> {
    let (n, d) = (numerator?.ops_per_sec, denominator?.ops_per_sec);
    (d > 0.0).then(|| n / d)
}

/// The row of a target "ringleader ≥ `minimum` × etcd" on `workload` at 64 clients (uniform
/// keys). Any error in either cell fails it.
fn ratio_target(md: &mut String, cells: &Cells, workload: &str, label: &str, minimum: f64) {
    let cell = find(cells, workload, 64);
    let (ours, etcd) = (
        cell.and_then(|c| c.get("ringleader")),
        cell.and_then(|c| c.get("etcd")),
    );
    let r = ratio(ours, etcd);
    let verdict = if [ours, etcd].iter().flatten().any(|m| m.errors > 0) {
        "**not met** (errors)"
    } else {
        verdict(r.map(|r| r >= minimum))
    };
    let _ = writeln!(
        md,
        "| {label} | ringleader {} ops/s, etcd {} ops/s: {} | {verdict} |",
        fmt_ops(ours),
        fmt_ops(etcd),
        fmt_ratio(r),
    );
}

fn fmt_ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}×")).unwrap_or_else(|| "–".into())
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

/// The whole `BENCHMARKS.md`. `appendix` (hand-written notes, e.g. the profile's before/after)
/// is included verbatim at the end.
pub fn render(lines: &[Json], machine: &Machine, appendix: Option<&str>) -> String {
    let cells = cell_medians(lines, None);
    let durable = cell_medians(lines, Some(DURABLE_SECTION));
    let mut md = String::new();
    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "Written by `scripts/bench.sh` on {}; rerun it to regenerate this file. Every figure is \
         the median of the runs of its cell (closed loop: each client issues its next request \
         when the last one answered). Load generator and every store share the machine, so \
         figures compare systems within this run; they are not absolute capacities.\n",
        machine.date
    );
    let _ = writeln!(md, "## Machine and versions\n");
    let _ = writeln!(
        md,
        "- CPU: {} ({} cores), memory {:.1} GiB, Linux {}",
        if machine.cpu.is_empty() {
            "unknown"
        } else {
            &machine.cpu
        },
        machine.cores,
        machine.memory_gib,
        machine.kernel
    );
    for line in lines {
        match str_of(line, "kind") {
            Some("version") => {
                let _ = writeln!(
                    md,
                    "- {}: {}",
                    str_of(line, "name").unwrap_or("?"),
                    str_of(line, "version").unwrap_or("?")
                );
            }
            Some("setting") => {
                let _ = writeln!(
                    md,
                    "- {}: {}",
                    str_of(line, "name").unwrap_or("?"),
                    str_of(line, "value").unwrap_or("?")
                );
            }
            _ => {}
        }
    }
    let probe = lines
        .iter()
        .filter(|l| is_matrix_line(l) && str_of(l, "workload") == Some("probe"))
        .filter_map(|l| num_of(l, "p50_us"))
        .collect::<Vec<_>>();
    let rtt_us = median(&mut probe.clone());
    if let Some(rtt) = rtt_us {
        let _ = writeln!(
            md,
            "- Loopback round trip (TCP echo, 64 B, one connection): p50 {rtt:.0} µs \
             (median of {} probes), the floor under every request below",
            probe.len()
        );
    }
    md.push('\n');

    render_targets(&mut md, &cells, &durable, lines, rtt_us);
    render_throughput(&mut md, &cells);
    render_latency(&mut md, &cells);
    render_previous(&mut md, &cells, lines);
    render_durable(&mut md, &durable, lines);
    render_recovery(&mut md, lines);
    render_engines(&mut md, lines);
    render_rebalance(&mut md, lines);
    render_memory(&mut md, lines);
    if let Some(appendix) = appendix {
        md.push_str(appendix.trim_end());
        md.push('\n');
    }
    md
}

fn find<'a>(
    cells: &'a Cells,
    workload: &str,
    concurrency: u64,
) -> Option<&'a BTreeMap<String, Medians>> {
    cells
        .iter()
        .find(|(k, _)| {
            k.workload == workload
                && k.concurrency == concurrency
                && (k.distribution == "uniform" || k.distribution == "-")
        })
        .map(|(_, v)| v)
}

fn render_targets(
    md: &mut String,
    cells: &Cells,
    durable: &Cells,
    lines: &[Json],
    rtt_us: Option<f64>,
) {
    let _ = writeln!(md, "## Targets\n");
    let _ = writeln!(md, "| target | measured | verdict |\n|---|---|---|");
    ratio_target(
        md,
        cells,
        "write",
        &format!("setr ops/s at 64 clients ≥ {SETR_OVER_ETCD_PUT_MIN} × etcd put"),
        SETR_OVER_ETCD_PUT_MIN,
    );
    ratio_target(
        md,
        cells,
        "read",
        &format!("getr ops/s at 64 clients ≥ {GETR_OVER_ETCD_GET_MIN} × etcd linearizable get"),
        GETR_OVER_ETCD_GET_MIN,
    );
    let p50 = find(cells, "write", 1)
        .and_then(|c| c.get("ringleader"))
        .map(|m| m.p50_us);
    let bound = rtt_us.map(|rtt| SETR_P50_ROUND_TRIP_PAIRS * 2.0 * rtt + SETR_P50_SLACK_US);
    let _ = writeln!(
        md,
        "| setr p50 at 1 client ≤ {SETR_P50_ROUND_TRIP_PAIRS} × two loopback round trips + {SETR_P50_SLACK_US} µs | {} µs against a bound of {} µs | {} |",
        p50.map(|p| format!("{p:.0}")).unwrap_or_else(|| "–".into()),
        bound.map(|b| format!("{b:.0}")).unwrap_or_else(|| "–".into()),
        verdict(p50.zip(bound).map(|(p, b)| p <= b))
    );
    let memory: Vec<&Json> = lines
        .iter()
        .filter(|l| str_of(l, "kind") == Some("memory"))
        .collect();
    let worst = memory
        .iter()
        .filter_map(|l| {
            let (raw, rss) = (num_of(l, "raw_bytes")?, num_of(l, "peak_rss_bytes")?);
            Some((rss / (RSS_RAW_FACTOR * raw + RSS_ALLOWANCE_BYTES), raw, rss))
        })
        .max_by(|a, b| a.0.total_cmp(&b.0));
    ratio_target(
        md,
        durable,
        "write",
        &format!(
            "durable setr ops/s at 64 clients ≥ {DURABLE_SETR_OVER_ETCD_PUT_MIN} × etcd put, \
             both on disk"
        ),
        DURABLE_SETR_OVER_ETCD_PUT_MIN,
    );
    let p50s = find(durable, "write", 1).map(|c| (c.get("ringleader"), c.get("etcd")));
    let (ours, etcd) = p50s.unwrap_or((None, None));
    let errors = [ours, etcd].iter().flatten().any(|m| m.errors > 0);
    let _ = writeln!(
        md,
        "| durable setr p50 at 1 client ≤ etcd put p50, both on disk | ringleader {} µs, etcd {} µs | {} |",
        fmt_us(ours.map(|m| m.p50_us)),
        fmt_us(etcd.map(|m| m.p50_us)),
        if errors {
            "**not met** (errors)"
        } else {
            verdict(ours.zip(etcd).map(|(o, e)| o.p50_us <= e.p50_us))
        }
    );
    let _ = writeln!(
        md,
        "| peak RSS per server ≤ {RSS_RAW_FACTOR} × raw bytes + 20 MiB | {} | {} |\n",
        worst
            .map(|(_, raw, rss)| format!(
                "worst server: {:.1} MiB peak for {:.1} MiB raw (bound {:.1} MiB)",
                rss / MIB,
                raw / MIB,
                (RSS_RAW_FACTOR * raw + RSS_ALLOWANCE_BYTES) / MIB
            ))
            .unwrap_or_else(|| "–".into()),
        verdict(worst.map(|(share, _, _)| share <= 1.0))
    );
}

const MIB: f64 = 1024.0 * 1024.0;

/// The `section` of the durable write comparison's matrix lines.
pub const DURABLE_SECTION: &str = "durable";

fn fmt_us(us: Option<f64>) -> String {
    us.map(|us| format!("{us:.0}"))
        .unwrap_or_else(|| "–".into())
}

fn fmt_ops(m: Option<&Medians>) -> String {
    m.map(|m| format!("{:.0}", m.ops_per_sec))
        .unwrap_or_else(|| "–".into())
}

fn present_systems(cells: &Cells) -> Vec<(&str, &str)> {
    SYSTEMS
        .iter()
        .copied()
        .filter(|(name, _)| cells.values().any(|c| c.contains_key(*name)))
        .collect()
}

/// The heading and rule of a table with a column per system and `extra` columns after them.
fn table_head(md: &mut String, systems: &[(&str, &str)], extra: &[&str]) {
    let mut header = "| workload | keys | clients |".to_string();
    let mut rule = "|---|---|---:|".to_string();
    for heading in systems.iter().map(|(_, h)| *h).chain(extra.iter().copied()) {
        let _ = write!(header, " {heading} |");
        rule.push_str("---:|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
}

fn row_head(key: &CellKey) -> String {
    format!(
        "| {} | {} | {} |",
        workload_label(&key.workload),
        key.distribution,
        key.concurrency
    )
}

fn render_throughput(md: &mut String, cells: &Cells) {
    let systems = present_systems(cells);
    let runs = cells
        .values()
        .flat_map(|c| c.values().map(|m| m.runs))
        .max()
        .unwrap_or(0);
    let _ = writeln!(md, "## Throughput (ops/s, median of {runs} runs)\n");
    let _ = writeln!(
        md,
        "Reads: ringleader is the linearizable getr (majority read with write-back), \
         ringleader stale is `getr --stale` (one replica), etcd is a linearizable range, etcd \
         serializable a local read of one member. Writes are setr (two-phase commit on three \
         replicas), etcd put (Raft on three members) and Redis SET (one node, nothing \
         replicated: the ceiling). The ratios divide ringleader by etcd, linearizable by \
         linearizable and stale by serializable. Durability differs: ringleader's servers run \
         here with `--in-memory` (three replicas, nothing on disk), etcd writes its Raft log \
         and database on tmpfs (so a sync costs next to nothing), Redis persistence is off. \
         Both on a real disk is the [durable comparison](#durable-writes-both-on-disk) below. \
         Only successful operations count in ops/s and latency; the last column lists the \
         failures by system.\n"
    );
    table_head(
        md,
        &systems,
        &["ringleader / etcd", "stale / serializable", "errors"],
    );
    for (key, by_system) in cells {
        let mut row = row_head(key);
        for (name, _) in &systems {
            let _ = write!(row, " {} |", fmt_ops(by_system.get(*name)));
        }
        let errors: Vec<String> = systems
            .iter()
            .filter_map(|(name, heading)| {
                let errors = by_system.get(*name)?.errors;
                (errors > 0).then(|| format!("{heading} {errors}"))
            })
            .collect();
        let errors = if errors.is_empty() {
            "0".to_string()
        } else {
            errors.join(", ")
        };
        let _ = writeln!(
            row,
            " {} | {} | {errors} |",
            fmt_ratio(ratio(by_system.get("ringleader"), by_system.get("etcd"))),
            fmt_ratio(ratio(
                by_system.get("ringleader-stale"),
                by_system.get("etcd-serializable")
            )),
        );
        md.push_str(&row);
    }
    md.push('\n');
}

fn render_latency(md: &mut String, cells: &Cells) {
    let systems = present_systems(cells);
    let _ = writeln!(md, "## Latency (p50 / p99 µs, medians over the runs)\n");
    table_head(md, &systems, &[]);
    for (key, by_system) in cells {
        let mut row = row_head(key);
        for (name, _) in &systems {
            let cell = by_system
                .get(*name)
                .map(|m| format!("{:.0} / {:.0}", m.p50_us, m.p99_us))
                .unwrap_or_else(|| "–".into());
            let _ = write!(row, " {cell} |");
        }
        row.push('\n');
        md.push_str(&row);
    }
    md.push('\n');
}

fn render_rebalance(md: &mut String, lines: &[Json]) {
    let runs: Vec<&Json> = lines
        .iter()
        .filter(|l| str_of(l, "workload") == Some("rebalance"))
        .collect();
    if runs.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Rebalancing after one server is lost\n");
    let _ = writeln!(
        md,
        "Five servers hold the keys (100 B values) on their three replicas; one is killed. \
         Detection is the view leader's lease; re-replication runs from the new view to the \
         settled one. Copies moved are counted by the servers and compared with the minimum the \
         view change needs.\n"
    );
    let _ = writeln!(
        md,
        "| keys | detected after (ms) | re-replicated in (ms) | copies moved | minimum | moved / minimum |\n|---:|---:|---:|---:|---:|---:|"
    );
    let mut by_keys: BTreeMap<u64, Vec<&Json>> = BTreeMap::new();
    for run in runs {
        by_keys
            .entry(run.get("keys").and_then(Json::as_u64).unwrap_or(0))
            .or_default()
            .push(run);
    }
    for (keys, runs) in by_keys {
        let field = |name: &str| {
            let mut values: Vec<f64> = runs.iter().filter_map(|l| num_of(l, name)).collect();
            median(&mut values).unwrap_or(0.0)
        };
        let _ = writeln!(
            md,
            "| {keys} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} |",
            field("detect_ms"),
            field("rereplicate_ms"),
            field("copies_moved"),
            field("copies_minimum"),
            field("moved_over_minimum")
        );
    }
    md.push('\n');
}

fn render_memory(md: &mut String, lines: &[Json]) {
    let servers: Vec<&Json> = lines
        .iter()
        .filter(|l| str_of(l, "kind") == Some("memory"))
        .collect();
    if servers.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Memory per server\n");
    let _ = writeln!(
        md,
        "Peak resident set (VmHWM) of each server process after the keys were loaded on their \
         replicas; raw bytes are the key and value bytes the server holds.\n"
    );
    let _ = writeln!(
        md,
        "| server | keys held | raw (MiB) | peak RSS (MiB) | bound (MiB) | verdict |\n|---|---:|---:|---:|---:|---|"
    );
    for server in servers {
        let raw = num_of(server, "raw_bytes").unwrap_or(0.0);
        let rss = num_of(server, "peak_rss_bytes").unwrap_or(0.0);
        let bound = RSS_RAW_FACTOR * raw + RSS_ALLOWANCE_BYTES;
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
            str_of(server, "server").unwrap_or("?"),
            num_of(server, "keys_held").unwrap_or(0.0),
            raw / MIB,
            rss / MIB,
            bound / MIB,
            verdict(Some(rss <= bound))
        );
    }
    md.push('\n');
}

/// The medians over the lines of `kind` (one per run) grouped by `key`, of `fields`.
fn grouped_medians<K: Ord>(
    lines: &[Json],
    kind: &str,
    key: impl Fn(&Json) -> Option<K>,
    fields: &[&str],
) -> BTreeMap<K, (usize, Vec<Option<f64>>)> {
    let mut groups: BTreeMap<K, Vec<&Json>> = BTreeMap::new();
    for line in lines.iter().filter(|l| str_of(l, "kind") == Some(kind)) {
        if let Some(k) = key(line) {
            groups.entry(k).or_default().push(line);
        }
    }
    groups
        .into_iter()
        .map(|(k, runs)| {
            let medians = fields
                .iter()
                .map(|field| {
                    let mut values: Vec<f64> =
                        runs.iter().filter_map(|l| num_of(l, field)).collect();
                    median(&mut values)
                })
                .collect();
            (k, (runs.len(), medians))
        })
        .collect()
}

fn fmt_num(value: Option<f64>, decimals: usize) -> String {
    value
        .map(|v| format!("{v:.decimals$}"))
        .unwrap_or_else(|| "–".into())
}

/// The in-memory matrix beside the report it replaces (lines of kind `previous`).
fn render_previous(md: &mut String, cells: &Cells, lines: &[Json]) {
    let mut previous: Cells = BTreeMap::new();
    for line in lines
        .iter()
        .filter(|l| str_of(l, "kind") == Some("previous"))
    {
        let (Some(system), Some(workload)) = (str_of(line, "system"), str_of(line, "workload"))
        else {
            continue;
        };
        let Some(order) = WORKLOAD_ORDER.iter().position(|w| *w == workload) else {
            continue;
        };
        let key = CellKey {
            workload_order: order,
            workload: workload.to_string(),
            distribution: str_of(line, "distribution").unwrap_or("-").to_string(),
            concurrency: line.get("concurrency").and_then(Json::as_u64).unwrap_or(0),
        };
        previous.entry(key).or_default().insert(
            system.to_string(),
            Medians {
                ops_per_sec: num_of(line, "ops_per_sec").unwrap_or(0.0),
                p50_us: num_of(line, "p50_us").unwrap_or(0.0),
                p99_us: num_of(line, "p99_us").unwrap_or(0.0),
                runs: 1,
                errors: 0,
            },
        );
    }
    if previous.is_empty() || cells.is_empty() {
        return;
    }
    let run = lines
        .iter()
        .find(|l| str_of(l, "kind") == Some("previous_run"));
    let date = run.and_then(|l| str_of(l, "date")).unwrap_or("?");
    let version = run.and_then(|l| str_of(l, "version")).unwrap_or("?");
    let _ = writeln!(md, "## In-memory mode against the previous report\n");
    let _ = writeln!(
        md,
        "ringleader's servers with `--in-memory` in this run, beside the ringleader of the report \
         this one replaced (written on {date}, ringleader {version}, when memory was the only \
         mode). The machine is shared, so compare the ratios to etcd (measured in the same run \
         each time) more than the raw ops/s.\n"
    );
    let _ = writeln!(
        md,
        "| workload | keys | clients | ringleader before | ringleader now | now / before | p50 µs before | p50 µs now | ringleader / etcd before | ringleader / etcd now |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (key, now) in cells {
        let Some(before) = previous.get(key) else {
            continue;
        };
        let (b, n) = (before.get("ringleader"), now.get("ringleader"));
        if b.is_none() && n.is_none() {
            continue;
        }
        let _ = writeln!(
            md,
            "{} {} | {} | {} | {} | {} | {} | {} |",
            row_head(key),
            fmt_ops(b),
            fmt_ops(n),
            fmt_ratio(ratio(n, b)),
            fmt_us(b.map(|m| m.p50_us)),
            fmt_us(n.map(|m| m.p50_us)),
            fmt_ratio(ratio(b, before.get("etcd"))),
            fmt_ratio(ratio(n, now.get("etcd"))),
        );
    }
    md.push('\n');
}

/// Durable setr against etcd, both writing to the same disk.
fn render_durable(md: &mut String, durable: &Cells, lines: &[Json]) {
    if durable.is_empty() {
        return;
    }
    let runs = durable
        .values()
        .flat_map(|c| c.values().map(|m| m.runs))
        .max()
        .unwrap_or(0);
    let _ = writeln!(md, "## Durable writes, both on disk\n");
    let disk = lines
        .iter()
        .find(|l| str_of(l, "kind") == Some("setting") && str_of(l, "name") == Some("Disk"))
        .and_then(|l| str_of(l, "value"))
        .unwrap_or("the machine's disk");
    let _ = writeln!(
        md,
        "ringleader's servers with their defaults (a data dir each, `--fsync batch`: a reply waits \
         for the group commit that covers its records) against etcd with its data dir and WAL on \
         the same disk ({disk}), write-only on uniform keys, medians of {runs} runs. A setr is \
         acknowledged once all three replicas have synced their vote and the decision; an etcd \
         put once a majority of the three members has synced its WAL entry.\n"
    );
    let _ = writeln!(
        md,
        "| clients | ringleader durable (ops/s) | etcd on disk (ops/s) | ringleader / etcd | ringleader p50 / p99 µs | etcd p50 / p99 µs | errors |\n|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (key, by_system) in durable.iter().filter(|(k, _)| k.workload == "write") {
        let (ours, etcd) = (by_system.get("ringleader"), by_system.get("etcd"));
        let latency = |m: Option<&Medians>| {
            m.map(|m| format!("{:.0} / {:.0}", m.p50_us, m.p99_us))
                .unwrap_or_else(|| "–".into())
        };
        let errors: u64 = [ours, etcd].iter().flatten().map(|m| m.errors).sum();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {errors} |",
            key.concurrency,
            fmt_ops(ours),
            fmt_ops(etcd),
            fmt_ratio(ratio(ours, etcd)),
            latency(ours),
            latency(etcd),
        );
    }
    md.push('\n');
}

const RECOVERY_FIELDS: [&str; 12] = [
    "listening_ms",
    "recovered_ms",
    "serving_ms",
    "keys_per_sec",
    "recovered_keys",
    "records",
    "data_bytes",
    "data_allocated_bytes",
    "snapshot_bytes",
    "segment_bytes",
    "load_s",
    "keys_held",
];

/// Restarts of a durable server after `kill -9`.
fn render_recovery(md: &mut String, lines: &[Json]) {
    let groups = grouped_medians(
        lines,
        "recovery",
        |l| {
            Some((
                l.get("keys_loaded").and_then(Json::as_u64)?,
                str_of(l, "load").unwrap_or("setr").to_string(),
                // Snapshots off sorts after the default.
                !l.get("snapshots_on")
                    .and_then(Json::as_bool)
                    .unwrap_or(true),
            ))
        },
        &RECOVERY_FIELDS,
    );
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(md, "## Restart after kill -9, and disk bytes per key\n");
    let _ = writeln!(
        md,
        "One durable server (default flags) is loaded with the keys (100 B values) by `setr` \
         (each key leaves a yes vote, the value and the decision in the log) or by `transfer` \
         (rebalancing's bulk copies), killed with `SIGKILL` and started again on its data dir, \
         several times; medians over the restarts. With snapshots (the default) the data dir is \
         the last snapshot and the log after it; with snapshots off (the hidden \
         `--compact-bytes-min` set beyond the run) it is the whole log, as before the first \
         snapshot. Times run from the start of the process: `listening on` is printed once the \
         port is bound, before the data dir is read; `recovered` is the log line that ends \
         recovery; serving is the first answer to a `get`. The data dir is read from the page \
         cache (a process crash, not a reboot). Bytes per key divide the data dir (its files' \
         lengths; `du` counts the allocated blocks) by the keys held before the kill.\n"
    );
    let _ = writeln!(
        md,
        "| keys held | loaded by | snapshots | restarts | listening on (ms) | recovered (ms) | serving (ms) | keys recovered | keys/s recovered | records replayed | data dir (MiB) | bytes / key | du bytes / key | in snapshots (MiB) | in segments (MiB) | load (s) |\n|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for ((keys, load, snapshots_off), (runs, m)) in groups {
        let held = m[11].unwrap_or(keys as f64);
        let per_key = |bytes: Option<f64>| bytes.map(|b| b / held.max(1.0));
        let mib = |bytes: Option<f64>| bytes.map(|b| b / MIB);
        let _ = writeln!(
            md,
            "| {held:.0} | {load} | {} | {runs} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if snapshots_off { "off" } else { "on" },
            fmt_num(m[0], 0),
            fmt_num(m[1], 0),
            fmt_num(m[2], 0),
            fmt_num(m[4], 0),
            fmt_num(m[3], 0),
            fmt_num(m[5], 0),
            fmt_num(mib(m[6]), 1),
            fmt_num(per_key(m[6]), 0),
            fmt_num(per_key(m[7]), 0),
            fmt_num(mib(m[8]), 1),
            fmt_num(mib(m[9]), 1),
            fmt_num(m[10], 1),
        );
    }
    md.push('\n');
}

/// The storage engine micro-benchmark and the disk's own sync latency.
fn render_engines(md: &mut String, lines: &[Json]) {
    let cells = grouped_medians(
        lines,
        "engine",
        |l| {
            Some((
                str_of(l, "engine")?.to_string(),
                l.get("concurrency").and_then(Json::as_u64)?,
            ))
        },
        &["ops_per_sec", "p50_us", "p99_us", "errors"],
    );
    if cells.is_empty() {
        return;
    }
    let probe = grouped_medians(
        lines,
        "fsync_probe",
        |_| Some(()),
        &["p50_us", "p99_us", "syncs_per_sec"],
    );
    let _ = writeln!(md, "## Storage engines: the log against redb\n");
    let _ = writeln!(
        md,
        "`ringleader-bench engines`: concurrent writers in one process, each putting a 100 B \
         value and waiting until it is durable before the next, on the same disk as above. \
         `log-batch` is ringleader's log engine as the server runs it (behind a mutex, group \
         commit), `log-always` syncs each record under the lock, `redb` commits one durable \
         transaction per put, `redb-batched` puts every waiting writer's put into one \
         transaction per commit. Medians over the runs.\n"
    );
    if let Some((runs, m)) = probe.get(&()) {
        let _ = writeln!(
            md,
            "The disk itself (append 128 B and `fdatasync`, one at a time, {runs} probes): p50 \
             {} µs, p99 {} µs, {} syncs/s.\n",
            fmt_num(m[0], 0),
            fmt_num(m[1], 0),
            fmt_num(m[2], 0)
        );
    }
    let mut concurrencies: Vec<u64> = cells.keys().map(|(_, c)| *c).collect();
    concurrencies.sort_unstable();
    concurrencies.dedup();
    let mut header = "| engine |".to_string();
    let mut rule = "|---|".to_string();
    for c in &concurrencies {
        let _ = write!(header, " {c} writers: ops/s | p50 / p99 µs |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    let mut engines: Vec<&str> = Vec::new();
    for (engine, _) in cells.keys() {
        if !engines.contains(&engine.as_str()) {
            engines.push(engine);
        }
    }
    let order = ["log-batch", "log-always", "redb", "redb-batched"];
    engines.sort_by_key(|e| order.iter().position(|o| o == e).unwrap_or(order.len()));
    for engine in engines {
        let mut row = format!("| {engine} |");
        for &c in &concurrencies {
            match cells.get(&(engine.to_string(), c)) {
                Some((_, m)) => {
                    let errors = m[3].unwrap_or(0.0);
                    let _ = write!(
                        row,
                        " {}{} | {} / {} |",
                        fmt_num(m[0], 0),
                        if errors > 0.0 { " (errors)" } else { "" },
                        fmt_num(m[1], 0),
                        fmt_num(m[2], 0)
                    );
                }
                None => row.push_str(" – | – |"),
            }
        }
        let _ = writeln!(md, "{row}");
    }
    md.push('\n');
}

/// The figures of an earlier `BENCHMARKS.md` as JSON lines of kind `previous` (one per system
/// and cell of its throughput and latency tables) and one of kind `previous_run` (its date and
/// ringleader version), so that the next report shows them beside its own.
pub fn previous_lines(markdown: &str) -> Vec<Json> {
    let mut out = Vec::new();
    let date = markdown.lines().find_map(|l| {
        l.strip_prefix("Written by `scripts/bench.sh` on ")
            .and_then(|rest| rest.split(';').next())
    });
    let version = markdown.lines().find_map(|l| {
        l.strip_prefix("- ringleader: ")
            .map(|v| v.split_whitespace().next().unwrap_or(v))
    });
    out.push(serde_json::json!({"kind": "previous_run", "date": date, "version": version}));
    // Per (workload, keys, clients, system): ops/s, p50 and p99.
    type Figures = (Option<f64>, Option<f64>, Option<f64>);
    let mut figures: BTreeMap<(String, String, u64, String), Figures> = BTreeMap::new();
    let mut section = "";
    let mut columns: Vec<String> = Vec::new();
    for line in markdown.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            section = if heading.starts_with("Throughput") {
                "throughput"
            } else if heading.starts_with("Latency") {
                "latency"
            } else {
                ""
            };
            columns.clear();
            continue;
        }
        if section.is_empty() || !line.starts_with('|') {
            continue;
        }
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        if cells.first().map(String::as_str) == Some("workload") {
            columns = cells;
            continue;
        }
        if columns.is_empty()
            || cells
                .iter()
                .all(|c| c.starts_with("--") || c.starts_with(":-") || c.ends_with("-:"))
        {
            continue;
        }
        let workload = match cells[0].as_str() {
            w if w.starts_with("write") => "write",
            w if w.starts_with("read") => "read",
            w => w,
        }
        .to_string();
        let (Some(distribution), Some(concurrency)) = (
            cells.get(1).cloned(),
            cells.get(2).and_then(|c| c.parse::<u64>().ok()),
        ) else {
            continue;
        };
        for (name, heading) in SYSTEMS {
            let Some(i) = columns.iter().position(|c| c == heading) else {
                continue;
            };
            let Some(text) = cells.get(i) else { continue };
            let entry = figures
                .entry((
                    workload.clone(),
                    distribution.clone(),
                    concurrency,
                    name.to_string(),
                ))
                .or_default();
            if section == "throughput" {
                entry.0 = text.parse().ok();
            } else if let Some((p50, p99)) = text.split_once('/') {
                entry.1 = p50.trim().parse().ok();
                entry.2 = p99.trim().parse().ok();
            }
        }
    }
    for ((workload, distribution, concurrency, system), (ops, p50, p99)) in figures {
        if ops.is_none() && p50.is_none() {
            continue;
        }
        out.push(
            serde_json::json!({"kind": "previous", "system": system, "workload": workload,
            "distribution": distribution, "concurrency": concurrency, "ops_per_sec": ops,
            "p50_us": p50, "p99_us": p99}),
        );
    }
    out
}
