//! The view-leader section of `BENCHMARKS.md`, from the lines of `ringleader-bench failover`
//! (`"kind": "failover"`) and `ringleader-bench vl-throughput` (`"kind": "viewleader_cell"`),
//! and [`splice`], which puts it into an existing report without touching its other sections
//! (for a run whose results directory holds the view-leader section alone).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ringleader::tools::bench::report::median;
use serde_json::Value as Json;

/// The section's heading; [`splice`] replaces the section that starts with it.
pub const HEADING: &str = "## View leader: failover, and one member against three";
/// The names of the section's `setting` lines (listed under "Machine and versions").
pub const SETTING_PREFIXES: [&str; 2] = ["View-leader ", "Load average during viewleader"];
/// The setting with the section's load averages.
const LOAD_SETTING: &str = "Load average during viewleader";
/// The report's list of settings, and what follows the section in a full report.
const MACHINE_HEADING: &str = "## Machine and versions";
const LOOPBACK_LINE: &str = "- Loopback round trip";
const APPENDIX_HEADING: &str = "## Profile of the hot paths";

fn kind(line: &Json) -> Option<&str> {
    line.get("kind").and_then(Json::as_str)
}

fn num(line: &Json, field: &str) -> Option<f64> {
    line.get(field).and_then(Json::as_f64)
}

/// Median, min and max of `field` over `lines`.
fn spread(lines: &[&Json], field: &str) -> Option<(f64, f64, f64)> {
    let mut values: Vec<f64> = lines.iter().filter_map(|l| num(l, field)).collect();
    let min = values.iter().copied().reduce(f64::min)?;
    let max = values.iter().copied().reduce(f64::max)?;
    Some((median(&mut values)?, min, max))
}

fn fmt_ms(value: f64) -> String {
    if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// The `- name: value` lines of the section's settings, in their order.
pub fn setting_lines(lines: &[Json]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| kind(l) == Some("setting"))
        .filter_map(|l| {
            let name = l.get("name")?.as_str()?;
            let value = l.get("value")?.as_str()?;
            SETTING_PREFIXES
                .iter()
                .any(|p| name.starts_with(p))
                .then(|| format!("- {name}: {value}"))
        })
        .collect()
}

/// The section, or `None` if `lines` hold no view-leader results.
pub fn section(lines: &[Json]) -> Option<String> {
    let kills: Vec<&Json> = lines
        .iter()
        .filter(|l| kind(l) == Some("failover"))
        .collect();
    let cells: Vec<&Json> = lines
        .iter()
        .filter(|l| kind(l) == Some("viewleader_cell"))
        .collect();
    let refreshes: Vec<&Json> = lines
        .iter()
        .filter(|l| kind(l) == Some("viewleader_refresh"))
        .collect();
    if kills.is_empty() && cells.is_empty() && refreshes.is_empty() {
        return None;
    }
    let mut md = String::new();
    let _ = writeln!(md, "{HEADING}\n");
    let _ = writeln!(
        md,
        "The view leader is a Raft group (openraft). It is off the data path: a client fetches \
         the view from the leader and caches it for a short while (a view refresh is a read the \
         leader confirms with a round of Raft heartbeats), and `setr` and `getr` go to the \
         servers directly. Servers heartbeat to the leader; locks and view changes are commands \
         committed through its log.\n"
    );
    if let Some(load) = lines.iter().find(|l| {
        kind(l) == Some("setting") && l.get("name").and_then(Json::as_str) == Some(LOAD_SETTING)
    }) {
        let _ = writeln!(
            md,
            "Machine load (1-minute load average) during this section: {}. Load generator, \
             members and servers share the machine with whatever else runs on it, so the \
             figures compare within this section.\n",
            load.get("value").and_then(Json::as_str).unwrap_or("?")
        );
    }
    if !kills.is_empty() {
        render_failover(&mut md, &kills);
    }
    if !cells.is_empty() {
        render_throughput(&mut md, &cells);
    }
    if !refreshes.is_empty() {
        render_refreshes(&mut md, &refreshes);
    }
    Some(md)
}

fn render_failover(md: &mut String, kills: &[&Json]) {
    let first = kills[0];
    let members = num(first, "members").unwrap_or(0.0);
    let servers = num(first, "servers").unwrap_or(0.0);
    let timeout = num(first, "election_timeout_ms").unwrap_or(0.0);
    let heartbeat = num(first, "raft_heartbeat_ms")
        .map(|h| format!(", Raft heartbeat every {h:.0} ms"))
        .unwrap_or_default();
    let kills_count = kills.len();
    let longest = 2.0 * timeout;
    let poll = num(first, "poll_ms").unwrap_or(20.0);
    let ttl = num(first, "view_cache_ttl_ms").unwrap_or(0.0);
    let _ = writeln!(
        md,
        "**Leader failover** (`ringleader-bench failover`): {members:.0} members, each with its \
         data dir on the disk, and {servers:.0} in-memory servers, all separate processes. \
         {kills_count} times the leader (asked by status) is killed with `SIGKILL`; the clock starts just \
         before the kill, and from then on, at once: the surviving members are asked their \
         status every {poll:.0} ms; a client with no view yet (a fresh library client, what `client \
         setr` runs) tries a `setr` through the member list, and another a `lock_get` of a lock \
         nobody holds, each replaced by a fresh client after a failed call; and a client that \
         was writing before the kill keeps writing, one `setr` after another (it refreshes its \
         view every {ttl:.0} ms, and while no member leads it goes on with the view it holds: a \
         replica checks every request's epoch). Then the killed \
         member is started again on its data dir, and the next kill waits until it has caught \
         up and the servers' view is settled. Election timeout (`--election-timeout-ms`): \
         {timeout:.0} ms{heartbeat}. openraft 0.9 draws each member's timeout once, when the \
         member starts, between {timeout:.0} and {longest:.0} ms, and a follower that knows a \
         leader waits out that leader's lease (the longest timeout, {longest:.0} ms) on top of \
         its own before it stands: it stands {:.0}–{:.0} ms after the last heartbeat it heard, \
         and that is most of the figures below.\n",
        3.0 * timeout,
        4.0 * timeout,
    );
    let _ = writeln!(
        md,
        "| from the kill until (ms) | median | min | max |\n|---|---:|---:|---:|"
    );
    let rows = [
        (
            "elected_ms",
            "a surviving member says it leads, at a higher term",
        ),
        (
            "setr_ms",
            "a `setr` succeeds through the member list (a client with no view yet)",
        ),
        (
            "lock_ms",
            "a `lock_get` is granted (a command committed by the new leader)",
        ),
        (
            "writer_gap_ms",
            "a client that keeps writing: its longest time between two successful writes",
        ),
        (
            "caught_up_ms",
            "the restarted member applied all the leader has (from its start)",
        ),
    ];
    for (field, label) in rows {
        if let Some((median, min, max)) = spread(kills, field) {
            let _ = writeln!(
                md,
                "| {label} | {} | {} | {} |",
                fmt_ms(median),
                fmt_ms(min),
                fmt_ms(max)
            );
        }
    }
    let total = |field: &str| -> f64 { kills.iter().filter_map(|l| num(l, field)).sum() };
    let epoch_changes = kills
        .iter()
        .filter(|l| {
            let (before, after) = (num(l, "epoch_before"), num(l, "epoch_after"));
            before.is_some() && after.is_some() && before != after
        })
        .count();
    let _ = writeln!(
        md,
        "\nOver the {} kills: calls that failed while no member led (each tried again by a fresh \
         client) {:.0} `setr`{} and {:.0} `lock_get`{}; the writing client's failed writes \
         {:.0}{}; the servers' view changed epoch in {epoch_changes} of them (a server whose \
         lease ran out while no member led).\n",
        kills.len(),
        total("setr_failed_calls"),
        by_kind(kills, "setr_errors"),
        total("lock_failed_calls"),
        by_kind(kills, "lock_errors"),
        total("writer_failed"),
        by_kind(kills, "writer_errors"),
    );
}

/// ` (KIND N, ...)`: the failed calls of `field` (`{"KIND": {"count": N, ...}}` per kill) by
/// the kind of their error, summed over the kills; empty if none.
fn by_kind(kills: &[&Json], field: &str) -> String {
    let mut counts: BTreeMap<&str, f64> = BTreeMap::new();
    for kill in kills {
        if let Some(kinds) = kill.get(field).and_then(Json::as_object) {
            for (kind, tally) in kinds {
                *counts.entry(kind.as_str()).or_default() += num(tally, "count").unwrap_or(0.0);
            }
        }
    }
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{kind} {n:.0}"))
        .collect();
    format!(" ({})", parts.join(", "))
}

/// Medians per (workload order, workload, clients) and member count.
type Groups = BTreeMap<(usize, String, u64), BTreeMap<u64, Medians>>;

#[derive(Default)]
struct Medians {
    ops_per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    runs: usize,
    errors: f64,
    /// ops/s by run, for the ratios of the runs measured side by side.
    by_run: BTreeMap<u64, f64>,
}

/// Median, min and max over the runs both groups measured of `group`'s ops/s over `baseline`'s
/// in the same run.
fn paired_ratios(group: &Medians, baseline: &Medians) -> Option<(f64, f64, f64)> {
    let mut ratios: Vec<f64> = group
        .by_run
        .iter()
        .filter_map(|(run, ops)| {
            let base = baseline.by_run.get(run)?;
            (*base > 0.0).then(|| ops / base)
        })
        .collect();
    let min = ratios.iter().copied().reduce(f64::min)?;
    let max = ratios.iter().copied().reduce(f64::max)?;
    Some((median(&mut ratios)?, min, max))
}

fn workload_label(workload: &str) -> String {
    match workload {
        "write" => "write (setr)".into(),
        "read" => "read (getr)".into(),
        other => other.to_string(),
    }
}

fn render_throughput(md: &mut String, cells: &[&Json]) {
    let mut runs: BTreeMap<(usize, String, u64), BTreeMap<u64, Vec<&Json>>> = BTreeMap::new();
    for cell in cells {
        let workload = cell.get("workload").and_then(Json::as_str).unwrap_or("?");
        let order = ["write", "read"]
            .iter()
            .position(|w| *w == workload)
            .unwrap_or(usize::MAX);
        let key = (
            order,
            workload.to_string(),
            num(cell, "concurrency").unwrap_or(0.0) as u64,
        );
        let members = num(cell, "members").unwrap_or(0.0) as u64;
        runs.entry(key)
            .or_default()
            .entry(members)
            .or_default()
            .push(cell);
    }
    let groups: Groups = runs
        .into_iter()
        .map(|(key, by_members)| {
            let medians = by_members
                .into_iter()
                .map(|(members, lines)| {
                    let med = |field: &str| {
                        let mut values: Vec<f64> =
                            lines.iter().filter_map(|l| num(l, field)).collect();
                        median(&mut values).unwrap_or(0.0)
                    };
                    let medians = Medians {
                        ops_per_sec: med("ops_per_sec"),
                        p50_us: med("p50_us"),
                        p99_us: med("p99_us"),
                        runs: lines.len(),
                        errors: lines.iter().filter_map(|l| num(l, "errors")).sum(),
                        by_run: lines
                            .iter()
                            .filter_map(|l| Some((num(l, "run")? as u64, num(l, "ops_per_sec")?)))
                            .collect(),
                    };
                    (members, medians)
                })
                .collect();
            (key, medians)
        })
        .collect();
    let mut counts: Vec<u64> = groups.values().flat_map(|g| g.keys().copied()).collect();
    counts.sort_unstable();
    counts.dedup();
    let runs = groups
        .values()
        .flat_map(|g| g.values().map(|m| m.runs))
        .max()
        .unwrap_or(0);
    let baseline = counts.first().copied().unwrap_or(1);
    let name = |n: u64| {
        if n == 1 {
            "1 member".to_string()
        } else {
            format!("{n} members")
        }
    };
    let _ = writeln!(
        md,
        "**Throughput with one view-leader member against three** (`ringleader-bench \
         vl-throughput`): two clusters of 5 in-memory servers, alike but for their view leader \
         ({}), up at the same time, measured cell by cell in turn (which goes first alternating), the \
         library client's linearizable `setr` and `getr` on uniform keys; ops/s and latency are \
         medians of {runs} runs. The ratios divide by the cluster with {}: the first divides the \
         medians, the second is the median (and range) over the runs of the ratio of the two cells measured one after the other \
         in the same run, which takes out the drift of the machine's other load from run to \
         run. The errors column counts failed operations in all runs.\n",
        counts
            .iter()
            .map(|n| name(*n))
            .collect::<Vec<_>>()
            .join(", "),
        name(baseline)
    );
    let mut header = "| workload | clients |".to_string();
    let mut rule = "|---|---:|".to_string();
    for n in &counts {
        let _ = write!(header, " {} (ops/s) |", name(*n));
        rule.push_str("---:|");
    }
    for n in counts.iter().filter(|n| **n != baseline) {
        let _ = write!(
            header,
            " {n} / {baseline} | {n} / {baseline} in the same run (range) |"
        );
        rule.push_str("---:|---:|");
    }
    for n in &counts {
        let _ = write!(header, " {} p50 / p99 µs |", name(*n));
        rule.push_str("---:|");
    }
    header.push_str(" errors |");
    rule.push_str("---:|");
    let _ = writeln!(md, "{header}\n{rule}");
    for ((_, workload, clients), by_members) in &groups {
        let mut row = format!("| {} | {clients} |", workload_label(workload));
        for n in &counts {
            let cell = by_members
                .get(n)
                .map(|m| format!("{:.0}", m.ops_per_sec))
                .unwrap_or_else(|| "–".into());
            let _ = write!(row, " {cell} |");
        }
        for n in counts.iter().filter(|n| **n != baseline) {
            let ratio = match (by_members.get(n), by_members.get(&baseline)) {
                (Some(m), Some(b)) if b.ops_per_sec > 0.0 => {
                    format!("{:.2}×", m.ops_per_sec / b.ops_per_sec)
                }
                _ => "–".into(),
            };
            let paired = match (by_members.get(n), by_members.get(&baseline)) {
                (Some(m), Some(b)) => paired_ratios(m, b)
                    .map(|(median, min, max)| format!("{median:.2}× ({min:.2}–{max:.2})"))
                    .unwrap_or_else(|| "–".into()),
                _ => "–".into(),
            };
            let _ = write!(row, " {ratio} | {paired} |");
        }
        for n in &counts {
            let cell = by_members
                .get(n)
                .map(|m| format!("{:.0} / {:.0}", m.p50_us, m.p99_us))
                .unwrap_or_else(|| "–".into());
            let _ = write!(row, " {cell} |");
        }
        let errors: Vec<String> = counts
            .iter()
            .filter_map(|n| {
                let errors = by_members.get(n)?.errors;
                (errors > 0.0).then(|| format!("{}: {errors:.0}", name(*n)))
            })
            .collect();
        let errors = if errors.is_empty() {
            "0".to_string()
        } else {
            errors.join(", ")
        };
        let _ = writeln!(row, " {errors} |");
        md.push_str(&row);
    }
    md.push('\n');
}

fn render_refreshes(md: &mut String, refreshes: &[&Json]) {
    let mut by_members: BTreeMap<u64, Vec<&Json>> = BTreeMap::new();
    for line in refreshes {
        by_members
            .entry(num(line, "members").unwrap_or(0.0) as u64)
            .or_default()
            .push(line);
    }
    let _ = writeln!(
        md,
        "The one thing the data path asks of the view leader, a view refresh (`query_servers`: \
         with more than one member the leader confirms it still leads with a round of \
         heartbeats before it answers), timed alone in each run, one refresh after another on \
         one connection; medians over the runs:\n"
    );
    let _ = writeln!(
        md,
        "| view leader | refreshes per run | refreshes/s | p50 µs | p99 µs | errors |\n|---|---:|---:|---:|---:|---:|"
    );
    for (members, lines) in by_members {
        let med = |field: &str| {
            let mut values: Vec<f64> = lines.iter().filter_map(|l| num(l, field)).collect();
            median(&mut values)
                .map(|v| format!("{v:.0}"))
                .unwrap_or_else(|| "–".into())
        };
        let errors: f64 = lines.iter().filter_map(|l| num(l, "errors")).sum();
        let name = if members == 1 {
            "1 member".to_string()
        } else {
            format!("{members} members")
        };
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {errors:.0} |",
            med("ops"),
            med("ops_per_sec"),
            med("p50_us"),
            med("p99_us")
        );
    }
    md.push('\n');
}

/// The line range `[start, end)` of the level-2 section whose heading starts with `heading`.
fn section_range(lines: &[&str], heading: &str) -> Option<(usize, usize)> {
    let start = lines.iter().position(|l| l.starts_with(heading))?;
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with("## "))
        .map_or(lines.len(), |i| start + 1 + i);
    Some((start, end))
}

/// `existing` (a whole BENCHMARKS.md) with its view-leader section replaced by `section` (or
/// inserted before the appendix, or at the end) and its view-leader settings under "Machine and
/// versions" replaced by `settings`; every other line as it was.
pub fn splice(existing: &str, section: Option<&str>, settings: &[String]) -> String {
    let mut lines: Vec<String> = existing.lines().map(str::to_string).collect();
    // The settings.
    let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
    if let Some((start, end)) = section_range(&borrowed, MACHINE_HEADING) {
        let is_ours = |line: &str| {
            SETTING_PREFIXES
                .iter()
                .any(|p| line.starts_with(&format!("- {p}")))
        };
        let kept: Vec<String> = lines[start..end]
            .iter()
            .filter(|l| !is_ours(l))
            .cloned()
            .collect();
        let at = kept
            .iter()
            .position(|l| l.starts_with(LOOPBACK_LINE))
            .or_else(|| {
                kept.iter()
                    .rposition(|l| l.starts_with("- "))
                    .map(|i| i + 1)
            })
            .unwrap_or(kept.len());
        let mut machine = kept;
        machine.splice(at..at, settings.iter().cloned());
        lines.splice(start..end, machine);
    }
    // The section.
    let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
    let old = section_range(&borrowed, "## View leader");
    if let Some((start, end)) = old {
        lines.drain(start..end);
    }
    if let Some(section) = section {
        let borrowed: Vec<&str> = lines.iter().map(String::as_str).collect();
        let at = old.map(|(start, _)| start).unwrap_or_else(|| {
            borrowed
                .iter()
                .position(|l| l.starts_with(APPENDIX_HEADING))
                .unwrap_or(lines.len())
        });
        let mut new: Vec<String> = section.lines().map(str::to_string).collect();
        if at < lines.len() && new.last().is_some_and(|l| !l.is_empty()) {
            new.push(String::new());
        }
        if at == lines.len() && lines.last().is_some_and(|l| !l.is_empty()) {
            new.insert(0, String::new());
        }
        lines.splice(at..at, new);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kill(run: u64, elected: f64, setr: f64) -> Json {
        json!({"kind": "failover", "run": run, "members": 3, "servers": 5,
               "election_timeout_ms": 1000, "raft_heartbeat_ms": 150, "poll_ms": 20, "view_cache_ttl_ms": 500, "killed": 1,
               "elected_ms": elected, "setr_ms": setr, "lock_ms": setr + 1.0,
               "writer_gap_ms": 900.0, "caught_up_ms": 300.0, "setr_failed_calls": 1,
               "lock_failed_calls": 0, "writer_failed": 0, "epoch_before": 3, "epoch_after": 3,
               "setr_errors": {"not_leader": {"count": 1, "first": "x"}}})
    }

    fn cell(members: u64, workload: &str, clients: u64, run: u64, ops: f64) -> Json {
        json!({"kind": "viewleader_cell", "members": members, "workload": workload,
               "concurrency": clients, "run": run, "ops_per_sec": ops, "p50_us": 100,
               "p99_us": 300, "errors": 0})
    }

    #[test]
    fn failover_rows_are_median_min_and_max_over_the_kills() {
        let lines = vec![
            json!({"kind": "setting", "name": "Load average during viewleader",
                   "value": "5.1 at the start"}),
            kill(1, 1500.0, 1600.0),
            kill(2, 1100.0, 1200.0),
            kill(3, 1900.0, 2000.0),
        ];
        let md = section(&lines).unwrap();
        assert!(md.contains(
            "| a surviving member says it leads, at a higher term | 1500 | 1100 | 1900 |"
        ));
        assert!(md.contains(
            "Election timeout (`--election-timeout-ms`): 1000 ms, Raft heartbeat every 150 ms."
        ));
        assert!(md.contains("it stands 3000–4000 ms after the last heartbeat"));
        assert!(md.contains("3 `setr` (not_leader 3) and 0 `lock_get`;"));
        assert!(md.contains("changed epoch in 0 of them"));
    }

    #[test]
    fn throughput_rows_divide_three_members_by_one() {
        let lines = vec![
            cell(1, "write", 16, 1, 1000.0),
            cell(3, "write", 16, 1, 900.0),
            cell(1, "write", 16, 2, 1200.0),
            cell(3, "write", 16, 2, 1100.0),
            cell(1, "read", 1, 1, 500.0),
            cell(3, "read", 1, 1, 500.0),
        ];
        let md = section(&lines).unwrap();
        // Medians 1100 and 1000; the runs' own ratios 0.90 and 0.92.
        assert!(md.contains(
            "| write (setr) | 16 | 1100 | 1000 | 0.91× | 0.91× (0.90–0.92) | 100 / 300 | 100 / 300 | 0 |"
        ));
        assert!(md.contains("| read (getr) | 1 | 500 | 500 | 1.00× | 1.00× (1.00–1.00) |"));
        // Writes come before reads.
        assert!(md.find("write (setr)").unwrap() < md.find("read (getr)").unwrap());
        assert!(section(&[json!({"kind": "memory"})]).is_none());
        let refreshes = vec![
            json!({"kind": "viewleader_refresh", "members": 1, "run": 1, "ops": 500,
                   "ops_per_sec": 5000, "p50_us": 150, "p99_us": 400, "errors": 0}),
            json!({"kind": "viewleader_refresh", "members": 3, "run": 1, "ops": 500,
                   "ops_per_sec": 2000, "p50_us": 450, "p99_us": 900, "errors": 0}),
        ];
        let md = section(&refreshes).unwrap();
        assert!(md.contains("| 3 members | 500 | 2000 | 450 | 900 | 0 |"));
    }

    #[test]
    fn splicing_replaces_only_the_view_leader_parts() {
        let existing = "# Benchmarks\n\n## Machine and versions\n\n- CPU: x\n\
                        - View-leader failover: old\n- Loopback round trip: 19 µs\n\n\
                        ## Targets\n\nfigures\n\n## View leader: old heading\n\nold\n\n\
                        ## Profile of the hot paths: before and after\n\nprofile\n";
        let settings = vec!["- View-leader failover: new".to_string()];
        let out = splice(
            existing,
            Some("## View leader: new\n\nnew figures\n"),
            &settings,
        );
        assert_eq!(
            out,
            "# Benchmarks\n\n## Machine and versions\n\n- CPU: x\n\
             - View-leader failover: new\n- Loopback round trip: 19 µs\n\n\
             ## Targets\n\nfigures\n\n## View leader: new\n\nnew figures\n\n\
             ## Profile of the hot paths: before and after\n\nprofile\n"
        );
        // Without a section of its own yet, it goes before the appendix.
        let fresh = "# B\n\n## Machine and versions\n\n- CPU: x\n\n## Memory\n\nm\n\n\
                     ## Profile of the hot paths: x\n\np\n";
        let out = splice(fresh, Some("## View leader: new\n\nv\n"), &settings);
        assert_eq!(
            out,
            "# B\n\n## Machine and versions\n\n- CPU: x\n- View-leader failover: new\n\n\
             ## Memory\n\nm\n\n## View leader: new\n\nv\n\n## Profile of the hot paths: x\n\np\n"
        );
        // At the end when there is no appendix.
        let out = splice(
            "# B\n\n## Memory\n\nm\n",
            Some("## View leader: new\n\nv\n"),
            &[],
        );
        assert_eq!(out, "# B\n\n## Memory\n\nm\n\n## View leader: new\n\nv\n");
    }
}
