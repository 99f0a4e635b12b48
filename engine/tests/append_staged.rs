//! `append_staged` says when an append's batches have their offsets,
//! before it waits for durability: a connection then starts its next
//! produce request, so the signal must come after the offsets are given
//! (else the next append could take offsets first), and must come on
//! every way out (else the connection would wait for ever).

use std::cell::Cell;
use std::rc::Rc;

use futures_lite::future::block_on;
use strom_engine::batch::{build_batch, build_batch_with_producer};
use strom_engine::io::sim::SimStorage;
use strom_engine::{AppendOrigin, Durability, LogConfig, PartitionLog};

type Log = PartitionLog<SimStorage>;

async fn open(fs: &SimStorage) -> Log {
    PartitionLog::open_with(fs.clone(), "/sim/staged", LogConfig::default())
        .await
        .unwrap()
}

/// Appends `records` and returns the result with the log end offset seen
/// when the signal came (None: it never came).
async fn staged(
    log: &Log,
    records: &[u8],
    durability: Durability,
) -> (
    Result<strom_engine::AppendInfo, strom_engine::EngineError>,
    Option<i64>,
) {
    let seen = Rc::new(Cell::new(None));
    let at = seen.clone();
    let probe = log.clone();
    let result = log
        .append_staged(
            records,
            durability,
            1_000,
            AppendOrigin::Client,
            move || {
                at.set(Some(probe.log_end_offset()));
            },
        )
        .await;
    (result, seen.get())
}

#[test]
fn the_signal_comes_once_the_offsets_are_given_and_on_every_way_out() {
    block_on(async {
        let fs = SimStorage::new(21);
        let log = open(&fs).await;
        for durability in [Durability::Written, Durability::Synced] {
            let (info, seen) = staged(&log, &build_batch(1, &[b"a", b"b"]), durability).await;
            let info = info.unwrap();
            assert_eq!(
                seen,
                Some(info.last_offset + 1),
                "signalled before the batch had its offsets"
            );
        }
        // Refused: no offsets, and the signal all the same.
        let (refused, seen) = staged(&log, b"not a batch", Durability::Written).await;
        assert!(refused.is_err());
        assert_eq!(seen, Some(log.log_end_offset()));
        // A duplicate keeps its original offsets: signalled too.
        let batch = build_batch_with_producer(1, &[b"x"], 7, 0, 0);
        let (first, _) = staged(&log, &batch, Durability::Written).await;
        let end = log.log_end_offset();
        let (again, seen) = staged(&log, &batch, Durability::Written).await;
        assert_eq!(again.unwrap().base_offset, first.unwrap().base_offset);
        assert_eq!(seen, Some(end), "a duplicate appends nothing");
    });
}
