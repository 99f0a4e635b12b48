//! The Kafka wire format around a request's body: what the connection does
//! with a request's outcome (`Reply`), the parsed request header
//! (`RequestContext`), decoding that a hostile request cannot turn into a
//! panic, and response frames (size, header, body).
//!
//! Framing and headers only: which APIs exist and how they are answered is
//! `api`'s business. Hand-written encoders of one API's body (the Fetch
//! response around stored batches) live with that API.

use std::panic::AssertUnwindSafe;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

/// What the connection does with a request's outcome.
pub enum Reply {
    /// A complete response frame (size prefix included), as chunks written in order.
    Frame(Vec<Bytes>),
    /// No response (Produce with acks=0).
    None,
    /// Close the connection (malformed or unsupported request).
    Close,
}

/// The parsed request header plus what is needed to answer it.
pub struct RequestContext {
    pub api_key: ApiKey,
    pub version: i16,
    pub header: RequestHeader,
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
