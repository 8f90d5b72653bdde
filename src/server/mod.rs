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
//! A server holds two key spaces in two engines ([`crate::types::Space`]): the ring keys that
//! 2PC writes and rebalancing moves, and its own single-server keys (`set`), which nothing moves.
//! A durable server keeps both logs in its one data dir, the second under [`LOCAL_FILES_PREFIX`].
//! A data dir written before the spaces were apart (protocol version 7 and older) holds its
//! single-server keys in the ring log: they are ring keys from then on.
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
use crate::storage::{identity, Disk, Engine, Log, LogOptions, Memory, Prefixed};
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
    /// `--fault-injection`: answer `crash` and `recover` (and, on the gateway, `/crash`,
    /// `/recover`, `/exit`). Off by default: without it anyone who reaches the port could
    /// silence the server (see [`crate::faults`]).
    pub fault_injection: bool,
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
            fault_injection: false,
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

/// Where a server keeps its data when not told: `ringleader-data/server-PORT` under the working
/// directory (as etcd's `default.etcd`).
pub fn default_data_dir(port: &str) -> std::path::PathBuf {
    std::path::Path::new("ringleader-data").join(format!("server-{port}"))
}

/// Where a server keeps its keys.
#[derive(Clone, Debug)]
pub enum Storage {
    /// In memory only (`--in-memory`): a process that dies loses what it held.
    Memory,
    /// The log engine in a data dir (the real one, or a simulated disk).
    Disk {
        disk: Arc<dyn Disk>,
        options: LogOptions,
    },
}

/// The name prefix of the files of a durable server's single-server keys, beside its ring keys'
/// log in the same data dir ([`crate::storage::Prefixed`]).
pub const LOCAL_FILES_PREFIX: &str = "local-";

/// How to recover from damage to the ring keys' log: the other replicas refill those, but not
/// the single-server keys, which the operator carries over by hand.
const RING_DAMAGE_ADVICE: &str = "To recover, move the data dir away (keep it for inspection) \
     and start the server again: it rejoins empty under a new id and the other replicas refill \
     its ring keys. Its single-server keys (set) have no other copy: to keep them, copy the \
     files named local-* from the old data dir into the new one before starting";

/// How to recover from damage to the single-server keys' log: those keys have no other copy, so
/// only that log is set aside; the server keeps its id and its ring keys.
const LOCAL_DAMAGE_ADVICE: &str = "That is the log of the single-server keys (set), which have \
     no other copy. To recover, move the files named local-* away (keep them for inspection) and \
     start the server again: it keeps its id and its ring keys, and starts with no single-server \
     keys";

/// What opening a server's storage gave it.
pub(crate) struct Opened {
    /// The ring keys ([`crate::types::Space::Ring`]), with the 2PC records.
    pub(crate) engine: Box<dyn Engine>,
    /// The single-server keys ([`crate::types::Space::Local`]), with the exactly-once records of
    /// `set`: an engine of their own, so that rebalancing, which scans the ring keys, never
    /// sees them.
    pub(crate) local: Box<dyn Engine>,
    /// The identity a durable data dir holds (none for a fresh one or in memory).
    pub(crate) identity: Option<identity::Identity>,
    /// Where identity changes are written (none in memory).
    pub(crate) disk: Option<Arc<dyn Disk>>,
}

impl Storage {
    /// The log engine in the directory `dir` (created if missing), locked against a second
    /// process.
    pub fn data_dir(dir: &std::path::Path, options: LogOptions) -> Result<Self> {
        let disk = crate::storage::RealDisk::open(dir).map_err(|err| {
            crate::error::Error::Internal(format!(
                "cannot open the data dir {}: {err}",
                dir.display()
            ))
        })?;
        Ok(Storage::Disk {
            disk: Arc::new(disk),
            options,
        })
    }

    /// The log engine in `data_dir`, or by default in [`default_data_dir`] of the port
    /// `listener` is bound to.
    pub fn for_listener(
        data_dir: Option<std::path::PathBuf>,
        listener: &dyn Listener,
        options: LogOptions,
    ) -> Result<Self> {
        let dir = match data_dir {
            Some(dir) => dir,
            None => {
                let addr = listener.local_addr()?;
                default_data_dir(addr.rsplit(':').next().unwrap_or("0"))
            }
        };
        Self::data_dir(&dir, options)
    }

    /// Opens the engine, recovering a durable one, and refuses a data dir of another cluster.
    fn open(self, cluster: &str) -> Result<Opened> {
        match self {
            Storage::Memory => Ok(Opened {
                engine: Box::new(Memory::new()),
                local: Box::new(Memory::new()),
                identity: None,
                disk: None,
            }),
            Storage::Disk { disk, options } => {
                let identity = identity::load(&*disk)?;
                if let Some(identity) = &identity {
                    identity::check_cluster(&*disk, identity, cluster)?;
                }
                let log = Log::open_advising(disk.clone(), options, RING_DAMAGE_ADVICE)?;
                let local_disk: Arc<dyn Disk> =
                    Arc::new(Prefixed::new(disk.clone(), LOCAL_FILES_PREFIX));
                let local = Log::open_advising(local_disk, options, LOCAL_DAMAGE_ADVICE)?;
                let report = log.report();
                info!(
                    keys = report.keys,
                    records = report.records,
                    segments = report.segments,
                    snapshot = report.snapshot.as_deref().unwrap_or("none"),
                    torn_tails = report.truncated.len(),
                    data_dir = %disk.describe(""),
                    local_keys = local.report().keys,
                    "recovered {} keys from the data dir",
                    report.keys
                );
                Ok(Opened {
                    engine: Box::new(log),
                    local: Box::new(local),
                    identity,
                    disk: Some(disk),
                })
            }
        }
    }
}

/// Runs a storage server on `listener` (see [`serve`] for `shutdown` and `kill`).
pub async fn run(
    listener: Box<dyn Listener>,
    options: ServerOptions,
    env: Env,
    storage: Storage,
    shutdown: CancellationToken,
    kill: CancellationToken,
) -> Result<()> {
    let server = start(&*listener, options, env, storage)?;
    serve(server, listener, shutdown, kill).await
}

/// A server for `listener`, built and ready to [`serve`]: whoever starts it can wire other
/// services (the HTTP gateway) to it first.
pub fn start(
    listener: &dyn Listener,
    options: ServerOptions,
    env: Env,
    storage: Storage,
) -> Result<Arc<StorageServer>> {
    options.validate()?;
    let addr = match &options.advertise {
        Some(advertise) => advertise.clone(),
        None => listener.local_addr()?,
    };
    let cluster = env.cluster.to_string();
    let opened = storage.open(&cluster)?;
    let server = StorageServer::new(addr, options, env, opened, &cluster)?;
    info!(addr = %server.addr(), id = %server.id(), viewleader = %server.options.viewleader, "storage server starting");
    Ok(Arc::new(server))
}

/// Serves `server` on `listener`. When `shutdown` fires, or a `Decommission` request asks it to,
/// it leaves gracefully: it tells the view leader it is leaving, hands its keys to their new
/// owners, then returns. When `kill` fires (at
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
            let decommission = server.decommission.clone();
            tokio::select! {
                _ = async { tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = decommission.cancelled() => info!("decommissioned: leaving"),
                } } => {
                    tokio::select! {
                        _ = kill.cancelled() => warn!("killed during the handoff"),
                        left = mover::Mover::new(server.clone()).leave() => {
                            server.left.send_replace(Some(left));
                        }
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
    let env = server.env().clone();
    tokio::join!(control, serve_rpc(listener, env, server, stopping));
    let _ = heartbeats.await;
    let _ = views.await;
    let _ = terminations.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimDisk;
    use crate::types::{Value, Versioned};

    /// Writes one single-server key through the server's storage, then damages the first record
    /// of the single-server log (a valid record follows it, so recovery calls it corruption).
    fn damaged_local_log() -> Result<Opened> {
        let disk = SimDisk::new();
        let storage = || Storage::Disk {
            disk: Arc::new(disk.clone()),
            options: LogOptions::default(),
        };
        {
            let Ok(mut opened) = storage().open("c") else {
                panic!("a fresh data dir opens");
            };
            for (i, key) in ["first", "second"].into_iter().enumerate() {
                let versioned = Versioned {
                    value: Value::Text(format!("value {i}")),
                    version: 1,
                };
                opened.local.put_if_newer(key.into(), versioned).unwrap();
            }
        }
        let segment = disk
            .list()
            .unwrap()
            .into_iter()
            .find(|n| n.starts_with(LOCAL_FILES_PREFIX) && n.ends_with(".log"))
            .expect("the single-server log has a segment");
        // Past the 8-byte magic and the first record's 8-byte header: its payload.
        disk.flip_byte(&segment, 8 + 8 + 2).unwrap();
        storage().open("c")
    }

    #[test]
    fn a_damaged_single_server_log_is_not_answered_with_advice_that_discards_it() {
        // Single-server keys have no other replica: "move the data dir away, the other replicas
        // refill it" would throw away every one of them (and the undamaged ring log's keys too).
        let err = match damaged_local_log() {
            Ok(_) => panic!("a corrupt single-server log was accepted"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains(LOCAL_FILES_PREFIX), "names the file: {err}");
        assert!(
            !err.contains("refill"),
            "promises a refill that cannot come for single-server keys: {err}"
        );
    }
}
