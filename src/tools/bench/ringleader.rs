//! The ringleader driver: the load generator's operations through the library [`Client`], the
//! same calls the `client` binary makes.

use std::collections::HashMap;
use std::sync::Arc;

use super::Driver;
use crate::client::Client;
use crate::error::{Error, Result};
use crate::ring::Ring;
use crate::rpc::message::{ServerReply, ServerRequest};
use crate::server::mover::{TRANSFER_BATCH_BYTES_MAX, TRANSFER_BATCH_KEYS_MAX};
use crate::types::{Key, ServerId, ServerInfo, Space, Value, Versioned, View};

/// Bytes an entry of a transfer takes beyond its key and value (version, lengths, tags).
const TRANSFER_ENTRY_OVERHEAD_BYTES: usize = 16;

/// Which ringleader operations a driver issues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `setr` and linearizable `getr` (majority read with write-back).
    Replicated,
    /// `setr` and `getr --stale` (the first live replica in ring order).
    ReplicatedStale,
    /// Unreplicated `set` and `get` on the server at this address.
    Single(String),
}

impl Mode {
    /// The system name in tables and JSON lines.
    pub fn system_name(&self) -> &'static str {
        match self {
            Mode::Replicated => "ringleader",
            Mode::ReplicatedStale => "ringleader-stale",
            Mode::Single(_) => "ringleader-single",
        }
    }
}

pub struct Ringleader {
    client: Arc<Client>,
    mode: Mode,
}

impl Ringleader {
    pub fn new(client: Arc<Client>, mode: Mode) -> Self {
        Ringleader { client, mode }
    }
}

impl Driver for Ringleader {
    async fn write(&self, key: &str, value: &str) -> Result<()> {
        let value = Value::Text(value.to_string());
        match &self.mode {
            Mode::Single(addr) => self.client.set(addr, key, value).await.map(|_| ()),
            Mode::Replicated | Mode::ReplicatedStale => {
                self.client.setr(key, value).await.map(|_| ())
            }
        }
    }

    async fn read(&self, key: &str) -> Result<bool> {
        match &self.mode {
            Mode::Single(addr) => self
                .client
                .get(addr, Space::Local, key)
                .await
                .map(|v| v.is_some()),
            Mode::Replicated => self.client.getr(key).await.map(|v| v.is_some()),
            Mode::ReplicatedStale => self.client.getr_stale(key).await.map(|v| v.is_some()),
        }
    }
}

/// Puts every key straight onto its replicas in `view` at version 1, in batches (a bulk import,
/// as rebalancing transfers keys, not a 2PC per key).
pub async fn bulk_load(
    client: &Client,
    view: &View,
    ring: &Ring,
    keys: &[Key],
    value: &Value,
) -> Result<()> {
    // Per replica: the entries waiting and their bytes.
    let mut batches: HashMap<ServerId, (Vec<(Key, Versioned)>, usize)> = Default::default();
    let entry_bytes = value.len_bytes() + TRANSFER_ENTRY_OVERHEAD_BYTES;
    let member = |id: &str| {
        view.servers
            .iter()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::Internal("replica not in view".into()))
    };
    for key in keys {
        for id in ring.replicas(key) {
            let to = member(id)?;
            let (batch, bytes) = batches.entry(id.clone()).or_default();
            batch.push((
                key.clone(),
                Versioned {
                    value: value.clone(),
                    version: 1,
                },
            ));
            *bytes += key.len() + entry_bytes;
            // Within the limits rebalancing keeps to, so a frame is never too large.
            if batch.len() >= TRANSFER_BATCH_KEYS_MAX / 2 || *bytes >= TRANSFER_BATCH_BYTES_MAX {
                let entries = std::mem::take(batch);
                *bytes = 0;
                transfer(client, to, view.epoch, entries).await?;
            }
        }
    }
    for (id, (entries, _)) in batches {
        if !entries.is_empty() {
            transfer(client, member(&id)?, view.epoch, entries).await?;
        }
    }
    Ok(())
}

async fn transfer(
    client: &Client,
    to: &ServerInfo,
    epoch: u64,
    entries: Vec<(Key, Versioned)>,
) -> Result<()> {
    let request = ServerRequest::Transfer {
        epoch,
        server_id: to.id.clone(),
        entries,
    };
    match client.server_call(&to.addr, request).await? {
        ServerReply::Transferred { .. } => Ok(()),
        other => Err(Error::Protocol(format!(
            "unexpected reply to transfer: {other:?}"
        ))),
    }
}
