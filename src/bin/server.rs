//! `server`: parse flags, start logging, bind, serve until Ctrl-C or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ringleader::cli::process;
use ringleader::http::{self, auth::HttpAuth, HttpOptions};
use ringleader::net::{self, Env};
use ringleader::rpc;
use ringleader::server::{self, ServerOptions};
use ringleader::storage::{FsyncMode, LogOptions};
use ringleader::{viewleader, Error};

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
    /// The view leader, HOST or HOST:PORT; without a port, the first of 39000-39010 that answers.
    #[arg(long, env = process::VIEWLEADER_ENV, default_value = "localhost:39000")]
    viewleader: String,
    /// The cluster this server belongs to; processes of any other are refused.
    #[arg(long, value_name = "NAME", env = process::CLUSTER_ENV, default_value = net::CLUSTER_DEFAULT)]
    cluster: String,
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
    /// Where the keys, the 2PC records and the server's identity live.
    /// Default: ringleader-data/server-PORT under the working directory.
    #[arg(long, conflicts_with = "in_memory")]
    data_dir: Option<PathBuf>,
    /// Keep everything in memory: a server that dies loses what it held (its replicas keep it).
    #[arg(long)]
    in_memory: bool,
    /// When writes are synced: always (each record), batch (group commit), never (the OS decides).
    #[arg(long, default_value = "batch")]
    fsync: FsyncMode,
    /// Log size at which a new segment starts, in bytes (tests set it low to cross compactions).
    #[arg(long, hide = true, default_value_t = LogOptions::default().segment_bytes_max)]
    segment_bytes_max: u64,
    /// Log size since the last snapshot below which none is taken, in bytes.
    #[arg(long, hide = true, default_value_t = LogOptions::default().compact_bytes_min)]
    compact_bytes_min: u64,
    /// The cluster secret, fault injection, HTTP tokens and TLS: the same on every node.
    #[command(flatten)]
    guards: process::NodeGuards,
    /// Close an RPC connection idle this long after its hello, in ms (tests shorten it).
    #[arg(long, hide = true, default_value_t = rpc::server::RPC_IDLE_TIMEOUT_MS)]
    rpc_idle_timeout_ms: u64,
    /// Print the completion script of `server` for SHELL and exit.
    #[arg(long, value_enum, value_name = "SHELL")]
    completions: Option<process::Shell>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        process::print_completions(shell, Args::command(), "server");
        return ExitCode::SUCCESS;
    }
    process::init_tracing("warn,ringleader=info");
    process::exit_status(run(args).await)
}

/// Binds, starts the server, wires the HTTP gateway to it when asked, and serves.
async fn run(args: Args) -> Result<(), Error> {
    process::raise_open_files_limit();
    rpc::server::set_idle_timeout_ms(args.rpc_idle_timeout_ms)?;
    let options = ServerOptions {
        viewleader: args.viewleader,
        advertise: args.advertise,
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        rpc_timeout_ms: args.rpc_timeout_ms,
        tx_timeout_ms: args.tx_timeout_ms,
        faults: Default::default(),
        planted_bug: None,
        fault_injection: args.guards.fault_injection,
    };
    options.validate()?;
    let auth = HttpAuth::from_flags(
        args.guards.http_token_file.as_deref(),
        args.guards.http_read_open,
    )?;
    let secret = process::member_secret(args.guards.cluster_secret_file.as_deref())?;
    ringleader::net::secret::require_secret_off_loopback(&args.host, secret.as_ref())?;
    let env = Env::real().in_cluster(&args.cluster)?.with_secret(secret);
    let env = args.guards.tls.apply(env)?;
    let listener = env.bind(&args.host, args.port, net::SERVER_PORTS).await?;
    let http = match args.http_port {
        Some(port) => Some(env.bind(&args.host, Some(port), net::SERVER_PORTS).await?),
        None => None,
    };
    let (shutdown, kill) = process::shutdown_on_signal();
    let log = LogOptions {
        fsync: args.fsync,
        segment_bytes_max: args.segment_bytes_max,
        compact_bytes_min: args.compact_bytes_min,
    };
    let storage = match args.in_memory {
        true => server::Storage::Memory,
        false => server::Storage::for_listener(args.data_dir, &*listener, log)?,
    };
    let node = server::start(&*listener, options, env, storage)?;
    // Only once the data dir is open and recovered: a refused start never looks ready.
    process::announce(&*listener)?;
    let gateway = match http {
        Some(http_listener) => {
            process::announce_as("http listening on", &*http_listener)?;
            let http_options = HttpOptions {
                viewleader: node.options().viewleader.clone(),
                log_key: args.log_key,
                log_output_id: args.log_output_id,
                auth,
                ..HttpOptions::default()
            };
            let stop = node.stopping();
            let node = node.clone();
            let kill = kill.clone();
            Some(tokio::spawn(async move {
                http::serve(http_listener, node, http_options, stop, kill).await
            }))
        }
        None => None,
    };
    let served = server::serve(node, listener, shutdown, kill).await;
    if let Some(gateway) = gateway {
        let _ = gateway.await;
    }
    served
}
