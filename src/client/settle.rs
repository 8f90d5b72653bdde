//! `wait_settled`: waits until the cluster has finished rebalancing, as a script does before it
//! reads back what a membership change moved. Settled means the view leader's view is not
//! rebalancing and every server in that view answers that it has finished rebalancing for that
//! very epoch. A server of the view that does not answer (crashed, cut off, stopped but not yet
//! expired) keeps the cluster unsettled: its keys cannot be known to be in place.
//!
//! Each look asks the view leader for a fresh view and every server in it for its status, all
//! at once, [`SETTLE_POLL_MS`] apart; the caller hears after every look how far it has come
//! (servers done, copies sent and still to send), and the wait gives up at its deadline naming
//! what was still rebalancing.
//!
//! Left out: the rate of operations of `status` (two readings a second apart: a look here must
//! be quick), and any wait on the view leader's own group (a view leader without a leader makes
//! the looks fail, and the wait goes on until its deadline).

use std::collections::BTreeMap;
use std::time::Duration;

use futures::future::join_all;

use super::Client;
use crate::error::{Error, Result};
use crate::rpc::message::ServerStatus;
use crate::types::{Epoch, ServerId, ServerInfo};

/// Pause between two looks at the cluster while waiting for it to settle.
pub const SETTLE_POLL_MS: u64 = 250;

/// How far the cluster is from settled, as one look found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settling {
    /// The view leader's epoch.
    pub epoch: Epoch,
    /// Whether the view leader says the view is still rebalancing.
    pub viewleader_rebalancing: bool,
    /// The servers of the view.
    pub servers: Vec<ServerInfo>,
    /// Those among them that answered that they finished rebalancing for `epoch`.
    pub servers_done: usize,
    /// Copies the servers sent since the wait began (summed over the servers that answered).
    pub copies_sent: u64,
    /// Copies their running rebalances still have to send (summed likewise).
    pub copies_to_send: u64,
    /// For each server not done: its address and why (its rebalanced epoch, or that it did not
    /// answer).
    pub waiting_on: Vec<(String, String)>,
}

impl Settling {
    /// Whether this look found the cluster settled.
    pub fn settled(&self) -> bool {
        !self.viewleader_rebalancing && self.waiting_on.is_empty()
    }

    /// What is still rebalancing, in words, for a message.
    pub fn describe_waiting(&self) -> String {
        let mut parts = Vec::new();
        if self.viewleader_rebalancing {
            parts.push("the view leader reports the view rebalancing".to_string());
        }
        parts.extend(
            self.waiting_on
                .iter()
                .map(|(addr, why)| format!("{addr} {why}")),
        );
        parts.join("; ")
    }
}

impl Client {
    /// Waits until the cluster is settled (see the module), looking at it every
    /// [`SETTLE_POLL_MS`] and calling `progress` after each look; gives up after `wait` with
    /// [`Error::Timeout`] naming the epoch and what was still rebalancing. A look under way at
    /// the deadline is finished first, so the wait may run over by one call's timeout (the
    /// servers are asked at once, so one timeout in all). An error no wait can mend (a wrong
    /// cluster, a missing secret) ends it at once.
    pub async fn wait_settled(
        &self,
        wait: Duration,
        mut progress: impl FnMut(&Settling),
    ) -> Result<Settling> {
        let started = self.env.now();
        let deadline = started + wait;
        // Each server's copies_sent at the first look: what it sent before the wait is not
        // progress of this wait.
        let mut sent_before: BTreeMap<ServerId, u64> = BTreeMap::new();
        let mut last: Result<Settling>;
        loop {
            let look = self.look_settling(&mut sent_before).await;
            match &look {
                Ok(settling) => {
                    progress(settling);
                    if settling.settled() {
                        return Ok(settling.clone());
                    }
                }
                // A wrong cluster, a missing secret: waiting cannot help.
                Err(err) if !err.is_retryable() => return look,
                Err(_) => {}
            }
            last = look;
            if self.env.now() >= deadline {
                break;
            }
            let pause = Duration::from_millis(SETTLE_POLL_MS);
            tokio::time::sleep_until(deadline.min(self.env.now() + pause)).await;
        }
        let waited_ms = self
            .env
            .now()
            .saturating_duration_since(started)
            .as_millis();
        Err(match last {
            Ok(settling) => Error::Timeout(format!(
                "the cluster has not settled after waiting {waited_ms} ms: at epoch {}, {} of {} \
                 servers finished rebalancing; still rebalancing: {}. Wait longer (--wait-ms), \
                 or look at `client status`",
                settling.epoch,
                settling.servers_done,
                settling.servers.len(),
                settling.describe_waiting()
            )),
            Err(err) => Error::Timeout(format!(
                "the cluster has not settled after waiting {waited_ms} ms: the last look at it \
                 failed: {err}"
            )),
        })
    }

    /// One look: a fresh view, and every server's status in it, asked all at once.
    async fn look_settling(&self, sent_before: &mut BTreeMap<ServerId, u64>) -> Result<Settling> {
        let view = self.view(true).await?;
        let view = &view.view;
        let answers: Vec<Result<ServerStatus>> =
            join_all(view.servers.iter().map(|s| self.status(&s.addr))).await;
        let mut settling = Settling {
            epoch: view.epoch,
            viewleader_rebalancing: view.rebalancing,
            servers: view.servers.clone(),
            servers_done: 0,
            copies_sent: 0,
            copies_to_send: 0,
            waiting_on: Vec::new(),
        };
        for (server, answer) in view.servers.iter().zip(answers) {
            match answer {
                Ok(status) if status.server_id == server.id => {
                    let before = *sent_before
                        .entry(server.id.clone())
                        .or_insert(status.copies_sent);
                    settling.copies_sent = settling
                        .copies_sent
                        .saturating_add(status.copies_sent.saturating_sub(before));
                    settling.copies_to_send = settling
                        .copies_to_send
                        .saturating_add(status.copies_to_send);
                    if status.rebalanced_epoch == view.epoch {
                        settling.servers_done += 1;
                    } else {
                        settling.waiting_on.push((
                            server.addr.clone(),
                            format!(
                                "(rebalanced for epoch {}, {} copies to send)",
                                status.rebalanced_epoch, status.copies_to_send
                            ),
                        ));
                    }
                }
                Ok(status) => settling.waiting_on.push((
                    server.addr.clone(),
                    format!(
                        "(another process answers there: {}, not {})",
                        status.server_id, server.id
                    ),
                )),
                Err(err) => settling
                    .waiting_on
                    .push((server.addr.clone(), format!("(no answer: {err})"))),
            }
        }
        Ok(settling)
    }
}
