//! Bytes reach the disk about once. An acks=1 append (`Durability::Written`)
//! is acknowledged once a *snapshot* of the partial tail is on the device;
//! when its chunk later fills, the chunk's write starts at the block the
//! snapshots reached instead of rewriting the whole chunk. Before, every
//! byte a snapshot wrote was written again with its chunk: a broker at
//! 50k msgs/s of 1 KiB records wrote 105 MB/s for 51 MB/s produced
//! (results/compaction, "Written bytes are twice the produced bytes").

use std::path::Path;

use futures_lite::future::block_on;
use strom_engine::batch::build_batch;
use strom_engine::io::sim::SimStorage;
use strom_engine::{Durability, LogConfig, PartitionLog};

#[test]
fn acknowledged_appends_are_written_about_once() {
    block_on(async {
        let fs = SimStorage::new(7);
        let config = LogConfig {
            preallocate: false,
            ..LogConfig::default()
        };
        let log = PartitionLog::open_with(fs.clone(), Path::new("/sim/wa-0"), config)
            .await
            .unwrap();
        let value = vec![b'v'; 1000];
        let batch = build_batch(1_000, &vec![value.as_slice(); 16]);
        let before = fs.written_bytes();
        let mut produced = 0u64;
        // 8 MiB: eight 1 MiB chunks filled by acknowledged appends.
        while produced < 8 << 20 {
            log.append(&batch, Durability::Written, 1_000)
                .await
                .unwrap();
            produced += batch.len() as u64;
        }
        let written = fs.written_bytes() - before;
        let ratio = written as f64 / produced as f64;
        // Each acknowledged append writes its bytes, the block it shares
        // with the one before and the padding of its last block (about 8
        // KiB beside a 16 KiB batch); the chunks then add a block each.
        // Written twice, it was above 2.
        assert!(
            ratio < 1.6,
            "{written} bytes written for {produced} appended ({ratio:.2}x)"
        );
        assert!(
            ratio >= 1.0,
            "{written} bytes written for {produced} appended"
        );
    });
}
