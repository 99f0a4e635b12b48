//! A consumer: one TCP connection and one thread issuing sessionless
//! long-poll fetches for its assigned partitions, from the log end at the
//! start of the run. It walks the returned batches (compressed ones are
//! inflated first; records are counted and the payload's send timestamp
//! read, nothing else decoded) and records end-to-end latency from the
//! producer's intended send time.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::kafka::{self, Conn};
use crate::latency::LatencyRecorder;
use crate::producer::{Stats, Timebase, Timeline};
use crate::records;

const FETCH_MAX_WAIT_MS: i32 = 100;
const FETCH_MAX_BYTES: i32 = 64 << 20;
/// A partition failing this many fetches in a row fails the run.
const MAX_CONSECUTIVE_FETCH_ERRORS: u32 = 100;
/// Kafka's retry.backoff.ms default.
const RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
const PARTITION_MAX_BYTES: i32 = 4 << 20;

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    pub addr: String,
    pub topic: String,
    pub partitions: Vec<i32>,
    /// Produced payload bytes (over all producers) to wait for before
    /// fetching, to build a backlog (OMB's consumerBacklogSizeGB); 0 = none.
    pub backlog_bytes: u64,
    /// Whether values start with the producer's send-time stamp (not with
    /// `--value-prefix`); otherwise the record timestamp (ms) is used.
    pub stamp_in_payload: bool,
}

#[derive(Debug)]
pub struct ConsumerResult {
    pub e2e: LatencyRecorder,
    /// Messages received inside the measurement window.
    pub window_msgs: u64,
    pub window_bytes: u64,
}

/// How long `prepare` retries a partition that is not led yet.
const LEADER_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connects and looks up the start offsets, so a consumer is ready before
/// the producers start.
pub fn prepare(cfg: &ConsumerConfig) -> Result<(Conn, HashMap<i32, i64>)> {
    let mut conn = Conn::connect(&cfg.addr)?;
    // A partition listed with a leader in Metadata may not be led yet on
    // that broker (Apache Kafka answers NOT_LEADER_OR_FOLLOWER for a moment
    // after creating a topic): retriable errors are retried for a while.
    let deadline = std::time::Instant::now() + LEADER_READY_TIMEOUT;
    loop {
        match kafka::list_offsets(&mut conn, &cfg.topic, &cfg.partitions, -1) {
            Ok(offsets) => return Ok((conn, offsets)),
            Err(kafka::ListOffsetsError::Partition(code, msg))
                if kafka::is_retriable(code) && std::time::Instant::now() < deadline =>
            {
                tracing::debug!("{msg}; retrying");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fetches until `stop` is set.
pub fn run(
    cfg: ConsumerConfig,
    mut conn: Conn,
    mut offsets: HashMap<i32, i64>,
    tb: Timebase,
    tl: Timeline,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Result<ConsumerResult> {
    let produced_bytes = &stats.produced_bytes;
    let version = conn
        .versions
        .pick::<FetchRequest>(kafka::FETCH_MAX_VERSION)?;
    let mut e2e = LatencyRecorder::new(tl.measure_start_ns, tl.end_ns);
    let (mut window_msgs, mut window_bytes) = (0u64, 0u64);
    let topic = TopicName(StrBytes::from_string(cfg.topic.clone()));
    while cfg.backlog_bytes > 0
        && produced_bytes.load(Ordering::Relaxed) < cfg.backlog_bytes
        && !stop.load(Ordering::Relaxed)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let mut consecutive_errors: HashMap<i32, u32> = HashMap::new();
    let mut frame_buf = bytes::BytesMut::new();
    while !stop.load(Ordering::Relaxed) {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(FETCH_MAX_WAIT_MS)
            .with_min_bytes(1)
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_isolation_level(0)
            .with_session_id(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic.clone())
                .with_partitions(
                    cfg.partitions
                        .iter()
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(*p)
                                .with_fetch_offset(offsets[p])
                                .with_partition_max_bytes(PARTITION_MAX_BYTES)
                        })
                        .collect(),
                )]);
        let corr = conn.next_correlation_id();
        conn.stream
            .write_all(&kafka::encode_request(corr, version, &req)?)
            .context("writing fetch request")?;
        let frame = kafka::read_frame_reusing(&mut conn.stream, &mut frame_buf)
            .context("reading fetch response")?;
        let (got, resp) = kafka::decode_response::<FetchRequest>(frame, version)?;
        if got != corr {
            bail!("fetch response correlation id {got}, expected {corr}");
        }
        if resp.error_code != kafka::ERR_NONE {
            bail!("fetch error {}", resp.error_code);
        }
        let now = tb.now_ns();
        let in_window = now >= tl.measure_start_ns && now < tl.end_ns;
        let (mut msgs, mut bytes) = (0u64, 0u64);
        let mut backoff = false;
        for t in &resp.responses {
            for p in &t.partitions {
                let Some(offset) = offsets.get_mut(&p.partition_index) else {
                    continue;
                };
                if p.error_code != kafka::ERR_NONE {
                    let what = format!(
                        "fetch {}-{} at offset {offset}: error {}",
                        cfg.topic, p.partition_index, p.error_code
                    );
                    if !kafka::is_retriable(p.error_code) {
                        bail!(what);
                    }
                    // Retry the same offset, as a Kafka consumer does.
                    stats.fetch_errors.fetch_add(1, Ordering::Relaxed);
                    stats.note_error(what.clone());
                    let n = consecutive_errors.entry(p.partition_index).or_insert(0);
                    *n += 1;
                    if *n > MAX_CONSECUTIVE_FETCH_ERRORS {
                        bail!("{what} ({MAX_CONSECUTIVE_FETCH_ERRORS} times in a row)");
                    }
                    backoff = true;
                    continue;
                }
                consecutive_errors.remove(&p.partition_index);
                let Some(records) = &p.records else { continue };
                let summary = records::walk_batches(records, *offset, |r| {
                    msgs += 1;
                    bytes += r.value_bytes as u64;
                    let sent_wall_ns = r
                        .payload_ns
                        .filter(|_| cfg.stamp_in_payload)
                        .unwrap_or((r.timestamp_ms.max(0) as u64) * 1_000_000);
                    if let Some(intended) = tb.mono_from_wall_ns(sent_wall_ns) {
                        e2e.record(intended, now);
                    }
                })
                .with_context(|| format!("walking {}-{}", cfg.topic, p.partition_index))?;
                if let Some(next) = summary.next_offset {
                    if next > *offset {
                        *offset = next;
                    }
                }
            }
        }
        if std::mem::take(&mut backoff) {
            std::thread::sleep(RETRY_BACKOFF);
        }
        stats.consumed_msgs.fetch_add(msgs, Ordering::Relaxed);
        stats.consumed_bytes.fetch_add(bytes, Ordering::Relaxed);
        if in_window {
            window_msgs += msgs;
            window_bytes += bytes;
        }
    }
    Ok(ConsumerResult {
        e2e,
        window_msgs,
        window_bytes,
    })
}
