//! Runs the `strom-bench` binary against an in-memory mock broker (see
//! tests/common/mock_broker.rs) and checks the outputs. The same checks
//! against the real `strom` broker live in tests/run_strom.rs.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::mock_broker;
use common::{check_outputs, fixed_rate_workload, temp_dir};

#[test]
fn fixed_rate_run_against_mock_broker() {
    let broker = mock_broker::start();
    let dir = temp_dir("mock-fixed");
    let workload = fixed_rate_workload(&dir, 2_000.0, 4);
    let out = dir.join("out");
    let status = Command::new(env!("CARGO_BIN_EXE_strom-bench"))
        .args(["run", "--bootstrap", &broker.addr, "--workload"])
        .arg(&workload)
        .arg("--out")
        .arg(&out)
        .args(["--duration", "3", "--warmup", "1", "--quiet"])
        .status()
        .unwrap();
    assert!(status.success());
    check_outputs(&out, "fixed-test", 2_000.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn max_rate_acks_all_against_mock_broker() {
    let broker = mock_broker::start();
    let dir = temp_dir("mock-max");
    let workload = fixed_rate_workload(&dir, 0.0, 3);
    let out: PathBuf = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_strom-bench"))
        .args(["run", "--bootstrap", &broker.addr, "--workload"])
        .arg(&workload)
        .arg("--out")
        .arg(&out)
        .args([
            "--duration",
            "2",
            "--warmup",
            "1",
            "--acks",
            "all",
            "--batch-bytes",
            "65536",
            "--quiet",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let r = check_outputs(&out, "fixed-test", 0.0);
    assert_eq!(r["settings"]["acks"], "all");
    assert!(r["produce_msgs_per_s"].as_f64().unwrap() > 0.0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idempotent_with_acks_1_is_refused_before_connecting() {
    let dir = temp_dir("mock-idem-acks");
    let workload = fixed_rate_workload(&dir, 2_000.0, 4);
    // Nothing listens on port 1: the check must come first.
    let output = Command::new(env!("CARGO_BIN_EXE_strom-bench"))
        .args(["run", "--bootstrap", "127.0.0.1:1", "--workload"])
        .arg(&workload)
        .arg("--out")
        .arg(dir.join("out"))
        .args(["--idempotent", "--acks", "1", "--quiet"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--idempotent needs --acks all, got --acks 1"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
