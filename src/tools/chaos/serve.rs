//! `client serve`, the hidden role `client chaos` starts its cluster with: a view leader or a
//! storage server in this process, run exactly as the `viewleader` and `server` binaries run
//! them, so that one binary is enough. It binds the given host (a chaos run's namespace address,
//! or loopback) and advertises what it bound.
//!
//! Left out: the HTTP gateway and every option the chaos run does not vary.

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
    #[arg(long, default_value = "localhost:39000")]
    pub viewleader_addr: String,
    #[arg(long, default_value_t = crate::viewleader::HEARTBEAT_INTERVAL_MS_DEFAULT)]
    pub heartbeat_interval_ms: u64,
    #[arg(long, default_value_t = crate::viewleader::LEASE_MS_DEFAULT)]
    pub lease_ms: u64,
    #[arg(long, default_value_t = crate::server::TX_TIMEOUT_MS_DEFAULT)]
    pub tx_timeout_ms: u64,
    /// The process's durable state, the same directory across a restart: the view leader's
    /// restart generation and epoch ceiling, or a server's data dir (without one, a server runs
    /// in memory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

/// Runs the hidden `serve` role until a signal, in `env`'s cluster (the global `--cluster`).
pub async fn serve(args: ServeArgs, env: crate::net::Env) -> Result<u8> {
    let (shutdown, kill) = crate::cli::process::shutdown_on_signal();
    match args.role {
        Role::Viewleader => {
            let options = crate::viewleader::ViewLeaderOptions {
                heartbeat_interval_ms: args.heartbeat_interval_ms,
                lease_ms: args.lease_ms,
                data_dir: args.data_dir.clone(),
                ..Default::default()
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
