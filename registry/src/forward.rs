//! In a cluster, exactly one registry writes `_schemas`: the one on the
//! broker that leads its partition 0, so the partition's leader election
//! is the registry's and no group protocol is needed. Every write that
//! reaches another node is forwarded, the HTTP request as it came, to the
//! writer's registry, as Confluent's followers forward to their leader.
//!
//! The writer's answer carries `X-Strom-Schemas-End`, the offset after its
//! write; the follower reads `_schemas` up to there before it answers, so
//! a client that wrote through it reads its own write there next.
//!
//! A forwarded request carries `X-Strom-Forwarded-By`; a node that gets
//! one and does not lead (leadership moved meanwhile) refuses it rather
//! than forward it again. Reads are always answered from the node's own
//! state, which `follow` keeps current.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Mutex;

use crate::error::{ApiError, CONTENT_TYPE};
use crate::http::MAX_BODY_BYTES;
use crate::http_client::{self, Outgoing};
use crate::store::Store;

/// The header of a writer's answer: `_schemas`' next offset after the write.
pub const END_HEADER: &str = "x-strom-schemas-end";
/// The header of a forwarded request: the node id it came from.
pub const FORWARDED_HEADER: &str = "x-strom-forwarded-by";

/// What the registry needs of the cluster it runs in; the broker
/// implements it over its metadata.
pub trait Cluster: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> i32;
    /// The URL (`http://host:port`) of the registry node `node_id`
    /// advertised, if it has.
    fn registry_url(&self, node_id: i32) -> Option<String>;
}

/// The middleware's state.
pub struct Node {
    pub store: Arc<Mutex<Store>>,
    pub cluster: Arc<dyn Cluster>,
}

/// Whether a request changes `_schemas`: register, every PUT (config,
/// mode) and every DELETE. Look-ups and compatibility checks are POSTs
/// that read.
pub fn is_write(method: &Method, path: &str) -> bool {
    if method == Method::PUT || method == Method::DELETE {
        return true;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    method == Method::POST && matches!(segments.as_slice(), ["subjects", _, "versions"])
}

/// The middleware: writes run here on the writer, are forwarded to it
/// elsewhere; everything else runs here.
pub async fn route_writes(State(node): State<Arc<Node>>, req: Request, next: Next) -> Response {
    if !is_write(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let located = node.store.lock().await.locate().await;
    let leader = match located {
        Ok(l) => l,
        Err(e) => {
            return ApiError::unknown_leader(format!("looking up the leader of _schemas: {e}"))
                .into_response()
        }
    };
    let me = node.cluster.node_id();
    if leader.node_id == me {
        let mut resp = next.run(req).await;
        let end = node.store.lock().await.next_offset();
        if let Ok(v) = HeaderValue::from_str(&end.to_string()) {
            resp.headers_mut().insert(END_HEADER, v);
        }
        return resp;
    }
    if leader.node_id < 0 {
        return ApiError::unknown_leader(
            "_schemas partition 0 has no leader now (its broker is down or fenced); retry later",
        )
        .into_response();
    }
    if let Some(from) = req.headers().get(FORWARDED_HEADER) {
        let from = String::from_utf8_lossy(from.as_bytes()).into_owned();
        return ApiError::forwarding_failed(format!(
            "node {me} got a write forwarded by node {from} but node {} leads _schemas now",
            leader.node_id
        ))
        .into_response();
    }
    let Some(url) = node.cluster.registry_url(leader.node_id) else {
        return ApiError::unknown_leader(format!(
            "node {} leads _schemas but has not advertised a registry URL",
            leader.node_id
        ))
        .into_response();
    };
    match forward(&node, &url, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

/// Sends `req` to the writer at `url`, reads `_schemas` up to the write,
/// and gives the writer's answer.
async fn forward(node: &Node, url: &str, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| ApiError {
            code: 413,
            message: format!("Request body too large or unreadable: {e}"),
        })?;
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(CONTENT_TYPE)
        .to_string();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let headers = [
        ("Content-Type", content_type),
        ("X-Strom-Forwarded-By", node.cluster.node_id().to_string()),
    ];
    let out = Outgoing {
        method: parts.method.as_str(),
        path_and_query: &path,
        headers: &headers,
        body: &body,
    };
    let answer = http_client::send(url, &out)
        .await
        .map_err(|e| ApiError::forwarding_failed(format!("{url}: {e}")))?;
    if let Some(end) = answer
        .header(END_HEADER)
        .and_then(|v| v.parse::<i64>().ok())
    {
        // The write is done at the writer whatever happens here; a reader
        // that fails only delays when this node shows it.
        if let Err(e) = node.store.lock().await.catch_up(end).await {
            tracing::warn!("schema registry: reading a forwarded write back: {e}");
        }
    }
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut resp = (status, Body::from(answer.body.clone())).into_response();
    let content_type = answer.header("content-type").unwrap_or(CONTENT_TYPE);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut()
            .insert(axum::http::header::CONTENT_TYPE, v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_register_put_and_delete() {
        assert!(is_write(&Method::POST, "/subjects/a-value/versions"));
        assert!(is_write(&Method::POST, "/subjects/a%2Fb/versions/"));
        assert!(is_write(&Method::PUT, "/config"));
        assert!(is_write(&Method::PUT, "/mode/s"));
        assert!(is_write(&Method::DELETE, "/subjects/s/versions/1"));
        assert!(!is_write(&Method::POST, "/subjects/s"), "look-up");
        assert!(!is_write(
            &Method::POST,
            "/compatibility/subjects/s/versions/latest"
        ));
        assert!(!is_write(
            &Method::POST,
            "/compatibility/subjects/s/versions"
        ));
        assert!(!is_write(&Method::GET, "/subjects/s/versions"));
    }
}
