//! `viewleader`: parse flags, start logging, bind, serve until Ctrl-C or SIGTERM.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ringleader::cli::process;
use ringleader::http::auth::HttpAuth;
use ringleader::net::{self, Env};
use ringleader::rpc;
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
    /// This member's id in the view leader's Raft group.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// The group to form on first start, this member included: ID=HOST:PORT,... (without it, a
    /// group of one). This member listens on its own entry's port unless --port says otherwise.
    #[arg(long, value_name = "PEERS")]
    peers: Option<String>,
    /// Form no group: wait to be added by `client viewleader add ID ADDR`.
    #[arg(long, conflicts_with = "peers")]
    join: bool,
    /// Directory for the Raft log, vote and snapshots; created if missing.
    /// Default: ringleader-data/viewleader-ID under the working directory.
    #[arg(long, conflicts_with = "in_memory")]
    data_dir: Option<std::path::PathBuf>,
    /// Keep nothing on disk: a restart forgets the view, the locks and the fencing counter.
    #[arg(long)]
    in_memory: bool,
    /// Interval between the leader's Raft heartbeats, in ms.
    #[arg(long, default_value_t = viewleader::raft::RAFT_HEARTBEAT_MS_DEFAULT, hide = true)]
    raft_heartbeat_ms: u64,
    /// Shortest election timeout, in ms (the longest is twice it, and is the leader's lease): a
    /// dead leader is replaced 3 to 4 times this after its last heartbeat.
    #[arg(long, default_value_t = viewleader::raft::ELECTION_TIMEOUT_MS_DEFAULT, hide = true)]
    election_timeout_ms: u64,
    /// Log entries between snapshots (low in tests, so restarts cross a compaction).
    #[arg(long, default_value_t = viewleader::raft::SNAPSHOT_ENTRIES_DEFAULT, hide = true)]
    snapshot_entries: u64,
    /// The cluster secret, fault injection, HTTP tokens and TLS: the same on every node.
    #[command(flatten)]
    guards: process::NodeGuards,
    /// Close an RPC connection idle this long after its hello, in ms (tests shorten it).
    #[arg(long, hide = true, default_value_t = rpc::server::RPC_IDLE_TIMEOUT_MS)]
    rpc_idle_timeout_ms: u64,
    /// Print the completion script of `viewleader` for SHELL and exit.
    #[arg(long, value_enum, value_name = "SHELL")]
    completions: Option<process::Shell>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        process::print_completions(shell, Args::command(), "viewleader");
        return ExitCode::SUCCESS;
    }
    process::init_tracing("warn,ringleader=info");
    process::exit_status(run(args).await)
}

/// Binds, starts the view leader, serves its HTTP pages when asked, and serves.
async fn run(args: Args) -> Result<(), Error> {
    process::raise_open_files_limit();
    rpc::server::set_idle_timeout_ms(args.rpc_idle_timeout_ms)?;
    let peers = match &args.peers {
        Some(peers) => viewleader::raft::parse_peers(peers)?,
        None => Default::default(),
    };
    let data_dir = (!args.in_memory).then(|| {
        args.data_dir
            .clone()
            .unwrap_or_else(|| format!("ringleader-data/viewleader-{}", args.id).into())
    });
    let port = match (args.port, peers.get(&args.id)) {
        (Some(port), _) => Some(port),
        (None, Some(addr)) => addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok()),
        (None, None) => None,
    };
    let options = ViewLeaderOptions {
        heartbeat_interval_ms: args.heartbeat_interval_ms,
        lease_ms: args.lease_ms,
        lock_lease_ms: args.lock_lease_ms,
        data_dir,
        raft: viewleader::RaftOptions {
            id: args.id,
            peers,
            join: args.join,
            heartbeat_ms: args.raft_heartbeat_ms,
            election_timeout_ms: args.election_timeout_ms,
            snapshot_entries: args.snapshot_entries,
        },
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
    let listener = env.bind(&args.host, port, net::VIEWLEADER_PORTS).await?;
    let addr = listener.local_addr()?;
    let http = match args.http_port {
        Some(port) => Some(
            env.bind(&args.host, Some(port), net::VIEWLEADER_PORTS)
                .await?,
        ),
        None => None,
    };
    let (shutdown, _) = process::shutdown_on_signal();
    process::announce(&*listener)?;
    let leader = viewleader::start(options, &addr, env, shutdown.clone()).await?;
    let pages = match http {
        Some(http_listener) => {
            process::announce_as("http listening on", &*http_listener)?;
            let leader = leader.clone();
            let stop = shutdown.clone();
            Some(tokio::spawn(http::viewleader::serve(
                http_listener,
                leader,
                auth,
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
