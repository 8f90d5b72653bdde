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
//!
//! # Where the parts live
//! [`check`] takes each key through three files in turn: `model.rs` prepares its operations for
//! the model (hash-consed states, the reductions above), `precheck.rs` applies the
//! certain-violation rules, `search.rs` runs the search with its cache, urgency order and
//! lookahead, and explains a violation by the deepest dead end it met. `appends.rs` is
//! [`check_appends`]; `report.rs` words the operations and values every explanation names.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use crate::types::Value;

mod appends;
mod model;
mod precheck;
mod report;
mod search;
#[cfg(test)]
mod tests;

pub use appends::check_appends;
use model::{prepare, Interner};
use precheck::precheck;
use search::search;

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

/// One key's verdict. The certain-violation rules go first: they are cheap and explain precisely,
/// and the search only has to run when they find nothing.
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
