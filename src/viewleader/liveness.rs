//! Which servers the leader has heard from lately. Heartbeats are not logged (one every
//! half-second per server would fill the Raft log with nothing); the leader alone tracks them
//! and logs an expiry when a lease lapses.
//!
//! A member's lease is counted on the leader's own monotonic clock from its last heartbeat; a
//! member the leader has not heard from yet (every member, for a new leader; one whose join is
//! still being logged) counts from the first sweep that sees it, so it gets a full lease. A sweep that comes far later than the one before means the
//! leader itself stalled (paused, or its timer ran behind): nobody could be heard meanwhile, so
//! every lease starts over instead of the whole cluster being expired for the leader's hiccup.
//!
//! Pure: the shell passes the time in. The map is pruned at every sweep to the members and to
//! ids heard within a lease; [`TRACKED_IDS_MAX`] bounds a flood of ids between sweeps.

use std::collections::HashMap;

use crate::types::ServerId;

/// Ids tracked at once.
pub const TRACKED_IDS_MAX: usize = 100_000;

/// The leader's record of heartbeats.
#[derive(Debug)]
pub struct Liveness {
    lease_ms: u64,
    stall_ms: u64,
    /// Last heartbeat per server id, on the leader's clock.
    heard_ms: HashMap<ServerId, u64>,
    last_sweep_ms: Option<u64>,
}

/// What a sweep found.
#[derive(Debug, PartialEq, Eq)]
pub struct Sweep {
    /// Members whose lease ran out.
    pub gone: Vec<ServerId>,
    /// The leader stalled since the last sweep: every lease restarted, and lock places should
    /// be refreshed too.
    pub stalled: bool,
}

impl Liveness {
    /// Liveness for a member that just became leader: it has heard nobody yet.
    pub fn new(lease_ms: u64, stall_ms: u64) -> Self {
        Self {
            lease_ms,
            stall_ms,
            heard_ms: HashMap::new(),
            last_sweep_ms: None,
        }
    }

    /// A heartbeat from `id` arrived at `now_ms`.
    pub fn heard(&mut self, id: &ServerId, now_ms: u64) {
        if let Some(heard) = self.heard_ms.get_mut(id) {
            *heard = (*heard).max(now_ms);
        } else if self.heard_ms.len() < TRACKED_IDS_MAX {
            self.heard_ms.insert(id.clone(), now_ms);
        }
    }

    /// The sweep at `now_ms` over the current `members`: who lapsed, and whether we stalled.
    pub fn sweep(&mut self, members: &[ServerId], now_ms: u64) -> Sweep {
        let stalled = self
            .last_sweep_ms
            .is_some_and(|last| now_ms.saturating_sub(last) > self.stall_ms);
        self.last_sweep_ms = Some(now_ms);
        if stalled {
            for heard in self.heard_ms.values_mut() {
                *heard = (*heard).max(now_ms);
            }
        }
        // Beats from ids that are not members (yet) are kept for a lease: a join may still be
        // on its way through the log.
        let lease_ms = self.lease_ms;
        self.heard_ms
            .retain(|id, heard| members.contains(id) || now_ms.saturating_sub(*heard) <= lease_ms);
        let mut gone = Vec::new();
        for id in members {
            if !self.heard_ms.contains_key(id) && self.heard_ms.len() >= TRACKED_IDS_MAX {
                continue;
            }
            let heard = *self.heard_ms.entry(id.clone()).or_insert(now_ms);
            if now_ms.saturating_sub(heard) > lease_ms {
                gone.push(id.clone());
            }
        }
        Sweep { gone, stalled }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(names: &[&str]) -> Vec<ServerId> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn a_new_leader_gives_every_member_a_full_lease() {
        let mut live = Liveness::new(1_000, 5_000);
        let members = ids(&["a", "b"]);
        assert!(live.sweep(&members, 10_000).gone.is_empty());
        assert!(live.sweep(&members, 10_900).gone.is_empty());
        assert!(live.sweep(&members, 11_000).gone.is_empty());
        assert_eq!(live.sweep(&members, 11_001).gone, members);
    }

    #[test]
    fn a_member_lapses_only_after_a_lease_without_heartbeat() {
        let mut live = Liveness::new(1_000, 5_000);
        let members = ids(&["a", "b"]);
        live.heard(&members[0], 900);
        live.heard(&members[1], 500);
        assert!(live.sweep(&members, 1_500).gone.is_empty());
        assert_eq!(live.sweep(&members, 1_501).gone, ids(&["b"]));
        assert_eq!(live.sweep(&members, 1_901).gone, members);
    }

    #[test]
    fn a_stall_of_the_leader_restarts_every_lease_instead_of_expiring() {
        let mut live = Liveness::new(1_000, 500);
        let members = ids(&["a"]);
        live.heard(&members[0], 0);
        assert!(!live.sweep(&members, 100).stalled);
        let sweep = live.sweep(&members, 10_000);
        assert_eq!(
            sweep,
            Sweep {
                gone: vec![],
                stalled: true
            }
        );
        assert!(live.sweep(&members, 10_400).gone.is_empty());
        assert!(!live.sweep(&members, 10_900).stalled);
        assert_eq!(live.sweep(&members, 11_001).gone, members);
    }

    #[test]
    fn a_beat_before_its_join_is_applied_counts_and_strangers_are_forgotten_after_a_lease() {
        let mut live = Liveness::new(1_000, 5_000);
        live.heard(&"joining".to_string(), 0);
        live.heard(&"stranger".to_string(), 0);
        assert!(live.sweep(&[], 500).gone.is_empty());
        let members = ids(&["joining"]);
        assert!(live.sweep(&members, 900).gone.is_empty());
        assert_eq!(live.sweep(&members, 1_001).gone, members);
        assert!(!live.heard_ms.contains_key("stranger"));
    }
}
