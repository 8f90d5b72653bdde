//! Replicated keys: `setr` and `append` (two-phase commit driven by [`Coordinator`]) and `getr`
//! (linearizable by default, or `--stale`).
//!
//! # Writes
//! A write proposes a version above anything this client has seen (the wall clock in
//! microseconds, or above what a participant reported), runs the vote, and commits at the primary
//! before the others. Every message of one transaction is retried with the same transaction id
//! after a timeout or a broken connection, and participants apply a transaction at most once, so
//! a retry never writes twice. A write whose commit reached the primary but not a majority is
//! reported as having an *unknown outcome* (exit 3), never retried under a new id: the
//! participants finish it by themselves (termination), and retrying could apply it twice.
//!
//! # Reads
//! A linearizable `getr` reads a majority of the replicas at once (the others only if one of
//! those does not answer). It takes the highest version, and if fewer than a majority hold that version it writes it back to them
//! first (the read half of ABD). So once a read has returned a value, a majority holds it or
//! something newer, and every later read, which also hears from a majority, sees it: reads never
//! go back in time, and never return less than a completed write (which committed at a
//! majority). A replica that reports a newer epoch than the reader's view sends the reader to
//! fetch the view again. `getr --stale` reads the replicas in ring order and returns the first
//! value found: one round trip to one server, available while only one replica is up, but it may
//! return an older value.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};

use super::{
    name_replica, unexpected_server, CachedView, Client, GetrOutcome, SetrOutcome,
    CONFLICT_BACKOFF_MS_MAX, CONFLICT_BACKOFF_MS_MIN, RPC_ATTEMPTS_MAX, VIEW_ATTEMPTS_MAX,
    VIEW_POLL_MS,
};
use crate::error::{Error, Result};
use crate::faults::CrashPoint;
use crate::rpc::message::{ServerReply, ServerRequest};
use crate::twopc::coordinator::{AfterPrimary, CommitReply, Coordinator, Decision, VoteReply};
use crate::twopc::{majority, next_version};
use crate::types::{check_key, check_value};
use crate::types::{Op, ServerInfo, TxId, Value, Version, Versioned};

/// How far past its deadline a write may still begin its commit.
pub const LATE_COMMIT_GRACE_MS: u64 = 200;
/// Proposals answered `Outdated` before a write gives up (each goes above the last).
pub const REPROPOSALS_MAX: usize = 5;

/// How one round of a write ended.
enum Round {
    Done(SetrOutcome),
    /// Propose again above this version.
    Outdated(Version),
    /// Nothing was written.
    Failed(Error),
    /// The primary may have committed: report, never retry under a new transaction.
    Uncertain(Error),
}

impl Client {
    /// Writes `value` at `key` on all its replicas, or on none (two-phase commit).
    pub async fn setr(&self, key: &str, value: Value) -> Result<SetrOutcome> {
        self.write(key, Op::Put(value), None).await
    }

    /// Adds `item` to the list at `key` on all its replicas, or on none; a missing key becomes
    /// the list `[item]`, a key holding a text is refused.
    pub async fn append(&self, key: &str, item: &str) -> Result<SetrOutcome> {
        self.write(key, Op::Append(item.to_string()), None).await
    }

    /// A write whose coordinator stops at `crash_at`, as if the client died there. It returns
    /// `Err(Internal)` at that point and leaves the participants to resolve the transaction.
    pub async fn write_then_crash(
        &self,
        key: &str,
        op: Op,
        crash_at: CrashPoint,
    ) -> Result<SetrOutcome> {
        self.write(key, op, Some(crash_at)).await
    }

    /// Adds `item` to the list at `key`, giving up (with nothing written) if the commit cannot
    /// begin by `deadline`. A replica that does not answer is waited out until the view leader
    /// drops it from the view, within the same deadline.
    pub async fn append_by(&self, key: &str, item: &str, deadline: Instant) -> Result<SetrOutcome> {
        self.write_by(key, Op::Append(item.to_string()), None, deadline)
            .await
    }

    async fn write(&self, key: &str, op: Op, crash_at: Option<CrashPoint>) -> Result<SetrOutcome> {
        let deadline = self.env.now() + Duration::from_millis(self.options.wait_ms);
        self.write_by(key, op, crash_at, deadline).await
    }

    async fn write_by(
        &self,
        key: &str,
        op: Op,
        crash_at: Option<CrashPoint>,
        deadline: Instant,
    ) -> Result<SetrOutcome> {
        check_key(key)?;
        match &op {
            Op::Put(value) => check_value(value)?,
            Op::Append(item) => check_value(&Value::List(vec![item.clone()]))?,
        }

        let mut view = self.settled_view_until(false, deadline).await?;
        let mut view_attempts = 1;
        let mut reproposals = 0;
        let mut backoff_ms = CONFLICT_BACKOFF_MS_MIN;
        let mut version = self.propose_version(0)?;
        loop {
            match self
                .write_round(&view, key, &op, version, crash_at, deadline)
                .await
            {
                Round::Done(outcome) => return Ok(outcome),
                Round::Uncertain(err) => return Err(err),
                Round::Outdated(above) => {
                    reproposals += 1;
                    if reproposals > REPROPOSALS_MAX {
                        return Err(Error::Conflict(format!(
                            "{key:?}: {REPROPOSALS_MAX} version proposals were outdated"
                        )));
                    }
                    version = self.propose_version(above)?;
                }
                // Another writer holds the key: it is decided within a timeout, so wait (the
                // same bound as any retry answer), then report the conflict.
                Round::Failed(err @ Error::Conflict(_)) => {
                    if self.env.now() >= deadline {
                        return Err(err);
                    }
                    let jitter = self.env.random_below(backoff_ms.max(1));
                    tokio::time::sleep(Duration::from_millis(backoff_ms + jitter)).await;
                    backoff_ms = (backoff_ms * 2).min(CONFLICT_BACKOFF_MS_MAX);
                    version = self.propose_version(version)?;
                }
                Round::Failed(err)
                    if view_attempts < VIEW_ATTEMPTS_MAX && worth_another_view(&err) =>
                {
                    // Nobody to write to: say so now rather than wait for a server to appear.
                    if view.view.servers.is_empty() {
                        return Err(err);
                    }
                    let mut fresh = self.settled_view_until(true, deadline).await?;
                    // An unreachable replica stays in the view until its lease runs out: wait
                    // for the view leader to drop it (bounded by the deadline). A mismatch of
                    // epoch or id in an unchanged view is reported at once.
                    while fresh.view == view.view
                        && waits_for_view_change(&err)
                        && self.env.now() < deadline
                    {
                        tokio::time::sleep(Duration::from_millis(VIEW_POLL_MS)).await;
                        fresh = self.settled_view_until(true, deadline).await?;
                    }
                    if fresh.view == view.view {
                        return Err(err);
                    }
                    tracing::debug!(%err, epoch = fresh.view.epoch, "write retrying under a newer view");
                    view = fresh;
                    view_attempts += 1;
                    version = self.propose_version(version)?;
                }
                Round::Failed(err) => return Err(err),
            }
        }
    }

    /// A version above `above`, above every earlier proposal of this client, and near the wall
    /// clock (so independent clients rarely collide and need a second round).
    /// Fails only when `above` leaves no room below [`crate::types::VERSION_MAX`].
    fn propose_version(&self, above: Version) -> Result<Version> {
        let now_us = self.env.wall_us();
        let mut proposal = Ok(0);
        let _ = self
            .last_version
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                proposal = next_version(now_us, above, last);
                proposal.as_ref().ok().copied()
            });
        proposal
    }

    async fn write_round(
        &self,
        view: &CachedView,
        key: &str,
        op: &Op,
        version: Version,
        crash_at: Option<CrashPoint>,
        commit_by: Instant,
    ) -> Round {
        let replicas = view.replicas(key);
        if replicas.is_empty() {
            return Round::Failed(Error::Unreachable(format!(
                "no storage servers in the view (epoch {}): cannot write {key:?}",
                view.view.epoch
            )));
        }
        let tx: u128 = self.env.random_u128();
        let mut coordinator = Coordinator::new(
            tx,
            key.to_string(),
            op.clone(),
            view.view.epoch,
            version,
            replicas.clone(),
        )
        // Only an append can start a fresh list, and the check builds rings: puts skip it.
        .range_lost(matches!(op, Op::Append(_)) && crate::ring::loss_of(&view.view, key).is_some());
        let voters = if crash_at == Some(CrashPoint::AfterFirstPrepare) {
            1
        } else {
            replicas.len()
        };
        let mut votes: FuturesUnordered<_> = (0..voters)
            .map(|index| {
                let request = ServerRequest::Prepare(coordinator.prepare(index));
                let addr = replicas[index].addr.as_str();
                async move {
                    let vote = match self.call_retrying(addr, request, RPC_ATTEMPTS_MAX).await {
                        Ok(ServerReply::Prepared) => VoteReply::Yes,
                        Ok(ServerReply::Outdated { above }) => VoteReply::Outdated { above },
                        Ok(other) => VoteReply::No(unexpected_server("prepare", &other)),
                        Err(err) => VoteReply::No(name_replica(err, addr)),
                    };
                    (index, vote)
                }
            })
            .collect();
        let deadline = self.env.now() + self.timeout() * RPC_ATTEMPTS_MAX as u32;
        loop {
            match tokio::time::timeout_at(deadline, votes.next()).await {
                Ok(Some((index, vote))) => {
                    if coordinator.on_vote(index, vote).is_some() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    coordinator.on_timeout();
                    break;
                }
            }
        }
        drop(votes);
        if matches!(
            crash_at,
            Some(CrashPoint::AfterFirstPrepare | CrashPoint::AfterAllPrepares)
        ) {
            return Round::Failed(Error::Internal(format!(
                "coordinator stopped on purpose ({crash_at:?})"
            )));
        }
        match coordinator.decision().cloned() {
            Some(Decision::Commit)
                if self.env.now() > commit_by + Duration::from_millis(LATE_COMMIT_GRACE_MS) =>
            {
                // Out of time: a caller who gave up must never see this write appear.
                self.abort_all(&replicas, coordinator.tx()).await;
                Round::Failed(Error::Timeout(format!(
                    "{key:?}: out of time before the commit; aborted"
                )))
            }
            Some(Decision::Commit) => self.commit_phase(&coordinator, view, crash_at).await,
            Some(Decision::Repropose { above }) => {
                self.abort_all(&replicas, coordinator.tx()).await;
                Round::Outdated(above)
            }
            Some(Decision::Abort { reason }) => {
                // Every participant hears the abort, including ones whose vote never arrived.
                self.abort_all(&replicas, coordinator.tx()).await;
                Round::Failed(reason)
            }
            None => Round::Failed(Error::Internal("2PC ended undecided".into())),
        }
    }

    /// Commits at the primary, then at the others; done once a majority with the primary has.
    async fn commit_phase(
        &self,
        coordinator: &Coordinator,
        view: &CachedView,
        crash_at: Option<CrashPoint>,
    ) -> Round {
        let replicas = coordinator.participants();
        let commit = |replica: &ServerInfo| ServerRequest::Commit {
            tx: coordinator.tx(),
            server_id: replica.id.clone(),
        };
        let primary = match self
            .call_retrying(&replicas[0].addr, commit(&replicas[0]), RPC_ATTEMPTS_MAX)
            .await
        {
            Ok(ServerReply::Committed) => CommitReply::Committed,
            Ok(other) => CommitReply::Failed(unexpected_server("commit", &other)),
            Err(Error::Refused(why)) => CommitReply::Refused(why),
            Err(err) => CommitReply::Failed(err),
        };
        match coordinator.on_primary_commit(primary) {
            AfterPrimary::CommitOthers => {}
            AfterPrimary::AbortOthers(err) => {
                self.abort_all(&replicas[1..], coordinator.tx()).await;
                return Round::Failed(err);
            }
            AfterPrimary::Uncertain(err) => return Round::Uncertain(err),
        }
        if crash_at == Some(CrashPoint::AfterFirstCommit) {
            return Round::Uncertain(Error::Uncertain(
                "coordinator stopped on purpose after the first commit".into(),
            ));
        }
        let acks = futures::future::join_all(
            replicas[1..]
                .iter()
                .map(|r| self.call_retrying(&r.addr, commit(r), RPC_ATTEMPTS_MAX)),
        )
        .await;
        for (replica, ack) in replicas[1..].iter().zip(&acks) {
            if let Err(err) = ack {
                tracing::warn!(%err, replica = %replica.addr, "commit not acknowledged; the replica will ask the primary");
            }
        }
        let others_committed = acks
            .iter()
            .filter(|a| matches!(a, Ok(ServerReply::Committed)))
            .count();
        if let Err(err) = coordinator.on_commit_acks(others_committed) {
            return Round::Uncertain(err);
        }
        Round::Done(SetrOutcome {
            version: coordinator.version(),
            epoch: view.view.epoch,
            replicas: replicas.to_vec(),
        })
    }

    /// Aborts `tx` at every replica, best effort: a participant that misses the abort resolves
    /// the transaction by termination.
    async fn abort_all(&self, replicas: &[ServerInfo], tx: TxId) {
        futures::future::join_all(replicas.iter().map(|r| {
            let abort = ServerRequest::Abort {
                tx,
                server_id: r.id.clone(),
            };
            self.call_retrying(&r.addr, abort, 1)
        }))
        .await;
    }

    /// Reads `key` linearizably: from a majority of its replicas, writing the newest value back
    /// where a majority lacks it. `Ok(None)`: a majority answered and none holds the key.
    pub async fn getr(&self, key: &str) -> Result<Option<GetrOutcome>> {
        check_key(key)?;
        let mut view = self.settled_view(false).await?;
        for _ in 0..VIEW_ATTEMPTS_MAX {
            match self.read_quorum(&view, key).await {
                Err(Error::StaleView(_)) => view = self.settled_view(true).await?,
                other => return other,
            }
        }
        Err(Error::StaleView(format!(
            "{key:?}: the view kept changing while reading"
        )))
    }

    async fn read_quorum(&self, view: &CachedView, key: &str) -> Result<Option<GetrOutcome>> {
        let replicas = view.replicas_borrowed(key);
        if replicas.is_empty() {
            return Err(Error::Unreachable(format!(
                "no storage servers in the view (epoch {}): cannot read {key:?}",
                view.view.epoch
            )));
        }
        let quorum = majority(replicas.len());
        // A majority is enough: ask that many first (in ring order), the others only if some
        // of them do not answer. That saves a third of the reads on three replicas.
        let (first, others) = replicas.split_at(quorum);
        let mut reads = self.read_each(first, key).await;
        if reads.iter().filter(|(_, answer)| answer.is_ok()).count() < quorum {
            reads.extend(self.read_each(others, key).await);
        }
        let mut answers: Vec<(&ServerInfo, Option<Versioned>)> = Vec::with_capacity(reads.len());
        let mut last_err = None;
        for (replica, answer) in reads {
            match answer {
                Ok((_, epoch)) if epoch > view.view.epoch => {
                    return Err(Error::StaleView(format!(
                        "{} is at epoch {epoch}, the view at {}",
                        replica.addr, view.view.epoch
                    )))
                }
                Ok((value, _)) => answers.push((replica, value)),
                Err(err) => last_err = Some(err),
            }
        }
        if answers.len() < quorum {
            // A replica that is not the member the view names (it restarted): a newer view
            // lists the process that is there now.
            if let Some(err @ Error::StaleView(_)) = last_err {
                return Err(err);
            }
            return Err(Error::Unreachable(format!(
                "only {} of {} replicas of {key:?} answered; a linearizable read needs {quorum} (getr --stale reads any one){}",
                answers.len(),
                replicas.len(),
                last_err.map(|e| format!(": {e}")).unwrap_or_default()
            )));
        }
        let Some((holder, newest)) = answers
            .iter()
            .filter_map(|(replica, value)| value.as_ref().map(|v| (*replica, v)))
            .max_by_key(|(_, v)| v.version)
        else {
            return absent_or_lost(view, key);
        };
        let behind: Vec<&ServerInfo> = answers
            .iter()
            .filter(|(_, value)| value.as_ref().is_none_or(|v| v.version < newest.version))
            .map(|(replica, _)| *replica)
            .collect();
        let holding = answers.len() - behind.len();
        if holding < quorum {
            // Make the value durable on a majority before anyone is told about it. The replica
            // that holds it sends it (a client may not hand out versions itself).
            let request = ServerRequest::Repair {
                key: key.to_string(),
                server_id: holder.id.clone(),
                epoch: view.view.epoch,
                to: behind.iter().map(|replica| (*replica).clone()).collect(),
            };
            let repaired = match self.server_call(&holder.addr, request).await {
                // A server cannot have stored more copies than it was asked to send.
                Ok(ServerReply::Repaired { stored }) => {
                    usize::try_from(stored).map_or(behind.len(), |n| n.min(behind.len()))
                }
                _ => 0,
            };
            if holding + repaired < quorum {
                return Err(Error::Unreachable(format!(
                    "could not bring {key:?} to a majority of its replicas before answering"
                )));
            }
        }
        Ok(Some(GetrOutcome {
            value: newest.clone(),
            replica: holder.clone(),
        }))
    }

    /// Reads `key` from each of `replicas` at once: (value, the replica's epoch) or why not.
    pub(super) async fn read_each<'r>(
        &self,
        replicas: &[&'r ServerInfo],
        key: &str,
    ) -> Vec<(&'r ServerInfo, Result<(Option<Versioned>, u64)>)> {
        futures::future::join_all(
            replicas
                .iter()
                .map(|&replica| async move { (replica, self.read_one(replica, key).await) }),
        )
        .await
    }

    /// Reads `key` from member `replica`: (value, the replica's epoch). A process at its address
    /// that is not that member refuses rather than answer for it.
    async fn read_one(&self, replica: &ServerInfo, key: &str) -> Result<(Option<Versioned>, u64)> {
        let request = ServerRequest::Read {
            key: key.into(),
            server_id: replica.id.clone(),
        };
        match self.server_call(&replica.addr, request).await {
            Ok(ServerReply::ReadValue { value, epoch }) => Ok((value, epoch)),
            Ok(other) => Err(unexpected_server("read", &other)),
            Err(err) => Err(name_replica(err, &replica.addr)),
        }
    }

    /// Reads `key` from its replicas in ring order until a live one holds it: cheaper and more
    /// available than [`Client::getr`], but it may return an older value.
    pub async fn getr_stale(&self, key: &str) -> Result<Option<GetrOutcome>> {
        check_key(key)?;
        let asked = self.env.now();
        let view = self.settled_view(false).await?;
        let from_cache = view.fetched < asked;
        match self.read_first(&view, key).await {
            // With a cached view a miss may only mean the view moved on: look once more.
            Ok(None) | Err(Error::Unreachable(_) | Error::Timeout(_)) if from_cache => {
                let fresh = self.settled_view(true).await?;
                self.read_first(&fresh, key).await
            }
            other => other,
        }
    }

    async fn read_first(&self, view: &CachedView, key: &str) -> Result<Option<GetrOutcome>> {
        let replicas = view.replicas(key);
        if replicas.is_empty() {
            return Err(Error::Unreachable(format!(
                "no storage servers in the view (epoch {}): cannot read {key:?}",
                view.view.epoch
            )));
        }
        let mut answered = false;
        let mut last_err = None;
        for replica in replicas {
            match self.read_one(&replica, key).await {
                Ok((Some(value), _)) => return Ok(Some(GetrOutcome { value, replica })),
                Ok((None, _)) => answered = true,
                Err(err) => last_err = Some(err),
            }
        }
        match (answered, last_err) {
            (true, _) | (false, None) => absent_or_lost(view, key),
            (false, Some(err)) => Err(err),
        }
    }
}

/// What to say of a key no replica holds: absent, unless the view records that every replica
/// of its range left before the cluster could settle without them.
fn absent_or_lost(view: &CachedView, key: &str) -> Result<Option<GetrOutcome>> {
    match crate::ring::loss_of(&view.view, key) {
        Some(loss) => {
            Err(Error::DataLoss(format!(
                "no replica holds {key:?}, and every replica of its range ({}) left the view before epoch {}",
                loss.lost_addrs().join(", "),
                loss.epoch
            )))
        }
        None => Ok(None),
    }
}

/// Errors of a replica that may simply be dead: worth waiting for the view to drop it.
fn waits_for_view_change(err: &Error) -> bool {
    matches!(err, Error::Unreachable(_) | Error::Timeout(_))
}

/// Errors that a newer view may cure.
fn worth_another_view(err: &Error) -> bool {
    matches!(
        err,
        Error::StaleView(_) | Error::Rebalancing(_) | Error::Unreachable(_) | Error::Timeout(_)
    )
}
