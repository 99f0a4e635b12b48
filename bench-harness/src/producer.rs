//! A producer: one TCP connection, one thread that generates, batches and
//! sends, and one thread that reads the acks. Produce requests are
//! pipelined up to `max_in_flight` per connection, like a Kafka producer
//! with `max.in.flight.requests.per.connection`.
//!
//! Partitioning is sticky, as the Kafka producer does for keyless records:
//! records fill one partition's batch until it is full (`batch_bytes`) or
//! has lingered (`linger`) and a request may go out (a free slot in the
//! window), then the next batch goes to the next partition. While acks are
//! slow, batches grow, as in the Kafka producer's accumulator.
//! At most one batch per partition goes into a request.
//!
//! An idempotent producer (`idempotence` set) stamps its producer id and
//! epoch on every batch, and each partition's next sequence number, counted
//! from 0 in records. Sequences are assigned when a batch is sealed: sealed
//! batches wait in one FIFO, and a request takes the oldest batch of each
//! partition, so each partition's batches go out in the order they were
//! sealed, and the broker applies one connection's requests in order.
//!
//! With compression, a batch's records are compressed when it is sealed,
//! on the generating thread, as Kafka's producer compresses on the thread
//! that appends. `batch_bytes` counts the records before compression (Kafka
//! counts its estimate of the compressed size, so its compressed batches
//! hold more records).

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use crossbeam::channel::{self, Receiver, RecvTimeoutError, Sender};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::{self, Conn, ProducerIdentity};
use crate::latency::LatencyRecorder;
use crate::pacer::Pacer;
use crate::records::{increment_sequence, BatchBuilder, Compression, ProducerFields};

/// Largest produce request the harness builds.
const MAX_REQUEST_BYTES: usize = 32 << 20;
/// Upper bound of a record's framing: length, attributes, timestamp delta,
/// offset delta, key length, value length and header count varints.
const RECORD_OVERHEAD_MAX_BYTES: usize = 5 + 1 + 10 + 5 + 5 + 5 + 1;
/// How long producers wait for outstanding acks after the run ends.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Most produce requests in flight per connection with idempotence, as in
/// Kafka's producer: the broker remembers the last five batches of each
/// producer and partition to recognise a retry.
pub const MAX_IN_FLIGHT_IDEMPOTENT: usize = 5;

/// A monotonic clock shared by all threads of a run, with its wall-clock
/// origin so payload timestamps compare across threads.
#[derive(Debug, Clone, Copy)]
pub struct Timebase {
    origin: Instant,
    wall_origin_ns: u64,
}

impl Timebase {
    pub fn new() -> Timebase {
        let origin = Instant::now();
        let wall_origin_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Timebase {
            origin,
            wall_origin_ns,
        }
    }
    pub fn now_ns(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
    pub fn wall_ns(&self, mono_ns: u64) -> u64 {
        self.wall_origin_ns + mono_ns
    }
    pub fn mono_from_wall_ns(&self, wall_ns: u64) -> Option<u64> {
        wall_ns.checked_sub(self.wall_origin_ns)
    }
    pub fn sleep_until(&self, t_ns: u64) {
        let now = self.now_ns();
        if t_ns > now {
            std::thread::sleep(Duration::from_nanos(t_ns - now));
        }
    }
}

impl Default for Timebase {
    fn default() -> Self {
        Timebase::new()
    }
}

/// The phases of a run, in Timebase nanoseconds.
#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub start_ns: u64,
    pub measure_start_ns: u64,
    pub end_ns: u64,
}

/// Counters shared with the progress display.
#[derive(Debug, Default)]
pub struct Stats {
    pub produced_msgs: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub consumed_msgs: AtomicU64,
    pub consumed_bytes: AtomicU64,
    pub produce_errors: AtomicU64,
    /// Retried fetch errors.
    pub fetch_errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl Stats {
    pub fn note_error(&self, msg: String) {
        if let Ok(mut e) = self.first_error.lock() {
            if e.is_none() {
                *e = Some(msg);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
    /// The acks of a producer: `--acks` when given, else all for an
    /// idempotent producer and 1 (the harness's default) otherwise. Like
    /// Kafka's producer, which refuses `enable.idempotence=true` with acks 0
    /// or 1 (ConfigException), an explicit conflict is an error.
    pub fn for_producer(acks: Option<&str>, idempotent: bool) -> Result<Acks> {
        let Some(s) = acks else {
            return Ok(if idempotent { Acks::All } else { Acks::Leader });
        };
        let acks = Acks::parse(s)?;
        if idempotent && acks != Acks::All {
            bail!(
                "--idempotent needs --acks all, got --acks {s}: an idempotent producer must have \
                 every batch acknowledged by all replicas (Kafka's producer refuses \
                 enable.idempotence=true with acks={s})"
            );
        }
        Ok(acks)
    }
    pub fn parse(s: &str) -> Result<Acks> {
        match s {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => bail!("--acks must be 0, 1 or all, got {s}"),
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProducerConfig {
    pub addr: String,
    pub topic: String,
    pub partitions: Vec<i32>,
    /// Messages per second for this producer; 0 = as fast as possible.
    pub rate_per_s: f64,
    pub payloads: Arc<Vec<Vec<u8>>>,
    pub key: Option<Vec<u8>>,
    pub acks: Acks,
    pub batch_bytes: usize,
    pub linger_ns: u64,
    pub max_in_flight: usize,
    /// Bytes of sealed-but-unsent batches before generation pauses (Kafka's
    /// `buffer.memory`).
    pub buffer_bytes: usize,
    /// The producer id and epoch of an idempotent producer (acks must be all).
    pub idempotence: Option<ProducerIdentity>,
    /// Bytes every value starts with, before the send-time stamp.
    pub value_prefix: Vec<u8>,
    /// The codec of every batch (Kafka's `compression.type`).
    pub compression: Compression,
}

/// What a producer measured.
#[derive(Debug)]
pub struct ProducerResult {
    pub publish: LatencyRecorder,
    /// Acked messages intended inside the measurement window.
    pub window_msgs: u64,
    pub window_bytes: u64,
    /// Record bytes of every batch built, before compression.
    pub records_bytes: u64,
    /// The same records' bytes as sent (after compression).
    pub records_wire_bytes: u64,
}

struct ReadyBatch {
    partition: i32,
    bytes: Bytes,
    intended_ns: Vec<u64>,
    payload_bytes: u64,
}

struct OpenBatch {
    partition: i32,
    builder: BatchBuilder,
    intended_ns: Vec<u64>,
    payload_bytes: u64,
    created_ns: u64,
}

struct InFlight {
    correlation_id: i32,
    version: i16,
    batches: Vec<(i32, Vec<u64>, u64)>,
}

/// Each partition's next base sequence for one idempotent producer.
#[derive(Debug)]
struct Sequencer {
    identity: ProducerIdentity,
    next: HashMap<i32, i32>,
}

impl Sequencer {
    fn new(identity: ProducerIdentity) -> Sequencer {
        Sequencer {
            identity,
            next: HashMap::new(),
        }
    }

    /// The header fields of the next batch of `records` records to
    /// `partition`; the partition's sequence moves past them.
    fn assign(&mut self, partition: i32, records: i32) -> ProducerFields {
        assert!(records > 0, "an empty batch is never sent");
        let next = self.next.entry(partition).or_insert(0);
        let base_sequence = *next;
        *next = increment_sequence(base_sequence, records);
        ProducerFields {
            producer_id: self.identity.producer_id,
            producer_epoch: self.identity.producer_epoch,
            base_sequence,
        }
    }
}

/// Runs one producer to the end of the timeline.
pub fn run(
    cfg: ProducerConfig,
    tb: Timebase,
    tl: Timeline,
    stats: Arc<Stats>,
    abort: Arc<AtomicBool>,
) -> Result<ProducerResult> {
    if cfg.partitions.is_empty() || cfg.payloads.is_empty() {
        bail!("producer for {} without partitions or payloads", cfg.topic);
    }
    if cfg.idempotence.is_some() && cfg.acks != Acks::All {
        bail!("an idempotent producer needs acks all");
    }
    let mut conn = Conn::connect(&cfg.addr)?;
    let version = conn
        .versions
        .pick::<ProduceRequest>(kafka::PRODUCE_MAX_VERSION)?;
    let reader_stream = conn.stream.try_clone()?;
    let (meta_tx, meta_rx) = channel::unbounded::<InFlight>();
    let (done_tx, done_rx) = channel::unbounded::<()>();
    let reader = if cfg.acks == Acks::None {
        drop(meta_rx);
        None
    } else {
        let (stats, tl_copy) = (stats.clone(), tl);
        let idempotent = cfg.idempotence.is_some();
        Some(
            std::thread::Builder::new()
                .name("ack-reader".into())
                .spawn(move || {
                    ack_reader(
                        reader_stream,
                        meta_rx,
                        done_tx,
                        tb,
                        tl_copy,
                        stats,
                        idempotent,
                    )
                })?,
        )
    };
    let mut w = Writer {
        cfg: &cfg,
        tb,
        tl,
        stats: &stats,
        version,
        pacer: Pacer::new(cfg.rate_per_s, tl.start_ns),
        sequencer: cfg.idempotence.map(Sequencer::new),
        open: None,
        ready: VecDeque::new(),
        ready_bytes: 0,
        in_flight: 0,
        next_partition: 0,
        next_payload: 0,
        acks0: LatencyRecorder::new(tl.measure_start_ns, tl.end_ns),
        acks0_msgs: 0,
        acks0_bytes: 0,
        records_bytes: 0,
        records_wire_bytes: 0,
    };
    let sent = w.run(&mut conn, &meta_tx, &done_rx, &abort);
    drop(meta_tx);
    let (acks0, acks0_msgs, acks0_bytes) = (w.acks0.clone(), w.acks0_msgs, w.acks0_bytes);
    let (records_bytes, records_wire_bytes) = (w.records_bytes, w.records_wire_bytes);
    let acked = reader.map(|h| {
        h.join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("ack reader panicked")))
    });
    // The reader's error (a broker error code) explains a writer failure.
    match (sent, acked) {
        (_, Some(Err(e))) | (Err(e), _) => Err(e.context(format!("producer for {}", cfg.topic))),
        (Ok(()), Some(Ok(r))) => Ok(ProducerResult {
            records_bytes,
            records_wire_bytes,
            ..r
        }),
        (Ok(()), None) => Ok(ProducerResult {
            publish: acks0,
            window_msgs: acks0_msgs,
            window_bytes: acks0_bytes,
            records_bytes,
            records_wire_bytes,
        }),
    }
}

struct Writer<'a> {
    cfg: &'a ProducerConfig,
    tb: Timebase,
    tl: Timeline,
    stats: &'a Stats,
    version: i16,
    pacer: Pacer,
    sequencer: Option<Sequencer>,
    open: Option<OpenBatch>,
    ready: VecDeque<ReadyBatch>,
    ready_bytes: usize,
    in_flight: usize,
    next_partition: usize,
    next_payload: usize,
    // acks=0 has no acks: latency is measured to the completed socket write.
    acks0: LatencyRecorder,
    acks0_msgs: u64,
    acks0_bytes: u64,
    records_bytes: u64,
    records_wire_bytes: u64,
}

impl Writer<'_> {
    fn run(
        &mut self,
        conn: &mut Conn,
        meta_tx: &Sender<InFlight>,
        done_rx: &Receiver<()>,
        abort: &AtomicBool,
    ) -> Result<()> {
        self.tb.sleep_until(self.tl.start_ns);
        loop {
            if abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            while done_rx.try_recv().is_ok() {
                self.in_flight -= 1;
            }
            let now = self.tb.now_ns();
            if now >= self.tl.end_ns {
                // A late wake-up must not drop messages scheduled before the end.
                if self.pacer.is_paced() {
                    self.generate(self.tl.end_ns - 1)?;
                }
                break;
            }
            self.generate(now)?;
            self.seal_if_lingered(now)?;
            self.send_ready(conn, meta_tx)?;
            self.wait(done_rx, now)?;
        }
        // Everything intended before the end still goes out and is acked.
        if let Some(open) = self.open.take() {
            self.seal(open)?;
        }
        let deadline = self.tb.now_ns() + DRAIN_TIMEOUT.as_nanos() as u64;
        while !self.ready.is_empty() || self.in_flight > 0 {
            if abort.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.send_ready(conn, meta_tx)?;
            if self.in_flight == 0 {
                continue;
            }
            match done_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => self.in_flight -= 1,
                Err(RecvTimeoutError::Timeout) if self.tb.now_ns() < deadline => {}
                Err(RecvTimeoutError::Timeout) => {
                    bail!("acks still outstanding {DRAIN_TIMEOUT:?} after the run ended")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    bail!("ack reader stopped with requests in flight")
                }
            }
        }
        Ok(())
    }

    /// Appends every message that is due (paced) or that fits (max rate).
    fn generate(&mut self, now: u64) -> Result<()> {
        let mut budget = if self.pacer.is_paced() {
            self.pacer.due(now)
        } else {
            u64::MAX
        };
        while budget > 0 && self.ready_bytes < self.cfg.buffer_bytes {
            let intended = if self.pacer.is_paced() {
                self.pacer.issue()
            } else {
                now
            };
            self.append(intended, now)?;
            budget -= 1;
            // At max rate, hand over to sending once a batch is sealed.
            if !self.pacer.is_paced() && self.open.is_none() {
                break;
            }
        }
        Ok(())
    }

    fn append(&mut self, intended_ns: u64, now: u64) -> Result<()> {
        let cfg = self.cfg;
        let payload = &cfg.payloads[self.next_payload % cfg.payloads.len()];
        self.next_payload += 1;
        // Like the Kafka producer, close the batch before a record would
        // push it past batch.size (a broker rejects batches above
        // max.message.bytes), unless the batch is empty.
        let record_max_bytes =
            payload.len() + cfg.key.as_ref().map_or(0, |k| k.len()) + RECORD_OVERHEAD_MAX_BYTES;
        if self.open.as_ref().is_some_and(|o| {
            o.builder.count() > 0 && o.builder.len_bytes() + record_max_bytes > cfg.batch_bytes
        }) {
            if let Some(open) = self.open.take() {
                self.seal(open)?;
            }
        }
        if self.open.is_none() {
            let partition = self.cfg.partitions[self.next_partition % self.cfg.partitions.len()];
            self.next_partition += 1;
            self.open = Some(OpenBatch {
                partition,
                builder: BatchBuilder::new(self.cfg.batch_bytes.min(MAX_REQUEST_BYTES)),
                intended_ns: Vec::new(),
                payload_bytes: 0,
                created_ns: now,
            });
        }
        let wall_ns = self.tb.wall_ns(intended_ns);
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        // Stamp the intended send time into the payload's first 8 bytes
        // (after the value prefix, if any).
        let stamp = wall_ns.to_be_bytes();
        let prefixed: Vec<u8>;
        let stamp: &[u8] = if cfg.value_prefix.is_empty() {
            &stamp
        } else {
            prefixed = [&cfg.value_prefix[..], &stamp[..]].concat();
            &prefixed
        };
        let (head, tail) = if payload.len() >= stamp.len() {
            (stamp, &payload[stamp.len()..])
        } else if cfg.value_prefix.is_empty() {
            (&payload[..], &[][..])
        } else {
            (stamp, &[][..])
        };
        open.builder
            .append_parts((wall_ns / 1_000_000) as i64, cfg.key.as_deref(), head, tail);
        open.intended_ns.push(intended_ns);
        open.payload_bytes += payload.len() as u64;
        // Seal now if the next record cannot fit, so the batch is ready at once.
        if open.builder.len_bytes() + record_max_bytes > cfg.batch_bytes {
            if let Some(open) = self.open.take() {
                self.seal(open)?;
            }
        }
        Ok(())
    }

    /// Whether a request could go out now: a free slot in the window.
    fn window_open(&self) -> bool {
        self.in_flight < self.cfg.max_in_flight || self.cfg.acks == Acks::None
    }

    /// Seals the open batch once it has lingered, but only when it could be
    /// sent now. While the window is full the batch stays open and keeps
    /// taking records (up to `batch_bytes`), as a batch waits in the Kafka
    /// producer's accumulator until the sender drains it. Sealed on linger
    /// regardless, a backlog was made of linger-sized batches, one per
    /// partition per request: a producer whose acks are slower than its
    /// linger fell behind its rate for good, its batches never growing.
    fn seal_if_lingered(&mut self, now: u64) -> Result<()> {
        if self.window_open()
            && self
                .open
                .as_ref()
                .is_some_and(|o| now >= o.created_ns + self.cfg.linger_ns)
        {
            if let Some(open) = self.open.take() {
                self.seal(open)?;
            }
        }
        Ok(())
    }

    /// Closes a batch: its header, its sequence when idempotent, and its
    /// records compressed with the producer's codec.
    fn seal(&mut self, open: OpenBatch) -> Result<()> {
        let producer = match self.sequencer.as_mut() {
            Some(s) => s.assign(open.partition, open.builder.count()),
            None => ProducerFields::NONE,
        };
        let records_bytes = open.builder.records_len_bytes();
        let bytes = Bytes::from(
            open.builder
                .finish_compressed(producer, self.cfg.compression)?,
        );
        self.records_bytes += records_bytes as u64;
        self.records_wire_bytes += (bytes.len() - crate::records::HEADER_BYTES) as u64;
        self.ready_bytes += bytes.len();
        self.ready.push_back(ReadyBatch {
            partition: open.partition,
            bytes,
            intended_ns: open.intended_ns,
            payload_bytes: open.payload_bytes,
        });
        Ok(())
    }

    fn send_ready(&mut self, conn: &mut Conn, meta_tx: &Sender<InFlight>) -> Result<()> {
        while !self.ready.is_empty() && self.window_open() {
            // One batch per partition per request, oldest first.
            let mut taken: Vec<ReadyBatch> = Vec::new();
            let mut rest = VecDeque::new();
            let mut size = 0;
            while let Some(b) = self.ready.pop_front() {
                if taken.iter().any(|t| t.partition == b.partition)
                    || (size > 0 && size + b.bytes.len() > MAX_REQUEST_BYTES)
                {
                    rest.push_back(b);
                } else {
                    size += b.bytes.len();
                    taken.push(b);
                }
            }
            self.ready = rest;
            self.ready_bytes -= size;
            let req = ProduceRequest::default()
                .with_acks(self.cfg.acks.wire())
                .with_timeout_ms(kafka::REQUEST_TIMEOUT.as_millis() as i32)
                .with_topic_data(vec![TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(self.cfg.topic.clone())))
                    .with_partition_data(
                        taken
                            .iter()
                            .map(|b| {
                                PartitionProduceData::default()
                                    .with_index(b.partition)
                                    .with_records(Some(b.bytes.clone()))
                            })
                            .collect(),
                    )]);
            let correlation_id = conn.next_correlation_id();
            let frame = kafka::encode_request(correlation_id, self.version, &req)?;
            let batches: Vec<(i32, Vec<u64>, u64)> = taken
                .into_iter()
                .map(|b| (b.partition, b.intended_ns, b.payload_bytes))
                .collect();
            if self.cfg.acks == Acks::None {
                conn.stream
                    .write_all(&frame)
                    .context("writing produce request")?;
                let done = self.tb.now_ns();
                for (_, intended, payload_bytes) in &batches {
                    self.stats
                        .produced_msgs
                        .fetch_add(intended.len() as u64, Ordering::Relaxed);
                    self.stats
                        .produced_bytes
                        .fetch_add(*payload_bytes, Ordering::Relaxed);
                    let per_msg = payload_bytes / intended.len().max(1) as u64;
                    for &t in intended {
                        if self.acks0.record(t, done) {
                            self.acks0_msgs += 1;
                            self.acks0_bytes += per_msg;
                        }
                    }
                }
            } else {
                // The reader must know about the request before its response can arrive.
                if meta_tx
                    .send(InFlight {
                        correlation_id,
                        version: self.version,
                        batches,
                    })
                    .is_err()
                {
                    bail!("ack reader stopped");
                }
                self.in_flight += 1;
                conn.stream
                    .write_all(&frame)
                    .context("writing produce request")?;
            }
        }
        Ok(())
    }

    /// Sleeps until the next message is due, the open batch lingers out, or
    /// an ack frees a slot, whichever comes first.
    fn wait(&mut self, done_rx: &Receiver<()>, now: u64) -> Result<()> {
        let window_full = !self.window_open();
        let buffer_full = self.ready_bytes >= self.cfg.buffer_bytes;
        let mut wake = self.tl.end_ns;
        if let Some(t) = self.pacer.next_due_ns() {
            if !buffer_full {
                wake = wake.min(t);
            }
        } else if !buffer_full {
            // Max rate with room in the buffer: keep generating.
            return Ok(());
        }
        // A lingered batch waits for an ack while the window is full.
        if let Some(o) = self.open.as_ref().filter(|_| !window_full) {
            wake = wake.min(o.created_ns + self.cfg.linger_ns);
        }
        if !self.ready.is_empty() && !window_full {
            return Ok(());
        }
        if wake <= now {
            return Ok(());
        }
        match done_rx.recv_timeout(Duration::from_nanos(wake - now)) {
            Ok(()) => self.in_flight -= 1,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                if self.cfg.acks != Acks::None {
                    bail!("ack reader stopped");
                }
                self.tb.sleep_until(wake);
            }
        }
        Ok(())
    }
}

/// Reads the produce responses in request order. Any error fails the run
/// (counted in `produce_errors` first): the harness does not retry, and
/// after a refused idempotent batch every later one of its partition would
/// be out of sequence too.
fn ack_reader(
    mut stream: TcpStream,
    meta_rx: Receiver<InFlight>,
    done_tx: Sender<()>,
    tb: Timebase,
    tl: Timeline,
    stats: Arc<Stats>,
    idempotent: bool,
) -> Result<ProducerResult> {
    let mut publish = LatencyRecorder::new(tl.measure_start_ns, tl.end_ns);
    let (mut window_msgs, mut window_bytes) = (0u64, 0u64);
    // An idempotent producer never sends a batch twice, so a base offset at
    // or below the partition's previous one means the broker took a new
    // batch for a duplicate and answered with old offsets.
    let mut last_base_offsets: HashMap<i32, i64> = HashMap::new();
    for req in meta_rx.iter() {
        let frame = kafka::read_frame(&mut stream).context("reading produce response")?;
        let done = tb.now_ns();
        let (corr, resp) = kafka::decode_response::<ProduceRequest>(frame, req.version)?;
        if corr != req.correlation_id {
            bail!(
                "produce response correlation id {corr}, expected {}",
                req.correlation_id
            );
        }
        for (partition, intended, payload_bytes) in &req.batches {
            let answer = resp
                .responses
                .iter()
                .flat_map(|t| t.partition_responses.iter())
                .find(|p| p.index == *partition);
            let outcome = match answer {
                None => Err("no response for the partition".to_string()),
                Some(p) if p.error_code != kafka::ERR_NONE => Err(format!(
                    "error {} {}",
                    kafka::describe_error(p.error_code),
                    p.error_message.as_ref().map_or("", |m| m.as_str())
                )),
                Some(p) if idempotent => {
                    match last_base_offsets.insert(*partition, p.base_offset) {
                        Some(previous) if p.base_offset <= previous => Err(format!(
                        "base offset {} after {previous}: a new batch was answered as a duplicate",
                        p.base_offset
                    )),
                        _ => Ok(()),
                    }
                }
                Some(_) => Ok(()),
            };
            match outcome {
                Ok(()) => {
                    stats
                        .produced_msgs
                        .fetch_add(intended.len() as u64, Ordering::Relaxed);
                    stats
                        .produced_bytes
                        .fetch_add(*payload_bytes, Ordering::Relaxed);
                    let per_msg = payload_bytes / intended.len().max(1) as u64;
                    for &t in intended {
                        if publish.record(t, done) {
                            window_msgs += 1;
                            window_bytes += per_msg;
                        }
                    }
                }
                Err(what) => {
                    stats
                        .produce_errors
                        .fetch_add(intended.len() as u64, Ordering::Relaxed);
                    let msg = format!("produce to partition {partition}: {what}");
                    stats.note_error(msg.clone());
                    // A benchmark with failed sends measures nothing: stop.
                    bail!(msg);
                }
            }
        }
        // The writer may already have finished; that is fine.
        let _ = done_tx.send(());
    }
    Ok(ProducerResult {
        publish,
        window_msgs,
        window_bytes,
        records_bytes: 0,
        records_wire_bytes: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotence_needs_acks_all() {
        assert_eq!(Acks::for_producer(None, true).unwrap(), Acks::All);
        assert_eq!(Acks::for_producer(None, false).unwrap(), Acks::Leader);
        assert_eq!(Acks::for_producer(Some("all"), true).unwrap(), Acks::All);
        assert_eq!(Acks::for_producer(Some("-1"), true).unwrap(), Acks::All);
        for acks in ["0", "1"] {
            let e = Acks::for_producer(Some(acks), true)
                .unwrap_err()
                .to_string();
            assert!(e.contains("--idempotent needs --acks all"), "{e}");
            assert!(e.contains(&format!("--acks {acks}")), "{e}");
            assert!(Acks::for_producer(Some(acks), false).is_ok());
        }
        assert!(Acks::for_producer(Some("2"), true).is_err());
    }

    #[test]
    fn sequences_count_records_per_partition_from_zero() {
        let identity = ProducerIdentity {
            producer_id: 7,
            producer_epoch: 3,
        };
        let mut s = Sequencer::new(identity);
        let seqs: Vec<i32> = [(0, 10), (1, 4), (0, 5), (0, 1), (1, 2)]
            .iter()
            .map(|&(p, n)| s.assign(p, n).base_sequence)
            .collect();
        assert_eq!(seqs, [0, 0, 10, 15, 4]);
        let f = s.assign(2, 1);
        assert_eq!((f.producer_id, f.producer_epoch), (7, 3));
    }

    #[test]
    fn sequences_wrap_to_zero_past_i32_max() {
        let mut s = Sequencer::new(ProducerIdentity {
            producer_id: 0,
            producer_epoch: 0,
        });
        s.next.insert(0, i32::MAX - 2);
        assert_eq!(s.assign(0, 3).base_sequence, i32::MAX - 2);
        assert_eq!(s.assign(0, 2).base_sequence, 0);
        assert_eq!(s.assign(0, 1).base_sequence, 2);
        s.next.insert(1, i32::MAX - 1);
        assert_eq!(s.assign(1, 5).base_sequence, i32::MAX - 1);
        assert_eq!(s.assign(1, 1).base_sequence, 3);
    }
}
