//! Starting and stopping the broker: one glommio executor per shard, pinned
//! to a core, each with its own SO_REUSEPORT listener on the same address.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use futures_lite::future::or;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};

use crate::config::BrokerConfig;
use crate::conn_limits::ConnectionLimits;
use crate::metadata::Metadata;
use crate::shard::{Job, Shard, MESH_QUEUE_JOBS};

/// How often each shard calls `PartitionLog::tick` on its logs.
pub const TICK_INTERVAL_MS: u64 = 100;
/// How often shards look at the shutdown flag set by the signal thread.
pub const SHUTDOWN_POLL_MS: u64 = 50;

/// A running broker.
pub struct Broker {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    handles: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Receives a shard's id when its thread ends, by return or by panic.
    exits: mpsc::Receiver<usize>,
    /// Held while the broker lives: see [`ListenLock`].
    _listen_lock: ListenLock,
}

/// Sends the shard's id when dropped. It lives in a thread-local of the
/// shard's thread, whose destructor runs when the thread ends, also after a
/// panic (the executor may leak the shard's future when a task panics).
struct ExitNotice {
    id: usize,
    tx: mpsc::Sender<usize>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let _ = self.tx.send(self.id);
    }
}

thread_local! {
    static EXIT_NOTICE: std::cell::RefCell<Option<ExitNotice>> = const { std::cell::RefCell::new(None) };
}

impl Broker {
    /// Starts every shard and returns once all of them listen.
    pub fn start(config: BrokerConfig) -> anyhow::Result<Broker> {
        config.check().context("checking the broker config")?;
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let metadata = Metadata::load(&config.data_dir)?;
        // Opened once here so that a corrupt producer id file stops the
        // broker instead of risking reused ids.
        crate::producer_ids::manager_for(&config.data_dir).context("opening producer ids")?;
        if metadata.version == 0 {
            metadata
                .persist(&config.data_dir)
                .context("writing initial metadata")?;
        }
        let addr = config
            .listen
            .to_socket_addrs()
            .with_context(|| format!("resolving listen address {}", config.listen))?
            .next()
            .ok_or_else(|| anyhow!("listen address {} resolves to nothing", config.listen))?;
        // SO_REUSEPORT would let this broker silently share a port with
        // another process; a plain bind first fails if anyone listens there,
        // and the address's lock keeps out a broker that probes before this
        // one's shards listen. It also turns port 0 into one concrete port
        // for every shard.
        let (addr, listen_lock) = probe_listen_address(addr)
            .with_context(|| format!("listen address {addr} is not available"))?;
        let mut config = config;
        config.set_bound_port(addr.port());
        // After the port is known: a cluster node registers the port it
        // serves on (`--listen HOST:0` included).
        // In a cluster the controller's log holds the metadata: the shards
        // start empty and shard 0 publishes the controller's images.
        let mut images = crate::cluster::start(&config, &metadata)?;
        if let Some(controller) = crate::cluster::controller().filter(|_| images.is_some()) {
            crate::cluster_upgrade::move_single_node_topics(&config, &metadata, controller)?;
        }
        // The shards start from the controller's image of the node's own
        // metadata log (its topics, leaders and brokers), not empty: they
        // listen before shard 0 has applied the first published image, and
        // a Metadata request in between answered UNKNOWN_TOPIC_OR_PARTITION
        // for every topic (librdkafka's producers then failed produce()
        // with "Unknown topic" after a node restarted). Marked out of
        // contact, so the broker leads nothing (NOT_LEADER_OR_FOLLOWER,
        // retriable) until that first image has set up its leaders'
        // replication state.
        let metadata = match crate::cluster::controller().filter(|_| images.is_some()) {
            Some(controller) => {
                let mut image = (*controller.image()).clone();
                image.out_of_contact = true;
                crate::cluster::metadata_from_image(Arc::new(image), &metadata.cluster_id)
            }
            None if images.is_some() => Metadata {
                version: 0,
                topics: Default::default(),
                ..metadata
            },
            None => metadata,
        };
        let metadata = Arc::new(metadata);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let shards = config.shards.unwrap_or(cores).max(1);
        let connection_limits = Arc::new(ConnectionLimits::new(
            config.max_connections,
            config.max_connections_per_ip(),
        ));
        let config = Arc::new(config);
        let stop = Arc::new(AtomicBool::new(false));
        let mesh = MeshBuilder::<Job, _>::full(shards, MESH_QUEUE_JOBS);
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<SocketAddr>>();
        // No shard accepts a connection before every shard has opened its
        // logs: a request may touch partitions of any shard.
        let logs_open = Arc::new(Barrier::new(shards));
        let (exit_tx, exits) = mpsc::channel::<usize>();

        let mut handles = Vec::new();
        for id in 0..shards {
            let config = config.clone();
            let metadata = metadata.clone();
            let stop = stop.clone();
            let mesh = mesh.clone();
            let ready = ready_tx.clone();
            let logs_open = logs_open.clone();
            let connection_limits = connection_limits.clone();
            let images = if id == 0 { images.take() } else { None };
            let exit = ExitNotice {
                id,
                tx: exit_tx.clone(),
            };
            let handle =
                LocalExecutorBuilder::new(Placement::Fixed(id.checked_rem(cores).unwrap_or(0)))
                    .name(&format!("strom-shard-{id}"))
                    .preempt_timer(strom_engine::EXECUTOR_PREEMPT_TIMER)
                    .spawn(move || async move {
                        EXIT_NOTICE.with(|n| *n.borrow_mut() = Some(exit));
                        let shard = ShardStart {
                            id,
                            shards,
                            config,
                            metadata,
                            connection_limits,
                            images,
                        };
                        run_shard(shard, addr, stop, mesh, ready, logs_open).await;
                    })
                    .map_err(|e| anyhow!("starting shard {id}: {e}"))?;
            handles.push(handle);
        }
        drop(ready_tx);
        let mut bound = addr;
        for _ in 0..shards {
            match ready_rx.recv() {
                Ok(Ok(a)) => bound = a,
                Ok(Err(e)) => {
                    stop.store(true, Ordering::SeqCst);
                    return Err(e);
                }
                Err(_) => return Err(anyhow!("a shard exited during startup")),
            }
        }
        Ok(Broker {
            addr: bound,
            stop,
            handles,
            exits,
            _listen_lock: listen_lock,
        })
    }

    /// Waits up to `timeout` for a shard's thread to end and returns its
    /// id. Before `stop` is set, a shard that ends has failed (a panic):
    /// its partitions are no longer served.
    pub fn shard_exited(&self, timeout: Duration) -> Option<usize> {
        self.exits.recv_timeout(timeout).ok()
    }

    /// After shard `failed` ended: asks the other shards to stop (close
    /// their logs, so acknowledged appends reach the disk) and waits for
    /// them up to `timeout`. Returns the error the process exits with.
    pub fn stop_after_failure(self, failed: usize, timeout: Duration) -> anyhow::Error {
        self.stop.store(true, Ordering::SeqCst);
        let deadline = Instant::now()
            .checked_add(timeout)
            .unwrap_or_else(Instant::now);
        let mut running = self.handles.len().saturating_sub(1);
        while running > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.exits.recv_timeout(left).is_err() {
                break;
            }
            running = running.saturating_sub(1);
        }
        if running > 0 {
            tracing::error!(shards = running, "shards did not stop in time");
        }
        anyhow!("shard {failed} stopped unexpectedly (see the log above); the broker exits so that it can be restarted")
    }

    /// Asks every shard to stop: stop accepting, close logs, exit.
    pub fn stop_handle(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }

    /// Waits for every shard to finish.
    pub fn join(self) -> anyhow::Result<()> {
        for h in self.handles {
            h.join().map_err(|e| anyhow!("shard failed: {e}"))?;
        }
        Ok(())
    }
}

/// What a shard starts from.
struct ShardStart {
    id: usize,
    shards: usize,
    config: Arc<BrokerConfig>,
    metadata: Arc<Metadata>,
    connection_limits: Arc<ConnectionLimits>,
    /// Shard 0 in a cluster: the controller's images to publish.
    images: Option<crate::cluster::ImageReceiver>,
}

async fn run_shard(
    start: ShardStart,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    mesh: MeshBuilder<Job, glommio::channels::channel_mesh::Full>,
    ready: mpsc::Sender<anyhow::Result<SocketAddr>>,
    logs_open: Arc<Barrier>,
) {
    let ShardStart {
        id,
        shards,
        config,
        metadata,
        connection_limits,
        images,
    } = start;
    let (senders, mut receivers) = if shards > 1 {
        match mesh.join().await {
            Ok((s, r)) => (Some(s), Some(r)),
            Err(_) => {
                let _ = ready.send(Err(anyhow!("shard {id}: joining the shard mesh failed")));
                return;
            }
        }
    } else {
        (None, None)
    };
    let shard = Rc::new(Shard::new(
        id,
        shards,
        config.clone(),
        senders,
        connection_limits,
    ));

    // Serve jobs from every other shard.
    if let Some(receivers) = receivers.as_mut() {
        for (_, stream) in receivers.streams() {
            let shard = shard.clone();
            glommio::spawn_local(async move {
                while let Some(job) = stream.recv().await {
                    // A panic in a job (a bug) drops its reply sender: the
                    // asking shard gets `ShardError::Gone` for those items,
                    // and this shard runs on.
                    let job = std::panic::AssertUnwindSafe(job(shard.clone()));
                    glommio::spawn_local(async move {
                        if futures_lite::FutureExt::catch_unwind(job).await.is_err() {
                            tracing::error!("a job sent by another shard panicked");
                        }
                    })
                    .detach();
                }
            })
            .detach();
        }
    }

    shard.apply_metadata(metadata).await;
    // The group coordinator loads `__consumer_offsets` before the barrier,
    // so no shard answers a group request before every coordinator is up.
    let groups = crate::coordinators::start_shard(&shard).await;
    // Blocking this thread is fine here: the shard serves nothing yet.
    logs_open.wait();
    if let Err(e) = groups {
        let _ = ready.send(Err(anyhow!(
            "shard {id}: loading {}: {e}",
            crate::group::OFFSETS_TOPIC
        )));
        return;
    }

    let listener = match bind_listener(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(anyhow!("shard {id}: binding {addr}: {e}")));
            return;
        }
    };
    let bound = listener.local_addr().unwrap_or(addr);
    let _ = ready.send(Ok(bound));

    if let Some(images) = images {
        glommio::spawn_local(crate::cluster_publish::follow_images(shard.clone(), images)).detach();
    }
    glommio::spawn_local(tick_loop(shard.clone())).detach();
    if let Some(dir) = &shard.config.stage_latency_dir {
        if let Err(e) = crate::stages::spawn(dir, id) {
            tracing::warn!(dir = %dir.display(), "stage latencies not recorded: {e}");
        }
    }
    crate::cleaner::spawn(shard.clone());
    crate::replica::spawn(shard.clone());
    glommio::spawn_local(watch_stop(shard.clone(), stop)).detach();

    loop {
        let accepted = or(async { Some(listener.accept().await) }, async {
            shard.shutdown.notified().await;
            None
        });
        if shard.is_shutting_down() {
            break;
        }
        match accepted.await {
            None => break,
            Some(Ok(stream)) => {
                let Some(slot) = connection_slot(&shard, &stream) else {
                    drop(stream);
                    continue;
                };
                glommio::spawn_local(crate::conn::serve(shard.clone(), stream, slot)).detach();
            }
            Some(Err(e)) => {
                tracing::warn!("accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    shard.close_all_logs().await;
    crate::coordinators::stop_shard().await;
    tracing::info!(shard = id, "shard stopped");
}

/// A slot for a just accepted connection, or `None` when it is over
/// `max.connections` or `max.connections.per.ip`: then it is closed at once.
fn connection_slot(
    shard: &Shard,
    stream: &glommio::net::TcpStream,
) -> Option<crate::conn_limits::ConnectionSlot> {
    let ip = match stream.peer_addr() {
        Ok(peer) => peer.ip(),
        Err(e) => {
            tracing::info!("closing a connection without a peer address: {e}");
            return None;
        }
    };
    match shard.connection_limits.open(ip) {
        Ok(slot) => Some(slot),
        Err(refused) => {
            tracing::warn!(%ip, "closing new connection: {refused}");
            None
        }
    }
}

/// How often a log whose tick keeps failing (a full disk fails it every
/// [`TICK_INTERVAL_MS`]) is warned about again.
const TICK_WARN_INTERVAL: Duration = Duration::from_secs(30);

/// Per log, the failing ticks since its last warning.
#[derive(Default)]
struct TickFailures {
    last_warned: Option<Instant>,
    unreported: u64,
    total: u64,
}

async fn tick_loop(shard: Rc<Shard>) {
    let mut failing: HashMap<PathBuf, TickFailures> = HashMap::new();
    while !shard.is_shutting_down() {
        glommio::timer::sleep(Duration::from_millis(TICK_INTERVAL_MS)).await;
        let now = crate::clock::now_ms();
        // The `__consumer_offsets` logs are among them (registered by the
        // coordinator), ticked like any other log.
        let logs = shard.all_logs();
        for log in &logs {
            match log.tick(now).await {
                Ok(()) => {
                    if let Some(f) = failing.remove(log.dir()) {
                        tracing::info!(
                            dir = %log.dir().display(),
                            failures = f.total,
                            "log tick succeeds again"
                        );
                    }
                }
                Err(e) => {
                    let f = failing.entry(log.dir().to_path_buf()).or_default();
                    f.total = f.total.saturating_add(1);
                    let due = f
                        .last_warned
                        .is_none_or(|t| t.elapsed() >= TICK_WARN_INTERVAL);
                    if due {
                        tracing::warn!(
                            dir = %log.dir().display(),
                            failed_since_last_warning = f.unreported,
                            "log tick failed: {e}"
                        );
                        f.last_warned = Some(Instant::now());
                        f.unreported = 0;
                    } else {
                        f.unreported = f.unreported.saturating_add(1);
                    }
                }
            }
        }
        // A log deleted while failing is forgotten.
        if !failing.is_empty() {
            failing.retain(|dir, _| logs.iter().any(|l| l.dir() == dir));
        }
    }
}

async fn watch_stop(shard: Rc<Shard>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::SeqCst) {
        glommio::timer::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
    }
    shard.begin_shutdown();
}

/// How long a start waits for its port to be given up by a broker that
/// just died.
const ADDRESS_RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// Binds `addr` without SO_REUSEPORT to learn that nobody listens there
/// (and which port `:0` means), then takes the address's [`ListenLock`].
/// The probe socket never listens: a client polling the port must not
/// connect to it while the shards are still opening their logs. A broker
/// killed with SIGKILL keeps its listening sockets for a moment after it
/// is reaped, while the kernel tears its io_uring instances down, so
/// `EADDRINUSE` is retried for [`ADDRESS_RELEASE_DEADLINE`] before it is
/// reported.
fn probe_listen_address(addr: SocketAddr) -> std::io::Result<(SocketAddr, ListenLock)> {
    let deadline = Instant::now()
        .checked_add(ADDRESS_RELEASE_DEADLINE)
        .unwrap_or_else(Instant::now);
    let mut logged = false;
    loop {
        let probed = probe_socket(addr).and_then(|sk| socket_addr(&sk));
        match probed.and_then(|bound| Ok((bound, ListenLock::take(bound)?))) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !logged {
                    tracing::info!(%addr, "listen address in use; waiting for it to be released");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            result => return result,
        }
    }
}

/// An exclusive `flock` on a file named after the listen address, in the
/// temporary directory, held for the broker's life. The shards bind with
/// SO_REUSEPORT only after the logs are open, and the kernel lets any two
/// sockets of one user share a port that way: two brokers launched at once
/// on one address both passed the probe and then split its connections
/// between them. The lock goes with the process, SIGKILL included.
struct ListenLock {
    _file: std::fs::File,
}

impl ListenLock {
    /// `AddrInUse` while another broker holds the lock of `addr`.
    fn take(addr: SocketAddr) -> std::io::Result<ListenLock> {
        use std::os::fd::AsRawFd;
        let name = format!("strom-listen-{}-{}.lock", addr.ip(), addr.port()).replace(':', "_");
        let path = std::env::temp_dir().join(name);
        // Another user's broker may have left the file behind; flock needs
        // only a descriptor, so a file this user may not write is opened
        // for reading.
        let file = match std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        {
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                std::fs::File::open(&path)?
            }
            opened => opened?,
        };
        // SAFETY: flock on a descriptor this function owns; no memory is
        // passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
                std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!("another broker holds {}", path.display()),
                )
            } else {
                e
            });
        }
        Ok(ListenLock { _file: file })
    }
}

/// A socket bound (never listening) like the one `std::net::TcpListener`
/// makes, SO_REUSEADDR included.
fn probe_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.bind(&addr.into())?;
    Ok(sk)
}

fn socket_addr(sk: &socket2::Socket) -> std::io::Result<SocketAddr> {
    sk.local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("bound address is not an IP address"))
}

/// Binds a shard's listener with SO_REUSEPORT (every shard shares the port)
/// and SO_REUSEADDR, so a restart after a crash is not refused while the
/// dead broker's connections linger in TIME_WAIT.
fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let sk = listening_socket(addr)?;
    // SAFETY: the fd is a bound, listening TCP socket that we own; ownership
    // passes to the glommio listener, which closes it.
    Ok(unsafe { TcpListener::from_raw_fd(sk.into_raw_fd()) })
}

fn listening_socket(addr: SocketAddr) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sk = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sk.set_reuse_address(true)?;
    sk.set_reuse_port(true)?;
    sk.bind(&addr.into())?;
    sk.listen(LISTEN_BACKLOG)?;
    Ok(sk)
}

/// Pending connections the kernel queues per shard before accept.
const LISTEN_BACKLOG: i32 = 1024;

#[cfg(test)]
mod tests {
    use super::*;

    /// A client polling the port while the broker starts must not connect
    /// to the probe (it did when the probe was a std `TcpListener`, which
    /// listens): it would take the broker for ready and then be refused.
    #[test]
    fn probe_socket_accepts_no_connection() {
        let sk = probe_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket_addr(&sk).unwrap();
        assert_ne!(addr.port(), 0);
        let err = std::net::TcpStream::connect(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    /// The probe still finds a port that a broker listens on taken.
    #[test]
    fn probe_socket_fails_on_a_listening_port() {
        let listener = listening_socket("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket_addr(&listener).unwrap();
        let err = probe_socket(addr).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
