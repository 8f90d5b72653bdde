//! Finding a service that may be named by host alone, or by a list of members: the view leader,
//! for the storage servers and the client alike. A target with a port is one address; a host
//! without one means every port of a range in turn (the course's convention); a comma-separated
//! list means each of its entries. The member that answered last is remembered until it stops
//! answering or says it is not the leader (a view leader of another cluster on the same host is
//! passed over at the hello). A member that is not the leader names the one it knows, and the
//! call follows it.

use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use super::client::Pool;
use crate::error::{Error, Result};
use crate::net;

/// Members asked in one round of a call: every member of the largest group, and as many
/// redirects.
pub const LEADER_HOPS_MAX: usize = 2 * crate::types::VIEWLEADER_MEMBERS_MAX;

/// Pause between rounds of asking the members while none of them leads, in ms.
pub const LEADER_RETRY_MS: u64 = 100;

/// Calls to one service found by [`net::candidates_of_list`], over pooled connections.
pub struct Locator<Req, Rep> {
    target: String,
    ports: RangeInclusive<u16>,
    pool: Pool<Req, Rep>,
    /// The address that answered last.
    found: Mutex<Option<String>>,
}

impl<Req, Rep> Locator<Req, Rep>
where
    Req: Serialize + Send + 'static,
    Rep: DeserializeOwned + Send + 'static,
{
    pub fn new(target: String, ports: RangeInclusive<u16>, pool: Pool<Req, Rep>) -> Self {
        Self {
            target,
            ports,
            pool,
            found: Mutex::new(None),
        }
    }

    pub fn target(&self) -> &str {
        &self.target
    }

    /// One call to the service, finding it first if needed. A member that answers `NotLeader`
    /// sends the call on to the leader it names, or to the next member; at most
    /// [`LEADER_HOPS_MAX`] members are asked in a round. While no member leads (an election),
    /// rounds repeat every [`LEADER_RETRY_MS`] until `timeout` has passed. A call that times out
    /// is not retried elsewhere (the service may be slow, not gone); its connection is dropped
    /// so the next call dials afresh.
    pub async fn call(&self, request: &Req, timeout: Duration) -> Result<Rep> {
        let deadline = self.pool.now() + timeout;
        loop {
            match self.round(request, timeout).await {
                Err(err @ Error::NotLeader { .. })
                    if self.pool.now() + Duration::from_millis(LEADER_RETRY_MS) < deadline =>
                {
                    tracing::debug!(%err, "no view-leader leader yet; asking again");
                    tokio::time::sleep(Duration::from_millis(LEADER_RETRY_MS)).await;
                }
                other => return other,
            }
        }
    }

    /// One round of [`Locator::call`]: each member at most once, following redirects.
    async fn round(&self, request: &Req, timeout: Duration) -> Result<Rep> {
        let found = self.found.lock().ok().and_then(|found| found.clone());
        let mut candidates: Option<Vec<String>> = None;
        let mut asked: Vec<String> = Vec::new();
        let mut next = found;
        let mut last = Error::Unreachable(format!("nothing answers at {}", self.target));
        for _ in 0..LEADER_HOPS_MAX {
            let addr = match next.take() {
                Some(addr) => addr,
                None => {
                    if candidates.is_none() {
                        candidates =
                            Some(net::candidates_of_list(&self.target, self.ports.clone())?);
                    }
                    let untried = candidates
                        .iter()
                        .flatten()
                        .find(|addr| !asked.contains(addr))
                        .cloned();
                    match untried {
                        Some(addr) => {
                            // Something else may answer there (a range is being searched):
                            // check the hello before sending the request.
                            if let Err(err) = self.pool.get(&addr).await {
                                asked.push(addr);
                                if !matches!(last, Error::NotLeader { .. }) {
                                    last = err;
                                }
                                continue;
                            }
                            addr
                        }
                        None => break,
                    }
                }
            };
            asked.push(addr.clone());
            match self.pool.call(&addr, request, timeout).await {
                Ok(reply) => {
                    if let Ok(mut found) = self.found.lock() {
                        *found = Some(addr);
                    }
                    return Ok(reply);
                }
                Err(Error::NotLeader { leader, detail }) => {
                    next = leader.filter(|leader| !asked.contains(leader));
                    last = Error::NotLeader {
                        leader: None,
                        detail,
                    };
                }
                Err(err @ Error::Unreachable(_)) => {
                    self.forget(&addr);
                    // A member that says who leads (or that nobody does yet) says more than
                    // one that cannot be reached.
                    if !matches!(last, Error::NotLeader { .. }) {
                        last = err;
                    }
                }
                Err(err @ Error::Timeout(_)) => {
                    self.forget(&addr);
                    return Err(err);
                }
                Err(err) => return Err(err),
            }
        }
        if let Ok(mut found) = self.found.lock() {
            *found = None;
        }
        Err(nothing_answered(&self.target, &self.ports, last))
    }

    /// One call to the member at `addr`, whoever leads.
    pub async fn call_at(&self, addr: &str, request: &Req, timeout: Duration) -> Result<Rep> {
        let reply = self.pool.call(addr, request, timeout).await;
        if let Err(Error::Unreachable(_) | Error::Timeout(_)) = reply {
            self.pool.forget(addr);
        }
        reply
    }

    /// Every address the target names, in order (a host alone: its whole port range).
    pub fn addresses(&self) -> Result<Vec<String>> {
        net::candidates_of_list(&self.target, self.ports.clone())
    }

    fn forget(&self, addr: &str) {
        self.pool.forget(addr);
        if let Ok(mut found) = self.found.lock() {
            if found.as_deref() == Some(addr) {
                *found = None;
            }
        }
    }
}

/// The error of a round in which no candidate answered: when the target named a host without a
/// port, it names the whole range tried (the last address's own error alone would suggest only
/// that one port was tried), and keeps that last error as the detail.
pub fn nothing_answered(target: &str, ports: &RangeInclusive<u16>, last: Error) -> Error {
    let searched_a_range = target
        .split(',')
        .filter(|t| !t.trim().is_empty())
        .any(|t| !net::names_a_port(t));
    match last {
        Error::Unreachable(detail) | Error::Protocol(detail) if searched_a_range => {
            Error::Unreachable(format!(
                "nothing answers at {} on ports {}-{} (every port of the range was tried; the last: {detail})",
                target.trim(),
                ports.start(),
                ports.end()
            ))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_without_port_that_nothing_answers_names_the_whole_range() {
        let last = || Error::Unreachable("cannot connect to h:38010".into());
        let err = nothing_answered("h", &(38000..=38010), last());
        let text = err.to_string();
        assert!(
            text.contains("nothing answers at h on ports 38000-38010")
                && text.contains("cannot connect to h:38010"),
            "{text}"
        );
        // One address named with its port: its own error says it all.
        let err = nothing_answered("h:38003", &(38000..=38010), last());
        assert_eq!(err.to_string(), last().to_string());
        // A member that says who leads is not "nothing answers".
        let not_leader = Error::NotLeader {
            leader: None,
            detail: "electing".into(),
        };
        assert!(matches!(
            nothing_answered("h", &(38000..=38010), not_leader),
            Error::NotLeader { .. }
        ));
    }
}
