//! The files of a partition's directory other than segment data: the spare
//! segment's name and the index files, written aside and renamed. Imports
//! nothing from the rest of the log but segment naming, so the log's handle
//! (`mod.rs`), roll and recovery can all use it without an import circle.

use std::path::Path;

use super::segment::segment_name;
use crate::io::Storage;

/// The next segment's file, created and preallocated one step in the
/// background while the active segment of a fast-writing partition fills
/// (see `prealloc.rs`), and renamed to `<base>.log` at the roll: the new
/// segment then starts with preallocated space (each extension drains the
/// write queue, see `flush.rs`), and the roll creates no file. A leftover
/// one is removed when the log opens; an idle log removes its spare.
pub(super) const SPARE_SEGMENT_FILE: &str = ".next-segment";

/// Writes a segment's `.index` and `.timeindex`, each under a temporary name
/// renamed when complete: an index file that exists is whole.
pub(super) async fn write_index_files<S: Storage>(
    storage: &S,
    dir: &Path,
    base: i64,
    index_bytes: &[u8],
    time_bytes: &[u8],
) -> std::io::Result<()> {
    for (ext, bytes) in [("index", index_bytes), ("timeindex", time_bytes)] {
        let tmp = dir.join(format!("{}.tmp", segment_name(base, ext)));
        crate::io::write_whole_file(storage, &tmp, bytes).await?;
        storage
            .rename(&tmp, &dir.join(segment_name(base, ext)))
            .await?;
    }
    Ok(())
}

/// Writes index files under the given names as they are (the log cleaner's
/// files written aside, renamed later by its swap).
pub(super) async fn write_index_files_as<S: Storage>(
    storage: &S,
    dir: &Path,
    index_name: &str,
    time_name: &str,
    index_bytes: &[u8],
    time_bytes: &[u8],
) -> std::io::Result<()> {
    crate::io::write_whole_file(storage, &dir.join(index_name), index_bytes).await?;
    crate::io::write_whole_file(storage, &dir.join(time_name), time_bytes).await
}
