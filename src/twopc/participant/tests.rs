//! Unit tests of the participant: votes, idempotence, and termination without the coordinator.

use super::*;
use crate::storage::{set_local, Memory};

const ME: &str = "me";

fn server(id: &str) -> ServerInfo {
    ServerInfo {
        id: id.into(),
        addr: format!("{id}:1"),
    }
}

fn ctx() -> Context<'static> {
    Context {
        server_id: ME,
        epoch: 3,
        rebalancing: false,
        now_ms: 0,
        vote_yes_on_held_keys: false,
    }
}

/// A prepare of `op` on `key` at `version`, with this server as primary unless `primary` says.
fn args(tx: TxId, key: &str, op: Op, version: Version, primary: &str) -> Prepare {
    let mut participants = vec![server(primary)];
    if primary != ME {
        participants.push(server(ME));
    }
    participants.push(server("third"));
    Prepare {
        tx,
        key: key.into(),
        op,
        epoch: 3,
        expected_server_id: ME.into(),
        version,
        participants,
        range_lost: false,
    }
}

fn put(s: &str) -> Op {
    Op::Put(Value::Text(s.into()))
}

#[test]
fn a_yes_vote_holds_the_key_until_commit() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    assert_eq!(
        p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 10, ME)),
        Ok(Vote::Yes)
    );
    let second = p.prepare(&ctx(), &mut store, args(2, "k", put("b"), 11, ME));
    assert!(matches!(second, Err(Error::Conflict(_))), "{second:?}");
    assert_eq!(p.commit(&mut store, 1), Ok(10));
    assert_eq!(store.get("k").map(|v| v.version), Some(10));
    assert_eq!(
        p.prepare(&ctx(), &mut store, args(2, "k", put("b"), 11, ME)),
        Ok(Vote::Yes)
    );
}

#[test]
fn a_version_not_above_the_keys_is_outdated() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 10, ME))
        .unwrap();
    p.commit(&mut store, 1).unwrap();
    assert_eq!(
        p.prepare(&ctx(), &mut store, args(2, "k", put("b"), 10, ME)),
        Ok(Vote::Outdated { above: 10 })
    );
    assert!(!p.is_held("k"), "an outdated vote holds nothing");
}

#[test]
fn transactions_on_different_keys_proceed_concurrently() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    assert!(p
        .prepare(&ctx(), &mut store, args(1, "a", put("x"), 1, ME))
        .is_ok());
    assert!(p
        .prepare(&ctx(), &mut store, args(2, "b", put("y"), 1, ME))
        .is_ok());
    assert_eq!(p.pending_count(), 2);
}

#[test]
fn a_wrong_epoch_or_id_or_rebalancing_votes_no() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    let mut wrong_epoch = args(1, "k", put("a"), 1, ME);
    wrong_epoch.epoch = 2;
    assert!(matches!(
        p.prepare(&ctx(), &mut store, wrong_epoch),
        Err(Error::StaleView(_))
    ));
    let mut wrong_id = args(1, "k", put("a"), 1, ME);
    wrong_id.expected_server_id = "other".into();
    assert!(matches!(
        p.prepare(&ctx(), &mut store, wrong_id),
        Err(Error::StaleView(_))
    ));
    let busy = Context {
        rebalancing: true,
        ..ctx()
    };
    assert!(matches!(
        p.prepare(&busy, &mut store, args(1, "k", put("a"), 1, ME)),
        Err(Error::Rebalancing(_))
    ));
    assert_eq!(p.pending_count(), 0, "a no vote holds nothing");
}

#[test]
fn commit_and_abort_are_idempotent() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 7, ME))
        .unwrap();
    assert_eq!(p.commit(&mut store, 1), Ok(7));
    assert_eq!(p.commit(&mut store, 1), Ok(7));
    assert!(
        p.abort(&mut store, 1).is_err(),
        "a committed transaction cannot be aborted"
    );

    p.prepare(&ctx(), &mut store, args(2, "k", put("b"), 8, ME))
        .unwrap();
    p.abort(&mut store, 2).unwrap();
    p.abort(&mut store, 2).unwrap();
    assert!(
        p.commit(&mut store, 2).is_err(),
        "an aborted transaction cannot commit"
    );
    assert_eq!(store.get("k").map(|v| v.version), Some(7));
    assert!(!p.is_held("k"), "abort frees the key");
}

#[test]
fn a_retried_prepare_gets_the_same_vote() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    assert_eq!(
        p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 1, ME)),
        Ok(Vote::Yes)
    );
    assert_eq!(
        p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 1, ME)),
        Ok(Vote::Yes)
    );
    assert_eq!(p.pending_count(), 1);
}

#[test]
fn an_append_extends_the_list_once_however_often_it_is_committed() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(
        &ctx(),
        &mut store,
        args(1, "l", Op::Append("a".into()), 1, ME),
    )
    .unwrap();
    p.commit(&mut store, 1).unwrap();
    p.prepare(
        &ctx(),
        &mut store,
        args(2, "l", Op::Append("b".into()), 2, ME),
    )
    .unwrap();
    p.commit(&mut store, 2).unwrap();
    p.commit(&mut store, 2).unwrap();
    assert_eq!(
        store.get("l").map(|v| v.value.clone()),
        Some(Value::List(vec!["a".into(), "b".into()]))
    );
}

#[test]
fn appending_to_a_text_is_refused() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    set_local(&mut store, "t".into(), Value::Text("x".into())).unwrap();
    let vote = p.prepare(
        &ctx(),
        &mut store,
        args(1, "t", Op::Append("a".into()), 5, ME),
    );
    assert!(matches!(vote, Err(Error::InvalidRequest(_))), "{vote:?}");
}

#[test]
fn an_overdue_transaction_is_aborted_by_its_primary_and_raises_the_floor() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, ME))
        .unwrap();
    assert!(p.overdue(100, 1_000).is_empty(), "not overdue yet");
    let overdue = p.overdue(1_001, 1_000);
    assert_eq!(
        overdue,
        vec![Overdue::AbortAsPrimary {
            tx: 1,
            key: "k".into()
        }]
    );
    assert!(p.is_held("k"), "asking what is overdue changes nothing");
    p.abort(&mut store, 1).unwrap();
    assert!(
        p.commit(&mut store, 1).is_err(),
        "the late coordinator's commit is refused"
    );
    // A later write must go above the aborted one's version.
    assert_eq!(
        p.prepare(&ctx(), &mut store, args(2, "k", put("b"), 9, ME)),
        Ok(Vote::Outdated { above: 9 })
    );
}

#[test]
fn an_overdue_transaction_elsewhere_asks_the_primary_first() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, "boss"))
        .unwrap();
    match p.overdue(5_000, 1_000).as_slice() {
        [Overdue::Ask { tx: 1, others }] => {
            let ids: Vec<&str> = others.iter().map(|o| o.id.as_str()).collect();
            assert_eq!(ids, vec!["boss", "third"]);
        }
        other => panic!("expected one ask, got {other:?}"),
    }
    assert!(p.is_held("k"), "a non-primary never aborts on its own");
}

#[test]
fn termination_commits_when_any_participant_committed() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, "boss"))
        .unwrap();
    let answers = [
        (server("boss"), None),
        (server("third"), Some(TxState::Committed { version: 9 })),
    ];
    assert_eq!(
        p.resolve(&mut store, 1, &answers, |_| true),
        TxState::Committed { version: 9 }
    );
    assert_eq!(store.get("k").map(|v| v.version), Some(9));
}

#[test]
fn termination_aborts_when_the_primary_aborted() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, "boss"))
        .unwrap();
    let answers = [
        (server("boss"), Some(TxState::Aborted)),
        (server("third"), Some(TxState::Prepared)),
    ];
    assert_eq!(
        p.resolve(&mut store, 1, &answers, |_| true),
        TxState::Aborted
    );
    assert!(store.get("k").is_none());
    assert!(!p.is_held("k"));
}

#[test]
fn termination_waits_while_the_primary_is_pending_or_silent_but_in_the_view() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, "boss"))
        .unwrap();
    let pending = [
        (server("boss"), Some(TxState::Prepared)),
        (server("third"), Some(TxState::Prepared)),
    ];
    assert_eq!(
        p.resolve(&mut store, 1, &pending, |_| true),
        TxState::Prepared
    );
    let silent = [
        (server("boss"), None),
        (server("third"), Some(TxState::Prepared)),
    ];
    assert_eq!(
        p.resolve(&mut store, 1, &silent, |_| true),
        TxState::Prepared
    );
    assert!(p.is_held("k"));
}

#[test]
fn termination_aborts_once_the_primary_left_the_view_and_everyone_else_answered() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, "boss"))
        .unwrap();
    let third_silent = [(server("boss"), None), (server("third"), None)];
    assert_eq!(
        p.resolve(&mut store, 1, &third_silent, |id| id != "boss"),
        TxState::Prepared,
        "the silent one may have committed"
    );
    let answered = [
        (server("boss"), None),
        (server("third"), Some(TxState::Prepared)),
    ];
    assert_eq!(
        p.resolve(&mut store, 1, &answered, |id| id != "boss"),
        TxState::Aborted
    );
}

#[test]
fn termination_aborts_once_the_primary_and_the_silent_replica_both_left_the_view() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, "boss"))
        .unwrap();
    let both_silent = [(server("boss"), None), (server("third"), None)];
    assert_eq!(
        p.resolve(&mut store, 1, &both_silent, |id| id == ME),
        TxState::Aborted,
        "every copy that may have committed is outside the view: waiting blocks the key for good"
    );
    assert!(!p.is_held("k"));
    assert_eq!(
        p.prepare(&ctx(), &mut store, args(2, "k", put("b"), 9, ME)),
        Ok(Vote::Outdated { above: 9 }),
        "later writes go above the aborted one, so a copy that comes back never overwrites them"
    );
}

#[test]
fn a_primary_that_rejoined_under_a_new_id_still_aborts_its_overdue_transaction() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, ME))
        .unwrap();
    // The server's id changes after the vote (expired, rejoined): overdue() takes no id, it
    // goes by the id each transaction was voted under.
    assert_eq!(
        p.overdue(5_000, 1_000),
        vec![Overdue::AbortAsPrimary {
            tx: 1,
            key: "k".into()
        }]
    );
}

#[test]
fn a_version_or_epoch_near_the_top_of_the_range_is_refused() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    for version in [u64::MAX, crate::types::VERSION_MAX + 1] {
        let vote = p.prepare(&ctx(), &mut store, args(1, "k", put("a"), version, ME));
        assert!(matches!(vote, Err(Error::InvalidRequest(_))), "{vote:?}");
    }
    let mut high_epoch = args(2, "k", put("a"), 9, ME);
    high_epoch.epoch = u64::MAX;
    let vote = p.prepare(&ctx(), &mut store, high_epoch);
    assert!(matches!(vote, Err(Error::InvalidRequest(_))), "{vote:?}");
    assert!(!p.is_held("k"));
}

#[test]
fn an_append_to_a_key_in_a_lost_range_is_refused_where_the_list_is_missing() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    let mut lost = args(1, "l", Op::Append("x".into()), 9, ME);
    lost.range_lost = true;
    let vote = p.prepare(&ctx(), &mut store, lost.clone());
    assert!(matches!(vote, Err(Error::DataLoss(_))), "{vote:?}");
    assert!(!p.is_held("l"));
    // A put starts the key afresh, and a list that is here takes the append.
    lost.tx = 2;
    lost.op = put("fresh");
    assert_eq!(p.prepare(&ctx(), &mut store, lost.clone()), Ok(Vote::Yes));
    p.abort(&mut store, 2).unwrap();
    store
        .put_if_newer(
            "l".into(),
            Versioned {
                value: Value::List(vec!["a".into()]),
                version: 20,
            },
        )
        .unwrap();
    lost.tx = 3;
    lost.op = Op::Append("x".into());
    lost.version = 21;
    assert_eq!(p.prepare(&ctx(), &mut store, lost), Ok(Vote::Yes));
}

#[test]
fn asking_about_an_unknown_transaction_fences_its_late_prepare() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    assert_eq!(p.status(&mut store, 1).unwrap(), TxState::Aborted);
    let late = p.prepare(&ctx(), &mut store, args(1, "k", put("a"), 9, ME));
    assert!(matches!(late, Err(Error::Refused(_))), "{late:?}");
}

#[test]
fn a_committed_append_holds_the_list_computed_at_the_vote_even_if_a_copy_arrived_meanwhile() {
    let mut p = Participant::default();
    let mut store = Memory::new();
    let list = |items: &[&str], version| Versioned {
        value: Value::List(items.iter().map(|i| i.to_string()).collect()),
        version,
    };
    store.put_if_newer("l".into(), list(&["a"], 1)).unwrap();
    p.prepare(
        &ctx(),
        &mut store,
        args(1, "l", Op::Append("c".into()), 10, ME),
    )
    .unwrap();
    // A repair brings a copy while the key is held: the vote's list is what commits, as on
    // every other replica.
    store
        .put_if_newer("l".into(), list(&["a", "b"], 2))
        .unwrap();
    p.commit(&mut store, 1).unwrap();
    assert_eq!(store.get("l"), Some(list(&["a", "c"], 10)));
    // Untouched since the vote, the append lands as one item with the same result.
    p.prepare(
        &ctx(),
        &mut store,
        args(2, "l", Op::Append("d".into()), 11, ME),
    )
    .unwrap();
    p.commit(&mut store, 2).unwrap();
    assert_eq!(store.get("l"), Some(list(&["a", "c", "d"], 11)));
}

// ---------------------------------------------------------------------------------------------
// Restarts on the durable engine: what the participant must find again after a power failure
// ---------------------------------------------------------------------------------------------

mod restart {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;
    use crate::storage::{Log, LogOptions, SimDisk};

    const TIMEOUT_MS: u64 = 1_000;

    /// The data dir of a server on a simulated disk, opened as a (re)starting server opens it.
    fn open_log(disk: &SimDisk) -> Log {
        Log::open(Arc::new(disk.clone()), LogOptions::default()).unwrap()
    }

    /// What the server does before it sends a vote or an answer: waits for the sync.
    fn sync(log: &Log) {
        futures::executor::block_on(log.durability().flush()).unwrap();
    }

    /// The power fails (tearing what was not synced in the middle); the server restarts.
    fn power_failure(disk: &SimDisk, log: Log) -> Log {
        drop(log);
        disk.crash(&mut |unsynced| unsynced / 2);
        open_log(disk)
    }

    fn text(s: &str, version: Version) -> Versioned {
        Versioned {
            value: Value::Text(s.into()),
            version,
        }
    }

    #[test]
    fn a_yes_vote_is_pending_again_after_a_power_failure_and_its_commit_applies() {
        let disk = SimDisk::new();
        let mut log = open_log(&disk);
        let mut p = Participant::default();
        log.put_if_newer("k".into(), text("old", 5)).unwrap();
        // This server is the primary of 7 and a replica of 8.
        assert_eq!(
            p.prepare(&ctx(), &mut log, args(7, "k", put("new"), 10, ME)),
            Ok(Vote::Yes)
        );
        assert_eq!(
            p.prepare(&ctx(), &mut log, args(8, "j", put("other"), 3, "p1")),
            Ok(Vote::Yes)
        );
        sync(&log); // the votes are sent only now

        let mut log = power_failure(&disk, log);
        let restarted_ms = 50_000;
        let mut p = Participant::restore(log.recovered(), restarted_ms);
        assert_eq!(p.pending_count(), 2);
        assert!(p.is_held("k") && p.is_held("j"));
        assert_eq!(p.voted_as_ids(), BTreeSet::from([ME]));
        assert_eq!(p.status(&mut log, 7), Ok(TxState::Prepared));
        let held = p.prepare(&ctx(), &mut log, args(9, "k", put("later"), 11, ME));
        assert!(matches!(held, Err(Error::Conflict(_))), "{held:?}");
        // The timers start again at the restart, and the ids the votes were cast under decide
        // who aborts and who asks.
        assert!(p.overdue(restarted_ms + TIMEOUT_MS, TIMEOUT_MS).is_empty());
        assert_eq!(
            p.overdue(restarted_ms + TIMEOUT_MS + 1, TIMEOUT_MS),
            vec![
                Overdue::AbortAsPrimary {
                    tx: 7,
                    key: "k".into()
                },
                Overdue::Ask {
                    tx: 8,
                    others: vec![server("p1"), server("third")]
                },
            ]
        );

        assert_eq!(p.commit(&mut log, 7), Ok(10));
        assert_eq!(log.get("k"), Some(text("new", 10)));
        assert!(!p.is_held("k"));
        sync(&log);

        let mut log = power_failure(&disk, log);
        let mut p = Participant::restore(log.recovered(), 0);
        assert_eq!(log.get("k"), Some(text("new", 10)));
        assert_eq!(
            p.status(&mut log, 7),
            Ok(TxState::Committed { version: 10 })
        );
        assert_eq!(
            p.commit(&mut log, 7),
            Ok(10),
            "a retried commit is answered the same"
        );
        assert!(!p.is_held("k") && p.is_held("j"));
    }

    #[test]
    fn a_decided_transaction_keeps_its_outcome_across_a_power_failure() {
        let disk = SimDisk::new();
        let mut log = open_log(&disk);
        let mut p = Participant::default();
        p.prepare(&ctx(), &mut log, args(1, "a", put("x"), 10, ME))
            .unwrap();
        assert_eq!(p.commit(&mut log, 1), Ok(10));
        p.prepare(&ctx(), &mut log, args(2, "b", put("y"), 20, ME))
            .unwrap();
        p.abort(&mut log, 2).unwrap();
        // Asked about a transaction it never saw: aborted here, for good.
        assert_eq!(p.status(&mut log, 3), Ok(TxState::Aborted));
        sync(&log);

        let mut log = power_failure(&disk, log);
        let mut p = Participant::restore(log.recovered(), 0);
        assert_eq!(
            p.status(&mut log, 1),
            Ok(TxState::Committed { version: 10 })
        );
        assert_eq!(p.status(&mut log, 2), Ok(TxState::Aborted));
        assert_eq!(p.status(&mut log, 3), Ok(TxState::Aborted));
        assert_eq!(log.get("a"), Some(text("x", 10)));
        assert_eq!(p.commit(&mut log, 1), Ok(10));
        assert!(matches!(p.abort(&mut log, 1), Err(Error::Refused(_))));
        assert!(matches!(p.commit(&mut log, 2), Err(Error::Refused(_))));
        for tx in [2, 3] {
            let late = p.prepare(&ctx(), &mut log, args(tx, "c", put("z"), 30, ME));
            assert!(matches!(late, Err(Error::Refused(_))), "{tx}: {late:?}");
        }
        // The aborted write's floor survived: nothing at or below it is applied to its key.
        assert_eq!(
            p.prepare(&ctx(), &mut log, args(4, "b", put("w"), 20, ME)),
            Ok(Vote::Outdated { above: 20 })
        );
    }

    #[test]
    fn an_unsynced_yes_vote_is_lost_by_a_power_failure_and_its_transaction_aborts_here() {
        let disk = SimDisk::new();
        let mut log = open_log(&disk);
        let mut p = Participant::default();
        p.prepare(&ctx(), &mut log, args(5, "k", put("v"), 10, ME))
            .unwrap();
        // No sync: the vote was never sent, so no coordinator counted it.
        drop(log);
        disk.crash(&mut |_| 0);
        let mut log = open_log(&disk);
        let mut p = Participant::restore(log.recovered(), 0);
        assert!(!p.is_held("k"));
        assert_eq!(p.status(&mut log, 5), Ok(TxState::Aborted));
    }
}
