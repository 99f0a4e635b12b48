//! A follower's fetcher: one per (shard, leader broker), fetching every
//! partition this shard follows from that leader in one long-poll Fetch.
//!
//! Per partition, after (re)start or a new leader epoch, the fetcher first
//! asks the leader where this replica's latest epoch ends
//! (OffsetForLeaderEpoch, KIP-101/279) and truncates its log to
//! min(that end, its own log end); then it fetches from its log end. The
//! batches come back as the leader stored them and are appended as they
//! are (the leader's offsets and epochs, `AppendOrigin::Replica`), then
//! fdatasynced together before the next request reports the new log ends
//! as fetch offsets: only what is on this replica's disk counts towards
//! the leader's high watermark. The follower's high watermark is the
//! leader's, capped at its own durable log end.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, OffsetForLeaderEpochRequest,
    OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strom_engine::leader_epoch::{UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET};
use strom_engine::{Durability, PartitionLog};

use crate::metadata::Metadata;
use crate::replica::client::BrokerClient;
use crate::replica::followed::{followed, Followed};
use crate::replica::restart;
use crate::shard::Shard;

/// The Fetch version a follower sends (the newest Strom decodes; it still
/// has `replica_id`).
const FETCH_VERSION: i16 = 12;
const OFFSET_FOR_LEADER_EPOCH_VERSION: i16 = 4;
/// A follower's long poll.
const MAX_WAIT_MS: i32 = 500;
/// Bytes per partition per fetch (Kafka's replica.fetch.max.bytes).
const PARTITION_MAX_BYTES: i32 = 1 << 20;
/// Connecting, and any request past its long poll.
const REQUEST_LIMIT: Duration = Duration::from_secs(5);
/// Backoff after a failed connection or request: doubling up to the max.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_millis(1000);
/// How long a partition the leader refused (not leader, fenced epoch)
/// waits before it is tried again (a new image usually comes first).
const REFUSED_WAIT: Duration = Duration::from_millis(200);

/// Where one followed partition stands.
struct Partition {
    log: PartitionLog,
    leader_epoch: i32,
    /// Truncated against this leader epoch: fetching may start.
    truncated: bool,
    /// Not fetched until then (refused by the leader).
    paused_until: Option<std::time::Instant>,
}

/// Fetches every partition this shard follows from `leader` until there is
/// none left or the shard shuts down.
pub async fn run(shard: Rc<Shard>, leader: i32) {
    let mut parts: HashMap<(String, i32), Partition> = HashMap::new();
    let mut client: Option<BrokerClient> = None;
    let mut backoff = BACKOFF_MIN;
    tracing::info!(shard = shard.id, leader, "follower fetcher starts");
    while !shard.is_shutting_down() {
        if !refresh(&shard, leader, &mut parts) {
            break;
        }
        let c = match client.as_mut() {
            Some(c) => c,
            None => match connect(&shard, leader).await {
                Ok(c) => client.insert(c),
                Err(e) => {
                    tracing::debug!(leader, "follower fetcher: {e:#}");
                    backoff = wait(&shard, backoff).await;
                    continue;
                }
            },
        };
        let step = match truncate(&shard, leader, c, &mut parts).await {
            Ok(()) => fetch(&shard, leader, c, &mut parts).await,
            Err(e) => Err(e),
        };
        match step {
            Ok(()) => backoff = BACKOFF_MIN,
            Err(e) => {
                tracing::info!(leader, "follower fetcher: {e:#}; reconnecting");
                client = None;
                backoff = wait(&shard, backoff).await;
            }
        }
    }
    tracing::info!(shard = shard.id, leader, "follower fetcher stops");
}

/// Sleeps `backoff` (or until shutdown) and returns the next one.
async fn wait(shard: &Shard, backoff: Duration) -> Duration {
    futures_lite::future::or(shard.shutdown.notified(), glommio::timer::sleep(backoff)).await;
    backoff.saturating_mul(2).min(BACKOFF_MAX)
}

/// Brings `parts` in line with the current image: partitions that moved
/// to another leader or away from this node leave, new ones join, a new
/// leader epoch asks for truncation again. False when none is left.
fn refresh(shard: &Shard, leader: i32, parts: &mut HashMap<(String, i32), Partition>) -> bool {
    let now: Vec<Followed> = followed(shard)
        .into_iter()
        .filter(|f| f.leader == leader)
        .collect();
    parts.retain(|(t, p), _| now.iter().any(|f| &f.topic == t && f.partition == *p));
    for f in now {
        let Some(log) = shard.log(&f.topic, f.partition) else {
            continue;
        };
        let entry = parts
            .entry((f.topic.clone(), f.partition))
            .or_insert_with(|| Partition {
                log: log.clone(),
                leader_epoch: f.leader_epoch,
                truncated: false,
                paused_until: None,
            });
        // A log deleted and re-created (same name) is a new log.
        if entry.leader_epoch != f.leader_epoch || entry.log.dir() != log.dir() {
            entry.leader_epoch = f.leader_epoch;
            entry.log = log;
            entry.truncated = false;
            entry.paused_until = None;
        }
    }
    !parts.is_empty()
}

async fn connect(shard: &Shard, leader: i32) -> anyhow::Result<BrokerClient> {
    let meta = shard.metadata();
    let addr = meta
        .cluster
        .as_ref()
        .and_then(|image| image.brokers.get(&leader))
        .filter(|b| !b.fenced)
        .map(|b| format!("{}:{}", b.host, b.port))
        .ok_or_else(|| anyhow::anyhow!("leader {leader} is not registered or is fenced"))?;
    let max_frame = shard
        .config
        .fetch_max_bytes
        .saturating_add(PARTITION_MAX_BYTES.unsigned_abs() as usize)
        .saturating_add(1 << 20);
    BrokerClient::connect(&addr, REQUEST_LIMIT, max_frame).await
}

/// Whether the current image still has this node follow a partition from
/// `leader` at a leader epoch. An answer awaited from a leader may arrive
/// after the image moved on (the old leader was frozen, then answered):
/// by then another fetcher may follow the partition from its new leader,
/// so the stale answer must not touch the log (Kafka's fetcher drops a
/// response whose partition fetch state changed meanwhile).
/// The set is computed once per image, not per partition of an answer.
struct StillFollowed {
    leader: i32,
    image: Arc<Metadata>,
    /// (topic, partition, leader epoch) followed from `leader`.
    set: HashSet<(String, i32, i32)>,
}

impl StillFollowed {
    fn new(shard: &Shard, leader: i32) -> Self {
        let image = shard.metadata();
        let set = followed(shard)
            .into_iter()
            .filter(|f| f.leader == leader)
            .map(|f| (f.topic, f.partition, f.leader_epoch))
            .collect();
        StillFollowed { leader, image, set }
    }

    fn check(&mut self, shard: &Shard, key: &(String, i32), leader_epoch: i32) -> bool {
        if !Arc::ptr_eq(&self.image, &shard.metadata()) {
            *self = StillFollowed::new(shard, self.leader);
        }
        self.set.contains(&(key.0.clone(), key.1, leader_epoch))
    }
}

fn paused(p: &Partition) -> bool {
    p.paused_until
        .is_some_and(|until| std::time::Instant::now() < until)
}

fn pause(p: &mut Partition) {
    p.paused_until = std::time::Instant::now().checked_add(REFUSED_WAIT);
}

/// Truncates every partition that needs it against the leader's answer
/// for its latest epoch. A replica with no epoch yet (empty, or data from
/// before epochs) keeps its log and fetches from its end.
async fn truncate(
    shard: &Shard,
    leader: i32,
    client: &mut BrokerClient,
    parts: &mut HashMap<(String, i32), Partition>,
) -> anyhow::Result<()> {
    let mut asks: HashMap<String, Vec<OffsetForLeaderPartition>> = HashMap::new();
    for ((topic, p), part) in parts.iter_mut() {
        if part.truncated || paused(part) {
            continue;
        }
        match part.log.leader_epochs().latest_epoch() {
            None => part.truncated = true,
            Some(epoch) => asks.entry(topic.clone()).or_default().push(
                OffsetForLeaderPartition::default()
                    .with_partition(*p)
                    .with_current_leader_epoch(part.leader_epoch)
                    .with_leader_epoch(epoch),
            ),
        }
    }
    if asks.is_empty() {
        return Ok(());
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(shard.config.node_id))
        .with_topics(
            asks.into_iter()
                .map(|(t, ps)| {
                    OffsetForLeaderTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let resp: OffsetForLeaderEpochResponse = client
        .call(
            ApiKey::OffsetForLeaderEpoch,
            OFFSET_FOR_LEADER_EPOCH_VERSION,
            &req,
            REQUEST_LIMIT,
        )
        .await?;
    let mut still = StillFollowed::new(shard, leader);
    for t in resp.topics {
        for a in t.partitions {
            let key = (t.topic.0.to_string(), a.partition);
            let Some(part) = parts.get_mut(&key) else {
                continue;
            };
            if !still.check(shard, &key, part.leader_epoch) {
                continue;
            }
            if a.error_code != 0 {
                tracing::debug!(topic = %key.0, partition = key.1, code = a.error_code, "OffsetForLeaderEpoch refused; waiting for the next image");
                pause(part);
                continue;
            }
            let log_end = part.log.log_end_offset();
            // The leader knows none of this replica's epochs: what this
            // replica holds beyond its high watermark is not known to be
            // the leader's (Kafka truncates to the high watermark then).
            let target =
                if a.leader_epoch == UNDEFINED_EPOCH || a.end_offset == UNDEFINED_EPOCH_OFFSET {
                    part.log.high_watermark()
                } else {
                    a.end_offset
                }
                .min(log_end);
            if target < log_end {
                tracing::info!(topic = %key.0, partition = key.1, from = log_end, to = target, leader_epoch = part.leader_epoch, "follower truncates to the leader's epoch end");
                if let Err(e) = part.log.truncate_to(target).await {
                    tracing::warn!(topic = %key.0, partition = key.1, "truncating failed: {e}");
                    pause(part);
                    continue;
                }
            }
            part.truncated = true;
        }
    }
    Ok(())
}

/// One Fetch of every truncated partition from its log end; appends what
/// comes back, fdatasyncs it, moves the high watermarks.
async fn fetch(
    shard: &Shard,
    leader: i32,
    client: &mut BrokerClient,
    parts: &mut HashMap<(String, i32), Partition>,
) -> anyhow::Result<()> {
    let mut topics: HashMap<String, Vec<FetchPartition>> = HashMap::new();
    let mut fetch_offsets: HashMap<(String, i32), i64> = HashMap::new();
    for ((topic, p), part) in parts.iter() {
        if !part.truncated || paused(part) {
            continue;
        }
        let fetch_offset = part.log.log_end_offset();
        fetch_offsets.insert((topic.clone(), *p), fetch_offset);
        topics.entry(topic.clone()).or_default().push(
            FetchPartition::default()
                .with_partition(*p)
                .with_current_leader_epoch(part.leader_epoch)
                .with_fetch_offset(fetch_offset)
                .with_log_start_offset(part.log.log_start_offset())
                .with_partition_max_bytes(PARTITION_MAX_BYTES),
        );
    }
    if topics.is_empty() {
        // Everything waits for a new image or the leader.
        glommio::timer::sleep(REFUSED_WAIT).await;
        return Ok(());
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(shard.config.node_id))
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(i32::try_from(shard.config.fetch_max_bytes).unwrap_or(i32::MAX))
        .with_session_epoch(-1)
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    let long_poll = Duration::from_millis(MAX_WAIT_MS.unsigned_abs().into());
    let resp: FetchResponse = client
        .call(
            ApiKey::Fetch,
            FETCH_VERSION,
            &req,
            REQUEST_LIMIT.saturating_add(long_poll),
        )
        .await?;
    if resp.error_code != 0 {
        anyhow::bail!("Fetch answered error {}", resp.error_code);
    }
    let now_ms = crate::clock::now_ms();
    let mut still = StillFollowed::new(shard, leader);
    let mut appended = Vec::new();
    let mut out_of_range = Vec::new();
    for t in resp.responses {
        for d in t.partitions {
            let key = (t.topic.0.to_string(), d.partition_index);
            let Some(part) = parts.get_mut(&key) else {
                continue;
            };
            // Stale: the partition moved to another leader or epoch, or
            // its log to another end, while this fetch was out.
            if !still.check(shard, &key, part.leader_epoch)
                || fetch_offsets.get(&key) != Some(&part.log.log_end_offset())
            {
                tracing::info!(topic = %key.0, partition = key.1, leader, leader_epoch = part.leader_epoch, "dropping a fetch answer the image or log has moved past");
                continue;
            }
            match ResponseError::try_from_code(d.error_code) {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    // The leader's log start may have passed this
                    // replica's log end: asked after this answer.
                    out_of_range.push(key);
                    continue;
                }
                Some(e) => {
                    tracing::debug!(topic = %key.0, partition = key.1, "the leader refused a fetch: {e:?}");
                    pause(part);
                    continue;
                }
            }
            let records = d.records.unwrap_or_default();
            if !records.is_empty() {
                match restart::at_first_batch(shard, &key.0, key.1, &part.log, &records).await {
                    Ok(Some(log)) => part.log = log,
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(topic = %key.0, partition = key.1, "starting the replica again failed: {e:#}")
                    }
                }
                if let Err(e) = part
                    .log
                    .append_replica(&records, Durability::Written, now_ms)
                    .await
                {
                    // Not contiguous with this log (the leader moved on):
                    // ask the leader where to truncate again.
                    tracing::warn!(topic = %key.0, partition = key.1, end = part.log.log_end_offset(), "appending the leader's batches failed: {e}");
                    part.truncated = false;
                    pause(part);
                    continue;
                }
            }
            appended.push((part.log.clone(), d.high_watermark, !records.is_empty()));
        }
    }
    // One fdatasync round per log that grew, all at once.
    let synced = join_all(appended.iter().map(|(log, _, grew)| async move {
        if *grew {
            log.flush().await
        } else {
            Ok(())
        }
    }))
    .await;
    for ((log, hw, _), r) in appended.into_iter().zip(synced) {
        match r {
            Ok(()) => {
                log.set_high_watermark(hw.min(log.synced_offset()));
            }
            Err(e) => tracing::warn!(dir = %log.dir().display(), "follower fdatasync failed: {e}"),
        }
    }
    for key in out_of_range {
        let Some(part) = parts.get_mut(&key) else {
            continue;
        };
        match restart::after_out_of_range(shard, client, &key.0, key.1, &part.log).await {
            Ok(Some(log)) => {
                part.log = log;
                part.truncated = true;
            }
            Ok(None) => pause(part),
            Err(e) => {
                tracing::warn!(topic = %key.0, partition = key.1, "after OFFSET_OUT_OF_RANGE: {e:#}");
                pause(part);
            }
        }
    }
    Ok(())
}
