//! Worlds for running whole clusters inside one process: an in-memory network on tokio's paused
//! clock ([`memory`]), and turmoil's simulated network of hosts ([`turmoil_net`]) with
//! partitions, delays, crashes and restarts, each storage server on a simulated disk of its own
//! that a crash cuts back to what was synced, where one seed replays one run ([`run`]); a campaign
//! of many seeds is `client sim` ([`campaign`]). Both worlds hand each node an
//! [`crate::net::Env`]; the store's code cannot tell them from the real world.

pub mod campaign;
pub mod checks;
pub mod memory;
pub mod run;
pub mod trace;
pub mod turmoil_net;

pub use memory::MemoryNetwork;

use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use crate::net::{Clock, Random};

/// tokio's clock for monotonic time (paused in a simulation, so it moves only when the test
/// advances it or every task waits), and a wall clock that starts at `wall_start_us` and moves
/// with it, shifted by `skew_us` for this node.
pub struct SimClock {
    wall_start_us: u64,
    started: Instant,
    skew_us: i64,
}

impl SimClock {
    pub fn new(wall_start_us: u64) -> Arc<Self> {
        Self::skewed(wall_start_us, 0)
    }

    /// A clock whose wall time runs `skew_us` ahead (or behind, if negative) of the others'.
    pub fn skewed(wall_start_us: u64, skew_us: i64) -> Arc<Self> {
        Arc::new(Self {
            wall_start_us,
            started: Instant::now(),
            skew_us,
        })
    }
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall_us(&self) -> u64 {
        let elapsed_us = Instant::now().duration_since(self.started).as_micros() as u64;
        self.wall_start_us
            .saturating_add(elapsed_us)
            .saturating_add_signed(self.skew_us)
    }
}

/// Random numbers from a seed: one seed, one sequence.
pub struct SeededRandom(Mutex<StdRng>);

impl SeededRandom {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(StdRng::seed_from_u64(seed)))
    }
}

impl Random for SeededRandom {
    fn next_u128(&self) -> u128 {
        // A poisoned lock only means another thread panicked mid-draw; the generator is fine.
        let mut rng = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        rng.gen()
    }
}
