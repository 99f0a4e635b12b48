//! Shard 0 follows the controller's images and publishes each as the
//! shards' metadata, as it publishes its own updates on a single node.

use std::rc::Rc;
use std::sync::Arc;

use futures_lite::StreamExt;

use crate::cluster::{metadata_from_image, ImageReceiver};
use crate::shard::Shard;

/// Runs on shard 0 until the controller stops. Images that queued up while
/// one was published are skipped to the newest: each is complete.
pub async fn follow_images(shard: Rc<Shard>, mut images: ImageReceiver) {
    let local_cluster_id = shard.metadata().cluster_id.clone();
    while let Some(mut image) = images.next().await {
        while let Ok(newer) = images.try_recv() {
            image = newer;
        }
        let next = Arc::new(metadata_from_image(image, &local_cluster_id));
        for target in 0..shard.shards {
            let snapshot = next.clone();
            let applied = shard
                .run_on(target, move |s| async move {
                    let previous = s.metadata();
                    s.apply_metadata(snapshot).await;
                    crate::replica::leader::on_image(&s, &previous);
                    crate::coordinators::on_leadership(&s);
                })
                .await;
            if let Err(e) = applied {
                tracing::warn!(shard = target, "publishing cluster metadata failed: {e}");
            }
        }
    }
    tracing::info!("the controller stopped publishing metadata");
}
