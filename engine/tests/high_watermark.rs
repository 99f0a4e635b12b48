//! The read bound of a replicated log: once the broker sets a high
//! watermark, readers (and long polls) see up to it, capped at the written
//! offset; it never moves backwards except by truncation; a follower's
//! read (`read_to_end`) goes past it to the log end.

use futures_lite::future::{block_on, poll_once};
use strom_engine::batch::{build_batch, BatchHeader};
use strom_engine::io::sim::SimStorage;
use strom_engine::{Durability, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;

fn bases(r: &strom_engine::ReadResult) -> Vec<i64> {
    r.batches
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap().base_offset)
        .collect()
}

async fn append_two_record_batches(log: &Log, n: i64) {
    for i in 0..n {
        let b = build_batch(1_000 + i, &[b"a", b"b"]);
        log.append(&b, Durability::Written, 1_000).await.unwrap();
    }
}

#[test]
fn readers_see_up_to_the_high_watermark_and_followers_past_it() {
    block_on(async {
        let fs = SimStorage::new(3);
        let log: Log = PartitionLog::open_with(fs.clone(), "/sim/hw", LogConfig::default())
            .await
            .unwrap();
        append_two_record_batches(&log, 5).await;
        // One node: the read bound is the written offset.
        assert_eq!(log.high_watermark(), 10);
        assert_eq!(log.set_high_watermark(4), 4);
        assert_eq!(log.high_watermark(), 4);
        assert_eq!(bases(&log.read(0, 1 << 20).await.unwrap()), vec![0, 2]);
        assert_eq!(log.read(4, 1 << 20).await.unwrap().batches.len(), 0);
        let all = log.read_to_end(0, 1 << 20).await.unwrap();
        assert_eq!(bases(&all), vec![0, 2, 4, 6, 8]);
        // The record with the largest timestamp is past the bound.
        assert_eq!(log.max_timestamp(), None);
        // Never backwards, never past the log end.
        assert_eq!(log.set_high_watermark(2), 4);
        assert_eq!(log.set_high_watermark(100), 10);
        assert_eq!(
            log.max_timestamp().map(|(o, _)| o),
            Some(8),
            "the last batch"
        );
        // A long poll waits for the high watermark, not the log end.
        let waiting = log.wait_for_offset(10);
        futures_lite::pin!(waiting);
        assert!(poll_once(waiting.as_mut()).await.is_none());
        append_two_record_batches(&log, 1).await;
        assert!(poll_once(waiting.as_mut()).await.is_none(), "appended only");
        log.set_high_watermark(12);
        assert!(poll_once(waiting.as_mut()).await.is_some());
        // Truncation takes the high watermark down with the log.
        log.truncate_to(6).await.unwrap();
        assert_eq!(log.high_watermark(), 6);
        assert_eq!(log.set_high_watermark(5), 6);
    });
}

/// A follower's log truncated between its high watermark and its log end
/// (its new leader's epoch ends there): the producer state is replayed
/// from the log past the high watermark too, so the truncation succeeds
/// and the log takes appends. (It failed with "producer state replay: no
/// batch at offset 4 below the log end 8" and refused appends until
/// reopened, which stalled a partition's in-sync follower in the network
/// partition test.)
#[test]
fn truncating_above_the_high_watermark_keeps_the_log_usable() {
    block_on(async {
        let fs = SimStorage::new(3);
        let log: Log = PartitionLog::open_with(fs.clone(), "/sim/hw-cut", LogConfig::default())
            .await
            .unwrap();
        append_two_record_batches(&log, 5).await;
        assert_eq!(log.set_high_watermark(4), 4);
        assert_eq!(log.truncate_to(8).await.unwrap(), 8);
        assert_eq!(log.log_end_offset(), 8);
        assert_eq!(log.high_watermark(), 4);
        append_two_record_batches(&log, 1).await;
        assert_eq!(log.log_end_offset(), 10);
        assert_eq!(
            bases(&log.read_to_end(0, 1 << 20).await.unwrap()),
            vec![0, 2, 4, 6, 8]
        );
    });
}

/// Retention deletes only segments wholly below the high watermark, as
/// Kafka does. Before, a leader whose in-sync followers lagged deleted the
/// segments they had not fetched yet by `retention.bytes`; each follower
/// then started again at the leader's new log start, past records it never
/// held, and acks=all acknowledged records no follower had (seen on three
/// nodes at max rate with retention.bytes 256 MiB: followers 280,000
/// records behind their leader when the run ended).
#[test]
fn retention_keeps_segments_the_high_watermark_has_not_passed() {
    block_on(async {
        let fs = SimStorage::new(3);
        let config = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let log: Log = PartitionLog::open_with(fs.clone(), "/sim/hw-retention", config.clone())
            .await
            .unwrap();
        for i in 0..1_000 {
            let value = vec![b'v'; 200];
            let b = build_batch(1_000 + i, &[&value]);
            log.append(&b, Durability::Written, 1_000).await.unwrap();
        }
        assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
        log.set_high_watermark(0);
        log.set_config(LogConfig {
            retention_bytes: 1,
            ..config
        });
        assert_eq!(log.apply_retention(1_000).await.unwrap(), 0);
        assert_eq!(log.log_start_offset(), 0);
        // The followers have fetched up to 500: segments below it go.
        log.set_high_watermark(500);
        assert!(log.apply_retention(1_000).await.unwrap() > 0);
        let start = log.log_start_offset();
        assert!(start > 0 && start <= 500, "log start {start}");
        assert_eq!(bases(&log.read(start, 1 << 20).await.unwrap())[0], start);
        // All of it: everything but the active segment.
        log.set_high_watermark(1_000);
        log.apply_retention(1_000).await.unwrap();
        assert_eq!(log.segment_count(), 1);
    });
}

/// The cleaner takes only segments wholly below the high watermark, as
/// Kafka's stops at the last stable offset. A leader that cleaned away a
/// committed record because an uncommitted one superseded it would, after
/// losing its uncommitted tail to a new leader (truncation to the high
/// watermark), hold neither value of that key, while its new leader holds
/// the committed one.
#[test]
fn compaction_takes_only_segments_below_the_high_watermark() {
    use strom_engine::config::CleanerConfig;
    use strom_engine::log::NoPacing;
    use strom_engine::records::build_keyed_batch;
    block_on(async {
        let fs = SimStorage::new(5);
        let config = LogConfig {
            segment_bytes: 16 * 1024,
            cleanup_compact: true,
            cleanup_delete: false,
            min_cleanable_dirty_ratio: 0.0,
            preallocate: false,
            ..LogConfig::default()
        };
        let log: Log = PartitionLog::open_with(fs.clone(), "/sim/hw-clean", config)
            .await
            .unwrap();
        // 100 updates of one key, ten to a segment: offsets 0..100 in ten
        // closed segments, then an empty active one.
        for i in 0..100u32 {
            let value = format!("v{i}");
            let b = build_keyed_batch(
                1_000,
                &[(Some(b"k"), Some(value.as_bytes()))],
                (-1, -1, -1),
                false,
            );
            log.append(&b, Durability::Written, 1_000).await.unwrap();
            if i % 10 == 9 {
                log.roll_now().await.unwrap();
            }
        }
        assert_eq!(log.segment_count(), 11);
        log.set_high_watermark(0);
        let cleaner = CleanerConfig::default();
        let none = log.clean(2_000, &cleaner, &mut NoPacing).await.unwrap();
        assert!(
            none.is_none(),
            "cleaned above a high watermark of 0: {none:?}"
        );
        assert_eq!(log.read(0, 1 << 20).await.unwrap().batches.len(), 0);
        // Committed up to 55: the five segments below 50 may be cleaned,
        // not the one holding 50..60.
        log.set_high_watermark(55);
        let stats = log
            .clean(2_000, &cleaner, &mut NoPacing)
            .await
            .unwrap()
            .expect("a clean below the high watermark is due");
        assert_eq!(stats.end_offset, 50, "{stats:?}");
        // Everything from 50 on is as appended: the record at 50 (superseded
        // by 99, above the high watermark) is still there.
        let r = log.read_to_end(50, 1 << 20).await.unwrap();
        assert_eq!(bases(&r)[..10], (50..60).collect::<Vec<i64>>()[..]);
    });
}
