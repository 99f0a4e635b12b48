//! An in-process broker for the `handler` fuzz target: one shard on a
//! fresh data directory, with its group coordinator and a seeded topic,
//! that runs request frames through the same handler the connections use,
//! minus the panic containment (a panic is what the fuzzer looks for).
//!
//! A fuzz input is a short sequence of request frames (`split_frames`), so
//! the fuzzer reaches stateful paths: a produce then a fetch, a join then a
//! sync. Each input gets a broker of its own, so a crash replays from its
//! input alone. Every frame's handler runs as a detached task, as a
//! connection spawns it, and is awaited for at most `FRAME_WAIT_MS`: a long
//! poll or a rebalance that outlives it keeps running, like the request of
//! a client that gave up. At the end the broker shuts down as `strom` does
//! on SIGTERM, and every handler still running must finish within
//! `DRAIN_DEADLINE_MS`, or the input is reported as a hang.
//!
//! Checks on every reply: a response frame's size prefix matches its
//! length and it echoes the request's correlation id; a Fetch response
//! (hand-encoded, `api::fetch`) decodes as the crate's `FetchResponse`.
//! Compiled only for tests and the `fuzzing` feature.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::future::or;
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Decodable;

use crate::api::admin::{create_topic_in, NewTopic, Replication};
use crate::config::BrokerConfig;
use crate::conn_limits::ConnectionLimits;
use crate::metadata::Metadata;
use crate::shard::Shard;
use crate::wire::Reply;

/// Frames taken from one input at most: enough for a join, sync,
/// commit, fetch sequence; few enough that every input stays quick.
pub const FRAMES_PER_INPUT_MAX: usize = 8;
/// How long a frame's handler is awaited before the next frame is sent.
pub const FRAME_WAIT_MS: u64 = 50;
/// How long the handlers still running at the end of an input may take to
/// finish once the broker shuts down.
pub const DRAIN_DEADLINE_MS: u64 = 5_000;
/// The topic every broker starts with, named as the seed corpora name it.
pub const SEED_TOPIC: &str = "seed-topic";
pub const SEED_TOPIC_PARTITIONS: i32 = 2;

/// Splits an input into request frames: each is a 2-byte big-endian length
/// and that many bytes (the last one cut short where the input ends).
pub fn split_frames(mut data: &[u8]) -> Vec<Bytes> {
    let mut frames = Vec::new();
    while data.len() >= 2 && frames.len() < FRAMES_PER_INPUT_MAX {
        let len = usize::from(data.get_u16());
        let take = len.min(data.len());
        let (frame, rest) = data.split_at(take);
        frames.push(Bytes::copy_from_slice(frame));
        data = rest;
    }
    frames
}

/// Joins frames into one input, as `split_frames` reads it back (the seed
/// corpus writer's half). Frames longer than `u16::MAX` are cut.
pub fn join_frames(frames: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for frame in frames {
        let len = u16::try_from(frame.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(frame.get(..usize::from(len)).unwrap_or(frame));
    }
    out
}

/// One shard with its coordinator, on `dir`.
pub struct HandlerBroker {
    shard: Rc<Shard>,
    running: Vec<glommio::task::JoinHandle<Reply>>,
    /// The most partition logs seen open at once (the fuzz target's heap
    /// cap allows each its tail chunk).
    logs_open_max: usize,
}

impl HandlerBroker {
    /// Starts a broker on an empty `dir` with `SEED_TOPIC` created. Must run
    /// inside a glommio executor.
    pub async fn start(dir: &Path) -> anyhow::Result<HandlerBroker> {
        let mut config = BrokerConfig {
            data_dir: dir.to_path_buf(),
            shards: Some(1),
            ..BrokerConfig::default()
        };
        // One offsets partition: each input opens its logs afresh.
        config.groups.offsets_topic_num_partitions = 1;
        config.groups.initial_rebalance_delay_ms = 0;
        let limits = Arc::new(ConnectionLimits::new(
            config.max_connections,
            config.max_connections_per_ip(),
        ));
        let shard = Rc::new(Shard::new(0, 1, Arc::new(config), None, limits));
        shard.apply_metadata(Arc::new(Metadata::load(dir)?)).await;
        crate::coordinators::start_shard(&shard).await?;
        shard
            .update_metadata(|m| {
                create_topic_in(
                    m,
                    0,
                    NewTopic {
                        name: SEED_TOPIC.to_string(),
                        partitions: SEED_TOPIC_PARTITIONS,
                        configs: Default::default(),
                        replication: Replication::Factor(1),
                    },
                )
            })
            .await?
            .map_err(|(code, msg)| anyhow::anyhow!("creating {SEED_TOPIC}: {code} {msg}"))?;
        let mut broker = HandlerBroker {
            shard,
            running: Vec::new(),
            logs_open_max: 0,
        };
        broker.count_logs();
        Ok(broker)
    }

    fn count_logs(&mut self) {
        // The `__consumer_offsets` logs are among them.
        let open = self.shard.all_logs().len();
        self.logs_open_max = self.logs_open_max.max(open);
    }

    /// Runs one request frame (no size prefix), checks its reply and
    /// returns it. A handler that takes longer than `FRAME_WAIT_MS` is left
    /// running (and `None` returned).
    pub async fn handle(&mut self, frame: Bytes) -> Option<Reply> {
        let correlation_id = frame
            .get(4..8)
            .map(|b| i32::from_be_bytes(<[u8; 4]>::try_from(b).unwrap_or_default()));
        let api = frame.get(0..4).and_then(|b| {
            let key = ApiKey::try_from(i16::from_be_bytes([*b.first()?, *b.get(1)?])).ok()?;
            Some((key, i16::from_be_bytes([*b.get(2)?, *b.get(3)?])))
        });
        let shard = self.shard.clone();
        let mut task =
            glommio::spawn_local(crate::api::handle_frame_uncontained(shard, frame)).detach();
        let waited = or(async { Some((&mut task).await) }, async {
            glommio::timer::sleep(Duration::from_millis(FRAME_WAIT_MS)).await;
            None
        })
        .await;
        self.count_logs();
        match waited {
            Some(Some(reply)) => {
                check_reply(&reply, correlation_id, api);
                Some(reply)
            }
            // A detached task's handle yields `None` only when it panicked,
            // and the fuzz target aborts on the panic first.
            Some(None) => None,
            None => {
                self.running.push(task);
                None
            }
        }
    }

    /// Shuts the broker down as `strom` does and waits for every handler
    /// still running. Panics (a finding) when one outlives
    /// `DRAIN_DEADLINE_MS`. Returns the most partition logs that were open
    /// at once.
    pub async fn stop(mut self) -> usize {
        self.shard.begin_shutdown();
        crate::coordinators::stop_shard().await;
        for task in std::mem::take(&mut self.running) {
            let finished = or(async { task.await.is_some() }, async {
                glommio::timer::sleep(Duration::from_millis(DRAIN_DEADLINE_MS)).await;
                false
            })
            .await;
            assert!(
                finished,
                "a request handler still ran {DRAIN_DEADLINE_MS} ms after shutdown began"
            );
        }
        // Handlers that finished while draining may have opened more.
        self.count_logs();
        self.shard.close_all_logs().await;
        self.logs_open_max
    }
}

/// Checks what a handler answered: a frame whose size prefix matches its
/// length and whose header echoes the request's correlation id, and for
/// Fetch, a body the crate's decoder reads.
fn check_reply(reply: &Reply, correlation_id: Option<i32>, api: Option<(ApiKey, i16)>) {
    let Reply::Frame(chunks) = reply else { return };
    let mut frame = BytesMut::new();
    for chunk in chunks {
        frame.extend_from_slice(chunk);
    }
    let mut frame = frame.freeze();
    assert!(
        frame.len() >= 8,
        "a response frame of {} bytes",
        frame.len()
    );
    let size = frame.get_i32();
    assert_eq!(
        usize::try_from(size).ok(),
        Some(frame.len()),
        "a response frame's size prefix does not match its length"
    );
    let Some((api_key, version)) = api else {
        return;
    };
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let header = ResponseHeader::decode(&mut frame, header_version);
    assert_eq!(
        header.ok().map(|h| h.correlation_id),
        correlation_id,
        "a response that does not echo its request's correlation id"
    );
    if api_key == ApiKey::Fetch {
        if let Err(e) = FetchResponse::decode(&mut frame, version) {
            panic!("a Fetch v{version} response that does not decode: {e}");
        }
    }
}

/// Where inputs' brokers live: `/dev/shm` when there is one (fsync costs
/// nothing there, so the fuzzer runs hundreds of inputs a second), else
/// the temp dir.
pub fn scratch_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// A fresh directory for one input's broker under `parent`.
pub fn input_dir(parent: &Path, n: u64) -> PathBuf {
    parent.join(format!("input-{n}"))
}

/// Runs one fuzz input against a fresh broker on `dir` (created, then
/// removed). Must run inside a glommio executor. Returns the most
/// partition logs that were open at once.
pub async fn run_input(dir: &Path, data: &[u8]) -> usize {
    let _ = std::fs::remove_dir_all(dir);
    let mut broker = match HandlerBroker::start(dir).await {
        Ok(b) => b,
        Err(e) => panic!("starting the in-process broker failed: {e}"),
    };
    for frame in split_frames(data) {
        let _ = broker.handle(frame).await;
    }
    let logs_open_max = broker.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    logs_open_max
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_as_they_were_joined() {
        let a: &[u8] = b"first";
        let b: &[u8] = b"";
        let c: &[u8] = &[7u8; 300];
        let joined = join_frames(&[a, b, c]);
        let split = split_frames(&joined);
        assert_eq!(split, vec![Bytes::from(a), Bytes::from(b), Bytes::from(c)]);
        // Cut short: the last frame is what is left.
        let cut = split_frames(joined.get(..joined.len() - 100).unwrap());
        assert_eq!(cut.last().map(|f| f.len()), Some(200));
        // At most FRAMES_PER_INPUT_MAX frames.
        let many = join_frames(&[a; 20]);
        assert_eq!(split_frames(&many).len(), FRAMES_PER_INPUT_MAX);
    }

    fn response_body<T: Decodable>(reply: Option<Reply>, key: ApiKey, version: i16) -> T {
        let Some(Reply::Frame(chunks)) = reply else {
            panic!("{key:?}: no response frame");
        };
        let mut frame: Bytes = chunks.concat().into();
        frame.advance(4);
        ResponseHeader::decode(&mut frame, key.response_header_version(version)).unwrap();
        T::decode(&mut frame, version).unwrap()
    }

    /// The seeds reach the handlers' success paths, not only their errors:
    /// the produce-then-fetch seed appends a batch and reads it back.
    #[test]
    fn the_produce_fetch_seed_appends_and_reads_back() {
        use kafka_protocol::messages::ProduceResponse;
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/handler/seq-produce-fetch");
        let frames = split_frames(&std::fs::read(path).unwrap());
        let version = |f: &Bytes| i16::from_be_bytes([f[2], f[3]]);
        let scratch = tempfile::tempdir_in(scratch_parent()).unwrap();
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let mut broker = HandlerBroker::start(scratch.path()).await.unwrap();
                let (produce, fetch) = (frames[0].clone(), frames[1].clone());
                let (pv, fv) = (version(&produce), version(&fetch));
                let produced: ProduceResponse =
                    response_body(broker.handle(produce).await, ApiKey::Produce, pv);
                let partition = &produced.responses[0].partition_responses[0];
                assert_eq!((partition.error_code, partition.base_offset), (0, 0));
                let fetched: FetchResponse =
                    response_body(broker.handle(fetch).await, ApiKey::Fetch, fv);
                let partition = &fetched.responses[0].partitions[0];
                assert_eq!(partition.error_code, 0);
                assert!(partition.high_watermark > 0);
                assert!(partition.records.as_ref().is_some_and(|r| !r.is_empty()));
                assert_eq!(
                    broker.stop().await,
                    3,
                    "the seed topic's 2 logs and 1 offsets log"
                );
            });
    }

    /// The `handler` target's seed corpus and committed regressions replay
    /// here, on the ordinary test run.
    #[test]
    fn handler_fuzz_corpus_and_regressions_replay() {
        let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut inputs: Vec<PathBuf> = std::fs::read_dir(fuzz.join("corpus/handler"))
            .expect("the handler seed corpus is committed")
            .map(|e| e.unwrap().path())
            .collect();
        assert!(
            inputs.len() >= 10,
            "the handler seed corpus has {} inputs",
            inputs.len()
        );
        if let Ok(entries) = std::fs::read_dir(fuzz.join("regressions/handler")) {
            inputs.extend(entries.map(|e| e.unwrap().path()));
        }
        let scratch = tempfile::tempdir_in(scratch_parent()).unwrap();
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        for (n, path) in inputs.iter().enumerate() {
            let data = std::fs::read(path).unwrap();
            let t = std::time::Instant::now();
            ex.run(run_input(&input_dir(scratch.path(), n as u64), &data));
            println!("replayed {} in {:?}", path.display(), t.elapsed());
        }
    }
}
