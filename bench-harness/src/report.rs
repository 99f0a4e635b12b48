//! The result of one run as JSON (schema `strom-bench/run/v1`), the
//! machine description, and the results/README.md table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::latency::Percentiles;
use crate::workload::Workload;

pub const SCHEMA: &str = "strom-bench/run/v1";
const MIB: f64 = 1024.0 * 1024.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    pub schema: String,
    /// UTC, RFC 3339.
    pub timestamp: String,
    pub workload: Workload,
    pub settings: Settings,
    pub machine: Machine,
    /// The producer rate asked for (messages/s over all producers); 0 = max.
    pub target_msgs_per_s: f64,
    pub produce_msgs_per_s: f64,
    pub produce_mib_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mib_per_s: f64,
    /// CPU seconds the harness used (all its threads, warm-up and drain
    /// included), and the same over the run's wall time: the cores the load
    /// generator took from the machine.
    #[serde(default)]
    pub harness_cpu_s: f64,
    #[serde(default)]
    pub harness_cpu_cores: f64,
    /// Record bytes before compression over record bytes sent, over every
    /// batch of the run (1 without compression).
    #[serde(default = "no_compression")]
    pub compression_ratio: f64,
    pub publish_latency_ms: Percentiles,
    pub e2e_latency_ms: Percentiles,
    /// Messages acknowledged over the whole run, warm-up and drain included:
    /// what the run added to the log.
    #[serde(default)]
    pub produced_msgs_total: u64,
    pub produce_errors: u64,
    /// Fetches that failed with a retriable error and were retried.
    #[serde(default)]
    pub fetch_errors: u64,
    /// (percentile, ms) points.
    pub publish_latency_distribution: Vec<(f64, f64)>,
    pub e2e_latency_distribution: Vec<(f64, f64)>,
    /// One sample per second over the whole run, warm-up included.
    pub timeseries: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub bootstrap: String,
    pub acks: String,
    /// Idempotent producers (producer id, epoch and sequence on every batch).
    #[serde(default)]
    pub idempotent: bool,
    pub batch_bytes: usize,
    pub linger_ms: f64,
    pub compression: String,
    /// The CPUs the harness was pinned to (`--cpus`); `None`: not pinned.
    #[serde(default)]
    pub cpus: Option<Vec<usize>>,
    pub max_in_flight: usize,
    pub replication_factor: i16,
    #[serde(default)]
    pub topic_configs: Vec<String>,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub topics: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cores: usize,
    pub kernel: String,
    pub cpu_model: String,
    pub hostname: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub t_s: f64,
    pub produce_msgs_per_s: f64,
    pub produce_mib_per_s: f64,
    pub consume_msgs_per_s: f64,
    pub consume_mib_per_s: f64,
}

fn no_compression() -> f64 {
    1.0
}

pub fn mib(bytes: f64) -> f64 {
    bytes / MIB
}

impl Machine {
    pub fn detect() -> Machine {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let kernel = std::process::Command::new("uname")
            .arg("-srm")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
        Machine {
            cores,
            kernel,
            cpu_model,
            hostname,
        }
    }
}

/// Formats seconds since the Unix epoch as RFC 3339 UTC.
pub fn rfc3339(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

pub fn now_rfc3339() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(s)
}

impl RunResult {
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<RunResult> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// The summary table printed at the end of a run.
    pub fn summary_table(&self) -> String {
        let mut s = String::new();
        let p = &self.publish_latency_ms;
        let e = &self.e2e_latency_ms;
        let _ = writeln!(
            s,
            "workload {} | acks={}{} | compression {}{} | {} s measured after {} s warm-up",
            self.workload.name,
            self.settings.acks,
            if self.settings.idempotent {
                " idempotent"
            } else {
                ""
            },
            self.settings.compression,
            if self.settings.compression == "none" {
                String::new()
            } else {
                format!(" ({:.2}x)", self.compression_ratio)
            },
            self.settings.duration_s,
            self.settings.warmup_s
        );
        let _ = writeln!(
            s,
            "harness: {:.2} cores busy on average ({:.1} CPU s){}",
            self.harness_cpu_cores,
            self.harness_cpu_s,
            self.settings
                .cpus
                .as_deref()
                .map(|c| format!(", pinned to CPUs {}", cpus_label(c)))
                .unwrap_or_default()
        );
        let _ = writeln!(
            s,
            "{:<10} {:>14} {:>10} {:>9} {:>9} {:>9} {:>9}",
            "", "msg/s", "MiB/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        let _ = writeln!(
            s,
            "{:<10} {:>14.0} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            "publish", self.produce_msgs_per_s, self.produce_mib_per_s, p.p50, p.p99, p.p999, p.max
        );
        let _ = writeln!(
            s,
            "{:<10} {:>14.0} {:>10.1} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
            "end-to-end",
            self.consume_msgs_per_s,
            self.consume_mib_per_s,
            e.p50,
            e.p99,
            e.p999,
            e.max
        );
        if self.target_msgs_per_s > 0.0 {
            let _ = writeln!(
                s,
                "target rate {:.0} msg/s, achieved {:.1}%",
                self.target_msgs_per_s,
                100.0 * self.produce_msgs_per_s / self.target_msgs_per_s
            );
        }
        if self.fetch_errors > 0 {
            let _ = writeln!(s, "fetch errors (retried): {}", self.fetch_errors);
        }
        if self.produce_errors > 0 {
            let _ = writeln!(s, "produce errors: {}", self.produce_errors);
        }
        s
    }
}

/// Sequential-write bandwidth in MiB/s from a fio JSON report (sum over jobs).
pub fn fio_write_mib_per_s(json: &serde_json::Value) -> Option<f64> {
    // scripts/disk-baseline --json gives the figure directly.
    if let Some(v) = json.get("fio_seq_write_mib_per_s").and_then(|v| v.as_f64()) {
        return Some(v);
    }
    let jobs = json.get("jobs")?.as_array()?;
    let bw: f64 = jobs
        .iter()
        .filter_map(|j| j.get("write")?.get("bw_bytes")?.as_f64())
        .sum();
    (bw > 0.0).then(|| mib(bw))
}

/// Builds results/README.md from every run JSON in `dir` and an optional
/// fio baseline report.
pub fn readme_table(dir: &Path, fio_json: Option<&Path>) -> Result<String> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        if let Ok(r) = RunResult::read(&path) {
            if r.schema == SCHEMA {
                runs.push((path, r));
            }
        }
    }
    runs.sort_by(|a, b| a.0.cmp(&b.0));
    let fio = match fio_json {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            let v: serde_json::Value =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
            fio_write_mib_per_s(&v)
        }
        None => None,
    };
    let mut s = String::new();
    let _ = writeln!(s, "# Benchmark results\n");
    let _ = writeln!(s, "Generated by `scripts/bench` (`strom-bench report`); each row is the latest run of that workload.");
    let _ = writeln!(s, "Throughput is payload bytes; latency is measured from the intended send time (coordinated omission corrected).\n");
    match fio {
        Some(f) => {
            let _ = writeln!(s, "Disk baseline (fio sequential O_DIRECT write, 1 MiB blocks, iodepth 16, same run): **{f:.1} MiB/s**\n");
        }
        None => {
            let _ = writeln!(s, "Disk baseline: not measured in this run.\n");
        }
    }
    let _ = writeln!(s, "| result | acks | target msg/s | produce msg/s | produce MiB/s | % of disk | consume MiB/s | publish p50/p99/p99.9 ms | e2e p50/p99/p99.9 ms | errors (produce / fetch retried) | machine | when |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (path, r) in &runs {
        let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("?");
        let target = if r.target_msgs_per_s > 0.0 {
            format!("{:.0}", r.target_msgs_per_s)
        } else {
            "max".into()
        };
        let pct = fio
            .map(|f| format!("{:.0}%", 100.0 * r.produce_mib_per_s / f))
            .unwrap_or_else(|| "-".into());
        let (p, e) = (&r.publish_latency_ms, &r.e2e_latency_ms);
        let acks = if r.settings.idempotent {
            format!("{} (idempotent)", r.settings.acks)
        } else {
            r.settings.acks.clone()
        };
        let _ = writeln!(
            s,
            "| [{}]({file}) | {} | {target} | {:.0} | {:.1} | {pct} | {:.1} | {:.2} / {:.2} / {:.2} | {:.2} / {:.2} / {:.2} | {} / {} | {} cores, {} | {} |",
            r.workload.name, acks, r.produce_msgs_per_s, r.produce_mib_per_s, r.consume_mib_per_s, p.p50, p.p99, p.p999, e.p50, e.p99, e.p999, r.produce_errors, r.fetch_errors, r.machine.cores, r.machine.kernel, r.timestamp
        );
    }
    Ok(s)
}

fn cpus_label(cpus: &[usize]) -> String {
    crate::affinity::CpuList(cpus.to_vec()).to_string()
}

/// One row of the side-by-side table: its label, how to show a run's value
/// of it (`-`: not recorded), and the number a ratio is taken of (`None`:
/// no ratio).
struct Row {
    label: &'static str,
    show: fn(&RunResult) -> String,
    value: Option<fn(&RunResult) -> f64>,
}

const COMPARE_ROWS: &[Row] = &[
    Row {
        label: "broker",
        show: |r| r.settings.bootstrap.clone(),
        value: None,
    },
    Row {
        label: "acks",
        show: |r| {
            if r.settings.idempotent {
                format!("{} (idempotent)", r.settings.acks)
            } else {
                r.settings.acks.clone()
            }
        },
        value: None,
    },
    Row {
        label: "compression",
        show: |r| r.settings.compression.clone(),
        value: None,
    },
    Row {
        label: "harness CPUs",
        show: |r| r.settings.cpus.as_deref().map_or("all".into(), cpus_label),
        value: None,
    },
    Row {
        label: "target msg/s",
        show: |r| {
            if r.target_msgs_per_s > 0.0 {
                format!("{:.0}", r.target_msgs_per_s)
            } else {
                "max".into()
            }
        },
        value: None,
    },
    Row {
        label: "measured s",
        show: |r| format!("{}", r.settings.duration_s),
        value: None,
    },
    Row {
        label: "produce msg/s",
        show: |r| format!("{:.0}", r.produce_msgs_per_s),
        value: Some(|r| r.produce_msgs_per_s),
    },
    Row {
        label: "produce MiB/s",
        show: |r| format!("{:.1}", r.produce_mib_per_s),
        value: Some(|r| r.produce_mib_per_s),
    },
    Row {
        label: "consume MiB/s",
        show: |r| format!("{:.1}", r.consume_mib_per_s),
        value: Some(|r| r.consume_mib_per_s),
    },
    Row {
        label: "compression ratio",
        show: |r| format!("{:.2}", r.compression_ratio),
        value: Some(|r| r.compression_ratio),
    },
    Row {
        label: "publish p50 ms",
        show: |r| format!("{:.2}", r.publish_latency_ms.p50),
        value: Some(|r| r.publish_latency_ms.p50),
    },
    Row {
        label: "publish p99 ms",
        show: |r| format!("{:.2}", r.publish_latency_ms.p99),
        value: Some(|r| r.publish_latency_ms.p99),
    },
    Row {
        label: "publish p99.9 ms",
        show: |r| format!("{:.2}", r.publish_latency_ms.p999),
        value: Some(|r| r.publish_latency_ms.p999),
    },
    Row {
        label: "e2e p50 ms",
        show: |r| format!("{:.2}", r.e2e_latency_ms.p50),
        value: Some(|r| r.e2e_latency_ms.p50),
    },
    Row {
        label: "e2e p99 ms",
        show: |r| format!("{:.2}", r.e2e_latency_ms.p99),
        value: Some(|r| r.e2e_latency_ms.p99),
    },
    Row {
        label: "e2e p99.9 ms",
        show: |r| format!("{:.2}", r.e2e_latency_ms.p999),
        value: Some(|r| r.e2e_latency_ms.p999),
    },
    Row {
        label: "harness cores busy",
        // Results written before the field existed read as 0.
        show: |r| {
            if r.harness_cpu_s > 0.0 {
                format!("{:.2}", r.harness_cpu_cores)
            } else {
                "-".into()
            }
        },
        value: Some(|r| r.harness_cpu_cores),
    },
    Row {
        label: "errors (produce / fetch retried)",
        show: |r| format!("{} / {}", r.produce_errors, r.fetch_errors),
        value: None,
    },
];

/// An OMB-style side-by-side table of several runs (one column each, in
/// the order given): settings, throughput and publish/end-to-end latency
/// percentiles, each figure with its ratio to the first run's.
pub fn side_by_side(runs: &[(String, RunResult)]) -> String {
    let mut s = String::new();
    let Some((first_name, first)) = runs.first() else {
        return s;
    };
    let _ = writeln!(
        s,
        "Ratios are to the first run ({first_name}); latency ratios below 1 and throughput ratios above 1 are better.\n"
    );
    let _ = write!(s, "| |");
    for (name, _) in runs {
        let _ = write!(s, " {name} |");
    }
    let _ = write!(s, "\n|---|");
    for _ in runs {
        let _ = write!(s, "---|");
    }
    s.push('\n');
    for row in COMPARE_ROWS {
        let _ = write!(s, "| {} |", row.label);
        for (i, (_, r)) in runs.iter().enumerate() {
            let shown = (row.show)(r);
            match row.value {
                Some(_) if shown == "-" => {
                    let _ = write!(s, " - |");
                }
                Some(v) if i > 0 => {
                    let (base, x) = (v(first), v(r));
                    if base > 0.0 && x.is_finite() {
                        let _ = write!(s, " {shown} ({:.2}x) |", x / base);
                    } else {
                        let _ = write!(s, " {shown} (n/a) |");
                    }
                }
                _ => {
                    let _ = write!(s, " {shown} |");
                }
            }
        }
        s.push('\n');
    }
    let machines: Vec<String> = runs
        .iter()
        .map(|(_, r)| {
            format!(
                "{} cores, {}, {}",
                r.machine.cores, r.machine.cpu_model, r.machine.kernel
            )
        })
        .collect();
    let mut distinct = machines.clone();
    distinct.dedup();
    if distinct.len() == 1 {
        let _ = writeln!(s, "\nMachine: {}.", distinct[0]);
    } else {
        let _ = writeln!(s, "\nMachines differ:");
        for ((name, _), m) in runs.iter().zip(&machines) {
            let _ = writeln!(s, "- {name}: {m}");
        }
    }
    s
}

/// Reads the run JSON files for [`side_by_side`], each named by its file
/// stem.
pub fn read_runs(paths: &[std::path::PathBuf]) -> Result<Vec<(String, RunResult)>> {
    paths
        .iter()
        .map(|p| {
            let name = p
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("?")
                .to_string();
            Ok((name, RunResult::read(p)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn fio_bandwidth() {
        let v = serde_json::json!({"jobs": [{"write": {"bw_bytes": 1048576.0 * 300.0}}, {"write": {"bw_bytes": 1048576.0 * 100.0}}]});
        assert_eq!(fio_write_mib_per_s(&v), Some(400.0));
        assert_eq!(fio_write_mib_per_s(&serde_json::json!({})), None);
        let baseline =
            serde_json::json!({"bench": "disk-baseline", "fio_seq_write_mib_per_s": 1500.5});
        assert_eq!(fio_write_mib_per_s(&baseline), Some(1500.5));
    }

    fn sample_run(compression: &str, mib: f64, p99: f64) -> RunResult {
        let p = |p99: f64| Percentiles {
            p50: 1.0,
            p99,
            p999: 2.0 * p99,
            max: 3.0 * p99,
            mean: 1.0,
            count: 1000,
        };
        RunResult {
            schema: SCHEMA.into(),
            timestamp: "2026-12-01T00:00:00Z".into(),
            workload: Workload::parse(
                "name: w\ntopics: 1\npartitionsPerTopic: 16\nmessageSize: 1024\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\nproducerRate: 0\ntestDurationMinutes: 0.5\n",
                "w",
            )
            .unwrap(),
            settings: Settings {
                bootstrap: "127.0.0.1:9092".into(),
                acks: "1".into(),
                idempotent: false,
                batch_bytes: 1 << 20,
                linger_ms: 1.0,
                compression: compression.into(),
                cpus: Some(vec![1]),
                max_in_flight: 5,
                replication_factor: 1,
                topic_configs: vec![],
                warmup_s: 5.0,
                duration_s: 30.0,
                topics: vec!["t".into()],
            },
            machine: Machine {
                cores: 2,
                kernel: "Linux 6".into(),
                cpu_model: "cpu".into(),
                hostname: "h".into(),
            },
            target_msgs_per_s: 0.0,
            produce_msgs_per_s: mib * 1024.0,
            produce_mib_per_s: mib,
            consume_msgs_per_s: mib * 1024.0,
            consume_mib_per_s: mib,
            harness_cpu_s: 10.0,
            harness_cpu_cores: 0.5,
            compression_ratio: if compression == "none" { 1.0 } else { 2.0 },
            publish_latency_ms: p(p99),
            e2e_latency_ms: p(p99 + 1.0),
            produced_msgs_total: 1,
            produce_errors: 0,
            fetch_errors: 0,
            publish_latency_distribution: vec![],
            e2e_latency_distribution: vec![],
            timeseries: vec![],
        }
    }

    #[test]
    fn side_by_side_shows_every_run_with_ratios_to_the_first() {
        let runs = vec![
            ("none-r0".to_string(), sample_run("none", 400.0, 10.0)),
            ("lz4-r0".to_string(), sample_run("lz4", 500.0, 5.0)),
            ("zstd-r0".to_string(), sample_run("zstd", 300.0, 20.0)),
        ];
        let t = side_by_side(&runs);
        assert!(t.contains("| | none-r0 | lz4-r0 | zstd-r0 |"), "{t}");
        assert!(t.contains("|---|---|---|---|"), "{t}");
        assert!(
            t.contains("| produce MiB/s | 400.0 | 500.0 (1.25x) | 300.0 (0.75x) |"),
            "{t}"
        );
        assert!(
            t.contains("| publish p99 ms | 10.00 | 5.00 (0.50x) | 20.00 (2.00x) |"),
            "{t}"
        );
        assert!(
            t.contains("| publish p99.9 ms | 20.00 | 10.00 (0.50x) | 40.00 (2.00x) |"),
            "{t}"
        );
        assert!(
            t.contains("| e2e p99 ms | 11.00 | 6.00 (0.55x) | 21.00 (1.91x) |"),
            "{t}"
        );
        assert!(t.contains("| compression | none | lz4 | zstd |"), "{t}");
        assert!(t.contains("| harness CPUs | 1 | 1 | 1 |"), "{t}");
        assert!(t.contains("Machine: 2 cores, cpu, Linux 6."), "{t}");
        // Every table row has one cell per run.
        for line in t.lines().filter(|l| l.starts_with('|')) {
            assert_eq!(line.matches('|').count(), 5, "{line}");
        }
        assert_eq!(side_by_side(&[]), "");
    }

    #[test]
    fn a_zero_base_has_no_ratio() {
        let mut first = sample_run("none", 400.0, 10.0);
        first.publish_latency_ms.p50 = 0.0;
        let runs = vec![
            ("a".to_string(), first),
            ("b".to_string(), sample_run("none", 400.0, 10.0)),
        ];
        let t = side_by_side(&runs);
        assert!(t.contains("| publish p50 ms | 0.00 | 1.00 (n/a) |"), "{t}");
    }

    #[test]
    fn old_results_without_the_new_fields_still_read() {
        let mut v = serde_json::to_value(sample_run("none", 1.0, 1.0)).unwrap();
        v.as_object_mut().unwrap().remove("compression_ratio");
        v["settings"].as_object_mut().unwrap().remove("cpus");
        let r: RunResult = serde_json::from_value(v).unwrap();
        assert_eq!(r.compression_ratio, 1.0);
        assert_eq!(r.settings.cpus, None);
        v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("harness_cpu_s");
        v.as_object_mut().unwrap().remove("harness_cpu_cores");
        let old: RunResult = serde_json::from_value(v).unwrap();
        let t = side_by_side(&[("new".into(), r), ("old".into(), old)]);
        assert!(t.contains("| harness cores busy | 0.50 | - |"), "{t}");
    }
}
