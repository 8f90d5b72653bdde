//! `client sim`: a campaign of simulated runs. It runs seeds `S..S+N` of [`super::run`], `J` at a
//! time, each on a plain OS thread of its own (a turmoil simulation is not `Send`, so each thread
//! builds and runs its own; outcomes come back over a channel), and sums them up: seeds run,
//! failures with their first violations and the command that replays each, seeds per second,
//! simulated time, operations, faults injected, what the servers' disks went through (machine
//! crashes, unsynced bytes dropped, restarts from disk and the keys they recovered; see
//! [`super::run`] for what the simulated disks model and what they leave out), and what the view
//! leader's Raft group went through (member crashes, majorities lost and the calls refused
//! meanwhile, leaders elected, snapshots). Traces go to
//! [`TRACE_DIR`]: every run's with `--trace`, the failing seeds' otherwise. With `--shrink`, a
//! failing seed's schedule is cut down one fault at a time to the smallest that still fails
//! ([`shrink`]).
//!
//! A run's promise is the store's: an acknowledged write survives as long as, for its key, one
//! replica that held it keeps its disk. So a schedule may crash every replica of a key at once
//! ([`FaultKind::Restart`] of several servers: their disks survive), but never wipes two disks
//! at overlapping times ([`FaultKind::RestartWiped`]). The default faults
//! ([`FaultKind::HANDLED`]) are every kind.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use super::run::{
    draw_schedule, run as run_seed, DiskStats, Fault, FaultKind, Outcome, RaftStats, SimOptions,
};
use crate::cli::output::Output;
use crate::errinput;
use crate::error::{Error, Result};

/// Most seeds one campaign may run.
pub const SEEDS_PER_CALL_MAX: u64 = 100_000;
/// Most seeds run at once (threads).
pub const JOBS_MAX: u64 = 64;
/// Stack of each worker thread: as much as a main thread gets, since a simulation runs every
/// host's futures on it.
pub const WORKER_STACK_BYTES: usize = 8 * 1024 * 1024;
/// Where the traces go, relative to the working directory.
pub const TRACE_DIR: &str = "target/sim";
/// Violations shown per failing seed in the summary (the trace file has them all).
pub const VIOLATIONS_SHOWN_MAX: usize = 3;
/// Reruns spent shrinking one failing seed's schedule at most.
pub const SHRINK_RERUNS_MAX: usize = 24;
/// Without a terminal, a progress line at least this often (plus one for every failure).
pub const PROGRESS_LINE_INTERVAL_S: u64 = 10;
/// Refresh of the progress bar's clock between two seeds.
pub const PROGRESS_TICK_MS: u64 = 500;

/// Which fault kinds the runs draw from: `handled`, `all`, `none`, or names separated by commas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultList(pub Vec<FaultKind>);

impl FaultList {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text.trim() {
            "handled" => return Ok(Self(FaultKind::HANDLED.to_vec())),
            "all" => return Ok(Self(FaultKind::ALL.to_vec())),
            "none" | "" => return Ok(Self(Vec::new())),
            _ => {}
        }
        let mut kinds = Vec::new();
        for name in text.split(',').map(str::trim) {
            match FaultKind::parse(name) {
                Some(kind) => kinds.push(kind),
                None => {
                    let known: Vec<&str> = FaultKind::ALL.iter().map(|k| k.name()).collect();
                    return Err(format!(
                        "unknown fault {name:?}; give handled, all, none, or some of: {}",
                        known.join(", ")
                    ));
                }
            }
        }
        Ok(Self(kinds))
    }

    /// The names, as `--faults` takes them back.
    pub fn names(&self) -> String {
        if self.0.is_empty() {
            return "none".to_string();
        }
        let names: Vec<&str> = self.0.iter().map(|kind| kind.name()).collect();
        names.join(",")
    }
}

/// The `client sim` flags.
#[derive(Args, Debug, Clone)]
pub struct SimArgs {
    /// How many seeds to run.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(1..=SEEDS_PER_CALL_MAX))]
    pub seeds: u64,
    /// First seed (default: a random one, printed).
    #[arg(long)]
    pub start: Option<u64>,
    /// Faults the schedules draw from: handled, all, none, or kinds separated by commas
    /// (delay, client-cut, short-pause, cut-link, one-way-cut, isolate, isolate-viewleader,
    /// split-viewleader, pause-viewleader, long-pause, restart, restart-viewleader,
    /// restart-wiped).
    #[arg(long, default_value = "handled", value_parser = FaultList::parse)]
    pub faults: FaultList,
    /// Seeds run at once, one thread each (default: the available cores).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=JOBS_MAX))]
    pub jobs: Option<u64>,
    /// Write every run's trace to target/sim/seed-S.trace (without it: the failing seeds' only).
    #[arg(long)]
    pub trace: bool,
    /// For each failing seed, rerun its schedule without one fault at a time and print the
    /// smallest schedule that still fails.
    #[arg(long)]
    pub shrink: bool,
}

/// Which traces a campaign writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traces {
    Every,
    Failures,
}

/// One campaign: which seeds, under which faults, how many at once, what to write.
#[derive(Clone, Debug)]
pub struct Campaign {
    pub start: u64,
    pub seeds: u64,
    pub faults: Vec<FaultKind>,
    pub jobs: usize,
    pub traces: Traces,
    pub trace_dir: PathBuf,
    pub shrink: bool,
}

impl Campaign {
    /// The campaign the flags ask for; a missing start is drawn at random.
    pub fn from_args(args: &SimArgs) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let jobs = match args.jobs {
            Some(jobs) => jobs as usize,
            None => cores.min(JOBS_MAX as usize),
        };
        let campaign = Campaign {
            // Short seeds are easier to type back.
            start: args
                .start
                .unwrap_or_else(|| u64::from(rand::random::<u32>())),
            seeds: args.seeds,
            faults: args.faults.0.clone(),
            jobs,
            traces: if args.trace {
                Traces::Every
            } else {
                Traces::Failures
            },
            trace_dir: PathBuf::from(TRACE_DIR),
            shrink: args.shrink,
        };
        campaign.validate()?;
        Ok(campaign)
    }

    fn validate(&self) -> Result<()> {
        if self.seeds == 0 || self.seeds > SEEDS_PER_CALL_MAX {
            return Err(errinput!(
                "--seeds must be 1 to {SEEDS_PER_CALL_MAX}, not {}",
                self.seeds
            ));
        }
        if self.jobs == 0 || self.jobs as u64 > JOBS_MAX {
            return Err(errinput!(
                "--jobs must be 1 to {JOBS_MAX}, not {}",
                self.jobs
            ));
        }
        if self.start.checked_add(self.seeds - 1).is_none() {
            return Err(errinput!(
                "--start {} with --seeds {} runs past the largest seed, {}",
                self.start,
                self.seeds,
                u64::MAX
            ));
        }
        Ok(())
    }

    /// The options of one seed's run.
    pub fn options(&self, seed: u64) -> SimOptions {
        let mut options = SimOptions::new(seed);
        options.faults = self.faults.clone();
        options
    }

    /// The seeds of the campaign, in order.
    fn seed(&self, index: u64) -> u64 {
        self.start + index
    }
}

/// What shrinking a failing seed's schedule found.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The faults of the drawn schedule.
    pub drawn: usize,
    /// The smallest schedule found that still fails.
    pub schedule: Vec<Fault>,
    /// Its violations.
    pub violations: Vec<String>,
    pub reruns: usize,
    /// Where its trace went.
    pub trace: Option<PathBuf>,
}

/// One failing seed.
#[derive(Clone, Debug)]
pub struct Failure {
    pub seed: u64,
    /// The first violations, at most [`VIOLATIONS_SHOWN_MAX`].
    pub violations: Vec<String>,
    pub violation_count: usize,
    pub replay: String,
    pub trace: Option<PathBuf>,
    pub shrunk: Option<Shrunk>,
}

/// What a campaign found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub start: u64,
    pub seeds: u64,
    pub faults: Vec<FaultKind>,
    pub jobs: usize,
    pub failures: Vec<Failure>,
    /// Failing seeds per kind of violation (one seed counts once per kind).
    pub violation_kinds: BTreeMap<String, u64>,
    pub operations: u64,
    pub simulated_ms: u64,
    pub faults_injected: BTreeMap<FaultKind, u64>,
    /// What the servers' disks went through, over every seed.
    pub disks: DiskStats,
    /// What the view leader's Raft group went through, over every seed.
    pub raft: RaftStats,
    pub wall: Duration,
    /// The seed that took the longest, and how long (wall).
    pub slowest: Option<(u64, Duration)>,
    pub trace_dir: PathBuf,
    pub traces_written: u64,
    /// Traces that could not be written, each in a sentence.
    pub trace_errors: Vec<String>,
}

impl Summary {
    pub fn passed(&self) -> u64 {
        self.seeds - self.failures.len() as u64
    }

    pub fn seeds_per_s(&self) -> f64 {
        self.seeds as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    pub fn simulated_hours(&self) -> f64 {
        self.simulated_ms as f64 / 3_600_000.0
    }
}

/// Where a campaign stands after a seed, for the progress display.
#[derive(Clone, Debug)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
    pub failed: u64,
    pub elapsed: Duration,
    /// The seed just finished, and its violations' first line if it failed.
    pub seed: u64,
    pub failure: Option<String>,
}

/// One seed's result, sent back by a worker.
struct SeedResult {
    options: SimOptions,
    outcome: Outcome,
    wall: Duration,
    shrunk: Option<(Shrunk, Outcome)>,
}

/// Runs one seed, a panic counting as a violation (so that one bad seed cannot end the campaign
/// without its seed and replay command).
fn run_caught(options: &SimOptions) -> Outcome {
    match panic::catch_unwind(AssertUnwindSafe(|| run_seed(options))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            Outcome {
                seed: options.seed,
                trace: Vec::new(),
                trace_hash: 0,
                operations: 0,
                faults: BTreeMap::new(),
                violations: vec![format!("the run panicked: {message}")],
                simulated_ms: 0,
                disks: DiskStats::default(),
                raft: RaftStats::default(),
                leaders: Vec::new(),
                views: Vec::new(),
            }
        }
    }
}

/// The kind of a violation, for counting: the checks of [`super::checks`] begin each sentence
/// with it.
pub fn violation_kind(violation: &str) -> String {
    const KINDS: [(&str, &str); 12] = [
        ("linearizability", "linearizability"),
        ("appends", "appends"),
        ("a stale read", "stale read"),
        ("fencing", "fencing"),
        ("two holders", "two holders"),
        ("epochs", "epochs"),
        ("quorum", "quorum"),
        ("raft", "raft"),
        ("liveness", "liveness"),
        ("replicas of", "replicas disagree"),
        ("the simulation stopped", "simulation stopped"),
        ("the run panicked", "panic"),
    ];
    for (prefix, kind) in KINDS {
        if violation.starts_with(prefix) {
            return kind.to_string();
        }
    }
    let head = violation.split(':').next().unwrap_or(violation);
    head.chars().take(40).collect()
}

/// Cuts a failing run's schedule down: without one fault at a time, keeping each removal after
/// which the run still fails with a violation of the same kind as the original's first, within
/// [`SHRINK_RERUNS_MAX`] reruns. Returns what it found and the smallest failing run's outcome.
pub fn shrink(options: &SimOptions, failed: &Outcome) -> (Shrunk, Outcome) {
    let wanted = failed
        .violations
        .first()
        .map(|v| violation_kind(v))
        .unwrap_or_default();
    let still_fails = |outcome: &Outcome| {
        outcome
            .violations
            .iter()
            .any(|v| violation_kind(v) == wanted)
    };
    let mut schedule = draw_schedule(options);
    let drawn = schedule.len();
    let mut smallest = failed.clone();
    let mut reruns = 0;
    let mut n = 0;
    while n < schedule.len() && reruns < SHRINK_RERUNS_MAX {
        let mut candidate = schedule.clone();
        candidate.remove(n);
        let mut trial = options.clone();
        trial.schedule = Some(candidate.clone());
        let outcome = run_caught(&trial);
        reruns += 1;
        if still_fails(&outcome) {
            schedule = candidate;
            smallest = outcome;
        } else {
            n += 1;
        }
    }
    let shrunk = Shrunk {
        drawn,
        schedule,
        violations: smallest.violations.clone(),
        reruns,
        trace: None,
    };
    (shrunk, smallest)
}

/// Writes one run's trace: the seed, the options, the schedule and the verdict on top, then one
/// event per line.
fn write_trace(path: &Path, options: &SimOptions, outcome: &Outcome) -> std::io::Result<()> {
    let mut text = String::new();
    let _ = writeln!(text, "# seed {}", options.seed);
    let _ = writeln!(text, "# options {options:?}");
    let _ = writeln!(text, "# replay: {}", options.replay_command());
    let schedule = draw_schedule(options);
    let _ = writeln!(text, "# schedule: {} faults", schedule.len());
    for fault in &schedule {
        let _ = writeln!(text, "#   {fault}");
    }
    let _ = writeln!(
        text,
        "# outcome: {} operations, {} simulated ms, trace hash {:016x}, {}",
        outcome.operations,
        outcome.simulated_ms,
        outcome.trace_hash,
        if outcome.passed() {
            "passed".to_string()
        } else {
            format!("{} violations", outcome.violations.len())
        }
    );
    for violation in &outcome.violations {
        let _ = writeln!(text, "# violation: {violation}");
    }
    for event in &outcome.trace {
        text.push_str(event);
        text.push('\n');
    }
    std::fs::write(path, text)
}

/// Runs the campaign: every seed once, `campaign.jobs` at a time; `progress` hears of every seed
/// as it finishes. Traces go to `campaign.trace_dir`.
pub fn campaign(campaign: &Campaign, progress: &mut dyn FnMut(&Progress)) -> Result<Summary> {
    campaign.validate()?;
    std::fs::create_dir_all(&campaign.trace_dir).map_err(|err| {
        Error::Internal(format!(
            "cannot create {} for the traces: {err}",
            campaign.trace_dir.display()
        ))
    })?;
    let began = Instant::now();
    let mut summary = Summary {
        start: campaign.start,
        seeds: campaign.seeds,
        faults: campaign.faults.clone(),
        jobs: campaign.jobs.min(campaign.seeds as usize),
        trace_dir: campaign.trace_dir.clone(),
        ..Default::default()
    };
    let next = AtomicU64::new(0);
    // The simulated nodes' logs would interleave with the progress, stamped with the wall clock
    // and not the simulated one: dropped on the workers' threads unless RUST_LOG asks for them.
    let quiet = std::env::var_os("RUST_LOG").is_none();
    let (sender, results) = mpsc::channel::<SeedResult>();
    std::thread::scope(|scope| -> Result<()> {
        for n in 0..summary.jobs {
            let sender = sender.clone();
            let next = &next;
            std::thread::Builder::new()
                .name(format!("sim-{n}"))
                .stack_size(WORKER_STACK_BYTES)
                .spawn_scoped(scope, move || {
                    let _quiet = quiet.then(|| {
                        tracing::subscriber::set_default(
                            tracing::subscriber::NoSubscriber::default(),
                        )
                    });
                    worker(campaign, next, sender)
                })
                .map_err(|err| Error::Internal(format!("cannot start a worker thread: {err}")))?;
        }
        drop(sender);
        let mut done = 0;
        for result in results {
            done += 1;
            collect(campaign, &mut summary, result, done, began, progress);
        }
        Ok(())
    })?;
    summary.failures.sort_by_key(|failure| failure.seed);
    summary.wall = began.elapsed();
    Ok(summary)
}

/// One worker: takes the next seed until none is left, runs it (and shrinks it if asked and it
/// failed), and sends the result back.
fn worker(campaign: &Campaign, next: &AtomicU64, sender: mpsc::Sender<SeedResult>) {
    loop {
        let index = next.fetch_add(1, Ordering::Relaxed);
        if index >= campaign.seeds {
            break;
        }
        let options = campaign.options(campaign.seed(index));
        let started = Instant::now();
        let outcome = run_caught(&options);
        let wall = started.elapsed();
        let shrunk = (campaign.shrink && !outcome.passed()).then(|| shrink(&options, &outcome));
        let result = SeedResult {
            options,
            outcome,
            wall,
            shrunk,
        };
        if sender.send(result).is_err() {
            break;
        }
    }
}

/// Adds one seed's result to the summary, writes its traces and reports progress.
fn collect(
    campaign: &Campaign,
    summary: &mut Summary,
    result: SeedResult,
    done: u64,
    began: Instant,
    progress: &mut dyn FnMut(&Progress),
) {
    let SeedResult {
        options,
        outcome,
        wall,
        shrunk,
    } = result;
    summary.operations += outcome.operations as u64;
    summary.simulated_ms += outcome.simulated_ms;
    for (kind, count) in &outcome.faults {
        *summary.faults_injected.entry(*kind).or_default() += count;
    }
    summary.disks.add(&outcome.disks);
    summary.raft.add(&outcome.raft);
    if summary.slowest.is_none_or(|(_, slowest)| wall > slowest) {
        summary.slowest = Some((outcome.seed, wall));
    }
    let mut write = |name: String, options: &SimOptions, outcome: &Outcome| {
        let path = campaign.trace_dir.join(name);
        match write_trace(&path, options, outcome) {
            Ok(()) => {
                summary.traces_written += 1;
                Some(path)
            }
            Err(err) => {
                summary
                    .trace_errors
                    .push(format!("cannot write {}: {err}", path.display()));
                None
            }
        }
    };
    let trace = (campaign.traces == Traces::Every || !outcome.passed())
        .then(|| write(format!("seed-{}.trace", outcome.seed), &options, &outcome))
        .flatten();
    let shrunk = shrunk.map(|(mut shrunk, smallest)| {
        let mut shrunk_options = options.clone();
        shrunk_options.schedule = Some(shrunk.schedule.clone());
        shrunk.trace = write(
            format!("seed-{}.shrunk.trace", outcome.seed),
            &shrunk_options,
            &smallest,
        );
        shrunk
    });
    let failure = (!outcome.passed()).then(|| {
        let mut kinds: Vec<String> = outcome
            .violations
            .iter()
            .map(|v| violation_kind(v))
            .collect();
        kinds.sort();
        kinds.dedup();
        for kind in kinds {
            *summary.violation_kinds.entry(kind).or_default() += 1;
        }
        summary.failures.push(Failure {
            seed: outcome.seed,
            violations: outcome
                .violations
                .iter()
                .take(VIOLATIONS_SHOWN_MAX)
                .cloned()
                .collect(),
            violation_count: outcome.violations.len(),
            replay: options.replay_command(),
            trace,
            shrunk,
        });
        outcome.violations[0].clone()
    });
    progress(&Progress {
        done,
        total: campaign.seeds,
        failed: summary.failures.len() as u64,
        elapsed: began.elapsed(),
        seed: outcome.seed,
        failure,
    });
}

/// `n` things, in English.
fn count(n: u64, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// The summary for people.
pub fn summary_text(summary: &Summary) -> String {
    let mut text = String::new();
    let faults = FaultList(summary.faults.clone()).names();
    let _ = writeln!(
        text,
        "sim: {} from {} (faults {faults}, --jobs {}): {} passed, {} failed",
        count(summary.seeds, "seed"),
        summary.start,
        summary.jobs,
        summary.passed(),
        summary.failures.len()
    );
    let _ = write!(
        text,
        "  wall {:.1} s, {:.2} seeds/s",
        summary.wall.as_secs_f64(),
        summary.seeds_per_s()
    );
    if let Some((seed, wall)) = summary.slowest {
        let _ = write!(text, "; slowest seed {seed} ({:.1} s)", wall.as_secs_f64());
    }
    text.push('\n');
    let _ = writeln!(
        text,
        "  simulated {:.0} s ({:.2} h) in total, {} operations",
        summary.simulated_ms as f64 / 1_000.0,
        summary.simulated_hours(),
        summary.operations
    );
    let injected: Vec<String> = summary
        .faults_injected
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    let _ = writeln!(
        text,
        "  faults injected: {}",
        if injected.is_empty() {
            "none".to_string()
        } else {
            injected.join(", ")
        }
    );
    let disks = &summary.disks;
    let _ = writeln!(
        text,
        "  disks: {} crashed ({} unsynced bytes dropped, {} kept torn); {} restarts from disk \
         recovered {} keys and {} prepared writes; {} restarts on a wiped disk",
        disks.crashes,
        disks.unsynced_bytes_dropped,
        disks.torn_bytes_kept,
        disks.restarts_from_disk,
        disks.keys_recovered,
        disks.prepared_recovered,
        disks.restarts_wiped
    );
    let raft = &summary.raft;
    let _ = writeln!(
        text,
        "  view leader: {} member crashes ({} unsynced bytes dropped, {} kept torn); a majority \
         down {} ({:.1} s, {} calls refused meanwhile); {} elected, highest term {}; {} \
         taken or installed, log purged up to index {} at most",
        raft.crashes,
        raft.unsynced_bytes_dropped,
        raft.torn_bytes_kept,
        count(raft.quorum_losses, "time"),
        raft.quorum_lost_ms as f64 / 1_000.0,
        raft.refused_without_quorum,
        count(raft.leaders, "leader"),
        raft.max_term,
        count(raft.snapshots, "snapshot"),
        raft.purged_max
    );
    if !summary.violation_kinds.is_empty() {
        let kinds: Vec<String> = summary
            .violation_kinds
            .iter()
            .map(|(kind, seeds)| format!("{kind} {seeds}"))
            .collect();
        let _ = writeln!(text, "  failing seeds by violation: {}", kinds.join(", "));
    }
    let _ = writeln!(
        text,
        "  traces: {} written to {}/",
        count(summary.traces_written, "file"),
        summary.trace_dir.display()
    );
    for error in &summary.trace_errors {
        let _ = writeln!(text, "  {error}");
    }
    for failure in &summary.failures {
        let _ = writeln!(
            text,
            "seed {} broke {}, first:",
            failure.seed,
            count(failure.violation_count as u64, "promise")
        );
        for violation in &failure.violations {
            let _ = writeln!(text, "    {violation}");
        }
        let _ = writeln!(text, "  replay: {}", failure.replay);
        if let Some(trace) = &failure.trace {
            let _ = writeln!(text, "  trace: {}", trace.display());
        }
        if let Some(shrunk) = &failure.shrunk {
            let _ = writeln!(
                text,
                "  smallest failing schedule: {} of {} ({}){}",
                shrunk.schedule.len(),
                count(shrunk.drawn as u64, "fault"),
                count(shrunk.reruns as u64, "rerun"),
                shrunk
                    .trace
                    .as_ref()
                    .map(|t| format!(", trace {}", t.display()))
                    .unwrap_or_default()
            );
            for fault in &shrunk.schedule {
                let _ = writeln!(text, "    {fault}");
            }
            if let Some(first) = shrunk.violations.first() {
                let _ = writeln!(text, "    first violation: {first}");
            }
        }
    }
    if !summary.failures.is_empty()
        && summary
            .failures
            .iter()
            .all(|failure| failure.shrunk.is_none())
    {
        let _ = writeln!(
            text,
            "(--shrink finds the smallest failing schedule of each failing seed)"
        );
    }
    text.trim_end().to_string()
}

/// The summary as one JSON document.
pub fn summary_json(summary: &Summary) -> serde_json::Value {
    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
    let failures: Vec<serde_json::Value> = summary
        .failures
        .iter()
        .map(|failure| {
            json!({
                "seed": failure.seed,
                "violations": failure.violations,
                "violation_count": failure.violation_count,
                "replay": failure.replay,
                "trace": path(&failure.trace),
                "shrunk": failure.shrunk.as_ref().map(|shrunk| json!({
                    "drawn": shrunk.drawn,
                    "schedule": shrunk.schedule.iter().map(|f| f.to_string()).collect::<Vec<_>>(),
                    "violations": shrunk.violations,
                    "reruns": shrunk.reruns,
                    "trace": path(&shrunk.trace),
                })),
            })
        })
        .collect();
    let injected: BTreeMap<&str, u64> = summary
        .faults_injected
        .iter()
        .map(|(kind, count)| (kind.name(), *count))
        .collect();
    json!({
        "start": summary.start,
        "seeds": summary.seeds,
        "faults": summary.faults.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "jobs": summary.jobs,
        "passed": summary.passed(),
        "failed": summary.failures.len(),
        "failures": failures,
        "violation_kinds": summary.violation_kinds,
        "seeds_per_s": summary.seeds_per_s(),
        "wall_ms": summary.wall.as_millis() as u64,
        "slowest": summary.slowest.map(|(seed, wall)| json!({"seed": seed, "wall_ms": wall.as_millis() as u64})),
        "simulated_ms": summary.simulated_ms,
        "simulated_hours": summary.simulated_hours(),
        "operations": summary.operations,
        "faults_injected": injected,
        "disks": {
            "crashes": summary.disks.crashes,
            "unsynced_bytes_dropped": summary.disks.unsynced_bytes_dropped,
            "torn_bytes_kept": summary.disks.torn_bytes_kept,
            "restarts_from_disk": summary.disks.restarts_from_disk,
            "keys_recovered": summary.disks.keys_recovered,
            "prepared_recovered": summary.disks.prepared_recovered,
            "restarts_wiped": summary.disks.restarts_wiped,
        },
        "viewleader": {
            "member_crashes": summary.raft.crashes,
            "unsynced_bytes_dropped": summary.raft.unsynced_bytes_dropped,
            "torn_bytes_kept": summary.raft.torn_bytes_kept,
            "quorum_losses": summary.raft.quorum_losses,
            "quorum_lost_ms": summary.raft.quorum_lost_ms,
            "refused_without_quorum": summary.raft.refused_without_quorum,
            "leaders": summary.raft.leaders,
            "max_term": summary.raft.max_term,
            "snapshots": summary.raft.snapshots,
            "purged_max": summary.raft.purged_max,
        },
        "traces": {"dir": summary.trace_dir.display().to_string(), "written": summary.traces_written,
                   "errors": summary.trace_errors},
    })
}

/// Shows progress: a bar on a terminal, a line now and then (and one per failure) otherwise,
/// nothing with `--json`.
struct Display {
    bar: Option<ProgressBar>,
    out: Output,
    last_line: Option<Duration>,
}

impl Display {
    fn new(total: u64, out: Output) -> Self {
        let bar = (!out.json && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} seeds, {msg}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message("0 failed");
            bar.enable_steady_tick(Duration::from_millis(PROGRESS_TICK_MS));
            bar
        });
        Self {
            bar,
            out,
            last_line: None,
        }
    }

    fn seed_done(&mut self, progress: &Progress) {
        let rate = progress.done as f64 / progress.elapsed.as_secs_f64().max(1e-9);
        if let Some(failure) = &progress.failure {
            let line = format!("seed {} failed: {failure}", progress.seed);
            match &self.bar {
                Some(bar) => bar.println(line),
                None => self.out.progress(line),
            }
        }
        match &self.bar {
            Some(bar) => {
                bar.set_position(progress.done);
                bar.set_message(format!("{} failed, {rate:.2} seeds/s", progress.failed));
            }
            None => {
                let due = self.last_line.is_none_or(|last| {
                    progress.elapsed.saturating_sub(last)
                        >= Duration::from_secs(PROGRESS_LINE_INTERVAL_S)
                });
                if due || progress.done == progress.total {
                    self.last_line = Some(progress.elapsed);
                    self.out.progress(format!(
                        "sim: {}/{} seeds, {} failed, {rate:.2} seeds/s",
                        progress.done, progress.total, progress.failed
                    ));
                }
            }
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

/// `client sim`: runs the campaign the flags ask for and prints its summary; exits 0 when every
/// seed passed, 1 otherwise.
pub async fn run(args: SimArgs, out: Output) -> Result<u8> {
    let campaign = Campaign::from_args(&args)?;
    out.progress(format!(
        "sim: seeds {}..{} (--start {} --seeds {}), faults {}, --jobs {}{}",
        campaign.start,
        campaign.start + (campaign.seeds - 1),
        campaign.start,
        campaign.seeds,
        FaultList(campaign.faults.clone()).names(),
        campaign.jobs.min(campaign.seeds as usize),
        if campaign.shrink { ", shrinking" } else { "" }
    ));
    let summary = tokio::task::spawn_blocking(move || {
        let mut display = Display::new(campaign.seeds, out);
        let summary = self::campaign(&campaign, &mut |progress| display.seed_done(progress));
        display.finish();
        summary
    })
    .await
    .map_err(|err| Error::Internal(format!("the campaign stopped: {err}")))??;
    out.ok(summary_text(&summary), summary_json(&summary));
    Ok(if summary.failures.is_empty() { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{ClientArgs, Command};

    /// The flags of `client` that a replay command gives.
    fn parse_replay(options: &SimOptions) -> SimArgs {
        let command = options.replay_command();
        let (_, flags) = command
            .split_once(" -- ")
            .unwrap_or_else(|| panic!("no `--` in {command:?}"));
        let argv = std::iter::once("client").chain(flags.split_whitespace());
        match ClientArgs::try_parse_from(argv) {
            Ok(ClientArgs {
                command: Command::Sim(args),
                ..
            }) => args,
            Ok(other) => panic!("{command:?} parsed as {:?}", other.command),
            Err(err) => panic!("{command:?} does not parse: {err}"),
        }
    }

    #[test]
    fn a_replay_command_parses_into_the_same_seed_and_faults() {
        for faults in [
            FaultKind::HANDLED.to_vec(),
            FaultKind::ALL.to_vec(),
            Vec::new(),
            vec![FaultKind::Restart, FaultKind::CutLink],
        ] {
            let mut options = SimOptions::new(u64::MAX - 3);
            options.faults = faults.clone();
            let args = parse_replay(&options);
            assert_eq!(args.seeds, 1);
            assert_eq!(args.start, Some(options.seed));
            assert_eq!(args.faults.0, faults);
            let campaign = Campaign::from_args(&args).unwrap();
            assert_eq!(campaign.options(options.seed), options, "not the same run");
        }
    }

    #[test]
    fn a_replay_command_says_when_it_cannot_give_the_run() {
        let mut options = SimOptions::new(5);
        assert!(!options.replay_command().contains('#'));
        options.schedule = Some(Vec::new());
        assert!(options.replay_command().contains("# not this run exactly"));
        let mut options = SimOptions::new(5);
        options.workload_ms += 1;
        assert!(options.replay_command().contains("sizes and timings"));
    }

    #[test]
    fn bad_flags_are_refused_with_what_is_allowed() {
        let parse = |flags: &[&str]| {
            ClientArgs::try_parse_from(["client", "sim"].iter().chain(flags)).map(|_| ())
        };
        let err = parse(&["--faults", "delay,earthquake"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("earthquake") && err.contains("restart-viewleader"),
            "{err}"
        );
        assert!(parse(&["--seeds", "0"]).is_err());
        assert!(parse(&["--jobs", "0"]).is_err());
        assert!(parse(&["--jobs", "1000"]).is_err());
        assert!(parse(&["--faults", "all", "--seeds", "5", "--start", "9"]).is_ok());
        let args = SimArgs {
            seeds: 2,
            start: Some(u64::MAX),
            faults: FaultList(Vec::new()),
            jobs: Some(1),
            trace: false,
            shrink: false,
        };
        assert!(Campaign::from_args(&args).is_err(), "seeds past u64::MAX");
    }

    #[test]
    fn a_campaign_of_two_seeds_without_faults_passes_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let campaign = Campaign {
            start: 1,
            seeds: 2,
            faults: Vec::new(),
            jobs: 2,
            traces: Traces::Every,
            trace_dir: dir.path().to_path_buf(),
            shrink: false,
        };
        let mut seen = Vec::new();
        let summary = self::campaign(&campaign, &mut |progress| seen.push(progress.seed)).unwrap();
        seen.sort();
        assert_eq!(seen, vec![1, 2], "progress for every seed");
        assert_eq!(summary.seeds, 2);
        assert!(summary.failures.is_empty(), "{}", summary_text(&summary));
        assert_eq!(summary.passed(), 2);
        assert!(summary.operations > 0);
        assert!(summary.simulated_ms > 0);
        assert!(summary.faults_injected.is_empty());
        assert_eq!(summary.traces_written, 2);
        let trace = std::fs::read_to_string(dir.path().join("seed-1.trace")).unwrap();
        assert!(trace.starts_with("# seed 1\n"), "{trace}");
        let doc = summary_json(&summary);
        assert_eq!(doc["seeds"], 2);
        assert_eq!(doc["failed"], 0);
        assert_eq!(summary.disks, DiskStats::default(), "no fault, no crash");
        assert_eq!(doc["disks"]["restarts_from_disk"], 0);
        assert!(summary_text(&summary).contains("disks: 0 crashed"));
        assert_eq!(summary.raft.crashes, 0, "no fault, no member crash");
        assert!(
            summary.raft.leaders >= 2,
            "every seed elects a leader: {:?}",
            summary.raft
        );
        assert_eq!(doc["viewleader"]["member_crashes"], 0);
    }
}
