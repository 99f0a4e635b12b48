//! The reading half of Fetch: partitions read within one response budget.
//!
//! Rules (Kafka's `ReplicaManager.readFromLog`):
//! - The response budget is the request's `max_bytes`, clamped to the
//!   broker's `fetch.max.bytes`.
//! - Partitions are read in request order, each up to the smaller of what
//!   its `partition_max_bytes` and the budget have left; once the budget is
//!   spent nothing more is read (the other partitions are answered with their
//!   offsets and no records).
//! - KIP-74: until some partition has returned a batch, the first batch read
//!   is returned whole even when it is larger than both limits, so a consumer
//!   always makes progress. After that, a partition whose next batch does not
//!   fit returns nothing, and only the batch's header is read. When it is the
//!   response's budget that it does not fit, reading stops there: Kafka
//!   fills that rest with a partial batch the client drops, and reads no
//!   further partition either.
//! - What was read is kept across a long poll's wake-ups: a pass reads only
//!   the partitions whose read bound moved past where their reading stopped,
//!   from there on, so the batches of a partition stay contiguous.
//!
//! Memory: a pass reads at most the budget that is left (plus, once, the
//! KIP-74 batch, and per partition read the engine's read window slack), so a
//! fetch holds about `max_bytes` of batches whatever it asks per partition.
//!
//! Partitions of other shards are read on their owners. The cheap part (the
//! offsets of every partition) is gathered from all owners concurrently;
//! the reads themselves run one owner at a time, in request order, a run of
//! consecutive partitions of one owner per job, each job carrying the budget
//! that is left and handing back what it did not spend.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use strom_engine::batch::BatchHeader;
use strom_engine::{EngineError, ReadLimit};

use super::produce::engine_error_code;
use crate::scatter::scatter_gather;
use crate::shard::Shard;

/// One partition of a Fetch request.
#[derive(Debug, Clone)]
pub struct Want {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// The follower broker fetching (Fetch's replica id), or `None` for a
    /// consumer: a follower reads up to the leader's log end and reports
    /// its own log end with its fetch offset.
    pub replica: Option<i32>,
    /// The leader epoch the fetcher believes current (v9+), -1 unchecked
    /// (`cluster::check_current_leader_epoch`).
    pub current_leader_epoch: i32,
}

/// What is known about one partition of a fetch, and what was read of it.
#[derive(Debug, Clone)]
pub struct Got {
    pub error: Option<ResponseError>,
    /// The high watermark answered.
    pub high_watermark: i64,
    /// Where reading stops: the high watermark for a consumer, the log end
    /// for a follower.
    pub bound: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
    /// Whole batches from the fetch offset on, contiguous.
    pub batches: Vec<Bytes>,
    /// Bytes of `batches`.
    pub bytes: usize,
    /// Where reading continues: the fetch offset, then past the last batch.
    pub next_offset: i64,
    /// Nothing more is read for this partition in this response: its
    /// `partition_max_bytes` is spent or its next batch did not fit.
    pub done: bool,
}

impl Got {
    pub fn new(offset: i64) -> Got {
        Got {
            error: None,
            high_watermark: -1,
            bound: -1,
            log_start_offset: -1,
            log_end_offset: -1,
            batches: Vec::new(),
            bytes: 0,
            next_offset: offset,
            done: false,
        }
    }

    fn failed(offset: i64, e: ResponseError) -> Got {
        Got {
            error: Some(e),
            ..Got::new(offset)
        }
    }

    /// Whether a read pass would read this partition now.
    fn readable(&self) -> bool {
        self.error.is_none() && !self.done && self.bound > self.next_offset
    }

    /// Whether a long poll waits for this partition to grow.
    pub fn waitable(&self) -> bool {
        self.error.is_none() && !self.done
    }
}

/// The response budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Bytes the response may still take.
    pub left: usize,
    /// No partition has returned a batch yet: the next batch read is
    /// returned whole even if it is larger than the limits (KIP-74).
    pub first_batch_free: bool,
}

impl Budget {
    pub fn new(max_bytes: usize) -> Budget {
        Budget {
            left: max_bytes,
            first_batch_free: true,
        }
    }

    /// Whether anything more may be read.
    pub fn spent(&self) -> bool {
        self.left == 0 && !self.first_batch_free
    }

    /// The most a partition with `partition_left` bytes of its own limit
    /// left may read now; 0 when nothing.
    fn limit(&self, partition_left: usize) -> usize {
        partition_left.min(self.left)
    }

    /// Accounts a read of `bytes` bytes in `batches` batches.
    fn take(&mut self, bytes: usize, batches: usize) {
        self.left = self.left.saturating_sub(bytes);
        if batches > 0 {
            self.first_batch_free = false;
        }
    }
}

/// The offsets of a partition, seen on its owner.
#[derive(Debug, Clone, Copy)]
struct Offsets {
    error: Option<ResponseError>,
    high_watermark: i64,
    bound: i64,
    log_start_offset: i64,
    log_end_offset: i64,
}

/// Refreshes every partition's offsets (concurrently on every owner); a
/// partition with nothing read whose offset is outside the log gets
/// OFFSET_OUT_OF_RANGE.
pub async fn refresh(shard: &Rc<Shard>, wants: &[Want], got: &mut [Got]) {
    let items = wants
        .iter()
        .zip(got.iter())
        .filter(|(_, g)| g.error.is_none())
        .map(|(w, _)| (shard.owner(&w.topic, w.partition), w.clone()))
        .collect();
    let found = scatter_gather(shard, items, |owner, group: Vec<Want>| async move {
        group.iter().map(|w| offsets_local(&owner, w)).collect()
    })
    .await;
    let live = got.iter_mut().filter(|g| g.error.is_none());
    for (g, o) in live.zip(found) {
        let o = o.unwrap_or(Offsets::failed(ResponseError::NotLeaderOrFollower));
        g.high_watermark = o.high_watermark;
        g.bound = o.bound;
        g.log_start_offset = o.log_start_offset;
        g.log_end_offset = o.log_end_offset;
        let out_of_range = g.next_offset < o.log_start_offset || g.next_offset > o.log_end_offset;
        if g.batches.is_empty() {
            g.error = o
                .error
                .or(out_of_range.then_some(ResponseError::OffsetOutOfRange));
        } else if o.error.is_some() || out_of_range {
            // What was read is answered; nothing more is read.
            g.done = true;
        }
    }
}

impl Offsets {
    fn failed(e: ResponseError) -> Offsets {
        Offsets {
            error: Some(e),
            high_watermark: -1,
            bound: -1,
            log_start_offset: -1,
            log_end_offset: -1,
        }
    }
}

/// A partition's offsets on its owner. A follower's fetch offset is its
/// log end: the leader records it first (which may move the high
/// watermark).
fn offsets_local(shard: &Shard, w: &Want) -> Offsets {
    let served = shard.served_log(&w.topic, w.partition).and_then(|log| {
        crate::cluster::check_current_leader_epoch(
            &shard.metadata(),
            &w.topic,
            w.partition,
            w.current_leader_epoch,
        )
        .map(|()| log)
    });
    match served {
        Ok(log) => {
            if let Some(replica) = w.replica {
                crate::replica::leader::follower_fetched(
                    shard,
                    &w.topic,
                    w.partition,
                    replica,
                    w.offset,
                    &log,
                );
            }
            let high_watermark = log.high_watermark();
            Offsets {
                error: None,
                high_watermark,
                bound: if w.replica.is_some() {
                    log.log_end_offset()
                } else {
                    high_watermark
                },
                log_start_offset: log.log_start_offset(),
                log_end_offset: log.log_end_offset(),
            }
        }
        Err(e) => Offsets::failed(e),
    }
}

/// One partition to read on its owner: from `offset`, at most `max_bytes`
/// (its own limit's rest).
struct ReadItem {
    topic: String,
    partition: i32,
    offset: i64,
    max_bytes: usize,
    /// A follower's read: up to the log end.
    replica: bool,
}

/// What a read of one partition gave.
enum ReadOut {
    /// The budget was spent before this partition's turn.
    NotRead,
    Read {
        batches: Vec<Bytes>,
        high_watermark: i64,
        /// Where this read stopped (see `Got::bound`).
        bound: i64,
        log_start_offset: i64,
        log_end_offset: i64,
        /// The next batch did not fit: nothing more for this partition.
        full: bool,
    },
    Failed(ResponseError),
}

/// One read pass: reads, in request order, every partition whose read
/// bound moved past where its reading stopped, within `budget`. Returns
/// whether any batch was read.
pub async fn read_pass(
    shard: &Rc<Shard>,
    wants: &[Want],
    got: &mut [Got],
    budget: &mut Budget,
) -> bool {
    // Positions of the partitions to read, each with its owner shard.
    let todo: Vec<(usize, usize)> = wants
        .iter()
        .zip(got.iter())
        .enumerate()
        .filter(|(_, (_, g))| g.readable())
        .map(|(i, (w, _))| (i, owner_of(shard, w)))
        .collect();
    let mut progress = false;
    let mut rest: &[(usize, usize)] = &todo;
    while let Some(&(_, owner)) = rest.first().filter(|_| !budget.spent()) {
        // The run of consecutive partitions (in request order) of one owner.
        let run_len = rest
            .iter()
            .position(|&(_, o)| o != owner)
            .unwrap_or(rest.len());
        let (run, after) = rest.split_at(run_len);
        rest = after;
        // Every position in `todo` is below both lengths.
        let items: Vec<ReadItem> = run
            .iter()
            .filter_map(|&(i, _)| {
                let (w, g) = (wants.get(i)?, got.get(i)?);
                Some(ReadItem {
                    topic: w.topic.clone(),
                    partition: w.partition,
                    offset: g.next_offset,
                    max_bytes: w.max_bytes.saturating_sub(g.bytes),
                    replica: w.replica.is_some(),
                })
            })
            .collect();
        let given = *budget;
        let answer = shard
            .run_on(owner, move |owner| read_run(owner, items, given))
            .await;
        let outs = match answer {
            Ok((outs, left)) => {
                assert_eq!(outs.len(), run.len(), "one read result per partition");
                *budget = left;
                outs
            }
            Err(_) => run
                .iter()
                .map(|_| ReadOut::Failed(ResponseError::NotLeaderOrFollower))
                .collect(),
        };
        for (&(i, _), out) in run.iter().zip(outs) {
            if let (Some(g), Some(w)) = (got.get_mut(i), wants.get(i)) {
                progress |= apply(g, w.max_bytes, out);
            }
        }
    }
    progress
}

fn owner_of(shard: &Shard, w: &Want) -> usize {
    shard.owner(&w.topic, w.partition)
}

/// Adds a read's outcome to a partition's state; true if batches came.
fn apply(g: &mut Got, partition_max_bytes: usize, out: ReadOut) -> bool {
    match out {
        ReadOut::NotRead => false,
        ReadOut::Failed(e) => {
            if g.batches.is_empty() {
                g.error = Some(e);
            }
            g.done = true;
            false
        }
        ReadOut::Read {
            batches,
            high_watermark,
            bound,
            log_start_offset,
            log_end_offset,
            full,
        } => {
            g.high_watermark = high_watermark;
            g.bound = bound;
            g.log_start_offset = log_start_offset;
            g.log_end_offset = log_end_offset;
            let Some(last) = batches.last() else {
                // Nothing below the bound after all: wait for it to move.
                g.done |= full;
                return false;
            };
            match BatchHeader::parse(last) {
                Ok(h) => g.next_offset = h.last_offset().saturating_add(1),
                Err(_) => g.done = true,
            }
            g.bytes = g
                .bytes
                .saturating_add(batches.iter().map(Bytes::len).sum::<usize>());
            g.batches.extend(batches);
            g.done |= full || g.bytes >= partition_max_bytes;
            true
        }
    }
}

/// Reads `items` on their owner in order within `budget`; returns one
/// result per item and the budget left.
async fn read_run(
    shard: Rc<Shard>,
    items: Vec<ReadItem>,
    mut budget: Budget,
) -> (Vec<ReadOut>, Budget) {
    let mut outs = Vec::with_capacity(items.len());
    for item in items {
        if budget.spent() {
            outs.push(ReadOut::NotRead);
            continue;
        }
        let out = read_one(&shard, &item, &mut budget).await;
        outs.push(out);
    }
    (outs, budget)
}

async fn read_one(shard: &Shard, item: &ReadItem, budget: &mut Budget) -> ReadOut {
    let log = match shard.served_log(&item.topic, item.partition) {
        Ok(log) => log,
        Err(e) => return ReadOut::Failed(e),
    };
    let limit = budget.limit(item.max_bytes);
    if limit == 0 && !budget.first_batch_free {
        // This partition's own limit is spent (the budget is not).
        let high_watermark = log.high_watermark();
        return ReadOut::Read {
            batches: Vec::new(),
            high_watermark,
            bound: if item.replica {
                log.log_end_offset()
            } else {
                high_watermark
            },
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.log_end_offset(),
            full: true,
        };
    }
    // After the response's first batch (KIP-74), a partition's first
    // batch is returned only if it fits what is left: the engine then reads
    // no more of it than its header, so the partitions past a spent budget
    // cost no reads of the batches they do not return. A follower reads
    // past the high watermark, up to the log end.
    let read = log
        .read_limited(
            item.offset,
            ReadLimit {
                max_bytes: limit.max(1),
                first_batch_whole: budget.first_batch_free,
                to_end: item.replica,
                // The batches are only sent on.
                split_batches: true,
            },
        )
        .await;
    match read {
        Ok(r) => {
            let batches = r.batches;
            let full = r.first_batch_did_not_fit;
            budget.take(batches.iter().map(Bytes::len).sum(), batches.len());
            if full && limit < item.max_bytes {
                // A batch too big for what the response has left ends the
                // reading, as Kafka's partial batch spends the budget: the
                // partitions after it are not read only to find that
                // theirs do not fit either.
                budget.left = 0;
            }
            ReadOut::Read {
                batches,
                high_watermark: if item.replica {
                    log.high_watermark()
                } else {
                    r.high_watermark
                },
                bound: r.high_watermark,
                log_start_offset: r.log_start_offset,
                log_end_offset: r.log_end_offset,
                full,
            }
        }
        Err(e) => {
            if !matches!(e, EngineError::OffsetOutOfRange { .. }) {
                tracing::warn!(topic = %item.topic, partition = item.partition, offset = item.offset, "read failed: {e}");
            }
            ReadOut::Failed(engine_error_code(&e))
        }
    }
}

/// A partition answered with an error and nothing else.
pub fn error_got(offset: i64, e: ResponseError) -> Got {
    Got::failed(offset, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, records: usize) -> Bytes {
        let values: Vec<Vec<u8>> = (0..records).map(|i| vec![i as u8; 100]).collect();
        let refs: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
        let mut b = strom_engine::batch::build_batch(0, &refs);
        b[0..8].copy_from_slice(&base.to_be_bytes());
        Bytes::from(b)
    }

    fn read(batches: Vec<Bytes>, full: bool) -> ReadOut {
        ReadOut::Read {
            batches,
            high_watermark: 10,
            bound: 10,
            log_start_offset: 0,
            log_end_offset: 10,
            full,
        }
    }

    #[test]
    fn the_budget_gives_the_first_batch_once() {
        let mut b = Budget::new(100);
        assert_eq!(b.limit(1 << 30), 100);
        assert!(!b.spent());
        // A first batch larger than everything is taken whole.
        b.take(500, 1);
        assert_eq!(b.left, 0);
        assert!(!b.first_batch_free);
        assert!(b.spent());
        // max_bytes 0 still lets the first batch through.
        let zero = Budget::new(0);
        assert!(!zero.spent());
        assert_eq!(zero.limit(10), 0);
    }

    #[test]
    fn reads_append_and_continue_after_the_last_batch() {
        let mut g = Got::new(0);
        g.high_watermark = 10;
        g.bound = 10;
        assert!(g.readable());
        assert!(apply(
            &mut g,
            1 << 20,
            read(vec![batch(0, 2), batch(2, 3)], false)
        ));
        assert_eq!(g.next_offset, 5);
        assert_eq!(g.batches.len(), 2);
        assert!(!g.done && g.readable());
        assert!(apply(&mut g, 1 << 20, read(vec![batch(5, 1)], false)));
        assert_eq!(g.next_offset, 6);
        assert_eq!(g.bytes, g.batches.iter().map(Bytes::len).sum::<usize>());
        // Its own limit reached: done, not read again.
        let limit = g.bytes + 1;
        assert!(apply(&mut g, limit, read(vec![batch(6, 1)], false)));
        assert!(g.done && !g.readable() && !g.waitable());
    }

    #[test]
    fn a_batch_that_did_not_fit_ends_the_partition() {
        let mut g = Got::new(3);
        g.high_watermark = 10;
        g.bound = 10;
        assert!(!apply(&mut g, 1 << 20, read(vec![], true)));
        assert!(g.done && g.error.is_none() && g.batches.is_empty());
    }

    #[test]
    fn a_failed_read_after_batches_keeps_them() {
        let mut g = Got::new(0);
        apply(&mut g, 1 << 20, read(vec![batch(0, 1)], false));
        apply(
            &mut g,
            1 << 20,
            ReadOut::Failed(ResponseError::OffsetOutOfRange),
        );
        assert!(g.error.is_none() && g.done && g.batches.len() == 1);
        let mut e = Got::new(0);
        apply(
            &mut e,
            1 << 20,
            ReadOut::Failed(ResponseError::OffsetOutOfRange),
        );
        assert_eq!(e.error, Some(ResponseError::OffsetOutOfRange));
    }
}
