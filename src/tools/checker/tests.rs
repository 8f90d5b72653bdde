//! The checker as a whole, through [`check`]: hand-made histories that are and are not
//! linearizable, agreement with brute force on small random histories, the step bound and
//! generated histories. Shared history builders live here.

use super::model::{prepare, Interner};
use super::search::{mix, search};
use super::*;
use std::time::{Duration, Instant};

pub(super) fn op(
    id: u64,
    key: &str,
    call: Call,
    invoked: u64,
    completed: u64,
    ret: Return,
) -> Operation {
    Operation {
        id,
        client: id,
        key: key.to_owned(),
        call,
        invoked_us: invoked,
        completed_us: Some(completed),
        ret,
    }
}

fn text(value: &str) -> Value {
    Value::Text(value.to_owned())
}

pub(super) fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|item| (*item).to_owned()).collect())
}

fn write(id: u64, value: &str, invoked: u64, completed: u64) -> Operation {
    op(
        id,
        "k",
        Call::Write(text(value)),
        invoked,
        completed,
        Return::Written,
    )
}

fn read(id: u64, value: Option<&str>, invoked: u64, completed: u64) -> Operation {
    op(
        id,
        "k",
        Call::Read,
        invoked,
        completed,
        Return::ReadValue(value.map(text)),
    )
}

pub(super) fn read_list(id: u64, items: &[&str], invoked: u64, completed: u64) -> Operation {
    op(
        id,
        "k",
        Call::Read,
        invoked,
        completed,
        Return::ReadValue(Some(list(items))),
    )
}

pub(super) fn append(id: u64, item: &str, invoked: u64, completed: u64) -> Operation {
    op(
        id,
        "k",
        Call::Append(item.to_owned()),
        invoked,
        completed,
        Return::Appended,
    )
}

pub(super) fn unknown(mut op: Operation) -> Operation {
    op.ret = Return::Unknown;
    op.completed_us = None;
    op
}

pub(super) fn failed(mut op: Operation) -> Operation {
    op.ret = Return::Failed;
    op
}

fn verdict(history: &[Operation]) -> Verdict {
    verdict_with(history, CheckOptions::default())
}

fn verdict_with(history: &[Operation], options: CheckOptions) -> Verdict {
    let report = check(history, &options);
    assert_eq!(report.operations, history.len());
    report
        .keys
        .get("k")
        .cloned()
        .unwrap_or(Verdict::Linearizable)
}

fn assert_linearizable(history: &[Operation]) {
    let verdict = verdict(history);
    assert_eq!(verdict, Verdict::Linearizable, "history: {history:#?}");
}

fn assert_violation(history: &[Operation]) -> String {
    match verdict(history) {
        Verdict::Violation { explanation } => explanation,
        other => panic!("expected a violation, got {other:?} for {history:#?}"),
    }
}

#[test]
fn empty_history_is_linearizable() {
    let report = check(&[], &CheckOptions::default());
    assert!(report.is_ok());
    assert_eq!(report.operations, 0);
    assert!(report.keys.is_empty());
}

#[test]
fn sequential_write_then_read_is_linearizable() {
    assert_linearizable(&[
        read(1, None, 0, 10),
        write(2, "a", 20, 30),
        read(3, Some("a"), 40, 50),
        write(4, "b", 60, 70),
        read(5, Some("b"), 80, 90),
    ]);
}

#[test]
fn read_of_a_missing_key_after_a_completed_write_is_a_violation() {
    assert_violation(&[write(1, "a", 0, 10), read(2, None, 20, 30)]);
}

#[test]
fn read_concurrent_with_a_write_may_see_either_value() {
    for seen in ["a", "b"] {
        assert_linearizable(&[
            write(1, "a", 0, 10),
            write(2, "b", 20, 60),
            read(3, Some(seen), 30, 50),
        ]);
    }
    // Touching intervals count as concurrent.
    assert_linearizable(&[write(1, "a", 0, 10), read(2, None, 10, 20)]);
}

#[test]
fn read_of_a_value_never_written_is_a_violation() {
    let explanation = assert_violation(&[
        write(1, "a", 0, 10),
        write(2, "b", 20, 60),
        read(3, Some("c"), 30, 50),
    ]);
    assert!(explanation.contains("#3"), "{explanation}");
}

#[test]
fn stale_read_after_two_completed_writes_is_a_violation() {
    let explanation = assert_violation(&[
        write(1, "a", 0, 10),
        write(2, "b", 20, 30),
        read(3, Some("a"), 40, 50),
    ]);
    assert!(explanation.contains("#3"), "{explanation}");
    assert!(explanation.contains("\"b\""), "{explanation}");
}

#[test]
fn reads_going_backwards_in_time_are_a_violation() {
    // The write of "new" is concurrent with both reads; the first read sees it, so the
    // second, which starts after the first ended, cannot see "old" again.
    assert_violation(&[
        write(1, "old", 0, 10),
        write(2, "new", 20, 100),
        read(3, Some("new"), 30, 40),
        read(4, Some("old"), 50, 60),
    ]);
    // Forwards is fine.
    assert_linearizable(&[
        write(1, "old", 0, 10),
        write(2, "new", 20, 100),
        read(3, Some("old"), 30, 40),
        read(4, Some("new"), 50, 60),
    ]);
}

#[test]
fn unknown_write_that_shows_up_later_is_linearizable() {
    assert_linearizable(&[
        write(1, "a", 0, 10),
        unknown(write(2, "b", 20, 0)),
        read(3, Some("a"), 30, 40),
        read(4, Some("b"), 1_000, 1_010),
        read(5, Some("b"), 2_000, 2_010),
    ]);
}

#[test]
fn unknown_write_that_never_shows_up_is_linearizable() {
    assert_linearizable(&[
        write(1, "a", 0, 10),
        unknown(write(2, "b", 20, 0)),
        read(3, Some("a"), 30, 40),
        read(4, Some("a"), 1_000, 1_010),
    ]);
}

#[test]
fn unknown_write_cannot_take_effect_before_its_invocation() {
    assert_violation(&[
        write(1, "a", 0, 10),
        read(2, Some("b"), 20, 30),
        unknown(write(3, "b", 40, 0)),
    ]);
}

#[test]
fn unknown_write_takes_effect_once() {
    // Seen, then overwritten, then seen again: it cannot take effect twice.
    assert_violation(&[
        unknown(write(1, "b", 0, 0)),
        read(2, Some("b"), 10, 20),
        write(3, "c", 30, 40),
        read(4, Some("b"), 50, 60),
    ]);
}

#[test]
fn failed_write_whose_value_is_read_is_a_violation() {
    assert_violation(&[
        write(1, "a", 0, 10),
        failed(write(2, "b", 20, 30)),
        read(3, Some("b"), 40, 50),
    ]);
    // Not read: fine.
    assert_linearizable(&[
        write(1, "a", 0, 10),
        failed(write(2, "b", 20, 30)),
        read(3, Some("a"), 40, 50),
    ]);
}

#[test]
fn unknown_and_failed_reads_are_ignored() {
    assert_linearizable(&[
        write(1, "a", 0, 10),
        unknown(read(2, Some("zzz"), 20, 0)),
        failed(read(3, None, 20, 30)),
        read(4, Some("a"), 40, 50),
    ]);
}

#[test]
fn concurrent_appends_may_land_in_either_order() {
    for order in [["x", "y"], ["y", "x"]] {
        assert_linearizable(&[
            append(1, "x", 0, 50),
            append(2, "y", 10, 40),
            read_list(3, &order, 60, 70),
        ]);
    }
    // Sequential appends have one order only.
    assert_violation(&[
        append(1, "x", 0, 10),
        append(2, "y", 20, 30),
        read_list(3, &["y", "x"], 40, 50),
    ]);
}

#[test]
fn read_missing_an_acknowledged_earlier_append_is_a_violation() {
    let explanation = assert_violation(&[
        append(1, "x", 0, 10),
        append(2, "y", 20, 30),
        read_list(3, &["x"], 40, 50),
    ]);
    assert!(explanation.contains("#2"), "{explanation}");
}

#[test]
fn append_to_a_missing_key_creates_the_list_and_a_write_replaces_it() {
    assert_linearizable(&[
        append(1, "x", 0, 10),
        read_list(2, &["x"], 20, 30),
        op(
            3,
            "k",
            Call::Write(list(&["p", "q"])),
            40,
            50,
            Return::Written,
        ),
        append(4, "y", 60, 70),
        read_list(5, &["p", "q", "y"], 80, 90),
    ]);
}

#[test]
fn acknowledged_append_on_a_text_is_a_violation() {
    assert_violation(&[write(1, "a", 0, 10), append(2, "x", 20, 30)]);
}

#[test]
fn append_on_a_text_that_failed_or_is_unknown_has_no_effect() {
    assert_linearizable(&[
        write(1, "a", 0, 10),
        failed(append(2, "x", 20, 30)),
        unknown(append(3, "y", 40, 0)),
        read(4, Some("a"), 50, 60),
    ]);
}

#[test]
fn unknown_append_may_show_up_once_or_not_at_all() {
    assert_linearizable(&[
        append(1, "x", 0, 10),
        unknown(append(2, "y", 20, 0)),
        read_list(3, &["x"], 30, 40),
        read_list(4, &["x", "y"], 50, 60),
        append(5, "z", 70, 80),
        read_list(6, &["x", "y", "z"], 90, 100),
    ]);
    assert_linearizable(&[
        append(1, "x", 0, 10),
        unknown(append(2, "y", 20, 0)),
        append(3, "z", 30, 40),
        read_list(4, &["x", "z"], 50, 60),
    ]);
    // Showing up after a later acknowledged append it preceded is fine too (it may take
    // effect late), but not twice.
    assert_linearizable(&[
        unknown(append(1, "y", 0, 0)),
        append(2, "z", 30, 40),
        read_list(3, &["z", "y"], 50, 60),
    ]);
    assert_violation(&[
        unknown(append(1, "y", 0, 0)),
        read_list(2, &["y", "y"], 50, 60),
    ]);
}

#[test]
fn many_pending_unknown_appends_do_not_blow_up_the_search() {
    // Forty appends time out; every other one shows up, in invocation order, one per read.
    let mut history = Vec::new();
    let mut seen = Vec::new();
    for i in 0..40u64 {
        history.push(unknown(append(i, &format!("u{i}"), i * 10, 0)));
    }
    for i in 0..40u64 {
        if i % 2 == 0 {
            seen.push(format!("u{i}"));
        }
        let items: Vec<&str> = seen.iter().map(String::as_str).collect();
        history.push(read_list(100 + i, &items, 1_000 + i * 10, 1_005 + i * 10));
    }
    assert_eq!(
        verdict_with(
            &history,
            CheckOptions {
                max_steps_per_key: 100_000
            }
        ),
        Verdict::Linearizable
    );
}

#[test]
fn keys_are_checked_independently() {
    let mut history = vec![
        write(1, "a", 0, 10),
        write(2, "b", 20, 30),
        read(3, Some("a"), 40, 50),
    ];
    for op in &mut history {
        op.key = "bad".to_owned();
    }
    // On another key the same values are fine.
    history.push(op(
        4,
        "good",
        Call::Write(text("b")),
        0,
        10,
        Return::Written,
    ));
    history.push(op(
        5,
        "good",
        Call::Read,
        20,
        30,
        Return::ReadValue(Some(text("b"))),
    ));
    let report = check(&history, &CheckOptions::default());
    assert!(!report.is_ok());
    assert_eq!(report.violations(), 1);
    assert_eq!(report.keys.get("good"), Some(&Verdict::Linearizable));
    assert!(matches!(
        report.keys.get("bad"),
        Some(Verdict::Violation { .. })
    ));
    assert!(report.to_string().contains("key \"bad\""));
}

#[test]
fn malformed_operations_are_reported() {
    assert!(assert_violation(&[write(1, "a", 10, 5)]).contains("malformed"));
    assert!(
        assert_violation(&[op(1, "k", Call::Read, 0, 10, Return::Written)]).contains("malformed")
    );
    let mut no_completion = write(1, "a", 0, 10);
    no_completion.completed_us = None;
    assert!(assert_violation(&[no_completion]).contains("malformed"));
}

#[test]
fn operations_round_trip_through_json_lines() {
    let history = vec![
        write(1, "a", 0, 10),
        unknown(append(2, "x", 5, 0)),
        read_list(3, &["x"], 20, 30),
        failed(read(4, None, 40, 50)),
    ];
    let lines: Vec<String> = history
        .iter()
        .map(|op| serde_json::to_string(op).unwrap())
        .collect();
    let back: Vec<Operation> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(back, history);
}

/// `writes` writes all concurrent with three sequential reads that see the first value, the
/// second, then the first again: impossible, but each read alone is plausible, and the search
/// has to try every subset of the other writes at every point before giving up.
fn pathological(writes: u64) -> Vec<Operation> {
    let mut history: Vec<Operation> = (0..writes)
        .map(|i| write(i, &format!("v{i}"), i, 1_000 + i))
        .collect();
    history.push(read(100, Some("v0"), 100, 110));
    history.push(read(101, Some("v1"), 200, 210));
    history.push(read(102, Some("v0"), 300, 310));
    history
}

#[test]
fn step_bound_yields_unknown_on_a_pathological_history() {
    let bounded = verdict_with(
        &pathological(20),
        CheckOptions {
            max_steps_per_key: 10_000,
        },
    );
    assert_eq!(bounded, Verdict::Unknown { steps: 10_000 });
    let report = check(
        &pathological(20),
        &CheckOptions {
            max_steps_per_key: 10_000,
        },
    );
    assert!(!report.is_ok());
    assert_eq!(report.unknowns(), 1);
    // A small instance of the same shape is decided.
    assert!(matches!(
        verdict(&pathological(5)),
        Verdict::Violation { .. }
    ));
}

// ---------------------------------------------------------------------------------------------
// Agreement with brute force

/// Linearizability by enumerating every order, straight from the definitions.
fn brute_force(history: &[Operation]) -> bool {
    fn extend(ops: &[&Operation], used: &mut Vec<bool>, state: &Option<Value>) -> bool {
        if ops
            .iter()
            .zip(used.iter())
            .all(|(op, used)| *used || op.ret == Return::Unknown)
        {
            return true;
        }
        for next in 0..ops.len() {
            if used[next] {
                continue;
            }
            let op = ops[next];
            // Everything that completed before this one was invoked must already be placed.
            let blocked = ops.iter().zip(used.iter()).any(|(other, used)| {
                !*used
                    && other.ret != Return::Unknown
                    && other.completed_us.is_some_and(|done| done < op.invoked_us)
            });
            if blocked {
                continue;
            }
            let unknown = op.ret == Return::Unknown;
            let new_state = match (&op.call, &op.ret) {
                (Call::Write(value), _) => Some(Some(value.clone())),
                (Call::Append(item), _) => match state {
                    None => Some(Some(Value::List(vec![item.clone()]))),
                    Some(Value::List(items)) => {
                        let mut items = items.clone();
                        items.push(item.clone());
                        Some(Some(Value::List(items)))
                    }
                    Some(Value::Text(_)) if unknown => Some(state.clone()),
                    Some(Value::Text(_)) => None,
                },
                (Call::Read, Return::ReadValue(value)) => (value == state).then(|| state.clone()),
                _ => None,
            };
            if let Some(new_state) = new_state {
                used[next] = true;
                if extend(ops, used, &new_state) {
                    return true;
                }
                used[next] = false;
            }
        }
        false
    }
    let ops: Vec<&Operation> = history
        .iter()
        .filter(|op| {
            op.ret != Return::Failed && !(op.call == Call::Read && op.ret == Return::Unknown)
        })
        .collect();
    let mut used = vec![false; ops.len()];
    extend(&ops, &mut used, &None)
}

/// A small random history on one key: a sequential execution stretched into overlapping
/// intervals (linearizable), then, half the time, one read's result replaced at random.
fn small_history(rng: &mut Rng, size: u64, spread: u64) -> Vec<Operation> {
    let mut state: Option<Value> = None;
    let mut history = Vec::new();
    let mut appended: Vec<String> = Vec::new();
    let mut texts: Vec<String> = vec!["a".to_owned(), "b".to_owned()];
    for id in 0..size {
        let point = 10 * id + 100;
        let invoked = point - rng.below(spread);
        let completed = point + rng.below(spread);
        let call = match rng.below(10) {
            0..=2 => {
                let text = texts[rng.below(texts.len() as u64) as usize].clone();
                if rng.below(4) == 0 {
                    texts.push(format!("t{id}"));
                }
                if rng.below(5) == 0 {
                    Call::Write(Value::List(Vec::new()))
                } else {
                    Call::Write(Value::Text(text))
                }
            }
            3..=5 => {
                appended.push(format!("i{id}"));
                Call::Append(format!("i{id}"))
            }
            _ => Call::Read,
        };
        let fate = rng.below(10);
        let mut ret = match &call {
            Call::Write(_) => Return::Written,
            Call::Append(_) => Return::Appended,
            Call::Read => Return::ReadValue(state.clone()),
        };
        let mut takes_effect = true;
        if let (Call::Append(_), Some(Value::Text(_))) = (&call, &state) {
            ret = Return::Failed;
            takes_effect = false;
        } else if fate == 0 {
            ret = Return::Failed;
            takes_effect = false;
        } else if fate <= 2 {
            ret = Return::Unknown;
            takes_effect = rng.below(2) == 0;
        }
        if takes_effect {
            match &call {
                Call::Write(value) => state = Some(value.clone()),
                Call::Append(item) => match &mut state {
                    None => state = Some(Value::List(vec![item.clone()])),
                    Some(Value::List(items)) => items.push(item.clone()),
                    Some(Value::Text(_)) => {}
                },
                Call::Read => {}
            }
        }
        history.push(Operation {
            id,
            client: id,
            key: "k".to_owned(),
            call,
            invoked_us: invoked,
            completed_us: (ret != Return::Unknown).then_some(completed),
            ret,
        });
    }
    if rng.below(2) == 0 {
        let reads: Vec<usize> = (0..history.len())
            .filter(|&index| matches!(history[index].ret, Return::ReadValue(_)))
            .collect();
        if !reads.is_empty() {
            let index = reads[rng.below(reads.len() as u64) as usize];
            let value = match rng.below(4) {
                0 => None,
                1 => Some(Value::Text(
                    texts[rng.below(texts.len() as u64) as usize].clone(),
                )),
                _ => {
                    let mut items = appended.clone();
                    // A random subsequence, sometimes shuffled.
                    items.retain(|_| rng.below(3) != 0);
                    if rng.below(2) == 0 && items.len() > 1 {
                        let last = items.len() - 1;
                        let other = rng.below(items.len() as u64) as usize;
                        items.swap(other, last);
                    }
                    Some(Value::List(items))
                }
            };
            history[index].ret = Return::ReadValue(value);
        }
    }
    history
}

#[test]
fn verdicts_agree_with_brute_force_on_small_random_histories() {
    // Three streams with little, some and much concurrency.
    let mut rngs = [Rng(42), Rng(1 << 40), Rng(1 << 50)];
    let (mut linearizable, mut violations) = (0, 0);
    for round in 0..6_000u64 {
        let rng = &mut rngs[(round % 3) as usize];
        let size = 3 + rng.below(7);
        let spread = [5, 25, 60][(round % 3) as usize];
        let history = small_history(rng, size, spread);
        let expected = brute_force(&history);
        let verdict = verdict(&history);
        assert!(
            !matches!(verdict, Verdict::Unknown { .. }),
            "round {round}: {verdict:?}"
        );
        assert_eq!(
            verdict == Verdict::Linearizable,
            expected,
            "round {round}: checker says {verdict:?}, brute force {expected}, for {history:#?}"
        );
        // The search alone, without the certain-violation rules, agrees too.
        let ops: Vec<&Operation> = history.iter().collect();
        let mut interner = Interner::new();
        let searched = match prepare(&ops, &mut interner) {
            Ok(search_ops) => search(&search_ops, &mut interner, 1_000_000),
            Err(explanation) => Verdict::Violation { explanation },
        };
        assert_eq!(
            searched == Verdict::Linearizable,
            expected,
            "round {round}: search alone says {searched:?}, brute force {expected}, for \
             {history:#?}"
        );
        if expected {
            linearizable += 1;
        } else {
            violations += 1;
        }
    }
    // Both kinds were exercised.
    assert!(
        linearizable > 1_000 && violations > 500,
        "{linearizable} {violations}"
    );
}

// ---------------------------------------------------------------------------------------------
// Generated histories

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(1);
        mix(self.0) % bound
    }
}

/// Simulates a sequential execution: operation i takes effect at instant `10 * i` and its
/// interval is stretched around that instant, so many operations overlap but the history is
/// linearizable by construction. Even keys hold texts, odd keys lists. Returns the history
/// and the final state of every key.
fn generate(
    operations: u64,
    keys: u64,
    spread: u64,
    seed: u64,
) -> (Vec<Operation>, BTreeMap<String, Option<Value>>) {
    generate_with(operations, keys, spread, seed, 6)
}

/// [`generate`] with `unknown` percent of the operations timing out (half of them taking
/// effect).
fn generate_with(
    operations: u64,
    keys: u64,
    spread: u64,
    seed: u64,
    unknown: u64,
) -> (Vec<Operation>, BTreeMap<String, Option<Value>>) {
    let mut rng = Rng(seed);
    let mut states: BTreeMap<String, Option<Value>> = BTreeMap::new();
    let mut history = Vec::new();
    for id in 0..operations {
        let key_index = rng.below(keys);
        let key = format!("key{key_index}");
        let state = states.entry(key.clone()).or_insert(None);
        let point = 10 * id + 1_000_000;
        let invoked = point - rng.below(spread);
        let completed = point + rng.below(spread);
        let roll = rng.below(100);
        let fate = rng.below(100);
        let (call, mut ret) = if key_index.is_multiple_of(2) {
            if roll < 50 {
                (Call::Write(Value::Text(format!("v{id}"))), Return::Written)
            } else {
                (Call::Read, Return::ReadValue(state.clone()))
            }
        } else if roll < 60 {
            (Call::Append(format!("i{id}")), Return::Appended)
        } else if roll < 63 {
            (Call::Write(Value::List(Vec::new())), Return::Written)
        } else {
            (Call::Read, Return::ReadValue(state.clone()))
        };
        // 4% fail with no effect, `unknown`% time out (half of those took effect).
        let takes_effect = if fate < 4 {
            ret = Return::Failed;
            false
        } else if fate < 4 + unknown {
            ret = Return::Unknown;
            fate.is_multiple_of(2)
        } else {
            true
        };
        if takes_effect {
            match &call {
                Call::Write(value) => *state = Some(value.clone()),
                Call::Append(item) => match state {
                    None => *state = Some(Value::List(vec![item.clone()])),
                    Some(Value::List(items)) => items.push(item.clone()),
                    Some(Value::Text(_)) => unreachable!("odd keys hold lists"),
                },
                Call::Read => {}
            }
        }
        history.push(Operation {
            id,
            client: rng.below(16),
            key,
            call,
            invoked_us: invoked,
            completed_us: (ret != Return::Unknown).then_some(completed),
            ret,
        });
    }
    (history, states)
}

#[test]
fn generated_history_of_2000_ops_over_20_keys_checks_quickly() {
    let (history, finals) = generate(2_000, 20, 150, 7);
    let started = Instant::now();
    let report = check(&history, &CheckOptions::default());
    let elapsed = started.elapsed();
    assert!(report.is_ok(), "{report}");
    assert_eq!(report.keys.len(), 20);
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");

    let lists: BTreeMap<String, Vec<String>> = finals
        .into_iter()
        .filter_map(|(key, value)| match value {
            Some(Value::List(items)) => Some((key, items)),
            _ => None,
        })
        .collect();
    let problems = check_appends(&history, &lists);
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn generated_history_of_3000_ops_on_one_key_checks_quickly() {
    // About twenty operations in flight on the key at any time.
    for keys in [1, 2] {
        let (history, _) = generate(3_000, keys, 100, 11);
        let started = Instant::now();
        let report = check(&history, &CheckOptions::default());
        let elapsed = started.elapsed();
        assert!(report.is_ok(), "{report}");
        assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    }
}

#[test]
fn generated_history_with_a_stale_read_in_the_middle_is_a_violation() {
    let (mut history, _) = generate(3_000, 1, 50, 5);
    let first = history
        .iter()
        .find_map(|op| match (&op.call, &op.ret) {
            (Call::Write(value), Return::Written) => Some(value.clone()),
            _ => None,
        })
        .unwrap();
    history.push(Operation {
        id: 1_000_000,
        client: 99,
        key: "key0".to_owned(),
        call: Call::Read,
        invoked_us: 1_015_000,
        completed_us: Some(1_015_005),
        ret: Return::ReadValue(Some(first)),
    });
    let started = Instant::now();
    let report = check(&history, &CheckOptions::default());
    assert!(started.elapsed() < Duration::from_secs(10));
    match report.keys.get("key0") {
        Some(Verdict::Violation { explanation }) => {
            assert!(explanation.contains("#1000000"), "{explanation}")
        }
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn generated_history_with_a_stale_final_read_is_a_violation() {
    let (mut history, finals) = generate(2_000, 20, 150, 3);
    // A read after everything returning an older value of key0 (a text key).
    let stale = history
        .iter()
        .filter(|op| op.key == "key0" && op.ret == Return::Written)
        .find_map(|op| match &op.call {
            Call::Write(value) if finals.get("key0") != Some(&Some(value.clone())) => {
                Some(value.clone())
            }
            _ => None,
        })
        .unwrap();
    history.push(Operation {
        id: 1_000_000,
        client: 99,
        key: "key0".to_owned(),
        call: Call::Read,
        invoked_us: 10_000_000,
        completed_us: Some(10_000_010),
        ret: Return::ReadValue(Some(stale)),
    });
    let started = Instant::now();
    let report = check(&history, &CheckOptions::default());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(report.violations(), 1, "{report}");
    assert!(matches!(
        report.keys.get("key0"),
        Some(Verdict::Violation { .. })
    ));
}
