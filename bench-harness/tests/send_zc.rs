//! `strom-bench send-zc` sends what it says over loopback in both modes,
//! and counts SEND_ZC's notifications: one per send, each telling whether
//! the kernel copied the data after all.

mod common;

use std::process::Command;

#[test]
fn send_zc_sends_everything_in_both_modes_and_counts_notifications() {
    let dir = common::temp_dir("send-zc");
    let json = dir.join("send-zc.json");
    let output = Command::new(env!("CARGO_BIN_EXE_strom-bench"))
        .args([
            "send-zc",
            "--total-bytes",
            "8MiB",
            "--message-bytes",
            "256KiB",
        ])
        .args(["--rounds", "2", "--depth", "3", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "strom-bench send-zc failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let runs: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(runs.len(), 4, "two rounds of two modes: {runs:?}");
    let modes: Vec<&str> = runs.iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["send", "send-zc", "send-zc", "send"]);
    for r in &runs {
        assert_eq!(r["bytes"], 8 << 20, "{r}");
        let sends = r["sends"].as_u64().unwrap();
        assert!(sends >= 32, "8 MiB in 256 KiB sends took {sends}: {r}");
        let (notes, copied) = (
            r["notifications"].as_u64().unwrap(),
            r["copied"].as_u64().unwrap(),
        );
        if r["mode"] == "send" {
            assert_eq!((notes, copied), (0, 0), "{r}");
        } else {
            assert_eq!(notes, sends, "a SEND_ZC notification per send: {r}");
            assert!(copied <= notes, "{r}");
        }
        assert!(r["gib_per_s"].as_f64().unwrap() > 0.0, "{r}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
