//! Topic administration and error paths over the wire, with the
//! kafka-protocol crate as the client.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use common::{consume, produce, Broker};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

struct Client {
    s: TcpStream,
    next_id: i32,
}

impl Client {
    fn connect(b: &Broker) -> Client {
        let s = TcpStream::connect(b.addr()).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        Client { s, next_id: 1 }
    }

    fn send<Req: Encodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> i32 {
        let id = self.next_id;
        self.next_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(id)
            .with_client_id(Some(StrBytes::from_static_str("protocol-test")));
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, Req::header_version(version))
            .expect("encode header");
        req.encode(&mut buf, version).expect("encode request");
        let size = (buf.len() - 4) as i32;
        buf[0..4].copy_from_slice(&size.to_be_bytes());
        self.s.write_all(&buf).expect("write");
        id
    }

    fn recv<Resp: Decodable + HeaderVersion>(&mut self, id: i32, version: i16) -> Resp {
        let mut size = [0u8; 4];
        self.s.read_exact(&mut size).expect("response size");
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.s.read_exact(&mut body).expect("response body");
        let mut body = Bytes::from(body);
        let header = ResponseHeader::decode(&mut body, Resp::header_version(version))
            .expect("decode header");
        assert_eq!(header.correlation_id, id);
        let resp = Resp::decode(&mut body, version).expect("decode response");
        assert!(body.is_empty(), "{} trailing bytes", body.len());
        resp
    }

    fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        key: ApiKey,
        version: i16,
        req: &Req,
    ) -> Resp {
        let id = self.send(key, version, req);
        self.recv(id, version)
    }
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn create(
    c: &mut Client,
    version: i16,
    topic: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> CreateTopicsResponse {
    let t = CreatableTopic::default()
        .with_name(name(topic))
        .with_num_partitions(partitions)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_string(k.to_string()))
                        .with_value(Some(StrBytes::from_string(v.to_string())))
                })
                .collect(),
        );
    c.call(
        ApiKey::CreateTopics,
        version,
        &CreateTopicsRequest::default()
            .with_topics(vec![t])
            .with_timeout_ms(5000),
    )
}

fn metadata(c: &mut Client, topic: &str) -> MetadataResponse {
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name(topic)))
        ]))
        .with_allow_auto_topic_creation(false);
    c.call(ApiKey::Metadata, 12, &req)
}

#[test]
fn create_describe_grow_delete_topics() {
    let b = Broker::start(&[]);
    let mut c = Client::connect(&b);

    let r = create(
        &mut c,
        7,
        "admin",
        3,
        &[("retention.ms", "100000"), ("cleanup.policy", "compact")],
    );
    let t = &r.topics[0];
    assert_eq!(t.error_code, 0, "{:?}", t.error_message);
    assert_eq!(t.num_partitions, 3);
    assert!(!t.topic_id.is_nil());
    let configs = t.configs.as_ref().expect("v5+ returns configs");
    let retention = configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .expect("retention.ms");
    assert_eq!(retention.value.as_ref().map(|v| v.as_str()), Some("100000"));

    // Errors: exists, bad config, bad name, bad replication factor.
    assert_eq!(create(&mut c, 5, "admin", 1, &[]).topics[0].error_code, 36);
    assert_eq!(
        create(&mut c, 5, "bad-config", 1, &[("retention.ms", "soon")]).topics[0].error_code,
        40
    );
    assert_eq!(
        create(&mut c, 5, "bad-config", 1, &[("no.such.config", "1")]).topics[0].error_code,
        40
    );
    assert_eq!(
        create(&mut c, 2, "bad/name", 1, &[]).topics[0].error_code,
        17
    );
    let rf3 = CreatableTopic::default()
        .with_name(name("rf3"))
        .with_num_partitions(1)
        .with_replication_factor(3);
    let r: CreateTopicsResponse = c.call(
        ApiKey::CreateTopics,
        4,
        &CreateTopicsRequest::default().with_topics(vec![rf3]),
    );
    assert_eq!(r.topics[0].error_code, 38);

    let m = metadata(&mut c, "admin");
    assert_eq!(m.topics[0].error_code, 0);
    assert_eq!(m.topics[0].partitions.len(), 3);
    assert_eq!(metadata(&mut c, "absent").topics[0].error_code, 3);

    // DescribeConfigs: the topic's own value and the broker's.
    let req = DescribeConfigsRequest::default().with_resources(vec![
        DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("admin")),
        DescribeConfigsResource::default()
            .with_resource_type(4)
            .with_resource_name(StrBytes::from_static_str("0")),
    ]);
    let r: DescribeConfigsResponse = c.call(ApiKey::DescribeConfigs, 4, &req);
    let topic = &r.results[0];
    assert_eq!(topic.error_code, 0);
    let cp = topic
        .configs
        .iter()
        .find(|c| c.name.as_str() == "cleanup.policy")
        .expect("cleanup.policy");
    assert_eq!(cp.value.as_ref().map(|v| v.as_str()), Some("compact"));
    assert_eq!(cp.config_source, 1);
    assert!(r.results[1]
        .configs
        .iter()
        .any(|c| c.name.as_str() == "num.partitions"));

    // CreatePartitions: grow to 5, refuse to shrink.
    let grow = |count| {
        CreatePartitionsRequest::default()
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(name("admin"))
                .with_count(count)])
            .with_timeout_ms(5000)
    };
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 3, &grow(5));
    assert_eq!(r.results[0].error_code, 0);
    let r: CreatePartitionsResponse = c.call(ApiKey::CreatePartitions, 0, &grow(2));
    assert_eq!(r.results[0].error_code, 37);
    assert_eq!(metadata(&mut c, "admin").topics[0].partitions.len(), 5);
    // The topic is compacted: its records need keys (a keyless one is
    // refused with INVALID_RECORD, as in Kafka).
    let lines = vec!["k:on-p4".to_string()];
    produce(&b.addr(), "admin", &lines, "none", &["-p", "4", "-K:"]);
    assert_eq!(
        consume(&b.addr(), "admin", "beginning", "%p %s\n"),
        vec!["4 on-p4"]
    );

    // DeleteTopics (v1 by name), then re-create empty.
    let r: DeleteTopicsResponse = c.call(
        ApiKey::DeleteTopics,
        1,
        &DeleteTopicsRequest::default().with_topic_names(vec![name("admin")]),
    );
    assert_eq!(r.responses[0].error_code, 0);
    assert_eq!(metadata(&mut c, "admin").topics[0].error_code, 3);
    let r: DeleteTopicsResponse = c.call(
        ApiKey::DeleteTopics,
        4,
        &DeleteTopicsRequest::default().with_topic_names(vec![name("admin")]),
    );
    assert_eq!(r.responses[0].error_code, 3);
    assert_eq!(create(&mut c, 5, "admin", 5, &[]).topics[0].error_code, 0);
    assert!(consume(&b.addr(), "admin", "beginning", "%p %s\n").is_empty());
}

fn produce_req(topic: &str, partition: i32, acks: i16, records: Vec<u8>) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])])
}

fn produce_error(r: &ProduceResponse) -> i16 {
    r.responses[0].partition_responses[0].error_code
}

#[test]
fn produce_errors_acks_zero_and_list_offsets() {
    let b = Broker::start(&[]);
    let mut c = Client::connect(&b);
    assert_eq!(
        create(&mut c, 5, "p", 1, &[("max.message.bytes", "200")]).topics[0].error_code,
        0
    );

    let good = strom_engine::batch::build_batch(1_000, &[b"a", b"b"]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_req("p", 0, -1, good.clone()));
    assert_eq!(produce_error(&r), 0);
    assert_eq!(r.responses[0].partition_responses[0].base_offset, 0);

    let mut corrupt = good.clone();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let r: ProduceResponse = c.call(ApiKey::Produce, 7, &produce_req("p", 0, 1, corrupt));
    assert_eq!(produce_error(&r), 2);
    let big = strom_engine::batch::build_batch(2_000, &[&[7u8; 500][..]]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 3, &produce_req("p", 0, 1, big));
    assert_eq!(produce_error(&r), 10);
    let r: ProduceResponse = c.call(ApiKey::Produce, 8, &produce_req("nope", 0, 1, good.clone()));
    assert_eq!(produce_error(&r), 3);
    let r: ProduceResponse = c.call(ApiKey::Produce, 8, &produce_req("p", 7, 1, good.clone()));
    assert_eq!(produce_error(&r), 3);

    // acks=0: no response; the next response belongs to the next request.
    let later = strom_engine::batch::build_batch(3_000, &[b"c"]);
    c.send(ApiKey::Produce, 9, &produce_req("p", 0, 0, later));
    let r: ApiVersionsResponse = c.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(r.error_code, 0);

    let list = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(name("p"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(ts)])])
    };
    let offset = |c: &mut Client, v: i16, ts: i64| {
        let r: ListOffsetsResponse = c.call(ApiKey::ListOffsets, v, &list(ts));
        let p = &r.topics[0].partitions[0];
        assert_eq!(p.error_code, 0);
        (p.offset, p.timestamp)
    };
    assert_eq!(offset(&mut c, 1, -2).0, 0);
    assert_eq!(offset(&mut c, 7, -1).0, 3);
    assert_eq!(offset(&mut c, 7, -3), (2, 3_000));
    assert_eq!(offset(&mut c, 4, 2_500), (2, 3_000));
    assert_eq!(offset(&mut c, 2, 9_999).0, -1);

    // Fetch: data, then out of range.
    let fetch = |offset: i64| {
        FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name("p"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(0)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20)])])
    };
    let r: FetchResponse = c.call(ApiKey::Fetch, 12, &fetch(0));
    let p = &r.responses[0].partitions[0];
    assert_eq!(
        (p.error_code, p.high_watermark, p.log_start_offset),
        (0, 3, 0)
    );
    let records = p.records.as_ref().expect("records");
    assert!(records.len() > good.len(), "both batches returned");
    let r: FetchResponse = c.call(ApiKey::Fetch, 4, &fetch(99));
    assert_eq!(r.responses[0].partitions[0].error_code, 1);
    // At the end: an empty answer after max_wait_ms.
    let r: FetchResponse = c.call(ApiKey::Fetch, 11, &fetch(3));
    let p = &r.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert!(p.records.as_ref().is_none_or(|r| r.is_empty()));
}

/// Sets a batch's attributes, lastOffsetDelta and recordCount, and its CRC.
fn rewrite_header(b: &mut [u8], attributes: i16, last_offset_delta: i32, record_count: i32) {
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    b[57..61].copy_from_slice(&record_count.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Kafka's log validator rules at the batch header (issue 13, findings 2 and
/// 8): a batch that lies about its offset span, a control batch and a
/// transactional batch get INVALID_RECORD with a message, nothing is
/// appended, and the next honest batch takes the next offset.
#[test]
fn lying_control_and_transactional_batches_are_invalid_records() {
    let b = Broker::start(&[]);
    let mut c = Client::connect(&b);
    assert_eq!(create(&mut c, 5, "rules", 1, &[]).topics[0].error_code, 0);
    let honest = |ts| strom_engine::batch::build_batch(ts, &[b"a"]);
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_req("rules", 0, 1, honest(1)));
    assert_eq!(
        (
            produce_error(&r),
            r.responses[0].partition_responses[0].base_offset
        ),
        (0, 0)
    );

    let cases: Vec<(&str, i16, i32, i32)> = vec![
        ("one record, lastOffsetDelta 2^31-1", 0, i32::MAX, 1),
        ("a million records in a few bytes", 0, 999_999, 1_000_000),
        ("control batch", 0x30, 0, 1),
        ("transactional batch", 0x10, 0, 1),
    ];
    for (what, attributes, last_offset_delta, record_count) in cases {
        let mut bad = honest(2);
        rewrite_header(&mut bad, attributes, last_offset_delta, record_count);
        for acks in [1, -1] {
            let r: ProduceResponse = c.call(
                ApiKey::Produce,
                9,
                &produce_req("rules", 0, acks, bad.clone()),
            );
            let p = &r.responses[0].partition_responses[0];
            assert_eq!(p.error_code, 87, "{what} (acks {acks}): INVALID_RECORD");
            assert!(
                p.error_message.as_ref().is_some_and(|m| !m.is_empty()),
                "{what}: the answer says why"
            );
        }
    }
    // Nothing of them was appended: the next honest batch is offset 1.
    let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_req("rules", 0, -1, honest(3)));
    assert_eq!(
        (
            produce_error(&r),
            r.responses[0].partition_responses[0].base_offset
        ),
        (0, 1)
    );
}

/// Kafka 3.6+'s timestamp window (`message.timestamp.before.max.ms`,
/// `message.timestamp.after.max.ms`, checked at the batch header) answers
/// INVALID_TIMESTAMP; a producer id without a sequence answers
/// INVALID_RECORD. Neither writes anything.
#[test]
fn timestamps_outside_the_window_and_broken_producer_fields_are_refused() {
    let b = Broker::start(&[]);
    let mut c = Client::connect(&b);
    let day = 24 * 3_600_000;
    let configs = [("message.timestamp.before.max.ms", "86400000")];
    assert_eq!(
        create(&mut c, 5, "window", 1, &configs).topics[0].error_code,
        0
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let produce = |c: &mut Client, batch: Vec<u8>| {
        let r: ProduceResponse = c.call(ApiKey::Produce, 9, &produce_req("window", 0, 1, batch));
        let p = r.responses[0].partition_responses[0].clone();
        (
            p.error_code,
            p.base_offset,
            p.error_message.map(|m| m.to_string()),
        )
    };
    let (error, offset, _) = produce(&mut c, strom_engine::batch::build_batch(now, &[b"a"]));
    assert_eq!((error, offset), (0, 0));

    let cases: Vec<(&str, Vec<u8>, i16)> = vec![
        (
            "two hours ahead",
            strom_engine::batch::build_batch(now + 2 * 3_600_000, &[b"b"]),
            32,
        ),
        (
            "two days back",
            strom_engine::batch::build_batch(now - 2 * day, &[b"b"]),
            32,
        ),
        (
            "producer id 7 with sequence -1",
            strom_engine::batch::build_batch_with_producer(now, &[b"b"], 7, 0, -1),
            87,
        ),
    ];
    for (what, batch, code) in cases {
        let (error, _, message) = produce(&mut c, batch);
        assert_eq!(error, code, "{what}");
        assert!(
            message.is_some_and(|m| !m.is_empty()),
            "{what}: the answer says why"
        );
    }
    let (error, offset, _) = produce(&mut c, strom_engine::batch::build_batch(now, &[b"c"]));
    assert_eq!(
        (error, offset),
        (0, 1),
        "nothing of the refused batches was appended"
    );
}
