//! The fixed-rate send schedule.
//!
//! Message `i` is intended to be sent at `start + i / rate`. A producer asks
//! how many messages are due at the current time and sends them; if it fell
//! behind (the broker stalled it) it catches up, and every message keeps its
//! intended time, from which latency is measured (no coordinated omission).
//! The pacer holds no clock: callers pass "now", so tests drive it with a
//! simulated clock.

#[derive(Debug, Clone)]
pub struct Pacer {
    start_ns: u64,
    /// Nanoseconds between two intended sends; `None` means unpaced (max rate).
    interval_ns: Option<f64>,
    issued: u64,
}

impl Pacer {
    /// A pacer for `rate_per_s` messages per second starting at `start_ns`;
    /// a rate of 0 means unpaced.
    pub fn new(rate_per_s: f64, start_ns: u64) -> Pacer {
        assert!(
            rate_per_s.is_finite() && rate_per_s >= 0.0,
            "bad rate {rate_per_s}"
        );
        let interval_ns = if rate_per_s > 0.0 {
            Some(1e9 / rate_per_s)
        } else {
            None
        };
        Pacer {
            start_ns,
            interval_ns,
            issued: 0,
        }
    }

    pub fn is_paced(&self) -> bool {
        self.interval_ns.is_some()
    }

    /// Messages issued so far.
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Intended send time of message `i` (paced only).
    pub fn intended_ns(&self, i: u64) -> u64 {
        match self.interval_ns {
            Some(interval) => self.start_ns + (i as f64 * interval) as u64,
            None => self.start_ns,
        }
    }

    /// Intended time of the next message not yet issued; `None` when unpaced.
    pub fn next_due_ns(&self) -> Option<u64> {
        self.interval_ns.map(|_| self.intended_ns(self.issued))
    }

    /// How many messages are due at `now_ns` and not yet issued.
    pub fn due(&self, now_ns: u64) -> u64 {
        let Some(interval) = self.interval_ns else {
            return 0;
        };
        if now_ns < self.start_ns {
            return 0;
        }
        // Messages 0..=k are due where k = floor(elapsed / interval).
        let due_total = ((now_ns - self.start_ns) as f64 / interval).floor() as u64 + 1;
        due_total.saturating_sub(self.issued)
    }

    /// Marks the next message as issued and returns its intended time.
    pub fn issue(&mut self) -> u64 {
        let t = self.intended_ns(self.issued);
        self.issued += 1;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    /// Drives the pacer as a producer loop would, with a simulated clock that
    /// wakes up after random oversleeps, and returns (sent per wake-up, sent).
    fn simulate(rate: f64, seconds: u64, max_jitter_ns: u64, seed: u64) -> (u64, u64) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut p = Pacer::new(rate, 1_000);
        let mut now = 0u64;
        let end = 1_000 + seconds * 1_000_000_000;
        let mut max_burst = 0;
        let mut sent = 0;
        let mut last_intended = 0;
        while now < end {
            let due = p.due(now);
            for _ in 0..due {
                let t = p.issue();
                assert!(t <= now, "a message was sent before its intended time");
                assert!(t >= last_intended, "intended times go backwards");
                last_intended = t;
            }
            sent += due;
            max_burst = max_burst.max(due);
            // Sleep until the next message is due, then oversleep a bit, as
            // a real thread does.
            let next = p.next_due_ns().unwrap().max(now + 1);
            now = (next + rng.gen_range(0..=max_jitter_ns)).min(end);
        }
        (max_burst, sent)
    }

    #[test]
    fn holds_the_rate_within_a_percent() {
        for (rate, seed) in [(1_000.0, 1), (50_000.0, 2), (333.3, 3), (1_000_000.0, 4)] {
            let (_, sent) = simulate(rate, 10, 200_000, seed);
            let expected = rate * 10.0;
            let err = (sent as f64 - expected).abs() / expected;
            assert!(err < 0.01, "rate {rate}: sent {sent}, expected {expected}");
        }
    }

    #[test]
    fn is_steady_not_bursty() {
        // With 200 us of oversleep at 50k msg/s a wake-up may find at most
        // ~11 messages due; a bursty pacer would release whole seconds at once.
        let (max_burst, _) = simulate(50_000.0, 5, 200_000, 7);
        assert!(max_burst <= 12, "max burst {max_burst}");
    }

    #[test]
    fn catches_up_after_a_stall_keeping_intended_times() {
        let mut p = Pacer::new(1_000.0, 0);
        assert_eq!(p.due(0), 1);
        p.issue();
        // Stalled for one second: 1000 more messages are due, each with its
        // own intended time one millisecond apart.
        assert_eq!(p.due(1_000_000_000), 1000);
        let times: Vec<u64> = (0..1000).map(|_| p.issue()).collect();
        assert_eq!(times[0], 1_000_000);
        assert_eq!(times[999], 1_000_000_000);
        assert_eq!(p.due(1_000_000_000), 0);
    }

    #[test]
    fn unpaced_has_nothing_due() {
        let p = Pacer::new(0.0, 0);
        assert!(!p.is_paced());
        assert_eq!(p.due(u64::MAX / 2), 0);
        assert_eq!(p.next_due_ns(), None);
    }
}
