//! ApiVersions (v0-v3): advertises `SUPPORTED_APIS`, nothing else.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::ResponseError;

use crate::wire::{encode_frame, Reply, RequestContext};

/// Versions Strom implements and advertises: (api, min, max). Only what is
/// tested with real clients is listed.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    // Used by the Java AdminClient and Kafka's CLI tools (tests/java).
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeLogDirs, 1, 4),
    // AlterConfigs: kafka-python (v1) and confluent-kafka (tests/compat);
    // DeleteRecords: kafka-python (v0), confluent-kafka, the Java
    // AdminClient and kafka-delete-records (v2); DescribeProducers: the
    // Java AdminClient.
    (ApiKey::AlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    // Consumer groups (`crate::group`); keep equal to group::SUPPORTED_VERSIONS.
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    // Idempotent producers (`crate::producer_ids`).
    (ApiKey::InitProducerId, 0, 4),
];

pub fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED_APIS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| (*min, *max))
}

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

/// The response to a supported ApiVersions request. Feature fields are left
/// at their defaults, so the encoder omits those tagged fields, as Kafka does
/// (librdkafka 2.0 misparses them otherwise).
pub fn handle(_req: ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(api_keys())
}

/// KIP-511: a version this broker does not know gets a v0 body with
/// UNSUPPORTED_VERSION and the supported ranges, under response header v0.
pub fn unsupported_version(ctx: &RequestContext) -> Reply {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys());
    match encode_frame(ctx.header.correlation_id, 0, &body, 0) {
        Some(frame) => Reply::Frame(vec![frame]),
        None => Reply::Close,
    }
}
