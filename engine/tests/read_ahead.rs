//! Read-ahead on the real disk (glommio `DmaFile`, O_DIRECT): a reader
//! going through a cold log is served from read-aheads and gets every
//! batch whole, and a truncation never lets a read-ahead serve the bytes
//! it cut.

use std::future::Future;

use strom_engine::batch::{self, build_batch};
use strom_engine::{Durability, LogConfig, PartitionLog, ReadLimit};

fn run<T>(f: impl Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor")
        .run(f)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        index_interval_bytes: 4096,
        ..LogConfig::default()
    }
}

/// Batch `i` of generation `gen`: three records of about 2.7 KiB that
/// name both, so a batch read from the wrong generation shows.
fn batch_for(gen: u32, i: u64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..3)
        .map(|j| format!("gen {gen} batch {i}.{j} {}", "y".repeat(2700)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    build_batch(1_000, &refs)
}

/// Appends batches `from..to` of `gen`; returns each one's base offset.
async fn append(log: &PartitionLog, gen: u32, from: u64, to: u64) -> Vec<i64> {
    let mut bases = Vec::new();
    for i in from..to {
        let info = log
            .append(&batch_for(gen, i), Durability::Written, 0)
            .await
            .expect("append");
        bases.push(info.base_offset);
    }
    bases
}

/// Reads from `offset` to the log end in steps of `step` bytes; the
/// batches, each checked against what generation `gen` wrote at its base.
async fn read_through(
    log: &PartitionLog,
    mut offset: i64,
    step: usize,
    expect: &dyn Fn(i64) -> Vec<u8>,
) -> usize {
    let mut batches = 0;
    while offset < log.log_end_offset() {
        let r = log.read(offset, step).await.expect("read");
        assert!(!r.batches.is_empty(), "no batch at {offset}");
        for b in &r.batches {
            let h = batch::BatchHeader::parse(b).expect("header");
            let mut want = expect(h.base_offset);
            batch::set_base_offset(&mut want, h.base_offset);
            // Not assert_eq: a failure would print megabytes.
            assert!(
                b[..] == want[..],
                "batch at offset {} is not the one written there",
                h.base_offset
            );
            offset = h.last_offset() + 1;
            batches += 1;
        }
    }
    batches
}

#[test]
fn a_cold_log_read_in_steps_is_served_by_read_aheads() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    run(async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        // About 10 MiB over three segments, all on the disk after a reopen.
        append(&log, 0, 0, 1200).await;
        log.close().await.unwrap();
        let log = PartitionLog::open(&path, config()).await.unwrap();
        // Batch i holds offsets 3i..3i+3.
        let read = read_through(&log, 0, 256 << 10, &|base| batch_for(0, (base / 3) as u64)).await;
        assert_eq!(read, 1200);
        assert!(
            log.read_ahead_hits() > 10,
            "read-aheads served {} reads of about 40",
            log.read_ahead_hits()
        );
        log.close().await.unwrap();
    });
}

#[test]
fn truncation_drops_the_read_ahead_of_the_bytes_it_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    run(async move {
        let log = PartitionLog::open(&path, config()).await.unwrap();
        append(&log, 0, 0, 300).await;
        log.close().await.unwrap();
        let log = PartitionLog::open(&path, config()).await.unwrap();
        // A read from the disk starts the read-ahead of the next step, at
        // `next`. The cut lies before it, so the truncation's own scan
        // does not use that read-ahead up.
        let first = log.read(0, 64 << 10).await.unwrap();
        let last = batch::BatchHeader::parse(first.batches.last().unwrap()).unwrap();
        let next = last.last_offset() + 1;
        assert!(next > 6);
        assert_eq!(log.truncate_to(3).await.unwrap(), 3);
        // A new generation of the same sizes over the same file positions,
        // past the segment's roll so they are all on the disk.
        let bases = append(&log, 1, 1, 1800).await;
        assert_eq!(bases[0], 3);
        log.flush().await.unwrap();
        // The next step reads where the read-ahead started, and must see
        // the new generation.
        let read = read_through(&log, next, 64 << 10, &|base| {
            batch_for(1, (base / 3) as u64)
        })
        .await;
        assert_eq!(read as i64, 1800 - next / 3);
        log.close().await.unwrap();
    });
}

/// Batch `i` of about 100 KiB (37 records of 2.7 KiB).
fn big_batch(i: u64) -> Vec<u8> {
    let values: Vec<Vec<u8>> = (0..37)
        .map(|j| format!("big {i}.{j} {}", "z".repeat(2700)).into_bytes())
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    build_batch(1_000, &refs)
}

/// A log of `n` big batches, reopened so that all of it is on the disk.
async fn cold_log_of_big_batches(path: &std::path::Path, n: u64) -> PartitionLog {
    let log = PartitionLog::open(path, config()).await.unwrap();
    for i in 0..n {
        log.append(&big_batch(i), Durability::Written, 0)
            .await
            .expect("append");
    }
    log.close().await.unwrap();
    PartitionLog::open(path, config()).await.unwrap()
}

#[test]
fn a_reader_going_through_reads_each_byte_from_the_disk_once() {
    // Steps of 256 KiB over 100 KiB batches: each step returns two and
    // has read into the third. The next step's read-ahead starts with
    // those bytes instead of reading them again (1.3x the log before).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    run(async move {
        let log = cold_log_of_big_batches(&path, 100).await;
        let total: usize = (0..100).map(|i| big_batch(i).len()).sum();
        let read = read_through(&log, 0, 256 << 10, &|base| big_batch((base / 37) as u64)).await;
        assert_eq!(read, 100);
        let asked = log.file_read_bytes();
        assert!(
            asked as f64 <= total as f64 * 1.05,
            "read {asked} bytes from the file for a log of {total}"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_first_batch_that_does_not_fit_is_answered_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p0");
    run(async move {
        let log = cold_log_of_big_batches(&path, 20).await;
        let batch_bytes = big_batch(0).len();
        let fitting = |max_bytes| ReadLimit {
            max_bytes,
            first_batch_whole: false,
            to_end: false,
            split_batches: false,
        };
        // Cold: only the window holding the header is read.
        let r = log.read_limited(0, fitting(50 << 10)).await.unwrap();
        assert!(r.batches.is_empty() && r.first_batch_did_not_fit);
        assert!(
            (log.file_read_bytes() as usize) < batch_bytes,
            "read {} bytes of the file to find that a {batch_bytes}-byte batch does not fit",
            log.file_read_bytes()
        );
        // KIP-74's first batch is whole whatever the limit.
        let r = log.read(0, 50 << 10).await.unwrap();
        assert_eq!(r.batches.len(), 1);
        assert!(!r.first_batch_did_not_fit);
        // A read of two batches starts the read-ahead of what follows, with
        // what it read of the third. A read that stops at the third (its
        // window reaches past those bytes), then one that takes it, are
        // both served by the read-ahead: the first does not use up what
        // the second wants.
        let r = log.read(0, 256 << 10).await.unwrap();
        assert_eq!(r.batches.len(), 2);
        let next = batch::BatchHeader::parse(&r.batches[1])
            .unwrap()
            .last_offset()
            + 1;
        let hits = log.read_ahead_hits();
        let r = log.read_limited(next, fitting(90 << 10)).await.unwrap();
        assert!(r.batches.is_empty() && r.first_batch_did_not_fit);
        let r = log.read_limited(next, fitting(256 << 10)).await.unwrap();
        assert_eq!(r.batches.len(), 2);
        assert_eq!(
            batch::BatchHeader::parse(&r.batches[0])
                .unwrap()
                .base_offset,
            next
        );
        assert_eq!(
            log.read_ahead_hits(),
            hits + 2,
            "both reads served by the read-ahead"
        );
        log.close().await.unwrap();
    });
}
