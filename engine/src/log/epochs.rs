//! The leader epoch cache of a log (`crate::leader_epoch`) on disk and
//! behind the `PartitionLog` API: loading `leader-epoch-checkpoint` at open,
//! writing it aside and renaming it when the cache changed, becoming leader
//! at an epoch, answering an epoch's end offset.

use std::path::Path;

use super::state::{io_err, PartitionLog};
use crate::error::Result;
use crate::io::{read_whole_file, replace_file, Storage};
use crate::leader_epoch::LeaderEpochCache;

pub(super) const CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
pub(super) const CHECKPOINT_TMP_FILE: &str = "leader-epoch-checkpoint.tmp";

/// Reads the checkpoint of the log in `dir` and drops what lies at or past
/// `log_end_offset`. A missing file is an empty cache.
pub(super) async fn load<S: Storage>(
    storage: &S,
    dir: &Path,
    log_end_offset: i64,
) -> Result<LeaderEpochCache> {
    let path = dir.join(CHECKPOINT_FILE);
    if !storage.exists(&path).await.map_err(io_err)? {
        return Ok(LeaderEpochCache::default());
    }
    let bytes = read_whole_file(storage, &path).await.map_err(io_err)?;
    let (mut cache, whole) = LeaderEpochCache::from_checkpoint(&String::from_utf8_lossy(&bytes));
    if !whole {
        tracing::warn!(path = %path.display(), kept = cache.entries().len(), "leader epoch checkpoint partly unreadable; kept its valid prefix");
    }
    cache.truncate_from_end(log_end_offset);
    Ok(cache)
}

impl<S: Storage> PartitionLog<S> {
    /// The leader epoch cache as it is now (a copy).
    pub fn leader_epochs(&self) -> LeaderEpochCache {
        self.inner.epochs.borrow().cache.clone()
    }

    /// The epoch stamped on client appends, if this log is led here.
    pub fn leader_epoch(&self) -> Option<i32> {
        self.inner.epochs.borrow().leader_epoch
    }

    /// The epoch that wrote `offset` ([`LeaderEpochCache::epoch_for_offset`]).
    pub fn epoch_for_offset(&self, offset: i64) -> Option<i32> {
        self.inner.epochs.borrow().cache.epoch_for_offset(offset)
    }

    /// OffsetForLeaderEpoch's answer from this log: see
    /// [`LeaderEpochCache::end_offset_for`], with the log end offset.
    pub fn end_offset_for_epoch(&self, requested: i32) -> (i32, i64) {
        let log_end = self.log_end_offset();
        self.inner
            .epochs
            .borrow()
            .cache
            .end_offset_for(requested, log_end)
    }

    /// This broker leads the partition at `epoch` from now on: client
    /// batches get `epoch` stamped, and a new epoch is recorded as
    /// starting at the log end (durably, before this returns). An epoch
    /// older than the latest known is refused with `false` (a stale
    /// metadata image): the log keeps stamping what it did.
    pub async fn become_leader(&self, epoch: i32) -> Result<bool> {
        {
            let st = self.inner.state.borrow();
            self.check_open(&st)?;
            let mut e = self.inner.epochs.borrow_mut();
            if e.cache.latest_epoch().is_some_and(|latest| epoch < latest) {
                return Ok(false);
            }
            e.leader_epoch = Some(epoch);
            if e.cache.assign(epoch, st.log_end_offset) {
                e.changed();
            }
        }
        self.save_epochs().await?;
        Ok(true)
    }

    /// This broker no longer leads the partition: client batches are no
    /// longer stamped (the server refuses them anyway).
    pub fn resign_leadership(&self) {
        self.inner.epochs.borrow_mut().leader_epoch = None;
    }

    /// Writes the checkpoint unless the file already holds this version of
    /// the cache (or a later one). One writer at a time.
    pub(super) async fn save_epochs(&self) -> Result<()> {
        let mut saved = self.inner.epochs_saved.lock().await;
        let (version, text) = {
            let e = self.inner.epochs.borrow();
            (e.version, e.cache.to_checkpoint())
        };
        if *saved == version {
            return Ok(());
        }
        replace_file(
            &self.inner.storage,
            &self.inner.dir,
            CHECKPOINT_TMP_FILE,
            CHECKPOINT_FILE,
            text.as_bytes(),
        )
        .await
        .map_err(io_err)?;
        *saved = version;
        Ok(())
    }
}
