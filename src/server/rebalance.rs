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
//! * When all its sends are acknowledged the server reports `rebalanced_epoch`. When the whole
//!   cluster has (the view settles at the new epoch), each server **drops** the keys it no longer
//!   owns, but only after every new replica confirmed holding a version at least as new (a
//!   missing one is sent first). It never drops a key with no owner in the view, nor while it is
//!   itself out of the settled view, nor while a transaction holds the key.
//!
//! Work is proportional to the keys whose replica set changed (plus candidate copies), never to
//! all keys: planning reads every key once, but sends only what moved.
//!
//! # Deliberately left out
//! * Anti-entropy between replicas that both hold a key at different versions outside a view
//!   change (a replica that missed a commit). Versions make a later transfer converge them.

use std::collections::{BTreeMap, BTreeSet};

use crate::ring::Ring;
use crate::types::{Key, ServerId};

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
        } else {
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
        let settled = spec_ring(&[]);
        let grown = spec_ring(&[(9 * SCALE, "s9")]);
        let key = key_between(5 * SCALE, 9 * SCALE);
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
}
