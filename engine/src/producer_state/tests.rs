use super::*;
use crate::batch::{build_batch_with_producer, validate};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// A header of a batch of `count` records (last offset delta `count - 1`).
fn hdr(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
    BatchHeader {
        base_offset: 0,
        batch_length: 100,
        partition_leader_epoch: 0,
        magic: 2,
        crc: 0,
        attributes: 0,
        last_offset_delta: count - 1,
        base_timestamp: 1000,
        max_timestamp: 1000,
        producer_id: pid,
        producer_epoch: epoch,
        base_sequence: seq,
        record_count: count,
    }
}

/// Checks and, when accepted, records the batch at `*next`, like the log.
fn append(
    t: &mut ProducerStateTable,
    next: &mut i64,
    h: BatchHeader,
) -> Result<Decision, ProducerError> {
    let d = t.check(&h)?;
    if d == Decision::Append {
        t.record(&h, *next);
        *next += h.last_offset_delta as i64 + 1;
    }
    Ok(d)
}

#[test]
fn batch_without_producer_id_skips_everything() {
    let mut t = ProducerStateTable::new();
    let mut next = 0;
    for _ in 0..3 {
        assert_eq!(
            append(&mut t, &mut next, hdr(-1, -1, -1, 2)),
            Ok(Decision::Append)
        );
    }
    assert!(t.is_empty());
    assert_eq!(t.end_offset(), 6);
}

#[test]
fn header_parsed_from_a_real_batch_is_checked() {
    let b = build_batch_with_producer(5, &[b"a", b"b", b"c"], 7, 0, 0);
    let h = validate(&b).unwrap();
    let mut t = ProducerStateTable::new();
    let mut next = 10;
    t = ProducerStateTable {
        end_offset: 10,
        ..t
    };
    assert_eq!(append(&mut t, &mut next, h), Ok(Decision::Append));
    let e = t.get(7).unwrap();
    assert_eq!(e.last_seq(), 2);
    assert_eq!(
        e.batches[0],
        BatchMetadata {
            first_seq: 0,
            last_seq: 2,
            base_offset: 10,
            last_offset: 12,
            max_timestamp: 5
        }
    );
}

#[test]
fn new_producer_must_start_at_sequence_zero() {
    let mut t = ProducerStateTable::new();
    let mut next = 0;
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 5, 1)),
        Err(ProducerError::UnknownProducerId {
            producer_id: 1,
            epoch: 0,
            sequence: 5
        })
    );
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 0, 1)),
        Ok(Decision::Append)
    );
    // A new producer may start at any epoch (InitProducerId hands out 0, a
    // bumped one comes back with a higher epoch).
    assert_eq!(
        append(&mut t, &mut next, hdr(2, 3, 0, 1)),
        Ok(Decision::Append)
    );
}

#[test]
fn negative_sequence_with_producer_id_is_invalid() {
    let t = ProducerStateTable::new();
    assert_eq!(
        t.check(&hdr(1, 0, -1, 1)),
        Err(ProducerError::InvalidSequence {
            producer_id: 1,
            sequence: -1
        })
    );
}

#[test]
fn in_sequence_appends_and_a_gap_is_out_of_order() {
    let mut t = ProducerStateTable::new();
    let mut next = 0;
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 0, 3)),
        Ok(Decision::Append)
    );
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 3, 2)),
        Ok(Decision::Append)
    );
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 6, 1)),
        Err(ProducerError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 0,
            sequence: 6,
            expected: 5
        })
    );
    // A batch overlapping the last one without matching it exactly.
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 4, 1)),
        Err(ProducerError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 0,
            sequence: 4,
            expected: 5
        })
    );
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 5, 1)),
        Ok(Decision::Append)
    );
    assert_eq!(next, 6);
}

#[test]
fn retries_of_the_last_five_batches_are_duplicates_with_original_offsets() {
    let mut t = ProducerStateTable::new();
    let mut next = 100;
    t.end_offset = 100;
    let mut sent = Vec::new();
    for i in 0..7 {
        let h = hdr(9, 2, i * 2, 2);
        let base = next;
        assert_eq!(append(&mut t, &mut next, h), Ok(Decision::Append));
        sent.push((h, base));
    }
    for (i, (h, base)) in sent.iter().enumerate() {
        let d = t.check(h);
        if i < 2 {
            // Older than the five remembered: Kafka answers out of order.
            assert!(
                matches!(
                    d,
                    Err(ProducerError::OutOfOrderSequence { expected: 14, .. })
                ),
                "{i}: {d:?}"
            );
        } else {
            let Ok(Decision::Duplicate(m)) = d else {
                panic!("{i}: {d:?}")
            };
            assert_eq!((m.base_offset, m.last_offset), (*base, *base + 1));
            assert_eq!(
                (m.first_seq, m.last_seq),
                (h.base_sequence, h.base_sequence + 1)
            );
        }
    }
    // Nothing was recorded by the duplicates.
    assert_eq!(t.end_offset(), 114);
}

#[test]
fn stale_epoch_is_fenced_and_a_bump_restarts_at_zero() {
    let mut t = ProducerStateTable::new();
    let mut next = 0;
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 1, 0, 1)),
        Ok(Decision::Append)
    );
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 1, 1, 1)),
        Ok(Decision::Append)
    );
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 2, 1)),
        Err(ProducerError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current_epoch: 1
        })
    );
    // A higher epoch must restart the sequence.
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 2, 2, 1)),
        Err(ProducerError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 2,
            sequence: 2,
            expected: 0
        })
    );
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 2, 0, 1)),
        Ok(Decision::Append)
    );
    // The old epoch's batches are forgotten: a retry of one is fenced.
    assert_eq!(
        t.check(&hdr(1, 1, 1, 1)),
        Err(ProducerError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 1,
            current_epoch: 2
        })
    );
    assert_eq!(t.get(1).unwrap().batches.len(), 1);
    // A retry of the new epoch's first batch is a duplicate.
    assert!(matches!(
        t.check(&hdr(1, 2, 0, 1)),
        Ok(Decision::Duplicate(BatchMetadata { base_offset: 2, .. }))
    ));
}

#[test]
fn sequence_wraps_from_i32_max_to_zero() {
    assert_eq!(increment_sequence(i32::MAX, 1), 0);
    assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
    assert_eq!(increment_sequence(5, 0), 5);
    let mut t = ProducerStateTable::new();
    let mut next = 0;
    t.record(&hdr(1, 0, 0, 1), 0);
    next += 1;
    // Pretend the producer got close to the end of the sequence space.
    t.producers.get_mut(&1).unwrap().batches[0].last_seq = i32::MAX - 3;
    let h = hdr(1, 0, i32::MAX - 2, 4); // sequences MAX-2, MAX-1, MAX, 0
    assert_eq!(last_sequence(&h), 0);
    assert_eq!(append(&mut t, &mut next, h), Ok(Decision::Append));
    assert!(matches!(t.check(&h), Ok(Decision::Duplicate(_))));
    assert_eq!(
        t.check(&hdr(1, 0, 0, 1)),
        Err(ProducerError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 0,
            sequence: 0,
            expected: 1
        })
    );
    assert_eq!(
        append(&mut t, &mut next, hdr(1, 0, 1, 1)),
        Ok(Decision::Append)
    );
}

#[test]
fn check_all_chains_batches_of_one_request() {
    let mut t = ProducerStateTable::new();
    let mut next = 0;
    append(&mut t, &mut next, hdr(1, 0, 0, 2)).unwrap();
    let ok = [
        hdr(1, 0, 2, 1),
        hdr(-1, -1, -1, 1),
        hdr(1, 0, 3, 2),
        hdr(2, 0, 0, 1),
    ];
    assert_eq!(t.check_all(&ok), Ok(Decision::Append));
    let gap = [hdr(1, 0, 2, 1), hdr(1, 0, 4, 1)];
    assert!(matches!(
        t.check_all(&gap),
        Err(ProducerError::OutOfOrderSequence {
            sequence: 4,
            expected: 3,
            ..
        })
    ));
    let repeated = [hdr(1, 0, 2, 1), hdr(1, 0, 2, 1)];
    assert!(matches!(
        t.check_all(&repeated),
        Err(ProducerError::OutOfOrderSequence { .. })
    ));
    let dup = [hdr(1, 0, 0, 2)];
    assert!(matches!(
        t.check_all(&dup),
        Ok(Decision::Duplicate(BatchMetadata {
            base_offset: 0,
            last_offset: 1,
            ..
        }))
    ));
    // The table itself was not touched by any of it.
    assert_eq!(t.end_offset(), 2);
    assert_eq!(t.get(1).unwrap().batches.len(), 1);
    assert!(t.get(2).is_none());
}

#[test]
fn expiration_and_the_producer_cap_forget_idle_producers() {
    let mut t = ProducerStateTable::new();
    let mut next = 0;
    let mut h = hdr(1, 0, 0, 1);
    h.max_timestamp = 1_000;
    append(&mut t, &mut next, h).unwrap();
    let mut h = hdr(2, 0, 0, 1);
    h.max_timestamp = 5_000;
    append(&mut t, &mut next, h).unwrap();
    t.remove_expired(5_500, 1_000);
    assert!(t.get(1).is_none());
    assert!(t.get(2).is_some());

    let mut t = ProducerStateTable::new();
    for pid in 0..MAX_PRODUCERS_PER_PARTITION as i64 {
        let mut h = hdr(pid, 0, 0, 1);
        h.max_timestamp = 10 + pid;
        t.record(&h, pid);
    }
    let mut h = hdr(1 << 40, 0, 0, 1);
    h.max_timestamp = 0;
    t.record(&h, MAX_PRODUCERS_PER_PARTITION as i64);
    assert_eq!(t.len(), MAX_PRODUCERS_PER_PARTITION);
    assert!(t.get(0).is_none(), "the idlest producer is evicted");
    assert!(t.get(1 << 40).is_some());
}

fn sample_table() -> ProducerStateTable {
    let mut t = ProducerStateTable::starting_at(50);
    let mut next = 50;
    for pid in [3i64, 1, 1 << 50] {
        for i in 0..7 {
            append(&mut t, &mut next, hdr(pid, 4, i, 1)).unwrap();
        }
    }
    append(&mut t, &mut next, hdr(-1, -1, -1, 3)).unwrap();
    t
}

#[test]
fn snapshot_round_trips_and_rejects_damage() {
    let t = sample_table();
    let bytes = t.to_snapshot_bytes();
    assert_eq!(ProducerStateTable::from_snapshot_bytes(&bytes).unwrap(), t);
    assert_eq!(
        ProducerStateTable::from_snapshot_bytes(
            &ProducerStateTable::starting_at(9).to_snapshot_bytes()
        )
        .unwrap(),
        ProducerStateTable::starting_at(9)
    );
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert!(
            ProducerStateTable::from_snapshot_bytes(&bad).is_err(),
            "bit flip at {i} accepted"
        );
    }
    for len in 0..bytes.len() {
        assert!(
            ProducerStateTable::from_snapshot_bytes(&bytes[..len]).is_err(),
            "truncation to {len} accepted"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(ProducerStateTable::from_snapshot_bytes(&longer).is_err());
}

#[test]
fn snapshot_files_are_kept_loaded_and_discarded_by_offset() {
    use crate::io::sim::SimStorage;
    use crate::io::Storage;
    use futures_lite::future::block_on;

    let fs = SimStorage::new(1);
    let d = Path::new("/data/t-0");
    let snapshots = || block_on(async { snapshot_offsets(&fs.list_dir(d).await.unwrap()) });
    let load = |start, end| block_on(load_latest(&fs, d, start, end)).unwrap();
    let write = |t: &ProducerStateTable| {
        block_on(write_snapshot(
            &fs,
            d,
            t.end_offset(),
            &t.to_snapshot_bytes(),
        ))
        .unwrap();
    };
    assert_eq!(load(7, 100), ProducerStateTable::starting_at(7));

    let mut t = ProducerStateTable::new();
    let mut next = 0;
    let mut written = Vec::new();
    for i in 0..4 {
        append(&mut t, &mut next, hdr(1, 0, i * 10, 10)).unwrap();
        write(&t);
        written.push(t.clone());
    }
    // Only the newest two remain, and they survive a crash.
    fs.crash();
    assert_eq!(snapshots(), vec![30, 40]);
    block_on(async {
        crate::io::write_whole_file(&fs, &d.join("junk.snapshot"), b"x")
            .await
            .unwrap();
        crate::io::write_whole_file(&fs, &d.join("00000000000000000050.snapshot.tmp"), b"x")
            .await
            .unwrap();
    });
    assert_eq!(load(0, 40), written[3]);

    // The log was cut below the newest snapshot: it is deleted and the older used.
    assert_eq!(load(0, 35), written[2]);
    assert_eq!(snapshots(), vec![30]);

    // A corrupt snapshot is skipped (and deleted).
    write(&written[3]);
    let p = snapshot_path(d, 40);
    let len = fs.file_len(&p).unwrap();
    assert!(fs.flip_bit(&p, len - 1, 0));
    assert_eq!(load(0, 40), written[2]);
    assert_eq!(snapshots(), vec![30]);
}

#[test]
fn rebuild_from_snapshot_and_replay_matches_the_live_table() {
    let mut t = ProducerStateTable::new();
    let mut log: Vec<BatchHeader> = Vec::new();
    let mut snap = None;
    for i in 0..40i32 {
        let next = i as i64;
        let h = hdr((i % 3) as i64, 0, i / 3, 1);
        assert_eq!(t.check(&h), Ok(Decision::Append));
        t.record(&h, next);
        log.push(BatchHeader {
            base_offset: next,
            ..h
        });
        if i == 17 {
            snap = Some(t.to_snapshot_bytes());
        }
    }
    let mut rebuilt = ProducerStateTable::from_snapshot_bytes(&snap.unwrap()).unwrap();
    // Replaying from the log start is harmless: batches below the snapshot are skipped.
    rebuilt.replay(log.iter().copied());
    assert_eq!(rebuilt, t);
    let mut from_scratch = ProducerStateTable::new();
    from_scratch.replay(log.iter().copied());
    assert_eq!(from_scratch, t);
}

// ---------------------------------------------------------------------------
// Model test: random producers sending, retrying, skipping sequences, bumping
// and reusing stale epochs, with snapshots and crashes (rebuild from the
// latest snapshot plus a replay of the log), against a plain model that keeps
// every appended batch of every producer.

#[derive(Default, Clone)]
struct ModelProducer {
    epoch: i16,
    /// Every batch appended in the current epoch: (first_seq, last_seq, base, last).
    appended: Vec<(i32, i32, i64, i64)>,
}

/// The model's verdict, written from the rules in Kafka's words rather than
/// from the table's code.
fn model_decide(
    model: &BTreeMap<i64, ModelProducer>,
    h: &BatchHeader,
) -> Result<Option<(i64, i64)>, &'static str> {
    if h.producer_id < 0 {
        return Ok(None);
    }
    if h.base_sequence < 0 {
        return Err("invalid");
    }
    let last =
        ((h.base_sequence as i64 + h.last_offset_delta as i64) % (i32::MAX as i64 + 1)) as i32;
    let Some(p) = model.get(&h.producer_id) else {
        return if h.base_sequence == 0 {
            Ok(None)
        } else {
            Err("unknown")
        };
    };
    if h.producer_epoch < p.epoch {
        return Err("epoch");
    }
    if h.producer_epoch == p.epoch {
        let recent = &p.appended[p.appended.len().saturating_sub(5)..];
        if let Some(b) = recent
            .iter()
            .find(|b| b.0 == h.base_sequence && b.1 == last)
        {
            return Ok(Some((b.2, b.3)));
        }
        let next = p
            .appended
            .last()
            .map_or(0, |b| if b.1 == i32::MAX { 0 } else { b.1 + 1 });
        return if h.base_sequence == next {
            Ok(None)
        } else {
            Err("order")
        };
    }
    if h.base_sequence == 0 {
        Ok(None)
    } else {
        Err("order")
    }
}

fn kind(r: &Result<Decision, ProducerError>) -> Result<Option<(i64, i64)>, &'static str> {
    match r {
        Ok(Decision::Append) => Ok(None),
        Ok(Decision::Duplicate(m)) => Ok(Some((m.base_offset, m.last_offset))),
        Err(ProducerError::InvalidSequence { .. }) => Err("invalid"),
        Err(ProducerError::UnknownProducerId { .. }) => Err("unknown"),
        Err(ProducerError::InvalidProducerEpoch { .. }) => Err("epoch"),
        Err(ProducerError::OutOfOrderSequence { .. }) => Err("order"),
    }
}

/// A client's view of one producer: what it would send next.
#[derive(Clone, Default)]
struct Client {
    epoch: i16,
    next_seq: i32,
    sent: Vec<BatchHeader>,
}

fn run_model(seed: u64, steps: usize) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut table = ProducerStateTable::new();
    let mut model: BTreeMap<i64, ModelProducer> = BTreeMap::new();
    let mut clients: Vec<Client> = vec![Client::default(); 4];
    let mut log: Vec<BatchHeader> = Vec::new();
    let mut next_offset = 0i64;
    let mut snapshots: Vec<Vec<u8>> = Vec::new();
    let mut counts = [0usize; 6];

    for step in 0..steps {
        let ci = rng.gen_range(0..clients.len());
        let pid = ci as i64 * 1000 + 1;
        let c = &mut clients[ci];
        let op = rng.gen_range(0..100);
        let h = if op < 50 {
            // The next batch in order; sometimes huge sequence spans, so
            // sequences wrap past i32::MAX within a run.
            let count: i32 = if rng.gen_bool(0.1) {
                rng.gen_range(1..1 << 29)
            } else {
                rng.gen_range(1..5)
            };
            let h = hdr(pid, c.epoch, c.next_seq, count);
            c.next_seq = increment_sequence(c.next_seq, count);
            c.sent.push(h);
            h
        } else if op < 70 && !c.sent.is_empty() {
            // A retry of something sent before, recent or old, any epoch.
            let back = rng.gen_range(1..=c.sent.len().min(8));
            c.sent[c.sent.len() - back]
        } else if op < 76 {
            // A gap.
            hdr(
                pid,
                c.epoch,
                increment_sequence(c.next_seq, rng.gen_range(1..3)),
                1,
            )
        } else if op < 82 {
            // The producer bumps its epoch and restarts its sequence.
            c.epoch += 1;
            c.next_seq = 0;
            let h = hdr(pid, c.epoch, 0, rng.gen_range(1..3));
            c.next_seq = increment_sequence(0, h.last_offset_delta + 1);
            c.sent.push(h);
            h
        } else if op < 86 && c.epoch > 0 {
            hdr(pid, c.epoch - 1, c.next_seq, 1)
        } else if op < 90 {
            hdr(-1, -1, -1, rng.gen_range(1..4))
        } else if op < 95 {
            snapshots.push(table.to_snapshot_bytes());
            continue;
        } else {
            // Crash: rebuild from the latest snapshot (or nothing) and the log.
            let mut rebuilt = match snapshots.last() {
                Some(s) if rng.gen_bool(0.8) => ProducerStateTable::from_snapshot_bytes(s).unwrap(),
                _ => ProducerStateTable::new(),
            };
            rebuilt.replay(log.iter().copied());
            assert_eq!(
                rebuilt, table,
                "seed {seed} step {step}: rebuilt table differs"
            );
            table = rebuilt;
            continue;
        };

        let expected = model_decide(&model, &h);
        let got = table.check(&h);
        assert_eq!(kind(&got), expected, "seed {seed} step {step}: {h:?}");
        counts[match &expected {
            Ok(None) => 0,
            Ok(Some(_)) => 1,
            Err("order") => 2,
            Err("epoch") => 3,
            Err("unknown") => 4,
            Err(_) => 5,
        }] += 1;
        if got == Ok(Decision::Append) {
            table.record(&h, next_offset);
            let last = next_offset + h.last_offset_delta as i64;
            log.push(BatchHeader {
                base_offset: next_offset,
                ..h
            });
            if h.producer_id >= 0 {
                let p = model.entry(h.producer_id).or_insert_with(|| ModelProducer {
                    epoch: h.producer_epoch,
                    appended: Vec::new(),
                });
                if p.epoch != h.producer_epoch {
                    *p = ModelProducer {
                        epoch: h.producer_epoch,
                        appended: Vec::new(),
                    };
                }
                p.appended
                    .push((h.base_sequence, last_sequence(&h), next_offset, last));
            }
            next_offset = last + 1;
        }
        assert_eq!(table.end_offset(), next_offset);
    }
    // Every outcome must have been exercised, or the model proves little.
    assert!(
        counts[..4].iter().all(|&n| n > 0),
        "seed {seed}: outcome counts {counts:?}"
    );
}

#[test]
fn model_random_producers_retries_epochs_and_crashes() {
    for seed in 0..64 {
        run_model(seed, 2_000);
    }
}
