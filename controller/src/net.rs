//! The network between controllers: Raft messages over TCP.
//!
//! Each message is a frame `len:u32 BE, kind:u8, body`: kind 0 is a
//! protobuf raft Message, kind 1 a broker heartbeat (`broker_id:i32 BE,
//! broker_epoch:i64 BE, applied_index:u64 BE`). Every node
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

const KIND_RAFT: u8 = 0;
const KIND_HEARTBEAT: u8 = 1;
const HEARTBEAT_BYTES: usize = 4 + 8 + 8;

/// A broker's heartbeat to the active controller (Kafka's
/// `BrokerHeartbeatRequest`, reduced to what fencing needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: i64,
    /// The last metadata entry the broker has applied: it is caught up once
    /// this reaches its own registration.
    pub applied_index: u64,
}

/// What travels between controllers.
#[derive(Debug, Clone)]
pub enum Frame {
    Raft(Message),
    Heartbeat(Heartbeat),
}

impl Frame {
    fn to(&self, heartbeat_to: u64) -> u64 {
        match self {
            Frame::Raft(m) => m.to,
            Frame::Heartbeat(_) => heartbeat_to,
        }
    }
}

/// Hands a received frame to the controller; false once it is gone.
pub type Deliver = Arc<dyn Fn(Frame) -> bool + Send + Sync>;

/// The sending side: one queue per peer.
pub struct Network {
    peers: HashMap<u64, SyncSender<Frame>>,
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
            self.queue(Frame::Raft(m), 0);
        }
    }

    /// Queues a heartbeat for peer `to`; dropped like a Raft message when
    /// it does not fit (the next one follows soon).
    pub fn send_heartbeat(&self, to: u64, heartbeat: Heartbeat) {
        self.queue(Frame::Heartbeat(heartbeat), to);
    }

    fn queue(&self, frame: Frame, heartbeat_to: u64) {
        let to = frame.to(heartbeat_to);
        let Some(queue) = self.peers.get(&to) else {
            tracing::warn!(to, "controller message for an unknown peer dropped");
            return;
        };
        match queue.try_send(frame) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                tracing::debug!(to, "peer queue full; controller message dropped")
            }
            Err(TrySendError::Disconnected(_)) => {}
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
        match decode_frame(&buf) {
            Ok(frame) => {
                if !deliver(frame) {
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

/// The frame in `buf` (after its length).
fn decode_frame(buf: &[u8]) -> Result<Frame, String> {
    let (kind, body) = buf.split_first().ok_or("an empty frame")?;
    match *kind {
        KIND_RAFT => Message::parse_from_bytes(body)
            .map(Frame::Raft)
            .map_err(|e| e.to_string()),
        KIND_HEARTBEAT => {
            let fixed: [u8; HEARTBEAT_BYTES] = body
                .try_into()
                .map_err(|_| format!("a heartbeat of {} bytes", body.len()))?;
            let (id, rest) = fixed.split_at(4);
            let (epoch, applied) = rest.split_at(8);
            Ok(Frame::Heartbeat(Heartbeat {
                broker_id: i32::from_be_bytes(id.try_into().map_err(|_| "id")?),
                broker_epoch: i64::from_be_bytes(epoch.try_into().map_err(|_| "epoch")?),
                applied_index: u64::from_be_bytes(applied.try_into().map_err(|_| "applied")?),
            }))
        }
        other => Err(format!("unknown frame kind {other}")),
    }
}

fn send_loop(id: u64, addr: &str, queue: Receiver<Frame>) {
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

fn write_message(w: &mut impl Write, frame: &Frame) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    match frame {
        Frame::Raft(m) => {
            bytes.push(KIND_RAFT);
            m.write_to_vec(&mut bytes).map_err(std::io::Error::other)?;
        }
        Frame::Heartbeat(h) => {
            bytes.push(KIND_HEARTBEAT);
            bytes.extend_from_slice(&h.broker_id.to_be_bytes());
            bytes.extend_from_slice(&h.broker_epoch.to_be_bytes());
            bytes.extend_from_slice(&h.applied_index.to_be_bytes());
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_ones_are_refused() {
        let hb = Heartbeat {
            broker_id: 3,
            broker_epoch: 42,
            applied_index: 7,
        };
        let m = Message {
            to: 2,
            term: 9,
            ..Default::default()
        };
        for frame in [Frame::Heartbeat(hb), Frame::Raft(m)] {
            let mut out = Vec::new();
            write_message(&mut out, &frame).unwrap();
            let decoded = decode_frame(&out[4..]).unwrap();
            match (frame, decoded) {
                (Frame::Heartbeat(a), Frame::Heartbeat(b)) => assert_eq!(a, b),
                (Frame::Raft(a), Frame::Raft(b)) => assert_eq!(a, b),
                _ => panic!("the frame changed kind"),
            }
        }
        assert!(decode_frame(&[]).is_err());
        assert!(decode_frame(&[KIND_HEARTBEAT, 1, 2]).is_err());
        assert!(decode_frame(&[9]).is_err());
    }
}
