//! strom-bench: load generator and benchmarks.
//!
//! Module map:
//! - `engine_bench`: `strom-bench engine`, appends/reads through the engine
//!   API (no network) for the engine-versus-disk comparison.
//! - `run` (to come): `strom-bench run`, OMB workloads over the Kafka protocol.

mod engine_bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "strom-bench", about = "Benchmarks for Strom and any Kafka-compatible broker")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Drive the storage engine directly (no network).
    Engine(engine_bench::EngineArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    match Cli::parse().cmd {
        Cmd::Engine(args) => engine_bench::run(args),
    }
}
