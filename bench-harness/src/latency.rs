//! Latency recording.
//!
//! Every latency is measured from the message's *intended* send time (the
//! pacer's schedule at a fixed rate, the moment the message was generated at
//! max rate) to its completion. A broker stall that delays sends therefore
//! shows up in full for every message that should have gone out during the
//! stall, instead of as one slow sample: that is the correction for
//! coordinated omission. Only messages intended inside the measurement
//! window (after warm-up) are recorded.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Histograms count microseconds from 1 us to 1 hour, 3 significant digits.
const HIST_MAX_US: u64 = 3_600_000_000;
const HIST_SIGFIG: u8 = 3;

#[derive(Debug, Clone)]
pub struct LatencyRecorder {
    hist: Histogram<u64>,
    window_start_ns: u64,
    window_end_ns: u64,
}

/// Latency percentiles in milliseconds, as written to the result JSON.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
    pub count: u64,
}

impl LatencyRecorder {
    /// Records messages intended in `[window_start_ns, window_end_ns)`.
    pub fn new(window_start_ns: u64, window_end_ns: u64) -> LatencyRecorder {
        let hist = Histogram::new_with_bounds(1, HIST_MAX_US, HIST_SIGFIG)
            .expect("static histogram bounds are valid");
        LatencyRecorder {
            hist,
            window_start_ns,
            window_end_ns,
        }
    }

    pub fn in_window(&self, intended_ns: u64) -> bool {
        intended_ns >= self.window_start_ns && intended_ns < self.window_end_ns
    }

    /// Records one message intended at `intended_ns` and completed at
    /// `done_ns`; returns whether it fell in the window.
    pub fn record(&mut self, intended_ns: u64, done_ns: u64) -> bool {
        self.record_n(intended_ns, done_ns, 1)
    }

    pub fn record_n(&mut self, intended_ns: u64, done_ns: u64, n: u64) -> bool {
        if !self.in_window(intended_ns) {
            return false;
        }
        let us = done_ns.saturating_sub(intended_ns) / 1_000;
        self.hist.saturating_record_n(us.max(1), n);
        true
    }

    pub fn merge(&mut self, other: &LatencyRecorder) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }

    pub fn histogram(&self) -> &Histogram<u64> {
        &self.hist
    }

    pub fn percentiles(&self) -> Percentiles {
        let h = &self.hist;
        let ms = |us: u64| us as f64 / 1_000.0;
        Percentiles {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1_000.0,
            count: h.len(),
        }
    }

    /// (percentile, latency ms) points for the distribution plot.
    pub fn distribution(&self) -> Vec<(f64, f64)> {
        const QUANTILES: [f64; 12] = [
            0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99999, 1.0,
        ];
        if self.hist.is_empty() {
            return Vec::new();
        }
        QUANTILES
            .iter()
            .map(|&q| (q * 100.0, self.hist.value_at_quantile(q) as f64 / 1_000.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pacer::Pacer;

    const MS: u64 = 1_000_000;

    #[test]
    fn records_only_the_window() {
        let mut r = LatencyRecorder::new(1_000 * MS, 2_000 * MS);
        assert!(!r.record(999 * MS, 1_005 * MS));
        assert!(r.record(1_000 * MS, 1_005 * MS));
        assert!(!r.record(2_000 * MS, 2_001 * MS));
        let p = r.percentiles();
        assert_eq!(p.count, 1);
        assert!((p.max - 5.0).abs() < 0.01, "{p:?}");
    }

    #[test]
    fn percentiles_in_ms() {
        let mut r = LatencyRecorder::new(0, u64::MAX);
        for i in 1..=1000u64 {
            r.record(0, i * MS);
        }
        let p = r.percentiles();
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.p99 - 990.0).abs() < 1.0, "{p:?}");
        assert!((p.p999 - 999.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
    }

    /// Simulates a producer at 1000 msg/s against a broker that answers in
    /// 1 ms but stalls completely from t=1s to t=2s, over a 3 s window.
    /// Measured from the intended time every message due during the stall
    /// carries its wait: about a third of the samples exceed 1 ms and the
    /// median of those is about half the stall. Measured from the actual send
    /// (the naive way) the stall would all but vanish.
    #[test]
    fn coordinated_omission_is_corrected() {
        let mut corrected = LatencyRecorder::new(0, 3_000 * MS);
        let mut naive = LatencyRecorder::new(0, 3_000 * MS);
        let mut p = Pacer::new(1_000.0, 0);
        let mut now = 0;
        let stall = (1_000 * MS, 2_000 * MS);
        while now < 3_000 * MS {
            if now >= stall.0 && now < stall.1 {
                // The sender is blocked; it wakes when the stall ends.
                now = stall.1;
            }
            for _ in 0..p.due(now) {
                let intended = p.issue();
                corrected.record(intended, now + MS);
                naive.record(now, now + MS);
            }
            now = p.next_due_ns().unwrap();
        }
        let c = corrected.percentiles();
        let n = naive.percentiles();
        assert_eq!(c.count, 3_000);
        assert_eq!(n.count, 3_000);
        assert!(c.max >= 1_000.0, "{c:?}");
        assert!(c.p99 >= 950.0, "{c:?}");
        let slow = corrected.histogram().count_between(2_000, HIST_MAX_US);
        assert!((990..=1010).contains(&slow), "slow samples {slow}");
        assert!(n.max < 2.0, "naive {n:?}");
    }

    #[test]
    fn merge_adds_counts() {
        let mut a = LatencyRecorder::new(0, u64::MAX);
        let mut b = LatencyRecorder::new(0, u64::MAX);
        a.record(0, MS);
        b.record_n(0, 2 * MS, 3);
        a.merge(&b);
        assert_eq!(a.percentiles().count, 4);
    }
}
