//! The storage server: the network shell around a storage engine ([`crate::storage`]) and a 2PC
//! participant ([`crate::twopc`]).
//!
//! * [`node`]: what a server is and holds, shared by the parts below;
//! * [`dispatch`]: its answers to requests;
//! * [`membership`]: heartbeats and following the view;
//! * [`termination`]: finishing transactions whose coordinator went silent;
//! * [`mover`]: carrying out rebalancing, planned by the pure [`rebalance`] planner;
//! * [`peers`]: calling another member, through a relay when the direct link fails;
//! * this file: the options and the assembly ([`run`], [`start`], [`serve`]).
//!
//! The HTTP gateway is not part of the server: whoever starts a server wires it to
//! `crate::http` (the `server` binary does).

pub mod dispatch;
pub mod membership;
pub mod mover;
pub mod node;
pub mod peers;
pub mod rebalance;
pub mod termination;

pub use node::{NodeSnapshot, StorageServer};

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::errinput;
use crate::error::Result;
use crate::faults::{PlantedBug, ReplyFaults};
use crate::net::{Env, Listener};
use crate::rpc::server::serve as serve_rpc;
use crate::storage::Memory;
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
    /// Test hook: drop or duplicate replies (see [`crate::faults`]).
    pub faults: ReplyFaults,
    /// Test hook: a known defect switched on, to prove the checks catch it. Never set outside
    /// tests.
    pub planted_bug: Option<PlantedBug>,
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
            planted_bug: None,
        }
    }
}

impl ServerOptions {
    pub fn validate(&self) -> Result<()> {
        if self.heartbeat_interval_ms == 0 {
            return Err(errinput!("heartbeat interval must be above 0 ms"));
        }
        if self.tx_timeout_ms == 0 {
            return Err(errinput!("transaction timeout must be above 0 ms"));
        }
        if self.rpc_timeout_ms == 0 {
            return Err(errinput!("rpc timeout must be above 0 ms"));
        }
        if self.viewleader.trim().is_empty() {
            return Err(errinput!("the view leader address is empty"));
        }
        if let Some(advertise) = &self.advertise {
            if !advertise.contains(':') {
                return Err(errinput!("--advertise needs host:port, got {advertise:?}"));
            }
        }
        Ok(())
    }
}

/// Runs a storage server on `listener` (see [`serve`] for `shutdown` and `kill`).
pub async fn run(
    listener: Box<dyn Listener>,
    options: ServerOptions,
    env: Env,
    shutdown: CancellationToken,
    kill: CancellationToken,
) -> Result<()> {
    let server = start(&*listener, options, env)?;
    serve(server, listener, shutdown, kill).await
}

/// A server for `listener`, built and ready to [`serve`]: whoever starts it can wire other
/// services (the HTTP gateway) to it first.
pub fn start(
    listener: &dyn Listener,
    options: ServerOptions,
    env: Env,
) -> Result<Arc<StorageServer>> {
    options.validate()?;
    let addr = match &options.advertise {
        Some(advertise) => advertise.clone(),
        None => listener.local_addr()?,
    };
    let server = StorageServer::new(addr, options, env, Box::new(Memory::new()));
    info!(addr = %server.addr(), id = %server.id(), viewleader = %server.options.viewleader, "storage server starting");
    Ok(Arc::new(server))
}

/// Serves `server` on `listener`. When `shutdown` fires it leaves gracefully: it tells the view
/// leader it is leaving, hands its keys to their new owners, then returns. When `kill` fires (at
/// any time, also during the handoff) it stops at once, as a crash would.
pub async fn serve(
    server: Arc<StorageServer>,
    listener: Box<dyn Listener>,
    shutdown: CancellationToken,
    kill: CancellationToken,
) -> Result<()> {
    let stopping = server.stopping();
    // A graceful stop leaves the view and hands the keys over while still serving (clients
    // with an older view still get answers), then stops everything.
    let control = {
        let stopping = stopping.clone();
        let server = server.clone();
        async move {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    tokio::select! {
                        _ = kill.cancelled() => warn!("killed during the handoff"),
                        _ = mover::Mover::new(server).leave() => {}
                    }
                }
                _ = kill.cancelled() => {}
            }
            stopping.cancel();
        }
    };
    let heartbeats = tokio::spawn(membership::heartbeats(server.clone(), stopping.clone()));
    let views = tokio::spawn(membership::follow_view(server.clone(), stopping.clone()));
    let terminations = tokio::spawn(termination::resolve_overdue(
        server.clone(),
        stopping.clone(),
    ));
    let cluster = server.env().cluster.clone();
    tokio::join!(control, serve_rpc(listener, cluster, server, stopping));
    let _ = heartbeats.await;
    let _ = views.await;
    let _ = terminations.await;
    Ok(())
}
