//! A segment file that has left the log is retired (`Storage::retire`): on
//! the real storage it is cut to nothing on the blocking thread pool once
//! its last reader lets go, so its final close, on the shard's thread, has
//! no blocks to free (freeing them waited for the device's discards and
//! stalled the shard; results/compaction). Real disk: glommio `DmaFile` on
//! a temporary directory.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use strom_engine::io::dma::DmaStorage;
use strom_engine::io::{IoBuf, Storage, StorageFile};

const MIB: u64 = 1 << 20;

/// The size of the file behind a descriptor of our own.
fn size_of_fd(fd: i32) -> u64 {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is a descriptor this test opened and has not closed,
    // and `st` points to writable memory of the struct's size.
    let rc = unsafe { libc::fstat(fd, st.as_mut_ptr()) };
    assert_eq!(rc, 0, "fstat: {}", std::io::Error::last_os_error());
    // SAFETY: fstat returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    u64::try_from(st.st_size).unwrap()
}

#[test]
fn a_retired_file_is_cut_to_nothing_once_its_last_reader_lets_go() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("00000000000000000000.log");
    let ex = glommio::LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    ex.run(async move {
        let storage = DmaStorage;
        let file = Rc::new(storage.open(&path).await.unwrap());
        // More than one step of the cut.
        StorageFile::preallocate(&*file, 20 * MIB).await.unwrap();
        let mut buf = StorageFile::alloc_buf(&*file, MIB as usize);
        IoBuf::as_mut_slice(&mut buf).fill(b'x');
        StorageFile::write_at(&*file, Rc::new(buf), 0)
            .await
            .unwrap();
        // A descriptor of our own, to watch the file after the log's goes.
        // SAFETY: the descriptor is open while `file` lives.
        let watch = unsafe { libc::dup(file.as_raw_fd()) };
        assert!(watch >= 0);
        storage.remove_file(&path).await.unwrap();
        assert!(!path.exists());

        let reader = file.clone();
        storage.retire(file);
        // A reader still holds it: nothing is cut under it.
        glommio::timer::sleep(Duration::from_millis(300)).await;
        assert_eq!(size_of_fd(watch), 20 * MIB);
        let read = StorageFile::read_at(&*reader, 0, 4096).await.unwrap();
        assert_eq!(read.len(), 4096);
        assert!(read.iter().all(|&b| b == b'x'));

        drop(reader);
        let deadline = Instant::now() + Duration::from_secs(10);
        while size_of_fd(watch) > 0 {
            assert!(
                Instant::now() < deadline,
                "the retired file still holds {} bytes",
                size_of_fd(watch)
            );
            glommio::timer::sleep(Duration::from_millis(20)).await;
        }
        // SAFETY: `watch` is ours and closed once.
        unsafe { libc::close(watch) };
    });
}
