//! The certain violations: rules each read, and each pair of reads of a growing list, must meet
//! whatever the linearization; checked before the search, and explained precisely.

use std::collections::{HashMap, HashSet};

use super::model::{Interner, Kind, SearchOp, MISSING};
use super::report::describe;

/// Looks for violations that need no search, each read on its own against the operations that
/// must precede it or could have produced what it returned; their explanations are precise. Every
/// rule states a necessary condition for linearizability, so a `Some` is a certain violation; a
/// `None` proves nothing.
pub(super) fn precheck(ops: &[SearchOp], interner: &Interner) -> Option<String> {
    const NEVER: u64 = u64::MAX;
    let ended = |op: &SearchOp| op.completed.unwrap_or(NEVER);
    // Where each item can come from: the operations appending it, and whether a write's value
    // holds it (then it is left out of the item rules).
    let mut appenders: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut written_items: HashSet<u32> = HashSet::new();
    for (index, op) in ops.iter().enumerate() {
        match op.kind {
            Kind::Append(item) => appenders.entry(item).or_default().push(index),
            Kind::Write(state) => written_items.extend(interner.items(state)),
            Kind::Read(_) => {}
        }
    }

    for read in ops {
        let (Kind::Read(target), Some(returned)) = (read.kind, read.completed) else {
            continue;
        };
        let describe_read = || describe(read.source);
        // The writes that could have been the last one before the read: the same text, or a
        // list the returned list starts with, invoked before the read returned.
        let is_producer = |op: &SearchOp| match op.kind {
            Kind::Write(value) => {
                op.invoked <= returned
                    && (value == target
                        || (interner.is_list(value)
                            && interner.is_list(target)
                            && interner.item_after(target, value).is_some()))
            }
            _ => false,
        };
        let latest_producer_end = ops.iter().filter(|op| is_producer(op)).map(ended).max();
        if interner.is_text(target) && latest_producer_end.is_none() {
            return Some(format!(
                "{} returned a text that no write invoked before it returned wrote",
                describe_read()
            ));
        }
        let items: Vec<u32> = interner.items(target).collect();
        let item_set: HashSet<u32> = items.iter().copied().collect();
        // An operation completed before the read began whose effect the read does not show,
        // with no producer that could have come after it.
        for op in ops {
            let Some(completed) = op.completed else {
                continue;
            };
            if completed >= read.invoked {
                continue;
            }
            let overwrites = match op.kind {
                Kind::Read(_) => false,
                Kind::Write(value) => {
                    target == MISSING
                        || (value != target
                            && !(interner.is_list(value)
                                && interner.item_after(target, value).is_some()))
                }
                Kind::Append(item) => !item_set.contains(&item),
            };
            let restored = latest_producer_end.is_some_and(|end| end >= op.invoked);
            if overwrites && target == MISSING {
                return Some(format!(
                    "{} found the key missing, but {} completed before the read was invoked \
                     (nothing deletes a key)",
                    describe_read(),
                    describe(op.source)
                ));
            }
            if overwrites && !restored {
                return Some(format!(
                    "{} returned {}, but {} completed before the read was invoked and no write \
                     that could bring that value back was in flight after it",
                    describe_read(),
                    interner.render(target),
                    describe(op.source)
                ));
            }
        }
        // Every appended item must come from an append invoked before the read returned, once,
        // and in an order that respects real time.
        let mut latest: Option<usize> = None;
        let mut seen: HashMap<u32, usize> = HashMap::new();
        for &item in items.iter().rev() {
            if written_items.contains(&item) {
                continue;
            }
            let sources = appenders.get(&item).map_or(&[][..], Vec::as_slice);
            if sources.is_empty() {
                return Some(format!(
                    "{} holds item {:?}, which no append that did not fail added and no write \
                     wrote",
                    describe_read(),
                    interner.name(item)
                ));
            }
            let times_seen = seen.entry(item).or_default();
            *times_seen += 1;
            if *times_seen > sources.len() {
                return Some(format!(
                    "{} holds item {:?} more often than it was appended",
                    describe_read(),
                    interner.name(item)
                ));
            }
            if !sources.iter().any(|&op| ops[op].invoked <= returned) {
                return Some(format!(
                    "{} holds item {:?}, which no append invoked before the read returned added",
                    describe_read(),
                    interner.name(item)
                ));
            }
            let [source] = sources else {
                continue;
            };
            let source = *source;
            if let Some(earlier) = latest {
                if ended(&ops[source]) < ops[earlier].invoked {
                    return Some(format!(
                        "{} lists the item of {} before the item of {}, but the latter was \
                         acknowledged before the former was invoked",
                        describe_read(),
                        describe(ops[earlier].source),
                        describe(ops[source].source)
                    ));
                }
            }
            if latest.is_none_or(|earlier| ops[source].invoked > ops[earlier].invoked) {
                latest = Some(source);
            }
        }
    }

    // Two reads holding the same item appended once (and in no written value) both come after
    // that append with no write in between (a write would have removed the item for good), so
    // the list only grew between them: one list is a prefix of the other, and the earlier read
    // in real time holds the shorter one. Reads are grouped by their first such item.
    let clean = |item: &u32| {
        !written_items.contains(item) && appenders.get(item).is_some_and(|ops| ops.len() == 1)
    };
    let mut epochs: HashMap<u32, Vec<&SearchOp>> = HashMap::new();
    for read in ops {
        if let (Kind::Read(target), Some(_)) = (read.kind, read.completed) {
            let items: Vec<u32> = interner.items(target).collect();
            if let Some(&first) = items.iter().rev().find(|item| clean(item)) {
                epochs.entry(first).or_default().push(read);
            }
        }
    }
    let mut groups: Vec<Vec<&SearchOp>> = epochs.into_values().collect();
    groups.sort_by_key(|reads| reads.first().map(|read| read.invoked));
    for mut reads in groups {
        let target = |read: &SearchOp| match read.kind {
            Kind::Read(target) => target,
            _ => MISSING,
        };
        let length = |read: &SearchOp| interner.items(target(read)).count();
        reads.sort_by_key(|read| (length(read), read.invoked));
        for pair in reads.windows(2) {
            let (shorter, longer) = (pair[0], pair[1]);
            if interner
                .item_after(target(longer), target(shorter))
                .is_none()
            {
                return Some(format!(
                    "{} and {} saw lists that are not prefixes of one another, though the list \
                     only grew between them (both hold an item appended once)",
                    describe(shorter.source),
                    describe(longer.source)
                ));
            }
        }
        // In real time: a read that began after another ended holds at least as long a list.
        reads.sort_by_key(|read| read.invoked);
        let mut by_end: Vec<&SearchOp> = reads.clone();
        by_end.sort_by_key(|read| ended(read));
        let mut longest: Option<&SearchOp> = None;
        let mut ended_before = by_end.iter().peekable();
        for read in &reads {
            while let Some(earlier) = ended_before.next_if(|earlier| ended(earlier) < read.invoked)
            {
                if longest.is_none_or(|longest| length(earlier) > length(longest)) {
                    longest = Some(earlier);
                }
            }
            if let Some(longest) = longest {
                if length(longest) > length(read) {
                    return Some(format!(
                        "{} saw a shorter list than {}, which ended before it began, though the \
                         list only grew between them",
                        describe(read.source),
                        describe(longest.source)
                    ));
                }
            }
        }
    }
    None
}
