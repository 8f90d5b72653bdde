//! The processes a benchmark starts itself (`recovery`, `failover`): their output lines
//! timestamped as they arrive, waited for by content, and `SIGKILL` when dropped.

use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ringleader::error::{Error, Result};
use tokio::sync::mpsc;

/// Longest a process may take to print a line the benchmark waits for.
pub const LINE_WAIT_MS: u64 = 600_000;

/// Which output of a process a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A process of the benchmark, its output lines timestamped as they arrive; killed when dropped.
pub struct Proc {
    child: Child,
    pub started: Instant,
    lines: mpsc::UnboundedReceiver<(Instant, Stream, String)>,
    /// Every line seen, for the error message if it dies.
    seen: Vec<String>,
}

impl Proc {
    pub fn spawn(exe: &Path, args: &[String]) -> Result<Self> {
        Self::spawn_logged(exe, args, None)
    }

    /// Like [`Proc::spawn`], and appends every line the process prints to `log` as well.
    pub fn spawn_logged(exe: &Path, args: &[String], log: Option<&PathBuf>) -> Result<Self> {
        let log = match log {
            Some(path) => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|err| Error::Internal(format!("{}: {err}", path.display())))?,
            ))),
            None => None,
        };
        let started = Instant::now();
        let mut child = Command::new(exe)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,ringleader=info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| Error::Internal(format!("cannot start {}: {err}", exe.display())))?;
        let (tx, lines) = mpsc::unbounded_channel();
        let outputs: [(Option<Box<dyn std::io::Read + Send>>, Stream); 2] = [
            (
                child
                    .stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
                Stream::Stdout,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
                Stream::Stderr,
            ),
        ];
        for (output, stream) in outputs {
            let Some(output) = output else { continue };
            let (tx, log) = (tx.clone(), log.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(output).lines().map_while(|l| l.ok()) {
                    if let Some(log) = &log {
                        if let Ok(mut file) = log.lock() {
                            let _ = writeln!(file, "{line}");
                        }
                    }
                    let _ = tx.send((Instant::now(), stream, line));
                }
            });
        }
        Ok(Self {
            child,
            started,
            lines,
            seen: Vec::new(),
        })
    }

    /// Waits for a line of `stream` containing `needle`; returns it and when it arrived.
    pub async fn wait_line(&mut self, stream: Stream, needle: &str) -> Result<(Instant, String)> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(LINE_WAIT_MS);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((at, from, line))) => {
                    let found = from == stream && line.contains(needle);
                    self.seen.push(line.clone());
                    if found {
                        return Ok((at, line));
                    }
                }
                Ok(None) => {
                    return Err(Error::Internal(format!(
                        "the process ended before printing {needle:?}; its output: {}",
                        self.seen.join("\n")
                    )))
                }
                Err(_) => {
                    return Err(Error::Timeout(format!(
                        "no {needle:?} line within {LINE_WAIT_MS} ms"
                    )))
                }
            }
        }
    }

    /// `SIGKILL`, and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The address in a `listening on ADDR` line.
pub fn addr_of(line: &str) -> Result<String> {
    line.split_once("listening on ")
        .map(|(_, addr)| addr.trim().to_string())
        .ok_or_else(|| Error::Internal(format!("no address in {line:?}")))
}
