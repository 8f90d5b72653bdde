//! ringleader: a replicated key/value store on a consistent-hash ring.
//!
//! # Layout
//! * [`viewleader`] tracks which storage servers are alive (heartbeats, leases, epochs) and runs
//!   the lock service; its state is a deterministic state machine.
//! * [`server`] holds keys: the store, the 2PC participant and their network shell.
//! * [`client`] is the library every caller uses: single-server commands, the view cache, the
//!   2PC coordinator for `setr`, `getr`, locks, retries. [`cli`] turns it into the `client` binary.
//! * [`ring`] is the bucket allocator: key + view → replicas, a pure function.
//! * [`rpc`] is the wire (frames, messages, serving and calling); [`net`] opens the sockets.
//! * [`http`] serves the REST key/value API, the distributed-log endpoints, `/admin/status` and
//!   `/metrics` over HTTP; [`metrics`] holds the Prometheus metrics.
//! * [`fasthash`] is a cheap hasher for request-path tables whose keys no peer chooses.
//! * [`tools`] holds what drives, measures and judges the store from outside: the in-process
//!   cluster, `client demo`, the load generator and `client bench`, `client chaos` and the
//!   linearizability checker. The store's modules never import it.
//!
//! The three binaries in `src/bin` parse flags, start logging and call [`viewleader::run`],
//! [`server::run`] or [`cli::run`].

pub mod cli;
pub mod client;
pub mod error;
pub mod fasthash;
pub mod http;
pub mod metrics;
pub mod net;
pub mod ring;
pub mod rpc;
pub mod server;
pub mod tools;
pub mod types;
pub mod viewleader;

pub use client::Client;
pub use error::{Error, Result};
