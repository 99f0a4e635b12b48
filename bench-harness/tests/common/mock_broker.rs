//! A minimal in-memory Kafka-protocol broker for testing the harness
//! without a real broker: ApiVersions, CreateTopics, Metadata, ListOffsets,
//! Produce and Fetch (with long poll), single node, one thread per
//! connection. It assigns offsets in place as a broker does and returns
//! whole stored batches.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{
    decode_request_header_from_buffer, Decodable, Encodable, HeaderVersion, StrBytes,
};

#[derive(Default)]
struct Log {
    data: Vec<u8>,
    /// (base offset, position, total bytes) per batch.
    batches: Vec<(i64, usize, usize)>,
    end: i64,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<Log>>,
}

pub struct MockBroker {
    pub addr: String,
    stop: Arc<AtomicBool>,
}

impl Drop for MockBroker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

type Shared = Arc<(Mutex<State>, Condvar)>;

pub fn start() -> MockBroker {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let shared: Shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
    let (stop2, addr2) = (stop.clone(), addr.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::Relaxed) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let (shared, addr) = (shared.clone(), addr2.clone());
            std::thread::spawn(move || {
                let _ = serve(conn, shared, addr);
            });
        }
    });
    MockBroker { addr, stop }
}

fn respond<R: Encodable + HeaderVersion>(
    out: &mut TcpStream,
    corr: i32,
    version: i16,
    resp: &R,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    let hv = R::header_version(version);
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(&mut buf, hv)
        .unwrap();
    resp.encode(&mut buf, version).unwrap();
    out.write_all(&(buf.len() as i32).to_be_bytes())?;
    out.write_all(&buf)
}

fn serve(mut conn: TcpStream, shared: Shared, addr: String) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    loop {
        let mut len = [0u8; 4];
        conn.read_exact(&mut len)?;
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        conn.read_exact(&mut frame)?;
        let mut buf = Bytes::from(frame);
        let header = decode_request_header_from_buffer(&mut buf).unwrap();
        let (v, corr) = (header.request_api_version, header.correlation_id);
        match ApiKey::try_from(header.request_api_key).unwrap() {
            ApiKey::ApiVersions => {
                let keys = [
                    (ApiKey::Produce, 3, 9),
                    (ApiKey::Fetch, 4, 12),
                    (ApiKey::ListOffsets, 1, 7),
                    (ApiKey::Metadata, 0, 12),
                    (ApiKey::ApiVersions, 0, 3),
                    (ApiKey::CreateTopics, 2, 7),
                ];
                let resp = ApiVersionsResponse::default().with_api_keys(
                    keys.iter()
                        .map(|&(k, lo, hi)| {
                            ApiVersion::default()
                                .with_api_key(k as i16)
                                .with_min_version(lo)
                                .with_max_version(hi)
                        })
                        .collect(),
                );
                respond(&mut conn, corr, v, &resp)?;
            }
            ApiKey::CreateTopics => {
                let req = CreateTopicsRequest::decode(&mut buf, v).unwrap();
                let mut st = shared.0.lock().unwrap();
                let mut results = Vec::new();
                for t in req.topics {
                    let name = t.name.0.to_string();
                    let code = if st.topics.contains_key(&name) { 36 } else { 0 };
                    st.topics
                        .entry(name)
                        .or_insert_with(|| (0..t.num_partitions).map(|_| Log::default()).collect());
                    results.push(
                        CreatableTopicResult::default()
                            .with_name(t.name)
                            .with_error_code(code),
                    );
                }
                respond(
                    &mut conn,
                    corr,
                    v,
                    &CreateTopicsResponse::default().with_topics(results),
                )?;
            }
            ApiKey::Metadata => {
                let req = MetadataRequest::decode(&mut buf, v).unwrap();
                let st = shared.0.lock().unwrap();
                let (host, port) = addr.rsplit_once(':').unwrap();
                let broker = MetadataResponseBroker::default()
                    .with_node_id(BrokerId(0))
                    .with_host(StrBytes::from_string(host.to_string()))
                    .with_port(port.parse().unwrap());
                let topics = req
                    .topics
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| {
                        let name = t.name.unwrap();
                        match st.topics.get(name.0.as_str()) {
                            Some(parts) => MetadataResponseTopic::default()
                                .with_name(Some(name))
                                .with_partitions(
                                    (0..parts.len() as i32)
                                        .map(|p| {
                                            MetadataResponsePartition::default()
                                                .with_partition_index(p)
                                                .with_leader_id(BrokerId(0))
                                                .with_replica_nodes(vec![BrokerId(0)])
                                                .with_isr_nodes(vec![BrokerId(0)])
                                        })
                                        .collect(),
                                ),
                            None => MetadataResponseTopic::default()
                                .with_name(Some(name))
                                .with_error_code(3),
                        }
                    })
                    .collect();
                respond(
                    &mut conn,
                    corr,
                    v,
                    &MetadataResponse::default()
                        .with_brokers(vec![broker])
                        .with_controller_id(BrokerId(0))
                        .with_topics(topics),
                )?;
            }
            ApiKey::ListOffsets => {
                let req = ListOffsetsRequest::decode(&mut buf, v).unwrap();
                let st = shared.0.lock().unwrap();
                let topics = req
                    .topics
                    .into_iter()
                    .map(|t| {
                        let logs = &st.topics[t.name.0.as_str()];
                        let parts = t
                            .partitions
                            .iter()
                            .map(|p| {
                                let log = &logs[p.partition_index as usize];
                                let off = if p.timestamp == -2 { 0 } else { log.end };
                                ListOffsetsPartitionResponse::default()
                                    .with_partition_index(p.partition_index)
                                    .with_offset(off)
                                    .with_timestamp(-1)
                            })
                            .collect();
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name)
                            .with_partitions(parts)
                    })
                    .collect();
                respond(
                    &mut conn,
                    corr,
                    v,
                    &ListOffsetsResponse::default().with_topics(topics),
                )?;
            }
            ApiKey::Produce => {
                let req = ProduceRequest::decode(&mut buf, v).unwrap();
                let mut responses = Vec::new();
                {
                    let mut st = shared.0.lock().unwrap();
                    for t in req.topic_data {
                        let logs = st.topics.get_mut(t.name.0.as_str()).unwrap();
                        let mut parts = Vec::new();
                        for p in t.partition_data {
                            let log = &mut logs[p.index as usize];
                            let records = p.records.unwrap();
                            let base = log.end;
                            let mut pos = 0;
                            while pos < records.len() {
                                let mut batch = records[pos..].to_vec();
                                let total = 12
                                    + i32::from_be_bytes(batch[8..12].try_into().unwrap()) as usize;
                                batch.truncate(total);
                                strom_engine::batch::validate(&batch).unwrap();
                                let count = i32::from_be_bytes(batch[23..27].try_into().unwrap())
                                    as i64
                                    + 1;
                                batch[0..8].copy_from_slice(&log.end.to_be_bytes());
                                log.batches.push((log.end, log.data.len(), total));
                                log.data.extend_from_slice(&batch);
                                log.end += count;
                                pos += total;
                            }
                            parts.push(
                                PartitionProduceResponse::default()
                                    .with_index(p.index)
                                    .with_base_offset(base),
                            );
                        }
                        responses.push(
                            TopicProduceResponse::default()
                                .with_name(t.name)
                                .with_partition_responses(parts),
                        );
                    }
                }
                shared.1.notify_all();
                if req.acks != 0 {
                    respond(
                        &mut conn,
                        corr,
                        v,
                        &ProduceResponse::default().with_responses(responses),
                    )?;
                }
            }
            ApiKey::Fetch => {
                let req = FetchRequest::decode(&mut buf, v).unwrap();
                let deadline =
                    Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
                let mut st = shared.0.lock().unwrap();
                loop {
                    let has_data = req.topics.iter().any(|t| {
                        t.partitions.iter().any(|p| {
                            st.topics[t.topic.0.as_str()][p.partition as usize].end > p.fetch_offset
                        })
                    });
                    let now = Instant::now();
                    if has_data || now >= deadline {
                        break;
                    }
                    st = shared.1.wait_timeout(st, deadline - now).unwrap().0;
                }
                let responses = req
                    .topics
                    .iter()
                    .map(|t| {
                        let logs = &st.topics[t.topic.0.as_str()];
                        let parts = t
                            .partitions
                            .iter()
                            .map(|p| {
                                let log = &logs[p.partition as usize];
                                let mut out = Vec::new();
                                for &(base, pos, total) in &log.batches {
                                    let last = base
                                        + i32::from_be_bytes(
                                            log.data[pos + 23..pos + 27].try_into().unwrap(),
                                        ) as i64;
                                    if last < p.fetch_offset {
                                        continue;
                                    }
                                    if !out.is_empty()
                                        && out.len() + total > p.partition_max_bytes as usize
                                    {
                                        break;
                                    }
                                    out.extend_from_slice(&log.data[pos..pos + total]);
                                }
                                PartitionData::default()
                                    .with_partition_index(p.partition)
                                    .with_high_watermark(log.end)
                                    .with_last_stable_offset(log.end)
                                    .with_records(Some(Bytes::from(out)))
                            })
                            .collect();
                        FetchableTopicResponse::default()
                            .with_topic(t.topic.clone())
                            .with_partitions(parts)
                    })
                    .collect();
                drop(st);
                respond(
                    &mut conn,
                    corr,
                    v,
                    &FetchResponse::default().with_responses(responses),
                )?;
            }
            other => panic!("mock broker: unexpected {other:?}"),
        }
    }
}
