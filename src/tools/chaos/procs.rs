//! The processes of a chaos run: a view leader and storage servers, each this very binary in its
//! hidden `serve` role, each in its own network namespace when the run has them ([`super::netns`])
//! or all on loopback when it has not. It starts them, kills them (`SIGKILL`), starts them again
//! at a new address or at the same one (same port, same `--data-dir` for the view leader), and
//! stops or continues them (`SIGSTOP`/`SIGCONT`). Every child is killed when its handle drops,
//! and the run's temporary directory is removed with the cluster.
//!
//! Left out: anything the processes do themselves (that is the nemesis's and the workload's), and
//! killing children when this process dies by `SIGKILL` (no parent-death signal is set).

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::netns::{Net, Node, SERVER_HOST_FIRST, VIEWLEADER_HOST};
use super::Timing;
use crate::error::{Error, Result};

/// Longest wait for a process to print its `listening on` line.
pub const STARTUP_WAIT_MS: u64 = 10_000;
/// Longest a restart at the same address keeps trying to bind the old port (the kernel may hold
/// it for a moment after the kill).
pub const SAME_ADDR_RESTART_MS: u64 = 5_000;
/// Pause between two tries of a restart at the same address.
pub const SAME_ADDR_RETRY_MS: u64 = 50;
/// The view leader's port inside its namespace (any port works there: the address is its own).
pub const VIEWLEADER_PORT_NETNS: u16 = 39_000;

/// A child process of the run, killed when dropped.
pub struct Proc {
    child: Child,
    /// `host:port` it listens on and advertises.
    pub addr: String,
}

impl Proc {
    /// Starts `EXE serve ARGS` (`EXE` is the `client` binary), in namespace `ns` if given, and
    /// waits for its address.
    fn spawn(exe: &Path, ns: Option<&str>, args: &[String]) -> Result<Self> {
        // `ip netns exec` execs the command in place: the child's pid is the server's.
        let mut command = match ns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(exe);
                command
            }
            None => Command::new(exe),
        };
        // The run's own clients are of the default cluster: so are its processes, whatever
        // `RINGLEADER_CLUSTER` they inherit.
        let mut child = command
            .arg("serve")
            .args(["--cluster", crate::net::CLUSTER_DEFAULT])
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "error".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|err| Error::Internal(format!("cannot start a cluster process: {err}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| Error::Internal("no stdout".into()))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the child never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(Duration::from_millis(STARTUP_WAIT_MS)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Timeout(
                    "a cluster process did not say where it listens".into(),
                ));
            }
        };
        let Some(addr) = line.strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Internal(format!(
                "unexpected first line from a cluster process: {line:?}"
            )));
        };
        Ok(Self {
            addr: addr.to_string(),
            child,
        })
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
    }

    /// The port it listens on.
    fn port(&self) -> Result<u16> {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .ok_or_else(|| Error::Internal(format!("no port in {:?}", self.addr)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One storage server's place in the cluster: its namespace (kept across restarts) and process.
pub struct Slot {
    pub node: Option<Node>,
    pub proc: Proc,
}

/// The view leader and servers of a run. Fields drop in order: processes before the network.
pub struct Cluster {
    pub viewleader: Proc,
    pub viewleader_node: Option<Node>,
    pub servers: Vec<Slot>,
    pub net: Option<Net>,
    timing: Timing,
    /// The `client` binary the processes run.
    exe: PathBuf,
    /// The run's temporary directory (the view leader's `--data-dir` lives in it).
    dir: PathBuf,
}

impl Cluster {
    /// Starts a view leader and `servers` storage servers running this very binary, in
    /// namespaces when `net` is given.
    pub fn start(net: Option<Net>, servers: usize, timing: Timing) -> Result<Self> {
        let exe = std::env::current_exe()
            .map_err(|err| Error::Internal(format!("cannot find this binary: {err}")))?;
        Self::start_with(exe, net, servers, timing)
    }

    /// [`Cluster::start`] with the `client` binary at `exe` (tests pass `CARGO_BIN_EXE_client`).
    pub fn start_with(
        exe: PathBuf,
        mut net: Option<Net>,
        servers: usize,
        timing: Timing,
    ) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!(
            "ringleader-chaos-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(dir.join("viewleader"))
            .map_err(|err| Error::Internal(format!("cannot create {}: {err}", dir.display())))?;
        let viewleader_node = match net.as_mut() {
            Some(net) => Some(
                net.add_node("vl", VIEWLEADER_HOST)
                    .map_err(Error::Internal)?,
            ),
            None => None,
        };
        let port = viewleader_node
            .as_ref()
            .map(|_| VIEWLEADER_PORT_NETNS)
            .unwrap_or(0);
        let viewleader = match Proc::spawn(
            &exe,
            viewleader_node.as_ref().map(|n| n.ns.as_str()),
            &viewleader_args(&timing, host(&viewleader_node), port, &dir),
        ) {
            Ok(proc) => proc,
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(err);
            }
        };
        let mut cluster = Self {
            viewleader,
            viewleader_node,
            servers: Vec::new(),
            net,
            timing,
            exe,
            dir,
        };
        for slot in 0..servers {
            let node = match cluster.net.as_mut() {
                Some(net) => {
                    let host = u8::try_from(slot)
                        .ok()
                        .and_then(|s| s.checked_add(SERVER_HOST_FIRST))
                        .ok_or_else(|| Error::Internal("too many servers".into()))?;
                    Some(
                        net.add_node(&format!("s{slot}"), host)
                            .map_err(Error::Internal)?,
                    )
                }
                None => None,
            };
            let proc = cluster.spawn_server(node.as_ref(), 0)?;
            cluster.servers.push(Slot { node, proc });
        }
        Ok(cluster)
    }

    fn spawn_server(&self, node: Option<&Node>, port: u16) -> Result<Proc> {
        let args = server_args(
            &self.timing,
            host(&node.cloned()),
            port,
            &self.viewleader.addr,
        );
        Proc::spawn(&self.exe, node.map(|n| n.ns.as_str()), &args)
    }

    /// The addresses of the storage servers.
    pub fn server_addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.proc.addr.clone()).collect()
    }

    /// The namespace addresses of every server, and of the view leader.
    pub fn server_ips(&self) -> Vec<Ipv4Addr> {
        self.servers
            .iter()
            .filter_map(|s| s.node.as_ref().map(|n| n.ip))
            .collect()
    }

    /// Kills server `slot` with `SIGKILL`; the slot keeps its namespace but has no process until
    /// [`Cluster::restart_server`].
    pub fn kill_server(&mut self, slot: usize) -> Result<()> {
        let server = self.slot(slot)?;
        server.proc.signal("KILL");
        Ok(())
    }

    /// Starts server `slot` again: at its old address when `same_addr`, else at a new port.
    pub fn restart_server(&mut self, slot: usize, same_addr: bool) -> Result<()> {
        let port = if same_addr {
            self.slot(slot)?.proc.port()?
        } else {
            0
        };
        let node = self.slot(slot)?.node.clone();
        let proc = retry_bind(|| self.spawn_server(node.as_ref(), port))?;
        // The old handle drops here: its process is dead already, this only reaps it.
        self.slot(slot)?.proc = proc;
        Ok(())
    }

    /// Kills the view leader with `SIGKILL` and starts it again at once, at the same address and
    /// with the same `--data-dir`.
    pub fn restart_viewleader(&mut self) -> Result<()> {
        self.viewleader.signal("KILL");
        let port = self.viewleader.port()?;
        let node = self.viewleader_node.clone();
        let args = viewleader_args(&self.timing, host(&node), port, &self.dir);
        let exe = self.exe.clone();
        let proc = retry_bind(|| Proc::spawn(&exe, node.as_ref().map(|n| n.ns.as_str()), &args))?;
        self.viewleader = proc;
        Ok(())
    }

    fn slot(&mut self, slot: usize) -> Result<&mut Slot> {
        self.servers
            .get_mut(slot)
            .ok_or_else(|| Error::Internal(format!("no server slot {slot}")))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Processes go first (their handles kill them), then the namespaces, then the files.
        self.servers.clear();
        self.viewleader.signal("KILL");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Keeps starting a process at a port the kernel may not have released yet, for a bounded time.
fn retry_bind(mut spawn: impl FnMut() -> Result<Proc>) -> Result<Proc> {
    let deadline = Instant::now() + Duration::from_millis(SAME_ADDR_RESTART_MS);
    loop {
        match spawn() {
            Ok(proc) => return Ok(proc),
            Err(err) if Instant::now() >= deadline => return Err(err),
            Err(_) => std::thread::sleep(Duration::from_millis(SAME_ADDR_RETRY_MS)),
        }
    }
}

fn host(node: &Option<Node>) -> String {
    node.as_ref()
        .map(|n| n.ip.to_string())
        .unwrap_or_else(|| "127.0.0.1".into())
}

fn viewleader_args(timing: &Timing, host: String, port: u16, dir: &std::path::Path) -> Vec<String> {
    vec![
        "--role".into(),
        "viewleader".into(),
        "--host".into(),
        host,
        "--port".into(),
        port.to_string(),
        "--heartbeat-interval-ms".into(),
        timing.heartbeat_ms.to_string(),
        "--lease-ms".into(),
        timing.lease_ms.to_string(),
        "--data-dir".into(),
        dir.join("viewleader").display().to_string(),
    ]
}

fn server_args(timing: &Timing, host: String, port: u16, viewleader: &str) -> Vec<String> {
    vec![
        "--role".into(),
        "server".into(),
        "--host".into(),
        host,
        "--port".into(),
        port.to_string(),
        "--viewleader-addr".into(),
        viewleader.to_string(),
        "--heartbeat-interval-ms".into(),
        timing.heartbeat_ms.to_string(),
        "--tx-timeout-ms".into(),
        timing.tx_timeout_ms.to_string(),
    ]
}
