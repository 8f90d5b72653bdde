//! `status`: the whole cluster at a glance, in the manner of `etcdctl endpoint status
//! --cluster`. The view leader's view (epoch, settled epoch, whether it rebalances) and, asked
//! of every server in it at once, what each reports of itself: the epoch it has seen, the epoch
//! it finished rebalancing for, keys held, transactions pending, copies sent; beside each, its
//! share of the ring as primary, computed from the view.
//!
//! Each server's rate of operations comes from two readings of its request counter
//! [`RATE_SAMPLE_MS`] apart (so `status` takes that long); how far its rebalance has come is the
//! copies it has sent and those its plan still has to send.
//!
//! Left out: a rate over a longer window (that is `/metrics` and a scraper's job).

use futures::future::join_all;

use super::Client;
use crate::error::Result;
use crate::rpc::message::ServerStatus;
use crate::types::{ServerInfo, View};

/// The cluster as [`Client::cluster_status`] found it.
#[derive(Debug)]
pub struct ClusterStatus {
    /// The view the servers come from.
    pub view: View,
    /// Every server of the view, sorted by id.
    pub servers: Vec<ServerStatusOf>,
}

/// Time between the two readings of each server's request counter, in ms: long enough that a
/// busy server's rate is not noise, short enough for a command a person waits on.
pub const RATE_SAMPLE_MS: u64 = 1_000;

/// One server: its share of the ring and what it said of itself.
#[derive(Debug)]
pub struct ServerStatusOf {
    pub server: ServerInfo,
    /// The share of the key space (0 to 1) for which it is the primary.
    pub primary_share: f64,
    /// The second reading of its status (the first, if the second failed).
    pub status: Result<ServerStatus>,
    /// Requests it answered per second between the two readings (ours excluded), when both
    /// came back from the same process.
    pub ops_per_s: Option<f64>,
}

impl Client {
    /// The view, fetched fresh, and the status of every server in it, asked all at once.
    pub async fn cluster_status(&self) -> Result<ClusterStatus> {
        let view = self.view(true).await?;
        let shares = view.ring.primary_shares();
        let share_of = |id: &str| {
            shares
                .iter()
                .find(|(server, _)| server.as_str() == id)
                .map_or(0.0, |(_, share)| *share)
        };
        let read_all = || join_all(view.view.servers.iter().map(|s| self.status(&s.addr)));
        let first = read_all().await;
        let started = self.servers.now();
        tokio::time::sleep(std::time::Duration::from_millis(RATE_SAMPLE_MS)).await;
        let second = read_all().await;
        let elapsed_s = self.servers.now().duration_since(started).as_secs_f64();
        let servers = view
            .view
            .servers
            .iter()
            .zip(first.into_iter().zip(second))
            .map(|(server, (first, second))| {
                let ops_per_s = match (&first, &second) {
                    (Ok(a), Ok(b)) if a.server_id == b.server_id && elapsed_s > 0.0 => {
                        // The second reading's own request is counted in it.
                        let served = b.requests.saturating_sub(a.requests).saturating_sub(1);
                        Some(served as f64 / elapsed_s)
                    }
                    _ => None,
                };
                ServerStatusOf {
                    server: server.clone(),
                    primary_share: share_of(&server.id),
                    status: second.or(first),
                    ops_per_s,
                }
            })
            .collect();
        Ok(ClusterStatus {
            view: view.view.clone(),
            servers,
        })
    }
}
