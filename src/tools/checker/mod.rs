//! Linearizability checking of recorded histories.
//!
//! The chaos run records every `setr`, `getr` and `append` it issues as an [`Operation`]: the
//! call, the key, the client, the invocation time, the completion time and what came back. This
//! module decides whether that history could have been produced by a single copy of the store
//! that applies each operation atomically at some instant between its invocation and its
//! completion (Herlihy & Wing's linearizability), and checks the promises about appended items
//! that hold whatever the interleaving ([`check_appends`]).
//!
//! # The model
//! Each key is an independent register whose state is *missing*, a text or a list of strings:
//! * `Write(v)` (`setr`, or a replicated put of a whole list) replaces the state with `v`;
//! * `Append(item)` on a missing key creates `[item]`, on a list pushes `item` at the end, and on
//!   a text is refused with no effect — so an append that came back `Appended` can never be placed
//!   where the key holds a text, and an append whose outcome is unknown is a no-op there;
//! * `Read` leaves the state alone and must return exactly the state (`None` for missing).
//!
//! # The per-key split
//! Linearizability is compositional (Herlihy & Wing, "locality"): a history is linearizable iff
//! its restriction to every object is. Keys share nothing in the model, so [`check`] groups the
//! history by key and checks each key on its own, with its own step budget. This turns one search
//! over the whole history (exponential in the total concurrency) into many small ones, and makes a
//! verdict point at the key that went wrong.
//!
//! # Certain violations first
//! Before searching, every read is checked on its own against the operations that must precede
//! it or could have produced what it returned (each rule a necessary condition, so a hit is a
//! certain violation, explained precisely): a read of a text that no write invoked before the read
//! returned wrote; a read that misses the effect of an operation completed before the read began
//! (an acknowledged append whose item is absent, a write of something else, anything at all when
//! the read found the key missing) with no write of what it returned in flight after that
//! operation; a list holding an item more often than it was appended, an item no append invoked
//! before the read returned added, or two items in an order contradicting real time. Then, across
//! reads: two reads holding the same item appended once saw the list only grow between them, so
//! one's list must be a prefix of the other's, and the earlier one in real time the shorter. These
//! find lost, duplicated, reordered and stale data in milliseconds; the search is needed for the
//! rest (e.g. reads going back and forth between concurrent writes).
//!
//! # The search (Wing–Gong–Lowe)
//! The operations of a key become call and return events sorted by time (calls before returns at
//! the same microsecond, i.e. touching intervals count as concurrent — the lenient choice), kept
//! in a doubly linked list. The *candidates* at a point of the search are the calls met walking
//! the list from its head before the first return: operations invoked before anything still
//! outstanding had to be finished, so each may take effect next. The search tries the candidates
//! one by one against the model; when the model accepts one, the operation is *lifted* out of the
//! list (call and return, dancing links so it is O(1) and exactly undoable), pushed on a stack with
//! the previous state, and the search goes on from the new point. When no candidate is left, the
//! return that stopped the walk belongs to an operation that should already have taken effect:
//! the search backtracks — pops the last operation, puts its events back, restores the state and
//! tries that point's next candidate. The history is linearizable once every operation that
//! completed has been lifted; it is not once the stack is empty and nothing is left to try.
//!
//! Lowe's memoisation makes this practical: a configuration is the set of operations already
//! linearized (a bitset) plus the model state, and two paths that reach the same configuration
//! have the same future, so a configuration is explored at most once. The cache keys on a
//! Zobrist hash of the bitset (one random word per operation, XORed in and out as operations are
//! lifted and put back, so hashing costs O(1) per step) mixed with the state, and stores the
//! bitsets in one flat arena compared word by word on a hash match — a hash collision never
//! prunes anything. Model states are hash-consed into small integers (texts and list items are
//! interned, lists are cons cells `(list, item)`), so applying an operation, comparing a read and
//! caching a state are all O(1) whatever the length of the lists.
//!
//! Three further rules keep the search close to linear on real histories. The first two only
//! change the order in which candidates are tried (a read that matches is tried alone because it
//! is always safe), the third only cuts branches that cannot succeed.
//! * A completed read that matches the current state is linearized at once and is the only
//!   candidate of its point (any linearization from there can be rearranged to put it first: it
//!   changes nothing, and every outstanding operation returns after it was invoked); reads that do
//!   not match cannot go next and are not tried.
//! * The other candidates go by *urgency*: when the history says their effect was needed — the
//!   first read that could follow them and saw it (a read of the text written; a list grown from
//!   the list written; a list holding the item appended, the item's position breaking ties) — or
//!   else their own completion. An effect nobody saw must be replaced by a write before anyone
//!   reads, so such an operation goes just before the first write that may follow it. Completed
//!   operations go before unknown ones on a tie.
//! * *Lookahead*: at every point, each read among the candidates and the next two reads to
//!   return must still be able to see what they returned, using only
//!   operations not linearized yet and invoked before the read returned (a text needs a write of
//!   it; a list needs the current list, or a write's, to be a prefix of it and an append still
//!   available for every item after that). A point where one cannot is abandoned at once instead
//!   of after exploring everything up to that read's return.
//!
//! On generated single-key histories of 6,000 operations with up to forty operations in flight
//! at any time, a third of them timing out, the search takes barely more steps than there are
//! operations and well under a tenth of a second in a release build.
//!
//! # Failed and Unknown operations
//! * [`Return::Failed`] means the operation definitely had no effect (refused or aborted before
//!   any commit). It is removed from the history before anything else.
//! * [`Return::Unknown`] (timed out, client killed) may have taken effect at any instant after its
//!   invocation, or never. Its completion is +infinity: it has a call event but no return event, so
//!   it never forces a backtrack, and the search succeeds once every *completed* operation is
//!   linearized — an unknown operation that was never lifted is one that never happened. The
//!   certain-violation rules never count on an unknown operation having happened. A read whose
//!   outcome is unknown tells nothing and is dropped.
//! * Pending unknowns are the classic way to make this search explode, so two sound reductions
//!   apply besides the urgency order (an unknown operation nobody observed is tried last). (1) An
//!   unknown append whose item no completed read ever returned, or an unknown text write whose text
//!   no completed read ever returned, is dropped before the search: had it taken effect, no read
//!   could have run before the next write replaced it, so "never happened" explains the history at
//!   least as well. (2) An unknown operation that would leave the state unchanged is not tried (not
//!   applying it now keeps strictly more options).
//!
//! # The bound
//! [`CheckOptions::max_steps_per_key`] caps the number of attempts to apply an operation per key.
//! Past it the key's verdict is [`Verdict::Unknown`], which callers must count as a failure
//! ([`Report::is_ok`] does). Time and memory grow with the configurations explored: at most one
//! cached per step, each costing `ops / 8` bytes of bitset plus about 30 bytes. The default bound
//! of one million steps takes well under a second in a release build (a few seconds in a debug
//! one) and, in the worst case of a key with 3,000 operations whose search explodes, about
//! 400 MB; a typical key needs a small multiple of its operation count.
//!
//! # Appends
//! [`check_appends`] compares the final list of every key with the appends issued to it: every
//! acknowledged item is there exactly once, no item is there twice, no item of a failed append is
//! there (an unknown one may be, once), no item comes from nowhere, and the list order respects
//! real time (an append acknowledged before another was invoked comes first). Keys that also saw
//! a write (which may legitimately replace the list) are only checked for duplicates, failed items
//! and items from nowhere.
//!
//! # Deliberately left out
//! * Per-client order is not checked separately: every client issues one operation at a time, so
//!   its order is already implied by the real-time order of intervals.
//! * A failed append is dropped rather than read as "the key held a text at that moment": a
//!   failure may also come from an abort, and the two are not distinguished in the history.
//! * No splitting of one key's history at quiescent points, no parallel checking of keys, no
//!   partial-order reduction beyond the rules above; the cache, the candidate order and the
//!   lookahead make them unnecessary at the sizes and concurrency a chaos run produces. A
//!   violation the certain-violation rules miss, on a key with much concurrency, can still
//!   exhaust the bound (the search must rule out every configuration before the anomaly): that
//!   key is then `Unknown`, which fails the run all the same.
//! * Versions are not part of the model: the checker sees values only, as a client does.
//! * Clock skew is not modelled: all times must come from one monotonic clock (the chaos runner's
//!   process), in microseconds.
//! * Stale reads (`getr --stale`) are allowed to be non-linearizable and must not be recorded as
//!   `Read`s in a history given to [`check`].
//! * A violation found by the search is explained by a heuristic (its deepest dead end), not a
//!   minimal counter-example.
//! * The cross-read list rule only relates reads sharing an appended item; with writes replacing
//!   lists, other anomalies across reads are left to the search. Text registers get no cross-read
//!   rule (e.g. Gibbons–Korach zones): the search handles them.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use serde::{Deserialize, Serialize};

pub use crate::types::Value;

/// The default per-key step budget of [`CheckOptions`].
pub const DEFAULT_MAX_STEPS_PER_KEY: u64 = 1_000_000;

/// What an operation asked for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Call {
    /// `setr` (or a replicated put of a whole list): replace the value.
    Write(Value),
    /// Append an item to a list; on a missing key creates `[item]`; on a text it fails without
    /// effect.
    Append(String),
    /// `getr` (linearizable, not `--stale`).
    Read,
}

/// What came back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Return {
    /// The write was acknowledged.
    Written,
    /// The append was acknowledged.
    Appended,
    /// The read returned this value (`None`: the key does not exist).
    ReadValue(Option<Value>),
    /// Definitely had no effect, e.g. refused or aborted before any commit.
    Failed,
    /// Timed out or the client was killed: may or may not have taken effect, at any time after
    /// the invocation.
    Unknown,
}

/// One recorded operation. Times are microseconds on one monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique within a history; only used to name the operation in reports.
    pub id: u64,
    pub client: u64,
    pub key: String,
    pub call: Call,
    pub invoked_us: u64,
    /// `None` when the return is [`Return::Unknown`] (ignored for unknown operations anyway).
    pub completed_us: Option<u64>,
    pub ret: Return,
}

/// Limits of the search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckOptions {
    /// Attempts to apply an operation to the model, per key, before giving up with
    /// [`Verdict::Unknown`].
    pub max_steps_per_key: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps_per_key: DEFAULT_MAX_STEPS_PER_KEY,
        }
    }
}

/// The verdict on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Linearizable,
    /// No linearization exists (or the key's history is malformed); the explanation names the
    /// operations involved.
    Violation {
        explanation: String,
    },
    /// The search gave up after `steps` steps; counts as a failure.
    Unknown {
        steps: u64,
    },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Linearizable => f.write_str("linearizable"),
            Verdict::Violation { explanation } => write!(f, "violation: {explanation}"),
            Verdict::Unknown { steps } => {
                write!(f, "unknown: gave up after {steps} steps of search")
            }
        }
    }
}

/// The verdicts of [`check`], one per key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub keys: BTreeMap<String, Verdict>,
    /// Operations in the history checked (all of them, including failed and unknown ones).
    pub operations: usize,
}

impl Report {
    /// True only if every key is [`Verdict::Linearizable`].
    pub fn is_ok(&self) -> bool {
        self.keys
            .values()
            .all(|verdict| *verdict == Verdict::Linearizable)
    }

    /// Keys with a [`Verdict::Violation`].
    pub fn violations(&self) -> usize {
        self.keys
            .values()
            .filter(|verdict| matches!(verdict, Verdict::Violation { .. }))
            .count()
    }

    /// Keys on which the search gave up ([`Verdict::Unknown`]).
    pub fn unknowns(&self) -> usize {
        self.keys
            .values()
            .filter(|verdict| matches!(verdict, Verdict::Unknown { .. }))
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} operations on {} keys: {} linearizable, {} violations, {} unknown",
            self.operations,
            self.keys.len(),
            self.keys.len() - self.violations() - self.unknowns(),
            self.violations(),
            self.unknowns()
        )?;
        for (key, verdict) in &self.keys {
            if *verdict != Verdict::Linearizable {
                write!(f, "\n  key {key:?}: {verdict}")?;
            }
        }
        Ok(())
    }
}

/// Checks a history for linearizability, key by key. See the module documentation.
pub fn check(history: &[Operation], options: &CheckOptions) -> Report {
    let mut by_key: BTreeMap<&str, Vec<&Operation>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let keys = by_key
        .into_iter()
        .map(|(key, ops)| (key.to_owned(), check_key(&ops, options.max_steps_per_key)))
        .collect();
    Report {
        keys,
        operations: history.len(),
    }
}

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

// ---------------------------------------------------------------------------------------------
// Model states, hash-consed.

/// The state id of a missing key.
const MISSING: u32 = 0;
/// The state id of the empty list.
const EMPTY_LIST: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Node {
    Missing,
    Text(u32),
    EmptyList,
    /// `list` followed by `item`.
    Cons {
        list: u32,
        item: u32,
    },
}

/// Interns strings and states so that equal states have equal ids.
#[derive(Default)]
struct Interner {
    strings: HashMap<String, u32>,
    names: Vec<String>,
    nodes: Vec<Node>,
    ids: HashMap<Node, u32>,
}

impl Interner {
    fn new() -> Self {
        let mut interner = Interner::default();
        interner.node(Node::Missing);
        interner.node(Node::EmptyList);
        interner
    }

    fn string(&mut self, text: &str) -> u32 {
        if let Some(&id) = self.strings.get(text) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(text.to_owned());
        self.strings.insert(text.to_owned(), id);
        id
    }

    fn node(&mut self, node: Node) -> u32 {
        match self.ids.entry(node) {
            Entry::Occupied(entry) => *entry.get(),
            Entry::Vacant(entry) => {
                let id = self.nodes.len() as u32;
                self.nodes.push(node);
                *entry.insert(id)
            }
        }
    }

    fn value(&mut self, value: Option<&Value>) -> u32 {
        match value {
            None => MISSING,
            Some(Value::Text(text)) => {
                let text = self.string(text);
                self.node(Node::Text(text))
            }
            Some(Value::List(items)) => items.iter().fold(EMPTY_LIST, |list, item| {
                let item = self.string(item);
                self.node(Node::Cons { list, item })
            }),
        }
    }

    /// The state after appending `item`, or `None` if the key holds a text.
    fn append(&mut self, state: u32, item: u32) -> Option<u32> {
        match self.nodes.get(state as usize) {
            Some(Node::Text(_)) | None => None,
            Some(Node::Missing) => Some(self.node(Node::Cons {
                list: EMPTY_LIST,
                item,
            })),
            Some(Node::EmptyList | Node::Cons { .. }) => {
                Some(self.node(Node::Cons { list: state, item }))
            }
        }
    }

    fn is_text(&self, state: u32) -> bool {
        matches!(self.nodes.get(state as usize), Some(Node::Text(_)))
    }

    /// A non-empty list as (the list without its last item, the last item).
    fn cons(&self, state: u32) -> Option<(u32, u32)> {
        match self.nodes.get(state as usize) {
            Some(Node::Cons { list, item }) => Some((*list, *item)),
            _ => None,
        }
    }

    fn is_list(&self, state: u32) -> bool {
        matches!(
            self.nodes.get(state as usize),
            Some(Node::EmptyList | Node::Cons { .. })
        )
    }

    /// If the list `list` starts with the list `prefix`: `Some` of the item that follows the
    /// prefix (`None` if they are equal). `None` if it does not start with it.
    fn item_after(&self, list: u32, prefix: u32) -> Option<Option<u32>> {
        let mut cursor = list;
        let mut after = None;
        loop {
            if cursor == prefix {
                return Some(after);
            }
            match self.nodes.get(cursor as usize) {
                Some(Node::Cons { list, item }) => {
                    after = Some(*item);
                    cursor = *list;
                }
                _ => return None,
            }
        }
    }

    /// The items of a list state, last first (none for other states).
    fn items(&self, state: u32) -> impl Iterator<Item = u32> + '_ {
        let mut cursor = state;
        std::iter::from_fn(move || match self.nodes.get(cursor as usize) {
            Some(Node::Cons { list, item }) => {
                cursor = *list;
                Some(*item)
            }
            _ => None,
        })
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    fn render(&self, state: u32) -> String {
        match self.nodes.get(state as usize) {
            Some(Node::Missing) | None => "missing".to_owned(),
            Some(Node::Text(text)) => format!("{:?}", self.name(*text)),
            Some(Node::EmptyList | Node::Cons { .. }) => {
                let mut items: Vec<&str> = self.items(state).map(|item| self.name(item)).collect();
                items.reverse();
                show_list(&items)
            }
        }
    }
}

fn show_list<S: AsRef<str>>(items: &[S]) -> String {
    const EDGE: usize = 6;
    let quote = |items: &[S]| {
        items
            .iter()
            .map(|item| format!("{:?}", item.as_ref()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if items.len() <= 2 * EDGE + 2 {
        format!("[{}]", quote(items))
    } else {
        format!(
            "[{}, ... {} more ..., {}]",
            quote(&items[..EDGE]),
            items.len() - 2 * EDGE,
            quote(&items[items.len() - EDGE..])
        )
    }
}

fn show_value(value: Option<&Value>) -> String {
    match value {
        None => "missing".to_owned(),
        Some(Value::Text(text)) => format!("{text:?}"),
        Some(Value::List(items)) => show_list(items),
    }
}

/// A one-line description of an operation, for reports.
fn describe(op: &Operation) -> String {
    let call = match &op.call {
        Call::Write(value) => format!("write {}", show_value(Some(value))),
        Call::Append(item) => format!("append {item:?}"),
        Call::Read => "read".to_owned(),
    };
    let ret = match &op.ret {
        Return::Written | Return::Appended => "ok".to_owned(),
        Return::ReadValue(value) => show_value(value.as_ref()),
        Return::Failed => "failed".to_owned(),
        Return::Unknown => "unknown".to_owned(),
    };
    let end = match (&op.ret, op.completed_us) {
        (Return::Unknown, _) | (_, None) => "..".to_owned(),
        (_, Some(completed)) => completed.to_string(),
    };
    format!(
        "#{} (client {}: {call} -> {ret}, {}..{end}us)",
        op.id, op.client, op.invoked_us
    )
}

// ---------------------------------------------------------------------------------------------
// The per-key search.

#[derive(Clone, Copy, Debug)]
enum Kind {
    Write(u32),
    Append(u32),
    Read(u32),
}

struct SearchOp<'a> {
    source: &'a Operation,
    kind: Kind,
    /// Outcome unknown: completion at +infinity, need not be linearized.
    unknown: bool,
    invoked: u64,
    completed: Option<u64>,
}

fn check_key(ops: &[&Operation], max_steps: u64) -> Verdict {
    let mut interner = Interner::new();
    let search_ops = match prepare(ops, &mut interner) {
        Ok(search_ops) => search_ops,
        Err(explanation) => return Verdict::Violation { explanation },
    };
    if let Some(explanation) = precheck(&search_ops, &interner) {
        return Verdict::Violation { explanation };
    }
    search(&search_ops, &mut interner, max_steps)
}

/// Looks for violations that need no search, each read on its own against the operations that
/// must precede it or could have produced what it returned; their explanations are precise. Every
/// rule states a necessary condition for linearizability, so a `Some` is a certain violation; a
/// `None` proves nothing.
fn precheck(ops: &[SearchOp], interner: &Interner) -> Option<String> {
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

/// Turns the key's operations into search operations: drops failed ones, unknown reads and the
/// unknown writes and appends no read could have observed; rejects malformed ones.
fn prepare<'a>(
    ops: &[&'a Operation],
    interner: &mut Interner,
) -> Result<Vec<SearchOp<'a>>, String> {
    let mut observed_states = HashSet::new();
    let mut observed_items = HashSet::new();
    for op in ops {
        if let (Call::Read, Return::ReadValue(value)) = (&op.call, &op.ret) {
            observed_states.insert(interner.value(value.as_ref()));
            if let Some(Value::List(items)) = value {
                for item in items {
                    observed_items.insert(interner.string(item));
                }
            }
        }
    }

    let mut prepared = Vec::with_capacity(ops.len());
    for &op in ops {
        let unknown = op.ret == Return::Unknown;
        let kind = match (&op.call, &op.ret) {
            (_, Return::Failed) | (Call::Read, Return::Unknown) => continue,
            (Call::Read, Return::ReadValue(value)) => Kind::Read(interner.value(value.as_ref())),
            (Call::Write(value), Return::Written | Return::Unknown) => {
                let state = interner.value(Some(value));
                if unknown && matches!(value, Value::Text(_)) && !observed_states.contains(&state) {
                    continue;
                }
                Kind::Write(state)
            }
            (Call::Append(item), Return::Appended | Return::Unknown) => {
                let item = interner.string(item);
                if unknown && !observed_items.contains(&item) {
                    continue;
                }
                Kind::Append(item)
            }
            _ => {
                return Err(format!(
                    "malformed operation {}: the call cannot have this return",
                    describe(op)
                ))
            }
        };
        let completed = match (unknown, op.completed_us) {
            (true, _) => None,
            (false, Some(completed)) if completed >= op.invoked_us => Some(completed),
            (false, Some(_)) => {
                return Err(format!(
                    "malformed operation {}: completes before it is invoked",
                    describe(op)
                ))
            }
            (false, None) => {
                return Err(format!(
                    "malformed operation {}: a definite return without a completion time",
                    describe(op)
                ))
            }
        };
        prepared.push(SearchOp {
            source: op,
            kind,
            unknown,
            invoked: op.invoked_us,
            completed,
        });
    }
    Ok(prepared)
}

/// Applies `op` to the model in `state`; `None` if it cannot take effect there.
fn apply(interner: &mut Interner, op: &SearchOp, state: u32) -> Option<u32> {
    match op.kind {
        Kind::Write(value) => Some(value),
        Kind::Read(value) => (value == state).then_some(state),
        Kind::Append(item) => match interner.append(state, item) {
            Some(next) => Some(next),
            None if op.unknown => Some(state),
            None => None,
        },
    }
}

/// SplitMix64's finaliser: a good 64-bit mix for Zobrist words and state hashes.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A hasher for keys that already are good hashes.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const NO_ENTRY: u32 = u32::MAX;

/// The set of configurations (linearized bitset, state) already visited.
struct Cache {
    words: usize,
    /// The bitsets, `words` words each, in insertion order.
    bits: Vec<u64>,
    states: Vec<u32>,
    /// The previous entry with the same hash, or `NO_ENTRY`.
    chain: Vec<u32>,
    heads: HashMap<u64, u32, BuildHasherDefault<PassThrough>>,
}

impl Cache {
    fn new(words: usize) -> Self {
        Cache {
            words,
            bits: Vec::new(),
            states: Vec::new(),
            chain: Vec::new(),
            heads: HashMap::default(),
        }
    }

    /// Adds the configuration; false if it was already there.
    fn insert(&mut self, hash: u64, bits: &[u64], state: u32) -> bool {
        let head = self.heads.get(&hash).copied().unwrap_or(NO_ENTRY);
        let mut cursor = head;
        while cursor != NO_ENTRY {
            let index = cursor as usize;
            if self.states[index] == state
                && self.bits[index * self.words..(index + 1) * self.words] == *bits
            {
                return false;
            }
            cursor = self.chain[index];
        }
        let id = self.states.len() as u32;
        self.states.push(state);
        self.bits.extend_from_slice(bits);
        self.chain.push(head);
        self.heads.insert(hash, id);
        true
    }
}

/// The deepest dead end met, for the explanation of a violation.
struct DeadEnd {
    prefix: Vec<u32>,
    state: u32,
    blocked: Option<u32>,
    candidates: Vec<u32>,
}

struct Frame {
    op: usize,
    call_entry: usize,
    previous_state: u32,
}

/// For every operation, when its effect was needed as far as the history tells, as (time,
/// position) to sort candidates by: the completion of the first read that could follow it and
/// saw its effect (the text written; a list grown from the list written; a list holding the
/// item appended, at the item's position), else just before the first such write that may
/// follow it (an effect nobody saw must be overwritten before anyone reads), else its own
/// completion. Positions are doubled so an operation can be placed just before another.
fn urgency(ops: &[SearchOp], interner: &Interner) -> Vec<(u64, usize)> {
    // The completions of the reads of every state, sorted; all reads by completion.
    let mut by_state: HashMap<u32, Vec<u64>> = HashMap::new();
    let mut reads: Vec<(u64, u32)> = Vec::new();
    for op in ops {
        if let (Kind::Read(state), Some(completed)) = (op.kind, op.completed) {
            by_state.entry(state).or_default().push(completed);
            reads.push((completed, state));
        }
    }
    for completions in by_state.values_mut() {
        completions.sort_unstable();
    }
    reads.sort_unstable();
    // An item's first observer: the earliest-completing read of a list holding it, and where.
    let mut by_item: HashMap<u32, (u64, usize)> = HashMap::new();
    let mut first_reads: Vec<(u64, u32)> = by_state
        .iter()
        .filter_map(|(&state, completions)| Some((*completions.first()?, state)))
        .collect();
    first_reads.sort_unstable();
    for (deadline, state) in first_reads {
        let items: Vec<u32> = interner.items(state).collect();
        for (from_end, item) in items.iter().enumerate() {
            by_item
                .entry(*item)
                .or_insert((deadline, 2 * (items.len() - from_end)));
        }
    }
    // When each item's append completed (unknown: never).
    let mut appended: HashMap<u32, u64> = HashMap::new();
    for op in ops {
        if let (Kind::Append(item), Some(completed)) = (op.kind, op.completed) {
            appended.insert(item, completed);
        }
    }

    // Positions are doubled so that an operation can be placed just before another.
    let observed: Vec<Option<(u64, usize)>> = ops
        .iter()
        .map(|op| match op.kind {
            Kind::Write(state) if interner.is_list(state) => {
                // The first read that could follow the write and shows a list grown from it:
                // the written list followed by items not already appended when the write began.
                let start = reads.partition_point(|&(completed, _)| completed < op.invoked);
                reads[start..]
                    .iter()
                    .take(64)
                    .find(|&&(_, read)| match interner.item_after(read, state) {
                        Some(None) => true,
                        Some(Some(item)) => appended
                            .get(&item)
                            .is_none_or(|&completed| completed >= op.invoked),
                        None => false,
                    })
                    .map(|&(deadline, _)| (deadline, 2 * interner.items(state).count() + 1))
            }
            // The first read of the value written that could follow the write.
            Kind::Write(state) => by_state.get(&state).and_then(|completions| {
                let first = completions.partition_point(|&completed| completed < op.invoked);
                completions.get(first).map(|&deadline| (deadline, 1))
            }),
            Kind::Append(item) => by_item.get(&item).copied(),
            Kind::Read(_) => None,
        })
        .collect();

    // An effect nobody observed must be replaced by a write before anyone reads: place it just
    // before the first observed write that may follow it, unless its own completion comes first.
    let mut followers: Vec<((u64, usize), u64)> = ops
        .iter()
        .zip(&observed)
        .filter_map(|(op, urgency)| match (op.kind, urgency) {
            (Kind::Write(_), Some(urgency)) => Some((*urgency, op.completed.unwrap_or(u64::MAX))),
            _ => None,
        })
        .collect();
    followers.sort_unstable();
    ops.iter()
        .zip(observed)
        .map(|(op, observed)| {
            let own = (op.completed.unwrap_or(u64::MAX), 1);
            match (op.kind, observed) {
                (_, Some(urgency)) => urgency,
                (Kind::Read(_), None) => own,
                (_, None) => followers
                    .iter()
                    .find(|&&(_, completed)| completed >= op.invoked)
                    .map_or(own, |&((deadline, position), _)| {
                        own.min((deadline, position.saturating_sub(1)))
                    }),
            }
        })
        .collect()
}

/// Reads beyond the candidates whose reachability is checked at every point of the search.
const LOOKAHEAD_READS: usize = 2;
/// Events walked at most for that check.
const LOOKAHEAD_EVENTS: usize = 512;

/// The list's head entry.
const HEAD: usize = 0;

fn state_hash(state: u32) -> u64 {
    mix(!u64::from(state))
}

/// The search over one key's operations.
struct Search<'s, 'a> {
    ops: &'s [SearchOp<'a>],
    interner: &'s mut Interner,
    /// The doubly linked list of events: entry 0 is the head, then the events in time order,
    /// then the tail, which stops a walk like a return does.
    next: Vec<usize>,
    prev: Vec<usize>,
    tail: usize,
    entry_op: Vec<u32>,
    entry_is_call: Vec<bool>,
    call_entry: Vec<usize>,
    return_entry: Vec<Option<usize>>,
    /// When the operation's effect is needed, as far as the history tells (see [`urgency`]).
    urgency: Vec<(u64, usize)>,
    /// The operations appending each item.
    appends_of: HashMap<u32, Vec<u32>>,
    zobrist: Vec<u64>,
    /// The operations linearized so far, and the Zobrist hash of that set.
    linearized: Vec<u64>,
    hash: u64,
    cache: Cache,
    stack: Vec<Frame>,
    state: u32,
    /// Completed operations not yet linearized.
    remaining: usize,
    steps: u64,
}

impl<'s, 'a> Search<'s, 'a> {
    fn new(ops: &'s [SearchOp<'a>], interner: &'s mut Interner) -> Self {
        let count = ops.len();
        // Events sorted by time, calls before returns at equal times.
        let mut events: Vec<(u64, bool, u32)> = Vec::with_capacity(2 * count);
        for (index, op) in ops.iter().enumerate() {
            events.push((op.invoked, false, index as u32));
            if let Some(completed) = op.completed {
                events.push((completed, true, index as u32));
            }
        }
        events.sort_unstable();

        let tail = events.len() + 1;
        let mut next: Vec<usize> = (1..=tail + 1).collect();
        next[tail] = tail;
        let prev: Vec<usize> = (0..=tail).map(|entry| entry.saturating_sub(1)).collect();
        let mut entry_op = vec![0u32; tail + 1];
        let mut entry_is_call = vec![false; tail + 1];
        let mut call_entry = vec![0usize; count];
        let mut return_entry: Vec<Option<usize>> = vec![None; count];
        for (position, &(_, is_return, op)) in events.iter().enumerate() {
            let entry = position + 1;
            entry_op[entry] = op;
            entry_is_call[entry] = !is_return;
            if is_return {
                return_entry[op as usize] = Some(entry);
            } else {
                call_entry[op as usize] = entry;
            }
        }
        let urgency = urgency(ops, interner);
        let mut appends_of: HashMap<u32, Vec<u32>> = HashMap::new();
        for (index, op) in ops.iter().enumerate() {
            if let Kind::Append(item) = op.kind {
                appends_of.entry(item).or_default().push(index as u32);
            }
        }
        let words = count.div_ceil(64).max(1);
        Search {
            ops,
            interner,
            next,
            prev,
            tail,
            entry_op,
            entry_is_call,
            call_entry,
            return_entry,
            urgency,
            appends_of,
            zobrist: (0..count as u64).map(mix).collect(),
            linearized: vec![0; words],
            hash: 0,
            cache: Cache::new(words),
            stack: Vec::new(),
            state: MISSING,
            remaining: ops.iter().filter(|op| !op.unknown).count(),
            steps: 0,
        }
    }

    fn toggle(&mut self, op: usize) {
        self.linearized[op / 64] ^= 1u64 << (op % 64);
        self.hash ^= self.zobrist[op];
    }

    /// Linearizes `op` (whose call is `entry`) next, leading to `new_state`, unless that
    /// configuration was visited already (then returns false and changes nothing).
    fn lift(&mut self, op: usize, entry: usize, new_state: u32) -> bool {
        self.toggle(op);
        if !self.cache.insert(
            self.hash ^ state_hash(new_state),
            &self.linearized,
            new_state,
        ) {
            self.toggle(op);
            return false;
        }
        self.stack.push(Frame {
            op,
            call_entry: entry,
            previous_state: self.state,
        });
        unlink(&mut self.next, &mut self.prev, entry);
        if let Some(ret) = self.return_entry[op] {
            unlink(&mut self.next, &mut self.prev, ret);
        }
        self.state = new_state;
        if !self.ops[op].unknown {
            self.remaining -= 1;
        }
        true
    }

    /// Undoes the last [`Search::lift`].
    fn unlift(&mut self) -> Option<Frame> {
        let frame = self.stack.pop()?;
        if let Some(ret) = self.return_entry[frame.op] {
            relink(&mut self.next, &mut self.prev, ret);
        }
        relink(&mut self.next, &mut self.prev, frame.call_entry);
        self.toggle(frame.op);
        self.state = frame.previous_state;
        if !self.ops[frame.op].unknown {
            self.remaining += 1;
        }
        Some(frame)
    }

    /// The operations that may be linearized next, in the order to try them: a completed read
    /// that matches the state alone if there is one (linearizing it at once is always safe: any
    /// linearization from here can be rearranged to put it first, as it changes nothing and every
    /// operation still outstanding returns after it was invoked); otherwise the writes and
    /// appends by urgency, completed before unknown on a tie. Completed reads that do not match
    /// cannot go next and are left out. None at all when the lookahead finds a read that can no
    /// longer see what it returned.
    fn candidates(&self) -> Vec<u32> {
        let mut candidates = Vec::new();
        let mut entry = self.next[HEAD];
        while self.entry_is_call[entry] {
            let op = self.entry_op[entry];
            let search_op = &self.ops[op as usize];
            match (search_op.kind, search_op.unknown) {
                (Kind::Read(value), false) if value == self.state => return vec![op],
                (Kind::Read(_), _) => {}
                _ => candidates.push(op),
            }
            entry = self.next[entry];
        }
        // Every read that may go next, and the next few reads after them, must still be able to
        // see what they returned before their own returns: if the operations that may precede
        // one cannot bring the state there, give up here at once rather than after exploring
        // everything in between.
        let first_return = entry;
        let mut frontier_reads = 0usize;
        let mut walk = self.next[HEAD];
        while walk != first_return {
            let op = self.entry_op[walk] as usize;
            if matches!(self.ops[op].kind, Kind::Read(_)) && !self.ops[op].unknown {
                frontier_reads += 1;
            }
            walk = self.next[walk];
        }
        let mut later_reads = LOOKAHEAD_READS;
        let mut budget = LOOKAHEAD_EVENTS;
        let mut writes = Vec::new();
        let mut walk = self.next[HEAD];
        while (frontier_reads > 0 || later_reads > 0) && walk != self.tail && budget > 0 {
            budget -= 1;
            let op = self.entry_op[walk] as usize;
            match self.ops[op].kind {
                Kind::Write(value) if self.entry_is_call[walk] => writes.push(value),
                Kind::Read(target) if !self.entry_is_call[walk] => {
                    if !self.reachable(target, &writes, walk) {
                        return Vec::new();
                    }
                    if self.call_entry[op] < first_return {
                        frontier_reads = frontier_reads.saturating_sub(1);
                    } else {
                        later_reads = later_reads.saturating_sub(1);
                    }
                }
                _ => {}
            }
            walk = self.next[walk];
        }
        candidates.sort_by_key(|&op| {
            let search_op = &self.ops[op as usize];
            (self.urgency[op as usize], search_op.unknown, op)
        });
        candidates
    }

    /// Whether operations not linearized yet and invoked before the event `deadline` could bring
    /// the current state to `target`: a necessary condition, checked cheaply. Reaching it takes
    /// an optional last write (one of `writes`, the values of those writes) and then appends of
    /// the items that follow, each by such an operation.
    fn reachable(&self, target: u32, writes: &[u32], deadline: usize) -> bool {
        if target == self.state {
            return true;
        }
        let grown_from = |base: u32| -> bool {
            if self.interner.is_text(base) || self.interner.is_text(target) {
                return false;
            }
            let mut cursor = target;
            loop {
                if cursor == base || (base == MISSING && cursor == EMPTY_LIST) {
                    // From a missing key, the first append creates the list.
                    return cursor != target || base != MISSING;
                }
                let Some((list, item)) = self.interner.cons(cursor) else {
                    return false;
                };
                let available = self.appends_of.get(&item).is_some_and(|ops| {
                    ops.iter().any(|&op| {
                        let op = op as usize;
                        self.linearized[op / 64] & (1u64 << (op % 64)) == 0
                            && self.call_entry[op] < deadline
                    })
                });
                if !available {
                    return false;
                }
                cursor = list;
            }
        };
        if grown_from(self.state) {
            return true;
        }
        writes
            .iter()
            .any(|&value| value == target || grown_from(value))
    }

    /// Every call before the first outstanding return, and that return's operation.
    fn frontier(&self) -> (Vec<u32>, Option<u32>) {
        let mut calls = Vec::new();
        let mut entry = self.next[HEAD];
        while self.entry_is_call[entry] {
            calls.push(self.entry_op[entry]);
            entry = self.next[entry];
        }
        (calls, (entry != self.tail).then(|| self.entry_op[entry]))
    }

    fn run(&mut self, max_steps: u64) -> Verdict {
        let mut dead_end: Option<DeadEnd> = None;
        // One entry per node on the current path: its candidates and how many were tried.
        let mut nodes: Vec<(Vec<u32>, usize)> = vec![(self.candidates(), 0)];
        loop {
            if self.remaining == 0 {
                return Verdict::Linearizable;
            }
            let Some((candidates, tried)) = nodes.last_mut() else {
                break;
            };
            if let Some(&op) = candidates.get(*tried) {
                *tried += 1;
                if self.steps >= max_steps {
                    return Verdict::Unknown { steps: self.steps };
                }
                self.steps += 1;
                let op = op as usize;
                if let Some(new_state) = apply(self.interner, &self.ops[op], self.state) {
                    // An unknown operation that changes nothing is better left for later.
                    let useful = !(self.ops[op].unknown && new_state == self.state);
                    if useful && self.lift(op, self.call_entry[op], new_state) {
                        nodes.push((self.candidates(), 0));
                    }
                }
                continue;
            }
            // Every candidate tried: remember the deepest dead end, then backtrack.
            if dead_end
                .as_ref()
                .is_none_or(|deepest| self.stack.len() > deepest.prefix.len())
            {
                let (candidates, blocked) = self.frontier();
                dead_end = Some(DeadEnd {
                    prefix: self.stack.iter().map(|frame| frame.op as u32).collect(),
                    state: self.state,
                    blocked,
                    candidates,
                });
            }
            nodes.pop();
            if self.unlift().is_none() {
                break;
            }
        }
        Verdict::Violation {
            explanation: explain(self.ops, self.interner, dead_end.as_ref(), self.steps),
        }
    }
}

fn unlink(next: &mut [usize], prev: &mut [usize], entry: usize) {
    let (before, after) = (prev[entry], next[entry]);
    next[before] = after;
    prev[after] = before;
}

fn relink(next: &mut [usize], prev: &mut [usize], entry: usize) {
    let (before, after) = (prev[entry], next[entry]);
    next[before] = entry;
    prev[after] = entry;
}

fn search(ops: &[SearchOp], interner: &mut Interner, max_steps: u64) -> Verdict {
    Search::new(ops, interner).run(max_steps)
}

fn explain(
    ops: &[SearchOp],
    interner: &Interner,
    dead_end: Option<&DeadEnd>,
    steps: u64,
) -> String {
    const SHOWN: usize = 6;
    let completed = ops.iter().filter(|op| !op.unknown).count();
    let name = |op: u32| {
        ops.get(op as usize)
            .map_or_else(|| "?".to_owned(), |op| describe(op.source))
    };
    let mut text = format!(
        "no linearization of the {completed} completed operations on this key exists \
         ({steps} steps searched)"
    );
    let Some(dead_end) = dead_end else {
        return text;
    };
    let prefix = &dead_end.prefix;
    text.push_str(&format!(
        "; the longest valid prefix found has {} operations",
        prefix.len()
    ));
    if !prefix.is_empty() {
        let start = prefix.len().saturating_sub(SHOWN);
        let shown: Vec<String> = prefix[start..].iter().map(|&op| name(op)).collect();
        text.push_str(&format!(
            ", ending {}{}",
            if start > 0 { "... " } else { "" },
            shown.join(", ")
        ));
    }
    text.push_str(&format!(
        ", and leaves the key {}",
        interner.render(dead_end.state)
    ));
    if let Some(blocked) = dead_end.blocked {
        text.push_str(&format!(
            "; then {} must take effect before it completes",
            name(blocked)
        ));
    }
    let candidates: Vec<String> = dead_end
        .candidates
        .iter()
        .take(2 * SHOWN)
        .map(|&op| name(op))
        .collect();
    if candidates.is_empty() {
        text.push_str(", but no operation may go next");
    } else {
        text.push_str(&format!(
            ", but none of the operations that may go next leads to a linearization: {}{}",
            candidates.join(", "),
            if dead_end.candidates.len() > candidates.len() {
                ", ..."
            } else {
                ""
            }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn op(id: u64, key: &str, call: Call, invoked: u64, completed: u64, ret: Return) -> Operation {
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

    fn list(items: &[&str]) -> Value {
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

    fn read_list(id: u64, items: &[&str], invoked: u64, completed: u64) -> Operation {
        op(
            id,
            "k",
            Call::Read,
            invoked,
            completed,
            Return::ReadValue(Some(list(items))),
        )
    }

    fn append(id: u64, item: &str, invoked: u64, completed: u64) -> Operation {
        op(
            id,
            "k",
            Call::Append(item.to_owned()),
            invoked,
            completed,
            Return::Appended,
        )
    }

    fn unknown(mut op: Operation) -> Operation {
        op.ret = Return::Unknown;
        op.completed_us = None;
        op
    }

    fn failed(mut op: Operation) -> Operation {
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
            assert_violation(&[op(1, "k", Call::Read, 0, 10, Return::Written)])
                .contains("malformed")
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

    // -----------------------------------------------------------------------------------------
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
                    (Call::Read, Return::ReadValue(value)) => {
                        (value == state).then(|| state.clone())
                    }
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

    // -----------------------------------------------------------------------------------------
    // check_appends

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

    // -----------------------------------------------------------------------------------------
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
            let (call, mut ret) = if key_index % 2 == 0 {
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
                fate % 2 == 0
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
}
