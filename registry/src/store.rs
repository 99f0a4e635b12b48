//! The `_schemas` topic as the registry's store: it creates the topic,
//! reads it to the end at start and after each write, and applies every
//! record to the in-memory `State`. A write is done when the registry has
//! read it back, so what it answers is always what the log says.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::{ClientError, KafkaClient};
use crate::log_format::{decode, Entry};
use crate::state::State;
use crate::SchemaIds;

pub const TOPIC: &str = "_schemas";
/// The topic's configs: compacted, so it keeps the last record per key.
const TOPIC_CONFIGS: &[(&str, &str)] = &[("cleanup.policy", "compact")];
/// How long reading back a write may take before it is a store error.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause between reads while a write is not yet readable.
const READ_BACK_POLL: Duration = Duration::from_millis(5);

pub struct Store {
    client: KafkaClient,
    pub state: State,
    /// The offset of the next record to read.
    next_offset: i64,
    /// Published after each read that applied records.
    ids: SchemaIds,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Store {
    /// Connects to the broker at `broker_addr`, creates `_schemas` if it is
    /// missing and reads it to the end.
    pub async fn open(broker_addr: String, ids: SchemaIds) -> Result<Store, ClientError> {
        let mut store = Store {
            client: KafkaClient::new(broker_addr),
            state: State::default(),
            next_offset: 0,
            ids,
        };
        store.client.ensure_topic(TOPIC, TOPIC_CONFIGS).await?;
        store.catch_up(0).await?;
        Ok(store)
    }

    /// Reads and applies records until the end of the log, and at least
    /// up to (not including) `until`.
    pub async fn catch_up(&mut self, until: i64) -> Result<(), ClientError> {
        let started = Instant::now();
        let mut applied = false;
        loop {
            let fetched = self.client.fetch(TOPIC, self.next_offset).await?;
            let progressed = !fetched.records.is_empty();
            applied |= progressed;
            for r in fetched.records {
                self.next_offset = r.offset.saturating_add(1);
                let Some(key) = r.key else { continue };
                match decode(&key, r.value.as_deref()) {
                    Ok(record) => self.state.apply(record),
                    Err(why) => {
                        tracing::warn!(offset = r.offset, %why, "skipping a _schemas record")
                    }
                }
            }
            if progressed && self.next_offset < fetched.high_watermark {
                continue;
            }
            // Nothing readable at or after `next_offset` below the high
            // watermark: a compacted log has gaps, and its end is the mark.
            if !progressed {
                self.next_offset = self.next_offset.max(fetched.high_watermark);
            }
            if self.next_offset >= fetched.high_watermark && self.next_offset >= until {
                if applied {
                    self.publish_ids();
                }
                return Ok(());
            }
            if started.elapsed() >= READ_BACK_TIMEOUT {
                return Err(ClientError::Timeout(READ_BACK_TIMEOUT));
            }
            tokio::time::sleep(READ_BACK_POLL).await;
        }
    }

    fn publish_ids(&self) {
        let ids = self.state.live_ids();
        // A poisoned lock only means a reader panicked while holding it;
        // the map itself is replaced whole, so it is never half-written.
        match self.ids.write() {
            Ok(mut guard) => *guard = ids,
            Err(poisoned) => *poisoned.into_inner() = ids,
        }
    }

    /// Appends `entries` as one batch and reads them back.
    pub async fn append(&mut self, entries: &[Entry]) -> Result<(), ClientError> {
        let records: Vec<_> = entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        let base = self.client.produce(TOPIC, &records, now_ms()).await?;
        let count = i64::try_from(entries.len()).unwrap_or(i64::MAX);
        self.catch_up(base.saturating_add(count)).await
    }
}
