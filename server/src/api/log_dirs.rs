//! DescribeLogDirs (v1-v4): the broker's one log directory (`--data-dir`)
//! with the size of every requested partition's log, read on its owner
//! shard, and the file system's total and usable bytes (v4).

use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::scatter::scatter_gather;
use crate::shard::Shard;

pub async fn handle(
    shard: &Rc<Shard>,
    req: DescribeLogDirsRequest,
    _version: i16,
) -> DescribeLogDirsResponse {
    let meta = shard.metadata();
    // Null: every partition. Unknown topics and partitions are left out, as
    // Kafka leaves out what it does not host.
    let wanted: Vec<(String, i32)> = match req.topics {
        None => meta
            .topics
            .iter()
            .flat_map(|(name, t)| (0..t.partitions).map(move |p| (name.clone(), p)))
            .collect(),
        Some(topics) => topics
            .iter()
            .flat_map(|t| {
                let name = t.topic.0.as_str().to_string();
                let count = meta.topics.get(&name).map_or(0, |m| m.partitions);
                t.partitions
                    .iter()
                    .filter(move |p| (0..count).contains(*p))
                    .map(move |p| (name.clone(), *p))
            })
            .collect(),
    };
    let items = wanted
        .iter()
        .map(|(t, p)| (shard.owner(t, *p), (t.clone(), *p)))
        .collect();
    let sizes = scatter_gather(
        shard,
        items,
        |owner, group: Vec<(String, i32)>| async move {
            group
                .iter()
                .map(|(t, p)| owner.log(t, *p).map(|log| log.size_bytes()))
                .collect::<Vec<_>>()
        },
    )
    .await;
    let mut topics: Vec<DescribeLogDirsTopic> = Vec::new();
    for ((topic, partition), size) in wanted.into_iter().zip(sizes) {
        let Ok(Some(size)) = size else { continue };
        let entry = DescribeLogDirsPartition::default()
            .with_partition_index(partition)
            .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX));
        match topics.last_mut() {
            Some(t) if t.name.0.as_str() == topic => t.partitions.push(entry),
            _ => topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(vec![entry]),
            ),
        }
    }
    let dir = &shard.config.data_dir;
    let (total_bytes, usable_bytes) = fs_bytes(dir).unwrap_or((-1, -1));
    DescribeLogDirsResponse::default().with_results(vec![DescribeLogDirsResult::default()
        .with_log_dir(StrBytes::from_string(dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(total_bytes)
        .with_usable_bytes(usable_bytes)])
}

/// The file system's size and the bytes available to this process.
fn fs_bytes(dir: &std::path::Path) -> Option<(i64, i64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and outlives the call; `st` is
    // writable memory of the size of `libc::statvfs`.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct (zeroed before).
    let st = unsafe { st.assume_init() };
    // c_ulong and fsblkcnt_t are u64 on 64-bit Linux.
    let block: u64 = st.f_frsize;
    let total = st.f_blocks.checked_mul(block)?;
    let usable = st.f_bavail.checked_mul(block)?;
    Some((i64::try_from(total).ok()?, i64::try_from(usable).ok()?))
}
