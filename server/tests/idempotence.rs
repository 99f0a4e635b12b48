//! Idempotent producers against the real `strom` binary, over raw Kafka
//! protocol requests: InitProducerId, duplicate batches answered with their
//! original offsets, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH,
//! UNKNOWN_PRODUCER_ID, and dedup that survives a SIGKILL.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    InitProducerIdRequest, InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse,
    ProduceRequest, ProduceResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use strom_engine::batch::build_batch_with_producer;

const START_TIMEOUT: Duration = Duration::from_secs(30);
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const TOPIC: &str = "idem";

const NONE: i16 = 0;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;
const NOT_ENOUGH_REPLICAS: i16 = 19;

/// A `strom serve` process on a free 127.0.0.1 port; killed on drop.
struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start(data_dir: &Path) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strom"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--shards",
                "1",
                "--data-dir",
            ])
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("STROM_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn strom");
        let stdout = child.stdout.take().expect("stdout");
        // The broker prints "strom listening on ADDR" once every shard listens.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Some(addr) = line.strip_prefix("strom listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(a) => a,
            Err(e) => {
                let _ = child.kill();
                panic!("strom did not start: {e}");
            }
        };
        Broker { child, addr }
    }

    fn client(&self) -> Client {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match TcpStream::connect(&self.addr) {
                Ok(s) => {
                    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
                    return Client {
                        stream: s,
                        correlation_id: 0,
                    };
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("connect {}: {e}; retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("connect {}: {e}", self.addr),
            }
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Client {
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("idempotence-test")));
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0; 4]);
        header
            .encode(&mut buf, key.request_header_version(version))
            .unwrap();
        req.encode(&mut buf, version).unwrap();
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        self.stream.write_all(&buf).unwrap();

        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).unwrap();
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).unwrap();
        let mut frame = Bytes::from(frame);
        let header_version = if key == ApiKey::ApiVersions {
            0
        } else {
            key.response_header_version(version)
        };
        let rh = ResponseHeader::decode(&mut frame, header_version).unwrap();
        assert_eq!(rh.correlation_id, self.correlation_id);
        Resp::decode(&mut frame, version).unwrap()
    }

    fn create_topic(&mut self) {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(1)]);
        let resp: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 4, &req);
        assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    }

    /// Creates the topic with `min.insync.replicas` set.
    fn create_topic_with_min_insync(&mut self, min_insync: &str) {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(10_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_num_partitions(1)
                .with_replication_factor(1)
                .with_configs(vec![CreatableTopicConfig::default()
                    .with_name(StrBytes::from_static_str("min.insync.replicas"))
                    .with_value(Some(StrBytes::from_string(
                        min_insync.to_string(),
                    )))])]);
        let resp: CreateTopicsResponse = self.call(ApiKey::CreateTopics, 4, &req);
        assert_eq!(resp.topics[0].error_code, NONE, "{resp:?}");
    }

    fn set_min_insync(&mut self, min_insync: &str) {
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str(TOPIC))
                .with_configs(vec![AlterableConfig::default()
                    .with_name(StrBytes::from_static_str("min.insync.replicas"))
                    .with_config_operation(0)
                    .with_value(Some(StrBytes::from_string(min_insync.to_string())))]),
        ]);
        let resp: IncrementalAlterConfigsResponse =
            self.call(ApiKey::IncrementalAlterConfigs, 0, &req);
        assert_eq!(resp.responses[0].error_code, NONE, "{resp:?}");
    }

    fn init_producer_id(&mut self) -> (i64, i16) {
        let req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000);
        let resp: InitProducerIdResponse = self.call(ApiKey::InitProducerId, 1, &req);
        assert_eq!(resp.error_code, NONE, "{resp:?}");
        (resp.producer_id.0, resp.producer_epoch)
    }

    /// Produces one batch of `count` records with acks=all: (error, base offset).
    fn produce(&mut self, pid: i64, epoch: i16, seq: i32, count: usize) -> (i16, i64) {
        let values: Vec<Vec<u8>> = (0..count)
            .map(|i| format!("p{pid}-e{epoch}-s{}", seq as usize + i).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = values.iter().map(|v| v.as_slice()).collect();
        let batch = build_batch_with_producer(1_700_000_000_000, &refs, pid, epoch, seq);
        let req = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(batch)))])]);
        let resp: ProduceResponse = self.call(ApiKey::Produce, 7, &req);
        let p = &resp.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    fn latest_offset(&mut self) -> i64 {
        let req = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(-1)])]);
        let resp: ListOffsetsResponse = self.call(ApiKey::ListOffsets, 1, &req);
        let p = &resp.topics[0].partitions[0];
        assert_eq!(p.error_code, NONE, "{resp:?}");
        p.offset
    }
}

#[test]
fn api_versions_advertises_init_producer_id() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    let resp: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    let k = resp
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::InitProducerId as i16)
        .expect("InitProducerId advertised");
    assert_eq!((k.min_version, k.max_version), (0, 4));
}

#[test]
fn replayed_batch_gets_its_original_offset_and_nothing_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    c.create_topic();
    let (pid, epoch) = c.init_producer_id();
    assert_eq!(epoch, 0);
    assert_eq!(c.produce(pid, epoch, 0, 3), (NONE, 0));
    assert_eq!(c.produce(pid, epoch, 3, 2), (NONE, 3));
    assert_eq!(c.latest_offset(), 5);
    // Retries of both batches: NONE with the original base offsets.
    assert_eq!(c.produce(pid, epoch, 0, 3), (NONE, 0));
    assert_eq!(c.produce(pid, epoch, 3, 2), (NONE, 3));
    assert_eq!(c.latest_offset(), 5, "a duplicate must not be appended");
    assert_eq!(c.produce(pid, epoch, 5, 1), (NONE, 5));
    assert_eq!(c.latest_offset(), 6);
}

#[test]
fn sequence_gap_is_out_of_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    c.create_topic();
    let (pid, epoch) = c.init_producer_id();
    assert_eq!(c.produce(pid, epoch, 0, 2), (NONE, 0));
    assert_eq!(c.produce(pid, epoch, 5, 1).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(c.latest_offset(), 2);
    assert_eq!(c.produce(pid, epoch, 2, 1), (NONE, 2));
}

/// A batch sent behind one that was refused before its append, the refusal
/// clearing in between, gets the refusal's retriable error again. Kafka
/// answers OUT_OF_ORDER_SEQUENCE_NUMBER there, and librdkafka then bumps its
/// epoch and writes every unacknowledged record again under the new one,
/// duplicates included (the fault run found them; see
/// `server/src/api/produce_refusals.rs`). Here the refusal is
/// NOT_ENOUGH_REPLICAS (`min.insync.replicas` 2 on one node), cleared by
/// setting it to 1.
#[test]
fn batch_behind_a_refused_one_gets_the_refusal_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    c.create_topic_with_min_insync("2");
    let (pid, epoch) = c.init_producer_id();
    assert_eq!(c.produce(pid, epoch, 0, 1).0, NOT_ENOUGH_REPLICAS);
    c.set_min_insync("1");
    assert_eq!(c.produce(pid, epoch, 1, 2).0, NOT_ENOUGH_REPLICAS);
    assert_eq!(c.latest_offset(), 0);
    // The client retries both, in order.
    assert_eq!(c.produce(pid, epoch, 0, 1), (NONE, 0));
    assert_eq!(c.produce(pid, epoch, 1, 2), (NONE, 1));
    // The same for a producer the partition knows (a gap in its sequence).
    c.set_min_insync("2");
    assert_eq!(c.produce(pid, epoch, 3, 1).0, NOT_ENOUGH_REPLICAS);
    c.set_min_insync("1");
    assert_eq!(c.produce(pid, epoch, 4, 1).0, NOT_ENOUGH_REPLICAS);
    assert_eq!(c.produce(pid, epoch, 3, 1), (NONE, 3));
    assert_eq!(c.produce(pid, epoch, 4, 1), (NONE, 4));
    // A gap no refusal explains is still out of order.
    assert_eq!(c.produce(pid, epoch, 9, 1).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(c.latest_offset(), 5);
}

/// The batch at the expected sequence never reached this broker (it is in
/// flight to a leader that was cut off, say), the next one was refused here
/// before its append, and the one after arrives once the refusal cleared.
/// The gap is the client's own unacknowledged pipeline, which it sends
/// again in order: the refusal's retriable error, not
/// OUT_OF_ORDER_SEQUENCE_NUMBER (on which librdkafka bumped its epoch and
/// wrote a record twice in the fault run: "base seq 415 > next seq 413
/// caused by previous failed request (NOT_LEADER_FOR_PARTITION, base seq
/// 414..414)").
#[test]
fn batch_behind_a_missing_and_a_refused_one_gets_the_refusal_again() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    c.create_topic_with_min_insync("1");
    let (pid, epoch) = c.init_producer_id();
    assert_eq!(c.produce(pid, epoch, 0, 1), (NONE, 0));
    // Sequence 1 is elsewhere; 2 is refused here.
    c.set_min_insync("2");
    assert_eq!(c.produce(pid, epoch, 2, 1).0, NOT_ENOUGH_REPLICAS);
    c.set_min_insync("1");
    assert_eq!(c.produce(pid, epoch, 3, 1).0, NOT_ENOUGH_REPLICAS);
    assert_eq!(c.latest_offset(), 1);
    // The client sends 1, 2 and 3 again, in order.
    assert_eq!(c.produce(pid, epoch, 1, 1), (NONE, 1));
    assert_eq!(c.produce(pid, epoch, 2, 1), (NONE, 2));
    assert_eq!(c.produce(pid, epoch, 3, 1), (NONE, 3));
    // A refusal below the expected sequence explains nothing.
    c.set_min_insync("2");
    assert_eq!(c.produce(pid, epoch, 4, 1).0, NOT_ENOUGH_REPLICAS);
    c.set_min_insync("1");
    assert_eq!(c.produce(pid, epoch, 4, 1), (NONE, 4));
    assert_eq!(c.produce(pid, epoch, 7, 1).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(c.latest_offset(), 5);
}

#[test]
fn stale_epoch_is_invalid_producer_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    c.create_topic();
    let (pid, _) = c.init_producer_id();
    assert_eq!(c.produce(pid, 0, 0, 1), (NONE, 0));
    // The producer bumped its epoch (KIP-360) and restarted its sequence.
    assert_eq!(c.produce(pid, 1, 0, 1), (NONE, 1));
    assert_eq!(c.produce(pid, 0, 1, 1).0, INVALID_PRODUCER_EPOCH);
    assert_eq!(c.latest_offset(), 2);
}

#[test]
fn unknown_producer_mid_sequence_is_unknown_producer_id() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    c.create_topic();
    let (pid, epoch) = c.init_producer_id();
    assert_eq!(c.produce(pid, epoch, 7, 1).0, UNKNOWN_PRODUCER_ID);
    assert_eq!(c.latest_offset(), 0);
}

#[test]
fn ids_and_dedup_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    c.create_topic();
    let (pid, epoch) = c.init_producer_id();
    assert_eq!(c.produce(pid, epoch, 0, 2), (NONE, 0));
    assert_eq!(c.produce(pid, epoch, 2, 2), (NONE, 2));
    drop(c);
    broker.kill();

    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    // acks=all batches were synced, so the log (and the producer state
    // rebuilt from it) still holds them.
    assert_eq!(c.latest_offset(), 4);
    assert_eq!(
        c.produce(pid, epoch, 2, 2),
        (NONE, 2),
        "retry after a crash is a duplicate"
    );
    assert_eq!(c.produce(pid, epoch, 0, 2), (NONE, 0));
    assert_eq!(c.latest_offset(), 4);
    assert_eq!(c.produce(pid, epoch, 5, 1).0, OUT_OF_ORDER_SEQUENCE_NUMBER);
    assert_eq!(c.produce(pid, epoch, 4, 1), (NONE, 4));
    let (pid2, _) = c.init_producer_id();
    assert!(
        pid2 > pid,
        "producer id {pid2} reused after a restart (had {pid})"
    );

    // A clean restart (snapshot on close) keeps the state too.
    drop(c);
    let pid_of_child = broker.child.id() as i32;
    // SAFETY: plain kill(2) of our own child process.
    unsafe { libc::kill(pid_of_child, libc::SIGTERM) };
    let mut broker = broker;
    let deadline = Instant::now() + START_TIMEOUT;
    while broker.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "strom did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let broker = Broker::start(dir.path());
    let mut c = broker.client();
    assert_eq!(c.latest_offset(), 5);
    assert_eq!(c.produce(pid, epoch, 4, 1), (NONE, 4));
    assert_eq!(c.produce(pid, epoch, 5, 1), (NONE, 5));
}
