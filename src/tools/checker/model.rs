//! The model a key is checked against: its states hash-consed into small integers, and the
//! key's operations prepared as operations on those states.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};

use super::report::{describe, show_list};
use super::{Call, Operation, Return, Value};

/// The state id of a missing key.
pub(super) const MISSING: u32 = 0;
/// The state id of the empty list.
pub(super) const EMPTY_LIST: u32 = 1;

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
pub(super) struct Interner {
    strings: HashMap<String, u32>,
    names: Vec<String>,
    nodes: Vec<Node>,
    ids: HashMap<Node, u32>,
}

impl Interner {
    pub(super) fn new() -> Self {
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

    pub(super) fn is_text(&self, state: u32) -> bool {
        matches!(self.nodes.get(state as usize), Some(Node::Text(_)))
    }

    /// A non-empty list as (the list without its last item, the last item).
    pub(super) fn cons(&self, state: u32) -> Option<(u32, u32)> {
        match self.nodes.get(state as usize) {
            Some(Node::Cons { list, item }) => Some((*list, *item)),
            _ => None,
        }
    }

    pub(super) fn is_list(&self, state: u32) -> bool {
        matches!(
            self.nodes.get(state as usize),
            Some(Node::EmptyList | Node::Cons { .. })
        )
    }

    /// If the list `list` starts with the list `prefix`: `Some` of the item that follows the
    /// prefix (`None` if they are equal). `None` if it does not start with it.
    pub(super) fn item_after(&self, list: u32, prefix: u32) -> Option<Option<u32>> {
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
    pub(super) fn items(&self, state: u32) -> impl Iterator<Item = u32> + '_ {
        let mut cursor = state;
        std::iter::from_fn(move || match self.nodes.get(cursor as usize) {
            Some(Node::Cons { list, item }) => {
                cursor = *list;
                Some(*item)
            }
            _ => None,
        })
    }

    pub(super) fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    pub(super) fn render(&self, state: u32) -> String {
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

#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Write(u32),
    Append(u32),
    Read(u32),
}

pub(super) struct SearchOp<'a> {
    pub(super) source: &'a Operation,
    pub(super) kind: Kind,
    /// Outcome unknown: completion at +infinity, need not be linearized.
    pub(super) unknown: bool,
    pub(super) invoked: u64,
    pub(super) completed: Option<u64>,
}

/// Turns the key's operations into search operations: drops failed ones, unknown reads and the
/// unknown writes and appends no read could have observed; rejects malformed ones.
pub(super) fn prepare<'a>(
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
pub(super) fn apply(interner: &mut Interner, op: &SearchOp, state: u32) -> Option<u32> {
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
