//! The cleaner's progress on disk: `cleaner-offset-checkpoint`, the log's
//! first dirty offset, so the first clean after a restart neither rewrites
//! a log that is already clean nor counts its clean part as dirty.
//!
//! Kafka keeps one such file per log directory; Strom keeps one per
//! partition (a partition belongs to one shard, which alone writes it), in
//! Kafka's text format with one entry: `0\n1\n<topic> <partition> <offset>\n`.
//! It is written aside and renamed (`replace_file`), after a clean's swaps
//! are all on disk, and lowered before a truncation cuts below it.
//!
//! Trust on open: the offset is used only when the file parses whole and
//! the offset lies within `[0, log end]`. A missing, torn or corrupt file,
//! or one ahead of the log (a truncation it did not see), is ignored: every
//! closed segment counts as dirty and the next clean starts from the log
//! start, which is always correct (it only costs a rewrite). A stale file
//! (behind the log's real progress) is correct too: the segments past it
//! are cleaned again.

use std::path::Path;

use crate::io::{read_whole_file, replace_file, Storage};

pub(crate) const CLEANER_CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";
pub(crate) const CLEANER_CHECKPOINT_TMP_FILE: &str = "cleaner-offset-checkpoint.tmp";
/// Kafka's checkpoint file version.
const VERSION: &str = "0";
/// More than any topic name (249 bytes), partition and offset need.
const CHECKPOINT_MAX_BYTES: usize = 512;

/// The topic and partition a partition directory `<topic>-<partition>` is
/// named for (the whole name and 0 when it is not so named).
fn topic_partition(dir: &Path) -> (String, i32) {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match name.rsplit_once('-') {
        Some((topic, p)) if !topic.is_empty() => match p.parse::<i32>() {
            Ok(p) => (topic.to_string(), p),
            Err(_) => (name, 0),
        },
        _ => (name, 0),
    }
}

/// The checkpoint's text for `first_dirty` of the log in `dir`.
pub(super) fn encode(dir: &Path, first_dirty: i64) -> String {
    let (topic, partition) = topic_partition(dir);
    format!("{VERSION}\n1\n{topic} {partition} {first_dirty}\n")
}

/// The offset of a checkpoint text, if it parses whole: version 0, one
/// entry of three fields, a non-negative offset.
pub(super) fn decode(text: &str) -> Option<i64> {
    let mut lines = text.lines();
    if lines.next()? != VERSION || lines.next()? != "1" {
        return None;
    }
    let mut fields = lines.next()?.split(' ');
    let (_topic, partition, offset) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || lines.next().is_some() || !text.ends_with('\n') {
        return None;
    }
    partition.parse::<i32>().ok()?;
    offset.parse::<i64>().ok().filter(|o| *o >= 0)
}

/// The first dirty offset saved for the log in `dir`, if the file is there,
/// whole, and not past `log_end_offset` (see the module doc).
pub(crate) async fn load<S: Storage>(storage: &S, dir: &Path, log_end_offset: i64) -> Option<i64> {
    let path = dir.join(CLEANER_CHECKPOINT_FILE);
    match storage.exists(&path).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cleaner checkpoint unreadable; the log counts as dirty");
            return None;
        }
    }
    let bytes = match read_whole_file(storage, &path).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cleaner checkpoint unreadable; the log counts as dirty");
            return None;
        }
    };
    let offset = Some(bytes.as_ref())
        .filter(|b| b.len() <= CHECKPOINT_MAX_BYTES)
        .and_then(|b| std::str::from_utf8(b).ok())
        .and_then(decode);
    match offset {
        Some(o) if o <= log_end_offset => Some(o),
        Some(o) => {
            tracing::warn!(path = %path.display(), offset = o, log_end_offset, "cleaner checkpoint past the log end; the log counts as dirty");
            None
        }
        None => {
            tracing::warn!(path = %path.display(), "cleaner checkpoint does not parse; the log counts as dirty");
            None
        }
    }
}

/// Writes `first_dirty` as the checkpoint of the log in `dir`, whole or not
/// at all.
pub(crate) async fn save<S: Storage>(
    storage: &S,
    dir: &Path,
    first_dirty: i64,
) -> std::io::Result<()> {
    replace_file(
        storage,
        dir,
        CLEANER_CHECKPOINT_TMP_FILE,
        CLEANER_CHECKPOINT_FILE,
        encode(dir, first_dirty).as_bytes(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_in_kafkas_format() {
        let dir = Path::new("/data/my-topic-7");
        let text = encode(dir, 1234);
        assert_eq!(text, "0\n1\nmy-topic 7 1234\n");
        assert_eq!(decode(&text), Some(1234));
        assert_eq!(
            encode(Path::new("/data/odd"), 5),
            "0\n1\nodd 0 5\n",
            "a directory not named <topic>-<partition>"
        );
    }

    #[test]
    fn refuses_what_does_not_parse_whole() {
        for bad in [
            "",
            "0\n",
            "0\n1\n",
            "1\n1\nt 0 5\n",
            "0\n2\nt 0 5\n",
            "0\n1\nt 0 5",
            "0\n1\nt 0 -5\n",
            "0\n1\nt x 5\n",
            "0\n1\nt 0 5 6\n",
            "0\n1\nt 0 5\nt 1 6\n",
            "0\n1\nt 0 99999999999999999999\n",
        ] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
