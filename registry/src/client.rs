//! A small Kafka client of the registry's own broker, over loopback.
//!
//! It speaks just what the registry needs of the `_schemas` topic:
//! CreateTopics (once, at start), Produce with acks=all, Fetch from an
//! offset (at once, or waiting for records) and, in a cluster, Metadata to
//! find the leader of `_schemas` partition 0. Requests go one at a time
//! over one connection; the registry's write lock already serializes them. Frames are kafka-protocol's encoders;
//! record batches are its `RecordBatchEncoder`/`RecordBatchDecoder`.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    BrokerId, CreateTopicsRequest, FetchRequest, MetadataRequest, ProduceRequest, RequestHeader,
    ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CLIENT_ID: &str = "strom-schema-registry";
/// Versions this client uses: all are within what Strom advertises and
/// what real clients exercise against it (Produce 3-9, Fetch 4-12,
/// CreateTopics 2-7).
const PRODUCE_VERSION: i16 = 8;
const FETCH_VERSION: i16 = 11;
const CREATE_TOPICS_VERSION: i16 = 5;
const METADATA_VERSION: i16 = 9;
/// How long one request may take before the registry reports a store error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the broker may take to append with acks=all.
const PRODUCE_TIMEOUT_MS: i32 = 30_000;
/// Largest response frame accepted; bigger means a broken stream.
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// Bytes one Fetch asks for; the registry reads in a loop until the end.
const FETCH_MAX_BYTES: i32 = 8 << 20;
/// Size of a record batch's header fields before `batchLength` counts:
/// baseOffset (8) and batchLength (4).
const BATCH_LENGTH_PREFIX_BYTES: usize = 12;

const ERR_NONE: i16 = 0;
const ERR_TOPIC_ALREADY_EXISTS: i16 = 36;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("connection to the broker: {0}")]
    Io(#[from] std::io::Error),
    #[error("broker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("encoding or decoding a Kafka message: {0}")]
    Codec(String),
    #[error("broker answered error code {code} to {what}")]
    Broker { what: &'static str, code: i16 },
    #[error("broker answered {0}")]
    Unexpected(&'static str),
    #[error("_schemas partition 0 has no leader now")]
    NoLeader,
}

fn codec(e: impl std::fmt::Display) -> ClientError {
    ClientError::Codec(e.to_string())
}

/// Where partition 0 of a topic is led, as a broker's Metadata says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// -1: no leader now (its broker is fenced, or not yet elected).
    pub node_id: i32,
    /// The leader's Kafka listener, `host:port`; `None` without a leader.
    pub addr: Option<String>,
}

/// One record read from the log.
#[derive(Debug, Clone)]
pub struct LogRecord {
    pub offset: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// What one Fetch returned: records at or after the asked offset, and the
/// partition's high watermark (the end a reader catches up to).
#[derive(Debug)]
pub struct Fetched {
    pub records: Vec<LogRecord>,
    pub high_watermark: i64,
}

pub struct KafkaClient {
    addr: String,
    stream: Option<TcpStream>,
    correlation_id: i32,
}

impl KafkaClient {
    pub fn new(addr: String) -> KafkaClient {
        KafkaClient {
            addr,
            stream: None,
            correlation_id: 0,
        }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Points the client at another broker; the connection is dropped
    /// when the address changes.
    pub fn set_addr(&mut self, addr: &str) {
        if self.addr != addr {
            self.addr = addr.to_string();
            self.stream = None;
        }
    }

    /// Sends one request and reads its response. A failed exchange drops
    /// the connection, so the next call starts on a fresh one.
    async fn call<R: Request>(
        &mut self,
        version: i16,
        req: &R,
    ) -> Result<R::Response, ClientError> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(version, req)).await;
        match result {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(ClientError::Timeout(REQUEST_TIMEOUT))
            }
        }
    }

    async fn exchange<R: Request>(
        &mut self,
        version: i16,
        req: &R,
    ) -> Result<R::Response, ClientError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let frame = encode_request(correlation_id, version, req)?;
        if self.stream.is_none() {
            let s = TcpStream::connect(&self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or(ClientError::Unexpected("no connection"))?;
        stream.write_all(&frame).await?;
        let size = stream.read_i32().await?;
        let size = usize::try_from(size)
            .ok()
            .filter(|n| *n <= MAX_RESPONSE_BYTES)
            .ok_or(ClientError::Unexpected("a bad frame size"))?;
        let mut buf = vec![0u8; size];
        stream.read_exact(&mut buf).await?;
        let mut buf = Bytes::from(buf);
        let header = ResponseHeader::decode(&mut buf, R::Response::header_version(version))
            .map_err(codec)?;
        if header.correlation_id != correlation_id {
            return Err(ClientError::Unexpected("a response to another request"));
        }
        R::Response::decode(&mut buf, version).map_err(codec)
    }

    /// Creates `topic` with one partition and `configs`; an existing topic
    /// is fine.
    pub async fn ensure_topic(
        &mut self,
        topic: &str,
        configs: &[(&str, &str)],
    ) -> Result<(), ClientError> {
        let configs = configs
            .iter()
            .map(|(k, v)| {
                CreatableTopicConfig::default()
                    .with_name(StrBytes::from_string((*k).to_string()))
                    .with_value(Some(StrBytes::from_string((*v).to_string())))
            })
            .collect();
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topics(vec![CreatableTopic::default()
                .with_name(topic_name(topic))
                .with_num_partitions(1)
                .with_replication_factor(-1)
                .with_configs(configs)]);
        let resp = self.call(CREATE_TOPICS_VERSION, &req).await?;
        let t = resp
            .topics
            .first()
            .ok_or(ClientError::Unexpected("no topic in CreateTopics"))?;
        match t.error_code {
            ERR_NONE | ERR_TOPIC_ALREADY_EXISTS => Ok(()),
            code => Err(ClientError::Broker {
                what: "CreateTopics",
                code,
            }),
        }
    }

    /// Appends `records` (key, value or tombstone) to partition 0 of
    /// `topic` as one batch with acks=all; returns the batch's base offset.
    pub async fn produce(
        &mut self,
        topic: &str,
        records: &[(Bytes, Option<Bytes>)],
        now_ms: i64,
    ) -> Result<i64, ClientError> {
        let batch = encode_batch(records, now_ms)?;
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(PRODUCE_TIMEOUT_MS)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch))])]);
        let resp = self.call(PRODUCE_VERSION, &req).await?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partition_responses.first())
            .ok_or(ClientError::Unexpected("no partition in Produce"))?;
        check("Produce", p.error_code)?;
        Ok(p.base_offset)
    }

    /// The leader of partition 0 of `topic`, as the broker's Metadata says.
    pub async fn leader(&mut self, topic: &str) -> Result<Leader, ClientError> {
        let req = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
            ]))
            .with_allow_auto_topic_creation(false);
        let resp = self.call(METADATA_VERSION, &req).await?;
        let t = resp
            .topics
            .first()
            .ok_or(ClientError::Unexpected("no topic in Metadata"))?;
        check("Metadata", t.error_code)?;
        let node_id = t
            .partitions
            .iter()
            .find(|p| p.partition_index == 0)
            .map_or(-1, |p| p.leader_id.0);
        let addr = resp
            .brokers
            .iter()
            .find(|b| b.node_id.0 == node_id && node_id >= 0)
            .map(|b| format!("{}:{}", b.host.as_str(), b.port));
        Ok(Leader { node_id, addr })
    }

    /// Reads partition 0 of `topic` from `offset`, without waiting.
    pub async fn fetch(&mut self, topic: &str, offset: i64) -> Result<Fetched, ClientError> {
        self.fetch_waiting(topic, offset, 0).await
    }

    /// Reads partition 0 of `topic` from `offset`; the broker holds the
    /// answer up to `max_wait_ms` while there is nothing new.
    pub async fn fetch_waiting(
        &mut self,
        topic: &str,
        offset: i64,
        max_wait_ms: i32,
    ) -> Result<Fetched, ClientError> {
        let req = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(i32::from(max_wait_ms > 0))
            .with_max_bytes(FETCH_MAX_BYTES)
            .with_isolation_level(0)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(FETCH_MAX_BYTES)])]);
        let resp = self.call(FETCH_VERSION, &req).await?;
        check("Fetch", resp.error_code)?;
        let p = resp
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or(ClientError::Unexpected("no partition in Fetch"))?;
        check("Fetch", p.error_code)?;
        let mut records = Vec::new();
        if let Some(bytes) = &p.records {
            decode_batches(bytes.clone(), offset, &mut records)?;
        }
        Ok(Fetched {
            records,
            high_watermark: p.high_watermark,
        })
    }
}

/// An error code from the broker as a `ClientError`.
fn check(what: &'static str, code: i16) -> Result<(), ClientError> {
    if code == ERR_NONE {
        return Ok(());
    }
    Err(ClientError::Broker { what, code })
}

fn topic_name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_string()))
}

/// Encodes one request frame (size prefix, header, body).
fn encode_request<R: Request>(
    correlation_id: i32,
    version: i16,
    req: &R,
) -> Result<Bytes, ClientError> {
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    let header_version = R::header_version(version);
    let mut body = BytesMut::new();
    header.encode(&mut body, header_version).map_err(codec)?;
    req.encode(&mut body, version).map_err(codec)?;
    let size = i32::try_from(body.len()).map_err(codec)?;
    let mut frame = BytesMut::with_capacity(body.len().saturating_add(4));
    frame.put_i32(size);
    frame.extend_from_slice(&body);
    Ok(frame.freeze())
}

fn encode_batch(records: &[(Bytes, Option<Bytes>)], now_ms: i64) -> Result<Bytes, ClientError> {
    let records: Vec<Record> = records
        .iter()
        .zip(0i64..)
        .map(|((key, value), offset)| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: now_ms,
            key: Some(key.clone()),
            value: value.clone(),
            headers: IndexMap::new(),
        })
        .collect();
    let mut buf = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    RecordBatchEncoder::encode(&mut buf, &records, &options).map_err(codec)?;
    Ok(buf.freeze())
}

/// Decodes the whole batches in `bytes` (a Fetch may end in a partial one,
/// which is left for the next read), keeping records at or after `from`.
fn decode_batches(
    mut bytes: Bytes,
    from: i64,
    out: &mut Vec<LogRecord>,
) -> Result<(), ClientError> {
    while bytes.len() >= BATCH_LENGTH_PREFIX_BYTES {
        let length: [u8; 4] = bytes
            .get(8..BATCH_LENGTH_PREFIX_BYTES)
            .and_then(|s| s.try_into().ok())
            .ok_or(ClientError::Unexpected("a short batch"))?;
        let batch_len = usize::try_from(i32::from_be_bytes(length))
            .map_err(|_| ClientError::Unexpected("a negative batch length"))?;
        let whole = batch_len.saturating_add(BATCH_LENGTH_PREFIX_BYTES);
        if bytes.len() < whole {
            break;
        }
        let mut batch = bytes.split_to(whole);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(codec)?;
        out.extend(
            set.records
                .into_iter()
                .filter(|r| !r.control && r.offset >= from)
                .map(|r| LogRecord {
                    offset: r.offset,
                    key: r.key,
                    value: r.value,
                }),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_a_partial_tail_is_left() {
        let records = vec![
            (Bytes::from_static(b"k1"), Some(Bytes::from_static(b"v1"))),
            (Bytes::from_static(b"k2"), None),
        ];
        let batch = encode_batch(&records, 1).unwrap();
        let mut two = BytesMut::new();
        two.extend_from_slice(&batch);
        two.extend_from_slice(&batch[..batch.len() - 3]);
        let mut out = Vec::new();
        decode_batches(two.freeze(), 1, &mut out).unwrap();
        assert_eq!(
            out.len(),
            1,
            "offset 0 is before `from`, the tail is partial"
        );
        assert_eq!(out[0].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(out[0].value, None);
    }
}
