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
//! from the first on is written up to it. A *snapshot* (the unsealed
//! buffer from the last written block on, padded with zeros to whole
//! blocks) puts the partial tail on the device without sealing it, so an
//! acks=1 append does not wait for its chunk to fill; the next write of that
//! block rewrites it.
//!
//! A snapshot is written from the unsealed buffer itself, not from a copy:
//! the buffer is an `Rc` the write holds, and appends go on copying into it,
//! past the snapshot's data end, while the write is in flight (through
//! `IoBuf::base_ptr`, see `put`). The device may then take some of those
//! bytes in the snapshot's last block, after its data end: they are not
//! counted as written (`written_end` stops at the data end), and the next
//! write of that block rewrites them. Below the data end nothing changes
//! while the write reads it: appends only ever write at the segment's end.

use std::collections::VecDeque;
use std::rc::Rc;

use bytes::Bytes;

use crate::io::lend::{lend, Stable};
use crate::io::{align_down, align_up, IoBuf};

/// Copies `src` into `buf` at `at`. `buf` may be shared with an O_DIRECT
/// write in flight (a snapshot), which only reads it.
fn put<B: IoBuf>(buf: &Rc<B>, at: usize, src: &[u8]) {
    let len = buf.as_slice().len();
    assert!(
        at.checked_add(src.len()).is_some_and(|end| end <= len),
        "tail write [{at}, +{}) outside a {len}-byte buffer",
        src.len()
    );
    // SAFETY: in bounds (above). `base_ptr` is the buffer's heap allocation,
    // writable through a raw pointer; no reference to these bytes lives
    // while this copies (the shard's thread holds none across it, and a
    // write in flight is the kernel reading by address); `src` is a
    // request's bytes, never this buffer.
    unsafe {
        std::ptr::copy_nonoverlapping(src.as_ptr(), buf.base_ptr().add(at), src.len());
    }
}

/// Zeroes `range` of `buf`, as `put` writes.
fn zero<B: IoBuf>(buf: &Rc<B>, range: std::ops::Range<usize>) {
    let len = buf.as_slice().len();
    assert!(
        range.start <= range.end && range.end <= len,
        "zeroing {range:?} outside a {len}-byte buffer"
    );
    // SAFETY: as in `put`.
    unsafe {
        std::ptr::write_bytes(buf.base_ptr().add(range.start), 0, range.len());
    }
}

/// Written chunks kept in memory as the hot-read cache.
const CACHE_CHUNKS: usize = 4;

/// Bytes `[start, end)` of the unsealed tail buffer, lent to a reader: all
/// below the segment's end when lent, and appends only ever write at the
/// end (a seal copies the last block into the next buffer; a truncation
/// loads a new one), so nothing changes them while the rest of the buffer
/// is written.
struct TailPart<B> {
    buf: Rc<B>,
    start: usize,
    end: usize,
}

// SAFETY: the buffer is heap memory the `Rc` keeps; `[start, end)` is never
// written again (above); `stable_bytes` is called on the shard's thread,
// where no write to the buffer runs during the call.
unsafe impl<B: IoBuf> Stable for TailPart<B> {
    fn stable_bytes(&self) -> &[u8] {
        self.buf
            .as_slice()
            .get(self.start..self.end)
            .unwrap_or_default()
    }
    fn give_back(self: Box<Self>) {
        Stable::give_back(Box::new(self.buf));
    }
}

/// A sealed tail buffer: `[start, start + data_bytes)` of the active segment,
/// padded with zeros to a multiple of 4096 (`padded_len`; the buffer may be
/// longer).
pub(super) struct Chunk<B> {
    pub(super) start: u64,
    pub(super) data_bytes: u64,
    pub(super) buf: Rc<B>,
    pub(super) submitted: bool,
    pub(super) written: bool,
}

impl<B> Chunk<B> {
    /// The bytes a write of the chunk puts on the device: its data padded
    /// to whole blocks.
    pub(super) fn padded_len(&self) -> u64 {
        align_up(self.data_bytes)
    }
}

/// Write state of the active segment.
pub(super) struct Tail<B> {
    /// Holds `[buf_start, segment.len)`; `buf_start` is 4096-aligned. An `Rc`
    /// that a snapshot's write in flight shares; written only by `put`.
    pub(super) buf: Rc<B>,
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
                put(&self.buf, used, now);
                *len = len.saturating_add(n as u64);
                rest = later;
                if used.saturating_add(n) == chunk {
                    let full = std::mem::replace(&mut self.buf, Rc::new(alloc()));
                    self.chunks.push_back(Chunk {
                        start: self.buf_start,
                        data_bytes: chunk_bytes,
                        buf: full,
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
        zero(&self.buf, used..padded);
        let full = std::mem::replace(&mut self.buf, Rc::new(next));
        self.chunks.push_back(Chunk {
            start: self.buf_start,
            data_bytes: used as u64,
            buf: full,
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

    /// `[from, end)` of the active segment (`end` at most its length) from
    /// the chunks and the tail buffer, which together hold everything from
    /// the first chunk's start, in pieces lent without a copy: nothing writes
    /// a chunk once sealed, nor the tail buffer below the segment's end
    /// (`TailPart`).
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
            if data.get(range.clone()).is_none() {
                unreachable!("active segment bytes [{p}, {stop}) beyond their buffer");
            }
            out.push(match chunk {
                Some(buf) => lend(buf.clone(), range.start, range.end),
                None => {
                    let len = range.len();
                    let part = TailPart {
                        buf: self.buf.clone(),
                        start: range.start,
                        end: range.end,
                    };
                    lend(part, 0, len)
                }
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

    /// The unsealed buffer's range from the block holding `written_end` to
    /// the segment's end `len`, padded with zeros to whole blocks, for a
    /// write at the returned position (see the module's notes on writing it
    /// while appends go on). `None` when there is nothing past `written_end`
    /// or a sealed chunk is not written yet (the snapshot must continue what
    /// is on the device, so that writing it moves `written_end` to `len`).
    pub(super) fn snapshot(&mut self, len: u64) -> Option<(u64, Rc<B>, std::ops::Range<usize>)> {
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
        let from = start.saturating_sub(self.buf_start) as usize;
        let data_end = len.saturating_sub(self.buf_start) as usize;
        let padded_end = align_up(data_end as u64) as usize;
        // A pooled buffer holds an older log's bytes: past the data end the
        // device gets zeros (or bytes appended meanwhile), never those.
        zero(&self.buf, data_end..padded_end);
        Some((start, self.buf.clone(), from..padded_end))
    }

    /// A snapshot of `[start, end)` is on the device.
    pub(super) fn snapshot_written(&mut self, start: u64, end: u64) {
        self.advance_written();
        if start <= self.written_end {
            self.written_end = self.written_end.max(end);
        }
    }

    /// Done with the tail (a roll or a truncation replaced it): hands every
    /// buffer no reader or write still holds to `recycle`.
    pub(super) fn give_back(self, mut recycle: impl FnMut(B)) {
        let chunks = self.chunks.into_iter().map(|c| c.buf);
        for buf in std::iter::once(self.buf).chain(chunks) {
            if let Ok(buf) = Rc::try_unwrap(buf) {
                recycle(buf);
            }
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
        fn base_ptr(&self) -> *mut u8 {
            self.0.as_ptr().cast_mut()
        }
    }

    fn alloc() -> VecBuf {
        VecBuf(vec![0xA5; CHUNK as usize])
    }

    fn empty() -> Tail<VecBuf> {
        Tail {
            buf: Rc::new(alloc()),
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
        assert_eq!(c.padded_len(), 4096);
        assert!(c.buf.as_slice()[1908..4096].iter().all(|&b| b == 0));
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
    fn the_unsealed_buffer_is_lent_and_what_it_lends_stays() {
        let mut tail = empty();
        let mut len = 0u64;
        let first = bytes(5000, 12);
        tail.write(&mut len, &first, &[], CHUNK, alloc);
        let lent = tail.range(100, len);
        assert_eq!(lent.len(), 1);
        // Not a copy: it points into the tail buffer.
        assert_eq!(lent[0].as_ptr(), tail.buf.as_slice()[100..].as_ptr());
        // Appends go on into the same buffer, a seal copies its last block
        // on, and a snapshot zeroes past the end: the lent bytes stay.
        tail.write(&mut len, &bytes(2000, 13), &[], CHUNK, alloc);
        tail.seal_partial(len, alloc);
        tail.write(&mut len, &bytes(3000, 14), &[], CHUNK, alloc);
        assert_eq!(lent[0][..], first[100..]);
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
        assert!(tail.snapshot(len).is_none());
        tail.chunks[0].written = true;
        tail.advance_written();
        assert_eq!(tail.written_end, CHUNK);
        // The snapshot starts at the block holding the written end, padded
        // with zeros over the buffer's old bytes; it is the tail buffer
        // itself, not a copy.
        let (start, snap, range) = tail.snapshot(len).unwrap();
        assert!(Rc::ptr_eq(&snap, &tail.buf), "the snapshot copied the tail");
        assert_eq!((start, range.clone()), (CHUNK, 0..4096));
        let bytes_of = |r: std::ops::Range<usize>| snap.0[r].to_vec();
        assert_eq!(bytes_of(0..1908), first[8192..]);
        assert!(
            bytes_of(1908..4096).iter().all(|&b| b == 0),
            "padding not zeroed"
        );
        // Appends go on while the snapshot is written, past its data end;
        // what the snapshot holds below it does not change.
        let during = bytes(100, 11);
        tail.write(&mut len, &during, &[], CHUNK, alloc);
        assert_eq!(bytes_of(0..1908), first[8192..]);
        assert_eq!(bytes_of(1908..2008), during);
        tail.snapshot_written(start, 10_100);
        assert_eq!(tail.written_end, 10_100);
        drop(snap);
        // More bytes: the next snapshot rewrites the partial block.
        let second = bytes(4900, 9);
        tail.write(&mut len, &second, &[], CHUNK, alloc);
        let (start, snap, range) = tail.snapshot(len).unwrap();
        assert_eq!((start, range.clone()), (CHUNK, 0..8192));
        let all = [first, during, second].concat();
        assert_eq!(&snap.0[..(len - CHUNK) as usize], &all[CHUNK as usize..]);
        tail.snapshot_written(start, len);
        assert!(tail.snapshot(len).is_none());
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
