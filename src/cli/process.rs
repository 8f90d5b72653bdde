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
