//! A healthy start and stop logs no ERROR or WARN line: whoever sees one
//! takes the broker for broken.

mod common;

use std::fs::File;
use std::process::Command;
use std::time::Instant;

/// The log with terminal colour codes (ESC [ ... m) removed.
fn strip_colours(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn healthy_start_and_stop_log_no_error_or_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let stdout_path = tmp.path().join("stdout.log");
    let stderr_path = tmp.path().join("stderr.log");
    let addr = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(["serve", "--shards", "2", "--listen", &addr, "--data-dir"])
        .arg(tmp.path().join("data"))
        .env_remove("RUST_LOG")
        .stdout(File::create(&stdout_path).expect("stdout file"))
        .stderr(File::create(&stderr_path).expect("stderr file"))
        .spawn()
        .expect("spawn strom");
    let deadline = Instant::now() + common::START_DEADLINE;
    while !common::answers_api_versions(&addr) {
        let exited = child.try_wait().expect("try_wait");
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!("strom did not answer ApiVersions on {addr} ({exited:?}):\n{log}");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = common::wait_exit(&mut child, common::EXIT_DEADLINE);

    let stdout = std::fs::read_to_string(&stdout_path).expect("read stdout");
    let stderr = std::fs::read_to_string(&stderr_path).expect("read stderr");
    assert!(status.success(), "strom exited with {status}:\n{stderr}");
    assert!(
        stdout.contains("strom listening on"),
        "no listening line: {stdout}"
    );
    let log = strip_colours(&format!("{stdout}{stderr}"));
    let alarming: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(
        alarming.is_empty(),
        "a healthy start and stop logged:\n{}",
        alarming.join("\n")
    );
    // The check above sees the levels: the log has them where expected.
    assert!(log.contains(" INFO "), "no INFO line in the log:\n{log}");
}
