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
use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType};
use raft::{ProgressState, RawNode, SnapshotStatus, StateRole, Storage};
use thiserror::Error;
use uuid::Uuid;

use crate::fencing::{reconcile, Seen};
use crate::image::{AlterPartitionError, ApplyError, ClusterImage, PartitionState};
use crate::net::{Frame, Heartbeat, Join, Network};
use crate::records::{Batch, Origin, Record};
use crate::storage::{DiskStorage, StoreError};

/// How often raft-rs is ticked.
pub const TICK_MS: u64 = 100;
/// Ticks without a leader's word before a follower campaigns (1 s, Kafka's
/// `controller.quorum.election.timeout.ms`), randomized per election up to
/// `MAX_ELECTION_TICKS`.
pub const ELECTION_TICKS: usize = 10;
/// The top of the randomized election timeout (1.5 s; raft-rs's default is
/// 2x). When the active controller dies, the election is the largest part
/// of failover: its worst case went from 2 s to 1.5 s, while the two other
/// voters still draw their timeouts 500 ms apart, and pre-vote keeps a
/// tie from disturbing anything.
pub const MAX_ELECTION_TICKS: usize = 15;
/// Ticks between a leader's heartbeats.
pub const HEARTBEAT_TICKS: usize = 1;
/// Applied entries past the last snapshot before a new one is taken, in
/// production (`ControllerConfig::snapshot_every_entries`).
pub const SNAPSHOT_EVERY_ENTRIES: u64 = 1000;
/// How long a proposal waits to be applied before its caller gives up
/// (10 s).
pub const PROPOSAL_TIMEOUT_TICKS: u64 = 100;
/// How often a node re-proposes its registration or the cluster id while
/// they are missing from the image (2 s).
const SELF_PROPOSAL_RETRY_TICKS: u64 = 20;
/// How long a leader waits for a follower to take a snapshot before it
/// counts the snapshot as lost and sends it again (3 s). raft-rs pauses a
/// follower's replication while a snapshot is on its way and relies on the
/// application to report a lost one; the network drops messages silently.
const SNAPSHOT_RETRY_TICKS: u64 = 30;
/// How often a broker heartbeats to the active controller (500 ms; Kafka's
/// `broker.heartbeat.interval.ms` is 2 s, but sessions here may be as
/// short as a test makes them).
const HEARTBEAT_INTERVAL_TICKS: u64 = 5;
/// How often the active controller checks broker liveness (`fencing`).
const RECONCILE_TICKS: u64 = 2;
/// How long the active controller waits for its fencing batch to apply
/// before it proposes the same records again (2 s).
const RECONCILE_RETRY_TICKS: u64 = 20;

/// This node as a broker, registered in the metadata.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    pub host: String,
    pub port: i32,
}

#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub node_id: u64,
    /// Every voter: `(node id, "host:port")`, this node included unless it
    /// is a learner (`process.roles=broker`): a node outside the voters
    /// asks the active controller to add it as a Raft learner, which
    /// receives the log but never votes nor leads.
    pub voters: Vec<(u64, String)>,
    /// Where this node listens for its peers (a learner gives it to the
    /// voters when it joins, so it must be reachable from them).
    pub listen: String,
    /// `<data-dir>/__cluster_metadata`.
    pub dir: PathBuf,
    /// Registered in the metadata when set (`process.roles` has `broker`).
    pub broker: Option<BrokerInfo>,
    /// The cluster id this node proposes if it is the first leader.
    pub cluster_id_candidate: String,
    pub snapshot_every_entries: u64,
    /// fsync the log; `false` only in simulations (see `DiskStorage::set_sync`).
    pub fsync: bool,
    /// `Some(t)`: the election timeout is exactly `t` ticks. raft-rs draws
    /// it from its own thread-local RNG otherwise, which a seeded
    /// simulation cannot replay. `None` in production.
    pub fixed_election_ticks: Option<usize>,
    /// `broker.session.timeout.ms`: brokers register fenced, heartbeat, and
    /// the active controller fences one that falls silent this long.
    /// `None`: brokers register unfenced and are never fenced (simulations
    /// that do not model heartbeats).
    pub broker_session_timeout_ms: Option<u64>,
    /// This node's static `unclean.leader.election.enable` (Kafka's broker
    /// key, default false): used in elections for topics without their own
    /// setting when no cluster-wide dynamic default is set.
    pub unclean_leader_election_enable: bool,
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
    #[error("the change was not applied within {0} ms")]
    TimedOut(u64),
    #[error("the controller has stopped")]
    Stopped,
}

/// The answer to a proposal: the Raft index it was applied at.
pub type ProposeResult = Result<u64, ProposeError>;

pub(crate) enum Input {
    Raft(Message),
    Heartbeat(Heartbeat),
    Join(Join),
    Propose {
        records: Vec<Record>,
        reply: oneshot::Sender<ProposeResult>,
    },
    Alter {
        record: Record,
        reply: Reply,
    },
    /// This node's broker asks for a controlled shutdown.
    Shutdown,
    /// Peer `id` refused a connection: no process listens there.
    Refused(u64),
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
        let listener = TcpListener::bind(&config.listen).map_err(|source| StartError::Listen {
            addr: config.listen.clone(),
            source,
        })?;
        let (tx, rx) = channel::<Input>();
        let deliver_tx = Mutex::new(tx.clone());
        let deliver: crate::net::Deliver = Arc::new(move |frame| {
            let input = match frame {
                Frame::Raft(m) => Input::Raft(m),
                Frame::Heartbeat(h) => Input::Heartbeat(h),
                Frame::Join(j) => Input::Join(j),
                Frame::Refused(id) => Input::Refused(id),
            };
            deliver_tx
                .lock()
                .map(|tx| tx.send(input).is_ok())
                .unwrap_or(false)
        });
        let peers: Vec<(u64, String)> = config
            .voters
            .iter()
            .filter(|(id, _)| *id != config.node_id)
            .cloned()
            .collect();
        let network = Network::start(listener, &peers, deliver).map_err(StartError::Thread)?;

        let mut driver = Driver::open(config.clone(), Box::new(network), publish)?;
        let leader_id = driver.leader_id.clone();
        let shared_image = driver.shared_image.clone();
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

    /// KRaft's AlterPartition: the leader of `partition` of `topic_id`,
    /// at `leader_epoch` and `partition_epoch`, sets its ISR to `isr`.
    /// Answered once the record is applied on this node: the partition's
    /// new state, or why it was refused (`AlterPartitionError::code` is
    /// Kafka's code: FENCED_LEADER_EPOCH, INVALID_UPDATE_VERSION,
    /// INELIGIBLE_REPLICA, NOT_CONTROLLER, REQUEST_TIMED_OUT).
    pub fn alter_partition(
        &self,
        topic_id: Uuid,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    ) -> oneshot::Receiver<Result<PartitionState, AlterPartitionError>> {
        let (tx, rx) = oneshot::channel();
        let record = Record::AlterPartition {
            topic_id,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            isr,
        };
        let reply = Reply::Alter {
            topic_id,
            partition,
            reply: tx,
        };
        if let Ok(inbox) = self.inbox.lock() {
            let _ = inbox.send(Input::Alter { record, reply });
        }
        rx
    }

    /// Controlled shutdown (Kafka's `wantShutDown`): from now on this
    /// node's broker heartbeats ask the active controller to fence it and
    /// move its partitions' leadership away (`fencing` rule 5). Done once
    /// `shutdown_done` holds.
    pub fn request_shutdown(&self) {
        if let Ok(inbox) = self.inbox.lock() {
            let _ = inbox.send(Input::Shutdown);
        }
    }

    /// Whether the applied image has this node's broker fenced: it leads
    /// no partition, and every partition it led has moved to another ISR
    /// member or has no leader. True when this node is no broker.
    pub fn shutdown_done(&self) -> bool {
        let image = self.image();
        i32::try_from(self.node_id)
            .ok()
            .and_then(|id| image.brokers.get(&id))
            .is_none_or(|b| b.fenced)
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

/// Who waits for a proposal: a plain proposer, or an AlterPartition
/// caller, answered with the partition's state once applied.
pub(crate) enum Reply {
    Propose(oneshot::Sender<ProposeResult>),
    Alter {
        topic_id: Uuid,
        partition: i32,
        reply: oneshot::Sender<Result<PartitionState, AlterPartitionError>>,
    },
}

impl Reply {
    fn send(self, result: ProposeResult, image: &ClusterImage) {
        match self {
            Reply::Propose(reply) => {
                let _ = reply.send(result);
            }
            Reply::Alter {
                topic_id,
                partition,
                reply,
            } => {
                let answer = match result {
                    Ok(_) => image
                        .topic_by_id(topic_id)
                        .and_then(|t| t.partitions.get(usize::try_from(partition).ok()?))
                        .cloned()
                        .ok_or(AlterPartitionError::UnknownPartition),
                    Err(ProposeError::Rejected(ApplyError::AlterPartition { reason, .. })) => {
                        Err(reason)
                    }
                    Err(ProposeError::Rejected(_)) => Err(AlterPartitionError::InvalidRequest),
                    Err(ProposeError::TimedOut(_)) => Err(AlterPartitionError::TimedOut),
                    Err(ProposeError::NoLeader | ProposeError::Stopped) => {
                        Err(AlterPartitionError::NotController)
                    }
                };
                let _ = reply.send(answer);
            }
        }
    }
}

struct Pending {
    reply: Reply,
    deadline_tick: u64,
    /// The Raft term it was proposed in.
    term: u64,
}

/// Where a node's outgoing Raft messages go: the TCP `Network`, or the
/// simulator's queues in tests.
pub(crate) trait Transport: Send {
    fn send(&self, messages: Vec<Message>);
    /// A broker heartbeat to the active controller, peer `to`.
    fn heartbeat(&self, to: u64, heartbeat: Heartbeat);
    /// A learner's join request to voter `to`.
    fn join(&self, to: u64, join: Join);
    /// Peer `id` (a learner) is reached at `addr` from now on.
    fn add_peer(&self, id: u64, addr: &str);
}

impl Transport for Network {
    fn send(&self, messages: Vec<Message>) {
        Network::send(self, messages)
    }

    fn heartbeat(&self, to: u64, heartbeat: Heartbeat) {
        Network::send_heartbeat(self, to, heartbeat)
    }

    fn join(&self, to: u64, join: Join) {
        Network::send_join(self, to, join)
    }

    fn add_peer(&self, id: u64, addr: &str) {
        if let Err(e) = Network::add_peer(self, id, addr) {
            tracing::warn!(peer = id, "no sender thread for a learner: {e}");
        }
    }
}

/// One controller's state machine and Raft node, driven by `run` on the
/// controller thread (or step by step by the simulator): `take` an input,
/// `tick`, `on_ready` while `node.has_ready()`.
pub(crate) struct Driver {
    pub(crate) node: RawNode<DiskStorage>,
    network: Box<dyn Transport>,
    pub(crate) image: ClusterImage,
    config: ControllerConfig,
    publish: Publish,
    pending: HashMap<u64, Pending>,
    next_request: u64,
    incarnation_id: Uuid,
    /// Ticks since start: the controller's clock.
    ticks: u64,
    last_registration: Option<u64>,
    last_cluster_id: Option<u64>,
    /// A learner: when it last asked the voters to add it.
    last_join: Option<u64>,
    /// A conf change was applied: snapshot now, so that a snapshot sent to
    /// a new learner has it in its configuration (raft-rs drops a snapshot
    /// whose configuration does not name the receiver).
    snapshot_due: bool,
    /// Followers waiting for a snapshot, with the tick it was first seen.
    snapshot_waits: HashMap<u64, u64>,
    leader_id: Arc<AtomicU64>,
    shared_image: Arc<Mutex<Arc<ClusterImage>>>,
    /// On the active controller: each broker's last heartbeat.
    heartbeats: HashMap<i32, Seen>,
    /// Whether this node was the active controller at the last tick.
    was_leader: bool,
    /// The active controller this node last followed (0: none known).
    last_leader: u64,
    /// The last tick this node heard from an active controller (or was
    /// it): see `watch_contact`.
    last_contact: u64,
    /// The last fencing batch proposed and when.
    last_reconcile: Option<(Vec<Record>, u64)>,
    /// This node's broker is stopping: its heartbeats ask for a
    /// controlled shutdown (`Controller::request_shutdown`).
    want_shutdown: bool,
}

impl Driver {
    /// Opens the log, rebuilds the image from the snapshot and the
    /// committed entries after it, and publishes it before anything else:
    /// the first image a broker sees has every topic whose logs this node
    /// may have opened before it stopped.
    pub(crate) fn open(
        config: ControllerConfig,
        network: Box<dyn Transport>,
        publish: Publish,
    ) -> Result<Driver, StartError> {
        let voter_ids: Vec<u64> = config.voters.iter().map(|(id, _)| *id).collect();
        let mut storage = DiskStorage::open(&config.dir, &voter_ids)?;
        storage.set_sync(config.fsync);
        let snapshot = storage.stored_snapshot();
        let mut image: ClusterImage = if snapshot.get_metadata().index > 0 {
            serde_json::from_slice(snapshot.get_data()).map_err(StartError::Snapshot)?
        } else {
            ClusterImage::default()
        };
        let commit = storage.initial_state()?.hard_state.commit;
        let committed: Vec<Entry> = storage
            .entries_from(image.applied_index.saturating_add(1))?
            .into_iter()
            .filter(|e| e.index <= commit)
            .collect();
        apply_entries(&mut image, committed, config.node_id, &mut Vec::new());
        // The configuration as of the applied index: the voters, and the
        // learners the applied conf changes added.
        let mut conf = storage.initial_state()?.conf_state;
        conf.learners = image.learners.keys().copied().collect();
        storage.set_conf_state(conf);
        for (id, addr) in &image.learners {
            if *id != config.node_id {
                network.add_peer(*id, addr);
            }
        }
        let raft_config = raft::Config {
            id: config.node_id,
            election_tick: ELECTION_TICKS,
            heartbeat_tick: HEARTBEAT_TICKS,
            applied: image.applied_index,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            check_quorum: true,
            pre_vote: true,
            min_election_tick: config.fixed_election_ticks.unwrap_or(0),
            max_election_tick: config
                .fixed_election_ticks
                .map_or(MAX_ELECTION_TICKS, |t| t.saturating_add(1)),
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(crate::log::TracingDrain, slog::o!());
        let node = RawNode::new(&raft_config, storage, &logger)?;
        let image_now = Arc::new(image.clone());
        publish(image_now.clone());
        Ok(Driver {
            node,
            network,
            image,
            config,
            publish,
            pending: HashMap::new(),
            next_request: 0,
            incarnation_id: Uuid::new_v4(),
            ticks: 0,
            last_registration: None,
            last_cluster_id: None,
            last_join: None,
            snapshot_due: false,
            snapshot_waits: HashMap::new(),
            leader_id: Arc::new(AtomicU64::new(0)),
            shared_image: Arc::new(Mutex::new(image_now)),
            heartbeats: HashMap::new(),
            was_leader: false,
            last_leader: 0,
            last_contact: 0,
            last_reconcile: None,
            want_shutdown: false,
        })
    }

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
                self.tick();
                next_tick = Instant::now().checked_add(tick).unwrap_or(next_tick);
            }
            if self.node.has_ready() {
                self.on_ready()?;
            }
        }
    }

    /// One tick of the controller's clock.
    pub(crate) fn tick(&mut self) {
        self.ticks = self.ticks.saturating_add(1);
        self.node.tick();
        self.ask_to_join();
        self.propose_own_records();
        self.heartbeat_and_fence();
        self.watch_contact();
        self.expire_pending();
        self.resend_lost_snapshots();
    }

    /// Whether this node is a learner (not among the voters).
    fn is_learner(&self) -> bool {
        !self
            .config
            .voters
            .iter()
            .any(|(id, _)| *id == self.config.node_id)
    }

    /// A learner asks every voter to add it until the log it has applied
    /// says it is one at its address; only the active controller acts.
    fn ask_to_join(&mut self) {
        if !self.is_learner()
            || self.image.learners.get(&self.config.node_id) == Some(&self.config.listen)
        {
            return;
        }
        let now = self.ticks;
        if self
            .last_join
            .is_some_and(|t| now.saturating_sub(t) < SELF_PROPOSAL_RETRY_TICKS)
        {
            return;
        }
        self.last_join = Some(now);
        for (id, _) in &self.config.voters {
            let join = Join {
                node_id: self.config.node_id,
                addr: self.config.listen.clone(),
            };
            self.network.join(*id, join);
        }
    }

    /// On the active controller: proposes the conf change that adds a
    /// learner (raft-rs drops it while another conf change is pending;
    /// the learner asks again).
    fn on_join(&mut self, join: Join) {
        if self.node.raft.state != StateRole::Leader
            || self.config.voters.iter().any(|(id, _)| *id == join.node_id)
            || join.node_id == 0
            || self.image.learners.get(&join.node_id) == Some(&join.addr)
        {
            return;
        }
        tracing::info!(node = join.node_id, addr = %join.addr, "adding a learner");
        let cc = ConfChange {
            change_type: ConfChangeType::AddLearnerNode,
            node_id: join.node_id,
            context: join.addr.into_bytes().into(),
            ..Default::default()
        };
        if let Err(e) = self.node.propose_conf_change(Vec::new(), cc) {
            tracing::debug!("learner conf change not proposed: {e}");
        }
    }

    /// This node's broker epoch, once its own incarnation is registered.
    fn own_epoch(&self) -> Option<(i32, i64)> {
        self.config.broker.as_ref()?;
        let broker_id = i32::try_from(self.config.node_id).ok()?;
        let b = self.image.brokers.get(&broker_id)?;
        (b.incarnation_id == self.incarnation_id).then_some((broker_id, b.epoch))
    }

    /// A broker that has heard nothing from an active controller for a
    /// whole `broker.session.timeout.ms` has been fenced by now, or will be:
    /// its heartbeats cannot have been heard either, unless the cut is one
    /// way, and then the metadata log reaches it and says so. It marks its
    /// image `out_of_contact` and publishes it, so the broker leads no
    /// partition (NOT_LEADER_OR_FOLLOWER) until it hears again, rather than
    /// keep taking writes no replica will see. An active controller is in
    /// contact while it leads: raft-rs's check_quorum makes it step down
    /// once a quorum has been silent for an election timeout.
    fn watch_contact(&mut self) {
        let Some(session_ms) = self.config.broker_session_timeout_ms else {
            return;
        };
        if self.config.broker.is_none() {
            return;
        }
        let now = self.ticks;
        if self.node.raft.state == StateRole::Leader {
            self.last_contact = now;
        }
        let session_ticks = session_ms.div_ceil(TICK_MS).max(1);
        let lost = now.saturating_sub(self.last_contact) > session_ticks;
        if lost == self.image.out_of_contact {
            return;
        }
        if lost {
            tracing::warn!(
                session_ms,
                "no word from an active controller for a broker session: this broker counts itself fenced and leads no partition until it hears again"
            );
        } else {
            tracing::info!("an active controller is heard again");
        }
        self.image.out_of_contact = lost;
        let image = Arc::new(self.image.clone());
        if let Ok(mut shared) = self.shared_image.lock() {
            *shared = image.clone();
        }
        (self.publish)(image);
    }

    /// Every broker heartbeats to the active controller; the active
    /// controller proposes what `fencing::reconcile` finds.
    fn heartbeat_and_fence(&mut self) {
        let Some(session_ms) = self.config.broker_session_timeout_ms else {
            return;
        };
        let now = self.ticks;
        let leader = self.node.raft.state == StateRole::Leader;
        let session_ticks = session_ms.div_ceil(TICK_MS).max(1);
        if leader && !self.was_leader {
            // Rule 1 of `fencing`: a new active controller gives every
            // registered broker a full session from now, except the broker
            // of the controller it replaces: that node was silent for an
            // election timeout already, and a live broker heartbeats to the
            // new controller within an interval, so it gets two intervals.
            let previous = i32::try_from(self.last_leader).ok();
            let short = session_ticks.saturating_sub(HEARTBEAT_INTERVAL_TICKS.saturating_mul(2));
            self.heartbeats = self
                .image
                .brokers
                .values()
                .map(|b| {
                    let replaced =
                        Some(b.broker_id) == previous && self.last_leader != self.config.node_id;
                    let seen = Seen {
                        broker_epoch: b.epoch,
                        applied_index: 0,
                        tick: if replaced {
                            now.saturating_sub(short)
                        } else {
                            now
                        },
                        want_shutdown: false,
                        gone: false,
                    };
                    (b.broker_id, seen)
                })
                .collect();
            self.last_reconcile = None;
        }
        if !leader && self.node.raft.leader_id != 0 {
            self.last_leader = self.node.raft.leader_id;
        }
        self.was_leader = leader;
        let own = self.own_epoch().map(|(broker_id, broker_epoch)| Heartbeat {
            broker_id,
            broker_epoch,
            applied_index: self.image.applied_index,
            want_shutdown: self.want_shutdown,
        });
        // A broker shutting down heartbeats every tick: its wait is short.
        let due = self.want_shutdown || now.is_multiple_of(HEARTBEAT_INTERVAL_TICKS);
        if leader {
            if let Some(h) = own {
                self.heard(h);
            }
        } else if let Some(h) = own.filter(|_| due) {
            let to = self.node.raft.leader_id;
            if to != 0 && to != self.config.node_id {
                self.network.heartbeat(to, h);
            }
        }
        if !leader || !now.is_multiple_of(RECONCILE_TICKS) {
            return;
        }
        let records = reconcile(
            &self.image,
            &self.heartbeats,
            now,
            session_ticks,
            self.config.unclean_leader_election_enable,
        );
        if records.is_empty() {
            self.last_reconcile = None;
            return;
        }
        let repeated = self.last_reconcile.as_ref().is_some_and(|(last, at)| {
            *last == records && now.saturating_sub(*at) < RECONCILE_RETRY_TICKS
        });
        if repeated {
            return;
        }
        tracing::info!(?records, "broker liveness changed");
        let batch = Batch {
            origin: None,
            records: records.clone(),
        };
        let _ = self.node.propose(Vec::new(), batch.encode());
        self.last_reconcile = Some((records, now));
    }

    /// A peer refused a connection: its process is gone (a live one
    /// listens on its controller address), so the active controller counts
    /// its broker's session as expired and fences it at the next
    /// reconcile tick, instead of `broker.session.timeout.ms` after its
    /// last heartbeat. A broker that is back heartbeats and is unfenced as
    /// usual.
    fn on_refused(&mut self, id: u64) {
        if self.node.raft.state != StateRole::Leader {
            return;
        }
        if self.config.broker_session_timeout_ms.is_none() {
            return;
        }
        if let Some(seen) = i32::try_from(id)
            .ok()
            .and_then(|b| self.heartbeats.get_mut(&b))
        {
            if !seen.gone {
                tracing::info!(broker = id, "its controller address refused a connection; fencing it without waiting out the session");
                seen.gone = true;
            }
        }
    }

    /// Records a heartbeat (on the active controller).
    fn heard(&mut self, h: Heartbeat) {
        let seen = Seen {
            broker_epoch: h.broker_epoch,
            applied_index: h.applied_index,
            tick: self.ticks,
            want_shutdown: h.want_shutdown,
            gone: false,
        };
        self.heartbeats.insert(h.broker_id, seen);
    }

    /// Reports a snapshot as failed once a follower has waited for it
    /// [`SNAPSHOT_RETRY_TICKS`], so the leader sends it again.
    fn resend_lost_snapshots(&mut self) {
        let now = self.ticks;
        let waiting: Vec<u64> = if self.node.raft.state == StateRole::Leader {
            self.node
                .raft
                .prs()
                .iter()
                .filter(|(_, p)| p.state == ProgressState::Snapshot)
                .map(|(id, _)| *id)
                .collect()
        } else {
            Vec::new()
        };
        self.snapshot_waits.retain(|id, _| waiting.contains(id));
        for id in waiting {
            let since = *self.snapshot_waits.entry(id).or_insert(now);
            if now.saturating_sub(since) >= SNAPSHOT_RETRY_TICKS {
                tracing::info!(peer = id, "snapshot not taken in time; sending it again");
                self.node.report_snapshot(id, SnapshotStatus::Failure);
                self.snapshot_waits.remove(&id);
            }
        }
    }

    pub(crate) fn take(&mut self, input: Input) {
        match input {
            Input::Raft(m) => {
                let last_index = self.node.raft.raft_log.last_index();
                if m.get_msg_type() == MessageType::MsgHeartbeat && m.commit > last_index {
                    // The leader commits in a heartbeat only what this node
                    // acknowledged holding: its controller log lost entries
                    // (a wiped data dir, or another node started with this
                    // node's id). raft-rs would panic; going on is unsafe.
                    tracing::error!(
                        leader = m.from,
                        commit = m.commit,
                        last_index,
                        "this node's controller log lacks entries the quorum counts it as holding (its log was lost, or another node uses its id); refusing to go on"
                    );
                    std::process::exit(1);
                }
                let from = m.from;
                if let Err(e) = self.node.step(m) {
                    tracing::debug!("raft message ignored: {e}");
                }
                if from != 0 && from == self.node.raft.leader_id {
                    self.last_contact = self.ticks;
                }
            }
            Input::Heartbeat(h) => {
                if self.node.raft.state == StateRole::Leader {
                    self.heard(h);
                }
            }
            Input::Join(j) => self.on_join(j),
            Input::Refused(id) => self.on_refused(id),
            Input::Propose { records, reply } => self.propose(records, Reply::Propose(reply)),
            Input::Alter { record, reply } => self.propose(vec![record], reply),
            Input::Shutdown => {
                tracing::info!("asking the active controller for a controlled shutdown");
                self.want_shutdown = true;
            }
        }
    }

    /// Proposes `records`; `reply` is answered once they are applied here.
    fn propose(&mut self, records: Vec<Record>, reply: Reply) {
        {
            {
                self.next_request = self.next_request.wrapping_add(1);
                let request_id = self.next_request;
                let batch = Batch {
                    origin: Some(Origin {
                        node_id: self.config.node_id,
                        request_id,
                    }),
                    records,
                };
                if self.node.raft.leader_id == 0
                    || self.node.propose(Vec::new(), batch.encode()).is_err()
                {
                    reply.send(Err(ProposeError::NoLeader), &self.image);
                    return;
                }
                let deadline_tick = self.ticks.saturating_add(PROPOSAL_TIMEOUT_TICKS);
                self.pending.insert(
                    request_id,
                    Pending {
                        reply,
                        deadline_tick,
                        term: self.node.raft.term,
                    },
                );
            }
        }
    }

    /// The leader sets the cluster id once; every broker node registers
    /// itself until its incarnation is in the image.
    fn propose_own_records(&mut self) {
        let now = self.ticks;
        let due = |last: Option<u64>| {
            last.is_none_or(|t| now.saturating_sub(t) >= SELF_PROPOSAL_RETRY_TICKS)
        };
        if self.node.raft.state == StateRole::Leader
            && self.image.cluster_id.is_none()
            && due(self.last_cluster_id)
        {
            self.last_cluster_id = Some(now);
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
            self.last_registration = Some(now);
            let batch = Batch {
                origin: None,
                records: vec![Record::RegisterBroker {
                    broker_id,
                    incarnation_id: self.incarnation_id,
                    host: broker.host.clone(),
                    port: broker.port,
                    rack: None,
                    // With heartbeats, a broker starts fenced until it has
                    // caught up (`fencing`); without, it serves at once.
                    fenced: self.config.broker_session_timeout_ms.is_some(),
                }],
            };
            let _ = self.node.propose(Vec::new(), batch.encode());
        }
    }

    fn expire_pending(&mut self) {
        let now = self.ticks;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_tick <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            if let Some(p) = self.pending.remove(&id) {
                p.reply.send(
                    Err(ProposeError::TimedOut(
                        PROPOSAL_TIMEOUT_TICKS.saturating_mul(TICK_MS),
                    )),
                    &self.image,
                );
            }
        }
    }

    pub(crate) fn on_ready(&mut self) -> Result<(), StoreError> {
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
        self.leader_id
            .store(self.node.raft.leader_id, Ordering::SeqCst);
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
                p.reply.send(result, &self.image);
            }
        }
        self.answer_alters_of_past_terms();
        self.maybe_snapshot()
    }

    /// An AlterPartition proposed in an earlier term, under another active
    /// controller, may have been lost with it (raft-rs drops a proposal
    /// forwarded to a leader that dies). Once a leader of the current term
    /// is known it is answered NOT_CONTROLLER, and the partition's leader
    /// sends it again after its 1 s quiet period, rather than waiting out
    /// the 10 s proposal timeout. Should the first one still commit, the
    /// second is refused (its partition epoch is stale) and the image
    /// carries the change. Other proposals wait: a client would see an
    /// error for a change that may yet apply.
    fn answer_alters_of_past_terms(&mut self) {
        let term = self.node.raft.term;
        if self.node.raft.leader_id == 0 {
            return;
        }
        let stale: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.term < term && matches!(p.reply, Reply::Alter { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            if let Some(p) = self.pending.remove(&id) {
                p.reply.send(Err(ProposeError::NoLeader), &self.image);
            }
        }
    }

    /// Applies committed entries; returns whether the image moved. Conf
    /// changes go to raft-rs and the network first.
    fn apply(&mut self, entries: Vec<Entry>, answers: &mut Vec<(u64, ProposeResult)>) -> bool {
        for e in &entries {
            if e.index <= self.image.applied_index
                || e.get_entry_type() != EntryType::EntryConfChange
            {
                continue;
            }
            let Some((cc, addr)) = learner_change(e) else {
                continue;
            };
            match self.node.apply_conf_change(&cc) {
                Ok(conf) => {
                    self.node.mut_store().set_conf_state(conf);
                    if cc.node_id != self.config.node_id {
                        self.network.add_peer(cc.node_id, &addr);
                    }
                    self.snapshot_due = true;
                }
                Err(err) => tracing::error!(index = e.index, "conf change not applied: {err}"),
            }
        }
        apply_entries(&mut self.image, entries, self.config.node_id, answers)
    }

    fn maybe_snapshot(&mut self) -> Result<(), StoreError> {
        let stored = self.node.store().stored_snapshot().get_metadata().index;
        let applied = self.image.applied_index;
        let due = self.snapshot_due && applied > stored;
        if !due && applied.saturating_sub(stored) < self.config.snapshot_every_entries {
            return Ok(());
        }
        self.snapshot_due = false;
        let data = serde_json::to_vec(&self.image).unwrap_or_default();
        self.node.mut_store().compact(applied, data)?;
        tracing::debug!(index = applied, "controller snapshot taken");
        Ok(())
    }
}

/// Applies committed entries to `image`; answers for batches `node_id`
/// proposed go to `answers`. Returns whether the image moved.
fn apply_entries(
    image: &mut ClusterImage,
    entries: Vec<Entry>,
    node_id: u64,
    answers: &mut Vec<(u64, ProposeResult)>,
) -> bool {
    let mut changed = false;
    for e in entries {
        if e.index <= image.applied_index {
            continue;
        }
        changed = true;
        if let Some((cc, addr)) = learner_change(&e) {
            image.learners.insert(cc.node_id, addr);
        }
        if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
            // Leader no-ops and conf changes (the voters are static;
            // learners are added above).
            image.applied_index = e.index;
            continue;
        }
        let batch = match Batch::decode(&e.data) {
            Ok(b) => b,
            Err(err) => {
                tracing::error!(index = e.index, "undecodable metadata entry skipped: {err}");
                image.applied_index = e.index;
                continue;
            }
        };
        let result = image.apply_batch(e.index, &batch.records);
        if let Err(err) = &result {
            tracing::debug!(index = e.index, "metadata batch rejected: {err}");
        }
        if let Some(origin) = batch.origin {
            if origin.node_id == node_id {
                answers.push((
                    origin.request_id,
                    result.map(|()| e.index).map_err(ProposeError::Rejected),
                ));
            }
        }
    }
    changed
}

/// The learner a conf change entry adds, with its address; `None` for any
/// other entry (Strom proposes no other conf change).
fn learner_change(e: &Entry) -> Option<(ConfChange, String)> {
    if e.get_entry_type() != EntryType::EntryConfChange {
        return None;
    }
    let cc = ConfChange::parse_from_bytes(&e.data).ok()?;
    if cc.get_change_type() != ConfChangeType::AddLearnerNode {
        return None;
    }
    let addr = String::from_utf8(cc.context.to_vec()).ok()?;
    Some((cc, addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf_change_entry(index: u64, change_type: ConfChangeType, id: u64, addr: &str) -> Entry {
        let cc = ConfChange {
            change_type,
            node_id: id,
            context: addr.as_bytes().to_vec().into(),
            ..Default::default()
        };
        let mut e = Entry {
            index,
            data: cc.write_to_bytes().unwrap().into(),
            ..Default::default()
        };
        e.set_entry_type(EntryType::EntryConfChange);
        e
    }

    /// An AddLearnerNode entry records the learner and its address (a
    /// later one moves it); other conf changes and garbage do not.
    #[test]
    fn learner_conf_changes_apply_to_the_image() {
        let mut image = ClusterImage::default();
        let mut garbage = Entry {
            index: 4,
            data: vec![0xff, 0x01].into(),
            ..Default::default()
        };
        garbage.set_entry_type(EntryType::EntryConfChange);
        let entries = vec![
            conf_change_entry(1, ConfChangeType::AddLearnerNode, 4, "127.0.0.1:9393"),
            conf_change_entry(2, ConfChangeType::AddNode, 5, "127.0.0.1:9494"),
            conf_change_entry(3, ConfChangeType::AddLearnerNode, 4, "127.0.0.1:9595"),
            garbage,
        ];
        assert!(apply_entries(&mut image, entries, 1, &mut Vec::new()));
        assert_eq!(image.applied_index, 4);
        let learners: Vec<(u64, &str)> = image
            .learners
            .iter()
            .map(|(id, a)| (*id, a.as_str()))
            .collect();
        assert_eq!(learners, vec![(4, "127.0.0.1:9595")]);
    }
}
