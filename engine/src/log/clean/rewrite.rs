//! Reading the batches of a closed segment, and writing a cleaned segment
//! aside: aligned O_DIRECT writes of whole batches, the offset and time
//! indexes built as they go.

use std::rc::Rc;

use bytes::Bytes;

use super::super::segment::Segment;
use super::super::state::{io_err, PartitionLog};
use super::pacer::Pacer;
use crate::batch::{self, BatchHeader, HEADER_BYTES};
use crate::error::{EngineError, Result};
use crate::io::{align_down, align_up, IoBuf, Storage, StorageFile, CHUNK_BYTES};

/// Bytes of a segment read at a time.
const READ_WINDOW_BYTES: u64 = CHUNK_BYTES;

/// Where a walk over a closed segment's batches is.
pub(super) struct Cursor {
    pub(super) base: i64,
    pub(super) len: u64,
    pub(super) pos: u64,
    /// Offsets only go up (a cleaned segment has gaps between batches).
    expect: i64,
}

impl Cursor {
    pub(super) fn new(base: i64, len: u64) -> Cursor {
        Cursor {
            base,
            len,
            pos: 0,
            expect: base,
        }
    }

    pub(super) fn done(&self) -> bool {
        self.pos >= self.len
    }
}

impl<S: Storage> PartitionLog<S> {
    /// The next window of whole batches of a closed segment, each checked
    /// (CRC included). The pacer is charged for what is read.
    pub(super) async fn next_batches(
        &self,
        cur: &mut Cursor,
        pacer: &mut impl Pacer,
    ) -> Result<Vec<(BatchHeader, Bytes)>> {
        let (base, pos) = (cur.base, cur.pos);
        let (window, _) = self.read_range(base, pos, READ_WINDOW_BYTES).await?;
        pacer.pace(window.len() as u64).await;
        let mut out = Vec::new();
        let mut at = 0usize;
        while window.len().saturating_sub(at) >= HEADER_BYTES {
            let h = BatchHeader::parse(&window.peek(at, HEADER_BYTES))
                .map_err(|e| corrupt(base, pos, at, e))?;
            let size = h.total_bytes();
            let whole = if window.len().saturating_sub(at) >= size {
                window.slice(at..at.saturating_add(size))
            } else if at == 0 {
                // A batch larger than the window: read it whole.
                let (b, _) = self.read_range(base, pos, size as u64).await?;
                pacer.pace(b.len() as u64).await;
                b.slice(0..b.len())
            } else {
                break;
            };
            let h = batch::validate(&whole).map_err(|e| corrupt(base, pos, at, e))?;
            if h.base_offset < cur.expect {
                return Err(EngineError::Corrupt(format!(
                    "segment {base}: batch at offset {} after offset {}",
                    h.base_offset, cur.expect
                )));
            }
            cur.expect = h.last_offset().saturating_add(1);
            out.push((h, whole));
            at = at.saturating_add(size);
        }
        if at == 0 {
            return Err(EngineError::Corrupt(format!(
                "segment {base}: truncated batch at {pos}"
            )));
        }
        cur.pos = pos.saturating_add(at as u64);
        Ok(out)
    }
}

fn corrupt(base: i64, pos: u64, at: usize, e: impl std::fmt::Display) -> EngineError {
    EngineError::Corrupt(format!(
        "segment {base} position {}: {e}",
        pos.saturating_add(at as u64)
    ))
}

/// A cleaned segment being written: whole batches appended in offset order,
/// written in aligned chunks, with the segment's indexes kept as they go.
pub(super) struct CleanedWriter<F: StorageFile> {
    pub(super) segment: Segment<F>,
    pending: Vec<u8>,
    /// File position of `pending`'s first byte (aligned).
    written: u64,
    interval: u64,
}

impl<F: StorageFile> CleanedWriter<F> {
    pub(super) fn new(base: i64, file: F, interval: u64) -> Self {
        CleanedWriter {
            segment: Segment::new(base, Rc::new(file)),
            pending: Vec::new(),
            written: 0,
            interval,
        }
    }

    /// Appends one whole batch (already checked).
    pub(super) async fn push(
        &mut self,
        h: &BatchHeader,
        bytes: &[u8],
        pacer: &mut impl Pacer,
    ) -> Result<()> {
        let pos = self.segment.len;
        // The segment's offsets have gaps: the index tracks the batch as
        // the one that follows.
        self.segment.next_offset = h.base_offset;
        self.segment
            .track_batch(pos, h, h.max_timestamp, self.interval);
        self.segment.len = pos.saturating_add(bytes.len() as u64);
        self.pending.extend_from_slice(bytes);
        if self.pending.len() as u64 >= CHUNK_BYTES {
            let whole = align_down(self.pending.len() as u64) as usize;
            self.write(whole, pacer).await?;
        }
        Ok(())
    }

    /// Writes the first `n` pending bytes (padded to the alignment).
    async fn write(&mut self, n: usize, pacer: &mut impl Pacer) -> Result<()> {
        if n == 0 {
            return Ok(());
        }
        let padded = align_up(n as u64) as usize;
        let file = &self.segment.file;
        let mut buf = file.alloc_buf(padded);
        let dst = buf.as_mut_slice();
        let (head, tail) = dst.split_at_mut(n.min(dst.len()));
        head.copy_from_slice(self.pending.get(..n).unwrap_or_default());
        tail.fill(0);
        file.write_at(Rc::new(buf), self.written)
            .await
            .map_err(io_err)?;
        pacer.pace(padded as u64).await;
        self.pending.drain(..n);
        self.written = self.written.saturating_add(n as u64);
        Ok(())
    }

    /// Writes what is left, cuts the file to the data and syncs it. Returns
    /// the segment (its `next_offset` still to be set by the caller).
    pub(super) async fn finish(mut self, pacer: &mut impl Pacer) -> Result<Segment<F>> {
        let n = self.pending.len();
        self.write(n, pacer).await?;
        self.segment.push_time_entry();
        let file = &self.segment.file;
        file.truncate(self.segment.len).await.map_err(io_err)?;
        file.fdatasync().await.map_err(io_err)?;
        self.segment.allocated_bytes = self.segment.len;
        self.segment.cleaned = true;
        Ok(self.segment)
    }
}
