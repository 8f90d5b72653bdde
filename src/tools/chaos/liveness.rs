//! After the nemesis has healed everything: is the cluster alive again, within a named bound?
//! Within [`liveness_bound_ms`] of the heal it must settle (every live server in the view under
//! its current id, not rebalancing), take a write on every key (a `setr` on every register, an
//! `append` on every list: recorded like any other operation, so the checker sees them too),
//! leave no transaction pending on any server (`Status`'s `pending_transactions == 0`), and hold
//! the same value and version on every replica of every key. Each condition is polled until it
//! holds or the bound runs out; what still fails then is a finding.
//!
//! Left out: the safety of the values themselves (the linearizability checker and the appends
//! check judge those, over the whole history including these writes).

use std::time::{Duration, Instant};

use super::workload::{write_failure, Keys, Recorder};
use crate::client::Client;
use crate::tools::checker::{Call, Return};
use crate::types::Value;

/// Pause between two looks at the cluster while waiting for a condition.
pub const POLL_MS: u64 = 50;
/// Part of the liveness bound that does not scale with the lease and the transaction timeout.
pub const LIVENESS_MS_BASE: u64 = 15_000;

/// How long after the heal the cluster has to be fully alive again: the promise (no key blocked
/// longer than 2 × the transaction timeout after the view stops containing the participant that
/// blocks it), plus two leases for the view to change, plus [`LIVENESS_MS_BASE`] for rebalancing
/// and the checks' own round trips.
pub fn liveness_bound_ms(lease_ms: u64, tx_timeout_ms: u64) -> u64 {
    LIVENESS_MS_BASE + 2 * tx_timeout_ms + 2 * lease_ms
}

/// Whether every server at `addrs` is in the view under the id it reports, and nobody else is,
/// and nobody is rebalancing.
pub async fn is_settled(admin: &Client, addrs: &[String]) -> bool {
    let Ok(view) = admin.query_servers().await else {
        return false;
    };
    if view.rebalancing {
        return false;
    }
    let mut live = Vec::new();
    for addr in addrs {
        match admin.status(addr).await {
            Ok(status) => live.push(status.server_id),
            Err(_) => return false,
        }
    }
    let mut in_view: Vec<String> = view.servers.iter().map(|s| s.id.clone()).collect();
    live.sort();
    in_view.sort();
    live == in_view
}

/// Polls [`is_settled`] for at most `bound`.
pub async fn wait_settled(admin: &Client, addrs: &[String], bound: Duration) -> bool {
    let deadline = Instant::now() + bound;
    loop {
        if is_settled(admin, addrs).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// Checks liveness within `bound` of now; returns the findings (empty: alive).
pub async fn check(
    admin: &Client,
    recorder: &Recorder,
    addrs: &[String],
    keys: &Keys,
    bound: Duration,
) -> Vec<String> {
    let started = Instant::now();
    let deadline = started + bound;
    let bound_ms = bound.as_millis();
    let mut findings = Vec::new();
    if !wait_settled(admin, addrs, bound).await {
        findings.push(format!(
            "the cluster did not settle within {bound_ms} ms of the heal"
        ));
    }
    // Every key takes a write.
    for key in &keys.registers {
        let mut attempt = 0u64;
        let written = loop {
            attempt += 1;
            let value = Value::Text(format!("final-{key}-{attempt}"));
            let invoked = recorder.now_us();
            let outcome = admin.setr(key, value.clone()).await;
            let ret = match &outcome {
                Ok(_) => Return::Written,
                Err(err) => write_failure(err),
            };
            recorder.record(u64::MAX - 1, key, Call::Write(value), invoked, ret);
            match outcome {
                Ok(_) => break true,
                Err(_) if Instant::now() >= deadline => break false,
                Err(_) => tokio::time::sleep(Duration::from_millis(POLL_MS)).await,
            }
        };
        if !written {
            findings.push(format!(
                "{key:?} took no setr within {bound_ms} ms of the heal ({attempt} tries)"
            ));
        }
    }
    for key in &keys.lists {
        let mut attempt = 0u64;
        let appended = loop {
            attempt += 1;
            // A fresh item per try: an uncertain try may still land, and must not look like a
            // duplicate of the next.
            let item = format!("final-{key}-{attempt}");
            let invoked = recorder.now_us();
            let outcome = admin.append(key, &item).await;
            let ret = match &outcome {
                Ok(_) => Return::Appended,
                Err(err) => write_failure(err),
            };
            recorder.record(u64::MAX - 1, key, Call::Append(item), invoked, ret);
            match outcome {
                Ok(_) => break true,
                Err(_) if Instant::now() >= deadline => break false,
                Err(_) => tokio::time::sleep(Duration::from_millis(POLL_MS)).await,
            }
        };
        if !appended {
            findings.push(format!(
                "{key:?} took no append within {bound_ms} ms of the heal ({attempt} tries)"
            ));
        }
    }
    // No transaction left pending anywhere.
    loop {
        let mut pending = Vec::new();
        for addr in addrs {
            match admin.status(addr).await {
                Ok(status) if status.pending_transactions == 0 => {}
                Ok(status) => pending.push(format!(
                    "{addr} has {} pending transactions",
                    status.pending_transactions
                )),
                Err(err) => pending.push(format!("{addr} did not answer Status: {err}")),
            }
        }
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for problem in pending {
                findings.push(format!("{problem} {bound_ms} ms after the heal"));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    // The replicas agree (the last one may still be applying a write a majority acknowledged).
    loop {
        let divergent = divergent_replicas(admin, keys.registers.iter().chain(&keys.lists)).await;
        if divergent.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for problem in divergent {
                findings.push(format!(
                    "replicas differ {bound_ms} ms after the heal: {problem}"
                ));
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    findings
}

/// Keys whose replicas do not all hold the same value and version.
async fn divergent_replicas<'a>(
    admin: &Client,
    keys: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let view = match admin.view(true).await {
        Ok(view) => view,
        Err(err) => return vec![format!("no view to check the replicas against: {err}")],
    };
    let mut problems = Vec::new();
    for key in keys {
        let mut copies = Vec::new();
        for replica in view.replicas(key) {
            match admin.get(&replica.addr, key).await {
                Ok(copy) => copies.push((replica.addr.clone(), copy)),
                Err(err) => problems.push(format!(
                    "{key:?}: replica {} did not answer: {err}",
                    replica.addr
                )),
            }
        }
        let first = copies.first().map(|(_, v)| v.clone());
        if copies.iter().any(|(_, v)| Some(v.clone()) != first) {
            let detail: Vec<String> = copies
                .iter()
                .map(|(addr, v)| {
                    format!(
                        "{addr}={}",
                        v.as_ref()
                            .map(|v| format!("v{}", v.version))
                            .unwrap_or_else(|| "none".into())
                    )
                })
                .collect();
            problems.push(format!("{key:?}: {}", detail.join(" ")));
        }
    }
    problems
}
