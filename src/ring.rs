//! The bucket allocator: which servers hold a key in a given view. A pure function of the key and
//! the view; the view leader stores nothing per key.
//!
//! Every server id is hashed (SHA-1, first 8 bytes) at [`VNODES_PER_SERVER`] points on a ring of
//! 2^64 positions: point `i` of server `s` is `sha1("s#i")`. A key hashes to `sha1(key)`; its
//! primary is the server owning the first point clockwise at or after that position (wrapping
//! past the top), and the further replicas are the owners of the next points that belong to
//! servers not yet chosen, up to [`REPLICATION_COUNT`]. With that many servers or fewer, every
//! server is a replica.
//!
//! Virtual points even out the load: one point per server leaves arcs whose lengths vary by a
//! factor of several; hundreds of points per server average that out (measured in the tests and
//! docs/ring.md). A key's replica set changes only when a server whose point lies among the key's
//! first distinct owners clockwise joins, or one of its replicas leaves; every other key stays.

use sha1::{Digest, Sha1};

use crate::types::{Loss, ServerId, ServerInfo, View};

/// How many servers hold each key when the view has that many.
pub const REPLICATION_COUNT: usize = 3;
/// Points per server on the ring. More points even out the load at the cost of a larger ring
/// (this many × servers entries, built once per view).
pub const VNODES_PER_SERVER: usize = 512;

/// A position on the ring.
pub type Position = u64;

/// The ring position of arbitrary bytes: the first 8 bytes of their SHA-1, big-endian.
pub fn position(bytes: &[u8]) -> Position {
    let digest = Sha1::digest(bytes);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The ring of one view, built once and asked many times.
#[derive(Clone, Debug, Default)]
pub struct Ring {
    /// Sorted by position; the index points into `servers`.
    points: Vec<(Position, usize)>,
    servers: Vec<ServerId>,
}

impl Ring {
    /// The ring of these servers, with [`VNODES_PER_SERVER`] points each.
    pub fn new<'a>(servers: impl IntoIterator<Item = &'a ServerId>) -> Self {
        let mut ids: Vec<ServerId> = servers.into_iter().cloned().collect();
        ids.sort();
        ids.dedup();
        let mut points = Vec::with_capacity(ids.len() * VNODES_PER_SERVER);
        for (index, id) in ids.iter().enumerate() {
            for vnode in 0..VNODES_PER_SERVER {
                points.push((position(format!("{id}#{vnode}").as_bytes()), index));
            }
        }
        Self::from_parts(points, ids)
    }

    /// The ring of a view's servers.
    pub fn of_servers(servers: &[ServerInfo]) -> Self {
        Self::new(servers.iter().map(|s| &s.id))
    }

    /// A ring with explicit points, one per server: for worked examples with chosen hashes.
    pub fn with_positions(points: &[(Position, &str)]) -> Self {
        let servers: Vec<ServerId> = points.iter().map(|(_, id)| id.to_string()).collect();
        let points = points
            .iter()
            .enumerate()
            .map(|(index, (pos, _))| (*pos, index))
            .collect();
        Self::from_parts(points, servers)
    }

    fn from_parts(mut points: Vec<(Position, usize)>, servers: Vec<ServerId>) -> Self {
        // Ties (astronomically rare) break by server so every node builds the same ring.
        points.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| servers[a.1].cmp(&servers[b.1])));
        Self { points, servers }
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    pub fn servers(&self) -> &[ServerId] {
        &self.servers
    }

    /// The replicas of the key at `key_position`, primary first.
    pub fn replicas_at(&self, key_position: Position) -> Vec<&ServerId> {
        let wanted = REPLICATION_COUNT.min(self.servers.len());
        let mut chosen: Vec<usize> = Vec::with_capacity(wanted);
        if wanted == 0 {
            return Vec::new();
        }
        let start = self.points.partition_point(|(pos, _)| *pos < key_position);
        for offset in 0..self.points.len() {
            let (_, server) = self.points[(start + offset) % self.points.len()];
            if !chosen.contains(&server) {
                chosen.push(server);
                if chosen.len() == wanted {
                    break;
                }
            }
        }
        chosen
            .into_iter()
            .map(|index| &self.servers[index])
            .collect()
    }

    /// The share of the key space (0 to 1) for which each server is the primary, in the order
    /// of [`Ring::servers`]. A key's primary is the first point at or after it, so a point owns
    /// the stretch back to the point before it (round the end of the ring for the first).
    pub fn primary_shares(&self) -> Vec<(&ServerId, f64)> {
        let mut owned = vec![0u128; self.servers.len()];
        for (i, &(pos, server)) in self.points.iter().enumerate() {
            let previous = if i == 0 {
                self.points[self.points.len() - 1].0
            } else {
                self.points[i - 1].0
            };
            // One point alone owns the whole ring: its stretch is a full turn, not zero.
            let stretch = if self.points.len() == 1 {
                1u128 << 64
            } else {
                u128::from(pos.wrapping_sub(previous))
            };
            owned[server] += stretch;
        }
        let turn = (1u128 << 64) as f64;
        self.servers
            .iter()
            .zip(owned)
            .map(|(id, stretch)| (id, stretch as f64 / turn))
            .collect()
    }

    /// The replicas of `key`, primary first.
    pub fn replicas(&self, key: &str) -> Vec<&ServerId> {
        self.replicas_at(position(key.as_bytes()))
    }

    /// Whether some range of the ring has none of its replicas among those `alive` accepts:
    /// the keys there have no copy left in the view.
    pub fn has_range_without(&self, alive: impl Fn(&ServerId) -> bool) -> bool {
        self.has_range_where(alive, |alive, _| alive == 0)
    }

    /// Whether some range of the ring is missing a majority of its replicas (those `alive` does
    /// not accept): a write is acknowledged once a majority holds it, so there a write may be
    /// held only by the missing ones.
    pub fn has_range_missing_a_majority(&self, alive: impl Fn(&ServerId) -> bool) -> bool {
        self.has_range_where(alive, |alive, replicas| {
            replicas - alive >= crate::twopc::majority(replicas)
        })
    }

    /// Whether `short(alive replicas, replicas)` holds for some range.
    fn has_range_where(
        &self,
        alive: impl Fn(&ServerId) -> bool,
        short: impl Fn(usize, usize) -> bool,
    ) -> bool {
        if self.servers.iter().all(&alive) {
            return false;
        }
        // Every key's replica set is that of the first point at or after it, so checking the
        // replica set at each point covers every range.
        self.points.iter().any(|(pos, _)| {
            let replicas = self.replicas_at(*pos);
            let living = replicas.iter().filter(|id| alive(id)).count();
            short(living, replicas.len())
        })
    }
}

/// `bucket_allocator(key, view) -> [bucket]` of the specification: the replica ids of `key` among
/// `servers`, primary first. Builds the ring each call; hold a [`Ring`] to ask many times.
pub fn replicas(key: &str, servers: &[ServerInfo]) -> Vec<ServerId> {
    Ring::of_servers(servers)
        .replicas(key)
        .into_iter()
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{BTreeSet, HashMap};

    fn ids(n: usize) -> Vec<ServerId> {
        (0..n).map(|i| format!("server-{i:04}")).collect()
    }

    #[test]
    fn a_server_is_primary_for_the_stretch_back_to_the_point_before_its_own() {
        let quarter = 1u64 << 62;
        let ring = Ring::with_positions(&[(quarter, "a"), (3 * quarter, "b")]);
        let shares: HashMap<&str, f64> = ring
            .primary_shares()
            .into_iter()
            .map(|(id, share)| (id.as_str(), share))
            .collect();
        // b owns (quarter, 3 quarters]; a the rest, round the end of the ring.
        assert_eq!(shares["b"], 0.5);
        assert_eq!(shares["a"], 0.5);
        let lone = Ring::with_positions(&[(quarter, "a")]);
        assert_eq!(lone.primary_shares(), vec![(&"a".to_string(), 1.0)]);
        let uneven = Ring::with_positions(&[(0, "a"), (quarter, "b")]);
        let shares: Vec<f64> = uneven
            .primary_shares()
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(shares, vec![0.75, 0.25]);
    }

    #[test]
    fn primary_shares_of_a_real_ring_add_up_to_one_and_are_even() {
        let servers = ids(5);
        let ring = Ring::new(&servers);
        let shares = ring.primary_shares();
        let total: f64 = shares.iter().map(|(_, s)| s).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        for (id, share) in shares {
            assert!((0.15..0.25).contains(&share), "{id}: {share}");
        }
    }

    #[test]
    fn the_specification_example_places_key_7_on_10_15_2() {
        let ring = Ring::with_positions(&[(2, "s2"), (5, "s5"), (10, "s10"), (15, "s15")]);
        assert_eq!(ring.replicas_at(7), vec!["s10", "s15", "s2"]);
        let grown =
            Ring::with_positions(&[(2, "s2"), (5, "s5"), (9, "s9"), (10, "s10"), (15, "s15")]);
        assert_eq!(grown.replicas_at(7), vec!["s9", "s10", "s15"]);
    }

    #[test]
    fn a_key_past_the_last_point_wraps_to_the_first() {
        let ring = Ring::with_positions(&[(2, "a"), (5, "b"), (10, "c"), (15, "d")]);
        assert_eq!(ring.replicas_at(16), vec!["a", "b", "c"]);
        assert_eq!(ring.replicas_at(15), vec!["d", "a", "b"]);
    }

    #[test]
    fn with_three_or_fewer_servers_every_server_is_a_replica() {
        for n in 0..=3 {
            let servers = ids(n);
            let ring = Ring::new(&servers);
            let got: BTreeSet<_> = ring.replicas("some key").into_iter().cloned().collect();
            assert_eq!(got, servers.iter().cloned().collect::<BTreeSet<_>>());
        }
    }

    proptest! {
        #[test]
        fn replicas_are_stable_and_distinct(key in ".{0,40}", n in 1usize..12) {
            let servers = ids(n);
            let first: Vec<ServerId> = Ring::new(&servers).replicas(&key).into_iter().cloned().collect();
            let mut reversed = servers.clone();
            reversed.reverse();
            let second: Vec<ServerId> = Ring::new(&reversed).replicas(&key).into_iter().cloned().collect();
            prop_assert_eq!(&first, &second);
            let distinct: BTreeSet<_> = first.iter().collect();
            prop_assert_eq!(distinct.len(), first.len());
            prop_assert_eq!(first.len(), n.min(REPLICATION_COUNT));
        }
    }

    /// Counts (key, server) pairs present in `after` but not in `before`.
    fn new_copies(before: &Ring, after: &Ring, keys: &[String]) -> usize {
        keys.iter()
            .map(|key| {
                let old: BTreeSet<_> = before.replicas(key).into_iter().collect();
                after
                    .replicas(key)
                    .into_iter()
                    .filter(|s| !old.contains(s))
                    .count()
            })
            .sum()
    }

    #[test]
    fn one_join_moves_only_about_its_share_of_copies() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("key-{i}")).collect();
        let before = Ring::new(&ids(5));
        let after = Ring::new(&ids(6));
        // The newcomer should end up with about 3/6 of all keys as copies, and nothing else moves.
        let moved = new_copies(&before, &after, &keys);
        let expected = keys.len() * REPLICATION_COUNT / 6;
        assert!(
            moved as f64 <= expected as f64 * 1.15,
            "moved {moved}, expected about {expected}"
        );
        assert!(
            moved as f64 >= expected as f64 * 0.85,
            "moved {moved}, expected about {expected}"
        );
    }

    #[test]
    fn one_loss_moves_only_the_lost_servers_copies() {
        let keys: Vec<String> = (0..20_000).map(|i| format!("key-{i}")).collect();
        let before = Ring::new(&ids(6));
        let survivors: Vec<ServerId> = ids(6)
            .into_iter()
            .filter(|id| id != "server-0003")
            .collect();
        let after = Ring::new(&survivors);
        let lost_copies = keys
            .iter()
            .filter(|key| before.replicas(key).iter().any(|s| *s == "server-0003"))
            .count();
        // Each key that lost a copy gains exactly one new copy elsewhere; no other key changes.
        assert_eq!(new_copies(&before, &after, &keys), lost_copies);
    }

    /// max/mean of copies per server for `n` servers and 100,000 keys.
    fn balance(n: usize) -> f64 {
        let ring = Ring::new(&ids(n));
        let mut copies: HashMap<&ServerId, usize> = HashMap::new();
        for i in 0..100_000 {
            for server in ring.replicas(&format!("key-{i}")) {
                *copies.entry(server).or_default() += 1;
            }
        }
        let max = *copies.values().max().unwrap_or(&0) as f64;
        let mean = copies.values().sum::<usize>() as f64 / n as f64;
        max / mean
    }

    #[test]
    fn copies_per_server_are_balanced() {
        for n in [3, 5, 10] {
            let ratio = balance(n);
            println!("{n} servers: copies per server max/mean = {ratio:.3}");
            // The target in docs/ring.md is 1.10 at 5 servers; the assertion leaves room only for the
            // choice of ids, not for a broken allocator (one point per server gives ~1.5+).
            assert!(ratio <= 1.10, "{n} servers: max/mean {ratio:.3}");
        }
    }
}

#[cfg(test)]
mod balance_with_random_ids {
    use super::*;
    use std::collections::HashMap;

    /// Real servers have random UUIDs: the balance target must hold for such ids, not only for
    /// the tidy ids above. Ten draws of five servers (seeded, so the test is repeatable),
    /// 100,000 keys each.
    #[test]
    fn copies_per_server_are_balanced_for_random_uuids() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(360);
        let keys: Vec<String> = (0..100_000).map(|i| format!("key-{i}")).collect();
        let mut worst: f64 = 0.0;
        for _ in 0..10 {
            let ids: Vec<ServerId> = (0..5)
                .map(|_| uuid::Uuid::from_u128(rng.gen()).to_string())
                .collect();
            let ring = Ring::new(&ids);
            let mut copies: HashMap<&ServerId, usize> = HashMap::new();
            for key in &keys {
                for server in ring.replicas(key) {
                    *copies.entry(server).or_default() += 1;
                }
            }
            let max = *copies.values().max().unwrap_or(&0) as f64;
            let mean = copies.values().sum::<usize>() as f64 / ids.len() as f64;
            worst = worst.max(max / mean);
        }
        println!("5 random servers, worst of 10 draws: copies per server max/mean = {worst:.3}");
        assert!(worst <= 1.10, "worst max/mean {worst:.3}");
    }
}

/// Whether `key`'s copies may have gone with `loss`: none of its replicas in the settled view
/// before the loss survived it.
pub fn lost_with(loss: &Loss, key: &str) -> bool {
    let replicas = replicas(key, &loss.settled_servers);
    !replicas.is_empty() && replicas.iter().all(|id| !loss.survivors.contains(id))
}

/// The newest loss of `view` that may have taken `key`'s copies, if any.
pub fn loss_of<'v>(view: &'v View, key: &str) -> Option<&'v Loss> {
    view.losses.iter().rev().find(|loss| lost_with(loss, key))
}
