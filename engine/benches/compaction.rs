//! Compaction's CPU costs (issue 16), over the simulated storage (no disk):
//! - the keyless-record check of compacted topics: reading every record's
//!   key (`records::first_keyless_record`) next to the batch validation
//!   every produced batch gets anyway (`batch::validate`, the CRC-32C), for
//!   small and large records, uncompressed and gzip;
//! - a clean: 8 MiB of 100-byte records over 1000 keys in 64 KiB segments,
//!   cleaned down to the last value per key.
//!
//! Results: `results/compaction/`.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use futures_lite::future::block_on;
use strom_engine::batch::validate;
use strom_engine::config::CleanerConfig;
use strom_engine::io::sim::SimStorage;
use strom_engine::log::NoPacing;
use strom_engine::records::{build_keyed_batch, first_keyless_record, KeyValue};
use strom_engine::{Durability, LogConfig, PartitionLog};

fn batch(records: usize, value_bytes: usize, gzip: bool) -> Vec<u8> {
    let keys: Vec<Vec<u8>> = (0..records)
        .map(|i| format!("key-{i:08}").into_bytes())
        .collect();
    let value = vec![b'x'; value_bytes];
    let recs: Vec<KeyValue> = keys
        .iter()
        .map(|k| (Some(k.as_slice()), Some(value.as_slice())))
        .collect();
    build_keyed_batch(1, &recs, (-1, -1, -1), gzip)
}

fn bench_keyless(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyless check");
    for (name, records, value_bytes, gzip) in [
        ("1000 x 100 B", 1000, 100, false),
        ("16 x 1 KiB", 16, 1024, false),
        ("1000 x 100 B gzip", 1000, 100, true),
    ] {
        let b = batch(records, value_bytes, gzip);
        g.throughput(Throughput::Bytes(b.len() as u64));
        g.bench_function(format!("validate (crc), {name}"), |bench| {
            bench.iter(|| validate(std::hint::black_box(&b)).unwrap())
        });
        g.bench_function(format!("keys read, {name}"), |bench| {
            bench.iter(|| {
                assert_eq!(first_keyless_record(std::hint::black_box(&b)), Ok(None));
            })
        });
    }
    g.finish();
}

const CLEAN_BYTES: usize = 8 << 20;

fn filled_log() -> PartitionLog<SimStorage> {
    block_on(async {
        let config = LogConfig {
            segment_bytes: 64 * 1024,
            cleanup_compact: true,
            cleanup_delete: false,
            preallocate: false,
            ..LogConfig::default()
        };
        let log = PartitionLog::open_with(SimStorage::new(1), "/bench/clean", config)
            .await
            .unwrap();
        let value = vec![b'v'; 100];
        let keys: Vec<Vec<u8>> = (0..1000)
            .map(|i| format!("key-{i:06}").into_bytes())
            .collect();
        let mut written = 0usize;
        let mut k = 0usize;
        while written < CLEAN_BYTES {
            let recs: Vec<KeyValue> = (0..100)
                .map(|i| {
                    (
                        Some(keys[(k + i * 7) % keys.len()].as_slice()),
                        Some(value.as_slice()),
                    )
                })
                .collect();
            k += 1;
            let b = build_keyed_batch(1, &recs, (-1, -1, -1), false);
            written += b.len();
            log.append(&b, Durability::Written, 1).await.unwrap();
        }
        log.roll_now().await.unwrap();
        log
    })
}

fn bench_clean(c: &mut Criterion) {
    let mut g = c.benchmark_group("clean");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(CLEAN_BYTES as u64));
    g.bench_function("8 MiB, 1000 keys, 64 KiB segments", |b| {
        b.iter_batched(
            filled_log,
            |log| {
                let stats = block_on(log.clean(2, &CleanerConfig::default(), &mut NoPacing))
                    .unwrap()
                    .unwrap();
                assert!(stats.bytes_after < stats.bytes_before / 10);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench_keyless, bench_clean);
criterion_main!(benches);
