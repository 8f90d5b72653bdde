//! Rebalancing: after a view change, which copies this server sends and which keys it may let go.
//!
//! # Protocol
//! The view leader's view carries, besides the current membership, the **settled view**: the last
//! view in which every live server had reported `rebalanced_epoch == epoch`. At that moment every
//! key was on its replicas in that view (writes are refused while rebalancing, so nothing moved
//! since). Every server plans against that same settled view, whatever epochs it happened to
//! observe in between, so all servers agree on who sends what:
//!
//! * For a key whose settled replicas include this server, the **designated sender** is the first
//!   of those replicas, in ring order, that is still live. Only it sends, and only to the new
//!   replicas that were not settled replicas (they lack the key; the others hold it). That is
//!   exactly the minimum number of copies.
//! * A key this server holds but is not a settled replica of (it rejoined under a new id after
//!   expiry, it received the key during an unfinished rebalance, or the view leader restarted and
//!   knows no settled view) is a **candidate copy**: the server asks each new replica for its
//!   version of the key and sends only where the replica's is older or missing. Nothing is
//!   wiped, and a stale copy never overwrites a newer one (the receiver merges by version).
//! * A copy that a transfer of the very epoch being planned brought is not offered, under the
//!   conditions of "Copies received before planning" below: its sender covers every new replica.
//! * When all its sends are acknowledged the server reports `rebalanced_epoch`. When the whole
//!   cluster has (the view settles at the new epoch), each server **drops** the keys it no longer
//!   owns, but only after every new replica confirmed holding a version at least as new (a
//!   missing one is sent first). It never drops a key with no owner in the view, nor while it is
//!   itself out of the settled view, nor while a transaction holds the key.
//!
//! Work is proportional to the keys whose replica set changed (plus candidate copies), never to
//! all keys: planning reads every key once, but sends only what moved. A server that received
//! its new keys before planning makes no extra round trips for them.
//!
//! # Copies received before planning
//! Transfers of epoch `e` may reach a server before it plans for `e`: it learns the view a
//! little after its peers, or first waits out transactions prepared under an older view. Counted
//! as candidate copies, they would be offered back to every other new replica of their keys,
//! and the server would stay rebalancing until each of them answered, a crashed one included,
//! although it owes nobody anything. Had the same transfers come a moment after it planned,
//! its plan would not name them at all: that order is just as possible, so the protocol already
//! relies on the senders alone to bring every new replica its copy. The plan therefore leaves
//! out the offers of a copy (never a send it is the designated sender of) when
//! 1. a transfer of exactly the epoch planned for brought it ([`Received`]: a sender whose plan
//!    was for an older view sends an older epoch, which is not counted, since that plan is
//!    superseded and its sender replans);
//! 2. the server still holds the version that transfer brought ([`Covered`]): its own copy, if
//!    it had one, was not newer, and no write changed it since, so the sender held a copy at
//!    least as new;
//! 3. the key has a **designated sender** in the new view (one of its settled replicas is still
//!    in it), and no recorded loss ([`crate::types::Loss`]) may have taken the key from its
//!    settled replicas. That sender cannot report the epoch before every new replica that was
//!    not a settled replica acknowledged the key, and the settled replicas still in the view
//!    hold it, so every new replica gets a copy whoever sent this one.
//!
//! Who sends transfers, and why each is covered:
//! * a designated sender: it sends to every new replica that was not a settled replica;
//! * a server offering a candidate copy: it offers to every new replica, retrying until a newer
//!   view;
//! * a server that leaves (`Mover::leave`): its handoff gives up after a bound, so only (3)
//!   covers it; a key none of whose settled replicas is left is still offered, as before;
//! * a reader's repair (`Repair`): it reads in a settled view, which cannot have settled before
//!   this server reported the epoch, hence planned for it; (3) covers it anyway;
//! * the drop pass once a view settled: it comes after every server planned for that epoch.
//!
//! The keys are remembered only until the server plans for their epoch, for at most
//! [`RECEIVED_EPOCHS_MAX`] epochs and [`RECEIVED_KEYS_MAX`] keys in all, the highest epochs
//! forgotten first (so a stray far-future epoch never pushes out the real next one): whatever
//! is not remembered is offered as before.
//!
//! # Deliberately left out
//! * Anti-entropy between replicas that both hold a key at different versions outside a view
//!   change (a replica that missed a commit). Versions make a later transfer converge them. So
//!   when a leaver hands over a version newer than the designated sender's (that sender missed
//!   a commit), a new replica that got the handoff before planning does not pass it on, just as
//!   it would not had the handoff come after.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::ring::{Position, Ring};
use crate::types::{Epoch, Key, Loss, ServerId, Version};

/// Keys a server remembers from transfers of the epochs it has not planned for; past this many
/// it remembers no more, and offers the rest as candidate copies (only more round trips, never
/// a lost copy).
pub const RECEIVED_KEYS_MAX: usize = 1_000_000;
/// Epochs not yet planned for whose transfers a server remembers at once: the next one or two
/// in practice; past this many, the highest are forgotten first.
pub const RECEIVED_EPOCHS_MAX: usize = 4;

/// The keys transfers brought for the epochs this server has not planned for yet, and the
/// newest version each brought, kept until it plans for that epoch (see "Copies received before
/// planning" above).
///
/// Kept per epoch, because the epoch of a transfer is only bounded from below (a sender may be
/// a view ahead of this server) and a transfer of a far-future epoch, stray or forged, must not
/// push out the real next epoch's keys: when room runs out, the highest epochs go first, and
/// the real next epoch is always the lowest one not yet planned.
#[derive(Clone, Debug)]
pub struct Received {
    /// The newest epoch this server planned for: a transfer of it or older cannot reach a plan.
    planned: Epoch,
    by_epoch: BTreeMap<Epoch, HashMap<Key, Version>>,
    /// Keys remembered, over every epoch.
    len: usize,
    /// At most this many keys ([`RECEIVED_KEYS_MAX`] but in tests).
    keys_max: usize,
}

impl Default for Received {
    fn default() -> Self {
        Self::with_keys_max(RECEIVED_KEYS_MAX)
    }
}

impl Received {
    /// Remembers at most `keys_max` keys in all.
    pub fn with_keys_max(keys_max: usize) -> Self {
        Self {
            planned: 0,
            by_epoch: BTreeMap::new(),
            len: 0,
            keys_max,
        }
    }

    /// Whether a transfer of `epoch` would be remembered (its keys are worth collecting).
    pub fn wants(&self, epoch: Epoch) -> bool {
        epoch > self.planned
    }

    /// A transfer of `epoch` brought `entries` (key, version). An epoch already planned for is
    /// not remembered; to make room, the keys of higher epochs than `epoch` are forgotten.
    pub fn record<'a>(
        &mut self,
        epoch: Epoch,
        entries: impl IntoIterator<Item = (&'a Key, Version)>,
    ) {
        if !self.wants(epoch) {
            return;
        }
        let room_for_epoch =
            self.by_epoch.contains_key(&epoch) || self.by_epoch.len() < RECEIVED_EPOCHS_MAX;
        if !room_for_epoch && !self.forget_highest_above(epoch) {
            return;
        }
        for (key, version) in entries {
            if let Some(known) = self.by_epoch.get_mut(&epoch).and_then(|k| k.get_mut(key)) {
                *known = (*known).max(version);
                continue;
            }
            if self.len >= self.keys_max && !self.forget_highest_above(epoch) {
                continue;
            }
            self.by_epoch
                .entry(epoch)
                .or_default()
                .insert(key.clone(), version);
            self.len += 1;
        }
    }

    /// Forgets the keys of the highest epoch remembered if it is above `epoch`; whether it did.
    fn forget_highest_above(&mut self, epoch: Epoch) -> bool {
        match self.by_epoch.last_key_value() {
            Some((&highest, _)) if highest > epoch => {
                let forgotten = self.by_epoch.remove(&highest).map_or(0, |k| k.len());
                self.len -= forgotten;
                true
            }
            _ => false,
        }
    }

    /// For the plan of `epoch`: the keys transfers of exactly that epoch brought, with the
    /// newest version each brought. Those of older epochs are forgotten, those of newer ones
    /// kept for their own plan.
    pub fn take_for(&mut self, epoch: Epoch) -> HashMap<Key, Version> {
        self.planned = self.planned.max(epoch);
        let later = match epoch.checked_add(1) {
            Some(next) => self.by_epoch.split_off(&next),
            None => BTreeMap::new(),
        };
        let done = std::mem::replace(&mut self.by_epoch, later);
        self.len = self.by_epoch.values().map(HashMap::len).sum();
        done.into_iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, keys)| keys)
            .unwrap_or_default()
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The copies a plan need not offer: received by a transfer of the epoch planned for and still
/// at the version it brought (conditions 1 and 2 above), unless a recorded loss may have taken
/// the key from its settled replicas (half of condition 3; [`plan_covered`] checks the other).
#[derive(Debug, Default)]
pub struct Covered {
    keys: HashSet<Key>,
    /// Each loss's ring (its settled view before the loss) and the servers that survived it.
    losses: Vec<(Ring, BTreeSet<ServerId>)>,
}

impl Covered {
    /// From what [`Received::take_for`] returned, this server's version of each key now
    /// (`version_now`, 0 if absent), and the view's recorded losses.
    pub fn new(
        received: HashMap<Key, Version>,
        version_now: impl Fn(&str) -> Version,
        losses: &[Loss],
    ) -> Self {
        let keys = received
            .into_iter()
            .filter(|(key, brought)| version_now(key) == *brought)
            .map(|(key, _)| key)
            .collect();
        let losses = losses
            .iter()
            .map(|loss| {
                (
                    Ring::of_servers(&loss.settled_servers),
                    loss.survivors.iter().cloned().collect(),
                )
            })
            .collect();
        Self { keys, losses }
    }

    /// Keys that may be left out of the offers.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn covers(&self, key: &str, position: Position) -> bool {
        self.keys.contains(key)
            && !self.losses.iter().any(|(ring, survivors)| {
                let replicas = ring.replicas_at(position);
                !replicas.is_empty() && replicas.iter().all(|id| !survivors.contains(*id))
            })
    }
}

/// What one server does for one view change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Copies to send as designated sender: target → keys.
    pub sends: BTreeMap<ServerId, Vec<Key>>,
    /// Candidate copies: target → keys to compare versions on, then send if the target's is older.
    pub offers: BTreeMap<ServerId, Vec<Key>>,
    /// Keys this server does not own in the new view (dropped once the view settles and every
    /// new owner confirmed).
    pub unowned: Vec<Key>,
}

impl Plan {
    pub fn copies_to_send(&self) -> usize {
        self.sends.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.sends.is_empty() && self.offers.is_empty() && self.unowned.is_empty()
    }
}

/// Plans the moves of `me` from the `settled` ring to the `new` ring for the keys it holds.
pub fn plan<'a, K: AsRef<str> + ?Sized + 'a>(
    me: &str,
    settled: &Ring,
    new: &Ring,
    keys: impl IntoIterator<Item = &'a K>,
) -> Plan {
    plan_covered(me, settled, new, keys, &Covered::default())
}

/// [`plan`], leaving out the offers of the copies in `covered` whose key has a designated
/// sender in the new view: the senders of those copies already cover every new replica.
pub fn plan_covered<'a, K: AsRef<str> + ?Sized + 'a>(
    me: &str,
    settled: &Ring,
    new: &Ring,
    keys: impl IntoIterator<Item = &'a K>,
    covered: &Covered,
) -> Plan {
    let live: BTreeSet<&ServerId> = new.servers().iter().collect();
    let mut plan = Plan::default();
    for key in keys {
        let key = key.as_ref();
        let position = crate::ring::position(key.as_bytes());
        let new_replicas = new.replicas_at(position);
        let old_replicas = settled.replicas_at(position);
        let settled_here = old_replicas.iter().any(|s| *s == me);
        if settled_here {
            let designated = old_replicas.iter().find(|s| live.contains(**s));
            if designated.is_some_and(|s| *s == me) {
                for target in new_replicas.iter().filter(|t| !old_replicas.contains(t)) {
                    plan.sends
                        .entry((*target).clone())
                        .or_default()
                        .push(key.to_string());
                }
            }
        } else if !(old_replicas.iter().any(|s| live.contains(*s)) && covered.covers(key, position))
        {
            for target in new_replicas.iter().filter(|t| **t != me) {
                plan.offers
                    .entry((*target).clone())
                    .or_default()
                    .push(key.to_string());
            }
        }
        if !new_replicas.iter().any(|s| *s == me) {
            plan.unowned.push(key.to_string());
        }
    }
    plan
}

/// The (key, server) pairs in `new`'s replica sets that are not in `old`'s: the fewest copies any
/// rebalancing must make.
pub fn minimum_copies<'a>(
    old: &Ring,
    new: &Ring,
    keys: impl IntoIterator<Item = &'a Key>,
) -> usize {
    keys.into_iter()
        .map(|key| {
            let position = crate::ring::position(key.as_bytes());
            let before = old.replicas_at(position);
            new.replicas_at(position)
                .into_iter()
                .filter(|s| !before.contains(s))
                .count()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::Position;

    /// A ring with one point per server at a chosen hash, as in the specification's example.
    fn ring(points: &[(Position, &str)]) -> Ring {
        Ring::with_positions(points)
    }

    /// Plans for a key at an explicit position by planning over a ring whose key hashes we fix:
    /// `plan` hashes keys itself, so this helper finds a key name landing between two points.
    fn key_between(low: Position, high: Position) -> Key {
        (0u64..)
            .map(|i| format!("key-{i}"))
            .find(|k| {
                let p = crate::ring::position(k.as_bytes());
                p > low && p <= high
            })
            .unwrap_or_default()
    }

    const SCALE: u64 = u64::MAX / 20;

    /// The specification's servers at hashes 2, 5, 10 and 15 (scaled onto the ring), plus `more`.
    fn spec_ring(more: &[(Position, &str)]) -> Ring {
        let mut points = vec![
            (2 * SCALE, "s2"),
            (5 * SCALE, "s5"),
            (10 * SCALE, "s10"),
            (15 * SCALE, "s15"),
        ];
        points.extend_from_slice(more);
        ring(&points)
    }

    #[test]
    fn the_specification_example_sends_the_key_to_the_joining_server_only() {
        // Servers at hashes 2, 5, 10, 15; a key at 7 lives on 10, 15, 2. Server 9 joins: the key
        // must be on 9, 10, 15; 9 receives it from 10 (the first settled replica), nobody else
        // sends, and 2 stops owning it.
        let (settled, grown, key) = s9_joins_with_a_key_for_it();
        assert_eq!(settled.replicas(&key), vec!["s10", "s15", "s2"]);
        assert_eq!(grown.replicas(&key), vec!["s9", "s10", "s15"]);

        let from_10 = plan("s10", &settled, &grown, [&key]);
        assert_eq!(from_10.sends.get("s9"), Some(&vec![key.clone()]));
        assert_eq!(from_10.copies_to_send(), 1);
        assert!(from_10.unowned.is_empty());
        for other in ["s15", "s2"] {
            let p = plan(other, &settled, &grown, [&key]);
            assert_eq!(p.copies_to_send(), 0, "{other} must not send");
        }
        assert_eq!(
            plan("s2", &settled, &grown, [&key]).unowned,
            vec![key.clone()]
        );
        assert!(plan("s9", &settled, &grown, std::iter::empty::<&str>()).is_empty());
    }

    #[test]
    fn the_specification_example_gives_9_exactly_the_keys_it_should() {
        // After 9 joins it is primary for keys in (5, 9], secondary for (2, 5], tertiary for
        // (15, 2]: every key in those arcs, and no other, is sent to it, each exactly once.
        let settled = spec_ring(&[]);
        let grown = spec_ring(&[(9 * SCALE, "s9")]);
        let keys: Vec<Key> = (0..2_000).map(|i| format!("k{i}")).collect();
        let holders = ["s2", "s5", "s10", "s15"];
        let mut received: Vec<Key> = Vec::new();
        for holder in holders {
            let held: Vec<&Key> = keys
                .iter()
                .filter(|k| settled.replicas(k).contains(&&holder.to_string()))
                .collect();
            let p = plan(holder, &settled, &grown, held);
            assert!(
                p.sends.keys().all(|t| t == "s9"),
                "only the newcomer receives"
            );
            received.extend(p.sends.get("s9").cloned().unwrap_or_default());
        }
        let mut expected: Vec<Key> = keys
            .iter()
            .filter(|k| grown.replicas(k).contains(&&"s9".to_string()))
            .cloned()
            .collect();
        received.sort();
        expected.sort();
        assert_eq!(received, expected);
        assert_eq!(received.len(), minimum_copies(&settled, &grown, &keys));
    }

    #[test]
    fn after_a_loss_the_first_surviving_replica_re_replicates() {
        let settled = spec_ring(&[]);
        let shrunk = ring(&[(2 * SCALE, "s2"), (5 * SCALE, "s5"), (15 * SCALE, "s15")]);
        let key = key_between(5 * SCALE, 9 * SCALE);
        // Settled on 10, 15, 2; 10 died: now on 15, 2, 5. 15 is the first survivor: it sends to 5.
        assert_eq!(shrunk.replicas(&key), vec!["s15", "s2", "s5"]);
        assert_eq!(
            plan("s15", &settled, &shrunk, [&key]).sends.get("s5"),
            Some(&vec![key.clone()])
        );
        assert_eq!(plan("s2", &settled, &shrunk, [&key]).copies_to_send(), 0);
    }

    #[test]
    fn a_copy_outside_the_settled_replicas_is_offered_not_pushed() {
        let settled = spec_ring(&[]);
        let rejoined = spec_ring(&[(3 * SCALE, "fresh")]);
        let key = key_between(5 * SCALE, 9 * SCALE);
        let p = plan("fresh", &settled, &rejoined, [&key]);
        assert_eq!(p.copies_to_send(), 0);
        let offered: Vec<&ServerId> = p.offers.keys().collect();
        assert_eq!(offered, vec!["s10", "s15", "s2"]);
        assert_eq!(p.unowned, vec![key]);
    }

    #[test]
    fn with_no_settled_view_every_held_key_is_offered() {
        let new = ring(&[(2 * SCALE, "a"), (5 * SCALE, "b")]);
        let key = "x".to_string();
        let p = plan("a", &Ring::default(), &new, [&key]);
        assert_eq!(p.offers.get("b"), Some(&vec![key]));
        assert!(p.sends.is_empty());
    }

    #[test]
    fn one_join_among_many_servers_sends_exactly_the_minimum() {
        let ids: Vec<String> = (0..6).map(|i| format!("server-{i}")).collect();
        let settled = Ring::new(&ids[..5]);
        let grown = Ring::new(&ids);
        let keys: Vec<Key> = (0..5_000).map(|i| format!("key-{i}")).collect();
        let mut sent = 0;
        for holder in &ids[..5] {
            let held: Vec<&Key> = keys
                .iter()
                .filter(|k| settled.replicas(k).contains(&holder))
                .collect();
            sent += plan(holder, &settled, &grown, held).copies_to_send();
        }
        assert_eq!(sent, minimum_copies(&settled, &grown, &keys));
    }

    // ----- copies received before planning ------------------------------------------------------

    const EPOCH: Epoch = 7;
    const BROUGHT: Version = 40;

    /// What `holders` send the newcomer `to` as designated senders from `settled` to `new`,
    /// each holder holding the keys it is a settled replica of.
    fn designated_sends(settled: &Ring, new: &Ring, keys: &[Key], to: &str) -> Vec<Key> {
        let mut sent = Vec::new();
        for holder in settled.servers() {
            let held: Vec<&Key> = keys
                .iter()
                .filter(|k| settled.replicas(k).contains(&holder))
                .collect();
            let p = plan(holder, settled, new, held);
            sent.extend(p.sends.get(to).cloned().unwrap_or_default());
        }
        sent
    }

    /// The plan of `me` at `EPOCH` for `held`, after transfers of `epoch` brought `received` at
    /// `BROUGHT`, `me` holding every key of `held` at `version_now`.
    fn plan_after_receiving(
        me: &str,
        settled: &Ring,
        new: &Ring,
        held: &[Key],
        received: (Epoch, &[Key]),
        version_now: Version,
        losses: &[Loss],
    ) -> Plan {
        let mut remembered = Received::default();
        remembered.record(received.0, received.1.iter().map(|k| (k, BROUGHT)));
        let covered = Covered::new(remembered.take_for(EPOCH), |_| version_now, losses);
        plan_covered(me, settled, new, held, &covered)
    }

    /// The specification's ring, s9 joining, and a key that moves to s9 (held by s10, s15, s2).
    fn s9_joins_with_a_key_for_it() -> (Ring, Ring, Key) {
        let settled = spec_ring(&[]);
        let grown = spec_ring(&[(9 * SCALE, "s9")]);
        (settled, grown, key_between(5 * SCALE, 9 * SCALE))
    }

    #[test]
    fn a_new_server_that_received_its_copies_before_planning_offers_none_of_them_back() {
        // s9 joins; its designated senders' copies reach it before it plans for the epoch. They
        // are not candidate copies: offering them back would make s9 wait on every other new
        // replica of their keys (a crashed one for ever) although s9 owes nobody anything.
        let settled = spec_ring(&[]);
        let grown = spec_ring(&[(9 * SCALE, "s9")]);
        let keys: Vec<Key> = (0..2_000).map(|i| format!("k{i}")).collect();
        let got = designated_sends(&settled, &grown, &keys, "s9");
        assert!(!got.is_empty());
        // The defect: planned as candidate copies, every one is offered to the other replicas.
        let blind = plan("s9", &settled, &grown, &got);
        assert_eq!(
            blind.offers.values().map(Vec::len).sum::<usize>(),
            got.len() * 2
        );

        let p = plan_after_receiving("s9", &settled, &grown, &got, (EPOCH, &got), BROUGHT, &[]);
        assert!(p.is_empty(), "s9 owes nobody anything: {p:?}");
    }

    #[test]
    fn copies_received_for_another_epoch_are_still_offered() {
        // A sender whose plan was for an older view (epoch 6) is superseded: its copies are
        // candidate copies of the plan for 7. Transfers of 8 wait for the plan of 8.
        let (settled, grown, key) = s9_joins_with_a_key_for_it();
        let held = [key.clone()];
        for epoch in [EPOCH - 1, EPOCH + 1] {
            let p =
                plan_after_receiving("s9", &settled, &grown, &held, (epoch, &held), BROUGHT, &[]);
            let offered: Vec<&ServerId> = p.offers.keys().collect();
            assert_eq!(offered, vec!["s10", "s15"], "received at epoch {epoch}");
        }
        let mut remembered = Received::default();
        remembered.record(EPOCH + 1, held.iter().map(|k| (k, BROUGHT)));
        assert!(remembered.take_for(EPOCH).is_empty());
        assert_eq!(remembered.take_for(EPOCH + 1).len(), 1, "kept for its plan");
    }

    #[test]
    fn a_copy_newer_or_older_than_the_one_received_is_still_offered() {
        // Newer: the server's own copy (or a write since) is newer than what the sender has.
        // Older: the transfer was not stored (a failed write), so it proves nothing.
        let (settled, grown, key) = s9_joins_with_a_key_for_it();
        let held = [key.clone()];
        for version_now in [BROUGHT + 1, BROUGHT - 1] {
            let p = plan_after_receiving(
                "s9",
                &settled,
                &grown,
                &held,
                (EPOCH, &held),
                version_now,
                &[],
            );
            assert_eq!(p.offers.len(), 2, "at version {version_now}: {p:?}");
        }
    }

    #[test]
    fn a_handoff_of_a_key_whose_settled_replicas_all_left_is_still_offered() {
        // The key at 7 was on s10, s15, s2, which all left: nobody is its designated sender, and
        // a leaver's handoff gives up after a bound, so a copy that reached s8 is offered on.
        let settled = spec_ring(&[]);
        let after = ring(&[
            (3 * SCALE, "n3"),
            (5 * SCALE, "s5"),
            (8 * SCALE, "n8"),
            (12 * SCALE, "n12"),
        ]);
        let key = key_between(5 * SCALE, 8 * SCALE);
        assert_eq!(after.replicas(&key), vec!["n8", "n12", "n3"]);
        let held = [key.clone()];
        let p = plan_after_receiving("n8", &settled, &after, &held, (EPOCH, &held), BROUGHT, &[]);
        let offered: Vec<&ServerId> = p.offers.keys().collect();
        assert_eq!(offered, vec!["n12", "n3"]);
    }

    #[test]
    fn a_key_a_loss_may_have_taken_is_still_offered() {
        // The view settled once without every replica of the key: its settled replicas may lack
        // it, so its designated sender may have nothing to send.
        let (settled, grown, key) = s9_joins_with_a_key_for_it();
        let info = |id: &str| crate::types::ServerInfo {
            id: id.to_string(),
            addr: format!("{id}:1"),
        };
        let before: Vec<crate::types::ServerInfo> =
            ["old-a", "old-b", "old-c"].into_iter().map(info).collect();
        let lost_all = Loss {
            epoch: 3,
            settled_servers: before.clone(),
            survivors: Vec::new(),
        };
        let lost_none = Loss {
            epoch: 3,
            settled_servers: before.clone(),
            survivors: vec!["old-a".into(), "old-b".into(), "old-c".into()],
        };
        let held = [key.clone()];
        let p = plan_after_receiving(
            "s9",
            &settled,
            &grown,
            &held,
            (EPOCH, &held),
            BROUGHT,
            &[lost_none.clone(), lost_all],
        );
        assert_eq!(p.offers.len(), 2, "{p:?}");
        let p = plan_after_receiving(
            "s9",
            &settled,
            &grown,
            &held,
            (EPOCH, &held),
            BROUGHT,
            &[lost_none],
        );
        assert!(
            p.is_empty(),
            "a loss that spared the key changes nothing: {p:?}"
        );
    }

    #[test]
    fn a_designated_sender_sends_what_it_received_too() {
        // s10 is the key's designated sender; a leaver's handoff of the key reached it first.
        // Only offers are left out, never a send.
        let (settled, grown, key) = s9_joins_with_a_key_for_it();
        let held = [key.clone()];
        let p = plan_after_receiving("s10", &settled, &grown, &held, (EPOCH, &held), BROUGHT, &[]);
        assert_eq!(p.sends.get("s9"), Some(&vec![key]));
    }

    #[test]
    fn received_keys_are_bounded_kept_at_the_newest_version_and_forgotten_once_planned() {
        let keys: Vec<Key> = (0..10).map(|i| format!("k{i}")).collect();
        let mut remembered = Received::with_keys_max(5);
        remembered.record(EPOCH, keys.iter().map(|k| (k, BROUGHT)));
        assert_eq!(remembered.len(), 5, "bounded");
        remembered.record(EPOCH, [(&keys[0], BROUGHT + 5), (&keys[1], BROUGHT - 5)]);
        remembered.record(EPOCH + 1, [(&keys[2], BROUGHT + 9)]);
        assert_eq!(
            remembered.len(),
            5,
            "a higher epoch never pushes out a lower one"
        );
        let taken = remembered.take_for(EPOCH);
        assert_eq!(taken.get(&keys[0]), Some(&(BROUGHT + 5)));
        assert_eq!(taken.get(&keys[1]), Some(&BROUGHT), "the newest brought");
        assert_eq!(
            taken.get(&keys[2]),
            Some(&BROUGHT),
            "another epoch's transfer counts for its own plan only"
        );
        assert!(remembered.is_empty());
        remembered.record(EPOCH, keys.iter().map(|k| (k, BROUGHT)));
        assert!(
            remembered.is_empty(),
            "a transfer after the plan cannot reach it"
        );
        remembered.record(EPOCH + 1, keys.iter().take(2).map(|k| (k, BROUGHT)));
        assert_eq!(remembered.len(), 2, "the next epoch is remembered afresh");
    }

    #[test]
    fn far_future_epochs_give_way_to_the_next_one_when_room_runs_out() {
        let keys: Vec<Key> = (0..4).map(|i| format!("k{i}")).collect();
        let mut remembered = Received::with_keys_max(2);
        remembered.record(
            crate::types::EPOCH_MAX,
            keys[..2].iter().map(|k| (k, BROUGHT)),
        );
        remembered.record(EPOCH, [(&keys[2], BROUGHT)]);
        assert_eq!(remembered.len(), 1, "the far epoch's keys made room");
        for far in 0..RECEIVED_EPOCHS_MAX as u64 * 2 {
            remembered.record(EPOCH + 100 + far, [(&keys[3], BROUGHT)]);
        }
        let taken = remembered.take_for(EPOCH);
        assert_eq!(taken.get(&keys[2]), Some(&BROUGHT), "{taken:?}");
        assert!(remembered.len() <= 2, "still bounded");
    }

    #[test]
    fn a_transfer_of_a_far_future_epoch_does_not_stop_the_next_epochs_being_remembered() {
        // A client may ask any server for a `Repair` at any epoch above the server's own (only
        // one of the same epoch is checked against the view), and the server passes the epoch
        // on in a member's `Transfer`, which every receiver at or below it accepts. One such
        // transfer must not make this process forget, for the rest of its life, the copies the
        // real next epochs bring (that brings issue 17's stuck rebalance back).
        let forged = "forged".to_string();
        let real = "real".to_string();
        let mut remembered = Received::default();
        remembered.record(crate::types::EPOCH_MAX, [(&forged, BROUGHT)]);
        remembered.record(EPOCH, [(&real, BROUGHT)]);
        let taken = remembered.take_for(EPOCH);
        assert_eq!(
            taken.get(&real),
            Some(&BROUGHT),
            "the plan of {EPOCH} knows what its transfers brought"
        );
    }

    #[test]
    fn every_new_replica_still_gets_every_key_whatever_arrived_before_planning() {
        // Joins and losses on rings of 4 to 7 servers; each new replica got an arbitrary part of
        // what its designated senders send before it planned. Every (key, new replica) pair is
        // still covered: held as a settled replica, or sent or offered to it by some plan.
        let keys: Vec<Key> = (0..600).map(|i| format!("key-{i}")).collect();
        for size in 4..8usize {
            let ids: Vec<ServerId> = (0..=size).map(|i| format!("server-{size}-{i}")).collect();
            let changes = [
                (Ring::new(&ids[..size]), Ring::new(&ids)), // a join
                (Ring::new(&ids[..size]), Ring::new(&ids[1..size])), // a loss
                (Ring::new(&ids[1..size]), Ring::new(&ids[..size])), // a loss and a join at once
            ];
            for (settled, new) in &changes {
                // holder → keys; what designated senders send, part of it received early.
                let mut holds: BTreeMap<&ServerId, Vec<Key>> = BTreeMap::new();
                for key in &keys {
                    for holder in settled.replicas(key) {
                        holds.entry(holder).or_default().push(key.clone());
                    }
                }
                let mut early: BTreeMap<ServerId, Vec<Key>> = BTreeMap::new();
                for (holder, held) in &holds {
                    if !new.servers().contains(holder) {
                        continue;
                    }
                    for (to, sent) in plan(holder, settled, new, held).sends {
                        let part = sent.into_iter().enumerate().filter(|(i, _)| i % 3 != 0);
                        early.entry(to).or_default().extend(part.map(|(_, k)| k));
                    }
                }
                let mut covered_pairs: BTreeSet<(Key, ServerId)> = BTreeSet::new();
                for me in new.servers() {
                    let mut held: Vec<Key> = holds.get(me).cloned().unwrap_or_default();
                    let received = early.get(me).cloned().unwrap_or_default();
                    held.extend(received.iter().cloned());
                    let p = plan_after_receiving(
                        me,
                        settled,
                        new,
                        &held,
                        (EPOCH, &received),
                        BROUGHT,
                        &[],
                    );
                    assert!(p.offers.is_empty(), "{me} offers nothing: {p:?}");
                    for (to, sent) in p.sends.iter().chain(p.offers.iter()) {
                        covered_pairs.extend(sent.iter().map(|k| (k.clone(), to.clone())));
                    }
                    for key in holds.get(me).into_iter().flatten() {
                        covered_pairs.insert((key.clone(), me.clone()));
                    }
                }
                for key in &keys {
                    for replica in new.replicas(key) {
                        assert!(
                            covered_pairs.contains(&(key.clone(), replica.clone())),
                            "{key} never reaches {replica}"
                        );
                    }
                }
            }
        }
    }
}
