//! Calling another member, around a cut link. Rebalancing and termination must not stall because
//! one server-to-server link is down while both ends still reach everyone else: when a direct
//! call fails to connect or times out, the same request goes through another member of the view
//! ([`ServerRequest::Relay`]), which calls the target and hands back the target's own reply. An
//! acknowledgement that comes back is therefore always the target's; nothing is reported done
//! on a relay's word.
//!
//! # Deliberately left out
//! * Relays of relays: a relay calls the target directly, so a target that only a chain of
//!   servers can reach stays unreachable (the view leader's lease decides about it).
//! * Choosing relays by measured health: they are taken in view order, rotating with the
//!   attempt, so successive attempts try different ones without any randomness.

use std::time::Duration;

use super::node::StorageServer;
use crate::error::{Error, Result};
use crate::rpc::message::{ServerReply, ServerRequest};
use crate::types::ServerInfo;

/// Other members tried as relays after one failed direct call.
pub const RELAYS_PER_CALL_MAX: usize = 2;

impl StorageServer {
    /// Calls member `to` with `request`; if the direct call cannot connect or times out, tries
    /// up to [`RELAYS_PER_CALL_MAX`] other members of the current view as relays (the `attempt`
    /// number rotates which). A relay's own failure to reach `to` counts as `to` unreachable.
    pub(super) async fn call_member(
        &self,
        to: &ServerInfo,
        request: &ServerRequest,
        attempt: usize,
    ) -> Result<ServerReply> {
        let timeout = Duration::from_millis(self.options.rpc_timeout_ms);
        let direct = self.peers.call(&to.addr, request, timeout).await;
        let err = match direct {
            Err(err @ (Error::Unreachable(_) | Error::Timeout(_))) if request.is_relayable() => err,
            other => return other,
        };
        self.peers.forget(&to.addr);
        let relays = self.relays_for(to, attempt);
        let relayed = ServerRequest::Relay {
            to: to.clone(),
            request: Box::new(request.clone()),
        };
        // A relay makes two calls, each allowed the usual time.
        let relay_timeout = timeout.saturating_mul(2);
        for relay in relays {
            match self.peers.call(&relay.addr, &relayed, relay_timeout).await {
                Ok(reply) => {
                    tracing::debug!(to = %to.addr, via = %relay.addr, "relayed around a failed link");
                    return Ok(reply);
                }
                // The relay or its link to the target is down too: try the next one.
                Err(Error::Unreachable(_) | Error::Timeout(_)) => {
                    self.peers.forget(&relay.addr);
                }
                // The target answered through the relay, and said no.
                Err(other) => return Err(other),
            }
        }
        Err(err)
    }

    /// Members of the current view that may carry a call to `to`: neither this server nor
    /// `to`, at most [`RELAYS_PER_CALL_MAX`], starting at `attempt` in view order.
    fn relays_for(&self, to: &ServerInfo, attempt: usize) -> Vec<ServerInfo> {
        let Ok(node) = self.node() else {
            return Vec::new();
        };
        let candidates: Vec<&ServerInfo> = node
            .view
            .servers
            .iter()
            .filter(|s| s.id != to.id && s.addr != to.addr && !node.is_or_was(&s.id))
            .collect();
        if candidates.is_empty() {
            return Vec::new();
        }
        (0..RELAYS_PER_CALL_MAX.min(candidates.len()))
            .map(|i| candidates[(attempt + i) % candidates.len()].clone())
            .collect()
    }
}
