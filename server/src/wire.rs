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

/// Runs a request's handling so that a panic in it (a bug: no request field
/// should reach one) closes that connection and is logged, instead of
/// unwinding through the shard's executor and stopping every partition on it.
pub async fn contain_panic(handling: impl std::future::Future<Output = Reply>) -> Reply {
    use futures_lite::FutureExt;
    match AssertUnwindSafe(handling).catch_unwind().await {
        Ok(reply) => reply,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!("closing connection: request handler panicked: {what}");
            Reply::Close
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
    // The 4 size bytes were put first; a frame past i32::MAX cannot be sent.
    let Ok(size) = i32::try_from(buf.len().saturating_sub(4)) else {
        tracing::error!("response of {} bytes exceeds a frame", buf.len());
        return None;
    };
    buf.get_mut(0..4)?.copy_from_slice(&size.to_be_bytes());
    Some(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panicking handler task becomes `Reply::Close`; the executor, and a
    /// task beside it, run on.
    #[test]
    fn a_panicking_handler_closes_its_connection_and_the_shard_runs_on() {
        let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
        ex.run(async {
            let panicking = glommio::spawn_local(contain_panic(async {
                glommio::yield_if_needed().await;
                let fields: Vec<i32> = Vec::new();
                Reply::Frame(vec![Bytes::from(fields[3].to_string())])
            }));
            let beside = glommio::spawn_local(contain_panic(async { Reply::None }));
            assert!(matches!(panicking.await, Reply::Close));
            assert!(matches!(beside.await, Reply::None));
            // The executor still schedules new work.
            let after = glommio::spawn_local(async { 7 }).await;
            assert_eq!(after, 7);
        });
    }
}
