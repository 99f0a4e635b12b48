//! KIP-951 leader hints: a Produce v10+ partition answered with
//! NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH carries the partition's
//! current leader and leader epoch as this broker's image has them, and
//! the response carries the endpoints of those leaders, so the client
//! goes to the new leader without a Metadata round trip first.
//!
//! Fetch v16 has the same hints, but Strom's Fetch stops at v12 (v13 and
//! later name topics by id), so only Produce has them so far.

use std::collections::BTreeSet;

use kafka_protocol::messages::produce_response::{LeaderIdAndEpoch, NodeEndpoint};
use kafka_protocol::messages::{BrokerId, ProduceResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use strom_controller::ClusterImage;

use crate::shard::Shard;

/// The first Produce version with leader hints.
pub const PRODUCE_HINTS_VERSION: i16 = 10;

/// Whether a partition error is one that KIP-951 answers with a hint.
fn wants_hint(error_code: i16) -> bool {
    error_code == ResponseError::NotLeaderOrFollower.code()
        || error_code == ResponseError::FencedLeaderEpoch.code()
}

/// `resp` with KIP-951 hints where `version` has them; unchanged on a
/// single node (it leads everything it has) or for an older version.
pub fn produce(shard: &Shard, mut resp: ProduceResponse, version: i16) -> ProduceResponse {
    if version < PRODUCE_HINTS_VERSION {
        return resp;
    }
    let metadata = shard.metadata();
    let Some(image) = metadata.cluster.as_deref() else {
        return resp;
    };
    let mut leaders = BTreeSet::new();
    for topic in &mut resp.responses {
        for p in &mut topic.partition_responses {
            if !wants_hint(p.error_code) {
                continue;
            }
            let Some((leader, epoch)) = leader_of(image, topic.name.0.as_str(), p.index) else {
                continue;
            };
            p.current_leader = LeaderIdAndEpoch::default()
                .with_leader_id(BrokerId(leader))
                .with_leader_epoch(epoch);
            if leader >= 0 {
                leaders.insert(leader);
            }
        }
    }
    resp.node_endpoints = endpoints(image, &leaders);
    resp
}

/// The partition's (leader, leader epoch) in `image`.
fn leader_of(image: &ClusterImage, topic: &str, partition: i32) -> Option<(i32, i32)> {
    let state = image
        .topics
        .get(topic)?
        .partitions
        .get(usize::try_from(partition).ok()?)?;
    Some((state.leader, state.leader_epoch))
}

/// The endpoints of the unfenced brokers among `ids`.
fn endpoints(image: &ClusterImage, ids: &BTreeSet<i32>) -> Vec<NodeEndpoint> {
    ids.iter()
        .filter_map(|id| image.brokers.get(id).filter(|b| !b.fenced))
        .map(|b| {
            NodeEndpoint::default()
                .with_node_id(BrokerId(b.broker_id))
                .with_host(StrBytes::from_string(b.host.clone()))
                .with_port(b.port)
                .with_rack(b.rack.clone().map(StrBytes::from_string))
        })
        .collect()
}
