//! Criterion benches of the engine's CPU paths over the simulated storage
//! (no disk): append (validate + copy into the tail), read of hot data, and
//! the sparse index lookup. Disk throughput is `strom-bench engine`'s job.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_lite::future::block_on;
use strom_engine::batch::build_batch;
use strom_engine::index::{lookup_offset, OffsetEntry};
use strom_engine::io::sim::SimStorage;
use strom_engine::{Durability, LogConfig, PartitionLog};

fn batch_16k() -> Vec<u8> {
    let value = vec![7u8; 1024];
    let values: Vec<&[u8]> = (0..16).map(|_| value.as_slice()).collect();
    build_batch(1, &values)
}

fn bench_append(c: &mut Criterion) {
    let batch = batch_16k();
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Bytes(batch.len() as u64 * 64));
    g.bench_function("64 x 16KiB batches, Written", |b| {
        b.iter_batched(
            || {
                let config = LogConfig {
                    preallocate: false,
                    ..LogConfig::default()
                };
                block_on(PartitionLog::open_with(
                    SimStorage::new(1),
                    "/bench/a",
                    config,
                ))
                .unwrap()
            },
            |log| {
                block_on(async {
                    for _ in 0..64 {
                        log.append(&batch, Durability::Written, 1).await.unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_read(c: &mut Criterion) {
    let batch = batch_16k();
    let log = block_on(async {
        let log = PartitionLog::open_with(SimStorage::new(2), "/bench/r", LogConfig::default())
            .await
            .unwrap();
        for _ in 0..256 {
            log.append(&batch, Durability::Written, 1).await.unwrap();
        }
        log.flush().await.unwrap();
        log
    });
    let mut g = c.benchmark_group("read");
    g.throughput(Throughput::Bytes(1 << 20));
    g.bench_function("1MiB from offset 1000", |b| {
        b.iter(|| block_on(log.read(1000, 1 << 20)).unwrap())
    });
    g.finish();
}

fn bench_index(c: &mut Criterion) {
    let entries: Vec<OffsetEntry> = (1..250_000u32)
        .map(|i| OffsetEntry::new(i * 4, i * 4096))
        .collect();
    c.bench_function("index lookup in 250k entries", |b| {
        let mut k = 0u32;
        b.iter(|| {
            k = k.wrapping_add(7919) % 1_000_000;
            lookup_offset(&entries, k)
        })
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = bench_append, bench_read, bench_index
}
criterion_main!(benches);
