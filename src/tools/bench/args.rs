//! The `client bench` flags and their checks.
//!
//! Apart from the command because the rebalancing workload reads the same flags, and the command
//! hands over to it: with the flags in either file, the two would import each other.

use clap::{Args, ValueEnum};

use super::{Distribution, Mix, Stop};
use crate::errinput;
use crate::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// Unreplicated set on one server.
    Set,
    /// Unreplicated get on one server.
    Get,
    /// Replicated set (two-phase commit).
    Setr,
    /// Replicated get.
    Getr,
    /// YCSB A: 50% getr, 50% setr.
    YcsbA,
    /// YCSB B: 95% getr, 5% setr.
    YcsbB,
    /// YCSB C: 100% getr.
    YcsbC,
    /// Loopback round-trip floor: a plain TCP echo on 127.0.0.1, one client (ignores
    /// --concurrency).
    Probe,
    /// Bulk-load `--keys` keys on their replicas, kill one server, and time re-replication
    /// (ignores --concurrency and --ops).
    Rebalance,
}

impl Workload {
    /// The name on the command line, in the table and in the JSON lines.
    pub fn name(self) -> String {
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_else(|| format!("{self:?}").to_lowercase())
    }

    /// The operation mix, and whether it runs on one server unreplicated; `None` for the
    /// workloads that issue no key/value requests.
    pub fn mix(self) -> Option<(Mix, bool)> {
        Some(match self {
            Workload::Set => (Mix::Write, true),
            Workload::Get => (Mix::Read, true),
            Workload::Setr => (Mix::Write, false),
            Workload::Getr => (Mix::Read, false),
            Workload::YcsbA => (Mix::YcsbA, false),
            Workload::YcsbB => (Mix::YcsbB, false),
            Workload::YcsbC => (Mix::YcsbC, false),
            Workload::Probe | Workload::Rebalance => return None,
        })
    }
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workloads to run, in order.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = vec![Workload::Set, Workload::Get])]
    pub workload: Vec<Workload>,
    /// Concurrent requests (closed loop), one cell each.
    #[arg(long, value_delimiter = ',', default_values_t = vec![1, 64])]
    pub concurrency: Vec<usize>,
    /// Operations per cell.
    #[arg(long, default_value_t = 50_000)]
    pub ops: u64,
    /// Run each cell for this many seconds instead of --ops operations.
    #[arg(long, conflicts_with = "ops")]
    pub duration_s: Option<u64>,
    /// Unmeasured operations before each cell, at the cell's concurrency.
    #[arg(long, default_value_t = 0)]
    pub warmup_ops: u64,
    /// How keys are chosen.
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Seed of the key and operation choices.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Storage servers to start (set/get use the first one).
    #[arg(long, default_value_t = 1)]
    pub servers: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 1_000)]
    pub keys: u64,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Replicated reads with `getr --stale` (one replica) instead of the linearizable getr.
    #[arg(long)]
    pub stale: bool,
}

/// Checks the arguments; returns how each cell stops.
pub fn validate(args: &BenchArgs) -> Result<Stop> {
    let stop = Stop::from_flags(args.ops, args.duration_s)?;
    super::validate_common(
        &args.concurrency,
        args.warmup_ops,
        args.keys,
        args.value_bytes,
    )?;
    if args.servers == 0 {
        return Err(errinput!("--servers must be above 0"));
    }
    Ok(stop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::bench::{BENCH_CONCURRENCY_MAX, BENCH_DURATION_S_MAX, BENCH_OPS_MAX};
    use clap::Parser;
    use std::time::Duration;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(argv: &[&str]) -> std::result::Result<BenchArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|c| c.bench)
    }

    fn stop_of(argv: &[&str]) -> Result<Stop> {
        validate(&parse(argv).expect("parses"))
    }

    #[test]
    fn bench_defaults_keep_the_documented_flags() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.workload, vec![Workload::Set, Workload::Get]);
        assert_eq!(args.concurrency, vec![1, 64]);
        assert_eq!(
            (args.ops, args.servers, args.keys, args.value_bytes),
            (50_000, 1, 1_000, 100)
        );
        assert_eq!(args.distribution, Distribution::Uniform);
        assert_eq!((args.warmup_ops, args.duration_s), (0, None));
        assert_eq!(validate(&args).unwrap(), Stop::Ops(50_000));
    }

    #[test]
    fn bench_parses_new_workloads_and_distribution() {
        let args = parse(&[
            "--workload",
            "ycsb-a,ycsb-b,ycsb-c,probe,setr,getr,set,get,rebalance",
            "--distribution",
            "zipfian",
            "--warmup-ops",
            "100",
        ])
        .unwrap();
        assert_eq!(
            args.workload,
            vec![
                Workload::YcsbA,
                Workload::YcsbB,
                Workload::YcsbC,
                Workload::Probe,
                Workload::Setr,
                Workload::Getr,
                Workload::Set,
                Workload::Get,
                Workload::Rebalance
            ]
        );
        assert_eq!(args.distribution, Distribution::Zipfian);
        assert_eq!(Workload::YcsbA.name(), "ycsb-a");
        assert_eq!(Workload::Probe.name(), "probe");
        assert_eq!(Workload::YcsbB.mix(), Some((Mix::YcsbB, false)));
        assert_eq!(Workload::Set.mix(), Some((Mix::Write, true)));
        assert_eq!(Workload::Getr.mix(), Some((Mix::Read, false)));
        assert_eq!(Workload::Rebalance.mix(), None);
        assert!(parse(&["--workload", "ycsb-d"]).is_err());
        assert!(parse(&["--distribution", "latest"]).is_err());
    }

    #[test]
    fn bench_validates_ops_and_duration_bounds() {
        assert!(stop_of(&["--ops", "0"]).is_err());
        assert!(stop_of(&["--ops", &(BENCH_OPS_MAX + 1).to_string()]).is_err());
        assert_eq!(
            stop_of(&["--ops", &BENCH_OPS_MAX.to_string()]).unwrap(),
            Stop::Ops(BENCH_OPS_MAX)
        );
        assert!(stop_of(&["--duration-s", "0"]).is_err());
        assert!(stop_of(&["--duration-s", &(BENCH_DURATION_S_MAX + 1).to_string()]).is_err());
        assert_eq!(
            stop_of(&["--duration-s", "3600"]).unwrap(),
            Stop::For(Duration::from_secs(3600))
        );
        // One or the other, never both.
        assert!(parse(&["--ops", "10", "--duration-s", "5"]).is_err());
        assert!(stop_of(&["--warmup-ops", &(BENCH_OPS_MAX + 1).to_string()]).is_err());
        assert!(stop_of(&["--warmup-ops", "0"]).is_ok());
    }

    #[test]
    fn bench_validates_concurrency_servers_and_keys() {
        assert!(stop_of(&["--concurrency", "1,0"]).is_err());
        assert!(stop_of(&["--concurrency", &(BENCH_CONCURRENCY_MAX + 1).to_string()]).is_err());
        assert!(stop_of(&["--concurrency", "1,16,64"]).is_ok());
        assert!(stop_of(&["--servers", "0"]).is_err());
        assert!(stop_of(&["--keys", "0"]).is_err());
    }
}
