//! The Redis driver: SET and GET on one node over multiplexed connections (requests from many
//! tasks pipelined on each). Nothing is replicated: this is the ceiling of one in-memory process
//! answering on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use ringleader::error::{Error, Result};
use ringleader::tools::bench::Driver;

/// Connections the driver spreads its requests over.
pub const REDIS_CONNECTIONS_MAX: usize = 8;

pub struct Redis {
    connections: Vec<MultiplexedConnection>,
    next: AtomicUsize,
}

fn failed(err: redis::RedisError) -> Error {
    Error::Unreachable(format!("redis: {err}"))
}

impl Redis {
    pub async fn connect(addr: &str, connections: usize) -> Result<Self> {
        let client = redis::Client::open(format!("redis://{addr}/"))
            .map_err(|err| Error::InvalidRequest(format!("redis address {addr}: {err}")))?;
        let mut pool = Vec::new();
        for _ in 0..connections.clamp(1, REDIS_CONNECTIONS_MAX) {
            pool.push(
                client
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(failed)?,
            );
        }
        Ok(Redis {
            connections: pool,
            next: AtomicUsize::new(0),
        })
    }

    fn connection(&self) -> MultiplexedConnection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.connections.len();
        self.connections[i].clone()
    }
}

impl Driver for Redis {
    async fn write(&self, key: &str, value: &str) -> Result<()> {
        self.connection()
            .set::<_, _, ()>(key, value)
            .await
            .map_err(failed)
    }

    async fn read(&self, key: &str) -> Result<bool> {
        let value: Option<Vec<u8>> = self.connection().get(key).await.map_err(failed)?;
        Ok(value.is_some())
    }
}
