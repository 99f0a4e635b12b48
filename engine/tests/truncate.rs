//! `PartitionLog::truncate_to` over the simulated file system: truncation in
//! the active segment, at a segment boundary, below rolled segments and to
//! the log start; inside a batch; then appends and reads, clean restarts and
//! crashes, producer state and the indexes.

use std::path::{Path, PathBuf};

use futures_lite::future::block_on;
use strom_engine::batch::{build_batch, build_batch_with_producer, BatchHeader};
use strom_engine::io::sim::SimStorage;
use strom_engine::io::Storage;
use strom_engine::producer_state::{snapshot_offsets, ProducerError};
use strom_engine::{Durability, EngineError, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;

/// Small segments with dense indexes, so truncations cross both.
fn config(preallocate: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 512,
        preallocate,
        ..LogConfig::default()
    }
}

async fn open(fs: &SimStorage, dir: &Path, config: &LogConfig) -> Log {
    PartitionLog::open_with(fs.clone(), dir, config.clone())
        .await
        .unwrap()
}

/// Appends `n` batches of three records, each with timestamp = its index
/// plus 1000. Returns their base offsets.
async fn append_batches(log: &Log, first: i64, n: i64, d: Durability) -> Vec<i64> {
    let mut bases = Vec::new();
    for i in first..first + n {
        let value = vec![i as u8; 300 + (i as usize * 37) % 500];
        let b = build_batch(1_000 + i, &[&value, b"b", b"c"]);
        bases.push(log.append(&b, d, 1_000 + i).await.unwrap().base_offset);
    }
    bases
}

/// Every batch of the log, as stored.
async fn all_batches<S: Storage>(log: &PartitionLog<S>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut from = log.log_start_offset();
    while from < log.log_end_offset() {
        let r = log.read(from, 1 << 20).await.unwrap();
        assert!(!r.batches.is_empty(), "empty read at {from}");
        for b in &r.batches {
            from = BatchHeader::parse(b).unwrap().last_offset() + 1;
            out.push(b.to_vec());
        }
    }
    out
}

fn base(b: &[u8]) -> i64 {
    BatchHeader::parse(b).unwrap().base_offset
}

/// Batches of `all` below `offset`.
fn below(all: &[Vec<u8>], offset: i64) -> Vec<Vec<u8>> {
    all.iter().filter(|b| base(b) < offset).cloned().collect()
}

fn names(fs: &SimStorage, dir: &Path) -> Vec<String> {
    fs.paths()
        .iter()
        .filter(|p| p.parent() == Some(dir))
        .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .collect()
}

/// Checks the log after a truncation to `end`, then appends and reads back.
async fn truncated_then_appended(log: &Log, before: &[Vec<u8>], end: i64) {
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(all_batches(log).await, below(before, end));
    let bases = append_batches(log, 500, 30, Durability::Written).await;
    assert_eq!(bases[0], end, "appends go on at the new end");
    let now = all_batches(log).await;
    assert_eq!(now[..below(before, end).len()], below(before, end)[..]);
    assert_eq!(now.len(), below(before, end).len() + 30);
    for (b, want) in now[below(before, end).len()..].iter().zip(&bases) {
        assert_eq!(base(b), *want);
    }
}

#[test]
fn truncate_in_the_middle_of_the_active_segment() {
    for preallocate in [false, true] {
        block_on(async {
            let fs = SimStorage::new(1);
            let dir = PathBuf::from("/sim/active");
            let cfg = LogConfig {
                preallocate,
                ..LogConfig::default()
            };
            let log = open(&fs, &dir, &cfg).await;
            append_batches(&log, 0, 20, Durability::Written).await;
            let before = all_batches(&log).await;
            assert_eq!(log.segment_count(), 1);
            assert_eq!(log.truncate_to(30).await.unwrap(), 30);
            assert_eq!(log.synced_offset(), 30);
            truncated_then_appended(&log, &before, 30).await;
        });
    }
}

#[test]
fn an_offset_inside_a_batch_truncates_at_the_start_of_that_batch() {
    block_on(async {
        let fs = SimStorage::new(2);
        let dir = PathBuf::from("/sim/inside");
        let log = open(&fs, &dir, &config(true)).await;
        append_batches(&log, 0, 40, Durability::Written).await;
        let before = all_batches(&log).await;
        // Batches hold offsets [3k, 3k + 3): 31 is the middle of [30, 33).
        assert_eq!(log.truncate_to(31).await.unwrap(), 30);
        assert_eq!(log.truncate_to(29).await.unwrap(), 27);
        truncated_then_appended(&log, &before, 27).await;
    });
}

#[test]
fn truncate_at_a_segment_boundary() {
    block_on(async {
        let fs = SimStorage::new(3);
        let dir = PathBuf::from("/sim/boundary");
        let log = open(&fs, &dir, &config(true)).await;
        append_batches(&log, 0, 5, Durability::Written).await;
        log.roll_now().await.unwrap();
        append_batches(&log, 5, 5, Durability::Written).await;
        log.roll_now().await.unwrap();
        append_batches(&log, 10, 5, Durability::Written).await;
        assert_eq!(log.segment_count(), 3);
        let before = all_batches(&log).await;
        // 30 is the base offset of the third segment: it is emptied.
        assert_eq!(log.truncate_to(30).await.unwrap(), 30);
        assert_eq!(log.segment_count(), 3);
        assert_eq!(all_batches(&log).await, below(&before, 30));
        // And 15, the second one's: it is emptied, the third goes.
        assert_eq!(log.truncate_to(15).await.unwrap(), 15);
        assert_eq!(log.segment_count(), 2);
        assert!(!names(&fs, &dir).contains(&format!("{:020}.log", 30)));
        truncated_then_appended(&log, &before, 15).await;
    });
}

#[test]
fn truncate_below_several_rolled_segments() {
    for preallocate in [false, true] {
        block_on(async {
            let fs = SimStorage::new(4);
            let dir = PathBuf::from("/sim/rolled");
            let log = open(&fs, &dir, &config(preallocate)).await;
            append_batches(&log, 0, 120, Durability::Written).await;
            let segments = log.segment_count();
            assert!(segments >= 5, "{segments} segments");
            let before = all_batches(&log).await;
            let second_base = {
                // The base offsets of the segments, from the file names.
                let mut bases: Vec<i64> = names(&fs, &dir)
                    .iter()
                    .filter_map(|n| n.strip_suffix(".log")?.parse().ok())
                    .collect();
                bases.sort();
                bases[1]
            };
            // A batch boundary a few batches into the second segment.
            let target = second_base + 9;
            assert_eq!(log.truncate_to(target).await.unwrap(), target);
            assert_eq!(log.segment_count(), 2);
            let left = names(&fs, &dir);
            assert!(left.contains(&format!("{second_base:020}.log")));
            // The segment holding the new end is the active one: no index
            // files describe it, none is left of the segments after it.
            for n in &left {
                if let Some(stem) = n.strip_suffix(".log") {
                    assert!(stem.parse::<i64>().unwrap() <= second_base, "{n} left");
                }
                assert!(
                    !n.starts_with(&format!("{second_base:020}.")) || n.ends_with(".log"),
                    "{n} left"
                );
            }
            assert!(snapshot_offsets(&left).iter().all(|&o| o <= target));
            // Timestamps are 1000 + batch index: the indexes were rebuilt.
            let last_kept = target / 3 - 1;
            assert_eq!(
                log.max_timestamp(),
                Some((last_kept * 3, 1_000 + last_kept))
            );
            assert_eq!(
                log.offset_for_timestamp(1_000 + last_kept + 1)
                    .await
                    .unwrap(),
                None
            );
            assert_eq!(
                log.offset_for_timestamp(1_000 + 2).await.unwrap(),
                Some((6, 1_002))
            );
            truncated_then_appended(&log, &before, target).await;
            // The truncated segment rolls and is finished like any other.
            log.roll_now().await.unwrap();
            log.close().await.unwrap();
            drop(log);
            let log = open(&fs, &dir, &config(preallocate)).await;
            assert_eq!(all_batches(&log).await.len(), (target / 3) as usize + 30);
        });
    }
}

#[test]
fn truncate_to_the_log_start() {
    block_on(async {
        let fs = SimStorage::new(5);
        let dir = PathBuf::from("/sim/start");
        let mut cfg = config(false);
        let log = open(&fs, &dir, &cfg).await;
        append_batches(&log, 0, 80, Durability::Written).await;
        // Retention moves the log start past offset 0 first.
        cfg.retention_bytes = 20 * 1024;
        log.set_config(cfg.clone());
        assert!(log.apply_retention(0).await.unwrap() > 0);
        let start = log.log_start_offset();
        assert!(start > 0);
        assert!(matches!(
            log.truncate_to(start - 1).await,
            Err(EngineError::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.truncate_to(start).await.unwrap(), start);
        assert_eq!(log.segment_count(), 1);
        assert_eq!(
            (log.log_start_offset(), log.log_end_offset()),
            (start, start)
        );
        assert_eq!(log.max_timestamp(), None);
        assert!(all_batches(&log).await.is_empty());
        let bases = append_batches(&log, 0, 3, Durability::Synced).await;
        assert_eq!(bases, vec![start, start + 3, start + 6]);
        // An offset at or past the end changes nothing.
        assert_eq!(log.truncate_to(start + 9).await.unwrap(), start + 9);
        assert_eq!(log.truncate_to(i64::MAX).await.unwrap(), start + 9);
        log.close().await.unwrap();
        assert!(matches!(
            log.truncate_to(start).await,
            Err(EngineError::Closed)
        ));
    });
}

/// After a truncation, neither a clean restart nor a crash brings back a
/// truncated record: the log is the truncated one plus what was appended
/// since (all of it after a clean restart, at least what was synced after
/// a crash).
#[test]
fn truncated_records_stay_gone_after_a_restart_or_a_crash() {
    for seed in 0..60u64 {
        block_on(async {
            let fs = SimStorage::new(seed);
            let dir = PathBuf::from("/sim/restart");
            let cfg = config(seed % 2 == 0);
            let log = open(&fs, &dir, &cfg).await;
            let n = 20 + (seed as i64 * 7) % 60;
            append_batches(&log, 0, n, Durability::Written).await;
            if seed % 3 == 0 {
                log.flush().await.unwrap();
            }
            let before = all_batches(&log).await;
            let target = 3 * ((seed as i64 * 13) % n);
            assert_eq!(log.truncate_to(target).await.unwrap(), target);
            let mut want = below(&before, target);
            let mut synced = want.len();
            // Then maybe new batches, synced or not, over the cut bytes.
            let more = (seed % 4) as i64 * 4;
            let d = if seed % 5 == 0 {
                Durability::Synced
            } else {
                Durability::Written
            };
            append_batches(&log, 900, more, d).await;
            let after = all_batches(&log).await;
            assert_eq!(after[..want.len()], want[..]);
            want = after;
            if d == Durability::Synced {
                synced = want.len();
            }
            let clean = seed % 7 == 1;
            if clean {
                log.close().await.unwrap();
            } else {
                fs.crash();
            }
            drop(log);
            let log = open(&fs, &dir, &cfg).await;
            let got = all_batches(&log).await;
            if clean {
                assert_eq!(got, want, "seed {seed}: clean restart");
            } else {
                assert!(got.len() >= synced, "seed {seed}: synced batches lost");
                assert_eq!(got[..], want[..got.len()], "seed {seed}: not a prefix");
            }
            // Appends go on where the log ends.
            let end = log.log_end_offset();
            let info = log
                .append(&build_batch(1, &[b"z"]), Durability::Synced, 1)
                .await
                .unwrap();
            assert_eq!(info.base_offset, end);
        });
    }
}

#[test]
fn a_crash_right_after_a_truncation_keeps_exactly_the_truncated_log() {
    for seed in 0..30u64 {
        block_on(async {
            let fs = SimStorage::new(seed);
            let dir = PathBuf::from("/sim/right-after");
            let cfg = config(seed % 2 == 1);
            let log = open(&fs, &dir, &cfg).await;
            append_batches(&log, 0, 70, Durability::Written).await;
            let before = all_batches(&log).await;
            let target = 3 * (5 + seed as i64 * 2);
            log.truncate_to(target).await.unwrap();
            fs.crash();
            drop(log);
            let log = open(&fs, &dir, &cfg).await;
            assert_eq!(
                all_batches(&log).await,
                below(&before, target),
                "seed {seed}"
            );
        });
    }
}

#[test]
fn truncation_rewinds_the_producer_state() {
    block_on(async {
        let fs = SimStorage::new(6);
        let dir = PathBuf::from("/sim/producers");
        let cfg = config(false);
        let log = open(&fs, &dir, &cfg).await;
        let batch = |seq: i32| build_batch_with_producer(10, &[&[seq as u8; 200]], 7, 0, seq);
        let mut offsets = Vec::new();
        for seq in 0..5 {
            offsets.push(
                log.append(&batch(seq), Durability::Written, 1)
                    .await
                    .unwrap()
                    .base_offset,
            );
        }
        // A roll writes a snapshot that covers all five.
        log.roll_now().await.unwrap();
        log.append(&build_batch(1, &[b"plain"]), Durability::Synced, 1)
            .await
            .unwrap();
        assert!(snapshot_offsets(&names(&fs, &dir)).contains(&5));
        // Cut the batches with sequences 3 and 4 (and what came after).
        assert_eq!(log.truncate_to(offsets[3]).await.unwrap(), 3);
        assert!(
            snapshot_offsets(&names(&fs, &dir)).iter().all(|&o| o <= 3),
            "a snapshot past the new end is left"
        );
        for reopen in [false, true] {
            let log = if reopen {
                fs.crash();
                open(&fs, &dir, &cfg).await
            } else {
                log.clone()
            };
            // Sequence 2 is still in the log: a retry is a duplicate.
            let again = log.append(&batch(2), Durability::Written, 2).await.unwrap();
            assert_eq!(again.base_offset, offsets[2]);
            // Sequence 4 would skip 3, which is gone.
            assert!(matches!(
                log.append(&batch(4), Durability::Written, 2).await,
                Err(EngineError::Producer(ProducerError::OutOfOrderSequence {
                    expected: 3,
                    ..
                }))
            ));
            if !reopen {
                // Sequence 3 is appended again, at the new end; then cut again.
                let info = log.append(&batch(3), Durability::Synced, 2).await.unwrap();
                assert_eq!(info.base_offset, 3);
                log.truncate_to(3).await.unwrap();
            }
        }
    });
}

#[test]
fn appends_wait_for_a_truncation_and_go_on_at_the_new_end() {
    block_on(async {
        let fs = SimStorage::new(7);
        let dir = PathBuf::from("/sim/concurrent");
        let log = open(&fs, &dir, &config(true)).await;
        append_batches(&log, 0, 60, Durability::Written).await;
        let b = build_batch(5, &[b"after"]);
        let (cut, appended) =
            futures_lite::future::zip(log.truncate_to(12), log.append(&b, Durability::Synced, 5))
                .await;
        assert_eq!(cut.unwrap(), 12);
        assert_eq!(appended.unwrap().base_offset, 12);
        assert_eq!(log.log_end_offset(), 13);
    });
}

/// On O_DIRECT files with glommio, where full chunks are written and rolled
/// segments finished in the background, while another task appends.
#[test]
fn truncate_on_real_files_while_appends_and_background_writes_run() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t-0");
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let config = LogConfig {
                segment_bytes: 512 * 1024,
                index_interval_bytes: 4096,
                preallocate: true,
                ..LogConfig::default()
            };
            let log = PartitionLog::open(&path, config.clone()).await.unwrap();
            let value = vec![7u8; 2000];
            for i in 0..3000 {
                let b = build_batch(i, &[&value]);
                log.append(&b, Durability::Written, i).await.unwrap();
            }
            assert!(log.segment_count() > 8);
            let before = all_batches(&log).await;
            // Appends from another task, yielding between them, so that
            // some land before the cut (and are cut) and some wait for it.
            let appender = glommio::spawn_local({
                let log = log.clone();
                async move {
                    let mut bases = Vec::new();
                    for i in 0..200 {
                        let b = build_batch(10_000 + i, &[b"late"]);
                        let info = log.append(&b, Durability::Written, i).await.unwrap();
                        bases.push(info.base_offset);
                        futures_lite::future::yield_now().await;
                    }
                    bases
                }
            });
            futures_lite::future::yield_now().await;
            let target = 1234;
            assert_eq!(log.truncate_to(target).await.unwrap(), target);
            let bases = appender.await;
            let after = all_batches(&log).await;
            assert_eq!(after[..target as usize], below(&before, target)[..]);
            // Late batches appended before the cut went with it; those
            // appended after follow the new end, in order.
            let kept: Vec<i64> = bases.iter().copied().filter(|&b| b < 3000).collect();
            assert!(kept.len() < 200, "no append landed before the cut");
            assert!(!kept.is_empty(), "no append waited for the cut");
            assert_eq!(
                kept,
                (target..target + kept.len() as i64).collect::<Vec<_>>()
            );
            assert_eq!(after.len(), target as usize + kept.len());
            for b in &after[target as usize..] {
                assert!(b.windows(4).any(|w| w == b"late"));
            }
            log.close().await.unwrap();
            drop(log);
            let log = PartitionLog::open(&path, config).await.unwrap();
            assert_eq!(all_batches(&log).await, after);
            log.close().await.unwrap();
        })
        .unwrap()
        .join()
        .unwrap();
}
