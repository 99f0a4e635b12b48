//! The network between controllers: Raft messages over TCP.
//!
//! Each message is a frame `len:u32 BE, protobuf raft Message`. Every node
//! listens on its `controller.listener` address; for each peer it keeps one
//! outgoing connection, written by that peer's sender thread from a bounded
//! queue. Raft tolerates lost messages, so a full queue or a broken
//! connection drops messages rather than blocking the controller: the
//! connection is made again for the next message.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE_MESSAGES: usize = 4096;
/// The largest message accepted; snapshots of the metadata image are the
/// large ones.
pub const MESSAGE_MAX_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Hands a received message to the controller; false once it is gone.
pub type Deliver = Arc<dyn Fn(Message) -> bool + Send + Sync>;

/// The sending side: one queue per peer.
pub struct Network {
    peers: HashMap<u64, SyncSender<Message>>,
}

impl Network {
    /// Starts accepting on `listener` and a sender thread per peer
    /// (`(id, "host:port")`, this node excluded).
    pub fn start(
        listener: TcpListener,
        peers: &[(u64, String)],
        deliver: Deliver,
    ) -> std::io::Result<Network> {
        std::thread::Builder::new()
            .name("strom-ctl-accept".into())
            .spawn(move || accept_loop(listener, deliver))?;
        let mut queues = HashMap::new();
        for (id, addr) in peers {
            let (tx, rx) = sync_channel(PEER_QUEUE_MESSAGES);
            let addr = addr.clone();
            let id = *id;
            std::thread::Builder::new()
                .name(format!("strom-ctl-peer-{id}"))
                .spawn(move || send_loop(id, &addr, rx))?;
            queues.insert(id, tx);
        }
        Ok(Network { peers: queues })
    }

    /// Queues messages for their peers; drops what does not fit.
    pub fn send(&self, messages: Vec<Message>) {
        for m in messages {
            let Some(queue) = self.peers.get(&m.to) else {
                tracing::warn!(to = m.to, "raft message for an unknown peer dropped");
                continue;
            };
            match queue.try_send(m) {
                Ok(()) => {}
                Err(TrySendError::Full(m)) => {
                    tracing::debug!(to = m.to, "peer queue full; raft message dropped")
                }
                Err(TrySendError::Disconnected(_)) => {}
            }
        }
    }
}

fn accept_loop(listener: TcpListener, deliver: Deliver) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let deliver = deliver.clone();
                let spawned = std::thread::Builder::new()
                    .name("strom-ctl-recv".into())
                    .spawn(move || receive_loop(stream, deliver));
                if let Err(e) = spawned {
                    tracing::warn!("controller: no thread for a peer connection: {e}");
                }
            }
            Err(e) => {
                tracing::warn!("controller accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn receive_loop(stream: TcpStream, deliver: Deliver) {
    let peer = stream.peer_addr().ok();
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = [0u8; 4];
        if reader.read_exact(&mut len).is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MESSAGE_MAX_BYTES {
            tracing::warn!(
                ?peer,
                len,
                "controller peer sent an oversized frame; closing"
            );
            return;
        }
        let mut buf = vec![0u8; len];
        if reader.read_exact(&mut buf).is_err() {
            return;
        }
        match Message::parse_from_bytes(&buf) {
            Ok(m) => {
                if !deliver(m) {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(?peer, "controller peer sent a bad message ({e}); closing");
                return;
            }
        }
    }
}

fn send_loop(id: u64, addr: &str, queue: Receiver<Message>) {
    let mut conn: Option<BufWriter<TcpStream>> = None;
    while let Ok(first) = queue.recv() {
        // Write everything queued, then flush once.
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        if conn.is_none() {
            conn = connect(addr).map(BufWriter::new);
        }
        let Some(w) = conn.as_mut() else {
            continue; // unreachable now; these messages are lost, Raft resends
        };
        let written = batch.iter().try_for_each(|m| write_message(w, m));
        if let Err(e) = written.and_then(|()| w.flush()) {
            tracing::debug!(peer = id, "controller connection lost: {e}");
            conn = None;
        }
    }
}

fn write_message(w: &mut impl Write, m: &Message) -> std::io::Result<()> {
    let bytes = m.write_to_bytes().map_err(std::io::Error::other)?;
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&bytes)
}

fn connect(addr: &str) -> Option<TcpStream> {
    let resolved: SocketAddr = addr.to_socket_addrs().ok()?.next()?;
    let stream = TcpStream::connect_timeout(&resolved, CONNECT_TIMEOUT).ok()?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    Some(stream)
}
