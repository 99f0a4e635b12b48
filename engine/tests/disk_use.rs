//! Disk use follows the data (issue 13, finding 9), on a real disk: glommio
//! `DmaFile` (O_DIRECT) on a temporary directory, disk use measured as the
//! file system allocated it (st_blocks * 512), not as file lengths.
//!
//! One test function: the preallocation budget is process-wide, and the
//! phases change its cap.

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use strom_engine::batch::build_batch;
use strom_engine::io::dma::preallocation_budget;
use strom_engine::{Durability, LogConfig, PartitionLog};

const MIB: u64 = 1 << 20;
/// What an idle partition may hold beyond its data: one minimum
/// preallocation step, and the 4 KiB block its last partial block pads to.
const IDLE_SLACK_BYTES: u64 = MIB + 4096;

fn run<T>(f: impl Future<Output = T>) -> T {
    let ex = glommio::LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    ex.run(f)
}

/// Bytes allocated to the files under `dir` (directories not counted).
fn allocated_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = entry.metadata().unwrap();
        if meta.is_dir() {
            total += allocated_bytes(&entry.path());
        } else {
            total += meta.blocks() * 512;
        }
    }
    total
}

/// Blocks held by the index files and producer-state snapshots in `dir`.
fn metadata_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "index" || x == "timeindex" || x == "snapshot")
        })
        .map(|p| std::fs::metadata(p).unwrap().blocks() * 512)
        .sum()
}

fn batch_of(records: usize, record_bytes: usize) -> Vec<u8> {
    let value = vec![b'v'; record_bytes];
    build_batch(1_000, &vec![value.as_slice(); records])
}

#[test]
fn disk_use_follows_the_data() {
    let root = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let root = root.path().to_path_buf();
    run(async move {
        let budget = preallocation_budget();
        let config = LogConfig::default();
        assert!(config.preallocate, "preallocation is on by default");

        // Many new partitions hold no disk before a write, and a little
        // more than their data after a few small synced appends.
        const PARTITIONS: usize = 200;
        let mut logs = Vec::new();
        for p in 0..PARTITIONS {
            let log = PartitionLog::open(root.join(format!("t-{p}")), config.clone())
                .await
                .unwrap();
            logs.push(log);
        }
        let empty = allocated_bytes(&root);
        assert!(
            empty <= PARTITIONS as u64 * 4096,
            "{PARTITIONS} empty partitions hold {empty} bytes"
        );
        let batch = batch_of(10, 1000);
        for log in &logs {
            for _ in 0..3 {
                log.append(&batch, Durability::Synced, 0).await.unwrap();
            }
        }
        let data: u64 = logs.iter().map(|l| l.size_bytes()).sum();
        let used = allocated_bytes(&root);
        assert!(
            used <= data + PARTITIONS as u64 * IDLE_SLACK_BYTES,
            "{PARTITIONS} partitions with {data} bytes of data hold {used} bytes"
        );
        assert!(budget.claimed_bytes() <= PARTITIONS as u64 * MIB);
        for log in &logs {
            log.close().await.unwrap();
        }
        assert_eq!(budget.claimed_bytes(), 0, "closed logs claim nothing");
        drop(logs);

        // A fast writer's preallocation stays under the budget, and once it
        // is idle its partition is trimmed back to its data.
        const CAP_BYTES: u64 = 24 * MIB;
        budget.set_cap_bytes(CAP_BYTES);
        let dir = root.join("fast-0");
        let config = LogConfig {
            segment_bytes: 128 * MIB,
            ..LogConfig::default()
        };
        let log = PartitionLog::open(&dir, config).await.unwrap();
        let batch = batch_of(16, 1024);
        let mut max_claimed = 0;
        let mut max_ahead = 0;
        let mut appended = 0u64;
        let mut now_ms = 0;
        while appended < 320 * MIB {
            log.append(&batch, Durability::Written, now_ms)
                .await
                .unwrap();
            appended += batch.len() as u64;
            if appended % (4 * MIB) < batch.len() as u64 {
                // 4 MiB every 10 ms of the log's clock: 400 MiB/s.
                now_ms += 10;
                max_claimed = max_claimed.max(budget.claimed_bytes());
                // The closed segments' index files and the producer-state
                // snapshots are not preallocation.
                let ahead = allocated_bytes(&dir)
                    .saturating_sub(log.size_bytes())
                    .saturating_sub(metadata_bytes(&dir));
                max_ahead = max_ahead.max(ahead);
            }
        }
        assert!(log.segment_count() >= 3, "the writer crossed segments");
        assert!(
            max_claimed <= CAP_BYTES,
            "claimed {max_claimed} bytes, over the {CAP_BYTES}-byte budget"
        );
        // On disk, what is ahead of the data is the claim plus the padding
        // of written partial blocks (acks=1 appends write the partial tail,
        // padded to 4 KiB, and a later write may extend the file past the
        // claim by its last block): a few blocks, not a preallocation step.
        assert!(
            max_ahead <= CAP_BYTES + 64 * 1024,
            "{max_ahead} bytes allocated ahead of the data, over the budget"
        );
        assert!(
            max_claimed >= 8 * MIB,
            "a fast writer's preallocation grows (claimed at most {max_claimed} bytes)"
        );
        eprintln!(
            "fast writer: at most {max_claimed} bytes claimed, {max_ahead} allocated past the data"
        );
        log.flush().await.unwrap();
        // Idle: the next tick after PREALLOCATE_IDLE_MS trims it.
        log.tick(now_ms + 10_000).await.unwrap();
        let data = log.size_bytes();
        let used = allocated_bytes(&dir);
        assert!(
            used <= data + IDLE_SLACK_BYTES,
            "an idle partition with {data} bytes of data holds {used} bytes"
        );
        assert_eq!(
            budget.claimed_bytes(),
            0,
            "the idle log gave its claim back"
        );
        log.close().await.unwrap();
        budget.set_cap_bytes(strom_engine::io::budget::PREALLOCATE_BUDGET_BYTES);
    });
}
