//! Consumer groups against the real `strom` binary: kcat -G members
//! (librdkafka's balanced consumer), restarts, and DescribeGroups/ListGroups
//! over the wire.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};
use common::{kcat, produce, Broker};
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest,
    ListGroupsResponse, RequestHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const CONSUME_DEADLINE: Duration = Duration::from_secs(60);

/// Broker flags: two shards (so group requests cross shards), six
/// partitions per auto-created topic, the minimum session timeout 1 s.
fn start_broker(dir: Option<&std::path::Path>, port: Option<u16>) -> (Broker, tempfile::TempDir) {
    let conf_dir = tempfile::tempdir().expect("tempdir");
    let conf = conf_dir.path().join("strom.toml");
    std::fs::write(&conf, "num.partitions = 6\ngroup.initial.rebalance.delay.ms = 3000\ngroup.min.session.timeout.ms = 1000\n")
        .expect("write config");
    let args = [
        "--shards",
        "2",
        "--config",
        conf.to_str().expect("utf8 path"),
    ];
    let b = match (dir, port) {
        (Some(d), Some(p)) => Broker::start_in(d, p, &args),
        _ => Broker::start(&args),
    };
    (b, conf_dir)
}

/// A kcat -G member printing "partition offset value" per record.
struct Member {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn spawn(addr: &str, group: &str, topic: &str) -> Member {
        let mut child = Command::new("kcat")
            .args(["-b", addr, "-G", group, "-q", "-u", "-f", "%p %o %s\n"])
            .args([
                "-X",
                "auto.offset.reset=earliest",
                "-X",
                "session.timeout.ms=6000",
            ])
            .args([
                "-X",
                "heartbeat.interval.ms=500",
                "-X",
                "auto.commit.interval.ms=200",
            ])
            .arg(topic)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn kcat");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                sink.lock().expect("lock").push(line);
            }
        });
        Member { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    fn partitions(&self) -> BTreeSet<String> {
        self.lines()
            .iter()
            .filter_map(|l| l.split(' ').next().map(str::to_string))
            .collect()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `done` holds, panicking with `what` at the deadline.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + CONSUME_DEADLINE;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn keyed(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}:{prefix}{i}")).collect()
}

fn values(members: &[&Member]) -> Vec<String> {
    members
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.splitn(3, ' ').nth(2).map(str::to_string))
        .collect()
}

#[test]
fn three_members_split_a_topic_and_take_over_from_a_killed_one() {
    let (b, _conf) = start_broker(None, None);
    let addr = b.addr();
    produce(&addr, "split", &keyed("a", 600), "none", &["-K:"]);
    let mut members: Vec<Member> = (0..3)
        .map(|_| Member::spawn(&addr, "trio", "split"))
        .collect();
    wait_until("600 records consumed by the group", || {
        values(&members.iter().collect::<Vec<_>>()).len() >= 600
    });
    // Every record exactly once, no partition read by two members.
    let all = values(&members.iter().collect::<Vec<_>>());
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(
        (all.len(), distinct.len()),
        (600, 600),
        "each record read exactly once"
    );
    let owned: Vec<BTreeSet<String>> = members.iter().map(Member::partitions).collect();
    for (i, a) in owned.iter().enumerate() {
        assert!(!a.is_empty(), "member {i} got no partition: {owned:?}");
        for b in &owned[i + 1..] {
            assert!(a.is_disjoint(b), "a partition was owned twice: {owned:?}");
        }
    }
    assert_eq!(owned.iter().map(BTreeSet::len).sum::<usize>(), 6);

    let described = describe_group(&addr, "trio");
    assert_eq!(described.0, "Stable");
    assert_eq!(described.1, 3, "DescribeGroups lists the three members");
    assert!(list_groups(&addr).contains(&"trio".to_string()));

    // SIGKILL one member: after its session times out its partitions move
    // to the two others, which read the new records.
    let victim_partitions = owned[0].clone();
    members[0].kill();
    let killed_at = Instant::now();
    produce(&addr, "split", &keyed("b", 120), "none", &["-K:"]);
    let survivors: Vec<&Member> = members[1..].iter().collect();
    wait_until(
        "the killed member's partitions consumed by the others",
        || {
            values(&survivors)
                .iter()
                .filter(|v| v.starts_with('b'))
                .count()
                >= 120
        },
    );
    let takeover_ms = killed_at.elapsed().as_millis();
    println!("rebalance after SIGKILL (session.timeout.ms=6000): {takeover_ms} ms until its partitions were consumed again");
    let after: BTreeSet<String> = survivors
        .iter()
        .flat_map(|m| m.lines())
        .filter(|l| l.splitn(3, ' ').nth(2).is_some_and(|v| v.starts_with('b')))
        .filter_map(|l| l.split(' ').next().map(str::to_string))
        .collect();
    assert!(
        victim_partitions.is_subset(&after),
        "{victim_partitions:?} not taken over: {after:?}"
    );
    let b_values: Vec<String> = values(&survivors)
        .into_iter()
        .filter(|v| v.starts_with('b'))
        .collect();
    let distinct: HashSet<&String> = b_values.iter().collect();
    assert_eq!(distinct.len(), 120);
    assert_eq!(describe_group(&addr, "trio").1, 2);
}

/// Reads the group to the end and exits (committing on close).
fn consume_group(addr: &str, group: &str, topic: &str) -> Vec<String> {
    let out = kcat(
        &[
            "-b",
            addr,
            "-G",
            group,
            "-q",
            "-e",
            "-f",
            "%s\n",
            "-X",
            "auto.offset.reset=earliest",
            topic,
        ],
        b"",
    );
    assert!(out.status.success(), "kcat -G failed: {}", out.stderr);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn plain(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

#[test]
fn committed_offsets_survive_sigterm_and_sigkill_restarts() {
    let data = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let (mut b, _conf) = start_broker(Some(data.path()), Some(port));
    let addr = b.addr();
    produce(&addr, "resume", &plain("x", 10), "none", &[]);
    let first = consume_group(&addr, "g1", "resume");
    let mut sorted = first.clone();
    sorted.sort();
    let mut want = plain("x", 10);
    want.sort();
    assert_eq!(sorted, want);

    assert!(b.stop_with(libc::SIGTERM).success());
    let (mut b, _conf) = start_broker(Some(data.path()), Some(port));
    produce(&addr, "resume", &plain("y", 5), "none", &[]);
    let mut second = consume_group(&addr, "g1", "resume");
    second.sort();
    assert_eq!(
        second,
        plain("y", 5),
        "resumes exactly after the last commit (SIGTERM)"
    );

    b.stop_with(libc::SIGKILL);
    let (_b, _conf) = start_broker(Some(data.path()), Some(port));
    produce(&addr, "resume", &plain("z", 3), "none", &[]);
    let mut third = consume_group(&addr, "g1", "resume");
    third.sort();
    assert_eq!(
        third,
        plain("z", 3),
        "resumes exactly after the last commit (SIGKILL)"
    );
    // Another group is independent: it starts from the beginning.
    assert_eq!(consume_group(&addr, "g2", "resume").len(), 18);
    assert!(consume_group(&addr, "g2", "resume").is_empty());
    assert!(consume_group(&addr, "g1", "resume").is_empty());
}

// ---- a tiny synchronous Kafka client for the admin APIs ----------------

fn call<Req: Encodable, Resp: Decodable>(addr: &str, key: ApiKey, version: i16, req: &Req) -> Resp {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let header = RequestHeader::default()
        .with_request_api_key(key as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("groups-test")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, key.request_header_version(version))
        .expect("encode header");
    req.encode(&mut body, version).expect("encode request");
    let mut frame = BytesMut::new();
    frame.put_i32(body.len() as i32);
    frame.extend_from_slice(&body);
    stream.write_all(&frame).expect("write");
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("read size");
    let mut buf = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut buf).expect("read body");
    let mut buf = bytes::Bytes::from(buf);
    let _correlation = buf.get_i32();
    if key.response_header_version(version) >= 1 {
        let _tagged = buf.get_u8(); // no tagged fields in our responses
    }
    Resp::decode(&mut buf, version).expect("decode response")
}

/// (state, member count) of a group, via DescribeGroups v5.
fn describe_group(addr: &str, group: &str) -> (String, usize) {
    let req = DescribeGroupsRequest::default()
        .with_groups(vec![GroupId(StrBytes::from_string(group.to_string()))]);
    let resp: DescribeGroupsResponse = call(addr, ApiKey::DescribeGroups, 5, &req);
    let g = &resp.groups[0];
    assert_eq!(g.error_code, 0);
    let ids: HashMap<String, usize> = g
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.member_assignment.len()))
        .collect();
    (g.group_state.to_string(), ids.len())
}

fn list_groups(addr: &str) -> Vec<String> {
    let resp: ListGroupsResponse = call(addr, ApiKey::ListGroups, 4, &ListGroupsRequest::default());
    assert_eq!(resp.error_code, 0);
    resp.groups
        .iter()
        .map(|g| g.group_id.0.to_string())
        .collect()
}
