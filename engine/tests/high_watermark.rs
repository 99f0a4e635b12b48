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

#[test]
fn a_follower_truncates_past_its_high_watermark() {
    // A follower's high watermark lags its log end, and the end of a new
    // leader's epoch can lie between them. Truncating there rebuilds the
    // producer state from the batches up to the new end, past the high
    // watermark; read with the readers' bound, that failed ("no batch at
    // offset 4 below the log end 8") and the log refused appends until
    // reopened (found by scripts/fault-run).
    block_on(async {
        let fs = SimStorage::new(4);
        let log: Log = PartitionLog::open_with(fs.clone(), "/sim/hw", LogConfig::default())
            .await
            .unwrap();
        append_two_record_batches(&log, 5).await;
        assert_eq!(log.set_high_watermark(4), 4);
        log.truncate_to(8).await.unwrap();
        assert_eq!(log.log_end_offset(), 8);
        assert_eq!(log.high_watermark(), 4);
        append_two_record_batches(&log, 1).await;
        assert_eq!(log.log_end_offset(), 10);
    });
}
