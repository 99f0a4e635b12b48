//! The partitions a shard follows, from the published image.

use crate::shard::Shard;

/// A partition this shard owns and this node follows, at the image's
/// leader and leader epoch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Followed {
    pub topic: String,
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
}

/// The partitions this shard owns a log of and this node follows (a
/// replica, not the leader, the leader known), in the current image.
pub fn followed(shard: &Shard) -> Vec<Followed> {
    let meta = shard.metadata();
    let Some(image) = meta.cluster.as_ref() else {
        return Vec::new();
    };
    let me = shard.config.node_id;
    let mut out = Vec::new();
    for (name, t) in &image.topics {
        for (p, state) in t.partitions.iter().enumerate() {
            let Ok(p) = i32::try_from(p) else { continue };
            if state.leader == me
                || state.leader < 0
                || !state.replicas.contains(&me)
                || shard.owner(name, p) != shard.id
                || shard.log(name, p).is_none()
            {
                continue;
            }
            out.push(Followed {
                topic: name.clone(),
                partition: p,
                leader: state.leader,
                leader_epoch: state.leader_epoch,
            });
        }
    }
    out
}
