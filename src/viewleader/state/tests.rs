//! Unit tests of the view leader state machine, with explicit time.
//!
//! Every test drives [`State::apply`] with hand-picked times: no clock, no sleeps, no sockets.
//! Time moves in sweeps of [`TICK`] ms (the service's timer resolution) unless a test means to
//! stall, because two sweeps further apart than [`STALL`] are the view leader's own hiccup.
use super::*;
use std::collections::HashSet;

use crate::error::Error;

use proptest::prelude::*;

const LEASE: u64 = 2_000;
const LOCK_LEASE: u64 = 30_000;
const STALL: u64 = 1_000;
const TICK: u64 = 100;

const ADDR_A: &str = "127.0.0.1:5001";
const ADDR_B: &str = "127.0.0.1:5002";
const ADDR_C: &str = "127.0.0.1:5003";

fn config() -> StateConfig {
    StateConfig {
        lease_ms: LEASE,
        lock_lease_ms: LOCK_LEASE,
        stall_ms: STALL,
    }
}

fn state() -> State {
    State::new(config())
}

fn beat_with(
    s: &mut State,
    id: &str,
    addr: &str,
    epoch_seen: Epoch,
    rebalanced_epoch: Epoch,
    now: u64,
) -> HeartbeatReply {
    let command = Command::Heartbeat {
        server_id: id.into(),
        addr: addr.into(),
        epoch_seen,
        rebalanced_epoch,
        settled_epoch: 0,
        settled_servers: Vec::new(),
        former_ids: Vec::new(),
    };
    match s.apply(command, now) {
        Ok(Outcome::Heartbeat(reply)) => reply,
        other => panic!("heartbeat of {id} at {now}: unexpected {other:?}"),
    }
}

/// A heartbeat that reports the server caught up with the state's current epoch.
fn beat(s: &mut State, id: &str, addr: &str, now: u64) -> HeartbeatReply {
    let epoch = s.epoch();
    beat_with(s, id, addr, epoch, 0, now)
}

fn sweep(s: &mut State, now: u64) -> View {
    match s.apply(Command::Expire, now) {
        Ok(Outcome::View(view)) => view,
        other => panic!("sweep at {now}: unexpected {other:?}"),
    }
}

/// Sweeps every [`TICK`] ms in `(from, to]` (and at `to` itself), so no gap counts as a stall.
fn sweep_through(s: &mut State, from: u64, to: u64) {
    let mut now = from + TICK;
    while now < to {
        sweep(s, now);
        now += TICK;
    }
    sweep(s, to);
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

fn ids(s: &State) -> Vec<String> {
    s.view().servers.into_iter().map(|info| info.id).collect()
}

fn invalid(result: Result<Outcome>) -> bool {
    matches!(result, Err(Error::InvalidRequest(_)))
}

// ----- membership --------------------------------------------------------------------------------

#[test]
fn first_heartbeat_joins_and_bumps_the_epoch() {
    let mut s = state();
    assert_eq!(s.epoch(), 0);
    assert_eq!(
        beat(&mut s, "a", ADDR_A, 0),
        HeartbeatReply::Accepted { epoch: 1 }
    );
    assert_eq!(s.epoch(), 1);
    let view = s.view();
    assert_eq!(
        view.servers,
        vec![ServerInfo {
            id: "a".into(),
            addr: ADDR_A.into()
        }]
    );
    assert_eq!(
        beat(&mut s, "b", ADDR_B, 10),
        HeartbeatReply::Accepted { epoch: 2 }
    );
    assert_eq!(ids(&s), ["a", "b"]);
}

#[test]
fn a_known_servers_heartbeat_does_not_bump_the_epoch() {
    let mut s = state();
    beat(&mut s, "a", ADDR_A, 0);
    for now in [500, 1_000, 1_500] {
        assert_eq!(
            beat(&mut s, "a", ADDR_A, now),
            HeartbeatReply::Accepted { epoch: 1 }
        );
    }
    assert_eq!(s.epoch(), 1);
    assert_eq!(ids(&s), ["a"]);
}

#[test]
fn several_servers_expiring_in_one_sweep_bump_the_epoch_once() {
    let mut s = state();
    beat(&mut s, "a", ADDR_A, 0);
    beat(&mut s, "b", ADDR_B, 0);
    beat(&mut s, "c", ADDR_C, 0);
    assert_eq!(s.epoch(), 3);
    sweep(&mut s, 0);
    // c keeps beating; a and b fall silent together.
    let mut now = 0;
    while now < 3_000 {
        now += TICK;
        beat(&mut s, "c", ADDR_C, now);
        let before = s.epoch();
        let view = sweep(&mut s, now);
        if view.servers.len() < 3 {
            assert_eq!(view.epoch, before + 1, "one bump for the whole sweep");
            break;
        }
    }
    assert_eq!(ids(&s), ["c"]);
    assert_eq!(s.epoch(), 4);
}

#[test]
fn a_server_is_expired_only_after_lease_ms_without_heartbeat() {
    let mut s = state();
    beat(&mut s, "a", ADDR_A, 1_000);
    sweep(&mut s, 1_000);
    sweep_through(&mut s, 1_000, 1_000 + LEASE);
    assert_eq!(
        ids(&s),
        ["a"],
        "exactly one lease of silence is not yet too long"
    );
    assert_eq!(s.epoch(), 1);
    let view = sweep(&mut s, 1_000 + LEASE + 1);
    assert!(view.servers.is_empty(), "expired just past the lease");
    assert_eq!(view.epoch, 2);
}

#[test]
fn an_expired_id_that_beats_again_is_denied_and_stays_out_of_the_view() {
    let mut s = state();
    beat(&mut s, "a", ADDR_A, 0);
    sweep(&mut s, 0);
    sweep_through(&mut s, 0, LEASE + TICK);
    assert!(ids(&s).is_empty());
    let epoch = s.epoch();
    assert_eq!(epoch, 2);
    for now in [LEASE + 2 * TICK, LEASE + 3 * TICK] {
        assert_eq!(
            beat(&mut s, "a", ADDR_A, now),
            HeartbeatReply::Denied { epoch }
        );
        assert!(ids(&s).is_empty());
        assert_eq!(s.epoch(), epoch, "a denial is not a view change");
    }
    // The server rejoins under a fresh id at the same address.
    assert_eq!(
        beat(&mut s, "a2", ADDR_A, LEASE + 4 * TICK),
        HeartbeatReply::Accepted { epoch: epoch + 1 }
    );
    assert_eq!(ids(&s), ["a2"]);
}

#[test]
fn a_second_id_at_a_held_address_gets_retry_until_the_holder_expires_then_joins() {
    let mut s = state();
    beat(&mut s, "a", ADDR_A, 0);
    sweep(&mut s, 0);
    let mut now = 0;
    loop {
        now += TICK;
        assert!(now < 10_000, "the holder never expired");
        let view = sweep(&mut s, now);
        let reply = beat(&mut s, "b", ADDR_A, now);
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
        assert_eq!(ids(&s), ["a"]);
    }
    assert_eq!(ids(&s), ["b"]);
    assert_eq!(s.view().servers[0].addr, ADDR_A);
}

#[test]
fn a_heartbeat_with_a_higher_epoch_seen_raises_the_epoch_and_a_join_goes_above_it() {
    // A restarted view leader starts at 0; its first heartbeat comes from a server at 41.
    let mut s = state();
    assert_eq!(
        beat_with(&mut s, "a", ADDR_A, 41, 41, 0),
        HeartbeatReply::Accepted { epoch: 42 }
    );
    assert_eq!(s.epoch(), 42);
    // A lower epoch seen never lowers it.
    assert_eq!(
        beat_with(&mut s, "b", ADDR_B, 3, 0, 10),
        HeartbeatReply::Accepted { epoch: 43 }
    );
    assert_eq!(s.epoch(), 43);
    // A known server reporting a higher epoch raises it without a view change of its own.
    assert_eq!(
        beat_with(&mut s, "a", ADDR_A, 50, 0, 20),
        HeartbeatReply::Accepted { epoch: 50 }
    );
    assert_eq!(s.epoch(), 50);
    assert_eq!(
        beat_with(&mut s, "c", ADDR_C, 0, 0, 30),
        HeartbeatReply::Accepted { epoch: 51 }
    );
}

#[test]
fn a_stall_expires_nobody_and_gives_a_full_lease_from_the_resume_time() {
    let mut s = state();
    beat(&mut s, "a", ADDR_A, 0);
    beat(&mut s, "b", ADDR_B, 0);
    sweep(&mut s, 0);
    sweep_through(&mut s, 0, 1_000);
    let epoch = s.epoch();
    // The view leader stalls for 9 s: far past everyone's lease.
    let resume = 10_000;
    let view = sweep(&mut s, resume);
    assert_eq!(view.servers.len(), 2, "our own stall expires nobody");
    assert_eq!(view.epoch, epoch);
    // b beats again after the resume; a stays silent. A full lease from the resume, both live.
    let mut now = resume;
    while now < resume + LEASE {
        now += TICK;
        if now % 500 == 0 {
            beat(&mut s, "b", ADDR_B, now);
        }
        sweep(&mut s, now);
    }
    assert_eq!(ids(&s), ["a", "b"], "a full lease after the resume");
    assert_eq!(s.epoch(), epoch);
    // One tick later a, silent for a full lease after the resume, is expired.
    let view = sweep(&mut s, resume + LEASE + TICK);
    assert_eq!(ids(&s), ["b"]);
    assert_eq!(view.epoch, epoch + 1);
}

#[test]
fn rebalancing_is_true_until_every_live_member_reports_the_epoch() {
    let mut s = state();
    assert!(
        !s.view().rebalancing,
        "an empty cluster has nothing to move"
    );
    beat_with(&mut s, "a", ADDR_A, 0, 0, 0);
    assert_eq!(s.epoch(), 1);
    assert!(s.view().rebalancing);
    beat_with(&mut s, "a", ADDR_A, 1, 1, 10);
    assert!(!s.view().rebalancing);
    beat_with(&mut s, "b", ADDR_B, 1, 1, 20);
    assert_eq!(s.epoch(), 2);
    assert!(s.view().rebalancing, "nobody reported epoch 2 yet");
    beat_with(&mut s, "a", ADDR_A, 2, 2, 30);
    assert!(s.view().rebalancing, "b has not reported epoch 2");
    beat_with(&mut s, "b", ADDR_B, 2, 1, 40);
    assert!(s.view().rebalancing, "b saw epoch 2 but did not finish it");
    beat_with(&mut s, "b", ADDR_B, 2, 2, 50);
    assert!(!s.view().rebalancing);
    // An expiry is a new epoch that the survivors must report again.
    sweep(&mut s, 50);
    let mut now = 50;
    while s.view().servers.len() == 2 {
        now += TICK;
        assert!(now < 10_000);
        beat_with(&mut s, "a", ADDR_A, 2, 2, now);
        sweep(&mut s, now);
    }
    assert_eq!(s.epoch(), 3);
    assert!(s.view().rebalancing);
    beat_with(&mut s, "a", ADDR_A, 3, 3, now + 1);
    assert!(!s.view().rebalancing);
}

#[test]
fn leave_removes_a_server_bumps_the_epoch_and_a_later_heartbeat_is_denied() {
    let mut s = state();
    beat(&mut s, "a", ADDR_A, 0);
    beat(&mut s, "b", ADDR_B, 0);
    assert_eq!(
        s.apply(
            Command::Leave {
                server_id: "a".into()
            },
            10
        ),
        Ok(Outcome::Left { epoch: 3 })
    );
    assert_eq!(ids(&s), ["b"]);
    assert_eq!(
        beat(&mut s, "a", ADDR_A, 20),
        HeartbeatReply::Denied { epoch: 3 }
    );
    assert_eq!(ids(&s), ["b"]);
    // Leaving twice, or an unknown id leaving, changes nothing.
    assert_eq!(
        s.apply(
            Command::Leave {
                server_id: "a".into()
            },
            30
        ),
        Ok(Outcome::Left { epoch: 3 })
    );
    assert_eq!(s.epoch(), 3);
}

// ----- locks -------------------------------------------------------------------------------------

#[test]
fn lock_get_on_a_free_lock_is_granted() {
    let mut s = state();
    let token = granted(lock_get(&mut s, "x", "alice", 0));
    assert!(token > 0);
    assert_eq!(
        lock_get(&mut s, "x", "bob", 1),
        LockReply::Retry {
            holder: "alice".into(),
            position: 1
        }
    );
    // Another lock is independent.
    granted(lock_get(&mut s, "y", "bob", 2));
}

#[test]
fn waiters_are_granted_in_fifo_order_as_the_holder_releases() {
    let mut s = state();
    granted(lock_get(&mut s, "x", "h", 0));
    for (position, waiter) in ["w1", "w2", "w3"].into_iter().enumerate() {
        assert_eq!(
            lock_get(&mut s, "x", waiter, 1),
            LockReply::Retry {
                holder: "h".into(),
                position: position + 1
            }
        );
    }
    assert_eq!(lock_release(&mut s, "x", "h", 2), LockReply::Released);
    granted(lock_get(&mut s, "x", "w1", 3));
    assert_eq!(
        lock_get(&mut s, "x", "w3", 3),
        LockReply::Retry {
            holder: "w1".into(),
            position: 2
        }
    );
    assert_eq!(
        lock_get(&mut s, "x", "w2", 3),
        LockReply::Retry {
            holder: "w1".into(),
            position: 1
        }
    );
    assert_eq!(lock_release(&mut s, "x", "w1", 4), LockReply::Released);
    granted(lock_get(&mut s, "x", "w2", 5));
    assert_eq!(lock_release(&mut s, "x", "w2", 6), LockReply::Released);
    granted(lock_get(&mut s, "x", "w3", 7));
    assert_eq!(lock_release(&mut s, "x", "w3", 8), LockReply::Released);
    // The queue is empty again: anyone gets it at once.
    granted(lock_get(&mut s, "x", "late", 9));
}

#[test]
fn releasing_a_waiter_in_the_middle_of_the_queue_removes_only_it() {
    let mut s = state();
    let token = granted(lock_get(&mut s, "x", "h", 0));
    lock_get(&mut s, "x", "w1", 1);
    lock_get(&mut s, "x", "w2", 1);
    lock_get(&mut s, "x", "w3", 1);
    assert_eq!(lock_release(&mut s, "x", "w2", 2), LockReply::Released);
    assert_eq!(
        granted(lock_get(&mut s, "x", "h", 3)),
        token,
        "the holder keeps its grant"
    );
    assert_eq!(
        lock_get(&mut s, "x", "w3", 3),
        LockReply::Retry {
            holder: "h".into(),
            position: 2
        }
    );
    assert_eq!(lock_release(&mut s, "x", "h", 4), LockReply::Released);
    granted(lock_get(&mut s, "x", "w1", 5));
    assert_eq!(
        lock_get(&mut s, "x", "w3", 5),
        LockReply::Retry {
            holder: "w1".into(),
            position: 1
        }
    );
}

#[test]
fn releasing_for_an_unknown_requester_answers_unknown() {
    let mut s = state();
    assert_eq!(lock_release(&mut s, "nope", "alice", 0), LockReply::Unknown);
    granted(lock_get(&mut s, "x", "alice", 1));
    assert_eq!(lock_release(&mut s, "x", "bob", 2), LockReply::Unknown);
    assert_eq!(lock_release(&mut s, "x", "alice", 3), LockReply::Released);
    assert_eq!(lock_release(&mut s, "x", "alice", 4), LockReply::Unknown);
}

#[test]
fn lock_get_from_the_holder_renews_its_lease() {
    let mut s = state();
    let token = granted(lock_get(&mut s, "x", "h", 0));
    sweep(&mut s, 0);
    sweep_through(&mut s, 0, 20_000);
    assert_eq!(
        granted(lock_get(&mut s, "x", "h", 20_000)),
        token,
        "a renewal is the same grant"
    );
    // Past the first lease, but within one of the renewal: still held.
    sweep_through(&mut s, 20_000, 20_000 + LOCK_LEASE);
    assert_eq!(
        lock_get(&mut s, "x", "other", 20_000 + LOCK_LEASE),
        LockReply::Retry {
            holder: "h".into(),
            position: 1
        }
    );
    assert_eq!(
        lock_release(&mut s, "x", "other", 20_000 + LOCK_LEASE),
        LockReply::Released
    );
    // Without another renewal it lapses.
    sweep_through(&mut s, 20_000 + LOCK_LEASE, 20_000 + LOCK_LEASE + TICK);
    assert_eq!(lock_release(&mut s, "x", "h", 60_000), LockReply::Unknown);
    assert!(granted(lock_get(&mut s, "x", "other", 60_000)) > token);
}

#[test]
fn fencing_tokens_strictly_grow_with_each_grant_of_a_lock() {
    let mut s = state();
    let mut tokens = vec![granted(lock_get(&mut s, "x", "a", 0))];
    lock_get(&mut s, "x", "b", 1);
    lock_get(&mut s, "x", "c", 1);
    granted(lock_get(&mut s, "y", "z", 2));
    lock_release(&mut s, "x", "a", 3);
    tokens.push(granted(lock_get(&mut s, "x", "b", 4)));
    granted(lock_get(&mut s, "w", "z", 5));
    lock_release(&mut s, "x", "b", 6);
    tokens.push(granted(lock_get(&mut s, "x", "c", 7)));
    // Emptied and granted afresh, even to an earlier holder.
    lock_release(&mut s, "x", "c", 8);
    tokens.push(granted(lock_get(&mut s, "x", "a", 9)));
    lock_release(&mut s, "x", "a", 10);
    tokens.push(granted(lock_get(&mut s, "x", "a", 11)));
    assert!(
        tokens.windows(2).all(|pair| pair[0] < pair[1]),
        "tokens {tokens:?} must strictly grow"
    );
}

#[test]
fn a_server_named_requester_holds_its_lock_until_the_server_expires_then_the_next_waiter_is_granted(
) {
    let mut s = state();
    beat(&mut s, "s1", ADDR_A, 0);
    sweep(&mut s, 0);
    let token = granted(lock_get(&mut s, "x", ":5001", 0));
    lock_get(&mut s, "x", "client", 0);
    // The server lives well past the lock lease; the client polls; nobody releases.
    let mut now = 0;
    while now < LOCK_LEASE + 10_000 {
        now += TICK;
        if now % 500 == 0 {
            beat(&mut s, "s1", ADDR_A, now);
        }
        if now % 1_000 == 0 {
            assert_eq!(
                lock_get(&mut s, "x", "client", now),
                LockReply::Retry {
                    holder: ":5001".into(),
                    position: 1
                }
            );
        }
        sweep(&mut s, now);
    }
    // The server falls silent and expires: the lock goes to the next waiter.
    let silent_from = now;
    while ids(&s).contains(&"s1".to_string()) {
        now += TICK;
        assert!(now <= silent_from + LEASE + TICK, "s1 never expired");
        sweep(&mut s, now);
    }
    let next = granted(lock_get(&mut s, "x", "client", now));
    assert!(next > token);
    assert_eq!(lock_release(&mut s, "x", ":5001", now), LockReply::Unknown);
}

#[test]
fn a_requester_naming_a_servers_full_address_is_released_when_it_expires() {
    let mut s = state();
    beat(&mut s, "s1", ADDR_A, 0);
    sweep(&mut s, 0);
    granted(lock_get(&mut s, "x", ADDR_A, 0));
    lock_get(&mut s, "x", "client", 0);
    sweep_through(&mut s, 0, LEASE + TICK);
    assert!(ids(&s).is_empty());
    granted(lock_get(&mut s, "x", "client", LEASE + TICK));
}

#[test]
fn a_non_server_holders_place_lapses_after_the_lock_lease_without_lock_get() {
    let mut s = state();
    let token = granted(lock_get(&mut s, "x", "h", 0));
    lock_get(&mut s, "x", "w", 0);
    sweep(&mut s, 0);
    let mut now = 0;
    // w polls every second; h never renews.
    while now < LOCK_LEASE {
        now += TICK;
        if now % 1_000 == 0 {
            assert!(matches!(
                lock_get(&mut s, "x", "w", now),
                LockReply::Retry { .. }
            ));
        }
        sweep(&mut s, now);
    }
    assert_eq!(
        lock_get(&mut s, "x", "w", now),
        LockReply::Retry {
            holder: "h".into(),
            position: 1
        },
        "exactly one lock lease is not yet too long"
    );
    sweep(&mut s, LOCK_LEASE + TICK);
    assert!(granted(lock_get(&mut s, "x", "w", LOCK_LEASE + TICK)) > token);
    assert_eq!(
        lock_release(&mut s, "x", "h", LOCK_LEASE + TICK),
        LockReply::Unknown
    );
}

#[test]
fn a_non_server_waiters_place_lapses_after_the_lock_lease_without_lock_get() {
    let mut s = state();
    granted(lock_get(&mut s, "x", "h", 0));
    lock_get(&mut s, "x", "silent", 0);
    lock_get(&mut s, "x", "polling", 0);
    sweep(&mut s, 0);
    let mut now = 0;
    while now < LOCK_LEASE + 1_000 {
        now += TICK;
        if now % 1_000 == 0 {
            granted(lock_get(&mut s, "x", "h", now));
            lock_get(&mut s, "x", "polling", now);
        }
        sweep(&mut s, now);
    }
    assert_eq!(lock_release(&mut s, "x", "silent", now), LockReply::Unknown);
    assert_eq!(
        lock_get(&mut s, "x", "polling", now),
        LockReply::Retry {
            holder: "h".into(),
            position: 1
        }
    );
}

#[test]
fn a_server_named_requester_does_not_lapse_while_the_server_lives() {
    let mut s = state();
    beat(&mut s, "s1", ADDR_A, 0);
    sweep(&mut s, 0);
    let token = granted(lock_get(&mut s, "x", ":5001", 0));
    granted(lock_get(&mut s, "y", "h", 0));
    lock_get(&mut s, "y", ":5001", 0);
    let mut now = 0;
    while now < 3 * LOCK_LEASE {
        now += TICK;
        if now % 500 == 0 {
            beat(&mut s, "s1", ADDR_A, now);
            granted(lock_get(&mut s, "y", "h", now));
        }
        sweep(&mut s, now);
    }
    assert_eq!(ids(&s), ["s1"]);
    assert_eq!(
        lock_get(&mut s, "x", "other", now),
        LockReply::Retry {
            holder: ":5001".into(),
            position: 1
        },
        "the holder keeps the lock"
    );
    assert_eq!(granted(lock_get(&mut s, "x", ":5001", now)), token);
    assert_eq!(
        lock_get(&mut s, "y", ":5001", now),
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
    let mut s = state();
    granted(lock_get(&mut s, "x", "A", 0));
    granted(lock_get(&mut s, "y", "B", 0));
    assert!(matches!(
        lock_get(&mut s, "x", "B", 1),
        LockReply::Retry { .. }
    ));
    assert_eq!(
        lock_get(&mut s, "y", "A", 2),
        LockReply::Deadlock {
            cycle: vec!["A".into(), "B".into(), "A".into()]
        }
    );
    assert_eq!(
        lock_release(&mut s, "y", "A", 3),
        LockReply::Unknown,
        "A was not enqueued"
    );
    // Once B gives up y, A gets it at once: nobody was left queued behind.
    assert_eq!(lock_release(&mut s, "y", "B", 4), LockReply::Released);
    granted(lock_get(&mut s, "y", "A", 5));
}

#[test]
fn a_three_party_cycle_is_refused_as_a_deadlock() {
    let mut s = state();
    granted(lock_get(&mut s, "x", "A", 0));
    granted(lock_get(&mut s, "y", "B", 0));
    granted(lock_get(&mut s, "z", "C", 0));
    assert!(matches!(
        lock_get(&mut s, "y", "A", 1),
        LockReply::Retry { .. }
    ));
    assert!(matches!(
        lock_get(&mut s, "z", "B", 1),
        LockReply::Retry { .. }
    ));
    match lock_get(&mut s, "x", "C", 2) {
        LockReply::Deadlock { cycle } => {
            assert_eq!(cycle, ["C", "A", "B", "C"]);
        }
        other => panic!("expected a deadlock, got {other:?}"),
    }
    assert_eq!(lock_release(&mut s, "x", "C", 3), LockReply::Unknown);
}

#[test]
fn a_chain_without_a_cycle_just_waits() {
    let mut s = state();
    granted(lock_get(&mut s, "x", "A", 0));
    granted(lock_get(&mut s, "y", "B", 0));
    granted(lock_get(&mut s, "z", "C", 0));
    // B waits on A, C waits on B: a chain C -> B -> A.
    lock_get(&mut s, "x", "B", 1);
    assert_eq!(
        lock_get(&mut s, "y", "C", 1),
        LockReply::Retry {
            holder: "B".into(),
            position: 1
        }
    );
    // D waits on C at the far end of the chain: still no cycle.
    assert_eq!(
        lock_get(&mut s, "z", "D", 2),
        LockReply::Retry {
            holder: "C".into(),
            position: 1
        }
    );
    // A second waiter on the same lock is not a cycle either.
    assert_eq!(
        lock_get(&mut s, "x", "E", 2),
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
        let command = Command::Heartbeat {
            server_id: id.into(),
            addr: addr.into(),
            epoch_seen: 7,
            rebalanced_epoch: 7,
            settled_epoch: 0,
            settled_servers: Vec::new(),
            former_ids: Vec::new(),
        };
        assert!(invalid(s.apply(command, 0)), "heartbeat({id:?}, {addr:?})");
    }
    assert_eq!(s.epoch(), 0, "a refused heartbeat changes nothing");
    assert!(ids(&s).is_empty());
}

// ----- settling after restarts and losses ------------------------------------------------------------

fn info(id: &str, addr: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        addr: addr.into(),
    }
}

/// A heartbeat that reports the settled view the server holds, the ids it held before, and
/// whether it rebalanced for the current epoch.
fn beat_reporting(
    s: &mut State,
    id: &str,
    addr: &str,
    settled: (Epoch, &[ServerInfo]),
    former_ids: &[&str],
    rebalanced: bool,
    now: u64,
) -> HeartbeatReply {
    let epoch = s.epoch().max(settled.0);
    let command = Command::Heartbeat {
        server_id: id.into(),
        addr: addr.into(),
        epoch_seen: epoch,
        rebalanced_epoch: if rebalanced { epoch } else { 0 },
        settled_epoch: settled.0,
        settled_servers: settled.1.to_vec(),
        former_ids: former_ids.iter().map(|f| f.to_string()).collect(),
    };
    match s.apply(command, now) {
        Ok(Outcome::Heartbeat(reply)) => reply,
        other => panic!("heartbeat of {id} at {now}: unexpected {other:?}"),
    }
}

/// Every member reports the current epoch rebalanced at `now`.
fn all_rebalanced(s: &mut State, now: u64) {
    let epoch = s.epoch();
    for member in s.view().servers {
        beat_with(s, &member.id, &member.addr, epoch, epoch, now);
    }
}

const ADDR_D: &str = "127.0.0.1:5004";
const ADDR_E: &str = "127.0.0.1:5005";

#[test]
fn a_restarted_viewleader_adopts_the_reported_settled_view_and_waits_for_its_servers() {
    let old = [
        info("a", ADDR_A),
        info("b", ADDR_B),
        info("c", ADDR_C),
        info("d", ADDR_D),
        info("e", ADDR_E),
    ];
    let mut s = state();
    // The first server back reports the settled view of epoch 7 and is alone in the new one:
    // of five servers, it holds only some of the keys.
    beat_reporting(&mut s, "a", ADDR_A, (7, &old), &[], false, 0);
    beat_reporting(&mut s, "a", ADDR_A, (7, &old), &[], true, 10);
    let view = sweep(&mut s, 100);
    assert_eq!(
        view.settled_epoch, 7,
        "the reported settled view is adopted"
    );
    assert_eq!(view.settled_servers, old.to_vec());
    assert!(
        view.rebalancing,
        "a view holding only some of the keys must not settle while the others may be on their way back"
    );
    // They come back (under their own ids: a restarted view leader expired nobody).
    for (i, server) in old.iter().enumerate().skip(1) {
        beat_reporting(
            &mut s,
            &server.id,
            &server.addr,
            (7, &old),
            &[],
            false,
            200 + i as u64,
        );
    }
    all_rebalanced(&mut s, 400);
    let view = sweep(&mut s, 500);
    assert!(
        !view.rebalancing,
        "everyone is back: the view settles at once"
    );
    assert_eq!(view.settled_servers.len(), 5);
    assert!(view.losses.is_empty(), "nothing was lost");
}

#[test]
fn a_view_missing_every_holder_of_a_range_settles_after_the_return_wait_and_records_the_loss() {
    let mut s = state();
    for (id, addr) in [("a", ADDR_A), ("b", ADDR_B), ("c", ADDR_C)] {
        beat(&mut s, id, addr, 0);
    }
    all_rebalanced(&mut s, 0);
    assert!(!sweep(&mut s, TICK).rebalancing);
    // All three die at once; a fresh server (no former ids) joins.
    sweep_through(&mut s, TICK, LEASE + 2 * TICK);
    assert!(s.view().servers.is_empty());
    assert_eq!(
        s.view().settled_servers.len(),
        3,
        "an empty view never settles"
    );
    let joined_at = LEASE + 3 * TICK;
    beat(&mut s, "fresh", ADDR_A, joined_at);
    all_rebalanced(&mut s, joined_at);
    assert!(
        sweep(&mut s, joined_at + TICK).rebalancing,
        "the old holders may be coming back"
    );
    // The fresh server keeps beating; nobody else comes.
    let wait = RETURN_WAIT_LEASES * LEASE;
    let mut now = joined_at + TICK;
    while now < joined_at + wait {
        now += TICK;
        all_rebalanced(&mut s, now);
        assert!(sweep(&mut s, now).rebalancing, "still waiting at {now}");
    }
    now += 2 * TICK;
    all_rebalanced(&mut s, now);
    sweep(&mut s, now);
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
    let settle_all = |s: &mut State| {
        for (id, addr) in five {
            beat(s, id, addr, 0);
        }
        all_rebalanced(s, 0);
        assert!(!sweep(s, TICK).rebalancing);
    };
    // Only "a" stops beating: every range keeps two of its three replicas.
    let mut s = state();
    settle_all(&mut s);
    let mut now = TICK;
    while s.view().servers.len() == 5 {
        now += TICK;
        for (id, addr) in &five[1..] {
            beat(&mut s, id, addr, now);
        }
        sweep(&mut s, now);
    }
    all_rebalanced(&mut s, now);
    assert!(
        !sweep(&mut s, now + TICK).rebalancing,
        "a majority of every range survived"
    );
    // "a" and "b" stop beating together: some range lost two of its three replicas.
    let mut s = state();
    settle_all(&mut s);
    let mut now = TICK;
    while s.view().servers.len() == 5 {
        now += TICK;
        for (id, addr) in &five[2..] {
            beat(&mut s, id, addr, now);
        }
        sweep(&mut s, now);
    }
    all_rebalanced(&mut s, now);
    let view = sweep(&mut s, now + TICK);
    assert!(
        view.rebalancing,
        "a write acknowledged by a and b alone may exist"
    );
    assert_eq!(view.servers.len(), 3);
}

#[test]
fn a_server_that_rejoined_under_a_new_id_still_holds_its_former_ids_ranges() {
    let mut s = state();
    let first = [("a", ADDR_A), ("b", ADDR_B), ("c", ADDR_C), ("d", ADDR_D)];
    for (id, addr) in first {
        beat(&mut s, id, addr, 0);
    }
    all_rebalanced(&mut s, 0);
    let settled = sweep(&mut s, TICK);
    assert!(!settled.rebalancing);
    // The view leader is cut off from everyone for longer than a lease: all expire.
    sweep_through(&mut s, TICK, LEASE + 2 * TICK);
    // They come back under new ids, each naming the id whose data it kept.
    let back = LEASE + 3 * TICK;
    let settled_view = (settled.settled_epoch, settled.settled_servers.as_slice());
    for rebalanced in [false, true] {
        for (id, addr) in first {
            let new_id = format!("{id}2");
            beat_reporting(&mut s, &new_id, addr, settled_view, &[id], rebalanced, back);
        }
    }
    let view = sweep(&mut s, back + TICK);
    assert!(
        !view.rebalancing,
        "every range has a holder: no need to wait"
    );
    assert!(view.losses.is_empty());
}

#[test]
fn fencing_tokens_of_a_later_generation_are_above_every_earlier_one() {
    let mut first = State::restarted(config(), 1, 0);
    let mut last = 0;
    for i in 0..5 {
        let token = granted(lock_get(&mut first, "l", &format!("r{i}"), 0));
        assert!(token > last);
        last = token;
        lock_release(&mut first, "l", &format!("r{i}"), 0);
    }
    let mut second = State::restarted(config(), 2, 0);
    assert!(granted(lock_get(&mut second, "l", "r0", LOCK_LEASE)) > last);
}

#[test]
fn a_restarted_viewleader_grants_no_lock_until_a_holder_from_before_would_have_lapsed() {
    let mut s = State::restarted(config(), 2, 0);
    assert_eq!(
        lock_get(&mut s, "l", "newcomer", 0),
        LockReply::Recovering {
            wait_ms: LOCK_LEASE
        }
    );
    assert!(matches!(
        lock_get(&mut s, "l", "newcomer", LOCK_LEASE - 1),
        LockReply::Recovering { wait_ms: 1 }
    ));
    granted(lock_get(&mut s, "l", "newcomer", LOCK_LEASE));
    // A first start ever has nobody to wait for.
    granted(lock_get(&mut State::restarted(config(), 1, 0), "l", "r", 0));
}

#[test]
fn a_restarted_viewleader_names_every_view_above_its_epoch_floor() {
    let mut s = State::restarted(config(), 2, 1_000);
    // A server that lagged behind reports an old epoch: the new view is still above the floor.
    assert_eq!(beat_with(&mut s, "a", ADDR_A, 9, 9, 0).epoch(), 1_001);
}

#[test]
fn a_restarted_viewleader_that_heard_of_no_settled_view_waits_before_settling() {
    let mut s = State::restarted(config(), 2, 1_000);
    beat(&mut s, "a", ADDR_A, 0);
    all_rebalanced(&mut s, 0);
    assert!(
        sweep(&mut s, TICK).rebalancing,
        "its servers may still be on their way back with what it forgot"
    );
    let mut now = TICK;
    while now <= RETURN_WAIT_LEASES * LEASE {
        now += TICK;
        all_rebalanced(&mut s, now);
        sweep(&mut s, now);
    }
    assert!(
        !s.view().rebalancing,
        "nobody came: it settles after the wait"
    );
}

#[test]
fn an_epoch_near_the_top_of_the_range_is_refused_and_never_wraps() {
    let mut s = state();
    beat(&mut s, "a", ADDR_A, 0);
    for (epoch_seen, rebalanced) in [
        (u64::MAX, 0),
        (0, u64::MAX),
        (crate::types::EPOCH_MAX + 1, 0),
    ] {
        let command = Command::Heartbeat {
            server_id: "a".into(),
            addr: ADDR_A.into(),
            epoch_seen,
            rebalanced_epoch: rebalanced,
            settled_epoch: 0,
            settled_servers: Vec::new(),
            former_ids: Vec::new(),
        };
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
    ]
}

/// Requesters: plain names and the `:PORT` of some server addresses.
const REQUESTERS: [&str; 6] = ["r0", "r1", "r2", ":5001", ":5002", "127.0.0.1:5003"];
const ADDRS: [&str; 4] = [ADDR_A, ADDR_B, ADDR_C, "127.0.0.1:5004"];

proptest! {
    #[test]
    fn random_commands_keep_the_view_sound(
        steps in proptest::collection::vec((0..1_500u64, op()), 1..200)
    ) {
        let mut s = state();
        let mut now = 0u64;
        let mut epoch = s.epoch();
        let mut heard: HashMap<String, u64> = HashMap::new();
        let mut last_sweep: Option<u64> = None;
        let mut last_stall: Option<u64> = None;
        let mut tokens: HashMap<String, FencingToken> = HashMap::new();
        for (delta, op) in steps {
            now += delta;
            match op {
                Op::Beat { id, addr, epoch_seen, rebalanced } => {
                    let id = format!("s{id}");
                    let reply = beat_with(&mut s, &id, ADDRS[addr], epoch_seen, rebalanced, now);
                    prop_assert!(reply.epoch() >= epoch_seen);
                    if matches!(reply, HeartbeatReply::Accepted { .. }) {
                        heard.insert(id, now);
                    }
                }
                Op::Leave(id) => {
                    let reply = s.apply(Command::Leave { server_id: format!("s{id}") }, now);
                    let left = matches!(reply, Ok(Outcome::Left { .. }));
                    prop_assert!(left, "leave answered {:?}", reply);
                }
                Op::LockGet(lock, requester) => {
                    let lock = format!("l{lock}");
                    let reply = lock_get(&mut s, &lock, REQUESTERS[requester], now);
                    if let LockReply::Granted { token } = reply {
                        let previous = tokens.insert(lock.clone(), token).unwrap_or(0);
                        prop_assert!(token >= previous, "token of {} went down", lock);
                    }
                }
                Op::LockRelease(lock, requester) => {
                    lock_release(&mut s, &format!("l{lock}"), REQUESTERS[requester], now);
                }
                Op::Expire => {
                    if last_sweep.is_some_and(|last| now - last > STALL) {
                        last_stall = Some(now);
                    }
                    last_sweep = Some(now);
                    let view = sweep(&mut s, now);
                    for server in &view.servers {
                        let heard_at = heard[&server.id].max(last_stall.unwrap_or(0));
                        prop_assert!(
                            now - heard_at <= LEASE,
                            "{} in the view at {} though last heard at {}",
                            server.id, now, heard_at
                        );
                    }
                }
            }
            let view = s.view();
            prop_assert!(view.epoch >= epoch, "epoch went down from {} to {}", epoch, view.epoch);
            epoch = view.epoch;
            let ids: HashSet<&str> = view.servers.iter().map(|info| info.id.as_str()).collect();
            let addrs: HashSet<&str> = view.servers.iter().map(|info| info.addr.as_str()).collect();
            prop_assert_eq!(ids.len(), view.servers.len(), "an id listed twice: {:?}", view);
            prop_assert_eq!(addrs.len(), view.servers.len(), "an address listed twice: {:?}", view);
        }
    }
}
