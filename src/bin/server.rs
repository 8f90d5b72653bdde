//! `server`: parse flags, start logging, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use ringleader::http::HttpOptions;
use ringleader::server::{self, ServerOptions};
use ringleader::{net, viewleader, Error};

#[derive(Parser, Debug)]
#[command(name = "server", version, about = "A ringleader storage server")]
struct Args {
    /// Port to listen on; 0 takes any free port. Default: the first free of 38000-38010.
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Address other processes use to reach this server (default: the bound one).
    #[arg(long)]
    advertise: Option<String>,
    /// The view leader, host[:port]; without a port, the first of 39000-39010 that answers.
    #[arg(long, default_value = "localhost:39000")]
    viewleader: String,
    /// Interval between heartbeats, in ms.
    #[arg(long, default_value_t = viewleader::HEARTBEAT_INTERVAL_MS_DEFAULT)]
    heartbeat_interval_ms: u64,
    /// Time allowed for one call to another process, in ms.
    #[arg(long, default_value_t = server::RPC_TIMEOUT_MS_DEFAULT)]
    rpc_timeout_ms: u64,
    /// Serve the HTTP gateway (REST keys, distributed log, /admin/status, /metrics) on this port;
    /// 0 takes any free port. Default: no HTTP.
    #[arg(long)]
    http_port: Option<u16>,
    /// The list-valued key holding the distributed log of the HTTP gateway.
    #[arg(long, default_value = "log")]
    log_key: String,
    /// `{output_id}` of the file `POST /exit` writes (output/{output_id}-server-{host}{port}.csv).
    #[arg(long, default_value = "run")]
    log_output_id: String,
    /// A transaction pending this long without its coordinator is resolved by the replicas, in ms.
    #[arg(long, default_value_t = server::TX_TIMEOUT_MS_DEFAULT)]
    tx_timeout_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    ringleader::cli::init_tracing("warn,ringleader=info");
    let options = ServerOptions {
        viewleader: args.viewleader,
        advertise: args.advertise,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        rpc_timeout_ms: args.rpc_timeout_ms,
        tx_timeout_ms: args.tx_timeout_ms,
        faults: Default::default(),
    };
    if let Err(err) = options.validate() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    let listener = match net::bind(&args.host, args.port, net::SERVER_PORTS).await {
        Ok(listener) => listener,
        Err(err) => return fail(err),
    };
    let http = match args.http_port {
        Some(port) => match net::bind(&args.host, Some(port), net::SERVER_PORTS).await {
            Ok(http_listener) => Some(http_listener),
            Err(err) => return fail(err),
        },
        None => None,
    };
    let (shutdown, kill) = ringleader::cli::shutdown_on_signal();
    if let Err(err) = ringleader::cli::announce(&listener) {
        return fail(err);
    }
    let http = match http {
        Some(http_listener) => {
            if let Err(err) = ringleader::cli::announce_as("http listening on", &http_listener) {
                return fail(err);
            }
            let http_options = HttpOptions {
                viewleader: options.viewleader.clone(),
                log_key: args.log_key,
                log_output_id: args.log_output_id,
                ..HttpOptions::default()
            };
            Some((http_listener, http_options))
        }
        None => None,
    };
    match server::run_with_http(listener, http, options, shutdown, kill).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => fail(err),
    }
}

fn fail(err: Error) -> ExitCode {
    eprintln!("error: {err}");
    ExitCode::from(err.exit_code())
}
