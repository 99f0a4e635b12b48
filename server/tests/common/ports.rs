//! Ports for the servers a test starts.
//!
//! A port taken from `bind(127.0.0.1:0)` and released is in the kernel's
//! ephemeral range: any outgoing connection (a client, another node, the
//! harness) may take it as its local port before the server binds it, and
//! the server then fails with `Address already in use`. Ports are drawn
//! instead from [`LOWEST_PORT`, the low end of `ip_local_port_range`),
//! which outgoing connections never take, each bound once when drawn and
//! never handed out twice by this process (as `tests/compat/conftest.py`
//! and the Java suite's `Ports` do).

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

const LOWEST_PORT: u16 = 10_000;

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The low end of the kernel's range for outgoing connections' local ports.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .expect("reading /proc/sys/net/ipv4/ip_local_port_range")
}

/// A port nobody has bound now, below the ephemeral range, never one this
/// process gave before.
pub fn free_port() -> u16 {
    let low = ephemeral_low();
    assert!(
        low.saturating_sub(LOWEST_PORT) >= 1_000,
        "the ephemeral range starts at {low}: too few ports below it for the tests"
    );
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    // A different start per process and call: the nanoseconds of the clock.
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().rotate_left(16);
    let span = u32::from(low - LOWEST_PORT);
    for i in 0..u32::from(u16::MAX) {
        let port = LOWEST_PORT + (seed.wrapping_add(i.wrapping_mul(7_919)) % span) as u16;
        if given.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in [{LOWEST_PORT}, {low})");
}
