//! The distributed log (INF-3203's contract). The log is one list-valued key (`--log-key`,
//! default `log`) replicated like any other, so its order is the order of committed appends and
//! every node reads the same list.
//!
//! * `PUT /` with a UTF-8 body appends it as one entry. 200 only once it is committed. If it
//!   cannot be committed in time (`log_commit_ms`, 4.8 s: a crashed replica is waited out until
//!   the view leader drops it, and two crashed at once until the view leader's return wait
//!   ends, one lease plus three more at a 1 s lease) it is aborted and the connection is closed
//!   without a response; an aborted entry never appears.
//! * `POST /crash`: a simulated crash of the whole node (storage server included) until
//!   `POST /recover`; meanwhile every other request gets its connection closed unanswered.
//! * `POST /exit`: write the log, one entry per line in log order, to
//!   `output/{output_id}-server-{host}{port}.csv`, answer 200, stop taking entries, keep serving
//!   the other nodes for a linger, then end the process. A crashed node recovers first and reads
//!   the log from a majority of its replicas, so every node writes the same committed log.
//!
//! `/crash`, `/recover` and `/exit` answer 403 on a node started without `--fault-injection`
//! (the course's harness starts its servers with it).
//!
//! Deliberately left out: an entry whose commit reached the primary and then lost every reply
//! ("outcome unknown", a rare double fault) is waited for until the deadline and answered 200
//! only if it became visible; if not, the connection is closed although it may still appear.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Response, StatusCode};
use tracing::{info, warn};

use super::{accepting, drop_connection, text, Gateway};
use crate::error::Error;
use crate::types::Value;

/// Time an entry may take to commit before the node gives up on it: just under the 5 s the
/// external client waits, because two replicas of the log crashed at once keep it unwritable
/// for a lease and the view leader's return wait (`RETURN_WAIT_LEASES`), about 4.2 s at a
/// 1 s lease.
pub const LOG_COMMIT_MS_DEFAULT: u64 = 4_800;
/// Time a node keeps serving the others after `/exit`.
pub const EXIT_LINGER_MS_DEFAULT: u64 = 3_000;
/// The gateway's client's time allowed per call.
pub const GATEWAY_RPC_TIMEOUT_MS: u64 = 1_000;
/// Longest entry accepted, in bytes.
pub const LOG_ENTRY_BYTES_MAX: usize = 64 * 1024;
/// Tries of reading the log for `/exit`.
pub const EXIT_READ_ATTEMPTS_MAX: usize = 20;

pub async fn put_entry(State(gateway): State<Arc<Gateway>>, body: Bytes) -> Response<Body> {
    if !accepting(&gateway) {
        return drop_connection();
    }
    let Ok(entry) = String::from_utf8(body.to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "a log entry must be UTF-8\n");
    };
    let one_line = !entry.contains('\n') && !entry.contains('\r');
    if entry.is_empty() || !one_line || entry.len() > LOG_ENTRY_BYTES_MAX {
        return text(
            StatusCode::BAD_REQUEST,
            format!("a log entry is one line, non-empty, of at most {LOG_ENTRY_BYTES_MAX} bytes\n"),
        );
    }
    let started = gateway.server.env().now();
    let deadline = started + Duration::from_millis(gateway.options.log_commit_ms);
    match gateway
        .client
        .append_by(&gateway.options.log_key, &entry, deadline)
        .await
    {
        Ok(_) => text(StatusCode::OK, "committed\n"),
        Err(Error::Uncertain(why)) => {
            // Wait, within the deadline, for the outcome to show.
            while gateway.server.env().now() < deadline {
                if log_contains(&gateway, &entry).await {
                    return text(StatusCode::OK, "committed\n");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            warn!(%why, "log entry's outcome unknown at the deadline; closing without an answer");
            drop_connection()
        }
        Err(err) => {
            info!(%err, elapsed_ms = gateway.server.env().now().duration_since(started).as_millis() as u64, "log entry not committed; closing without an answer");
            drop_connection()
        }
    }
}

async fn log_contains(gateway: &Gateway, entry: &str) -> bool {
    match gateway.client.getr(&gateway.options.log_key).await {
        Ok(Some(found)) => {
            matches!(found.value.value, Value::List(items) if items.iter().any(|i| i == entry))
        }
        _ => false,
    }
}

/// 403 with the reason when the node was started without `--fault-injection` (see
/// [`crate::faults::check_injection`]), for `/crash`, `/recover` and `/exit` alike.
fn refuse_fault(gateway: &Gateway, what: &str) -> Option<Response<Body>> {
    let enabled = gateway.server.options().fault_injection;
    let Err(err) = crate::faults::check_injection(enabled, what) else {
        return None;
    };
    Some(text(StatusCode::FORBIDDEN, format!("{err}\n")))
}

pub async fn crash(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    if let Some(refused) = refuse_fault(&gateway, "POST /crash") {
        return refused;
    }
    gateway.server.set_crashed(true);
    text(StatusCode::OK, "crashed\n")
}

pub async fn recover(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    if let Some(refused) = refuse_fault(&gateway, "POST /recover") {
        return refused;
    }
    gateway.server.set_crashed(false);
    text(StatusCode::OK, "recovered\n")
}

pub async fn exit(State(gateway): State<Arc<Gateway>>) -> Response<Body> {
    if let Some(refused) = refuse_fault(&gateway, "POST /exit") {
        return refused;
    }
    gateway.exiting.store(true, Ordering::Release);
    gateway.server.set_crashed(false);
    // Read the committed log from a majority (retrying while the cluster settles after the
    // recovery), then write it.
    let mut entries = None;
    for _ in 0..EXIT_READ_ATTEMPTS_MAX {
        match gateway.client.getr(&gateway.options.log_key).await {
            Ok(Some(found)) => {
                entries = Some(match found.value.value {
                    Value::List(items) => items,
                    Value::Text(text) => vec![text],
                });
                break;
            }
            Ok(None) => {
                entries = Some(Vec::new());
                break;
            }
            Err(err) => {
                warn!(%err, "reading the log for /exit; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
    let Some(entries) = entries else {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not read the log\n",
        );
    };
    // The course's comparer reads `{output_id}-server-{host}{port}.csv`.
    let (host, port) = gateway
        .local_addr
        .rsplit_once(':')
        .unwrap_or((gateway.local_addr.as_str(), ""));
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let path = std::path::Path::new("output").join(format!(
        "{}-server-{host}{port}.csv",
        gateway.options.log_output_id
    ));
    let mut contents = entries.join("\n");
    if !contents.is_empty() {
        contents.push('\n');
    }
    let written = std::fs::create_dir_all("output").and_then(|_| std::fs::write(&path, contents));
    if let Err(err) = written {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write {}: {err}\n", path.display()),
        );
    }
    info!(path = %path.display(), entries = entries.len(), "log written; exiting after the linger");
    let kill = gateway.kill.clone();
    let linger = Duration::from_millis(gateway.options.exit_linger_ms);
    tokio::spawn(async move {
        tokio::time::sleep(linger).await;
        kill.cancel();
    });
    text(
        StatusCode::OK,
        format!("wrote {} entries to {}\n", entries.len(), path.display()),
    )
}
