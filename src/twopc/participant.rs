//! The participant: a storage server's side of a replicated write, and the termination rules it
//! follows when the coordinator goes silent. The protocol is in the module doc of [`super`].
//!
//! # When the primary and another replica have left the view
//! A participant left alone with a pending write, whose primary and every other silent
//! participant are out of the view, aborts it ([`Participant::resolve`]). Waiting could last for
//! ever (the key refused to every write), and nobody in the view can hold a committed copy: if
//! the write was acknowledged, the primary and a majority committed it, and those are exactly the
//! servers that left, so the write went with them (the loss of the primary and a majority that
//! [`super`] admits); if it was not, nothing depended on it. The abort raises the key's floor,
//! so a copy that comes back later with a departed server never overwrites a newer write, and
//! the key is writable again about one transaction timeout after the view dropped the primary.

use std::collections::{BTreeMap, HashMap};

use super::Prepare;
use crate::bounded::BoundedMap;
use crate::errinput;
use crate::error::{Error, Result};
use crate::storage::{Engine, PreparedTx, Record, Recovered};
pub use crate::storage::{DECIDED_MAX, FLOORS_MAX};
use crate::types::{
    check_epoch, check_value, check_version, Epoch, Key, Op, ServerInfo, TxId, TxState, Value,
    Version, Versioned,
};

/// Transactions pending at once on one server; a prepare beyond it is voted no.
pub const PENDING_MAX: usize = 100_000;

/// What the participant knows about itself when a prepare arrives.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub server_id: &'a str,
    pub epoch: Epoch,
    pub rebalancing: bool,
    pub now_ms: u64,
    /// A planted bug for tests (`crate::faults::PlantedBug::VoteYesOnHeldKeys`): vote yes even
    /// on a key another transaction holds. Always false outside tests.
    pub vote_yes_on_held_keys: bool,
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

/// A yes vote waiting for its decision: what the durable engine recorded (the write, the
/// participants, the id this server voted under: it stays the participant of the transaction,
/// the primary say, even if the server rejoins under a new id while the transaction is
/// pending), and when it was cast.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub prepared: PreparedTx,
    /// When the vote was cast, or when the server restarted with it.
    pub prepared_ms: u64,
}

impl std::ops::Deref for Pending {
    type Target = PreparedTx;

    fn deref(&self) -> &PreparedTx {
        &self.prepared
    }
}

/// A transaction that outlived the timeout, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overdue {
    /// This server is the primary: it aborts the transaction itself.
    AbortAsPrimary { tx: TxId, key: Key },
    /// Ask these other participants (the primary first) where the transaction stands.
    Ask { tx: TxId, others: Vec<ServerInfo> },
}

/// Pending transactions, recent decisions and key floors of one server.
///
/// Pending transactions are kept in tx order, so that scanning them (for overdue ones) visits
/// them in the same order on every run: the simulation replays a seed only if nothing iterates
/// in hash order where it reaches behaviour.
#[derive(Debug)]
pub struct Participant {
    pending: BTreeMap<TxId, Pending>,
    by_key: HashMap<Key, TxId>,
    decided: BoundedMap<TxId, TxState>,
    floors: BoundedMap<Key, Version>,
}

impl Default for Participant {
    fn default() -> Self {
        Self {
            pending: BTreeMap::new(),
            by_key: HashMap::new(),
            decided: BoundedMap::new(DECIDED_MAX),
            floors: BoundedMap::new(FLOORS_MAX),
        }
    }
}

impl Participant {
    /// The participant a restarted server resumes with: the yes votes still undecided (their
    /// timers start again at `now_ms`, so the termination rules finish them if nobody else
    /// does), the recent decisions and the key floors its engine read back.
    pub fn restore(recovered: Recovered, now_ms: u64) -> Self {
        let mut participant = Self::default();
        for (tx, state) in recovered.decided {
            participant.decided.insert(tx, state);
        }
        for (key, version) in recovered.floors {
            participant.floors.insert(key, version);
        }
        for prepared in recovered.pending {
            participant.by_key.insert(prepared.key.clone(), prepared.tx);
            participant.pending.insert(
                prepared.tx,
                Pending {
                    prepared,
                    prepared_ms: now_ms,
                },
            );
        }
        participant
    }

    /// The member ids this server voted under in its pending transactions.
    pub fn voted_as_ids(&self) -> std::collections::BTreeSet<&str> {
        self.pending.values().map(|p| p.voted_as.as_str()).collect()
    }

    /// Phase one: the vote. A yes vote is recorded in `store` before it is returned.
    pub fn prepare(
        &mut self,
        ctx: &Context<'_>,
        store: &mut dyn Engine,
        args: Prepare,
    ) -> Result<Vote> {
        let Prepare {
            tx,
            key,
            op,
            epoch,
            expected_server_id,
            version,
            participants,
            range_lost,
        } = args;
        check_version(version)?;
        check_epoch(epoch)?;
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
            return Err(errinput!(
                "transaction {tx:x} was prepared for another write"
            ));
        }
        if expected_server_id != ctx.server_id {
            return Err(Error::StaleView(format!(
                "vote no on {key:?}: coordinator expected server id {expected_server_id}, this server is {}",
                ctx.server_id
            )));
        }
        if participants.iter().all(|p| p.id != ctx.server_id) {
            return Err(errinput!(
                "transaction {tx:x} does not list this server among its participants"
            ));
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
        if let Some(other) = self.by_key.get(&key).filter(|_| !ctx.vote_yes_on_held_keys) {
            return Err(Error::Conflict(format!(
                "vote no on {key:?} by server {}: transaction {other:x} is pending on it",
                ctx.server_id
            )));
        }
        let base_version = store.version(&key);
        let above = base_version.max(self.floors.get(&key).copied().unwrap_or(0));
        if version <= above {
            return Ok(Vote::Outdated { above });
        }
        let value = match &op {
            Op::Put(value) => value.clone(),
            Op::Append(item) => match store.get(&key).map(|held| held.value) {
                Some(Value::List(mut items)) => {
                    items.push(item.clone());
                    Value::List(items)
                }
                Some(Value::Text(_)) => {
                    return Err(errinput!(
                        "{key:?} holds a text, not a list: cannot append to it"
                    ))
                }
                None if range_lost => {
                    return Err(Error::DataLoss(format!(
                        "{key:?} may have lost its list with every replica of its range, and \
                         server {} holds none: append refused (setr the key to start it afresh)",
                        ctx.server_id
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
        let prepared = PreparedTx {
            tx,
            key,
            op,
            value,
            version,
            epoch,
            participants,
            voted_as: ctx.server_id.to_string(),
            base_version,
        };
        store.record(&Record::Prepared(&prepared))?;
        self.by_key.insert(prepared.key.clone(), tx);
        self.pending.insert(
            tx,
            Pending {
                prepared,
                prepared_ms: ctx.now_ms,
            },
        );
        Ok(Vote::Yes)
    }

    /// Phase two, yes: applies the prepared write and records the decision.
    pub fn commit(&mut self, store: &mut dyn Engine, tx: TxId) -> Result<Version> {
        let Some(Pending {
            prepared: pending,
            prepared_ms,
        }) = self.pending.remove(&tx)
        else {
            return match self.decided.get(&tx) {
                Some(TxState::Committed { version }) => Ok(*version),
                Some(_) => Err(Error::Refused(format!("transaction {tx:x} was aborted"))),
                None => Err(Error::Refused(format!(
                    "transaction {tx:x} is not prepared here"
                ))),
            };
        };
        // The version was checked above the key's at prepare and the key was held since; a copy
        // that arrived meanwhile by rebalancing or read repair can only be this very write.
        let version = pending.version;
        let key = pending.key.clone();
        let applied = match &pending.op {
            // Nothing touched the list since the vote: the item alone is the whole change.
            Op::Append(item) if store.version(&key) == pending.base_version => {
                store.append(key.clone(), item.clone(), version)
            }
            _ => store
                .put_if_newer(
                    key.clone(),
                    Versioned {
                        value: pending.value.clone(),
                        version,
                    },
                )
                .map(|_| ()),
        };
        let decided =
            applied.and_then(|()| self.remember(store, tx, TxState::Committed { version }));
        if let Err(err) = decided {
            // Not applied or not recorded (a full disk): the vote stands, undecided, so a
            // retried commit or the termination rules finish it rather than a status query
            // calling it aborted.
            self.pending.insert(
                tx,
                Pending {
                    prepared: pending,
                    prepared_ms,
                },
            );
            return Err(err);
        }
        self.by_key.remove(&key);
        Ok(version)
    }

    /// Phase two, no: forgets the prepared write. Aborting an unknown transaction is fine (the
    /// coordinator aborts everywhere, including where the prepare never arrived).
    pub fn abort(&mut self, store: &mut dyn Engine, tx: TxId) -> Result<()> {
        if let Some(pending) = self.pending.remove(&tx) {
            if let Err(err) = self.raise_floor(store, pending.key.clone(), pending.version) {
                // Not recorded (a full disk): the vote stands until an abort can be.
                self.pending.insert(tx, pending);
                return Err(err);
            }
            self.by_key.remove(&pending.key);
        } else if let Some(TxState::Committed { .. }) = self.decided.get(&tx) {
            return Err(Error::Refused(format!(
                "transaction {tx:x} was already committed"
            )));
        }
        self.remember(store, tx, TxState::Aborted)
    }

    /// Where `tx` stands here, for another participant's termination. A transaction never
    /// prepared here is aborted here, so a late prepare cannot bring it back.
    pub fn status(&mut self, store: &mut dyn Engine, tx: TxId) -> Result<TxState> {
        if self.pending.contains_key(&tx) {
            return Ok(TxState::Prepared);
        }
        if let Some(state) = self.decided.get(&tx) {
            return Ok(*state);
        }
        self.remember(store, tx, TxState::Aborted)?;
        Ok(TxState::Aborted)
    }

    /// Transactions pending longer than `timeout_ms` at `now_ms`, and what to do about each:
    /// abort those this server is the primary of, ask about the others. Changes nothing: the
    /// caller acts on the answer.
    ///
    /// Who this server is in a transaction is the id it voted under, not its id now: a primary
    /// that rejoined under a new id while the write was pending is still its primary, and must
    /// still abort it (nobody else can).
    pub fn overdue(&self, now_ms: u64, timeout_ms: u64) -> Vec<Overdue> {
        let mut out = Vec::new();
        for (&tx, pending) in &self.pending {
            if now_ms.saturating_sub(pending.prepared_ms) <= timeout_ms {
                continue;
            }
            let me = pending.voted_as.as_str();
            let primary_is_me = pending.participants.first().is_some_and(|p| p.id == me);
            if primary_is_me {
                out.push(Overdue::AbortAsPrimary {
                    tx,
                    key: pending.key.clone(),
                });
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
    /// first; `None` where one could not be reached). `in_view` says whether a server id is in
    /// the current view. Returns the state reached, or `Prepared` if it must ask again later.
    pub fn resolve(
        &mut self,
        store: &mut dyn Engine,
        tx: TxId,
        answers: &[(ServerInfo, Option<TxState>)],
        in_view: impl Fn(&str) -> bool,
    ) -> TxState {
        let Some(pending) = self.pending.get(&tx) else {
            return self.decided.get(&tx).copied().unwrap_or(TxState::Aborted);
        };
        let primary = pending.participants.first().map(|p| p.id.clone());
        let primary_gone = primary.as_deref().is_some_and(|id| !in_view(id));
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
        // Without the primary, abort only if every other participant answered or left the view
        // too: one that did not answer but is still in the view may be one that committed,
        // and its copy would outlive the abort. One that left the view took its copy along;
        // an acknowledgement needed the primary and a majority, so if it was given, every
        // copy is outside the view and this abort is the loss of the primary and a majority
        // the module doc admits. Without this, the key stayed blocked for as long as they
        // were away.
        let others_accounted = answers
            .iter()
            .filter(|(p, _)| Some(&p.id) != primary.as_ref())
            .all(|(p, state)| state.is_some() || !in_view(&p.id));
        let primary_silent_and_gone = primary_answer.is_none() && primary_gone && others_accounted;
        if primary_answer == Some(TxState::Aborted) || any_aborted || primary_silent_and_gone {
            return match self.abort(store, tx) {
                Ok(()) => TxState::Aborted,
                // The abort could not be recorded: still pending, ask again later.
                Err(_) => TxState::Prepared,
            };
        }
        TxState::Prepared
    }

    fn raise_floor(&mut self, store: &mut dyn Engine, key: Key, version: Version) -> Result<()> {
        let floor = self.floors.get(&key).copied().unwrap_or(0).max(version);
        store.record(&Record::Floor {
            key: &key,
            version: floor,
        })?;
        self.floors.insert(key, floor);
        Ok(())
    }

    fn remember(&mut self, store: &mut dyn Engine, tx: TxId, state: TxState) -> Result<()> {
        store.record(&Record::Decided { tx, state })?;
        self.decided.insert(tx, state);
        Ok(())
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
