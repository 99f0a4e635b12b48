//! Broker-wide connection limits: `max.connections` and
//! `max.connections.per.ip`.
//!
//! Every shard accepts on the same port (SO_REUSEPORT), so the counts are
//! shared by all shards. A shard asks for a slot right after `accept`; a
//! connection over either limit is closed at once, as Kafka closes it. The
//! slot is given back when the connection ends. Accepting is not on the data
//! path: a mutex held for one map update is fine here.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use thiserror::Error;

#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    #[error("max.connections ({0}) reached")]
    Total(usize),
    #[error("max.connections.per.ip ({0}) reached")]
    PerIp(usize),
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// The counts of open connections, shared by every shard.
pub struct ConnectionLimits {
    max_connections: usize,
    max_connections_per_ip: usize,
    counts: Mutex<Counts>,
}

/// An open connection's slot; given back when dropped.
pub struct ConnectionSlot {
    limits: Arc<ConnectionLimits>,
    ip: IpAddr,
}

impl ConnectionLimits {
    pub fn new(max_connections: usize, max_connections_per_ip: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections,
            max_connections_per_ip,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// A slot for a new connection from `ip`, unless a limit is reached.
    pub fn open(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionSlot, Refused> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if counts.total >= self.max_connections {
            return Err(Refused::Total(self.max_connections));
        }
        let of_ip = counts.per_ip.entry(ip).or_insert(0);
        if *of_ip >= self.max_connections_per_ip {
            return Err(Refused::PerIp(self.max_connections_per_ip));
        }
        *of_ip = of_ip.saturating_add(1);
        counts.total = counts.total.saturating_add(1);
        Ok(ConnectionSlot {
            limits: self.clone(),
            ip,
        })
    }

    /// Open connections: in all, and from `ip`.
    pub fn open_connections(&self, ip: IpAddr) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        (counts.total, counts.per_ip.get(&ip).copied().unwrap_or(0))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut counts = self.limits.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                // The map holds only addresses with open connections.
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_ip_and_in_all() {
        let limits = Arc::new(ConnectionLimits::new(3, 2));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = limits.open(a).unwrap();
        let a2 = limits.open(a).unwrap();
        assert_eq!(limits.open(a).err(), Some(Refused::PerIp(2)));
        let b1 = limits.open(b).unwrap();
        assert_eq!(limits.open(b).err(), Some(Refused::Total(3)));
        drop(a1);
        assert_eq!(limits.open_connections(a), (2, 1));
        let a3 = limits.open(a).unwrap();
        drop((a2, a3, b1));
        assert_eq!(limits.open_connections(a), (0, 0));
        assert!(limits.counts.lock().unwrap().per_ip.is_empty());
    }
}
