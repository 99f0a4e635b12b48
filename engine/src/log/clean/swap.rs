//! How a cleaned segment replaces the segments it was made from, on disk,
//! so that a crash at any point leaves a readable, correct log.
//!
//! A clean of the segments with base offsets in `[base, end)` (one or more
//! whole closed segments; `end` is the base of the segment after them):
//! 1. the cleaned data and its indexes are written to
//!    `<base>.log.cleaned`, `<base>.index.cleaned`, `<base>.timeindex.cleaned`
//!    and fdatasynced;
//! 2. the indexes are renamed to `<base>.index.swap` and
//!    `<base>.timeindex.swap`, then the data to `<base>.<end>.log.swap`:
//!    that rename is the commit point, and the directory is synced;
//! 3. the old segments' files in `[base, end)` are removed, the swap files
//!    renamed to `<base>.index`, `<base>.timeindex` and `<base>.log`, and the
//!    directory synced.
//!
//! On open, before the segments are read ([`recover_swaps`]): `.cleaned`
//! files are removed (a clean that never committed: the old segments are
//! whole), every `<base>.<end>.log.swap` has step 3 redone (it is
//! idempotent), and index `.swap` files without a data swap are removed.

use std::path::Path;

use crate::io::Storage;
use crate::log::segment::segment_name;

const CLEANED: &str = "cleaned";
const SWAP: &str = "swap";

/// The name of a cleaned file of the clean starting at `base`.
pub(super) fn cleaned_name(base: i64, ext: &str) -> String {
    format!("{}.{CLEANED}", segment_name(base, ext))
}

fn log_swap_name(base: i64, end: i64) -> String {
    format!("{base:020}.{end:020}.log.{SWAP}")
}

fn index_swap_name(base: i64, ext: &str) -> String {
    format!("{}.{SWAP}", segment_name(base, ext))
}

/// Step 2: commits the cleaned files of the clean of `[base, end)`.
pub(super) async fn commit<S: Storage>(
    storage: &S,
    dir: &Path,
    base: i64,
    end: i64,
) -> std::io::Result<()> {
    for ext in ["index", "timeindex"] {
        storage
            .rename(
                &dir.join(cleaned_name(base, ext)),
                &dir.join(index_swap_name(base, ext)),
            )
            .await?;
    }
    storage
        .rename(
            &dir.join(cleaned_name(base, "log")),
            &dir.join(log_swap_name(base, end)),
        )
        .await?;
    storage.sync_dir(dir).await
}

/// Step 3: puts the committed clean of `[base, end)` in place of the
/// segments it was made from. Safe to repeat after a crash at any point.
pub(super) async fn finish<S: Storage>(
    storage: &S,
    dir: &Path,
    base: i64,
    end: i64,
) -> std::io::Result<()> {
    let names = storage.list_dir(dir).await?;
    for n in &names {
        let Some((stem, ext)) = n.split_once('.') else {
            continue;
        };
        if stem.len() != 20 || !matches!(ext, "log" | "index" | "timeindex") {
            continue;
        }
        if let Ok(b) = stem.parse::<i64>() {
            if b > base && b < end {
                storage.remove_file(&dir.join(n)).await?;
            }
        }
    }
    for ext in ["index", "timeindex"] {
        let swap = dir.join(index_swap_name(base, ext));
        if storage.exists(&swap).await? {
            storage
                .rename(&swap, &dir.join(segment_name(base, ext)))
                .await?;
        }
    }
    storage
        .rename(
            &dir.join(log_swap_name(base, end)),
            &dir.join(segment_name(base, "log")),
        )
        .await?;
    storage.sync_dir(dir).await
}

/// Removes a clean's cleaned files (a clean given up before its commit).
pub(super) async fn discard<S: Storage>(storage: &S, dir: &Path, base: i64) {
    for ext in ["log", "index", "timeindex"] {
        let _ = storage
            .remove_file(&dir.join(cleaned_name(base, ext)))
            .await;
    }
}

/// On open: finishes committed cleans and removes uncommitted ones (see the
/// module doc). Returns how many committed cleans it finished.
pub(crate) async fn recover_swaps<S: Storage>(storage: &S, dir: &Path) -> std::io::Result<usize> {
    let names = storage.list_dir(dir).await?;
    let mut finished = 0usize;
    for n in &names {
        if n.ends_with(&format!(".{CLEANED}")) {
            storage.remove_file(&dir.join(n)).await?;
        }
    }
    let mut committed = Vec::new();
    for n in &names {
        let Some(stem) = n.strip_suffix(&format!(".log.{SWAP}")) else {
            continue;
        };
        let Some((b, e)) = stem.split_once('.') else {
            continue;
        };
        if let (Ok(b), Ok(e)) = (b.parse::<i64>(), e.parse::<i64>()) {
            committed.push((b, e));
        }
    }
    for &(b, e) in &committed {
        finish(storage, dir, b, e).await?;
        finished = finished.saturating_add(1);
        tracing::info!(dir = %dir.display(), base_offset = b, end_offset = e, "finished a committed clean after a crash");
    }
    // Index swaps of a clean that did not commit.
    for n in storage.list_dir(dir).await? {
        if n.ends_with(&format!(".index.{SWAP}")) || n.ends_with(&format!(".timeindex.{SWAP}")) {
            storage.remove_file(&dir.join(&n)).await?;
        }
    }
    if !names.is_empty() {
        storage.sync_dir(dir).await?;
    }
    Ok(finished)
}
