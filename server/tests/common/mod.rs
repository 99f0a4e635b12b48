//! Test support: start the real `strom` binary on a free port with a temp
//! data dir, run kcat against it with bounded deadlines, kill on drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Broker settings for tests: 64 MiB segments, no preallocation.
pub const TEST_CONFIG: &str = "log.preallocate = false\nlog.segment.bytes = 67108864\n";

pub const START_DEADLINE: Duration = Duration::from_secs(30);
pub const KCAT_DEADLINE: Duration = Duration::from_secs(60);
pub const EXIT_DEADLINE: Duration = Duration::from_secs(30);

pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

/// Whether a Kafka broker at `addr` answers ApiVersions v0 with the
/// request's correlation id.
pub fn answers_api_versions(addr: &str) -> bool {
    const CORRELATION_ID: i32 = 0x5354_524d;
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    if s.set_read_timeout(Some(Duration::from_secs(2))).is_err() {
        return false;
    }
    // size, api key 18, version 0, correlation id, null client id
    let mut req = Vec::with_capacity(14);
    req.extend_from_slice(&10i32.to_be_bytes());
    req.extend_from_slice(&18i16.to_be_bytes());
    req.extend_from_slice(&0i16.to_be_bytes());
    req.extend_from_slice(&CORRELATION_ID.to_be_bytes());
    req.extend_from_slice(&(-1i16).to_be_bytes());
    let mut head = [0u8; 8];
    s.write_all(&req).is_ok()
        && s.read_exact(&mut head).is_ok()
        && i32::from_be_bytes([head[4], head[5], head[6], head[7]]) == CORRELATION_ID
}

mod ports;
pub use ports::free_port;

impl Broker {
    /// Starts a broker with a fresh temp data dir.
    pub fn start(extra: &[&str]) -> Broker {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut b = Broker::start_in(&dir, free_port(), extra);
        b._tmp = Some(tmp);
        b
    }

    /// Starts a broker on `dir` and `port` (restarts reuse both). Unless
    /// the test brings its own `--config`, segments are small and not
    /// preallocated, so parallel tests do not reserve GiBs of disk.
    pub fn start_in(dir: &Path, port: u16, extra: &[&str]) -> Broker {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !extra.contains(&"--config") {
            let conf = dir.join("test-broker.toml");
            std::fs::write(&conf, TEST_CONFIG).expect("write test config");
            args.push("--config".into());
            args.push(conf.to_str().expect("utf8 path").into());
        }
        let child = Command::new(env!("CARGO_BIN_EXE_strom"))
            .arg("serve")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(if std::env::var_os("STROM_TEST_LOG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("spawn strom");
        let b = Broker {
            child: Some(child),
            port,
            dir: dir.to_path_buf(),
            _tmp: None,
        };
        b.wait_ready();
        b
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Waits until the broker answers an ApiVersions request. A bare TCP
    /// connect is not enough: right after a SIGKILL the dead broker's
    /// listening socket can still accept for a moment.
    fn wait_ready(&self) {
        let deadline = Instant::now() + START_DEADLINE;
        while Instant::now() < deadline {
            if answers_api_versions(&self.addr()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "strom did not accept connections on {} within {:?}",
            self.addr(),
            START_DEADLINE
        );
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    /// Sends `signal` and waits (bounded) for the process to exit.
    pub fn stop_with(&mut self, signal: i32) -> ExitStatus {
        // SAFETY: kill(2) on the pid of a child this test spawned and has not reaped.
        unsafe { libc::kill(self.pid(), signal) };
        let mut child = self.child.take().expect("running");
        wait_exit(&mut child, EXIT_DEADLINE)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn wait_exit(child: &mut Child, deadline: Duration) -> ExitStatus {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

/// Runs kcat with `args`, feeding `stdin`, bounded by `KCAT_DEADLINE`.
pub fn kcat(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new("kcat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kcat (is kcat installed?)");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_exit(&mut child, KCAT_DEADLINE);
    let _ = writer.join();
    Output {
        status,
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Produces `lines` (each `key:value` when `keyed`) with compression `codec`.
pub fn produce(addr: &str, topic: &str, lines: &[String], codec: &str, extra: &[&str]) {
    let mut input = lines.join("\n");
    input.push('\n');
    let mut args = vec!["-b", addr, "-P", "-t", topic, "-z", codec];
    args.extend_from_slice(extra);
    let out = kcat(&args, input.as_bytes());
    assert!(out.status.success(), "kcat produce failed: {}", out.stderr);
}

/// Consumes `topic` from `offset` to the end, one `format` line per record.
pub fn consume(addr: &str, topic: &str, offset: &str, format: &str) -> Vec<String> {
    let out = kcat(
        &[
            "-b", addr, "-C", "-t", topic, "-o", offset, "-e", "-q", "-f", format,
        ],
        b"",
    );
    assert!(out.status.success(), "kcat consume failed: {}", out.stderr);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Produces three records and reads them back: the broker still serves.
pub fn assert_round_trip(addr: &str, topic: &str) {
    let lines: Vec<String> = (0..3).map(|i| format!("{topic}-value-{i}")).collect();
    produce(addr, topic, &lines, "none", &[]);
    assert_eq!(consume(addr, topic, "beginning", "%s\n"), lines);
}
