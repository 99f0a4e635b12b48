//! Idempotent batches this shard refused before appending them, so that a
//! batch pipelined behind a refused one gets the same retriable error
//! instead of OUT_OF_ORDER_SEQUENCE_NUMBER.
//!
//! A producer with up to five requests in flight sends R1 (sequence n) and
//! R2 (n+1) back to back. When R1 is refused before its append (this broker
//! did not lead the partition yet, or the ISR was below
//! `min.insync.replicas`) and the condition clears before R2 is handled,
//! Kafka answers R2 with OUT_OF_ORDER_SEQUENCE_NUMBER. The Java client then
//! retries R1 and R2. librdkafka bumps the producer epoch instead
//! (confluentinc/librdkafka#4953). The bump renumbers every unacknowledged
//! message of the producer, on every partition, including messages that
//! an earlier leader may have persisted but never acknowledged (a transport
//! error, a timed-out request). Those are then written a second time under
//! the new epoch, and the idempotent producer writes duplicates. The
//! fault run (`scripts/fault-run`) found such duplicates, and the producers'
//! debug logs showed the bump's cause: "skipped sequence numbers ... caused
//! by previous failed request (NOT_LEADER_FOR_PARTITION)".
//!
//! Strom remembers such a refusal. The gap was this broker's own doing,
//! and the client retries the refused batch, so a batch whose gap (from
//! the expected sequence up to its own) holds a refused batch's first
//! sequence gets the refusal's error again. Both clients retry it without
//! a bump. The refused batch need not be the expected one: the batches
//! before it may be in flight to an earlier leader that was cut off (the
//! fault run: sequence 413 sent to the old leader, 414 refused here while
//! this broker took over, 415 out of order), and the client sends those
//! again too. Any other gap is still
//! OUT_OF_ORDER_SEQUENCE_NUMBER (or UNKNOWN_PRODUCER_ID, for a producer the
//! partition has no state for, which librdkafka treats as fatal after a
//! retry).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use strom_engine::batch::BatchHeader;
use strom_engine::error::ProducerError;

/// A refusal explains a gap for this long. A client sends the refused batch
/// again as soon as its other requests to the partition are answered, well
/// within this; a client that has not by then gave it up, and its gap is
/// OUT_OF_ORDER_SEQUENCE_NUMBER again.
const REMEMBERED_FOR: Duration = Duration::from_secs(10);
/// At most this many refusals per shard; the oldest go first.
const MAX_REMEMBERED: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Refusal {
    error: ResponseError,
    at: Instant,
}

/// (topic, partition, producer id, producer epoch, the refused batch's
/// first sequence).
type Key = (String, i32, i64, i16, i32);

thread_local! {
    /// This shard's refusals.
    static REFUSED: RefCell<HashMap<Key, Refusal>> = RefCell::new(HashMap::new());
}

/// The refused batch's first batch header, when it is an idempotent one.
fn idempotent_header(records: &[u8]) -> Option<BatchHeader> {
    BatchHeader::parse(records)
        .ok()
        .filter(|h| h.producer_id >= 0 && h.base_sequence >= 0)
}

/// Remembers that the batches in `records` were refused with `error`
/// before any was appended. Only retriable refusals are kept: the client
/// retries those.
pub fn remember(topic: &str, partition: i32, records: &[u8], error: ResponseError) {
    if !matches!(
        error,
        ResponseError::NotLeaderOrFollower
            | ResponseError::NotEnoughReplicas
            | ResponseError::UnknownTopicOrPartition
    ) {
        return;
    }
    let Some(h) = idempotent_header(records) else {
        return;
    };
    tracing::debug!(
        topic,
        partition,
        producer_id = h.producer_id,
        producer_epoch = h.producer_epoch,
        base_sequence = h.base_sequence,
        ?error,
        "remembering a refused idempotent batch"
    );
    let now = Instant::now();
    REFUSED.with(|refused| {
        let mut refused = refused.borrow_mut();
        if refused.len() >= MAX_REMEMBERED {
            refused.retain(|_, r| now.duration_since(r.at) < REMEMBERED_FOR);
            if refused.len() >= MAX_REMEMBERED {
                if let Some(oldest) = refused
                    .iter()
                    .min_by_key(|(_, r)| r.at)
                    .map(|(k, _)| k.clone())
                {
                    refused.remove(&oldest);
                }
            }
        }
        let key = (
            topic.to_string(),
            partition,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
        );
        refused.insert(key, Refusal { error, at: now });
    });
}

/// For an out-of-order sequence (or a first batch of an unknown producer
/// that does not start at 0): the error to answer instead, with why, when
/// a batch inside the gap (from the expected sequence up to this batch's)
/// is one this shard refused before its append.
pub fn explains_gap(
    topic: &str,
    partition: i32,
    e: &ProducerError,
) -> Option<(ResponseError, String)> {
    // A producer this partition has no state for expects sequence 0.
    let (producer_id, epoch, sequence, expected) = match *e {
        ProducerError::OutOfOrderSequence {
            producer_id,
            epoch,
            sequence,
            expected,
        } => (producer_id, epoch, sequence, expected),
        ProducerError::UnknownProducerId {
            producer_id,
            epoch,
            sequence,
        } => (producer_id, epoch, sequence, 0),
        _ => return None,
    };
    if sequence <= expected {
        return None;
    }
    // Any refused batch inside the gap: the batches before it are the
    // client's own unacknowledged ones (in flight to an earlier leader, or
    // refused too), and it sends them all again in order.
    let (refused_at, r) = REFUSED.with(|refused| {
        refused
            .borrow()
            .iter()
            .filter(|((t, p, id, e, seq), _)| {
                t == topic
                    && *p == partition
                    && *id == producer_id
                    && *e == epoch
                    && (expected..sequence).contains(seq)
            })
            .map(|(key, r)| (key.4, *r))
            .max_by_key(|(_, r)| r.at)
    })?;
    (r.at.elapsed() < REMEMBERED_FOR).then(|| {
        (
            r.error,
            format!(
                "producer {producer_id} epoch {epoch}: the batch at sequence {refused_at} was refused ({:?}) before it was appended; send the batches from sequence {expected} again before sequence {sequence}",
                r.error
            ),
        )
    })
}
