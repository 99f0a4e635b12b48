//! Runs `strom-bench run` for a few seconds against a real `strom` broker.
//!
//! The broker binary comes from the server crate, which this crate cannot
//! build from its tests; the test looks for it at $STROM_BIN, next to this
//! test's target directory, or at target/{release,debug}/strom, and skips
//! (passes with a message) when none exists. scripts/test builds it first.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{check_outputs, fixed_rate_workload, temp_dir};

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

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn fixed_rate_run_against_strom() {
    let Some(strom) = strom_binary() else {
        eprintln!("SKIPPED: no strom binary (set STROM_BIN or build it: cargo build --release -p strom-server)");
        return;
    };
    let dir = temp_dir("strom");
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut broker = Broker(
        Command::new(&strom)
            .arg("serve")
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen", &addr])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", strom.display())),
    );
    let deadline = Instant::now() + BROKER_START_TIMEOUT;
    while TcpStream::connect(&addr).is_err() {
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
    let workload = fixed_rate_workload(&dir, 2_000.0, 4);
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_strom-bench"))
        .args(["run", "--bootstrap", &addr, "--workload"])
        .arg(&workload)
        .arg("--out")
        .arg(&out)
        .args(["--duration", "3", "--warmup", "1", "--quiet"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "strom-bench failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    check_outputs(&out, "fixed-test", 2_000.0);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
