//! Writes the seed corpora under `fuzz/corpus/<target>/`:
//! - `request`: one real request frame (header and body, no size prefix)
//!   for every API and version the broker advertises, encoded with the
//!   kafka-protocol crate, with a topic, partition and valid batch where the
//!   API carries them;
//! - `batch` and `recover`: from `strom_engine::fuzzing`'s seed lists.
//!
//! Run from `fuzz/`: `cargo run --release --bin gen-seeds`.

use std::path::Path;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use strom_server::api::api_versions::SUPPORTED_APIS;

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str("seed-topic"))
}

fn group() -> GroupId {
    GroupId(StrBytes::from_static_str("seed-group"))
}

fn encode<T: Encodable>(body: &T, v: i16) -> Option<BytesMut> {
    let mut buf = BytesMut::new();
    body.encode(&mut buf, v).ok()?;
    Some(buf)
}

/// A body with some content where the version can carry it, else the
/// default request of that version.
fn body(key: ApiKey, v: i16) -> BytesMut {
    let batch = Bytes::from(strom_engine::batch::build_batch(
        1_700_000_000_000,
        &[b"seed"],
    ));
    let rich = match key {
        ApiKey::Produce => encode(
            &ProduceRequest::default()
                .with_acks(-1)
                .with_timeout_ms(1000)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(topic())
                    .with_partition_data(vec![
                        produce_request::PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch)),
                    ])]),
            v,
        ),
        ApiKey::Fetch => encode(
            &FetchRequest::default()
                .with_max_wait_ms(100)
                .with_max_bytes(1 << 20)
                .with_topics(vec![fetch_request::FetchTopic::default()
                    .with_topic(topic())
                    .with_partitions(vec![fetch_request::FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(1 << 20)])]),
            v,
        ),
        ApiKey::ListOffsets => encode(
            &ListOffsetsRequest::default().with_topics(vec![
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1)]),
            ]),
            v,
        ),
        ApiKey::Metadata => encode(
            &MetadataRequest::default().with_topics(Some(vec![
                metadata_request::MetadataRequestTopic::default().with_name(Some(topic())),
            ])),
            v,
        ),
        ApiKey::CreateTopics => encode(
            &CreateTopicsRequest::default().with_topics(vec![
                create_topics_request::CreatableTopic::default()
                    .with_name(topic())
                    .with_num_partitions(3)
                    .with_replication_factor(1),
            ]),
            v,
        ),
        ApiKey::DeleteTopics => encode(
            &DeleteTopicsRequest::default().with_topic_names(vec![topic()]),
            v,
        ),
        ApiKey::FindCoordinator => encode(
            &FindCoordinatorRequest::default()
                .with_key(StrBytes::from_static_str("seed-group"))
                .with_coordinator_keys(vec![StrBytes::from_static_str("seed-group")]),
            v,
        )
        .or_else(|| {
            encode(
                &FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g")),
                v,
            )
        }),
        ApiKey::JoinGroup => encode(
            &JoinGroupRequest::default()
                .with_group_id(group())
                .with_session_timeout_ms(10_000)
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
                )
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(Bytes::from_static(b"\0\0"))]),
            v,
        ),
        ApiKey::OffsetCommit => encode(
            &OffsetCommitRequest::default()
                .with_group_id(group())
                .with_generation_id_or_member_epoch(-1)
                .with_topics(vec![
                    offset_commit_request::OffsetCommitRequestTopic::default()
                        .with_name(topic())
                        .with_partitions(vec![
                            offset_commit_request::OffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(5),
                        ]),
                ]),
            v,
        ),
        ApiKey::Heartbeat => encode(&HeartbeatRequest::default().with_group_id(group()), v),
        ApiKey::SyncGroup => encode(&SyncGroupRequest::default().with_group_id(group()), v),
        ApiKey::DescribeGroups => encode(
            &DescribeGroupsRequest::default().with_groups(vec![group()]),
            v,
        ),
        ApiKey::DeleteGroups => encode(
            &DeleteGroupsRequest::default().with_groups_names(vec![group()]),
            v,
        ),
        ApiKey::DeleteRecords => encode(
            &DeleteRecordsRequest::default().with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(topic())
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default().with_offset(1),
                    ]),
            ]),
            v,
        ),
        ApiKey::DescribeProducers => encode(
            &DescribeProducersRequest::default().with_topics(vec![
                describe_producers_request::TopicRequest::default()
                    .with_name(topic())
                    .with_partition_indexes(vec![0]),
            ]),
            v,
        ),
        ApiKey::AlterConfigs => encode(
            &AlterConfigsRequest::default().with_resources(vec![
                alter_configs_request::AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(topic().0)
                    .with_configs(vec![alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("60000")))]),
            ]),
            v,
        ),
        _ => None,
    };
    rich.unwrap_or_else(|| default_body(key, v))
}

fn default_body(key: ApiKey, v: i16) -> BytesMut {
    let encoded = match key {
        ApiKey::Produce => encode(&ProduceRequest::default(), v),
        ApiKey::Fetch => encode(&FetchRequest::default(), v),
        ApiKey::ListOffsets => encode(&ListOffsetsRequest::default(), v),
        ApiKey::Metadata => encode(&MetadataRequest::default(), v),
        ApiKey::ApiVersions => encode(
            &ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("seed"))
                .with_client_software_version(StrBytes::from_static_str("1")),
            v,
        ),
        ApiKey::CreateTopics => encode(&CreateTopicsRequest::default(), v),
        ApiKey::DeleteTopics => encode(&DeleteTopicsRequest::default(), v),
        ApiKey::CreatePartitions => encode(&CreatePartitionsRequest::default(), v),
        ApiKey::DescribeConfigs => encode(&DescribeConfigsRequest::default(), v),
        ApiKey::OffsetCommit => encode(&OffsetCommitRequest::default(), v),
        ApiKey::OffsetFetch => encode(&OffsetFetchRequest::default(), v),
        ApiKey::FindCoordinator => encode(&FindCoordinatorRequest::default(), v),
        ApiKey::JoinGroup => encode(&JoinGroupRequest::default(), v),
        ApiKey::Heartbeat => encode(&HeartbeatRequest::default(), v),
        ApiKey::LeaveGroup => encode(&LeaveGroupRequest::default(), v),
        ApiKey::SyncGroup => encode(&SyncGroupRequest::default(), v),
        ApiKey::DescribeGroups => encode(&DescribeGroupsRequest::default(), v),
        ApiKey::ListGroups => encode(&ListGroupsRequest::default(), v),
        ApiKey::DeleteGroups => encode(&DeleteGroupsRequest::default(), v),
        ApiKey::OffsetDelete => encode(&OffsetDeleteRequest::default(), v),
        ApiKey::InitProducerId => encode(&InitProducerIdRequest::default(), v),
        ApiKey::IncrementalAlterConfigs => encode(&IncrementalAlterConfigsRequest::default(), v),
        ApiKey::DescribeCluster => encode(&DescribeClusterRequest::default(), v),
        ApiKey::OffsetForLeaderEpoch => encode(&OffsetForLeaderEpochRequest::default(), v),
        ApiKey::DescribeLogDirs => encode(&DescribeLogDirsRequest::default(), v),
        ApiKey::DeleteRecords => encode(&DeleteRecordsRequest::default(), v),
        ApiKey::DescribeProducers => encode(&DescribeProducersRequest::default(), v),
        ApiKey::AlterConfigs => encode(&AlterConfigsRequest::default(), v),
        other => panic!("{other:?} is advertised but has no seed"),
    };
    encoded.unwrap_or_else(|| panic!("{key:?} v{v}: the default request does not encode"))
}

fn request_frame(key: ApiKey, v: i16, correlation_id: i32) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(v)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("seed")));
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, key.request_header_version(v))
        .expect("encode a request header");
    buf.extend_from_slice(&body(key, v));
    buf.to_vec()
}

/// The newest version of `key` this broker advertises.
fn newest(key: ApiKey) -> i16 {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, _, max)| max)
        .expect("an advertised API")
}

/// The `handler` target's seeds: every API's newest version alone, then the
/// sequences a client sends, so the fuzzer starts from stateful paths.
fn write_handler_seeds(dir: &Path) {
    let frame = |key: ApiKey, n: i32| request_frame(key, newest(key), n);
    for &(key, _, _) in SUPPORTED_APIS {
        let input = strom_server::fuzzing::join_frames(&[&frame(key, 1)]);
        write(dir, &format!("{key:?}"), &input);
    }
    let sequences: [(&str, &[ApiKey]); 4] = [
        (
            "produce-fetch",
            &[
                ApiKey::Produce,
                ApiKey::Fetch,
                ApiKey::ListOffsets,
                ApiKey::Fetch,
            ],
        ),
        (
            "group",
            &[
                ApiKey::FindCoordinator,
                ApiKey::JoinGroup,
                ApiKey::SyncGroup,
                ApiKey::Heartbeat,
                ApiKey::OffsetCommit,
                ApiKey::OffsetFetch,
                ApiKey::LeaveGroup,
                ApiKey::DescribeGroups,
            ],
        ),
        (
            "admin",
            &[
                ApiKey::DeleteTopics,
                ApiKey::CreateTopics,
                ApiKey::CreatePartitions,
                ApiKey::DescribeConfigs,
                ApiKey::Metadata,
                ApiKey::Produce,
                ApiKey::DeleteTopics,
                ApiKey::Fetch,
            ],
        ),
        (
            "idempotent",
            &[ApiKey::InitProducerId, ApiKey::Produce, ApiKey::Produce],
        ),
    ];
    for (name, keys) in sequences {
        let frames: Vec<Vec<u8>> = (1..).zip(keys).map(|(n, &k)| frame(k, n)).collect();
        let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        write(
            dir,
            &format!("seq-{name}"),
            &strom_server::fuzzing::join_frames(&refs),
        );
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("write a seed");
}

fn main() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let mut n = 0;
    for &(key, min, max) in SUPPORTED_APIS {
        for v in min..=max {
            let name = format!("{key:?}-v{v}");
            let frame = request_frame(key, v, n);
            assert_eq!(
                strom_server::api::decode_frame(Bytes::from(frame.clone())),
                Some(true),
                "{name}: the seed does not decode"
            );
            write(&corpus.join("request"), &name, &frame);
            n += 1;
        }
    }
    // KIP-511: an ApiVersions version newer than any this broker knows.
    let mut future = request_frame(ApiKey::ApiVersions, 3, n);
    future[2..4].copy_from_slice(&99i16.to_be_bytes());
    write(&corpus.join("request"), "ApiVersions-v99", &future);
    write_handler_seeds(&corpus.join("handler"));
    for (name, input) in strom_engine::fuzzing::batch_seeds() {
        write(&corpus.join("batch"), &name, &input);
    }
    for (name, input) in strom_engine::fuzzing::recovery_seeds() {
        write(&corpus.join("recover"), &name, &input);
    }
    println!("wrote {n} request seeds and the batch and recover seeds");
}
