//! Where a request's time goes: per-shard latency histograms of the stages
//! of produce and fetch, for finding a latency tail (`strom serve
//! --stage-latency DIR`). Off by default, and then free: [`start`] gives
//! `None` and nothing reads the clock.
//!
//! Each shard keeps one histogram per [`Stage`] (microseconds) and, once a
//! second, appends that second's histograms to `DIR/shard-N.jsonl` as one
//! JSON line: `{"t_ms": ..., "shard": N, "stages": {"name": [[us, count],
//! ...]}}` (the recorded values, as hdrhistogram's buckets). A reader sums
//! the lines of the seconds it wants, over shards, and takes percentiles of
//! the sum: `results/latency-stages/breakdown.py`. Per second, so a tail can
//! be placed in time (a roll, a retention pass) as well as in a stage.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// A stage of a request, from the frame's first byte to its reply's last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Produce: reading the frame after its size (the client's send, the
    /// network, and this shard getting round to the socket).
    ProduceReceive,
    /// Produce: waiting for the connection's previous produce request's
    /// records to have their offsets (a pipelining producer's order).
    ProduceOrder,
    /// A job sent to another shard, from the send to its start there.
    HopThere,
    /// A job's answer, from the other shard's send to this shard's read.
    HopBack,
    /// Produce, per partition: the engine waiting for room (a write round
    /// behind, a roll) before it gives the batch its offsets.
    AppendRoom,
    /// Produce, per partition: from the offsets given to the batch being
    /// as durable as `acks` asks (its device write, or the sync).
    AppendDurable,
    /// Produce: the whole handler, from the parsed frame to its reply.
    ProduceHandle,
    /// A reply that is ready, waiting for the replies before it on its
    /// connection to be sent.
    ReplyWait,
    /// Sending a produce reply.
    ProduceSend,
    /// Fetch: from the device write of what a long poll waits for to the
    /// fetch running again.
    FetchWake,
    /// Fetch: one pass reading the partitions (disk or memory) into the
    /// response.
    FetchRead,
    /// Sending a fetch reply.
    FetchSend,
    /// How late a 1 ms timer on the shard fires: the time the shard's
    /// thread spent on other tasks, or off the core.
    TimerLate,
}

const STAGES: [Stage; 13] = [
    Stage::ProduceReceive,
    Stage::ProduceOrder,
    Stage::HopThere,
    Stage::HopBack,
    Stage::AppendRoom,
    Stage::AppendDurable,
    Stage::ProduceHandle,
    Stage::ReplyWait,
    Stage::ProduceSend,
    Stage::FetchWake,
    Stage::FetchRead,
    Stage::FetchSend,
    Stage::TimerLate,
];

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::ProduceReceive => "produce.receive",
            Stage::ProduceOrder => "produce.order",
            Stage::HopThere => "hop.there",
            Stage::HopBack => "hop.back",
            Stage::AppendRoom => "append.room",
            Stage::AppendDurable => "append.durable",
            Stage::ProduceHandle => "produce.handle",
            Stage::ReplyWait => "reply.wait",
            Stage::ProduceSend => "produce.send",
            Stage::FetchWake => "fetch.wake",
            Stage::FetchRead => "fetch.read",
            Stage::FetchSend => "fetch.send",
            Stage::TimerLate => "timer.late",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The longest duration kept apart; longer ones count as this.
const HIGHEST_US: u64 = 60_000_000;

struct Recorder {
    histograms: Vec<Histogram<u64>>,
}

thread_local! {
    static RECORDER: RefCell<Option<Recorder>> = const { RefCell::new(None) };
}

/// The time a stage starts, when stages are recorded on this thread.
pub fn start() -> Option<Instant> {
    if enabled() {
        Some(Instant::now())
    } else {
        None
    }
}

/// Whether this thread records stages.
pub fn enabled() -> bool {
    RECORDER.with(|r| r.borrow().is_some())
}

/// Records `stage` as having lasted from `since` to now (nothing when
/// `since` is `None`: stages were off when it started).
pub fn record(stage: Stage, since: Option<Instant>) {
    if let Some(since) = since {
        record_duration(stage, since.elapsed());
    }
}

/// Records a stage's duration, measured elsewhere.
pub fn record_duration(stage: Stage, took: Duration) {
    RECORDER.with(|r| {
        if let Some(rec) = r.borrow_mut().as_mut() {
            let us = u64::try_from(took.as_micros())
                .unwrap_or(HIGHEST_US)
                .min(HIGHEST_US);
            if let Some(h) = rec.histograms.get_mut(stage.index()) {
                h.saturating_record(us);
            }
        }
    });
}

/// Starts recording on this shard's thread, and the task that writes a
/// line a second to `dir/shard-<id>.jsonl` and measures [`Stage::TimerLate`].
pub fn spawn(dir: &Path, shard_id: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let histograms = STAGES
        .iter()
        .map(|_| Histogram::new_with_max(HIGHEST_US, 3))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| std::io::Error::other(format!("histogram: {e}")))?;
    RECORDER.with(|r| *r.borrow_mut() = Some(Recorder { histograms }));
    // The engine's waits and reader wake-ups (append.room, append.durable,
    // fetch.wake) are timed only where this asks for them.
    strom_engine::log::time_waits(true);
    let path = dir.join(format!("shard-{shard_id}.jsonl"));
    glommio::spawn_local(timer_probe()).detach();
    glommio::spawn_local(write_each_second(path, shard_id)).detach();
    Ok(())
}

const PROBE_PERIOD: Duration = Duration::from_millis(1);

async fn timer_probe() {
    loop {
        let asleep = Instant::now();
        glommio::timer::sleep(PROBE_PERIOD).await;
        let late = asleep.elapsed().saturating_sub(PROBE_PERIOD);
        record_duration(Stage::TimerLate, late);
    }
}

async fn write_each_second(path: PathBuf, shard_id: usize) {
    loop {
        glommio::timer::sleep(Duration::from_secs(1)).await;
        let Some(line) = take_line(shard_id) else {
            continue;
        };
        let path = path.clone();
        // A file append of a few KiB, off the shard's thread all the same.
        let written = glommio::executor()
            .spawn_blocking(move || {
                use std::io::Write;
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(line.as_bytes()))
            })
            .await;
        if let Err(e) = written {
            tracing::warn!("writing stage latencies: {e}");
        }
    }
}

/// This second's histograms as a JSON line, and a fresh start for the next.
fn take_line(shard_id: usize) -> Option<String> {
    RECORDER.with(|r| {
        let mut r = r.borrow_mut();
        let rec = r.as_mut()?;
        let t_ms = crate::clock::now_ms();
        let mut stages = Vec::new();
        for (stage, h) in STAGES.iter().zip(rec.histograms.iter_mut()) {
            if h.is_empty() {
                continue;
            }
            let buckets: Vec<String> = h
                .iter_recorded()
                .map(|v| format!("[{},{}]", v.value_iterated_to(), v.count_at_value()))
                .collect();
            stages.push(format!("\"{}\":[{}]", stage.name(), buckets.join(",")));
            h.reset();
        }
        Some(format!(
            "{{\"t_ms\":{t_ms},\"shard\":{shard_id},\"stages\":{{{}}}}}\n",
            stages.join(",")
        ))
    })
}
