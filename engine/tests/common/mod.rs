//! Helpers shared by the engine's integration tests.

use strom_engine::batch::BatchHeader;
use strom_engine::io::sim::SimStorage;
use strom_engine::PartitionLog;

/// Every batch of the log from `from` up to its read bound, as stored.
pub async fn batches_from(log: &PartitionLog<SimStorage>, mut from: i64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while from < log.log_end_offset() {
        let r = log.read(from, 1 << 20).await.unwrap();
        for b in &r.batches {
            from = BatchHeader::parse(b).unwrap().last_offset() + 1;
            out.push(b.to_vec());
        }
    }
    out
}
