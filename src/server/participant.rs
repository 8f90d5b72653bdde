//! The 2PC participant: a storage server's side of a replicated write.
//!
//! # Protocol
//! The client coordinates. It sends `Prepare {tx, key, op, epoch, expected_server_id}` to every
//! replica of the key. A participant votes yes only if
//! * the coordinator's epoch is the participant's epoch (both acted on the same view),
//! * the coordinator expects this server's current id (not a predecessor at the same address),
//! * the participant is not rebalancing (the key may be about to move), and
//! * no other transaction is pending on that key (transactions on other keys go ahead).
//!
//! A yes vote records the pending write, holds the key and returns the key's current version.
//! On all yes, the coordinator sends `Commit {tx, version}` with a version above every vote's,
//! so all replicas store the same version; on any no, timeout or unreachable replica, it sends
//! `Abort {tx}` to all. Commit and abort are idempotent: a recent decision is remembered, so a
//! repeated message gets the same answer and never applies twice.
//!
//! # Deliberately left out (see the faults issue)
//! * A coordinator that dies after prepare leaves the key held; there is no termination protocol
//!   among participants yet.
//! * Pending transactions live in memory: a participant that restarts forgets them (it also comes
//!   back under a new id, so the coordinator's commit to it fails the id check).

use std::collections::{HashMap, VecDeque};

use crate::error::{Error, Result};
use crate::rpc::message::{Epoch, Key, Op, ServerId, TxId, Version, Versioned};
use crate::server::store::Store;

/// Transactions pending at once on one server; a prepare beyond it is voted no.
pub const PENDING_MAX: usize = 100_000;
/// Decisions remembered for idempotent commit/abort; the oldest is forgotten beyond it.
pub const DECIDED_MAX: usize = 100_000;

/// What the participant knows about itself when a prepare arrives.
#[derive(Clone, Debug)]
pub struct Context<'a> {
    pub server_id: &'a str,
    pub epoch: Epoch,
    pub rebalancing: bool,
    pub now_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    pub key: Key,
    pub op: Op,
    pub epoch: Epoch,
    pub prepared_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Committed,
    Aborted,
}

/// Pending transactions and recent decisions of one server.
#[derive(Debug, Default)]
pub struct Participant {
    pending: HashMap<TxId, Pending>,
    by_key: HashMap<Key, TxId>,
    decided: HashMap<TxId, Decision>,
    decided_order: VecDeque<TxId>,
}

impl Participant {
    /// Phase one: the vote. `Ok(version)` is a yes carrying the key's current version.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare(
        &mut self,
        ctx: &Context<'_>,
        store: &Store,
        tx: TxId,
        key: Key,
        op: Op,
        epoch: Epoch,
        expected_server_id: &ServerId,
    ) -> Result<Version> {
        if let Some(decision) = self.decided.get(&tx) {
            return Err(Error::Refused(
                format!("transaction {tx:x} was already {decision:?}").to_lowercase(),
            ));
        }
        if let Some(pending) = self.pending.get(&tx) {
            // A retried prepare: the same vote again.
            if pending.key == key && pending.op == op {
                return Ok(store.version(&key));
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
        if self.pending.len() >= PENDING_MAX {
            return Err(Error::Refused(format!(
                "vote no on {key:?}: {PENDING_MAX} transactions already pending"
            )));
        }
        self.by_key.insert(key.clone(), tx);
        let version = store.version(&key);
        self.pending.insert(
            tx,
            Pending {
                key,
                op,
                epoch,
                prepared_ms: ctx.now_ms,
            },
        );
        Ok(version)
    }

    /// Phase two, yes: applies the prepared write at `version`.
    pub fn commit(&mut self, store: &mut Store, tx: TxId, version: Version) -> Result<()> {
        let Some(pending) = self.pending.remove(&tx) else {
            return match self.decided.get(&tx) {
                Some(Decision::Committed) => Ok(()),
                Some(Decision::Aborted) => {
                    Err(Error::Refused(format!("transaction {tx:x} was aborted")))
                }
                None => Err(Error::Refused(format!(
                    "transaction {tx:x} is not prepared here"
                ))),
            };
        };
        self.by_key.remove(&pending.key);
        let Op::Put(value) = pending.op;
        // The coordinator's version is above every yes vote's; the key was held since, so only a
        // rebalancing copy could have raised it. Never go backwards either way.
        let version = version.max(store.version(&pending.key) + 1);
        store.merge(pending.key, Versioned { value, version });
        self.remember(tx, Decision::Committed);
        Ok(())
    }

    /// Phase two, no: forgets the prepared write. Aborting an unknown transaction is fine (the
    /// coordinator aborts everywhere, including where the prepare never arrived).
    pub fn abort(&mut self, tx: TxId) -> Result<()> {
        if let Some(pending) = self.pending.remove(&tx) {
            self.by_key.remove(&pending.key);
        } else if self.decided.get(&tx) == Some(&Decision::Committed) {
            return Err(Error::Refused(format!(
                "transaction {tx:x} was already committed"
            )));
        }
        self.remember(tx, Decision::Aborted);
        Ok(())
    }

    fn remember(&mut self, tx: TxId, decision: Decision) {
        if self.decided.insert(tx, decision).is_none() {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::message::Value;

    const ME: &str = "me";

    fn ctx() -> Context<'static> {
        Context {
            server_id: ME,
            epoch: 3,
            rebalancing: false,
            now_ms: 0,
        }
    }

    fn put(s: &str) -> Op {
        Op::Put(Value::Text(s.into()))
    }

    #[test]
    fn a_yes_vote_holds_the_key_until_commit() {
        let mut p = Participant::default();
        let mut store = Store::default();
        assert_eq!(
            p.prepare(&ctx(), &store, 1, "k".into(), put("a"), 3, &ME.into()),
            Ok(0)
        );
        let second = p.prepare(&ctx(), &store, 2, "k".into(), put("b"), 3, &ME.into());
        assert!(matches!(second, Err(Error::Conflict(_))), "{second:?}");
        p.commit(&mut store, 1, 1).unwrap();
        assert_eq!(store.get("k").map(|v| v.version), Some(1));
        assert_eq!(
            p.prepare(&ctx(), &store, 2, "k".into(), put("b"), 3, &ME.into()),
            Ok(1)
        );
    }

    #[test]
    fn transactions_on_different_keys_proceed_concurrently() {
        let mut p = Participant::default();
        let store = Store::default();
        assert!(p
            .prepare(&ctx(), &store, 1, "a".into(), put("x"), 3, &ME.into())
            .is_ok());
        assert!(p
            .prepare(&ctx(), &store, 2, "b".into(), put("y"), 3, &ME.into())
            .is_ok());
        assert_eq!(p.pending_count(), 2);
    }

    #[test]
    fn a_wrong_epoch_or_id_or_rebalancing_votes_no() {
        let mut p = Participant::default();
        let store = Store::default();
        let wrong_epoch = p.prepare(&ctx(), &store, 1, "k".into(), put("a"), 2, &ME.into());
        assert!(
            matches!(wrong_epoch, Err(Error::StaleView(_))),
            "{wrong_epoch:?}"
        );
        let wrong_id = p.prepare(&ctx(), &store, 1, "k".into(), put("a"), 3, &"other".into());
        assert!(matches!(wrong_id, Err(Error::StaleView(_))), "{wrong_id:?}");
        let busy = Context {
            rebalancing: true,
            ..ctx()
        };
        let rebalancing = p.prepare(&busy, &store, 1, "k".into(), put("a"), 3, &ME.into());
        assert!(
            matches!(rebalancing, Err(Error::Rebalancing(_))),
            "{rebalancing:?}"
        );
        assert_eq!(p.pending_count(), 0, "a no vote holds nothing");
    }

    #[test]
    fn commit_and_abort_are_idempotent() {
        let mut p = Participant::default();
        let mut store = Store::default();
        p.prepare(&ctx(), &store, 1, "k".into(), put("a"), 3, &ME.into())
            .unwrap();
        p.commit(&mut store, 1, 7).unwrap();
        p.commit(&mut store, 1, 7).unwrap();
        assert_eq!(store.get("k").map(|v| v.version), Some(7));
        assert!(
            p.abort(1).is_err(),
            "a committed transaction cannot be aborted"
        );

        p.prepare(&ctx(), &store, 2, "k".into(), put("b"), 3, &ME.into())
            .unwrap();
        p.abort(2).unwrap();
        p.abort(2).unwrap();
        assert!(
            p.commit(&mut store, 2, 9).is_err(),
            "an aborted transaction cannot commit"
        );
        assert_eq!(store.get("k").map(|v| v.version), Some(7));
        assert!(!p.is_held("k"), "abort frees the key");
    }

    #[test]
    fn a_retried_prepare_gets_the_same_vote() {
        let mut p = Participant::default();
        let store = Store::default();
        assert_eq!(
            p.prepare(&ctx(), &store, 1, "k".into(), put("a"), 3, &ME.into()),
            Ok(0)
        );
        assert_eq!(
            p.prepare(&ctx(), &store, 1, "k".into(), put("a"), 3, &ME.into()),
            Ok(0)
        );
        assert_eq!(p.pending_count(), 1);
    }
}
