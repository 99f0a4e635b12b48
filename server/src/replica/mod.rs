//! Replication's data path on the broker (issue 15).
//!
//! - `fetcher`: on each shard, one follower fetcher task per leader broker
//!   for the partitions this shard owns and this node follows: truncation
//!   by OffsetForLeaderEpoch, then long-poll Fetches whose batches are
//!   appended with the leader's offsets and fdatasynced before the next
//!   fetch offset is reported.
//! - `followed`: the partitions a shard follows, from the image.
//! - `client`: the Kafka connection a fetcher uses.
//! - `leader`: the leader's side: followers' log ends, the high watermark
//!   over the ISR, ISR shrink and expand, acks=all's wait.

pub mod client;
pub mod fetcher;
pub mod followed;
pub mod leader;
mod restart;

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;
use std::time::Duration;

use crate::replica::followed::followed;
use crate::shard::Shard;

/// How often a shard looks for leaders it has no fetcher for (a new image
/// is seen within this).
const SUPERVISE_EVERY: Duration = Duration::from_millis(100);

/// Starts this shard's fetcher supervisor (in a cluster only): it starts a
/// fetcher for each leader of a partition this shard follows; a fetcher
/// ends once it has no partition left. And the leader's ISR expiration.
pub fn spawn(shard: Rc<Shard>) {
    if shard.metadata().cluster.is_none() && crate::cluster::controller().is_none() {
        return;
    }
    let lag = shard.config.cluster.replica_lag_time_max();
    glommio::spawn_local(leader::shrink_lagging(shard.clone(), lag)).detach();
    glommio::spawn_local(supervise(shard)).detach();
}

async fn supervise(shard: Rc<Shard>) {
    let running: Rc<RefCell<HashSet<i32>>> = Rc::default();
    while !shard.is_shutting_down() {
        let leaders: HashSet<i32> = followed(&shard).into_iter().map(|f| f.leader).collect();
        for leader in leaders {
            if running.borrow_mut().insert(leader) {
                let running = running.clone();
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    fetcher::run(shard, leader).await;
                    running.borrow_mut().remove(&leader);
                })
                .detach();
            }
        }
        futures_lite::future::or(
            shard.shutdown.notified(),
            glommio::timer::sleep(SUPERVISE_EVERY),
        )
        .await;
    }
}
