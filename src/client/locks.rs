//! The lock service, from the client's side: one `lock_get`, a `lock_get` that waits (polling,
//! bounded by `wait_ms`), and `lock_release`.

use std::time::Duration;

use super::{unexpected, Client, LOCK_POLL_MS};
use crate::error::{Error, Result};
use crate::rpc::message::{ViewLeaderReply, ViewLeaderRequest};
use crate::types::{FencingToken, LockReply};

impl Client {
    /// One `lock_get`: granted, or queued (retry), or deadlock.
    pub async fn lock_get(&self, lock: &str, requester: &str) -> Result<LockReply> {
        let request = ViewLeaderRequest::LockGet {
            lock: lock.into(),
            requester: requester.into(),
        };
        match self.viewleader_call(request).await? {
            ViewLeaderReply::Lock(reply) => Ok(reply),
            other => Err(unexpected("lock_get", &other)),
        }
    }

    /// `lock_get` until granted, polling up to `wait_ms`; `on_wait` sees every retry answer.
    pub async fn lock_get_wait(
        &self,
        lock: &str,
        requester: &str,
        mut on_wait: impl FnMut(&LockReply),
    ) -> Result<FencingToken> {
        let deadline = self.env.now() + Duration::from_millis(self.options.wait_ms);
        loop {
            match self.lock_get(lock, requester).await? {
                LockReply::Granted { token } => return Ok(token),
                LockReply::Deadlock { cycle } => {
                    return Err(Error::Deadlock(format!(
                        "{requester} waiting for {lock:?} would close the cycle {}",
                        cycle.join(" -> ")
                    )))
                }
                LockReply::Retry { holder, position } => {
                    if self.env.now() >= deadline {
                        return Err(Error::LockBusy(format!(
                            "{lock:?} is still held by {holder} ({requester} is number {position} in line) \
                             after waiting {} ms",
                            self.options.wait_ms
                        )));
                    }
                    on_wait(&LockReply::Retry { holder, position });
                    tokio::time::sleep(Duration::from_millis(LOCK_POLL_MS)).await;
                }
                other => return Err(unexpected("lock_get", &ViewLeaderReply::Lock(other))),
            }
        }
    }

    pub async fn lock_release(&self, lock: &str, requester: &str) -> Result<LockReply> {
        let request = ViewLeaderRequest::LockRelease {
            lock: lock.into(),
            requester: requester.into(),
        };
        match self.viewleader_call(request).await? {
            ViewLeaderReply::Lock(reply) => Ok(reply),
            other => Err(unexpected("lock_release", &other)),
        }
    }
}
