//! The schema registry in a cluster (strom-registry's `Cluster`): each
//! node advertises its registry's URL as a per-broker config record
//! (resource BROKER, name = its node id, key [`REGISTRY_URL_CONFIG`])
//! through the controller, and a registry that does not lead `_schemas`
//! looks the writer's URL up in the metadata image to forward writes.
//! No new record type: the controller applies it as any broker config.

use std::sync::Arc;
use std::time::Duration;

use strom_controller::{ConfigResource, Record};

use crate::cluster::controller;

/// The per-broker config key holding a node's registry URL.
pub const REGISTRY_URL_CONFIG: &str = "strom.schema.registry.url";
/// The pause between proposals while the quorum has no leader yet or the
/// proposal failed.
const ADVERTISE_RETRY: Duration = Duration::from_millis(500);

/// The registry's view of the cluster, over the controller's image.
pub struct ControllerView {
    pub node_id: i32,
}

impl strom_registry::Cluster for ControllerView {
    fn node_id(&self) -> i32 {
        self.node_id
    }

    fn registry_url(&self, node_id: i32) -> Option<String> {
        advertised_url(node_id)
    }
}

fn advertised_url(node_id: i32) -> Option<String> {
    controller()?
        .image()
        .broker_configs
        .get(&node_id.to_string())?
        .get(REGISTRY_URL_CONFIG)
        .cloned()
}

/// The URL others reach this node's registry at: its bound address, with
/// a wildcard host replaced by the broker's advertised host.
pub fn registry_url(bound: std::net::SocketAddr, advertised_host: &str) -> String {
    if bound.ip().is_unspecified() {
        format!("http://{advertised_host}:{}", bound.port())
    } else {
        format!("http://{bound}")
    }
}

/// The view the registry gets, and a thread that proposes this node's
/// URL until the metadata holds it (the quorum may not have a leader
/// yet at start). `None` on a single node.
pub fn start(node_id: i32, url: String) -> Option<Arc<dyn strom_registry::Cluster>> {
    controller()?;
    let spawned = std::thread::Builder::new()
        .name("registry-advertise".into())
        .spawn(move || advertise(node_id, url));
    if let Err(e) = spawned {
        tracing::error!("cannot start advertising the schema registry's URL: {e}");
    }
    Some(Arc::new(ControllerView { node_id }))
}

fn advertise(node_id: i32, url: String) {
    let Some(c) = controller() else { return };
    while advertised_url(node_id).as_deref() != Some(url.as_str()) {
        let record = Record::Config {
            resource: ConfigResource::Broker,
            resource_name: node_id.to_string(),
            name: REGISTRY_URL_CONFIG.to_string(),
            value: Some(url.clone()),
        };
        match futures_lite::future::block_on(c.propose(vec![record])) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!("advertising the schema registry's URL: {e}; retrying"),
            Err(_) => return, // the controller stopped
        }
        if advertised_url(node_id).as_deref() != Some(url.as_str()) {
            std::thread::sleep(ADVERTISE_RETRY);
        }
    }
    tracing::info!(%url, "schema registry URL advertised to the cluster");
}
