//! The I/O seam: the few file operations the log needs, as two small traits.
//!
//! The log's decisions (what to write where, when to sync, what to truncate)
//! are plain code over [`Storage`] and [`StorageFile`]. Production uses
//! [`dma::DmaStorage`] (glommio `DmaFile`, O_DIRECT, io_uring); tests use
//! `sim::SimStorage`, an in-memory file system driven by a seed that tears
//! writes, loses unsynced data on a crash, fails fdatasync, flips bits and
//! runs out of space. The simulator is compiled only for tests (the
//! `test-util` feature, which the engine's own tests, the server's tests and
//! the bench harness's tests turn on as dev-dependencies).
//!
//! Everything is single-threaded (`!Send`), like the shard that owns a log.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

pub use budget::PreallocBudget;

pub mod budget;
pub mod dma;
pub mod lend;
#[cfg(any(test, feature = "test-util"))]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "test-only code (cfg(test) or the test-util feature), never in the broker"
)]
pub mod sim;

/// O_DIRECT alignment of positions, lengths and buffers, in bytes.
pub const ALIGN_BYTES: u64 = 4096;
/// Largest tail buffer / chunk: the unit of an O_DIRECT log write. Here
/// rather than in `log` because the DMA buffer pool is sized by it, and `io`
/// imports nothing from the log.
pub const CHUNK_BYTES: u64 = 1 << 20;

pub fn align_down(v: u64) -> u64 {
    v & !(ALIGN_BYTES - 1)
}

pub fn align_up(v: u64) -> u64 {
    // Saturates at the last aligned u64 (file positions never get there).
    v.saturating_add(ALIGN_BYTES - 1) & !(ALIGN_BYTES - 1)
}

/// A buffer suitable for an O_DIRECT write: 4096-aligned in memory, with a
/// length that is a multiple of 4096 when written.
pub trait IoBuf: 'static {
    fn as_slice(&self) -> &[u8];
    fn as_mut_slice(&mut self) -> &mut [u8];
    /// The first byte, writable: for copying into a buffer that is shared
    /// (an `Rc`) with an O_DIRECT write of another part of it in flight (the
    /// active segment's tail buffer, `log/tail.rs`). The memory is a heap
    /// allocation behind a raw pointer, not part of `Self`.
    fn base_ptr(&self) -> *mut u8;
    /// Done with: keep it for a later allocation of this thread, or drop it.
    fn recycle(self)
    where
        Self: Sized,
    {
    }
}

/// One open file.
#[allow(async_fn_in_trait, clippy::len_without_is_empty)]
pub trait StorageFile: 'static {
    type Buf: IoBuf;
    /// Allocates an aligned buffer of `len` bytes (a multiple of 4096).
    fn alloc_buf(&self, len: usize) -> Self::Buf;
    /// Takes back a buffer the caller is done with, for a later `alloc_buf`
    /// to reuse. The default drops it.
    fn recycle_buf(&self, buf: Self::Buf) {
        drop(buf);
    }
    /// Writes the whole buffer at `pos` (aligned). A short write is an error.
    async fn write_at(&self, buf: Rc<Self::Buf>, pos: u64) -> io::Result<()> {
        let len = buf.as_slice().len();
        self.write_range_at(buf, 0..len, pos).await
    }
    /// Writes bytes `range` of the buffer at `pos` (the range's start and
    /// length, and `pos`, aligned), without copying them out; the `Rc` keeps
    /// the buffer alive until the write completes. A short write is an
    /// error.
    async fn write_range_at(
        &self,
        buf: Rc<Self::Buf>,
        range: std::ops::Range<usize>,
        pos: u64,
    ) -> io::Result<()>;
    /// Reads up to `len` bytes at `pos` (any alignment); short at end of file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes>;
    async fn fdatasync(&self) -> io::Result<()>;
    /// Allocates blocks up to `len` bytes; the file length becomes at least `len`.
    async fn preallocate(&self, len: u64) -> io::Result<()>;
    async fn truncate(&self, len: u64) -> io::Result<()>;
    async fn len(&self) -> io::Result<u64>;
}

/// A file system: opens files and changes directories.
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    type File: StorageFile;
    /// Opens `path` for reading and writing, creating it when missing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    async fn exists(&self, path: &Path) -> io::Result<bool>;
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// File names (not paths) in `dir`.
    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>>;
    async fn remove_file(&self, path: &Path) -> io::Result<()>;
    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()>;
    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes creations, removals and renames in `dir` durable.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Bytes free for an unprivileged writer on the file system of `dir`.
    /// A plain system call (statvfs), not worth a trip through io_uring.
    fn free_bytes(&self, dir: &Path) -> io::Result<u64>;
    /// The bound on what the logs on this storage preallocate ahead of
    /// their data (see `budget`).
    fn preallocation_budget(&self) -> &PreallocBudget;
    /// Takes a file that has left the log: it is unlinked (or its
    /// directory is going), and the log never reads it again, though a
    /// reader may still hold it. The default drops it. See `DmaStorage`'s:
    /// freeing a file's blocks can stall the thread that does it.
    fn retire(&self, file: Rc<Self::File>) {
        drop(file);
    }
}

/// Replaces the file `name` in `dir` with `data`, whole or not at all:
/// written to `tmp_name` beside it (synced), renamed over it, the
/// directory synced.
pub async fn replace_file<S: Storage>(
    storage: &S,
    dir: &Path,
    tmp_name: &str,
    name: &str,
    data: &[u8],
) -> io::Result<()> {
    let tmp = dir.join(tmp_name);
    write_whole_file(storage, &tmp, data).await?;
    storage.rename(&tmp, &dir.join(name)).await?;
    storage.sync_dir(dir).await
}

/// Writes `data` as the whole content of the file at `path` (aligned write,
/// then truncate to the exact length, then fdatasync).
pub async fn write_whole_file<S: Storage>(storage: &S, path: &Path, data: &[u8]) -> io::Result<()> {
    let file = write_whole_file_unsynced_inner(storage, path, data).await?;
    file.fdatasync().await
}

/// [`write_whole_file`] without the fdatasync: for files whose loss or
/// tearing by a crash is detected (a CRC) and costs nothing but time.
pub async fn write_whole_file_unsynced<S: Storage>(
    storage: &S,
    path: &Path,
    data: &[u8],
) -> io::Result<()> {
    write_whole_file_unsynced_inner(storage, path, data)
        .await
        .map(drop)
}

async fn write_whole_file_unsynced_inner<S: Storage>(
    storage: &S,
    path: &Path,
    data: &[u8],
) -> io::Result<S::File> {
    let file = storage.open(path).await?;
    let padded = align_up(data.len() as u64).max(ALIGN_BYTES) as usize;
    let mut buf = file.alloc_buf(padded);
    let (head, tail) = buf.as_mut_slice().split_at_mut(data.len());
    head.copy_from_slice(data);
    tail.fill(0);
    if !data.is_empty() {
        file.write_at(Rc::new(buf), 0).await?;
    }
    file.truncate(data.len() as u64).await?;
    Ok(file)
}

/// Reads the whole content of the file at `path`.
/// A missing file is `NotFound` (and is not created: `open` would).
pub async fn read_whole_file<S: Storage>(storage: &S, path: &Path) -> io::Result<Bytes> {
    if !storage.exists(path).await? {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{} does not exist", path.display()),
        ));
    }
    let file = storage.open(path).await?;
    let len = file.len().await?;
    if len == 0 {
        return Ok(Bytes::new());
    }
    file.read_at(0, len as usize).await
}

pub fn join(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
