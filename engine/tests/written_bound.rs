//! The read bound never passes what is on the device: appends in flight
//! (several at once, `Written` and `Synced`) are polled step by step over
//! the simulated file system, with reads between the steps, and the process
//! is "killed" at random points (every future and the log dropped, the
//! files kept as written, as after SIGKILL). After each restart, every
//! acknowledged batch and every batch a reader saw must be there, byte for
//! byte, at its offset.
//!
//! A failing seed is printed; replay it with `STROM_SEED=<seed>`. The
//! number of seeds is `STROM_SEEDS` (default 300).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use futures_lite::future::{block_on, poll_once};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strom_engine::batch::{self, build_batch};
use strom_engine::io::sim::SimStorage;
use strom_engine::{AppendInfo, Durability, EngineError, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;
type Pending<'a> = Pin<Box<dyn Future<Output = Result<AppendInfo, EngineError>> + 'a>>;

/// At most this many appends in flight at once.
const MAX_PENDING: usize = 6;

fn random_batch(rng: &mut SmallRng, ts: i64) -> Vec<u8> {
    let records = rng.gen_range(1..=4);
    let big = rng.gen_ratio(1, 8);
    let values: Vec<Vec<u8>> = (0..records)
        .map(|_| {
            let len = if big {
                rng.gen_range(3000..12_000)
            } else {
                rng.gen_range(0..700)
            };
            (0..len).map(|_| rng.gen()).collect()
        })
        .collect();
    let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
    build_batch(ts, &refs)
}

/// Checks that `log` holds `want` (base offset -> stored batch) exactly.
async fn check_holds(log: &Log, want: &BTreeMap<i64, Vec<u8>>) -> Result<(), String> {
    for (&offset, bytes) in want {
        let r = log
            .read(offset, 1)
            .await
            .map_err(|e| format!("read {offset}: {e}"))?;
        let got = r
            .batches
            .first()
            .ok_or_else(|| format!("batch at {offset} lost (log end {})", log.log_end_offset()))?;
        if got[..] != bytes[..] {
            return Err(format!("batch at {offset} differs"));
        }
    }
    Ok(())
}

fn run_seed(seed: u64) -> Result<(), String> {
    block_on(async move {
        let mut rng = SmallRng::seed_from_u64(seed);
        let fs = SimStorage::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let config = LogConfig {
            segment_bytes: [16 * 1024, 64 * 1024, 1 << 20][rng.gen_range(0..3)],
            index_interval_bytes: 1024,
            preallocate: rng.gen_bool(0.5),
            ..LogConfig::default()
        };
        let dir = "/sim/bound-0";
        // Every batch acknowledged or read so far, as stored.
        let mut must_hold: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
        let mut ts = 1_000i64;
        for life in 0..rng.gen_range(2..6) {
            let log = PartitionLog::open_with(fs.clone(), dir, config.clone())
                .await
                .map_err(|e| format!("life {life}: open: {e}"))?;
            check_holds(&log, &must_hold)
                .await
                .map_err(|e| format!("life {life}: after the kill: {e}"))?;
            let mut pending: Vec<(Vec<u8>, Pending<'_>)> = Vec::new();
            for step in 0..rng.gen_range(10..200) {
                let ctx = |e: String| format!("life {life} step {step}: {e}");
                match rng.gen_range(0..10) {
                    0..=2 if pending.len() < MAX_PENDING => {
                        ts += 1;
                        let b = random_batch(&mut rng, ts);
                        let d = if rng.gen_ratio(1, 5) {
                            Durability::Synced
                        } else {
                            Durability::Written
                        };
                        let log = &log;
                        let bytes = b.clone();
                        let fut: Pending<'_> =
                            Box::pin(async move { log.append(&bytes, d, ts).await });
                        pending.push((b, fut));
                    }
                    0..=6 if !pending.is_empty() => {
                        let i = rng.gen_range(0..pending.len());
                        if let Some(r) = poll_once(&mut pending[i].1).await {
                            let (b, _) = pending.swap_remove(i);
                            let info = r.map_err(|e| ctx(format!("append: {e}")))?;
                            let mut stored = b;
                            batch::set_base_offset(&mut stored, info.base_offset);
                            must_hold.insert(info.base_offset, stored);
                        }
                    }
                    _ => {
                        // A reader sees up to the bound, which must be on
                        // the device already.
                        let bound = log.high_watermark();
                        if bound > log.log_end_offset() || bound < log.synced_offset() {
                            return Err(ctx(format!(
                                "bound {bound} outside [synced {}, end {}]",
                                log.synced_offset(),
                                log.log_end_offset()
                            )));
                        }
                        let start = log.log_start_offset();
                        let offset = rng.gen_range(start..=bound);
                        let r = log
                            .read(offset, 64 * 1024)
                            .await
                            .map_err(|e| ctx(format!("read {offset}: {e}")))?;
                        for b in r.batches {
                            let h = batch::validate(&b).map_err(|e| ctx(e.to_string()))?;
                            if h.last_offset() >= bound {
                                return Err(ctx(format!(
                                    "read returned offset {} at or past the bound {bound}",
                                    h.last_offset()
                                )));
                            }
                            must_hold.insert(h.base_offset, b.to_vec());
                        }
                    }
                }
            }
            // SIGKILL: whatever is in flight stops where it is.
            drop(pending);
            drop(log);
        }
        Ok(())
    })
}

#[test]
fn read_bound_never_passes_what_the_device_holds() {
    if let Ok(seed) = std::env::var("STROM_SEED") {
        let seed: u64 = seed.parse().expect("STROM_SEED must be a number");
        if let Err(e) = run_seed(seed) {
            panic!("seed {seed} failed: {e}");
        }
        return;
    }
    let seeds: u64 = std::env::var("STROM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let base: u64 = 0xB0_0000;
    for seed in base..base + seeds {
        if let Err(e) = run_seed(seed) {
            panic!("seed {seed} failed (replay with STROM_SEED={seed}): {e}");
        }
    }
}
