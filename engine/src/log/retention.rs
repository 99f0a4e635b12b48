//! Retention: deleting whole closed segments past `retention.ms` or
//! `retention.bytes`, or wholly below a log start offset that DeleteRecords
//! moved, oldest first, which moves the log start offset. The
//! active segment is never deleted, nor one still being finished by a roll.
//! Time and size delete only segments wholly below the high watermark (the
//! read bound), as Kafka does: a leader's segment that an in-sync follower
//! has not fetched yet stays, or the follower would have to start again at
//! the leader's new log start, past records it never held.
//! A compact-only log (`cleanup.policy=compact`) keeps everything: its
//! segments go only through compaction.

use super::segment::segment_name;
use super::state::{io_err, PartitionLog};
use crate::error::Result;
use crate::io::Storage;

impl<S: Storage> PartitionLog<S> {
    /// Deletes closed segments past `retention.ms` / `retention.bytes` and
    /// wholly below the high watermark, oldest first, moving the log start
    /// offset, unless the log is compact-only. Returns how many.
    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let (retention_ms, retention_bytes) = {
            let c = self.inner.config.borrow();
            if !c.cleanup_delete {
                return Ok(0);
            }
            (c.retention_ms, c.retention_bytes)
        };
        let mut doomed = Vec::new();
        {
            let mut st = self.inner.state.borrow_mut();
            // The cleaner is rewriting closed segments: the next tick
            // deletes what is due.
            if st.cleaning {
                return Ok(0);
            }
            let mut total: u64 = st.segments.iter().map(|s| s.len).sum();
            // The active segment (the last) is never deleted.
            while let (Some(seg), Some(next)) = (st.segments.first(), st.segments.get(1)) {
                if st.finishing == Some(seg.base_offset) {
                    break;
                }
                let by_time = retention_ms >= 0
                    && seg.max_timestamp >= 0
                    && now_ms.saturating_sub(seg.max_timestamp) > retention_ms;
                let rest = total.saturating_sub(seg.len);
                let by_size = u64::try_from(retention_bytes).is_ok_and(|limit| rest >= limit);
                // Wholly below a start moved by DeleteRecords.
                let by_start = next.base_offset <= st.log_start_offset;
                let below_hw = next.base_offset <= st.read_bound();
                if !((below_hw && (by_time || by_size)) || by_start) {
                    break;
                }
                total = rest;
                let next_base = next.base_offset;
                let seg = st.segments.remove(0);
                doomed.push((seg.base_offset, seg.file));
                st.log_start_offset = st.log_start_offset.max(next_base);
            }
        }
        for (base, _) in &doomed {
            for ext in ["log", "index", "timeindex"] {
                self.inner
                    .storage
                    .remove_file(&self.inner.dir.join(segment_name(*base, ext)))
                    .await
                    .map_err(io_err)?;
            }
        }
        let deleted = doomed.len();
        if deleted > 0 {
            // A read-ahead of a deleted segment would keep its file open.
            self.drop_read_ahead();
            for (_, file) in doomed {
                self.inner.storage.retire(file);
            }
            self.inner
                .storage
                .sync_dir(&self.inner.dir)
                .await
                .map_err(io_err)?;
            tracing::debug!(dir = %self.inner.dir.display(), segments = deleted, log_start_offset = self.log_start_offset(), "retention deleted segments");
        }
        Ok(deleted)
    }
}
