//! The `client` command line: the course's command names, global flags, human or `--json`
//! output, and exit codes that say what happened (see the README):
//! 0 ok, 1 not found, 2 usage, 3 unreachable or timed out, 4 refused, 5 invalid request.
//! `demo`, `bench`, `chaos`, `sim` and the hidden `serve` hand their flags to [`crate::tools`], which
//! runs them. How results are printed is [`output`], how a long command shows its progress is
//! [`progress`]; what every binary does to run as a process (logging, signals, the `listening on`
//! line) is [`process`].

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use serde_json::json;

pub mod load;
pub mod output;
pub mod process;
pub mod progress;
pub mod secrets;
pub mod settle;
pub mod tls_certs;

use crate::client::{Client, ClientOptions, TIMEOUT_MS_DEFAULT, WAIT_MS_DEFAULT};
use crate::errinput;
use crate::error::Error;
use crate::net::{self, Env};
use crate::tools::sim::campaign;
use crate::tools::{bench, chaos, demo};
use crate::types::{LockReply, Space, Value, Versioned};
use output::Output;

/// Where `--server` and `--viewleader` point when not given (their port ranges are scanned).
pub const DEFAULT_HOST: &str = "localhost";

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the key does not exist.
pub const EXIT_NOT_FOUND: u8 = 1;

/// The `client` binary's flags.
#[derive(Parser, Debug)]
#[command(
    name = "client",
    version,
    about = "Talk to a ringleader cluster, or run the demo and the load generator"
)]
pub struct ClientArgs {
    /// Storage server for print/set/get/query_all_keys: HOST or HOST:PORT; without a port, the
    /// first storage server on 38000-38010.
    #[arg(long, global = true, env = process::SERVER_ENV)]
    pub server: Option<String>,
    /// View leader: HOST or HOST:PORT; without a port, the first view leader on 39000-39010.
    #[arg(long, global = true, env = process::VIEWLEADER_ENV)]
    pub viewleader: Option<String>,
    /// Print one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Longest wait on a retry answer (busy lock, rebalancing), in ms; 0 answers at once.
    #[arg(long, global = true, default_value_t = WAIT_MS_DEFAULT)]
    pub wait_ms: u64,
    /// Time allowed for each call, in ms.
    #[arg(long, global = true, default_value_t = TIMEOUT_MS_DEFAULT)]
    pub timeout_ms: u64,
    /// The cluster to talk to; processes of any other refuse. (demo, bench, chaos and sim start
    /// clusters of their own, named ringleader.)
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = process::CLUSTER_ENV,
        default_value = net::CLUSTER_DEFAULT
    )]
    pub cluster: String,
    /// The cluster secret to prove in every hello: client.secret of `client secrets DIR` (or
    /// member.secret, for a member's requests such as `viewleader add`).
    #[arg(long, global = true, value_name = "FILE", env = process::CLUSTER_SECRET_FILE_ENV)]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// TLS to every process (`--tls-cert`, `--tls-key`, `--tls-ca`): all three or none.
    #[command(flatten)]
    pub tls: tls_certs::TlsArgs,
    #[command(subcommand)]
    pub command: Command,
    /// Which of `--server` and `--viewleader` were typed on the command line, rather than taken
    /// from their environment variables (see [`ClientArgs::from_command_line`]).
    #[arg(skip)]
    pub typed: Typed,
}

/// Which of `--server` and `--viewleader` the command line gave. `crash` and `recover` take
/// their target only from the command line: a variable set for everyday use must never be what
/// picks the process a command stops.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Typed {
    pub server: bool,
    pub viewleader: bool,
}

impl ClientArgs {
    /// Parses the process's arguments as `ClientArgs::parse` does (a usage error exits 2, with
    /// clap's message), and notes which of `--server` and `--viewleader` were typed.
    pub fn from_command_line() -> Self {
        Self::try_from_args(std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// [`ClientArgs::from_command_line`] on `args` (the program name first).
    pub fn try_from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut parsed = Self::from_arg_matches(&matches)?;
        let typed = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
        parsed.typed = Typed {
            server: typed("server"),
            viewleader: typed("viewleader"),
        };
        Ok(parsed)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print TEXT on the server's console.
    Print {
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Store KEY=VALUE on one server, among its own keys: not replicated, never moved by
    /// rebalancing, apart from the ring keys of setr/getr.
    Set { key: String, value: String },
    /// Read KEY from one server's own keys (what set wrote).
    Get {
        key: String,
        /// Read the server's copy of a ring key instead (what setr placed on this replica).
        #[arg(long)]
        ring: bool,
    },
    /// List one server's own keys (what set wrote).
    #[command(name = "query_all_keys", alias = "query-all-keys")]
    QueryAllKeys {
        /// List the ring keys this server holds instead (its share of setr's keys).
        #[arg(long)]
        ring: bool,
    },
    /// Show the view: epoch, live servers, whether the cluster is rebalancing.
    #[command(name = "query_servers", alias = "query-servers")]
    QueryServers,
    /// Take LOCK for REQUESTER, waiting in line up to --wait-ms.
    #[command(name = "lock_get", alias = "lock-get")]
    LockGet { lock: String, requester: String },
    /// Give up LOCK (or a place in its line) for REQUESTER.
    #[command(name = "lock_release", alias = "lock-release")]
    LockRelease { lock: String, requester: String },
    /// Store KEY=VALUE on its replicas by two-phase commit.
    Setr { key: String, value: String },
    /// Read KEY from its replicas: linearizable (a majority), or --stale (the first that has it).
    Getr {
        key: String,
        /// Read any one live replica: cheaper, works with one replica up, may be older.
        #[arg(long)]
        stale: bool,
    },
    /// The whole cluster at a glance: the view leader's epochs and, for every server, the epoch
    /// it has seen, whether it is rebalancing, keys held and its share of the ring.
    Status,
    /// Where KEY lives: its replicas in ring order (primary first) and the version each holds.
    Locate { key: String },
    /// Ask the storage server at ADDR to leave the cluster as SIGTERM would: it leaves the view,
    /// hands every key to its new owners, then stops. Shows the handoff as it goes.
    Decommission { addr: String },
    /// Add ITEM to the list at KEY on its replicas (a missing key becomes a list of ITEM alone).
    Append { key: String, item: String },
    /// Write every `KEY<TAB>VALUE` line of FILE (or standard input: `-` or no FILE) with setr,
    /// --concurrency at once; a FILE is checked whole before the first write.
    Load(load::LoadArgs),
    /// Wait, up to --wait-ms, until the cluster has finished rebalancing: the view leader's
    /// view is not rebalancing and every server in it has rebalanced for its epoch.
    #[command(name = "wait-settled", alias = "wait_settled")]
    WaitSettled,
    /// Simulate a crash of the process named by --server or --viewleader: it answers nothing
    /// but recover, sends nothing, and keeps its memory.
    Crash,
    /// End a simulated crash of the process named by --server or --viewleader.
    Recover,
    /// The view leader's Raft group: each member's status, or add or remove a member.
    #[command(subcommand)]
    Viewleader(MembersCommand),
    /// Start a local cluster, show what it does, stop it.
    Demo(demo::DemoArgs),
    /// Measure throughput and latency on a local cluster.
    Bench(bench::args::BenchArgs),
    /// Run a local cluster under injected faults, record every operation and check the history
    /// (linearizability, appends, replica agreement); exits 1 on any violation.
    Chaos(chaos::ChaosArgs),
    /// Run seeds of the deterministic simulation under seeded faults, many at once, check every
    /// run and sum them up; exits 1 if any seed broke a promise (each printed with its replay).
    Sim(campaign::SimArgs),
    /// Print the completion script of `client` for SHELL, e.g. `client completions bash >
    /// ~/.local/share/bash-completion/completions/client`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Make a cluster's secrets in DIR: member.secret for view leaders and servers, client.secret
    /// for clients.
    Secrets { dir: std::path::PathBuf },
    /// Write a development CA and certificates for TLS into DIR (ca.pem, node.pem, client.pem
    /// and their keys) and print the flags each process takes.
    #[command(name = "tls-certs", alias = "tls_certs")]
    TlsCerts(tls_certs::TlsCertsArgs),
    /// Run a view leader or storage server in this process (used by `chaos`).
    #[command(hide = true)]
    Serve(chaos::ServeArgs),
}

#[derive(Subcommand, Debug)]
pub enum MembersCommand {
    /// Each member's role, term, leader and log indices: the members --viewleader lists, and
    /// every member they know of.
    Status,
    /// Add member ID listening at ADDR (started with `viewleader --id ID --join`): it catches
    /// up as a learner, then votes.
    Add { id: u64, addr: String },
    /// Remove member ID from the group (it may then be stopped).
    Remove { id: u64 },
}

fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Text(text) => json!(text),
        Value::List(items) => json!(items),
    }
}

fn versioned_json(key: &str, versioned: &Versioned) -> serde_json::Value {
    json!({"key": key, "value": value_json(&versioned.value), "version": versioned.version})
}

/// Runs one `client` command; returns the process exit code.
pub async fn run(args: ClientArgs) -> u8 {
    let out = Output { json: args.json };
    if let Command::Completions { shell } = args.command {
        process::print_completions(shell, ClientArgs::command(), "client");
        return EXIT_OK;
    }
    let options = ClientOptions {
        viewleader: args
            .viewleader
            .clone()
            .unwrap_or_else(|| DEFAULT_HOST.to_string()),
        timeout_ms: args.timeout_ms,
        wait_ms: args.wait_ms,
    };
    match execute(args, options, out).await {
        Ok(code) => code,
        Err(err) => out.error(&err),
    }
}

async fn execute(args: ClientArgs, options: ClientOptions, out: Output) -> Result<u8, Error> {
    if let Command::TlsCerts(certs) = &args.command {
        return tls_certs::run(certs, &Env::real(), out);
    }
    if let Command::Secrets { dir } = &args.command {
        secrets::make(dir, out)?;
        return Ok(EXIT_OK);
    }
    let secret = match &args.cluster_secret_file {
        Some(path) => Some(crate::net::secret::ClusterSecret::load(path)?),
        None => None,
    };
    let env = Env::real().in_cluster(&args.cluster)?.with_secret(secret);
    let env = args.tls.apply(env)?;
    let client = Client::with_env(options, env.clone());
    // Only the single reads and writes show a wait for a rebalancing: a load shows its own
    // progress, and other commands do not wait for one.
    let client = match &args.command {
        Command::Setr { .. } | Command::Getr { .. } | Command::Append { .. } => {
            client.on_rebalance_wait(progress::rebalance_wait_hook(out, env.clone()))
        }
        _ => client,
    };
    let server = args
        .server
        .clone()
        .unwrap_or_else(|| DEFAULT_HOST.to_string());
    match args.command {
        Command::Print { text } => {
            let addr = client.resolve_server(&server).await?;
            let text = text.join(" ");
            client.print(&addr, &text).await?;
            out.ok(
                format!("printed on {addr}"),
                json!({"ok": true, "server": addr}),
            );
        }
        Command::Set { key, value } => {
            let addr = client.resolve_server(&server).await?;
            let version = client.set(&addr, &key, Value::Text(value)).await?;
            out.ok(
                format!("stored {key:?} on {addr} (version {version})"),
                json!({"ok": true, "key": key, "version": version, "server": addr}),
            );
        }
        Command::Get { key, ring } => {
            let addr = client.resolve_server(&server).await?;
            let space = space_of(ring);
            return Ok(match client.get(&addr, space, &key).await? {
                Some(versioned) => {
                    out.ok(&versioned.value, versioned_json(&key, &versioned));
                    EXIT_OK
                }
                None => {
                    let code = not_found(
                        out,
                        &key,
                        &format!("among the {} keys on {addr}", space.describe()),
                    );
                    // The likeliest mistake: a key written with setr, read with get.
                    if space == Space::Local
                        && matches!(client.get(&addr, Space::Ring, &key).await, Ok(Some(_)))
                    {
                        eprintln!(
                            "hint: {addr} holds a ring copy of {key:?} (written with setr): read it \
                             with getr, or this copy with get --ring"
                        );
                    }
                    code
                }
            });
        }
        Command::QueryAllKeys { ring } => {
            let addr = client.resolve_server(&server).await?;
            let space = space_of(ring);
            let keys = client.query_all_keys(&addr, space).await?;
            if keys.is_empty() && space == Space::Local {
                if let Ok(status) = client.status(&addr).await {
                    if status.keys > 0 {
                        eprintln!(
                            "no single-server keys on {addr}; it holds {} ring keys (written \
                             with setr): query_all_keys --ring lists them",
                            status.keys
                        );
                    }
                }
            }
            out.ok(
                keys.join("\n"),
                json!({"server": addr, "space": space, "keys": keys}),
            );
        }
        Command::QueryServers => {
            let view = client.query_servers().await?;
            let mut human = format!(
                "epoch {}{}",
                view.epoch,
                if view.rebalancing {
                    " (rebalancing)"
                } else {
                    ""
                }
            );
            let servers = list_servers(&view.servers, &mut human);
            out.ok(
                human,
                json!({"epoch": view.epoch, "servers": servers, "rebalancing": view.rebalancing}),
            );
        }
        Command::LockGet { lock, requester } => {
            let mut last_position = None;
            let token = client
                .lock_get_wait(&lock, &requester, |reply| {
                    match reply {
                        LockReply::Retry { holder, position } if last_position != Some(*position) => {
                            out.progress(format!("waiting for lock {lock:?}: held by {holder}, {requester} is number {position} in line"));
                            last_position = Some(*position);
                        }
                        _ => {}
                    }
                })
                .await?;
            out.ok(
                format!("granted {lock:?} to {requester} (fencing token {token})"),
                json!({"lock": lock, "requester": requester, "result": "granted", "token": token}),
            );
        }
        Command::LockRelease { lock, requester } => {
            return Ok(match client.lock_release(&lock, &requester).await? {
                LockReply::Released => {
                    out.ok(
                        format!("released {lock:?} for {requester}"),
                        json!({"lock": lock, "requester": requester, "result": "released"}),
                    );
                    EXIT_OK
                }
                LockReply::Unknown => {
                    // Like a missing key: exit 1, a JSON answer on stdout, the reason on stderr.
                    if out.json {
                        println!(
                            "{}",
                            json!({"lock": lock, "requester": requester, "result": "unknown"})
                        );
                    }
                    eprintln!("not found: {requester} neither holds nor waits for lock {lock:?}");
                    EXIT_NOT_FOUND
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected reply to lock_release: {other:?}"
                    )))
                }
            });
        }
        Command::Setr { key, value } => {
            let outcome = client.setr(&key, Value::Text(value)).await?;
            let addrs: Vec<&str> = outcome.replicas.iter().map(|r| r.addr.as_str()).collect();
            out.ok(
                format!("stored {key:?} on {} (version {}, epoch {})", addrs.join(", "), outcome.version, outcome.epoch),
                json!({"ok": true, "key": key, "version": outcome.version, "epoch": outcome.epoch, "replicas": addrs}),
            );
        }
        Command::Getr { key, stale } => {
            let found = if stale {
                client.getr_stale(&key).await?
            } else {
                client.getr(&key).await?
            };
            return Ok(match found {
                Some(found) => {
                    let mut doc = versioned_json(&key, &found.value);
                    doc["replica"] = json!(found.replica.addr);
                    out.ok(&found.value.value, doc);
                    EXIT_OK
                }
                None => not_found(out, &key, "on any live replica"),
            });
        }
        Command::Status => {
            let cluster = client.cluster_status().await?;
            let view = &cluster.view;
            let mut human = format!(
                "epoch {}, settled epoch {}, {} servers, {}\n{:<36}  {:<21} {:>6} {:>11} {:>8} {:>6} {:>8} {:>7} {:>11} {:>8} {:>8}",
                view.epoch,
                view.settled_epoch,
                view.servers.len(),
                if view.rebalancing { "rebalancing" } else { "settled" },
                "ID", "ADDR", "EPOCH", "REBALANCING", "KEYS", "LOCAL", "PRIMARY", "PENDING", "COPIES_SENT", "TO_SEND", "OPS/S"
            );
            let mut docs = Vec::new();
            for server in &cluster.servers {
                let (id, addr) = (&server.server.id, &server.server.addr);
                let share = server.primary_share;
                match &server.status {
                    Ok(st) => {
                        let rebalancing = st.rebalanced_epoch < view.epoch;
                        human.push_str(&format!(
                            "\n{id:<36}  {addr:<21} {:>6} {:>11} {:>8} {:>6} {:>7.1}% {:>7} {:>11} {:>8} {:>8}",
                            st.epoch,
                            if rebalancing { "yes" } else { "no" },
                            st.keys,
                            st.local_keys,
                            share * 100.0,
                            st.pending_transactions,
                            st.copies_sent,
                            st.copies_to_send,
                            server.ops_per_s.map_or("-".to_string(), |ops| format!("{ops:.1}"))
                        ));
                        docs.push(json!({
                            "id": id, "addr": addr, "epoch": st.epoch,
                            "rebalanced_epoch": st.rebalanced_epoch, "rebalancing": rebalancing,
                            "keys": st.keys, "local_keys": st.local_keys, "primary_share": share,
                            "pending_transactions": st.pending_transactions,
                            "copies_sent": st.copies_sent, "keys_dropped": st.keys_dropped,
                            "copies_to_send": st.copies_to_send, "ops_per_s": server.ops_per_s,
                        }));
                    }
                    Err(err) => {
                        human.push_str(&format!("\n{id:<36}  {addr:<21} no answer: {err}"));
                        docs.push(json!({
                            "id": id, "addr": addr, "primary_share": share,
                            "error": err.to_string(), "kind": err.kind(),
                        }));
                    }
                }
            }
            out.ok(
                human,
                json!({
                    "epoch": view.epoch, "settled_epoch": view.settled_epoch,
                    "rebalancing": view.rebalancing, "servers": docs,
                }),
            );
        }
        Command::Decommission { addr } => {
            if !net::names_a_port(&addr) {
                return Err(errinput!(
                    "decommission takes the server's HOST:PORT, not {addr:?}: it stops that server"
                ));
            }
            let handoff = decommission(&client, &addr, &env, out).await?;
            out.ok(
                format!(
                    "{addr} ({}) left the cluster: it held {} keys and its new owners stored {} of the {} copies it offered{}",
                    handoff.server_id,
                    handoff.keys_at_start,
                    handoff.copies_sent,
                    handoff.copies_offered.unwrap_or(0),
                    if handoff.complete == Some(false) {
                        " (not every owner answered in time: the surviving replicas re-replicate the rest)"
                    } else {
                        ""
                    }
                ),
                json!({"ok": true, "server": addr, "id": handoff.server_id,
                       "keys_at_start": handoff.keys_at_start, "copies_sent": handoff.copies_sent,
                       "copies_offered": handoff.copies_offered, "complete": handoff.complete}),
            );
        }
        Command::Locate { key } => {
            let location = client.locate(&key).await?;
            let mut human = format!(
                "{key:?} at epoch {}{} lives on (primary first):",
                location.epoch,
                if location.rebalancing {
                    ", rebalancing"
                } else {
                    ""
                }
            );
            let mut docs = Vec::new();
            for copy in &location.replicas {
                let (addr, id) = (&copy.replica.addr, &copy.replica.id);
                match &copy.held {
                    Ok((version, epoch)) => {
                        let held =
                            version.map_or("no copy".to_string(), |v| format!("version {v}"));
                        human.push_str(&format!("\n  {addr:<22} {id}  {held} (at epoch {epoch})"));
                        docs.push(
                            json!({"addr": addr, "id": id, "version": version, "epoch": epoch}),
                        );
                    }
                    Err(err) => {
                        human.push_str(&format!("\n  {addr:<22} {id}  no answer: {err}"));
                        docs.push(json!({"addr": addr, "id": id, "error": err.to_string(), "kind": err.kind()}));
                    }
                }
            }
            out.ok(
                human,
                json!({"key": key, "epoch": location.epoch, "rebalancing": location.rebalancing, "replicas": docs}),
            );
        }
        Command::Append { key, item } => {
            let outcome = client.append(&key, &item).await?;
            let addrs: Vec<&str> = outcome.replicas.iter().map(|r| r.addr.as_str()).collect();
            out.ok(
                format!("appended to {key:?} on {} (version {}, epoch {})", addrs.join(", "), outcome.version, outcome.epoch),
                json!({"ok": true, "key": key, "version": outcome.version, "epoch": outcome.epoch, "replicas": addrs}),
            );
        }
        Command::Crash | Command::Recover => {
            let crash = matches!(args.command, Command::Crash);
            // --server names the target when typed (a --viewleader beside it only says where
            // the cluster is); otherwise a typed --viewleader does. Never a variable (`Typed`).
            let (what, crashed) = match &args.server {
                Some(target) if args.typed.server => {
                    let addr = client.resolve_server(target).await?;
                    (addr.clone(), client.set_crashed(&addr, crash).await?)
                }
                _ if args.typed.viewleader => (
                    "the view leader".to_string(),
                    client.set_viewleader_crashed(crash).await?,
                ),
                _ => {
                    return Err(errinput!(
                        "name the process: --server HOST:PORT or --viewleader HOST:PORT on the \
                         command line ({} and {} are not used to pick what to crash or recover)",
                        process::SERVER_ENV,
                        process::VIEWLEADER_ENV
                    ))
                }
            };
            let state = if crashed {
                "crashed (answers nothing but recover)"
            } else {
                "running"
            };
            out.ok(
                format!("{what} is {state}"),
                json!({"target": what, "crashed": crashed}),
            );
        }
        Command::Load(load_args) => return load::run(&client, load_args, &env, out).await,
        Command::WaitSettled => return settle::run(&client, &env, out).await,
        Command::Viewleader(action) => return members(&client, action, out).await,
        Command::Demo(demo_args) => return demo::run(demo_args, out).await,
        Command::Bench(bench_args) => return bench::command::run(bench_args, out).await,
        Command::Chaos(chaos_args) => return chaos::run(chaos_args, out).await,
        Command::Sim(sim_args) => return campaign::run(sim_args, out).await,
        Command::Serve(serve_args) => return chaos::serve(serve_args, env).await,
        // Answered by `run` and at the top of `execute`, before any connection is made.
        Command::Completions { .. } | Command::Secrets { .. } | Command::TlsCerts(_) => {}
    }
    Ok(EXIT_OK)
}

/// `client viewleader status|add|remove`.
async fn members(client: &Client, action: MembersCommand, out: Output) -> Result<u8, Error> {
    let answers = match action {
        MembersCommand::Status => client.group_status().await?,
        MembersCommand::Add { id, addr } => {
            let status = client.add_member(id, &addr).await?;
            out.progress(format!("member {id} at {addr} added"));
            vec![(status.addr.clone(), Ok(status))]
        }
        MembersCommand::Remove { id } => {
            let status = client.remove_member(id).await?;
            out.progress(format!("member {id} removed"));
            vec![(status.addr.clone(), Ok(status))]
        }
    };
    let show = |index: Option<u64>| index.map_or("-".to_string(), |i| i.to_string());
    let mut human = format!(
        "{:<4} {:<22} {:<10} {:>5} {:>6} {:>8} {:>9} {:>8} {:>8} {:>6}",
        "ID",
        "ADDR",
        "ROLE",
        "TERM",
        "LEADER",
        "LAST_LOG",
        "COMMITTED",
        "APPLIED",
        "SNAPSHOT",
        "EPOCH"
    );
    let mut docs = Vec::new();
    for (addr, answer) in &answers {
        match answer {
            Ok(st) => {
                let role = if st.crashed {
                    "crashed"
                } else {
                    st.role.as_str()
                };
                human.push_str(&format!(
                    "\n{:<4} {:<22} {:<10} {:>5} {:>6} {:>8} {:>9} {:>8} {:>8} {:>6}",
                    st.id,
                    st.addr,
                    role,
                    st.term,
                    show(st.leader),
                    show(st.last_log_index),
                    show(st.committed),
                    show(st.applied),
                    show(st.snapshot),
                    st.epoch
                ));
                docs.push(json!({
                    "id": st.id, "addr": st.addr, "role": st.role, "term": st.term,
                    "leader": st.leader, "leader_addr": st.leader_addr,
                    "last_log_index": st.last_log_index, "committed": st.committed,
                    "applied": st.applied, "snapshot": st.snapshot, "purged": st.purged,
                    "voters": st.voters.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    "learners": st.learners.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    "epoch": st.epoch, "crashed": st.crashed,
                }));
            }
            Err(err) => {
                human.push_str(&format!("\n{:<4} {addr:<22} no answer: {err}", "?"));
                docs.push(json!({"addr": addr, "error": err.to_string(), "kind": err.kind()}));
            }
        }
    }
    let leaders: Vec<u64> = answers
        .iter()
        .filter_map(|(_, a)| a.as_ref().ok())
        .filter(|st| st.role == "leader" && !st.crashed)
        .map(|st| st.id)
        .collect();
    out.ok(human, json!({"members": docs, "leaders": leaders}));
    Ok(EXIT_OK)
}

/// Adds a line per server (address, id) to `human`, and returns them as `--json` shows them.
pub(crate) fn list_servers(
    servers: &[crate::types::ServerInfo],
    human: &mut String,
) -> Vec<serde_json::Value> {
    for server in servers {
        human.push_str(&format!("\n{}  {}", server.addr, server.id));
    }
    servers
        .iter()
        .map(|s| json!({"id": s.id, "addr": s.addr}))
        .collect()
}

/// The key space `get` and `query_all_keys` read: the server's own keys unless `--ring`.
fn space_of(ring: bool) -> Space {
    if ring {
        Space::Ring
    } else {
        Space::Local
    }
}

fn not_found(out: Output, key: &str, where_: &str) -> u8 {
    if out.json {
        println!("{}", json!({"key": key, "value": null}));
    }
    eprintln!("not found: {key:?} {where_}");
    EXIT_NOT_FOUND
}

/// Runs a decommission of `addr`, showing its handoff (see [`progress`]).
async fn decommission(
    client: &Client,
    addr: &str,
    env: &Env,
    out: Output,
) -> Result<crate::client::Handoff, Error> {
    let mut progress = progress::Progress::new(out, progress::Shape::Bar, env);
    let outcome = client
        .decommission(addr, |handoff| {
            progress.update(
                handoff.copies_sent,
                Some(handoff.copies_offered.unwrap_or(handoff.keys_at_start)),
                format!(
                    "decommissioning {addr}: {} copies sent, {} of {} keys still held",
                    handoff.copies_sent, handoff.keys_held, handoff.keys_at_start
                ),
            )
        })
        .await;
    progress.finish();
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(argv: &[&str]) -> Typed {
        match ClientArgs::try_from_args(argv) {
            Ok(args) => args.typed,
            Err(err) => panic!("{argv:?} does not parse: {err}"),
        }
    }

    #[test]
    fn typed_notes_the_flags_given_before_or_after_the_subcommand() {
        let neither = Typed::default();
        assert_eq!(typed(&["client", "crash"]), neither);
        assert_eq!(
            typed(&["client", "--server", "h:1", "crash"]),
            Typed {
                server: true,
                viewleader: false
            }
        );
        assert_eq!(
            typed(&["client", "crash", "--viewleader", "h:2"]),
            Typed {
                server: false,
                viewleader: true
            }
        );
    }
}
