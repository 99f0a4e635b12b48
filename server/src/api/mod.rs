//! The Kafka APIs: header parsing, version checks and the dispatch `match`.
//!
//! `handle_frame` turns one request frame into a `Reply`. Every API Strom
//! answers is listed in `SUPPORTED_APIS` (what ApiVersions advertises) and
//! routed in `dispatch`; a request for anything else closes the connection,
//! as Kafka does.

pub mod admin;
pub mod api_versions;
pub mod fetch;
pub mod list_offsets;
pub mod metadata;
pub mod produce;

use std::panic::AssertUnwindSafe;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::shard::Shard;

/// What the connection does with a request's outcome.
pub enum Reply {
    /// A complete response frame (size prefix included), as chunks written in order.
    Frame(Vec<Bytes>),
    /// No response (Produce with acks=0).
    None,
    /// Close the connection (malformed or unsupported request).
    Close,
}

/// Versions Strom implements and advertises: (api, min, max). Only what is
/// tested with real clients is listed.
pub const SUPPORTED_APIS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
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

/// The parsed request header plus what is needed to answer it.
pub struct RequestContext {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
}

/// Handles one request frame (without its size prefix).
pub async fn handle_frame(shard: Rc<Shard>, mut frame: Bytes) -> Reply {
    if frame.len() < 8 {
        return Reply::Close;
    }
    let api_key_raw = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
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
        | ApiKey::ListGroups => crate::group::broker::dispatch(shard, ctx, body).await,
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

/// Decodes a message, treating any failure (including a panic inside the
/// decoder on hostile input) as malformed.
pub fn decode<T: Decodable>(buf: &mut Bytes, version: i16) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| T::decode(buf, version))) {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::info!("closing connection: malformed request: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("closing connection: decoder panicked on malformed request");
            None
        }
    }
}

/// Encodes a response frame: size, header (version by API), body.
pub fn respond<T: Encodable>(ctx: &RequestContext, body: &T) -> Reply {
    // ApiVersions always answers with header v0 so any client can read it.
    let header_version = if ctx.api_key == ApiKey::ApiVersions {
        0
    } else {
        ctx.api_key.response_header_version(ctx.version)
    };
    match encode_frame(ctx.header.correlation_id, header_version, body, ctx.version) {
        Some(frame) => Reply::Frame(vec![frame]),
        None => Reply::Close,
    }
}

pub fn encode_frame<T: Encodable>(
    correlation_id: i32,
    header_version: i16,
    body: &T,
    version: i16,
) -> Option<Bytes> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    if let Err(e) = header.encode(&mut buf, header_version) {
        tracing::error!("encoding response header failed: {e}");
        return None;
    }
    if let Err(e) = body.encode(&mut buf, version) {
        tracing::error!("encoding response failed: {e}");
        return None;
    }
    let size = (buf.len() - 4) as i32;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Some(buf.freeze())
}

/// Current wall-clock time in milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
