//! The active segment's tail in memory: a 4096-aligned buffer that appends
//! copy into, and the chunks sealed from it that wait to be written or were
//! written recently (the hot-read cache).
//!
//! No I/O happens here. The flush round (`flush.rs`) writes chunks and marks
//! them; buffers come from, and go back to, the storage through the
//! `alloc`/`recycle` closures the callers pass, so the rules below are
//! testable over plain memory.
//!
//! Invariants: `buf` holds `[buf_start, segment len)` and `buf_start` is
//! 4096-aligned; the chunks, oldest first, together with `buf` hold every
//! byte of the segment from the first chunk's start on. A sealed partial
//! chunk is padded with zeros, and the new buffer starts with a copy of its
//! last partial block, which the next write rewrites.
//!
//! `written_end` is how far the segment is on the device: every chunk
//! from the first on is written up to it. A *snapshot* (a padded copy of
//! the unsealed buffer from the last written block on) puts the partial
//! tail on the device without sealing it, so an acks=1 append does not wait
//! for its chunk to fill; the next write of that block rewrites it.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use crate::io::lend::lend;
use crate::io::{align_down, align_up, IoBuf};

/// Written chunks kept in memory as the hot-read cache.
const CACHE_CHUNKS: usize = 4;

/// A sealed tail buffer: `[start, start + data_bytes)` of the active segment,
/// padded with zeros to a multiple of 4096.
pub(super) struct Chunk<B> {
    pub(super) start: u64,
    pub(super) data_bytes: u64,
    pub(super) buf: Rc<B>,
    pub(super) submitted: bool,
    pub(super) written: bool,
}

/// Write state of the active segment.
pub(super) struct Tail<B> {
    /// Holds `[buf_start, segment.len)`; `buf_start` is 4096-aligned.
    pub(super) buf: B,
    pub(super) buf_start: u64,
    pub(super) chunks: VecDeque<Chunk<B>>,
    /// Bytes below this position were read back from the file when the log
    /// was opened, not appended through this process: reads check them as
    /// they check bytes read from disk.
    pub(super) loaded_end: u64,
    /// Every byte of the segment below this is on the device (the O_DIRECT
    /// writes covering it completed). Only moves forward.
    pub(super) written_end: u64,
}

impl<B: IoBuf> Tail<B> {
    /// Copies `head` then `body` to the end of the active segment's tail
    /// (`*len`, advanced here), sealing full buffers into chunks; `alloc`
    /// gives a chunk-sized buffer for the next one. Returns the batch's
    /// position.
    pub(super) fn write(
        &mut self,
        len: &mut u64,
        head: &[u8],
        body: &[u8],
        chunk_bytes: u64,
        mut alloc: impl FnMut() -> B,
    ) -> u64 {
        let pos = *len;
        let chunk = chunk_bytes as usize;
        for part in [head, body] {
            let mut rest = part;
            while !rest.is_empty() {
                // The tail buffer holds `[buf_start, buf_start + chunk)`, and
                // the segment's end `len` lies in it.
                let used = len.saturating_sub(self.buf_start) as usize;
                let n = chunk.saturating_sub(used).min(rest.len());
                let (now, later) = rest.split_at(n);
                let Some(dest) = self
                    .buf
                    .as_mut_slice()
                    .get_mut(used..used.saturating_add(n))
                else {
                    unreachable!("tail write at {used} of a {chunk}-byte buffer");
                };
                dest.copy_from_slice(now);
                *len = len.saturating_add(n as u64);
                rest = later;
                if used.saturating_add(n) == chunk {
                    let next = alloc();
                    let full = std::mem::replace(&mut self.buf, next);
                    self.chunks.push_back(Chunk {
                        start: self.buf_start,
                        data_bytes: chunk_bytes,
                        buf: Rc::new(full),
                        submitted: false,
                        written: false,
                    });
                    self.buf_start = self.buf_start.saturating_add(chunk_bytes);
                }
            }
        }
        pos
    }

    /// Seals the partial tail buffer (the segment is `len` bytes long) into
    /// a chunk padded with zeros; the new tail buffer, from `alloc`, starts
    /// with a copy of the last partial block, which the next write rewrites.
    pub(super) fn seal_partial(&mut self, len: u64, alloc: impl FnOnce() -> B) {
        let used = len.saturating_sub(self.buf_start) as usize;
        if used == 0 {
            return;
        }
        let padded = align_up(used as u64) as usize;
        let new_start = align_down(len);
        let mut next = alloc();
        // The last partial block, `[new_start, len)`, lies in the buffer.
        let from = new_start.saturating_sub(self.buf_start) as usize;
        let (Some(dest), Some(block)) = (
            next.as_mut_slice()
                .get_mut(..len.saturating_sub(new_start) as usize),
            self.buf.as_slice().get(from..used),
        ) else {
            unreachable!("partial block [{from}, {used}) outside the tail buffer");
        };
        dest.copy_from_slice(block);
        let mut full = std::mem::replace(&mut self.buf, next);
        if let Some(padding) = full.as_mut_slice().get_mut(used..padded) {
            padding.fill(0);
        }
        full.trim_to(padded);
        self.chunks.push_back(Chunk {
            start: self.buf_start,
            data_bytes: used as u64,
            buf: Rc::new(full),
            submitted: false,
            written: false,
        });
        self.buf_start = new_start;
    }

    /// The first segment position held in memory.
    pub(super) fn mem_start(&self) -> u64 {
        self.chunks
            .front()
            .map(|c| c.start)
            .unwrap_or(self.buf_start)
            .min(self.buf_start)
    }

    /// `[from, end)` of the active segment from the chunks and the tail
    /// buffer (which together hold everything from the first chunk's start),
    /// in pieces: a sealed chunk's bytes are lent without a copy (nothing
    /// writes a chunk once sealed); the tail buffer's are copied, since
    /// appends write into it.
    pub(super) fn range(&self, from: u64, end: u64) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut p = from;
        while p < end {
            let (start, data, avail_end, chunk) = if p >= self.buf_start {
                (self.buf_start, self.buf.as_slice(), end, None)
            } else {
                match self
                    .chunks
                    .iter()
                    .find(|c| c.start <= p && p < c.start.saturating_add(c.data_bytes))
                {
                    Some(c) => (
                        c.start,
                        c.buf.as_slice(),
                        c.start.saturating_add(c.data_bytes),
                        Some(&c.buf),
                    ),
                    None => {
                        unreachable!(
                            "active segment bytes at {p} are neither in memory nor below it"
                        )
                    }
                }
            };
            let stop = end.min(avail_end);
            let range = p.saturating_sub(start) as usize..stop.saturating_sub(start) as usize;
            let Some(bytes) = data.get(range.clone()) else {
                unreachable!("active segment bytes [{p}, {stop}) beyond their buffer");
            };
            out.push(match chunk {
                Some(buf) => lend(buf.clone(), range.start, range.end),
                None => Bytes::copy_from_slice(bytes),
            });
            p = stop;
        }
        out
    }

    /// Bytes of sealed chunks not yet written.
    pub(super) fn unwritten_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .filter(|c| !c.written)
            .map(|c| c.data_bytes)
            .sum()
    }

    /// Moves `written_end` over the written chunks that continue it, oldest
    /// first (writes finish out of order: it stops at the first chunk not
    /// written).
    pub(super) fn advance_written(&mut self) {
        for c in &self.chunks {
            if !c.written || c.start > self.written_end {
                break;
            }
            self.written_end = self.written_end.max(c.start.saturating_add(c.data_bytes));
        }
    }

    /// A copy of the unsealed buffer from the block holding `written_end` to
    /// the segment's end `len`, padded with zeros to whole blocks, for a
    /// write at the returned position; `alloc` gives a buffer of the padded
    /// length. `None` when there is nothing past `written_end` or a sealed
    /// chunk is not written yet (the copy must continue what is on the
    /// device, so that writing it moves `written_end` to `len`).
    pub(super) fn snapshot(&self, len: u64, alloc: impl FnOnce(usize) -> B) -> Option<(u64, B)> {
        if len <= self.written_end || self.chunks.iter().any(|c| !c.written) {
            return None;
        }
        let start = align_down(self.written_end);
        // Every chunk is written, so the device holds everything below the
        // unsealed buffer: `written_end` is at or past `buf_start`.
        assert!(
            start >= self.buf_start,
            "written end {} below the tail buffer at {}",
            self.written_end,
            self.buf_start
        );
        let used = len.saturating_sub(start) as usize;
        let padded = align_up(used as u64) as usize;
        let mut buf = alloc(padded);
        let from = start.saturating_sub(self.buf_start) as usize;
        let (dest, padding) = buf.as_mut_slice().split_at_mut(used.min(padded));
        let Some(data) = self.buf.as_slice().get(from..from.saturating_add(used)) else {
            unreachable!("snapshot [{from}, +{used}) outside the tail buffer");
        };
        dest.copy_from_slice(data);
        padding.fill(0);
        Some((start, buf))
    }

    /// A snapshot of `[start, end)` is on the device.
    pub(super) fn snapshot_written(&mut self, start: u64, end: u64) {
        self.advance_written();
        if start <= self.written_end {
            self.written_end = self.written_end.max(end);
        }
    }

    /// Drops written chunks beyond the hot cache (the oldest first), handing
    /// their buffers to `recycle`. Only a written prefix is dropped: writes
    /// finish out of order.
    pub(super) fn trim_written(&mut self, mut recycle: impl FnMut(B)) {
        // What is dropped must be counted in `written_end` first.
        self.advance_written();
        let written = self.chunks.iter().take_while(|c| c.written).count();
        for _ in 0..written.saturating_sub(CACHE_CHUNKS) {
            let Some(c) = self.chunks.pop_front() else {
                break;
            };
            if let Ok(buf) = Rc::try_unwrap(c.buf) {
                recycle(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 8192;

    /// A heap buffer filled with a pattern, so missing zero padding shows.
    struct VecBuf(Vec<u8>);

    impl IoBuf for VecBuf {
        fn as_slice(&self) -> &[u8] {
            &self.0
        }
        fn as_mut_slice(&mut self) -> &mut [u8] {
            &mut self.0
        }
        fn trim_to(&mut self, len: usize) {
            self.0.truncate(len)
        }
    }

    fn alloc() -> VecBuf {
        VecBuf(vec![0xA5; CHUNK as usize])
    }

    fn empty() -> Tail<VecBuf> {
        Tail {
            buf: alloc(),
            buf_start: 0,
            chunks: VecDeque::new(),
            loaded_end: 0,
            written_end: 0,
        }
    }

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    fn copy(tail: &Tail<VecBuf>, from: u64, end: u64) -> Vec<u8> {
        tail.range(from, end).concat()
    }

    #[test]
    fn writes_seal_full_buffers_into_chunks() {
        let mut tail = empty();
        let mut len = 0u64;
        let (head, body) = (bytes(100, 1), bytes(10_000, 2));
        let pos = tail.write(&mut len, &head, &body, CHUNK, alloc);
        assert_eq!((pos, len), (0, 10_100));
        assert_eq!(tail.chunks.len(), 1);
        let c = &tail.chunks[0];
        assert_eq!((c.start, c.data_bytes, c.submitted), (0, CHUNK, false));
        assert_eq!(tail.buf_start, CHUNK);
        assert_eq!(tail.unwritten_bytes(), CHUNK);
        assert!(tail.chunks.iter().all(|c| !c.submitted));
        assert_eq!(tail.mem_start(), 0);
        let all = [head, body].concat();
        assert_eq!(copy(&tail, 0, len), all);
        assert_eq!(copy(&tail, 8000, 8300), all[8000..8300]);
        let pos = tail.write(&mut len, &bytes(50, 3), &[], CHUNK, alloc);
        assert_eq!((pos, len), (10_100, 10_150));
    }

    #[test]
    fn sealing_a_partial_buffer_pads_it_and_keeps_its_last_block() {
        let mut tail = empty();
        let mut len = 0u64;
        let first = bytes(10_100, 4);
        tail.write(&mut len, &first, &[], CHUNK, alloc);
        tail.seal_partial(len, alloc);
        let c = tail.chunks.back().unwrap();
        // [8192, 10100) padded with zeros to one 4096-byte block.
        assert_eq!((c.start, c.data_bytes), (8192, 1908));
        assert_eq!(c.buf.as_slice().len(), 4096);
        assert!(c.buf.as_slice()[1908..].iter().all(|&b| b == 0));
        // The new buffer starts at the block that the next write rewrites.
        assert_eq!(tail.buf_start, 8192);
        assert_eq!(copy(&tail, 0, len), first);
        let second = bytes(3000, 5);
        let pos = tail.write(&mut len, &second, &[], CHUNK, alloc);
        assert_eq!(pos, 10_100);
        assert_eq!(copy(&tail, 0, len), [first, second].concat());
        // A block-aligned end leaves no partial block: a second seal is a
        // no-op.
        let mut tail = empty();
        let mut len = 0u64;
        tail.write(&mut len, &bytes(4096, 6), &[], CHUNK, alloc);
        tail.seal_partial(len, alloc);
        assert_eq!((tail.chunks.len(), tail.buf_start), (1, 4096));
        tail.seal_partial(len, alloc);
        assert_eq!(tail.chunks.len(), 1, "sealed an empty buffer");
    }

    #[test]
    fn only_a_written_prefix_beyond_the_cache_is_dropped() {
        let mut tail = empty();
        let mut len = 0u64;
        tail.write(&mut len, &bytes(8 * CHUNK as usize, 7), &[], CHUNK, alloc);
        assert_eq!(tail.chunks.len(), 8);
        let mut recycled = 0;
        // The oldest chunk is not written yet: nothing can go.
        for c in tail.chunks.iter_mut().skip(1) {
            c.written = true;
        }
        tail.trim_written(|_| recycled += 1);
        assert_eq!((tail.chunks.len(), recycled), (8, 0));
        tail.chunks[0].written = true;
        tail.trim_written(|_| recycled += 1);
        assert_eq!(
            (tail.chunks.len(), recycled),
            (CACHE_CHUNKS, 8 - CACHE_CHUNKS)
        );
        assert_eq!(tail.mem_start(), (8 - CACHE_CHUNKS) as u64 * CHUNK);
        assert_eq!(tail.unwritten_bytes(), 0);
    }

    #[test]
    fn written_end_follows_chunks_and_snapshots() {
        let mut tail = empty();
        let mut len = 0u64;
        let first = bytes(10_100, 8);
        tail.write(&mut len, &first, &[], CHUNK, alloc);
        // The full chunk is not written: no snapshot may skip it.
        assert!(tail.snapshot(len, |n| VecBuf(vec![0xA5; n])).is_none());
        tail.chunks[0].written = true;
        tail.advance_written();
        assert_eq!(tail.written_end, CHUNK);
        // The snapshot starts at the block holding the written end, padded.
        let (start, snap) = tail.snapshot(len, |n| VecBuf(vec![0xA5; n])).unwrap();
        assert_eq!((start, snap.0.len()), (CHUNK, 4096));
        assert_eq!(&snap.0[..1908], &first[8192..]);
        assert!(snap.0[1908..].iter().all(|&b| b == 0), "padding not zeroed");
        tail.snapshot_written(start, len);
        assert_eq!(tail.written_end, len);
        assert!(tail.snapshot(len, |n| VecBuf(vec![0xA5; n])).is_none());
        // More bytes: the next snapshot rewrites the partial block.
        let second = bytes(5000, 9);
        tail.write(&mut len, &second, &[], CHUNK, alloc);
        let (start, snap) = tail.snapshot(len, |n| VecBuf(vec![0xA5; n])).unwrap();
        assert_eq!((start, snap.0.len()), (CHUNK, 8192));
        let all = [first, second].concat();
        assert_eq!(&snap.0[..(len - CHUNK) as usize], &all[CHUNK as usize..]);
        // A snapshot that does not continue the written end moves nothing.
        let mut other = empty();
        other.snapshot_written(4096, 8192);
        assert_eq!(other.written_end, 0);
        // Out-of-order chunk writes: the end waits for the oldest.
        let mut tail = empty();
        let mut len = 0u64;
        tail.write(&mut len, &bytes(3 * CHUNK as usize, 10), &[], CHUNK, alloc);
        tail.chunks[1].written = true;
        tail.advance_written();
        assert_eq!(tail.written_end, 0);
        tail.chunks[0].written = true;
        tail.advance_written();
        assert_eq!(tail.written_end, 2 * CHUNK);
    }
}
