//! `strom`: the broker binary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use strom_server::config::BrokerConfig;
use strom_server::server::Broker;

#[global_allocator]
static ALLOCATOR: strom_server::alloc::HugeMapAllocator = strom_server::alloc::HugeMapAllocator;

#[derive(Parser)]
#[command(
    name = "strom",
    version,
    about = "Strom: a Kafka-compatible event streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a single-node broker.
    Serve {
        /// Directory holding the logs and the metadata.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Address to listen on, HOST:PORT (default 0.0.0.0:9092).
        #[arg(long)]
        listen: Option<String>,
        /// HOST:PORT given to clients in Metadata (default: the listen address).
        #[arg(long)]
        advertised_listener: Option<String>,
        /// Number of shards (one per core; default: all cores).
        #[arg(long)]
        shards: Option<usize>,
        /// TOML file with Kafka broker config keys (num.partitions, log.retention.ms, ...).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let Command::Serve {
        data_dir,
        listen,
        advertised_listener,
        shards,
        config,
    } = cli.command;
    let mut broker_config = BrokerConfig::default();
    if let Some(path) = &config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        broker_config
            .apply_toml(&text)
            .with_context(|| format!("config file {}", path.display()))?;
    }
    if let Some(d) = data_dir {
        broker_config.data_dir = d;
    }
    if let Some(l) = listen {
        broker_config.listen = l;
    }
    if let Some(a) = advertised_listener {
        broker_config.advertised_listener = Some(a);
    }
    if let Some(n) = shards {
        anyhow::ensure!(n >= 1, "--shards must be at least 1");
        broker_config.shards = Some(n);
    }

    // Register the signal handlers before announcing readiness, so a
    // SIGTERM right after the listening line is a graceful shutdown.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let broker = Broker::start(broker_config)?;
    println!("strom listening on {}", broker.addr);
    let stop = broker.stop_handle();
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    stop.store(true, Ordering::SeqCst);
    broker.join()?;
    tracing::info!("stopped cleanly");
    Ok(())
}
