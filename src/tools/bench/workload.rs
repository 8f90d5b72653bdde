//! The pure parts of the load generator: which key an operation touches (uniform or zipfian) and
//! which operation a workload issues next (the read/write mix). Everything here is driven by a
//! caller-supplied RNG, so a seeded run chooses the same keys and operations every time.

use clap::ValueEnum;
use rand::Rng;

/// YCSB's skew: with 1,000 keys the hottest key takes about 13% of the operations.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// How keys are chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Distribution {
    /// Every key equally likely.
    Uniform,
    /// Zipfian with theta 0.99 (YCSB's default): key-0 is the hottest, key-1 next, and so on.
    Zipfian,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
        }
    }
}

/// A zipfian generator over `0..items`, after Gray et al., "Quickly generating billion-record
/// synthetic databases" (SIGMOD 1994), as YCSB's `ZipfianGenerator` does it: item `i` is chosen
/// with probability proportional to `1 / (i + 1)^theta`. Building it costs O(items) once (the
/// zeta sum); each draw is O(1).
#[derive(Clone, Debug)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
    half_pow_theta: f64,
}

impl Zipfian {
    /// A generator over `0..items` (`items` ≥ 1) with skew `theta` in (0, 1).
    pub fn new(items: u64, theta: f64) -> Self {
        let items = items.max(1);
        let zeta_n = zeta(items, theta);
        let zeta_2 = zeta(2.min(items), theta);
        let alpha = 1.0 / (1.0 - theta);
        // With one or two items the closed form below is never reached (see `sample`); keep eta
        // finite anyway.
        let eta = if items > 2 {
            (1.0 - (2.0 / items as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        } else {
            0.0
        };
        Zipfian {
            items,
            theta,
            alpha,
            zeta_n,
            eta,
            half_pow_theta: 0.5f64.powf(theta),
        }
    }

    pub fn items(&self) -> u64 {
        self.items
    }

    /// The next item, in `0..items`.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + self.half_pow_theta {
            return 1.min(self.items - 1);
        }
        let item = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        item.min(self.items - 1)
    }

    /// The probability of item `i` (for tests and reports).
    pub fn probability(&self, i: u64) -> f64 {
        1.0 / ((i + 1) as f64).powf(self.theta) / self.zeta_n
    }
}

/// `sum_{i=1..=n} 1 / i^theta`.
fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

/// Chooses key indexes in `0..keys`.
#[derive(Clone, Debug)]
pub enum KeyChooser {
    Uniform(u64),
    Zipfian(Zipfian),
}

impl KeyChooser {
    pub fn new(distribution: Distribution, keys: u64) -> Self {
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform(keys.max(1)),
            Distribution::Zipfian => KeyChooser::Zipfian(Zipfian::new(keys, ZIPFIAN_THETA)),
        }
    }

    pub fn next<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match self {
            KeyChooser::Uniform(keys) => rng.gen_range(0..*keys),
            KeyChooser::Zipfian(zipfian) => zipfian.sample(rng),
        }
    }
}

/// What one operation of a workload does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
}

/// A workload's operation mix, as YCSB names them. An "update" is a write of the whole value
/// with the store's replicated write; a "read" is a read in the driver's consistency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mix {
    /// Writes only (ringleader's setr, etcd's put, Redis's SET).
    Write,
    /// Reads only (getr, etcd's range, Redis's GET).
    Read,
    /// YCSB A: 50% reads, 50% updates.
    YcsbA,
    /// YCSB B: 95% reads, 5% updates.
    YcsbB,
    /// YCSB C: reads only, over YCSB's key choice.
    YcsbC,
}

impl Mix {
    pub fn read_fraction(self) -> f64 {
        match self {
            Mix::Write => 0.0,
            Mix::Read | Mix::YcsbC => 1.0,
            Mix::YcsbA => 0.50,
            Mix::YcsbB => 0.95,
        }
    }

    /// The name in tables and JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Mix::Write => "write",
            Mix::Read => "read",
            Mix::YcsbA => "ycsb-a",
            Mix::YcsbB => "ycsb-b",
            Mix::YcsbC => "ycsb-c",
        }
    }

    /// The next operation. A fraction of 1.0 always reads and 0.0 always writes (`gen` is in
    /// [0, 1)).
    pub fn choose<R: Rng + ?Sized>(self, rng: &mut R) -> Op {
        if rng.gen::<f64>() < self.read_fraction() {
            Op::Read
        } else {
            Op::Write
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn counts(chooser: &KeyChooser, keys: u64, draws: usize, seed: u64) -> Vec<u64> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut counts = vec![0u64; keys as usize];
        for _ in 0..draws {
            let key = chooser.next(&mut rng);
            assert!(key < keys, "key {key} out of 0..{keys}");
            counts[key as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipfian_hottest_key_far_more_popular_than_median() {
        let keys = 1_000;
        let chooser = KeyChooser::new(Distribution::Zipfian, keys);
        let counts = counts(&chooser, keys, 200_000, 7);
        let hottest = counts[0];
        let median = counts[keys as usize / 2];
        // Expected ratio (501)^0.99 ≈ 470; demand well over an order of magnitude.
        assert!(
            hottest > 50 * median.max(1),
            "hottest {hottest}, median {median}"
        );
        // And the hottest key is the one the theory says, at about the theory's frequency.
        assert_eq!(counts.iter().max(), Some(&hottest));
        let KeyChooser::Zipfian(zipfian) = &chooser else {
            unreachable!()
        };
        let expected = zipfian.probability(0) * 200_000.0;
        let observed = hottest as f64;
        assert!(
            (observed - expected).abs() < 0.05 * expected,
            "key 0: observed {observed}, expected {expected:.0}"
        );
    }

    #[test]
    fn zipfian_every_key_in_range_for_small_and_large_key_spaces() {
        for keys in [1u64, 2, 3, 10, 1_000, 100_000] {
            let zipfian = Zipfian::new(keys, ZIPFIAN_THETA);
            let mut rng = StdRng::seed_from_u64(keys);
            let mut seen_last_half = false;
            for _ in 0..50_000 {
                let key = zipfian.sample(&mut rng);
                assert!(key < keys, "key {key} out of 0..{keys}");
                seen_last_half |= key >= keys / 2;
            }
            // The tail is reachable, not just the head.
            assert!(
                seen_last_half,
                "{keys} keys: never drew from the upper half"
            );
        }
    }

    #[test]
    fn zipfian_is_deterministic_for_a_seed() {
        let zipfian = Zipfian::new(1_000, ZIPFIAN_THETA);
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..100)
                .map(|_| zipfian.sample(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn uniform_spreads_evenly_and_stays_in_range() {
        let keys = 100;
        let counts = counts(
            &KeyChooser::new(Distribution::Uniform, keys),
            keys,
            100_000,
            1,
        );
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        // 1,000 expected per key; 5 sigma is about ±160.
        assert!(min > 800 && max < 1_200, "min {min}, max {max}");
    }

    #[test]
    fn workload_mix_reads_in_the_right_proportion() {
        let draws = 100_000;
        for (mix, expected) in [
            (Mix::YcsbA, 0.50),
            (Mix::YcsbB, 0.95),
            (Mix::YcsbC, 1.0),
            (Mix::Write, 0.0),
            (Mix::Read, 1.0),
        ] {
            let mut rng = StdRng::seed_from_u64(11);
            let reads = (0..draws)
                .filter(|_| mix.choose(&mut rng) == Op::Read)
                .count();
            let fraction = reads as f64 / draws as f64;
            assert!(
                (fraction - expected).abs() < 0.01,
                "{mix:?}: read fraction {fraction}, expected {expected}"
            );
            if expected == 0.0 || expected == 1.0 {
                assert_eq!(fraction, expected, "{mix:?} must be pure");
            }
        }
    }

    #[test]
    fn mix_and_distribution_names_match_the_flags() {
        for mix in Mix::value_variants() {
            let flag = mix.to_possible_value().unwrap();
            assert_eq!(flag.get_name(), mix.name());
        }
        for distribution in Distribution::value_variants() {
            let flag = distribution.to_possible_value().unwrap();
            assert_eq!(flag.get_name(), distribution.name());
        }
    }
}
