//! The leader's side of replication (Kafka's `Partition` on the leader):
//! what each follower holds, the high watermark over the in-sync replicas,
//! and the ISR's shrink and expand through the controller.
//!
//! - A follower's Fetch (replica id set) reports its fetch offset. Every
//!   offset below it is on the follower's disk: a follower fetches on only
//!   after its fdatasync. The leader records it, and when the follower was
//!   last caught up (Kafka's `lastCaughtUpTime`: the fetch reached the
//!   leader's log end of that moment, or of the follower's previous fetch).
//! - The high watermark is the minimum of the leader's log end and the log
//!   ends of the ISR's followers. An ISR follower not heard from since this
//!   leadership began holds it where it is. The engine keeps it monotonic
//!   and caps reads at the leader's written offset.
//! - A follower outside the ISR whose log end reached the high watermark
//!   and this leader epoch's start offset is added back (expand). An ISR
//!   follower not caught up for `replica.lag.time.max.ms` is removed
//!   (shrink). Both go through the controller's AlterPartition, one in
//!   flight per partition; the new ISR counts once the image carrying it
//!   reaches the shard (`on_image`). A dead broker leaves every ISR sooner,
//!   when the controller fences it.
//! - A partition whose ISR is the leader alone reads to the written offset,
//!   as on one node (`Shard::apply_leadership` clears its high watermark).
//!
//! acks=all (`wait_replicated`) waits until the high watermark passes the
//! appended batch, then answers NOT_ENOUGH_REPLICAS_AFTER_APPEND if the ISR
//! shrank below `min.insync.replicas` meanwhile, as Kafka does.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::future;
use kafka_protocol::ResponseError;
use strom_engine::PartitionLog;

use crate::clock::now_ms;
use crate::cluster::partition_state;
use crate::metadata::Metadata;
use crate::shard::Shard;

/// After a refused AlterPartition, the partition sends none for this long.
const ALTER_RETRY_MS: i64 = 1000;
/// How often an acks=all wait looks again at leadership and the ISR, in
/// case nothing wakes it (leadership lost, the log closed).
const WAIT_RECHECK: Duration = Duration::from_millis(100);

/// What this leader knows of one follower.
#[derive(Debug, Clone, Copy)]
struct Follower {
    /// The follower's log end: every offset below is on its disk.
    log_end: i64,
    last_fetch_ms: i64,
    /// The leader's log end when the follower last fetched.
    leader_end_at_last_fetch: i64,
    last_caught_up_ms: i64,
}

/// One partition this shard leads.
#[derive(Debug)]
struct Led {
    leader_epoch: i32,
    /// When this leadership began (the caught-up time of an ISR follower
    /// not heard from yet).
    since_ms: i64,
    followers: HashMap<i32, Follower>,
    /// The partition epoch an AlterPartition in flight was sent at.
    altering: Option<i32>,
    /// No AlterPartition before then (ms), after a refusal.
    quiet_until_ms: i64,
}

impl Led {
    fn new(leader_epoch: i32, now: i64) -> Led {
        Led {
            leader_epoch,
            since_ms: now,
            followers: HashMap::new(),
            altering: None,
            quiet_until_ms: 0,
        }
    }

    fn caught_up_ms(&self, replica: i32) -> i64 {
        self.followers
            .get(&replica)
            .map_or(self.since_ms, |f| f.last_caught_up_ms.max(self.since_ms))
    }
}

/// Runs `f` over this shard's led partitions (no await inside).
fn with_led<R>(f: impl FnOnce(&mut HashMap<(String, i32), Led>) -> R) -> R {
    LED.with(|parts| f(&mut parts.borrow_mut()))
}

thread_local! {
    /// The partitions this shard (one executor thread) leads, by (topic,
    /// partition).
    static LED: RefCell<HashMap<(String, i32), Led>> = RefCell::new(HashMap::new());
}

/// Records a follower's fetch of a partition this shard leads and moves
/// the high watermark; may ask the controller to add the follower to the
/// ISR. Runs on the partition's owner shard.
pub fn follower_fetched(
    shard: &Shard,
    topic: &str,
    partition: i32,
    replica: i32,
    fetch_offset: i64,
    log: &PartitionLog,
) {
    let meta = shard.metadata();
    let Some(state) = partition_state(&meta, topic, partition) else {
        return;
    };
    if !state.replicas.contains(&replica) || replica == shard.config.node_id {
        return;
    }
    let now = now_ms();
    let leader_end = log.log_end_offset();
    if fetch_offset > leader_end {
        // Past this log's end: the follower has not truncated to this
        // leader yet (its fetch is answered OFFSET_OUT_OF_RANGE), so what
        // it holds says nothing about this log.
        return;
    }
    with_led(|parts| {
        let led = led_entry(parts, topic, partition, state.leader_epoch, now);
        let f = led.followers.entry(replica).or_insert(Follower {
            log_end: -1,
            last_fetch_ms: now,
            leader_end_at_last_fetch: -1,
            last_caught_up_ms: led.since_ms,
        });
        // Kafka's updateFollowerFetchState.
        if fetch_offset >= leader_end {
            f.last_caught_up_ms = f.last_caught_up_ms.max(now);
        } else if fetch_offset >= f.leader_end_at_last_fetch {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.log_end = fetch_offset;
        f.last_fetch_ms = now;
        f.leader_end_at_last_fetch = leader_end;
    });
    advance(shard, &meta, topic, partition, log);
    if !state.isr.contains(&replica) && in_sync(log, fetch_offset) {
        let mut isr = state.isr.clone();
        isr.push(replica);
        alter_isr(&meta, topic, partition, isr);
    }
}

/// Whether a follower at `log_end` may join the ISR: it holds everything
/// below the high watermark and this leader epoch's first offset.
fn in_sync(log: &PartitionLog, log_end: i64) -> bool {
    let epoch_start = log.leader_epoch().and_then(|epoch| {
        log.leader_epochs()
            .entries()
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    });
    log_end >= log.high_watermark() && epoch_start.is_none_or(|start| log_end >= start)
}

fn led_entry<'a>(
    parts: &'a mut HashMap<(String, i32), Led>,
    topic: &str,
    partition: i32,
    leader_epoch: i32,
    now: i64,
) -> &'a mut Led {
    let led = parts
        .entry((topic.to_string(), partition))
        .or_insert_with(|| Led::new(leader_epoch, now));
    if led.leader_epoch != leader_epoch {
        // A new leadership: what followers held under the old one is
        // learnt again from their next fetches.
        *led = Led::new(leader_epoch, now);
    }
    led
}

/// Moves the high watermark of a partition this shard leads to the
/// minimum over its ISR (nothing when the leader is alone in it, or an
/// ISR follower has not fetched since this leadership began).
fn advance(shard: &Shard, meta: &Metadata, topic: &str, partition: i32, log: &PartitionLog) {
    let me = shard.config.node_id;
    let Some(state) = partition_state(meta, topic, partition) else {
        return;
    };
    if state.leader != me || state.isr.len() <= 1 {
        return;
    }
    let hw = with_led(|parts| {
        let led = parts.get(&(topic.to_string(), partition))?;
        let mut hw = log.log_end_offset();
        for r in state.isr.iter().filter(|&&r| r != me) {
            let f = led.followers.get(r).filter(|f| f.log_end >= 0)?;
            hw = hw.min(f.log_end);
        }
        Some(hw)
    });
    if let Some(hw) = hw {
        log.set_high_watermark(hw);
    }
}

/// After a new image is installed on the shard: forgets partitions no
/// longer led here, starts tracking newly led ones, makes a partition
/// with followers in its ISR read up to its high watermark only, and moves
/// high watermarks (a shrunk ISR may let one advance).
/// `previous` is the image before.
pub fn on_image(shard: &Shard, previous: &Metadata) {
    let meta = shard.metadata();
    let me = shard.config.node_id;
    let now = now_ms();
    let led: Vec<(String, i32, PartitionLog)> = shard
        .all_logs_named()
        .into_iter()
        .filter(|(t, p, _)| crate::cluster::led_at_epoch(&meta, me, t, *p).is_some())
        .filter(|(t, p, _)| partition_state(&meta, t, *p).is_some())
        .collect();
    let led_keys: HashSet<(&str, i32)> = led.iter().map(|(t, p, _)| (t.as_str(), *p)).collect();
    with_led(|parts| {
        parts.retain(|(t, p), _| led_keys.contains(&(t.as_str(), *p)));
        for (t, p, _) in &led {
            let Some(state) = partition_state(&meta, t, *p) else {
                continue;
            };
            let entry = led_entry(parts, t, *p, state.leader_epoch, now);
            if entry
                .altering
                .is_some_and(|sent| sent != state.partition_epoch)
            {
                entry.altering = None;
            }
        }
    });
    for (t, p, log) in &led {
        let Some(state) = partition_state(&meta, t, *p) else {
            continue;
        };
        if state.isr.len() > 1 && !log.is_replicated() {
            // Readers stop at the high watermark from now on. Led alone
            // until now, everything written was committed; otherwise
            // (after a restart) what is committed is learnt from the
            // followers' fetches, from the log start up.
            let alone_before = crate::cluster::led_at_epoch(previous, me, t, *p).is_some()
                && partition_state(previous, t, *p).is_some_and(|s| s.isr.as_slice() == [me]);
            let from = if alone_before {
                log.high_watermark()
            } else {
                log.log_start_offset()
            };
            log.set_high_watermark(from);
        }
        advance(shard, &meta, t, *p, log);
    }
}

/// Removes from the ISR of every partition this shard leads the followers
/// not caught up within `lag`, every `lag / 2` (Kafka's
/// isr-expiration task), until shutdown.
pub async fn shrink_lagging(shard: Rc<Shard>, lag: Duration) {
    let every = lag
        .checked_div(2)
        .unwrap_or(lag)
        .max(Duration::from_millis(100));
    let lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
    while !shard.is_shutting_down() {
        future::or(shard.shutdown.notified(), glommio::timer::sleep(every)).await;
        let meta = shard.metadata();
        let me = shard.config.node_id;
        let now = now_ms();
        let shrinks: Vec<(String, i32, Vec<i32>)> = with_led(|parts| {
            parts
                .iter()
                .filter_map(|((t, p), led)| {
                    let state = partition_state(&meta, t, *p)?;
                    if state.leader != me || state.isr.len() <= 1 {
                        return None;
                    }
                    let keep: Vec<i32> = state
                        .isr
                        .iter()
                        .copied()
                        .filter(|&r| r == me || now.saturating_sub(led.caught_up_ms(r)) <= lag_ms)
                        .collect();
                    (keep.len() < state.isr.len()).then(|| (t.clone(), *p, keep))
                })
                .collect()
        });
        for (t, p, isr) in shrinks {
            tracing::info!(topic = %t, partition = p, isr = ?isr, "followers lag past replica.lag.time.max.ms; shrinking the ISR");
            alter_isr(&meta, &t, p, isr);
        }
    }
}

/// Sends an AlterPartition setting the ISR of a partition this shard leads,
/// unless one is in flight or a refusal is recent. The answer only clears
/// the in-flight mark; the ISR changes when the image reaches the shard.
fn alter_isr(meta: &Metadata, topic: &str, partition: i32, isr: Vec<i32>) {
    let Some(controller) = crate::cluster::controller() else {
        return;
    };
    let Some(image) = meta.cluster.as_ref() else {
        return;
    };
    let Some(t) = image.topics.get(topic) else {
        return;
    };
    let Some(state) = usize::try_from(partition)
        .ok()
        .and_then(|i| t.partitions.get(i))
    else {
        return;
    };
    let now = now_ms();
    let busy = with_led(|parts| {
        let led = led_entry(parts, topic, partition, state.leader_epoch, now);
        let busy = led.altering.is_some() || now < led.quiet_until_ms;
        if !busy {
            led.altering = Some(state.partition_epoch);
        }
        busy
    });
    if busy {
        return;
    }
    tracing::info!(topic, partition, from = ?state.isr, to = ?isr, "AlterPartition");
    let answer = controller.alter_partition(
        t.id,
        partition,
        state.leader,
        state.leader_epoch,
        state.partition_epoch,
        isr,
    );
    let topic = topic.to_string();
    let leader_epoch = state.leader_epoch;
    glommio::spawn_local(async move {
        let refused = match answer.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(format!("{e:?}")),
            Err(_) => Some("the controller stopped".to_string()),
        };
        let Some(why) = refused else { return };
        tracing::info!(topic = %topic, partition, "AlterPartition refused: {why}");
        with_led(|parts| {
            if let Some(led) = parts
                .get_mut(&(topic, partition))
                .filter(|led| led.leader_epoch == leader_epoch)
            {
                led.altering = None;
                led.quiet_until_ms = now_ms().saturating_add(ALTER_RETRY_MS);
            }
        });
    })
    .detach();
}

/// acks=all: waits until the high watermark of a partition this shard
/// leads reaches `end` (the appended batch's last offset + 1), up to
/// `timeout`. Then Kafka's answers: NOT_ENOUGH_REPLICAS_AFTER_APPEND when
/// the ISR is below `min.insync.replicas`, NOT_LEADER_OR_FOLLOWER when
/// leadership moved, REQUEST_TIMED_OUT at the deadline.
pub async fn wait_replicated(
    shard: &Shard,
    topic: &str,
    partition: i32,
    log: &PartitionLog,
    end: i64,
    timeout: Duration,
) -> Result<(), (ResponseError, String)> {
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let meta = shard.metadata();
        if crate::cluster::check_leader(&meta, shard.config.node_id, topic, partition).is_err()
            || log.is_closed()
        {
            return Err((
                ResponseError::NotLeaderOrFollower,
                format!("leadership of {topic}-{partition} moved while the batch was replicated"),
            ));
        }
        if log.high_watermark() >= end {
            let isr = partition_state(&meta, topic, partition).map_or(1, |s| s.isr.len());
            let min_isr = log.config().min_insync_replicas;
            if i64::try_from(isr).unwrap_or(i64::MAX) < i64::from(min_isr) {
                return Err((
                    ResponseError::NotEnoughReplicasAfterAppend,
                    format!(
                        "the batch was written, but the in-sync replicas of {topic}-{partition} ({isr}) are fewer than min.insync.replicas ({min_isr})"
                    ),
                ));
            }
            return Ok(());
        }
        let left = deadline.map_or(WAIT_RECHECK, |d| {
            d.saturating_duration_since(Instant::now())
        });
        if left.is_zero() {
            return Err((
                ResponseError::RequestTimedOut,
                format!(
                    "the batch was written, but not replicated to the in-sync replicas of {topic}-{partition} within the request's timeout"
                ),
            ));
        }
        future::or(
            log.wait_for_offset(end.saturating_sub(1)),
            glommio::timer::sleep(left.min(WAIT_RECHECK)),
        )
        .await;
    }
}
