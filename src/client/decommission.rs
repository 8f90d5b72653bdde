//! `decommission`: a server asked to leave from anywhere, as SIGTERM makes it leave on its own
//! host. The server leaves the view, hands every key to its new owners while still answering,
//! answers with how the handoff went, and stops. Meanwhile the caller looks at the server's
//! `Status` (copies sent, keys held) to show progress; at the end it waits for the server to stop
//! answering and checks that the view no longer lists it.
//!
//! Left out: cancelling a decommission once asked (the server has left the view by then), and a
//! count of copies still to send before the handoff starts (a server reports copies sent).

use std::time::Duration;

use super::Client;
use crate::error::{Error, Result};
use crate::rpc::message::{ServerReply, ServerRequest};

/// Pause between two looks at a leaving server.
pub const DECOMMISSION_POLL_MS: u64 = 250;
/// Longest wait for a decommissioned server's answer and stop: its handoff is bounded by the
/// server's `LEAVE_HANDOFF_MS_MAX` (30 s, `crate::server::mover`; `tests/decommission.rs` holds
/// the two in step); the rest is for leaving the view and stopping.
pub const DECOMMISSION_WAIT_MS: u64 = 45_000;

/// How far a decommission has come.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub server_id: String,
    /// Keys the server held when asked.
    pub keys_at_start: u64,
    /// Keys it holds now.
    pub keys_held: u64,
    /// Copies its new owners have stored since it was asked.
    pub copies_sent: u64,
    /// Copies it offered (known once the handoff is over).
    pub copies_offered: Option<u64>,
    /// Whether every new owner acknowledged its share (known once the handoff is over).
    pub complete: Option<bool>,
}

impl Client {
    /// Asks the server at `addr` to leave and hand its keys over; calls `progress` after each
    /// look at it, and returns the handoff once the server has stopped and left the view.
    pub async fn decommission(
        &self,
        addr: &str,
        mut progress: impl FnMut(&Handoff),
    ) -> Result<Handoff> {
        let before = self.status(addr).await?;
        let mut handoff = Handoff {
            server_id: before.server_id.clone(),
            keys_at_start: before.keys,
            keys_held: before.keys,
            copies_sent: 0,
            copies_offered: None,
            complete: None,
        };
        progress(&handoff);
        let request = ServerRequest::Decommission {
            server_id: before.server_id.clone(),
        };
        let wait = Duration::from_millis(DECOMMISSION_WAIT_MS);
        let answer = self.servers.call(addr, &request, wait);
        tokio::pin!(answer);
        let answer = loop {
            tokio::select! {
                answer = &mut answer => break answer?,
                _ = tokio::time::sleep(Duration::from_millis(DECOMMISSION_POLL_MS)) => {
                    if let Ok(now) = self.status(addr).await {
                        if now.server_id == before.server_id {
                            handoff.keys_held = now.keys;
                            handoff.copies_sent = now.copies_sent.saturating_sub(before.copies_sent);
                            progress(&handoff);
                        }
                    }
                }
            }
        };
        let ServerReply::Decommissioned {
            offered,
            sent,
            complete,
        } = answer
        else {
            return Err(Error::Protocol(format!(
                "unexpected reply to decommission: {answer:?}"
            )));
        };
        handoff.copies_sent = sent;
        handoff.copies_offered = Some(offered);
        handoff.complete = Some(complete);
        progress(&handoff);
        self.servers.forget(addr);
        let stopped = async {
            loop {
                match self.status(addr).await {
                    // Another process at the address: the one asked has stopped.
                    Ok(now) if now.server_id != before.server_id => return Ok(()),
                    Ok(_) => {}
                    Err(Error::Unreachable(_)) => return Ok(()),
                    Err(err) if !err.is_retryable() => return Err(err),
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(DECOMMISSION_POLL_MS)).await;
            }
        };
        tokio::time::timeout(wait, stopped).await.map_err(|_| {
            Error::Timeout(format!(
                "{addr} still answers {DECOMMISSION_WAIT_MS} ms after its handoff"
            ))
        })??;
        let view = self.view(true).await?;
        if view.view.servers.iter().any(|s| s.id == before.server_id) {
            return Err(Error::Internal(format!(
                "{addr} stopped but the view still lists {}; it expires after its lease",
                before.server_id
            )));
        }
        Ok(handoff)
    }
}
