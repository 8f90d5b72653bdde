//! ringleader: a replicated key/value store on a consistent-hash ring.
//!
//! # Layout
//! The store, from the domain up:
//! * [`types`] is the domain: keys, values, versions, ids, views, and the limits every key and
//!   value is checked against. [`error`] is the one error type, which crosses the wire.
//! * [`ring`] is the bucket allocator: key + view → replicas, a pure function.
//! * [`twopc`] is two-phase commit: the coordinator and the participant as state machines with
//!   no sockets, clocks or randomness of their own, and the termination rules.
//! * [`storage`] is where a server keeps its keys: the engine trait and its engines.
//! * [`net`] is the seam to the world (sockets, clocks, random ids) that a simulation replaces;
//!   [`rpc`] is the wire: frames, messages, serving, calling, pooling, finding a service.
//! * [`viewleader`] tracks which storage servers are alive (heartbeats, leases, epochs) and runs
//!   the lock service; its state is a deterministic state machine.
//! * [`server`] is a storage server: the network shell around a storage engine and a 2PC
//!   participant, its membership, termination and rebalancing.
//! * [`client`] is the library every caller uses: single-server commands, the view cache, the
//!   2PC coordinator's driver for `setr`/`append`, `getr`, locks, retries.
//! * [`http`] holds every HTTP router: the REST key/value API, the distributed log,
//!   `/admin/status` and `/metrics` of servers and of the view leader.
//! * [`faults`] is fault injection (simulated crashes, reply faults) in one place.
//! * [`metrics`], [`bounded`] and [`fasthash`] are small shared pieces: Prometheus metrics, a
//!   map that forgets its oldest entries, a cheap hasher for tables whose keys no peer chooses.
//!
//! Around it, never imported by the store:
//! * [`cli`] is the `client` command line: commands, output, exit codes.
//! * [`tools`] drives, measures and judges the store from outside: the in-process cluster,
//!   `client demo`, the load generator and `client bench`, `client chaos`, the linearizability
//!   checker, and the in-memory world for whole-cluster tests.
//!
//! The three binaries in `src/bin` parse flags, start logging and call [`viewleader::serve`],
//! [`server::serve`] (wiring [`http`] to them when asked) or [`cli::run`]. `docs/architecture.md`
//! is the guided tour.

pub mod bounded;
pub mod cli;
pub mod client;
pub mod error;
pub mod fasthash;
pub mod faults;
pub mod http;
pub mod metrics;
pub mod net;
pub mod ring;
pub mod rpc;
pub mod server;
pub mod storage;
pub mod tools;
pub mod twopc;
pub mod types;
pub mod viewleader;

pub use client::Client;
pub use error::{Error, Result};
