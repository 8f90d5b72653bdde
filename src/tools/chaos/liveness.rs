//! After the nemesis has healed everything: is the cluster alive again, within a named bound?
//! Within [`liveness_bound_ms`] of the heal it must settle (every live server in the view under
//! its current id, not rebalancing), have its view leader's group converged (exactly one
//! leader, followed by every member in its term, and every member's applied index up to the
//! leader's: [`wait_group_converged`], also checked after every fault), take a write on every
//! key (a `setr` on every register, an `append` on every list: recorded like any other
//! operation, so the checker sees them too), leave no transaction pending on any server
//! (`Status`'s `pending_transactions == 0`), and hold the same value and version on every
//! replica of every key. Each condition is polled until it holds or the bound runs out; what
//! still fails then is a finding.
//!
//! Every member status read here also feeds [`Leaders`], which holds Raft's election safety to
//! account: two members that each say they lead in the same term is a safety finding.
//!
//! Left out: the safety of the values themselves (the linearizability checker and the appends
//! check judge those, over the whole history including these writes), and whether the members'
//! logs agree entry by entry (only their applied indices are compared).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::workload::{write_failure, Keys, Recorder};
use super::Timing;
use crate::client::Client;
use crate::error::Result;
use crate::tools::checker::{Call, Return};
use crate::types::{MemberStatus, Space, Value};

/// One member's address, and its status or why it gave none.
pub type MemberAnswer = (String, Result<MemberStatus>);

/// Pause between two looks at the cluster while waiting for a condition.
pub const POLL_MS: u64 = 50;
/// Part of the liveness bound that does not scale with the lease and the transaction timeout.
pub const LIVENESS_MS_BASE: u64 = 15_000;

/// Election timeouts in [`failover_ms`]: openraft 0.9 adds a leader lease as long as the
/// longest election timeout (twice the shortest) to the election timeout (the shortest to twice
/// it) of a member whose vote is committed, so a follower stands for election 3 to 4 shortest
/// election timeouts after it last heard from its leader.
pub const FAILOVER_ELECTION_TIMEOUTS: u64 = 4;

/// Longest a follower goes without hearing from its leader before it stands for election, in
/// ms, from the members' shortest election timeout (the run's own,
/// [`super::election_timeout_ms_from_seed`], never the view leader's default). The holds of the
/// faults aimed at the leader straddle it, so that some end before the others elect and some
/// after.
pub fn failover_ms(election_timeout_ms: u64) -> u64 {
    FAILOVER_ELECTION_TIMEOUTS * election_timeout_ms
}

/// How long after the heal the cluster has to be fully alive again: the promise (no key blocked
/// longer than 2 × the transaction timeout after the view stops containing the participant that
/// blocks it), plus two leases for the view to change and one failover of the view leader's
/// group ([`failover_ms`]: the view changes only once the group has a leader), plus
/// [`LIVENESS_MS_BASE`] for rebalancing and the checks' own round trips.
pub fn liveness_bound_ms(timing: &Timing, election_timeout_ms: u64) -> u64 {
    LIVENESS_MS_BASE
        + 2 * timing.tx_timeout_ms
        + 2 * timing.lease_ms
        + failover_ms(election_timeout_ms)
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

/// Every leader a member's status named, by term: two in one term break Raft's election
/// safety (a member says it leads only in a term it won a majority's votes in).
#[derive(Debug, Default)]
pub struct Leaders {
    by_term: BTreeMap<u64, u64>,
    /// The safety findings so far.
    pub findings: Vec<String>,
}

impl Leaders {
    /// Records every member in `answers` that says it leads.
    pub fn observe(&mut self, answers: &[MemberAnswer]) {
        for status in answers
            .iter()
            .filter_map(|(_, status)| status.as_ref().ok())
        {
            if status.role != "leader" {
                continue;
            }
            match self.by_term.entry(status.term) {
                Entry::Vacant(entry) => {
                    entry.insert(status.id);
                }
                Entry::Occupied(entry) if *entry.get() != status.id => self.findings.push(format!(
                    "two view-leader members led in term {}: member {} and member {}",
                    status.term,
                    entry.get(),
                    status.id
                )),
                Entry::Occupied(_) => {}
            }
        }
    }
}

/// Every member's status (or why it gave none), asked of all at once.
pub async fn member_statuses(admin: &Client, addrs: &[String]) -> Vec<MemberAnswer> {
    futures::future::join_all(
        addrs
            .iter()
            .map(|addr| async move { (addr.clone(), admin.member_status(addr).await) }),
    )
    .await
}

/// The member that leads, as far as `answers` tell: it says it leads, in a term no answering
/// member is past, and it is not in a simulated crash (a crashed leader still says it leads).
pub fn sole_leader(answers: &[MemberAnswer]) -> Option<&MemberStatus> {
    let statuses: Vec<&MemberStatus> = answers
        .iter()
        .filter_map(|(_, status)| status.as_ref().ok())
        .collect();
    let newest = statuses.iter().map(|s| s.term).max()?;
    let mut leading = statuses
        .iter()
        .filter(|s| s.role == "leader" && s.term == newest && !s.crashed);
    let leader = leading.next()?;
    leading.next().is_none().then_some(*leader)
}

/// The group's leader if it has converged: every member answered and is not crashed, exactly
/// one says it leads, and every other follows it in its term.
fn agreed_leader(answers: &[MemberAnswer]) -> Option<&MemberStatus> {
    let statuses: Vec<&MemberStatus> = answers
        .iter()
        .map(|(_, status)| status.as_ref().ok())
        .collect::<Option<_>>()?;
    if statuses.iter().any(|s| s.crashed) {
        return None;
    }
    let mut leading = statuses.iter().filter(|s| s.role == "leader");
    let leader = *leading.next()?;
    if leading.next().is_some() {
        return None;
    }
    statuses
        .iter()
        .all(|s| s.term == leader.term && s.leader == Some(leader.id))
        .then_some(leader)
}

/// One line per member: its role, term, leader and indices, or why it did not answer.
pub fn describe_members(answers: &[MemberAnswer]) -> String {
    let index = |i: Option<u64>| i.map(|i| i.to_string()).unwrap_or_else(|| "-".into());
    answers
        .iter()
        .map(|(addr, status)| match status {
            Ok(s) => format!(
                "member {} at {addr}: {}{} term {} leader {} applied {} log {} snapshot {}",
                s.id,
                s.role,
                if s.crashed { " (crashed)" } else { "" },
                s.term,
                index(s.leader),
                index(s.applied),
                index(s.last_log_index),
                index(s.snapshot)
            ),
            Err(err) => format!("{addr}: {err}"),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Whether the group has converged, as far as `answers` tell: one leader that every member
/// answering, none crashed, follows in its term, and every member's applied
/// index at least `target`. `target` is set to the leader's applied index the first time such
/// a leader is seen, and kept across the polls of one wait: entries the leader had applied were
/// committed, so every member must apply them, however far the leader has gone since. The
/// leader's id and term once converged.
pub fn converged(answers: &[MemberAnswer], target: &mut Option<u64>) -> Option<(u64, u64)> {
    let leader = agreed_leader(answers)?;
    let target = *target.get_or_insert(leader.applied.unwrap_or(0));
    let caught_up = answers.iter().all(|(_, status)| {
        status
            .as_ref()
            .is_ok_and(|s| s.applied.unwrap_or(0) >= target)
    });
    caught_up.then_some((leader.id, leader.term))
}

/// Polls the members at `addrs` until the group has converged: exactly one leader, followed by
/// every member in its term, and every member's applied index at least the leader's when it was
/// first seen so (entries it had applied were committed, so every member must apply them). For
/// at most `bound`. The leader's id and term once converged; what the members said last, when
/// they did not.
pub async fn wait_group_converged(
    admin: &Client,
    addrs: &[String],
    bound: Duration,
    leaders: &mut Leaders,
) -> std::result::Result<(u64, u64), String> {
    let deadline = Instant::now() + bound;
    let mut target: Option<u64> = None;
    loop {
        let answers = member_statuses(admin, addrs).await;
        leaders.observe(&answers);
        if let Some(led) = converged(&answers, &mut target) {
            return Ok(led);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{}{}",
                target
                    .map(|t| format!("applied index to reach {t}; "))
                    .unwrap_or_default(),
                describe_members(&answers)
            ));
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// Checks liveness within `bound` of now; returns the findings (empty: alive). The group's
/// statuses feed `leaders`.
pub async fn check(
    admin: &Client,
    recorder: &Recorder,
    addrs: &[String],
    members: &[String],
    leaders: &mut Leaders,
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
    let left = deadline.saturating_duration_since(Instant::now());
    if let Err(problem) = wait_group_converged(admin, members, left, leaders).await {
        findings.push(format!(
            "the view leader's group did not converge within {bound_ms} ms of the heal: {problem}"
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
            match admin.get(&replica.addr, Space::Ring, key).await {
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
