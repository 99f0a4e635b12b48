//! The log's idempotent-producer behaviour through its public API.

use strom_engine::batch::{build_batch, build_batch_with_producer};
use strom_engine::producer_state::ProducerError;
use strom_engine::{Durability, EngineError, LogConfig, PartitionLog};

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn retried_batch_is_answered_with_its_original_offsets_and_not_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default())
            .await
            .unwrap();
        log.append(&build_batch(1, &[b"plain"]), Durability::Synced, 0)
            .await
            .unwrap();
        let b0 = build_batch_with_producer(10, &[b"a", b"b"], 7, 0, 0);
        let b1 = build_batch_with_producer(11, &[b"c"], 7, 0, 2);
        let first = log.append(&b0, Durability::Synced, 0).await.unwrap();
        assert_eq!((first.base_offset, first.last_offset), (1, 2));
        log.append(&b1, Durability::Written, 0).await.unwrap();
        assert_eq!(log.log_end_offset(), 4);

        for durability in [Durability::Written, Durability::Synced] {
            let again = log.append(&b0, durability, 0).await.unwrap();
            assert_eq!((again.base_offset, again.last_offset), (1, 2));
            assert_eq!(again.log_append_time_ms, -1);
        }
        assert_eq!(log.log_end_offset(), 4, "a duplicate appends nothing");

        let gap = build_batch_with_producer(12, &[b"d"], 7, 0, 5);
        match log.append(&gap, Durability::Synced, 0).await {
            Err(EngineError::Producer(ProducerError::OutOfOrderSequence {
                expected: 3, ..
            })) => {}
            other => panic!("gap accepted: {other:?}"),
        }
        let bumped = build_batch_with_producer(13, &[b"e"], 7, 1, 0);
        assert_eq!(
            log.append(&bumped, Durability::Synced, 0)
                .await
                .unwrap()
                .base_offset,
            4
        );
        let stale = build_batch_with_producer(14, &[b"f"], 7, 0, 3);
        match log.append(&stale, Durability::Synced, 0).await {
            Err(EngineError::Producer(ProducerError::InvalidProducerEpoch {
                current_epoch: 1,
                ..
            })) => {}
            other => panic!("stale epoch accepted: {other:?}"),
        }
        let unknown = build_batch_with_producer(15, &[b"g"], 8, 0, 9);
        match log.append(&unknown, Durability::Synced, 0).await {
            Err(EngineError::Producer(ProducerError::UnknownProducerId {
                producer_id: 8, ..
            })) => {}
            other => panic!("unknown producer mid-sequence accepted: {other:?}"),
        }
        assert_eq!(log.log_end_offset(), 5);
        let read = log.read(0, 1 << 20).await.unwrap();
        assert_eq!(read.batches.len(), 4);
        log.close().await.unwrap();
    });
}

use std::collections::HashMap;
use std::path::Path;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strom_engine::batch::BatchHeader;
use strom_engine::io::sim::SimStorage;
use strom_engine::io::Storage;
use strom_engine::producer_state::snapshot_offsets;

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        preallocate: false,
        ..LogConfig::default()
    }
}

/// (producer id, first sequence) of every batch in the log, in offset order.
async fn stored_batches(log: &PartitionLog<SimStorage>) -> Vec<(i64, i32, i64)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let r = log.read(offset, 1 << 20).await.unwrap();
        for b in &r.batches {
            let h = BatchHeader::parse(b).unwrap();
            if h.base_offset >= offset {
                out.push((h.producer_id, h.base_sequence, h.base_offset));
            }
            offset = h.last_offset() + 1;
        }
    }
    out
}

#[test]
fn dedup_survives_clean_close_roll_and_crash() {
    run(|| async {
        let fs = SimStorage::new(7);
        let dir = Path::new("/data/t-0");
        let log = PartitionLog::open_with(fs.clone(), dir, small_segments())
            .await
            .unwrap();
        let batch = |seq: i32| build_batch_with_producer(1, &[&b"x"[..]; 4], 42, 0, seq);
        for seq in (0..40).step_by(4) {
            log.append(&batch(seq), Durability::Synced, 0)
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        assert!(
            block_snapshots(&fs, dir).await.contains(&40),
            "close writes a snapshot at the log end"
        );

        // Clean reopen: the snapshot alone answers the retry.
        let log = PartitionLog::open_with(fs.clone(), dir, small_segments())
            .await
            .unwrap();
        assert_eq!(
            log.append(&batch(36), Durability::Synced, 0)
                .await
                .unwrap()
                .base_offset,
            36
        );
        log.append(&batch(40), Durability::Synced, 0).await.unwrap();
        log.roll_now().await.unwrap();
        assert!(
            block_snapshots(&fs, dir).await.contains(&44),
            "a roll writes a snapshot"
        );
        log.append(&batch(44), Durability::Synced, 0).await.unwrap();
        log.append(&batch(48), Durability::Synced, 0).await.unwrap();
        drop(log);
        fs.crash();

        // Crash: snapshot at 44 plus a replay of the batches after it.
        let log = PartitionLog::open_with(fs.clone(), dir, small_segments())
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 52);
        for seq in [36, 40, 44, 48] {
            let info = log
                .append(&batch(seq), Durability::Synced, 0)
                .await
                .unwrap();
            assert_eq!(info.base_offset, seq as i64, "retry of sequence {seq}");
        }
        assert_eq!(log.log_end_offset(), 52);
        assert!(matches!(
            log.append(&batch(56), Durability::Synced, 0).await,
            Err(EngineError::Producer(ProducerError::OutOfOrderSequence {
                expected: 52,
                ..
            }))
        ));
        assert_eq!(
            log.append(&batch(52), Durability::Synced, 0)
                .await
                .unwrap()
                .base_offset,
            52
        );
    });
}

async fn block_snapshots(fs: &SimStorage, dir: &Path) -> Vec<i64> {
    snapshot_offsets(&fs.list_dir(dir).await.unwrap())
}

/// Producers append, retry and crash at random on the simulated disk (which
/// keeps a random prefix of unsynced writes). After every reopen: each
/// batch is in the log at most once, every acks=all acknowledgement is
/// still there at its offset, and a retry of any of a producer's last five
/// batches in the log is answered with that batch's offset.
#[test]
fn random_appends_retries_and_crashes_never_duplicate() {
    run(|| async {
        for seed in 0..12u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let fs = SimStorage::new(seed);
            let dir = Path::new("/data/t-1");
            let mut log = PartitionLog::open_with(fs.clone(), dir, small_segments())
                .await
                .unwrap();
            // Per producer: the next sequence to send and what was sent.
            let mut next_seq: HashMap<i64, i32> = HashMap::new();
            let mut acked: HashMap<(i64, i32), i64> = HashMap::new();
            for step in 0..400 {
                let pid = rng.gen_range(1..4i64);
                let seq = next_seq.get(&pid).copied().unwrap_or(0);
                let retry = seq > 0 && rng.gen_bool(0.3);
                let send_seq = if retry {
                    seq - 2 * rng.gen_range(1..=(seq / 2).min(5))
                } else {
                    seq
                };
                let durability = if rng.gen_bool(0.5) {
                    Durability::Synced
                } else {
                    Durability::Written
                };
                let b = build_batch_with_producer(step, &[b"ab", b"cd"], pid, 0, send_seq);
                match log.append(&b, durability, step).await {
                    Ok(info) => {
                        if !retry {
                            next_seq.insert(pid, seq + 2);
                        }
                        if let Some(&was) = acked.get(&(pid, send_seq)) {
                            assert_eq!(
                                info.base_offset, was,
                                "seed {seed} step {step}: duplicate answered with another offset"
                            );
                        }
                        if durability == Durability::Synced {
                            acked.insert((pid, send_seq), info.base_offset);
                        }
                    }
                    // A retry of a batch lost in a crash that later ones
                    // (also lost) followed: the producer's view is ahead of
                    // the log; it would bump its epoch. Reset this model
                    // producer to the log's view.
                    Err(EngineError::Producer(ProducerError::OutOfOrderSequence {
                        expected,
                        ..
                    })) => {
                        next_seq.insert(pid, expected);
                    }
                    Err(e) => panic!("seed {seed} step {step}: {e}"),
                }
                if rng.gen_ratio(1, 40) {
                    if rng.gen_bool(0.5) {
                        log.close().await.unwrap();
                    }
                    drop(log);
                    fs.crash();
                    log = PartitionLog::open_with(fs.clone(), dir, small_segments())
                        .await
                        .unwrap();
                    let stored = stored_batches(&log).await;
                    let mut seen = HashMap::new();
                    for (pid, seq, offset) in &stored {
                        assert!(
                            seen.insert((*pid, *seq), *offset).is_none(),
                            "seed {seed}: batch ({pid}, {seq}) stored twice"
                        );
                    }
                    for (key, offset) in &acked {
                        assert_eq!(
                            seen.get(key),
                            Some(offset),
                            "seed {seed}: acknowledged batch {key:?} lost"
                        );
                    }
                    // The producers continue from the log's view.
                    next_seq.clear();
                    for (pid, seq, _) in &stored {
                        next_seq.insert(*pid, seq + 2);
                    }
                    let mut per_producer: HashMap<i64, Vec<(i32, i64)>> = HashMap::new();
                    for (pid, seq, offset) in &stored {
                        per_producer.entry(*pid).or_default().push((*seq, *offset));
                    }
                    for (pid, batches) in per_producer {
                        for &(seq, offset) in batches.iter().rev().take(5) {
                            let b = build_batch_with_producer(0, &[b"ab", b"cd"], pid, 0, seq);
                            let info = log.append(&b, Durability::Written, step).await.unwrap();
                            assert_eq!(info.base_offset, offset, "seed {seed}: retry after reopen");
                        }
                    }
                    assert_eq!(stored_batches(&log).await.len(), stored.len());
                }
            }
            log.close().await.unwrap();
        }
    });
}
