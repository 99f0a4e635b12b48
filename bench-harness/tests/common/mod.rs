//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod mock_broker;

use std::path::{Path, PathBuf};

pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("strom-bench-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a one-topic workload at `rate` msg/s (0 = max) with 1 KiB messages.
pub fn fixed_rate_workload(dir: &Path, rate: f64, partitions: u32) -> PathBuf {
    let path = dir.join("fixed-test.yaml");
    let text = format!(
        "name: fixed-test\ntopics: 1\npartitionsPerTopic: {partitions}\nmessageSize: 1024\nsubscriptionsPerTopic: 1\nconsumerPerSubscription: 1\nproducersPerTopic: 1\nproducerRate: {rate}\nconsumerBacklogSizeGB: 0\ntestDurationMinutes: 0.05\n"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Checks the JSON schema and the plots of a run named `stem`; at a fixed
/// rate also that the rate was held and every message was consumed.
pub fn check_outputs(out: &Path, stem: &str, rate: f64) -> serde_json::Value {
    let json_path = out.join(format!("{stem}.json"));
    let text = std::fs::read_to_string(&json_path).unwrap();
    let r: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(r["schema"], "strom-bench/run/v1");
    for key in [
        "produce_msgs_per_s",
        "produce_mib_per_s",
        "consume_msgs_per_s",
        "consume_mib_per_s",
    ] {
        assert!(r[key].as_f64().is_some(), "{key} missing in {text}");
    }
    for key in ["publish_latency_ms", "e2e_latency_ms"] {
        for p in ["p50", "p99", "p999", "max"] {
            assert!(r[key][p].as_f64().is_some(), "{key}.{p} missing");
        }
    }
    assert!(r["machine"]["cores"].as_u64().unwrap() >= 1);
    assert!(!r["machine"]["kernel"].as_str().unwrap().is_empty());
    assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(r["workload"]["name"], stem);
    assert_eq!(r["produce_errors"], 0);
    for svg in ["throughput", "latency"] {
        let p = out.join(format!("{stem}-{svg}.svg"));
        let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(s.contains("<svg"), "{} is not an SVG", p.display());
    }
    if rate > 0.0 {
        let produced = r["produce_msgs_per_s"].as_f64().unwrap();
        // Counted by intended send time, so this holds whenever every
        // scheduled message was acked.
        assert!(
            (produced - rate).abs() / rate < 0.02,
            "rate {rate} not held: {produced}"
        );
        // Every message acked in the window was consumed exactly once.
        let published = r["publish_latency_ms"]["count"].as_u64().unwrap();
        let consumed = r["e2e_latency_ms"]["count"].as_u64().unwrap();
        assert_eq!(
            published, consumed,
            "published {published}, consumed {consumed}"
        );
        assert!(r["e2e_latency_ms"]["count"].as_u64().unwrap() > 0);
    }
    r
}
