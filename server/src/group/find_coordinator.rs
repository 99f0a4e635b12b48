//! FindCoordinator: a single broker is the coordinator of every group (the
//! broker routes each group request to the owning shard internally); in a
//! cluster the caller resolves each group to the leader of its offsets
//! partition.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::codes::{INVALID_REQUEST, NONE, TRANSACTIONAL_ID_AUTHORIZATION_FAILED};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
/// The message with COORDINATOR_NOT_AVAILABLE in a cluster.
const NO_COORDINATOR_YET: &str = "the group's coordinator is not available yet";
/// The error message a transactional producer gets (and shows its user).
pub const TRANSACTIONS_UNSUPPORTED: &str =
    "transactions are not supported by this broker (Strom) yet; use an idempotent producer";

/// This broker as clients should reach it (advertised host and port).
#[derive(Debug, Clone)]
pub struct CoordinatorNode {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
}

/// Answers v0..v3 (one `key`) and v4+ (batched `coordinator_keys`) with
/// `node` as the coordinator of every group (a single node).
pub fn find_coordinator(
    req: &FindCoordinatorRequest,
    version: i16,
    node: &CoordinatorNode,
) -> FindCoordinatorResponse {
    find_coordinator_with(req, version, &|_| Ok(node.clone()))
}

/// Answers with the coordinator `resolve` names for each group, or its
/// error code (in a cluster: the leader of the group's offsets partition,
/// COORDINATOR_NOT_AVAILABLE while there is none).
pub fn find_coordinator_with(
    req: &FindCoordinatorRequest,
    version: i16,
    resolve: &dyn Fn(&str) -> Result<CoordinatorNode, i16>,
) -> FindCoordinatorResponse {
    let answer = |key: &str| -> Result<CoordinatorNode, (i16, &'static str)> {
        match req.key_type {
            KEY_TYPE_GROUP => resolve(key).map_err(|e| (e, NO_COORDINATOR_YET)),
            // No transactions yet: an error that ends a transactional
            // producer at once, with a message that says why, instead of
            // retries until the client's own timeout. librdkafka treats only
            // this code as fatal in a transaction coordinator lookup
            // (everything else is retried); the Java producer treats any
            // non-retriable one as fatal.
            KEY_TYPE_TRANSACTION => Err((
                TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
                TRANSACTIONS_UNSUPPORTED,
            )),
            _ => Err((INVALID_REQUEST, "no coordinator for this key type")),
        }
    };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match answer(key.as_str()) {
                    Ok(node) => c
                        .with_error_code(NONE)
                        .with_node_id(BrokerId(node.node_id))
                        .with_host(StrBytes::from_string(node.host))
                        .with_port(node.port),
                    Err((code, text)) => c
                        .with_error_code(code)
                        .with_error_message(Some(StrBytes::from_static_str(text)))
                        .with_node_id(BrokerId(-1))
                        .with_port(-1),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    match answer(req.key.as_str()) {
        Ok(node) => FindCoordinatorResponse::default()
            .with_error_code(NONE)
            .with_node_id(BrokerId(node.node_id))
            .with_host(StrBytes::from_string(node.host))
            .with_port(node.port),
        Err((code, text)) => {
            let resp = FindCoordinatorResponse::default()
                .with_error_code(code)
                .with_node_id(BrokerId(-1))
                .with_port(-1);
            if version >= 1 {
                resp.with_error_message(Some(StrBytes::from_static_str(text)))
            } else {
                resp
            }
        }
    }
}
