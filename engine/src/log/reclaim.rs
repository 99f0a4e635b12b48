//! Giving back preallocated disk that an idle log holds: the active
//! segment's file is trimmed to its data and the spare segment removed, so an
//! idle partition holds its data and nothing more (see `prealloc.rs` for
//! when a log counts as idle).

use super::files::SPARE_SEGMENT_FILE;
use super::flush::RoundGuard;
use super::state::{io_err, PartitionLog};
use crate::error::Result;
use crate::io::{align_up, Storage, StorageFile};

impl<S: Storage> PartitionLog<S> {
    /// At a tick: trims what an idle log holds past its data. The trim holds
    /// the flush round (`flushing`), so no write is in flight while the file
    /// shrinks and none starts; appends go on into the tail meanwhile, and
    /// everything appended lies below the trimmed end or past it in memory.
    pub(super) async fn trim_if_idle(&self, now_ms: i64) -> Result<()> {
        if !self.inner.config.borrow().preallocate || self.inner.spare_busy.get() {
            return Ok(());
        }
        let (file, keep_bytes) = {
            let mut st = self.inner.state.borrow_mut();
            if st.closed || st.failed.is_some() || st.flushing || st.rolling {
                return Ok(());
            }
            let Some(seg) = st.segments.last() else {
                return Ok(());
            };
            // Flush rounds write the last partial block padded to 4096.
            let keep_bytes = align_up(seg.len);
            let idle = self.inner.prealloc.borrow().idle_and_holding(
                now_ms,
                seg.allocated_bytes,
                keep_bytes,
            );
            if !idle {
                return Ok(());
            }
            let file = seg.file.clone();
            st.flushing = true;
            (file, keep_bytes)
        };
        let _guard = RoundGuard { inner: &self.inner };
        let file_bytes = file.len().await.map_err(io_err)?;
        if file_bytes > keep_bytes {
            file.truncate(keep_bytes).await.map_err(io_err)?;
        }
        {
            let mut st = self.inner.state.borrow_mut();
            if let Some(seg) = st.segments.last_mut() {
                seg.allocated_bytes = seg.allocated_bytes.min(keep_bytes);
            }
        }
        let spare = self.inner.spare.borrow_mut().take();
        let storage = &self.inner.storage;
        if spare.is_some() {
            let path = self.inner.dir.join(SPARE_SEGMENT_FILE);
            if let Err(e) = storage.remove_file(&path).await {
                // Only disk held until the next open removes the leftover.
                tracing::warn!(dir = %self.inner.dir.display(), error = %e, "removing an idle log's spare segment failed");
            }
            // A spare may be prepared again if the partition speeds up.
            self.inner.spare_started_for.set(None);
        }
        let budget = storage.preallocation_budget();
        self.inner.prealloc.borrow_mut().reset(budget, false);
        tracing::debug!(dir = %self.inner.dir.display(), file_bytes, keep_bytes, spare = spare.is_some(), "idle log's preallocation trimmed");
        Ok(())
    }
}
