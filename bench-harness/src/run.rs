//! `strom-bench run`: creates the workload's topics, starts consumers, then
//! producers, shows a progress line, and writes the result JSON and plots.
//!
//! Threads: one generator/sender thread and one ack-reader thread per
//! producer connection, one fetch thread per consumer connection, and the
//! main thread sampling counters once a second. Clients share nothing on
//! the data path except relaxed atomic counters.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use rand::{Rng, SeedableRng};

use crate::affinity::{self, CpuList};
use crate::consumer::{self, ConsumerConfig, ConsumerResult};
use crate::kafka::{self, Conn};
use crate::latency::LatencyRecorder;
use crate::plot;
use crate::producer::{
    self, Acks, ProducerConfig, ProducerResult, Stats, Timebase, Timeline, MAX_IN_FLIGHT_IDEMPOTENT,
};
use crate::records::Compression;
use crate::report::{self, Machine, RunResult, Sample, Settings};
use crate::workload::Workload;

/// How long consumers may take to catch up with the producers at the end.
const CONSUMER_CATCH_UP: Duration = Duration::from_secs(10);
/// OMB's default payload pool when useRandomizedPayloads is set.
const DEFAULT_PAYLOAD_POOL: u32 = 1000;

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Any broker of the cluster, HOST:PORT.
    #[arg(long)]
    pub bootstrap: String,
    /// OpenMessaging Benchmark workload YAML.
    #[arg(long)]
    pub workload: PathBuf,
    /// Directory for the result JSON and SVG plots.
    #[arg(long)]
    pub out: PathBuf,
    /// Measured seconds (overrides testDurationMinutes).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Warm-up seconds before measuring (default: warmupDurationMinutes, else
    /// a fifth of the duration, between 1 and 60 s).
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Producer acks: 0, 1 or all [default: 1, or all with --idempotent].
    #[arg(long)]
    pub acks: Option<String>,
    /// Idempotent producers (Kafka's enable.idempotence=true): each producer
    /// gets a producer id from InitProducerId on the bootstrap broker and
    /// stamps it, its epoch and per-partition sequence numbers on every
    /// batch. Needs acks all and --max-in-flight at most 5, as in Kafka.
    #[arg(long)]
    pub idempotent: bool,
    /// Producer batch size per partition (Kafka's batch.size; OMB's Kafka
    /// driver uses 1 MiB).
    #[arg(long, default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// Producer linger (Kafka's linger.ms; OMB's Kafka driver uses 1).
    #[arg(long, default_value_t = 1.0)]
    pub linger_ms: f64,
    /// Producer compression (Kafka's compression.type): every batch's
    /// records are compressed with the engine's Kafka-compatible codecs
    /// (gzip, snappy in the xerial frame, lz4 frame, zstd level 3).
    /// Compressible payloads need a workload with useRandomizedPayloads and
    /// randomBytesRatio below 1, or a compressible payloadFile.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Pin every thread of the harness to these CPUs (sched_setaffinity),
    /// as `taskset -c` takes them: 1, 0-1, 0,2-3. Recorded in the result.
    #[arg(long, value_parser = affinity::parse_cpu_list)]
    pub cpus: Option<CpuList>,
    /// Produce requests in flight per connection.
    #[arg(long, default_value_t = 5)]
    pub max_in_flight: usize,
    /// Bytes of sealed, unsent batches per producer before it blocks (Kafka's buffer.memory).
    #[arg(long, default_value_t = 32 << 20)]
    pub buffer_bytes: usize,
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i16,
    /// Overrides producerRate (messages/s over all producers; 0 = max).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Overrides partitionsPerTopic.
    #[arg(long)]
    pub partitions: Option<u32>,
    /// Topic config for the created topics, KEY=VALUE (repeatable), e.g.
    /// segment.bytes=67108864.
    #[arg(long = "topic-config", value_parser = parse_key_value)]
    pub topic_configs: Vec<(String, String)>,
    /// File name stem of the outputs (default: the workload name).
    #[arg(long)]
    pub name: Option<String>,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Name the topics NAME-0, NAME-1, ... instead of
    /// bench-<stem>-<time>-<i> (e.g. to register a schema under
    /// NAME-0-value before the run); they must not exist yet.
    #[arg(long)]
    pub topic: Option<String>,
    /// Bytes, in hex, that every record value starts with, e.g.
    /// 0000000001 for Confluent's framing (magic byte 0, schema id 1); the
    /// send-time stamp follows them and the value keeps messageSize.
    /// End-to-end latency then comes from the record timestamps (ms).
    #[arg(long, value_parser = check_hex)]
    pub value_prefix: Option<String>,
}

fn check_hex(s: &str) -> Result<String, String> {
    parse_hex(s).map(|_| s.to_string())
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if !s.len().is_multiple_of(2) {
        return Err(format!("`{s}`: an odd number of hex digits"));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("`{s}`: {e}")))
        .collect()
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got `{s}`")),
    }
}

struct Plan {
    workload: Workload,
    acks: Acks,
    warmup_s: f64,
    duration_s: f64,
    stem: String,
}

fn plan(args: &RunArgs) -> Result<Plan> {
    let mut workload = Workload::from_file(&args.workload)?;
    if let Some(r) = args.rate {
        workload.producer_rate = r;
    }
    if let Some(p) = args.partitions {
        workload.partitions_per_topic = p;
    }
    if let Some(d) = args.duration {
        workload.test_duration_minutes = d / 60.0;
    }
    workload.validate(&args.workload.display().to_string())?;
    let acks = Acks::for_producer(args.acks.as_deref(), args.idempotent)?;
    if args.batch_bytes == 0 || args.max_in_flight == 0 || args.buffer_bytes == 0 {
        bail!("--batch-bytes, --max-in-flight and --buffer-bytes must be positive");
    }
    if args.linger_ms.is_nan() || args.linger_ms < 0.0 {
        bail!("--linger-ms must be >= 0");
    }
    if args.idempotent && args.max_in_flight > MAX_IN_FLIGHT_IDEMPOTENT {
        bail!(
            "--idempotent allows at most --max-in-flight {MAX_IN_FLIGHT_IDEMPOTENT}, got {} \
             (Kafka's producer has the same limit)",
            args.max_in_flight
        );
    }
    let duration_s = workload.test_duration_minutes * 60.0;
    let warmup_s = match (args.warmup, workload.warmup_duration_minutes) {
        (Some(w), _) => w,
        (None, Some(m)) => m * 60.0,
        (None, None) => (duration_s / 5.0).clamp(1.0, 60.0),
    };
    if warmup_s.is_nan() || warmup_s < 0.0 {
        bail!("--warmup must be >= 0");
    }
    let stem = args.name.clone().unwrap_or_else(|| workload.slug());
    Ok(Plan {
        workload,
        acks,
        warmup_s,
        duration_s,
        stem,
    })
}

/// Payload templates: the payload file (cycled to messageSize), or random
/// bytes; a pool of them with useRandomizedPayloads.
fn payloads(w: &Workload, workload_path: &Path) -> Result<Vec<Vec<u8>>> {
    let size = w.message_size as usize;
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x0057_470b);
    if w.use_randomized_payloads == Some(true) {
        let ratio = w.random_bytes_ratio.unwrap_or(1.0);
        let pool = w
            .randomized_payload_pool_size
            .unwrap_or(DEFAULT_PAYLOAD_POOL);
        let random_len = (size as f64 * ratio) as usize;
        return Ok((0..pool)
            .map(|_| {
                let mut v = vec![0u8; size];
                rng.fill(&mut v[..random_len]);
                v
            })
            .collect());
    }
    if let Some(f) = &w.payload_file {
        let near_workload = workload_path.parent().map(|d| d.join(f));
        let found = near_workload
            .into_iter()
            .chain([PathBuf::from(f)])
            .find(|p| p.is_file());
        match found {
            Some(p) => {
                let data = std::fs::read(&p)
                    .with_context(|| format!("reading payloadFile {}", p.display()))?;
                if data.is_empty() {
                    bail!("payloadFile {} is empty", p.display());
                }
                return Ok(vec![data.iter().copied().cycle().take(size).collect()]);
            }
            None => tracing::warn!("payloadFile {f} not found; using random bytes of messageSize"),
        }
    }
    let mut v = vec![0u8; size];
    rng.fill(&mut v[..]);
    Ok(vec![v])
}

fn group_by_leader(
    parts: &[(i32, String)],
    keep: impl Fn(usize) -> bool,
) -> BTreeMap<String, Vec<i32>> {
    let mut by_leader: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (i, (p, leader)) in parts.iter().enumerate() {
        if keep(i) {
            by_leader.entry(leader.clone()).or_default().push(*p);
        }
    }
    by_leader
}

type Worker<T> = JoinHandle<Result<T>>;

pub fn run(args: RunArgs) -> Result<RunResult> {
    let plan = plan(&args)?;
    // Before pinning: the machine's cores, not the harness's share of them.
    let machine = Machine::detect();
    let started = std::time::Instant::now();
    let cpu_before_s = affinity::process_cpu_s().unwrap_or(0.0);
    if let Some(cpus) = &args.cpus {
        // Every thread of the run starts after this and inherits the mask.
        affinity::pin_current_thread(cpus)
            .with_context(|| format!("--cpus {cpus}: sched_setaffinity"))?;
    }
    let w = &plan.workload;
    let payloads = Arc::new(payloads(w, &args.workload)?);
    let value_prefix = match &args.value_prefix {
        Some(hex) => parse_hex(hex).map_err(|e| anyhow::anyhow!("--value-prefix {e}"))?,
        None => Vec::new(),
    };
    let key = w
        .key_size_bytes
        .filter(|&k| k > 0)
        .map(|k| vec![b'k'; k as usize]);

    let mut admin = Conn::connect(&args.bootstrap)?;
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let topics: Vec<String> = (0..w.topics)
        .map(|i| match &args.topic {
            Some(name) => format!("{name}-{i}"),
            None => format!("bench-{}-{unique}-{i}", plan.stem),
        })
        .collect();
    kafka::create_topics(
        &mut admin,
        &topics,
        w.partitions_per_topic,
        args.replication_factor,
        &args.topic_configs,
    )?;
    let layouts = kafka::wait_for_layout(&mut admin, &topics, kafka::REQUEST_TIMEOUT)?;
    // One producer id per OMB producer, from the bootstrap broker as a Kafka
    // producer gets it. Its connections (one per leader) write disjoint
    // partitions, so they share it and keep their own sequences.
    let producer_count = layouts.len() * w.producers_per_topic as usize;
    let mut identities = Vec::with_capacity(producer_count);
    for _ in 0..producer_count {
        identities.push(if args.idempotent {
            Some(kafka::init_producer_id(&mut admin)?)
        } else {
            None
        });
    }
    let mut identities = identities.into_iter();

    let tb = Timebase::new();
    let stats = Arc::new(Stats::default());
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let abort = Arc::new(AtomicBool::new(false));

    // Consumers connect and find the log end before anything is produced.
    let mut consumer_plans = Vec::new();
    for layout in &layouts {
        for _sub in 0..w.subscriptions_per_topic {
            let n = w.consumer_per_subscription as usize;
            for c in 0..n {
                for (addr, partitions) in group_by_leader(&layout.partitions, |i| i % n == c) {
                    let cfg = ConsumerConfig {
                        addr,
                        topic: layout.name.clone(),
                        partitions,
                        backlog_bytes: (w.consumer_backlog_size_gb * 1024.0 * 1024.0 * 1024.0)
                            as u64,
                        stamp_in_payload: value_prefix.is_empty(),
                    };
                    let (conn, offsets) = consumer::prepare(&cfg)?;
                    consumer_plans.push((cfg, conn, offsets));
                }
            }
        }
    }

    let start_ns = tb.now_ns() + 200_000_000;
    let measure_start_ns = start_ns + (plan.warmup_s * 1e9) as u64;
    let tl = Timeline {
        start_ns,
        measure_start_ns,
        end_ns: measure_start_ns + (plan.duration_s * 1e9) as u64,
    };

    let mut consumers: Vec<Worker<ConsumerResult>> = Vec::new();
    for (cfg, conn, offsets) in consumer_plans {
        let (stats, stop, abort) = (stats.clone(), stop_consumers.clone(), abort.clone());
        consumers.push(
            std::thread::Builder::new()
                .name("consumer".into())
                .spawn(move || {
                    let r = consumer::run(cfg, conn, offsets, tb, tl, stats.clone(), stop);
                    if let Err(e) = &r {
                        stats.note_error(format!("consumer: {e:#}"));
                        abort.store(true, Ordering::Relaxed);
                    }
                    r
                })?,
        );
    }

    let producers_total = (w.topics * w.producers_per_topic) as f64;
    let mut producers: Vec<Worker<ProducerResult>> = Vec::new();
    for layout in &layouts {
        let n_parts = layout.partitions.len();
        for j in 0..w.producers_per_topic as usize {
            let idempotence = identities.next().flatten();
            // Each producer starts its sticky rotation at a different partition.
            let rotated: Vec<(i32, String)> = (0..n_parts)
                .map(|i| layout.partitions[(i + j) % n_parts].clone())
                .collect();
            for (addr, partitions) in group_by_leader(&rotated, |_| true) {
                let share = partitions.len() as f64 / n_parts as f64;
                let cfg = ProducerConfig {
                    addr,
                    topic: layout.name.clone(),
                    partitions,
                    rate_per_s: w.producer_rate / producers_total * share,
                    payloads: payloads.clone(),
                    key: key.clone(),
                    acks: plan.acks,
                    batch_bytes: args.batch_bytes,
                    linger_ns: (args.linger_ms * 1e6) as u64,
                    max_in_flight: args.max_in_flight,
                    buffer_bytes: args.buffer_bytes,
                    idempotence,
                    value_prefix: value_prefix.clone(),
                    compression: args.compression,
                };
                let (stats, abort, stop) = (stats.clone(), abort.clone(), stop_consumers.clone());
                producers.push(std::thread::Builder::new().name("producer".into()).spawn(
                    move || {
                        let r = producer::run(cfg, tb, tl, stats.clone(), abort.clone());
                        if let Err(e) = &r {
                            stats.note_error(format!("producer: {e:#}"));
                            abort.store(true, Ordering::Relaxed);
                            stop.store(true, Ordering::Relaxed);
                        }
                        r
                    },
                )?);
            }
        }
    }

    let timeseries = progress(&plan, &args, tb, tl, &stats, &abort);

    let mut publish = LatencyRecorder::new(tl.measure_start_ns, tl.end_ns);
    let (mut produced_window_msgs, mut produced_window_bytes) = (0u64, 0u64);
    let (mut records_bytes, mut records_wire_bytes) = (0u64, 0u64);
    let mut first_err: Option<anyhow::Error> = None;
    for h in producers {
        match h
            .join()
            .map_err(|_| anyhow!("producer thread panicked"))
            .and_then(|r| r)
        {
            Ok(r) => {
                publish.merge(&r.publish);
                produced_window_msgs += r.window_msgs;
                produced_window_bytes += r.window_bytes;
                records_bytes += r.records_bytes;
                records_wire_bytes += r.records_wire_bytes;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // Let consumers catch up with everything that was acked.
    let expected = stats.produced_msgs.load(Ordering::Relaxed) * w.subscriptions_per_topic as u64;
    let deadline = tb.now_ns() + CONSUMER_CATCH_UP.as_nanos() as u64;
    while stats.consumed_msgs.load(Ordering::Relaxed) < expected
        && tb.now_ns() < deadline
        && !abort.load(Ordering::Relaxed)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop_consumers.store(true, Ordering::Relaxed);
    let mut e2e = LatencyRecorder::new(tl.measure_start_ns, tl.end_ns);
    let (mut consumed_window_msgs, mut consumed_window_bytes) = (0u64, 0u64);
    for h in consumers {
        match h
            .join()
            .map_err(|_| anyhow!("consumer thread panicked"))
            .and_then(|r| r)
        {
            Ok(r) => {
                e2e.merge(&r.e2e);
                consumed_window_msgs += r.window_msgs;
                consumed_window_bytes += r.window_bytes;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e.context("benchmark run failed"));
    }

    let d = plan.duration_s;
    let harness_cpu_s = affinity::process_cpu_s().unwrap_or(0.0) - cpu_before_s;
    let result = RunResult {
        schema: report::SCHEMA.to_string(),
        timestamp: report::now_rfc3339(),
        workload: plan.workload.clone(),
        settings: Settings {
            bootstrap: args.bootstrap.clone(),
            acks: plan.acks.label().to_string(),
            idempotent: args.idempotent,
            batch_bytes: args.batch_bytes,
            linger_ms: args.linger_ms,
            compression: args.compression.label().to_string(),
            cpus: args.cpus.as_ref().map(|c| c.0.clone()),
            max_in_flight: args.max_in_flight,
            replication_factor: args.replication_factor,
            topic_configs: args
                .topic_configs
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect(),
            warmup_s: plan.warmup_s,
            duration_s: d,
            topics,
        },
        machine,
        target_msgs_per_s: w.producer_rate,
        produce_msgs_per_s: produced_window_msgs as f64 / d,
        produce_mib_per_s: report::mib(produced_window_bytes as f64) / d,
        consume_msgs_per_s: consumed_window_msgs as f64 / d,
        consume_mib_per_s: report::mib(consumed_window_bytes as f64) / d,
        harness_cpu_s,
        harness_cpu_cores: harness_cpu_s / started.elapsed().as_secs_f64().max(1e-9),
        compression_ratio: if records_wire_bytes > 0 {
            records_bytes as f64 / records_wire_bytes as f64
        } else {
            1.0
        },
        publish_latency_ms: publish.percentiles(),
        e2e_latency_ms: e2e.percentiles(),
        produced_msgs_total: stats.produced_msgs.load(Ordering::Relaxed),
        produce_errors: stats.produce_errors.load(Ordering::Relaxed),
        fetch_errors: stats.fetch_errors.load(Ordering::Relaxed),
        publish_latency_distribution: publish.distribution(),
        e2e_latency_distribution: e2e.distribution(),
        timeseries,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let json = args.out.join(format!("{}.json", plan.stem));
    result.write(&json)?;
    plot::throughput(
        &result,
        &args.out.join(format!("{}-throughput.svg", plan.stem)),
    )?;
    plot::latency(
        &result,
        &args.out.join(format!("{}-latency.svg", plan.stem)),
    )?;
    print!("{}", result.summary_table());
    println!("wrote {}", json.display());
    if let Ok(Some(e)) = stats.first_error.lock().map(|e| e.clone()) {
        eprintln!("first error: {e}");
    }
    Ok(result)
}

/// Samples the counters once a second until the end of the timeline, drawing
/// the progress line; returns the per-second throughput samples.
fn progress(
    plan: &Plan,
    args: &RunArgs,
    tb: Timebase,
    tl: Timeline,
    stats: &Stats,
    abort: &AtomicBool,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut last = (0u64, 0u64, 0u64, 0u64);
    let mut t_ns = tl.start_ns;
    let total_s = plan.warmup_s + plan.duration_s;
    while t_ns < tl.end_ns && !abort.load(Ordering::Relaxed) {
        let next = (t_ns + 1_000_000_000).min(tl.end_ns);
        tb.sleep_until(next);
        let dt = (next - t_ns) as f64 / 1e9;
        t_ns = next;
        let now = (
            stats.produced_msgs.load(Ordering::Relaxed),
            stats.produced_bytes.load(Ordering::Relaxed),
            stats.consumed_msgs.load(Ordering::Relaxed),
            stats.consumed_bytes.load(Ordering::Relaxed),
        );
        let s = Sample {
            t_s: (t_ns - tl.start_ns) as f64 / 1e9,
            produce_msgs_per_s: (now.0 - last.0) as f64 / dt,
            produce_mib_per_s: report::mib((now.1 - last.1) as f64) / dt,
            consume_msgs_per_s: (now.2 - last.2) as f64 / dt,
            consume_mib_per_s: report::mib((now.3 - last.3) as f64) / dt,
        };
        last = now;
        samples.push(s);
        if !args.quiet {
            let phase = if t_ns <= tl.measure_start_ns {
                "warm-up"
            } else {
                "measure"
            };
            let errors = stats.produce_errors.load(Ordering::Relaxed)
                + stats.fetch_errors.load(Ordering::Relaxed);
            eprint!(
                "\r[{phase} {:>5.0}/{total_s:.0}s] publish {:>9.0} msg/s {:>8.1} MiB/s | consume {:>9.0} msg/s {:>8.1} MiB/s | errors {errors}   ",
                s.t_s, s.produce_msgs_per_s, s.produce_mib_per_s, s.consume_msgs_per_s, s.consume_mib_per_s
            );
            let _ = std::io::stderr().flush();
        }
    }
    if !args.quiet {
        eprintln!();
    }
    samples
}
