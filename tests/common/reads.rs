//! Reading through the `client` binary as the fault suites do (tests/durability.rs,
//! tests/restarts.rs): one `getr` classified as found, not found or failed (with the error's
//! kind from its `--json` stderr), and the short per-call timeouts for runs made while a fault is
//! in the air. Each suite keeps its own writers and its own choice of how short "quick" is.

use serde_json::Value as Json;

use super::{ClientRun, TestCluster};

/// What one `client getr` said.
#[derive(Debug)]
pub enum Read {
    /// Exit 0: the `value` field of its JSON document.
    Found(Json),
    /// Exit 1: "not found".
    NotFound,
    /// Any other exit: the error's kind from its `--json` stderr.
    Failed { kind: String },
}

/// `{"error": {"kind", "message"}}` of a failed `--json` run, or what it printed instead.
pub fn error_of(run: &ClientRun) -> (String, String) {
    match serde_json::from_str::<Json>(run.stderr.trim()) {
        Ok(doc) => (
            doc["error"]["kind"].as_str().unwrap_or("?").to_string(),
            doc["error"]["message"].as_str().unwrap_or("?").to_string(),
        ),
        Err(_) => ("unparsed".to_string(), run.stderr.clone()),
    }
}

/// What a `client --json getr` run said, by its exit code.
pub fn classify(run: &ClientRun) -> Read {
    match run.code {
        0 => Read::Found(run.json()["value"].clone()),
        1 => Read::NotFound,
        _ => Read::Failed {
            kind: error_of(run).0,
        },
    }
}

/// `client getr KEY` with the default timeouts.
pub fn getr(cluster: &TestCluster, key: &str) -> (Read, ClientRun) {
    let run = cluster.client(&["--json", "getr", key]);
    (classify(&run), run)
}

/// `args` after `--timeout-ms QUICK_MS --wait-ms QUICK_MS`: a call and a rebalancing wait short
/// enough that an error comes back quickly and the next try goes out.
pub fn with_quick_timeouts(quick_ms: &str, args: &[&str]) -> Vec<String> {
    ["--timeout-ms", quick_ms, "--wait-ms", quick_ms]
        .iter()
        .chain(args)
        .map(|arg| arg.to_string())
        .collect()
}
