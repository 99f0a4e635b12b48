//! FindCoordinator: a single broker is the coordinator of every group; the
//! broker routes each group request to the owning shard internally.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::codes::{INVALID_REQUEST, NONE, TRANSACTIONAL_ID_AUTHORIZATION_FAILED};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;
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

/// Answers v0..v3 (one `key`) and v4+ (batched `coordinator_keys`).
pub fn find_coordinator(
    req: &FindCoordinatorRequest,
    version: i16,
    node: &CoordinatorNode,
) -> FindCoordinatorResponse {
    let error = match req.key_type {
        KEY_TYPE_GROUP => NONE,
        // No transactions yet: an error that ends a transactional producer
        // at once, with a message that says why, instead of retries until
        // the client's own timeout. librdkafka treats only this code as
        // fatal in a transaction coordinator lookup (everything else is
        // retried); the Java producer treats any non-retriable one as fatal.
        KEY_TYPE_TRANSACTION => TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        _ => INVALID_REQUEST,
    };
    let text = if req.key_type == KEY_TYPE_TRANSACTION {
        TRANSACTIONS_UNSUPPORTED
    } else {
        "no coordinator for this key type"
    };
    let message = |e: i16| (e != NONE).then(|| StrBytes::from_static_str(text));
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default()
                    .with_key(key.clone())
                    .with_error_code(error)
                    .with_error_message(message(error));
                if error == NONE {
                    c.with_node_id(BrokerId(node.node_id))
                        .with_host(StrBytes::from_string(node.host.clone()))
                        .with_port(node.port)
                } else {
                    c.with_node_id(BrokerId(-1)).with_port(-1)
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let resp = FindCoordinatorResponse::default().with_error_code(error);
    let resp = if version >= 1 {
        resp.with_error_message(message(error))
    } else {
        resp
    };
    if error == NONE {
        resp.with_node_id(BrokerId(node.node_id))
            .with_host(StrBytes::from_string(node.host.clone()))
            .with_port(node.port)
    } else {
        resp.with_node_id(BrokerId(-1)).with_port(-1)
    }
}
