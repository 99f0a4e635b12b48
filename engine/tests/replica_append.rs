//! Appends with `AppendOrigin::Replica`: a follower appending what it fetched
//! from its leader keeps the leader's offsets and bytes, and refuses, writing
//! nothing, batches that do not continue its log exactly.

mod common;

use common::batches_from;
use futures_lite::future::block_on;
use strom_engine::batch::{self, build_batch, build_batch_with_producer, BatchHeader};
use strom_engine::io::sim::SimStorage;
use strom_engine::producer_state::ProducerError;
use strom_engine::{AppendOrigin, BatchError, Durability, EngineError, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;

async fn open(fs: &SimStorage, dir: &str, config: &LogConfig) -> Log {
    PartitionLog::open_with(fs.clone(), dir, config.clone())
        .await
        .unwrap()
}

fn base_and_last(b: &[u8]) -> (i64, i64) {
    let h = BatchHeader::parse(b).unwrap();
    (h.base_offset, h.last_offset())
}

/// A batch of `records` records stored at `base_offset`, as a leader sends it.
fn at_offset(base_offset: i64, records: usize) -> Vec<u8> {
    let values: Vec<&[u8]> = vec![b"v"; records];
    let mut b = build_batch(1_000, &values);
    batch::set_base_offset(&mut b, base_offset);
    b
}

#[test]
fn a_replica_keeps_its_leaders_offsets_and_bytes() {
    block_on(async {
        let fs = SimStorage::new(1);
        // LogAppendTime on both sides: the leader stamps its time, the
        // follower must keep it rather than stamp its own.
        let config = LogConfig {
            segment_bytes: 16 * 1024,
            log_append_time: true,
            ..LogConfig::default()
        };
        let leader = open(&fs, "/sim/leader", &config).await;
        let mut sequence = 0;
        for i in 0..40i64 {
            let b = if i % 3 == 0 {
                sequence += 1;
                build_batch_with_producer(i, &[&[i as u8; 700]], 9, 0, sequence - 1)
            } else {
                build_batch(i, &[&[i as u8; 500], b"x"])
            };
            leader
                .append(&b, Durability::Written, 5_000 + i)
                .await
                .unwrap();
        }
        let mut fetched = batches_from(&leader, 0).await;
        for b in &mut fetched {
            batch::set_partition_leader_epoch(b, 3);
        }
        let follower = open(&fs, "/sim/follower", &config).await;
        // Fetched in runs of one to four batches, as fetch responses come.
        let mut i = 0;
        while i < fetched.len() {
            let n = (i % 4 + 1).min(fetched.len() - i);
            let records: Vec<u8> = fetched[i..i + n].concat();
            let info = follower
                .append_with_origin(&records, Durability::Written, 99_999, AppendOrigin::Replica)
                .await
                .unwrap();
            assert_eq!(info.base_offset, base_and_last(&fetched[i]).0);
            assert_eq!(info.last_offset, base_and_last(&fetched[i + n - 1]).1);
            assert_eq!(info.log_append_time_ms, -1, "a replica stamps no time");
            i += n;
        }
        assert!(follower.segment_count() > 1, "the follower rolled");
        assert_eq!(follower.log_end_offset(), leader.log_end_offset());
        assert_eq!(batches_from(&follower, 0).await, fetched);
        // The same after a clean restart and after a crash.
        follower.close().await.unwrap();
        drop(follower);
        let follower = open(&fs, "/sim/follower", &config).await;
        assert_eq!(batches_from(&follower, 0).await, fetched);
        follower.flush().await.unwrap();
        fs.crash();
        drop(follower);
        let follower = open(&fs, "/sim/follower", &config).await;
        assert_eq!(batches_from(&follower, 0).await, fetched);
    });
}

#[test]
fn a_replica_append_that_does_not_continue_the_log_writes_nothing() {
    block_on(async {
        let fs = SimStorage::new(2);
        let log = open(&fs, "/sim/refuse", &LogConfig::default()).await;
        log.append(&build_batch(1, &[b"a", b"b"]), Durability::Synced, 1)
            .await
            .unwrap();
        log.append_replica(&at_offset(2, 3), Durability::Synced, 1)
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 5);
        let before = batches_from(&log, 0).await;
        let writes = fs.counters().0;
        let cases: Vec<(&str, Vec<u8>, BatchError)> = vec![
            (
                "gap before the first batch",
                at_offset(6, 1),
                BatchError::NotAtLogEnd {
                    base_offset: 6,
                    log_end_offset: 5,
                },
            ),
            (
                "first batch goes backwards",
                at_offset(4, 1),
                BatchError::NotAtLogEnd {
                    base_offset: 4,
                    log_end_offset: 5,
                },
            ),
            (
                "first batch repeats the log start",
                at_offset(0, 2),
                BatchError::NotAtLogEnd {
                    base_offset: 0,
                    log_end_offset: 5,
                },
            ),
            (
                "gap between batches",
                [at_offset(5, 2), at_offset(8, 1)].concat(),
                BatchError::NotContiguous {
                    base_offset: 8,
                    expected: 7,
                },
            ),
            (
                "second batch goes backwards",
                [at_offset(5, 2), at_offset(6, 1)].concat(),
                BatchError::NotContiguous {
                    base_offset: 6,
                    expected: 7,
                },
            ),
            (
                "second batch repeats the first",
                [at_offset(5, 2), at_offset(5, 2)].concat(),
                BatchError::NotContiguous {
                    base_offset: 5,
                    expected: 7,
                },
            ),
        ];
        for (name, records, want) in cases {
            for d in [Durability::Written, Durability::Synced] {
                match log.append_replica(&records, d, 2).await {
                    Err(EngineError::Batch(got)) => assert_eq!(got, want, "{name}"),
                    other => panic!("{name}: {other:?}"),
                }
            }
            assert_eq!(log.log_end_offset(), 5, "{name}: the log moved");
        }
        assert_eq!(fs.counters().0, writes, "a refused append wrote");
        assert_eq!(batches_from(&log, 0).await, before);
        // What continues the log is taken, and a client append follows it.
        let info = log
            .append_replica(
                &[at_offset(5, 2), at_offset(7, 1)].concat(),
                Durability::Synced,
                3,
            )
            .await
            .unwrap();
        assert_eq!((info.base_offset, info.last_offset), (5, 7));
        let info = log
            .append(&at_offset(1_000, 1), Durability::Synced, 4)
            .await
            .unwrap();
        assert_eq!(
            info.base_offset, 8,
            "a client's offsets come from the log end"
        );
    });
}

#[test]
fn replica_batches_are_recorded_not_checked_in_the_producer_state() {
    block_on(async {
        let fs = SimStorage::new(3);
        let log = open(&fs, "/sim/producers", &LogConfig::default()).await;
        // A producer the follower never saw, mid-sequence: a client append
        // would be refused (UNKNOWN_PRODUCER_ID); the leader checked it.
        let mut b = build_batch_with_producer(10, &[b"a", b"b"], 7, 2, 40);
        batch::set_base_offset(&mut b, 0);
        log.append_replica(&b, Durability::Written, 1)
            .await
            .unwrap();
        // A client's retry of that batch gets the replica's offsets back.
        let again = log.append(&b, Durability::Written, 2).await.unwrap();
        assert_eq!((again.base_offset, again.last_offset), (0, 1));
        assert_eq!(log.log_end_offset(), 2);
        // The sequence goes on from the replica's batch.
        let next = build_batch_with_producer(11, &[b"c"], 7, 2, 42);
        assert_eq!(
            log.append(&next, Durability::Written, 3)
                .await
                .unwrap()
                .base_offset,
            2
        );
        let gap = build_batch_with_producer(12, &[b"d"], 7, 2, 50);
        assert!(matches!(
            log.append(&gap, Durability::Written, 4).await,
            Err(EngineError::Producer(ProducerError::OutOfOrderSequence {
                expected: 43,
                ..
            }))
        ));
    });
}

/// A follower whose leader's log starts past its end starts again there:
/// an empty log whose first offset is the leader's log start takes the
/// leader's batches from that offset, and reopens the same.
#[test]
fn an_empty_log_created_at_an_offset_starts_there() {
    block_on(async {
        let fs = SimStorage::new(1);
        let config = LogConfig::default();
        let log = PartitionLog::create_empty_at_with(fs.clone(), "/p", config.clone(), 120)
            .await
            .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (120, 120));
        let refused = log
            .append_replica(&at_offset(100, 3), Durability::Synced, 0)
            .await;
        assert!(refused.is_err(), "a batch below the start was taken");
        log.append_replica(&at_offset(120, 5), Durability::Synced, 0)
            .await
            .unwrap();
        assert_eq!(log.log_end_offset(), 125);
        let stored: Vec<(i64, i64)> = batches_from(&log, 120)
            .await
            .iter()
            .map(|b| base_and_last(b))
            .collect();
        assert_eq!(stored, vec![(120, 124)]);
        log.close().await.unwrap();
        let log = open(&fs, "/p", &config).await;
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (120, 125));
        // Only into an empty directory.
        assert!(
            PartitionLog::create_empty_at_with(fs.clone(), "/p", config, 7)
                .await
                .is_err()
        );
    });
}
