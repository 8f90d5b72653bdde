//! A whole cluster inside one process: a view leader and storage servers on loopback ports, each
//! with its own shutdown trigger. The demo and the load generator use it so that one command
//! works from a fresh clone with nothing else built; the real-process tests use the binaries.

use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientOptions};
use crate::errinput;
use crate::error::{Error, Result};
use crate::faults::ReplyFaults;
use crate::net;
use crate::server::{self, ServerOptions};
use crate::types::View;
use crate::viewleader::{self, ViewLeaderOptions};

/// Pause between polls while waiting for the cluster to reach a state.
pub const POLL_MS: u64 = 20;

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
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            viewleader: ViewLeaderOptions::default(),
            rpc_timeout_ms: server::RPC_TIMEOUT_MS_DEFAULT,
            tx_timeout_ms: server::TX_TIMEOUT_MS_DEFAULT,
            faults: ReplyFaults::default(),
            cluster: net::CLUSTER_DEFAULT.to_string(),
        }
    }
}

/// One storage server of a [`LocalCluster`].
pub struct LocalServer {
    pub addr: String,
    shutdown: CancellationToken,
    kill: CancellationToken,
    task: JoinHandle<Result<()>>,
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

    /// Starts one more storage server; returns its address.
    pub async fn add_server(&mut self) -> Result<String> {
        let env = self.env.clone();
        let listener = env.bind("127.0.0.1", Some(0), net::SERVER_PORTS).await?;
        let addr = listener.local_addr()?;
        let options = ServerOptions {
            viewleader: self.viewleader_addr.clone(),
            advertise: None,
            heartbeat_interval_ms: self.options.viewleader.heartbeat_interval_ms,
            rpc_timeout_ms: self.options.rpc_timeout_ms,
            tx_timeout_ms: self.options.tx_timeout_ms,
            faults: self.options.faults,
            planted_bug: None,
        };
        let shutdown = CancellationToken::new();
        let kill = CancellationToken::new();
        let task = tokio::spawn(server::run(
            listener,
            options,
            env,
            server::Storage::Memory,
            shutdown.clone(),
            kill.clone(),
        ));
        self.servers.push(LocalServer {
            addr: addr.clone(),
            shutdown,
            kill,
            task,
        });
        Ok(addr)
    }

    /// Stops the server at `addr` at once: no goodbye, it simply stops answering and beating, as
    /// a crashed process would.
    pub async fn kill_server(&mut self, addr: &str) -> Result<()> {
        let server = self.take_server(addr)?;
        server.kill.cancel();
        let _ = server.task.await;
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

    /// Stops the server at `addr` gracefully: it leaves the view and hands its keys over first.
    pub async fn stop_server(&mut self, addr: &str) -> Result<()> {
        let server = self.take_server(addr)?;
        server.shutdown.cancel();
        let _ = server.task.await;
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

    /// Stops every server (at once: there is nobody left to hand keys to) and the view leader.
    pub async fn stop(self) {
        for server in &self.servers {
            server.kill.cancel();
        }
        for server in self.servers {
            let _ = server.task.await;
        }
        self.viewleader_shutdown.cancel();
        let _ = self.viewleader_task.await;
    }
}
