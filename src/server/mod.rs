//! The storage server: the store, the 2PC participant, and the shell that serves them and keeps
//! the server in the view.

pub mod mover;
pub mod rebalance;
pub mod service;

pub use service::{run, run_until, run_with_http, NodeSnapshot, StorageServer};

use crate::error::{Error, Result};
use crate::viewleader::HEARTBEAT_INTERVAL_MS_DEFAULT;

/// Default time allowed for one call to another process.
pub const RPC_TIMEOUT_MS_DEFAULT: u64 = 2_000;
/// Default time a prepared transaction waits for its coordinator before the participants
/// resolve it among themselves.
pub const TX_TIMEOUT_MS_DEFAULT: u64 = 3_000;

/// How a storage server runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// The view leader, `host[:port]` (without a port, 39000–39010 are tried in turn).
    pub viewleader: String,
    /// The address others use to reach this server; default: the bound one.
    pub advertise: Option<String>,
    pub heartbeat_interval_ms: u64,
    pub rpc_timeout_ms: u64,
    /// A transaction pending longer is resolved without its coordinator.
    pub tx_timeout_ms: u64,
    /// Test hook: drop or duplicate replies (see [`ReplyFaults`]).
    pub faults: ReplyFaults,
}

/// A fault hook for tests: drop every `drop_every`-th reply and send every
/// `duplicate_every`-th reply twice (0 = never), so that retries and duplicate detection can be
/// tested through the real network path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplyFaults {
    pub drop_every: u64,
    pub duplicate_every: u64,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            viewleader: "localhost:39000".into(),
            advertise: None,
            heartbeat_interval_ms: HEARTBEAT_INTERVAL_MS_DEFAULT,
            rpc_timeout_ms: RPC_TIMEOUT_MS_DEFAULT,
            tx_timeout_ms: TX_TIMEOUT_MS_DEFAULT,
            faults: ReplyFaults::default(),
        }
    }
}

impl ServerOptions {
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_interval_ms == 0 {
            return Err(Error::InvalidRequest(
                "heartbeat interval must be above 0 ms".into(),
            ));
        }
        if self.tx_timeout_ms == 0 {
            return Err(Error::InvalidRequest(
                "transaction timeout must be above 0 ms".into(),
            ));
        }
        if self.rpc_timeout_ms == 0 {
            return Err(Error::InvalidRequest(
                "rpc timeout must be above 0 ms".into(),
            ));
        }
        if self.viewleader.trim().is_empty() {
            return Err(Error::InvalidRequest(
                "the view leader address is empty".into(),
            ));
        }
        if let Some(advertise) = &self.advertise {
            if !advertise.contains(':') {
                return Err(Error::InvalidRequest(format!(
                    "--advertise needs host:port, got {advertise:?}"
                )));
            }
        }
        Ok(())
    }
}
