//! The `_schemas` topic as the registry's store: it creates the topic,
//! reads it to the end at start and after each write, and applies every
//! record to the in-memory `State`. A write is done when the registry has
//! read it back, so what it answers is always what the log says.
//!
//! On a single node the registry's own broker holds the topic. In a
//! cluster the store asks its own broker (Metadata) which broker leads
//! partition 0 and reads from (and, on the writer, appends to) that one;
//! it asks again before each read to the end, so it follows leadership.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::client::{ClientError, Fetched, KafkaClient, Leader};
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
    /// The registry's own broker: CreateTopics and, in a cluster, Metadata.
    bootstrap: KafkaClient,
    /// The leader of `_schemas` partition 0 (the own broker on a single
    /// node): Fetch and Produce.
    client: KafkaClient,
    /// In a cluster the leader is looked up; on one node it is the own broker.
    in_cluster: bool,
    /// The leader as last looked up (in a cluster).
    pub leader: Option<Leader>,
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
    /// missing and reads it to the end (from its leader, `in_cluster`).
    pub async fn open(
        broker_addr: String,
        ids: SchemaIds,
        in_cluster: bool,
    ) -> Result<Store, ClientError> {
        let mut store = Store {
            bootstrap: KafkaClient::new(broker_addr.clone()),
            client: KafkaClient::new(broker_addr),
            in_cluster,
            leader: None,
            state: State::default(),
            next_offset: 0,
            ids,
        };
        store.bootstrap.ensure_topic(TOPIC, TOPIC_CONFIGS).await?;
        store.catch_up(0).await?;
        Ok(store)
    }

    /// The offset of the next record to read.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// Asks the own broker which broker leads `_schemas` partition 0 and
    /// points reads and appends at it.
    pub async fn locate(&mut self) -> Result<Leader, ClientError> {
        let leader = self.bootstrap.leader(TOPIC).await?;
        if let Some(addr) = &leader.addr {
            self.client.set_addr(addr);
        }
        self.leader = Some(leader.clone());
        Ok(leader)
    }

    /// Applies what one Fetch from `next_offset` returned; true when it
    /// moved `next_offset`.
    pub fn apply_fetched(&mut self, fetched: &Fetched) -> bool {
        let before = self.next_offset;
        for r in &fetched.records {
            self.next_offset = r.offset.saturating_add(1);
            let Some(key) = &r.key else { continue };
            match decode(key, r.value.as_deref()) {
                Ok(record) => self.state.apply(record),
                Err(why) => {
                    tracing::warn!(offset = r.offset, %why, "skipping a _schemas record")
                }
            }
        }
        // Nothing readable at or after `next_offset` below the high
        // watermark: a compacted log has gaps, and its end is the mark.
        if fetched.records.is_empty() {
            self.next_offset = self.next_offset.max(fetched.high_watermark);
        }
        let moved = self.next_offset != before;
        if moved {
            self.publish_ids();
        }
        moved
    }

    /// Reads and applies records until the end of the log, and at least
    /// up to (not including) `until`.
    pub async fn catch_up(&mut self, until: i64) -> Result<(), ClientError> {
        if self.in_cluster {
            let leader = self.locate().await?;
            if leader.addr.is_none() {
                return Err(ClientError::NoLeader);
            }
        }
        let started = Instant::now();
        loop {
            let fetched = self.client.fetch(TOPIC, self.next_offset).await?;
            let progressed = !fetched.records.is_empty();
            self.apply_fetched(&fetched);
            if progressed && self.next_offset < fetched.high_watermark {
                continue;
            }
            if self.next_offset >= fetched.high_watermark && self.next_offset >= until {
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
