//! Simulated storage for deterministic crash and corruption tests.
//!
//! Every file keeps two images: `current` (what reads see) and `durable`
//! (what survives a crash), plus the ordered list of operations since the last
//! fdatasync. [`SimStorage::crash`] rebuilds each file from its durable image
//! plus what survives of those operations: by default any subset of them,
//! each kept write possibly torn (any subset of its 4096-byte blocks, one
//! block cut at any byte), as `FORMAT.md` assumes a device may do; or, with
//! [`CrashLoss::Prefix`], a prefix of them with the last one torn at any byte
//! (the older, gentler model, kept so old regression seeds replay exactly).
//! Faults are drawn from a seeded `SmallRng`, so a seed replays a run
//! exactly. Directory operations (create, remove, rename) are durable at
//! once.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{IoBuf, Storage, StorageFile, ALIGN_BYTES};

/// Fault knobs, all off by default.
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// Probability (per million) that an fdatasync fails with EIO.
    pub sync_fail_ppm: u32,
    /// Total bytes of all files; growing past it fails with ENOSPC.
    pub capacity_bytes: Option<u64>,
}

/// What a crash keeps of the operations issued since a file's last fdatasync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrashLoss {
    /// Any subset of them, in issue order, each kept write possibly torn: some
    /// of its 4096-byte blocks kept and the others lost, one kept block cut
    /// at any byte. What `FORMAT.md` assumes a device may do.
    #[default]
    AnySubset,
    /// A prefix of them, the last kept write possibly torn at any byte.
    Prefix,
}

/// A plain heap buffer standing in for a DMA buffer.
#[derive(Debug)]
pub struct SimBuf(Vec<u8>);

impl IoBuf for SimBuf {
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

#[derive(Debug, Clone)]
enum Op {
    Write { pos: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileData {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<Op>,
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { pos, data } => {
            let end = *pos as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*pos as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
    }
}

struct SimState {
    rng: SmallRng,
    faults: SimFaults,
    crash_loss: CrashLoss,
    files: HashMap<u64, FileData>,
    names: HashMap<PathBuf, u64>,
    next_id: u64,
    /// Bumped by every crash: handles from before a crash stop working.
    generation: u64,
    writes: u64,
    written_bytes: u64,
    syncs: u64,
    /// Operations left before the power goes (`set_fuse`): after that every
    /// operation fails until `crash`.
    fuse: Option<u64>,
}

impl SimState {
    /// Counts one operation against the fuse; fails once it has burnt.
    fn burn(&mut self) -> io::Result<()> {
        match self.fuse {
            Some(0) => Err(io::Error::other("simulated power loss")),
            Some(n) => {
                self.fuse = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn used_bytes(&self) -> u64 {
        self.files.values().map(|f| f.current.len() as u64).sum()
    }

    fn check_space(&self, id: u64, new_len: u64) -> io::Result<()> {
        if let Some(cap) = self.faults.capacity_bytes {
            let cur = self
                .files
                .get(&id)
                .map(|f| f.current.len() as u64)
                .unwrap_or(0);
            if new_len > cur && self.used_bytes() + (new_len - cur) > cap {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
        }
        Ok(())
    }
}

/// The simulated file system. Clones share the same state.
#[derive(Clone)]
pub struct SimStorage {
    state: Rc<RefCell<SimState>>,
    /// The preallocation budget of the logs on this storage (its own, so
    /// tests running side by side do not share one).
    budget: Rc<super::PreallocBudget>,
}

/// An open simulated file.
pub struct SimFile {
    state: Rc<RefCell<SimState>>,
    id: u64,
    generation: u64,
}

impl SimStorage {
    pub fn new(seed: u64) -> SimStorage {
        SimStorage {
            state: Rc::new(RefCell::new(SimState {
                rng: SmallRng::seed_from_u64(seed),
                faults: SimFaults::default(),
                crash_loss: CrashLoss::default(),
                files: HashMap::new(),
                names: HashMap::new(),
                next_id: 1,
                generation: 0,
                writes: 0,
                written_bytes: 0,
                syncs: 0,
                fuse: None,
            })),
            budget: Rc::new(super::PreallocBudget::new(
                super::budget::PREALLOCATE_BUDGET_BYTES,
            )),
        }
    }

    pub fn set_faults(&self, faults: SimFaults) {
        self.state.borrow_mut().faults = faults;
    }

    /// Chooses what a crash keeps of unsynced operations (default: any subset).
    pub fn set_crash_loss(&self, loss: CrashLoss) {
        self.state.borrow_mut().crash_loss = loss;
    }

    /// Simulates power loss: every file keeps its durable image plus some of
    /// its unsynced operations, chosen as [`CrashLoss`] says.
    pub fn crash(&self) {
        let mut st = self.state.borrow_mut();
        st.generation += 1;
        st.fuse = None;
        let mut ids: Vec<u64> = st.files.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let ops = st
                .files
                .get(&id)
                .map(|f| f.unsynced.clone())
                .unwrap_or_default();
            let survivors = match st.crash_loss {
                CrashLoss::Prefix => surviving_prefix(&mut st.rng, &ops),
                CrashLoss::AnySubset => surviving_subset(&mut st.rng, &ops),
            };
            let Some(f) = st.files.get_mut(&id) else {
                continue;
            };
            let mut image = std::mem::take(&mut f.durable);
            for op in &survivors {
                apply(&mut image, op);
            }
            f.current = image.clone();
            f.durable = image;
            f.unsynced.clear();
        }
    }

    /// The power goes after `ops` more file or directory operations: from
    /// then on every operation fails, until [`crash`](Self::crash) applies
    /// the loss. A crash at an exact point of a multi-step change.
    pub fn set_fuse(&self, ops: u64) {
        self.state.borrow_mut().fuse = Some(ops);
    }

    /// Flips one bit of a file in both images (media corruption).
    pub fn flip_bit(&self, path: &Path, byte: u64, bit: u8) -> bool {
        let mut st = self.state.borrow_mut();
        let Some(&id) = st.names.get(path) else {
            return false;
        };
        let Some(f) = st.files.get_mut(&id) else {
            return false;
        };
        let mut done = false;
        for image in [&mut f.current, &mut f.durable] {
            if let Some(b) = image.get_mut(byte as usize) {
                *b ^= 1 << (bit % 8);
                done = true;
            }
        }
        done
    }

    /// Length of the current image of `path`, if it exists.
    pub fn file_len(&self, path: &Path) -> Option<u64> {
        let st = self.state.borrow();
        let id = st.names.get(path)?;
        st.files.get(id).map(|f| f.current.len() as u64)
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.state.borrow().names.keys().cloned().collect();
        v.sort();
        v
    }

    /// (writes, fdatasyncs) issued so far.
    pub fn counters(&self) -> (u64, u64) {
        let st = self.state.borrow();
        (st.writes, st.syncs)
    }

    /// Bytes written to files so far (padding included).
    pub fn written_bytes(&self) -> u64 {
        self.state.borrow().written_bytes
    }
}

/// A prefix of `ops`, the first op after it possibly applied torn at a byte.
/// Draws from `rng` exactly as the simulator always has, so seeds found
/// under this model replay.
fn surviving_prefix(rng: &mut SmallRng, ops: &[Op]) -> Vec<Op> {
    let keep = rng.gen_range(0..=ops.len());
    let tear = keep < ops.len() && rng.gen_bool(0.5);
    let tear_at = match ops.get(keep) {
        Some(Op::Write { data, .. }) if tear && !data.is_empty() => {
            Some(rng.gen_range(0..data.len()))
        }
        _ => None,
    };
    let mut survivors = ops[..keep].to_vec();
    if let (Some(at), Some(Op::Write { pos, data })) = (tear_at, ops.get(keep)) {
        survivors.push(Op::Write {
            pos: *pos,
            data: data[..at].to_vec(),
        });
    }
    survivors
}

/// Any subset of `ops`, in issue order. Each op survives with a probability
/// drawn once per file and crash (so runs see everything from "nearly all
/// lost" to "nearly all kept"); a surviving write is torn one time in four:
/// each of its 4096-byte blocks kept or lost on its own, and one kept block
/// cut at a random byte.
fn surviving_subset(rng: &mut SmallRng, ops: &[Op]) -> Vec<Op> {
    let keep_ppm: u32 = rng.gen_range(0..=1_000_000);
    let mut survivors = Vec::new();
    for op in ops {
        if rng.gen_range(0..1_000_000) >= keep_ppm {
            continue;
        }
        match op {
            Op::Write { pos, data } if !data.is_empty() && rng.gen_ratio(1, 4) => {
                survivors.extend(torn_write(rng, *pos, data));
            }
            _ => survivors.push(op.clone()),
        }
    }
    survivors
}

/// The parts of one write that reach the media when it is torn: a random
/// subset of its blocks, one of them (if any) cut short at a random byte.
fn torn_write(rng: &mut SmallRng, pos: u64, data: &[u8]) -> Vec<Op> {
    let block = ALIGN_BYTES as usize;
    let mut parts: Vec<Op> = data
        .chunks(block)
        .enumerate()
        .filter(|_| rng.gen_bool(0.5))
        .map(|(i, chunk)| Op::Write {
            pos: pos + (i * block) as u64,
            data: chunk.to_vec(),
        })
        .collect();
    if !parts.is_empty() {
        let cut = rng.gen_range(0..parts.len());
        if let Op::Write { data, .. } = &mut parts[cut] {
            let at = rng.gen_range(0..data.len());
            data.truncate(at);
        }
    }
    parts
}

impl SimFile {
    fn with<T>(&self, f: impl FnOnce(&mut SimState, u64) -> io::Result<T>) -> io::Result<T> {
        let mut st = self.state.borrow_mut();
        if st.generation != self.generation || !st.files.contains_key(&self.id) {
            return Err(io::Error::other("stale simulated file handle"));
        }
        st.burn()?;
        f(&mut st, self.id)
    }
}

impl StorageFile for SimFile {
    type Buf = SimBuf;

    fn alloc_buf(&self, len: usize) -> SimBuf {
        // Filled with a pattern so that forgetting to zero padding shows up.
        SimBuf(vec![0xA5; len])
    }

    async fn write_range_at(
        &self,
        buf: Rc<SimBuf>,
        range: std::ops::Range<usize>,
        pos: u64,
    ) -> io::Result<()> {
        assert_eq!(pos % ALIGN_BYTES, 0, "unaligned O_DIRECT write position");
        assert_eq!(
            range.start as u64 % ALIGN_BYTES,
            0,
            "unaligned O_DIRECT write buffer"
        );
        assert_eq!(
            range.len() as u64 % ALIGN_BYTES,
            0,
            "unaligned O_DIRECT write length"
        );
        assert!(range.end <= buf.0.len(), "write range outside its buffer");
        // The bytes are taken when the write lands, as a device takes them
        // by DMA: what the buffer's owner copied into it meanwhile goes too.
        futures_lite::future::yield_now().await;
        self.with(|st, id| {
            st.check_space(id, pos + range.len() as u64)?;
            st.writes += 1;
            st.written_bytes += range.len() as u64;
            let op = Op::Write {
                pos,
                data: buf.0[range.clone()].to_vec(),
            };
            let f = st
                .files
                .get_mut(&id)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            apply(&mut f.current, &op);
            f.unsynced.push(op);
            Ok(())
        })
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.with(|st, id| {
            let f = st
                .files
                .get(&id)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            let start = (pos as usize).min(f.current.len());
            let end = (pos as usize + len).min(f.current.len());
            Ok(Bytes::copy_from_slice(&f.current[start..end]))
        })
    }

    async fn fdatasync(&self) -> io::Result<()> {
        futures_lite::future::yield_now().await;
        self.with(|st, id| {
            st.syncs += 1;
            let ppm = st.faults.sync_fail_ppm;
            if ppm > 0 && st.rng.gen_range(0..1_000_000) < ppm {
                // Like Linux after a failed fsync: what was dirty may be gone.
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let f = st
                .files
                .get_mut(&id)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            f.durable = f.current.clone();
            f.unsynced.clear();
            Ok(())
        })
    }

    async fn preallocate(&self, len: u64) -> io::Result<()> {
        self.with(|st, id| {
            st.check_space(id, len)?;
            let f = st
                .files
                .get_mut(&id)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            if (f.current.len() as u64) < len {
                let op = Op::SetLen(len);
                apply(&mut f.current, &op);
                f.unsynced.push(op);
            }
            Ok(())
        })
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.with(|st, id| {
            st.check_space(id, len)?;
            let f = st
                .files
                .get_mut(&id)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            let op = Op::SetLen(len);
            apply(&mut f.current, &op);
            f.unsynced.push(op);
            Ok(())
        })
    }

    async fn len(&self) -> io::Result<u64> {
        self.with(|st, id| {
            Ok(st
                .files
                .get(&id)
                .map(|f| f.current.len() as u64)
                .unwrap_or(0))
        })
    }
}

impl Storage for SimStorage {
    type File = SimFile;

    async fn open(&self, path: &Path) -> io::Result<SimFile> {
        let mut st = self.state.borrow_mut();
        st.burn()?;
        let id = match st.names.get(path) {
            Some(&id) => id,
            None => {
                let id = st.next_id;
                st.next_id += 1;
                st.names.insert(path.to_path_buf(), id);
                st.files.insert(id, FileData::default());
                id
            }
        };
        Ok(SimFile {
            state: self.state.clone(),
            id,
            generation: st.generation,
        })
    }

    async fn exists(&self, path: &Path) -> io::Result<bool> {
        Ok(self.state.borrow().names.contains_key(path))
    }

    async fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    async fn list_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let st = self.state.borrow();
        Ok(st
            .names
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
            .collect())
    }

    async fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.burn()?;
        if let Some(id) = st.names.remove(path) {
            st.files.remove(&id);
        }
        Ok(())
    }

    async fn remove_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        let doomed: Vec<PathBuf> = st
            .names
            .keys()
            .filter(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for p in doomed {
            if let Some(id) = st.names.remove(&p) {
                st.files.remove(&id);
            }
        }
        Ok(())
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        st.burn()?;
        let id = st
            .names
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        if let Some(old) = st.names.insert(to.to_path_buf(), id) {
            st.files.remove(&old);
        }
        Ok(())
    }

    async fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.state.borrow_mut().burn()
    }

    fn free_bytes(&self, _dir: &Path) -> io::Result<u64> {
        let st = self.state.borrow();
        Ok(st
            .faults
            .capacity_bytes
            .map_or(u64::MAX, |cap| cap.saturating_sub(st.used_bytes())))
    }

    fn preallocation_budget(&self) -> &super::PreallocBudget {
        &self.budget
    }
}
