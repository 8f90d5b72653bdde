//! Calls to one named process: the course's single-server commands (`print`, `set`, `get`,
//! `query_all_keys`), a server's status, and starting or ending a simulated crash.
//!
//! `set` writes the server's own key space ([`Space::Local`]), which nothing replicates or
//! moves; `get` and `query_all_keys` read either space, so that a person can also look at the
//! ring keys one replica holds.

use super::{unexpected, unexpected_server, Client, RPC_ATTEMPTS_MAX};
use crate::error::{Error, Result};
use crate::net;
use crate::rpc::locator::nothing_answered;
use crate::rpc::message::{ServerReply, ServerRequest, ViewLeaderReply, ViewLeaderRequest};
use crate::types::{check_key, check_value, Key, Space, Value, Version, Versioned, KEYS_PAGE_MAX};

impl Client {
    /// The address of the server named by `target` (`host[:port]`; without a port the first of
    /// 38000–38010 that answers as a storage server).
    pub async fn resolve_server(&self, target: &str) -> Result<String> {
        let candidates = net::candidates(target, net::SERVER_PORTS)?;
        if candidates.len() == 1 {
            return Ok(candidates.into_iter().next().unwrap_or_default());
        }
        let mut last = Error::Unreachable(format!("no storage server at {target}"));
        for addr in candidates {
            match self.servers.get(&addr).await {
                Ok(_) => return Ok(addr),
                Err(err) => last = err,
            }
        }
        Err(nothing_answered(target, &net::SERVER_PORTS, last))
    }

    /// One call to the server at `addr`.
    pub async fn server_call(&self, addr: &str, request: ServerRequest) -> Result<ServerReply> {
        self.server_call_ref(addr, &request).await
    }

    async fn server_call_ref(&self, addr: &str, request: &ServerRequest) -> Result<ServerReply> {
        let reply = self.servers.call(addr, request, self.timeout()).await;
        if let Err(Error::Unreachable(_) | Error::Timeout(_)) = reply {
            self.servers.forget(addr);
        }
        reply
    }

    pub async fn print(&self, addr: &str, text: &str) -> Result<()> {
        match self
            .server_call(addr, ServerRequest::Print { text: text.into() })
            .await?
        {
            ServerReply::Printed => Ok(()),
            other => Err(unexpected_server("print", &other)),
        }
    }

    /// Stores `value` at `key` on one server. A retry after a timeout or a broken connection
    /// carries the same request id, so the server applies the write once.
    pub async fn set(&self, addr: &str, key: &str, value: Value) -> Result<Version> {
        check_key(key)?;
        check_value(&value)?;
        let request_id = Some(self.env.random_u128());
        let request = ServerRequest::Set {
            key: key.into(),
            value,
            request_id,
        };
        match self.call_retrying(addr, request, RPC_ATTEMPTS_MAX).await? {
            ServerReply::Stored { version } => Ok(version),
            other => Err(unexpected_server("set", &other)),
        }
    }

    /// One call, repeated (the same request, so the same ids) after a timeout or a broken
    /// connection, up to `attempts` times. Only for requests the server applies at most once.
    pub(crate) async fn call_retrying(
        &self,
        addr: &str,
        request: ServerRequest,
        attempts: usize,
    ) -> Result<ServerReply> {
        let mut attempt = 1;
        loop {
            match self.server_call_ref(addr, &request).await {
                Err(Error::Timeout(_) | Error::Unreachable(_)) if attempt < attempts => {
                    tracing::debug!(%addr, attempt, "retrying with the same request id");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The value at `key` on one server: one of its own keys ([`Space::Local`]), or its copy
    /// of a ring key ([`Space::Ring`]: one replica's copy as it is, which may be older than what
    /// `getr` reads, or a copy rebalancing has yet to drop).
    pub async fn get(&self, addr: &str, space: Space, key: &str) -> Result<Option<Versioned>> {
        check_key(key)?;
        let request = ServerRequest::Get {
            key: key.into(),
            space,
        };
        match self.server_call(addr, request).await? {
            ServerReply::Value(value) => Ok(value),
            other => Err(unexpected_server("get", &other)),
        }
    }

    /// Starts (`true`) or ends a simulated crash of the server at `addr`; returns the new state.
    pub async fn set_crashed(&self, addr: &str, crash: bool) -> Result<bool> {
        let request = if crash {
            ServerRequest::Crash
        } else {
            ServerRequest::Recover
        };
        match self.server_call(addr, request).await? {
            ServerReply::Crashed(crashed) => Ok(crashed),
            other => Err(unexpected_server("crash", &other)),
        }
    }

    /// Starts (`true`) or ends a simulated crash of the view leader; returns the new state.
    pub async fn set_viewleader_crashed(&self, crash: bool) -> Result<bool> {
        let request = if crash {
            ViewLeaderRequest::Crash
        } else {
            ViewLeaderRequest::Recover
        };
        match self.viewleader_call(request).await? {
            ViewLeaderReply::Crashed(crashed) => Ok(crashed),
            other => Err(unexpected("crash", &other)),
        }
    }

    /// The server's identity, epoch, load and rebalancing counters.
    pub async fn status(&self, addr: &str) -> Result<crate::rpc::message::ServerStatus> {
        match self.server_call(addr, ServerRequest::Status).await? {
            ServerReply::Status(status) => Ok(status),
            other => Err(unexpected_server("status", &other)),
        }
    }

    /// Every key of `space` the server holds, fetched a page at a time.
    pub async fn query_all_keys(&self, addr: &str, space: Space) -> Result<Vec<Key>> {
        let mut all = Vec::new();
        let mut after: Option<Key> = None;
        loop {
            let request = ServerRequest::QueryAllKeys {
                after: after.clone(),
                limit: KEYS_PAGE_MAX as u32,
                space,
            };
            match self.server_call(addr, request).await? {
                ServerReply::Keys { keys, more } => {
                    after = keys.last().cloned();
                    all.extend(keys);
                    if !more || after.is_none() {
                        return Ok(all);
                    }
                }
                other => return Err(unexpected_server("query_all_keys", &other)),
            }
        }
    }
}
