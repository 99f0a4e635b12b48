//! `PartitionLog::delete_records_before` over the simulated file system:
//! the log start moves inside a segment, reads below it are refused, whole
//! segments below it go at the next retention pass, and the start survives
//! a clean restart and a crash (it is synced before the call returns).

use std::path::Path;

use futures_lite::future::block_on;
use strom_engine::batch::{build_batch, BatchHeader};
use strom_engine::io::sim::SimStorage;
use strom_engine::{Durability, EngineError, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 512,
        ..LogConfig::default()
    }
}

async fn open(fs: &SimStorage, dir: &Path) -> Log {
    PartitionLog::open_with(fs.clone(), dir, config())
        .await
        .unwrap()
}

/// Appends `n` synced batches of three records each.
async fn append(log: &Log, n: i64) {
    for i in 0..n {
        let value = vec![i as u8; 700];
        let b = build_batch(1_000 + i, &[&value, b"b", b"c"]);
        log.append(&b, Durability::Synced, 1_000 + i).await.unwrap();
    }
}

fn segment_count(fs: &SimStorage, dir: &Path) -> usize {
    fs.paths()
        .iter()
        .filter(|p| p.parent() == Some(dir) && p.extension().is_some_and(|e| e == "log"))
        .count()
}

/// The first offset a read at the log start returns, and the batch's base.
async fn first_read(log: &Log) -> (i64, i64) {
    let start = log.log_start_offset();
    let r = log.read(start, 1 << 20).await.unwrap();
    let h = BatchHeader::parse(r.batches.first().expect("a batch")).unwrap();
    (start, h.base_offset)
}

#[test]
fn delete_records_moves_the_start_and_keeps_it() {
    block_on(async {
        let fs = SimStorage::new(7);
        let dir = Path::new("/data/t-0");
        let log = open(&fs, dir).await;
        append(&log, 100).await;
        let end = log.log_end_offset();
        assert_eq!(end, 300);
        let segments = segment_count(&fs, dir);
        assert!(segments > 3, "{segments} segments");

        // Inside a batch of a middle segment.
        assert_eq!(log.delete_records_before(151).await.unwrap(), 151);
        let (start, base) = first_read(&log).await;
        assert_eq!(
            (start, base),
            (151, 150),
            "the batch holding 151 is served whole"
        );
        assert!(matches!(
            log.read(150, 1 << 20).await,
            Err(EngineError::OffsetOutOfRange { log_start: 151, .. })
        ));
        // Never backwards; past the high watermark is refused.
        assert_eq!(log.delete_records_before(10).await.unwrap(), 151);
        assert!(matches!(
            log.delete_records_before(end + 1).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        assert!(matches!(
            log.delete_records_before(-5).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));

        // Retention deletes the segments wholly below the start, no others.
        let deleted = log.apply_retention(2_000).await.unwrap();
        assert!(deleted > 0);
        assert_eq!(segment_count(&fs, dir), segments - deleted);
        assert_eq!(log.log_start_offset(), 151);
        assert_eq!(first_read(&log).await, (151, 150));

        // A clean restart keeps the start.
        log.close().await.unwrap();
        let log = open(&fs, dir).await;
        assert_eq!(log.log_start_offset(), 151);
        assert_eq!(log.log_end_offset(), end);

        // So does a crash right after the call returned.
        assert_eq!(log.delete_records_before(240).await.unwrap(), 240);
        drop(log);
        fs.crash();
        let log = open(&fs, dir).await;
        assert_eq!(log.log_start_offset(), 240);
        assert_eq!(first_read(&log).await, (240, 240));
        // Up to the end: an empty log that starts at its end.
        assert_eq!(log.delete_records_before(end).await.unwrap(), end);
        log.close().await.unwrap();
        let log = open(&fs, dir).await;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (end, end));
        log.close().await.unwrap();
    });
}
