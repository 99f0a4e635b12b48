//! The controller thread: drives raft-rs's `RawNode` (ticks, messages,
//! proposals, `Ready` handling), applies committed batches to the
//! `ClusterImage`, publishes each new image and answers proposers.
//!
//! Nothing here runs on a shard: the thread blocks on its inbox and on
//! fsync as it likes. Brokers talk to it through [`Controller`], a `Send`
//! handle whose proposals answer on a oneshot channel a glommio task can
//! await.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_channel::oneshot;
use raft::eraftpb::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use thiserror::Error;
use uuid::Uuid;

use crate::image::{ApplyError, ClusterImage};
use crate::net::Network;
use crate::records::{Batch, Origin, Record};
use crate::storage::{DiskStorage, StoreError};

/// How often raft-rs is ticked.
pub const TICK_MS: u64 = 100;
/// Ticks without a leader's word before a follower campaigns (1 s, Kafka's
/// `controller.quorum.election.timeout.ms`); raft-rs randomizes it up to 2x.
pub const ELECTION_TICKS: usize = 10;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 1;
/// Applied entries past the last snapshot before a new one is taken.
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 1000;
/// How long a proposal waits to be applied before its caller gives up.
pub const PROPOSAL_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a node re-proposes its registration or the cluster id while
/// they are missing from the image.
const SELF_PROPOSAL_RETRY: Duration = Duration::from_secs(2);

/// This node as a broker, registered in the metadata.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: u64,
    /// Every voter: `(node id, "host:port")`, this node included.
    pub voters: Vec<(u64, String)>,
    /// Where this node listens for its peers.
    pub listen: String,
    /// `<data-dir>/__cluster_metadata`.
    pub dir: PathBuf,
    /// Registered in the metadata when set (`process.roles` has `broker`).
    pub broker: Option<BrokerInfo>,
    /// The cluster id this node proposes if it is the first leader.
    pub cluster_id_candidate: String,
    pub snapshot_every_entries: u64,
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error("controller listen address {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("controller snapshot holds no valid image: {0}")]
    Snapshot(serde_json::Error),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("starting the controller thread: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ProposeError {
    #[error("no active controller is known")]
    NoLeader,
    #[error("the controller rejected the change: {0}")]
    Rejected(ApplyError),
    #[error("the change was not applied within {0:?}")]
    TimedOut(Duration),
    #[error("the controller has stopped")]
    Stopped,
}

/// The answer to a proposal: the Raft index it was applied at.
pub type ProposeResult = Result<u64, ProposeError>;

enum Input {
    Raft(Message),
    Propose {
        records: Vec<Record>,
        reply: oneshot::Sender<ProposeResult>,
    },
}

/// Receives every new image, on the controller thread.
pub type Publish = Box<dyn Fn(Arc<ClusterImage>) + Send>;

/// A handle on the controller thread.
pub struct Controller {
    inbox: Mutex<Sender<Input>>,
    leader_id: Arc<AtomicU64>,
    image: Arc<Mutex<Arc<ClusterImage>>>,
    pub node_id: u64,
}

impl Controller {
    /// Opens the log, binds the listener and starts the thread.
    pub fn start(config: ControllerConfig, publish: Publish) -> Result<Controller, StartError> {
        let voter_ids: Vec<u64> = config.voters.iter().map(|(id, _)| *id).collect();
        let storage = DiskStorage::open(&config.dir, &voter_ids)?;
        let snapshot = storage.stored_snapshot();
        let image: ClusterImage = if snapshot.get_metadata().index > 0 {
            serde_json::from_slice(snapshot.get_data()).map_err(StartError::Snapshot)?
        } else {
            ClusterImage::default()
        };
        let raft_config = raft::Config {
            id: config.node_id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied: image.applied_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(crate::log::TracingDrain, slog::o!());
        let node = RawNode::new(&raft_config, storage, &logger)?;

        let listener = TcpListener::bind(&config.listen).map_err(|source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        let (tx, rx) = channel::<Input>();
        let deliver_tx = Mutex::new(tx.clone());
        let deliver: crate::net::Deliver = Arc::new(move |m| {
            deliver_tx
                .lock()
                .map(|tx| tx.send(Input::Raft(m)).is_ok())
                .unwrap_or(false)
        });
        let peers: Vec<(u64, String)> = config
            .voters
            .iter()
            .filter(|(id, _)| *id != config.node_id)
            .cloned()
            .collect();
        let network = Network::start(listener, &peers, deliver).map_err(StartError::Thread)?;

        let leader_id = Arc::new(AtomicU64::new(0));
        let shared_image = Arc::new(Mutex::new(Arc::new(image.clone())));
        publish(Arc::new(image.clone()));
        let mut driver = Driver {
            node,
            network,
            image,
            config: config.clone(),
            publish,
            pending: HashMap::new(),
            next_request: 0,
            incarnation_id: Uuid::new_v4(),
            last_registration: None,
            last_cluster_id: None,
            leader_id: leader_id.clone(),
            shared_image: shared_image.clone(),
        };
        std::thread::Builder::new()
            .name("strom-controller".into())
            .spawn(move || {
                if let Err(e) = driver.run(rx) {
                    // The metadata log can no longer be written or read:
                    // a node that goes on would serve stale metadata.
                    tracing::error!("controller failed: {e}; stopping the process");
                    std::process::exit(1);
                }
            })
            .map_err(StartError::Thread)?;
        Ok(Controller {
            inbox: Mutex::new(tx),
            leader_id,
            image: shared_image,
            node_id: config.node_id,
        })
    }

    /// Proposes a batch; the receiver answers once it is applied here.
    pub fn propose(&self, records: Vec<Record>) -> oneshot::Receiver<ProposeResult> {
        let (reply, rx) = oneshot::channel();
        if let Ok(inbox) = self.inbox.lock() {
            // A send to a stopped controller drops `reply`: the caller
            // sees the channel cancelled.
            let _ = inbox.send(Input::Propose { records, reply });
        }
        rx
    }

    /// The active controller, as this node knows it.
    pub fn leader_id(&self) -> Option<u64> {
        match self.leader_id.load(Ordering::SeqCst) {
            0 => None,
            id => Some(id),
        }
    }

    /// The latest applied image.
    pub fn image(&self) -> Arc<ClusterImage> {
        self.image
            .lock()
            .map(|i| i.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

struct Pending {
    reply: oneshot::Sender<ProposeResult>,
    deadline: Instant,
}

struct Driver {
    node: RawNode<DiskStorage>,
    network: Network,
    image: ClusterImage,
    config: ControllerConfig,
    publish: Publish,
    pending: HashMap<u64, Pending>,
    next_request: u64,
    incarnation_id: Uuid,
    last_registration: Option<Instant>,
    last_cluster_id: Option<Instant>,
    leader_id: Arc<AtomicU64>,
    shared_image: Arc<Mutex<Arc<ClusterImage>>>,
}

impl Driver {
    fn run(&mut self, inbox: Receiver<Input>) -> Result<(), StoreError> {
        let tick = Duration::from_millis(TICK_MS);
        let mut next_tick = Instant::now();
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            match inbox.recv_timeout(wait) {
                Ok(input) => self.take(input),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            }
            // Whatever else arrived meanwhile, before one Ready for all.
            while let Ok(input) = inbox.try_recv() {
                self.take(input);
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now().checked_add(tick).unwrap_or(next_tick);
                self.propose_own_records();
                self.expire_pending();
            }
            if self.node.has_ready() {
                self.on_ready()?;
            }
            self.leader_id
                .store(self.node.raft.leader_id, Ordering::SeqCst);
        }
    }

    fn take(&mut self, input: Input) {
        match input {
            Input::Raft(m) => {
                if let Err(e) = self.node.step(m) {
                    tracing::debug!("raft message ignored: {e}");
                }
            }
            Input::Propose { records, reply } => {
                self.next_request = self.next_request.wrapping_add(1);
                let request_id = self.next_request;
                let batch = Batch {
                    origin: Some(Origin {
                        node_id: self.config.node_id,
                        request_id,
                    }),
                    records,
                };
                if self.node.raft.leader_id == 0 {
                    let _ = reply.send(Err(ProposeError::NoLeader));
                    return;
                }
                if self.node.propose(Vec::new(), batch.encode()).is_err() {
                    let _ = reply.send(Err(ProposeError::NoLeader));
                    return;
                }
                let deadline = Instant::now()
                    .checked_add(PROPOSAL_TIMEOUT)
                    .unwrap_or_else(Instant::now);
                self.pending.insert(request_id, Pending { reply, deadline });
            }
        }
    }

    /// The leader sets the cluster id once; every broker node registers
    /// itself until its incarnation is in the image.
    fn propose_own_records(&mut self) {
        let due = |last: Option<Instant>| last.is_none_or(|t| t.elapsed() >= SELF_PROPOSAL_RETRY);
        if self.node.raft.state == StateRole::Leader
            && self.image.cluster_id.is_none()
            && due(self.last_cluster_id)
        {
            self.last_cluster_id = Some(Instant::now());
            let batch = Batch {
                origin: None,
                records: vec![Record::ClusterId {
                    cluster_id: self.config.cluster_id_candidate.clone(),
                }],
            };
            let _ = self.node.propose(Vec::new(), batch.encode());
        }
        let Some(broker) = &self.config.broker else {
            return;
        };
        let broker_id = i32::try_from(self.config.node_id).unwrap_or(i32::MAX);
        let registered = self
            .image
            .brokers
            .get(&broker_id)
            .is_some_and(|b| b.incarnation_id == self.incarnation_id);
        if !registered && self.node.raft.leader_id != 0 && due(self.last_registration) {
            self.last_registration = Some(Instant::now());
            let batch = Batch {
                origin: None,
                records: vec![Record::RegisterBroker {
                    broker_id,
                    incarnation_id: self.incarnation_id,
                    host: broker.host.clone(),
                    port: broker.port,
                    rack: None,
                    // No heartbeats yet: a registered broker is unfenced.
                    fenced: false,
                }],
            };
            let _ = self.node.propose(Vec::new(), batch.encode());
        }
    }

    fn expire_pending(&mut self) {
        let now = Instant::now();
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                let _ = p.reply.send(Err(ProposeError::TimedOut(PROPOSAL_TIMEOUT)));
            }
        }
    }

    fn on_ready(&mut self) -> Result<(), StoreError> {
        let mut ready = self.node.ready();
        self.network.send(ready.take_messages());
        let mut answers = Vec::new();
        let mut changed = false;
        if !ready.snapshot().is_empty() {
            let snapshot = ready.snapshot().clone();
            let image: ClusterImage = serde_json::from_slice(snapshot.get_data())
                .map_err(|_| StoreError::Corrupt(self.config.dir.join("snapshot (received)")))?;
            self.node.mut_store().apply_snapshot(snapshot)?;
            self.image = image;
            changed = true;
        }
        changed |= self.apply(ready.take_committed_entries(), &mut answers);
        self.node.mut_store().append(ready.entries())?;
        if let Some(hs) = ready.hs() {
            self.node.mut_store().set_hard_state(hs)?;
        }
        self.network.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit)?;
        }
        self.network.send(light.take_messages());
        changed |= self.apply(light.take_committed_entries(), &mut answers);
        self.node.advance_apply();
        if changed {
            let image = Arc::new(self.image.clone());
            if let Ok(mut shared) = self.shared_image.lock() {
                *shared = image.clone();
            }
            (self.publish)(image);
        }
        // After the image is published, so a proposer that hears back
        // finds its change in the broker's metadata.
        for (request_id, result) in answers {
            if let Some(p) = self.pending.remove(&request_id) {
                let _ = p.reply.send(result);
            }
        }
        self.maybe_snapshot()
    }

    /// Applies committed entries; returns whether the image moved.
    fn apply(&mut self, entries: Vec<Entry>, answers: &mut Vec<(u64, ProposeResult)>) -> bool {
        let mut changed = false;
        for e in entries {
            if e.index <= self.image.applied_index {
                continue;
            }
            changed = true;
            if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
                // Leader no-ops; membership is static (no conf changes yet).
                self.image.applied_index = e.index;
                continue;
            }
            let batch = match Batch::decode(&e.data) {
                Ok(b) => b,
                Err(err) => {
                    tracing::error!(index = e.index, "undecodable metadata entry skipped: {err}");
                    self.image.applied_index = e.index;
                    continue;
                }
            };
            let result = self.image.apply_batch(e.index, &batch.records);
            if let Err(err) = &result {
                tracing::debug!(index = e.index, "metadata batch rejected: {err}");
            }
            if let Some(origin) = batch.origin {
                if origin.node_id == self.config.node_id {
                    answers.push((
                        origin.request_id,
                        result.map(|()| e.index).map_err(ProposeError::Rejected),
                    ));
                }
            }
        }
        changed
    }

    fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        let stored = self.node.store().stored_snapshot().get_metadata().index;
        let applied = self.image.applied_index;
        if applied.saturating_sub(stored) < self.config.snapshot_every_entries {
            return Ok(());
        }
        let data = serde_json::to_vec(&self.image).unwrap_or_default();
        self.node.mut_store().compact(applied, data)?;
        tracing::debug!(index = applied, "controller snapshot taken");
        Ok(())
    }
}
