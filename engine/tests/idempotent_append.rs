//! The log's idempotent-producer behaviour through its public API.

use strom_engine::batch::{build_batch, build_batch_with_producer};
use strom_engine::producer_state::ProducerError;
use strom_engine::{Durability, EngineError, LogConfig, PartitionLog};

fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn retried_batch_is_answered_with_its_original_offsets_and_not_appended() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t-0");
    run(move || async move {
        let log = PartitionLog::open(&path, LogConfig::default())
            .await
            .unwrap();
        log.append(&build_batch(1, &[b"plain"]), Durability::Synced, 0)
            .await
            .unwrap();
        let b0 = build_batch_with_producer(10, &[b"a", b"b"], 7, 0, 0);
        let b1 = build_batch_with_producer(11, &[b"c"], 7, 0, 2);
        let first = log.append(&b0, Durability::Synced, 0).await.unwrap();
        assert_eq!((first.base_offset, first.last_offset), (1, 2));
        log.append(&b1, Durability::Written, 0).await.unwrap();
        assert_eq!(log.log_end_offset(), 4);

        for durability in [Durability::Written, Durability::Synced] {
            let again = log.append(&b0, durability, 0).await.unwrap();
            assert_eq!((again.base_offset, again.last_offset), (1, 2));
            assert_eq!(again.log_append_time_ms, -1);
        }
        assert_eq!(log.log_end_offset(), 4, "a duplicate appends nothing");

        let gap = build_batch_with_producer(12, &[b"d"], 7, 0, 5);
        match log.append(&gap, Durability::Synced, 0).await {
            Err(EngineError::Producer(ProducerError::OutOfOrderSequence {
                expected: 3, ..
            })) => {}
            other => panic!("gap accepted: {other:?}"),
        }
        let bumped = build_batch_with_producer(13, &[b"e"], 7, 1, 0);
        assert_eq!(
            log.append(&bumped, Durability::Synced, 0)
                .await
                .unwrap()
                .base_offset,
            4
        );
        let stale = build_batch_with_producer(14, &[b"f"], 7, 0, 3);
        match log.append(&stale, Durability::Synced, 0).await {
            Err(EngineError::Producer(ProducerError::InvalidProducerEpoch {
                current_epoch: 1,
                ..
            })) => {}
            other => panic!("stale epoch accepted: {other:?}"),
        }
        let unknown = build_batch_with_producer(15, &[b"g"], 8, 0, 9);
        match log.append(&unknown, Durability::Synced, 0).await {
            Err(EngineError::Producer(ProducerError::UnknownProducerId {
                producer_id: 8, ..
            })) => {}
            other => panic!("unknown producer mid-sequence accepted: {other:?}"),
        }
        assert_eq!(log.log_end_offset(), 5);
        let read = log.read(0, 1 << 20).await.unwrap();
        assert_eq!(read.batches.len(), 4);
        log.close().await.unwrap();
    });
}
