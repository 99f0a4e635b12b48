//! strom-registry: a schema registry that speaks Confluent's REST API,
//! its state in the compacted topic `_schemas`.
//!
//! It runs on a thread of its own with a current-thread tokio runtime,
//! never on a shard's reactor, and reaches the log as Confluent's registry
//! does: as a Kafka client of its own broker, over loopback. So the
//! shards know nothing of it and its records are ordinary records (they
//! replicate with the cluster's partitions). In a cluster every node's
//! registry reads the topic from its leader and forwards writes to one
//! writer, the registry of the broker that leads the topic.
//!
//! Module map (a request flows top to bottom; every `crate::` import
//! points down this list):
//! - `forward`: in a cluster, runs a write here on the writer or forwards
//!   it to the writer's registry (`http_client`) and reads it back.
//! - `http`: axum routes, query flags, bodies and JSON answers.
//! - `ops`: one function per operation, with Confluent's rules (ids,
//!   versions, deletes, compatibility requests).
//! - `follow`: in a cluster, the loop that keeps reading `_schemas`.
//! - `store`: the `_schemas` topic: create, find its leader, read to the
//!   end, append then read back; applies each record to the `state`.
//! - `client`: the small Kafka client (CreateTopics, Metadata, Produce,
//!   Fetch); `http_client`: the small HTTP client forwarding writes.
//! - `state`: what the records so far say (subjects, versions, ids,
//!   levels, modes), changed only by applying records in log order.
//! - `log_format`: Confluent's key and value JSON of `_schemas` records.
//! - `compat`: compatibility levels and which versions a schema is
//!   checked against.
//! - `schema`: schema types, references, identity, and dispatch to a
//!   type's parser and checker: `avro` (apache-avro), `protobuf`
//!   (protox, prost-reflect, Confluent's Protobuf rules), `json_schema`
//!   (serde_json) with `json_diff` (Confluent's JSON Schema rules).
//! - `error`: Confluent's error codes and bodies.

// Nothing a request carries may reach a panic (the same rules as the
// broker's crates).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

pub mod avro;
pub mod client;
pub mod compat;
pub mod error;
pub mod follow;
pub mod forward;
pub mod http;
pub mod http_client;
pub mod json_diff;
pub mod json_schema;
pub mod log_format;
pub mod ops;
pub mod protobuf;
pub mod schema;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;

pub use forward::Cluster;

/// How long the registry keeps trying to open `_schemas` at start (the
/// broker has just started; its first CreateTopics may be slow).
const OPEN_TIMEOUT: Duration = Duration::from_secs(60);
const OPEN_RETRY: Duration = Duration::from_millis(200);

/// The ids registered (and not deleted) under each subject, with each
/// id's schema type, as the registry last read them from `_schemas`: what
/// produce-side validation (`confluent.value.schema.validation`) checks
/// records against (a Protobuf record carries message indexes after its
/// id). The registry replaces the map whole after each read that changed
/// it.
pub type SchemaIds = Arc<RwLock<HashMap<String, SubjectIds>>>;

/// A subject's live ids and their schema types.
pub type SubjectIds = HashMap<i32, schema::SchemaType>;

/// The registry's listener, bound, and the thread that serves it.
pub struct Registry {
    pub addr: SocketAddr,
    pub thread: JoinHandle<()>,
}

/// `http://host:port` or `host:port`, as `schema.registry.listeners` takes
/// it (Confluent's `listeners` has the scheme).
pub fn parse_listener(listener: &str) -> anyhow::Result<String> {
    let addr = listener.strip_prefix("http://").unwrap_or(listener);
    anyhow::ensure!(
        !addr.contains("://"),
        "schema registry listener `{listener}`: only http:// is supported"
    );
    Ok(addr.trim_end_matches('/').to_string())
}

/// Where the registry reaches its broker: the broker's own address, with
/// a wildcard host replaced by loopback.
pub fn loopback_of(broker: SocketAddr) -> SocketAddr {
    let ip = match broker.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, broker.port())
}

/// Binds `listen` (so a taken port fails `strom serve` at once) and starts
/// the registry's thread. Connections wait in the listen backlog until the
/// registry has read `_schemas` to the end. `cluster` is given the bound
/// address and says whether the node is one of a cluster (`None` on a
/// single node).
pub fn start(
    listen: &str,
    broker: SocketAddr,
    ids: SchemaIds,
    cluster: impl FnOnce(SocketAddr) -> Option<Arc<dyn Cluster>>,
) -> anyhow::Result<Registry> {
    let listener = TcpListener::bind(listen)
        .with_context(|| format!("binding the schema registry to {listen}"))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let cluster = cluster(addr);
    let broker = loopback_of(broker);
    let thread = std::thread::Builder::new()
        .name("schema-registry".into())
        .spawn(move || {
            if let Err(e) = run(listener, broker, ids, cluster) {
                tracing::error!("schema registry stopped: {e:#}");
            }
        })
        .context("starting the schema registry's thread")?;
    Ok(Registry { addr, thread })
}

fn run(
    listener: TcpListener,
    broker: SocketAddr,
    ids: SchemaIds,
    cluster: Option<Arc<dyn Cluster>>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .context("building the schema registry's runtime")?;
    runtime.block_on(async move {
        let store = open_store(broker, ids, cluster.is_some()).await?;
        tracing::info!(
            subjects = store.state.subjects.len(),
            max_id = store.state.max_id,
            "schema registry read _schemas"
        );
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let store = Arc::new(tokio::sync::Mutex::new(store));
        let mut app = http::router(store.clone());
        if let Some(cluster) = cluster {
            tokio::spawn(follow::follow(store.clone(), broker.to_string()));
            let node = Arc::new(forward::Node { store, cluster });
            app = app.layer(axum::middleware::from_fn_with_state(
                node,
                forward::route_writes,
            ));
        }
        axum::serve(listener, app).await?;
        Ok(())
    })
}

/// Opens the store, retrying while the broker is not ready. A single
/// node gives up after `OPEN_TIMEOUT`; a cluster node keeps trying, as
/// `_schemas` may wait for its leader's broker to come back.
async fn open_store(
    broker: SocketAddr,
    ids: SchemaIds,
    in_cluster: bool,
) -> anyhow::Result<store::Store> {
    let started = Instant::now();
    loop {
        match store::Store::open(broker.to_string(), ids.clone(), in_cluster).await {
            Ok(s) => return Ok(s),
            Err(e) if in_cluster || started.elapsed() < OPEN_TIMEOUT => {
                tracing::debug!("schema registry: opening _schemas: {e}; retrying");
                tokio::time::sleep(OPEN_RETRY).await;
            }
            Err(e) => return Err(e).context("opening _schemas"),
        }
    }
}
