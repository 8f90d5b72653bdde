//! The etcd v3 driver: puts and ranges over gRPC, the way etcd's own clients talk to it. Reads
//! are linearizable (a quorum read through the leader's read index) or serializable (the member
//! answers from its own state, possibly stale).

use std::sync::atomic::{AtomicUsize, Ordering};

use etcd_client::{Client, GetOptions, KvClient};
use ringleader::error::{Error, Result};
use ringleader::tools::bench::Driver;

/// gRPC connections the driver spreads its requests over (each is one HTTP/2 connection that
/// multiplexes many requests, balanced across the endpoints).
pub const ETCD_CONNECTIONS_MAX: usize = 8;

pub struct Etcd {
    clients: Vec<KvClient>,
    next: AtomicUsize,
    serializable: bool,
}

impl Etcd {
    pub async fn connect(
        endpoints: &[String],
        connections: usize,
        serializable: bool,
    ) -> Result<Self> {
        let mut clients = Vec::new();
        for _ in 0..connections.clamp(1, ETCD_CONNECTIONS_MAX) {
            let client = Client::connect(endpoints, None)
                .await
                .map_err(|err| Error::Unreachable(format!("etcd at {endpoints:?}: {err}")))?;
            clients.push(client.kv_client());
        }
        Ok(Etcd {
            clients,
            next: AtomicUsize::new(0),
            serializable,
        })
    }

    fn client(&self) -> KvClient {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }
}

fn failed(err: etcd_client::Error) -> Error {
    Error::Unreachable(format!("etcd: {err}"))
}

impl Driver for Etcd {
    async fn write(&self, key: &str, value: &str) -> Result<()> {
        self.client()
            .put(key, value, None)
            .await
            .map(|_| ())
            .map_err(failed)
    }

    async fn read(&self, key: &str) -> Result<bool> {
        let options = self
            .serializable
            .then(|| GetOptions::new().with_serializable());
        let reply = self.client().get(key, options).await.map_err(failed)?;
        Ok(!reply.kvs().is_empty())
    }
}
