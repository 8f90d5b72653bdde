//! The processes of a chaos run: a view leader and storage servers, each this very binary in its
//! hidden `serve` role, each in its own network namespace when the run has them ([`super::netns`])
//! or all on loopback when it has not. It starts them, kills them (`SIGKILL`, and reaps them, so
//! their port and data dir lock are free), starts them again at a new address or at the same one,
//! and stops or continues them (`SIGSTOP`/`SIGCONT`).
//!
//! Every process has a data dir of its own under the run's temporary directory: `viewleader/`,
//! and `server-N/` for server slot N. A slot keeps its data dir across restarts, so a server
//! killed and started again comes back with what it held (under its old member id while its
//! lease holds); [`Cluster::wipe_server_data`] empties it first, for a replaced machine. Every
//! child is killed when its handle drops, and the run's temporary directory (every data dir) is
//! removed with the cluster.
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
    /// Killed and waited for: its pid may belong to another process now, so no more signals.
    reaped: bool,
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
            reaped: false,
        })
    }

    /// `SIGKILL`, then waits for the process to be gone: its port and its data dir's lock are
    /// free once this returns.
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        self.signal("KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`) to the process.
    pub fn signal(&self, signal: &str) {
        if self.reaped {
            return;
        }
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
        self.kill();
    }
}

/// One storage server's place in the cluster: its namespace and data dir (both kept across
/// restarts) and its process.
pub struct Slot {
    pub node: Option<Node>,
    pub data_dir: PathBuf,
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
    /// The run's temporary directory: every process's `--data-dir` lives in it.
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
            let data_dir = cluster.dir.join(format!("server-{slot}"));
            let proc = cluster.spawn_server(node.as_ref(), 0, &data_dir)?;
            cluster.servers.push(Slot {
                node,
                data_dir,
                proc,
            });
        }
        Ok(cluster)
    }

    fn spawn_server(&self, node: Option<&Node>, port: u16, data_dir: &Path) -> Result<Proc> {
        let args = server_args(
            &self.timing,
            host(&node.cloned()),
            port,
            &self.viewleader.addr,
            data_dir,
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

    /// Kills server `slot` with `SIGKILL` and waits until it is gone; the slot keeps its
    /// namespace and data dir but has no process until [`Cluster::restart_server`].
    pub fn kill_server(&mut self, slot: usize) -> Result<()> {
        self.slot(slot)?.proc.kill();
        Ok(())
    }

    /// Empties the data dir of server `slot` (killed already): its next start is a fresh server
    /// on a new machine, holding nothing and under a new id.
    pub fn wipe_server_data(&mut self, slot: usize) -> Result<()> {
        let dir = self.slot(slot)?.data_dir.clone();
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(Error::Internal(format!(
                "cannot wipe {}: {err}",
                dir.display()
            ))),
        }
    }

    /// Starts server `slot` again from its data dir (killing it first if it still runs): at its
    /// old address when `same_addr`, else at a new port.
    pub fn restart_server(&mut self, slot: usize, same_addr: bool) -> Result<()> {
        self.slot(slot)?.proc.kill();
        let port = if same_addr {
            self.slot(slot)?.proc.port()?
        } else {
            0
        };
        let node = self.slot(slot)?.node.clone();
        let data_dir = self.slot(slot)?.data_dir.clone();
        let proc = retry_bind(|| self.spawn_server(node.as_ref(), port, &data_dir))?;
        // The old handle drops here: its process is dead and reaped already.
        self.slot(slot)?.proc = proc;
        Ok(())
    }

    /// Kills the view leader with `SIGKILL` and starts it again at once, at the same address and
    /// with the same `--data-dir`.
    pub fn restart_viewleader(&mut self) -> Result<()> {
        self.kill_viewleader();
        self.start_viewleader()
    }

    /// Kills the view leader with `SIGKILL` and waits until it is gone; it has no process until
    /// [`Cluster::start_viewleader`].
    pub fn kill_viewleader(&mut self) {
        self.viewleader.kill();
    }

    /// Starts the view leader again at its address, with its `--data-dir` (killing it first if
    /// it still runs).
    pub fn start_viewleader(&mut self) -> Result<()> {
        let port = self.viewleader.port()?;
        let node = self.viewleader_node.clone();
        let args = viewleader_args(&self.timing, host(&node), port, &self.dir);
        let exe = self.exe.clone();
        self.viewleader.kill();
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
        self.viewleader.kill();
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

fn viewleader_args(timing: &Timing, host: String, port: u16, dir: &Path) -> Vec<String> {
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

fn server_args(
    timing: &Timing,
    host: String,
    port: u16,
    viewleader: &str,
    data_dir: &Path,
) -> Vec<String> {
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
        "--data-dir".into(),
        data_dir.display().to_string(),
    ]
}
