//! Kafka's log-validator rules at the batch header, on client appends
//! (issue 13, findings 2 and 8): a batch that lies about its offset span, a
//! control batch and a transactional batch are refused and nothing is
//! written; a segment rolls before its offsets would pass a u32 from its
//! base, so the index stays exact. Idempotence fields that contradict each
//! other and CreateTime timestamps outside the configured window are refused.

use futures_lite::future::block_on;
use strom_engine::batch::{build_batch, BatchHeader, ATTR_CONTROL, ATTR_TRANSACTIONAL};
use strom_engine::io::sim::SimStorage;
use strom_engine::{BatchError, Durability, EngineError, LogConfig, PartitionLog};

/// Offsets 17..21 hold the CRC, which covers everything from byte 21 on.
fn fix_crc(b: &mut [u8]) {
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn set_attributes(b: &mut [u8], attributes: i16) {
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    fix_crc(b);
}

/// Sets lastOffsetDelta (bytes 23..27) and recordCount (57..61).
fn set_span(b: &mut [u8], last_offset_delta: i32, record_count: i32) {
    b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    b[57..61].copy_from_slice(&record_count.to_be_bytes());
    fix_crc(b);
}

fn refused(what: &str, batch: Vec<u8>, check: impl Fn(&BatchError) -> bool) {
    block_on(async {
        let fs = SimStorage::new(7);
        let log = PartitionLog::open_with(fs.clone(), "/sim/rules-0", LogConfig::default())
            .await
            .unwrap();
        log.append(&build_batch(1, &[b"first"]), Durability::Synced, 1)
            .await
            .unwrap();
        let writes_before = fs.counters().0;
        match log.append(&batch, Durability::Synced, 2).await {
            Err(EngineError::Batch(e)) => assert!(check(&e), "{what}: refused with {e:?}"),
            other => panic!("{what}: expected a batch error, got {other:?}"),
        }
        assert_eq!(log.log_end_offset(), 1, "{what}: the log end moved");
        assert_eq!(
            fs.counters().0,
            writes_before,
            "{what}: something was written"
        );
        // The log still takes an honest batch, at the next offset.
        let info = log
            .append(&build_batch(3, &[b"next"]), Durability::Synced, 3)
            .await
            .unwrap();
        assert_eq!(info.base_offset, 1, "{what}");
    });
}

#[test]
fn a_batch_that_lies_about_its_offset_span_is_refused() {
    // The probe: one record claiming 2^31-1 more offsets.
    let mut b = build_batch(1, &[b"x"]);
    set_span(&mut b, i32::MAX, 1);
    refused("lastOffsetDelta 2^31-1", b, |e| {
        matches!(e, BatchError::InconsistentOffsetRange { .. })
    });
    // Consistent header fields, but far more records than the bytes hold.
    let mut b = build_batch(1, &[b"x"]);
    set_span(&mut b, 1_000_000 - 1, 1_000_000);
    refused("a million records in a few bytes", b, |e| {
        matches!(e, BatchError::RecordCountTooLarge { .. })
    });
    // Fewer offsets than records.
    let mut b = build_batch(1, &[b"x", b"y", b"z"]);
    set_span(&mut b, 0, 3);
    refused("3 records in 1 offset", b, |e| {
        matches!(e, BatchError::InconsistentOffsetRange { .. })
    });
}

#[test]
fn control_and_transactional_batches_from_clients_are_refused() {
    let mut b = build_batch(1, &[b"x"]);
    set_attributes(&mut b, ATTR_CONTROL | ATTR_TRANSACTIONAL);
    refused("control", b, |e| matches!(e, BatchError::ControlBatch));
    let mut b = build_batch(1, &[b"x"]);
    set_attributes(&mut b, ATTR_TRANSACTIONAL);
    refused("transactional", b, |e| {
        matches!(e, BatchError::Transactional)
    });
}

/// A compressed batch's record count cannot be checked without decoding it,
/// so a huge consistent span is taken; the segment then rolls before its
/// offsets pass a u32, and every batch reads back at its offset.
#[test]
fn a_segment_rolls_before_relative_offsets_pass_u32() {
    block_on(async {
        let fs = SimStorage::new(9);
        let log = PartitionLog::open_with(fs.clone(), "/sim/span-0", LogConfig::default())
            .await
            .unwrap();
        let span = i32::MAX; // offsets per batch
        let mut huge = build_batch(1, &[b"x"]);
        set_attributes(&mut huge, 1); // gzip: the count is not checked against the bytes
        set_span(&mut huge, span - 1, span);
        let mut bases = Vec::new();
        for i in 0..4 {
            let info = log.append(&huge, Durability::Written, i).await.unwrap();
            bases.push(info.base_offset);
            let small = log
                .append(&build_batch(i, &[b"small"]), Durability::Written, i)
                .await
                .unwrap();
            bases.push(small.base_offset);
        }
        // Two huge batches and a small one fit below 2^32 offsets from a
        // segment's base; the next huge one rolls.
        assert!(
            log.segment_count() >= 2,
            "no roll after {} offsets in one segment",
            log.log_end_offset()
        );
        for base in bases {
            let r = log.read(base, 1).await.unwrap();
            let h = BatchHeader::parse(&r.batches[0]).unwrap();
            assert_eq!(h.base_offset, base, "read at {base}");
        }
        log.close().await.unwrap();
        // The indexes written at roll and close read back the same.
        let log = PartitionLog::open_with(fs.clone(), "/sim/span-0", LogConfig::default())
            .await
            .unwrap();
        assert!(log.segment_count() >= 2);
        let end = log.log_end_offset();
        let r = log.read(end - 1, 1).await.unwrap();
        assert_eq!(
            BatchHeader::parse(&r.batches[0]).unwrap().last_offset(),
            end - 1
        );
    });
}

#[test]
fn idempotence_fields_that_contradict_each_other_are_refused() {
    use strom_engine::batch::build_batch_with_producer;
    let cases: [(&str, i64, i16, i32); 3] = [
        ("a producer id with sequence -1", 7, 0, -1),
        ("a producer id with epoch -1", 7, -1, 0),
        ("producer id -2", -2, 0, 0),
    ];
    for (what, id, epoch, sequence) in cases {
        let b = build_batch_with_producer(1, &[b"x"], id, epoch, sequence);
        refused(what, b, |e| {
            matches!(e, BatchError::InvalidProducerFields { .. })
        });
    }
}

/// baseTimestamp sits at bytes 27..35 and maxTimestamp at 35..43.
fn set_timestamps(b: &mut [u8], base: i64, max: i64) {
    b[27..35].copy_from_slice(&base.to_be_bytes());
    b[35..43].copy_from_slice(&max.to_be_bytes());
    fix_crc(b);
}

#[test]
fn create_time_outside_the_timestamp_window_is_refused() {
    let hour = 3_600_000;
    let now = 1_800_000_000_000;
    let append_at = |config: LogConfig, base: i64, max: i64| {
        block_on(async {
            let log = PartitionLog::open_with(SimStorage::new(3), "/sim/ts-0", config)
                .await
                .unwrap();
            let mut b = build_batch(base, &[b"x"]);
            set_timestamps(&mut b, base, max);
            log.append(&b, Durability::Synced, now).await
        })
    };
    let out_of_range = |r: Result<_, EngineError>| {
        matches!(
            r,
            Err(EngineError::Batch(BatchError::TimestampOutOfRange { .. }))
        )
    };
    // Kafka 4.0's default: at most an hour ahead, any age.
    assert!(out_of_range(append_at(
        LogConfig::default(),
        now,
        now + hour + 1
    )));
    assert!(out_of_range(append_at(
        LogConfig::default(),
        now + hour + 1,
        now + hour + 1
    )));
    assert!(append_at(LogConfig::default(), now, now + hour).is_ok());
    assert!(append_at(LogConfig::default(), 0, 0).is_ok());
    // -1 is "no timestamp".
    assert!(append_at(LogConfig::default(), -1, -1).is_ok());
    let a_day_back = LogConfig {
        timestamp_before_max_ms: 24 * hour,
        ..LogConfig::default()
    };
    assert!(out_of_range(append_at(
        a_day_back.clone(),
        now - 24 * hour - 1,
        now
    )));
    assert!(append_at(a_day_back, now - 24 * hour, now).is_ok());
    // LogAppendTime overwrites the timestamps: nothing to check.
    let append_time = LogConfig {
        log_append_time: true,
        ..LogConfig::default()
    };
    assert!(append_at(append_time, now + 10 * hour, now + 10 * hour).is_ok());
}
