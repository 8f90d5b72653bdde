//! The view leader's state machine: membership, epochs and the lock service.
//!
//! Everything that changes the state is a [`Command`] applied with the time it happened at
//! ([`State::apply`]); nothing here reads a clock, opens a socket or draws a random number. The
//! same commands at the same times always give the same state and replies, which is what lets a
//! log of commands be replicated (Raft) and lets the tests drive time by hand.
//!
//! # Membership
//! A server joins with its first heartbeat; the epoch goes up by one. Heartbeats that change
//! nothing are not commands: the leader tracks them ([`super::liveness`]) and, when a server's
//! lease lapses, logs a [`Command::Expire`] naming it; however many expire in one sweep the
//! epoch goes up once. An expired id is remembered and denied if it beats again: the server must
//! rejoin under a new id, so that a node that was cut off can never be mistaken for one that
//! kept up. A live id holds its address: a second id beating from the same address is told to
//! retry until the first expires.
//!
//! # Time
//! Every command carries the leader's clock; applying one never lets time go backwards (a new
//! leader whose clock is behind acts at the latest time already applied), and lock leases are
//! judged against it. A new leader, or one that stalled, logs [`Command::Refresh`]: nobody could
//! renew a lock place meanwhile, so every place starts a full lease. Heartbeats carry the
//! highest epoch their server has seen, and the epoch is raised to that too: a view leader that
//! lost its log (`--in-memory`, restarted) never names a second view with an epoch already used.
//! They also carry the last settled view their server holds, which such a view leader adopts.
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
//! * Durability and replication: this is the state machine; [`super::raft`] logs its commands,
//!   replicates them and snapshots the state.
//! * Who sends a command: the hello authenticates a caller as a member or a client
//!   (`crate::rpc::handshake`), and only members may send heartbeats and leaves, but members
//!   share one key, so a member could name another server's id; the state only insists that a
//!   live id keeps its address. A lock requester is whatever string it sends.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::bounded::BoundedMap;
use crate::errinput;
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::types::{
    check_epoch, Epoch, FencingToken, Heartbeat, HeartbeatReply, LockReply, Loss, ServerId,
    ServerInfo, View, FORMER_IDS_MAX, LOSSES_MAX,
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
/// The highest epoch a state may hold (see [`State::check`]): twice the highest epoch a
/// heartbeat may carry.
pub const STATE_EPOCH_MAX: Epoch = crate::types::EPOCH_MAX.saturating_mul(2);
/// Leases the view leader waits, after the membership last changed, before it settles a view
/// in which some range is missing a majority of its settled replicas: a write acknowledged by a
/// majority may be held only by them, and servers that were cut off (not dead) come back within
/// that. Three leases stay well inside the servers' bound on a rebalance.
pub const RETURN_WAIT_LEASES: u64 = 3;

/// The state machine's timing rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateConfig {
    /// A server unheard from for longer is expired.
    pub lease_ms: u64,
    /// A non-server lock requester unheard from for longer loses its place.
    pub lock_lease_ms: u64,
}

/// Everything that changes the state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A newtype variant encodes as the struct variant it replaced did, so logs written before
    /// read the same.
    Heartbeat(Heartbeat),
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
    /// The leader's sweep: expire these servers (the leader decides who, from heartbeats it
    /// does not log) and every lock place whose lease ran out by the command's time. Also how a
    /// settle that waited for time to pass happens.
    Expire {
        servers: Vec<ServerId>,
    },
    /// Every lock place starts a full lease now: a new leader, or one that stalled, heard
    /// nobody's renewals meanwhile.
    Refresh,
    /// The timing rules every member applies from here on: the leader logs its own when they
    /// differ from the state's, so that members started with other flags still agree.
    Configure(StateConfig),
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
    /// The latest time any command carried: a command stamped earlier (a new leader whose clock
    /// is behind) is applied at this time instead, so time never goes backwards.
    now_ms: u64,
    /// The last view in which nobody was rebalancing.
    settled_epoch: Epoch,
    settled_servers: Vec<ServerInfo>,
    /// When the membership last changed: a view missing the holders of some range settles
    /// only a lease after it.
    changed_ms: u64,
    /// Ranges settled without any of their holders, newest last.
    losses: Vec<Loss>,
}

impl State {
    /// The state of a new view leader: no epoch used yet, no lock granted.
    pub fn new(config: StateConfig) -> Self {
        Self {
            epoch: 0,
            members: BTreeMap::new(),
            expired: BoundedMap::new(EXPIRED_IDS_MAX),
            locks: BTreeMap::new(),
            last_token: 0,
            now_ms: 0,
            settled_epoch: 0,
            settled_servers: Vec::new(),
            changed_ms: 0,
            losses: Vec::new(),
            config,
        }
    }

    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The address of the live server `id`, if it is one: what the state machine's shell names
    /// when it logs who joined, left or expired (a read; applying stays free of logging).
    pub fn member_addr(&self, id: &str) -> Option<&str> {
        self.members.get(id).map(|member| member.addr.as_str())
    }

    /// The timing rules in force.
    pub fn config(&self) -> &StateConfig {
        &self.config
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

    /// The latest time a command carried (see [`State::apply`]).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The current members' ids.
    pub fn member_ids(&self) -> Vec<ServerId> {
        self.members.keys().cloned().collect()
    }

    /// Applies one command stamped `at_ms` (the leader's clock, in milliseconds). A stamp
    /// earlier than one applied before counts as that one: time only moves forward.
    pub fn apply(&mut self, command: Command, at_ms: u64) -> Result<Outcome> {
        let now_ms = at_ms.max(self.now_ms);
        self.now_ms = now_ms;
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
        match self.settle_decision(now_ms) {
            Settle::Not => {}
            Settle::Now => {
                self.settled_epoch = self.epoch;
                self.settled_servers = self.servers();
            }
            Settle::WithLoss(loss) => {
                if self.losses.len() >= LOSSES_MAX {
                    self.losses.remove(0);
                }
                self.losses.push(loss);
                self.settled_epoch = self.epoch;
                self.settled_servers = self.servers();
            }
        }
    }

    /// Whether the sweep of a leader at `now_ms` has anything to do: servers to expire, lock
    /// places that lapsed, or a view that may settle now that time has passed. The leader logs
    /// an [`Command::Expire`] only then.
    pub fn sweep_due(&self, now_ms: u64, gone: &[ServerId]) -> bool {
        let now_ms = now_ms.max(self.now_ms);
        gone.iter().any(|id| self.members.contains_key(id))
            || !self.lapsed_places(now_ms).is_empty()
            || !matches!(self.settle_decision(now_ms), Settle::Not)
    }

    fn settle_decision(&self, now_ms: u64) -> Settle {
        if self.settled_epoch == self.epoch || self.members.is_empty() || self.is_rebalancing() {
            return Settle::Not;
        }
        let alive = |id: &ServerId| {
            self.members.contains_key(id)
                || self.members.values().any(|m| m.former_ids.contains(id))
        };
        // Every settled server still here (the usual view change): no range can be short, and
        // the ring need not be built.
        if self.settled_servers.iter().all(|s| alive(&s.id)) && !self.settled_servers.is_empty() {
            return Settle::Now;
        }
        let settled_ring = Ring::of_servers(&self.settled_servers);
        let still_ms = now_ms.saturating_sub(self.changed_ms);
        let return_wait_ms = self.config.lease_ms.saturating_mul(RETURN_WAIT_LEASES);
        if still_ms <= return_wait_ms && settled_ring.has_range_missing_a_majority(alive) {
            return Settle::Not;
        }
        if settled_ring.has_range_without(alive) {
            let survivors = self
                .settled_servers
                .iter()
                .map(|s| s.id.clone())
                .filter(|id| alive(id))
                .collect();
            return Settle::WithLoss(Loss {
                epoch: self.epoch,
                settled_servers: self.settled_servers.clone(),
                survivors,
            });
        }
        Settle::Now
    }

    /// Refuses a state that commands could not have made (a damaged snapshot, or a leader's
    /// snapshot of anything): heartbeats raise the epoch at most to
    /// [`crate::types::EPOCH_MAX`] and each view change adds one, so a real state's epochs stay
    /// below [`STATE_EPOCH_MAX`] for 2^62 more view changes, and moving to the next epoch never
    /// overflows.
    pub fn check(&self) -> Result<()> {
        for (what, epoch) in [("epoch", self.epoch), ("settled epoch", self.settled_epoch)] {
            if epoch > STATE_EPOCH_MAX {
                return Err(errinput!(
                    "the state's {what} {epoch} is above {STATE_EPOCH_MAX}, which no run of \
                     commands reaches"
                ));
            }
        }
        Ok(())
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
            Command::Heartbeat(beat) => self.heartbeat(beat).map(Outcome::Heartbeat),
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
            Command::Expire { servers } => {
                self.expire(&servers, now_ms);
                Ok(Outcome::View(self.view()))
            }
            Command::Configure(config) => {
                self.config = config;
                Ok(Outcome::View(self.view()))
            }
            Command::Refresh => {
                for queue in self.locks.values_mut() {
                    for place in queue.places.iter_mut() {
                        place.touched_ms = place.touched_ms.max(now_ms);
                    }
                }
                Ok(Outcome::View(self.view()))
            }
        }
    }

    fn heartbeat(&mut self, beat: Heartbeat) -> Result<HeartbeatReply> {
        check_beat(&beat)?;
        // One id, one address: a beat naming a live server at another address speaks for a
        // server it is not (or one that moved, which rejoins under a new id once its old one
        // expires). Refused before anything else, so it changes nothing.
        if let Some(member) = self.members.get(&beat.server_id) {
            if member.addr != beat.addr {
                return Err(errinput!(
                    "server {} is in the view at {}; a heartbeat naming it at {} is refused \
                     (one id, one address)",
                    beat.server_id,
                    member.addr,
                    beat.addr
                ));
            }
        }
        let Heartbeat {
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
                rebalanced_epoch,
                former_ids,
            },
        );
        Ok(HeartbeatReply::Accepted { epoch: self.epoch })
    }

    fn expire(&mut self, servers: &[ServerId], now_ms: u64) {
        let mut gone_addrs = Vec::new();
        for id in servers {
            if let Some(member) = self.members.remove(id) {
                gone_addrs.push(member.addr);
                self.forget_id(id.clone());
            }
        }
        if !gone_addrs.is_empty() {
            self.next_epoch();
            self.release_places_of(&gone_addrs, now_ms);
        }
        for (lock, requester) in self.lapsed_places(now_ms) {
            self.lock_release(&lock, &requester, now_ms);
        }
    }

    /// Whether a heartbeat naming `server_id` at `addr` may count as that server's proof of
    /// life: yes unless the id is a live server at another address (a beat the log refuses must
    /// not keep a dead server alive either).
    pub fn speaks_for(&self, server_id: &str, addr: &str) -> bool {
        self.members
            .get(server_id)
            .is_none_or(|member| member.addr == addr)
    }

    /// A heartbeat's answer when it would change nothing (the usual beat of a member that is
    /// up to date): the leader answers it without logging it. `None` means it must be logged.
    pub fn quiet_heartbeat(&self, beat: &Command) -> Option<HeartbeatReply> {
        let Command::Heartbeat(Heartbeat {
            server_id,
            addr,
            epoch_seen,
            rebalanced_epoch,
            settled_epoch,
            former_ids,
            ..
        }) = beat
        else {
            return None;
        };
        let catches_up = (*epoch_seen).max(*rebalanced_epoch) > self.epoch
            || (*settled_epoch > self.settled_epoch && *settled_epoch <= self.epoch);
        if catches_up {
            return None;
        }
        if self.expired.contains_key(server_id) {
            return Some(HeartbeatReply::Denied { epoch: self.epoch });
        }
        match self.members.get(server_id) {
            // A beat from another address goes to the log, which refuses it with the reason.
            Some(member) => (*rebalanced_epoch <= member.rebalanced_epoch
                && member.former_ids == *former_ids
                && member.addr == *addr)
                .then_some(HeartbeatReply::Accepted { epoch: self.epoch }),
            None => None,
        }
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

    /// The places (lock, requester) of requesters that name no live server and were unheard
    /// from for longer than the lock lease at `now_ms`.
    fn lapsed_places(&self, now_ms: u64) -> Vec<(String, String)> {
        let lease = self.config.lock_lease_ms;
        self.locks
            .iter()
            .flat_map(|(lock, queue)| queue.places.iter().map(move |p| (lock, p)))
            .filter(|(_, p)| now_ms.saturating_sub(p.touched_ms) > lease)
            .filter(|(_, p)| !self.names_live_server(&p.requester))
            .map(|(lock, p)| (lock.clone(), p.requester.clone()))
            .collect()
    }

    fn lock_get(&mut self, lock: String, requester: String, now_ms: u64) -> Result<LockReply> {
        check_name("lock", &lock)?;
        check_name("requester", &requester)?;
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
                // The counter ran out (2^64 grants): nobody may hold the lock without a fresh
                // token, so the waiters lose their places.
                Err(_) => {
                    self.locks.remove(lock);
                }
            }
        }
        LockReply::Released
    }

    /// The next fencing token: one above the last. The counter is replicated and durable, so
    /// tokens grow across leader changes and restarts.
    fn next_token(&mut self) -> Result<FencingToken> {
        self.last_token = self
            .last_token
            .checked_add(1)
            .ok_or_else(|| Error::Refused("fencing tokens exhausted".into()))?;
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

/// What settling the current view would do now.
enum Settle {
    Not,
    Now,
    WithLoss(Loss),
}

/// Refuses a heartbeat whose fields are out of bounds, before it touches the state.
fn check_beat(beat: &Heartbeat) -> Result<()> {
    check_server_field("server id", &beat.server_id)?;
    check_server_field("server address", &beat.addr)?;
    check_epoch(beat.epoch_seen)?;
    check_epoch(beat.rebalanced_epoch)?;
    check_epoch(beat.settled_epoch)?;
    if beat.settled_servers.len() > SETTLED_SERVERS_MAX {
        return Err(errinput!(
            "a settled view of {} servers (limit {SETTLED_SERVERS_MAX})",
            beat.settled_servers.len()
        ));
    }
    for server in &beat.settled_servers {
        check_server_field("server id", &server.id)?;
        check_server_field("server address", &server.addr)?;
    }
    if beat.former_ids.len() > FORMER_IDS_MAX {
        return Err(errinput!(
            "{} former ids (limit {FORMER_IDS_MAX})",
            beat.former_ids.len()
        ));
    }
    for id in &beat.former_ids {
        check_server_field("former id", id)?;
    }
    Ok(())
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
