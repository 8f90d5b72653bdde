//! The view leader's state machine: membership, epochs and the lock service.
//!
//! Everything that changes the state is a [`Command`] applied with the time it happened at
//! ([`State::apply`]); nothing here reads a clock, opens a socket or draws a random number. The
//! same commands at the same times always give the same state and replies, which is what lets a
//! log of commands be replicated (Raft) and lets the tests drive time by hand.
//!
//! # Membership
//! A server joins with its first heartbeat; the epoch goes up by one. A server whose last
//! heartbeat is older than the lease is removed by the next [`Command::Expire`] (a timer issues
//! it; expiry is never lazy), and however many expire in one sweep the epoch goes up once. An
//! expired id is remembered and denied if it beats again: the server must rejoin under a new id,
//! so that a node that was cut off can never be mistaken for one that kept up. A live id holds its
//! address: a second id beating from the same address is told to retry until the first expires.
//!
//! # The view leader's own faults
//! * A stall (the process was paused, or its timer ran far behind): when two expiry sweeps are
//!   further apart than `stall_ms`, nobody could have been heard from in between, so every server
//!   and every lock holder gets a fresh full lease instead of being expired for our hiccup.
//! * A restart: the shell hands the state an epoch floor kept on disk (`super::durable`), above
//!   every epoch used before, so a restarted view leader never names a second view with an epoch
//!   already used. Heartbeats carry the highest epoch their server has seen, and the epoch is
//!   raised to that too (the only guard when there is no data directory). They
//!   also carry the last settled view their server holds: a restarted view leader, which knows
//!   none, adopts the newest one reported and settles nothing narrower while its servers may
//!   still be on their way back (next section).
//! * Fencing tokens carry the view leader's restart generation in their high bits
//!   ([`TOKEN_COUNTER_BITS`]): the shell reads the generation from a file, raises it and syncs it
//!   before serving, so tokens grow across restarts too. A replicated view leader replaces this
//!   with its log's indices.
//! * A restarted view leader remembers no lock holder, so for one lock lease after it starts it
//!   grants no lock (`Recovering`): a holder from before keeps its lock until its place would
//!   have lapsed without a renewal anyway, and nobody else holds it meanwhile. Time is counted
//!   from the state's creation, which is the shell's start.
//!
//! # Settling, and losses
//! A view is *settled* once every member reported `rebalanced_epoch == epoch`: every key is then
//! on its replicas. Servers plan their moves against the last settled view, so settling one that
//! lacks the holders of some keys would make those keys read as absent (or as they were before
//! their latest writes), and a write to them would start afresh and later beat the real copies
//! by version. So before it settles, the view leader checks the last settled ring: while some
//! range is missing a majority of its replicas (alive means a member, or a member that names the
//! replica among its former ids), it waits until the membership has been still for
//! [`RETURN_WAIT_LEASES`] leases, time for servers that were only cut off to come back. Then it
//! settles; if some range has no replica alive at all, it records a [`Loss`]: readers of keys
//! there hear that their data may be lost rather than "not found". A view with no members never
//! settles: it holds nothing to settle.
//!
//! Waiting trades availability for data: a range that lost a majority of its replicas at once
//! (two of its three servers crashed) is unreadable and unwritable for those leases, where settling at once would
//! let a write acknowledged only by them vanish behind a newer one if they were merely cut off.
//!
//! # Locks
//! One FIFO queue per lock; its head holds it. `LockGet` by a requester already queued is a poll
//! (and renews its lease); by a new requester it grants at once on a free lock or enqueues. A
//! request that would wait, directly or through a chain of waiters, on the requester itself is
//! answered `Deadlock` and not enqueued. Every grant gets the next value of one global counter as
//! its fencing token, so tokens grow with every grant of any one lock. Requesters that name a
//! live server (`:PORT` or its address) keep their place until the server expires; any other
//! requester's place lapses after `lock_lease_ms` without a `LockGet` from it.
//!
//! # Deliberately left out
//! * Durability: the state is in memory. A restart loses the locks (their holders must ask
//!   again) and the membership (servers rejoin with their next heartbeat).
//! * A requester's identity is whatever string it sends; there is no authentication.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::bounded::BoundedMap;
use crate::errinput;
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::types::{
    check_epoch, Epoch, FencingToken, HeartbeatReply, LockReply, Loss, ServerId, ServerInfo, View,
    FORMER_IDS_MAX, LOSSES_MAX,
};

/// Expired ids remembered for denial; the oldest is forgotten beyond this. An id forgotten this
/// way could rejoin, which only costs a rebalance, never data.
pub const EXPIRED_IDS_MAX: usize = 100_000;
/// Distinct locks at once; a `LockGet` on a new lock beyond it is refused.
pub const LOCKS_MAX: usize = 100_000;
/// Requesters queued on one lock; a new one beyond it is refused.
pub const LOCK_QUEUE_MAX: usize = 10_000;
/// Longest lock name or requester accepted, in bytes.
pub const LOCK_NAME_BYTES_MAX: usize = 1024;
/// Longest server id or address accepted, in bytes.
pub const SERVER_FIELD_BYTES_MAX: usize = 256;
/// Servers a heartbeat's settled view may list.
pub const SETTLED_SERVERS_MAX: usize = 1_024;
/// Leases the view leader waits, after the membership last changed, before it settles a view
/// in which some range is missing a majority of its settled replicas: a write acknowledged by a
/// majority may be held only by them, and servers that were cut off (not dead) come back within
/// that. Three leases stay well inside the servers' bound on a rebalance.
pub const RETURN_WAIT_LEASES: u64 = 3;
/// Low bits of a fencing token that count grants within one restart generation; the bits above
/// hold the generation. A generation runs out after this many grants and refuses more.
pub const TOKEN_COUNTER_BITS: u32 = 32;

/// The state machine's timing rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateConfig {
    /// A server unheard from for longer is expired.
    pub lease_ms: u64,
    /// A non-server lock requester unheard from for longer loses its place.
    pub lock_lease_ms: u64,
    /// Sweeps further apart than this mean the view leader itself stalled.
    pub stall_ms: u64,
}

/// Everything that changes the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Heartbeat {
        server_id: ServerId,
        addr: String,
        epoch_seen: Epoch,
        rebalanced_epoch: Epoch,
        settled_epoch: Epoch,
        settled_servers: Vec<ServerInfo>,
        former_ids: Vec<ServerId>,
    },
    Leave {
        server_id: ServerId,
    },
    LockGet {
        lock: String,
        requester: String,
    },
    LockRelease {
        lock: String,
        requester: String,
    },
    /// The timer's sweep: expire servers and lock places whose lease ran out.
    Expire,
}

/// What applying a command answers; the network shell turns it into the wire's reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Heartbeat(HeartbeatReply),
    /// The view after the command (a sweep's answer).
    View(View),
    Lock(LockReply),
    /// A server left; the epoch after it.
    Left {
        epoch: Epoch,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    addr: String,
    last_heartbeat_ms: u64,
    rebalanced_epoch: Epoch,
    /// Ids this server held before, whose data it kept.
    former_ids: Vec<ServerId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Place {
    requester: String,
    /// Last `LockGet` from the requester, or when it became the holder.
    touched_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct LockQueue {
    /// The head holds the lock.
    places: VecDeque<Place>,
    /// The token of the current holder's grant.
    token: FencingToken,
}

/// The view leader's state. See the module docs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    config: StateConfig,
    epoch: Epoch,
    members: BTreeMap<ServerId, Member>,
    /// Ids that expired or left: denied if they beat again.
    expired: BoundedMap<ServerId, ()>,
    locks: BTreeMap<String, LockQueue>,
    last_token: FencingToken,
    last_sweep_ms: Option<u64>,
    /// The last view in which nobody was rebalancing.
    settled_epoch: Epoch,
    settled_servers: Vec<ServerInfo>,
    /// When the membership last changed: a view missing the holders of some range settles
    /// only a lease after it.
    changed_ms: u64,
    /// Ranges settled without any of their holders, newest last.
    losses: Vec<Loss>,
    /// A restarted view leader grants no lock before this time: it remembers no holder, and
    /// one from before the restart keeps its place until its lock lease would have run out.
    grants_from_ms: u64,
    /// Whether this view leader ran before (a later generation, or epochs used before): until
    /// it learns a settled view from its servers, it cannot tell what a view may be missing.
    restarted: bool,
}

impl State {
    /// The state of a view leader's first start: generation 0, no epoch used yet.
    pub fn new(config: StateConfig) -> Self {
        Self::restarted(config, 0, 0)
    }

    /// The state of a view leader at restart `generation` (one more than the last start's),
    /// whose earlier starts used no epoch above `epoch_floor`: every fencing token it grants is
    /// above every token of earlier generations, and every epoch it names is new.
    pub fn restarted(config: StateConfig, generation: u64, epoch_floor: Epoch) -> Self {
        assert!(
            generation < 1 << (64 - TOKEN_COUNTER_BITS),
            "generation {generation} leaves no room for tokens"
        );
        Self {
            epoch: epoch_floor,
            members: BTreeMap::new(),
            expired: BoundedMap::new(EXPIRED_IDS_MAX),
            locks: BTreeMap::new(),
            last_token: generation << TOKEN_COUNTER_BITS,
            last_sweep_ms: None,
            settled_epoch: 0,
            settled_servers: Vec::new(),
            changed_ms: 0,
            losses: Vec::new(),
            // Generation 1 is the first start ever (0: no data directory): nobody held anything.
            restarted: generation > 1 || epoch_floor > 0,
            grants_from_ms: if generation > 1 {
                config.lock_lease_ms
            } else {
                0
            },
            config,
        }
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The current view: live servers sorted by id, and whether any has yet to report the epoch.
    pub fn view(&self) -> View {
        View {
            epoch: self.epoch,
            servers: self.servers(),
            // An empty view is not waiting for anyone; it is just unsettled.
            rebalancing: self.settled_epoch != self.epoch && !self.members.is_empty(),
            settled_epoch: self.settled_epoch,
            settled_servers: self.settled_servers.clone(),
            losses: self.losses.clone(),
        }
    }

    fn servers(&self) -> Vec<ServerInfo> {
        self.members
            .iter()
            .map(|(id, m)| ServerInfo {
                id: id.clone(),
                addr: m.addr.clone(),
            })
            .collect()
    }

    fn is_rebalancing(&self) -> bool {
        self.members
            .values()
            .any(|m| m.rebalanced_epoch < self.epoch)
    }

    /// Applies one command that happened at `now_ms` (a monotonic clock in milliseconds).
    pub fn apply(&mut self, command: Command, now_ms: u64) -> Result<Outcome> {
        let epoch_before = self.epoch;
        let reply = self.apply_command(command, now_ms);
        if self.epoch != epoch_before {
            self.changed_ms = now_ms;
        }
        self.settle(now_ms);
        match reply {
            // A sweep answers with the view as it is after the settling above.
            Ok(Outcome::View(_)) => Ok(Outcome::View(self.view())),
            other => other,
        }
    }

    /// Declares the current view settled if every member rebalanced for it and no range of the
    /// last settled view lost all its holders, or if one did and the membership has been still
    /// for a lease since (the loss is then recorded). See the module docs.
    fn settle(&mut self, now_ms: u64) {
        if self.settled_epoch == self.epoch || self.members.is_empty() || self.is_rebalancing() {
            return;
        }
        let alive = |id: &ServerId| {
            self.members.contains_key(id)
                || self.members.values().any(|m| m.former_ids.contains(id))
        };
        // Every settled server still here (the usual view change): no range can be short, and
        // the ring need not be built.
        if self.settled_servers.iter().all(|s| alive(&s.id)) && !self.settled_servers.is_empty() {
            self.settled_epoch = self.epoch;
            self.settled_servers = self.servers();
            return;
        }
        let settled_ring = Ring::of_servers(&self.settled_servers);
        let still_ms = now_ms.saturating_sub(self.changed_ms);
        let return_wait_ms = self.config.lease_ms.saturating_mul(RETURN_WAIT_LEASES);
        // A restarted view leader that has heard of no settled view yet may be missing anything.
        let blind = self.restarted && self.settled_servers.is_empty();
        if still_ms <= return_wait_ms && (blind || settled_ring.has_range_missing_a_majority(alive))
        {
            return;
        }
        if settled_ring.has_range_without(alive) {
            let survivors = self
                .settled_servers
                .iter()
                .map(|s| s.id.clone())
                .filter(|id| alive(id))
                .collect();
            if self.losses.len() >= LOSSES_MAX {
                self.losses.remove(0);
            }
            self.losses.push(Loss {
                epoch: self.epoch,
                settled_servers: self.settled_servers.clone(),
                survivors,
            });
        }
        self.settled_epoch = self.epoch;
        self.settled_servers = self.servers();
    }

    /// The ranges recorded as settled without their holders, newest last.
    pub fn losses(&self) -> &[Loss] {
        &self.losses
    }

    /// Moves to the next epoch. Epochs from outside are refused above [`crate::types::EPOCH_MAX`]
    /// and each view change adds one, so only a bug could make this overflow.
    fn next_epoch(&mut self) {
        self.epoch = self
            .epoch
            .checked_add(1)
            .unwrap_or_else(|| panic!("epoch {} cannot grow: EPOCH_MAX was bypassed", self.epoch));
    }

    fn apply_command(&mut self, command: Command, now_ms: u64) -> Result<Outcome> {
        match command {
            Command::Heartbeat {
                server_id,
                addr,
                epoch_seen,
                rebalanced_epoch,
                settled_epoch,
                settled_servers,
                former_ids,
            } => self
                .heartbeat(
                    Beat {
                        server_id,
                        addr,
                        epoch_seen,
                        rebalanced_epoch,
                        settled_epoch,
                        settled_servers,
                        former_ids,
                    },
                    now_ms,
                )
                .map(Outcome::Heartbeat),
            Command::Leave { server_id } => {
                if let Some(member) = self.members.remove(&server_id) {
                    self.forget_id(server_id);
                    self.next_epoch();
                    self.release_places_of(&[member.addr], now_ms);
                }
                Ok(Outcome::Left { epoch: self.epoch })
            }
            Command::LockGet { lock, requester } => {
                self.lock_get(lock, requester, now_ms).map(Outcome::Lock)
            }
            Command::LockRelease { lock, requester } => {
                check_name("lock", &lock)?;
                check_name("requester", &requester)?;
                Ok(Outcome::Lock(self.lock_release(&lock, &requester, now_ms)))
            }
            Command::Expire => {
                self.expire(now_ms);
                Ok(Outcome::View(self.view()))
            }
        }
    }

    fn heartbeat(&mut self, beat: Beat, now_ms: u64) -> Result<HeartbeatReply> {
        beat.check()?;
        let Beat {
            server_id,
            addr,
            epoch_seen,
            rebalanced_epoch,
            settled_epoch,
            settled_servers,
            former_ids,
        } = beat;
        // A restarted view leader catches up with the epochs its servers have seen, and with
        // the last settled view they hold (an epoch is settled at most once, so the newest
        // reported is the last one).
        self.epoch = self.epoch.max(epoch_seen).max(rebalanced_epoch);
        if settled_epoch > self.settled_epoch && settled_epoch <= self.epoch {
            self.settled_epoch = settled_epoch;
            self.settled_servers = settled_servers;
        }
        if self.expired.contains_key(&server_id) {
            return Ok(HeartbeatReply::Denied { epoch: self.epoch });
        }
        if let Some(member) = self.members.get_mut(&server_id) {
            member.last_heartbeat_ms = now_ms;
            member.rebalanced_epoch = member.rebalanced_epoch.max(rebalanced_epoch);
            member.former_ids = former_ids;
            return Ok(HeartbeatReply::Accepted { epoch: self.epoch });
        }
        if let Some((holder, _)) = self.members.iter().find(|(_, m)| m.addr == addr) {
            return Ok(HeartbeatReply::Retry {
                epoch: self.epoch,
                holder: holder.clone(),
            });
        }
        self.next_epoch();
        self.members.insert(
            server_id,
            Member {
                addr,
                last_heartbeat_ms: now_ms,
                rebalanced_epoch,
                former_ids,
            },
        );
        Ok(HeartbeatReply::Accepted { epoch: self.epoch })
    }

    fn expire(&mut self, now_ms: u64) {
        let stalled = self
            .last_sweep_ms
            .is_some_and(|last| now_ms.saturating_sub(last) > self.config.stall_ms);
        self.last_sweep_ms = Some(now_ms);
        if stalled {
            // Our own hiccup: nobody could be heard while we were not listening.
            for member in self.members.values_mut() {
                member.last_heartbeat_ms = member.last_heartbeat_ms.max(now_ms);
            }
            for queue in self.locks.values_mut() {
                for place in queue.places.iter_mut() {
                    place.touched_ms = place.touched_ms.max(now_ms);
                }
            }
            return;
        }
        let lease_ms = self.config.lease_ms;
        let gone: Vec<ServerId> = self
            .members
            .iter()
            .filter(|(_, m)| now_ms.saturating_sub(m.last_heartbeat_ms) > lease_ms)
            .map(|(id, _)| id.clone())
            .collect();
        if !gone.is_empty() {
            let mut gone_addrs = Vec::with_capacity(gone.len());
            for id in gone {
                if let Some(member) = self.members.remove(&id) {
                    gone_addrs.push(member.addr);
                }
                self.forget_id(id);
            }
            self.next_epoch();
            self.release_places_of(&gone_addrs, now_ms);
        }
        self.lapse_lock_places(now_ms);
    }

    fn forget_id(&mut self, id: ServerId) {
        self.expired.insert(id, ());
    }

    /// Whether `requester` names a live server: `:PORT` of, or exactly, a member's address.
    fn names_live_server(&self, requester: &str) -> bool {
        self.members
            .values()
            .any(|m| names_addr(requester, &m.addr))
    }

    /// Drops the lock places of requesters that name one of these departed servers (and no
    /// live one: `:PORT` is ambiguous when two hosts use the same port).
    fn release_places_of(&mut self, gone_addrs: &[String], now_ms: u64) {
        let doomed: Vec<(String, String)> = self
            .locks
            .iter()
            .flat_map(|(lock, queue)| queue.places.iter().map(move |p| (lock, &p.requester)))
            .filter(|(_, requester)| gone_addrs.iter().any(|addr| names_addr(requester, addr)))
            .filter(|(_, requester)| !self.names_live_server(requester))
            .map(|(lock, requester)| (lock.clone(), requester.clone()))
            .collect();
        for (lock, requester) in doomed {
            self.lock_release(&lock, &requester, now_ms);
        }
    }

    fn lapse_lock_places(&mut self, now_ms: u64) {
        let lease = self.config.lock_lease_ms;
        let lock_names: Vec<String> = self.locks.keys().cloned().collect();
        for lock in lock_names {
            let lapsed: Vec<String> = self.locks[&lock]
                .places
                .iter()
                .filter(|p| !self.names_live_server(&p.requester))
                .filter(|p| now_ms.saturating_sub(p.touched_ms) > lease)
                .map(|p| p.requester.clone())
                .collect();
            for requester in lapsed {
                self.lock_release(&lock, &requester, now_ms);
            }
        }
    }

    fn lock_get(&mut self, lock: String, requester: String, now_ms: u64) -> Result<LockReply> {
        check_name("lock", &lock)?;
        check_name("requester", &requester)?;
        if now_ms < self.grants_from_ms {
            return Ok(LockReply::Recovering {
                wait_ms: self.grants_from_ms - now_ms,
            });
        }
        if !self.locks.contains_key(&lock) && self.locks.len() >= LOCKS_MAX {
            return Err(errinput!("too many locks in use (limit {LOCKS_MAX})"));
        }
        if let Some(queue) = self.locks.get_mut(&lock) {
            if let Some(position) = queue.places.iter().position(|p| p.requester == requester) {
                queue.places[position].touched_ms = now_ms;
                return Ok(if position == 0 {
                    LockReply::Granted { token: queue.token }
                } else {
                    LockReply::Retry {
                        holder: queue.places[0].requester.clone(),
                        position,
                    }
                });
            }
            if !queue.places.is_empty() {
                if queue.places.len() >= LOCK_QUEUE_MAX {
                    return Err(errinput!(
                        "lock {lock:?} has too many waiters (limit {LOCK_QUEUE_MAX})"
                    ));
                }
                let ahead: Vec<String> = queue.places.iter().map(|p| p.requester.clone()).collect();
                if let Some(cycle) = self.cycle_through(&requester, &ahead) {
                    return Ok(LockReply::Deadlock { cycle });
                }
                let queue = self.locks.entry(lock).or_default();
                queue.places.push_back(Place {
                    requester,
                    touched_ms: now_ms,
                });
                let position = queue.places.len() - 1;
                return Ok(LockReply::Retry {
                    holder: queue.places[0].requester.clone(),
                    position,
                });
            }
        }
        let token = self.next_token()?;
        let queue = self.locks.entry(lock).or_default();
        queue.token = token;
        queue.places.push_back(Place {
            requester,
            touched_ms: now_ms,
        });
        Ok(LockReply::Granted { token })
    }

    /// Removes `requester` from `lock`'s queue; a new head is granted the lock with a new token.
    fn lock_release(&mut self, lock: &str, requester: &str, now_ms: u64) -> LockReply {
        let Some(queue) = self.locks.get_mut(lock) else {
            return LockReply::Unknown;
        };
        let Some(position) = queue.places.iter().position(|p| p.requester == requester) else {
            return LockReply::Unknown;
        };
        queue.places.remove(position);
        let new_holder = position == 0 && !queue.places.is_empty();
        if new_holder {
            // The new holder's lease starts at its grant, not at its last poll.
            if let Some(head) = queue.places.front_mut() {
                head.touched_ms = now_ms;
            }
        }
        let empty = queue.places.is_empty();
        if empty {
            self.locks.remove(lock);
        } else if new_holder {
            match self.next_token() {
                Ok(token) => {
                    if let Some(queue) = self.locks.get_mut(lock) {
                        queue.token = token;
                    }
                }
                // This generation has no token left: nobody may hold the lock without a fresh
                // one, so the waiters lose their places and must ask again after a restart.
                Err(_) => {
                    self.locks.remove(lock);
                }
            }
        }
        LockReply::Released
    }

    /// The next fencing token: one above the last, within this restart generation.
    fn next_token(&mut self) -> Result<FencingToken> {
        let counter_mask = (1u64 << TOKEN_COUNTER_BITS) - 1;
        if self.last_token & counter_mask == counter_mask {
            return Err(Error::Refused(format!(
                "this view leader granted all {counter_mask} tokens of its generation; restart it"
            )));
        }
        self.last_token = self
            .last_token
            .checked_add(1)
            .ok_or_else(|| Error::Internal("fencing tokens exhausted".into()))?;
        Ok(self.last_token)
    }

    /// If `requester` waited behind `ahead`, would it wait on itself? Returns the cycle
    /// (requester first) when it would. Requester X waits on every Y ahead of it in any queue.
    fn cycle_through(&self, requester: &str, ahead: &[String]) -> Option<Vec<String>> {
        let mut waits_on: HashMap<&str, Vec<&str>> = HashMap::new();
        for queue in self.locks.values() {
            for (i, place) in queue.places.iter().enumerate() {
                let entry = waits_on.entry(place.requester.as_str()).or_default();
                entry.extend(queue.places.iter().take(i).map(|p| p.requester.as_str()));
            }
        }
        // Depth-first search from the ones the requester would wait on, back to the requester.
        let mut parent: HashMap<&str, &str> = HashMap::new();
        let mut stack: Vec<&str> = Vec::new();
        for first in ahead {
            if first == requester {
                return Some(vec![requester.to_string(), requester.to_string()]);
            }
            if !parent.contains_key(first.as_str()) {
                parent.insert(first.as_str(), requester);
                stack.push(first.as_str());
            }
        }
        while let Some(node) = stack.pop() {
            for &next in waits_on.get(node).map(Vec::as_slice).unwrap_or(&[]) {
                if next == requester {
                    let mut cycle = vec![node.to_string()];
                    let mut at = node;
                    while let Some(&up) = parent.get(at) {
                        cycle.push(up.to_string());
                        if up == requester {
                            break;
                        }
                        at = up;
                    }
                    cycle.reverse();
                    cycle.push(requester.to_string());
                    return Some(cycle);
                }
                if !parent.contains_key(next) {
                    parent.insert(next, node);
                    stack.push(next);
                }
            }
        }
        None
    }
}

/// A heartbeat's fields, checked before they touch the state.
struct Beat {
    server_id: ServerId,
    addr: String,
    epoch_seen: Epoch,
    rebalanced_epoch: Epoch,
    settled_epoch: Epoch,
    settled_servers: Vec<ServerInfo>,
    former_ids: Vec<ServerId>,
}

impl Beat {
    fn check(&self) -> Result<()> {
        check_server_field("server id", &self.server_id)?;
        check_server_field("server address", &self.addr)?;
        check_epoch(self.epoch_seen)?;
        check_epoch(self.rebalanced_epoch)?;
        check_epoch(self.settled_epoch)?;
        if self.settled_servers.len() > SETTLED_SERVERS_MAX {
            return Err(errinput!(
                "a settled view of {} servers (limit {SETTLED_SERVERS_MAX})",
                self.settled_servers.len()
            ));
        }
        for server in &self.settled_servers {
            check_server_field("server id", &server.id)?;
            check_server_field("server address", &server.addr)?;
        }
        if self.former_ids.len() > FORMER_IDS_MAX {
            return Err(errinput!(
                "{} former ids (limit {FORMER_IDS_MAX})",
                self.former_ids.len()
            ));
        }
        for id in &self.former_ids {
            check_server_field("former id", id)?;
        }
        Ok(())
    }
}

fn check_server_field(what: &str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > SERVER_FIELD_BYTES_MAX {
        return Err(errinput!(
            "{what} must be 1 to {SERVER_FIELD_BYTES_MAX} bytes, got {}",
            value.len()
        ));
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() || name.len() > LOCK_NAME_BYTES_MAX {
        return Err(errinput!(
            "{what} name must be 1 to {LOCK_NAME_BYTES_MAX} bytes, got {}",
            name.len()
        ));
    }
    Ok(())
}

/// Whether `requester` (`:PORT` or `HOST:PORT`) names the server at `addr`.
fn names_addr(requester: &str, addr: &str) -> bool {
    if requester == addr {
        return true;
    }
    match (requester.strip_prefix(':'), addr.rsplit_once(':')) {
        (Some(port), Some((_, addr_port))) => port == addr_port,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
