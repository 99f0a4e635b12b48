//! The recovery point over the simulated file system: after a crash the
//! open scans only what follows the last point (not the whole active
//! segment), the producer state comes back from the point's snapshot, and
//! nothing synced is lost; a truncation below the point, a lost or damaged
//! point, and crashes at every step of writing one keep the log correct.

mod common;

use std::path::{Path, PathBuf};

use common::batches_from;
use futures_lite::future::block_on;
use strom_engine::batch::{build_batch, build_batch_with_producer};
use strom_engine::io::sim::SimStorage;
use strom_engine::io::Storage;
use strom_engine::producer_state::ProducerError;
use strom_engine::{Durability, EngineError, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;

const POINT_EVERY: u64 = 64 * 1024;

fn config(point_every: u64) -> LogConfig {
    LogConfig {
        segment_bytes: 4 << 20,
        index_interval_bytes: 1024,
        recovery_point_bytes: point_every,
        preallocate: false,
        ..LogConfig::default()
    }
}

async fn open(fs: &SimStorage, dir: &Path, config: &LogConfig) -> Log {
    PartitionLog::open_with(fs.clone(), dir, config.clone())
        .await
        .unwrap()
}

/// Appends `n` synced batches of about 1.5 KiB, from an idempotent producer
/// (id 7, epoch 0) whose sequence continues from `seq`.
async fn append_synced(log: &Log, n: i32, seq: i32) {
    for i in 0..n {
        let value = vec![(i % 251) as u8; 1500];
        let b = build_batch_with_producer(1_000 + i64::from(i), &[&value], 7, 0, seq + i);
        log.append(&b, Durability::Synced, 1_000).await.unwrap();
    }
}

fn point_path(dir: &Path) -> PathBuf {
    dir.join("recovery-point")
}

/// The restart cost: with points, the recovery after a process
/// crash (SIGKILL: the files keep what was written) scans about one point's
/// worth of the active segment; without, all of it. Both recover every
/// synced batch, and the producer state (a retry of the last batch is a
/// duplicate; the next sequence is accepted). A power loss may take the
/// unsynced point with it: `random_crashes_keep_every_synced_batch`.
#[test]
fn a_process_crash_scans_only_past_the_last_point() {
    for (every, whole) in [(POINT_EVERY, false), (u64::MAX, true)] {
        block_on(async {
            let fs = SimStorage::new(1);
            let dir = PathBuf::from("/sim/rp");
            let cfg = config(every);
            let log = open(&fs, &dir, &cfg).await;
            append_synced(&log, 600, 0).await;
            let want = batches_from(&log, 0).await;
            let segment_bytes: u64 = want.iter().map(|b| b.len() as u64).sum();
            assert!(segment_bytes > 10 * POINT_EVERY);
            assert_eq!(
                fs.exists(&point_path(&dir)).await.unwrap(),
                !whole,
                "a point is written only when enabled"
            );
            // Dropped without `close`: a process crash.
            drop(log);
            let log = open(&fs, &dir, &cfg).await;
            assert_eq!(batches_from(&log, 0).await, want, "synced batches lost");
            let scanned = log.recovery_scanned_bytes();
            if whole {
                assert!(
                    scanned >= segment_bytes,
                    "scanned {scanned} of {segment_bytes}"
                );
            } else {
                assert!(
                    scanned <= POINT_EVERY + 2 * 1024 + 4096,
                    "scanned {scanned} of {segment_bytes} with a point every {POINT_EVERY}"
                );
            }
            // The producer state: the last batch again is a duplicate, the
            // next sequence goes on.
            let last =
                build_batch_with_producer(1_599, &[&vec![(599 % 251) as u8; 1500]], 7, 0, 599);
            let dup = log.append(&last, Durability::Synced, 1_000).await.unwrap();
            assert_eq!(
                dup.base_offset, 599,
                "a retry after recovery is deduplicated"
            );
            let gap = build_batch_with_producer(1, &[b"x"], 7, 0, 700);
            assert!(matches!(
                log.append(&gap, Durability::Synced, 1_000).await,
                Err(EngineError::Producer(
                    ProducerError::OutOfOrderSequence { .. }
                ))
            ));
            let next = build_batch_with_producer(1, &[b"x"], 7, 0, 600);
            assert_eq!(
                log.append(&next, Durability::Synced, 1_000)
                    .await
                    .unwrap()
                    .base_offset,
                600
            );
        });
    }
}

/// A truncation below the point removes it: the bytes it described are
/// written again, and a crash recovery must not trust its entries.
#[test]
fn a_truncation_below_the_point_removes_it() {
    block_on(async {
        let fs = SimStorage::new(2);
        let dir = PathBuf::from("/sim/rp-truncate");
        let cfg = config(POINT_EVERY);
        let log = open(&fs, &dir, &cfg).await;
        append_synced(&log, 300, 0).await;
        assert!(fs.exists(&point_path(&dir)).await.unwrap());
        assert_eq!(log.truncate_to(40).await.unwrap(), 40);
        assert!(!fs.exists(&point_path(&dir)).await.unwrap());
        // New batches of other sizes over the old bytes, synced, then a crash.
        for i in 0..30 {
            let b = build_batch(5, &[&vec![9u8; 100 + i * 50], b"y"]);
            log.append(&b, Durability::Synced, 5).await.unwrap();
        }
        let want = batches_from(&log, 0).await;
        fs.crash();
        drop(log);
        let log = open(&fs, &dir, &cfg).await;
        assert_eq!(batches_from(&log, 0).await, want);
    });
}

/// A damaged point is ignored: the segment is scanned whole.
#[test]
fn a_damaged_point_costs_a_full_scan_only() {
    block_on(async {
        let fs = SimStorage::new(3);
        let dir = PathBuf::from("/sim/rp-damaged");
        let cfg = config(POINT_EVERY);
        let log = open(&fs, &dir, &cfg).await;
        append_synced(&log, 300, 0).await;
        let want = batches_from(&log, 0).await;
        log.close().await.unwrap();
        drop(log);
        // Reopen cleanly, then crash with a point whose bytes are damaged.
        let log = open(&fs, &dir, &cfg).await;
        fs.crash();
        drop(log);
        let path = point_path(&dir);
        let mut bytes = strom_engine::io::read_whole_file(&fs, &path)
            .await
            .unwrap()
            .to_vec();
        bytes[20] ^= 1;
        strom_engine::io::write_whole_file(&fs, &path, &bytes)
            .await
            .unwrap();
        let log = open(&fs, &dir, &cfg).await;
        assert_eq!(batches_from(&log, 0).await, want);
        let total: u64 = want.iter().map(|b| b.len() as u64).sum();
        assert!(log.recovery_scanned_bytes() >= total);
    });
}

/// Crashes with torn and lost writes at random points while batches are
/// appended (synced or not) and points written: every synced batch is
/// back, the log is a prefix of what was appended, and appends go on.
#[test]
fn random_crashes_keep_every_synced_batch() {
    for seed in 0..80u64 {
        block_on(async {
            let fs = SimStorage::new(seed);
            let dir = PathBuf::from("/sim/rp-random");
            let cfg = LogConfig {
                recovery_point_bytes: [4096, 16 * 1024, POINT_EVERY][(seed % 3) as usize],
                index_interval_bytes: [128, 1024, 4096][(seed / 3 % 3) as usize],
                segment_bytes: [64 * 1024, 512 * 1024][(seed / 9 % 2) as usize],
                preallocate: seed % 2 == 0,
                ..LogConfig::default()
            };
            let mut log = open(&fs, &dir, &cfg).await;
            for round in 0..6u64 {
                let n = 20 + (seed * 7 + round * 13) % 60;
                for i in 0..n {
                    let value = vec![(i % 200) as u8; 200 + ((seed + i * 31) % 1800) as usize];
                    let b = build_batch(1_000, &[&value]);
                    let d = if (seed + i + round) % 3 == 0 {
                        Durability::Written
                    } else {
                        Durability::Synced
                    };
                    log.append(&b, d, 1_000).await.unwrap();
                }
                let want = batches_from(&log, 0).await;
                if (seed + round) % 4 == 0 {
                    log.flush().await.unwrap();
                }
                // Everything below the synced offset must survive.
                let synced_end = log.synced_offset();
                let synced = want
                    .iter()
                    .take_while(|b| {
                        strom_engine::batch::BatchHeader::parse(b)
                            .unwrap()
                            .last_offset()
                            < synced_end
                    })
                    .count();
                fs.crash();
                drop(log);
                log = open(&fs, &dir, &cfg).await;
                let got = batches_from(&log, 0).await;
                assert!(
                    got.len() >= synced,
                    "seed {seed} round {round}: synced batches lost ({} < {synced})",
                    got.len()
                );
                assert_eq!(
                    got[..],
                    want[..got.len()],
                    "seed {seed} round {round}: not a prefix"
                );
            }
        });
    }
}
