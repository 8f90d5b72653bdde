//! Unit tests of the view leader state machine, with explicit time.
//!
//! Every test drives [`State::apply`] with hand-picked times: no clock, no sleeps, no sockets.
//! Most go through [`Leader`], a model of the Raft leader around the state: it records
//! heartbeats in a [`Liveness`], answers the quiet ones without logging them, and logs an
//! [`Command::Expire`] naming the servers whose lease ran out only when [`State::sweep_due`]
//! says the sweep has work. On every heartbeat and sweep it also checks that skipping the log
//! was right: the quiet answer is the one applying the command would give, and a sweep is due
//! exactly when applying it would change the state. Time moves in sweeps of [`TICK`] ms.
use super::*;
use std::collections::HashSet;

use crate::error::Error;
use crate::viewleader::liveness::{Liveness, Sweep};

use proptest::prelude::*;

const LEASE: u64 = 2_000;
const LOCK_LEASE: u64 = 30_000;
const TICK: u64 = 100;
/// The leader's stall threshold in tests that do not mean to stall.
const NEVER_STALLS: u64 = u64::MAX;

const ADDR_A: &str = "127.0.0.1:5001";
const ADDR_B: &str = "127.0.0.1:5002";
const ADDR_C: &str = "127.0.0.1:5003";
const ADDR_D: &str = "127.0.0.1:5004";
const ADDR_E: &str = "127.0.0.1:5005";

fn config() -> StateConfig {
    StateConfig {
        lease_ms: LEASE,
        lock_lease_ms: LOCK_LEASE,
    }
}

fn state() -> State {
    State::new(config())
}

fn info(id: &str, addr: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        addr: addr.into(),
    }
}

fn heartbeat(
    id: &str,
    addr: &str,
    epoch_seen: Epoch,
    rebalanced_epoch: Epoch,
    settled: (Epoch, &[ServerInfo]),
    former_ids: &[&str],
) -> Command {
    Command::Heartbeat(Heartbeat {
        server_id: id.into(),
        addr: addr.into(),
        epoch_seen,
        rebalanced_epoch,
        settled_epoch: settled.0,
        settled_servers: settled.1.to_vec(),
        former_ids: former_ids.iter().map(|f| f.to_string()).collect(),
    })
}

fn apply_heartbeat(s: &mut State, command: Command, now: u64) -> HeartbeatReply {
    match s.apply(command.clone(), now) {
        Ok(Outcome::Heartbeat(reply)) => reply,
        other => panic!("{command:?} at {now}: unexpected {other:?}"),
    }
}

fn expire(s: &mut State, servers: &[&str], now: u64) -> View {
    let servers = servers.iter().map(|id| id.to_string()).collect();
    match s.apply(Command::Expire { servers }, now) {
        Ok(Outcome::View(view)) => view,
        other => panic!("expiry at {now}: unexpected {other:?}"),
    }
}

fn lock_get(s: &mut State, lock: &str, requester: &str, now: u64) -> LockReply {
    let command = Command::LockGet {
        lock: lock.into(),
        requester: requester.into(),
    };
    match s.apply(command, now) {
        Ok(Outcome::Lock(reply)) => reply,
        other => panic!("lock_get({lock}, {requester}) at {now}: unexpected {other:?}"),
    }
}

fn lock_release(s: &mut State, lock: &str, requester: &str, now: u64) -> LockReply {
    let command = Command::LockRelease {
        lock: lock.into(),
        requester: requester.into(),
    };
    match s.apply(command, now) {
        Ok(Outcome::Lock(reply)) => reply,
        other => panic!("lock_release({lock}, {requester}) at {now}: unexpected {other:?}"),
    }
}

fn granted(reply: LockReply) -> FencingToken {
    match reply {
        LockReply::Granted { token } => token,
        other => panic!("expected a grant, got {other:?}"),
    }
}

/// The requesters queued on `lock`, holder first, read without renewing anyone.
fn places(s: &State, lock: &str) -> Vec<String> {
    s.locks
        .get(lock)
        .map(|queue| queue.places.iter().map(|p| p.requester.clone()).collect())
        .unwrap_or_default()
}

fn invalid(result: Result<Outcome>) -> bool {
    matches!(result, Err(Error::InvalidRequest(_)))
}

/// The Raft leader around the state, as `super::super::service` drives it.
struct Leader {
    state: State,
    liveness: Liveness,
}

impl Leader {
    fn new() -> Self {
        Self::stalling_after(NEVER_STALLS)
    }

    fn stalling_after(stall_ms: u64) -> Self {
        let config = config();
        Self {
            liveness: Liveness::new(config.lease_ms, stall_ms),
            state: State::new(config),
        }
    }

    fn epoch(&self) -> Epoch {
        self.state.epoch()
    }

    fn view(&self) -> View {
        self.state.view()
    }

    fn ids(&self) -> Vec<String> {
        self.view()
            .servers
            .into_iter()
            .map(|info| info.id)
            .collect()
    }

    /// Logs `command` at `now`.
    fn apply(&mut self, command: Command, now: u64) -> Result<Outcome> {
        self.state.apply(command, now)
    }

    /// A heartbeat as the leader takes it: recorded as heard, answered from the state when it
    /// would change nothing, logged otherwise.
    fn heartbeat(&mut self, command: Command, now: u64) -> HeartbeatReply {
        let Command::Heartbeat(Heartbeat { server_id, .. }) = &command else {
            panic!("not a heartbeat: {command:?}");
        };
        let id = server_id.clone();
        self.liveness.heard(&id, now);
        let mut logged = self.state.clone();
        let applied = apply_heartbeat(&mut logged, command.clone(), now);
        let Some(quiet) = self.state.quiet_heartbeat(&command) else {
            self.state = logged;
            return applied;
        };
        assert_eq!(
            quiet, applied,
            "the quiet answer to {id} at {now} is not the logged one"
        );
        let s = &self.state;
        assert_eq!(
            (
                &logged.epoch,
                &logged.members,
                &logged.expired,
                &logged.locks
            ),
            (&s.epoch, &s.members, &s.expired, &s.locks),
            "the quiet heartbeat of {id} at {now} would have changed the state"
        );
        if (logged.settled_epoch, &logged.settled_servers) != (s.settled_epoch, &s.settled_servers)
        {
            assert!(
                s.sweep_due(now, &[]),
                "a settle that only time allowed at {now} must be due for the next sweep"
            );
        }
        quiet
    }

    fn beat_with(
        &mut self,
        id: &str,
        addr: &str,
        epoch_seen: Epoch,
        rebalanced_epoch: Epoch,
        now: u64,
    ) -> HeartbeatReply {
        self.heartbeat(
            heartbeat(id, addr, epoch_seen, rebalanced_epoch, (0, &[]), &[]),
            now,
        )
    }

    /// A heartbeat that reports the server caught up with the state's current epoch.
    fn beat(&mut self, id: &str, addr: &str, now: u64) -> HeartbeatReply {
        let epoch = self.epoch();
        self.beat_with(id, addr, epoch, 0, now)
    }

    /// A heartbeat that reports the settled view the server holds, the ids it held before, and
    /// whether it rebalanced for the current epoch.
    fn beat_reporting(
        &mut self,
        id: &str,
        addr: &str,
        settled: (Epoch, &[ServerInfo]),
        former_ids: &[&str],
        rebalanced: bool,
        now: u64,
    ) -> HeartbeatReply {
        let epoch = self.epoch().max(settled.0);
        let rebalanced_epoch = if rebalanced { epoch } else { 0 };
        self.heartbeat(
            heartbeat(id, addr, epoch, rebalanced_epoch, settled, former_ids),
            now,
        )
    }

    /// Every member reports the current epoch rebalanced at `now`.
    fn all_rebalanced(&mut self, now: u64) {
        let epoch = self.epoch();
        for member in self.view().servers {
            self.beat_with(&member.id, &member.addr, epoch, epoch, now);
        }
    }

    /// The leader's timer: a stall refreshes every lock place, and an expiry of the servers
    /// whose lease ran out is logged only when due. Returns the view after it.
    fn sweep(&mut self, now: u64) -> View {
        let Sweep { gone, stalled } = self.liveness.sweep(&self.state.member_ids(), now);
        if stalled {
            self.refresh(now);
        }
        let due = self.state.sweep_due(now, &gone);
        let mut swept = self.state.clone();
        let view = expire(
            &mut swept,
            &gone.iter().map(String::as_str).collect::<Vec<_>>(),
            now,
        );
        assert_eq!(view, swept.view(), "a sweep answers the view after it");
        let mut idle = self.state.clone();
        idle.now_ms = swept.now_ms;
        assert_eq!(
            due,
            swept != idle,
            "sweep_due({now}, {gone:?}) is {due}, yet applying the sweep would {}",
            if due {
                "change nothing"
            } else {
                "change the state"
            }
        );
        if due {
            self.state = swept;
        }
        self.view()
    }

    /// Sweeps every [`TICK`] ms in `(from, to]` (and at `to` itself).
    fn sweep_through(&mut self, from: u64, to: u64) {
        let mut now = from + TICK;
        while now < to {
            self.sweep(now);
            now += TICK;
        }
        self.sweep(to);
    }

    fn refresh(&mut self, now: u64) {
        match self.apply(Command::Refresh, now) {
            Ok(Outcome::View(_)) => {}
            other => panic!("refresh at {now}: unexpected {other:?}"),
        }
    }

    fn lock_get(&mut self, lock: &str, requester: &str, now: u64) -> LockReply {
        lock_get(&mut self.state, lock, requester, now)
    }

    fn lock_release(&mut self, lock: &str, requester: &str, now: u64) -> LockReply {
        lock_release(&mut self.state, lock, requester, now)
    }
}

// ----- membership --------------------------------------------------------------------------------

#[test]
fn first_heartbeat_joins_and_bumps_the_epoch() {
    let mut s = Leader::new();
    assert_eq!(s.epoch(), 0);
    assert_eq!(
        s.beat("a", ADDR_A, 0),
        HeartbeatReply::Accepted { epoch: 1 }
    );
    assert_eq!(s.epoch(), 1);
    assert_eq!(s.view().servers, vec![info("a", ADDR_A)]);
    assert_eq!(
        s.beat("b", ADDR_B, 10),
        HeartbeatReply::Accepted { epoch: 2 }
    );
    assert_eq!(s.ids(), ["a", "b"]);
}

#[test]
fn a_heartbeat_naming_a_live_server_at_another_address_is_refused_and_changes_nothing() {
    let mut s = Leader::new();
    s.beat("a", ADDR_A, 0);
    let before = s.state.clone();
    // It even reports a higher epoch, which an accepted beat would adopt.
    let forged = heartbeat("a", ADDR_B, 9, 9, (0, &[]), &[]);
    assert_eq!(s.state.quiet_heartbeat(&forged), None, "the log refuses it");
    match s.state.apply(forged, 10) {
        Err(Error::InvalidRequest(msg)) => {
            assert!(msg.contains(ADDR_A) && msg.contains(ADDR_B), "{msg}")
        }
        other => panic!("a beat for a at another address: {other:?}"),
    }
    assert_eq!(s.state.epoch, before.epoch);
    assert_eq!(s.view().servers, vec![info("a", ADDR_A)]);
    assert_eq!(
        s.beat("a", ADDR_A, 20),
        HeartbeatReply::Accepted { epoch: 1 }
    );
}

#[test]
fn a_known_servers_heartbeat_does_not_bump_the_epoch() {
    let mut s = Leader::new();
    s.beat("a", ADDR_A, 0);
    for now in [500, 1_000, 1_500] {
        assert_eq!(
            s.beat("a", ADDR_A, now),
            HeartbeatReply::Accepted { epoch: 1 }
        );
    }
    assert_eq!(s.epoch(), 1);
    assert_eq!(s.ids(), ["a"]);
}

#[test]
fn several_servers_expiring_in_one_sweep_bump_the_epoch_once() {
    let mut s = Leader::new();
    s.beat("a", ADDR_A, 0);
    s.beat("b", ADDR_B, 0);
    s.beat("c", ADDR_C, 0);
    assert_eq!(s.epoch(), 3);
    s.sweep(0);
    // c keeps beating; a and b fall silent together.
    let mut now = 0;
    while now < 3_000 {
        now += TICK;
        s.beat("c", ADDR_C, now);
        let before = s.epoch();
        let view = s.sweep(now);
        if view.servers.len() < 3 {
            assert_eq!(view.epoch, before + 1, "one bump for the whole sweep");
            break;
        }
    }
    assert_eq!(s.ids(), ["c"]);
    assert_eq!(s.epoch(), 4);
}

#[test]
fn a_server_is_expired_only_after_lease_ms_without_heartbeat() {
    let mut s = Leader::new();
    s.beat("a", ADDR_A, 1_000);
    s.sweep(1_000);
    s.sweep_through(1_000, 1_000 + LEASE);
    assert_eq!(
        s.ids(),
        ["a"],
        "exactly one lease of silence is not yet too long"
    );
    assert_eq!(s.epoch(), 1);
    let view = s.sweep(1_000 + LEASE + 1);
    assert!(view.servers.is_empty(), "expired just past the lease");
    assert_eq!(view.epoch, 2);
}

#[test]
fn an_expire_names_the_servers_and_removes_only_those_that_are_members() {
    let mut s = state();
    for (id, addr) in [("a", ADDR_A), ("b", ADDR_B), ("c", ADDR_C)] {
        apply_heartbeat(&mut s, heartbeat(id, addr, 0, 0, (0, &[]), &[]), 0);
    }
    assert_eq!(s.epoch(), 3);
    let view = expire(&mut s, &["a", "c", "stranger"], 10);
    assert_eq!(view.servers, vec![info("b", ADDR_B)]);
    assert_eq!(view.epoch, 4, "one bump for the whole expiry");
    // Naming nobody who is a member changes no epoch.
    let view = expire(&mut s, &["a", "stranger"], 20);
    assert_eq!(view.epoch, 4);
    assert_eq!(
        apply_heartbeat(&mut s, heartbeat("a", ADDR_A, 4, 0, (0, &[]), &[]), 30),
        HeartbeatReply::Denied { epoch: 4 },
        "an expired id is denied"
    );
    // "stranger" was never a member, so nothing was expired under its name: it may join.
    assert_eq!(
        apply_heartbeat(
            &mut s,
            heartbeat("stranger", ADDR_A, 4, 0, (0, &[]), &[]),
            40
        ),
        HeartbeatReply::Accepted { epoch: 5 }
    );
}

#[test]
fn an_expired_id_that_beats_again_is_denied_and_stays_out_of_the_view() {
    let mut s = Leader::new();
    s.beat("a", ADDR_A, 0);
    s.sweep(0);
    s.sweep_through(0, LEASE + TICK);
    assert!(s.ids().is_empty());
    let epoch = s.epoch();
    assert_eq!(epoch, 2);
    for now in [LEASE + 2 * TICK, LEASE + 3 * TICK] {
        assert_eq!(s.beat("a", ADDR_A, now), HeartbeatReply::Denied { epoch });
        assert!(s.ids().is_empty());
        assert_eq!(s.epoch(), epoch, "a denial is not a view change");
    }
    // The server rejoins under a fresh id at the same address.
    assert_eq!(
        s.beat("a2", ADDR_A, LEASE + 4 * TICK),
        HeartbeatReply::Accepted { epoch: epoch + 1 }
    );
    assert_eq!(s.ids(), ["a2"]);
}

#[test]
fn a_second_id_at_a_held_address_gets_retry_until_the_holder_expires_then_joins() {
    let mut s = Leader::new();
    s.beat("a", ADDR_A, 0);
    s.sweep(0);
    let mut now = 0;
    loop {
        now += TICK;
        assert!(now < 10_000, "the holder never expired");
        let view = s.sweep(now);
        let reply = s.beat("b", ADDR_A, now);
        if view.servers.is_empty() {
            assert!(
                now > LEASE,
                "holder expired after {now} ms, before its lease"
            );
            assert_eq!(reply, HeartbeatReply::Accepted { epoch: 3 });
            break;
        }
        assert_eq!(
            reply,
            HeartbeatReply::Retry {
                epoch: 1,
                holder: "a".into()
            }
        );
        assert_eq!(s.ids(), ["a"]);
    }
    assert_eq!(s.ids(), ["b"]);
    assert_eq!(s.view().servers[0].addr, ADDR_A);
}

#[test]
fn a_heartbeat_with_a_higher_epoch_seen_raises_the_epoch_and_a_join_goes_above_it() {
    // A view leader that starts without its state is at 0; its first heartbeat comes from a
    // server at 41.
    let mut s = Leader::new();
    assert_eq!(
        s.beat_with("a", ADDR_A, 41, 41, 0),
        HeartbeatReply::Accepted { epoch: 42 }
    );
    assert_eq!(s.epoch(), 42);
    // A lower epoch seen never lowers it.
    assert_eq!(
        s.beat_with("b", ADDR_B, 3, 0, 10),
        HeartbeatReply::Accepted { epoch: 43 }
    );
    assert_eq!(s.epoch(), 43);
    // A known server reporting a higher epoch raises it without a view change of its own.
    assert_eq!(
        s.beat_with("a", ADDR_A, 50, 0, 20),
        HeartbeatReply::Accepted { epoch: 50 }
    );
    assert_eq!(s.epoch(), 50);
    assert_eq!(
        s.beat_with("c", ADDR_C, 0, 0, 30),
        HeartbeatReply::Accepted { epoch: 51 }
    );
}

#[test]
fn rebalancing_is_true_until_every_live_member_reports_the_epoch() {
    let mut s = Leader::new();
    assert!(
        !s.view().rebalancing,
        "an empty cluster has nothing to move"
    );
    s.beat_with("a", ADDR_A, 0, 0, 0);
    assert_eq!(s.epoch(), 1);
    assert!(s.view().rebalancing);
    s.beat_with("a", ADDR_A, 1, 1, 10);
    assert!(!s.view().rebalancing);
    s.beat_with("b", ADDR_B, 1, 1, 20);
    assert_eq!(s.epoch(), 2);
    assert!(s.view().rebalancing, "nobody reported epoch 2 yet");
    s.beat_with("a", ADDR_A, 2, 2, 30);
    assert!(s.view().rebalancing, "b has not reported epoch 2");
    s.beat_with("b", ADDR_B, 2, 1, 40);
    assert!(s.view().rebalancing, "b saw epoch 2 but did not finish it");
    s.beat_with("b", ADDR_B, 2, 2, 50);
    assert!(!s.view().rebalancing);
    // An expiry is a new epoch that the survivors must report again.
    s.sweep(50);
    let mut now = 50;
    while s.view().servers.len() == 2 {
        now += TICK;
        assert!(now < 10_000);
        s.beat_with("a", ADDR_A, 2, 2, now);
        s.sweep(now);
    }
    assert_eq!(s.epoch(), 3);
    assert!(s.view().rebalancing);
    s.beat_with("a", ADDR_A, 3, 3, now + 1);
    assert!(!s.view().rebalancing);
}

#[test]
fn leave_removes_a_server_bumps_the_epoch_and_a_later_heartbeat_is_denied() {
    let mut s = Leader::new();
    s.beat("a", ADDR_A, 0);
    s.beat("b", ADDR_B, 0);
    let leave = || Command::Leave {
        server_id: "a".into(),
    };
    assert_eq!(s.apply(leave(), 10), Ok(Outcome::Left { epoch: 3 }));
    assert_eq!(s.ids(), ["b"]);
    assert_eq!(s.beat("a", ADDR_A, 20), HeartbeatReply::Denied { epoch: 3 });
    assert_eq!(s.ids(), ["b"]);
    // Leaving twice, or an unknown id leaving, changes nothing.
    assert_eq!(s.apply(leave(), 30), Ok(Outcome::Left { epoch: 3 }));
    assert_eq!(s.epoch(), 3);
}

// ----- heartbeats answered without the log -------------------------------------------------------

/// `a` joined and rebalanced (epoch 1 settled with `a` alone), then `b` joined: epoch 2, which
/// `b` has yet to rebalance for.
fn two_members() -> State {
    let mut s = state();
    apply_heartbeat(&mut s, heartbeat("a", ADDR_A, 0, 0, (0, &[]), &[]), 0);
    apply_heartbeat(&mut s, heartbeat("a", ADDR_A, 1, 1, (0, &[]), &[]), 0);
    apply_heartbeat(&mut s, heartbeat("b", ADDR_B, 1, 0, (0, &[]), &[]), 0);
    let view = s.view();
    assert_eq!((view.epoch, view.settled_epoch), (2, 1));
    assert_eq!(view.settled_servers, vec![info("a", ADDR_A)]);
    s
}

/// What `a` of [`two_members`] reports when it has nothing new to say.
fn up_to_date_beat_of_a() -> Command {
    heartbeat("a", ADDR_A, 2, 1, (1, &[info("a", ADDR_A)]), &[])
}

#[test]
fn quiet_heartbeat_accepts_an_up_to_date_member_as_applying_it_would_and_changing_nothing() {
    let s = two_members();
    let accepted = Some(HeartbeatReply::Accepted { epoch: 2 });
    assert_eq!(s.quiet_heartbeat(&up_to_date_beat_of_a()), accepted);
    let mut applied = s.clone();
    assert_eq!(
        applied.apply(up_to_date_beat_of_a(), 10),
        Ok(Outcome::Heartbeat(HeartbeatReply::Accepted { epoch: 2 }))
    );
    applied.now_ms = s.now_ms();
    assert_eq!(applied, s, "logging it would have changed nothing");
    // Reporting less than the state already knows is just as quiet.
    for stale in [
        heartbeat("a", ADDR_A, 1, 1, (1, &[info("a", ADDR_A)]), &[]),
        heartbeat("a", ADDR_A, 2, 0, (1, &[info("a", ADDR_A)]), &[]),
        heartbeat("a", ADDR_A, 2, 1, (0, &[]), &[]),
    ] {
        assert_eq!(s.quiet_heartbeat(&stale), accepted, "{stale:?}");
    }
}

#[test]
fn quiet_heartbeat_denies_an_expired_or_departed_id_unless_it_reports_a_higher_epoch() {
    let mut s = two_members();
    expire(&mut s, &["a"], 10_000);
    assert_eq!(s.epoch(), 3);
    let settled = [info("a", ADDR_A)];
    assert_eq!(
        s.quiet_heartbeat(&heartbeat("a", ADDR_A, 3, 1, (1, &settled), &[])),
        Some(HeartbeatReply::Denied { epoch: 3 })
    );
    s.apply(
        Command::Leave {
            server_id: "b".into(),
        },
        10_100,
    )
    .unwrap();
    assert_eq!(
        s.quiet_heartbeat(&heartbeat("b", ADDR_B, 4, 0, (1, &settled), &[])),
        Some(HeartbeatReply::Denied { epoch: 4 })
    );
    // The epoch it saw still has to be caught up with, through the log.
    let ahead = heartbeat("a", ADDR_A, 9, 1, (1, &settled), &[]);
    assert_eq!(s.quiet_heartbeat(&ahead), None);
    assert_eq!(
        apply_heartbeat(&mut s, ahead, 10_200),
        HeartbeatReply::Denied { epoch: 9 }
    );
}

#[test]
fn quiet_heartbeat_leaves_every_beat_that_changes_the_state_to_the_log() {
    let s = two_members();
    let settled_a = [info("a", ADDR_A)];
    let both = [info("a", ADDR_A), info("b", ADDR_B)];
    let cases = [
        ("a join", heartbeat("c", ADDR_C, 2, 0, (1, &settled_a), &[])),
        (
            "a higher rebalanced epoch",
            heartbeat("a", ADDR_A, 2, 2, (1, &settled_a), &[]),
        ),
        (
            "a higher epoch seen",
            heartbeat("a", ADDR_A, 3, 1, (1, &settled_a), &[]),
        ),
        (
            "changed former ids",
            heartbeat("a", ADDR_A, 2, 1, (1, &settled_a), &["a0"]),
        ),
        (
            "a newer settled view",
            heartbeat("a", ADDR_A, 2, 1, (2, &both), &[]),
        ),
    ];
    for (what, command) in cases {
        assert_eq!(s.quiet_heartbeat(&command), None, "{what}");
        let mut applied = s.clone();
        apply_heartbeat(&mut applied, command, s.now_ms());
        assert_ne!(applied, s, "{what} changes the state: it must be logged");
    }
    assert_eq!(
        s.quiet_heartbeat(&Command::Refresh),
        None,
        "not a heartbeat"
    );
}

// ----- when a sweep is due -----------------------------------------------------------------------

/// a, b and c joined and rebalanced at 0: epoch 3 is settled.
fn settled_trio() -> State {
    let mut s = state();
    let trio = [("a", ADDR_A), ("b", ADDR_B), ("c", ADDR_C)];
    for (id, addr) in trio {
        apply_heartbeat(&mut s, heartbeat(id, addr, 0, 0, (0, &[]), &[]), 0);
    }
    for (id, addr) in trio {
        apply_heartbeat(&mut s, heartbeat(id, addr, 3, 3, (0, &[]), &[]), 0);
    }
    let view = s.view();
    assert!(!view.rebalancing);
    assert_eq!(view.settled_epoch, 3);
    s
}

#[test]
fn sweep_due_is_false_when_no_server_is_gone_no_place_lapsed_and_nothing_can_settle() {
    let mut s = settled_trio();
    granted(lock_get(&mut s, "x", "h", 0));
    granted(lock_get(&mut s, "y", ":5001", 0));
    assert!(!s.sweep_due(0, &[]));
    assert!(
        !s.sweep_due(LOCK_LEASE, &[]),
        "exactly one lock lease is not yet a lapse"
    );
    assert!(
        !s.sweep_due(LOCK_LEASE, &["stranger".into()]),
        "a gone id that is no member expires nobody"
    );
    lock_release(&mut s, "x", "h", LOCK_LEASE);
    assert!(
        !s.sweep_due(10 * LOCK_LEASE, &[]),
        "a live server's place never lapses"
    );
}

#[test]
fn sweep_due_is_true_when_a_member_is_gone() {
    let s = settled_trio();
    assert!(s.sweep_due(0, &["b".into()]));
    assert!(s.sweep_due(0, &["stranger".into(), "c".into()]));
}

#[test]
fn sweep_due_is_true_once_a_holders_or_a_waiters_place_lapsed() {
    let mut s = state();
    granted(lock_get(&mut s, "x", "h", 0));
    lock_get(&mut s, "x", "w", 0);
    assert!(!s.sweep_due(LOCK_LEASE, &[]));
    assert!(s.sweep_due(LOCK_LEASE + 1, &[]), "both places lapsed");
    // h renews; only the waiter lapses.
    granted(lock_get(&mut s, "x", "h", 20_000));
    assert!(
        s.sweep_due(LOCK_LEASE + 1, &[]),
        "the waiter's place lapsed"
    );
    expire(&mut s, &[], LOCK_LEASE + 1);
    assert_eq!(places(&s, "x"), ["h"]);
    assert!(!s.sweep_due(20_000 + LOCK_LEASE, &[]));
    assert!(s.sweep_due(20_000 + LOCK_LEASE + 1, &[]));
}

#[test]
fn sweep_due_is_true_when_a_waiting_settle_becomes_possible_after_the_return_wait() {
    let mut s = settled_trio();
    expire(&mut s, &["a", "b", "c"], 1_000);
    let joined_at = 1_500;
    apply_heartbeat(
        &mut s,
        heartbeat("fresh", ADDR_D, 4, 0, (0, &[]), &[]),
        joined_at,
    );
    apply_heartbeat(
        &mut s,
        heartbeat("fresh", ADDR_D, 5, 5, (0, &[]), &[]),
        joined_at,
    );
    assert!(s.view().rebalancing, "the old holders may be coming back");
    let wait = RETURN_WAIT_LEASES * LEASE;
    assert!(!s.sweep_due(joined_at + wait, &[]));
    assert!(s.sweep_due(joined_at + wait + 1, &[]));
    let view = expire(&mut s, &[], joined_at + wait + 1);
    assert!(!view.rebalancing, "the sweep settles the view");
    assert_eq!(view.losses.len(), 1);
    assert!(
        !s.sweep_due(joined_at + wait + 1, &[]),
        "and then nothing is due"
    );
}

// ----- time and timing rules ---------------------------------------------------------------------

#[test]
fn a_command_stamped_earlier_than_one_before_acts_at_the_later_time_so_no_place_lapses_early() {
    let mut s = state();
    let token = granted(lock_get(&mut s, "x", "h", 50_000));
    // A new leader whose clock is 40 s behind renews h.
    assert_eq!(
        lock_get(&mut s, "x", "h", 10_000),
        LockReply::Granted { token }
    );
    assert_eq!(s.now_ms(), 50_000, "time never goes backwards");
    // By the new leader's clock a lease from its stamp would run out at 40_001.
    assert!(!s.sweep_due(10_000 + LOCK_LEASE + 1, &[]));
    expire(&mut s, &[], 10_000 + LOCK_LEASE + 1);
    assert_eq!(s.now_ms(), 50_000);
    assert_eq!(places(&s, "x"), ["h"]);
    expire(&mut s, &[], 50_000 + LOCK_LEASE);
    assert_eq!(places(&s, "x"), ["h"], "a full lease from the later time");
    expire(&mut s, &[], 50_000 + LOCK_LEASE + 1);
    assert!(places(&s, "x").is_empty());
}

#[test]
fn sweep_due_at_an_earlier_time_answers_for_the_later_time_the_sweep_would_act_at() {
    let mut s = state();
    granted(lock_get(&mut s, "x", "h", 0));
    // A later command puts the state past h's lease; no sweep ran meanwhile.
    granted(lock_get(&mut s, "y", "other", LOCK_LEASE + 1));
    assert!(
        s.sweep_due(10_000, &[]),
        "an expiry stamped 10 s acts at {} ms, where h lapsed",
        LOCK_LEASE + 1
    );
    expire(&mut s, &[], 10_000);
    assert!(places(&s, "x").is_empty());
    assert_eq!(places(&s, "y"), ["other"]);
}

#[test]
fn configure_changes_the_lock_lease_used_for_lapses() {
    let shorter = StateConfig {
        lease_ms: LEASE,
        lock_lease_ms: 5_000,
    };
    let longer = StateConfig {
        lease_ms: LEASE,
        lock_lease_ms: 2 * LOCK_LEASE,
    };
    for (rules, lapses_after) in [(shorter, 5_000), (longer, 2 * LOCK_LEASE)] {
        let mut s = state();
        granted(lock_get(&mut s, "x", "h", 0));
        assert!(matches!(
            s.apply(Command::Configure(rules.clone()), 1_000),
            Ok(Outcome::View(_))
        ));
        assert_eq!(s.config(), &rules);
        assert!(!s.sweep_due(lapses_after, &[]), "{rules:?}");
        expire(&mut s, &[], lapses_after);
        assert_eq!(places(&s, "x"), ["h"], "{rules:?}");
        assert!(s.sweep_due(lapses_after + 1, &[]), "{rules:?}");
        expire(&mut s, &[], lapses_after + 1);
        assert!(places(&s, "x").is_empty(), "{rules:?}");
    }
}

#[test]
fn a_refresh_gives_every_lock_place_a_full_lease_from_the_refresh_time() {
    let mut s = Leader::new();
    let token = granted(s.lock_get("x", "h", 0));
    s.lock_get("x", "w", 0);
    granted(s.lock_get("y", "other", 0));
    s.sweep(0);
    // Nobody's renewals were heard until 20 s (a new leader, or one that stalled).
    let refreshed_at = 20_000;
    let unrefreshed = s.state.clone();
    s.refresh(refreshed_at);
    let mut control = unrefreshed;
    expire(&mut control, &[], LOCK_LEASE + 1);
    assert!(
        control.locks.is_empty(),
        "without the refresh every place lapses a lock lease after 0"
    );
    s.sweep_through(refreshed_at, refreshed_at + LOCK_LEASE);
    assert_eq!(places(&s.state, "x"), ["h", "w"]);
    assert_eq!(places(&s.state, "y"), ["other"]);
    assert_eq!(
        s.state.locks["x"].token, token,
        "the holder keeps its grant"
    );
    s.sweep(refreshed_at + LOCK_LEASE + 1);
    assert!(s.state.locks.is_empty(), "nobody renewed after the refresh");
    assert!(granted(s.lock_get("x", "late", refreshed_at + LOCK_LEASE + 1)) > token);
}

#[test]
fn a_stalled_leader_expires_nobody_and_refreshes_every_lock_place() {
    const STALL: u64 = 1_000;
    let mut s = Leader::stalling_after(STALL);
    s.beat("a", ADDR_A, 0);
    s.beat("b", ADDR_B, 0);
    granted(s.lock_get("x", "h", 0));
    s.sweep_through(0, 1_000);
    let epoch = s.epoch();
    // The leader stalls far past everyone's lease and the lock lease.
    let resume = 40_000;
    let view = s.sweep(resume);
    assert_eq!(view.servers.len(), 2, "our own stall expires nobody");
    assert_eq!(view.epoch, epoch);
    assert_eq!(places(&s.state, "x"), ["h"], "nor any lock place");
    // b beats after the resume; a stays silent: a full lease from the resume.
    let mut now = resume;
    while now < resume + LEASE {
        now += TICK;
        if now % 500 == 0 {
            s.beat("b", ADDR_B, now);
        }
        s.sweep(now);
    }
    assert_eq!(s.ids(), ["a", "b"], "a full lease after the resume");
    s.sweep(resume + LEASE + TICK);
    assert_eq!(s.ids(), ["b"]);
    assert_eq!(s.epoch(), epoch + 1);
    assert!(s.state.sweep_due(resume + LOCK_LEASE + 1, &[]));
    assert!(!s.state.sweep_due(resume + LOCK_LEASE, &[]));
}

// ----- locks -------------------------------------------------------------------------------------

#[test]
fn lock_get_on_a_free_lock_is_granted() {
    let mut s = Leader::new();
    let token = granted(s.lock_get("x", "alice", 0));
    assert!(token > 0);
    assert_eq!(
        s.lock_get("x", "bob", 1),
        LockReply::Retry {
            holder: "alice".into(),
            position: 1
        }
    );
    // Another lock is independent.
    granted(s.lock_get("y", "bob", 2));
}

#[test]
fn waiters_are_granted_in_fifo_order_as_the_holder_releases() {
    let mut s = Leader::new();
    granted(s.lock_get("x", "h", 0));
    for (position, waiter) in ["w1", "w2", "w3"].into_iter().enumerate() {
        assert_eq!(
            s.lock_get("x", waiter, 1),
            LockReply::Retry {
                holder: "h".into(),
                position: position + 1
            }
        );
    }
    assert_eq!(s.lock_release("x", "h", 2), LockReply::Released);
    granted(s.lock_get("x", "w1", 3));
    assert_eq!(
        s.lock_get("x", "w3", 3),
        LockReply::Retry {
            holder: "w1".into(),
            position: 2
        }
    );
    assert_eq!(
        s.lock_get("x", "w2", 3),
        LockReply::Retry {
            holder: "w1".into(),
            position: 1
        }
    );
    assert_eq!(s.lock_release("x", "w1", 4), LockReply::Released);
    granted(s.lock_get("x", "w2", 5));
    assert_eq!(s.lock_release("x", "w2", 6), LockReply::Released);
    granted(s.lock_get("x", "w3", 7));
    assert_eq!(s.lock_release("x", "w3", 8), LockReply::Released);
    // The queue is empty again: anyone gets it at once.
    granted(s.lock_get("x", "late", 9));
}

#[test]
fn releasing_a_waiter_in_the_middle_of_the_queue_removes_only_it() {
    let mut s = Leader::new();
    let token = granted(s.lock_get("x", "h", 0));
    s.lock_get("x", "w1", 1);
    s.lock_get("x", "w2", 1);
    s.lock_get("x", "w3", 1);
    assert_eq!(s.lock_release("x", "w2", 2), LockReply::Released);
    assert_eq!(
        granted(s.lock_get("x", "h", 3)),
        token,
        "the holder keeps its grant"
    );
    assert_eq!(
        s.lock_get("x", "w3", 3),
        LockReply::Retry {
            holder: "h".into(),
            position: 2
        }
    );
    assert_eq!(s.lock_release("x", "h", 4), LockReply::Released);
    granted(s.lock_get("x", "w1", 5));
    assert_eq!(
        s.lock_get("x", "w3", 5),
        LockReply::Retry {
            holder: "w1".into(),
            position: 1
        }
    );
}

#[test]
fn releasing_for_an_unknown_requester_answers_unknown() {
    let mut s = Leader::new();
    assert_eq!(s.lock_release("nope", "alice", 0), LockReply::Unknown);
    granted(s.lock_get("x", "alice", 1));
    assert_eq!(s.lock_release("x", "bob", 2), LockReply::Unknown);
    assert_eq!(s.lock_release("x", "alice", 3), LockReply::Released);
    assert_eq!(s.lock_release("x", "alice", 4), LockReply::Unknown);
}

#[test]
fn lock_get_from_the_holder_renews_its_lease() {
    let mut s = Leader::new();
    let token = granted(s.lock_get("x", "h", 0));
    s.sweep(0);
    s.sweep_through(0, 20_000);
    assert_eq!(
        granted(s.lock_get("x", "h", 20_000)),
        token,
        "a renewal is the same grant"
    );
    // Past the first lease, but within one of the renewal: still held.
    s.sweep_through(20_000, 20_000 + LOCK_LEASE);
    assert_eq!(
        s.lock_get("x", "other", 20_000 + LOCK_LEASE),
        LockReply::Retry {
            holder: "h".into(),
            position: 1
        }
    );
    assert_eq!(
        s.lock_release("x", "other", 20_000 + LOCK_LEASE),
        LockReply::Released
    );
    // Without another renewal it lapses.
    s.sweep_through(20_000 + LOCK_LEASE, 20_000 + LOCK_LEASE + TICK);
    assert_eq!(s.lock_release("x", "h", 60_000), LockReply::Unknown);
    assert!(granted(s.lock_get("x", "other", 60_000)) > token);
}

#[test]
fn fencing_tokens_strictly_grow_with_each_grant_of_a_lock() {
    let mut s = Leader::new();
    let mut tokens = vec![granted(s.lock_get("x", "a", 0))];
    s.lock_get("x", "b", 1);
    s.lock_get("x", "c", 1);
    granted(s.lock_get("y", "z", 2));
    s.lock_release("x", "a", 3);
    tokens.push(granted(s.lock_get("x", "b", 4)));
    granted(s.lock_get("w", "z", 5));
    s.lock_release("x", "b", 6);
    tokens.push(granted(s.lock_get("x", "c", 7)));
    // Emptied and granted afresh, even to an earlier holder.
    s.lock_release("x", "c", 8);
    tokens.push(granted(s.lock_get("x", "a", 9)));
    s.lock_release("x", "a", 10);
    tokens.push(granted(s.lock_get("x", "a", 11)));
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "tokens {tokens:?} must strictly grow"
    );
}

#[test]
fn fencing_tokens_count_every_grant_of_any_lock_from_one() {
    let mut s = state();
    assert_eq!(granted(lock_get(&mut s, "x", "a", 0)), 1);
    assert_eq!(granted(lock_get(&mut s, "y", "a", 0)), 2);
    assert_eq!(granted(lock_get(&mut s, "x", "a", 1)), 1, "a renewal");
    lock_get(&mut s, "x", "b", 1);
    lock_release(&mut s, "x", "a", 2);
    // b was granted at the release, before it asks again.
    assert_eq!(granted(lock_get(&mut s, "z", "c", 3)), 4);
    assert_eq!(granted(lock_get(&mut s, "x", "b", 4)), 3);
}

#[test]
fn fencing_tokens_keep_growing_on_a_state_restored_from_its_snapshot() {
    let mut s = state();
    granted(lock_get(&mut s, "x", "a", 0));
    let held = granted(lock_get(&mut s, "y", "b", 0));
    lock_release(&mut s, "x", "a", 1);
    // A new Raft member, or a restarted one, starts from the postcard snapshot.
    let bytes = postcard::to_stdvec(&s).expect("the state encodes");
    let mut restored: State = postcard::from_bytes(&bytes).expect("the state decodes");
    assert_eq!(restored, s);
    assert_eq!(granted(lock_get(&mut restored, "y", "b", 2)), held);
    assert!(granted(lock_get(&mut restored, "x", "c", 2)) > held);
}

#[test]
fn a_server_named_requester_holds_its_lock_until_the_server_expires_then_the_next_waiter_is_granted(
) {
    let mut s = Leader::new();
    s.beat("s1", ADDR_A, 0);
    s.sweep(0);
    let token = granted(s.lock_get("x", ":5001", 0));
    s.lock_get("x", "client", 0);
    // The server lives well past the lock lease; the client polls; nobody releases.
    let mut now = 0;
    while now < LOCK_LEASE + 10_000 {
        now += TICK;
        if now % 500 == 0 {
            s.beat("s1", ADDR_A, now);
        }
        if now % 1_000 == 0 {
            assert_eq!(
                s.lock_get("x", "client", now),
                LockReply::Retry {
                    holder: ":5001".into(),
                    position: 1
                }
            );
        }
        s.sweep(now);
    }
    // The server falls silent and expires: the lock goes to the next waiter.
    let silent_from = now;
    while s.ids().contains(&"s1".to_string()) {
        now += TICK;
        assert!(now <= silent_from + LEASE + TICK, "s1 never expired");
        s.sweep(now);
    }
    let next = granted(s.lock_get("x", "client", now));
    assert!(next > token);
    assert_eq!(s.lock_release("x", ":5001", now), LockReply::Unknown);
}

#[test]
fn a_requester_naming_a_servers_full_address_is_released_when_it_expires() {
    let mut s = Leader::new();
    s.beat("s1", ADDR_A, 0);
    s.sweep(0);
    granted(s.lock_get("x", ADDR_A, 0));
    s.lock_get("x", "client", 0);
    s.sweep_through(0, LEASE + TICK);
    assert!(s.ids().is_empty());
    granted(s.lock_get("x", "client", LEASE + TICK));
}

#[test]
fn a_non_server_holders_place_lapses_after_the_lock_lease_without_lock_get() {
    let mut s = Leader::new();
    let token = granted(s.lock_get("x", "h", 0));
    s.lock_get("x", "w", 0);
    s.sweep(0);
    let mut now = 0;
    // w polls every second; h never renews.
    while now < LOCK_LEASE {
        now += TICK;
        if now % 1_000 == 0 {
            assert!(matches!(s.lock_get("x", "w", now), LockReply::Retry { .. }));
        }
        s.sweep(now);
    }
    assert_eq!(
        s.lock_get("x", "w", now),
        LockReply::Retry {
            holder: "h".into(),
            position: 1
        },
        "exactly one lock lease is not yet too long"
    );
    s.sweep(LOCK_LEASE + TICK);
    assert!(granted(s.lock_get("x", "w", LOCK_LEASE + TICK)) > token);
    assert_eq!(
        s.lock_release("x", "h", LOCK_LEASE + TICK),
        LockReply::Unknown
    );
}

#[test]
fn a_non_server_waiters_place_lapses_after_the_lock_lease_without_lock_get() {
    let mut s = Leader::new();
    granted(s.lock_get("x", "h", 0));
    s.lock_get("x", "silent", 0);
    s.lock_get("x", "polling", 0);
    s.sweep(0);
    let mut now = 0;
    while now < LOCK_LEASE + 1_000 {
        now += TICK;
        if now % 1_000 == 0 {
            granted(s.lock_get("x", "h", now));
            s.lock_get("x", "polling", now);
        }
        s.sweep(now);
    }
    assert_eq!(s.lock_release("x", "silent", now), LockReply::Unknown);
    assert_eq!(
        s.lock_get("x", "polling", now),
        LockReply::Retry {
            holder: "h".into(),
            position: 1
        }
    );
}

#[test]
fn a_server_named_requester_does_not_lapse_while_the_server_lives() {
    let mut s = Leader::new();
    s.beat("s1", ADDR_A, 0);
    s.sweep(0);
    let token = granted(s.lock_get("x", ":5001", 0));
    granted(s.lock_get("y", "h", 0));
    s.lock_get("y", ":5001", 0);
    let mut now = 0;
    while now < 3 * LOCK_LEASE {
        now += TICK;
        if now % 500 == 0 {
            s.beat("s1", ADDR_A, now);
            granted(s.lock_get("y", "h", now));
        }
        s.sweep(now);
    }
    assert_eq!(s.ids(), ["s1"]);
    assert_eq!(
        s.lock_get("x", "other", now),
        LockReply::Retry {
            holder: ":5001".into(),
            position: 1
        },
        "the holder keeps the lock"
    );
    assert_eq!(granted(s.lock_get("x", ":5001", now)), token);
    assert_eq!(
        s.lock_get("y", ":5001", now),
        LockReply::Retry {
            holder: "h".into(),
            position: 1
        },
        "the waiter keeps its place"
    );
}

// ----- deadlock ----------------------------------------------------------------------------------

#[test]
fn a_two_party_cycle_is_refused_as_a_deadlock_and_not_enqueued() {
    let mut s = Leader::new();
    granted(s.lock_get("x", "A", 0));
    granted(s.lock_get("y", "B", 0));
    assert!(matches!(s.lock_get("x", "B", 1), LockReply::Retry { .. }));
    assert_eq!(
        s.lock_get("y", "A", 2),
        LockReply::Deadlock {
            cycle: vec!["A".into(), "B".into(), "A".into()]
        }
    );
    assert_eq!(
        s.lock_release("y", "A", 3),
        LockReply::Unknown,
        "A was not enqueued"
    );
    // Once B gives up y, A gets it at once: nobody was left queued behind.
    assert_eq!(s.lock_release("y", "B", 4), LockReply::Released);
    granted(s.lock_get("y", "A", 5));
}

#[test]
fn a_three_party_cycle_is_refused_as_a_deadlock() {
    let mut s = Leader::new();
    granted(s.lock_get("x", "A", 0));
    granted(s.lock_get("y", "B", 0));
    granted(s.lock_get("z", "C", 0));
    assert!(matches!(s.lock_get("y", "A", 1), LockReply::Retry { .. }));
    assert!(matches!(s.lock_get("z", "B", 1), LockReply::Retry { .. }));
    match s.lock_get("x", "C", 2) {
        LockReply::Deadlock { cycle } => {
            assert_eq!(cycle, ["C", "A", "B", "C"]);
        }
        other => panic!("expected a deadlock, got {other:?}"),
    }
    assert_eq!(s.lock_release("x", "C", 3), LockReply::Unknown);
}

#[test]
fn a_chain_without_a_cycle_just_waits() {
    let mut s = Leader::new();
    granted(s.lock_get("x", "A", 0));
    granted(s.lock_get("y", "B", 0));
    granted(s.lock_get("z", "C", 0));
    // B waits on A, C waits on B: a chain C -> B -> A.
    s.lock_get("x", "B", 1);
    assert_eq!(
        s.lock_get("y", "C", 1),
        LockReply::Retry {
            holder: "B".into(),
            position: 1
        }
    );
    // D waits on C at the far end of the chain: still no cycle.
    assert_eq!(
        s.lock_get("z", "D", 2),
        LockReply::Retry {
            holder: "C".into(),
            position: 1
        }
    );
    // A second waiter on the same lock is not a cycle either.
    assert_eq!(
        s.lock_get("x", "E", 2),
        LockReply::Retry {
            holder: "A".into(),
            position: 2
        }
    );
}

// ----- invalid input -----------------------------------------------------------------------------

#[test]
fn an_empty_lock_name_or_requester_is_an_invalid_request() {
    let mut s = state();
    for (lock, requester) in [("", "alice"), ("x", "")] {
        let get = Command::LockGet {
            lock: lock.into(),
            requester: requester.into(),
        };
        assert!(
            invalid(s.apply(get, 0)),
            "lock_get({lock:?}, {requester:?})"
        );
        let release = Command::LockRelease {
            lock: lock.into(),
            requester: requester.into(),
        };
        assert!(invalid(s.apply(release, 0)));
    }
    granted(lock_get(&mut s, "x", "alice", 1));
}

#[test]
fn oversized_names_are_an_invalid_request() {
    let mut s = state();
    let long = "l".repeat(LOCK_NAME_BYTES_MAX + 1);
    let fits = "l".repeat(LOCK_NAME_BYTES_MAX);
    for (lock, requester) in [(long.as_str(), "alice"), ("x", long.as_str())] {
        let get = Command::LockGet {
            lock: lock.into(),
            requester: requester.into(),
        };
        assert!(invalid(s.apply(get, 0)));
        let release = Command::LockRelease {
            lock: lock.into(),
            requester: requester.into(),
        };
        assert!(invalid(s.apply(release, 0)));
    }
    granted(lock_get(&mut s, &fits, &fits, 0));

    let long_field = "s".repeat(SERVER_FIELD_BYTES_MAX + 1);
    for (id, addr) in [
        (long_field.as_str(), ADDR_A),
        ("", ADDR_A),
        ("a", long_field.as_str()),
        ("a", ""),
    ] {
        let command = heartbeat(id, addr, 7, 7, (0, &[]), &[]);
        assert_eq!(s.quiet_heartbeat(&command), None, "the log refuses it");
        assert!(invalid(s.apply(command, 0)), "heartbeat({id:?}, {addr:?})");
    }
    assert_eq!(s.epoch(), 0, "a refused heartbeat changes nothing");
    assert!(s.view().servers.is_empty());
}

// ----- settling and losses -----------------------------------------------------------------------

#[test]
fn a_restarted_viewleader_adopts_the_reported_settled_view_and_waits_for_its_servers() {
    // A view leader that starts without its state (every member lost its data dir) learns the
    // last settled view from its servers.
    let old = [
        info("a", ADDR_A),
        info("b", ADDR_B),
        info("c", ADDR_C),
        info("d", ADDR_D),
        info("e", ADDR_E),
    ];
    let mut s = Leader::new();
    // The first server back reports the settled view of epoch 7 and is alone in the new one:
    // of five servers, it holds only some of the keys.
    s.beat_reporting("a", ADDR_A, (7, &old), &[], false, 0);
    s.beat_reporting("a", ADDR_A, (7, &old), &[], true, 10);
    let view = s.sweep(100);
    assert_eq!(
        view.settled_epoch, 7,
        "the reported settled view is adopted"
    );
    assert_eq!(view.settled_servers, old.to_vec());
    assert!(
        view.rebalancing,
        "a view holding only some of the keys must not settle while the others may be on their way back"
    );
    // They come back under their own ids: a view leader without its state expired nobody.
    for (i, server) in old.iter().enumerate().skip(1) {
        s.beat_reporting(
            &server.id,
            &server.addr,
            (7, &old),
            &[],
            false,
            200 + i as u64,
        );
    }
    s.all_rebalanced(400);
    let view = s.sweep(500);
    assert!(
        !view.rebalancing,
        "everyone is back: the view settles at once"
    );
    assert_eq!(view.settled_servers.len(), 5);
    assert!(view.losses.is_empty(), "nothing was lost");
}

#[test]
fn a_view_missing_every_holder_of_a_range_settles_after_the_return_wait_and_records_the_loss() {
    let mut s = Leader::new();
    for (id, addr) in [("a", ADDR_A), ("b", ADDR_B), ("c", ADDR_C)] {
        s.beat(id, addr, 0);
    }
    s.all_rebalanced(0);
    assert!(!s.sweep(TICK).rebalancing);
    // All three die at once; a fresh server (no former ids) joins.
    s.sweep_through(TICK, LEASE + 2 * TICK);
    assert!(s.view().servers.is_empty());
    assert_eq!(
        s.view().settled_servers.len(),
        3,
        "an empty view never settles"
    );
    let joined_at = LEASE + 3 * TICK;
    s.beat("fresh", ADDR_A, joined_at);
    s.all_rebalanced(joined_at);
    assert!(
        s.sweep(joined_at + TICK).rebalancing,
        "the old holders may be coming back"
    );
    // The fresh server keeps beating; nobody else comes.
    let wait = RETURN_WAIT_LEASES * LEASE;
    let mut now = joined_at + TICK;
    while now < joined_at + wait {
        now += TICK;
        s.all_rebalanced(now);
        assert!(s.sweep(now).rebalancing, "still waiting at {now}");
    }
    now += 2 * TICK;
    s.all_rebalanced(now);
    s.sweep(now);
    let view = s.view();
    assert!(
        !view.rebalancing,
        "the wait over, the view settles without them"
    );
    assert_eq!(view.losses.len(), 1);
    assert!(view.losses[0].survivors.is_empty());
    assert!(
        crate::ring::loss_of(&view, "any key").is_some(),
        "every key had its replicas among the lost servers"
    );
}

#[test]
fn losing_one_of_three_replicas_settles_at_once_but_losing_two_waits_for_them() {
    let five = [
        ("a", ADDR_A),
        ("b", ADDR_B),
        ("c", ADDR_C),
        ("d", ADDR_D),
        ("e", ADDR_E),
    ];
    let settle_all = |s: &mut Leader| {
        for (id, addr) in five {
            s.beat(id, addr, 0);
        }
        s.all_rebalanced(0);
        assert!(!s.sweep(TICK).rebalancing);
    };
    // Only "a" stops beating: every range keeps two of its three replicas.
    let mut s = Leader::new();
    settle_all(&mut s);
    let mut now = TICK;
    while s.view().servers.len() == 5 {
        now += TICK;
        for (id, addr) in &five[1..] {
            s.beat(id, addr, now);
        }
        s.sweep(now);
    }
    s.all_rebalanced(now);
    assert!(
        !s.sweep(now + TICK).rebalancing,
        "a majority of every range survived"
    );
    // "a" and "b" stop beating together: some range lost two of its three replicas.
    let mut s = Leader::new();
    settle_all(&mut s);
    let mut now = TICK;
    while s.view().servers.len() == 5 {
        now += TICK;
        for (id, addr) in &five[2..] {
            s.beat(id, addr, now);
        }
        s.sweep(now);
    }
    s.all_rebalanced(now);
    let view = s.sweep(now + TICK);
    assert!(
        view.rebalancing,
        "a write acknowledged by a and b alone may exist"
    );
    assert_eq!(view.servers.len(), 3);
}

#[test]
fn a_server_that_rejoined_under_a_new_id_still_holds_its_former_ids_ranges() {
    let mut s = Leader::new();
    let first = [("a", ADDR_A), ("b", ADDR_B), ("c", ADDR_C), ("d", ADDR_D)];
    for (id, addr) in first {
        s.beat(id, addr, 0);
    }
    s.all_rebalanced(0);
    let settled = s.sweep(TICK);
    assert!(!settled.rebalancing);
    // The view leader is cut off from everyone for longer than a lease: all expire.
    s.sweep_through(TICK, LEASE + 2 * TICK);
    assert!(s.ids().is_empty());
    // They come back under new ids, each naming the id whose data it kept.
    let back = LEASE + 3 * TICK;
    let settled_view = (settled.settled_epoch, settled.settled_servers.as_slice());
    for rebalanced in [false, true] {
        for (id, addr) in first {
            let new_id = format!("{id}2");
            s.beat_reporting(&new_id, addr, settled_view, &[id], rebalanced, back);
        }
    }
    let view = s.sweep(back + TICK);
    assert!(
        !view.rebalancing,
        "every range has a holder: no need to wait"
    );
    assert!(view.losses.is_empty());
}

#[test]
fn an_epoch_near_the_top_of_the_range_is_refused_and_never_wraps() {
    let mut s = state();
    apply_heartbeat(&mut s, heartbeat("a", ADDR_A, 0, 0, (0, &[]), &[]), 0);
    for (epoch_seen, rebalanced) in [
        (u64::MAX, 0),
        (0, u64::MAX),
        (crate::types::EPOCH_MAX + 1, 0),
    ] {
        let command = heartbeat("a", ADDR_A, epoch_seen, rebalanced, (0, &[]), &[]);
        assert!(invalid(s.apply(command, 0)), "epoch_seen {epoch_seen}");
    }
    assert_eq!(s.epoch(), 1, "a refused heartbeat changes nothing");
}

// ----- properties --------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Beat {
        id: usize,
        addr: usize,
        epoch_seen: u64,
        rebalanced: u64,
    },
    Leave(usize),
    LockGet(usize, usize),
    LockRelease(usize, usize),
    Expire,
    Refresh,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..4usize, 0..8u64, 0..8u64).prop_map(|(id, addr, epoch_seen, rebalanced)| {
            Op::Beat { id, addr, epoch_seen, rebalanced }
        }),
        1 => (0..6usize).prop_map(Op::Leave),
        2 => (0..3usize, 0..6usize).prop_map(|(l, r)| Op::LockGet(l, r)),
        1 => (0..3usize, 0..6usize).prop_map(|(l, r)| Op::LockRelease(l, r)),
        4 => Just(Op::Expire),
        1 => Just(Op::Refresh),
    ]
}

/// Requesters: plain names and the `:PORT` of some server addresses.
const REQUESTERS: [&str; 6] = ["r0", "r1", "r2", ":5001", ":5002", "127.0.0.1:5003"];
const ADDRS: [&str; 4] = [ADDR_A, ADDR_B, ADDR_C, ADDR_D];

proptest! {
    /// Besides the properties below, every heartbeat and sweep checks (in [`Leader`]) that the
    /// leader's quiet answers and skipped sweeps are the ones the log would have given.
    #[test]
    fn random_commands_keep_the_view_sound(
        steps in proptest::collection::vec((0..1_500u64, op()), 1..200)
    ) {
        let mut s = Leader::new();
        let mut now = 0u64;
        let mut epoch = s.epoch();
        let mut heard: HashMap<String, u64> = HashMap::new();
        let mut tokens: HashMap<String, FencingToken> = HashMap::new();
        for (delta, op) in steps {
            now += delta;
            match op {
                Op::Beat { id, addr, epoch_seen, rebalanced } => {
                    let id = format!("s{id}");
                    if !s.state.speaks_for(&id, ADDRS[addr]) {
                        // A live server named at another address: refused, and not heard.
                        let before = s.state.clone();
                        let beat = heartbeat(&id, ADDRS[addr], epoch_seen, rebalanced, (0, &[]), &[]);
                        prop_assert_eq!(s.state.quiet_heartbeat(&beat), None);
                        let refused = s.state.apply(beat, now);
                        prop_assert!(invalid(refused), "a beat for {} at another address", id);
                        prop_assert_eq!(&s.state.members, &before.members);
                        prop_assert_eq!(s.state.epoch, before.epoch);
                        continue;
                    }
                    let reply = s.beat_with(&id, ADDRS[addr], epoch_seen, rebalanced, now);
                    prop_assert!(reply.epoch() >= epoch_seen);
                    heard.insert(id, now);
                }
                Op::Leave(id) => {
                    let reply = s.apply(Command::Leave { server_id: format!("s{id}") }, now);
                    let left = matches!(reply, Ok(Outcome::Left { .. }));
                    prop_assert!(left, "leave answered {:?}", reply);
                }
                Op::LockGet(lock, requester) => {
                    let lock = format!("l{lock}");
                    let reply = s.lock_get(&lock, REQUESTERS[requester], now);
                    if let LockReply::Granted { token } = reply {
                        let previous = tokens.insert(lock.clone(), token).unwrap_or(0);
                        prop_assert!(token >= previous, "token of {} went down", lock);
                    }
                }
                Op::LockRelease(lock, requester) => {
                    s.lock_release(&format!("l{lock}"), REQUESTERS[requester], now);
                }
                Op::Expire => {
                    let before = s.ids();
                    let view = s.sweep(now);
                    let live = |id: &String| heard.get(id).is_some_and(|&at| now - at <= LEASE);
                    for server in &view.servers {
                        prop_assert!(
                            live(&server.id),
                            "{} in the view at {} though last heard at {:?}",
                            server.id, now, heard.get(&server.id)
                        );
                    }
                    for id in before.iter().filter(|id| live(id)) {
                        prop_assert!(
                            view.servers.iter().any(|server| &server.id == id),
                            "{} expired at {} though heard at {:?}", id, now, heard.get(id)
                        );
                    }
                }
                Op::Refresh => s.refresh(now),
            }
            let view = s.view();
            prop_assert!(view.epoch >= epoch, "epoch went down from {} to {}", epoch, view.epoch);
            epoch = view.epoch;
            prop_assert!(s.state.now_ms() <= now, "the state is ahead of the leader's clock");
            let ids: HashSet<&str> = view.servers.iter().map(|info| info.id.as_str()).collect();
            let addrs: HashSet<&str> = view.servers.iter().map(|info| info.addr.as_str()).collect();
            prop_assert_eq!(ids.len(), view.servers.len(), "an id listed twice: {:?}", view);
            prop_assert_eq!(addrs.len(), view.servers.len(), "an address listed twice: {:?}", view);
        }
    }
}

#[test]
fn a_heartbeat_carried_whole_encodes_as_the_struct_variant_it_replaced() {
    // Heartbeats were a struct variant of both the request and the Raft log's command; they
    // carry `types::Heartbeat` now. postcard writes a struct variant's fields after the
    // index exactly as a newtype variant writes its struct, so nothing on the wire or in a
    // member's log changed.
    use crate::rpc::message::ViewLeaderRequest;
    use crate::types::ServerId;
    #[derive(serde::Serialize)]
    enum Before {
        Heartbeat {
            server_id: ServerId,
            addr: String,
            epoch_seen: Epoch,
            rebalanced_epoch: Epoch,
            settled_epoch: Epoch,
            settled_servers: Vec<ServerInfo>,
            former_ids: Vec<ServerId>,
        },
    }
    let beat = Heartbeat {
        server_id: "s".into(),
        addr: "a:1".into(),
        epoch_seen: 300,
        rebalanced_epoch: 299,
        settled_epoch: 298,
        settled_servers: vec![ServerInfo {
            id: "t".into(),
            addr: "b:2".into(),
        }],
        former_ids: vec!["old".into()],
    };
    let before = postcard::to_stdvec(&Before::Heartbeat {
        server_id: beat.server_id.clone(),
        addr: beat.addr.clone(),
        epoch_seen: beat.epoch_seen,
        rebalanced_epoch: beat.rebalanced_epoch,
        settled_epoch: beat.settled_epoch,
        settled_servers: beat.settled_servers.clone(),
        former_ids: beat.former_ids.clone(),
    })
    .unwrap();
    // Heartbeat is variant 0 of both enums, as of `Before`.
    let request = ViewLeaderRequest::Heartbeat(beat.clone());
    assert_eq!(postcard::to_stdvec(&request).unwrap(), before);
    assert_eq!(
        postcard::to_stdvec(&Command::Heartbeat(beat)).unwrap(),
        before
    );
}
