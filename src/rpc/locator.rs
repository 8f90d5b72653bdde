//! Finding a service that may be named by host alone: the view leader, for the storage servers
//! and the client alike. A target with a port is one address; a host without one means every port
//! of a range in turn (the course's convention), and the first that answers the hello as the
//! right service of the caller's cluster is remembered until it stops answering (so a view leader
//! of another cluster on the same host is passed over).

use std::ops::RangeInclusive;
use std::sync::Mutex;
use std::time::Duration;

use serde::{de::DeserializeOwned, Serialize};

use super::client::Pool;
use crate::error::{Error, Result};
use crate::net;

/// Calls to one service found by [`net::candidates`], over pooled connections.
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

    /// One call to the service, finding it first if needed. A call that times out is not
    /// retried elsewhere (the service may be slow, not gone); its connection is dropped so the
    /// next call dials afresh.
    pub async fn call(&self, request: &Req, timeout: Duration) -> Result<Rep> {
        let found = self.found.lock().ok().and_then(|found| found.clone());
        if let Some(addr) = found {
            match self.pool.call(&addr, request, timeout).await {
                Err(Error::Unreachable(_)) => self.forget(&addr),
                Err(err @ Error::Timeout(_)) => {
                    self.pool.forget(&addr);
                    return Err(err);
                }
                other => return other,
            }
        }
        let mut last = Error::Unreachable(format!("nothing answers at {}", self.target));
        for addr in net::candidates(&self.target, self.ports.clone())? {
            match self.pool.get(&addr).await {
                Ok(_) => {
                    if let Ok(mut found) = self.found.lock() {
                        *found = Some(addr.clone());
                    }
                    return self.pool.call(&addr, request, timeout).await;
                }
                // Something else answers there, or nothing: keep looking, but remember why.
                Err(err) => last = err,
            }
        }
        Err(last)
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
