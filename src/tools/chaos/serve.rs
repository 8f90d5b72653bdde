//! `client serve`, the hidden role `client chaos` starts its cluster with: a view-leader member
//! or a storage server in this process, run exactly as the `viewleader` and `server` binaries run
//! them, so that one binary is enough. It binds the given host (a chaos run's namespace address,
//! or loopback) and advertises what it bound.
//!
//! Left out: the HTTP gateway, joining a group (`--join`), and every option the chaos run does
//! not set.

use std::path::PathBuf;

use clap::Args;

use crate::error::Result;

/// The role of the hidden `serve` subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Viewleader,
    Server,
}

/// `client serve`: run a view leader or a storage server in this process.
#[derive(Args, Debug, Clone)]
pub struct ServeArgs {
    #[arg(long, value_enum)]
    pub role: Role,
    /// The address to bind and advertise (a chaos run gives each process its namespace's).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// The view leader: one address, or every member's (`a:1,b:2,c:3`).
    #[arg(long, default_value = "localhost:39000")]
    pub viewleader_addr: String,
    #[arg(long, default_value_t = crate::viewleader::HEARTBEAT_INTERVAL_MS_DEFAULT)]
    pub heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = crate::viewleader::LEASE_MS_DEFAULT)]
    pub lease_ms: u64,
    #[arg(long, default_value_t = crate::server::TX_TIMEOUT_MS_DEFAULT)]
    pub tx_timeout_ms: u64,
    /// The process's durable state, the same directory across a restart: a view-leader
    /// member's Raft log, vote and snapshots, or a server's data (without one, either runs in
    /// memory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A view-leader member's id in its group.
    #[arg(long, default_value_t = 1)]
    pub id: u64,
    /// A view-leader member's group, itself included: `ID=HOST:PORT,...` (without it, a group
    /// of one).
    #[arg(long)]
    pub peers: Option<String>,
    #[arg(long, default_value_t = crate::viewleader::LOCK_LEASE_MS_DEFAULT)]
    pub lock_lease_ms: u64,
    #[arg(long, default_value_t = crate::viewleader::raft::ELECTION_TIMEOUT_MS_DEFAULT)]
    pub election_timeout_ms: u64,
    #[arg(long, default_value_t = crate::viewleader::raft::SNAPSHOT_ENTRIES_DEFAULT)]
    pub snapshot_entries: u64,
    /// Answer crash and recover, as the `--fault-injection` of the `server` and `viewleader`
    /// binaries (the chaos run crashes its processes; off unless given, as there).
    #[arg(long)]
    pub fault_injection: bool,
}

/// Runs the hidden `serve` role until a signal, in `env`'s cluster (the global `--cluster`).
pub async fn serve(args: ServeArgs, env: crate::net::Env) -> Result<u8> {
    let (shutdown, kill) = crate::cli::process::shutdown_on_signal();
    match args.role {
        Role::Viewleader => {
            let peers = match &args.peers {
                Some(peers) => crate::viewleader::raft::parse_peers(peers)?,
                None => Default::default(),
            };
            let mut raft = crate::viewleader::RaftOptions::single(args.id);
            raft.peers = peers;
            raft.election_timeout_ms = args.election_timeout_ms;
            raft.snapshot_entries = args.snapshot_entries;
            let options = crate::viewleader::ViewLeaderOptions {
                heartbeat_interval_ms: args.heartbeat_interval_ms,
                lease_ms: args.lease_ms,
                lock_lease_ms: args.lock_lease_ms,
                data_dir: args.data_dir.clone(),
                raft,
                fault_injection: args.fault_injection,
            };
            let listener = env
                .bind(&args.host, Some(args.port), crate::net::VIEWLEADER_PORTS)
                .await?;
            crate::cli::process::announce(&*listener)?;
            crate::viewleader::run(listener, options, env, shutdown).await?;
        }
        Role::Server => {
            let options = crate::server::ServerOptions {
                viewleader: args.viewleader_addr,
                heartbeat_interval_ms: args.heartbeat_interval_ms,
                tx_timeout_ms: args.tx_timeout_ms,
                fault_injection: args.fault_injection,
                ..Default::default()
            };
            let listener = env
                .bind(&args.host, Some(args.port), crate::net::SERVER_PORTS)
                .await?;
            let storage = match &args.data_dir {
                Some(dir) => crate::server::Storage::data_dir(dir, Default::default())?,
                None => crate::server::Storage::Memory,
            };
            crate::cli::process::announce(&*listener)?;
            crate::server::run(listener, options, env, storage, shutdown, kill).await?;
        }
    }
    Ok(0)
}
