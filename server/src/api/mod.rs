//! The Kafka APIs: header parsing, version checks and the dispatch `match`.
//!
//! `handle_frame` turns one request frame into a `Reply`. Every API Strom
//! answers is listed in `api_versions::SUPPORTED_APIS` (what ApiVersions
//! advertises) and routed in `dispatch`; a request for anything else closes
//! the connection, as Kafka does. The response type, decoding and response
//! frames are `crate::wire`'s; each API family has its module here.

pub mod admin;
pub mod api_versions;
pub mod configs;
pub mod delete_records;
pub mod describe_producers;
pub mod fetch;
mod fetch_read;
pub mod groups;
pub mod leader_epoch;
pub mod leader_hints;
pub mod list_offsets;
pub mod log_dirs;
pub mod metadata;
pub mod produce;
mod produce_refusals;
pub mod schema_validation;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};

use futures_channel::oneshot;

use crate::api::api_versions::supported_range;
use crate::shard::Shard;
use crate::wire::{decode, respond, Reply, RequestContext};

/// Handles one request frame (without its size prefix). A panic anywhere in
/// the handling closes this connection only (`wire::contain_panic`).
pub async fn handle_frame(shard: Rc<Shard>, frame: Bytes) -> Reply {
    handle_frame_staged(shard, frame, None).await
}

/// `handle_frame` that also says when a produce request's records all
/// have their offsets: `assigned` is sent to (or dropped, for any other
/// request or a refused one) once nothing of this request can be appended
/// after what a later request appends. The connection applies its next
/// produce request from then on.
pub async fn handle_frame_staged(
    shard: Rc<Shard>,
    frame: Bytes,
    assigned: Option<oneshot::Sender<()>>,
) -> Reply {
    crate::wire::contain_panic(async move {
        match parse_header(frame) {
            Ok((ctx, body)) => dispatch(&shard, &ctx, body, assigned).await,
            Err(reply) => reply,
        }
    })
    .await
}

/// `handle_frame` without the panic containment: the `handler` fuzz
/// target runs this, so that a panic is a finding.
pub async fn handle_frame_uncontained(shard: Rc<Shard>, frame: Bytes) -> Reply {
    match parse_header(frame) {
        Ok((ctx, body)) => dispatch(&shard, &ctx, body, None).await,
        Err(reply) => reply,
    }
}

/// Parses a request frame's header: the API key and version checked against
/// what this broker advertises, then the header itself. Returns the context
/// and the body, or the reply that ends the request here (a close, or the
/// KIP-511 answer to an ApiVersions version this broker does not know).
/// Touches no shard state: the `header` fuzz target drives it directly.
pub fn parse_header(mut frame: Bytes) -> Result<(RequestContext, Bytes), Reply> {
    // api_key, api_version and correlation_id: 8 bytes at least.
    let (Some(&[k0, k1, v0, v1]), true) = (frame.get(0..4), frame.len() >= 8) else {
        return Err(Reply::Close);
    };
    let api_key_raw = i16::from_be_bytes([k0, k1]);
    let version = i16::from_be_bytes([v0, v1]);
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        tracing::info!(api_key = api_key_raw, "closing connection: unknown API key");
        return Err(Reply::Close);
    };
    let supported = supported_range(api_key);
    let in_range = supported.is_some_and(|(min, max)| version >= min && version <= max);
    if !in_range && api_key != ApiKey::ApiVersions {
        tracing::info!(
            ?api_key,
            version,
            "closing connection: unsupported API version"
        );
        return Err(Reply::Close);
    }
    // For an ApiVersions version this broker does not know, KIP-511 says to
    // parse the header as the newest known one (v2 from ApiVersions v3 on).
    let header_version = if in_range {
        api_key.request_header_version(version)
    } else {
        2
    };
    let Some(header) = decode::<RequestHeader>(&mut frame, header_version) else {
        return Err(Reply::Close);
    };
    let ctx = RequestContext {
        api_key,
        version,
        header,
    };
    if !in_range {
        return Err(api_versions::unsupported_version(&ctx));
    }
    Ok((ctx, frame))
}

/// The one place where requests are routed by API key.
async fn dispatch(
    shard: &Rc<Shard>,
    ctx: &RequestContext,
    mut body: Bytes,
    assigned: Option<oneshot::Sender<()>>,
) -> Reply {
    let v = ctx.version;
    match ctx.api_key {
        ApiKey::ApiVersions => match decode(&mut body, v) {
            Some(req) => respond(ctx, &api_versions::handle(req)),
            None => Reply::Close,
        },
        ApiKey::Metadata => match decode(&mut body, v) {
            Some(req) => respond(ctx, &metadata::handle(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::Produce => match decode(&mut body, v) {
            Some(req) => match produce::handle(shard, req, v, assigned).await {
                Some(resp) => respond(ctx, &leader_hints::produce(shard, resp, v)),
                None => Reply::None,
            },
            None => Reply::Close,
        },
        ApiKey::Fetch => match decode(&mut body, v) {
            Some(req) => fetch::handle(shard, ctx, req).await,
            None => Reply::Close,
        },
        ApiKey::ListOffsets => match decode(&mut body, v) {
            Some(req) => respond(ctx, &list_offsets::handle(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::CreateTopics => match decode(&mut body, v) {
            Some(req) => respond(ctx, &admin::create_topics(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::DeleteTopics => match decode(&mut body, v) {
            Some(req) => respond(ctx, &admin::delete_topics(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::CreatePartitions => match decode(&mut body, v) {
            Some(req) => respond(ctx, &admin::create_partitions(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::DescribeConfigs => match decode(&mut body, v) {
            Some(req) => respond(ctx, &admin::describe_configs(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::IncrementalAlterConfigs => match decode(&mut body, v) {
            Some(req) => respond(
                ctx,
                &configs::incremental_alter_configs(shard, req, v).await,
            ),
            None => Reply::Close,
        },
        ApiKey::AlterConfigs => match decode(&mut body, v) {
            Some(req) => respond(ctx, &configs::alter_configs(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::DeleteRecords => match decode(&mut body, v) {
            Some(req) => respond(ctx, &delete_records::handle(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::DescribeProducers => match decode(&mut body, v) {
            Some(req) => respond(ctx, &describe_producers::handle(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::OffsetForLeaderEpoch => match decode(&mut body, v) {
            Some(req) => respond(ctx, &leader_epoch::handle(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::DescribeLogDirs => match decode(&mut body, v) {
            Some(req) => respond(ctx, &log_dirs::handle(shard, req, v).await),
            None => Reply::Close,
        },
        ApiKey::DescribeCluster => match decode(&mut body, v) {
            Some(req) => respond(ctx, &metadata::describe_cluster(shard, &req)),
            None => Reply::Close,
        },
        ApiKey::FindCoordinator
        | ApiKey::JoinGroup
        | ApiKey::SyncGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::OffsetDelete
        | ApiKey::DescribeGroups
        | ApiKey::DeleteGroups
        | ApiKey::ListGroups => groups::dispatch(shard, ctx, body).await,
        ApiKey::InitProducerId => match decode(&mut body, v) {
            Some(req) => respond(
                ctx,
                &crate::producer_ids::init_producer_id(
                    &shard.config.data_dir,
                    shard.config.node_id,
                    &req,
                )
                .await,
            ),
            None => Reply::Close,
        },
        _ => Reply::Close,
    }
}

/// Decodes a request body as the type `dispatch` decodes it as, and drops
/// it: the decoding half of a request without the handler. `Some(true)` when
/// the body decoded, `Some(false)` when the connection would be closed, and
/// `None` for an API that `dispatch` does not route. For the fuzz targets and
/// the replay of their regressions in the ordinary tests.
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_body(ctx: &RequestContext, mut body: Bytes) -> Option<bool> {
    use kafka_protocol::messages::*;
    let v = ctx.version;
    let b = &mut body;
    Some(match ctx.api_key {
        ApiKey::ApiVersions => decode::<ApiVersionsRequest>(b, v).is_some(),
        ApiKey::Metadata => decode::<MetadataRequest>(b, v).is_some(),
        ApiKey::Produce => decode::<ProduceRequest>(b, v).is_some(),
        ApiKey::Fetch => decode::<FetchRequest>(b, v).is_some(),
        ApiKey::ListOffsets => decode::<ListOffsetsRequest>(b, v).is_some(),
        ApiKey::CreateTopics => decode::<CreateTopicsRequest>(b, v).is_some(),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(b, v).is_some(),
        ApiKey::CreatePartitions => decode::<CreatePartitionsRequest>(b, v).is_some(),
        ApiKey::DescribeConfigs => decode::<DescribeConfigsRequest>(b, v).is_some(),
        ApiKey::IncrementalAlterConfigs => decode::<IncrementalAlterConfigsRequest>(b, v).is_some(),
        ApiKey::AlterConfigs => decode::<AlterConfigsRequest>(b, v).is_some(),
        ApiKey::DeleteRecords => decode::<DeleteRecordsRequest>(b, v).is_some(),
        ApiKey::DescribeProducers => decode::<DescribeProducersRequest>(b, v).is_some(),
        ApiKey::DescribeCluster => decode::<DescribeClusterRequest>(b, v).is_some(),
        ApiKey::OffsetForLeaderEpoch => decode::<OffsetForLeaderEpochRequest>(b, v).is_some(),
        ApiKey::DescribeLogDirs => decode::<DescribeLogDirsRequest>(b, v).is_some(),
        ApiKey::FindCoordinator => decode::<FindCoordinatorRequest>(b, v).is_some(),
        ApiKey::JoinGroup => decode::<JoinGroupRequest>(b, v).is_some(),
        ApiKey::SyncGroup => decode::<SyncGroupRequest>(b, v).is_some(),
        ApiKey::Heartbeat => decode::<HeartbeatRequest>(b, v).is_some(),
        ApiKey::LeaveGroup => decode::<LeaveGroupRequest>(b, v).is_some(),
        ApiKey::OffsetCommit => decode::<OffsetCommitRequest>(b, v).is_some(),
        ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(b, v).is_some(),
        ApiKey::OffsetDelete => decode::<OffsetDeleteRequest>(b, v).is_some(),
        ApiKey::DescribeGroups => decode::<DescribeGroupsRequest>(b, v).is_some(),
        ApiKey::DeleteGroups => decode::<DeleteGroupsRequest>(b, v).is_some(),
        ApiKey::ListGroups => decode::<ListGroupsRequest>(b, v).is_some(),
        ApiKey::InitProducerId => decode::<InitProducerIdRequest>(b, v).is_some(),
        _ => return None,
    })
}

/// The whole decoding path of one request frame (no size prefix) without a
/// shard: header, then body. What the `request` fuzz target runs, and what
/// the tests replay `fuzz/regressions/request/` through.
#[cfg(any(test, feature = "fuzzing"))]
pub fn decode_frame(frame: Bytes) -> Option<bool> {
    match parse_header(frame) {
        Ok((ctx, body)) => decode_body(&ctx, body),
        Err(_) => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every advertised API is decoded by `decode_body` (so the fuzz
    /// target covers everything `dispatch` routes).
    #[test]
    fn decode_body_covers_every_advertised_api() {
        for &(api_key, min, max) in api_versions::SUPPORTED_APIS {
            for version in min..=max {
                let ctx = RequestContext {
                    api_key,
                    version,
                    header: RequestHeader::default(),
                };
                assert!(
                    decode_body(&ctx, Bytes::new()).is_some(),
                    "{api_key:?} v{version} is not decoded"
                );
            }
        }
    }

    /// The files of `fuzz/<kind>/request/`, sorted by name.
    fn fuzz_inputs(kind: &str) -> Vec<(std::path::PathBuf, Bytes)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz")
            .join(kind)
            .join("request");
        let mut paths: Vec<_> = std::fs::read_dir(&dir)
            .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
            .unwrap_or_default();
        paths.sort();
        paths
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).expect("read a fuzz input");
                (p, Bytes::from(bytes))
            })
            .collect()
    }

    /// Every input that once crashed the `request` fuzz target
    /// (`fuzz/regressions/request/`) decodes without a panic.
    #[test]
    fn request_fuzz_regressions_replay() {
        for (path, frame) in fuzz_inputs("regressions") {
            eprintln!("replaying {}", path.display());
            let _ = decode_frame(frame);
        }
    }

    /// The `request` seed corpus is one valid frame per advertised API and
    /// version, and each decodes.
    #[test]
    fn request_seed_corpus_decodes() {
        let seeds = fuzz_inputs("corpus");
        let mut covered = std::collections::BTreeSet::new();
        for (path, frame) in seeds {
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with("-v99") {
                assert_eq!(decode_frame(frame), Some(false), "{name}");
                continue;
            }
            assert_eq!(decode_frame(frame.clone()), Some(true), "{name}");
            covered.insert((frame[0..2].to_vec(), frame[2..4].to_vec()));
        }
        let advertised: usize = api_versions::SUPPORTED_APIS
            .iter()
            .map(|(_, min, max)| (max - min + 1) as usize)
            .sum();
        assert_eq!(covered.len(), advertised, "a version without a seed");
    }
}
