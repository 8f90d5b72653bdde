//! What runs against the cluster while the nemesis strikes: clients doing `setr`, `getr` and
//! `append` (now and then a coordinator killed mid-commit), every operation recorded with its
//! invocation and completion times for the checker; a monitor of epochs, which must never go
//! backwards; and a lock workload, a few clients taking and releasing a handful of locks through
//! every fault of the view leader's group, whose grants [`check_locks`] judges:
//!
//! * Fencing tokens only grow: the view leader draws every grant's token from one counter, so a
//!   grant's token is above the token of every grant, of any lock, that was answered before this
//!   grant was first asked for; and no two grants share a token.
//! * One holder at a time: two grants of one lock whose holding certainly overlapped are a
//!   violation. A holder certainly holds from the answer that granted it until it first asked to
//!   release it, or until its place could have lapsed ([`CHAOS_LOCK_LEASE_MS`] after the last
//!   request it was granted by, which the view leader counts from after that request was sent),
//!   whichever is first. Anything less certain (an answer lost to a timeout, a release never
//!   acknowledged) only shortens that span, so no interleaving the view leader may have chosen
//!   is called a violation.
//!
//! Left out: checking the history (that is [`crate::tools::checker`]), locks held by servers,
//! and waiting chains of several locks (each lock client holds or waits for one lock at a time,
//! so the deadlock check is never exercised).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;

use super::procs::CHAOS_LOCK_LEASE_MS;
use crate::client::{Client, ClientOptions, CrashPoint};
use crate::error::Error;
use crate::tools::checker::{Call, Operation, Return};
use crate::types::{FencingToken, LockReply, Op, Value};

/// Pause between two looks of a monitor.
pub const MONITOR_POLL_MS: u64 = 100;
/// Clients of the lock workload.
pub const LOCK_CLIENTS: u64 = 3;
/// Locks they take (fewer than the clients, so that some wait in a queue).
pub const LOCK_NAMES: usize = 2;
/// Longest a lock client holds a lock before releasing it, in ms.
pub const LOCK_HOLD_MS_MAX: u64 = 200;
/// Longest a lock client keeps asking for one lock (polling while queued, retrying while the
/// group has no leader) before it gives up and leaves the queue, in ms: past a majority's
/// outage and a queue of the other clients' holds.
pub const LOCK_ACQUIRE_MS: u64 = 8_000;
/// Longest a lock client keeps retrying a release before it gives up on it (the place lapses
/// after [`CHAOS_LOCK_LEASE_MS`]), in ms.
pub const LOCK_RELEASE_MS: u64 = 8_000;
/// Pause between two requests of a lock client while queued or refused, in ms.
pub const LOCK_POLL_MS: u64 = 50;
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
/// names servers, is a violation (reported once per fall) (an empty view is a view leader that
/// has heard from nobody yet). Each look is made by a client of its own: a client keeps the
/// newest view it has seen and answers that rather than an older one, which would hide the fall.
pub async fn epoch_monitor(
    options: ClientOptions,
    recorder: Arc<Recorder>,
    stop: Arc<AtomicBool>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut last = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(view) = Client::new(options.clone()).query_servers().await {
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

/// One grant of a lock, as its holder saw it (times on the recorder's clock, in µs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub lock: String,
    pub requester: String,
    pub token: FencingToken,
    /// When the holder first asked for the lock: the grant was made after.
    pub asked_us: u64,
    /// When the request answered `Granted` was sent: the place lasts a lock lease from after.
    pub renewed_us: u64,
    /// When the `Granted` answer came back.
    pub granted_us: u64,
    /// When the holder first asked to release it; `None`: it never did (the run ended).
    pub release_sent_us: Option<u64>,
    /// Whether a release was acknowledged (`Released`, or `Unknown`: it held no place any more).
    pub released: bool,
}

/// What the lock workload did, for the summary and [`check_locks`].
#[derive(Debug, Default)]
pub struct LockLog {
    grants: Mutex<Vec<Grant>>,
    /// Acquisitions given up after [`LOCK_ACQUIRE_MS`].
    gave_up: AtomicU64,
    /// Releases never acknowledged within [`LOCK_RELEASE_MS`].
    releases_lost: AtomicU64,
    /// Answers no lock client of this workload should get (a deadlock): each a finding.
    unexpected: Mutex<Vec<String>>,
}

impl LockLog {
    pub fn grants(&self) -> Vec<Grant> {
        self.grants.lock().map(|g| g.clone()).unwrap_or_default()
    }

    fn push(&self, grant: Grant) {
        if let Ok(mut grants) = self.grants.lock() {
            grants.push(grant);
        }
    }

    /// The summary line: grants, locks, give-ups and lost releases.
    pub fn summary(&self) -> String {
        let grants = self.grants();
        let locks: std::collections::BTreeSet<&str> =
            grants.iter().map(|g| g.lock.as_str()).collect();
        format!(
            "{} grants of {} locks, {} acquisitions given up, {} releases never acknowledged",
            grants.len(),
            locks.len(),
            self.gave_up.load(Ordering::Relaxed),
            self.releases_lost.load(Ordering::Relaxed)
        )
    }

    /// Everything [`check_locks`] finds, and every unexpected answer.
    pub fn findings(&self) -> Vec<String> {
        let mut findings = self
            .unexpected
            .lock()
            .map(|u| u.clone())
            .unwrap_or_default();
        findings.extend(check_locks(&self.grants(), CHAOS_LOCK_LEASE_MS));
        findings
    }
}

/// One lock client until `stop`: takes one of [`LOCK_NAMES`] locks (waiting in its queue if
/// need be), holds it up to [`LOCK_HOLD_MS_MAX`], releases it, and records every grant.
pub async fn lock_loop(
    client: Client,
    recorder: Arc<Recorder>,
    log: Arc<LockLog>,
    stop: Arc<AtomicBool>,
    client_id: u64,
    mut rng: StdRng,
) {
    // A new name for every acquisition: a request of an earlier one whose answer was lost may
    // still take effect late (queue or grant that name), and must not pass for a grant of this
    // one. Such a place only holds its lock until it lapses.
    let mut acquisition = 0u64;
    while !stop.load(Ordering::Relaxed) {
        acquisition += 1;
        let requester = format!("chaos-locker-{client_id}-{acquisition}");
        let lock = format!("chaos-lock-{}", rng.gen_range(0..LOCK_NAMES));
        let granted = acquire(&client, &recorder, &log, &stop, &lock, &requester).await;
        if granted.is_some() {
            let hold = rng.gen_range(0..=LOCK_HOLD_MS_MAX);
            tokio::time::sleep(Duration::from_millis(hold)).await;
        }
        // Released whether or not it was granted: a request whose answer was lost may have
        // queued or granted it.
        let release_sent_us = recorder.now_us();
        let released = release(&client, &lock, &requester).await;
        if !released {
            log.releases_lost.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(mut grant) = granted {
            grant.release_sent_us = Some(release_sent_us);
            grant.released = released;
            log.push(grant);
        }
    }
}

/// Asks for `lock` until granted, for at most [`LOCK_ACQUIRE_MS`] (or until `stop`).
async fn acquire(
    client: &Client,
    recorder: &Recorder,
    log: &LockLog,
    stop: &AtomicBool,
    lock: &str,
    requester: &str,
) -> Option<Grant> {
    let asked_us = recorder.now_us();
    let deadline = Instant::now() + Duration::from_millis(LOCK_ACQUIRE_MS);
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let renewed_us = recorder.now_us();
        match client.lock_get(lock, requester).await {
            Ok(LockReply::Granted { token }) => {
                return Some(Grant {
                    lock: lock.to_string(),
                    requester: requester.to_string(),
                    token,
                    asked_us,
                    renewed_us,
                    granted_us: recorder.now_us(),
                    release_sent_us: None,
                    released: false,
                })
            }
            Ok(LockReply::Deadlock { cycle }) => {
                if let Ok(mut unexpected) = log.unexpected.lock() {
                    unexpected.push(format!(
                        "{requester} asking for {lock:?} while holding nothing was told it would \
                         deadlock: {}",
                        cycle.join(" -> ")
                    ));
                }
                return None;
            }
            // Queued, refused, or no leader yet: ask again.
            Ok(_) | Err(_) => tokio::time::sleep(Duration::from_millis(LOCK_POLL_MS)).await,
        }
    }
    if !stop.load(Ordering::Relaxed) {
        log.gave_up.fetch_add(1, Ordering::Relaxed);
    }
    None
}

/// Releases `lock`, retrying for at most [`LOCK_RELEASE_MS`]; whether it was acknowledged.
async fn release(client: &Client, lock: &str, requester: &str) -> bool {
    let deadline = Instant::now() + Duration::from_millis(LOCK_RELEASE_MS);
    loop {
        match client.lock_release(lock, requester).await {
            Ok(LockReply::Released | LockReply::Unknown) => return true,
            _ if Instant::now() >= deadline => return false,
            _ => tokio::time::sleep(Duration::from_millis(LOCK_POLL_MS)).await,
        }
    }
}

/// Most findings of one kind [`check_locks`] lists; the rest are counted.
pub const LOCK_FINDINGS_MAX: usize = 10;

/// Judges the grants of a run (see the module docs): tokens that do not grow, a token granted
/// twice, and two holders of one lock at once. `lock_lease_ms` is the view leader's lock lease.
pub fn check_locks(grants: &[Grant], lock_lease_ms: u64) -> Vec<String> {
    let mut findings = Vec::new();
    let mut by_token: BTreeMap<FencingToken, &Grant> = BTreeMap::new();
    let mut twice = Vec::new();
    for grant in grants {
        if let Some(other) = by_token.insert(grant.token, grant) {
            twice.push(format!(
                "token {} granted twice: {:?} to {} and {:?} to {}",
                grant.token, other.lock, other.requester, grant.lock, grant.requester
            ));
        }
    }
    push_capped(&mut findings, twice, "tokens granted twice");
    // Tokens grow: the largest token answered before a grant was asked for is below its own.
    let mut answered: Vec<&Grant> = grants.iter().collect();
    answered.sort_by_key(|g| g.granted_us);
    let mut asked: Vec<&Grant> = grants.iter().collect();
    asked.sort_by_key(|g| g.asked_us);
    let mut highest: Option<&Grant> = None;
    let mut next = answered.iter().peekable();
    let mut falls = Vec::new();
    for grant in asked {
        while let Some(earlier) = next.next_if(|g| g.granted_us < grant.asked_us) {
            if highest.is_none_or(|h| earlier.token > h.token) {
                highest = Some(earlier);
            }
        }
        if let Some(earlier) = highest.filter(|h| h.token >= grant.token) {
            falls.push(format!(
                "fencing token {} of {:?} (asked at {:.3} s) is not above token {} of {:?}, \
                 granted before it was asked for (at {:.3} s)",
                grant.token,
                grant.lock,
                grant.asked_us as f64 / 1e6,
                earlier.token,
                earlier.lock,
                earlier.granted_us as f64 / 1e6
            ));
        }
    }
    push_capped(&mut findings, falls, "fencing tokens that did not grow");
    // One holder at a time.
    let lease_us = lock_lease_ms.saturating_mul(1_000);
    let held_until = |g: &Grant| {
        g.release_sent_us
            .unwrap_or(u64::MAX)
            .min(g.renewed_us.saturating_add(lease_us))
    };
    let mut by_lock: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
    for grant in grants {
        by_lock.entry(grant.lock.as_str()).or_default().push(grant);
    }
    let mut overlaps = Vec::new();
    for (lock, mut held) in by_lock {
        held.sort_by_key(|g| g.granted_us);
        // Sorted by the start of certain holding: a grant overlaps an earlier one iff it
        // starts before the latest end among them.
        let mut latest: Option<&Grant> = None;
        for grant in held {
            if let Some(earlier) = latest.filter(|e| grant.granted_us < held_until(e)) {
                overlaps.push(format!(
                    "{lock:?} had two holders at once: {} (token {}) held it from {:.3} s to \
                     {:.3} s, and {} (token {}) was granted it at {:.3} s",
                    earlier.requester,
                    earlier.token,
                    earlier.granted_us as f64 / 1e6,
                    held_until(earlier) as f64 / 1e6,
                    grant.requester,
                    grant.token,
                    grant.granted_us as f64 / 1e6
                ));
            }
            if latest.is_none_or(|e| held_until(grant) > held_until(e)) {
                latest = Some(grant);
            }
        }
    }
    push_capped(&mut findings, overlaps, "locks with two holders at once");
    findings
}

fn push_capped(findings: &mut Vec<String>, mut more: Vec<String>, what: &str) {
    if more.len() > LOCK_FINDINGS_MAX {
        let left = more.len() - LOCK_FINDINGS_MAX;
        more.truncate(LOCK_FINDINGS_MAX);
        more.push(format!("and {left} more {what}"));
    }
    findings.extend(more);
}
