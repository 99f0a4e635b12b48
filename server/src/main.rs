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
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{self, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

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
    /// Run a broker: a single node, or a node of a cluster when the
    /// controller quorum's voters are given.
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
        /// Serve the schema registry (Confluent's REST API) on HOST:PORT
        /// (config key `schema.registry.listeners`; default: no registry).
        #[arg(long)]
        schema_registry_listen: Option<String>,
        /// This node's id (`node.id`); at least 1 in a cluster.
        #[arg(long)]
        node_id: Option<i32>,
        /// HOST:PORT where this node's controller listens for its peers
        /// (default: its entry in the voters).
        #[arg(long)]
        controller_listen: Option<String>,
        /// The controller quorum, ID@HOST:PORT,... (`controller.quorum.voters`).
        #[arg(long)]
        controller_quorum_voters: Option<String>,
        /// Record where requests spend their time: each shard writes its
        /// stage latency histograms to DIR/shard-N.jsonl once a second
        /// (results/latency-stages/breakdown.py reads them).
        #[arg(long, value_name = "DIR")]
        stage_latency: Option<PathBuf>,
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
        .finish()
        .with(QuietIopollProbe)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strom: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// glommio's reactor (a `log` target).
const GLOMMIO_REACTOR_TARGET: &str = "glommio::reactor";
/// How glommio 0.9 starts the message of its failed iopoll probe.
const IOPOLL_PROBE_MESSAGE: &str = "got unexpected error when probing iopoll support";

/// Drops glommio's failed-iopoll-probe error, and nothing else.
///
/// The first DMA file a shard opens on a block device makes glommio probe
/// whether the device's poll ring works, with a read through it. Where the
/// read fails with anything but ENOTSUP (EBADF on a virtio disk), glommio
/// 0.9 logs an ERROR and disables the poll ring for that device, which is
/// what ENOTSUP leads to as well: reads and writes go through the main ring
/// as they do on every device without polled I/O. Nothing is wrong, yet a
/// healthy start printed two red ERROR lines. This is the only event glommio
/// 0.9 logs at its reactor's target; matching the message too keeps any
/// other error there visible, should a later glommio add one.
struct QuietIopollProbe;

impl<S: tracing::Subscriber> Layer<S> for QuietIopollProbe {
    fn event_enabled(&self, event: &tracing::Event<'_>, _: layer::Context<'_, S>) -> bool {
        !is_iopoll_probe(event)
    }
}

fn is_iopoll_probe(event: &tracing::Event<'_>) -> bool {
    if *event.metadata().level() != tracing::Level::ERROR {
        return false;
    }
    let mut probe = ProbeFields {
        target_is_reactor: event.metadata().target() == GLOMMIO_REACTOR_TARGET,
        message_is_probe: false,
    };
    event.record(&mut probe);
    probe.target_is_reactor && probe.message_is_probe
}

/// What `is_iopoll_probe` looks for in an event. Events from the `log`
/// crate, as glommio's are, carry their target in the `log.target` field.
struct ProbeFields {
    target_is_reactor: bool,
    message_is_probe: bool,
}

impl Visit for ProbeFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "log.target" => self.target_is_reactor = value == GLOMMIO_REACTOR_TARGET,
            "message" => self.message_is_probe = value.starts_with(IOPOLL_PROBE_MESSAGE),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message_is_probe = format!("{value:?}").starts_with(IOPOLL_PROBE_MESSAGE);
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
        schema_registry_listen,
        node_id,
        controller_listen,
        controller_quorum_voters,
        stage_latency,
    } = cli.command;
    let mut broker_config = BrokerConfig::default();
    if let Some(path) = &config {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        broker_config
            .apply_toml(&text)
            .with_context(|| format!("config file {}", path.display()))?;
    }
    if let Some(id) = node_id {
        broker_config
            .set("node.id", &id.to_string())
            .context("--node-id")?;
    }
    if let Some(voters) = controller_quorum_voters {
        broker_config
            .set("controller.quorum.voters", &voters)
            .context("--controller-quorum-voters")?;
    }
    if controller_listen.is_some() {
        broker_config.cluster.controller_listen = controller_listen;
    }
    // `listeners = "PLAINTEXT://...,CONTROLLER://..."` in the file gives
    // the Kafka listener unless --listen does.
    if let Some(l) = broker_config.cluster.broker_listener() {
        broker_config.listen = l.to_string();
    }
    if let Some(d) = data_dir {
        broker_config.data_dir = d;
    }
    broker_config.stage_latency_dir = stage_latency;
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
    if let Some(l) = schema_registry_listen {
        broker_config.schema_registry_listen = Some(strom_registry::parse_listener(&l)?);
    }

    // Register the signal handlers before announcing readiness, so a
    // SIGTERM right after the listening line is a graceful shutdown.
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let registry_listen = broker_config.schema_registry_listen.clone();
    let schema_ids = broker_config.schema_ids.clone();
    let node_id = broker_config.node_id;
    let controlled_shutdown_wait = broker_config.cluster.controlled_shutdown_wait();
    let (advertised_host, _) = broker_config.advertised();
    let broker = Broker::start(broker_config)?;
    // The registry runs on its own thread, a Kafka client of this broker;
    // it lives until the process exits. In a cluster it learns the other
    // nodes' registries from the metadata, where it advertises its own.
    let registry = match &registry_listen {
        Some(listen) => Some(strom_registry::start(
            listen,
            broker.addr,
            schema_ids,
            |bound| {
                let url = strom_server::registry_cluster::registry_url(bound, &advertised_host);
                strom_server::registry_cluster::start(node_id, url)
            },
        )?),
        None => None,
    };
    // Not println!: it panics when stdout cannot be written (a full disk).
    let _ = writeln!(
        std::io::stdout().lock(),
        "strom listening on {}",
        broker.addr
    );
    if let Some(r) = &registry {
        let _ = writeln!(
            std::io::stdout().lock(),
            "schema registry listening on http://{}",
            r.addr
        );
    }
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
    // In a cluster, the controller moves this broker's leadership away
    // (and fences it) while it still serves, so clients find the new
    // leaders before it stops (a single node has no controller).
    if let Some(wait) = controlled_shutdown_wait {
        strom_server::cluster::controlled_shutdown(wait);
    }
    stop.store(true, Ordering::SeqCst);
    broker.join()?;
    tracing::info!("stopped cleanly");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Counts the events that reach it.
    struct Count(Arc<AtomicUsize>);

    impl<S: tracing::Subscriber> Layer<S> for Count {
        fn on_event(&self, _: &tracing::Event<'_>, _: layer::Context<'_, S>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// How many of the events `emit` makes get past `QuietIopollProbe`.
    fn passed(emit: impl FnOnce()) -> usize {
        let count = Arc::new(AtomicUsize::new(0));
        let subscriber = tracing_subscriber::registry()
            .with(QuietIopollProbe)
            .with(Count(count.clone()));
        tracing::subscriber::with_default(subscriber, emit);
        count.load(Ordering::SeqCst)
    }

    #[test]
    fn only_the_iopoll_probe_error_is_dropped() {
        let probe = "got unexpected error when probing iopoll support for file \"x\"";
        assert_eq!(
            passed(|| tracing::error!(target: "glommio::reactor", "{probe}")),
            0
        );
        // Another error at the reactor's target, the probe's message at
        // another level or from elsewhere: all kept.
        assert_eq!(
            passed(|| tracing::error!(target: "glommio::reactor", "ring is broken")),
            1
        );
        assert_eq!(
            passed(|| tracing::warn!(target: "glommio::reactor", "{probe}")),
            1
        );
        assert_eq!(
            passed(|| tracing::error!(target: "glommio::sys", "{probe}")),
            1
        );
    }
}
