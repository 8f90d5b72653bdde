//! The words of verdicts and problems: operations, values and the dead end of a failed search.

use super::model::{Interner, SearchOp};
use super::search::DeadEnd;
use super::{Call, Operation, Return, Value};

pub(super) fn show_list<S: AsRef<str>>(items: &[S]) -> String {
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
pub(super) fn describe(op: &Operation) -> String {
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

pub(super) fn explain(
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
