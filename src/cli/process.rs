//! What every binary does to run as a process: logging, shutdown on signals, the
//! `listening on` line that tells scripts it is ready, the environment variables its flags fall
//! back to, and its shell completions.
//!
//! Apart from the command line because the hidden `serve` role of `client chaos` runs a node
//! exactly as the `viewleader` and `server` binaries do.

use crate::error::Error;

/// The shells `completions` knows: bash, elvish, fish, powershell, zsh.
pub use clap_complete::Shell;

/// The environment variable every binary's `--cluster` falls back to (then
/// [`crate::net::CLUSTER_DEFAULT`]).
pub const CLUSTER_ENV: &str = "RINGLEADER_CLUSTER";

/// The environment variable every `--viewleader` falls back to (the `server`'s, the
/// `client`'s); a flag on the command line wins over it.
pub const VIEWLEADER_ENV: &str = "RINGLEADER_VIEWLEADER";

/// The environment variable the `client`'s `--server` falls back to.
pub const SERVER_ENV: &str = "RINGLEADER_SERVER";

/// The environment variable every binary's `--cluster-secret-file` falls back to.
pub const CLUSTER_SECRET_FILE_ENV: &str = "RINGLEADER_CLUSTER_SECRET_FILE";

/// The flags that guard a node, the same on the view leader and the storage server.
#[derive(clap::Args, Debug)]
pub struct NodeGuards {
    /// The cluster secret this process proves and asks every caller to prove (member.secret of
    /// `client secrets DIR`). Without it, only a loopback --host is allowed.
    #[arg(long, value_name = "FILE", env = CLUSTER_SECRET_FILE_ENV)]
    pub cluster_secret_file: Option<std::path::PathBuf>,
    /// Answer crash and recover (RPC and HTTP) and POST /exit. Off by default: these are for
    /// tests, the demo, chaos runs and the distributed-log harness, never for a real deployment.
    #[arg(long)]
    pub fault_injection: bool,
    /// File holding the HTTP bearer token (one line, at least 16 bytes): writes and admin routes
    /// then need `Authorization: Bearer TOKEN`, and reads too unless --http-read-open.
    #[arg(long, value_name = "FILE", env = crate::http::auth::HTTP_TOKEN_FILE_ENV)]
    pub http_token_file: Option<std::path::PathBuf>,
    /// With --http-token-file: reads (GET /keys/...) need no token; writes and admin still do.
    #[arg(long)]
    pub http_read_open: bool,
    /// TLS on every port and connection (`--tls-cert`, `--tls-key`, `--tls-ca`): all or none.
    #[command(flatten)]
    pub tls: super::tls_certs::TlsArgs,
}

/// The secret a view leader or server proves, read from `path` if given: a member's, since a
/// service must check callers of both roles; a client's file is refused saying so.
pub fn member_secret(
    path: Option<&std::path::Path>,
) -> Result<Option<crate::net::secret::ClusterSecret>, Error> {
    use crate::net::secret::{ClusterSecret, Role};
    let Some(path) = path else {
        return Ok(None);
    };
    let secret = ClusterSecret::load(path)?;
    if secret.role() != Role::Member {
        return Err(crate::errinput!(
            "{} holds a client's secret; view leaders and servers need the member secret \
             (member.secret of `client secrets DIR`)",
            path.display()
        ));
    }
    Ok(Some(secret))
}

/// Prints the completion script of `command` for `shell` on stdout, for the binary named `bin`
/// (`client completions SHELL`, `server --completions SHELL`).
pub fn print_completions(shell: Shell, command: clap::Command, bin: &'static str) {
    use std::io::Write;
    // clap_complete offers hidden flags and subcommands too (`client serve`, the servers' test
    // knobs): rebuild the top level with the shown ones only (subcommands are kept whole).
    // Every binary's `--version` is the crate's.
    let mut shown = clap::Command::new(bin)
        .version(env!("CARGO_PKG_VERSION"))
        .args(
            command
                .get_arguments()
                .filter(|arg| !arg.is_hide_set())
                .cloned(),
        )
        .subcommands(
            command
                .get_subcommands()
                .filter(|sub| !sub.is_hide_set())
                .cloned(),
        );
    // Generated into memory first: clap_complete panics on a failed write, and stdout may be a
    // pipe that closed early (`| head`), which is not worth a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut shown, bin, &mut script);
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&script);
    let _ = stdout.flush();
}

/// Logs to stderr, filtered by `RUST_LOG`, else by `default_filter` (the services log their
/// lifecycle at info; the client only warnings, so its output stays readable).
pub fn init_tracing(default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Shutdown triggers: the first fires on the first Ctrl-C or SIGTERM (stop gracefully), the
/// second on another one (stop now).
pub fn shutdown_on_signal() -> (
    tokio_util::sync::CancellationToken,
    tokio_util::sync::CancellationToken,
) {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let kill = tokio_util::sync::CancellationToken::new();
    let (first, second) = (shutdown.clone(), kill.clone());
    tokio::spawn(async move {
        signal().await;
        tracing::info!("shutting down (signal again to stop at once)");
        first.cancel();
        signal().await;
        second.cancel();
    });
    (shutdown, kill)
}

async fn signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Prints the one line `listening on ADDR` that scripts and tests wait for.
pub fn announce(listener: &dyn crate::net::Listener) -> Result<(), Error> {
    announce_as("listening on", listener)
}

/// Prints `WHAT ADDR` on stdout (the HTTP gateway's `http listening on ADDR`).
pub fn announce_as(what: &str, listener: &dyn crate::net::Listener) -> Result<(), Error> {
    use std::io::Write;
    let addr = listener.local_addr()?;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{what} {addr}");
    let _ = stdout.flush();
    Ok(())
}

/// A service binary's exit status: 0 when it stopped cleanly, 2 for settings that do not make
/// sense (as for a usage error), else the code of the error that stopped it, printed on stderr.
pub fn exit_status(outcome: Result<(), Error>) -> std::process::ExitCode {
    use std::process::ExitCode;
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            match err {
                Error::InvalidRequest(_) => ExitCode::from(2),
                err => ExitCode::from(err.exit_code()),
            }
        }
    }
}

/// Where the open-file limit stands after [`raise_open_files_limit`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenFiles {
    /// The soft limit was raised from `from` to `to`.
    Raised { from: u64, to: u64 },
    /// The soft limit already was the hard one (or could not be raised): `limit`.
    Kept { limit: u64 },
    /// No such limit here (not unix), or it could not be read.
    Unknown,
}

/// A soft limit to try when the hard one is refused: macOS refuses an unlimited soft limit for
/// open files and takes at most its `OPEN_MAX`, 10240.
#[cfg(unix)]
const OPEN_FILES_FALLBACK: u64 = 10_240;

/// `rlim_t` is `u64` on Linux and macOS but signed on some BSDs.
#[cfg(unix)]
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn rlim_to_u64(value: libc::rlim_t) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(unix)]
#[allow(clippy::useless_conversion, clippy::unnecessary_fallible_conversions)]
fn rlim_from_u64(value: u64) -> libc::rlim_t {
    libc::rlim_t::try_from(value).unwrap_or(libc::rlim_t::MAX)
}

/// Raises this process's soft limit of open files to its hard limit, if lower.
///
/// Why: every connection is a file descriptor, and a node holds up to
/// [`crate::rpc::server::CONNECTIONS_MAX`] RPC connections and
/// [`crate::http::HTTP_CONNECTIONS_MAX`] HTTP ones, plus its own pooled connections to peers and
/// its data files. Many systems start processes with a soft limit of 1024, below that: accepts
/// would then fail with "too many open files" before the connection caps (which shed idle
/// connections to make room) are reached, and a flood of idle sockets could still starve the
/// node. The hard limit is what the administrator allows; raising the soft one up to it needs no
/// privilege. Failure is not an error: the process runs with the limit it has.
pub fn raise_open_files_limit() -> OpenFiles {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we own and pass by pointer.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
            return OpenFiles::Unknown;
        }
        let from = rlim_to_u64(limit.rlim_cur);
        if limit.rlim_cur >= limit.rlim_max {
            return OpenFiles::Kept { limit: from };
        }
        let hard = limit.rlim_max;
        let fallback = rlim_from_u64(OPEN_FILES_FALLBACK).min(hard);
        for soft in [hard, fallback] {
            if soft <= limit.rlim_cur {
                continue;
            }
            let wanted = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit reads the struct we own and pass by pointer.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
                let to = rlim_to_u64(soft);
                tracing::info!(
                    from,
                    to,
                    "raised the soft limit of open files to the hard one"
                );
                return OpenFiles::Raised { from, to };
            }
        }
        OpenFiles::Kept { limit: from }
    }
    #[cfg(not(unix))]
    {
        OpenFiles::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn limits() -> libc::rlimit {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: as in raise_open_files_limit.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        limit
    }

    #[cfg(unix)]
    #[test]
    fn the_soft_limit_of_open_files_is_raised_to_the_hard_one() {
        let before = limits();
        // Other tests of this process run meanwhile: lower the limit by one only (allowed
        // without privilege), so that there is something to raise.
        if before.rlim_cur == before.rlim_max {
            let lowered = libc::rlimit {
                rlim_cur: before.rlim_max - 1,
                rlim_max: before.rlim_max,
            };
            // SAFETY: as in raise_open_files_limit.
            assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        }
        let lowered = limits();
        let outcome = raise_open_files_limit();
        let after = limits();
        assert_eq!(
            outcome,
            OpenFiles::Raised {
                from: rlim_to_u64(lowered.rlim_cur),
                to: rlim_to_u64(after.rlim_cur)
            }
        );
        assert!(
            after.rlim_cur == after.rlim_max || rlim_to_u64(after.rlim_cur) == OPEN_FILES_FALLBACK,
            "{outcome:?}"
        );
        if after.rlim_cur == after.rlim_max {
            assert_eq!(
                raise_open_files_limit(),
                OpenFiles::Kept {
                    limit: rlim_to_u64(after.rlim_cur)
                }
            );
        }
    }
}
