//! `locate`: where a key lives. The key's replicas in the current view, in ring order (primary
//! first), and what each one holds of it: its version, no copy, or why it did not answer. An
//! operator's question, so it takes a fresh view and asks every replica, rather than stopping
//! at the first that has the key as `getr --stale` does.
//!
//! Left out: servers outside the replica set that still hold a copy (one that rebalancing has
//! not dropped yet); the view says where a key belongs, not every place it was.

use super::Client;
use crate::error::Result;
use crate::types::{check_key, ServerInfo, Version};

/// A key's place in the cluster, as [`Client::locate`] found it.
#[derive(Debug)]
pub struct Location {
    /// The epoch of the view the replicas come from.
    pub epoch: u64,
    /// Whether that view was still being rebalanced: a replica may not hold its copy yet.
    pub rebalancing: bool,
    /// The key's replicas in ring order, primary first.
    pub replicas: Vec<ReplicaCopy>,
}

/// What one replica holds of a key.
#[derive(Debug)]
pub struct ReplicaCopy {
    pub replica: ServerInfo,
    /// The version it holds (`None`: no copy) and the epoch it is at, or why it did not say.
    pub held: Result<(Option<Version>, u64)>,
}

impl Client {
    /// Where `key` lives: its replicas in a freshly fetched view, and the version each holds.
    pub async fn locate(&self, key: &str) -> Result<Location> {
        check_key(key)?;
        let view = self.view(true).await?;
        let replicas = view.replicas_borrowed(key);
        let answers = self.read_each(&replicas, key).await;
        Ok(Location {
            epoch: view.view.epoch,
            rebalancing: view.view.rebalancing,
            replicas: answers
                .into_iter()
                .map(|(replica, answer)| ReplicaCopy {
                    replica: replica.clone(),
                    held: answer.map(|(value, epoch)| (value.map(|v| v.version), epoch)),
                })
                .collect(),
        })
    }
}
