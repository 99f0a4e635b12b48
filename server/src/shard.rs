//! A shard: one core's share of the broker.
//!
//! A shard owns the logs of the partitions placed on it (only it touches
//! them), holds a read-only `Arc<Metadata>` snapshot, and reaches the other
//! shards through a glommio channel mesh that carries *jobs*: `Send` closures
//! that build a (non-`Send`) future on the receiving shard. `run_on` sends a
//! job and awaits its reply over a oneshot channel; on the shard itself it
//! runs the closure directly.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use futures_channel::oneshot;
use glommio::channels::channel_mesh::Senders;
use kafka_protocol::ResponseError;
use strom_engine::notify::Notify;
use strom_engine::PartitionLog;
use thiserror::Error;
use uuid::Uuid;

use crate::config::{dynamic_topic_defaults, BrokerConfig};
use crate::conn_limits::ConnectionLimits;
use crate::frame_pool::FramePool;
use crate::metadata::{owner_shard, partition_dir, Metadata, INTERNAL_TOPICS};
use crate::request_budget::RequestBudget;

/// Work sent to another shard. Built on the sender, run on the receiver.
pub type Job = Box<dyn FnOnce(Rc<Shard>) -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// How long a cluster change waits for its metadata to reach the shard
/// after the controller applied it, and how often it looks.
const CLUSTER_PUBLISH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
const CLUSTER_PUBLISH_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Capacity of each shard-to-shard job queue.
pub const MESH_QUEUE_JOBS: usize = 1024;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ShardError {
    #[error("shard {0} is gone (shutting down)")]
    Gone(usize),
    #[error("metadata could not be persisted: {0}")]
    Persist(String),
    #[error("the controller did not apply the change: {0}")]
    Controller(String),
}

/// The logs of one topic that live on this shard.
struct TopicLogs {
    id: Uuid,
    partitions: HashMap<i32, PartitionLog>,
}

pub struct Shard {
    pub id: usize,
    pub shards: usize,
    pub config: Arc<BrokerConfig>,
    metadata: RefCell<Arc<Metadata>>,
    logs: RefCell<HashMap<String, TopicLogs>>,
    senders: Option<Senders<Job>>,
    /// Serializes metadata updates; used on shard 0 only.
    metadata_lock: glommio::sync::Semaphore,
    shutting_down: Cell<bool>,
    /// Woken once when shutdown starts.
    pub shutdown: Notify,
    /// Open client connections on this shard.
    pub connections: Cell<usize>,
    /// Warm buffers for large request frames.
    pub frames: FramePool,
    /// Bytes of requests in flight on this shard (`queued.max.request.bytes`).
    pub request_budget: Rc<RequestBudget>,
    /// Open connections of the whole broker, by client address.
    pub connection_limits: Arc<ConnectionLimits>,
}

impl Shard {
    pub fn new(
        id: usize,
        shards: usize,
        config: Arc<BrokerConfig>,
        senders: Option<Senders<Job>>,
        connection_limits: Arc<ConnectionLimits>,
    ) -> Shard {
        let request_budget = Rc::new(RequestBudget::new(config.queued_max_request_bytes));
        Shard {
            id,
            shards,
            config,
            metadata: RefCell::new(Arc::new(Metadata::new())),
            logs: RefCell::new(HashMap::new()),
            senders,
            metadata_lock: glommio::sync::Semaphore::new(1),
            shutting_down: Cell::new(false),
            shutdown: Notify::default(),
            connections: Cell::new(0),
            frames: FramePool::default(),
            request_budget,
            connection_limits,
        }
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Arc<Metadata> {
        self.metadata.borrow().clone()
    }

    pub fn owner(&self, topic: &str, partition: i32) -> usize {
        owner_shard(topic, partition, self.shards)
    }

    /// The log of a partition this shard owns, if it exists.
    pub fn log(&self, topic: &str, partition: i32) -> Option<PartitionLog> {
        self.logs
            .borrow()
            .get(topic)
            .and_then(|t| t.partitions.get(&partition).cloned())
    }

    /// The log of a partition this node serves to clients: in a cluster
    /// only while it leads the partition and is not fenced
    /// (NOT_LEADER_OR_FOLLOWER); UNKNOWN_TOPIC_OR_PARTITION when there is
    /// no such log. An internal topic's logs are served in a cluster only
    /// (to its followers, and to clients as Kafka does); a single node
    /// keeps them to its coordinator, as before they were registered here.
    pub fn served_log(&self, topic: &str, partition: i32) -> Result<PartitionLog, ResponseError> {
        let meta = self.metadata();
        if meta.cluster.is_none() && INTERNAL_TOPICS.contains(&topic) {
            return Err(ResponseError::UnknownTopicOrPartition);
        }
        crate::cluster::check_leader(&meta, self.config.node_id, topic, partition)?;
        self.log(topic, partition)
            .ok_or(ResponseError::UnknownTopicOrPartition)
    }

    /// Adds the logs of an internal topic opened by its coordinator
    /// (`__consumer_offsets`), so that replication, the log tick and the
    /// cleaner see them like any partition's. The shards' metadata does not
    /// list internal topics: `apply_metadata` leaves these logs alone.
    pub fn register_internal_logs(&self, topic: &str, logs: Vec<(i32, PartitionLog)>) {
        assert!(
            crate::metadata::INTERNAL_TOPICS.contains(&topic),
            "{topic} is not an internal topic"
        );
        let mut all = self.logs.borrow_mut();
        let entry = all.entry(topic.to_string()).or_insert_with(|| TopicLogs {
            id: Uuid::nil(),
            partitions: HashMap::new(),
        });
        entry.partitions.extend(logs);
    }

    /// Every log this shard owns, with its topic and partition.
    pub fn all_logs_named(&self) -> Vec<(String, i32, PartitionLog)> {
        self.logs
            .borrow()
            .iter()
            .flat_map(|(name, t)| {
                t.partitions
                    .iter()
                    .map(move |(p, log)| (name.clone(), *p, log.clone()))
            })
            .collect()
    }

    /// Every log this shard owns.
    pub fn all_logs(&self) -> Vec<PartitionLog> {
        self.logs
            .borrow()
            .values()
            .flat_map(|t| t.partitions.values().cloned())
            .collect()
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    pub fn begin_shutdown(&self) {
        if !self.shutting_down.replace(true) {
            self.shutdown.notify_all();
        }
    }

    /// Runs `f` on shard `target` and returns its result.
    pub async fn run_on<T, F, Fut>(self: &Rc<Self>, target: usize, f: F) -> Result<T, ShardError>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        if target == self.id {
            return Ok(f(self.clone()).await);
        }
        let Some(senders) = &self.senders else {
            return Err(ShardError::Gone(target));
        };
        let (tx, rx) = oneshot::channel();
        let sent = crate::stages::start();
        let job: Job = Box::new(move |shard| {
            Box::pin(async move {
                crate::stages::record(crate::stages::Stage::HopThere, sent);
                let out = f(shard).await;
                let _ = tx.send((out, crate::stages::start()));
            })
        });
        senders
            .send_to(target, job)
            .await
            .map_err(|_| ShardError::Gone(target))?;
        let (out, answered) = rx.await.map_err(|_| ShardError::Gone(target))?;
        crate::stages::record(crate::stages::Stage::HopBack, answered);
        Ok(out)
    }

    /// Applies `f` to a copy of the metadata on shard 0; when it changed,
    /// persists it and publishes it to every shard before returning. Updates
    /// are serialized, so `f` always sees the latest version.
    pub async fn update_metadata<R, F>(self: &Rc<Self>, f: F) -> Result<R, ShardError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Metadata) -> R + Send + 'static,
    {
        if let Some(controller) = crate::cluster::controller() {
            return self.update_cluster_metadata(controller, f).await;
        }
        self.run_on(0, move |shard| async move {
            shard.update_metadata_local(f).await
        })
        .await?
    }

    /// In a cluster: applies `f` to a copy of this shard's metadata and
    /// proposes the difference as records; returns once the controller has
    /// applied them and this shard has the metadata that includes them.
    async fn update_cluster_metadata<R, F>(
        self: &Rc<Self>,
        controller: &strom_controller::Controller,
        f: F,
    ) -> Result<R, ShardError>
    where
        F: FnOnce(&mut Metadata) -> R,
    {
        let current = self.metadata();
        let mut next = (*current).clone();
        let out = f(&mut next);
        if next.topics == current.topics && next.broker_configs == current.broker_configs {
            return Ok(out);
        }
        let image = controller.image();
        let records =
            crate::cluster::records_for_change(&current, &next, &image, self.config.node_id);
        let index = match controller.propose(records).await {
            Ok(Ok(index)) => index,
            Ok(Err(e)) => return Err(ShardError::Controller(e.to_string())),
            Err(_) => return Err(ShardError::Controller("the controller stopped".into())),
        };
        // The image is published before the proposer hears back; shard 0
        // hands it to every shard soon after.
        let deadline = std::time::Instant::now()
            .checked_add(CLUSTER_PUBLISH_WAIT)
            .unwrap_or_else(std::time::Instant::now);
        while self.metadata().version < index {
            if std::time::Instant::now() >= deadline {
                return Err(ShardError::Controller(format!(
                    "metadata at index {index} did not reach this shard in {CLUSTER_PUBLISH_WAIT:?}"
                )));
            }
            glommio::timer::sleep(CLUSTER_PUBLISH_POLL).await;
        }
        Ok(out)
    }

    async fn update_metadata_local<R, F>(self: &Rc<Self>, f: F) -> Result<R, ShardError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Metadata) -> R,
    {
        assert_eq!(
            self.id, 0,
            "metadata updates are serialized through shard 0"
        );
        let _permit = self
            .metadata_lock
            .acquire_permit(1)
            .await
            .map_err(|_| ShardError::Gone(0))?;
        let current = self.metadata();
        let mut next = (*current).clone();
        let out = f(&mut next);
        if next != *current {
            next.version = current.version.saturating_add(1);
            next.persist(&self.config.data_dir)
                .map_err(|e| ShardError::Persist(e.to_string()))?;
            let next = Arc::new(next);
            for target in 0..self.shards {
                let snapshot = next.clone();
                self.run_on(target, move |shard| async move {
                    shard.apply_metadata(snapshot).await
                })
                .await?;
            }
        }
        Ok(out)
    }

    /// Makes this shard's logs match `next` (delete logs of removed topics,
    /// open logs of new partitions, push config changes), then installs it.
    pub async fn apply_metadata(&self, next: Arc<Metadata>) {
        let previous = self.metadata();
        // Deletions first, so a topic deleted and re-created under the same
        // name starts from an empty directory.
        let removed: Vec<(String, Vec<PartitionLog>)> = {
            let mut logs = self.logs.borrow_mut();
            let gone: Vec<String> = logs
                .iter()
                .filter(|(name, _)| !INTERNAL_TOPICS.contains(&name.as_str()))
                .filter(|(name, t)| next.topics.get(*name).map(|m| m.id) != Some(t.id))
                .map(|(name, _)| name.clone())
                .collect();
            gone.into_iter()
                .filter_map(|name| {
                    logs.remove(&name)
                        .map(|t| (name, t.partitions.into_values().collect()))
                })
                .collect()
        };
        for (name, logs) in removed {
            for log in logs {
                if let Err(e) = log.delete().await {
                    tracing::warn!(topic = %name, dir = %log.dir().display(), "deleting log failed: {e}");
                }
            }
        }
        let dynamic = dynamic_topic_defaults(&next.broker_configs, self.config.node_id);
        let dynamic_changed = previous.broker_configs != next.broker_configs;
        for (name, topic) in &next.topics {
            let is_new_topic = previous.topics.get(name).map(|t| t.id) != Some(topic.id);
            let log_config = self.config.log_config_with(&dynamic, &topic.configs);
            for p in 0..topic.partitions {
                if self.owner(name, p) != self.id
                    || self.log(name, p).is_some()
                    || !crate::cluster::holds_replica(&next, self.config.node_id, name, p)
                {
                    continue;
                }
                let dir = partition_dir(&self.config.data_dir, name, p);
                if is_new_topic && previous.version > 0 {
                    // A created topic never inherits files of an older topic
                    // with the same name (crash between metadata and delete).
                    let doomed = dir.clone();
                    let _ = off_the_shard(move || std::fs::remove_dir_all(doomed)).await;
                }
                match PartitionLog::open(&dir, log_config.clone()).await {
                    Ok(log) => {
                        let mut logs = self.logs.borrow_mut();
                        let entry = logs.entry(name.clone()).or_insert_with(|| TopicLogs {
                            id: topic.id,
                            partitions: HashMap::new(),
                        });
                        entry.partitions.insert(p, log);
                    }
                    Err(e) => {
                        tracing::error!(topic = %name, partition = p, "opening log failed: {e}")
                    }
                }
            }
            if dynamic_changed
                || previous.topics.get(name).map(|t| &t.configs) != Some(&topic.configs)
            {
                if let Some(t) = self.logs.borrow().get(name) {
                    for log in t.partitions.values() {
                        log.set_config(log_config.clone());
                    }
                }
            }
        }
        self.apply_leadership(&next).await;
        *self.metadata.borrow_mut() = next;
    }

    /// Tells each log whether this node leads it and at which epoch, before
    /// the metadata that says so is installed: every client batch the log
    /// appends under that metadata carries the epoch. A new epoch costs a
    /// checkpoint write per partition, so they run concurrently (a topic
    /// created with many partitions on this shard waits for one round).
    async fn apply_leadership(&self, next: &Metadata) {
        let logs = self.all_logs_named();
        let mut becoming = Vec::new();
        for (name, p, log) in logs {
            if next.cluster.is_none() && INTERNAL_TOPICS.contains(&name.as_str()) {
                // On one node the coordinator's logs stay as they were
                // before they were registered here: no leader epochs.
                continue;
            }
            if leads_alone(next, self.config.node_id, &name, p) {
                log.clear_high_watermark();
            }
            match crate::cluster::led_at_epoch(next, self.config.node_id, &name, p) {
                Some(epoch) if log.leader_epoch() != Some(epoch) => {
                    becoming.push((name, p, log, epoch));
                }
                Some(_) => {}
                None => log.resign_leadership(),
            }
        }
        let records = becoming.into_iter().map(|(name, p, log, epoch)| async move {
            match log.become_leader(epoch).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(topic = %name, partition = p, epoch, latest = ?log.leader_epochs().latest_epoch(), "metadata names a leader epoch older than the log's; not stamped")
                }
                Err(e) => {
                    tracing::error!(topic = %name, partition = p, epoch, "recording the leader epoch failed: {e}")
                }
            }
        });
        futures_util::future::join_all(records).await;
    }

    /// Starts a follower replica again, empty, at `offset`: its log ended
    /// below its leader's log start (retention or DeleteRecords ran while
    /// it was away), so nothing it holds can be continued (Kafka's
    /// `truncateFullyAndStartAt`). Returns the new log.
    ///
    /// The new log is made in a directory beside the partition's, the old
    /// one deleted, and the new one renamed into its place. The old log
    /// stays in this shard's map, closed, until the new one replaces it, so
    /// no metadata change opens another log in the directory meanwhile. A
    /// crash in between leaves no directory or an empty one: the replica
    /// starts at 0, is refused again, and starts again here.
    pub async fn start_replica_again_at(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> anyhow::Result<PartitionLog> {
        let old = self
            .log(topic, partition)
            .ok_or_else(|| anyhow::anyhow!("{topic}-{partition} has no log here"))?;
        let config = old.config();
        let dir = partition_dir(&self.config.data_dir, topic, partition);
        let fresh = dir.with_extension("restart");
        let doomed = fresh.clone();
        let _ = off_the_shard(move || std::fs::remove_dir_all(doomed)).await;
        PartitionLog::create_empty_at(&fresh, config.clone(), offset)
            .await?
            .close()
            .await?;
        old.delete().await?;
        let (from, to) = (fresh.clone(), dir.clone());
        off_the_shard(move || {
            std::fs::rename(&from, &to)?;
            if let Some(parent) = to.parent() {
                std::fs::File::open(parent)?.sync_all()?;
            }
            Ok(())
        })
        .await?;
        let log = PartitionLog::open(&dir, config).await?;
        if let Some(t) = self.logs.borrow_mut().get_mut(topic) {
            t.partitions.insert(partition, log.clone());
        }
        tracing::warn!(
            topic,
            partition,
            offset,
            "follower replica started again, empty, at its leader's log start"
        );
        Ok(log)
    }

    /// Flushes and closes every log of this shard (clean-shutdown marker).
    pub async fn close_all_logs(&self) {
        let logs: Vec<(String, HashMap<i32, PartitionLog>)> = self
            .logs
            .borrow_mut()
            .drain()
            .map(|(name, t)| (name, t.partitions))
            .collect();
        for (name, partitions) in logs {
            for (p, log) in partitions {
                if let Err(e) = log.close().await {
                    tracing::error!(topic = %name, partition = p, "closing log failed: {e}");
                }
            }
        }
    }
}

/// Whether this node leads partition `p` with an ISR of itself alone (or
/// on one node): its reads are bounded by its written offset, as on one
/// node, not by a replicated high watermark.
fn leads_alone(meta: &Metadata, node_id: i32, topic: &str, p: i32) -> bool {
    crate::cluster::led_at_epoch(meta, node_id, topic, p).is_some()
        && crate::cluster::partition_state(meta, topic, p)
            .is_none_or(|s| s.isr.as_slice() == [node_id])
}

/// Runs blocking file system work (deleting a tree, renaming and syncing a
/// directory) on glommio's blocking pool, so the shard's other requests do
/// not wait for the device meanwhile (on a `discard`-mounted disk, freeing
/// blocks waits for it).
async fn off_the_shard<R: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<R> + Send + 'static,
) -> std::io::Result<R> {
    glommio::executor().spawn_blocking(f).await
}
