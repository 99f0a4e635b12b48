//! strom-bench: load generator and benchmarks.
//!
//! Module map:
//! - `engine_bench`: `strom-bench engine`, appends/reads through the engine
//!   API (no network) for the engine-versus-disk comparison.
//! - `send_zc`: `strom-bench send-zc`, io_uring SEND against SEND_ZC over
//!   loopback TCP.
//! - the library (`strom_bench`): `strom-bench run`, OMB workloads over the
//!   Kafka protocol, `strom-bench report`, the results/README.md table, and
//!   `strom-bench compare`, several runs side by side.

mod engine_bench;
mod send_zc;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "strom-bench",
    about = "Benchmarks for Strom and any Kafka-compatible broker"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive the storage engine directly (no network).
    Engine(engine_bench::EngineArgs),
    /// Loopback TCP through io_uring: plain SEND against zero-copy SEND_ZC.
    SendZc(send_zc::SendZcArgs),
    /// Run an OpenMessaging Benchmark workload against a Kafka-compatible broker.
    Run(Box<strom_bench::run::RunArgs>),
    /// Write the Markdown table of every result JSON in a directory.
    Report {
        /// Directory holding result JSON files.
        #[arg(long)]
        dir: PathBuf,
        /// fio JSON report of the disk baseline.
        #[arg(long)]
        fio: Option<PathBuf>,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// One Markdown table of several result JSON files side by side
    /// (throughput, publish and end-to-end p50/p99/p99.9), with the ratios
    /// to the first.
    Compare {
        /// Result JSON files; the first is the base of the ratios.
        #[arg(required = true, num_args = 1..)]
        runs: Vec<PathBuf>,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Engine(args) => engine_bench::run(args),
        Cmd::SendZc(args) => send_zc::run(args),
        Cmd::Run(args) => strom_bench::run::run(*args).map(|_| ()),
        Cmd::Report { dir, fio, out } => {
            let table = strom_bench::report::readme_table(&dir, fio.as_deref())?;
            match out {
                Some(p) => std::fs::write(&p, table)?,
                None => print!("{table}"),
            }
            Ok(())
        }
        Cmd::Compare { runs, out } => {
            let table = strom_bench::report::side_by_side(&strom_bench::report::read_runs(&runs)?);
            match out {
                Some(p) => std::fs::write(&p, table)?,
                None => print!("{table}"),
            }
            Ok(())
        }
    }
}
