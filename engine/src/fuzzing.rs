//! The checks the engine's fuzz targets run (`fuzz/fuzz_targets/batch.rs`
//! and `recover.rs`), here so that the ordinary tests replay every input in
//! `fuzz/regressions/` through the same code (`tests/fuzz_regressions.rs`).
//! Test-only: compiled with `cfg(test)` or the `test-util` feature.
//!
//! Each check panics when an invariant breaks; a returned error from the
//! engine is an acceptable outcome, a panic inside the engine is not.

use std::path::Path;

use futures_lite::future::block_on;

use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::io::sim::SimStorage;
use crate::io::write_whole_file;
use crate::log::{validate_for_append, AppendOrigin, Durability, PartitionLog};
use crate::producer_state;
use crate::LogConfig;

/// Where the checks put their partition on the simulated disk.
const DIR: &str = "/sim/fuzz-0";
/// Bytes asked per read when reading a whole log back.
const READ_BYTES: usize = 64 << 10;
/// The simulated log's segment size: small, so that preallocation stays
/// cheap and a seed of a few segments stays a few tens of KiB.
const SEGMENT_BYTES: u64 = 16 << 10;
/// `max.message.bytes` when the input asks for a small one.
const SMALL_MAX_MESSAGE_BYTES: usize = 256;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: SEGMENT_BYTES,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

/// Rewrites the CRC of every batch in `buf`, walking the batches by their
/// declared lengths until one does not fit. Lets the fuzzer past the CRC
/// check, which it cannot guess, to the checks and the code behind it.
fn fix_crcs(buf: &mut [u8]) {
    let mut pos = 0usize;
    while buf.len() - pos >= HEADER_BYTES {
        let len = i32::from_be_bytes(buf[pos + 8..pos + 12].try_into().unwrap());
        let Some(end) = usize::try_from(len)
            .ok()
            .and_then(|l| (pos + batch::LOG_OVERHEAD).checked_add(l))
            .filter(|&end| end <= buf.len() && end >= pos + HEADER_BYTES)
        else {
            return;
        };
        let crc = crc32c::crc32c(&buf[pos + 21..end]);
        buf[pos + 17..pos + 21].copy_from_slice(&crc.to_be_bytes());
        pos = end;
    }
}

/// Produce-batch validation, then the append itself. The first input byte
/// picks the origin (bit 0: replica), the `max.message.bytes` (bit 1:
/// small) and whether the batches' CRCs are rewritten first (bit 2); the
/// rest is a produce request's `records`. What validation
/// accepts must be well framed with good CRCs and spans; a client's accepted
/// batches are then appended to a log on the simulated disk, synced, the
/// disk crashed and the log reopened: every batch must read back byte for
/// byte (base offset aside) at the offsets the append gave it.
pub fn check_append_validation(data: &[u8]) {
    let Some((&selector, records)) = data.split_first() else {
        return;
    };
    let mut fixed;
    let records = if selector & 4 != 0 {
        fixed = records.to_vec();
        fix_crcs(&mut fixed);
        &fixed[..]
    } else {
        records
    };
    let origin = if selector & 1 == 0 {
        AppendOrigin::Client
    } else {
        AppendOrigin::Replica
    };
    let max = if selector & 2 == 0 {
        LogConfig::default().max_message_bytes
    } else {
        SMALL_MAX_MESSAGE_BYTES
    };
    let Ok(parsed) = validate_for_append(records, max, origin) else {
        return;
    };
    assert!(!parsed.is_empty(), "accepted no batch");
    let mut pos = 0;
    for (h, range) in &parsed {
        assert_eq!(range.start, pos, "batches must be back to back");
        assert!(range.len() <= max);
        let bytes = &records[range.clone()];
        assert_eq!(
            batch::validate(bytes).as_ref(),
            Ok(h),
            "accepted a bad batch"
        );
        assert!(h.record_count >= 1);
        assert_eq!(h.record_count as i64, h.last_offset_delta as i64 + 1);
        if origin == AppendOrigin::Client {
            assert!(!h.is_control() && !h.is_transactional());
        }
        pos = range.end;
    }
    assert_eq!(pos, records.len(), "accepted trailing bytes");
    if origin == AppendOrigin::Client {
        append_and_read_back(records, &parsed, max);
    }
}

fn append_and_read_back(
    records: &[u8],
    parsed: &[(BatchHeader, std::ops::Range<usize>)],
    max: usize,
) {
    block_on(async {
        let fs = SimStorage::new(parsed.len() as u64);
        // `validate_for_append` leaves out the timestamp window (it depends
        // on the clock): open it as wide as it goes, [-i64::MAX, i64::MAX]
        // at time 0, so the append checks the same rules. Only i64::MIN
        // lies outside, and Kafka refuses it too (now - Long.MAX_VALUE is
        // above it).
        let config = LogConfig {
            max_message_bytes: max,
            timestamp_after_max_ms: i64::MAX,
            timestamp_before_max_ms: i64::MAX,
            ..config()
        };
        let log = PartitionLog::open_with(fs.clone(), DIR, config.clone())
            .await
            .expect("open an empty log");
        let info = match log.append(records, Durability::Synced, 0).await {
            Ok(info) => info,
            // Producer rules (an epoch or sequence the producer state
            // refuses) may still reject what validation accepted.
            Err(crate::EngineError::Producer(_)) => return,
            Err(crate::EngineError::Batch(crate::BatchError::TimestampOutOfRange {
                timestamp: i64::MIN,
                ..
            })) => return,
            Err(e) => panic!("append of validated batches failed: {e}"),
        };
        let span: i64 = parsed
            .iter()
            .map(|(h, _)| h.last_offset_delta as i64 + 1)
            .sum();
        assert_eq!(info.base_offset, 0);
        assert_eq!(info.last_offset, span - 1);
        fs.crash();
        let log = PartitionLog::open_with(fs.clone(), DIR, config)
            .await
            .expect("reopen after a crash");
        assert_eq!(log.log_end_offset(), span, "synced batches lost");
        let back = read_all(&log).await.expect("read back synced batches");
        assert_eq!(back.len(), parsed.len());
        let mut next = 0i64;
        for ((h, range), stored) in parsed.iter().zip(&back) {
            assert_eq!(stored.len(), range.len());
            assert_eq!(&stored[8..], &records[range.start + 8..range.end]);
            let s = BatchHeader::parse(stored).expect("stored header");
            assert_eq!(s.base_offset, next);
            next += h.last_offset_delta as i64 + 1;
        }
    });
}

/// Reads every batch from the log start to the log end, checking each
/// batch's CRC and that offsets chain. Stops at the first read error (an
/// error is not serving a bad batch); returns the batches read.
async fn read_all(log: &PartitionLog<SimStorage>) -> crate::error::Result<Vec<bytes::Bytes>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    let end = log.log_end_offset();
    while offset < end {
        let read = log.read(offset, READ_BYTES).await?;
        assert!(
            !read.batches.is_empty(),
            "no batch at {offset} below the log end {end}"
        );
        for b in read.batches {
            let h = batch::validate(&b)
                .unwrap_or_else(|e| panic!("served a bad batch at offset {offset}: {e}"));
            assert_eq!(
                h.base_offset, offset,
                "offsets must chain from the log start"
            );
            offset = h.last_offset() + 1;
            out.push(b);
        }
    }
    Ok(out)
}

/// File kinds of a recovery input entry.
const KINDS: [&str; 6] = ["log", "index", "timeindex", "snapshot", "clean", "spare"];

/// Encodes the files of one partition directory as a recovery input: per
/// file a kind byte (index into `log`, `index`, `timeindex`, `snapshot`,
/// the clean-shutdown marker, the spare segment, modulo 6; with bit 7 set,
/// a `.log` file's batch CRCs are rewritten before it is written), the base
/// offset (u32 LE) and the length (u32 LE), then the bytes. For the seed
/// corpus.
pub fn encode_recovery_input(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, base, bytes) in files {
        let k = KINDS.iter().position(|k| k == kind).expect("a known kind");
        out.push(k as u8);
        out.extend_from_slice(&base.to_le_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The files of a simulated partition directory as a recovery input (the
/// seed generator's view of a log it wrote).
pub fn recovery_input_of(fs: &SimStorage, dir: &Path) -> Vec<u8> {
    let mut files = Vec::new();
    for path in fs.paths() {
        if path.parent() != Some(dir) {
            continue;
        }
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        let (kind, base) = if name == crate::log::CLEAN_SHUTDOWN_FILE {
            ("clean", 0)
        } else if let Some((stem, ext)) = name.split_once('.') {
            let Ok(base) = stem.parse::<u32>() else {
                continue;
            };
            match ext {
                "log" => ("log", base),
                "index" => ("index", base),
                "timeindex" => ("timeindex", base),
                "snapshot" => ("snapshot", base),
                _ => continue,
            }
        } else {
            continue;
        };
        let bytes = block_on(crate::io::read_whole_file(fs, &path)).unwrap_or_default();
        files.push((kind, base, bytes.to_vec()));
    }
    files.sort();
    let refs: Vec<(&str, u32, &[u8])> = files.iter().map(|(k, b, v)| (*k, *b, &v[..])).collect();
    encode_recovery_input(&refs)
}

/// Recovery from arbitrary files: `data` is a sequence of entries as
/// [`encode_recovery_input`] writes them (a short last entry takes what is
/// left). The files are put in a partition directory on the simulated disk
/// and the log is opened: it must not panic, and if it opens, everything
/// from its start to its end reads back with good CRCs and chained offsets
/// (or fails with an error). Then one more batch is appended, the log is
/// closed cleanly and reopened: the same batches must come back.
pub fn check_recovery(data: &[u8]) {
    block_on(async {
        let fs = SimStorage::new(0);
        let dir = Path::new(DIR);
        let mut rest = data;
        while rest.len() >= 9 {
            let kind = KINDS[(rest[0] & 0x7f) as usize % KINDS.len()];
            let fix = rest[0] & 0x80 != 0;
            let base = u32::from_le_bytes(rest[1..5].try_into().unwrap());
            let len = u32::from_le_bytes(rest[5..9].try_into().unwrap()) as usize;
            let len = len.min(rest.len() - 9);
            let bytes = &rest[9..9 + len];
            rest = &rest[9 + len..];
            let name = match kind {
                "clean" => crate::log::CLEAN_SHUTDOWN_FILE.to_string(),
                "spare" => ".next-segment".to_string(),
                "snapshot" => producer_state::snapshot_path(dir, base as i64)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string(),
                ext => format!("{base:020}.{ext}"),
            };
            let mut bytes = bytes.to_vec();
            if fix && kind == "log" {
                fix_crcs(&mut bytes);
            }
            write_whole_file(&fs, &dir.join(name), &bytes)
                .await
                .expect("write a file on the simulated disk");
        }
        let Ok(log) = PartitionLog::open_with(fs.clone(), dir, config()).await else {
            return;
        };
        let Ok(before) = read_all(&log).await else {
            return;
        };
        let end = log.log_end_offset();
        let extra = batch::build_batch(0, &[b"after recovery"]);
        let appended = match log.append(&extra, Durability::Synced, 0).await {
            Ok(info) => {
                assert_eq!(info.base_offset, end, "appended away from the log end");
                true
            }
            Err(_) => false,
        };
        if log.close().await.is_err() {
            return;
        }
        let log = PartitionLog::open_with(fs.clone(), dir, config())
            .await
            .expect("reopen after a clean close");
        let after = read_all(&log).await.expect("read after a clean reopen");
        assert!(after.len() >= before.len(), "a clean reopen lost batches");
        for (a, b) in before.iter().zip(&after) {
            assert_eq!(a, b, "a clean reopen changed a batch");
        }
        if appended {
            // The batch appended after recovery reads back at its offset
            // (what the CRC covers; the base offset and leader epoch are
            // the log's), not some other batch that claims the offset.
            let back = after
                .get(before.len())
                .expect("the batch appended after recovery is gone after a clean reopen");
            assert_eq!(
                back.get(batch::CRC_START..),
                extra.get(batch::CRC_START..),
                "another batch took the offset appended after recovery"
            );
        }
    });
}

/// Seed inputs for the `batch` target: (name, input).
pub fn batch_seeds() -> Vec<(String, Vec<u8>)> {
    let one = batch::build_batch(1_700_000_000_000, &[b"v"]);
    let three = batch::build_batch(1_700_000_000_000, &[b"a", b"bb", b"ccc"]);
    let idempotent = batch::build_batch_with_producer(5, &[b"x", b"y"], 7, 0, 0);
    let mut gzip_flagged = three.clone();
    gzip_flagged[22] |= 1;
    let crc = crc32c::crc32c(&gzip_flagged[21..]);
    gzip_flagged[17..21].copy_from_slice(&crc.to_be_bytes());
    let large = batch::build_batch(9, &[&[7u8; 300][..], &[8u8; 300][..]]);
    let mut two = one.clone();
    two.extend_from_slice(&three);
    let mut replica_pair = one.clone();
    let mut next = three.clone();
    batch::set_base_offset(&mut next, 1);
    replica_pair.extend_from_slice(&next);
    let with = |selector: u8, b: &[u8]| {
        let mut v = vec![selector];
        v.extend_from_slice(b);
        v
    };
    vec![
        ("client-one".into(), with(0, &one)),
        ("client-three".into(), with(0, &three)),
        ("client-two-batches".into(), with(0, &two)),
        ("client-idempotent".into(), with(0, &idempotent)),
        ("client-gzip-flag".into(), with(0, &gzip_flagged)),
        ("client-small-max".into(), with(2, &large)),
        ("replica-contiguous".into(), with(1, &replica_pair)),
        ("client-fix-crcs".into(), with(4, &two)),
        ("replica-fix-crcs".into(), with(5, &replica_pair)),
    ]
}

/// Seed inputs for the `recover` target: the files of logs written on the
/// simulated disk, closed cleanly or crashed.
pub fn recovery_seeds() -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, batches, clean) in [
        ("clean-one-segment", 3usize, true),
        ("clean-rolled", 60, true),
        ("crash-one-segment", 3, false),
        ("crash-rolled", 60, false),
    ] {
        let fs = SimStorage::new(batches as u64);
        block_on(async {
            let log = PartitionLog::open_with(fs.clone(), DIR, config())
                .await
                .expect("open");
            for i in 0..batches {
                let value = vec![b'a' + (i % 26) as u8; 200 + i];
                let b = batch::build_batch_with_producer(
                    1_000 + i as i64,
                    &[&value[..], b"second"],
                    3,
                    0,
                    (2 * i) as i32,
                );
                log.append(&b, Durability::Synced, 1_000 + i as i64)
                    .await
                    .expect("append");
            }
            if clean {
                log.close().await.expect("close");
            } else {
                fs.crash();
            }
        });
        out.push((name.to_string(), recovery_input_of(&fs, Path::new(DIR))));
    }
    out.push(("empty".into(), Vec::new()));
    out
}
