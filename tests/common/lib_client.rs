//! The library as the fault suites (tests/durability.rs, tests/restarts.rs) use it beside the
//! binaries: a tokio runtime to block on, a `Client` of a test cluster, the servers' pending
//! transactions as their status reports them, and the ring's owners of a key in a view. Raw
//! requests a peer would send stay in the suite that sends them.

use std::time::Duration;

use ringleader::client::{Client, ClientOptions, CrashPoint};
use ringleader::types::{Op, ServerInfo, Value};

use super::{wait_for, TestCluster, ViewDoc};

/// Generous bound for a blocked key to become writable again and for pending transactions to
/// be resolved. The promise is 2 x the transaction timeout after the view drops the blocker;
/// real processes on a busy machine get far more, since no timing is asserted with it.
pub const UNBLOCK_TIMEOUT: Duration = Duration::from_secs(45);
/// Per-call timeout of a [`library_client`], in milliseconds.
const LIBRARY_TIMEOUT_MS: u64 = 1_000;
/// How long a [`library_client`] waits out a rebalancing, in milliseconds.
const LIBRARY_WAIT_MS: u64 = 2_000;

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime for the library's calls")
}

/// A library client of `cluster` (made inside `rt`, whose tasks its connections use).
pub fn library_client(rt: &tokio::runtime::Runtime, cluster: &TestCluster) -> Client {
    let viewleader = cluster.viewleader_addr();
    rt.block_on(async move {
        Client::new(ClientOptions {
            viewleader,
            timeout_ms: LIBRARY_TIMEOUT_MS,
            wait_ms: LIBRARY_WAIT_MS,
        })
    })
}

/// `client`, as a coordinator, writes `value` to `key` and stops on purpose at `crash_at`,
/// leaving what became of the write to the replicas.
#[track_caller]
pub fn crash_coordinator(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    key: &str,
    value: &str,
    crash_at: CrashPoint,
) {
    let crashed = rt.block_on(client.write_then_crash(
        key,
        Op::Put(Value::Text(value.to_string())),
        crash_at,
    ));
    assert!(
        crashed.is_err(),
        "a coordinator stopped on purpose reported success: {crashed:?}"
    );
}

/// Transactions pending on the server at `addr`, or why it did not say.
pub fn pending_on(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    addr: &str,
) -> Result<u64, String> {
    rt.block_on(client.status(addr))
        .map(|status| status.pending_transactions)
        .map_err(|err| format!("status of {addr}: {err}"))
}

/// Waits until no running server of `cluster` reports a pending transaction.
#[track_caller]
pub fn wait_nothing_pending(rt: &tokio::runtime::Runtime, client: &Client, cluster: &TestCluster) {
    wait_for(
        UNBLOCK_TIMEOUT,
        "no running server reports a pending transaction",
        || {
            let mut seen = Vec::new();
            let mut any = false;
            for addr in cluster.live_server_addrs() {
                let pending = pending_on(rt, client, &addr);
                any |= pending != Ok(0);
                seen.push(format!("{addr}: {pending:?}"));
            }
            if any {
                Err(seen.join(", "))
            } else {
                Ok(())
            }
        },
    );
}

/// The replica addresses of `key` in `view`, in ring order (the first is the primary).
pub fn owners(view: &ViewDoc, key: &str) -> Vec<String> {
    let servers: Vec<ServerInfo> = view.server_infos();
    ringleader::ring::replicas(key, &servers)
        .into_iter()
        .filter_map(|id| servers.iter().find(|s| s.id == id).map(|s| s.addr.clone()))
        .collect()
}
