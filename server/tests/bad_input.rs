//! Hostile and broken input over raw sockets: each case must only affect
//! its own connection, and a kcat round trip must work right after.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{assert_round_trip, Broker};

const READ_TIMEOUT: Duration = Duration::from_secs(20);

fn connect(b: &Broker) -> TcpStream {
    let s = TcpStream::connect(b.addr()).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).expect("timeout");
    s
}

/// True when the broker closed the connection (EOF or reset) without
/// sending anything.
fn closed_without_reply(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        ),
    }
}

/// A request header v1: api key, version, correlation id, client id.
fn header(api_key: i16, version: i16, correlation_id: i32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&api_key.to_be_bytes());
    v.extend_from_slice(&version.to_be_bytes());
    v.extend_from_slice(&correlation_id.to_be_bytes());
    let client = b"bad-input-test";
    v.extend_from_slice(&(client.len() as i16).to_be_bytes());
    v.extend_from_slice(client);
    v
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as i32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn read_frame(s: &mut TcpStream) -> Vec<u8> {
    let mut size = [0u8; 4];
    s.read_exact(&mut size).expect("response size");
    let size = i32::from_be_bytes(size);
    assert!((0..1 << 20).contains(&size), "response size {size}");
    let mut body = vec![0u8; size as usize];
    s.read_exact(&mut body).expect("response body");
    body
}

#[test]
fn negative_frame_length_closes_connection() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    s.write_all(&(-5i32).to_be_bytes()).expect("write");
    assert!(closed_without_reply(&mut s));
    assert_round_trip(&b.addr(), "after-negative");
}

#[test]
fn huge_frame_length_closes_connection_without_allocating() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    s.write_all(&(i32::MAX).to_be_bytes()).expect("write");
    assert!(closed_without_reply(&mut s));
    let mut s = connect(&b);
    s.write_all(&((100 << 20) + 1i32).to_be_bytes())
        .expect("write");
    assert!(closed_without_reply(&mut s));
    assert_round_trip(&b.addr(), "after-huge");
}

#[test]
fn garbage_closes_connection() {
    let b = Broker::start(&[]);
    // Deterministic pseudo-random garbage, framed and unframed.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let mut garbage = vec![0u8; 4096];
    for byte in garbage.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *byte = x as u8;
    }
    for payload in [garbage.clone(), frame(&garbage), frame(&garbage[..7])] {
        let mut s = connect(&b);
        let _ = s.write_all(&payload);
        let mut buf = [0u8; 64];
        // Either closed or (for a frame that happens to parse) answered; the
        // broker must not hang or die.
        let _ = s.read(&mut buf);
    }
    // Valid API keys with garbage bodies.
    for api_key in [0i16, 1, 2, 3, 18, 19, 20, 32, 37] {
        for version in 0i16..=13 {
            for round in 0..6usize {
                let start = (api_key as usize * 131 + version as usize * 17 + round * 389) % 3000;
                let len = [0, 1, 4, 9, 40, 700][round];
                let mut body = header(api_key, version, 7);
                if version >= 9 {
                    body.push(0); // flexible header's tagged fields
                }
                body.extend_from_slice(&garbage[start..start + len]);
                let mut s = connect(&b);
                let _ = s.write_all(&frame(&body));
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf);
            }
        }
    }
    assert_round_trip(&b.addr(), "after-garbage");
}

#[test]
fn truncated_request_then_close() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    // Frame announces 100 bytes, only part of a header arrives, then EOF.
    let mut bytes = 100i32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&header(3, 1, 1)[..6]);
    s.write_all(&bytes).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(closed_without_reply(&mut s));
    // A complete frame whose body ends inside a field (Metadata v1 topics).
    let mut s = connect(&b);
    let mut body = header(3, 1, 2);
    body.extend_from_slice(&5i32.to_be_bytes()); // 5 topics follow... but none do
    s.write_all(&frame(&body)).expect("write");
    assert!(closed_without_reply(&mut s));
    assert_round_trip(&b.addr(), "after-truncated");
}

#[test]
fn unknown_api_key_closes_connection() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    s.write_all(&frame(&header(999, 0, 1))).expect("write");
    assert!(closed_without_reply(&mut s));
    // A known key this broker does not implement (DescribeAcls).
    let mut s = connect(&b);
    s.write_all(&frame(&header(29, 1, 1))).expect("write");
    assert!(closed_without_reply(&mut s));
    assert_round_trip(&b.addr(), "after-unknown-key");
}

#[test]
fn unsupported_api_versions_version_gets_error_35_and_ranges() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    // ApiVersions v99 with a flexible (v2) header: client id then empty tags.
    let mut body = header(18, 99, 42);
    body.push(0);
    s.write_all(&frame(&body)).expect("write");
    let resp = read_frame(&mut s);
    // Response header v0: correlation id only. Body v0: error, api array.
    assert_eq!(
        i32::from_be_bytes(resp[0..4].try_into().expect("4 bytes")),
        42
    );
    assert_eq!(
        i16::from_be_bytes(resp[4..6].try_into().expect("2 bytes")),
        35
    );
    let count = i32::from_be_bytes(resp[6..10].try_into().expect("4 bytes"));
    assert!(count > 0);
    let entries: Vec<(i16, i16, i16)> = resp[10..]
        .chunks_exact(6)
        .take(count as usize)
        .map(|c| {
            let f = |i: usize| i16::from_be_bytes([c[i], c[i + 1]]);
            (f(0), f(2), f(4))
        })
        .collect();
    assert!(entries.contains(&(18, 0, 3)), "{entries:?}");
    assert_eq!(resp.len(), 10 + 6 * count as usize);
    assert_round_trip(&b.addr(), "after-unsupported-version");
}

#[test]
fn api_versions_v3_has_no_default_tagged_fields() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    let mut body = header(18, 3, 9);
    body.push(0); // header v2 tagged fields
                  // client_software_name, client_software_version (compact strings), tags.
    body.extend_from_slice(&[5, b't', b'e', b's', b't', 2, b'1', 0]);
    s.write_all(&frame(&body)).expect("write");
    let resp = read_frame(&mut s);
    // Header v0 (no tags), error 0, compact array, throttle time, then the
    // tagged-field count must be 0: nothing default-valued is sent.
    assert_eq!(
        i32::from_be_bytes(resp[0..4].try_into().expect("4 bytes")),
        9
    );
    assert_eq!(
        i16::from_be_bytes(resp[4..6].try_into().expect("2 bytes")),
        0
    );
    assert_eq!(
        *resp.last().expect("non-empty"),
        0,
        "tagged fields present: {resp:?}"
    );
}

#[test]
fn three_hundred_idle_connections() {
    let b = Broker::start(&[]);
    let idle: Vec<TcpStream> = (0..300).map(|_| connect(&b)).collect();
    assert_round_trip(&b.addr(), "after-idle");
    drop(idle);
    assert_round_trip(&b.addr(), "after-idle-closed");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let b = Broker::start(&[]);
    let mut s = connect(&b);
    let mut bytes = Vec::new();
    for id in 0..20 {
        // Alternate ApiVersions v0 and Metadata v1 (all topics).
        if id % 2 == 0 {
            bytes.extend_from_slice(&frame(&header(18, 0, id)));
        } else {
            let mut body = header(3, 1, id);
            body.extend_from_slice(&(-1i32).to_be_bytes());
            bytes.extend_from_slice(&frame(&body));
        }
    }
    s.write_all(&bytes).expect("write");
    for id in 0..20 {
        let resp = read_frame(&mut s);
        assert_eq!(
            i32::from_be_bytes(resp[0..4].try_into().expect("4 bytes")),
            id
        );
    }
}
