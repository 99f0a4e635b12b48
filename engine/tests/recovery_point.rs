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

/// A point with a valid CRC that lies (entries at random positions and
/// offsets, a random length) must not stop the open with a panic; whatever
/// opens serves only whole, chained batches or errors. Points are written
/// by this code only, but a disk can hand back anything.
#[test]
fn a_lying_point_is_an_error_at_worst() {
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    // Opens that started the scan at a lying entry.
    let mut trusted = 0;
    for seed in 0..300u64 {
        block_on(async {
            let mut rng = SmallRng::seed_from_u64(seed);
            let fs = SimStorage::new(seed);
            let dir = PathBuf::from("/sim/rp-lie");
            let cfg = config(if seed % 2 == 0 { POINT_EVERY } else { 4096 });
            let log = open(&fs, &dir, &cfg).await;
            append_synced(&log, 40 + (seed % 50) as i32, 0).await;
            let segment_len = fs.file_len(&dir.join(format!("{:020}.log", 0))).unwrap();
            drop(log);
            // Where the batches really start: (position, base offset).
            let file = strom_engine::io::read_whole_file(&fs, &dir.join(format!("{:020}.log", 0)))
                .await
                .unwrap();
            let mut starts = Vec::new();
            let mut at = 0usize;
            while at + 61 <= file.len() {
                // The last block is padded with zeros.
                let Ok(h) = strom_engine::batch::BatchHeader::parse(&file[at..]) else {
                    break;
                };
                starts.push((at as u32, h.base_offset as u32));
                at += h.total_bytes();
            }
            // The last entry is a real batch start with its real offset, so
            // the scan trusts the point; the entries before it and the
            // length lie.
            let (last_pos, last_rel) = starts[rng.gen_range(1..starts.len())];
            let n = rng.gen_range(0..8u32);
            let m = rng.gen_range(0..5u32);
            let len = rng
                .gen_range(u64::from(last_pos) + 4096..=segment_len + 4096)
                .min(segment_len);
            let mut entries = Vec::new();
            let (mut rel, mut pos) = (0u32, 0u32);
            for _ in 0..n {
                if rel + 1 >= last_rel || pos + 1 >= last_pos {
                    break;
                }
                rel = rng.gen_range(rel + 1..last_rel);
                pos = rng.gen_range(pos + 1..last_pos);
                entries.push((rel, pos));
            }
            entries.push((last_rel, last_pos));
            let mut body = b"SRP1".to_vec();
            body.extend_from_slice(&0i64.to_le_bytes());
            body.extend_from_slice(&len.to_le_bytes());
            body.extend_from_slice(&rng.gen_range(i64::from(last_rel)..400).to_le_bytes());
            body.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            body.extend_from_slice(&m.to_le_bytes());
            for (rel, pos) in entries {
                body.extend_from_slice(&rel.to_le_bytes());
                body.extend_from_slice(&pos.to_le_bytes());
            }
            let (mut ts, mut trel) = (0i64, 0u32);
            for _ in 0..m {
                ts += rng.gen_range(1..1000);
                trel += rng.gen_range(0..10);
                body.extend_from_slice(&ts.to_le_bytes());
                body.extend_from_slice(&trel.to_le_bytes());
            }
            let crc = crc32c::crc32c(&body);
            body.extend_from_slice(&crc.to_le_bytes());
            strom_engine::io::write_whole_file(&fs, &point_path(&dir), &body)
                .await
                .unwrap();
            let Ok(log) = PartitionLog::open_with(fs.clone(), &dir, cfg.clone()).await else {
                return;
            };
            if log.recovery_scanned_bytes() < segment_len {
                trusted += 1;
            }
            let mut offset = log.log_start_offset();
            while offset < log.log_end_offset() {
                let Ok(r) = log.read(offset, 1 << 20).await else {
                    break;
                };
                let Some(last) = r.batches.last() else {
                    break;
                };
                for b in &r.batches {
                    let h = strom_engine::batch::validate(b).expect("served a bad batch");
                    assert!(
                        h.last_offset() >= offset,
                        "seed {seed}: read went backwards"
                    );
                }
                offset = strom_engine::batch::BatchHeader::parse(last)
                    .unwrap()
                    .last_offset()
                    + 1;
            }
        });
    }
    assert!(
        trusted > 0,
        "no lying point was ever applied: the test tests nothing"
    );
}
