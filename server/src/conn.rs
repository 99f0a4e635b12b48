//! One client connection: frames in, responses out, in request order.
//!
//! The reader task reads size-checked frames and spawns one task per request;
//! the tasks go, in arrival order, into a bounded queue that the writer
//! drains, awaiting each task before writing its response. So requests are
//! processed concurrently (a long-poll fetch does not stall the read side),
//! responses leave in order, and at most `IN_FLIGHT_REQUESTS_MAX` requests of
//! one connection are pending at a time.

use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_util::future::{select, Either};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::api::{self, Reply};
use crate::shard::Shard;

/// Requests of one connection being processed or waiting to be written.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;

/// Decrements the shard's connection count when the connection ends.
struct ConnectionSlot(Rc<Shard>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0
            .connections
            .set(self.0.connections.get().saturating_sub(1));
    }
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    shard.connections.set(shard.connections.get() + 1);
    let _slot = ConnectionSlot(shard.clone());
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let (reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<JoinHandle<Reply>>(IN_FLIGHT_REQUESTS_MAX);

    let read_side = Box::pin(read_loop(shard.clone(), reader, tx, peer.clone()));
    let write_side = Box::pin(write_loop(writer, rx));
    match select(read_side, write_side).await {
        // The client finished sending (or sent a bad frame): answer what
        // was already accepted, then close.
        Either::Left(((), write_side)) => write_side.await,
        // The writer stopped (socket error or a request that closes the
        // connection): drop the reader too.
        Either::Right(((), _)) => {}
    }
    tracing::debug!(%peer, "connection closed");
}

async fn read_loop(
    shard: Rc<Shard>,
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
    tx: local_channel::LocalSender<JoinHandle<Reply>>,
    peer: String,
) {
    let max_bytes = shard.config.socket_request_max_bytes;
    loop {
        let mut size_buf = [0u8; 4];
        if reader.read_exact(&mut size_buf).await.is_err() {
            return;
        }
        let size = i32::from_be_bytes(size_buf);
        if size < 0 || size as usize > max_bytes {
            tracing::info!(%peer, size, max_bytes, "closing connection: bad frame size");
            return;
        }
        let mut frame = BytesMut::zeroed(size as usize);
        if reader.read_exact(&mut frame).await.is_err() {
            return;
        }
        let frame: Bytes = frame.freeze();
        let task = glommio::spawn_local(api::handle_frame(shard.clone(), frame)).detach();
        if tx.send(task).await.is_err() {
            return;
        }
    }
}

async fn write_loop(
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    rx: local_channel::LocalReceiver<JoinHandle<Reply>>,
) {
    while let Some(task) = rx.recv().await {
        match task.await {
            Some(Reply::Frame(chunks)) => {
                for chunk in &chunks {
                    if writer.write_all(chunk).await.is_err() {
                        return;
                    }
                }
                if writer.flush().await.is_err() {
                    return;
                }
            }
            Some(Reply::None) => {}
            Some(Reply::Close) | None => {
                let _ = writer.flush().await;
                return;
            }
        }
    }
    let _ = writer.flush().await;
}
