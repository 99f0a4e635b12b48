//! The clock reads behind the server's stage breakdown (`time_waits`): off
//! by default, so an append's `waited` stays zero and no wake of the log's
//! readers is stamped; once a thread turns them on, its logs fill both.

use std::time::Duration;

use futures_lite::future::block_on;
use strom_engine::batch::build_batch;
use strom_engine::io::sim::SimStorage;
use strom_engine::{time_waits, AppendWaits, Durability, LogConfig, PartitionLog};

#[test]
fn appends_time_their_waits_only_where_asked() {
    block_on(async {
        let fs = SimStorage::new(7);
        let log = PartitionLog::open_with(fs.clone(), "/sim/timed-0", LogConfig::default())
            .await
            .unwrap();
        let batch = build_batch(1_000, &[b"untimed"]);
        let info = log
            .append(&batch, Durability::Written, 2_000)
            .await
            .unwrap();
        assert_eq!(info.waited, AppendWaits::default());
        assert_eq!(log.readers_woken_at(), None);

        time_waits(true);
        let batch = build_batch(1_001, &[b"timed"]);
        let info = log.append(&batch, Durability::Written, 2_001).await;
        time_waits(false);
        let info = info.unwrap();
        assert!(
            info.waited.durable > Duration::ZERO,
            "a timed append reports no wait: {:?}",
            info.waited
        );
        assert!(
            log.readers_woken_at().is_some(),
            "a timed write did not stamp the wake of its readers"
        );
    });
}
