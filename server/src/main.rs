//! `strom`: the broker binary.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use strom_server::config::BrokerConfig;
use strom_server::server::Broker;

/// How often the main thread looks for a signal between waits for a shard's exit.
const SIGNAL_POLL: Duration = Duration::from_millis(100);
/// How long the other shards get to close their logs after one failed.
const SHARD_STOP_TIMEOUT: Duration = Duration::from_secs(30);

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
        // By default a failed write of a log line is reported with
        // eprintln!, which panics when stderr is the file that failed (a
        // full disk) and takes the shard down with it. A lost log line
        // must not stop the broker.
        .log_internal_errors(false)
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
    // Not println!: it panics when stdout cannot be written (a full disk).
    let _ = writeln!(
        std::io::stdout().lock(),
        "strom listening on {}",
        broker.addr
    );
    let stop = broker.stop_handle();
    // Wait for a signal, and watch the shards meanwhile: a shard that ends
    // on its own has panicked, and a broker missing a shard must not look
    // alive to clients and supervisors.
    loop {
        if let Some(sig) = signals.pending().next() {
            tracing::info!(signal = sig, "shutting down");
            break;
        }
        if let Some(id) = broker.shard_exited(SIGNAL_POLL) {
            tracing::error!(
                shard = id,
                "a shard stopped unexpectedly; stopping the broker"
            );
            return Err(broker.stop_after_failure(id, SHARD_STOP_TIMEOUT));
        }
    }
    stop.store(true, Ordering::SeqCst);
    broker.join()?;
    tracing::info!("stopped cleanly");
    Ok(())
}
