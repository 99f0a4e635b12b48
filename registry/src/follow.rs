//! In a cluster, every node's registry keeps reading `_schemas` from the
//! leader of its partition 0, so reads on any node (and produce-side
//! validation on any broker) see what the writer wrote.
//!
//! The loop waits for new records with a long-polling Fetch on a
//! connection of its own, without the store's lock, and applies what came
//! under the lock only if no one moved the store meanwhile (a write on
//! this node, or a forwarded write's read-back, reads the log itself).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use crate::client::KafkaClient;
use crate::store::{Store, TOPIC};

/// How long the leader may hold a Fetch while `_schemas` has nothing new.
const FOLLOW_WAIT_MS: i32 = 500;
/// The pause after a failed Fetch (the leader is down, fenced or moved)
/// before the leader is looked up again.
const FOLLOW_RETRY: Duration = Duration::from_millis(250);
/// The pause after a Fetch that returned nothing at once, so a broker that
/// does not hold fetches cannot make this loop spin.
const FOLLOW_IDLE: Duration = Duration::from_millis(20);

/// Runs on the registry's runtime for as long as the registry does.
pub async fn follow(store: Arc<Mutex<Store>>, broker: String) {
    let mut client = KafkaClient::new(broker);
    loop {
        let (offset, addr) = {
            let s = store.lock().await;
            let addr = s.leader.as_ref().and_then(|l| l.addr.clone());
            (s.next_offset(), addr)
        };
        let Some(addr) = addr else {
            relocate(&store).await;
            continue;
        };
        client.set_addr(&addr);
        match client.fetch_waiting(TOPIC, offset, FOLLOW_WAIT_MS).await {
            Ok(fetched) => {
                let moved = {
                    let mut s = store.lock().await;
                    s.next_offset() == offset && s.apply_fetched(&fetched)
                };
                if !moved {
                    tokio::time::sleep(FOLLOW_IDLE).await;
                }
            }
            Err(e) => {
                tracing::debug!("schema registry: following _schemas at {addr}: {e}");
                relocate(&store).await;
            }
        }
    }
}

async fn relocate(store: &Mutex<Store>) {
    tokio::time::sleep(FOLLOW_RETRY).await;
    if let Err(e) = store.lock().await.locate().await {
        tracing::debug!("schema registry: looking up the leader of _schemas: {e}");
    }
}
