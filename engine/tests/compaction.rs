//! The log cleaner against a model, over the simulated disk.
//!
//! Random appends of keyed records (some gzip, some tombstones, some
//! without a key) to a compacted log with small segments, rolls, cleans,
//! crashes at any point of a clean (the simulated power goes after a random
//! number of file and directory operations), and clean restarts. After every
//! step the whole log is read from its start and compared with the model:
//! - every record read is the one appended at that offset (offsets are
//!   never renumbered, nothing is altered);
//! - the last record of every key is there (compaction only removes
//!   superseded records);
//! - after a clean that finished, the records below its end offset are
//!   exactly the last record of each key among them, and everything from
//!   its end on is untouched.
//!
//! A failing seed is printed; replay it with `STROM_SEED=<seed>`. The
//! number of seeds is `STROM_SEEDS` (default 300).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use futures_lite::future::block_on;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strom_engine::batch::BatchHeader;
use strom_engine::config::CleanerConfig;
use strom_engine::io::sim::SimStorage;
use strom_engine::io::Storage;
use strom_engine::log::NoPacing;
use strom_engine::records::{build_keyed_batch, parse_records, records_bytes};
use strom_engine::{Durability, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;
/// (key, value): `None` key is keyless, `None` value a tombstone.
type Rec = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Seeds that once failed, replayed forever.
const REGRESSION_SEEDS: &[u64] = &[];

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        cleanup_compact: true,
        cleanup_delete: false,
        min_cleanable_dirty_ratio: 0.0,
        // Tombstones stay: the exact check below keeps them.
        delete_retention_ms: i64::MAX,
        preallocate: false,
        ..LogConfig::default()
    }
}

fn cleaner() -> CleanerConfig {
    CleanerConfig::default()
}

/// Every record of the log, from its start, read across the gaps.
async fn read_all(log: &Log) -> Result<BTreeMap<i64, Rec>, String> {
    let mut out = BTreeMap::new();
    let mut offset = log.log_start_offset();
    let end = log.high_watermark();
    while offset < end {
        let r = log
            .read(offset, 64 * 1024)
            .await
            .map_err(|e| format!("read at {offset}: {e}"))?;
        // Nothing left from `offset` to the end: the clean removed it all
        // (the model checks below say whether it should have).
        let Some(last) = r.batches.last() else {
            break;
        };
        for b in &r.batches {
            let h = BatchHeader::parse(b).unwrap();
            let bytes =
                records_bytes(b).map_err(|e| format!("records at {}: {e:?}", h.base_offset))?;
            for rec in parse_records(&bytes, h.record_count).unwrap() {
                let o = h.base_offset + rec.offset_delta as i64;
                if o < offset {
                    continue;
                }
                let value = if rec.tombstone {
                    None
                } else {
                    Some(value_of(rec.bytes))
                };
                if out
                    .insert(o, (rec.key.map(<[u8]>::to_vec), value))
                    .is_some()
                {
                    return Err(format!("offset {o} read twice"));
                }
            }
        }
        let next = BatchHeader::parse(last).unwrap().last_offset() + 1;
        if next <= offset {
            return Err(format!("read at {offset} did not move forward"));
        }
        offset = next;
    }
    Ok(out)
}

/// The value bytes of one record (the records module gives only whether it
/// is null): key length, key, then value length and value.
fn value_of(record: &[u8]) -> Vec<u8> {
    fn varint(b: &[u8]) -> (i64, usize) {
        let mut z = 0u64;
        for (i, byte) in b.iter().enumerate() {
            z |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return (((z >> 1) as i64) ^ -((z & 1) as i64), i + 1);
            }
        }
        panic!("bad varint")
    }
    let (_, n) = varint(record);
    let mut at = n + 1; // length, attributes
    at += varint(&record[at..]).1; // timestamp delta
    at += varint(&record[at..]).1; // offset delta
    let (klen, n) = varint(&record[at..]);
    at += n + klen.max(0) as usize;
    let (vlen, n) = varint(&record[at..]);
    at += n;
    record[at..at + vlen as usize].to_vec()
}

struct Model {
    records: BTreeMap<i64, Rec>,
}

impl Model {
    fn last_by_key(&self, below: i64) -> HashMap<Vec<u8>, i64> {
        let mut m = HashMap::new();
        for (&o, (k, _)) in self.records.range(..below) {
            if let Some(k) = k {
                m.insert(k.clone(), o);
            }
        }
        m
    }
}

fn check_log(model: &Model, got: &BTreeMap<i64, Rec>) -> Result<(), String> {
    for (o, r) in got {
        let want = model
            .records
            .get(o)
            .ok_or_else(|| format!("offset {o} was never appended"))?;
        if want != r {
            return Err(format!("offset {o}: read {r:?}, appended {want:?}"));
        }
    }
    for (k, o) in model.last_by_key(i64::MAX) {
        if !got.contains_key(&o) {
            return Err(format!("the last record of key {k:?} (offset {o}) is gone"));
        }
    }
    Ok(())
}

fn check_exact(model: &Model, got: &BTreeMap<i64, Rec>, end: i64) -> Result<(), String> {
    let last = model.last_by_key(end);
    for (&o, (k, _)) in model.records.range(..end) {
        let keep = k.as_ref().is_some_and(|k| last.get(k) == Some(&o));
        if keep != got.contains_key(&o) {
            return Err(format!(
                "offset {o} (key {k:?}) below the clean's end {end}: kept {}, expected {keep}",
                got.contains_key(&o)
            ));
        }
    }
    for o in model.records.range(end..).map(|(o, _)| o) {
        if !got.contains_key(o) {
            return Err(format!("offset {o} past the clean's end {end} is gone"));
        }
    }
    Ok(())
}

/// Below the first dirty offset (in memory, or loaded from the cleaner
/// checkpoint after a reopen) the log is clean: every record has a key and
/// no key appears twice. A checkpoint written before its clean's swaps were
/// on disk, or one ahead of the log, breaks this after a crash.
fn check_clean_below(got: &BTreeMap<i64, Rec>, first_dirty: i64) -> Result<(), String> {
    let mut seen = HashMap::new();
    for (&o, (k, _)) in got.range(..first_dirty) {
        let k = k.as_ref().ok_or_else(|| {
            format!("keyless record at {o} below the first dirty offset {first_dirty}")
        })?;
        if let Some(before) = seen.insert(k.clone(), o) {
            return Err(format!(
                "key {k:?} at {before} and {o}, below the first dirty offset {first_dirty}"
            ));
        }
    }
    Ok(())
}

fn random_records(rng: &mut SmallRng) -> Vec<Rec> {
    (0..rng.gen_range(1..=6))
        .map(|_| {
            let key = if rng.gen_ratio(1, 30) {
                None
            } else {
                Some(format!("k{}", rng.gen_range(0..24)).into_bytes())
            };
            let value = if rng.gen_ratio(1, 10) {
                None
            } else {
                let len = rng.gen_range(0..700);
                Some((0..len).map(|_| rng.gen()).collect())
            };
            (key, value)
        })
        .collect()
}

async fn open(fs: &SimStorage, dir: &Path) -> Result<Log, String> {
    PartitionLog::open_with(fs.clone(), dir, config())
        .await
        .map_err(|e| format!("open: {e}"))
}

/// What a run exercised, so the test fails if it stops exercising it.
#[derive(Default)]
struct Seen {
    removed: u64,
    rebuilt: u64,
    crashes_in_clean: u64,
}

async fn run(seed: u64, seen: &mut Seen) -> Result<(), String> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let fs = SimStorage::new(seed);
    let dir = Path::new("/sim/compact-0");
    let mut log = open(&fs, dir).await?;
    let mut model = Model {
        records: BTreeMap::new(),
    };
    let mut now = 1_000_000i64;
    for step in 0..250 {
        now += rng.gen_range(0..50);
        let what = rng.gen_range(0..100);
        let ctx = |e: String| format!("step {step}: {e}");
        if what < 60 {
            let recs = random_records(&mut rng);
            let refs: Vec<strom_engine::records::KeyValue> = recs
                .iter()
                .map(|(k, v)| (k.as_deref(), v.as_deref()))
                .collect();
            let b = build_keyed_batch(now, &refs, (-1, -1, -1), rng.gen_ratio(1, 3));
            let info = log
                .append(&b, Durability::Synced, now)
                .await
                .map_err(|e| ctx(format!("append: {e}")))?;
            for (i, r) in recs.into_iter().enumerate() {
                model.records.insert(info.base_offset + i as i64, r);
            }
        } else if what < 72 {
            log.roll_now()
                .await
                .map_err(|e| ctx(format!("roll: {e}")))?;
        } else if what < 88 {
            let crash_at = rng.gen_ratio(1, 3).then(|| rng.gen_range(0..120));
            if let Some(ops) = crash_at {
                fs.set_fuse(ops);
            }
            match log.clean(now, &cleaner(), &mut NoPacing).await {
                Ok(stats) => {
                    if let Some(s) = stats {
                        seen.removed += s.records_removed;
                        seen.rebuilt += s.batches_rebuilt;
                    }
                    if crash_at.is_some() {
                        // The power may have gone after the clean's last
                        // operation: crash and reopen all the same.
                        fs.crash();
                        drop(log);
                        log = open(&fs, dir).await.map_err(ctx)?;
                    } else if let Some(stats) = stats {
                        let got = read_all(&log).await.map_err(ctx)?;
                        check_exact(&model, &got, stats.end_offset).map_err(ctx)?;
                    }
                }
                Err(e) => {
                    if crash_at.is_none() {
                        return Err(ctx(format!("clean: {e}")));
                    }
                    seen.crashes_in_clean += 1;
                    fs.crash();
                    drop(log);
                    log = open(&fs, dir).await.map_err(ctx)?;
                }
            }
        } else if what < 94 {
            log.close().await.map_err(|e| ctx(format!("close: {e}")))?;
            drop(log);
            log = open(&fs, dir).await.map_err(ctx)?;
        } else {
            // A crash with nothing in flight: every append was synced.
            fs.crash();
            drop(log);
            log = open(&fs, dir).await.map_err(ctx)?;
        }
        let got = read_all(&log).await.map_err(ctx)?;
        check_log(&model, &got).map_err(ctx)?;
        check_clean_below(&got, log.first_dirty_offset()).map_err(ctx)?;
        if log.log_end_offset() != model.records.keys().next_back().map_or(0, |o| o + 1) {
            return Err(ctx(format!("log end {} moved", log.log_end_offset())));
        }
    }
    // A last clean with no fault: the closed segments come out exact.
    log.roll_now().await.map_err(|e| format!("roll: {e}"))?;
    if let Some(stats) = log
        .clean(now, &cleaner(), &mut NoPacing)
        .await
        .map_err(|e| format!("final clean: {e}"))?
    {
        let got = read_all(&log).await?;
        check_exact(&model, &got, stats.end_offset)?;
    }
    Ok(())
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("STROM_SEED") {
        return vec![s.parse().expect("STROM_SEED is a number")];
    }
    let n: u64 = std::env::var("STROM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    REGRESSION_SEEDS.iter().copied().chain(0..n).collect()
}

#[test]
fn compaction_matches_the_model_through_crashes() {
    let mut seen = Seen::default();
    for seed in seeds() {
        if let Err(e) = block_on(run(seed, &mut seen)) {
            panic!("seed {seed}: {e}");
        }
    }
    if std::env::var("STROM_SEED").is_err() {
        assert!(seen.removed > 0, "no clean removed a record");
        assert!(seen.rebuilt > 0, "no clean rebuilt a batch");
        assert!(seen.crashes_in_clean > 0, "no crash hit a clean");
    }
}

/// An idempotent producer's last batch survives a clean whole, so after a
/// crash (producer state rebuilt from the log, no snapshot past the clean)
/// a retry of it is still answered as a duplicate with its offsets.
#[test]
fn a_producers_last_batch_survives_and_dedups_after_a_crash() {
    block_on(async {
        let fs = SimStorage::new(7);
        let dir = Path::new("/sim/compact-pid");
        let log = open(&fs, dir).await.unwrap();
        let (pid, epoch) = (42i64, 3i16);
        let mut last = Vec::new();
        for seq in 0..20 {
            let b = build_keyed_batch(
                1_000,
                &[(Some(b"same"), Some(b"v")), (Some(b"same"), Some(b"w"))],
                (pid, epoch, seq * 2),
                false,
            );
            log.append(&b, Durability::Synced, 1_000).await.unwrap();
            if seq % 5 == 4 {
                log.roll_now().await.unwrap();
            }
            last = b;
        }
        log.roll_now().await.unwrap();
        let stats = log
            .clean(2_000, &cleaner(), &mut NoPacing)
            .await
            .unwrap()
            .expect("due");
        assert!(stats.records_removed >= 38, "{stats:?}");
        let got = read_all(&log).await.unwrap();
        // Only the producer's last batch is left: both its records stay, as
        // a whole batch, whatever the keys say.
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![38, 39]);
        fs.crash();
        drop(log);
        let log = open(&fs, dir).await.unwrap();
        let retry = log.append(&last, Durability::Synced, 3_000).await.unwrap();
        assert_eq!(
            (retry.base_offset, retry.last_offset),
            (38, 39),
            "a retry is a duplicate"
        );
        assert_eq!(log.log_end_offset(), 40);
    });
}

/// Kafka's KIP-534 rule: tombstones stay `delete.retention.ms` after the
/// clean that first saw them, whatever their record timestamps say. That
/// clean stamps the delete horizon into their batch (base timestamp and
/// attribute bit 6); the stamp survives a crash; the clean due at the
/// horizon removes them.
#[test]
fn tombstones_go_after_delete_retention() {
    block_on(async {
        let fs = SimStorage::new(8);
        let dir = Path::new("/sim/compact-tomb");
        let config = LogConfig {
            delete_retention_ms: 10_000,
            ..config()
        };
        let log = PartitionLog::open_with(fs.clone(), dir, config.clone())
            .await
            .unwrap();
        // Record timestamps long before the clean: the old rule (record
        // time plus retention) would let the tombstone go at once.
        let put = |k: &'static [u8], v: Option<&'static [u8]>| {
            build_keyed_batch(1_000, &[(Some(k), v)], (-1, -1, -1), false)
        };
        for b in [
            put(b"a", Some(b"1")),
            put(b"b", Some(b"2")),
            put(b"a", None),
        ] {
            log.append(&b, Durability::Synced, 1_000).await.unwrap();
        }
        log.roll_now().await.unwrap();
        log.append(&put(b"c", Some(b"3")), Durability::Synced, 1_000)
            .await
            .unwrap();
        // First clean, at 500 000: a's value goes, its tombstone stays,
        // stamped with the horizon 510 000.
        let first_clean_ms = 500_000;
        log.clean(first_clean_ms, &cleaner(), &mut NoPacing)
            .await
            .unwrap()
            .expect("due");
        let got = read_all(&log).await.unwrap();
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(got[&2], (Some(b"a".to_vec()), None));
        let r = log.read(2, 4096).await.unwrap();
        let h = BatchHeader::parse(&r.batches[0]).unwrap();
        assert_eq!(h.base_offset, 2);
        assert_eq!(h.delete_horizon_ms(), Some(first_clean_ms + 10_000));
        assert_eq!(h.max_timestamp, 1_000, "record times stay");
        strom_engine::batch::validate(&r.batches[0]).expect("a valid batch, CRC and all");
        // The stamp is in the batch: a crash and reopen keep it.
        fs.crash();
        drop(log);
        let log = PartitionLog::open_with(fs.clone(), dir, config.clone())
            .await
            .unwrap();
        let h = BatchHeader::parse(&log.read(2, 4096).await.unwrap().batches[0]).unwrap();
        assert_eq!(h.delete_horizon_ms(), Some(first_clean_ms + 10_000));
        // A clean before the horizon (due by new dirty data) keeps it.
        log.roll_now().await.unwrap();
        log.clean(first_clean_ms + 9_999, &cleaner(), &mut NoPacing)
            .await
            .unwrap()
            .expect("due: segment 3 is dirty");
        assert!(read_all(&log).await.unwrap().contains_key(&2));
        assert!(
            log.clean(first_clean_ms + 9_999, &cleaner(), &mut NoPacing)
                .await
                .unwrap()
                .is_none(),
            "nothing due before the horizon"
        );
        // At the horizon, a clean is due for the tombstone alone and removes it.
        let stats = log
            .clean(first_clean_ms + 10_000, &cleaner(), &mut NoPacing)
            .await
            .unwrap()
            .expect("due for the tombstone");
        assert_eq!(stats.records_removed, 1);
        let got = read_all(&log).await.unwrap();
        assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        // Nothing more to do.
        assert!(log
            .clean(first_clean_ms + 30_000, &cleaner(), &mut NoPacing)
            .await
            .unwrap()
            .is_none());
    });
}

const CKPT_DIR: &str = "/sim/ckpt-0";

async fn open_cfg(fs: &SimStorage, config: LogConfig) -> Log {
    PartitionLog::open_with(fs.clone(), Path::new(CKPT_DIR), config)
        .await
        .unwrap()
}

/// A clean that must be due.
async fn clean_due(log: &Log, now_ms: i64) -> strom_engine::log::CleanStats {
    log.clean(now_ms, &cleaner(), &mut NoPacing)
        .await
        .unwrap()
        .expect("a clean is due")
}

/// Whether a clean found nothing to do.
async fn clean_not_due(log: &Log, now_ms: i64) -> bool {
    log.clean(now_ms, &cleaner(), &mut NoPacing)
        .await
        .unwrap()
        .is_none()
}

fn put(k: &[u8], v: &[u8]) -> Vec<u8> {
    build_keyed_batch(1_000, &[(Some(k), Some(v))], (-1, -1, -1), false)
}

/// Appends `n` updates of 8 keys and rolls after every 10: closed segments
/// with many superseded records.
async fn fill(log: &Log, round: u32, n: u32) {
    let recs = (0..n).map(|i| (format!("k{}", i % 8), format!("{round}-{i}").repeat(20)));
    append_rolling(log, recs).await;
}

/// Appends one record a batch, rolling after every 10.
async fn append_rolling(log: &Log, recs: impl Iterator<Item = (String, String)>) {
    for (i, (key, value)) in recs.enumerate() {
        log.append(
            &put(key.as_bytes(), value.as_bytes()),
            Durability::Synced,
            1_000,
        )
        .await
        .unwrap();
        if i % 10 == 9 {
            log.roll_now().await.unwrap();
        }
    }
}

/// The default dirty ratio (0.5): a clean log with a little new dirty data
/// is not due.
fn ratio_config() -> LogConfig {
    LogConfig {
        min_cleanable_dirty_ratio: 0.5,
        ..config()
    }
}

const CHECKPOINT: &str = "cleaner-offset-checkpoint";

/// The first dirty offset survives a clean close and a crash: the log is
/// not cleaned again after the open, and a little new dirty data is
/// measured against the whole log, not counted with the clean part as dirty.
#[test]
fn the_first_dirty_offset_survives_a_restart() {
    block_on(async {
        let fs = SimStorage::new(11);
        let dir = Path::new(CKPT_DIR);
        let log = open_cfg(&fs, ratio_config()).await;
        fill(&log, 0, 200).await;
        let stats = clean_due(&log, 2_000).await;
        assert_eq!(stats.end_offset, 200);
        assert_eq!(log.first_dirty_offset(), 200);
        let text = String::from_utf8(
            strom_engine::io::read_whole_file(&fs, &dir.join(CHECKPOINT))
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap();
        assert_eq!(text, "0\n1\nckpt 0 200\n", "Kafka's format");
        log.close().await.unwrap();
        drop(log);
        let log = open_cfg(&fs, ratio_config()).await;
        assert_eq!(log.first_dirty_offset(), 200, "loaded from the checkpoint");
        assert!(
            clean_not_due(&log, 3_000).await,
            "a clean log is not cleaned again"
        );
        // 10 new records in one closed segment: far below half the log.
        fill(&log, 1, 10).await;
        assert!(clean_not_due(&log, 3_000).await);
        fs.crash();
        drop(log);
        let log = open_cfg(&fs, ratio_config()).await;
        assert_eq!(log.first_dirty_offset(), 200);
        // Enough new dirty data: the clean maps only the dirty part.
        fill(&log, 2, 200).await;
        let stats = clean_due(&log, 4_000).await;
        assert_eq!(stats.end_offset, 410);
        let got = read_all(&log).await.unwrap();
        assert_eq!(got.len(), 8, "one record per key: {:?}", got.keys());
    });
}

/// A checkpoint that is missing, torn, corrupt or past the log end is
/// ignored: the whole log counts as dirty and the clean is exact.
#[test]
fn a_bad_checkpoint_is_ignored() {
    for (i, text) in [
        None,
        Some("0\n1\nckpt 0 9999\n"),
        Some("0\n1\nckpt 0 5"),
        Some("garbage\n"),
        Some("0\n1\nckpt 0 -1\n"),
    ]
    .into_iter()
    .enumerate()
    {
        block_on(async {
            let fs = SimStorage::new(20 + i as u64);
            let dir = Path::new(CKPT_DIR);
            let log = open_cfg(&fs, ratio_config()).await;
            fill(&log, 0, 100).await;
            clean_due(&log, 2_000).await;
            fill(&log, 1, 100).await;
            log.close().await.unwrap();
            drop(log);
            let path = dir.join(CHECKPOINT);
            match text {
                None => fs.remove_file(&path).await.unwrap(),
                Some(t) => strom_engine::io::write_whole_file(&fs, &path, t.as_bytes())
                    .await
                    .unwrap(),
            }
            let log = open_cfg(&fs, ratio_config()).await;
            assert_eq!(log.first_dirty_offset(), 0, "case {i}: {text:?}");
            let stats = clean_due(&log, 3_000).await;
            assert_eq!(stats.end_offset, 200, "case {i}");
            let got = read_all(&log).await.unwrap();
            assert_eq!(
                got.len(),
                8,
                "case {i}: one record per key: {:?}",
                got.keys()
            );
        });
    }
}

/// A truncation below the first dirty offset lowers it, on disk before the
/// cut: records appended again past the truncation point are dirty, after a
/// crash too, and the next clean dedups them. (The cut is in a cleaned
/// segment that lost nothing: a cut inside a segment with gaps is refused
/// today, see FORMAT.md.)
#[test]
fn truncation_lowers_the_checkpoint() {
    block_on(async {
        let fs = SimStorage::new(31);
        let log = open_cfg(&fs, config()).await;
        fill(&log, 0, 100).await;
        // 20 distinct keys with 1 KB values: two segments of more than half
        // `segment.bytes` each, cleaned alone and unchanged.
        append_rolling(&log, (0..20).map(|i| (format!("u{i}"), "u".repeat(1000)))).await;
        clean_due(&log, 2_000).await;
        assert_eq!(log.first_dirty_offset(), 120);
        log.truncate_to(115).await.unwrap();
        assert_eq!(log.first_dirty_offset(), 115);
        // New records past the cut, each key many times.
        fill(&log, 1, 100).await;
        fs.crash();
        drop(log);
        let log = open_cfg(&fs, config()).await;
        assert_eq!(log.first_dirty_offset(), 115, "the lowered checkpoint");
        let stats = clean_due(&log, 3_000).await;
        assert_eq!(stats.end_offset, 215);
        let got = read_all(&log).await.unwrap();
        assert_eq!(got.len(), 8 + 15, "one record per key: {:?}", got.keys());
    });
}

/// A dirty segment none of whose records is its key's last is dropped
/// without being read again: 20 closed segments of 10 updates each over 8
/// keys, the last of them holding every key's last record. The 19 before it
/// are skipped; what is left is exactly the last record of each key.
#[test]
fn segments_with_nothing_left_are_not_read_again() {
    block_on(async {
        let fs = SimStorage::new(12);
        let log = open_cfg(&fs, config()).await;
        fill(&log, 0, 200).await;
        let stats = clean_due(&log, 2_000).await;
        assert_eq!(stats.end_offset, 200);
        assert_eq!(stats.segments_before, 20);
        assert_eq!(stats.segments_unread, 19, "{stats:?}");
        assert_eq!(stats.records_removed, 192, "{stats:?}");
        let got = read_all(&log).await.unwrap();
        let offsets: Vec<i64> = got.keys().copied().collect();
        assert_eq!(offsets, (192..200).collect::<Vec<i64>>());
        for (offset, (key, value)) in &got {
            let i = *offset;
            assert_eq!(key.as_deref(), Some(format!("k{}", i % 8).as_bytes()));
            assert_eq!(
                value.as_deref(),
                Some(format!("0-{i}").repeat(20).as_bytes())
            );
        }
    });
}
