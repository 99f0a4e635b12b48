//! One client connection: frames in, responses out, in request order.
//!
//! The reader task reads size-checked frames and spawns one task per request;
//! the tasks go, in arrival order, into a bounded queue that the writer
//! drains, awaiting each task before writing its response. So requests are
//! processed concurrently (a long-poll fetch does not stall the read side),
//! responses leave in order, and at most `IN_FLIGHT_REQUESTS_MAX` requests of
//! one connection are pending at a time. Produce requests are the exception
//! to the concurrency: each waits for the connection's previous Produce, so
//! appends keep the order the client sent them in.
//!
//! Before a frame is allocated, its size is taken from the shard's request
//! budget (`queued.max.request.bytes`) and held until its request has been
//! handled; while the budget cannot take it, this connection's socket is not
//! read. A connection with no request in flight that has neither sent nor
//! received a byte for `connections.max.idle.ms` is closed.

use std::cell::Cell;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_channel::oneshot;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use futures_util::future::{select, Either};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;
use kafka_protocol::messages::ApiKey;

use crate::api;
use crate::conn_limits::ConnectionSlot;
use crate::frame_pool::POOLED_FRAME_BYTES_MIN;
use crate::shard::Shard;
use crate::stages::{self, Stage};
use crate::wire::Reply;

/// Most iovecs handed to one sendmsg (Linux's IOV_MAX is 1024).
const IOVECS_PER_SEND_MAX: usize = 1024;

/// Requests of one connection being processed or waiting to be written.
pub const IN_FLIGHT_REQUESTS_MAX: usize = 64;

/// Decrements the shard's connection count when the connection ends.
struct ShardConnection(Rc<Shard>);

impl Drop for ShardConnection {
    fn drop(&mut self) {
        self.0
            .connections
            .set(self.0.connections.get().saturating_sub(1));
    }
}

/// When the connection last moved a byte, and its requests in flight.
struct Activity {
    last: Cell<Instant>,
    /// Requests read whose response is not written yet.
    requests: Cell<usize>,
}

impl Activity {
    fn touch(&self) {
        self.last.set(Instant::now());
    }
}

/// `slot` is the connection's place under the broker's connection limits,
/// given back when the connection ends.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, slot: ConnectionSlot) {
    shard
        .connections
        .set(shard.connections.get().saturating_add(1));
    let _counted = ShardConnection(shard.clone());
    let _slot = slot;
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let _ = stream.set_nodelay(true);
    let fd = stream.as_raw_fd();
    let (reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<JoinHandle<Answered>>(IN_FLIGHT_REQUESTS_MAX);
    let activity = Rc::new(Activity {
        last: Cell::new(Instant::now()),
        requests: Cell::new(0),
    });

    let read_side = Box::pin(read_loop(
        shard.clone(),
        reader,
        tx,
        peer.clone(),
        activity.clone(),
    ));
    let write_side = Box::pin(write_loop(writer, fd, rx, activity.clone()));
    let io = Box::pin(async move {
        match select(read_side, write_side).await {
            // The client finished sending (or sent a bad frame): answer
            // what was already accepted, then close.
            Either::Left(((), write_side)) => write_side.await,
            // The writer stopped (socket error or a request that closes the
            // connection): drop the reader too.
            Either::Right(((), _)) => {}
        }
    });
    let idle_ms = shard.config.connections_max_idle_ms;
    let idle = Box::pin(idle_timeout(activity, Duration::from_millis(idle_ms)));
    if let Either::Right(_) = select(io, idle).await {
        tracing::info!(%peer, idle_ms, "closing idle connection");
    }
    tracing::debug!(%peer, "connection closed");
}

/// A request's reply, when it was ready, and the stage its sending counts
/// as, if any (for `crate::stages`).
struct Answered {
    reply: Reply,
    ready: Option<Instant>,
    send: Option<Stage>,
}

/// Resolves once the connection has had no request in flight and no
/// traffic for `idle`.
async fn idle_timeout(activity: Rc<Activity>, idle: Duration) {
    loop {
        let quiet = activity.last.get().elapsed();
        if quiet >= idle && activity.requests.get() == 0 {
            return;
        }
        // With requests in flight, look again once they may be done.
        glommio::timer::sleep(idle.saturating_sub(quiet).max(idle.min(IDLE_RECHECK))).await;
    }
}

/// How soon a connection that was quiet but busy is looked at again.
const IDLE_RECHECK: Duration = Duration::from_millis(100);

/// Fills `buf` from the socket, noting each read as activity.
async fn read_full(
    reader: &mut futures_lite::io::ReadHalf<TcpStream>,
    buf: &mut [u8],
    activity: &Activity,
) -> std::io::Result<()> {
    let mut rest = buf;
    while !rest.is_empty() {
        let n = reader.read(rest).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        activity.touch();
        rest = rest.get_mut(n..).unwrap_or_default();
    }
    Ok(())
}

async fn read_loop(
    shard: Rc<Shard>,
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
    tx: local_channel::LocalSender<JoinHandle<Answered>>,
    peer: String,
    activity: Rc<Activity>,
) {
    let max_bytes = shard.config.socket_request_max_bytes;
    let mut previous_produce: Option<oneshot::Receiver<()>> = None;
    // Small frames are cut from one buffer per connection; large ones
    // (produce requests) are read into warm buffers from the shard's pool.
    // Either way the memory is reused once the request is done with it
    // (the engine copies produced batches into its own aligned buffers).
    let mut buf = BytesMut::new();
    loop {
        let mut size_buf = [0u8; 4];
        if read_full(&mut reader, &mut size_buf, &activity)
            .await
            .is_err()
        {
            return;
        }
        let size = i32::from_be_bytes(size_buf);
        if size < 0 || size as usize > max_bytes {
            tracing::info!(%peer, size, max_bytes, "closing connection: bad frame size");
            return;
        }
        let size = size as usize;
        let receiving = stages::start();
        // Nothing is allocated for the frame before the budget takes it.
        let admitted = shard.request_budget.admit(size).await;
        let frame: Bytes = if size >= POOLED_FRAME_BYTES_MIN {
            let mut pooled = shard.frames.take(size);
            if read_full(&mut reader, pooled.as_mut_slice(), &activity)
                .await
                .is_err()
            {
                return;
            }
            pooled.freeze()
        } else {
            buf.clear();
            buf.resize(size, 0);
            if read_full(&mut reader, &mut buf, &activity).await.is_err() {
                return;
            }
            buf.split_to(size).freeze()
        };
        let is_produce = frame
            .get(0..2)
            .is_some_and(|key| key == (ApiKey::Produce as i16).to_be_bytes());
        activity
            .requests
            .set(activity.requests.get().saturating_add(1));
        let task = if is_produce {
            stages::record(Stage::ProduceReceive, receiving);
            // Produce requests of one connection get their offsets one
            // after the other: a pipelining producer's batches must land in
            // the order it sent them. (Kafka handles the whole request
            // before it reads the next; here only the offsets wait.)
            if let Some(previous) = previous_produce.take() {
                let ordering = stages::start();
                let _ = previous.await;
                stages::record(Stage::ProduceOrder, ordering);
            }
            // The next one goes on once this one's records have their
            // offsets: waiting for their durability (and the replicas)
            // overlaps with the next one's.
            let (assigned_tx, assigned_rx) = oneshot::channel::<()>();
            previous_produce = Some(assigned_rx);
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let handling = stages::start();
                let reply = api::handle_frame_staged(shard, frame, Some(assigned_tx)).await;
                stages::record(Stage::ProduceHandle, handling);
                drop(admitted);
                Answered {
                    reply,
                    ready: stages::start(),
                    send: Some(Stage::ProduceSend),
                }
            })
            .detach()
        } else {
            let is_fetch = frame
                .get(0..2)
                .is_some_and(|key| key == (ApiKey::Fetch as i16).to_be_bytes());
            let shard = shard.clone();
            glommio::spawn_local(async move {
                let reply = api::handle_frame(shard, frame).await;
                drop(admitted);
                Answered {
                    reply,
                    ready: stages::start(),
                    send: is_fetch.then_some(Stage::FetchSend),
                }
            })
            .detach()
        };
        if tx.send(task).await.is_err() {
            return;
        }
    }
}

async fn write_loop(
    mut writer: futures_lite::io::WriteHalf<TcpStream>,
    fd: RawFd,
    rx: local_channel::LocalReceiver<JoinHandle<Answered>>,
    activity: Rc<Activity>,
) {
    while let Some(task) = rx.recv().await {
        let answered = task.await;
        if let Some(a) = &answered {
            stages::record(Stage::ReplyWait, a.ready);
        }
        let send_stage = answered.as_ref().and_then(|a| a.send);
        let done = match answered.map(|a| a.reply) {
            Some(Reply::Frame(chunks)) => {
                let sending = stages::start();
                let failed = write_vectored_all(&mut writer, fd, &chunks).await.is_err();
                if let Some(stage) = send_stage {
                    stages::record(stage, sending);
                }
                failed
            }
            Some(Reply::None) => false,
            Some(Reply::Close) | None => {
                let _ = writer.flush().await;
                true
            }
        };
        activity
            .requests
            .set(activity.requests.get().saturating_sub(1));
        activity.touch();
        if done {
            return;
        }
    }
    let _ = writer.flush().await;
}

/// Writes `chunks` in order with as few `sendmsg` calls as the socket
/// allows: the stored batches go to the kernel straight from their buffers.
/// When the socket is full, the rest of the current chunk goes through the
/// stream's own write, which waits for the socket to drain.
async fn write_vectored_all(
    writer: &mut futures_lite::io::WriteHalf<TcpStream>,
    fd: RawFd,
    chunks: &[Bytes],
) -> std::io::Result<()> {
    // `head` is the unsent part of the current chunk, `rest` the chunks after it.
    let mut head = Bytes::new();
    let mut rest = chunks;
    loop {
        if head.is_empty() {
            let Some((next, after)) = rest.split_first() else {
                return Ok(());
            };
            head = next.clone();
            rest = after;
            continue;
        }
        let iov: Vec<libc::iovec> = std::iter::once(&head)
            .chain(rest)
            .take(IOVECS_PER_SEND_MAX)
            .map(|c| libc::iovec {
                iov_base: c.as_ptr() as *mut libc::c_void,
                iov_len: c.len(),
            })
            .collect();
        // SAFETY: a zeroed msghdr is valid; it points at `iov`, which lives
        // across the call and describes readable slices of `chunks`.
        let sent = unsafe {
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = iov.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = iov.len() as _;
            libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        };
        if sent < 0 {
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock => {
                    writer.write_all(&head).await?;
                    head = Bytes::new();
                    continue;
                }
                std::io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
        let mut sent = sent as usize;
        while sent >= head.len() {
            sent = sent.saturating_sub(head.len());
            let Some((next, after)) = rest.split_first() else {
                return Ok(());
            };
            head = next.clone();
            rest = after;
        }
        bytes::Buf::advance(&mut head, sent);
    }
}
