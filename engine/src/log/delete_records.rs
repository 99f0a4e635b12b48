//! DeleteRecords: moving the log start offset forward on request, inside a
//! segment if need be, and keeping it across restarts.
//!
//! The new start is written to `log-start-offset` (the offset in decimal,
//! written aside and renamed, so the file is whole or absent) before the
//! request is answered. Offsets below the start are no longer served; the
//! segments that lie wholly below it are deleted by the next retention pass
//! (`retention.rs`). On open, the start is the larger of the first
//! segment's base and the saved offset, and never past the log end.

use std::path::Path;

use super::state::{io_err, PartitionLog};
use crate::error::{EngineError, Result};
use crate::io::{replace_file, Storage, StorageFile};

pub(super) const LOG_START_FILE: &str = "log-start-offset";
const LOG_START_TMP_FILE: &str = "log-start-offset.tmp";
/// More than any decimal i64 and its newline.
const LOG_START_FILE_MAX_BYTES: usize = 32;

impl<S: Storage> PartitionLog<S> {
    /// Moves the log start offset to `offset` (never backwards) and makes
    /// it durable; returns the log start offset then. An offset past the
    /// high watermark is refused with `OffsetOutOfRange`.
    pub async fn delete_records_before(&self, offset: i64) -> Result<i64> {
        let high_watermark = self.high_watermark();
        {
            let mut st = self.inner.state.borrow_mut();
            self.check_open(&st)?;
            if offset < 0 || offset > high_watermark {
                return Err(EngineError::OffsetOutOfRange {
                    offset,
                    log_start: st.log_start_offset,
                    log_end: high_watermark,
                });
            }
            st.log_start_offset = st.log_start_offset.max(offset);
        }
        self.save_log_start().await?;
        Ok(self.log_start_offset())
    }

    /// Writes the log start offset unless a write of it (or a later one)
    /// already completed. One write at a time: the lock holds the saved
    /// value, so a smaller start never overwrites a larger one.
    async fn save_log_start(&self) -> Result<()> {
        let mut saved = self.inner.log_start_saved.lock().await;
        let want = self.log_start_offset();
        if *saved >= want {
            return Ok(());
        }
        let dir = &self.inner.dir;
        replace_file(
            &self.inner.storage,
            dir,
            LOG_START_TMP_FILE,
            LOG_START_FILE,
            format!("{want}\n").as_bytes(),
        )
        .await
        .map_err(io_err)?;
        *saved = want;
        tracing::info!(dir = %dir.display(), log_start_offset = want, "log start offset moved by DeleteRecords");
        Ok(())
    }
}

/// The saved log start offset of the log in `dir`, if any. A file that
/// does not parse is ignored with a warning (the segments' base is used).
pub(super) async fn read_log_start<S: Storage>(storage: &S, dir: &Path) -> Result<Option<i64>> {
    let path = dir.join(LOG_START_FILE);
    if !storage.exists(&path).await.map_err(io_err)? {
        return Ok(None);
    }
    let file = storage.open(&path).await.map_err(io_err)?;
    let bytes = file
        .read_at(0, LOG_START_FILE_MAX_BYTES)
        .await
        .map_err(io_err)?;
    let parsed = std::str::from_utf8(&bytes)
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .filter(|o| *o >= 0);
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "unreadable log start offset file; ignoring it");
    }
    Ok(parsed)
}
