//! Producer id allocation for InitProducerId (api key 22).
//!
//! Ids must never be handed out twice, not even across crashes: a reused id
//! would let a new producer's batches be taken for an old producer's
//! duplicates. Ids are allocated in blocks of [`PRODUCER_ID_BLOCK_SIZE`]. Before
//! the first id of a block is handed out, the start of the *next* block is
//! persisted in `<data-dir>/producer_ids` (tmp file, fsync, rename, fsync of
//! the directory). After a restart allocation resumes at the persisted value,
//! so the unused rest of the last block is skipped, never reused.
//!
//! File format (16 bytes, big-endian):
//!
//! ```text
//! offset  size  field
//!  0      4     magic "SPID"
//!  4      8     next block start (the first id no process has handed out)
//! 12      4     CRC-32C of bytes 0..12
//! ```
//!
//! A file that fails its CRC stops the broker rather than risk reusing ids.
//!
//! In a cluster the file is not used: each block comes from the active
//! controller, as a producer-id-block record in the metadata log, so ids
//! are unique across the brokers (`next_cluster_id`).
//!
//! The manager is shared by all shards behind a mutex. Allocation takes the
//! lock for a few nanoseconds, and once per block for one small synchronous
//! write and two fsyncs; InitProducerId is rare next to Produce.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use strom_engine::producer_state::ProducerError;
use thiserror::Error;

/// Ids reserved per durable write.
pub const PRODUCER_ID_BLOCK_SIZE: i64 = 1000;
/// Block requests to the controller before InitProducerId gives up (each
/// refused one lost a race to another broker's).
const CLUSTER_BLOCK_ATTEMPTS: usize = 5;
/// File in the data directory holding the next block start.
pub const PRODUCER_IDS_FILE: &str = "producer_ids";
/// Oldest and newest InitProducerId versions served.
pub const INIT_PRODUCER_ID_MIN_VERSION: i16 = 0;
pub const INIT_PRODUCER_ID_MAX_VERSION: i16 = 4;

const MAGIC: &[u8; 4] = b"SPID";
const FILE_BYTES: usize = 16;

#[derive(Debug, Error)]
pub enum ProducerIdError {
    #[error("producer id file {path:?} is corrupt")]
    Corrupt { path: PathBuf },
    #[error("producer ids exhausted")]
    Exhausted,
    #[error("the controller handed out no producer id block: {0}")]
    Controller(String),
    #[error("producer id file I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// Hands out producer ids that are unique over the life of the data directory.
#[derive(Debug)]
pub struct ProducerIdManager {
    dir: PathBuf,
    state: Mutex<Block>,
}

/// The ids `next..end` are reserved on disk and not yet handed out.
#[derive(Debug)]
struct Block {
    next: i64,
    end: i64,
}

impl ProducerIdManager {
    /// Reads the persisted next block start from `data_dir` (0 when the file
    /// does not exist yet). No block is reserved until the first id is asked.
    pub fn open(data_dir: impl AsRef<Path>) -> Result<ProducerIdManager, ProducerIdError> {
        let dir = data_dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(PRODUCER_IDS_FILE);
        let start = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes).ok_or(ProducerIdError::Corrupt { path })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(ProducerIdManager {
            dir,
            state: Mutex::new(Block {
                next: start,
                end: start,
            }),
        })
    }

    /// The next unused producer id. Persists a new block first when the
    /// current one is used up; on a write error no id is handed out.
    pub fn next_id(&self) -> Result<i64, ProducerIdError> {
        // A poisoned lock means a thread panicked mid-allocation; the block
        // state itself is always consistent (updated after the write).
        let mut block = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if block.next == block.end {
            let end = block
                .end
                .checked_add(PRODUCER_ID_BLOCK_SIZE)
                .ok_or(ProducerIdError::Exhausted)?;
            persist(&self.dir, end)?;
            tracing::debug!(start = block.end, end, "reserved producer id block");
            block.end = end;
        }
        let id = block.next;
        // `next < end` here, and `end` is a checked i64.
        block.next = block.next.saturating_add(1);
        debug_assert!(id >= 0 && block.next <= block.end);
        Ok(id)
    }

    /// The next id of the current block, if any is left.
    fn take_from_block(&self) -> Option<i64> {
        let mut block = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (block.next < block.end).then(|| {
            let id = block.next;
            block.next = block.next.saturating_add(1);
            id
        })
    }

    /// In a cluster: the next id, from a block the active controller handed
    /// this broker. A block is `[start, start + PRODUCER_ID_BLOCK_SIZE)`
    /// where `start` is the image's next producer id; the producer-id-block
    /// record moves it to the block's end, and the apply rules refuse a
    /// record that does not move it forward, so a block whose record
    /// applied was handed to no other broker (every block ends at a
    /// multiple of the block size). A refused record (another broker took
    /// that block meanwhile) is retried with the newer image.
    pub async fn next_cluster_id(
        &self,
        controller: &strom_controller::Controller,
        broker_id: i32,
    ) -> Result<i64, ProducerIdError> {
        for _ in 0..CLUSTER_BLOCK_ATTEMPTS {
            if let Some(id) = self.take_from_block() {
                return Ok(id);
            }
            let image = controller.image();
            let start = image.next_producer_id;
            let end = start
                .checked_add(PRODUCER_ID_BLOCK_SIZE)
                .ok_or(ProducerIdError::Exhausted)?;
            let record = strom_controller::Record::ProducerIds {
                broker_id,
                broker_epoch: image.brokers.get(&broker_id).map_or(-1, |b| b.epoch),
                next_producer_id: end,
            };
            match controller.propose(vec![record]).await {
                Ok(Ok(_)) => {
                    tracing::debug!(start, end, "producer id block from the controller");
                    let mut block = self.state.lock().unwrap_or_else(|p| p.into_inner());
                    if block.next >= block.end {
                        block.next = start;
                        block.end = end;
                    }
                }
                Ok(Err(strom_controller::ProposeError::Rejected(_))) => continue,
                Ok(Err(e)) => return Err(ProducerIdError::Controller(e.to_string())),
                Err(_) => return Err(ProducerIdError::Controller("stopped".into())),
            }
        }
        Err(ProducerIdError::Controller(format!(
            "{CLUSTER_BLOCK_ATTEMPTS} block requests lost the race to other brokers"
        )))
    }

    /// Answers an InitProducerId request. A producer without a
    /// transactional id gets a fresh id with epoch 0, as Kafka does, also
    /// when it sends its old id and epoch to have them bumped (KIP-360): a
    /// new id resets its sequences just as well. Transactions are not
    /// supported: a transactional id is refused with INVALID_REQUEST.
    pub fn handle_init_producer_id(
        &self,
        request: &InitProducerIdRequest,
    ) -> InitProducerIdResponse {
        match refuse_transactional(request) {
            Some(refusal) => refusal,
            None => answer(self.next_id()),
        }
    }

    /// [`Self::handle_init_producer_id`] in a cluster, with ids from the
    /// controller's blocks.
    pub async fn handle_init_producer_id_in_cluster(
        &self,
        request: &InitProducerIdRequest,
        controller: &strom_controller::Controller,
        broker_id: i32,
    ) -> InitProducerIdResponse {
        match refuse_transactional(request) {
            Some(refusal) => refusal,
            None => answer(self.next_cluster_id(controller, broker_id).await),
        }
    }
}

/// An InitProducerId answer with no id yet.
fn no_id() -> InitProducerIdResponse {
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1)
}

/// Transactions are not supported: a transactional id is refused with
/// INVALID_REQUEST.
fn refuse_transactional(request: &InitProducerIdRequest) -> Option<InitProducerIdResponse> {
    request
        .transactional_id
        .is_some()
        .then(|| no_id().with_error_code(ResponseError::InvalidRequest.code()))
}

/// The answer with a fresh id at epoch 0, or the error.
fn answer(id: Result<i64, ProducerIdError>) -> InitProducerIdResponse {
    match id {
        Ok(id) => no_id()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(e) => {
            tracing::error!(error = %e, "cannot allocate a producer id");
            // Retriable for every client: it tries again after a backoff.
            no_id().with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}

/// Managers by data directory, shared by every shard of the process.
static MANAGERS: OnceLock<Mutex<HashMap<PathBuf, Arc<ProducerIdManager>>>> = OnceLock::new();

/// The manager of `data_dir`, opened on first use and shared by every shard
/// (all shards of a broker see the same data directory). The broker calls it
/// once at startup, so that a corrupt file stops it there.
pub fn manager_for(data_dir: &Path) -> Result<Arc<ProducerIdManager>, ProducerIdError> {
    let mut managers = MANAGERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(m) = managers.get(data_dir) {
        return Ok(m.clone());
    }
    let m = Arc::new(ProducerIdManager::open(data_dir)?);
    managers.insert(data_dir.to_path_buf(), m.clone());
    Ok(m)
}

/// InitProducerId for the broker whose data directory is `data_dir`: ids
/// from the local file's blocks on one node, from the controller's in a
/// cluster.
pub async fn init_producer_id(
    data_dir: &Path,
    broker_id: i32,
    request: &InitProducerIdRequest,
) -> InitProducerIdResponse {
    match manager_for(data_dir) {
        Ok(m) => match crate::cluster::controller() {
            Some(c) => {
                m.handle_init_producer_id_in_cluster(request, c, broker_id)
                    .await
            }
            None => m.handle_init_producer_id(request),
        },
        Err(e) => {
            tracing::error!(error = %e, "cannot open the producer id allocator");
            InitProducerIdResponse::default()
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1)
                .with_error_code(ResponseError::CoordinatorNotAvailable.code())
        }
    }
}

/// The Produce error code for a batch the producer state refused. A
/// duplicate is not an error: the log answers it with the original offsets
/// and the partition response carries NONE, as in Kafka.
pub fn produce_error(e: &ProducerError) -> ResponseError {
    match e {
        ProducerError::InvalidSequence { .. } => ResponseError::InvalidRecord,
        ProducerError::UnknownProducerId { .. } => ResponseError::UnknownProducerId,
        ProducerError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        ProducerError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
    }
}

fn encode(next_block_start: i64) -> [u8; FILE_BYTES] {
    let mut b = [0u8; FILE_BYTES];
    b[0..4].copy_from_slice(MAGIC);
    b[4..12].copy_from_slice(&next_block_start.to_be_bytes());
    let crc = crc32c::crc32c(&b[0..12]);
    b[12..16].copy_from_slice(&crc.to_be_bytes());
    b
}

fn decode(b: &[u8]) -> Option<i64> {
    if b.len() != FILE_BYTES || b.get(0..4)? != MAGIC {
        return None;
    }
    let crc = u32::from_be_bytes(b.get(12..16)?.try_into().ok()?);
    if crc != crc32c::crc32c(b.get(0..12)?) {
        return None;
    }
    let start = i64::from_be_bytes(b.get(4..12)?.try_into().ok()?);
    (start >= 0).then_some(start)
}

/// Replaces the file atomically: after a crash it holds the old or the new
/// value, never a torn one.
fn persist(dir: &Path, next_block_start: i64) -> std::io::Result<()> {
    let path = dir.join(PRODUCER_IDS_FILE);
    let tmp = dir.join(format!("{PRODUCER_IDS_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&encode(next_block_start))?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::TransactionalId;
    use kafka_protocol::protocol::StrBytes;
    use std::collections::HashSet;

    #[test]
    fn ids_are_sequential_within_a_block_and_persisted_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let m = ProducerIdManager::open(dir.path()).unwrap();
        assert!(
            !dir.path().join(PRODUCER_IDS_FILE).exists(),
            "nothing reserved before the first id"
        );
        for want in 0..PRODUCER_ID_BLOCK_SIZE + 3 {
            assert_eq!(m.next_id().unwrap(), want);
        }
        let on_disk = decode(&std::fs::read(dir.path().join(PRODUCER_IDS_FILE)).unwrap()).unwrap();
        assert_eq!(on_disk, 2 * PRODUCER_ID_BLOCK_SIZE);
    }

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = HashSet::new();
        for restart in 0..20 {
            let m = ProducerIdManager::open(dir.path()).unwrap();
            // Use part of a block, sometimes more than one block, then "crash".
            let n = (restart * 337) % 2500 + 1;
            let mut last = -1;
            for _ in 0..n {
                let id = m.next_id().unwrap();
                assert!(id > last, "ids go up within a process");
                assert!(
                    seen.insert(id),
                    "id {id} handed out twice (restart {restart})"
                );
                last = id;
            }
        }
    }

    #[test]
    fn ids_are_unique_across_threads() {
        let dir = tempfile::tempdir().unwrap();
        let m = std::sync::Arc::new(ProducerIdManager::open(dir.path()).unwrap());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let m = m.clone();
                std::thread::spawn(move || {
                    (0..700).map(|_| m.next_id().unwrap()).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<i64> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 2800);
    }

    #[test]
    fn a_corrupt_file_refuses_to_open_and_a_stale_tmp_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        ProducerIdManager::open(dir.path())
            .unwrap()
            .next_id()
            .unwrap();
        std::fs::write(dir.path().join(format!("{PRODUCER_IDS_FILE}.tmp")), b"torn").unwrap();
        let m = ProducerIdManager::open(dir.path()).unwrap();
        assert_eq!(m.next_id().unwrap(), PRODUCER_ID_BLOCK_SIZE);
        let path = dir.path().join(PRODUCER_IDS_FILE);
        let mut b = std::fs::read(&path).unwrap();
        b[5] ^= 1;
        std::fs::write(&path, &b).unwrap();
        assert!(matches!(
            ProducerIdManager::open(dir.path()),
            Err(ProducerIdError::Corrupt { .. })
        ));
        std::fs::write(&path, &b[..10]).unwrap();
        assert!(matches!(
            ProducerIdManager::open(dir.path()),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }

    #[test]
    fn producer_errors_map_to_kafka_codes() {
        let e = ProducerError::OutOfOrderSequence {
            producer_id: 1,
            epoch: 0,
            sequence: 3,
            expected: 1,
        };
        assert_eq!(produce_error(&e).code(), 45);
        let e = ProducerError::InvalidProducerEpoch {
            producer_id: 1,
            epoch: 0,
            current_epoch: 1,
        };
        assert_eq!(produce_error(&e).code(), 47);
        let e = ProducerError::UnknownProducerId {
            producer_id: 1,
            epoch: 0,
            sequence: 3,
        };
        assert_eq!(produce_error(&e).code(), 59);
        let e = ProducerError::InvalidSequence {
            producer_id: 1,
            sequence: -3,
        };
        assert_eq!(produce_error(&e).code(), 87);
    }

    #[test]
    fn managers_are_shared_per_data_dir() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let req = InitProducerIdRequest::default().with_transactional_id(None);
        assert_eq!(
            futures_lite::future::block_on(init_producer_id(a.path(), 1, &req)).producer_id,
            ProducerId(0)
        );
        assert_eq!(
            futures_lite::future::block_on(init_producer_id(a.path(), 1, &req)).producer_id,
            ProducerId(1)
        );
        assert_eq!(
            futures_lite::future::block_on(init_producer_id(b.path(), 1, &req)).producer_id,
            ProducerId(0)
        );
        assert!(Arc::ptr_eq(
            &manager_for(a.path()).unwrap(),
            &manager_for(a.path()).unwrap()
        ));
    }

    #[test]
    fn exhaustion_is_an_error_not_a_wrap() {
        let dir = tempfile::tempdir().unwrap();
        persist(dir.path(), i64::MAX - 5).unwrap();
        let m = ProducerIdManager::open(dir.path()).unwrap();
        assert!(matches!(m.next_id(), Err(ProducerIdError::Exhausted)));
    }

    #[test]
    fn init_producer_id_answers_fresh_ids_with_epoch_zero() {
        let dir = tempfile::tempdir().unwrap();
        let m = ProducerIdManager::open(dir.path()).unwrap();
        // The generated default carries an empty (not null) transactional id.
        let idempotent = InitProducerIdRequest::default().with_transactional_id(None);
        let first = m.handle_init_producer_id(&idempotent);
        assert_eq!(
            (first.error_code, first.producer_id, first.producer_epoch),
            (0, ProducerId(0), 0)
        );
        // KIP-360 bump of an idempotent producer: a new id, epoch 0.
        let bump = idempotent
            .clone()
            .with_producer_id(ProducerId(0))
            .with_producer_epoch(0);
        let second = m.handle_init_producer_id(&bump);
        assert_eq!(
            (second.error_code, second.producer_id, second.producer_epoch),
            (0, ProducerId(1), 0)
        );
        let txn = InitProducerIdRequest::default()
            .with_transactional_id(Some(TransactionalId(StrBytes::from_static_str("t"))));
        let refused = m.handle_init_producer_id(&txn);
        assert_eq!(refused.error_code, ResponseError::InvalidRequest.code());
        assert_eq!(refused.producer_id, ProducerId(-1));
        let empty = m.handle_init_producer_id(&InitProducerIdRequest::default());
        assert_eq!(empty.error_code, ResponseError::InvalidRequest.code());
    }
}
