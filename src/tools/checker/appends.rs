//! The append checks: the final list of every key against the appends issued to it, promises
//! that hold whatever the interleaving (see the module documentation of the checker).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::report::describe;
use super::{Call, Operation, Return, Value};

/// Checks the appended items against the final list of every key; returns the problems found
/// (empty: all is well). `final_lists` holds the list each key ended with (a key absent from it
/// is taken as holding no list). Items must be unique within the history.
pub fn check_appends(
    history: &[Operation],
    final_lists: &BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    #[derive(Default)]
    struct KeyAppends<'a> {
        appends: Vec<&'a Operation>,
        written: bool,
        written_items: HashSet<&'a str>,
    }

    let mut problems = Vec::new();
    let mut keys: BTreeMap<&str, KeyAppends> = BTreeMap::new();
    for op in history {
        match (&op.call, &op.ret) {
            (Call::Append(_), Return::Appended | Return::Failed | Return::Unknown) => {
                keys.entry(&op.key).or_default().appends.push(op);
            }
            (Call::Append(_), _) => {
                problems.push(format!(
                    "key {:?}: malformed operation {}",
                    op.key,
                    describe(op)
                ));
            }
            (Call::Write(value), ret) if *ret != Return::Failed => {
                let entry = keys.entry(&op.key).or_default();
                entry.written = true;
                if let Value::List(items) = value {
                    entry.written_items.extend(items.iter().map(String::as_str));
                }
            }
            _ => {}
        }
    }
    for key in final_lists.keys() {
        keys.entry(key).or_default();
    }

    for (key, info) in keys {
        let final_list: &[String] = final_lists.get(key).map_or(&[], Vec::as_slice);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for item in final_list {
            *counts.entry(item).or_default() += 1;
        }
        let mut reported_duplicate = HashSet::new();
        for item in final_list {
            let count = counts.get(item.as_str()).copied().unwrap_or(0);
            if count > 1 && reported_duplicate.insert(item.as_str()) {
                problems.push(format!(
                    "key {key:?}: item {item:?} appears {count} times in the final list"
                ));
            }
        }
        let mut by_item: HashMap<&str, &Operation> = HashMap::new();
        for op in &info.appends {
            let Call::Append(item) = &op.call else {
                continue;
            };
            by_item.insert(item, op);
            let count = counts.get(item.as_str()).copied().unwrap_or(0);
            match op.ret {
                Return::Appended if count == 0 && !info.written => problems.push(format!(
                    "key {key:?}: acknowledged append {} is missing from the final list",
                    describe(op)
                )),
                Return::Failed if count > 0 => problems.push(format!(
                    "key {key:?}: failed append {} is in the final list",
                    describe(op)
                )),
                _ => {}
            }
        }
        let mut reported_stray = HashSet::new();
        for item in final_list {
            if !by_item.contains_key(item.as_str())
                && !info.written_items.contains(item.as_str())
                && reported_stray.insert(item.as_str())
            {
                problems.push(format!(
                    "key {key:?}: item {item:?} in the final list was never appended or written"
                ));
            }
        }
        if !info.written {
            // Real-time order: an item acknowledged before another append was invoked must come
            // first. Track the latest invocation among the items seen so far in list order.
            let mut latest: Option<&Operation> = None;
            let mut first_seen = HashSet::new();
            for item in final_list {
                if !first_seen.insert(item.as_str()) {
                    continue;
                }
                let Some(&op) = by_item.get(item.as_str()) else {
                    continue;
                };
                if op.ret == Return::Failed {
                    continue;
                }
                if let (Return::Appended, Some(completed), Some(earlier)) =
                    (&op.ret, op.completed_us, latest)
                {
                    if completed < earlier.invoked_us {
                        problems.push(format!(
                            "key {key:?}: append {} is listed after append {}, which was invoked \
                             only after the first was acknowledged",
                            describe(op),
                            describe(earlier)
                        ));
                    }
                }
                match latest {
                    Some(earlier) if earlier.invoked_us >= op.invoked_us => {}
                    _ => latest = Some(op),
                }
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::checker::tests::{append, failed, list, op, read_list, unknown};

    fn finals(entries: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
        entries
            .iter()
            .map(|(key, items)| {
                (
                    (*key).to_owned(),
                    items.iter().map(|item| (*item).to_owned()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn check_appends_accepts_a_clean_run() {
        let history = vec![
            append(1, "a", 0, 10),
            append(2, "b", 5, 30),
            append(3, "c", 20, 40),
            unknown(append(4, "d", 50, 0)),
            unknown(append(5, "e", 60, 0)),
            failed(append(6, "f", 70, 80)),
            read_list(7, &["a", "b"], 31, 35),
        ];
        let problems = check_appends(&history, &finals(&[("k", &["a", "c", "b", "e"])]));
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn check_appends_reports_a_lost_acknowledged_append() {
        let history = vec![append(1, "a", 0, 10), append(2, "b", 20, 30)];
        let problems = check_appends(&history, &finals(&[("k", &["a"])]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("#2") && problems[0].contains("missing"));
        // A key with no final list at all lost both.
        assert_eq!(check_appends(&history, &BTreeMap::new()).len(), 2);
    }

    #[test]
    fn check_appends_reports_a_duplicate() {
        let history = vec![append(1, "a", 0, 10), unknown(append(2, "b", 20, 0))];
        let problems = check_appends(&history, &finals(&[("k", &["a", "b", "a"])]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("\"a\" appears 2 times"));
        // An unknown append may appear at most once.
        let problems = check_appends(&history, &finals(&[("k", &["a", "b", "b"])]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("\"b\" appears 2 times"));
    }

    #[test]
    fn check_appends_reports_a_failed_item_present() {
        let history = vec![append(1, "a", 0, 10), failed(append(2, "b", 20, 30))];
        let problems = check_appends(&history, &finals(&[("k", &["a", "b"])]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("failed append #2"));
    }

    #[test]
    fn check_appends_reports_items_from_nowhere_and_out_of_order() {
        let history = vec![append(1, "a", 0, 10), append(2, "b", 20, 30)];
        let problems = check_appends(&history, &finals(&[("k", &["b", "a", "z"])]));
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().any(|p| p.contains("\"z\"")));
        assert!(problems.iter().any(|p| p.contains("listed after")));
    }

    #[test]
    fn check_appends_lets_a_write_replace_the_list() {
        let history = vec![
            append(1, "a", 0, 10),
            op(2, "k", Call::Write(list(&["w"])), 20, 30, Return::Written),
            append(3, "b", 40, 50),
        ];
        let problems = check_appends(&history, &finals(&[("k", &["w", "b"])]));
        assert!(problems.is_empty(), "{problems:?}");
    }
}
