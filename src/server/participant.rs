//! The 2PC participant: a storage server's side of a replicated write, including what it does
//! when the coordinator (the client) disappears.
//!
//! # Protocol
//! The client coordinates. It proposes a version (above anything it knows of the key) and sends
//! `Prepare {tx, key, op, epoch, expected_server_id, version, participants}` to every replica of
//! the key; `participants` lists them in ring order and the first, the **primary**, holds the
//! transaction's decision. A participant votes yes only if
//! * the coordinator's epoch is the participant's epoch (both acted on the same view),
//! * the coordinator expects this server's current id (not a predecessor at the same address),
//! * the participant is not rebalancing (the key may be about to move),
//! * no other transaction is pending on that key (transactions on other keys go ahead), and
//! * the proposed version is above the key's version and above the version of any transaction
//!   aborted on the key (its *floor*); otherwise it answers `Outdated {above}` and the
//!   coordinator proposes again.
//!
//! A yes vote computes the value the write will produce (an append extends the list as it is
//! now: the key is held from here on), records it as pending and holds the key. On all yes, the
//! coordinator commits at the **primary first**, then at the others; on any no, timeout or
//! unreachable replica before that, it aborts everywhere. The write is acknowledged to the
//! caller once the primary and a majority of the participants have committed. Commit and abort
//! are idempotent: recent decisions are remembered, so a repeated message gets the same answer and
//! never applies twice; a retried prepare gets the same vote.
//!
//! # Termination (the coordinator died or went silent)
//! A transaction pending for longer than the transaction timeout is resolved without it:
//! * At the **primary**, it is aborted unilaterally. That is safe because the coordinator commits
//!   nowhere before the primary has committed, and the primary now refuses that commit.
//! * At another participant, it asks the others (`TxStatus`). Any `Committed {version}` means
//!   the decision was commit: it commits. The primary answering `Aborted` (or any participant
//!   answering `Aborted`, which only happens once the primary can no longer commit) means abort.
//!   A participant asked about a transaction it never prepared records it as aborted, so a late
//!   prepare cannot revive it. If the primary is still pending, its own timeout settles it soon;
//!   the participant asks again.
//! * If the primary cannot be reached, the participant keeps asking. Once the primary has left
//!   the view (the server shell tells it) and every other participant answered without a
//!   commit, no acknowledged write can depend on it (an acknowledgement needs the primary and a
//!   majority), so it aborts.
//!
//! Every abort of a pending transaction raises the key's floor to that transaction's version.
//! If the primary did commit and comes back later (it was paused, say), its copy carries that
//! version, and every write after the abort was made above it: the late copy can never overwrite
//! a newer acknowledged value. (It can resurface where nothing newer was written; that write's
//! caller never got an answer, so it may take effect late.)
//!
//! # Deliberately left out
//! * Durability: pending transactions, decisions and floors live in memory; a server that
//!   restarts comes back empty under a new id (the coordinator's id check then fails).
//! * Losing the primary and a majority at once can lose a write that was acknowledged.

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::server::store::Store;
use crate::types::check_value;
use crate::types::{
    Epoch, Key, Op, ServerId, ServerInfo, TxId, TxState, Value, Version, Versioned,
};

/// Transactions pending at once on one server; a prepare beyond it is voted no.
pub const PENDING_MAX: usize = 100_000;
/// Decisions remembered for idempotent commit/abort; the oldest is forgotten beyond it.
pub const DECIDED_MAX: usize = 100_000;
/// Key floors remembered; the oldest is forgotten beyond it.
pub const FLOORS_MAX: usize = 100_000;

/// What the participant knows about itself when a prepare arrives.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub server_id: &'a str,
    pub epoch: Epoch,
    pub rebalancing: bool,
    pub now_ms: u64,
}

/// A prepare's fields.
#[derive(Clone, Debug)]
pub struct PrepareArgs {
    pub tx: TxId,
    pub key: Key,
    pub op: Op,
    pub epoch: Epoch,
    pub expected_server_id: ServerId,
    pub version: Version,
    pub participants: Vec<ServerInfo>,
}

/// A vote that is not an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vote {
    Yes,
    /// The proposed version must be above this.
    Outdated {
        above: Version,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub key: Key,
    /// The value the key will hold if the transaction commits.
    pub value: Value,
    pub version: Version,
    pub epoch: Epoch,
    pub participants: Vec<ServerInfo>,
    pub prepared_ms: u64,
    /// A request that differs in nothing but its tx can only be its retry.
    pub op: Op,
}

/// A transaction that outlived the timeout, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overdue {
    /// This server is the primary: it aborted the transaction itself.
    AbortedAsPrimary { tx: TxId, key: Key },
    /// Ask these other participants (the primary first) where the transaction stands.
    Ask { tx: TxId, others: Vec<ServerInfo> },
}

/// Pending transactions, recent decisions and key floors of one server.
#[derive(Debug, Default)]
pub struct Participant {
    pending: HashMap<TxId, Pending>,
    by_key: HashMap<Key, TxId>,
    decided: HashMap<TxId, TxState>,
    decided_order: VecDeque<TxId>,
    floors: HashMap<Key, Version>,
    floors_order: VecDeque<Key>,
}

impl Participant {
    /// Phase one: the vote.
    pub fn prepare(&mut self, ctx: &Context<'_>, store: &Store, args: PrepareArgs) -> Result<Vote> {
        let PrepareArgs {
            tx,
            key,
            op,
            epoch,
            expected_server_id,
            version,
            participants,
        } = args;
        if let Some(state) = self.decided.get(&tx) {
            return Err(Error::Refused(format!(
                "transaction {tx:x} was already decided ({state:?})"
            )));
        }
        if let Some(pending) = self.pending.get(&tx) {
            // A retried prepare: the same vote again.
            if pending.key == key && pending.op == op && pending.version == version {
                return Ok(Vote::Yes);
            }
            return Err(Error::InvalidRequest(format!(
                "transaction {tx:x} was prepared for another write"
            )));
        }
        if expected_server_id != ctx.server_id {
            return Err(Error::StaleView(format!(
                "vote no on {key:?}: coordinator expected server id {expected_server_id}, this server is {}",
                ctx.server_id
            )));
        }
        if participants.iter().all(|p| p.id != ctx.server_id) {
            return Err(Error::InvalidRequest(format!(
                "transaction {tx:x} does not list this server among its participants"
            )));
        }
        if epoch != ctx.epoch {
            return Err(Error::StaleView(format!(
                "vote no on {key:?}: coordinator is at epoch {epoch}, server {} at epoch {}",
                ctx.server_id, ctx.epoch
            )));
        }
        if ctx.rebalancing {
            return Err(Error::Rebalancing(format!(
                "vote no on {key:?}: server {} is rebalancing for epoch {}",
                ctx.server_id, ctx.epoch
            )));
        }
        if let Some(other) = self.by_key.get(&key) {
            return Err(Error::Conflict(format!(
                "vote no on {key:?} by server {}: transaction {other:x} is pending on it",
                ctx.server_id
            )));
        }
        let above = store
            .version(&key)
            .max(self.floors.get(&key).copied().unwrap_or(0));
        if version <= above {
            return Ok(Vote::Outdated { above });
        }
        let value = match &op {
            Op::Put(value) => value.clone(),
            Op::Append(item) => match store.list(&key) {
                Some(items) => {
                    let mut items = items.to_vec();
                    items.push(item.clone());
                    Value::List(items)
                }
                None if store.contains(&key) => {
                    return Err(Error::InvalidRequest(format!(
                        "{key:?} holds a text, not a list: cannot append to it"
                    )))
                }
                None => Value::List(vec![item.clone()]),
            },
        };
        check_value(&value)?;
        if self.pending.len() >= PENDING_MAX {
            return Err(Error::Refused(format!(
                "vote no on {key:?}: {PENDING_MAX} transactions already pending"
            )));
        }
        self.by_key.insert(key.clone(), tx);
        self.pending.insert(
            tx,
            Pending {
                key,
                value,
                version,
                epoch,
                participants,
                prepared_ms: ctx.now_ms,
                op,
            },
        );
        Ok(Vote::Yes)
    }

    /// Phase two, yes: applies the prepared write.
    pub fn commit(&mut self, store: &mut Store, tx: TxId) -> Result<Version> {
        let Some(pending) = self.pending.remove(&tx) else {
            return match self.decided.get(&tx) {
                Some(TxState::Committed { version }) => Ok(*version),
                Some(_) => Err(Error::Refused(format!("transaction {tx:x} was aborted"))),
                None => Err(Error::Refused(format!(
                    "transaction {tx:x} is not prepared here"
                ))),
            };
        };
        self.by_key.remove(&pending.key);
        // The version was checked above the key's at prepare and the key was held since; a copy
        // that arrived meanwhile by rebalancing or read repair can only be this very write.
        store.merge(
            pending.key,
            Versioned {
                value: pending.value,
                version: pending.version,
            },
        );
        self.remember(
            tx,
            TxState::Committed {
                version: pending.version,
            },
        );
        Ok(pending.version)
    }

    /// Phase two, no: forgets the prepared write. Aborting an unknown transaction is fine (the
    /// coordinator aborts everywhere, including where the prepare never arrived).
    pub fn abort(&mut self, tx: TxId) -> Result<()> {
        if let Some(pending) = self.pending.remove(&tx) {
            self.by_key.remove(&pending.key);
            self.raise_floor(pending.key, pending.version);
        } else if let Some(TxState::Committed { .. }) = self.decided.get(&tx) {
            return Err(Error::Refused(format!(
                "transaction {tx:x} was already committed"
            )));
        }
        self.remember(tx, TxState::Aborted);
        Ok(())
    }

    /// Where `tx` stands here, for another participant's termination. A transaction never
    /// prepared here is aborted here, so a late prepare cannot bring it back.
    pub fn status(&mut self, tx: TxId) -> TxState {
        if self.pending.contains_key(&tx) {
            return TxState::Prepared;
        }
        if let Some(state) = self.decided.get(&tx) {
            return *state;
        }
        self.remember(tx, TxState::Aborted);
        TxState::Aborted
    }

    /// Transactions pending longer than `timeout_ms` at `now_ms`. Those this server is the
    /// primary of are aborted here and now; for the others it says whom to ask.
    pub fn overdue(&mut self, me: &str, now_ms: u64, timeout_ms: u64) -> Vec<Overdue> {
        let late: Vec<TxId> = self
            .pending
            .iter()
            .filter(|(_, p)| now_ms.saturating_sub(p.prepared_ms) > timeout_ms)
            .map(|(tx, _)| *tx)
            .collect();
        let mut out = Vec::with_capacity(late.len());
        for tx in late {
            let Some(pending) = self.pending.get(&tx) else {
                continue;
            };
            let primary_is_me = pending.participants.first().is_some_and(|p| p.id == me);
            if primary_is_me {
                let key = pending.key.clone();
                let _ = self.abort(tx);
                out.push(Overdue::AbortedAsPrimary { tx, key });
            } else {
                let others = pending
                    .participants
                    .iter()
                    .filter(|p| p.id != me)
                    .cloned()
                    .collect();
                out.push(Overdue::Ask { tx, others });
            }
        }
        out
    }

    /// Applies what the other participants answered about `tx` (in the order asked: the primary
    /// first; `None` where one could not be reached). `primary_gone`: the primary is no longer
    /// in the view. Returns the state reached, or `Prepared` if it must ask again later.
    pub fn resolve(
        &mut self,
        store: &mut Store,
        tx: TxId,
        answers: &[(ServerInfo, Option<TxState>)],
        primary_gone: bool,
    ) -> TxState {
        let Some(pending) = self.pending.get(&tx) else {
            return self.decided.get(&tx).copied().unwrap_or(TxState::Aborted);
        };
        let primary = pending.participants.first().map(|p| p.id.clone());
        let committed_somewhere = answers
            .iter()
            .any(|(_, state)| matches!(state, Some(TxState::Committed { .. })));
        if committed_somewhere {
            return match self.commit(store, tx) {
                Ok(version) => TxState::Committed { version },
                Err(_) => TxState::Aborted,
            };
        }
        let primary_answer = answers
            .iter()
            .find(|(p, _)| Some(&p.id) == primary.as_ref())
            .and_then(|(_, state)| *state);
        let any_aborted = answers
            .iter()
            .any(|(_, state)| *state == Some(TxState::Aborted));
        // Without the primary, abort only if every other participant answered: one that did not
        // may be the one that committed.
        let others_all_answered = answers
            .iter()
            .filter(|(p, _)| Some(&p.id) != primary.as_ref())
            .all(|(_, state)| state.is_some());
        let primary_silent_and_gone =
            primary_answer.is_none() && primary_gone && others_all_answered;
        if primary_answer == Some(TxState::Aborted) || any_aborted || primary_silent_and_gone {
            let _ = self.abort(tx);
            return TxState::Aborted;
        }
        TxState::Prepared
    }

    fn raise_floor(&mut self, key: Key, version: Version) {
        let floor = self.floors.entry(key.clone()).or_insert(0);
        if *floor == 0 {
            self.floors_order.push_back(key);
        }
        *floor = (*floor).max(version);
        while self.floors_order.len() > FLOORS_MAX {
            if let Some(oldest) = self.floors_order.pop_front() {
                self.floors.remove(&oldest);
            }
        }
    }

    fn remember(&mut self, tx: TxId, state: TxState) {
        if self.decided.insert(tx, state).is_none() {
            self.decided_order.push_back(tx);
        }
        while self.decided_order.len() > DECIDED_MAX {
            if let Some(oldest) = self.decided_order.pop_front() {
                self.decided.remove(&oldest);
            }
        }
    }

    /// Transactions pending now.
    pub fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// Whether a transaction prepared in an epoch before `epoch` is still undecided; a server
    /// plans no transfer for a new epoch until it is not.
    pub fn has_pending_before(&self, epoch: Epoch) -> bool {
        self.pending.values().any(|p| p.epoch < epoch)
    }

    /// Whether `key` is held by a pending transaction.
    pub fn is_held(&self, key: &str) -> bool {
        self.by_key.contains_key(key)
    }

    /// The primary of a pending transaction.
    pub fn primary_of(&self, tx: TxId) -> Option<&ServerInfo> {
        self.pending.get(&tx).and_then(|p| p.participants.first())
    }
}

#[cfg(test)]
mod tests;
