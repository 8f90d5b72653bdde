//! `viewleader`: parse flags, start logging, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use ringleader::cli::process;
use ringleader::net::{self, Env};
use ringleader::viewleader::{self, ViewLeaderOptions};
use ringleader::{http, Error};

#[derive(Parser, Debug)]
#[command(
    name = "viewleader",
    version,
    about = "The ringleader view leader: membership, epochs and locks"
)]
struct Args {
    /// Port to listen on; 0 takes any free port. Default: the first free of 39000-39010.
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The cluster this view leader belongs to; processes of any other are refused.
    #[arg(long, value_name = "NAME", env = process::CLUSTER_ENV, default_value = net::CLUSTER_DEFAULT)]
    cluster: String,
    /// Interval servers send heartbeats at, in ms.
    #[arg(long, default_value_t = viewleader::HEARTBEAT_INTERVAL_MS_DEFAULT)]
    heartbeat_interval_ms: u64,
    /// A server unheard from for this long is expired, in ms.
    #[arg(long, default_value_t = viewleader::LEASE_MS_DEFAULT)]
    lease_ms: u64,
    /// Serve /metrics and /admin/status over HTTP on this port; 0 takes any free port.
    #[arg(long)]
    http_port: Option<u16>,
    /// A lock holder that is not a server loses the lock after this long without renewing, in ms.
    #[arg(long, default_value_t = viewleader::LOCK_LEASE_MS_DEFAULT)]
    lock_lease_ms: u64,
    /// Directory for what must survive a restart (the restart generation that keeps fencing
    /// tokens growing); created if missing.
    #[arg(long, default_value = "viewleader.data")]
    data_dir: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    process::init_tracing("warn,ringleader=info");
    process::exit_status(run(args).await)
}

/// Binds, starts the view leader, serves its HTTP pages when asked, and serves.
async fn run(args: Args) -> Result<(), Error> {
    let options = ViewLeaderOptions {
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        lease_ms: args.lease_ms,
        lock_lease_ms: args.lock_lease_ms,
        data_dir: Some(args.data_dir),
    };
    options.validate()?;
    let env = Env::real().in_cluster(&args.cluster)?;
    let listener = env
        .bind(&args.host, args.port, net::VIEWLEADER_PORTS)
        .await?;
    let http = match args.http_port {
        Some(port) => Some(
            env.bind(&args.host, Some(port), net::VIEWLEADER_PORTS)
                .await?,
        ),
        None => None,
    };
    let (shutdown, _) = process::shutdown_on_signal();
    process::announce(&*listener)?;
    let leader = viewleader::start(options, env, shutdown.clone())?;
    let pages = match http {
        Some(http_listener) => {
            process::announce_as("http listening on", &*http_listener)?;
            let leader = leader.clone();
            let stop = shutdown.clone();
            Some(tokio::spawn(http::viewleader::serve(
                http_listener,
                leader,
                stop,
            )))
        }
        None => None,
    };
    let served = viewleader::serve(leader, listener, shutdown).await;
    if let Some(pages) = pages {
        let _ = pages.await;
    }
    served
}
