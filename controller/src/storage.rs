//! The Raft log on disk, behind raft-rs's `Storage` trait.
//!
//! Files in the controller's directory (`<data-dir>/__cluster_metadata/`):
//! - `raft.log`: entries appended in frames `len:u32 LE, crc32c:u32 LE,
//!   protobuf Entry`, fdatasync'd before raft-rs is told they are stored.
//!   A frame whose index is at or below an earlier one's overwrites the log
//!   from there (Raft truncates a follower's conflicting suffix that way).
//!   Loading stops at the first torn or corrupt frame and cuts the file
//!   there: only an unsynced tail can be torn.
//! - `hard-state` and `snapshot`: protobuf HardState and Snapshot (the
//!   snapshot's data is the `ClusterImage` as JSON), each framed like a log
//!   entry and replaced atomically (tmp, fsync, rename, fsync dir).
//!
//! A snapshot bounds the log: once it is stored, the entries it covers are
//! dropped from memory and `raft.log` is rewritten without them (again
//! tmp, fsync, rename). A crash between the two leaves entries the snapshot
//! covers in the log; loading skips them.
//!
//! Reads are served by raft-rs's `MemStorage` holding the same entries.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::{MemStorage, Storage};
use raft::{GetEntriesContext, RaftState, StorageError};

const LOG_FILE: &str = "raft.log";
const HARD_STATE_FILE: &str = "hard-state";
const SNAPSHOT_FILE: &str = "snapshot";
/// The first configuration's voters (protobuf ConfState), written once.
const VOTERS_FILE: &str = "voters";
/// Frame header: length and CRC32C.
const FRAME_HEADER_BYTES: usize = 8;
/// The largest frame loading accepts; a larger length is corruption.
pub const FRAME_MAX_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("controller log I/O on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("controller file {0} is corrupt")]
    Corrupt(PathBuf),
    #[error("controller.quorum.voters changed from {stored:?} to {given:?}; membership changes are not supported yet")]
    VotersChanged { stored: Vec<u64>, given: Vec<u64> },
    #[error("raft storage: {0}")]
    Raft(#[from] raft::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A durable Raft log.
pub struct DiskStorage {
    dir: PathBuf,
    mem: MemStorage,
    log: File,
    /// The stored snapshot, data included (index 0 when there is none).
    snapshot: Snapshot,
    /// fsync what is written; off only in simulations, where no crash
    /// can take an unsynced write (and 5 ms fsyncs would make a seed run
    /// for minutes).
    sync: bool,
}

impl DiskStorage {
    /// Opens the log in `dir`, or starts one whose first configuration has
    /// `voters` (every node of a new cluster starts from the same one).
    pub fn open(dir: &Path, voters: &[u64]) -> Result<DiskStorage, StoreError> {
        fs::create_dir_all(dir).map_err(io(dir))?;
        let mem = MemStorage::new();
        let snapshot = match read_framed(&dir.join(SNAPSHOT_FILE))? {
            Some(bytes) => Snapshot::parse_from_bytes(&bytes)
                .map_err(|_| StoreError::Corrupt(dir.join(SNAPSHOT_FILE)))?,
            None => Snapshot::default(),
        };
        let first_conf = first_conf_state(dir, voters)?;
        if snapshot.get_metadata().index > 0 {
            mem.wl().apply_snapshot(snapshot.clone())?;
        } else {
            mem.wl().set_conf_state(first_conf);
        }
        let log_path = dir.join(LOG_FILE);
        let entries = load_log(&log_path)?;
        let snapshot_index = snapshot.get_metadata().index;
        let mut last = snapshot_index;
        for e in entries {
            if e.index <= snapshot_index {
                continue;
            }
            if e.index > last.saturating_add(1) {
                // A gap cannot come from this writer: the file is damaged.
                return Err(StoreError::Corrupt(log_path));
            }
            last = e.index;
            mem.wl().append(&[e])?;
        }
        if let Some(bytes) = read_framed(&dir.join(HARD_STATE_FILE))? {
            let hs = HardState::parse_from_bytes(&bytes)
                .map_err(|_| StoreError::Corrupt(dir.join(HARD_STATE_FILE)))?;
            mem.wl().set_hardstate(hs);
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(io(&log_path))?;
        Ok(DiskStorage {
            dir: dir.to_path_buf(),
            mem,
            log,
            snapshot,
            sync: true,
        })
    }

    /// The configuration raft-rs starts from and snapshots carry (set
    /// when a conf change is applied).
    pub fn set_conf_state(&mut self, conf: ConfState) {
        self.mem.wl().set_conf_state(conf);
    }

    /// Turns fsync off: for simulations only.
    pub fn set_sync(&mut self, sync: bool) {
        self.sync = sync;
    }

    /// The stored snapshot (index 0: none).
    pub fn stored_snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Entries from `low` to the last one (the ones above the snapshot).
    pub fn entries_from(&self, low: u64) -> Result<Vec<Entry>, StoreError> {
        let last = self.mem.last_index()?;
        let first = self.mem.first_index()?;
        let low = low.max(first);
        if low > last {
            return Ok(Vec::new());
        }
        Ok(self.mem.entries(
            low,
            last.saturating_add(1),
            None,
            GetEntriesContext::empty(false),
        )?)
    }

    /// Appends entries (possibly overwriting a suffix) and syncs them.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::new();
        for e in entries {
            frame_into(&mut buf, &e.write_to_bytes().map_err(raft::Error::from)?);
        }
        let path = self.dir.join(LOG_FILE);
        self.log.write_all(&buf).map_err(io(&path))?;
        if self.sync {
            self.log.sync_data().map_err(io(&path))?;
        }
        self.mem.wl().append(entries)?;
        Ok(())
    }

    pub fn set_hard_state(&mut self, hs: &HardState) -> Result<(), StoreError> {
        let bytes = hs.write_to_bytes().map_err(raft::Error::from)?;
        replace_file(&self.dir, HARD_STATE_FILE, &bytes, self.sync)?;
        self.mem.wl().set_hardstate(hs.clone());
        Ok(())
    }

    /// Moves the commit index after raft-rs said so in a `LightReady`.
    pub fn set_commit(&mut self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.mem.rl().hard_state().clone();
        hs.commit = commit;
        self.set_hard_state(&hs)
    }

    /// Installs a snapshot received from the leader: every entry goes.
    pub fn apply_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        self.mem.wl().apply_snapshot(snapshot.clone())?;
        self.store_snapshot(snapshot)?;
        let hs = self.mem.rl().hard_state().clone();
        self.set_hard_state(&hs)
    }

    /// Stores a snapshot of this node's own applied state at `index`
    /// (`data`: the image) and drops the entries it covers.
    pub fn compact(&mut self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let term = self.mem.term(index)?;
        let mut snapshot = Snapshot::default();
        snapshot.set_data(data.into());
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.mem.initial_state()?.conf_state);
        self.store_snapshot(snapshot)?;
        self.mem.wl().compact(index)?;
        Ok(())
    }

    /// Writes the snapshot file, then rewrites the log without the entries
    /// it covers.
    fn store_snapshot(&mut self, snapshot: Snapshot) -> Result<(), StoreError> {
        let bytes = snapshot.write_to_bytes().map_err(raft::Error::from)?;
        replace_file(&self.dir, SNAPSHOT_FILE, &bytes, self.sync)?;
        let index = snapshot.get_metadata().index;
        self.snapshot = snapshot;
        let keep = self.entries_from(index.saturating_add(1))?;
        let mut buf = Vec::new();
        for e in &keep {
            frame_into(&mut buf, &e.write_to_bytes().map_err(raft::Error::from)?);
        }
        replace_file_raw(&self.dir, LOG_FILE, &buf, self.sync)?;
        let path = self.dir.join(LOG_FILE);
        self.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        Ok(())
    }

    /// Bytes of the log file (for the size measurement and tests).
    pub fn log_bytes(&self) -> u64 {
        fs::metadata(self.dir.join(LOG_FILE)).map_or(0, |m| m.len())
    }
}

impl Storage for DiskStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.mem.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index == 0
            || self.snapshot.get_metadata().index < request_index
        {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

/// The voters this log started with (written on the first open), checked
/// against the configured ones: the set is static until membership changes
/// go through the log.
fn first_conf_state(dir: &Path, voters: &[u64]) -> Result<ConfState, StoreError> {
    let mut given = voters.to_vec();
    given.sort_unstable();
    match read_framed(&dir.join(VOTERS_FILE))? {
        Some(bytes) => {
            let stored = ConfState::parse_from_bytes(&bytes)
                .map_err(|_| StoreError::Corrupt(dir.join(VOTERS_FILE)))?;
            let mut stored_voters = stored.voters.clone();
            stored_voters.sort_unstable();
            if stored_voters != given {
                return Err(StoreError::VotersChanged {
                    stored: stored_voters,
                    given,
                });
            }
            Ok(stored)
        }
        None => {
            let conf = ConfState::from((given, Vec::new()));
            let bytes = conf.write_to_bytes().map_err(raft::Error::from)?;
            replace_file(dir, VOTERS_FILE, &bytes, true)?;
            Ok(conf)
        }
    }
}

fn frame_into(buf: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Splits `bytes` into frame payloads: the longest valid prefix, and its length.
fn parse_frames(bytes: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while let Some(header) = bytes.get(pos..pos.saturating_add(FRAME_HEADER_BYTES)) {
        let (len, crc) = header.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap_or([0xff; 4])) as usize;
        let crc = u32::from_le_bytes(crc.try_into().unwrap_or([0; 4]));
        if len > FRAME_MAX_BYTES {
            break;
        }
        let start = pos.saturating_add(FRAME_HEADER_BYTES);
        let Some(payload) = bytes.get(start..start.saturating_add(len)) else {
            break;
        };
        if crc32c::crc32c(payload) != crc {
            break;
        }
        out.push(payload);
        pos = start.saturating_add(len);
    }
    (out, pos)
}

/// The log's entries in file order; a torn or corrupt tail is cut off.
fn load_log(path: &Path) -> Result<Vec<Entry>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let (frames, valid) = parse_frames(&bytes);
    let mut entries = Vec::with_capacity(frames.len());
    for f in frames {
        entries.push(Entry::parse_from_bytes(f).map_err(|_| StoreError::Corrupt(path.into()))?);
    }
    if valid < bytes.len() {
        tracing::warn!(
            path = %path.display(),
            cut_bytes = bytes.len().saturating_sub(valid),
            "controller log has a torn tail; cutting it"
        );
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io(path))?;
        f.set_len(valid as u64).map_err(io(path))?;
        f.sync_all().map_err(io(path))?;
    }
    Ok(entries)
}

/// One framed payload from a file replaced atomically, or `None` if absent.
fn read_framed(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut f) => f.read_to_end(&mut bytes).map_err(io(path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    let (frames, valid) = parse_frames(&bytes);
    match frames.as_slice() {
        [one] if valid == bytes.len() => Ok(Some(one.to_vec())),
        _ => Err(StoreError::Corrupt(path.to_path_buf())),
    }
}

fn replace_file(dir: &Path, name: &str, payload: &[u8], sync: bool) -> Result<(), StoreError> {
    let mut buf = Vec::with_capacity(payload.len().saturating_add(FRAME_HEADER_BYTES));
    frame_into(&mut buf, payload);
    replace_file_raw(dir, name, &buf, sync)
}

/// tmp file, fsync, rename, fsync of the directory.
fn replace_file_raw(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<(), StoreError> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        if sync {
            f.sync_all().map_err(io(&tmp))?;
        }
    }
    fs::rename(&tmp, &path).map_err(io(&path))?;
    if sync {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "storage_tests.rs"]
mod tests;
