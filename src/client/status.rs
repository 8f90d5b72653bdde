//! `status`: the whole cluster at a glance, in the manner of `etcdctl endpoint status
//! --cluster`. The view leader's view (epoch, settled epoch, whether it rebalances) and, asked
//! of every server in it at once, what each reports of itself: the epoch it has seen, the epoch
//! it finished rebalancing for, keys held, transactions pending, copies sent; beside each, its
//! share of the ring as primary, computed from the view.
//!
//! Left out: a rate of operations per server and how many copies a rebalance still has to send.
//! A server reports neither today (its `Status` answer carries counters since it started, not
//! rates or plans); `/metrics` has the request counters for a scraper to turn into rates.

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

/// One server: its share of the ring and what it said of itself.
#[derive(Debug)]
pub struct ServerStatusOf {
    pub server: ServerInfo,
    /// The share of the key space (0 to 1) for which it is the primary.
    pub primary_share: f64,
    pub status: Result<ServerStatus>,
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
        let servers = join_all(view.view.servers.iter().map(|server| async move {
            ServerStatusOf {
                server: server.clone(),
                primary_share: share_of(&server.id),
                status: self.status(&server.addr).await,
            }
        }))
        .await;
        Ok(ClusterStatus {
            view: view.view.clone(),
            servers,
        })
    }
}
