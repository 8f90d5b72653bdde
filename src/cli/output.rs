//! How results are printed: text for people, or one JSON document each with `--json`.
//!
//! Apart from the command line because the tools it runs (`demo`, `bench`, `chaos`) print
//! through it too, and a tool must not import the command line that calls it.

use serde_json::json;

use crate::error::Error;

/// How results are printed.
#[derive(Clone, Copy, Debug)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Prints a success: `human` as text, or `doc` as JSON.
    pub fn ok(&self, human: impl std::fmt::Display, doc: serde_json::Value) {
        if self.json {
            println!("{doc}");
        } else {
            println!("{human}");
        }
    }

    /// Prints an error on stderr and returns its exit code.
    pub fn error(&self, err: &Error) -> u8 {
        if self.json {
            eprintln!(
                "{}",
                json!({"error": {"kind": err.kind(), "message": err.to_string()}})
            );
        } else {
            eprintln!("error: {err}");
        }
        err.exit_code()
    }

    /// A progress line for people; silent with `--json`.
    pub fn progress(&self, line: impl std::fmt::Display) {
        if !self.json {
            eprintln!("{line}");
        }
    }
}
