//! Runs `strom-bench run` for a few seconds against a real `strom` broker,
//! plain and with idempotent producers.
//!
//! The broker binary comes from the server crate, which this crate cannot
//! build from its tests; the test looks for it at $STROM_BIN, next to this
//! test's target directory, or at target/{release,debug}/strom, and skips
//! (passes with a message) when none exists. scripts/test builds it first.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{check_outputs, fixed_rate_workload, temp_dir};
use strom_bench::kafka::{self, Conn};

const BROKER_START_TIMEOUT: Duration = Duration::from_secs(30);

fn strom_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("STROM_BIN") {
        return Some(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    // target/<profile>/deps/run_strom-HASH -> target/<profile>/strom
    if let Ok(exe) = std::env::current_exe() {
        if let Some(profile_dir) = exe.parent().and_then(|d| d.parent()) {
            candidates.push(profile_dir.join("strom"));
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    candidates.push(target.join("release/strom"));
    candidates.push(target.join("debug/strom"));
    candidates.into_iter().find(|p| p.is_file())
}

/// Kills the broker when the test ends, however it ends.
struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// The server tests' port picker: ports below the ephemeral range.
#[path = "../../server/tests/common/ports.rs"]
mod ports;
use ports::free_port;

/// Starts `strom serve` on a free port with its data in a new temporary
/// directory (returned too); `None` (the test is skipped) when there is no
/// strom binary.
fn start_broker(tag: &str) -> Option<(Broker, String, PathBuf)> {
    start_broker_with(tag, &[])
}

/// [`start_broker`] with more `strom serve` flags.
fn start_broker_with(tag: &str, flags: &[&str]) -> Option<(Broker, String, PathBuf)> {
    let Some(strom) = strom_binary() else {
        // Under CI (scripts/test builds the binaries first) a missing binary
        // is a failure, never a silent pass.
        assert!(
            std::env::var_os("CI").is_none(),
            "no strom binary under CI (set STROM_BIN or cargo build --release -p strom-server)"
        );
        eprintln!("SKIPPED: no strom binary (set STROM_BIN or build it: cargo build --release -p strom-server)");
        return None;
    };
    let dir = temp_dir(tag);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut broker = Broker(
        Command::new(&strom)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &addr])
            .args(flags)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", strom.display())),
    );
    // Ready means ApiVersions answered, not just that the port accepted.
    let deadline = Instant::now() + BROKER_START_TIMEOUT;
    while Conn::connect(&addr).is_err() {
        assert!(
            broker.0.try_wait().unwrap().is_none(),
            "strom exited before listening"
        );
        assert!(
            Instant::now() < deadline,
            "strom did not listen on {addr} within {BROKER_START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((broker, addr, dir))
}

/// Runs `strom-bench run` with `args` after the workload and output options.
fn run_bench(broker: &mut Broker, addr: &str, workload: &Path, out: &Path, args: &[&str]) {
    let output = Command::new(env!("CARGO_BIN_EXE_strom-bench"))
        .args(["run", "--bootstrap", addr, "--workload"])
        .arg(workload)
        .arg("--out")
        .arg(out)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "strom-bench failed (broker: {}):\n{}\n{}",
        match broker.0.try_wait() {
            Ok(None) => "still running".to_string(),
            Ok(Some(status)) => format!("exited, {status}"),
            Err(e) => format!("unknown, {e}"),
        },
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The records in the run's topic (log end minus log start, summed over
/// partitions), read back with ListOffsets.
fn records_in_log(addr: &str, r: &serde_json::Value) -> u64 {
    let topics = r["settings"]["topics"].as_array().unwrap();
    assert_eq!(topics.len(), 1);
    let topic = topics[0].as_str().unwrap();
    let partitions: Vec<i32> =
        (0..r["workload"]["partitionsPerTopic"].as_i64().unwrap() as i32).collect();
    let mut conn = Conn::connect(addr).unwrap();
    let start = kafka::list_offsets(&mut conn, topic, &partitions, -2).unwrap();
    let end = kafka::list_offsets(&mut conn, topic, &partitions, -1).unwrap();
    partitions.iter().map(|p| (end[p] - start[p]) as u64).sum()
}

/// A 3 s run at 2000 msg/s (4 partitions) against a fresh broker with
/// `extra` flags; checks the outputs and the held rate, returns the report.
fn fixed_rate_run(
    tag: &str,
    extra: &[&str],
) -> Option<(Broker, String, PathBuf, serde_json::Value)> {
    let (mut broker, addr, dir) = start_broker(tag)?;
    let workload = fixed_rate_workload(&dir, 2_000.0, 4);
    let out = dir.join("out");
    let mut args = extra.to_vec();
    args.extend(["--duration", "3", "--warmup", "1", "--quiet"]);
    run_bench(&mut broker, &addr, &workload, &out, &args);
    // No produce errors (checked there), the rate held, everything consumed.
    let r = check_outputs(&out, "fixed-test", 2_000.0);
    Some((broker, addr, dir, r))
}

#[test]
fn fixed_rate_run_against_strom() {
    let Some((broker, _addr, dir, r)) = fixed_rate_run("strom", &[]) else {
        return;
    };
    assert_eq!(r["settings"]["idempotent"], false);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idempotent_fixed_rate_run_against_strom() {
    let Some((broker, addr, dir, r)) = fixed_rate_run("strom-idem", &["--idempotent"]) else {
        return;
    };
    assert_eq!(r["settings"]["idempotent"], true);
    assert_eq!(
        r["settings"]["acks"], "all",
        "--idempotent defaults to acks all"
    );
    let acked = r["produced_msgs_total"].as_u64().unwrap();
    assert!(acked > 0);
    // Every acked record is in the log once: none deduplicated by mistake,
    // none appended twice.
    assert_eq!(records_in_log(&addr, &r), acked);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idempotent_max_rate_run_with_two_producers_against_strom() {
    let Some((mut broker, addr, dir)) = start_broker("strom-idem-max") else {
        return;
    };
    // Two producers (two producer ids) share the partitions; small batches
    // keep several requests per partition in flight.
    let workload = dir.join("idem-max.yaml");
    std::fs::write(
        &workload,
        "name: idem-max\ntopics: 1\npartitionsPerTopic: 3\nmessageSize: 1024\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 2\nproducerRate: 0\nconsumerBacklogSizeGB: 0\ntestDurationMinutes: 0.05\n",
    )
    .unwrap();
    let out = dir.join("out");
    run_bench(
        &mut broker,
        &addr,
        &workload,
        &out,
        &[
            "--idempotent",
            "--acks",
            "all",
            "--batch-bytes",
            "16384",
            "--max-in-flight",
            "5",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--quiet",
        ],
    );
    let r = check_outputs(&out, "idem-max", 0.0);
    assert_eq!(r["settings"]["idempotent"], true);
    let acked = r["produced_msgs_total"].as_u64().unwrap();
    assert!(acked > 0);
    assert_eq!(records_in_log(&addr, &r), acked);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TCP proxy on `listener` that forwards to `target` and holds every
/// byte coming back for `delay` (order and pipelining kept): a broker
/// whose every answer takes `delay`, as acks=all on a slow replica set.
fn start_delay_proxy(listener: TcpListener, target: String, delay: Duration) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(upstream) = TcpStream::connect(&target) else {
                continue;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            let (Ok(mut c_read), Ok(mut u_write)) = (client.try_clone(), upstream.try_clone())
            else {
                continue;
            };
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut c_read, &mut u_write);
                let _ = u_write.shutdown(Shutdown::Write);
            });
            let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
            let mut u_read = upstream;
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while let Ok(n @ 1..) = u_read.read(&mut buf) {
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            });
            let mut c_write = client;
            std::thread::spawn(move || {
                for (at, bytes) in rx {
                    std::thread::sleep((at + delay).saturating_duration_since(Instant::now()));
                    if c_write.write_all(&bytes).is_err() {
                        return;
                    }
                }
                let _ = c_write.shutdown(Shutdown::Write);
            });
        }
    });
}

/// A producer whose acks take longer than its linger must still hold its
/// rate: while its one request is out, its open batch keeps filling, as in
/// the Kafka producer's accumulator. Before, a batch was sealed every
/// linger whether or not it could be sent, and a request takes one batch
/// per partition, so behind a 40 ms answer it carried 4 partitions x 1 ms
/// of records: a tenth of 4,000 msg/s, with latency growing for the whole
/// run (the RF=3 fixed-rate runs of results/peers/rf3 fell behind so).
#[test]
fn producer_holds_its_rate_when_acks_are_slower_than_its_linger() {
    // Bound now and kept: the broker advertises it before the proxy runs.
    let proxy_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let proxy = proxy_listener.local_addr().unwrap().to_string();
    let Some((mut broker, addr, dir)) =
        start_broker_with("strom-slow-acks", &["--advertised-listener", &proxy])
    else {
        return;
    };
    start_delay_proxy(proxy_listener, addr, Duration::from_millis(40));
    let workload = fixed_rate_workload(&dir, 4_000.0, 4);
    let out = dir.join("out");
    run_bench(
        &mut broker,
        &proxy,
        &workload,
        &out,
        &[
            "--acks",
            "all",
            "--max-in-flight",
            "1",
            "--linger-ms",
            "1",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--quiet",
        ],
    );
    let r = check_outputs(&out, "fixed-test", 4_000.0);
    let p99 = r["publish_latency_ms"]["p99"].as_f64().unwrap();
    // One answer takes 40 ms; a producer that keeps up waits at most a
    // request behind its own. One that falls behind waits seconds.
    assert!(
        p99 < 500.0,
        "publish p99 {p99} ms behind 40 ms answers: the producer fell behind its rate"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 3 s run at a fixed rate with compressed batches (`--compression
/// CODEC`) and half-zero payloads, so the codec has something to remove.
/// Every acked record must be in the broker's log once and every record of
/// the window must come back through the consumer, which reads the payload
/// stamps out of the decompressed batches. `extra` flags go to strom-bench.
fn compressed_run(codec: &str, extra: &[&str]) {
    let Some((mut broker, addr, dir)) = start_broker(&format!("strom-{codec}")) else {
        return;
    };
    let workload = dir.join("compressible.yaml");
    std::fs::write(
        &workload,
        "name: compressible\ntopics: 1\npartitionsPerTopic: 4\nmessageSize: 1024\nuseRandomizedPayloads: true\nrandomBytesRatio: 0.5\nrandomizedPayloadPoolSize: 100\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\nproducerRate: 2000\nconsumerBacklogSizeGB: 0\ntestDurationMinutes: 0.05\n",
    )
    .unwrap();
    let out = dir.join("out");
    let mut args = vec![
        "--compression",
        codec,
        "--duration",
        "3",
        "--warmup",
        "1",
        "--quiet",
    ];
    args.extend(extra);
    run_bench(&mut broker, &addr, &workload, &out, &args);
    // The rate held and the consumer saw every record of the window.
    let r = check_outputs(&out, "compressible", 2_000.0);
    assert_eq!(r["settings"]["compression"], codec);
    // Half of each payload is zeros: the batches on the wire are smaller.
    let ratio = r["compression_ratio"].as_f64().unwrap();
    assert!(ratio > 1.5, "{codec}: compression ratio {ratio}");
    let acked = r["produced_msgs_total"].as_u64().unwrap();
    assert!(acked > 0);
    assert_eq!(records_in_log(&addr, &r), acked);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lz4_run_against_strom_reads_back_every_record() {
    compressed_run("lz4", &[]);
}

#[test]
fn zstd_run_against_strom_reads_back_every_record() {
    compressed_run("zstd", &[]);
}

#[test]
fn snappy_run_against_strom_reads_back_every_record() {
    compressed_run("snappy", &[]);
}

/// Compressed batches from idempotent producers: the sequence numbers count
/// the records inside the compressed records, which the broker must take
/// from the header without losing or duplicating a batch.
#[test]
fn idempotent_gzip_run_against_strom_reads_back_every_record() {
    compressed_run("gzip", &["--idempotent"]);
}
