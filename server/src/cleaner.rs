//! The log cleaner of one shard: Kafka's cleaner threads are Strom's
//! shards. Every `log.cleaner.backoff.ms`, the shard's compacted logs (its
//! topics' and its `__consumer_offsets` partitions) are offered to the
//! engine's cleaner (`strom_engine::log::clean`), one at a time, in a task
//! of their own: the data path runs between the cleaner's reads and writes,
//! whose rate the pacer holds to `log.cleaner.io.max.bytes.per.second`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use strom_engine::config::CleanerConfig;
use strom_engine::log::Pacer;

use crate::shard::Shard;

/// Holds the cleaner's I/O to a rate and yields to the shard's other tasks
/// after each read or write.
struct Throttle {
    bytes_per_second: f64,
    started: Instant,
    bytes: f64,
}

impl Throttle {
    fn new(bytes_per_second: f64) -> Throttle {
        Throttle {
            bytes_per_second,
            started: Instant::now(),
            bytes: 0.0,
        }
    }
}

impl Pacer for Throttle {
    async fn pace(&mut self, bytes: u64) {
        self.bytes += bytes as f64;
        if self.bytes_per_second.is_finite() && self.bytes_per_second > 0.0 {
            let due = Duration::from_secs_f64((self.bytes / self.bytes_per_second).min(3600.0));
            let elapsed = self.started.elapsed();
            if let Some(wait) = due.checked_sub(elapsed) {
                glommio::timer::sleep(wait).await;
            }
            // Forget the past now and then, so an idle spell is no credit.
            if elapsed > Duration::from_secs(1) {
                self.started = Instant::now();
                self.bytes = 0.0;
            }
        }
        glommio::yield_if_needed().await;
    }
}

/// The shard's cleaner: runs until the shard shuts down.
pub async fn cleaner_loop(shard: Rc<Shard>) {
    let config: CleanerConfig = shard.config.cleaner.clone();
    if !config.enable {
        return;
    }
    // The dedupe buffer is the broker's; each shard cleans with its share.
    let shards = u64::try_from(shard.shards.max(1)).unwrap_or(1);
    let per_shard = CleanerConfig {
        dedupe_buffer_bytes: config.dedupe_buffer_bytes.checked_div(shards).unwrap_or(0),
        io_max_bytes_per_second: config.io_max_bytes_per_second / shards as f64,
        ..config
    };
    while !shard.is_shutting_down() {
        let woken = futures_lite::future::or(
            async {
                glommio::timer::sleep(Duration::from_millis(per_shard.backoff_ms)).await;
                false
            },
            async {
                shard.shutdown.notified().await;
                true
            },
        )
        .await;
        if woken || shard.is_shutting_down() {
            break;
        }
        let mut logs = shard.all_logs();
        if let Some(coordinator) = crate::coordinators::local() {
            logs.extend(coordinator.logs());
        }
        for log in logs {
            if shard.is_shutting_down() {
                break;
            }
            if !log.compacted() {
                continue;
            }
            let mut throttle = Throttle::new(per_shard.io_max_bytes_per_second);
            match log
                .clean(crate::clock::now_ms(), &per_shard, &mut throttle)
                .await
            {
                Ok(Some(stats)) => tracing::info!(
                    dir = %log.dir().display(),
                    bytes_before = stats.bytes_before,
                    bytes_after = stats.bytes_after,
                    segments_before = stats.segments_before,
                    segments_after = stats.segments_after,
                    records_removed = stats.records_removed,
                    "log cleaned"
                ),
                Ok(None) => {}
                Err(e) => tracing::warn!(dir = %log.dir().display(), "log clean failed: {e}"),
            }
        }
    }
}
