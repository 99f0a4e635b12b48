//! `strom-bench engine`: appends through the engine API (no network) inside a
//! glommio executor, with several producer tasks so that appends group-commit,
//! then reads everything back. Prints one JSON line (with `--json`) or a
//! human summary, for the engine-versus-disk comparison against
//! `scripts/disk-baseline` (fio).

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use strom_bench::records::BatchBuilder;
use strom_engine::{Durability, LogConfig, PartitionLog};

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// No fdatasync until the end (Durability::Written, flush.ms off).
    Never,
    /// Durability::Written with an fdatasync every second (flush.ms=1000).
    Interval,
    /// Durability::Synced: every append waits for the fdatasync of its group commit.
    EveryBatch,
}

#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// Directory for the partition log (removed and recreated).
    #[arg(long)]
    pub dir: std::path::PathBuf,
    /// Bytes to append in total (suffixes K, M, G, KiB, MiB, GiB).
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub total_bytes: u64,
    /// Bytes of each record value.
    #[arg(long, default_value = "1KiB", value_parser = parse_bytes)]
    pub record_bytes: u64,
    /// Bytes of each RecordBatch (records per batch = batch / record).
    #[arg(long, default_value = "16KiB", value_parser = parse_bytes)]
    pub batch_bytes: u64,
    #[arg(long, value_enum, default_value = "never")]
    pub sync: SyncMode,
    /// Producer tasks appending concurrently (appends in flight).
    #[arg(long, default_value_t = 16)]
    pub producers: usize,
    /// Reader tasks reading disjoint ranges concurrently.
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// Bytes asked for per read call.
    #[arg(long, default_value = "1MiB", value_parser = parse_bytes)]
    pub read_bytes: u64,
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub segment_bytes: u64,
    /// The glommio executor's preempt timer in milliseconds (how long a busy
    /// task queue runs before the reactor reaps completions). Default
    /// strom_engine::EXECUTOR_PREEMPT_TIMER; at 1 ms glommio was seen to hang
    /// (see there).
    #[arg(long)]
    pub preempt_timer_ms: Option<u64>,
    /// Preallocate segment files (fallocate) ahead of the writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub preallocate: bool,
    /// Pin the bench (its glommio executor and helper threads) to these
    /// CPUs, as `taskset -c` takes them: 1, 0-1, 0,2-3.
    #[arg(long, value_parser = strom_bench::affinity::parse_cpu_list)]
    pub cpus: Option<strom_bench::affinity::CpuList>,
    /// Print one JSON line.
    #[arg(long)]
    pub json: bool,
    /// Keep the log directory afterwards.
    #[arg(long)]
    pub keep: bool,
}

pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|e| format!("bad size {s:?}: {e}"))?;
    let mul = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        other => return Err(format!("unknown unit {other:?}")),
    };
    Ok(n * mul)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(serde::Serialize)]
struct Report {
    bench: &'static str,
    dir: String,
    total_bytes: u64,
    record_bytes: u64,
    batch_bytes: u64,
    sync: String,
    producers: usize,
    readers: usize,
    preallocate: bool,
    /// The CPUs the bench was pinned to (`--cpus`); `None`: not pinned.
    cpus: Option<Vec<usize>>,
    batches: u64,
    flush_rounds: u64,
    write_secs: f64,
    write_mib_per_s: f64,
    read_secs: f64,
    read_mib_per_s: f64,
    read_bytes: u64,
}

pub fn run(args: EngineArgs) -> anyhow::Result<()> {
    if args.record_bytes == 0 || args.batch_bytes < args.record_bytes {
        bail!("--batch-bytes must be at least --record-bytes (> 0)");
    }
    if args.producers == 0 || args.readers == 0 {
        bail!("--producers and --readers must be > 0");
    }
    if args.dir.exists() {
        std::fs::remove_dir_all(&args.dir)
            .with_context(|| format!("removing {}", args.dir.display()))?;
    }
    if let Some(cpus) = &args.cpus {
        // An Unbound executor runs on this thread and leaves its mask as it
        // is; threads started later inherit it.
        strom_bench::affinity::pin_current_thread(cpus)
            .with_context(|| format!("--cpus {cpus}: sched_setaffinity"))?;
    }
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .name("engine-bench")
        .preempt_timer(
            args.preempt_timer_ms
                .map(Duration::from_millis)
                .unwrap_or(strom_engine::EXECUTOR_PREEMPT_TIMER),
        )
        .make()
        .map_err(|e| anyhow::anyhow!("glommio executor: {e}"))?;
    let report = ex.run(bench(&args))?;
    if !args.keep {
        let _ = std::fs::remove_dir_all(&args.dir);
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "engine: {} MiB in {}-byte batches of {}-byte records, sync={}, {} producers: write {:.0} MiB/s ({} flush rounds), read {:.0} MiB/s",
            report.total_bytes >> 20,
            report.batch_bytes,
            report.record_bytes,
            report.sync,
            report.producers,
            report.write_mib_per_s,
            report.flush_rounds,
            report.read_mib_per_s
        );
    }
    Ok(())
}

async fn bench(args: &EngineArgs) -> anyhow::Result<Report> {
    let config = LogConfig {
        segment_bytes: args.segment_bytes,
        flush_ms: if args.sync == SyncMode::Interval {
            1000
        } else {
            i64::MAX / 4
        },
        retention_ms: -1,
        preallocate: args.preallocate,
        ..LogConfig::default()
    };
    let log = PartitionLog::open(&args.dir, config).await?;
    let records = (args.batch_bytes / args.record_bytes).max(1) as usize;
    let value = vec![0x5Au8; args.record_bytes as usize];
    let mut builder = BatchBuilder::new(records * (value.len() + 16));
    let ts_ms = now_ms();
    for _ in 0..records {
        builder.append(ts_ms, None, &value);
    }
    let batch = Rc::new(builder.finish());
    let durability = if args.sync == SyncMode::EveryBatch {
        Durability::Synced
    } else {
        Durability::Written
    };

    // Write phase.
    let appended = Rc::new(Cell::new(0u64));
    let failed: Rc<Cell<Option<String>>> = Rc::new(Cell::new(None));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.producers {
        let (log, batch, appended, failed) =
            (log.clone(), batch.clone(), appended.clone(), failed.clone());
        let total = args.total_bytes;
        tasks.push(glommio::spawn_local(async move {
            while appended.get() < total {
                appended.set(appended.get() + batch.len() as u64);
                if let Err(e) = log.append(&batch, durability, now_ms()).await {
                    failed.set(Some(e.to_string()));
                    return;
                }
                // A Written append completes without ever waiting, and
                // glommio polls the ring (submits new writes, reaps finished
                // ones) only when no task is runnable or the preempt timer
                // fires (100 ms): yielding the task queue does not poll it.
                // A network server's tasks wait on the socket between
                // requests; waiting on a timer does the same here, so the
                // reactor runs at least once per round of the producers.
                glommio::timer::sleep(Duration::from_micros(1)).await;
            }
        }));
    }
    let ticker = if args.sync == SyncMode::Interval {
        let log = log.clone();
        let appended = appended.clone();
        let total = args.total_bytes;
        Some(glommio::spawn_local(async move {
            while appended.get() < total {
                glommio::timer::sleep(Duration::from_millis(100)).await;
                let _ = log.tick(now_ms()).await;
            }
        }))
    } else {
        None
    };
    for t in tasks {
        t.await;
    }
    if let Some(t) = ticker {
        t.await;
    }
    if let Some(e) = failed.take() {
        bail!("append failed: {e}");
    }
    log.flush().await?;
    let write_secs = start.elapsed().as_secs_f64();
    let written = log.size_bytes();
    let batches = log.log_end_offset() as u64 / records as u64;

    // Read phase: disjoint offset ranges, one per reader task.
    let end = log.log_end_offset();
    let share = (end + args.readers as i64 - 1) / args.readers as i64;
    let read_total = Rc::new(Cell::new(0u64));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..args.readers as i64 {
        let (log, read_total, failed) = (log.clone(), read_total.clone(), failed.clone());
        let max_bytes = args.read_bytes as usize;
        tasks.push(glommio::spawn_local(async move {
            let mut offset = r * share;
            let stop = ((r + 1) * share).min(end);
            while offset < stop {
                match log.read(offset, max_bytes).await {
                    Ok(res) => {
                        let Some(last) = res.batches.last() else {
                            break;
                        };
                        let Ok(h) = strom_engine::batch::BatchHeader::parse(last) else {
                            break;
                        };
                        offset = h.last_offset() + 1;
                        read_total.set(read_total.get() + res.bytes() as u64);
                    }
                    Err(e) => {
                        failed.set(Some(e.to_string()));
                        return;
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await;
    }
    if let Some(e) = failed.take() {
        bail!("read failed: {e}");
    }
    let read_secs = start.elapsed().as_secs_f64();
    let read_bytes = read_total.get();
    let flush_rounds = log.flush_rounds();
    log.close().await?;
    let mib = (1u64 << 20) as f64;
    Ok(Report {
        bench: "engine",
        dir: args.dir.display().to_string(),
        total_bytes: written,
        record_bytes: args.record_bytes,
        batch_bytes: batch.len() as u64,
        sync: match args.sync {
            SyncMode::Never => "never",
            SyncMode::Interval => "interval",
            SyncMode::EveryBatch => "every-batch",
        }
        .to_string(),
        producers: args.producers,
        readers: args.readers,
        preallocate: args.preallocate,
        cpus: args.cpus.as_ref().map(|c| c.0.clone()),
        batches,
        flush_rounds,
        write_secs,
        write_mib_per_s: written as f64 / mib / write_secs,
        read_secs,
        read_mib_per_s: read_bytes as f64 / mib / read_secs,
        read_bytes,
    })
}
