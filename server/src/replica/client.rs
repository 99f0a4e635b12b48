//! A Kafka connection from this broker to another one (a follower to its
//! leader): one request at a time, each with a deadline; any failure is an
//! error for the caller to back off on, never a panic.

use std::time::Duration;

use anyhow::{anyhow, bail};
use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// The client id a follower's requests carry.
const CLIENT_ID: &str = "strom-replica-fetcher";

pub struct BrokerClient {
    stream: TcpStream,
    correlation_id: i32,
    /// Largest response frame accepted.
    max_frame: usize,
}

/// Runs `fut` for at most `limit`.
async fn within<T>(
    limit: Duration,
    what: &str,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    futures_lite::future::or(fut, async {
        glommio::timer::sleep(limit).await;
        Err(anyhow!("{what} timed out after {limit:?}"))
    })
    .await
}

impl BrokerClient {
    pub async fn connect(addr: &str, limit: Duration, max_frame: usize) -> anyhow::Result<Self> {
        let stream = within(limit, "connecting", async {
            TcpStream::connect(addr)
                .await
                .map_err(|e| anyhow!("connecting to {addr}: {e}"))
        })
        .await?;
        // Small requests: no Nagle delay on a follower's fetch.
        let _ = stream.set_nodelay(true);
        Ok(BrokerClient {
            stream,
            correlation_id: 0,
            max_frame,
        })
    }

    /// Sends `body` as `api_key` at `version` and decodes the response,
    /// all within `limit`.
    pub async fn call<Req: Encodable, Resp: Decodable>(
        &mut self,
        api_key: ApiKey,
        version: i16,
        body: &Req,
        limit: Duration,
    ) -> anyhow::Result<Resp> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let header = RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let mut buf = BytesMut::with_capacity(256);
        buf.extend_from_slice(&[0; 4]);
        header.encode(&mut buf, api_key.request_header_version(version))?;
        body.encode(&mut buf, version)?;
        let size = i32::try_from(buf.len().saturating_sub(4))?;
        if let Some(prefix) = buf.get_mut(0..4) {
            prefix.copy_from_slice(&size.to_be_bytes());
        }
        let max_frame = self.max_frame;
        let stream = &mut self.stream;
        let mut frame = within(limit, "a request to the leader", async {
            stream.write_all(&buf).await?;
            stream.flush().await?;
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).await?;
            let size = usize::try_from(i32::from_be_bytes(size))
                .map_err(|_| anyhow!("negative response size"))?;
            if size > max_frame {
                bail!("response of {size} bytes exceeds {max_frame}");
            }
            let mut frame = vec![0u8; size];
            stream.read_exact(&mut frame).await?;
            Ok(Bytes::from(frame))
        })
        .await?;
        let header =
            decode::<ResponseHeader>(&mut frame, api_key.response_header_version(version))?;
        if header.correlation_id != correlation_id {
            bail!(
                "response correlation id {} for request {correlation_id}",
                header.correlation_id
            );
        }
        decode::<Resp>(&mut frame, version)
    }
}

/// Decodes a message; a decoder panic on a bad response is an error.
fn decode<T: Decodable>(buf: &mut Bytes, version: i16) -> anyhow::Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::decode(buf, version))) {
        Ok(r) => r.map_err(|e| anyhow!("malformed response: {e}")),
        Err(_) => Err(anyhow!("the decoder panicked on a malformed response")),
    }
}
