//! A cheap hasher for tables on the request path whose keys nobody outside can choose: request
//! ids from our own counter, the addresses of a pool, the names of metrics. The standard
//! SipHash resists keys crafted to collide, which matters for keys that come off the network
//! (transaction ids, keys), and there it stays; for these tables it costs a few hundred
//! instructions per lookup for nothing.
//!
//! The mixing is FxHash's (rotate, xor, multiply per 8-byte word), as used by rustc.

use std::hash::{BuildHasherDefault, Hasher};

/// The multiplier of FxHash: odd, with its bits spread, so that the product mixes the high bits.
const SEED: u64 = 0x517c_c1b7_2722_0a95;

/// See the module doc: for keys that no peer chooses.
#[derive(Clone, Copy, Debug, Default)]
pub struct FastHasher(u64);

/// Builds [`FastHasher`]s, for `HashMap::default()`.
pub type FastBuildHasher = BuildHasherDefault<FastHasher>;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_ids_and_similar_addresses_hash_apart() {
        let build = FastBuildHasher::default();
        let ids: HashSet<u64> = (0..10_000u64).map(|id| build.hash_one(id)).collect();
        assert_eq!(ids.len(), 10_000);
        let addrs: HashSet<u64> = (38000..38100)
            .map(|port| build.hash_one(format!("127.0.0.1:{port}")))
            .collect();
        assert_eq!(addrs.len(), 100);
    }
}
