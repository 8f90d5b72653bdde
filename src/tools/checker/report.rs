//! The words for operations and values in verdicts and problems.

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
