//! Leader epochs over the simulated file system: a leader stamps its epoch
//! into every client batch and records where each epoch starts; a follower
//! learns the epochs from the batches it appends; truncation, clean
//! restarts and crashes keep the checkpoint consistent with the log (every
//! entry starts below the log end, every batch's epoch is the entry that
//! covers it).

mod common;

use common::batches_from;
use futures_lite::future::block_on;
use strom_engine::batch::{self, build_batch};
use strom_engine::io::sim::SimStorage;
use strom_engine::leader_epoch::EpochEntry;
use strom_engine::{AppendOrigin, Durability, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        ..LogConfig::default()
    }
}

async fn open(fs: &SimStorage, dir: &str) -> Log {
    PartitionLog::open_with(fs.clone(), dir, config())
        .await
        .unwrap()
}

async fn append_n(log: &Log, n: usize, d: Durability) {
    for i in 0..n {
        let b = build_batch(1_000 + i as i64, &[&[i as u8; 400], b"x"]);
        log.append(&b, d, 2_000).await.unwrap();
    }
}

fn entries(pairs: &[(i32, i64)]) -> Vec<EpochEntry> {
    pairs
        .iter()
        .map(|&(epoch, start_offset)| EpochEntry {
            epoch,
            start_offset,
        })
        .collect()
}

/// Every batch is valid (the stamp left the CRC intact) and carries the
/// epoch of the cache entry covering its base offset; every entry starts
/// below the log end.
async fn check_consistent(log: &Log) {
    let cache = log.leader_epochs();
    for e in cache.entries() {
        assert!(e.start_offset < log.log_end_offset(), "{e:?} past the end");
    }
    for b in batches_from(log, 0).await {
        let h = batch::validate(&b).unwrap();
        let covering = cache
            .entries()
            .iter()
            .rev()
            .find(|e| e.start_offset <= h.base_offset)
            .map(|e| e.epoch);
        assert_eq!(
            covering,
            Some(h.partition_leader_epoch),
            "batch at {}",
            h.base_offset
        );
    }
}

#[test]
fn a_leader_stamps_its_epoch_and_records_where_it_starts() {
    block_on(async {
        let fs = SimStorage::new(7);
        let log = open(&fs, "/sim/leader").await;
        // Not led here yet: a client batch keeps what the producer sent.
        assert_eq!(log.leader_epoch(), None);
        assert!(log.become_leader(3).await.unwrap());
        append_n(&log, 30, Durability::Written).await;
        let first_end = log.log_end_offset();
        assert!(log.become_leader(5).await.unwrap());
        // Becoming leader again at the same epoch changes nothing.
        assert!(log.become_leader(5).await.unwrap());
        append_n(&log, 30, Durability::Synced).await;
        assert!(!log.become_leader(4).await.unwrap(), "an older epoch");
        assert_eq!(log.leader_epoch(), Some(5));
        assert!(log.segment_count() > 1);
        let want = entries(&[(3, 0), (5, first_end)]);
        assert_eq!(log.leader_epochs().entries(), &want[..]);
        check_consistent(&log).await;
        let end = log.log_end_offset();
        assert_eq!(log.end_offset_for_epoch(3), (3, first_end));
        assert_eq!(log.end_offset_for_epoch(4), (3, first_end));
        assert_eq!(log.end_offset_for_epoch(5), (5, end));
        assert_eq!(log.end_offset_for_epoch(6), (-1, -1));
        // The checkpoint survives a clean restart and a crash.
        log.close().await.unwrap();
        drop(log);
        let log = open(&fs, "/sim/leader").await;
        assert_eq!(log.leader_epochs().entries(), &want[..]);
        assert_eq!(
            log.leader_epoch(),
            None,
            "leadership is the broker's to give"
        );
        fs.crash();
        drop(log);
        let log = open(&fs, "/sim/leader").await;
        assert_eq!(log.leader_epochs().entries(), &want[..]);
        check_consistent(&log).await;
    });
}

#[test]
fn a_follower_learns_epochs_from_batches_and_truncation_forgets_them() {
    block_on(async {
        let fs = SimStorage::new(8);
        let leader = open(&fs, "/sim/leader").await;
        let mut ends = Vec::new();
        for epoch in [1, 2, 4] {
            leader.become_leader(epoch).await.unwrap();
            append_n(&leader, 12, Durability::Written).await;
            ends.push(leader.log_end_offset());
        }
        let fetched = batches_from(&leader, 0).await;
        let follower = open(&fs, "/sim/follower").await;
        for b in &fetched {
            follower
                .append_with_origin(b, Durability::Written, 9, AppendOrigin::Replica)
                .await
                .unwrap();
        }
        assert_eq!(batches_from(&follower, 0).await, fetched, "bytes kept");
        assert_eq!(follower.leader_epochs(), leader.leader_epochs());
        check_consistent(&follower).await;
        // Truncating into epoch 2 drops epoch 4; to its start drops epoch 2.
        follower.truncate_to(ends[1] - 3).await.unwrap();
        assert_eq!(
            follower.leader_epochs().entries(),
            &entries(&[(1, 0), (2, ends[0])])[..]
        );
        check_consistent(&follower).await;
        follower.truncate_to(ends[0]).await.unwrap();
        assert_eq!(follower.leader_epochs().entries(), &entries(&[(1, 0)])[..]);
        follower.close().await.unwrap();
        drop(follower);
        let follower = open(&fs, "/sim/follower").await;
        assert_eq!(follower.leader_epochs().entries(), &entries(&[(1, 0)])[..]);
        check_consistent(&follower).await;
    });
}

#[test]
fn after_crashes_the_checkpoint_never_names_lost_epochs() {
    for seed in 0..20u64 {
        block_on(async {
            let fs = SimStorage::new(seed);
            let mut log = open(&fs, "/sim/p").await;
            for round in 0..4 {
                log.become_leader(round * 2 + 1).await.unwrap();
                // Acknowledged (synced) batches, then some only written,
                // which the crash may take back, their new epoch included.
                append_n(&log, 5, Durability::Synced).await;
                let synced = log.log_end_offset();
                log.become_leader(round * 2 + 2).await.unwrap();
                append_n(&log, 3 + seed as usize % 4, Durability::Written).await;
                fs.crash();
                drop(log);
                log = open(&fs, "/sim/p").await;
                assert!(log.log_end_offset() >= synced, "seed {seed}");
                check_consistent(&log).await;
                let latest = log.leader_epochs().latest_epoch();
                assert!(latest >= Some(round * 2 + 1), "seed {seed}");
            }
        });
    }
}

/// A log led here takes no batch from a leader: the fetcher may have been
/// on its way with a batch of the last epoch when the broker became
/// leader. Appended at the new epoch's start offset, that batch would sit
/// inside the new epoch while the other replicas start the epoch after it.
#[test]
fn a_log_led_here_refuses_a_replica_append() {
    block_on(async {
        let fs = SimStorage::new(9);
        let old_leader = open(&fs, "/sim/old-leader").await;
        old_leader.become_leader(1).await.unwrap();
        append_n(&old_leader, 4, Durability::Written).await;
        let fetched = batches_from(&old_leader, 0).await;
        let (head, in_flight) = fetched.split_at(3);
        let log = open(&fs, "/sim/new-leader").await;
        for b in head {
            log.append_replica(b, Durability::Written, 9).await.unwrap();
        }
        let end = log.log_end_offset();
        assert!(log.become_leader(2).await.unwrap());
        let refused = log
            .append_replica(&in_flight[0], Durability::Written, 9)
            .await;
        assert!(refused.is_err(), "a led log appended a replica batch");
        assert_eq!(log.log_end_offset(), end, "nothing of it appended");
        assert_eq!(
            log.leader_epochs().entries(),
            &entries(&[(1, 0), (2, end)])[..]
        );
        append_n(&log, 2, Durability::Written).await;
        check_consistent(&log).await;
        // Following again, it appends what its leader sends.
        log.resign_leadership();
        log.truncate_to(end).await.unwrap();
        log.append_replica(&in_flight[0], Durability::Written, 9)
            .await
            .unwrap();
        check_consistent(&log).await;
    });
}
