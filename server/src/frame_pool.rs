//! Warm buffers for large request frames.
//!
//! A producer sends frames of hundreds of KiB to a few MiB, several in
//! flight per connection. Giving each its own fresh allocation costs a page
//! fault per 4 KiB and a memset before the bytes even arrive. The pool keeps
//! buffers whose pages are already mapped (and initialized, so a read can
//! go straight into them): a frame borrows one, and when the last `Bytes`
//! cut from it is dropped — on whichever shard that happens — the buffer
//! goes back. Idle memory is bounded by [`IDLE_BYTES_MAX`].

use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Frames at least this large are read into pooled buffers; smaller ones
/// are cheap to allocate.
pub const POOLED_FRAME_BYTES_MIN: usize = 64 << 10;

/// Most bytes a pool keeps in buffers nobody uses.
pub const IDLE_BYTES_MAX: usize = 64 << 20;

#[derive(Default)]
struct Idle {
    buffers: Vec<Vec<u8>>,
    bytes: usize,
}

/// A shard's pool of frame buffers. Cloning shares the pool.
#[derive(Clone, Default)]
pub struct FramePool {
    idle: Arc<Mutex<Idle>>,
}

/// A buffer borrowed from the pool, returned when dropped.
pub struct PooledBuffer {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<Mutex<Idle>>,
}

impl FramePool {
    /// A buffer of exactly `len` initialized bytes (their content is
    /// whatever the previous frame left).
    pub fn take(&self, len: usize) -> PooledBuffer {
        let reused = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            // The smallest idle buffer that fits; the list is short.
            let best = idle
                .buffers
                .iter()
                .enumerate()
                .filter(|(_, b)| b.len() >= len)
                .min_by_key(|(_, b)| b.len())
                .map(|(i, _)| i);
            best.map(|i| {
                let b = idle.buffers.swap_remove(i);
                idle.bytes = idle.bytes.saturating_sub(b.len());
                b
            })
        };
        // Power-of-two sizes let frames of similar sizes share buffers.
        let buf = reused.unwrap_or_else(|| vec![0u8; len.next_power_of_two()]);
        PooledBuffer {
            buf,
            len,
            pool: self.idle.clone(),
        }
    }

    /// Bytes held by idle buffers.
    pub fn idle_bytes(&self) -> usize {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

impl PooledBuffer {
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // `len` <= the buffer's length: `take` gives a buffer at least `len` long.
        self.buf.get_mut(..self.len).unwrap_or_default()
    }

    /// Shares the buffer as `Bytes`; it returns to the pool when the last
    /// clone or slice of them is dropped.
    pub fn freeze(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for PooledBuffer {
    fn as_ref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut idle = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        let kept = idle.bytes.saturating_add(buf.len());
        if kept <= IDLE_BYTES_MAX {
            idle.bytes = kept;
            idle.buffers.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_frame_returns_its_buffer_for_the_next_one() {
        let pool = FramePool::default();
        let mut b = pool.take(100_000);
        b.as_mut_slice().fill(7);
        let ptr = b.as_ref().as_ptr();
        let frame = b.freeze();
        let slice = frame.slice(10..20);
        drop(frame);
        assert_eq!(pool.idle_bytes(), 0, "a live slice keeps the buffer");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.idle_bytes(), 131_072);
        let again = pool.take(70_000);
        assert_eq!(again.as_ref().as_ptr(), ptr);
        assert_eq!(again.as_ref().len(), 70_000);
        assert_eq!(pool.idle_bytes(), 0);
    }

    #[test]
    fn idle_memory_is_bounded() {
        let pool = FramePool::default();
        let frames: Vec<_> = (0..(IDLE_BYTES_MAX >> 20) + 8)
            .map(|_| pool.take(1 << 20))
            .collect();
        drop(frames);
        assert_eq!(pool.idle_bytes(), IDLE_BYTES_MAX);
    }

    #[test]
    fn a_frame_bigger_than_every_idle_buffer_gets_a_new_one() {
        let pool = FramePool::default();
        drop(pool.take(1 << 16));
        let big = pool.take(1 << 20);
        assert_eq!(big.as_ref().len(), 1 << 20);
        assert_eq!(pool.idle_bytes(), 1 << 16, "the small buffer stays idle");
    }
}
