//! Shutdown and restart: SIGTERM is a clean exit 0 and keeps metadata; data
//! produced with acks=all survives SIGTERM and SIGKILL.

mod common;

use common::{consume, produce, Broker};

#[test]
fn sigterm_exits_zero_and_topics_survive_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut b = Broker::start_in(tmp.path(), port, &[]);
    produce(&b.addr(), "kept", &["x".to_string()], "none", &[]);
    let status = b.stop_with(libc::SIGTERM);
    assert!(status.success(), "exit status {status:?}");

    let b = Broker::start_in(tmp.path(), port, &[]);
    let out = common::kcat(
        &[
            "-b",
            &b.addr(),
            "-L",
            "-t",
            "kept",
            "-X",
            "allow.auto.create.topics=false",
        ],
        b"",
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("topic \"kept\" with 1 partitions"), "{text}");
}

#[test]
fn sigint_also_exits_zero() {
    let mut b = Broker::start(&[]);
    let status = b.stop_with(libc::SIGINT);
    assert!(status.success(), "exit status {status:?}");
}

fn records(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("k{i}:durable-{i}-{}", "y".repeat(i % 97)))
        .collect()
}

#[test]
fn acks_all_data_survives_sigterm_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut b = Broker::start_in(tmp.path(), port, &[]);
    let lines = records(500);
    produce(
        &b.addr(),
        "durable",
        &lines,
        "lz4",
        &["-K:", "-X", "acks=all"],
    );
    assert!(b.stop_with(libc::SIGTERM).success());
    let b = Broker::start_in(tmp.path(), port, &[]);
    assert_eq!(consume(&b.addr(), "durable", "beginning", "%k:%s\n"), lines);
}

#[test]
fn acks_all_data_survives_sigkill_restart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let mut b = Broker::start_in(tmp.path(), port, &[]);
    let lines = records(500);
    // kcat exits 0 only after every message was acknowledged (acks=all).
    produce(
        &b.addr(),
        "durable",
        &lines,
        "zstd",
        &["-K:", "-X", "acks=all"],
    );
    let _ = b.stop_with(libc::SIGKILL);
    let b = Broker::start_in(tmp.path(), port, &[]);
    assert_eq!(consume(&b.addr(), "durable", "beginning", "%k:%s\n"), lines);
}
