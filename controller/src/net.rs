//! The network between controllers: Raft messages over TCP.
//!
//! Each message is a frame `len:u32 BE, kind:u8, body`: kind 0 is a
//! protobuf raft Message, kind 1 a broker heartbeat (`broker_id:i32 BE,
//! broker_epoch:i64 BE, applied_index:u64 BE`, then `want_shutdown:u8`,
//! absent from nodes older than controlled shutdown), kind 2 a learner's request
//! to join (`node_id:u64 BE`, then the UTF-8 address it listens on, at
//! most [`JOIN_ADDRESS_MAX_BYTES`]). Every node
//! listens on its `controller.listener` address; for each peer it keeps one
//! outgoing connection, written by that peer's sender thread from a bounded
//! queue. The voters are peers from the start; a learner becomes one when
//! the conf change that adds it is applied (`add_peer`). Raft tolerates lost messages, so a full queue or a broken
//! connection drops messages rather than blocking the controller: the
//! connection is made again for the next message.

use std::collections::HashMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
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
/// How long sent bytes may stay unacknowledged before the kernel gives up
/// on a peer connection (TCP_USER_TIMEOUT). Raft's messages are small, so a
/// write to a peer cut off by the network lands in the socket buffer and
/// "succeeds"; TCP then retransmits with a backoff that reaches tens of
/// seconds, and after the network heals the peer hears nothing until the
/// next retransmission. With the timeout the connection fails, the next
/// write reconnects, and a healed peer hears within a connect. A stopped
/// process's kernel still acknowledges, so only silence trips it.
const UNACKED_TIMEOUT: Duration = Duration::from_secs(3);

const KIND_RAFT: u8 = 0;
const KIND_HEARTBEAT: u8 = 1;
const KIND_JOIN: u8 = 2;
const HEARTBEAT_BYTES: usize = 4 + 8 + 8;
/// A heartbeat with its `want_shutdown` byte.
const HEARTBEAT_SHUTDOWN_BYTES: usize = HEARTBEAT_BYTES + 1;
/// The longest address a joining learner may give.
pub const JOIN_ADDRESS_MAX_BYTES: usize = 255;

/// A broker's heartbeat to the active controller (Kafka's
/// `BrokerHeartbeatRequest`, reduced to what fencing needs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: i64,
    /// The last metadata entry the broker has applied: it is caught up once
    /// this reaches its own registration.
    pub applied_index: u64,
    /// Kafka's `wantShutDown`: the broker is stopping (SIGTERM) and asks
    /// the controller to move its leadership away and fence it.
    pub want_shutdown: bool,
}

/// A `process.roles=broker` node asking the active controller to add it
/// as a Raft learner that receives the metadata log at `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Join {
    pub node_id: u64,
    pub addr: String,
}

/// What travels between controllers.
#[derive(Debug, Clone)]
pub enum Frame {
    Raft(Message),
    Heartbeat(Heartbeat),
    Join(Join),
    /// Never on the wire: a sender thread's report that peer `id` refused
    /// a connection, so no process listens at its address (it died, or
    /// has not started). The active controller fences its broker without
    /// waiting out the session.
    Refused(u64),
}

/// Hands a received frame to the controller; false once it is gone.
pub type Deliver = Arc<dyn Fn(Frame) -> bool + Send + Sync>;

/// The sending side: one queue per peer, with the address it sends to.
pub struct Network {
    peers: Mutex<HashMap<u64, (String, SyncSender<Frame>)>>,
    /// Where sender threads report refused connections.
    deliver: Deliver,
}

impl Network {
    /// Starts accepting on `listener` and a sender thread per peer
    /// (`(id, "host:port")`, this node excluded).
    pub fn start(
        listener: TcpListener,
        peers: &[(u64, String)],
        deliver: Deliver,
    ) -> std::io::Result<Network> {
        let accepted = deliver.clone();
        std::thread::Builder::new()
            .name("strom-ctl-accept".into())
            .spawn(move || accept_loop(listener, accepted))?;
        let network = Network {
            peers: Mutex::new(HashMap::new()),
            deliver,
        };
        for (id, addr) in peers {
            network.add_peer(*id, addr)?;
        }
        Ok(network)
    }

    /// Sends to peer `id` at `addr` from now on (a learner, once added; a
    /// learner that came back on another address). The old sender thread,
    /// if any, ends with its queue.
    pub fn add_peer(&self, id: u64, addr: &str) -> std::io::Result<()> {
        let Ok(mut peers) = self.peers.lock() else {
            return Ok(());
        };
        if peers.get(&id).is_some_and(|(a, _)| a == addr) {
            return Ok(());
        }
        let (tx, rx) = sync_channel(PEER_QUEUE_MESSAGES);
        let to = addr.to_string();
        let deliver = self.deliver.clone();
        std::thread::Builder::new()
            .name(format!("strom-ctl-peer-{id}"))
            .spawn(move || send_loop(id, &to, rx, deliver))?;
        peers.insert(id, (addr.to_string(), tx));
        Ok(())
    }

    /// Queues messages for their peers; drops what does not fit.
    pub fn send(&self, messages: Vec<Message>) {
        for m in messages {
            let to = m.to;
            self.queue(Frame::Raft(m), to);
        }
    }

    /// Queues a heartbeat for peer `to`; dropped like a Raft message when
    /// it does not fit (the next one follows soon).
    pub fn send_heartbeat(&self, to: u64, heartbeat: Heartbeat) {
        self.queue(Frame::Heartbeat(heartbeat), to);
    }

    /// Queues a learner's join request for voter `to` (repeated until the
    /// learner is added, so a lost one does no harm).
    pub fn send_join(&self, to: u64, join: Join) {
        self.queue(Frame::Join(join), to);
    }

    fn queue(&self, frame: Frame, to: u64) {
        let Ok(peers) = self.peers.lock() else {
            return;
        };
        let Some((_, queue)) = peers.get(&to) else {
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
            let (fixed, want_shutdown) = match body.len() {
                HEARTBEAT_BYTES => (body, false),
                HEARTBEAT_SHUTDOWN_BYTES => {
                    let (flag, fixed) = body.split_last().ok_or("an empty heartbeat")?;
                    (fixed, *flag != 0)
                }
                n => return Err(format!("a heartbeat of {n} bytes")),
            };
            let fixed: [u8; HEARTBEAT_BYTES] = fixed
                .try_into()
                .map_err(|_| format!("a heartbeat of {} bytes", body.len()))?;
            let (id, rest) = fixed.split_at(4);
            let (epoch, applied) = rest.split_at(8);
            Ok(Frame::Heartbeat(Heartbeat {
                broker_id: i32::from_be_bytes(id.try_into().map_err(|_| "id")?),
                broker_epoch: i64::from_be_bytes(epoch.try_into().map_err(|_| "epoch")?),
                applied_index: u64::from_be_bytes(applied.try_into().map_err(|_| "applied")?),
                want_shutdown,
            }))
        }
        KIND_JOIN => {
            let (id, addr) = body
                .split_first_chunk::<8>()
                .ok_or_else(|| format!("a join of {} bytes", body.len()))?;
            if addr.len() > JOIN_ADDRESS_MAX_BYTES {
                return Err(format!("a join address of {} bytes", addr.len()));
            }
            let addr = std::str::from_utf8(addr).map_err(|_| "a join address that is not UTF-8")?;
            Ok(Frame::Join(Join {
                node_id: u64::from_be_bytes(*id),
                addr: addr.to_string(),
            }))
        }
        other => Err(format!("unknown frame kind {other}")),
    }
}

fn send_loop(id: u64, addr: &str, queue: Receiver<Frame>, deliver: Deliver) {
    let mut conn: Option<BufWriter<TcpStream>> = None;
    while let Ok(first) = queue.recv() {
        // Write everything queued, then flush once.
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        if conn.is_none() {
            conn = match connect(addr) {
                Ok(stream) => Some(BufWriter::new(stream)),
                Err(refused) => {
                    if refused {
                        deliver(Frame::Refused(id));
                    }
                    None
                }
            };
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
            bytes.push(u8::from(h.want_shutdown));
        }
        Frame::Join(j) => {
            bytes.push(KIND_JOIN);
            bytes.extend_from_slice(&j.node_id.to_be_bytes());
            bytes.extend_from_slice(j.addr.as_bytes());
        }
        Frame::Refused(_) => return Ok(()),
    }
    let len = u32::try_from(bytes.len()).map_err(std::io::Error::other)?;
    w.write_all(&len.to_be_bytes())?;
    w.write_all(&bytes)
}

/// Connects to a peer; the error says whether the peer refused (nothing
/// listens there) rather than did not answer or could not be resolved.
fn connect(addr: &str) -> Result<TcpStream, bool> {
    let resolved: SocketAddr = addr
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(false)?;
    let stream = TcpStream::connect_timeout(&resolved, CONNECT_TIMEOUT)
        .map_err(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let _ = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(UNACKED_TIMEOUT));
    Ok(stream)
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
            want_shutdown: true,
        };
        let m = Message {
            to: 2,
            term: 9,
            ..Default::default()
        };
        let join = Join {
            node_id: 4,
            addr: "127.0.0.1:9393".into(),
        };
        for frame in [Frame::Heartbeat(hb), Frame::Raft(m), Frame::Join(join)] {
            let mut out = Vec::new();
            write_message(&mut out, &frame).unwrap();
            let decoded = decode_frame(&out[4..]).unwrap();
            match (frame, decoded) {
                (Frame::Heartbeat(a), Frame::Heartbeat(b)) => assert_eq!(a, b),
                (Frame::Raft(a), Frame::Raft(b)) => assert_eq!(a, b),
                (Frame::Join(a), Frame::Join(b)) => assert_eq!(a, b),
                _ => panic!("the frame changed kind"),
            }
        }
        assert!(decode_frame(&[]).is_err());
        assert!(decode_frame(&[KIND_HEARTBEAT, 1, 2]).is_err());
        // A heartbeat without the shutdown byte (an older node) is one
        // that does not want to shut down.
        let mut old = vec![KIND_HEARTBEAT];
        old.extend_from_slice(&[0; HEARTBEAT_BYTES]);
        match decode_frame(&old) {
            Ok(Frame::Heartbeat(h)) => assert!(!h.want_shutdown),
            _ => panic!("an old heartbeat was refused"),
        }
        assert!(decode_frame(&[9]).is_err());
        assert!(decode_frame(&[KIND_JOIN, 0, 0, 0]).is_err());
        let mut long = vec![KIND_JOIN, 0, 0, 0, 0, 0, 0, 0, 4];
        long.extend(std::iter::repeat_n(b'a', JOIN_ADDRESS_MAX_BYTES + 1));
        assert!(decode_frame(&long).is_err());
        assert!(decode_frame(&[KIND_JOIN, 0, 0, 0, 0, 0, 0, 0, 4, 0xff]).is_err());
    }
}
