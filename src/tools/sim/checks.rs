//! The promises a simulated run is held to, checked over what its clients recorded: every
//! `getr` and write linearizable (the checker of [`crate::tools::checker`]); every acknowledged
//! append exactly once and no failed one present; a stale read never invents a value; fencing
//! tokens grow with every grant of a lock, in real-time order, and a lock never has two holders;
//! an epoch never names two views, and never goes backwards in real-time order (across leader
//! changes of the view leader's Raft group); nothing the view leader must log or confirm with a
//! majority is answered while a majority of its members is down; no key stays refused by a
//! pending transaction past a bound, even while faults go on; the rules of Raft the run loop
//! found broken in the members' own reports (one leader per term, one state per log index); and
//! the liveness the auditor found after healing.

use std::collections::BTreeMap;

use crate::tools::checker::{self, Call, CheckOptions, Operation, Return};
use crate::types::{Epoch, FencingToken, ServerId, Value};

/// Search steps per key before the checker gives up, which counts as a failure.
pub const CHECK_STEPS_PER_KEY_MAX: u64 = 2_000_000;

/// One grant of a lock as its client saw it: the lock, the token, and when the `lock_get`
/// was invoked and answered (simulated µs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub lock: String,
    pub requester: String,
    pub token: FencingToken,
    pub invoked_us: u64,
    pub completed_us: u64,
    /// When the holder asked to release it: it held the lock from `completed_us` until then.
    pub released_us: u64,
}

/// A view as a client saw it: asked for at `invoked_us`, answered at `at_us`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSample {
    pub invoked_us: u64,
    pub at_us: u64,
    pub epoch: Epoch,
    pub servers: Vec<ServerId>,
    pub rebalancing: bool,
}

pub use crate::server::mover::REBALANCE_STUCK_MS;

/// A write refused because another transaction held its key ([`crate::error::Error::Conflict`],
/// after the client's backoff ran out), as its client saw it: the key and when the refusal was
/// answered (simulated µs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub key: String,
    pub at_us: u64,
}

/// Transaction timeouts a key may stay refused by a pending transaction, counted from when the
/// view stopped containing the participant that blocks it (the faults issue's promise).
pub const KEY_BLOCKED_TX_TIMEOUTS: u64 = 2;
/// Slack on top of [`key_blocked_bound_ms`]'s protocol times, in ms: a refusal is answered at
/// the end of a client's backoff, and termination polls on a timer of its own.
pub const KEY_BLOCKED_SLACK_MS: u64 = 1_000;

/// How long a key may be refused without a break before a run fails, in ms, for a cluster with
/// `lease_ms` and `tx_timeout_ms`: the transaction may be prepared a transaction timeout before
/// its blocking participant goes silent (nobody acts before the timeout), the view drops that
/// participant a lease after it went silent, and from then on the promise is
/// [`KEY_BLOCKED_TX_TIMEOUTS`] transaction timeouts; plus [`KEY_BLOCKED_SLACK_MS`].
pub fn key_blocked_bound_ms(lease_ms: u64, tx_timeout_ms: u64) -> u64 {
    tx_timeout_ms + lease_ms + KEY_BLOCKED_TX_TIMEOUTS * tx_timeout_ms + KEY_BLOCKED_SLACK_MS
}

/// A call to the view leader that only a majority of its members can answer: a lock get or
/// release (logged) or a view query (a read confirmed with a majority).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuorumCall {
    LockGet,
    LockRelease,
    QueryServers,
}

impl QuorumCall {
    pub fn name(self) -> &'static str {
        match self {
            QuorumCall::LockGet => "lock_get",
            QuorumCall::LockRelease => "lock_release",
            QuorumCall::QueryServers => "query_servers",
        }
    }
}

/// One [`QuorumCall`] as its client saw it: when it was made and answered (simulated µs), and
/// whether the answer was a reply rather than an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    pub call: QuorumCall,
    pub invoked_us: u64,
    pub completed_us: u64,
    pub ok: bool,
}

/// What the clients of one run recorded.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    pub history: Vec<Operation>,
    /// `getr --stale` answers: key, value, when.
    pub stale_reads: Vec<(String, Option<Value>, u64)>,
    pub views: Vec<ViewSample>,
    pub grants: Vec<Grant>,
    /// Writes of the workload refused because their key was held.
    pub refusals: Vec<Refusal>,
    /// The lists after healing, for the append checks.
    pub final_lists: BTreeMap<String, Vec<String>>,
    /// What the auditor found wrong after healing.
    pub liveness: Vec<String>,
    /// Whether the auditor finished (a run cut short cannot vouch for liveness).
    pub audited: bool,
    /// Workload clients that have finished.
    pub clients_done: usize,
    /// Every call to the view leader that needs a majority of its members.
    pub quorum_calls: Vec<Answered>,
    /// When a majority of the view leader's members was down (simulated µs, from and to), as
    /// the run loop saw its faults.
    pub quorum_lost: Vec<(u64, u64)>,
    /// Rules of Raft broken in the members' own reports, as the run loop's polls found them.
    pub raft: Vec<String>,
}

impl Recorded {
    /// Records `call`, made at `invoked_us` and answered at `completed_us` (`ok`: with a reply).
    pub fn note_quorum_call(
        &mut self,
        call: QuorumCall,
        invoked_us: u64,
        completed_us: u64,
        ok: bool,
    ) {
        self.quorum_calls.push(Answered {
            call,
            invoked_us,
            completed_us,
            ok,
        });
    }
}

/// Every broken promise of a run, each in a sentence. `key_blocked_ms`: the bound of
/// [`blocked_keys`] ([`key_blocked_bound_ms`] of the run's options).
pub fn check(recorded: &Recorded, key_blocked_ms: u64) -> Vec<String> {
    let mut violations = Vec::new();
    let report = checker::check(
        &recorded.history,
        &CheckOptions {
            max_steps_per_key: CHECK_STEPS_PER_KEY_MAX,
        },
    );
    for (key, verdict) in &report.keys {
        if *verdict != checker::Verdict::Linearizable {
            violations.push(format!("linearizability of {key:?}: {verdict}"));
        }
    }
    if recorded.audited {
        for problem in checker::check_appends(&recorded.history, &recorded.final_lists) {
            violations.push(format!("appends: {problem}"));
        }
    } else {
        violations.push("liveness: the audit after healing did not finish".to_string());
    }
    violations.extend(stale_reads_invented(recorded));
    violations.extend(fencing(&recorded.grants));
    violations.extend(two_holders(&recorded.grants));
    violations.extend(epochs(&recorded.views));
    violations.extend(answered_without_quorum(
        &recorded.quorum_calls,
        &recorded.quorum_lost,
    ));
    violations.extend(recorded.raft.iter().cloned());
    violations.extend(stuck_rebalancing(&recorded.views));
    violations.extend(blocked_keys(
        &recorded.history,
        &recorded.refusals,
        key_blocked_ms,
    ));
    violations.extend(recorded.liveness.iter().cloned());
    violations
}

/// A stale read may be old, never invented: what it returns was written by a write invoked
/// before the read answered.
fn stale_reads_invented(recorded: &Recorded) -> Vec<String> {
    let mut problems = Vec::new();
    for (key, value, at_us) in &recorded.stale_reads {
        let Some(value) = value else { continue };
        let written = recorded.history.iter().any(|op| {
            op.key == *key && op.invoked_us <= *at_us && op.call == Call::Write(value.clone())
        });
        if !written {
            problems.push(format!(
                "a stale read of {key:?} at {} ms returned {value:?}, which no write had written",
                at_us / 1_000
            ));
        }
    }
    problems
}

/// Tokens of one lock grow with every grant: a grant answered before another was asked for
/// carries the smaller token, and no two grants share one. A holder that asks again keeps its
/// grant and its token (a `lock_get` by the holder renews it): that is no new grant.
pub fn fencing(grants: &[Grant]) -> Vec<String> {
    // Per lock: the first pair that breaks the rule, and how many do.
    let mut broken: BTreeMap<&str, (String, usize)> = BTreeMap::new();
    for (n, a) in grants.iter().enumerate() {
        for b in &grants[n + 1..] {
            if a.lock != b.lock || (a.requester == b.requester && a.token == b.token) {
                continue;
            }
            let (first, second) = if a.completed_us < b.invoked_us {
                (a, b)
            } else if b.completed_us < a.invoked_us {
                (b, a)
            } else if a.token == b.token {
                (a, b)
            } else {
                continue;
            };
            if first.token >= second.token {
                let entry = broken.entry(first.lock.as_str()).or_insert_with(|| {
                    (
                        format!(
                            "granted with token {} at {} ms, then with token {} at {} ms",
                            first.token,
                            first.completed_us / 1_000,
                            second.token,
                            second.completed_us / 1_000
                        ),
                        0,
                    )
                });
                entry.1 += 1;
            }
        }
    }
    broken
        .into_iter()
        .map(|(lock, (example, pairs))| {
            format!("fencing: {lock:?} {example} ({pairs} pairs of grants out of order)")
        })
        .collect()
}

/// A lock has at most one holder: two requesters never hold one lock over the same stretch of
/// time (each from the answer granting it until it asks to release it). The view leader grants
/// the next holder only after it handled the release, which comes after the release was asked for.
pub fn two_holders(grants: &[Grant]) -> Vec<String> {
    let mut broken: BTreeMap<&str, (String, usize)> = BTreeMap::new();
    for (n, a) in grants.iter().enumerate() {
        for b in &grants[n + 1..] {
            if a.lock != b.lock || a.requester == b.requester {
                continue;
            }
            let overlap = a.completed_us < b.released_us && b.completed_us < a.released_us;
            if overlap {
                let entry = broken.entry(a.lock.as_str()).or_insert_with(|| {
                    (
                        format!(
                            "held by {} from {} ms to {} ms and by {} from {} ms to {} ms",
                            a.requester,
                            a.completed_us / 1_000,
                            a.released_us / 1_000,
                            b.requester,
                            b.completed_us / 1_000,
                            b.released_us / 1_000
                        ),
                        0,
                    )
                });
                entry.1 += 1;
            }
        }
    }
    broken
        .into_iter()
        .map(|(lock, (example, pairs))| {
            format!("two holders: {lock:?} {example} ({pairs} overlapping pairs)")
        })
        .collect()
}

/// One epoch, one view: two different sets of servers under the same epoch mean an epoch was
/// handed out twice (a restarted view leader counting again, say). And epochs never go
/// backwards: a view query answered after another was answered carries an epoch at least as
/// high (each is a read the leader confirmed with a majority, so a new leader that had not yet
/// applied its predecessor's last entries must not answer one with an older view).
pub fn epochs(views: &[ViewSample]) -> Vec<String> {
    let mut seen: BTreeMap<Epoch, &Vec<ServerId>> = BTreeMap::new();
    let mut problems = Vec::new();
    for view in views {
        match seen.get(&view.epoch) {
            Some(earlier) if **earlier != view.servers => problems.push(format!(
                "epochs: epoch {} named two views: {earlier:?} and {:?}",
                view.epoch, view.servers
            )),
            Some(_) => {}
            None => {
                seen.insert(view.epoch, &view.servers);
            }
        }
    }
    // By answer time, with the highest epoch answered so far: a query asked after an answer
    // must carry at least its epoch.
    let mut answered: Vec<&ViewSample> = views.iter().collect();
    answered.sort_by_key(|view| view.at_us);
    let mut highest: Vec<(u64, Epoch, u64)> = Vec::with_capacity(answered.len());
    for view in &answered {
        let best = highest.last().map_or((0, 0), |&(_, epoch, at)| (epoch, at));
        let (epoch, at) = if view.epoch > best.0 {
            (view.epoch, view.at_us)
        } else {
            best
        };
        highest.push((view.at_us, epoch, at));
    }
    let mut backwards = 0;
    let mut example = None;
    for view in views {
        // The answers completed strictly before this query was asked.
        let before = highest.partition_point(|&(at_us, _, _)| at_us < view.invoked_us);
        let Some(&(_, epoch, at_us)) = before.checked_sub(1).map(|n| &highest[n]) else {
            continue;
        };
        if view.epoch < epoch {
            backwards += 1;
            example.get_or_insert_with(|| {
                format!(
                    "a view of epoch {} was answered at {} ms to a query asked at {} ms, after \
                     one of epoch {epoch} had been answered at {} ms",
                    view.epoch,
                    view.at_us / 1_000,
                    view.invoked_us / 1_000,
                    at_us / 1_000
                )
            });
        }
    }
    if let Some(example) = example {
        problems.push(format!(
            "epochs: went backwards: {example} ({backwards} queries answered with an older epoch)"
        ));
    }
    problems
}

/// Whether the call was made and answered within one stretch of `quorum_lost`.
fn inside<'a>(call: &Answered, quorum_lost: &'a [(u64, u64)]) -> Option<&'a (u64, u64)> {
    quorum_lost
        .iter()
        .find(|&&(from, to)| from <= call.invoked_us && call.completed_us <= to)
}

/// Nothing that needs a majority is answered without one: while a majority of the view leader's
/// members is down, no entry can be committed and no leader can confirm it still leads, so a
/// lock get or release or a view query made after the majority went down and answered before it
/// came back must have failed. (One made before may have been committed before, and answered
/// late.)
pub fn answered_without_quorum(calls: &[Answered], quorum_lost: &[(u64, u64)]) -> Vec<String> {
    let answered: Vec<(&Answered, &(u64, u64))> = calls
        .iter()
        .filter(|call| call.ok)
        .filter_map(|call| inside(call, quorum_lost).map(|stretch| (call, stretch)))
        .collect();
    let Some((call, (from, to))) = answered.first() else {
        return Vec::new();
    };
    vec![format!(
        "quorum: a {} asked at {} ms was answered at {} ms while a majority of the view leader's \
         members was down (from {} ms to {} ms) ({} such answers)",
        call.call.name(),
        call.invoked_us / 1_000,
        call.completed_us / 1_000,
        from / 1_000,
        to / 1_000,
        answered.len()
    )]
}

/// The calls that needed a majority, made and failed while it was down: the view leader
/// refusing cleanly, which [`answered_without_quorum`] holds it to.
pub fn refused_without_quorum(calls: &[Answered], quorum_lost: &[(u64, u64)]) -> u64 {
    calls
        .iter()
        .filter(|call| !call.ok && inside(call, quorum_lost).is_some())
        .count() as u64
}

/// No stall of the whole cluster: the views the clients and the auditor sampled never report
/// rebalancing for longer than [`REBALANCE_STUCK_MS`] without a break (while it does, every read
/// and write waits).
pub fn stuck_rebalancing(views: &[ViewSample]) -> Vec<String> {
    let mut samples: Vec<&ViewSample> = views.iter().collect();
    samples.sort_by_key(|view| view.at_us);
    let mut since: Option<u64> = None;
    let mut longest = (0, 0);
    for view in samples {
        match (view.rebalancing, since) {
            (true, None) => since = Some(view.at_us),
            (true, Some(start)) if view.at_us - start > longest.1 - longest.0 => {
                longest = (start, view.at_us)
            }
            (false, _) => since = None,
            _ => {}
        }
    }
    let (start, end) = longest;
    if (end - start) / 1_000 > REBALANCE_STUCK_MS {
        return vec![format!(
            "liveness: the cluster reported rebalancing from {} ms to {} ms without a break",
            start / 1_000,
            end / 1_000
        )];
    }
    Vec::new()
}

/// No key blocked for good while the faults go on: the writes of one key are never all refused
/// with a conflict (another transaction holds the key) for longer than `bound_ms` without a
/// break. A write that succeeded breaks the run if it may have taken effect anywhere between two
/// refusals (its invocation-to-completion interval meets the gap between them; an uncertain one
/// counts from its invocation); failures of any other kind (timeouts, rebalancing) neither
/// break it nor extend it. The auditor checks writability after healing; this finds a key that
/// stays blocked only as long as a fault lasts. Under the handled faults no write is refused
/// at all (a conflict clears well within the client's wait).
pub fn blocked_keys(history: &[Operation], refusals: &[Refusal], bound_ms: u64) -> Vec<String> {
    let mut refused: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for refusal in refusals {
        refused.entry(&refusal.key).or_default().push(refusal.at_us);
    }
    let mut problems = Vec::new();
    for (key, mut times) in refused {
        times.sort_unstable();
        // When a write of this key got through, or may have: (from, to). An uncertain write
        // had every vote, so the key was free at some time after its invocation; the client
        // gave up on it long before `bound_ms` passed.
        let through: Vec<(u64, u64)> = history
            .iter()
            .filter(|op| op.key == key)
            .filter_map(|op| match (&op.ret, op.completed_us) {
                (Return::Written | Return::Appended, Some(done)) => Some((op.invoked_us, done)),
                (Return::Unknown, _) => Some((op.invoked_us, op.invoked_us + bound_ms * 1_000)),
                _ => None,
            })
            .collect();
        let mut start = times[0];
        let mut longest = (start, start);
        for pair in times.windows(2) {
            let (previous, next) = (pair[0], pair[1]);
            if through
                .iter()
                .any(|&(invoked, done)| done >= previous && invoked <= next)
            {
                start = next;
            }
            if next - start > longest.1 - longest.0 {
                longest = (start, next);
            }
        }
        let (from, to) = longest;
        if (to - from) / 1_000 > bound_ms {
            problems.push(format!(
                "liveness: writes to {key:?} were refused by a pending transaction from {} ms to {} ms without one getting through (bound {bound_ms} ms)",
                from / 1_000,
                to / 1_000
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(lock: &str, token: u64, invoked_us: u64, completed_us: u64) -> Grant {
        Grant {
            lock: lock.into(),
            requester: format!("client-{token}-{invoked_us}"),
            token,
            invoked_us,
            completed_us,
            released_us: completed_us + 1,
        }
    }

    #[test]
    fn two_requesters_holding_one_lock_at_once_is_a_violation() {
        let mut first = grant("l", 1, 0, 10);
        first.released_us = 50;
        let after = grant("l", 2, 40, 60);
        assert!(two_holders(&[first.clone(), after]).is_empty());
        let during = grant("l", 3, 20, 30);
        assert_eq!(two_holders(&[first.clone(), during.clone()]).len(), 1);
        let mut same = during;
        same.requester = first.requester.clone();
        assert!(
            two_holders(&[first, same]).is_empty(),
            "a renewal is one holder"
        );
    }

    #[test]
    fn a_token_that_does_not_grow_across_real_time_is_a_violation() {
        assert!(fencing(&[grant("l", 1, 0, 10), grant("l", 2, 20, 30)]).is_empty());
        assert_eq!(
            fencing(&[grant("l", 5, 0, 10), grant("l", 5, 20, 30)]).len(),
            1,
            "a token repeated after a restart"
        );
        assert!(
            fencing(&[grant("l", 7, 0, 40), grant("l", 3, 20, 30)]).is_empty(),
            "overlapping grants may be answered in either order"
        );
        assert!(fencing(&[grant("a", 5, 0, 10), grant("b", 1, 20, 30)]).is_empty());
        let mut renewed = grant("l", 5, 20, 30);
        renewed.requester = grant("l", 5, 0, 10).requester;
        assert!(
            fencing(&[grant("l", 5, 0, 10), renewed]).is_empty(),
            "a holder asking again keeps its token"
        );
    }

    fn view(at_ms: u64, epoch: Epoch, servers: &[&str], rebalancing: bool) -> ViewSample {
        ViewSample {
            invoked_us: at_ms * 1_000,
            at_us: at_ms * 1_000,
            epoch,
            servers: servers.iter().map(|s| s.to_string()).collect(),
            rebalancing,
        }
    }

    #[test]
    fn an_epoch_naming_two_views_is_a_violation() {
        let views = vec![
            view(1, 3, &["a", "b"], false),
            view(2, 3, &["a", "b"], false),
            view(3, 4, &["a"], false),
        ];
        assert!(epochs(&views).is_empty());
        let twice = vec![view(1, 3, &["a"], false), view(2, 3, &["b"], false)];
        assert_eq!(epochs(&twice).len(), 1);
    }

    #[test]
    fn an_epoch_older_than_one_answered_before_the_query_is_a_violation() {
        let mut late = view(10, 3, &["a", "b"], false);
        late.invoked_us = 5_000;
        let newer = view(4, 4, &["a"], false);
        let backwards = epochs(&[newer.clone(), late.clone()]);
        assert_eq!(backwards.len(), 1, "{backwards:?}");
        assert!(backwards[0].contains("backwards"), "{backwards:?}");
        let mut overlapping = late;
        overlapping.invoked_us = 3_000;
        assert!(
            epochs(&[newer, overlapping]).is_empty(),
            "a query asked before the newer answer came may be answered with the older epoch"
        );
    }

    fn call(ok: bool, invoked_ms: u64, completed_ms: u64) -> Answered {
        Answered {
            call: QuorumCall::LockGet,
            invoked_us: invoked_ms * 1_000,
            completed_us: completed_ms * 1_000,
            ok,
        }
    }

    #[test]
    fn an_answer_needing_a_majority_while_it_was_down_is_a_violation() {
        let lost = [(1_000_000, 3_000_000)];
        assert_eq!(
            answered_without_quorum(&[call(true, 1_500, 2_000)], &lost).len(),
            1
        );
        assert!(answered_without_quorum(&[call(false, 1_500, 2_000)], &lost).is_empty());
        assert!(
            answered_without_quorum(&[call(true, 900, 1_200)], &lost).is_empty(),
            "asked before the majority went down: committed before, answered late"
        );
        assert!(answered_without_quorum(&[call(true, 2_900, 3_100)], &lost).is_empty());
        assert_eq!(
            refused_without_quorum(&[call(false, 1_500, 2_000), call(false, 100, 200)], &lost),
            1
        );
    }

    fn write(key: &str, invoked_ms: u64, completed_ms: Option<u64>, ret: Return) -> Operation {
        Operation {
            id: invoked_ms,
            client: 0,
            key: key.into(),
            call: Call::Write(Value::Text(format!("v{invoked_ms}"))),
            invoked_us: invoked_ms * 1_000,
            completed_us: completed_ms.map(|ms| ms * 1_000),
            ret,
        }
    }

    fn refusals(key: &str, at_ms: &[u64]) -> Vec<Refusal> {
        at_ms
            .iter()
            .map(|ms| Refusal {
                key: key.into(),
                at_us: ms * 1_000,
            })
            .collect()
    }

    #[test]
    fn a_key_refused_without_a_break_past_the_bound_is_blocked() {
        let refused = refusals("k", &[1_000, 4_000, 8_000]);
        assert_eq!(blocked_keys(&[], &refused, 5_000).len(), 1);
        assert!(blocked_keys(&[], &refused, 7_000).is_empty());
        let failed = vec![write("k", 5_000, Some(5_010), Return::Failed)];
        assert_eq!(
            blocked_keys(&failed, &refused, 5_000).len(),
            1,
            "a write that failed otherwise does not break the run"
        );
        let through = vec![write("k", 5_000, Some(5_010), Return::Written)];
        assert!(blocked_keys(&through, &refused, 5_000).is_empty());
        let uncertain = vec![write("k", 5_000, None, Return::Unknown)];
        assert!(blocked_keys(&uncertain, &refused, 5_000).is_empty());
        let elsewhere = vec![write("j", 5_000, Some(5_010), Return::Written)];
        assert_eq!(blocked_keys(&elsewhere, &refused, 5_000).len(), 1);
    }

    #[test]
    fn rebalancing_without_a_break_past_the_bound_is_a_stall() {
        let short = vec![
            view(0, 1, &["a"], true),
            view(5_000, 1, &["a"], true),
            view(6_000, 1, &["a"], false),
            view(7_000, 2, &["a"], true),
            view(16_000, 2, &["a"], true),
        ];
        assert!(stuck_rebalancing(&short).is_empty());
        let stalled = vec![view(16_000, 2, &["a"], true), view(0, 2, &["a"], true)];
        assert_eq!(stuck_rebalancing(&stalled).len(), 1);
    }
}
