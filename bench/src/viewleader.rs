//! The view leader as a Raft group, measured.
//!
//! `failover` starts `--members` view-leader members (the `viewleader` binary of `--bin-dir`,
//! each with a data dir of its own under `--dir`, which should be on a disk) and `--servers`
//! in-memory storage servers that find them through the member list, then `--kills` times:
//! asks every member its status, kills the leader with `SIGKILL`, and times from just before the
//! kill, all at once:
//! * `elected_ms`: the first status answer (each surviving member asked every `--poll-ms`) in
//!   which a member other than the killed one says it leads, at a term above the killed
//!   leader's;
//! * `setr_ms`: the first `setr` that succeeds through the member list from a client with no
//!   view yet (a fresh library [`Client`], what `client setr` runs): it must fetch the view from
//!   a leader first. A client whose call fails (its timeout ran out while no member led) is
//!   replaced by a fresh one after `--poll-ms`;
//! * `lock_ms`: the same for a `lock_get` of a lock nobody holds (a command the leader must
//!   commit through the log);
//! * `writer_gap_ms`: the longest time between two successful writes of a client that was
//!   writing before the kill and keeps writing, one `setr` after another (`--poll-ms` after a
//!   failed one): it refreshes its view every [`VIEW_CACHE_TTL_MS`], and while no member leads
//!   it goes on with the view it holds (for up to `VIEW_STALE_MAX_MS`);
//!
//! then starts the killed member again on its data dir and port, and times until its applied
//! index reaches the leader's (`caught_up_ms`, from its start), and waits for a settled view of
//! every server and `--settle-ms` before the next kill. One JSON line per kill
//! (`"kind": "failover"`), with the failed calls of each client by the kind of their error.
//!
//! `vl-throughput` drives `setr` and `getr` against clusters that differ only in their view
//! leader (`--group MEMBERS=ADDR,...`: one member, three), started by the caller, cell by cell
//! interleaved so that the machine's other load falls on every group alike. One JSON line per
//! cell and run (`"kind": "viewleader_cell"`). Before each run's cells it times `--refreshes`
//! view refreshes (`query_servers`, one after another) on each group: the one request the data
//! path sends the view leader (`"kind": "viewleader_refresh"`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ringleader::client::{Client, ClientOptions, VIEW_CACHE_TTL_MS};
use ringleader::error::{Error, Result};
use ringleader::tools::bench::ringleader::{Mode, Ringleader};
use ringleader::tools::bench::{
    preload, run_cell, validate_common, Cell, CellResult, Distribution, KeySpace, Mix, Stop,
};
use ringleader::types::{LockReply, MemberStatus, Value};
use ringleader::viewleader::raft::{ELECTION_TIMEOUT_MS_DEFAULT, RAFT_HEARTBEAT_MS_DEFAULT};
use serde_json::json;

use crate::process::{addr_of, Proc, Stream};

/// A status, write or lock call's timeout during a failover (the client's default).
pub const CALL_TIMEOUT_MS: u64 = 2_000;
/// Longest the group may take to elect a leader, or a restarted member to catch up, or the
/// servers to settle, before the benchmark gives up.
pub const WAIT_MS: u64 = 120_000;
/// Pause between polls while waiting for the group or the servers to settle between kills.
pub const SETTLE_POLL_MS: u64 = 50;

#[derive(Args, Debug)]
pub struct FailoverArgs {
    /// Where the `viewleader` and `server` binaries are.
    #[arg(long)]
    pub bin_dir: PathBuf,
    /// A fresh directory on the disk for the members' data dirs and the logs (removed at the
    /// end unless --keep).
    #[arg(long)]
    pub dir: PathBuf,
    /// Kills of the leader.
    #[arg(long, default_value_t = 10)]
    pub kills: u32,
    /// Members of the view leader's group.
    #[arg(long, default_value_t = 3)]
    pub members: u64,
    /// In-memory storage servers.
    #[arg(long, default_value_t = 5)]
    pub servers: usize,
    /// The members' shortest election timeout (`--election-timeout-ms`; the longest is twice
    /// it); without it, the binary's default.
    #[arg(long)]
    pub election_timeout_ms: Option<u64>,
    /// Interval between two status polls, and between a failed client call and the next.
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// Pause once the group and the servers have settled, before the next kill.
    #[arg(long, default_value_t = 1_000)]
    pub settle_ms: u64,
    /// Keep --dir (the members' logs are there) instead of removing it.
    #[arg(long)]
    pub keep: bool,
    /// Appends every JSON line to this file too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// One member of the group: its id, address, flags and process (none while killed).
struct Member {
    id: u64,
    addr: String,
    args: Vec<String>,
    log: PathBuf,
    proc: Option<Proc>,
}

fn ms(from: Instant, to: Instant) -> f64 {
    (to.saturating_duration_since(from).as_micros() as f64 / 100.0).round() / 10.0
}

fn client(viewleader: &str) -> Client {
    Client::new(ClientOptions {
        viewleader: viewleader.into(),
        timeout_ms: CALL_TIMEOUT_MS,
        wait_ms: CALL_TIMEOUT_MS * 5,
    })
}

/// Ports nothing listens on now, taken all at once so they differ.
fn free_ports(n: u64) -> Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|err| Error::Internal(format!("no free port: {err}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|err| Error::Internal(format!("no free port: {err}")))
}

struct Sink(Option<std::fs::File>);

impl Sink {
    fn open(path: &Option<PathBuf>) -> Result<Self> {
        Ok(Sink(match path {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| {
                        Error::InvalidRequest(format!("--out {}: {err}", path.display()))
                    })?,
            ),
            None => None,
        }))
    }

    fn emit(&mut self, line: &serde_json::Value) -> Result<()> {
        println!("{line}");
        if let Some(file) = &mut self.0 {
            use std::io::Write as _;
            writeln!(file, "{line}")
                .map_err(|err| Error::Internal(format!("writing results: {err}")))?;
        }
        Ok(())
    }
}

/// Every member's status, asked at once (`None` for a member that did not answer).
async fn statuses(status: &Arc<Client>, members: &[Member]) -> Vec<Option<MemberStatus>> {
    let addrs: Vec<String> = members.iter().map(|m| m.addr.clone()).collect();
    ask_all(status, &addrs).await
}

/// The status of each of `addrs`, asked at once, in their order.
async fn ask_all(status: &Arc<Client>, addrs: &[String]) -> Vec<Option<MemberStatus>> {
    let mut asks = tokio::task::JoinSet::new();
    for (i, addr) in addrs.iter().enumerate() {
        let (status, addr) = (status.clone(), addr.clone());
        asks.spawn(async move { (i, status.member_status(&addr).await.ok()) });
    }
    let mut answers = vec![None; addrs.len()];
    while let Some(done) = asks.join_next().await {
        if let Ok((i, answer)) = done {
            answers[i] = answer;
        }
    }
    answers
}

/// The one member that says it leads, with its status, once every running member answers and
/// agrees on it.
fn sole_leader(answers: &[Option<MemberStatus>], members: &[Member]) -> Option<MemberStatus> {
    let running = members
        .iter()
        .zip(answers)
        .filter(|(m, _)| m.proc.is_some());
    let mut leader = None;
    for (_, answer) in running {
        let status = answer.as_ref()?;
        if status.role == "leader" {
            if leader.is_some() {
                return None;
            }
            leader = Some(status.clone());
        }
    }
    let leader = leader?;
    let agreed = answers
        .iter()
        .flatten()
        .all(|s| s.leader == Some(leader.id) && s.term == leader.term);
    agreed.then_some(leader)
}

async fn wait_until<T, F, Fut>(what: &str, mut poll: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        if let Some(value) = poll().await {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout(format!("{what} within {WAIT_MS} ms")));
        }
        tokio::time::sleep(Duration::from_millis(SETTLE_POLL_MS)).await;
    }
}

async fn settled_servers(client: &Client, servers: usize) -> Option<u64> {
    let view = client.query_servers().await.ok()?;
    (view.servers.len() == servers && !view.rebalancing).then_some(view.epoch)
}

pub async fn failover(args: FailoverArgs) -> Result<()> {
    if args.kills == 0 || args.members < 3 || args.servers == 0 || args.poll_ms == 0 {
        return Err(Error::InvalidRequest(
            "--kills, --servers and --poll-ms must be above 0, --members at least 3".into(),
        ));
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    std::fs::create_dir_all(&args.dir)
        .map_err(|err| Error::Internal(format!("{}: {err}", args.dir.display())))?;
    let mut sink = Sink::open(&args.out)?;
    // A signal to the benchmark ends the measurement, so that the processes it started are
    // dropped (killed) rather than left behind.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|err| Error::Internal(format!("signal: {err}")))?;
    let outcome = tokio::select! {
        outcome = measure_failover(&args, &mut sink) => outcome,
        _ = terminate.recv() => Err(Error::Internal("terminated".into())),
        _ = tokio::signal::ctrl_c() => Err(Error::Internal("interrupted".into())),
    };
    if !args.keep {
        let _ = std::fs::remove_dir_all(&args.dir);
    }
    outcome
}

async fn measure_failover(args: &FailoverArgs, sink: &mut Sink) -> Result<()> {
    let election_timeout_ms = args
        .election_timeout_ms
        .unwrap_or(ELECTION_TIMEOUT_MS_DEFAULT);
    let ports = free_ports(args.members)?;
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let peers = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| format!("{}={addr}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let list = addrs.join(",");
    let vl_exe = args.bin_dir.join("viewleader");
    let mut members = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = i as u64 + 1;
        let mut flags = vec![
            "--id".to_string(),
            id.to_string(),
            "--peers".into(),
            peers.clone(),
            "--data-dir".into(),
            args.dir.join(format!("member-{id}")).display().to_string(),
        ];
        if let Some(timeout) = args.election_timeout_ms {
            flags.extend(["--election-timeout-ms".into(), timeout.to_string()]);
        }
        let log = args.dir.join(format!("member-{id}.log"));
        let mut proc = Proc::spawn_logged(&vl_exe, &flags, Some(&log))?;
        proc.wait_line(Stream::Stdout, "listening on").await?;
        members.push(Member {
            id,
            addr: addr.clone(),
            args: flags,
            log,
            proc: Some(proc),
        });
    }
    let status = Arc::new(client(&list));
    wait_until("a leader of the whole group", || async {
        let answers = statuses(&status, &members).await;
        sole_leader(&answers, &members)
    })
    .await?;
    let server_exe = args.bin_dir.join("server");
    let mut servers = Vec::new();
    for i in 0..args.servers {
        let flags = vec![
            "--port".to_string(),
            "0".into(),
            "--viewleader".into(),
            list.clone(),
            "--in-memory".into(),
        ];
        let log = args.dir.join(format!("server-{}.log", i + 1));
        let mut server = Proc::spawn_logged(&server_exe, &flags, Some(&log))?;
        let (_, line) = server.wait_line(Stream::Stdout, "listening on").await?;
        addr_of(&line)?;
        servers.push(server);
    }
    let writer = Arc::new(client(&list));
    wait_until("a settled view of every server", || {
        settled_servers(&writer, args.servers)
    })
    .await?;
    eprintln!(
        "{} members at {list}, {} servers; {} kills of the leader",
        args.members, args.servers, args.kills
    );
    let value = Value::Text("x".repeat(100));
    for kill in 1..=args.kills {
        let leader = wait_until("a leader the whole group agrees on", || async {
            let answers = statuses(&status, &members).await;
            sole_leader(&answers, &members)
        })
        .await?;
        let epoch_before = settled_servers(&writer, args.servers).await;
        // A client that keeps writing across the kill, its view fresh when the kill comes.
        writer.setr("failover-writer", value.clone()).await?;
        let writing = Arc::new(AtomicBool::new(true));
        let writer_task = tokio::spawn(keep_writing(
            writer.clone(),
            value.clone(),
            writing.clone(),
            Duration::from_millis(args.poll_ms),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let index = members
            .iter()
            .position(|m| m.id == leader.id)
            .ok_or_else(|| Error::Internal(format!("leader {} is no member", leader.id)))?;
        let killed_at = Instant::now();
        if let Some(mut proc) = members[index].proc.take() {
            proc.kill();
        }
        let survivors: Vec<String> = members
            .iter()
            .filter(|m| m.proc.is_some())
            .map(|m| m.addr.clone())
            .collect();
        let poll = Duration::from_millis(args.poll_ms);
        let elected = async {
            let status = Arc::new(client(&list));
            loop {
                let answers = ask_all(&status, &survivors).await;
                let at = Instant::now();
                if let Some(new) = answers
                    .into_iter()
                    .flatten()
                    .find(|s| s.role == "leader" && s.id != leader.id && s.term > leader.term)
                {
                    return (at, new.id, new.term);
                }
                tokio::time::sleep(poll).await;
            }
        };
        let setr = async {
            let mut failed = Tally::default();
            loop {
                let fresh = client(&list);
                match fresh.setr(&format!("failover-{kill}"), value.clone()).await {
                    Ok(_) => return (Instant::now(), failed),
                    Err(err) => failed.add(&err),
                }
                tokio::time::sleep(poll).await;
            }
        };
        let lock = async {
            let mut failed = Tally::default();
            let name = format!("failover-lock-{kill}");
            loop {
                let fresh = client(&list);
                match fresh.lock_get(&name, "ringleader-bench").await {
                    Ok(LockReply::Granted { .. }) => {
                        let at = Instant::now();
                        let _ = fresh.lock_release(&name, "ringleader-bench").await;
                        return (at, failed);
                    }
                    Ok(other) => failed.add(&Error::LockBusy(format!("{other:?}"))),
                    Err(err) => failed.add(&err),
                }
                tokio::time::sleep(poll).await;
            }
        };
        let bound = Duration::from_millis(WAIT_MS);
        let ((elected_at, new_leader, new_term), (setr_at, setr_failed), (lock_at, lock_failed)) =
            tokio::time::timeout(bound, async { tokio::join!(elected, setr, lock) })
                .await
                .map_err(|_| {
                    Error::Timeout(format!("kill {kill}: no new leader within {WAIT_MS} ms"))
                })?;
        // Let the writer run on a little past the outage, then stop it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        writing.store(false, Ordering::Relaxed);
        let (writer_gap_ms, writer_failed) = writer_task
            .await
            .map_err(|err| Error::Internal(format!("writer task: {err}")))?;
        // The killed member again, on its data dir and port.
        let member = &mut members[index];
        let proc = Proc::spawn_logged(&vl_exe, &member.args, Some(&member.log))?;
        let started = proc.started;
        member.proc = Some(proc);
        let restarted_id = member.id;
        let caught_up = wait_until("the restarted member catching up", || async {
            let answers = statuses(&status, &members).await;
            let leader = sole_leader(&answers, &members)?;
            let restarted = answers.iter().flatten().find(|s| s.id == restarted_id)?;
            (restarted.applied >= leader.applied).then(Instant::now)
        })
        .await?;
        let epoch_after = wait_until("a settled view of every server", || {
            settled_servers(&writer, args.servers)
        })
        .await?;
        let line = json!({
            "kind": "failover", "run": kill, "members": args.members, "servers": args.servers,
            "election_timeout_ms": election_timeout_ms,
            "raft_heartbeat_ms": RAFT_HEARTBEAT_MS_DEFAULT, "poll_ms": args.poll_ms,
            "view_cache_ttl_ms": VIEW_CACHE_TTL_MS,
            "killed": leader.id, "killed_term": leader.term,
            "new_leader": new_leader, "new_term": new_term,
            "elected_ms": ms(killed_at, elected_at),
            "setr_ms": ms(killed_at, setr_at), "setr_failed_calls": setr_failed.count(),
            "setr_errors": setr_failed.json(),
            "lock_ms": ms(killed_at, lock_at), "lock_failed_calls": lock_failed.count(),
            "lock_errors": lock_failed.json(),
            "writer_gap_ms": writer_gap_ms, "writer_failed": writer_failed.count(),
            "writer_errors": writer_failed.json(),
            "caught_up_ms": ms(started, caught_up),
            "epoch_before": epoch_before, "epoch_after": epoch_after,
        });
        eprintln!(
            "kill {kill}: member {} (term {}) killed; member {new_leader} led at term {new_term} \
             after {} ms, setr after {} ms, lock_get after {} ms; a writer's longest gap {} ms; \
             member {} caught up {} ms after its start",
            leader.id,
            leader.term,
            line["elected_ms"],
            line["setr_ms"],
            line["lock_ms"],
            line["writer_gap_ms"],
            leader.id,
            line["caught_up_ms"]
        );
        sink.emit(&line)?;
        tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    }
    drop(servers);
    drop(members);
    Ok(())
}

/// Failed calls by the kind of their error, with the first message of each kind.
#[derive(Default)]
struct Tally(BTreeMap<&'static str, (u64, String)>);

impl Tally {
    fn add(&mut self, err: &Error) {
        self.0
            .entry(err.kind())
            .or_insert_with(|| (0, err.to_string()))
            .0 += 1;
    }

    fn count(&self) -> u64 {
        self.0.values().map(|(n, _)| n).sum()
    }

    /// `{"KIND": {"count": N, "first": "MESSAGE"}, ...}`.
    fn json(&self) -> serde_json::Value {
        self.0
            .iter()
            .map(|(kind, (n, first))| (kind.to_string(), json!({"count": n, "first": first})))
            .collect::<serde_json::Map<_, _>>()
            .into()
    }
}

/// One `setr` after another until `writing` is cleared, pausing `pause` after a failed one;
/// returns the longest time between two successful writes (from the last success before the
/// gap to the first after it, in ms) and the failed writes.
async fn keep_writing(
    client: Arc<Client>,
    value: Value,
    writing: Arc<AtomicBool>,
    pause: Duration,
) -> (f64, Tally) {
    let mut last_ok = Instant::now();
    let mut longest = Duration::ZERO;
    let mut failed = Tally::default();
    while writing.load(Ordering::Relaxed) {
        match client.setr("failover-writer", value.clone()).await {
            Ok(_) => {
                let now = Instant::now();
                longest = longest.max(now - last_ok);
                last_ok = now;
            }
            Err(err) => {
                failed.add(&err);
                tokio::time::sleep(pause).await;
            }
        }
    }
    ((longest.as_micros() as f64 / 100.0).round() / 10.0, failed)
}

#[derive(Args, Debug)]
pub struct ThroughputArgs {
    /// A cluster to measure, named by its view leader's member count: MEMBERS=ADDR[,ADDR...]
    /// (`1=127.0.0.1:4000`, `3=127.0.0.1:4001,127.0.0.1:4002,127.0.0.1:4003`); repeat it.
    #[arg(long = "group", required = true)]
    pub groups: Vec<String>,
    /// Workloads: write-only (setr) and read-only (linearizable getr).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![Mix::Write, Mix::Read])]
    pub mixes: Vec<Mix>,
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 16, 64])]
    pub concurrency: Vec<usize>,
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    #[arg(long, default_value_t = 3)]
    pub duration_s: u64,
    #[arg(long, default_value_t = 500)]
    pub warmup_ops: u64,
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// View refreshes (`query_servers`, one after another) timed on each group in each run.
    #[arg(long, default_value_t = 500)]
    pub refreshes: u32,
    /// Appends every JSON line to this file too.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `count` view refreshes one after another through `client`: one JSON line
/// (`"kind": "viewleader_refresh"`) with their rate and latency.
async fn time_refreshes(
    client: &Client,
    members: u64,
    run: u32,
    count: u32,
) -> Result<serde_json::Value> {
    let mut micros = Vec::with_capacity(count as usize);
    let mut errors = 0u64;
    let began = Instant::now();
    for _ in 0..count {
        let sent = Instant::now();
        match client.query_servers().await {
            Ok(_) => micros.push(sent.elapsed().as_micros() as u64),
            Err(_) => errors += 1,
        }
    }
    let elapsed = began.elapsed();
    micros.sort_unstable();
    let at = |q: f64| {
        micros
            .get(((micros.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
    };
    Ok(json!({
        "kind": "viewleader_refresh", "members": members, "run": run,
        "ops": micros.len(), "errors": errors,
        "ops_per_sec": (micros.len() as f64 / elapsed.as_secs_f64().max(f64::EPSILON)).round(),
        "p50_us": at(0.50), "p99_us": at(0.99),
    }))
}

/// `MEMBERS=ADDR,...` into the member count and the list.
fn parse_group(text: &str) -> Result<(u64, String)> {
    let (members, addrs) = text.split_once('=').ok_or_else(|| {
        Error::InvalidRequest(format!("--group {text:?} is not MEMBERS=ADDR,..."))
    })?;
    let members: u64 = members
        .trim()
        .parse()
        .map_err(|_| Error::InvalidRequest(format!("--group {text:?}: {members:?} is no count")))?;
    let listed = addrs.split(',').filter(|a| !a.trim().is_empty()).count() as u64;
    if members == 0 || listed != members {
        return Err(Error::InvalidRequest(format!(
            "--group {text:?}: {members} members but {listed} addresses"
        )));
    }
    Ok((members, addrs.to_string()))
}

pub async fn throughput(args: ThroughputArgs) -> Result<()> {
    validate_common(
        &args.concurrency,
        args.warmup_ops,
        args.keys,
        args.value_bytes,
    )?;
    if args.runs == 0 || args.mixes.is_empty() {
        return Err(Error::InvalidRequest(
            "--runs and --mixes must not be empty".into(),
        ));
    }
    let stop = Stop::from_flags(1, Some(args.duration_s))?;
    let groups = args
        .groups
        .iter()
        .map(|g| parse_group(g))
        .collect::<Result<BTreeMap<u64, String>>>()?;
    let mut sink = Sink::open(&args.out)?;
    let keys = KeySpace::new(Distribution::Uniform, args.keys, args.value_bytes);
    let mut drivers = Vec::new();
    let mut refreshers = Vec::new();
    for (members, list) in &groups {
        let client = Arc::new(Client::new(ClientOptions {
            viewleader: list.clone(),
            timeout_ms: crate::matrix::RINGLEADER_TIMEOUT_MS,
            wait_ms: crate::matrix::RINGLEADER_WAIT_MS,
        }));
        let driver = Arc::new(Ringleader::new(client, Mode::Replicated));
        eprintln!(
            "preloading {} keys into the cluster of {members} view-leader member(s)",
            args.keys
        );
        preload(
            &driver,
            args.keys,
            &keys.value,
            crate::matrix::PRELOAD_CONCURRENCY,
        )
        .await?;
        let warm = Cell {
            mix: Mix::YcsbA,
            concurrency: crate::matrix::WARM_UP_CONCURRENCY,
            stop: Stop::For(Duration::from_secs(crate::matrix::WARM_UP_S)),
            warmup_ops: 0,
            seed: args.seed,
        };
        run_cell(&driver, &keys, &warm, None).await?;
        let refresher = Client::new(ClientOptions {
            viewleader: list.clone(),
            timeout_ms: crate::matrix::RINGLEADER_TIMEOUT_MS,
            wait_ms: crate::matrix::RINGLEADER_WAIT_MS,
        });
        drivers.push((*members, driver));
        refreshers.push((*members, refresher));
    }
    let mut cell_index = 0u64;
    for run in 1..=args.runs {
        // What the data path asks of the view leader: a view refresh, timed on its own.
        let mut order: Vec<&(u64, Client)> = refreshers.iter().collect();
        if run % 2 == 0 {
            order.reverse();
        }
        for (members, refresher) in order {
            let line = time_refreshes(refresher, *members, run, args.refreshes).await?;
            sink.emit(&line)?;
        }
        let mut in_run = 0u32;
        for &mix in &args.mixes {
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
                // Which group goes first alternates from cell to cell and, for each cell, from
                // run to run, so neither always follows the other.
                in_run += 1;
                let mut order: Vec<&(u64, Arc<Ringleader>)> = drivers.iter().collect();
                if (in_run + run) % 2 == 0 {
                    order.reverse();
                }
                for (members, driver) in order {
                    eprintln!(
                        "run {run} {} c={concurrency}: {members} view-leader member(s)",
                        mix.name()
                    );
                    let measured = run_cell(driver, &keys, &cell, None).await?;
                    let mut line = CellResult {
                        system: format!("ringleader-vl{members}"),
                        workload: mix.name().into(),
                        distribution: Some(Distribution::Uniform),
                        concurrency,
                        measured,
                    }
                    .json();
                    line["kind"] = "viewleader_cell".into();
                    line["members"] = (*members).into();
                    line["run"] = run.into();
                    sink.emit(&line)?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_names_its_member_count_and_its_list() {
        assert_eq!(
            parse_group("3=a:1,b:2,c:3").unwrap(),
            (3, "a:1,b:2,c:3".to_string())
        );
        assert_eq!(parse_group("1=a:1").unwrap(), (1, "a:1".to_string()));
        assert!(parse_group("3=a:1,b:2").is_err());
        assert!(parse_group("a:1").is_err());
        assert!(parse_group("0=").is_err());
    }

    #[test]
    fn milliseconds_keep_one_decimal() {
        let t = Instant::now();
        assert_eq!(ms(t, t + Duration::from_micros(1_234_567)), 1234.6);
        assert_eq!(ms(t + Duration::from_secs(1), t), 0.0);
    }
}
