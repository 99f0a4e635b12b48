//! The log cleaner of one shard: Kafka's cleaner threads are Strom's
//! shards. Every `log.cleaner.backoff.ms`, the shard's compacted logs (its
//! topics' and its `__consumer_offsets` partitions) are offered to the
//! engine's cleaner (`strom_engine::log::clean`), one at a time, in a task
//! queue of their own with a tenth of the default queue's shares: the
//! cleaner gives the thread back at least every [`CLEANER_SLICE`] (so
//! connections' I/O is reaped and served in between), and the pacer holds
//! its reads and writes to `log.cleaner.io.max.bytes.per.second`.

use std::rc::Rc;
use std::time::{Duration, Instant};

use strom_engine::config::CleanerConfig;
use strom_engine::log::Pacer;

use crate::shard::Shard;

/// The longest the cleaner holds the shard's thread before it yields its
/// task queue (glommio's own preemption comes only every 100 ms, see
/// `strom_engine::EXECUTOR_PREEMPT_TIMER`, far too long for produce
/// latency).
const CLEANER_SLICE: Duration = Duration::from_micros(500);

/// The cleaner's task queue's shares (the default queue has 1000).
const CLEANER_SHARES: usize = 100;

/// Holds the cleaner's I/O to a rate and yields to the shard's other tasks
/// every [`CLEANER_SLICE`].
struct Throttle {
    bytes_per_second: f64,
    started: Instant,
    bytes: f64,
    last_yield: Instant,
}

impl Throttle {
    fn new(bytes_per_second: f64) -> Throttle {
        Throttle {
            bytes_per_second,
            started: Instant::now(),
            bytes: 0.0,
            last_yield: Instant::now(),
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
        self.breathe().await;
    }

    async fn breathe(&mut self) {
        if self.last_yield.elapsed() >= CLEANER_SLICE {
            glommio::executor().yield_task_queue_now().await;
            self.last_yield = Instant::now();
        }
    }
}

/// Starts the shard's cleaner in a task queue of its own.
pub fn spawn(shard: Rc<Shard>) {
    let queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(CLEANER_SHARES),
        glommio::Latency::NotImportant,
        "log-cleaner",
    );
    match glommio::spawn_local_into(cleaner_loop(shard.clone()), queue) {
        Ok(task) => {
            task.detach();
        }
        Err(e) => tracing::error!(shard = shard.id, "starting the log cleaner failed: {e}"),
    }
}

/// The shard's cleaner: runs until the shard shuts down.
async fn cleaner_loop(shard: Rc<Shard>) {
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
        // The `__consumer_offsets` logs are among them (compact-only).
        let logs = shard.all_logs();
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
