//! A minimal blocking Kafka-protocol client: framing, version negotiation
//! and the admin calls a benchmark needs. It works against any broker that
//! speaks the protocol; nothing here knows about Strom.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest, ProducerId, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;

/// Largest response frame accepted; bigger means a broken stream.
pub const MAX_FRAME_BYTES: usize = 256 << 20;
pub const CLIENT_ID: &str = "strom-bench";
/// How long an admin call or a produce ack may take before the run fails.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Highest versions this client uses. Fetch and Produce stay below the
/// versions that address topics by id; Metadata below 13 for the same reason.
pub const PRODUCE_MAX_VERSION: i16 = 9;
pub const FETCH_MAX_VERSION: i16 = 12;
pub const METADATA_MAX_VERSION: i16 = 12;
pub const LIST_OFFSETS_MAX_VERSION: i16 = 7;
pub const CREATE_TOPICS_MAX_VERSION: i16 = 7;
/// v0-v4 carry the same fields for a producer without transactions.
pub const INIT_PRODUCER_ID_MAX_VERSION: i16 = 4;
const API_VERSIONS_VERSION: i16 = 3;

/// Kafka error codes the harness acts on.
pub const ERR_NONE: i16 = 0;
pub const ERR_OFFSET_OUT_OF_RANGE: i16 = 1;
pub const ERR_LEADER_NOT_AVAILABLE: i16 = 5;
pub const ERR_TOPIC_ALREADY_EXISTS: i16 = 36;
const ERR_UNSUPPORTED_VERSION: i16 = 35;

/// How long a transaction may stay open, as InitProducerId asks for it
/// (Kafka's `transaction.timeout.ms` default). Unused without a
/// transactional id, but part of the request.
const TRANSACTION_TIMEOUT_MS: i32 = 60_000;

/// A Kafka error code with its name, e.g. `45 OUT_OF_ORDER_SEQUENCE_NUMBER`.
pub fn describe_error(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        None => format!("{code} NONE"),
        Some(ResponseError::Unknown(_)) => code.to_string(),
        Some(e) => format!("{code} {}", upper_snake(&e.to_string())),
    }
}

/// `OutOfOrderSequenceNumber` -> `OUT_OF_ORDER_SEQUENCE_NUMBER`, the name
/// Kafka's documentation uses.
fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Errors a Kafka client retries (after a metadata refresh).
pub fn is_retriable(code: i16) -> bool {
    // UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER,
    // REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, KAFKA_STORAGE_ERROR,
    // FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH.
    matches!(code, 3 | 5 | 6 | 7 | 19 | 56 | 74 | 75)
}

/// The broker's supported version range per API key.
#[derive(Debug, Clone, Default)]
pub struct ApiVersionTable(HashMap<i16, (i16, i16)>);

impl ApiVersionTable {
    /// Highest version both sides support for `R`, capped at `cap`.
    pub fn pick<R: Request>(&self, cap: i16) -> Result<i16> {
        let name = ApiKey::try_from(R::KEY)
            .map(|k| format!("{k:?}"))
            .unwrap_or_else(|_| R::KEY.to_string());
        let (bmin, bmax) = *self
            .0
            .get(&R::KEY)
            .ok_or_else(|| anyhow!("broker does not support {name}"))?;
        let lo = R::VERSIONS.min.max(bmin);
        let hi = R::VERSIONS.max.min(cap).min(bmax);
        if lo > hi {
            bail!(
                "no common {name} version: broker {bmin}..={bmax}, client {}..={}",
                R::VERSIONS.min,
                R::VERSIONS.max.min(cap)
            );
        }
        Ok(hi)
    }
}

/// Encodes one request frame (size prefix, header, body).
pub fn encode_request<R: Request>(correlation_id: i32, version: i16, req: &R) -> Result<Bytes> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from(CLIENT_ID)));
    let header_version = R::header_version(version);
    let size = header.compute_size(header_version)? + req.compute_size(version)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(size as i32);
    header.encode(&mut buf, header_version)?;
    req.encode(&mut buf, version)?;
    debug_assert_eq!(buf.len(), 4 + size);
    Ok(buf.freeze())
}

/// Reads one size-prefixed frame.
pub fn read_frame(r: &mut impl Read) -> Result<Bytes> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).context("reading frame size")?;
    let n = i32::from_be_bytes(len);
    if n < 4 || n as usize > MAX_FRAME_BYTES {
        bail!("bad response frame size {n}");
    }
    let mut v = vec![0u8; n as usize];
    r.read_exact(&mut v).context("reading frame body")?;
    Ok(Bytes::from(v))
}

/// Reads one size-prefixed frame into `buf`'s storage, which is reused once
/// the previous frame's `Bytes` are dropped (no fresh allocation, and no
/// page faults, per large fetch response).
pub fn read_frame_reusing(r: &mut impl Read, buf: &mut BytesMut) -> Result<Bytes> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).context("reading frame size")?;
    let n = i32::from_be_bytes(len);
    if n < 4 || n as usize > MAX_FRAME_BYTES {
        bail!("bad response frame size {n}");
    }
    buf.clear();
    buf.resize(n as usize, 0);
    r.read_exact(&mut buf[..]).context("reading frame body")?;
    Ok(buf.split().freeze())
}

/// Decodes a response frame for request type `R` at `version`.
pub fn decode_response<R: Request>(mut frame: Bytes, version: i16) -> Result<(i32, R::Response)> {
    let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))?;
    let body = R::Response::decode(&mut frame, version)?;
    Ok((header.correlation_id, body))
}

/// One connection with negotiated versions.
pub struct Conn {
    pub stream: TcpStream,
    pub versions: ApiVersionTable,
    pub addr: String,
    next_correlation_id: i32,
}

impl Conn {
    pub fn connect(addr: &str) -> Result<Conn> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REQUEST_TIMEOUT))?;
        let mut conn = Conn {
            stream,
            versions: ApiVersionTable::default(),
            addr: addr.to_string(),
            next_correlation_id: 0,
        };
        conn.negotiate()
            .with_context(|| format!("ApiVersions with {addr}"))?;
        Ok(conn)
    }

    pub fn next_correlation_id(&mut self) -> i32 {
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        self.next_correlation_id
    }

    fn negotiate(&mut self) -> Result<()> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from(CLIENT_ID))
            .with_client_software_version(StrBytes::from(env!("CARGO_PKG_VERSION")));
        let corr = self.next_correlation_id();
        self.stream
            .write_all(&encode_request(corr, API_VERSIONS_VERSION, &req)?)?;
        let mut frame = read_frame(&mut self.stream)?;
        // The ApiVersions response header is always v0.
        let header = ResponseHeader::decode(&mut frame, 0)?;
        if header.correlation_id != corr {
            bail!("correlation id {} != {corr}", header.correlation_id);
        }
        // A broker that does not know our version answers with a v0 body
        // (KIP-511) that still lists its ranges.
        let error = if frame.len() >= 2 {
            i16::from_be_bytes([frame[0], frame[1]])
        } else {
            -1
        };
        let version = if error == ERR_UNSUPPORTED_VERSION {
            0
        } else {
            API_VERSIONS_VERSION
        };
        let resp = ApiVersionsResponse::decode(&mut frame, version)?;
        if resp.error_code != ERR_NONE && resp.error_code != ERR_UNSUPPORTED_VERSION {
            bail!("ApiVersions error {}", resp.error_code);
        }
        self.versions = ApiVersionTable(
            resp.api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        );
        Ok(())
    }

    /// Sends `req` and waits for its response.
    pub fn call<R: Request>(&mut self, req: &R, cap: i16) -> Result<R::Response> {
        let version = self.versions.pick::<R>(cap)?;
        let corr = self.next_correlation_id();
        self.stream
            .write_all(&encode_request(corr, version, req)?)?;
        let frame = read_frame(&mut self.stream)?;
        let (got, resp) = decode_response::<R>(frame, version)?;
        if got != corr {
            bail!("correlation id {got} != {corr}");
        }
        Ok(resp)
    }
}

/// The id and epoch an idempotent producer stamps on its batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// How long InitProducerId is retried while the broker answers that its
/// producer id manager or transaction coordinator is still loading.
const INIT_PRODUCER_ID_RETRY_FOR: Duration = Duration::from_secs(30);

/// Errors InitProducerId answers while the broker gets ready, which clients
/// retry: COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
/// NOT_COORDINATOR (Kafka's fresh cluster answers the first of these until
/// its `__transaction_state` is loaded).
fn init_producer_id_retriable(code: i16) -> bool {
    matches!(code, 14..=16)
}

/// Asks for a producer id for an idempotent producer without transactions
/// (InitProducerId with a null transactional id), retrying while the
/// broker is still getting ready.
pub fn init_producer_id(conn: &mut Conn) -> Result<ProducerIdentity> {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(TRANSACTION_TIMEOUT_MS)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let deadline = Instant::now() + INIT_PRODUCER_ID_RETRY_FOR;
    let resp = loop {
        let resp = conn
            .call(&req, INIT_PRODUCER_ID_MAX_VERSION)
            .with_context(|| format!("InitProducerId with {}", conn.addr))?;
        if !init_producer_id_retriable(resp.error_code) || Instant::now() >= deadline {
            break resp;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    if resp.error_code != ERR_NONE {
        bail!(
            "InitProducerId with {}: error {}",
            conn.addr,
            describe_error(resp.error_code)
        );
    }
    let identity = ProducerIdentity {
        producer_id: resp.producer_id.0,
        producer_epoch: resp.producer_epoch,
    };
    if identity.producer_id < 0 || identity.producer_epoch < 0 {
        bail!(
            "InitProducerId with {}: no error but producer id {} epoch {}",
            conn.addr,
            identity.producer_id,
            identity.producer_epoch
        );
    }
    Ok(identity)
}

/// Where each partition of a topic lives.
#[derive(Debug, Clone)]
pub struct TopicLayout {
    pub name: String,
    /// (partition, leader address), sorted by partition.
    pub partitions: Vec<(i32, String)>,
}

/// Creates the topics (an existing topic with that name is an error, so a
/// run never measures on top of old data).
pub fn create_topics(
    conn: &mut Conn,
    names: &[String],
    partitions: u32,
    replication_factor: i16,
    configs: &[(String, String)],
) -> Result<()> {
    let topics = names
        .iter()
        .map(|n| {
            CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(n.clone())))
                .with_num_partitions(partitions as i32)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(k.clone()))
                                .with_value(Some(StrBytes::from_string(v.clone())))
                        })
                        .collect(),
                )
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(REQUEST_TIMEOUT.as_millis() as i32);
    let resp = conn.call(&req, CREATE_TOPICS_MAX_VERSION)?;
    for t in resp.topics {
        if t.error_code != ERR_NONE {
            let msg = t
                .error_message
                .as_ref()
                .map(|m| m.as_str().to_string())
                .unwrap_or_default();
            bail!(
                "CreateTopics {}: error {} {msg}",
                t.name.0.as_str(),
                t.error_code
            );
        }
    }
    Ok(())
}

/// Polls Metadata until every partition of `names` has a leader.
pub fn wait_for_layout(
    conn: &mut Conn,
    names: &[String],
    timeout: Duration,
) -> Result<Vec<TopicLayout>> {
    let deadline = Instant::now() + timeout;
    loop {
        let req = MetadataRequest::default()
            .with_topics(Some(
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName(StrBytes::from_string(n.clone()))))
                    })
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        let resp = conn.call(&req, METADATA_MAX_VERSION)?;
        let brokers: HashMap<BrokerId, String> = resp
            .brokers
            .iter()
            .map(|b| (b.node_id, format!("{}:{}", b.host.as_str(), b.port)))
            .collect();
        let mut layouts = Vec::new();
        let mut missing = None;
        for name in names {
            let Some(t) = resp
                .topics
                .iter()
                .find(|t| t.name.as_ref().map(|n| n.0.as_str()) == Some(name.as_str()))
            else {
                missing = Some(format!("topic {name} not in metadata"));
                break;
            };
            if t.error_code != ERR_NONE {
                missing = Some(format!("topic {name}: error {}", t.error_code));
                break;
            }
            let mut parts = Vec::new();
            for p in &t.partitions {
                match brokers.get(&p.leader_id) {
                    Some(addr) if p.error_code == ERR_NONE => {
                        parts.push((p.partition_index, addr.clone()))
                    }
                    _ => {
                        missing = Some(format!(
                            "{name}-{} has no leader (error {})",
                            p.partition_index, p.error_code
                        ))
                    }
                }
            }
            parts.sort();
            layouts.push(TopicLayout {
                name: name.clone(),
                partitions: parts,
            });
        }
        if missing.is_none() {
            return Ok(layouts);
        }
        if Instant::now() >= deadline {
            bail!(
                "metadata not ready after {timeout:?}: {}",
                missing.unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Why `list_offsets` failed: a partition's error code, or the call.
#[derive(Debug, thiserror::Error)]
pub enum ListOffsetsError {
    #[error("{1}")]
    Partition(i16, String),
    #[error(transparent)]
    Call(#[from] anyhow::Error),
}

/// The offsets at `timestamp` (-1 latest, -2 earliest) of `partitions`.
pub fn list_offsets(
    conn: &mut Conn,
    topic: &str,
    partitions: &[i32],
    timestamp: i64,
) -> Result<HashMap<i32, i64>, ListOffsetsError> {
    let req = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions(
                partitions
                    .iter()
                    .map(|&p| {
                        ListOffsetsPartition::default()
                            .with_partition_index(p)
                            .with_timestamp(timestamp)
                    })
                    .collect(),
            )]);
    let resp = conn.call(&req, LIST_OFFSETS_MAX_VERSION)?;
    let mut out = HashMap::new();
    for t in resp.topics {
        for p in t.partitions {
            if p.error_code != ERR_NONE {
                return Err(ListOffsetsError::Partition(
                    p.error_code,
                    format!(
                        "ListOffsets {topic}-{}: error {}",
                        p.partition_index, p.error_code
                    ),
                ));
            }
            out.insert(p.partition_index, p.offset);
        }
    }
    for p in partitions {
        if !out.contains_key(p) {
            return Err(anyhow::anyhow!("ListOffsets: no answer for {topic}-{p}").into());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::ProduceRequest;

    #[test]
    fn frame_round_trip() {
        let req = ProduceRequest::default().with_acks(1).with_timeout_ms(1000);
        let frame = encode_request(7, 9, &req).unwrap();
        let size = i32::from_be_bytes(frame[0..4].try_into().unwrap()) as usize;
        assert_eq!(size + 4, frame.len());
        let mut r = &frame[..];
        let body = read_frame(&mut r).unwrap();
        assert_eq!(body.len(), size);
    }

    #[test]
    fn error_codes_are_named() {
        assert_eq!(describe_error(45), "45 OUT_OF_ORDER_SEQUENCE_NUMBER");
        assert_eq!(describe_error(46), "46 DUPLICATE_SEQUENCE_NUMBER");
        assert_eq!(describe_error(59), "59 UNKNOWN_PRODUCER_ID");
        assert_eq!(describe_error(-1), "-1 UNKNOWN_SERVER_ERROR");
        assert_eq!(describe_error(30000), "30000");
        assert_eq!(describe_error(0), "0 NONE");
    }

    #[test]
    fn picks_the_highest_common_version() {
        let t = ApiVersionTable([(0i16, (0i16, 11i16)), (1, (4, 8))].into_iter().collect());
        assert_eq!(t.pick::<ProduceRequest>(PRODUCE_MAX_VERSION).unwrap(), 9);
        assert_eq!(
            t.pick::<kafka_protocol::messages::FetchRequest>(FETCH_MAX_VERSION)
                .unwrap(),
            8
        );
        assert!(t.pick::<MetadataRequest>(12).is_err());
    }
}
