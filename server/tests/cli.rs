//! The `strom serve` command line and config file.

mod common;

use std::process::{Command, Stdio};

use common::{kcat, Broker};

fn serve_with_config(text: &str) -> (bool, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("strom.toml");
    std::fs::write(&conf, text).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_strom"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&conf)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strom");
    let status = common::wait_exit(&mut child, common::EXIT_DEADLINE);
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read stderr");
    (status.success(), err)
}

#[test]
fn unknown_config_key_is_named_and_fails() {
    let (ok, err) = serve_with_config("log.retention.ms = 1000\nlog.bogus.setting = 3\n");
    assert!(!ok);
    assert!(err.contains("log.bogus.setting"), "{err}");
}

#[test]
fn bad_config_value_is_named_and_fails() {
    let (ok, err) = serve_with_config("num.partitions = \"many\"\n");
    assert!(!ok);
    assert!(err.contains("num.partitions"), "{err}");
    let (ok, err) = serve_with_config("[log.retention]\nms = -7\n");
    assert!(!ok);
    assert!(err.contains("log.retention.ms"), "{err}");
}

#[test]
fn config_file_and_advertised_listener_apply() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let conf = tmp.path().join("strom.toml");
    std::fs::write(
        &conf,
        format!(
            "{}num.partitions = 4\nauto.create.topics.enable = true\ndefault.replication.factor = 1\n",
            common::TEST_CONFIG
        ),
    )
    .expect("write config");
    let b = Broker::start(&[
        "--config",
        conf.to_str().expect("utf8"),
        "--advertised-listener",
        "localhost:1234",
    ]);
    // The advertised address is what Metadata returns (kcat then fails to
    // reach it, which is fine: the bootstrap answer is what we check).
    let out = kcat(&["-b", &b.addr(), "-L", "-t", "four", "-m", "5"], b"");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.contains("broker 0 at localhost:1234"), "{text}");
    assert!(text.contains("topic \"four\" with 4 partitions"), "{text}");
}
