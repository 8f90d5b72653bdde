//! The tools around the store: what drives, measures and judges it from outside. They sit apart
//! so that the store reads without them: no store module imports `tools`; only the `cli`, the
//! tests and the `bench/` crate do.
//!
//! * [`cluster`] starts a whole cluster inside one process, for the demo, the benchmarks and tests.
//! * [`demo`] is `client demo`: the story of the system told on an in-process cluster.
//! * [`bench`](mod@bench) is the load generator (closed-loop workloads over any store with a
//!   [`bench::Driver`]) and `client bench`, which runs it on an in-process cluster.
//! * [`chaos`] is `client chaos`: real processes under injected faults, every operation recorded
//!   and the history checked.
//! * [`checker`] decides whether a recorded history of operations is linearizable.
//! * [`sim`] is a world inside one process (an in-memory network, a paused clock, seeded
//!   randomness) that whole clusters run in with no socket opened.

pub mod bench;
pub mod chaos;
pub mod checker;
pub mod cluster;
pub mod demo;
pub mod sim;
