//! A whole cluster inside one process: a view leader and storage servers on loopback ports, each
//! with its own shutdown trigger. The demo and the load generator use it so that one command
//! works from a fresh clone with nothing else built; the real-process tests use the binaries.
//!
//! The servers are durable as the `server` binary is: each keeps its keys in a data dir of its
//! own, a temporary directory the cluster owns and removes when the server is stopped (or the
//! cluster is). A server killed ([`LocalCluster::kill_all`], or the kill token of
//! [`LocalCluster::restart_server`]) and started again from its data dir comes back with its
//! keys, under its old member id while its lease holds. [`ClusterOptions::in_memory`] runs them
//! in memory instead.
//!
//! Left out: the view leader's own data dir (an in-process view leader keeps nothing on disk).

use std::path::Path;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientOptions};
use crate::errinput;
use crate::error::{Error, Result};
use crate::faults::ReplyFaults;
use crate::net;
use crate::server::{self, ServerOptions, Storage};
use crate::storage::LogOptions;
use crate::types::View;
use crate::viewleader::{self, ViewLeaderOptions};

/// Pause between polls while waiting for the cluster to reach a state.
pub const POLL_MS: u64 = 20;
/// Longest a restart waits for the killed server's port and data dir to be free (its last
/// connections and background work let go of them a moment after its task ends).
pub const RESTART_WAIT_MS: u64 = 10_000;

/// Timing of an in-process cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    pub viewleader: ViewLeaderOptions,
    pub rpc_timeout_ms: u64,
    pub tx_timeout_ms: u64,
    /// Test hook for every server: dropped and duplicated replies.
    pub faults: ReplyFaults,
    /// The cluster every process and client of it belongs to.
    pub cluster: String,
    /// Servers keep their keys in memory only (a killed one comes back empty), instead of in a
    /// temporary data dir each.
    pub in_memory: bool,
    /// How the durable servers' log engine runs.
    pub log: LogOptions,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            viewleader: ViewLeaderOptions::default(),
            rpc_timeout_ms: server::RPC_TIMEOUT_MS_DEFAULT,
            tx_timeout_ms: server::TX_TIMEOUT_MS_DEFAULT,
            faults: ReplyFaults::default(),
            cluster: net::CLUSTER_DEFAULT.to_string(),
            in_memory: false,
            log: LogOptions::default(),
        }
    }
}

/// One storage server of a [`LocalCluster`].
pub struct LocalServer {
    pub addr: String,
    shutdown: CancellationToken,
    kill: CancellationToken,
    /// None once the task has been waited for (the server killed, not yet restarted).
    task: Option<JoinHandle<Result<()>>>,
    /// Its data dir (none in memory): kept across restarts, removed when this is dropped.
    data_dir: Option<TempDir>,
}

impl LocalServer {
    /// Where it keeps its keys (none in memory).
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_ref().map(TempDir::path)
    }

    /// Whether its task runs (it was not killed, or was restarted since).
    pub fn is_running(&self) -> bool {
        self.task.is_some()
    }

    /// Fires the kill token and waits for the task to end.
    async fn kill_and_wait(&mut self) {
        self.kill.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// A view leader and storage servers running as tasks of this process.
pub struct LocalCluster {
    pub viewleader_addr: String,
    options: ClusterOptions,
    /// The world of every node and client: real, in `options.cluster`.
    env: net::Env,
    viewleader_shutdown: CancellationToken,
    viewleader_task: JoinHandle<Result<()>>,
    pub servers: Vec<LocalServer>,
}

impl LocalCluster {
    /// Starts a view leader and `servers` storage servers, and waits until all are in the view.
    pub async fn start(servers: usize, options: ClusterOptions) -> Result<Self> {
        options.viewleader.validate()?;
        let env = net::Env::real().in_cluster(&options.cluster)?;
        let listener = env
            .bind("127.0.0.1", Some(0), net::VIEWLEADER_PORTS)
            .await?;
        let viewleader_addr = listener.local_addr()?;
        let viewleader_shutdown = CancellationToken::new();
        let viewleader_task = tokio::spawn(viewleader::run(
            listener,
            options.viewleader.clone(),
            env.clone(),
            viewleader_shutdown.clone(),
        ));
        let mut cluster = Self {
            viewleader_addr,
            options,
            env,
            viewleader_shutdown,
            viewleader_task,
            servers: Vec::new(),
        };
        for _ in 0..servers {
            cluster.add_server().await?;
        }
        let wanted = servers;
        cluster
            .wait_for_view(Duration::from_secs(10), |view| {
                view.servers.len() == wanted && !view.rebalancing
            })
            .await?;
        Ok(cluster)
    }

    /// Starts one more storage server, with a fresh data dir unless in memory; returns its
    /// address.
    pub async fn add_server(&mut self) -> Result<String> {
        let env = self.env.clone();
        let listener = env.bind("127.0.0.1", Some(0), net::SERVER_PORTS).await?;
        let addr = listener.local_addr()?;
        let data_dir = if self.options.in_memory {
            None
        } else {
            Some(
                tempfile::Builder::new()
                    .prefix("ringleader-server-")
                    .tempdir()
                    .map_err(|err| {
                        Error::Internal(format!("cannot create a temporary data dir: {err}"))
                    })?,
            )
        };
        let storage = match &data_dir {
            Some(dir) => Storage::data_dir(dir.path(), self.options.log)?,
            None => Storage::Memory,
        };
        let mut server = LocalServer {
            addr: addr.clone(),
            shutdown: CancellationToken::new(),
            kill: CancellationToken::new(),
            task: None,
            data_dir,
        };
        Self::launch(
            &self.options,
            &self.viewleader_addr,
            &mut server,
            listener,
            env,
            storage,
        )?;
        self.servers.push(server);
        Ok(addr)
    }

    /// Starts `server`'s task on `listener` with `storage`; returns the keys it recovered.
    fn launch(
        options: &ClusterOptions,
        viewleader: &str,
        server: &mut LocalServer,
        listener: Box<dyn net::Listener>,
        env: net::Env,
        storage: Storage,
    ) -> Result<u64> {
        let server_options = ServerOptions {
            viewleader: viewleader.to_string(),
            advertise: None,
            heartbeat_interval_ms: options.viewleader.heartbeat_interval_ms,
            rpc_timeout_ms: options.rpc_timeout_ms,
            tx_timeout_ms: options.tx_timeout_ms,
            faults: options.faults,
            planted_bug: None,
        };
        let started = server::start(&*listener, server_options, env, storage)?;
        let recovered = started.snapshot()?.keys;
        server.shutdown = CancellationToken::new();
        server.kill = CancellationToken::new();
        server.task = Some(tokio::spawn(server::serve(
            started,
            listener,
            server.shutdown.clone(),
            server.kill.clone(),
        )));
        Ok(recovered)
    }

    /// Kills every server at once, as `kill -9` would (the kill token: no goodbye, no handoff),
    /// and waits for their tasks to end. They stay listed, with their data dirs, until
    /// [`LocalCluster::restart_server`] or [`LocalCluster::stop`].
    pub async fn kill_all(&mut self) {
        for server in &self.servers {
            server.kill.cancel();
        }
        for server in &mut self.servers {
            server.kill_and_wait().await;
        }
    }

    /// Starts the server at `addr` again at the same address, from its data dir (killing it
    /// first, as `kill -9` would, if it still runs); returns how many keys it recovered (none in
    /// memory). It comes back under its old member id if its lease still holds; otherwise the
    /// view leader denies that id and it rejoins under a new one, keeping its keys.
    pub async fn restart_server(&mut self, addr: &str) -> Result<u64> {
        let index = self
            .servers
            .iter()
            .position(|s| s.addr == addr)
            .ok_or_else(|| errinput!("no local server at {addr}"))?;
        self.servers[index].kill_and_wait().await;
        let port: u16 = addr
            .rsplit(':')
            .next()
            .and_then(|port| port.parse().ok())
            .ok_or_else(|| Error::Internal(format!("no port in {addr:?}")))?;
        let env = self.env.clone();
        let deadline = Instant::now() + Duration::from_millis(RESTART_WAIT_MS);
        // The engine (and with it the data dir's lock) goes when the last reference to the old
        // server does, a moment after its task ends.
        let (listener, storage) = loop {
            let attempt = async {
                let listener = env.bind("127.0.0.1", Some(port), net::SERVER_PORTS).await?;
                let storage = match self.servers[index].data_dir() {
                    Some(dir) => Storage::data_dir(dir, self.options.log)?,
                    None => Storage::Memory,
                };
                Ok::<_, Error>((listener, storage))
            };
            match attempt.await {
                Ok(opened) => break opened,
                Err(err) if Instant::now() >= deadline => {
                    return Err(Error::Timeout(format!(
                        "cannot restart {addr} within {RESTART_WAIT_MS} ms: {err}"
                    )))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(POLL_MS)).await,
            }
        };
        Self::launch(
            &self.options,
            &self.viewleader_addr,
            &mut self.servers[index],
            listener,
            env,
            storage,
        )
    }

    /// Stops the server at `addr` at once: no goodbye, it simply stops answering and beating, as
    /// a crashed process would. It leaves the cluster for good: its data dir is removed.
    pub async fn kill_server(&mut self, addr: &str) -> Result<()> {
        let mut server = self.take_server(addr)?;
        server.kill_and_wait().await;
        Ok(())
    }

    /// Kills the server at `addr` without waiting for its task (it stays listed in `servers`
    /// until [`LocalCluster::stop`]); for callers that only hold a shared reference.
    pub fn kill_by_addr(&self, addr: &str) -> Result<()> {
        let server = self
            .servers
            .iter()
            .find(|s| s.addr == addr)
            .ok_or_else(|| errinput!("no local server at {addr}"))?;
        server.kill.cancel();
        Ok(())
    }

    /// Stops the server at `addr` gracefully: it leaves the view and hands its keys over first;
    /// then its data dir is removed.
    pub async fn stop_server(&mut self, addr: &str) -> Result<()> {
        let server = self.take_server(addr)?;
        server.shutdown.cancel();
        if let Some(task) = server.task {
            let _ = task.await;
        }
        Ok(())
    }

    fn take_server(&mut self, addr: &str) -> Result<LocalServer> {
        let index = self
            .servers
            .iter()
            .position(|s| s.addr == addr)
            .ok_or_else(|| errinput!("no local server at {addr}"))?;
        Ok(self.servers.remove(index))
    }

    /// A client of this cluster.
    pub fn client(&self, wait_ms: u64) -> Client {
        Client::with_env(
            ClientOptions {
                viewleader: self.viewleader_addr.clone(),
                timeout_ms: self.options.rpc_timeout_ms,
                wait_ms,
            },
            self.env.clone(),
        )
    }

    /// Polls the view until `done` holds, for at most `timeout`.
    pub async fn wait_for_view(
        &self,
        timeout: Duration,
        done: impl Fn(&View) -> bool,
    ) -> Result<View> {
        let client = self.client(0);
        let deadline = Instant::now() + timeout;
        loop {
            let view = client.query_servers().await;
            if let Ok(view) = &view {
                if done(view) {
                    return Ok(view.clone());
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout(format!(
                    "the cluster did not reach the expected view within {} ms (last: {view:?})",
                    timeout.as_millis()
                )));
            }
            tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
        }
    }

    /// Stops every server (at once: there is nobody left to hand keys to) and the view leader,
    /// and removes the servers' data dirs.
    pub async fn stop(mut self) {
        self.kill_all().await;
        self.viewleader_shutdown.cancel();
        let _ = self.viewleader_task.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Value;

    const KEYS: usize = 20;

    fn options(in_memory: bool) -> ClusterOptions {
        ClusterOptions {
            in_memory,
            ..ClusterOptions::default()
        }
    }

    async fn write_keys(cluster: &LocalCluster) {
        let client = cluster.client(5_000);
        for i in 0..KEYS {
            client
                .setr(&format!("k{i}"), Value::Text(format!("v{i}")))
                .await
                .unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn servers_killed_at_once_restart_from_their_data_dirs_and_stop_removes_them() {
        let mut cluster = LocalCluster::start(3, options(false)).await.unwrap();
        write_keys(&cluster).await;
        let dirs: Vec<std::path::PathBuf> = cluster
            .servers
            .iter()
            .map(|s| s.data_dir().expect("a durable server").to_path_buf())
            .collect();
        let before = cluster.client(0).query_servers().await.unwrap();
        cluster.kill_all().await;
        assert!(cluster.servers.iter().all(|s| !s.is_running()));
        let addrs: Vec<String> = cluster.servers.iter().map(|s| s.addr.clone()).collect();
        for addr in &addrs {
            // Three servers: each holds a copy of every key.
            assert_eq!(cluster.restart_server(addr).await.unwrap(), KEYS as u64);
        }
        let client = cluster.client(5_000);
        for i in 0..KEYS {
            let found = client.getr(&format!("k{i}")).await.unwrap().unwrap();
            assert_eq!(found.value.value, Value::Text(format!("v{i}")));
        }
        let after = client.query_servers().await.unwrap();
        assert_eq!(
            after.servers.len(),
            before.servers.len(),
            "{before:?} / {after:?}"
        );
        cluster.stop().await;
        for dir in dirs {
            assert!(!dir.exists(), "{} was not removed", dir.display());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_in_memory_server_restarts_empty() {
        let mut cluster = LocalCluster::start(3, options(true)).await.unwrap();
        write_keys(&cluster).await;
        assert!(cluster.servers[0].data_dir().is_none());
        let addr = cluster.servers[0].addr.clone();
        assert_eq!(cluster.restart_server(&addr).await.unwrap(), 0);
        cluster.stop().await;
    }
}
