//! The Kafka APIs: header parsing, version checks and the dispatch `match`.
//!
//! `handle_frame` turns one request frame into a `Reply`. Every API Strom
//! answers is listed in `api_versions::SUPPORTED_APIS` (what ApiVersions
//! advertises) and routed in `dispatch`; a request for anything else closes
//! the connection, as Kafka does. The response type, decoding and response
//! frames are `crate::wire`'s; each API family has its module here.

pub mod admin;
pub mod api_versions;
pub mod fetch;
mod fetch_read;
pub mod groups;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, RequestHeader};

use crate::api::api_versions::supported_range;
use crate::shard::Shard;
use crate::wire::{decode, respond, Reply, RequestContext};

/// Handles one request frame (without its size prefix). A panic anywhere in
/// the handling closes this connection only (`wire::contain_panic`).
pub async fn handle_frame(shard: Rc<Shard>, frame: Bytes) -> Reply {
    crate::wire::contain_panic(handle(shard, frame)).await
}

async fn handle(shard: Rc<Shard>, mut frame: Bytes) -> Reply {
    // api_key, api_version and correlation_id: 8 bytes at least.
    let (Some(&[k0, k1, v0, v1]), true) = (frame.get(0..4), frame.len() >= 8) else {
        return Reply::Close;
    };
    let api_key_raw = i16::from_be_bytes([k0, k1]);
    let version = i16::from_be_bytes([v0, v1]);
    let Ok(api_key) = ApiKey::try_from(api_key_raw) else {
        tracing::info!(api_key = api_key_raw, "closing connection: unknown API key");
        return Reply::Close;
    };
    let supported = supported_range(api_key);
    let in_range = supported.is_some_and(|(min, max)| version >= min && version <= max);
    if !in_range && api_key != ApiKey::ApiVersions {
        tracing::info!(
            ?api_key,
            version,
            "closing connection: unsupported API version"
        );
        return Reply::Close;
    }
    // For an ApiVersions version this broker does not know, KIP-511 says to
    // parse the header as the newest known one (v2 from ApiVersions v3 on).
    let header_version = if in_range {
        api_key.request_header_version(version)
    } else {
        2
    };
    let Some(header) = decode::<RequestHeader>(&mut frame, header_version) else {
        return Reply::Close;
    };
    let ctx = RequestContext {
        api_key,
        version,
        header,
    };
    if !in_range {
        return api_versions::unsupported_version(&ctx);
    }
    dispatch(&shard, &ctx, frame).await
}

/// The one place where requests are routed by API key.
async fn dispatch(shard: &Rc<Shard>, ctx: &RequestContext, mut body: Bytes) -> Reply {
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
            Some(req) => match produce::handle(shard, req, v).await {
                Some(resp) => respond(ctx, &resp),
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
                &crate::producer_ids::init_producer_id(&shard.config.data_dir, &req),
            ),
            None => Reply::Close,
        },
        _ => Reply::Close,
    }
}
