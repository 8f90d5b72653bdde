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
//! * A restart: heartbeats carry the highest epoch their server has seen, and the epoch is raised
//!   to it, so a restarted view leader never hands out an epoch lower than one already used.
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
use crate::error::Result;
use crate::types::{Epoch, FencingToken, HeartbeatReply, LockReply, ServerId, ServerInfo, View};

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
}

impl State {
    pub fn new(config: StateConfig) -> Self {
        Self {
            config,
            epoch: 0,
            members: BTreeMap::new(),
            expired: BoundedMap::new(EXPIRED_IDS_MAX),
            locks: BTreeMap::new(),
            last_token: 0,
            last_sweep_ms: None,
            settled_epoch: 0,
            settled_servers: Vec::new(),
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
            rebalancing: self.is_rebalancing(),
            settled_epoch: self.settled_epoch,
            settled_servers: self.settled_servers.clone(),
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
        let reply = self.apply_command(command, now_ms);
        if !self.is_rebalancing() && self.settled_epoch != self.epoch {
            self.settled_epoch = self.epoch;
            self.settled_servers = self.servers();
        }
        match reply {
            // A sweep answers with the view as it is after the settling above.
            Ok(Outcome::View(_)) => Ok(Outcome::View(self.view())),
            other => other,
        }
    }

    fn apply_command(&mut self, command: Command, now_ms: u64) -> Result<Outcome> {
        match command {
            Command::Heartbeat {
                server_id,
                addr,
                epoch_seen,
                rebalanced_epoch,
            } => self
                .heartbeat(server_id, addr, epoch_seen, rebalanced_epoch, now_ms)
                .map(Outcome::Heartbeat),
            Command::Leave { server_id } => {
                if let Some(member) = self.members.remove(&server_id) {
                    self.forget_id(server_id);
                    self.epoch += 1;
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

    fn heartbeat(
        &mut self,
        server_id: ServerId,
        addr: String,
        epoch_seen: Epoch,
        rebalanced_epoch: Epoch,
        now_ms: u64,
    ) -> Result<HeartbeatReply> {
        if server_id.is_empty() || server_id.len() > SERVER_FIELD_BYTES_MAX {
            return Err(errinput!(
                "server id must be 1 to {SERVER_FIELD_BYTES_MAX} bytes"
            ));
        }
        if addr.is_empty() || addr.len() > SERVER_FIELD_BYTES_MAX {
            return Err(errinput!(
                "server address must be 1 to {SERVER_FIELD_BYTES_MAX} bytes"
            ));
        }
        // A restarted view leader catches up with the epochs its servers have seen.
        self.epoch = self.epoch.max(epoch_seen).max(rebalanced_epoch);
        if self.expired.contains_key(&server_id) {
            return Ok(HeartbeatReply::Denied { epoch: self.epoch });
        }
        if let Some(member) = self.members.get_mut(&server_id) {
            member.last_heartbeat_ms = now_ms;
            member.rebalanced_epoch = member.rebalanced_epoch.max(rebalanced_epoch);
            return Ok(HeartbeatReply::Accepted { epoch: self.epoch });
        }
        if let Some((holder, _)) = self.members.iter().find(|(_, m)| m.addr == addr) {
            return Ok(HeartbeatReply::Retry {
                epoch: self.epoch,
                holder: holder.clone(),
            });
        }
        self.epoch += 1;
        self.members.insert(
            server_id,
            Member {
                addr,
                last_heartbeat_ms: now_ms,
                rebalanced_epoch,
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
            self.epoch += 1;
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
        self.last_token += 1;
        let token = self.last_token;
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
        if position == 0 {
            if let Some(head) = queue.places.front_mut() {
                self.last_token += 1;
                queue.token = self.last_token;
                // The new holder's lease starts at its grant, not at its last poll.
                head.touched_ms = now_ms;
            }
        }
        if queue.places.is_empty() {
            self.locks.remove(lock);
        }
        LockReply::Released
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
