//! The controller over a simulated network and clock, with a printable
//! seed: three `Driver`s (the real Raft node, log storage and state
//! machine; only the TCP transport and the wall clock are replaced) with
//! messages lost, duplicated, delayed and reordered, nodes crashed and
//! restarted from their logs, and snapshots every few entries so that a
//! node that fell behind is sent one.
//!
//! Checked after every step: any two nodes that applied the same index
//! hold the same image (state machine safety). At the end the network
//! heals, and every node must reach the same image, every node registered
//! and a topic proposed after healing applied (liveness).
//!
//! `STROM_SIM_SEED=N` runs one seed; `STROM_SIM_SEEDS=K` runs seeds 1..=K
//! (default 20) after the regression seeds. raft-rs's election timeout is
//! fixed per node here (`fixed_election_ticks`), so a seed replays exactly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures_channel::oneshot;
use raft::eraftpb::Message;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tempfile::TempDir;
use uuid::Uuid;

use crate::image::ClusterImage;
use crate::node::{BrokerInfo, ControllerConfig, Driver, Input, ProposeResult, Transport};
use crate::records::Record;

const NODES: u64 = 3;
const STEPS: usize = 2500;
const HEAL_ROUNDS: usize = 3000;
/// Small, so that snapshots are taken, and sent to nodes that fell behind.
const SNAPSHOT_EVERY_ENTRIES: u64 = 15;

struct SimTransport(Arc<Mutex<Vec<Message>>>);

impl Transport for SimTransport {
    fn send(&self, messages: Vec<Message>) {
        self.0.lock().unwrap().extend(messages);
    }

    /// The simulation runs without fencing (`broker_session_timeout_ms:
    /// None`): no node heartbeats.
    fn heartbeat(&self, _to: u64, _heartbeat: crate::net::Heartbeat) {}

    fn join(&self, _to: u64, _join: crate::net::Join) {}

    fn add_peer(&self, _id: u64, _addr: &str) {}
}

struct Sim {
    seed: u64,
    rng: SmallRng,
    dirs: Vec<TempDir>,
    nodes: Vec<Option<Driver>>,
    in_flight: Arc<Mutex<Vec<Message>>>,
    /// applied index -> the image every node must have there.
    published: Arc<Mutex<BTreeMap<u64, ClusterImage>>>,
    answers: Vec<oneshot::Receiver<ProposeResult>>,
    next_topic: u64,
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut sim = Sim {
            seed,
            rng: SmallRng::seed_from_u64(seed),
            dirs: (0..NODES).map(|_| tempfile::tempdir().unwrap()).collect(),
            nodes: Vec::new(),
            in_flight: Arc::default(),
            published: Arc::default(),
            answers: Vec::new(),
            next_topic: 0,
        };
        sim.nodes = (1..=NODES).map(|id| Some(sim.open(id))).collect();
        sim
    }

    fn open(&self, id: u64) -> Driver {
        let config = ControllerConfig {
            node_id: id,
            voters: (1..=NODES).map(|i| (i, format!("sim:{i}"))).collect(),
            listen: String::new(),
            dir: self.dirs[(id - 1) as usize].path().to_path_buf(),
            broker: Some(BrokerInfo {
                host: format!("node{id}"),
                port: 9092,
            }),
            cluster_id_candidate: format!("cluster-of-{id}"),
            snapshot_every_entries: SNAPSHOT_EVERY_ENTRIES,
            fsync: false,
            // Staggered, so that the nodes do not keep splitting the vote.
            fixed_election_ticks: Some(10 + 4 * id as usize),
            broker_session_timeout_ms: None,
            unclean_leader_election_enable: false,
        };
        let published = self.published.clone();
        let seed = self.seed;
        let publish = Box::new(move |image: Arc<ClusterImage>| {
            let mut seen = published.lock().unwrap();
            match seen.get(&image.applied_index) {
                Some(earlier) => assert_eq!(
                    earlier, &*image,
                    "seed {seed}: node {id} applied index {} to a different image",
                    image.applied_index
                ),
                None => {
                    seen.insert(image.applied_index, (*image).clone());
                }
            }
        });
        let transport = Box::new(SimTransport(self.in_flight.clone()));
        Driver::open(config, transport, publish).unwrap()
    }

    fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_some())
            .collect()
    }

    fn pick_live(&mut self) -> Option<usize> {
        let live = self.live();
        if live.is_empty() {
            return None;
        }
        Some(live[self.rng.gen_range(0..live.len())])
    }

    fn deliver(&mut self, m: Message) {
        if let Some(Some(node)) = self.nodes.get_mut((m.to - 1) as usize) {
            node.take(Input::Raft(m));
        }
    }

    fn propose(&mut self, i: usize) {
        let node = self.nodes[i].as_mut().unwrap();
        let topics: Vec<Uuid> = node.image.topics.values().map(|t| t.id).collect();
        let records = if !topics.is_empty() && self.rng.gen_bool(0.3) {
            let id = topics[self.rng.gen_range(0..topics.len())];
            vec![Record::RemoveTopic { topic_id: id }]
        } else {
            self.next_topic += 1;
            let id = Uuid::from_u64_pair(self.seed, self.next_topic);
            let mut r = vec![Record::Topic {
                name: format!("t{}", self.next_topic % 20),
                topic_id: id,
            }];
            for p in 0..self.rng.gen_range(1..4) {
                let leader = self.rng.gen_range(1..=NODES as i32);
                r.push(Record::single_replica_partition(id, p, leader));
            }
            r
        };
        let (reply, rx) = oneshot::channel();
        self.nodes[i]
            .as_mut()
            .unwrap()
            .take(Input::Propose { records, reply });
        self.answers.push(rx);
    }

    fn settle(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            while node.node.has_ready() {
                node.on_ready().unwrap();
            }
        }
    }

    fn step(&mut self) {
        let roll = self.rng.gen_range(0..100);
        let in_flight = self.in_flight.lock().unwrap().len();
        match roll {
            0..=44 if in_flight > 0 => {
                // Any queued message next: reordering and delay.
                let k = self.rng.gen_range(0..in_flight);
                let m = self.in_flight.lock().unwrap().swap_remove(k);
                if !self.rng.gen_bool(0.1) {
                    self.deliver(m);
                }
            }
            45..=49 if in_flight > 0 => {
                let k = self.rng.gen_range(0..in_flight);
                let m = self.in_flight.lock().unwrap()[k].clone();
                self.deliver(m);
            }
            50..=84 => {
                if let Some(i) = self.pick_live() {
                    self.nodes[i].as_mut().unwrap().tick();
                }
            }
            85..=94 => {
                if let Some(i) = self.pick_live() {
                    self.propose(i);
                }
            }
            95..=96 => {
                if let Some(i) = self.pick_live() {
                    self.nodes[i] = None;
                }
            }
            97..=99 => {
                let down: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].is_none())
                    .collect();
                if !down.is_empty() {
                    let i = down[self.rng.gen_range(0..down.len())];
                    self.nodes[i] = Some(self.open(i as u64 + 1));
                }
            }
            _ => {}
        }
        self.settle();
    }

    /// Restarts every node and runs a lossless network until all agree
    /// and hold a topic named `must_have` (proposed once they agree).
    fn heal(&mut self, must_have: &str) -> ClusterImage {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_none() {
                self.nodes[i] = Some(self.open(i as u64 + 1));
            }
        }
        for round in 0..HEAL_ROUNDS {
            self.lossless_round();
            let images: Vec<&ClusterImage> =
                self.nodes.iter().flatten().map(|d| &d.image).collect();
            let registered = images[0].brokers.len() == NODES as usize;
            let agreed = round > 50 && registered && images.iter().all(|i| *i == images[0]);
            if agreed && images[0].topics.contains_key(must_have) {
                return images[0].clone();
            }
            // Proposed again every 50 rounds: one made before a leader was
            // known is answered NoLeader.
            if agreed && round % 50 == 0 {
                let id = Uuid::from_u64_pair(self.seed, u64::MAX);
                let (reply, rx) = oneshot::channel();
                let records = vec![Record::Topic {
                    name: must_have.to_string(),
                    topic_id: id,
                }];
                self.nodes[0]
                    .as_mut()
                    .unwrap()
                    .take(Input::Propose { records, reply });
                self.answers.push(rx);
            }
        }
        let applied: Vec<u64> = self
            .nodes
            .iter()
            .flatten()
            .map(|d| d.image.applied_index)
            .collect();
        panic!(
            "seed {}: the nodes did not converge after healing (applied {applied:?})",
            self.seed
        );
    }
}

fn run(seed: u64) {
    eprintln!("controller simulation, seed {seed} (STROM_SIM_SEED={seed} replays it)");
    let mut sim = Sim::new(seed);
    for _ in 0..STEPS {
        sim.step();
    }
    let image = sim.heal("after-healing");
    let applied_ok = sim
        .answers
        .iter_mut()
        .map(|rx| rx.try_recv())
        .filter(|answer| matches!(answer, Ok(Some(Ok(_)))))
        .count();
    assert!(image.cluster_id.is_some(), "seed {seed}: no cluster id");
    let snapshots = sim
        .nodes
        .iter()
        .flatten()
        .map(|d| d.node.store().stored_snapshot().get_metadata().index)
        .min()
        .unwrap();
    assert!(
        snapshots > 0 || image.applied_index < SNAPSHOT_EVERY_ENTRIES,
        "seed {seed}: some node never took a snapshot (applied index {})",
        image.applied_index
    );
    eprintln!(
        "seed {seed}: applied index {}, {applied_ok} proposals applied, {} topics",
        image.applied_index,
        image.topics.len()
    );
}

/// Seeds that once failed, run every time:
/// - 41: a snapshot lost on the way left a follower behind for good
///   (raft-rs waits for the application to report it; `Driver::tick` now
///   does after `SNAPSHOT_RETRY_TICKS`).
const REGRESSION_SEEDS: &[u64] = &[41];

#[test]
fn nodes_agree_over_a_lossy_network_with_restarts() {
    if let Ok(seed) = std::env::var("STROM_SIM_SEED") {
        run(seed.parse().expect("STROM_SIM_SEED is a number"));
        return;
    }
    let seeds: u64 = std::env::var("STROM_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    for &seed in REGRESSION_SEEDS {
        run(seed);
    }
    for seed in 1..=seeds {
        run(seed);
    }
}

/// The metadata log's size after 10,000 topic creations and 10,000
/// deletions on one controller with the production snapshot interval:
/// snapshots keep it to the entries since the last one.
#[test]
fn the_log_stays_bounded_over_ten_thousand_topics() {
    const TOPICS: u64 = 10_000;
    const PER_READY: u64 = 100;
    let dir = tempfile::tempdir().unwrap();
    let config = ControllerConfig {
        node_id: 1,
        voters: vec![(1, "sim:1".into())],
        listen: String::new(),
        dir: dir.path().to_path_buf(),
        broker: None,
        cluster_id_candidate: "c".into(),
        snapshot_every_entries: crate::node::SNAPSHOT_EVERY_ENTRIES,
        fsync: false,
        fixed_election_ticks: Some(10),
        broker_session_timeout_ms: None,
        unclean_leader_election_enable: false,
    };
    let outbox = Arc::new(Mutex::new(Vec::new()));
    let mut node = Driver::open(config, Box::new(SimTransport(outbox)), Box::new(|_| {})).unwrap();
    for _ in 0..30 {
        node.tick();
        while node.node.has_ready() {
            node.on_ready().unwrap();
        }
    }
    assert_eq!(node.node.raft.leader_id, 1, "a single voter elects itself");
    let run = |node: &mut Driver, records: Vec<Record>| {
        let (reply, _rx) = oneshot::channel();
        node.take(Input::Propose { records, reply });
    };
    let ids: Vec<Uuid> = (0..TOPICS).map(|k| Uuid::from_u64_pair(7, k)).collect();
    let mut largest_log_bytes = 0;
    for phase in 0..2 {
        for (k, id) in ids.iter().enumerate() {
            let records = if phase == 0 {
                vec![
                    Record::Topic {
                        name: format!("topic-{k}"),
                        topic_id: *id,
                    },
                    Record::single_replica_partition(*id, 0, 1),
                ]
            } else {
                vec![Record::RemoveTopic { topic_id: *id }]
            };
            run(&mut node, records);
            if (k as u64 + 1).is_multiple_of(PER_READY) {
                while node.node.has_ready() {
                    node.on_ready().unwrap();
                }
                largest_log_bytes = largest_log_bytes.max(node.node.store().log_bytes());
            }
        }
        if phase == 0 {
            assert_eq!(node.image.topics.len(), TOPICS as usize);
        }
    }
    assert!(node.image.topics.is_empty());
    let log_bytes = node.node.store().log_bytes();
    let snapshot_bytes = std::fs::metadata(dir.path().join("snapshot"))
        .unwrap()
        .len();
    eprintln!(
        "after {TOPICS} topic creations and {TOPICS} deletions (applied index {}): \
         raft.log {log_bytes} bytes (largest {largest_log_bytes}), snapshot {snapshot_bytes} bytes",
        node.image.applied_index
    );
    // Unbounded, the log would hold all 20,000 entries (over 3 MB).
    assert!(
        largest_log_bytes < 1 << 20,
        "the log grew to {largest_log_bytes} bytes"
    );
}

impl Sim {
    /// One lossless round: every live node ticks once, then every message
    /// is delivered (those to stopped nodes are lost) until none is left.
    fn lossless_round(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            node.tick();
        }
        self.settle();
        loop {
            let batch: Vec<Message> = std::mem::take(&mut *self.in_flight.lock().unwrap());
            if batch.is_empty() {
                break;
            }
            for m in batch {
                self.deliver(m);
            }
            self.settle();
        }
    }

    /// The active controller every live node agrees on, if they do.
    fn agreed_leader(&self) -> Option<u64> {
        let leaders: Vec<u64> = self
            .nodes
            .iter()
            .flatten()
            .map(|d| d.node.raft.leader_id)
            .collect();
        let first = *leaders.first()?;
        (first != 0 && leaders.iter().all(|&l| l == first)).then_some(first)
    }
}

/// An AlterPartition proposed on a follower, whose active controller dies
/// before it commits anything, is answered NOT_CONTROLLER once the other
/// two have elected a new one: the partition's leader then sends it again
/// at once. It used to wait out the 10 s proposal timeout, so an ISR
/// expansion sent while the controller moved took 10 s and more.
#[test]
fn an_alter_partition_lost_with_its_controller_is_answered_at_the_next_election() {
    use crate::image::{AlterPartitionError, PartitionState};
    use crate::node::{Reply, PROPOSAL_TIMEOUT_TICKS};

    let mut sim = Sim::new(1);
    let mut rounds = 0;
    let old_leader = loop {
        sim.lossless_round();
        rounds += 1;
        assert!(rounds < 500, "no controller was elected");
        if let Some(l) = sim.agreed_leader() {
            break l;
        }
    };
    let follower = (1..=NODES).find(|&id| id != old_leader).unwrap();
    let (tx, mut rx) = oneshot::channel::<Result<PartitionState, AlterPartitionError>>();
    let topic_id = Uuid::from_u64_pair(1, 1);
    let record = Record::AlterPartition {
        topic_id,
        partition: 0,
        leader: follower as i32,
        leader_epoch: 0,
        partition_epoch: 0,
        isr: vec![follower as i32],
    };
    sim.nodes[(follower - 1) as usize]
        .as_mut()
        .unwrap()
        .take(Input::Alter {
            record,
            reply: Reply::Alter {
                topic_id,
                partition: 0,
                reply: tx,
            },
        });
    // The controller dies before the forwarded proposal reaches it.
    sim.nodes[(old_leader - 1) as usize] = None;
    let mut ticks = 0;
    let answer = loop {
        sim.lossless_round();
        ticks += 1;
        if let Some(answer) = rx.try_recv().unwrap() {
            break answer;
        }
        assert!(ticks <= PROPOSAL_TIMEOUT_TICKS, "never answered");
    };
    let new_leader = sim.agreed_leader();
    assert!(
        matches!(answer, Err(AlterPartitionError::NotController)),
        "answered {answer:?} after {ticks} ticks (new controller {new_leader:?})"
    );
    assert!(
        new_leader.is_some_and(|l| l != old_leader),
        "answered before a new controller was elected ({new_leader:?})"
    );
    assert!(
        ticks < PROPOSAL_TIMEOUT_TICKS / 2,
        "answered only after {ticks} ticks"
    );
}
