//! `ringleader-bench`: the side-by-side benchmark. `matrix` drives ringleader, etcd and Redis
//! with the same closed-loop workloads (the library's load generator, one driver per store),
//! `memory` measures a ringleader server's peak RSS against the bytes it holds, `recovery` times
//! a durable server's restart after `kill -9` and its disk bytes per key, `engines` compares the
//! log engine with redb on the same disk, `failover` times the view leader's leader failover
//! and `vl-throughput` the data path with one view-leader member against three, `previous`
//! reads the figures out of an earlier BENCHMARKS.md, and `report` writes BENCHMARKS.md from the
//! JSON lines. `scripts/bench.sh` runs them all.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ringleader::error::{Error, Result};
use ringleader::tools::bench::report::{previous_lines, render, Machine};

mod engines;
mod etcd;
mod matrix;
mod memory;
mod process;
mod recovery;
mod redis;
mod viewleader;
mod vl_report;

#[derive(Parser, Debug)]
#[command(
    name = "ringleader-bench",
    about = "ringleader, etcd and Redis under one load generator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs the workload matrix; one JSON line per cell.
    Matrix(matrix::MatrixArgs),
    /// Loads keys into a ringleader cluster and reports each server's peak RSS.
    Memory(memory::MemoryArgs),
    /// Loads a durable server, kills it, and times its restart on the same data dir.
    Recovery(recovery::RecoveryArgs),
    /// Concurrent durable puts on the log engine and on redb, and the disk's sync latency.
    Engines(engines::EnginesArgs),
    /// Kills the view leader's leader again and again, and times the failover.
    Failover(viewleader::FailoverArgs),
    /// setr and getr on clusters that differ only in their view leader's member count.
    VlThroughput(viewleader::ThroughputArgs),
    /// The figures of an earlier BENCHMARKS.md as JSON lines, for the next report.
    Previous {
        /// The BENCHMARKS.md to read; nothing is printed if it does not exist.
        #[arg(long)]
        from: PathBuf,
    },
    /// Writes BENCHMARKS.md from JSON lines.
    Report {
        /// Files of JSON lines (matrix, memory, `client bench --json`, versions).
        #[arg(long = "results", required = true)]
        results: Vec<PathBuf>,
        /// Markdown appended verbatim (the profile's before/after).
        #[arg(long)]
        appendix: Option<PathBuf>,
        /// The date written in the report.
        #[arg(long)]
        date: String,
        #[arg(long, default_value = "BENCHMARKS.md")]
        out: PathBuf,
        /// Leave every section of the existing --out as it is but the view leader's: replace
        /// that one (and its lines under "Machine and versions") with the one --results give.
        #[arg(long)]
        splice: bool,
    },
}

fn read(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path)
        .map_err(|err| Error::InvalidRequest(format!("{}: {err}", path.display())))
}

fn report(
    results: &[PathBuf],
    appendix: Option<&PathBuf>,
    date: String,
    out: &PathBuf,
    splice: bool,
) -> Result<()> {
    let mut lines = Vec::new();
    for path in results {
        for (number, text) in read(path)?.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            let line = serde_json::from_str(text).map_err(|err| {
                Error::InvalidRequest(format!(
                    "{}:{}: not JSON: {err}",
                    path.display(),
                    number + 1
                ))
            })?;
            lines.push(line);
        }
    }
    let section = vl_report::section(&lines);
    let md = if splice {
        let existing = read(out)?;
        vl_report::splice(
            &existing,
            section.as_deref(),
            &vl_report::setting_lines(&lines),
        )
    } else {
        let appendix = appendix.map(read).transpose()?;
        // The library's report, the view leader's section after its own, then the appendix.
        let mut md = render(&lines, &Machine::this_one(date), None);
        if let Some(section) = section {
            md.push_str(&section);
        }
        if let Some(appendix) = appendix {
            md.push_str(appendix.trim_end());
            md.push('\n');
        }
        md
    };
    std::fs::write(out, md).map_err(|err| Error::Internal(format!("{}: {err}", out.display())))
}

fn previous(from: &PathBuf) -> Result<()> {
    if !from.exists() {
        return Ok(());
    }
    for line in previous_lines(&read(from)?) {
        println!("{line}");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Matrix(args) => matrix::run(args).await,
        Command::Memory(args) => memory::run(args).await,
        Command::Recovery(args) => recovery::run(args).await,
        Command::Engines(args) => engines::run(args).await,
        Command::Failover(args) => viewleader::failover(args).await,
        Command::VlThroughput(args) => viewleader::throughput(args).await,
        Command::Previous { from } => previous(&from),
        Command::Report {
            results,
            appendix,
            date,
            out,
            splice,
        } => report(&results, appendix.as_ref(), date, &out, splice),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("ringleader-bench: {err}");
            ExitCode::from(err.exit_code())
        }
    }
}
