//! What runs against the cluster while the nemesis strikes: clients doing `setr`, `getr` and
//! `append` (now and then a coordinator killed mid-commit), every operation recorded with its
//! invocation and completion times for the checker; and two monitors of promises the history
//! does not show: epochs never go backwards, and a lock's fencing tokens only grow (across view
//! leader restarts too).
//!
//! Left out: checking the history (that is [`crate::tools::checker`]), and locks held by servers.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use crate::client::{Client, CrashPoint};
use crate::error::Error;
use crate::tools::checker::{Call, Operation, Return};
use crate::types::{LockReply, Op, Value};

/// Pause between two looks of a monitor.
pub const MONITOR_POLL_MS: u64 = 100;
/// The lock the fencing monitor takes and gives back, over and over.
pub const FENCING_LOCK: &str = "chaos-fencing";
/// Pause of a client after a failed call, so a dead server answering "refused" at once does
/// not turn the clients into a busy loop.
pub const FAILURE_BACKOFF_MS: u64 = 25;
/// One write in this many kills its coordinator mid-commit.
pub const COORDINATOR_KILL_ONE_IN: u32 = 20;

/// The shared record of operations.
pub struct Recorder {
    started: Instant,
    next_id: AtomicU64,
    history: Mutex<Vec<Operation>>,
    /// Failed calls by error kind, for the summary.
    failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            history: Mutex::new(Vec::new()),
            failures: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    pub fn record(&self, client: u64, key: &str, call: Call, invoked_us: u64, ret: Return) {
        let completed_us = (ret != Return::Unknown).then(|| self.now_us());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut history) = self.history.lock() {
            history.push(Operation {
                id,
                client,
                key: key.to_string(),
                call,
                invoked_us,
                completed_us,
                ret,
            });
        }
    }

    /// Counts a failed call under its error's kind.
    pub fn failed(&self, err: &Error) {
        if let Ok(mut failures) = self.failures.lock() {
            *failures.entry(err.kind()).or_default() += 1;
        }
    }

    /// Failed calls by error kind.
    pub fn failures(&self) -> BTreeMap<&'static str, u64> {
        self.failures.lock().map(|f| f.clone()).unwrap_or_default()
    }

    pub fn history(&self) -> Vec<Operation> {
        self.history.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

/// The keys of the run: registers (setr) and lists (append).
#[derive(Clone)]
pub struct Keys {
    pub registers: Vec<String>,
    pub lists: Vec<String>,
}

/// One client's loop until `stop`; it pauses [`FAILURE_BACKOFF_MS`] after a failed call.
pub async fn client_loop(
    client: Client,
    recorder: Arc<Recorder>,
    coordinator_kills: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    client_id: u64,
    mut rng: StdRng,
    keys: Keys,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let unique = format!("c{client_id}-{n}");
        let failed = client_step(
            &client,
            &recorder,
            &coordinator_kills,
            client_id,
            &mut rng,
            &keys,
            unique,
        )
        .await;
        if failed {
            tokio::time::sleep(Duration::from_millis(FAILURE_BACKOFF_MS)).await;
        }
    }
}

/// One operation, recorded; returns whether it failed.
async fn client_step(
    client: &Client,
    recorder: &Recorder,
    coordinator_kills: &AtomicU64,
    client_id: u64,
    rng: &mut StdRng,
    keys: &Keys,
    unique: String,
) -> bool {
    let invoked = recorder.now_us();
    let mut failed = false;
    match rng.gen_range(0..10) {
        0..=2 => {
            let key = &keys.registers[rng.gen_range(0..keys.registers.len())];
            let value = Value::Text(unique);
            let crash = (rng.gen_range(0..COORDINATOR_KILL_ONE_IN) == 0).then(|| {
                match rng.gen_range(0..3) {
                    0 => CrashPoint::AfterFirstPrepare,
                    1 => CrashPoint::AfterAllPrepares,
                    _ => CrashPoint::AfterFirstCommit,
                }
            });
            let outcome = match crash {
                Some(point) => {
                    coordinator_kills.fetch_add(1, Ordering::Relaxed);
                    client
                        .write_then_crash(key, Op::Put(value.clone()), point)
                        .await
                }
                None => client.setr(key, value.clone()).await,
            };
            // A killed coordinator's write may or may not happen: unknown, like a timeout.
            let ret = match (&outcome, crash) {
                (_, Some(_)) => Return::Unknown,
                (Ok(_), None) => Return::Written,
                (Err(err), None) => {
                    failed = true;
                    recorder.failed(err);
                    write_failure(err)
                }
            };
            recorder.record(client_id, key, Call::Write(value), invoked, ret);
        }
        3..=5 => {
            let key = &keys.lists[rng.gen_range(0..keys.lists.len())];
            let ret = match client.append(key, &unique).await {
                Ok(_) => Return::Appended,
                Err(err) => {
                    failed = true;
                    recorder.failed(&err);
                    write_failure(&err)
                }
            };
            recorder.record(client_id, key, Call::Append(unique), invoked, ret);
        }
        _ => {
            let key = if rng.gen_bool(0.5) {
                &keys.registers[rng.gen_range(0..keys.registers.len())]
            } else {
                &keys.lists[rng.gen_range(0..keys.lists.len())]
            };
            // A read that failed returned nothing: it constrains nothing and is left out.
            match client.getr(key).await {
                Ok(found) => recorder.record(
                    client_id,
                    key,
                    Call::Read,
                    invoked,
                    Return::ReadValue(found.map(|f| f.value.value)),
                ),
                Err(err) => {
                    failed = true;
                    recorder.failed(&err);
                }
            }
        }
    }
    failed
}

/// How a failed write counts: only an uncertain outcome may have taken effect.
pub fn write_failure(err: &Error) -> Return {
    match err {
        Error::Uncertain(_) => Return::Unknown,
        _ => Return::Failed,
    }
}

/// Counts of outcomes by operation, for the summary.
pub fn summarize(history: &[Operation]) -> String {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for op in history {
        let call = match op.call {
            Call::Write(_) => "setr",
            Call::Append(_) => "append",
            Call::Read => "getr",
        };
        let ret = match op.ret {
            Return::Failed => "failed",
            Return::Unknown => "unknown",
            _ => "ok",
        };
        *counts.entry(format!("{call} {ret}")).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Watches the view until `stop`: an epoch lower than the one seen before it, in a view that
/// names servers, is a violation (reported once per fall) (an empty view is a view leader that has heard from nobody yet).
pub async fn epoch_monitor(
    client: Client,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(view) = client.query_servers().await {
            if !view.servers.is_empty() {
                if view.epoch < last {
                    problems.push(format!(
                        "epoch went backwards: {} after {last} (at {:.1} s)",
                        view.epoch,
                        recorder.now_us() as f64 / 1e6
                    ));
                }
                last = view.epoch;
            }
        }
        tokio::time::sleep(Duration::from_millis(MONITOR_POLL_MS)).await;
    }
    problems
}

/// Takes and gives back [`FENCING_LOCK`] until `stop`: a token lower than the grant before it
/// is a violation, reported once per fall (a renewal may repeat a token when a release's answer
/// was lost, so equal is not).
pub async fn fencing_monitor(
    client: Client,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last = 0;
    let mut grants = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(LockReply::Granted { token }) =
            client.lock_get(FENCING_LOCK, "chaos-fencer").await
        {
            grants += 1;
            if token < last {
                problems.push(format!(
                    "fencing token went backwards: {token} after {last} (grant {grants}, at {:.1} s)",
                    recorder.now_us() as f64 / 1e6
                ));
            }
            last = token;
            let _ = client.lock_release(FENCING_LOCK, "chaos-fencer").await;
        }
        tokio::time::sleep(Duration::from_millis(MONITOR_POLL_MS)).await;
    }
    problems
}
