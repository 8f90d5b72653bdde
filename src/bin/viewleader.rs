//! `viewleader`: parse flags, start logging, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use ringleader::viewleader::{self, ViewLeaderOptions};
use ringleader::{net, Error};

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
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    ringleader::cli::init_tracing("warn,ringleader=info");
    let options = ViewLeaderOptions {
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        lease_ms: args.lease_ms,
        lock_lease_ms: args.lock_lease_ms,
    };
    if let Err(err) = options.validate() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    let listener = match net::bind(&args.host, args.port, net::VIEWLEADER_PORTS).await {
        Ok(listener) => listener,
        Err(err) => return fail(err),
    };
    let http = match args.http_port {
        Some(port) => match net::bind(&args.host, Some(port), net::VIEWLEADER_PORTS).await {
            Ok(http_listener) => Some(http_listener),
            Err(err) => return fail(err),
        },
        None => None,
    };
    let (shutdown, _) = ringleader::cli::shutdown_on_signal();
    match ringleader::cli::announce(&listener) {
        Ok(()) => {}
        Err(err) => return fail(err),
    }
    if let Some(http_listener) = &http {
        if let Err(err) = ringleader::cli::announce_as("http listening on", http_listener) {
            return fail(err);
        }
    }
    match viewleader::run_with_http(listener, http, options, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err),
    }
}

fn fail(err: Error) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(err.exit_code())
}
