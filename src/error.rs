//! The one error type of ringleader. It crosses the wire (servers answer `Result<Reply, Error>`),
//! so a client learns *why* a peer refused, and it carries its own retry meaning
//! ([`Error::is_retryable`]) and its CLI exit code ([`Error::exit_code`]).

use serde::{Deserialize, Serialize};

/// Errors, grouped by what a caller should do about them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (bad arguments, a value of the wrong kind, an oversized key, an
    /// undecodable frame). Retrying the same request cannot help.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The peer speaks another protocol version or is another kind of service.
    #[error("protocol mismatch: {0}")]
    Protocol(String),
    /// The peer could not be reached or the connection broke.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// No answer within the time allowed.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The peer understood the request and said no: a vote no, an abort, a denied id.
    #[error("refused: {0}")]
    Refused(String),
    /// The caller's view of the cluster is older or newer than the peer's.
    #[error("epoch mismatch: {0}")]
    StaleView(String),
    /// The cluster is moving keys to match a new view; reads and writes wait for it.
    #[error("rebalancing: {0}")]
    Rebalancing(String),
    /// A lock is held by someone else and the wait ran out.
    #[error("lock busy: {0}")]
    LockBusy(String),
    /// Waiting for the lock would close a cycle in the wait-for graph.
    #[error("deadlock: {0}")]
    Deadlock(String),
    /// A bug or an unexpected local failure (I/O on a file, a task that died).
    #[error("internal error: {0}")]
    Internal(String),
    /// Another transaction holds the key; it will be decided shortly.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A write whose outcome is unknown: its commit reached the primary but not a majority, or
    /// the primary's answer was lost. The replicas settle it; it may or may not have happened.
    #[error("outcome unknown: {0}")]
    Uncertain(String),
    /// The key's every replica left the view before the cluster could settle without them: its
    /// data may have been lost with them (rather than never written). A server that comes back
    /// with a copy brings it back.
    #[error("data may be lost: {0}")]
    DataLoss(String),
    /// This view-leader member is not the leader: ask `leader` (the address of the leader it
    /// knows, if any) or another member.
    #[error("not the leader of the view leader's group: {detail}")]
    NotLeader {
        leader: Option<String>,
        detail: String,
    },
    /// The caller may not do this: it did not prove the cluster secret, it proved a client's
    /// secret for a request only members may send, or it asked for a fault on a process started
    /// without `--fault-injection`. The message says which and how to fix it.
    #[error("forbidden: {0}")]
    Forbidden(String),
}

/// Results in ringleader.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the same operation may succeed if tried again after a pause.
    pub fn is_retryable(&self) -> bool {
        match self {
            // The request will be just as wrong next time.
            Error::InvalidRequest(_) | Error::Protocol(_) => false,
            // The peer may be back, or the network may heal.
            Error::Unreachable(_) | Error::Timeout(_) => true,
            // A vote no is usually a concurrent transaction on the key; it passes.
            Error::Refused(_) => true,
            // Refresh the view and the next attempt carries the right epoch.
            Error::StaleView(_) => true,
            // Rebalancing finishes by itself.
            Error::Rebalancing(_) => true,
            // The holder releases or its lease lapses.
            Error::LockBusy(_) => true,
            // Waiting cannot break the cycle: someone must release.
            Error::Deadlock(_) => false,
            Error::Internal(_) => false,
            // The other transaction commits or aborts within a timeout.
            Error::Conflict(_) => true,
            // Retrying under a new transaction could apply the write twice.
            Error::Uncertain(_) => false,
            // Only a server that held the copies coming back can help, and nobody knows when.
            Error::DataLoss(_) => false,
            // The leader answers, or one is elected within an election timeout.
            Error::NotLeader { .. } => true,
            // The same caller asking again is refused again.
            Error::Forbidden(_) => false,
        }
    }

    /// The client binary's exit code for this error (documented in the README).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Unreachable(_) | Error::Timeout(_) | Error::Uncertain(_) => 3,
            Error::Refused(_)
            | Error::StaleView(_)
            | Error::Rebalancing(_)
            | Error::LockBusy(_)
            | Error::Deadlock(_)
            | Error::Conflict(_)
            | Error::Forbidden(_) => 4,
            Error::InvalidRequest(_) | Error::Protocol(_) => 5,
            Error::Internal(_) => 3,
            Error::DataLoss(_) => 6,
            Error::NotLeader { .. } => 3,
        }
    }

    /// A short machine-readable name, used in `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::Protocol(_) => "protocol",
            Error::Unreachable(_) => "unreachable",
            Error::Timeout(_) => "timeout",
            Error::Refused(_) => "refused",
            Error::StaleView(_) => "stale_view",
            Error::Rebalancing(_) => "rebalancing",
            Error::LockBusy(_) => "lock_busy",
            Error::Deadlock(_) => "deadlock",
            Error::Internal(_) => "internal",
            Error::Conflict(_) => "conflict",
            Error::Uncertain(_) => "uncertain",
            Error::DataLoss(_) => "data_loss",
            Error::NotLeader { .. } => "not_leader",
            Error::Forbidden(_) => "forbidden",
        }
    }
}

/// An I/O error keeps its kind: a broken or refused connection is `Unreachable` (the peer may
/// come back), a timeout is `Timeout`, and anything else (a file that cannot be read or written,
/// a full disk) is `Internal`: retrying the call elsewhere cannot help.
impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match err.kind() {
            TimedOut | WouldBlock => Error::Timeout(err.to_string()),
            ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected
            | UnexpectedEof | AddrNotAvailable | AddrInUse | HostUnreachable
            | NetworkUnreachable | NetworkDown => Error::Unreachable(err.to_string()),
            _ => Error::Internal(err.to_string()),
        }
    }
}

impl From<postcard::Error> for Error {
    fn from(err: postcard::Error) -> Self {
        Error::InvalidRequest(format!("undecodable message: {err}"))
    }
}

impl From<tokio::time::error::Elapsed> for Error {
    fn from(err: tokio::time::error::Elapsed) -> Self {
        Error::Timeout(err.to_string())
    }
}

/// Builds an [`Error::InvalidRequest`] from a format string.
#[macro_export]
macro_rules! errinput {
    ($($args:tt)*) => { $crate::error::Error::InvalidRequest(format!($($args)*)) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error as IoError, ErrorKind};

    #[test]
    fn io_errors_keep_their_kind() {
        let kind = |k: ErrorKind| Error::from(IoError::from(k)).kind();
        assert_eq!(kind(ErrorKind::ConnectionRefused), "unreachable");
        assert_eq!(kind(ErrorKind::BrokenPipe), "unreachable");
        assert_eq!(kind(ErrorKind::TimedOut), "timeout");
        assert_eq!(
            kind(ErrorKind::NotFound),
            "internal",
            "a missing file is no network fault"
        );
        assert_eq!(kind(ErrorKind::PermissionDenied), "internal");
        assert_eq!(kind(ErrorKind::StorageFull), "internal");
        assert!(!Error::from(IoError::from(ErrorKind::StorageFull)).is_retryable());
    }
}
