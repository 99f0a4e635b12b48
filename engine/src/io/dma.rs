//! Production storage: glommio `DmaFile` (O_DIRECT over io_uring).
//!
//! Directory operations are rare (segment roll, retention, open) and use
//! blocking `std::fs` calls.

use std::io;
use std::path::Path;
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::budget::{PreallocBudget, PREALLOCATE_BUDGET_BYTES};
use super::{IoBuf, Storage, StorageFile};

/// Storage on the local file system with O_DIRECT files. Must be used inside
/// a glommio executor.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaStorage;

impl IoBuf for DmaBuffer {
    fn as_slice(&self) -> &[u8] {
        self.as_bytes()
    }
    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.as_bytes_mut()
    }
    fn base_ptr(&self) -> *mut u8 {
        // glommio's allocation (`SysAlloc` or a registered-buffer slab) is
        // reached through a raw pointer, writable.
        self.as_ptr().cast_mut()
    }
    fn recycle(self) {
        if self.len() != POOL_BUF_BYTES {
            return;
        }
        POOL.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL_MAX_BYTES / POOL_BUF_BYTES {
                p.push(self);
            }
        });
    }
}

/// A completed O_DIRECT read, lent out without a copy (`lend.rs`).
struct ReadBuf(glommio::io::ReadResult);

// SAFETY: a `ReadResult` views the read's DMA buffer, a heap allocation it
// keeps alive and that nothing writes once the read has completed.
//
// A lent read lives longer than it did when it was copied at once. That
// matters where glommio reuses a live read for a later read of the same
// range (a file with an I/O scheduler attached: its `ImmutableFile`), which
// could serve bytes a truncation has since rewritten. The log's `DmaFile`s
// have no scheduler, so every read goes to the file.
unsafe impl super::lend::Stable for ReadBuf {
    fn stable_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn to_io<T: std::fmt::Debug>(e: glommio::GlommioError<T>) -> io::Error {
    io::Error::from(e)
}

/// Freed chunk buffers (`CHUNK_BYTES` long) of this thread (shard), shared
/// by all its logs. A fresh 1 MiB buffer costs 256 page faults when first
/// written, and the system allocator returns freed ones to the kernel:
/// before this pool, faulting in new buffers took about a third of the
/// engine's CPU in `strom-bench engine`.
/// Holds at most `POOL_MAX_BYTES`: a busy log's unwritten bytes
/// (MAX_UNWRITTEN_BYTES, 128 MiB), its hot cache and some slack.
pub const POOL_MAX_BYTES: usize = 160 << 20;
const POOL_BUF_BYTES: usize = super::CHUNK_BYTES as usize;

thread_local! {
    static POOL: std::cell::RefCell<Vec<DmaBuffer>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl StorageFile for DmaFile {
    type Buf = DmaBuffer;

    fn alloc_buf(&self, len: usize) -> DmaBuffer {
        let pooled = if len == POOL_BUF_BYTES {
            POOL.with(|p| p.borrow_mut().pop())
        } else {
            None
        };
        pooled.unwrap_or_else(|| self.alloc_dma_buffer(len))
    }

    fn recycle_buf(&self, buf: DmaBuffer) {
        buf.recycle();
    }

    async fn write_range_at(
        &self,
        buf: Rc<DmaBuffer>,
        range: std::ops::Range<usize>,
        pos: u64,
    ) -> io::Result<()> {
        let want = range.len();
        if range.end > buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("write range {range:?} outside a {}-byte buffer", buf.len()),
            ));
        }
        let n = self
            .write_rc_range_at(buf, range, pos)
            .await
            .map_err(to_io)?;
        if n != want {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {want} bytes"),
            ));
        }
        Ok(())
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        let aligned = (pos | len as u64) & (super::ALIGN_BYTES - 1) == 0;
        let r = if aligned {
            DmaFile::read_at_aligned(self, pos, len).await
        } else {
            DmaFile::read_at(self, pos, len).await
        }
        .map_err(|e| {
            let e = to_io(e);
            io::Error::new(e.kind(), format!("read of {len} bytes at {pos}: {e}"))
        })?;
        Ok(super::lend::lend(ReadBuf(r), 0, len))
    }

    async fn fdatasync(&self) -> io::Result<()> {
        DmaFile::fdatasync(self).await.map_err(to_io)
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.pre_allocate(len, false).await.map_err(to_io)
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        DmaFile::truncate(self, len).await.map_err(to_io)
    }

    /// fstat on the descriptor. glommio's `file_size` stats the path the
    /// file was opened at, which a renamed file no longer has (the spare
    /// segment, renamed into place when the log rolls): the idle trim of
    /// such a segment failed on every tick.
    async fn len(&self) -> io::Result<u64> {
        use std::os::fd::AsRawFd;
        let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
        // SAFETY: the descriptor stays open while `self` lives, and `st`
        // points to writable memory of the struct's size, which fstat
        // fills completely when it returns 0.
        let rc = unsafe { libc::fstat(self.as_raw_fd(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fstat returned 0, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        Ok(u64::try_from(st.st_size).unwrap_or(0))
    }
}

/// The preallocation budget of every log on `DmaStorage` in this process
/// (all shards share it).
static PREALLOCATION_BUDGET: PreallocBudget = PreallocBudget::new(PREALLOCATE_BUDGET_BYTES);

/// The process-wide preallocation budget, to read or to change its cap.
pub fn preallocation_budget() -> &'static PreallocBudget {
    &PREALLOCATION_BUDGET
}

/// glommio decides once per device (per thread) whether it supports io_uring
/// polled I/O by reading the first block of the first `DmaFile` opened on it.
/// When that file is empty the probe read "succeeds" without touching the
/// device, glommio marks the device pollable, and later reads fail with
/// EOPNOTSUPP on devices without poll queues (like this machine's virtio
/// disk). Opening a write-only probe file first makes the probe read fail
/// with EBADF, which glommio records as "no polled I/O" for the device (and
/// logs once).
async fn prime_iopoll_probe(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    thread_local! {
        static PROBED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let dev = std::fs::metadata(dir)?.dev();
    if PROBED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let probe = dir.join(format!(".iopoll-probe-{}", std::process::id()));
    let opened = OpenOptions::new()
        .write(true)
        .create(true)
        .dma_open(&probe)
        .await
        .map_err(to_io);
    let _ = std::fs::remove_file(&probe);
    drop(opened?);
    PROBED.with(|p| p.borrow_mut().push(dev));
    Ok(())
}

impl Storage for DmaStorage {
    type File = DmaFile;

    async fn open(&self, path: &Path) -> io::Result<DmaFile> {
        if let Some(dir) = path.parent() {
            prime_iopoll_probe(dir).await?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .dma_open(path)
            .await
            .map_err(to_io)
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(name.to_string());
            }
        }
        Ok(out)
    }

    /// On the blocking thread pool: unlinking a file nothing holds open
    /// frees its blocks there and then, which on a file system mounted with
    /// `discard` (and without a journal) waits for the device's discards.
    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = path.to_path_buf();
        off_the_reactor(move || match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r,
        })
        .await
    }

    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let dir = dir.to_path_buf();
        off_the_reactor(move || std::fs::remove_dir_all(dir)).await
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        off_the_reactor(move || std::fs::rename(from, to)).await
    }

    /// On the executor's blocking thread pool: an fsync of a directory
    /// waits for a journal commit (milliseconds), and on the shard's own
    /// thread it stalled every partition of the shard meanwhile (a recovery
    /// point's write cost 10% of max-rate throughput that way).
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let dir = dir.to_path_buf();
        off_the_reactor(move || std::fs::File::open(dir)?.sync_all()).await
    }

    fn free_bytes(&self, dir: &Path) -> io::Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
        // SAFETY: `path` is a NUL-terminated string that outlives the call,
        // and `st` points to writable memory of the struct's size, which
        // statvfs fills completely when it returns 0.
        let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: statvfs returned 0, so it initialised `st`.
        let st = unsafe { st.assume_init() };
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    /// The last close of an unlinked file frees its blocks, in the thread
    /// that closes it: the shard's own, in `io_uring_enter`, for a dropped
    /// `DmaFile`. On this machine's `discard`-mounted ext4 that waited for
    /// the device's discards (`blkdev_issue_discard` under `__fput`), and
    /// every request of the shard waited with it: a cleaner swapping 16 MiB
    /// segments lifted produce p50 from 4 to 97 ms (results/compaction).
    /// So a retired file is cut down to nothing first, in steps, on the
    /// blocking thread pool, once its last reader has let go of it; then
    /// its close frees nothing.
    fn retire(&self, file: Rc<DmaFile>) {
        glommio::spawn_local(release_blocks(file)).detach();
    }

    fn preallocation_budget(&self) -> &PreallocBudget {
        &PREALLOCATION_BUDGET
    }
}

/// How long a retired file waits for its readers before it is simply
/// dropped (then its last reader's close frees the blocks).
const RETIRE_WAIT: std::time::Duration = std::time::Duration::from_secs(60);
/// How often a retired file looks whether its readers are done.
const RETIRE_POLL: std::time::Duration = std::time::Duration::from_millis(100);
/// A retired file is cut by this much at a time, so that the blocking
/// pool's other work (renames, directory syncs) passes in between.
const RETIRE_STEP_BYTES: u64 = 8 << 20;

/// See `DmaStorage::retire`.
async fn release_blocks(file: Rc<DmaFile>) {
    let started = std::time::Instant::now();
    while Rc::strong_count(&file) > 1 {
        if started.elapsed() >= RETIRE_WAIT {
            return;
        }
        glommio::timer::sleep(RETIRE_POLL).await;
    }
    let Ok(mut len) = StorageFile::len(&*file).await else {
        return;
    };
    while len > 0 {
        len = len.saturating_sub(RETIRE_STEP_BYTES);
        if let Err(e) = file.truncate(len).await {
            tracing::warn!(error = %e, "cutting a retired segment file failed; its close frees the rest");
            return;
        }
    }
}

/// Runs a blocking file-system call on the executor's blocking thread pool,
/// so the shard's reactor goes on meanwhile.
async fn off_the_reactor<R: Send + 'static>(
    f: impl FnOnce() -> io::Result<R> + Send + 'static,
) -> io::Result<R> {
    glommio::executor().spawn_blocking(f).await
}
