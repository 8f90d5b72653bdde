//! The search (Wing–Gong–Lowe) over one key's operations: Lowe's cache of visited
//! configurations, the urgency order of candidates and the lookahead, and the explanation of a
//! violation from the deepest dead end the search met.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::model::{apply, Interner, Kind, SearchOp, EMPTY_LIST, MISSING};
use super::report::describe;
use super::Verdict;

/// SplitMix64's finaliser: a good 64-bit mix for Zobrist words and state hashes.
pub(super) fn mix(mut x: u64) -> u64 {
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

pub(super) fn search(ops: &[SearchOp], interner: &mut Interner, max_steps: u64) -> Verdict {
    Search::new(ops, interner).run(max_steps)
}
