//! The processes of a chaos run: the view leader's Raft group (a few members) and storage
//! servers, each this very binary in its hidden `serve` role, each in its own network namespace
//! when the run has them ([`super::netns`]) or all on loopback when it has not. It starts them,
//! kills them (`SIGKILL`, and reaps them, so their port and data dir lock are free), starts them
//! again (a server at a new address or at the same one, a member always as itself at its
//! address), and stops or continues them (`SIGSTOP`/`SIGCONT`).
//!
//! Every process has a data dir of its own under the run's temporary directory: `viewleader-ID/`
//! for member ID, and `server-N/` for server slot N. A member keeps its data dir (its Raft log,
//! vote and snapshots) across restarts, and snapshots every [`CHAOS_SNAPSHOT_ENTRIES`] entries so
//! that restarts cross compactions. A member's address is fixed before the group starts (the
//! members find each other through `--peers`): in a namespace it is the namespace's address; on
//! loopback it is a port the kernel handed out and this process let go just before the member
//! bound it. A slot keeps its data dir across restarts, so a server killed and started again
//! comes back with what it held (under its old member id while its lease holds);
//! [`Cluster::wipe_server_data`] empties it first, for a replaced machine. Every child is killed
//! when its handle drops, and the run's temporary directory (every data dir) is removed with the
//! cluster.
//!
//! Left out: anything the processes do themselves (that is the nemesis's and the workload's),
//! changes to the group's membership (a member is never added, removed or replaced with its data
//! dir wiped), and killing children when this process dies by `SIGKILL` (no parent-death signal
//! is set).

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
/// A view-leader member's port inside its namespace (any port works there: the address is its
/// own).
pub const VIEWLEADER_PORT_NETNS: u16 = 39_000;
/// What the cluster's processes log unless `RUST_LOG` says otherwise: errors, but none of
/// openraft's, which logs every message a member it cannot reach fails to take (what every
/// fault of the run causes, many times a second) as an error.
pub const CHILD_LOG_DEFAULT: &str = "error,openraft=off";
/// Members of the view leader's group unless told otherwise: the smallest group that survives
/// the loss of one.
pub const VIEWLEADER_MEMBERS_DEFAULT: usize = 3;
/// Most members a chaos group has: their namespace addresses sit between the client's and the
/// first server's.
pub const VIEWLEADER_MEMBERS_MAX: usize = (SERVER_HOST_FIRST - VIEWLEADER_HOST) as usize;
/// Raft log entries between a member's snapshots: low, so that a member killed and started again
/// (or one that fell behind) crosses a compaction and catches up from a snapshot, which a run of
/// a few minutes would otherwise never do.
pub const CHAOS_SNAPSHOT_ENTRIES: u64 = 50;
/// The members' shortest election timeout, in ms, of a cluster started without one
/// ([`Cluster::start`]): the longest a chaos run draws, which a cluster of a dozen processes on
/// two cores does not trip while healthy. Not the view leader's default, which may change.
pub const CLUSTER_ELECTION_TIMEOUT_MS: u64 = super::ELECTION_TIMEOUT_MS_MAX;
/// How long a lock requester that is not a server keeps its place without asking again, in ms:
/// shorter than the view leader's default, so a lock whose holder's release was lost is free
/// again within a run.
pub const CHAOS_LOCK_LEASE_MS: u64 = 10_000;

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
                std::env::var("RUST_LOG").unwrap_or_else(|_| CHILD_LOG_DEFAULT.into()),
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

/// One member of the view leader's Raft group: its id, namespace, address and data dir (all kept
/// across restarts: a member is only ever started again as itself) and its process.
pub struct Member {
    pub id: u64,
    pub node: Option<Node>,
    pub data_dir: PathBuf,
    /// `host:port`, fixed for the run: the other members know it from `--peers`.
    pub addr: String,
    pub proc: Proc,
}

impl Member {
    /// Whether the member's process was killed and not started again.
    pub fn is_down(&self) -> bool {
        self.proc.reaped
    }
}

/// The view leader's group: its members, and the list every server and client is given.
pub struct Group {
    /// `a:1,b:2,c:3`: every member's address (the `--viewleader` of servers and clients).
    pub addr: String,
    pub members: Vec<Member>,
}

impl Group {
    /// The addresses of the members, in id order.
    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.clone()).collect()
    }

    /// The index of the member at `addr`.
    pub fn index_of(&self, addr: &str) -> Option<usize> {
        self.members.iter().position(|m| m.addr == addr)
    }

    /// A majority of the group: the members that must be up for it to elect and commit.
    pub fn majority(&self) -> usize {
        self.members.len() / 2 + 1
    }
}

/// The view leader's members and the servers of a run. Fields drop in order: processes before
/// the network.
pub struct Cluster {
    pub viewleader: Group,
    pub servers: Vec<Slot>,
    pub net: Option<Net>,
    timing: Timing,
    /// The members' shortest election timeout (`--election-timeout-ms`), in ms: always given
    /// them, so that what waits on the group can derive from it.
    pub election_timeout_ms: u64,
    /// The `client` binary the processes run.
    exe: PathBuf,
    /// The run's temporary directory: every process's `--data-dir` lives in it.
    dir: PathBuf,
}

impl Cluster {
    /// Starts a view leader of [`VIEWLEADER_MEMBERS_DEFAULT`] members (election timeout
    /// [`CLUSTER_ELECTION_TIMEOUT_MS`]) and `servers` storage servers running this very binary,
    /// in namespaces when `net` is given.
    pub fn start(net: Option<Net>, servers: usize, timing: Timing) -> Result<Self> {
        Self::start_group(
            net,
            VIEWLEADER_MEMBERS_DEFAULT,
            servers,
            timing,
            CLUSTER_ELECTION_TIMEOUT_MS,
        )
    }

    /// [`Cluster::start`] with a view-leader group of `members` whose shortest election timeout
    /// is `election_timeout_ms`.
    pub fn start_group(
        net: Option<Net>,
        members: usize,
        servers: usize,
        timing: Timing,
        election_timeout_ms: u64,
    ) -> Result<Self> {
        let exe = std::env::current_exe()
            .map_err(|err| Error::Internal(format!("cannot find this binary: {err}")))?;
        Self::start_group_with(exe, net, members, servers, timing, election_timeout_ms)
    }

    /// [`Cluster::start`] with the `client` binary at `exe` (tests pass `CARGO_BIN_EXE_client`).
    pub fn start_with(
        exe: PathBuf,
        net: Option<Net>,
        servers: usize,
        timing: Timing,
    ) -> Result<Self> {
        Self::start_group_with(
            exe,
            net,
            VIEWLEADER_MEMBERS_DEFAULT,
            servers,
            timing,
            CLUSTER_ELECTION_TIMEOUT_MS,
        )
    }

    /// Starts `members` view-leader members and `servers` storage servers running `exe`.
    pub fn start_group_with(
        exe: PathBuf,
        net: Option<Net>,
        members: usize,
        servers: usize,
        timing: Timing,
        election_timeout_ms: u64,
    ) -> Result<Self> {
        if members == 0 || members > VIEWLEADER_MEMBERS_MAX {
            return Err(Error::Internal(format!(
                "a chaos view leader has 1 to {VIEWLEADER_MEMBERS_MAX} members, not {members}"
            )));
        }
        let dir = std::env::temp_dir().join(format!(
            "ringleader-chaos-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|err| Error::Internal(format!("cannot create {}: {err}", dir.display())))?;
        // From here on the cluster owns the directory (and the network): whatever fails below
        // drops it, which kills what started and removes the directory.
        let mut cluster = Self {
            viewleader: Group {
                addr: String::new(),
                members: Vec::new(),
            },
            servers: Vec::new(),
            net,
            timing,
            election_timeout_ms,
            exe,
            dir,
        };
        cluster.start_members(members)?;
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

    /// Places every member (its namespace and address are fixed before any starts: each is
    /// told the others' in `--peers`) and starts them all.
    fn start_members(&mut self, members: usize) -> Result<()> {
        let mut placed: Vec<(u64, Option<Node>, String)> = Vec::new();
        let mut reserved = Vec::new();
        for index in 0..members {
            let id = index as u64 + 1;
            let (node, addr) = match self.net.as_mut() {
                Some(net) => {
                    let host = u8::try_from(index)
                        .ok()
                        .and_then(|i| i.checked_add(VIEWLEADER_HOST))
                        .ok_or_else(|| Error::Internal("too many members".into()))?;
                    let node = net
                        .add_node(&format!("vl{id}"), host)
                        .map_err(Error::Internal)?;
                    let addr = format!("{}:{VIEWLEADER_PORT_NETNS}", node.ip);
                    (Some(node), addr)
                }
                None => {
                    // On loopback the port must be known before the member starts: the kernel
                    // picks a free one, which is let go just before the members bind it.
                    let socket = std::net::TcpListener::bind("127.0.0.1:0").map_err(|err| {
                        Error::Internal(format!("cannot find a free port: {err}"))
                    })?;
                    let addr = socket
                        .local_addr()
                        .map_err(|err| Error::Internal(format!("no local address: {err}")))?
                        .to_string();
                    reserved.push(socket);
                    (None, addr)
                }
            };
            placed.push((id, node, addr));
        }
        drop(reserved);
        self.viewleader.addr = placed
            .iter()
            .map(|(_, _, addr)| addr.as_str())
            .collect::<Vec<_>>()
            .join(",");
        for (id, node, addr) in placed {
            let data_dir = self.dir.join(format!("viewleader-{id}"));
            let proc = self.spawn_member(id, node.as_ref(), &addr, &data_dir)?;
            self.viewleader.members.push(Member {
                id,
                node,
                data_dir,
                addr,
                proc,
            });
        }
        Ok(())
    }

    fn peers_arg(&self) -> String {
        self.viewleader
            .addr
            .split(',')
            .enumerate()
            .map(|(index, addr)| format!("{}={addr}", index + 1))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn_member(
        &self,
        id: u64,
        node: Option<&Node>,
        addr: &str,
        data_dir: &Path,
    ) -> Result<Proc> {
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| Error::Internal(format!("no port in {addr:?}")))?;
        let args = member_args(
            &self.timing,
            self.election_timeout_ms,
            host(&node.cloned()),
            port,
            id,
            &self.peers_arg(),
            data_dir,
        );
        Proc::spawn(&self.exe, node.map(|n| n.ns.as_str()), &args)
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

    /// The namespace addresses of every server.
    pub fn server_ips(&self) -> Vec<Ipv4Addr> {
        self.servers
            .iter()
            .filter_map(|s| s.node.as_ref().map(|n| n.ip))
            .collect()
    }

    /// The namespace addresses of every view-leader member.
    pub fn member_ips(&self) -> Vec<Ipv4Addr> {
        self.viewleader
            .members
            .iter()
            .filter_map(|m| m.node.as_ref().map(|n| n.ip))
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

    /// Kills view-leader member `index` with `SIGKILL` and waits until it is gone; it has no
    /// process until [`Cluster::start_member`].
    pub fn kill_member(&mut self, index: usize) -> Result<()> {
        self.member(index)?.proc.kill();
        Ok(())
    }

    /// Starts view-leader member `index` again at its address, as itself, from its data dir
    /// (killing it first if it still runs).
    pub fn start_member(&mut self, index: usize) -> Result<()> {
        self.member(index)?.proc.kill();
        let (id, node, addr, data_dir) = {
            let m = self.member(index)?;
            (m.id, m.node.clone(), m.addr.clone(), m.data_dir.clone())
        };
        let proc = retry_bind(|| self.spawn_member(id, node.as_ref(), &addr, &data_dir))?;
        self.member(index)?.proc = proc;
        Ok(())
    }

    /// Sends `signal` (`STOP`, `CONT`) to view-leader member `index`.
    pub fn signal_member(&self, index: usize, signal: &str) {
        if let Some(member) = self.viewleader.members.get(index) {
            member.proc.signal(signal);
        }
    }

    fn member(&mut self, index: usize) -> Result<&mut Member> {
        self.viewleader
            .members
            .get_mut(index)
            .ok_or_else(|| Error::Internal(format!("no view-leader member {index}")))
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
        self.viewleader.members.clear();
        self.net = None;
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

fn member_args(
    timing: &Timing,
    election_timeout_ms: u64,
    host: String,
    port: u16,
    id: u64,
    peers: &str,
    data_dir: &Path,
) -> Vec<String> {
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
        "--lock-lease-ms".into(),
        CHAOS_LOCK_LEASE_MS.to_string(),
        "--id".into(),
        id.to_string(),
        "--peers".into(),
        peers.to_string(),
        // Always given, never the default: the nemesis's waits on the group derive from it.
        "--election-timeout-ms".into(),
        election_timeout_ms.to_string(),
        "--snapshot-entries".into(),
        CHAOS_SNAPSHOT_ENTRIES.to_string(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        // The nemesis crashes and recovers members.
        "--fault-injection".into(),
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
        // The nemesis crashes and recovers servers.
        "--fault-injection".into(),
    ]
}
